"""`neuralscan evaluate` end to end on tiny bundles and the real sample images."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neuralscan_cli.cli.app import app
from neuralscan_cli.data import SplitConfig, build_cache
from neuralscan_cli.inference import engine_of_file, load_bundle, load_images_for_bundle, make_runner, new_bundle_meta
from neuralscan_cli.preprocess import PreprocessConfig

SAMPLES = Path(__file__).resolve().parents[2] / "neuralscan_cli" / "samples" / "labels.csv"
CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]
SIZE = 64
CLASSIFY_KEYS = {"task", "n", "classes", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "roc_auc_ovr", "ece",
                 "confusion_matrix", "per_class", "bootstrap", "tumor_type_accuracy", "tumor_type_n",
                 "tumor_vs_no_tumor", "evaluated"}
SEGMENT_KEYS = {"task", "n", "n_tumor", "n_empty", "threshold", "dice_mean", "dice_median", "dice_mean_tumor",
                "iou_mean", "hd95_median", "hd95_unit", "hd95_n", "detection_rate", "empty_mask_rate_no_tumor",
                "false_positive_area_px_mean", "dice_per_class", "pixel_grid", "evaluated"}

cli = CliRunner()


def _write_bundle(root: Path, model, task: str, classes: list[str], openvino: bool = True) -> Path:
    root.mkdir(parents=True)
    model.save(root / "model.keras")
    meta = new_bundle_meta(task=task, classes=classes, size=SIZE, preprocessing=PreprocessConfig(size=SIZE).to_dict(),
                           name=root.name, architecture="test")
    meta["files"] = {"keras": "model.keras"}
    if openvino:
        import openvino as ov

        ov.save_model(ov.convert_model(model), root / "openvino" / "fp32" / "model.xml")
        meta["files"]["openvino_fp32"] = "openvino/fp32/model.xml"
    (root / "model.json").write_text(json.dumps(meta))
    return root


def write_four_class_manifest(path: Path) -> Path:
    """The samples' manifest without its 'tumor' rows (not a class of the 4-class model), paths made absolute."""
    rows = list(csv.DictReader(open(SAMPLES)))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            if r["label"] in CLASSES:
                w.writerow(r | {"image": str(SAMPLES.parent / r["image"]),
                                "mask": str(SAMPLES.parent / r["mask"]) if r["mask"] else ""})
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    tmp = tmp_path_factory.mktemp("evaluate")
    inp = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    classifier = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(x))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    segmenter = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(y))

    # workers=1: forking a process that already holds TensorFlow is unsafe
    build_cache([SAMPLES], tmp / "cache", config=PreprocessConfig(size=SIZE), classes=CLASSES,
                split=SplitConfig(val_fraction=0.5, test_fraction=0), workers=1)
    write_four_class_manifest(tmp / "four_classes.csv")
    return {
        "tmp": tmp,
        "classifier": _write_bundle(tmp / "tiny", classifier, "classify", CLASSES),
        "segmenter": _write_bundle(tmp / "tiny-seg", segmenter, "segment", ["tumor"], openvino=False),
        "cache": tmp / "cache",
        "csv": tmp / "four_classes.csv",
    }


def _run(*args):
    result = cli.invoke(app, ["evaluate", *map(str, args)])
    return result


def _predictions(folder: Path) -> dict:
    with open(folder / "predictions.csv", newline="") as fh:
        return {(r["path"], r["slice"]): r for r in csv.DictReader(fh)}


def _probs(rows: dict, keys) -> np.ndarray:
    return np.array([[float(rows[k][f"p_{c}"]) for c in CLASSES] for k in keys])


def _assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, Exception)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for f in fragments:
        assert f in lines[0]


