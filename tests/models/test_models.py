"""neuralscan_cli.models: registry, every model's build/forward/train step, .keras round trip, OpenVINO parity.

Runs on Keras 2.15 (TF 2.15) and Keras 3 (TF >= 2.16). Small input sizes keep it fast on 2 cores; nothing is
downloaded (backbones use weights="none").
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from neuralscan_cli.models import (  # noqa: E402
    BACKBONE_LAYER, FEATURES_LAYER, create_model, init_encoder_from_classifier, list_models, model_task,
    set_backbone_trainable,
)

SIZE = 64
BACKBONES = ["efficientnet_b0", "resnet50v2", "mobilenet_v3_small", "mobilenet_v3_large"]
CLASSIFIERS = ["attention_cnn", "small_cnn", *BACKBONES]
SEGMENTERS = ["unet", "attention_unet", "attention_cnn_unet"]
KERAS3 = int(keras.__version__.split(".")[0]) >= 3


def _build(name, **options):
    options.setdefault("input_size", SIZE)
    if name in BACKBONES:
        options.setdefault("weights", "none")
    if model_task(name) == "classify":
        options.setdefault("num_classes", 3)
    return create_model(name, **options)


def _batch(n=2, size=SIZE, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 1), dtype=np.float32)


def _predict(model, x):
    return np.asarray(model(x, training=False))


# --- registry --------------------------------------------------------------------------------------------

def test_registry_names_and_tasks():
    assert set(list_models()) == set(CLASSIFIERS + SEGMENTERS + ["ensemble"])
    assert all(model_task(n) == "classify" for n in CLASSIFIERS + ["ensemble"])
    assert all(model_task(n) == "segment" for n in SEGMENTERS)
    assert list_models("segment") == sorted(SEGMENTERS)


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"unknown model 'nope'; choose from: .*attention_cnn"):
        create_model("nope")
    with pytest.raises(ValueError, match="unknown model"):
        model_task("nope")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option 'widthz' for model 'attention_cnn'; valid options: "
                                         r"num_classes, input_size, widths"):
        create_model("attention_cnn", widthz=(8, 16))


def test_bad_option_values():
    with pytest.raises(ValueError, match="multiple of 32"):
        create_model("attention_cnn", input_size=100)
    with pytest.raises(ValueError, match="attention must be one of"):
        create_model("attention_cnn", input_size=SIZE, attention="transformer")
    with pytest.raises(ValueError, match="not a file"):
        create_model("mobilenet_v3_small", input_size=SIZE, weights="/nonexistent/w.weights.h5")


# --- every model: forward + one training step ------------------------------------------------------------

@pytest.mark.parametrize("name", CLASSIFIERS + SEGMENTERS)
def test_forward_and_train_step(name):
    keras.utils.set_random_seed(0)
    model = _build(name)
    x = _batch()
    y = _predict(model, x)
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0
    if model_task(name) == "classify":
        assert y.shape == (2, 3)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
        target, loss = np.array([0, 2]), "sparse_categorical_crossentropy"
        assert model.get_layer(FEATURES_LAYER).output.shape[-1] > 0
    else:
        assert y.shape == (2, SIZE, SIZE, 1)
        target, loss = (x > 0.5).astype(np.float32), "binary_crossentropy"
    # run_eagerly: one step eagerly is ~10x faster here than tracing the train function (15-50 s per backbone)
    model.compile(optimizer="adam", loss=loss, run_eagerly=True)
    out = model.train_on_batch(x, target)
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert np.isfinite(float(out))
    assert np.all(np.isfinite(_predict(model, x)))


def test_attention_cnn_variants_and_size():
    for attention in ("se", "none"):
        m = _build("attention_cnn", attention=attention, widths=(8, 16), blocks_per_stage=(1, 2),
                   activation="swish")
        assert _predict(m, _batch()).shape == (2, 3)
    default = create_model("attention_cnn", input_size=256)
    assert 1_000_000 < default.count_params() < 3_000_000
    assert tuple(default.get_layer(FEATURES_LAYER).output.shape[1:3]) == (8, 8)


def test_unet_sizes():
    m = _build("unet", input_size=96, base_filters=8, depth=5)
    assert _predict(m, _batch(size=96)).shape == (2, 96, 96, 1)
    with pytest.raises(ValueError, match="multiple of 32"):
        _build("unet", input_size=48, depth=5)


def test_mixed_bfloat16_outputs_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        for name in ("attention_cnn", "attention_unet"):
            m = _build(name, **({"widths": (8, 16), "blocks_per_stage": (1, 1)} if name == "attention_cnn"
                                else {"base_filters": 8, "depth": 2}))
            y = _predict(m, _batch())
            assert y.dtype == np.float32 and np.all(np.isfinite(y))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_grad_cam_feature_model():
    """The "features" layer is in the outer graph for every classifier, so a Grad-CAM model can be built."""
    import tensorflow as tf

    for name in ("attention_cnn", "mobilenet_v3_small"):
        model = _build(name)
        grad_model = keras.Model(model.input, [model.get_layer(FEATURES_LAYER).output, model.output])
        x = tf.constant(_batch(1))
        with tf.GradientTape() as tape:
            feats, probs = grad_model(x, training=False)
            score = probs[:, 0]
        grads = tape.gradient(score, feats)
        assert grads is not None and grads.shape == feats.shape


def test_ensemble_averages_its_members_trains_and_round_trips(tmp_path):
    from neuralscan_cli.models.ensemble import member_models

    keras.utils.set_random_seed(0)
    members = [{"name": "small_cnn", "options": {"width": 4}}, {"name": "attention_cnn",
                                                                "options": {"widths": [8, 8, 16, 16]}}]
    model = create_model("ensemble", members=members, num_classes=3, input_size=SIZE)
    x = _batch()
    y = _predict(model, x)
    subs = member_models(model)
    assert [m.name for m in subs] == ["member1", "member2"]
    np.testing.assert_allclose(y, np.mean([_predict(m, x) for m in subs], axis=0), atol=1e-6)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    assert np.isfinite(float(np.ravel(model.train_on_batch(x, np.array([0, 2])))[0]))
    path = tmp_path / "ensemble.keras"
    model.save(path)
    np.testing.assert_allclose(_predict(keras.models.load_model(path, compile=False), x), _predict(model, x),
                               atol=1e-6)
    with pytest.raises(ValueError, match="at least two members"):
        create_model("ensemble", members=members[:1], input_size=SIZE)
    with pytest.raises(ValueError, match="'unet' is not a classifier"):
        create_model("ensemble", members=[members[0], {"name": "unet"}], input_size=SIZE)


# --- save / load -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["attention_cnn", "unet", "attention_unet", "attention_cnn_unet", "mobilenet_v3_small"])
def test_keras_save_load_roundtrip(name, tmp_path):
    model = _build(name)
    x = _batch()
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(_predict(loaded, x), _predict(model, x), rtol=0, atol=1e-6)


# --- OpenVINO --------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:The structure of `inputs`")  # Keras 3, raised inside ov.convert_model
@pytest.mark.parametrize("name", ["attention_cnn", "unet", "attention_unet", "attention_cnn_unet"])
def test_openvino_parity(name):
    ov = pytest.importorskip("openvino")
    model = _build(name)
    x = _batch(2, seed=1)
    expected = _predict(model, x)
    ov_model = ov.convert_model(model)
    # f32 explicitly: on CPUs with native bf16 (AVX512_BF16/AMX) OpenVINO may otherwise default to bf16 inference.
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(x)[compiled.output(0)]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)


@pytest.mark.filterwarnings("ignore:The structure of `inputs`")
@pytest.mark.parametrize("attention, n_matmul", [("cbam", 20), ("se", 10)])
def test_int8_fp32_scope_finds_the_channel_attention_mlps(attention, n_matmul):
    """The INT8 export's FP32 rule (models.INT8_KEEP_FP32) matches the converted graph's channel-attention
    dense layers under Keras 2 and Keras 3 naming, and nothing of the convolutions or the head."""
    ov = pytest.importorskip("openvino")
    from neuralscan_cli.export.openvino_export import fp32_scope

    model = create_model("attention_cnn", input_size=64, widths=(8, 8, 16, 16), attention=attention)
    ov_model = ov.convert_model(model)
    kept = set(fp32_scope(ov_model))
    types = {op.get_friendly_name(): op.get_type_name() for op in ov_model.get_ops()}
    assert sum(types[n] == "MatMul" for n in kept) == n_matmul  # 5 blocks; CBAM's shared MLP runs twice
    assert not any(types[n] == "Convolution" or "logits" in n for n in kept)
    assert fp32_scope(ov.convert_model(_build("attention_unet"))) == []  # its attention gates stay INT8


# --- backbones -------------------------------------------------------------------------------------------

def _n_trainable(model):
    return len(model.trainable_weights)


def test_set_backbone_trainable_and_freeze_option():
    model = _build("mobilenet_v3_small")
    n_all = _n_trainable(model)
    assert set_backbone_trainable(model, False) == 2 == _n_trainable(model)  # only the Dense head
    n_full = set_backbone_trainable(model, True)
    backbone = model.get_layer(BACKBONE_LAYER)
    assert 2 < n_full < n_all  # BatchNorm gamma/beta stay frozen in fine-tuning
    assert not any(l.trainable for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization))
    n_half = set_backbone_trainable(model, True, fine_tune_from=0.5)
    assert 2 < n_half < n_full
    assert not backbone.layers[1].trainable and any(l.trainable for l in backbone.layers[-10:])
    frozen = _build("mobilenet_v3_small", freeze_backbone=True)
    assert _n_trainable(frozen) == 2
    with pytest.raises(ValueError, match="no 'backbone' layer"):
        set_backbone_trainable(_build("small_cnn"), True)


def _first_kernel(model):
    backbone = model.get_layer(BACKBONE_LAYER)
    layer = next(l for l in backbone.layers if isinstance(l, keras.layers.Conv2D))
    return np.asarray(layer.get_weights()[0])


@pytest.mark.parametrize("suffix", [".weights.h5", ".h5"])
def test_backbone_weights_from_file(suffix, tmp_path):
    if suffix == ".h5" and KERAS3:
        pytest.skip("Keras 3 can only write .weights.h5 (it still reads legacy .h5 by name)")
    keras.utils.set_random_seed(1)
    src = _build("mobilenet_v3_small")
    path = tmp_path / f"backbone{suffix}"
    src.get_layer(BACKBONE_LAYER).save_weights(str(path))
    keras.utils.set_random_seed(2)
    fresh = _build("mobilenet_v3_small")
    assert not np.array_equal(_first_kernel(fresh), _first_kernel(src))
    loaded = _build("mobilenet_v3_small", weights=str(path))
    np.testing.assert_array_equal(_first_kernel(loaded), _first_kernel(src))
    x = _batch()
    # the head is new (random), but the backbone feature maps must match exactly
    feats = lambda m: _predict(keras.Model(m.input, m.get_layer(FEATURES_LAYER).output), x)  # noqa: E731
    np.testing.assert_allclose(feats(loaded), feats(src), rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras 3 warns per object it cannot load
def test_backbone_weights_from_foreign_file_is_an_error(tmp_path):
    path = tmp_path / "other.weights.h5"
    _build("small_cnn").save_weights(str(path))
    path.with_name("x.keras").write_bytes(b"")
    with pytest.raises(ValueError, match="could not load mobilenet_v3_small|no weights in"):
        _build("mobilenet_v3_small", weights=str(path))
    with pytest.raises(ValueError, match="expected a .weights.h5 or .h5 file"):
        _build("mobilenet_v3_small", weights=str(path.with_name("x.keras")))


# --- U-Net encoder from a classifier ---------------------------------------------------------------------

def test_init_encoder_from_classifier():
    keras.utils.set_random_seed(3)
    clf = _build("attention_cnn", widths=(16, 32, 64, 128))
    seg = _build("attention_unet", base_filters=16, depth=4)
    before = np.asarray(seg.get_layer("s2_b1_conv1").get_weights()[0]).copy()
    copied = init_encoder_from_classifier(seg, clf)
    assert copied == 16  # 8 encoder convs + their BatchNorms
    after = np.asarray(seg.get_layer("s2_b1_conv1").get_weights()[0])
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, np.asarray(clf.get_layer("s2_b1_conv1").get_weights()[0]))
    # widths that do not line up with base_filters: nothing is copied
    assert init_encoder_from_classifier(_build("unet", base_filters=8), clf) == 0


def test_attention_cnn_unet_takes_the_whole_classifier_trunk():
    keras.utils.set_random_seed(4)
    trunk = dict(widths=(8, 16, 32, 64), blocks_per_stage=(1, 1, 2, 1))
    clf = _build("attention_cnn", **trunk)
    seg = _build("attention_cnn_unet", **trunk, decoder_widths=(32, 16, 16, 16), full_res_filters=8)
    # every trunk layer with weights (stem, blocks, projections, CBAM MLPs and spatial convs); not the logits
    trunk_layers = [layer for layer in clf.layers if layer.weights and layer.name != "logits"]
    assert init_encoder_from_classifier(seg, clf) == len(trunk_layers)
    x = _batch(seed=5)
    features = [keras.Model(m.inputs, m.get_layer(FEATURES_LAYER).output) for m in (clf, seg)]
    np.testing.assert_allclose(_predict(features[1], x), _predict(features[0], x), rtol=0, atol=1e-5)
    assert _predict(seg, x).shape == (2, SIZE, SIZE, 1)
    # another trunk (other widths): only the width-free CBAM spatial convs and their BatchNorms line up
    other = _build("attention_cnn_unet", widths=(16, 32, 64, 128), decoder_widths=(32, 16, 16, 16))
    stem = np.asarray(other.get_layer("stem_conv").get_weights()[0]).copy()
    assert init_encoder_from_classifier(other, clf) == 2 * 5  # 5 residual blocks
    np.testing.assert_array_equal(np.asarray(other.get_layer("stem_conv").get_weights()[0]), stem)
    with pytest.raises(ValueError, match="decoder_widths needs 4"):
        _build("attention_cnn_unet", **trunk, decoder_widths=(32, 16))


def test_models_command_lists_what_train_builds():
    from typer.testing import CliRunner

    from neuralscan_cli.cli.app import app

    r = CliRunner().invoke(app, ["models"])
    assert r.exit_code == 0, r.output
    names = {line.split("│")[1].strip() for line in r.output.splitlines() if line.startswith("│")}
    assert set(CLASSIFIERS + SEGMENTERS) <= names and "ensemble" not in names  # built by `neuralscan ensemble`
    assert "neuralscan ensemble" in r.output
