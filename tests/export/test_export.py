"""`neuralscan export` on a tiny classifier and segmenter trained on the sample images (input 64)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neuralscan_cli.cli.app import app
from neuralscan_cli.data import SplitConfig, build_cache
from neuralscan_cli.export import export_bundle
from neuralscan_cli.inference import load_bundle, load_images_for_bundle, make_runner
from neuralscan_cli.preprocess import PreprocessConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from test_evaluate_cli import _write_bundle, write_four_class_manifest  # noqa: E402  (the evaluate tests' helpers)

SAMPLES = Path(__file__).resolve().parents[2] / "neuralscan_cli" / "samples" / "labels.csv"
CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]
SIZE = 64

cli = CliRunner()


def build_four_class_data(tmp: Path) -> tuple[Path, Path]:
    """(a cache of the 9 four-class samples at 64 px, a manifest of the same files with absolute paths)."""
    cache = tmp / "cache"
    # workers=1: forking a process that already holds TensorFlow is unsafe
    build_cache([SAMPLES], cache, config=PreprocessConfig(size=SIZE), classes=CLASSES,
                split=SplitConfig(val_fraction=0.4, test_fraction=0), workers=1)
    return cache, write_four_class_manifest(tmp / "four_classes.csv")


def build_tiny_classifier(tmp: Path, cache: Path) -> Path:
    """A Keras-only bundle of a small CNN that has memorised the 9 samples (confident on every one, so INT8
    rounding cannot flip a label), with the training cache recorded in model.json as `train` records it."""
    import keras

    from neuralscan_cli.data import DatasetCache

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Rescaling(2.0, offset=-1.0)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(x))
    data = DatasetCache.open(cache)
    images, labels = data.load(None)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    # one full batch per step: ITEX on this machine crashes on a trailing batch of 1 with some networks
    model.fit(images[..., None], labels, epochs=150, batch_size=len(images), verbose=0)
    root = _write_bundle(tmp / "tiny-classifier", model, "classify", CLASSES, openvino=False)
    meta = json.loads((root / "model.json").read_text())
    meta["training"] = {"data": {"cache": str(cache.resolve()), "train_split": "train", "val_split": "val"}}
    (root / "model.json").write_text(json.dumps(meta))
    return root


def build_exported_classifier(tmp: Path) -> dict:
    """Cache, manifest, the Keras bundle and its export (FP32 + INT8) in tmp/exported."""
    cache, manifest = build_four_class_data(tmp)
    keras_bundle = build_tiny_classifier(tmp, cache)
    report = export_bundle(keras_bundle, tmp / "exported", int8=True, calibration_size=50)
    return {"tmp": tmp, "cache": cache, "manifest": manifest, "keras_bundle": keras_bundle,
            "exported": tmp / "exported", "report": report}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return build_exported_classifier(tmp_path_factory.mktemp("export"))


def _assert_one_line_error(result, code, *fragments):
    assert result.exit_code == code, result.output
    assert not isinstance(result.exception, Exception)
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.output
    for f in fragments:
        assert f in errors[0], errors[0]
    return errors[0]


def test_export_writes_fp32_int8_and_metadata(work):
    out, report = work["exported"], work["report"]
    assert report.int8_accepted is True and report.message is None
    for rel in ("model.keras", "model.json", "openvino/fp32/model.xml", "openvino/fp32/model.bin",
                "openvino/int8/model.xml", "openvino/int8/model.bin"):
        assert (out / rel).is_file(), rel
    bundle = load_bundle(out)
    assert bundle.available_engines() == ["openvino-int8", "openvino-fp32", "keras"]
    assert bundle.classes == CLASSES and bundle.preprocessing == PreprocessConfig(size=SIZE)
    meta = bundle.meta
    assert meta["training"]["data"]["cache"] == str(work["cache"].resolve())  # provenance travels along
    export = meta["export"]
    assert export["int8_accepted"] is True
    assert export["quantization"]["preset"] == "performance" and export["quantization"]["method"] == "nncf.quantize"
    assert export["calibration"]["split"] == "train" and export["calibration"]["kind"] == "cache"
    assert export["validation"]["split"] == "val"
    assert export["calibration"]["n"] + export["validation"]["n"] == 9
    assert export["versions"]["openvino"] and export["versions"]["nncf"]
    assert export["input_shape"] == [-1, SIZE, SIZE, 1]
    assert export["fp32_max_abs_diff_vs_keras"] < 1e-4
    # (a network this small has more quantiser description in its INT8 .xml than weights in its .bin, so the
    # INT8 IR is not smaller here as it is for real models)
    assert export["sizes_bytes"]["openvino_int8"] > 0 and export["sizes_bytes"]["openvino_fp32"] > 0
    m = meta["metrics"]
    assert set(m["val_fp32"]) == {"n", "accuracy", "macro_f1"}
    assert set(m["val_int8"]) == {"n", "accuracy", "macro_f1", "top1_agreement_with_fp32"}
    assert m["val_int8"]["accuracy"] >= m["val_fp32"]["accuracy"] - 0.01

    # the batch dimension is free, and the IR knows what it is without its model.json
    import openvino as ov

    ir = ov.Core().read_model(out / "openvino" / "int8" / "model.xml")
    assert ir.inputs[0].partial_shape[0].is_dynamic
    embedded = json.loads(ir.get_rt_info(["neuralscan", "bundle"]).astype(str))
    assert embedded["classes"] == CLASSES and embedded["precision"] == "int8"


def test_fp32_ir_matches_keras(work):
    bundle = load_bundle(work["exported"])
    images, _labels, _masks, _records = load_images_for_bundle(work["manifest"], bundle)
    keras_probs = make_runner(bundle, "keras").predict(images)
    fp32 = make_runner(bundle, "openvino-fp32")  # compiled with INFERENCE_PRECISION_HINT=f32
    np.testing.assert_allclose(fp32.predict(images, batch_size=4), keras_probs, atol=1e-4)
    np.testing.assert_allclose(fp32.predict(images[:1], batch_size=1), keras_probs[:1], atol=1e-4)


def test_int8_and_fp32_agree_on_sample_labels(work):
    bundle = load_bundle(work["exported"])
    images, labels, _masks, _records = load_images_for_bundle(work["manifest"], bundle)
    fp32 = make_runner(bundle, "openvino-fp32").predict(images)
    int8 = make_runner(bundle, "openvino-int8").predict(images)
    assert make_runner(bundle).engine == "openvino-int8"  # auto picks the fastest
    # the network has memorised the samples (every top probability well above the rest), so INT8's small
    # rounding errors cannot change a label: exact agreement is expected, not just most of the labels
    assert fp32.argmax(1).tolist() == labels.tolist()
    assert int8.argmax(1).tolist() == fp32.argmax(1).tolist()
    assert np.abs(int8 - fp32).max() < 0.1


def test_accuracy_gate_fails_with_an_impossible_margin(work):
    out = work["tmp"] / "gate"
    r = cli.invoke(app, ["export", str(work["keras_bundle"]), "--out", str(out), "--int8",
                         "--max-accuracy-drop", "-1", "--calibration-size", "20"])
    line = _assert_one_line_error(r, 1, "INT8 accuracy", "below FP32", "--accuracy-control")
    assert "FP32" in r.output and "INT8" in r.output  # the side-by-side table came first
    assert line == r.output.strip().splitlines()[-1]
    bundle = load_bundle(out)  # the FP32 IR is still written and usable
    assert bundle.available_engines() == ["openvino-fp32", "keras"]
    assert not (out / "openvino" / "int8").exists()
    assert bundle.meta["export"]["int8_accepted"] is False
    assert bundle.meta["export"]["accuracy_check"]["max_drop"] == -1
    assert "val_int8" in bundle.meta["metrics"] and "val_fp32" in bundle.meta["metrics"]


def test_accuracy_control_retry_is_reported(work):
    # an impossible margin again: NNCF's accuracy-aware retry runs, cannot meet it, and the command still fails
    out = work["tmp"] / "gate-ac"
    r = cli.invoke(app, ["export", str(work["keras_bundle"]), "--out", str(out), "--int8", "--accuracy-control",
                         "--max-accuracy-drop", "-1", "--calibration-size", "20", "--no-keras"])
    _assert_one_line_error(r, 1, "INT8 accuracy")
    meta = load_bundle(out).meta
    assert meta["export"]["quantization"]["method"] == "nncf.quantize_with_accuracy_control"
    assert "keras" not in meta["files"] and not (out / "model.keras").exists()


def test_fp32_only_export_in_place_and_user_errors(work, tmp_path):
    import shutil

    inplace = tmp_path / "inplace"
    shutil.copytree(work["keras_bundle"], inplace)
    r = cli.invoke(app, ["export", str(inplace), "--out", str(inplace)])
    assert r.exit_code == 0, r.output
    bundle = load_bundle(inplace)
    assert bundle.available_engines() == ["openvino-fp32", "keras"]
    assert bundle.meta["export"]["int8_requested"] is False

    # an FP32-only export of an INT8 bundle into a new folder: the INT8 figures stay behind with the INT8 model
    fp32_copy = tmp_path / "fp32-copy"
    r = cli.invoke(app, ["export", str(work["exported"]), "--out", str(fp32_copy)])
    assert r.exit_code == 0, r.output
    assert "val_int8" in load_bundle(work["exported"]).meta["metrics"]
    assert "val_int8" not in load_bundle(fp32_copy).meta["metrics"]
    assert load_bundle(fp32_copy).available_engines() == ["openvino-fp32", "keras"]

    # INT8 with no training cache on record and no --calibration: one line, exit 2, nothing written
    meta = json.loads((inplace / "model.json").read_text())
    del meta["training"]
    (inplace / "model.json").write_text(json.dumps(meta))
    r = cli.invoke(app, ["export", str(inplace), "--out", str(tmp_path / "o1"), "--int8"])
    _assert_one_line_error(r, 2, "--calibration")
    assert not (tmp_path / "o1").exists()
    # --calibration given as raw scans, but nothing to check INT8 against
    r = cli.invoke(app, ["export", str(inplace), "--out", str(tmp_path / "o2"), "--int8", "--calibration",
                         str(work["manifest"])])
    _assert_one_line_error(r, 2, "--validation")
    _assert_one_line_error(cli.invoke(app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o3")]), 2,
                           "no such model")
    _assert_one_line_error(cli.invoke(app, ["export", str(inplace), "--out", str(tmp_path / "o4"), "--preset",
                                            "fast"]), 2, "--preset")
    # INT8 settings without --int8, and the other task's margin, are refused rather than ignored
    _assert_one_line_error(cli.invoke(app, ["export", str(inplace), "--out", str(tmp_path / "o5"), "--calibration",
                                            str(work["manifest"]), "--preset", "mixed"]), 2,
                           "calibration, preset", "add --int8")
    _assert_one_line_error(cli.invoke(app, ["export", str(inplace), "--out", str(tmp_path / "o6"), "--int8",
                                            "--max-dice-drop", "0.5"]), 2, "max Dice drop", "classifier")
    # a cache preprocessed otherwise (CLAHE here) would fit the INT8 ranges on images the model never sees
    clahe = tmp_path / "clahe-cache"
    build_cache([SAMPLES], clahe, config=PreprocessConfig(size=SIZE, clahe=True), classes=CLASSES,
                split=SplitConfig(val_fraction=0.5, test_fraction=0), workers=1)
    _assert_one_line_error(cli.invoke(app, ["export", str(inplace), "--out", str(tmp_path / "o7"), "--int8",
                                            "--calibration", str(clahe), "--validation", str(work["cache"])]), 2,
                           "preprocessed differently", "clahe")
    for k in (5, 6, 7):
        assert not (tmp_path / f"o{k}").exists()


def test_segmenter_export_checks_dice(work, tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((SIZE, SIZE, 1))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    model = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(y))
    root = _write_bundle(tmp_path / "tiny-seg", model, "segment", ["tumor"], openvino=False)
    r = cli.invoke(app, ["export", str(root), "--out", str(tmp_path / "seg"), "--int8", "--calibration",
                         str(work["cache"]), "--validation", str(work["cache"]), "--max-dice-drop", "1"])
    assert r.exit_code == 0, r.output
    assert "Dice" in r.output
    meta = load_bundle(tmp_path / "seg").meta
    assert meta["export"]["accuracy_check"]["metric"] == "dice_mean"
    assert set(meta["metrics"]["val_int8"]) == {"n", "dice_mean", "threshold"}
    assert meta["metrics"]["val_int8"]["n"] == meta["export"]["validation"]["n"] > 0


def test_segmenter_export_chooses_the_mask_rule_on_training_images(work, tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((SIZE, SIZE, 1))
    model = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp))
    root = _write_bundle(tmp_path / "tiny-seg", model, "segment", ["tumor"], openvino=False)
    meta = json.loads((root / "model.json").read_text())
    meta["training"] = {"data": {"cache": str(work["cache"].resolve()), "train_split": "train", "val_split": "val"}}
    (root / "model.json").write_text(json.dumps(meta))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
    from test_segment_cli import constant_classifier

    gate = constant_classifier(tmp_path / "gate", "no_tumor", size=SIZE)
    r = cli.invoke(app, ["export", str(root), "--out", str(tmp_path / "seg"), "--gate", str(gate)])
    assert r.exit_code == 0, r.output
    post = load_bundle(tmp_path / "seg").postprocessing
    assert post["gate"] == str(gate)  # recorded for segment / evaluate / classify to apply
    chosen = load_bundle(tmp_path / "seg").meta["postprocessing"]
    assert chosen["chosen_on"]["split"] == "train" and chosen["chosen_on"]["n"] > 0
    scores = {float(k): v for k, v in chosen["chosen_on"]["mean_dice"].items()}
    assert post["min_component"] in scores and scores[post["min_component"]] == max(scores.values())


@pytest.mark.parametrize("attention", ["cbam", "se"])
def test_int8_keeps_channel_attention_mlps_fp32(work, tmp_path, attention):
    """An attention_cnn's INT8 IR: every convolution reads INT8 activations, the channel-attention MLPs
    (models.INT8_KEEP_FP32) read FP32 ones, and model.json names the nodes kept FP32."""
    import keras
    import openvino as ov

    from neuralscan_cli.models import create_model

    keras.utils.set_random_seed(0)
    model = create_model("attention_cnn", input_size=SIZE, widths=(8, 8, 16, 16), attention=attention)
    root = _write_bundle(tmp_path / f"att-{attention}", model, "classify", CLASSES, openvino=False)
    meta = json.loads((root / "model.json").read_text())
    meta["training"] = {"data": {"cache": str(work["cache"].resolve()), "train_split": "train", "val_split": "val"}}
    (root / "model.json").write_text(json.dumps(meta))
    # an untrained network: the accuracy check is not what this test is about
    report = export_bundle(root, tmp_path / "out", int8=True, calibration_size=5, max_drop_accuracy=1.0)
    assert report.int8_path is not None

    def reads_int8(op) -> bool:
        return op.input(0).get_source_output().get_node().get_type_name() == "FakeQuantize"

    q = ov.Core().read_model(report.int8_path)
    convs = [op for op in q.get_ops() if op.get_type_name() == "Convolution"]
    gates = [op for op in q.get_ops() if op.get_type_name() == "MatMul"
             and ("_att_ca_fc" in op.get_friendly_name() or "_att_fc" in op.get_friendly_name())]
    head = [op for op in q.get_ops() if op.get_type_name() == "MatMul" and "logits" in op.get_friendly_name()]
    # 5 blocks, two dense layers each; CBAM applies its shared MLP to the average- and the max-pooled vector
    assert len(gates) == (20 if attention == "cbam" else 10)
    assert not any(reads_int8(op) for op in gates)
    assert convs and all(reads_int8(op) for op in convs if op.get_output_partial_shape(0)[1].get_length() > 1)
    assert head and all(reads_int8(op) for op in head)  # the rule is the attention MLPs, not every dense layer
    kept = json.loads((tmp_path / "out" / "model.json").read_text())["export"]["quantization"]["kept_fp32"]
    assert kept and all("_att_" in name for name in kept)


def test_a_rebuilt_training_cache_is_not_used_and_said(work, tmp_path):
    """The training cache recorded in model.json, rebuilt since with other settings, must neither calibrate
    nor check INT8 (its images are not the model's) nor stop an FP32 export."""
    import shutil

    clahe = tmp_path / "rebuilt"
    build_cache([SAMPLES], clahe, config=PreprocessConfig(size=SIZE, clahe=True), classes=CLASSES,
                split=SplitConfig(val_fraction=0.5, test_fraction=0), workers=1)
    bundle = tmp_path / "bundle"
    shutil.copytree(work["keras_bundle"], bundle)
    meta = json.loads((bundle / "model.json").read_text())
    meta["training"]["data"]["cache"] = str(clahe)
    (bundle / "model.json").write_text(json.dumps(meta))
    r = cli.invoke(app, ["export", str(bundle), "--out", str(tmp_path / "fp32")])
    assert r.exit_code == 0, r.output
    assert "has changed since" in " ".join(r.output.split())
    _assert_one_line_error(cli.invoke(app, ["export", str(bundle), "--out", str(tmp_path / "int8"), "--int8"]), 2,
                           "has changed since", "--calibration")