def test_evaluate_classifier_on_cache_and_raw_data_agree(work):
    out_cache = work["tmp"] / "eval_cache"
    r = _run(work["classifier"], work["cache"], "--split", "all", "--engine", "keras", "--out", out_cache,
             "--explain", "3", "--bootstrap", "200")
    assert r.exit_code == 0, r.output
    metrics = json.loads((out_cache / "metrics.json").read_text())
    assert set(metrics) == CLASSIFY_KEYS
    assert metrics["n"] == 9  # 11 samples minus the 2 labelled 'tumor'
    assert set(metrics["per_class"]) == set(CLASSES)
    assert set(metrics["per_class"]["glioma"]) >= {"sensitivity", "specificity", "precision", "f1", "support"}
    assert metrics["evaluated"]["engine"] == "keras"
    for name in ("confusion_matrix.png", "roc_curves.png", "reliability.png", "report.md", "predictions.csv"):
        assert (out_cache / name).is_file(), name
    gradcams = sorted((out_cache / "gradcam").glob("*.png"))
    assert len(gradcams) == 3
    report = (out_cache / "report.md").read_text()  # the report links every Grad-CAM image written
    assert all(f"(<gradcam/{p.name}>)" in report for p in gradcams)
    # a rerun into the same folder with fewer images leaves no stale ones beside the new report
    (out_cache / "notes.txt").write_text("mine")
    r = _run(work["classifier"], work["cache"], "--split", "all", "--engine", "keras", "--out", out_cache,
             "--explain", "1", "--bootstrap", "0")
    assert r.exit_code == 0, r.output
    assert len(list((out_cache / "gradcam").glob("*.png"))) == 1 and (out_cache / "notes.txt").is_file()
    assert "accuracy" in r.output and "macro-F1" in r.output

    out_raw = work["tmp"] / "eval_raw"
    r = _run(work["classifier"], work["csv"], "--engine", "keras", "--out", out_raw, "--bootstrap", "200")
    assert r.exit_code == 0, r.output
    cached, raw = _predictions(out_cache), _predictions(out_raw)
    assert set(cached) == set(raw) and len(raw) == 9
    keys = sorted(raw)
    # the bundle's preprocessing applied to raw files gives the very pixels the cache holds
    np.testing.assert_allclose(_probs(cached, keys), _probs(raw, keys), atol=1e-6)
    assert [cached[k]["true_label"] for k in keys] == [raw[k]["true_label"] for k in keys]


def test_keras_and_openvino_engines_agree(work):
    bundle = load_bundle(work["classifier"])
    images, labels, _masks, records = load_images_for_bundle(work["csv"], bundle)
    assert images.shape == (9, SIZE, SIZE) and labels.tolist() == [CLASSES.index(r["label"]) for r in records]
    keras_probs = make_runner(bundle, "keras").predict(images)
    ov_runner = make_runner(bundle, "openvino-fp32")
    assert ov_runner.engine == "openvino-fp32"
    np.testing.assert_allclose(ov_runner.predict(images, batch_size=2), keras_probs, atol=1e-4)  # async queue
    np.testing.assert_allclose(ov_runner.predict(images, batch_size=64), keras_probs, atol=1e-4)  # one batch

    assert engine_of_file(bundle, work["classifier"] / "model.keras") == "keras"
    assert engine_of_file(bundle, work["classifier"] / "openvino" / "fp32" / "model.xml") == "openvino-fp32"

    out = work["tmp"] / "eval_ov"
    r = _run(work["classifier"], work["cache"], "--split", "all", "--engine", "openvino-fp32", "--out", out,
             "--bootstrap", "100")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "metrics.json").read_text())["evaluated"]["engine"] == "openvino-fp32"


