"""Training loop: configs, a short real training that lowers the loss, resume, the run folder as a bundle."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neuralscan_cli.cli.app import app
from neuralscan_cli.data import DatasetCache, SplitConfig, build_cache
from neuralscan_cli.preprocess import PreprocessConfig
from neuralscan_cli.training import ConfigError, load_config, train
from neuralscan_cli.training.pipeline import class_weights, make_dataset

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CLASSES = ["glioma", "meningioma", "pituitary", "no_tumor"]
NO_AUGMENT = {"augment.flip_lr": "false", "augment.rotation_deg": 0, "augment.zoom": 0, "augment.shift": 0,
              "augment.brightness": 0, "augment.contrast": 0, "augment.gamma": 0, "augment.noise_std": 0}


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    """48 real images, 12 per class: figshare folds 1 and 4 (val), Br35H no-tumour groups split by group."""
    tmp = tmp_path_factory.mktemp("train-cache")
    rows = []
    with open(DATA / "figshare" / "labels.csv") as fh:
        per = {}
        for r in csv.DictReader(fh):
            key = (r["label"], r["fold"])
            if r["fold"] in ("1", "4") and per.get(key, 0) < 6:
                per[key] = per.get(key, 0) + 1
                rows.append({"image": str(DATA / "figshare" / r["image"]), "label": r["label"],
                             "mask": str(DATA / "figshare" / r["mask"]), "fold": r["fold"], "group": ""})
    with open(DATA / "br35h" / "labels.csv") as fh:
        n = 0
        for r in csv.DictReader(fh):
            if r["label"] == "no_tumor" and n < 12:
                n += 1
                rows.append({"image": str(DATA / "br35h" / r["image"]), "label": "no_tumor", "mask": "",
                             "fold": "", "group": r["duplicate_group"]})
    manifest = tmp / "labels.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "label", "mask", "fold", "group"])
        w.writeheader()
        w.writerows(rows)
    out = tmp / "cache"
    build_cache([manifest], out, config=PreprocessConfig(size=64), classes=CLASSES,
                split=SplitConfig(val_folds=("4",), val_fraction=0.3, test_fraction=0.0), workers=1)
    return out


def _cfg(cache, out, **over):
    sets = [f"data.cache={cache}", f"out={out}", "model.name=small_cnn", "model.input_size=64", 
            "train.batch_size=8", "train.epochs=3", "train.learning_rate=0.01", "train.warmup_epochs=0",
            "runtime.itex=true"] + [f"{k}={v}" for k, v in over.items()]
    return load_config(CONFIGS / "classifier.yaml", sets)


def test_config_overrides_and_validation(tmp_path):
    cfg = load_config(CONFIGS / "classifier.yaml", ["train.epochs=7", "model.options.dropout=0.5",
                                                        "data.cache=x"])
    assert cfg["train"]["epochs"] == 7 and cfg["model"]["options"]["dropout"] == 0.5
    with pytest.raises(ConfigError, match="unknown config field 'train.epoch'"):
        load_config(CONFIGS / "classifier.yaml", ["train.epoch=7", "data.cache=x"])
    with pytest.raises(ConfigError, match="precision must be one of"):
        load_config(CONFIGS / "classifier.yaml", ["runtime.precision=fp8", "data.cache=x"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config(CONFIGS / "classifier.yaml", ["model.input_size=100", "data.cache=x"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    # a value of the wrong kind is named, not taken as true or crashed on later
    for override, message in (("train.class_weights=maybe", "train.class_weights must be true or false"),
                              ("runtime.itex=perhaps", "runtime.itex must be true or false"),
                              ("train.learning_rate=fast", "train.learning_rate must be a number"),
                              ("model.init_from=runs/x", "model.init_from is for segmenters"),
                              ("model.name=ensemble", "neuralscan ensemble RUN RUN"),
                              # accepted before, then TensorFlow crashed (negative threads), steps ran backwards,
                              # or the advice misled ("a group lies in both train and val; rebuild the cache")
                              ("runtime.intra_op_threads=-1", "intra_op_threads must be a whole number >= 0"),
                              ("train.max_steps_per_epoch=-2", "max_steps_per_epoch must be"),
                              ("train.label_smoothing=5", "label_smoothing must be from 0"),
                              ("train.patience=-1", "patience must be"),
                              ("data.val_split=train", "both 'train'"),
                              ("model.options=[1, 2]", "model.options must be a mapping")):
        with pytest.raises(ConfigError, match=message):
            load_config(CONFIGS / "classifier.yaml", [override, "data.cache=x"])
    # YAML 1.1 reads 1e-4 as a string; it is still the number the user meant
    assert load_config(CONFIGS / "classifier.yaml", ["train.learning_rate=1e-4", "data.cache=x"])[
        "train"]["learning_rate"] == pytest.approx(1e-4)


def test_switching_the_model_drops_the_configs_model_options():
    """configs/classifier.yaml sets attention_cnn widths; another model must not inherit them."""
    shipped = load_config(CONFIGS / "classifier.yaml", ["data.cache=x"])["model"]["options"]
    assert shipped  # the recipe sets options, or this test checks nothing
    same = load_config(CONFIGS / "classifier.yaml", ["model.name=attention_cnn", "data.cache=x"])
    assert same["model"]["options"] == shipped
    assert load_config(CONFIGS / "classifier.yaml", ["model.name=small_cnn", "data.cache=x"])["model"]["options"] == {}
    for order in (["model.options.width=4", "model.name=small_cnn"], ["model.name=small_cnn", "model.options.width=4"]):
        assert load_config(CONFIGS / "classifier.yaml", [*order, "data.cache=x"])["model"]["options"] == {"width": 4}


def test_class_weights_balance_classes():
    w = class_weights(np.array([0, 0, 0, 1]), 2)
    assert w[0] * 3 == pytest.approx(w[1] * 1)  # each class carries the same total weight


def test_augmentation_keeps_mask_aligned():
    """The same random transform moves image and mask: the mask still covers the bright square."""
    img = np.zeros((4, 64, 64), np.uint8)
    img[:, 20:40, 24:44] = 255
    mask = (img > 0).astype(np.uint8)
    aug = {"flip_lr": True, "rotation_deg": 20, "zoom": 0.1, "shift": 0.1}
    ds = make_dataset(img, mask, task="segment", num_classes=1, batch_size=4, input_size=64, training=True,
                      augment=aug, seed=3)
    x, y = next(iter(ds))
    x, y = x.numpy()[..., 0], y.numpy()[..., 0]
    assert not np.allclose(x, img / 255.0)  # something moved
    bright = x > 0.5
    agree = (bright == (y > 0.5)).mean()
    assert agree > 0.98


def test_training_lowers_loss_and_writes_a_bundle(small_cache, tmp_path):
    out = tmp_path / "run"
    # without augmentation the training loss on 48 images must fall within a few epochs
    result = train(_cfg(small_cache, out, **{"train.epochs": 5, **NO_AUGMENT}))
    hist = list(csv.DictReader(open(out / "history.csv")))
    losses = [float(r["loss"]) for r in hist]
    assert losses[-1] < losses[0]
    for name in ("model.keras", "model.json", "provenance.json", "config.yaml", "history.png",
                 "checkpoints/last.keras", "checkpoints/best.weights.h5"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "model.json").read_text())
    assert meta["task"] == "classify" and meta["classes"] == CLASSES and meta["input"]["size"] == 64
    assert meta["training"]["data"]["fingerprint"] == DatasetCache.open(small_cache).info["fingerprint"]
    assert meta["training"]["seed"] == 42 and "acceleration" in meta["training"]
    assert meta["metrics"]["val"]["n"] == len(DatasetCache.open(small_cache).indices("val"))
    assert 1 <= result.best_epoch <= 5


def test_running_weight_average_is_the_mean_and_skips_a_counted_epoch(tmp_path):
    from neuralscan_cli.training.loop import _accumulate_average, _load_average

    path = tmp_path / "average.npz"
    seen = [[np.full((2, 3), float(e)), np.array([e, -e], np.float32)] for e in (1, 2, 6)]
    for epoch, w in enumerate(seen, start=4):
        _accumulate_average(path, w, epoch)
    _accumulate_average(path, [np.zeros((2, 3)), np.zeros(2)], 6)  # epoch 6 again (a resumed run): ignored
    mean, count = _load_average(path)
    assert count == 3
    assert np.allclose(mean[0], 3.0) and np.allclose(mean[1], [3.0, -3.0])


def test_average_last_ships_the_averaged_weights(small_cache, tmp_path):
    out = tmp_path / "run"
    # patience 0 stops any run after its first epoch, except inside the averaging window (here: every epoch)
    train(_cfg(small_cache, out, **{"train.epochs": 3, "train.average_last": 3, "train.patience": 0}))
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["weights"] == "average of the last epochs"
    assert prov["weight_average"]["epochs_averaged"] == 3 and prov["weight_average"]["first_epoch"] == 1
    assert prov["epochs_run"] == 3
    assert set(prov["weight_average"]["best_epoch_val"]) == {"val_accuracy", "val_macro_f1"}
    import keras

    from neuralscan_cli.training.loop import _load_average

    shipped = keras.models.load_model(str(out / "model.keras"), compile=False).get_weights()
    mean, _ = _load_average(out / "checkpoints" / "average.npz")
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(shipped, mean))
    last = keras.models.load_model(str(out / "checkpoints" / "last.keras"), compile=False).get_weights()
    assert not all(np.allclose(a, b) for a, b in zip(shipped, last))
    with pytest.raises(ConfigError, match="average_last"):
        _cfg(small_cache, out, **{"train.epochs": 3, "train.average_last": 4})


def test_resume_continues_from_last_checkpoint(small_cache, tmp_path):
    out = tmp_path / "run"
    train(_cfg(small_cache, out, **{"train.epochs": 2}))
    cfg = _cfg(small_cache, out, **{"train.epochs": 3})
    result = train(cfg, resume=True)
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(out / "history.csv"))]
    assert epochs == [1, 2, 3] and result.epochs_run == 3
    # a resume that changes what the checkpoint was trained with is refused, and the run's record stays as it was
    saved = (out / "config.yaml").read_text()
    from neuralscan_cli.training.loop import TrainError

    for change in ({"train.learning_rate": 0.5}, {"model.name": "attention_cnn"}, {"train.optimizer": "sgd"}):
        with pytest.raises(TrainError, match="--resume continues the run as it was set up"):
            train(_cfg(small_cache, out, **{"train.epochs": 4, **change}), resume=True)
    assert (out / "config.yaml").read_text() == saved


def test_same_seed_same_first_epoch(small_cache, tmp_path):
    a = train(_cfg(small_cache, tmp_path / "a", **{"train.epochs": 1}))
    b = train(_cfg(small_cache, tmp_path / "b", **{"train.epochs": 1}))
    la = float(next(csv.DictReader(open(a.run_dir / "history.csv")))["loss"])
    lb = float(next(csv.DictReader(open(b.run_dir / "history.csv")))["loss"])
    assert la == pytest.approx(lb, rel=1e-3)


def test_cli_errors_are_one_line(small_cache, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--config", str(CONFIGS / "classifier.yaml"), "--cache", str(tmp_path / "none"),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "not a dataset cache" in r.output and not isinstance(r.exception, Exception)
    r = runner.invoke(app, ["train", "--config", str(CONFIGS / "classifier.yaml"), "--cache", str(small_cache),
                            "--out", str(tmp_path / "o"), "--model", "no_such_net", "--set", "model.input_size=64"])
    assert r.exit_code == 2 and "unknown model" in r.output
    # the failed start left nothing in the way of the corrected command
    assert not (tmp_path / "o").exists() or not (tmp_path / "o" / "checkpoints").exists()
    (tmp_path / "o" / "checkpoints").mkdir(parents=True)  # as an older version's failed start left it
    r = runner.invoke(app, ["train", "--config", str(CONFIGS / "classifier.yaml"), "--cache", str(small_cache),
                            "--out", str(tmp_path / "o"), "--model", "small_cnn", "--set", "model.input_size=64",
                            "--epochs", "1", "--set", "train.max_steps_per_epoch=1"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "model.json").is_file()
    r = runner.invoke(app, ["train", "--config", str(CONFIGS / "classifier.yaml"), "--cache", str(small_cache),
                            "--model", "unet", "--set", "model.input_size=64", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "segment model" in r.output
    r = runner.invoke(app, ["train", "--config", str(CONFIGS / "classifier.yaml"), "--cache", str(small_cache),
                            "--resume", "--set", "model.input_size=64", "--out", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "nothing to resume" in r.output
    r = runner.invoke(app, ["train", "--config", str(CONFIGS / "classifier.yaml"), "--cache", str(small_cache),
                            "--model", "small_cnn", "--set", "model.input_size=96", "--out", str(tmp_path / "o4")])
    assert r.exit_code == 2 and "rebuild the cache with --size 96" in r.output


def test_resume_in_a_fresh_process(small_cache, tmp_path):
    """--resume must reload the checkpoint's custom schedule in a new interpreter (nothing registered yet)."""
    import subprocess
    import sys

    out = tmp_path / "run"
    base = ["-m", "neuralscan_cli", "train", "--config", str(CONFIGS / "classifier.yaml"), "--cache",
            str(small_cache), "--out", str(out), "--model", "small_cnn", "--set", "model.input_size=64",
            "--batch-size", "8"]
    first = subprocess.run([sys.executable, *base, "--epochs", "1"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run([sys.executable, *base, "--epochs", "2", "--resume"], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert [int(r["epoch"]) for r in csv.DictReader(open(out / "history.csv"))] == [1, 2]


def test_segmenter_training_lowers_loss(small_cache, tmp_path):
    out = tmp_path / "seg"
    cfg = load_config(CONFIGS / "segmenter.yaml", [
        f"data.cache={small_cache}", f"out={out}", "model.name=unet", "model.input_size=64", 
        "model.options={base_filters: 4, depth: 2}", "train.batch_size=8", "train.epochs=3",
        "train.learning_rate=0.01", "train.warmup_epochs=0", *[f"{k}={v}" for k, v in NO_AUGMENT.items()]])
    train(cfg)
    hist = list(csv.DictReader(open(out / "history.csv")))
    assert float(hist[-1]["loss"]) < float(hist[0]["loss"])
    meta = json.loads((out / "model.json").read_text())
    assert meta["task"] == "segment" and "dice_mean_tumor" in meta["metrics"]["val"]


def test_bundle_with_weights_only_gives_the_same_predictions(small_cache, tmp_path):
    """Shipped bundles carry model.weights.h5 (loads in Keras 2 and 3) instead of a version-bound .keras file."""
    from neuralscan_cli.inference import load_bundle
    from neuralscan_cli.inference.runners import make_runner

    out = tmp_path / "run"
    train(_cfg(small_cache, out, **{"train.epochs": 1}))
    x = DatasetCache.open(small_cache).load("val")[0]
    full = make_runner(load_bundle(out), "keras").predict(x)
    (out / "model.keras").unlink()
    meta = json.loads((out / "model.json").read_text())
    meta["files"]["keras"] = "model.weights.h5"
    (out / "model.json").write_text(json.dumps(meta))
    rebuilt = make_runner(load_bundle(out), "keras").predict(x)
    np.testing.assert_allclose(rebuilt, full, atol=1e-5)


def test_mask_supervised_batches_keep_masks_aligned_and_weighted():
    """With masks, a classify batch is (x, (y, mask), (w, mask weight)); the mask moves with its image."""
    img = np.zeros((4, 64, 64), np.uint8)
    img[:, 10:30, 30:50] = 255
    mask = (img > 0).astype(np.uint8)
    aug = {"flip_lr": True, "rotation_deg": 20, "zoom": 0.1, "shift": 0.1}
    ds = make_dataset(img, np.array([0, 1, 2, 3]), task="classify", num_classes=4, batch_size=4, input_size=64,
                      training=True, augment=aug, seed=5, sample_weights=np.array([1, 2, 3, 4], np.float32),
                      masks=mask, mask_weights=np.array([1, 0, 1, 0], np.float32))
    x, (y, m), (w, mw) = next(iter(ds))
    x, m = x.numpy()[..., 0], m.numpy()[..., 0]
    assert not np.allclose(x, img / 255.0)  # something moved
    assert ((x > 0.5) == (m > 0.5)).mean() > 0.98
    assert y.shape == (4, 4) and m.shape == (4, 64, 64)
    # the shuffle reorders rows: the class weight and the mask weight must travel with their image
    order = np.argmax(y.numpy(), axis=1)
    assert np.allclose(w.numpy(), np.array([1, 2, 3, 4])[order])
    assert np.allclose(mw.numpy(), np.array([1, 0, 1, 0])[order])


def test_tumour_fraction_loss_compares_cell_fractions():
    from neuralscan_cli.training.losses import dice_bce_loss, tumour_fraction_loss

    truth = np.zeros((1, 8, 8, 1), np.float32)
    truth[0, 0:4, 0:2] = 1  # half of the top-left 4x4 cell
    fractions = np.array([[0.5, 0.0], [0.0, 0.0]], np.float32).reshape(1, 2, 2, 1)
    right = np.array([[0.5, 0.01], [0.01, 0.01]], np.float32).reshape(1, 2, 2, 1)
    wrong = np.array([[0.01, 0.01], [0.01, 0.5]], np.float32).reshape(1, 2, 2, 1)
    got = float(tumour_fraction_loss(truth, right)[0])
    assert got == pytest.approx(float(dice_bce_loss(fractions, right)[0]), rel=1e-6)
    assert got < float(tumour_fraction_loss(truth, wrong)[0])


def test_focal_tversky_prefers_a_nearly_right_mask_to_an_empty_one_with_no_tumour_images_in_the_batch():
    """Per image, the stray 1% of a nearly right prediction on a no-tumour image cost as much as missing every
    tumour, and the segmenter learnt to predict nothing; pooled over the batch it does not."""
    from neuralscan_cli.training.losses import focal_tversky_loss

    truth = np.zeros((4, 32, 32, 1), np.float32)
    truth[0, 8:20, 8:20] = 1
    truth[1, 4:12, 10:26] = 1  # images 2 and 3 have no tumour
    nearly_right = truth * 0.9 + 0.01
    empty = np.zeros_like(truth)
    loss_right = focal_tversky_loss(truth, nearly_right).numpy()
    loss_empty = focal_tversky_loss(truth, empty).numpy()
    assert loss_right.shape == (4,) and np.allclose(loss_right, loss_right[0])  # one value for the batch
    assert loss_right.mean() < 0.5 * loss_empty.mean()
    assert focal_tversky_loss(truth, truth).numpy().max() < 1e-3


def test_mask_weight_trains_a_mask_head_and_ships_the_plain_classifier(small_cache, tmp_path):
    import keras

    from neuralscan_cli.models import create_model
    from neuralscan_cli.training import TrainError

    out = tmp_path / "run"
    train(_cfg(small_cache, out, **{"train.epochs": 4, "train.mask_weight": 1.0, **NO_AUGMENT}))
    hist = list(csv.DictReader(open(out / "history.csv")))
    mask_loss = [float(r["aux_mask_loss"]) for r in hist]
    assert mask_loss[-1] < mask_loss[0]  # the head learns where the tumour is
    shipped = keras.models.load_model(str(out / "model.keras"), compile=False)
    assert len(shipped.outputs) == 1 and not any(layer.name.startswith("aux_mask") for layer in shipped.layers)
    plain = create_model("small_cnn", num_classes=4, input_size=64)
    plain.load_weights(str(out / "model.weights.h5"))
    x = DatasetCache.open(small_cache).load("val")[0][..., None]
    assert np.allclose(plain.predict(x, verbose=0), shipped.predict(x, verbose=0), atol=1e-5)
    # the checkpoint keeps the head, so a resume continues the same two-output training
    train(_cfg(small_cache, out, **{"train.epochs": 5, "train.mask_weight": 1.0, **NO_AUGMENT}), resume=True)
    assert [int(r["epoch"]) for r in csv.DictReader(open(out / "history.csv"))] == [1, 2, 3, 4, 5]
    with pytest.raises(TrainError, match="mask_weight 1.0 -> 0.0"):  # refused before the checkpoint is read
        train(_cfg(small_cache, out, **{"train.epochs": 6, **NO_AUGMENT}), resume=True)
    with pytest.raises(ConfigError, match="mask_weight"):
        _cfg(small_cache, out, **{"train.mask_weight": -1})


@pytest.fixture(scope="module")
def two_runs(small_cache, tmp_path_factory):
    """Two small classifiers that differ (seed, mask supervision), for the ensemble tests."""
    tmp = tmp_path_factory.mktemp("members")
    train(_cfg(small_cache, tmp / "a", **{"train.epochs": 2}))
    train(_cfg(small_cache, tmp / "b", **{"train.epochs": 2, "runtime.seed": 7, "train.mask_weight": 1.0}))
    return tmp / "a", tmp / "b"


def test_ensemble_is_the_mean_of_its_members_in_an_ordinary_bundle(small_cache, two_runs, tmp_path):
    from neuralscan_cli.evaluation.gradcam import grad_cam
    from neuralscan_cli.inference import load_bundle
    from neuralscan_cli.inference.runners import load_keras_model, make_runner
    from neuralscan_cli.training.ensemble import build_ensemble

    out = build_ensemble(list(two_runs), tmp_path / "ens")
    x = DatasetCache.open(small_cache).load("val")[0]
    members = [make_runner(load_bundle(r), "keras").predict(x) for r in two_runs]
    assert not np.allclose(members[0], members[1], atol=1e-3)  # else the mean checks nothing
    got = make_runner(load_bundle(out), "keras").predict(x)
    assert np.allclose(got, (members[0] + members[1]) / 2, atol=1e-5)
    meta = json.loads((out / "model.json").read_text())
    assert meta["architecture"] == "ensemble" and meta["classes"] == CLASSES
    assert [m["source"] for m in meta["training"]["members"]] == [str(r.resolve()) for r in two_runs]
    assert (out / "members" / "member2" / "provenance.json").is_file()
    assert not (out / "model.weights.h5").exists()  # one weights file per member instead
    # rebuilt from the registry and the members' weights files (how a bundle crosses Keras 2 and 3)
    (out / "model.keras").unlink()
    del meta["files"]["keras"]  # how the bundled ensemble ships: its members' weights files only
    (out / "model.json").write_text(json.dumps(meta))
    assert load_bundle(out).available_engines() == ["keras"]
    assert np.allclose(make_runner(load_bundle(out), "keras").predict(x), got, atol=1e-5)
    # Grad-CAM of an ensemble: its members' maps for the ensemble's class, averaged
    model = load_keras_model(load_bundle(out))
    cls = got[:3].argmax(1)
    cams = grad_cam(model, x[:3])
    per_member = [grad_cam(load_keras_model(load_bundle(r)), x[:3], cls) for r in two_runs]
    assert cams.shape == (3, 64, 64) and np.allclose(cams, np.mean(per_member, axis=0), atol=1e-4)
    # a member's file missing: no Keras engine, and asking for it is a one-line error
    (out / meta["files"]["keras_members"][1]).unlink()
    assert "keras" not in load_bundle(out).available_engines()
    from neuralscan_cli.inference import BundleError

    with pytest.raises(BundleError, match="no keras model"):
        make_runner(load_bundle(out), "keras")


def test_ensemble_rejects_members_that_do_not_fit(small_cache, two_runs, tmp_path):
    import shutil

    from neuralscan_cli.training.ensemble import EnsembleError, build_ensemble

    with pytest.raises(EnsembleError, match="at least two"):
        build_ensemble([two_runs[0]], tmp_path / "one")
    other = tmp_path / "other"
    shutil.copytree(two_runs[1], other)
    meta = json.loads((other / "model.json").read_text())
    meta["classes"] = list(reversed(meta["classes"]))
    (other / "model.json").write_text(json.dumps(meta))
    with pytest.raises(EnsembleError, match="classes"):
        build_ensemble([two_runs[0], other], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()
    r = CliRunner().invoke(app, ["ensemble", str(two_runs[0]), str(two_runs[1]), "--out", str(two_runs[0])])
    assert r.exit_code == 2 and "is one of the members" in r.output and not isinstance(r.exception, Exception)
    with pytest.raises(EnsembleError, match="named more than once"):  # the mean would weigh it twice
        build_ensemble([two_runs[0], two_runs[0] / "model.keras"], tmp_path / "twice")
    # a member's calibration does not carry over to the mean: said, and recorded with the member
    calibrated = tmp_path / "calibrated"
    shutil.copytree(two_runs[1], calibrated)
    meta = json.loads((calibrated / "model.json").read_text())
    meta["calibration"] = {"temperature": 2.5}
    (calibrated / "model.json").write_text(json.dumps(meta))
    r = CliRunner().invoke(app, ["ensemble", str(two_runs[0]), str(calibrated), "--out", str(tmp_path / "ens-t")])
    assert r.exit_code == 0, r.output
    assert "member2 T=2.5" in " ".join(r.output.split()) and "calibrate" in r.output
    members = json.loads((tmp_path / "ens-t" / "model.json").read_text())["training"]["members"]
    assert [m["temperature"] for m in members] == [None, 2.5]


def test_ensemble_exports_to_openvino_like_any_bundle(small_cache, two_runs, tmp_path):
    from neuralscan_cli.export import export_bundle
    from neuralscan_cli.inference import load_bundle
    from neuralscan_cli.inference.runners import make_runner
    from neuralscan_cli.training.ensemble import build_ensemble

    out = build_ensemble(list(two_runs), tmp_path / "ens")
    report = export_bundle(out, out, int8=True, calibration_size=8, max_drop_accuracy=1.0)
    assert report.int8_path is not None and report.int8_path.is_file()
    x = DatasetCache.open(small_cache).load("val")[0]
    bundle = load_bundle(out)
    keras_probs = make_runner(bundle, "keras").predict(x)
    assert np.allclose(make_runner(bundle, "openvino-fp32").predict(x), keras_probs, atol=1e-4)
    assert make_runner(bundle, "openvino-int8").predict(x).shape == keras_probs.shape
    # the members' probabilities reach the mean unquantised (quantising them distorted the calibration)
    import openvino as ov

    q = ov.Core().read_model(report.int8_path)
    mean_inputs = [op.input(i).get_source_output().get_node() for op in q.get_ops()
                   if "ensemble_mean" in op.get_friendly_name() and op.get_type_name() == "Add"
                   for i in range(op.get_input_size())]
    assert mean_inputs and not any(n.get_type_name() == "FakeQuantize" for n in mean_inputs)
    assert any(n.get_type_name() == "FakeQuantize" for n in q.get_ops())  # it is an INT8 model
    # exported to a new folder: the members' weights go along, so its Keras engine is the same ensemble
    (out / "model.keras").unlink()
    meta = json.loads((out / "model.json").read_text())
    del meta["files"]["keras"]
    (out / "model.json").write_text(json.dumps(meta))
    copy = tmp_path / "exported"
    report = export_bundle(out, copy, int8=False)
    assert report.sizes["keras"] == sum((out / f).stat().st_size for f in meta["files"]["keras_members"])
    assert (copy / "members" / "member1" / "provenance.json").is_file()
    assert np.allclose(make_runner(load_bundle(copy), "keras").predict(x), keras_probs, atol=1e-5)


def test_segmenter_trunk_from_one_member_of_an_ensemble(small_cache, tmp_path):
    from neuralscan_cli.inference import load_bundle
    from neuralscan_cli.inference.runners import load_keras_model
    from neuralscan_cli.training import TrainError
    from neuralscan_cli.training.ensemble import build_ensemble

    runs = [tmp_path / f"clf{seed}" for seed in (1, 2)]
    for seed, run in zip((1, 2), runs):
        train(_cfg(small_cache, run, **{"model.name": "attention_cnn", "model.options": "{widths: [8, 16, 32, 64]}",
                                        "train.epochs": 1, "runtime.seed": seed}))
    ens = build_ensemble(runs, tmp_path / "ens")

    def seg_cfg(out, init_from, *extra, widths="[8, 16, 32, 64]"):
        return load_config(CONFIGS / "segmenter.yaml", [
            f"data.cache={small_cache}", f"out={out}", "model.name=attention_cnn_unet", "model.input_size=64",
            f"model.options={{widths: {widths}, decoder_widths: [16, 16, 8, 8], full_res_filters: 8}}",
            f"model.init_from={init_from}", "train.batch_size=8", "train.epochs=1", "train.learning_rate=1.0e-9",
            "train.warmup_epochs=0", "train.weight_decay=0", *extra])

    with pytest.raises(TrainError, match="is a segment model; model.init_from takes a trained classifier"):
        train(seg_cfg(tmp_path / "from-segmenter", "bundled-segmenter"))
    with pytest.raises(TrainError, match=r"ensemble of 2 classifiers: .*model.init_member=1..2"):
        train(seg_cfg(tmp_path / "no-member", ens))
    with pytest.raises(TrainError, match="init_member is for ensembles"):
        train(seg_cfg(tmp_path / "single", runs[0], "model.init_member=1"))
    with pytest.raises(ConfigError, match="init_member must be a member number"):
        seg_cfg(tmp_path / "zero", ens, "model.init_member=0")
    with pytest.raises(TrainError, match="encoder does not match"):  # other widths: only CBAM convs line up
        train(seg_cfg(tmp_path / "wider", runs[0], widths="[16, 32, 64, 128]"))
    train(seg_cfg(tmp_path / "seg", ens, "model.init_member=2"))
    kernels = [np.asarray(load_keras_model(load_bundle(r)).get_layer("s3_b2_conv2").get_weights()[0])
               for r in (*runs, tmp_path / "seg")]
    assert not np.allclose(kernels[0], kernels[1], atol=1e-4)  # else the member choice checks nothing
    np.testing.assert_allclose(kernels[2], kernels[1], rtol=0, atol=1e-5)  # lr 1e-9: still member 2's trunk


def test_input_size_follows_the_cache_unless_given(small_cache, tmp_path):
    runner = CliRunner()
    # no config and no model.input_size: the cache's 64 px, recorded in the saved config
    r = runner.invoke(app, ["train", "--cache", str(small_cache), "--out", str(tmp_path / "o"), "--model", "small_cnn",
                            "--epochs", "1", "--set", "train.max_steps_per_epoch=1",
                            "--set", "data.partial_labels={tumour: [glioma, meningioma]}"])
    assert r.exit_code == 0, r.output
    assert load_config(tmp_path / "o" / "config.yaml")["model"]["input_size"] == 64
    assert json.loads((tmp_path / "o" / "model.json").read_text())["input"]["size"] == 64
    # a partial label the cache does not hold (a typo, or the recipe's Br35H `tumor`) is said, not silently dropped
    assert "data.partial_labels names tumour" in " ".join(r.output.split())
    # a cache whose side no network takes: one line at the start, not a Keras error later
    odd = tmp_path / "cache-48"
    build_cache([small_cache.parent / "labels.csv"], odd, config=PreprocessConfig(size=48), classes=CLASSES,
                split=SplitConfig(val_folds=("4",), val_fraction=0.3, test_fraction=0.0), workers=1)
    r = runner.invoke(app, ["train", "--cache", str(odd), "--out", str(tmp_path / "o2"), "--model", "small_cnn"])
    assert r.exit_code == 2 and "multiple of 32" in r.output and not isinstance(r.exception, Exception)
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "o2").exists()