def test_bad_inputs_give_one_line_errors(work):
    tmp = work["tmp"]
    _assert_one_line_error(_run(tmp / "no-such-model", work["cache"], "--out", tmp / "o1"), "no such model")

    mismatched = tmp / "mismatch"
    shutil.copytree(work["classifier"], mismatched)
    meta = json.loads((mismatched / "model.json").read_text())
    meta["classes"] = ["glioma", "meningioma", "healthy", "pituitary"]
    (mismatched / "model.json").write_text(json.dumps(meta))
    _assert_one_line_error(_run(mismatched, work["cache"], "--split", "all", "--out", tmp / "o2"),
                           "healthy", "no_tumor")

    # a file inside a bundle that the bundle does not list (a checkpoint) is refused, not swapped for model.keras
    (mismatched / "checkpoints").mkdir()
    shutil.copyfile(mismatched / "model.keras", mismatched / "checkpoints" / "last.keras")
    _assert_one_line_error(_run(mismatched / "checkpoints" / "last.keras", work["cache"], "--out", tmp / "o9"),
                           "not a model file of the bundle")
    # an ensemble member's weights would run the whole ensemble: refused too
    (mismatched / "members" / "member1").mkdir(parents=True)
    (mismatched / "members" / "member1" / "model.weights.h5").write_bytes(b"w")
    meta = json.loads((mismatched / "model.json").read_text())
    meta["files"]["keras_members"] = ["members/member1/model.weights.h5"]
    (mismatched / "model.json").write_text(json.dumps(meta))
    _assert_one_line_error(_run(mismatched / "members" / "member1" / "model.weights.h5", work["cache"], "--out",
                                tmp / "o9"), "not a model file of the bundle")

    empty = tmp / "empty"
    empty.mkdir()
    _assert_one_line_error(_run(work["classifier"], empty, "--out", tmp / "o3"), "no images")

    # the samples' own manifest has a 'tumor' label the 4-class model does not know
    _assert_one_line_error(_run(work["classifier"], SAMPLES, "--out", tmp / "o4"), "tumor", "glioma")
    _assert_one_line_error(_run(work["classifier"], work["cache"], "--engine", "openvino-int8", "--out", tmp / "o5"),
                           "openvino-int8")
    # options of the other task are refused, not silently ignored
    _assert_one_line_error(_run(work["classifier"], work["cache"], "--gate", "none", "--out", tmp / "o6"),
                           "--gate", "classifier")
    _assert_one_line_error(_run(work["segmenter"], work["cache"], "--explain", "2", "--out", tmp / "o7"),
                           "--explain", "segmenter")
    # a gate that is not there: said before anything is written, and no empty --out is left behind
    _assert_one_line_error(_run(work["segmenter"], work["cache"], "--gate", tmp / "no-gate", "--out", tmp / "o8"),
                           "gate")
    # raw data has no splits: an explicit --split is refused, not ignored
    _assert_one_line_error(_run(work["classifier"], work["csv"], "--split", "test", "--out", tmp / "o10"),
                           "--split test", "raw data")
    for k in range(1, 11):
        assert not (tmp / f"o{k}").exists(), k


def test_explain_without_keras_model_says_so(work):
    ir_only = work["tmp"] / "ir-only"
    shutil.copytree(work["classifier"], ir_only)
    (ir_only / "model.keras").unlink()
    out = work["tmp"] / "eval_ir_only"
    r = _run(ir_only, work["cache"], "--split", "all", "--explain", "2", "--out", out, "--bootstrap", "50")
    assert r.exit_code == 0, r.output
    assert "no Keras model" in r.output.replace("\n", " ") or "holds none" in r.output.replace("\n", " ")
    assert not (out / "gradcam").exists()


def test_evaluate_segmenter(work):
    out = work["tmp"] / "eval_seg"
    r = _run(work["segmenter"], work["cache"], "--split", "all", "--out", out)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == SEGMENT_KEYS
    assert m["n"] == 9 and m["n_tumor"] == 6 and m["n_empty"] == 3  # 6 figshare masks + 3 no_tumor (empty truth)
    assert set(m["dice_per_class"]) == set(CLASSES)
    assert 1 <= len(list((out / "worst").glob("*.png"))) <= 8
    header = (out / "predictions.csv").read_text().splitlines()[0]
    assert header == "path,slice,label,dice,iou,hd95_px,area_true,area_pred"
    # px figures are pixels of the model's input grid, and every place that shows them says so
    assert m["pixel_grid"] == f"{SIZE}x{SIZE}"
    report = (out / "report.md").read_text()
    assert f"model's {SIZE}x{SIZE} input" in report
    # the report holds what reproduces its figures: the mask rule and the gate
    assert f"- threshold: {m['threshold']}" in report and "- gate: none" in report

    # raw data with every label, including 'tumor' (a segmenter has no class list to check against)
    out_raw = work["tmp"] / "eval_seg_raw"
    r = _run(work["segmenter"], SAMPLES, "--out", out_raw)
    assert r.exit_code == 0, r.output
    m = json.loads((out_raw / "metrics.json").read_text())
    assert m["n"] == 11 and set(m["dice_per_class"]) == set(CLASSES) | {"tumor"}


def test_evaluate_segmenter_applies_a_gate(work):
    """--gate: masks of images the classifier calls no_tumor are emptied before scoring, as `segment` does."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
    from test_segment_cli import constant_classifier

    healthy = constant_classifier(work["tmp"] / "says-healthy", "no_tumor", size=SIZE)
    out = work["tmp"] / "eval_seg_gated"
    r = _run(work["segmenter"], work["cache"], "--split", "all", "--out", out, "--gate", healthy)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["empty_mask_rate_no_tumor"] == 1.0 and m["dice_mean_tumor"] == 0.0
    assert "9 masks emptied" in m["evaluated"]["gate"]
    preds = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(preds) == 9 and all(float(p["area_pred"]) == 0 for p in preds)


def test_calibrate_fits_a_temperature_that_every_engine_and_evaluate_apply(work):
    """`neuralscan calibrate`: the fitted T is the NLL optimum of the network's own probabilities on the data;
    model.json keeps it; Keras, OpenVINO and evaluate then report softmax(log p / T), same classes."""
    import keras

    from neuralscan_cli.evaluation.calibration import apply_temperature, fit_temperature
    from neuralscan_cli.inference import load_cache_for_bundle

    calib = work["tmp"] / "calibrated"
    shutil.copytree(work["classifier"], calib)
    r = cli.invoke(app, ["calibrate", str(calib), str(work["cache"]), "--split", "all", "--engine", "keras"])
    assert r.exit_code == 0, r.output
    meta = json.loads((calib / "model.json").read_text())
    t = meta["calibration"]["temperature"]
    fitted = meta["calibration"]["fitted_on"]
    assert fitted["n"] == 9 and fitted["nll_after"] <= fitted["nll_before"]

    bundle = load_bundle(calib)
    images, labels, _, _ = load_cache_for_bundle(work["cache"], bundle, None)
    raw = keras.models.load_model(calib / "model.keras", compile=False).predict(images[..., None], verbose=0)
    keep = labels >= 0
    assert t == pytest.approx(fit_temperature(labels[keep], raw[keep]), abs=1e-3) and t != 1.0
    expected = apply_temperature(raw, t)
    for engine in ("keras", "openvino-fp32"):
        got = make_runner(bundle, engine).predict(images)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert (got.argmax(1) == raw.argmax(1)).all()

    out = work["tmp"] / "eval_calibrated"
    r = _run(calib, work["cache"], "--split", "all", "--engine", "openvino-fp32", "--out", out, "--bootstrap", "50")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "metrics.json").read_text())["evaluated"]["temperature"] == t
    rows = _predictions(out)
    keys = sorted(rows)
    order = {(str(p), "0"): i for i, p in enumerate(
        r["path"] for r in load_cache_for_bundle(work["cache"], bundle, None)[3])}
    np.testing.assert_allclose(_probs(rows, keys), expected[[order[k] for k in keys]], atol=1e-4)

    # a given temperature is written as is (checked on the data); 1 removes the calibration
    r = cli.invoke(app, ["calibrate", str(calib), str(work["cache"]), "--split", "all", "--temperature", "0.5"])
    assert r.exit_code == 0, r.output
    meta = json.loads((calib / "model.json").read_text())
    assert meta["calibration"]["temperature"] == 0.5 and meta["calibration"]["source"] == "given"
    assert "checked_on" in meta["calibration"]
    assert cli.invoke(app, ["calibrate", str(calib), "--temperature", "1"]).exit_code == 0
    assert "calibration" not in json.loads((calib / "model.json").read_text())
    np.testing.assert_allclose(make_runner(load_bundle(calib), "keras").predict(images), raw, atol=1e-5)


def test_calibrate_warns_when_fitting_on_the_models_training_images(work):
    """Fitted on its own training images a network looks better calibrated than it is: say so, as evaluate does."""
    calib = work["tmp"] / "calibrated-on-train"
    shutil.copytree(work["classifier"], calib)
    info = json.loads((work["cache"] / "dataset.json").read_text())
    meta = json.loads((calib / "model.json").read_text())
    meta["training"] = {"data": {"fingerprint": info["fingerprint"], "sources": info["sources"],
                                 "split": info["split"], "split_counts": info["split_counts"],
                                 "train_split": "train", "val_split": "val"}}
    (calib / "model.json").write_text(json.dumps(meta))
    r = cli.invoke(app, ["calibrate", str(calib), str(work["cache"]), "--split", "all", "--engine", "keras"])
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "trained on" in r.output.split("warning:", 1)[1]


def test_calibrate_bad_inputs_give_one_line_errors(work):
    tmp = work["tmp"]
    calibrate = lambda *a: cli.invoke(app, ["calibrate", *map(str, a)])  # noqa: E731
    _assert_one_line_error(calibrate(work["segmenter"], work["cache"]), "segment", "classifier")
    _assert_one_line_error(calibrate(work["classifier"]), "DATA", "--temperature")
    _assert_one_line_error(calibrate(work["classifier"], "--temperature", "0"), "between")
    _assert_one_line_error(calibrate("bundled", "--temperature", "0.7"), "installed package")
    empty = tmp / "calib-empty"
    empty.mkdir()
    _assert_one_line_error(calibrate(work["classifier"], empty), "no images")
    assert "calibration" not in json.loads((work["classifier"] / "model.json").read_text())


def test_evaluate_report_says_what_it_left_out(work):
    """A manifest with a missing file, an unlabelled row and a repeated image: the report (not only the screen)
    says so; a segmenter scored on no-tumour images only says its Dice is not about outlining tumours."""
    rows = list(csv.DictReader(open(work["csv"])))
    manifest = work["tmp"] / "edge.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows + [rows[0]] + [rows[1] | {"label": ""}] + [rows[2] | {"image": str(work["tmp"] / "gone.png")}])
    out = work["tmp"] / "eval_edge"
    r = _run(work["classifier"], manifest, "--out", out, "--bootstrap", "0", "--engine", "keras")
    assert r.exit_code == 0, r.output
    evaluated = json.loads((out / "metrics.json").read_text())["evaluated"]
    assert evaluated["repeated_images"] == 2 and evaluated["unlabelled_left_out"] == 1
    assert evaluated["files_skipped"].startswith("1 ")
    report = (out / "report.md").read_text()
    assert "- repeated_images: 2" in report and "- unlabelled_left_out: 1" in report

    healthy_only = work["tmp"] / "healthy.csv"
    with open(healthy_only, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([r for r in rows if r["label"] == "no_tumor"])
    out = work["tmp"] / "eval_seg_healthy"
    r = _run(work["segmenter"], healthy_only, "--out", out, "--gate", "none")
    assert r.exit_code == 0, r.output
    assert "no image has a tumour mask" in " ".join(r.output.split())
    assert "no image has a tumour mask" in (out / "report.md").read_text()
