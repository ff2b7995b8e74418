"""`neuralscan classify` end to end with a tiny exported classifier (input 64) on the sample images."""
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neuralscan_cli.cli.app import app
from neuralscan_cli.inference import bundled_path
from neuralscan_cli.inference.streaming import classify_paths, sidecar_paths

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "export"))
sys.path.insert(0, str(TESTS / "evaluation"))
sys.path.insert(0, str(TESTS / "io"))
from test_evaluate_cli import _write_bundle  # noqa: E402
from test_export import SIZE, build_exported_classifier  # noqa: E402
from test_readers import write_dicom  # noqa: E402

COLUMNS = ["path", "slice", "label", "confidence", "p_glioma", "p_meningioma", "p_no_tumor", "p_pituitary", "tumor",
           "model"]
CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]

cli = CliRunner()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("classify")
    w = build_exported_classifier(tmp)
    # a folder of good scans (one in a subfolder), three bad files and a note that is no scan at all
    scans = tmp / "scans"
    (scans / "more").mkdir(parents=True)
    good = []
    for r in csv.DictReader(open(w["manifest"])):
        dest = (scans / "more" if r["label"] == "no_tumor" else scans) / Path(r["image"]).name
        shutil.copy(r["image"], dest)
        good.append(str(dest.resolve()))
    png = Path(good[0]).read_bytes()
    (scans / "corrupt.png").write_bytes(png[: len(png) // 3])  # a truncated PNG
    (scans / "empty.png").write_bytes(b"")
    (scans / "more" / "text.jpg").write_text("this is not a JPEG\n" * 20)
    (scans / "notes.txt").write_text("not a scan, not even named like one\n")
    w |= {"scans": scans, "good": sorted(good),
          "bad": sorted(str((scans / n).resolve()) for n in ("corrupt.png", "empty.png", "more/text.jpg"))}
    return w


def _run(*args):
    return cli.invoke(app, ["classify", *map(str, args)])


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _assert_one_line_error(result, code, *fragments):
    assert result.exit_code == code, result.output
    assert not isinstance(result.exception, Exception)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for f in fragments:
        assert f in lines[0], lines[0]


def test_folder_with_bad_files_scores_the_good_ones(work):
    out = work["tmp"] / "results.csv"
    r = _run(work["scans"], "--out", out, "--model", work["exported"])
    assert r.exit_code == 0, r.output
    with open(out, newline="") as fh:
        assert next(csv.reader(fh)) == COLUMNS  # exactly the columns, in that order
    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == work["good"]  # each good file once, the bad ones not at all
    for row in rows:
        probs = np.array([float(row[f"p_{c}"]) for c in CLASSES])
        assert row["slice"] == "0" and row["label"] in CLASSES
        assert row["label"] == CLASSES[int(probs.argmax())]
        assert abs(float(row["confidence"]) - probs.max()) < 1e-6 and abs(probs.sum() - 1) < 1e-3
        assert row["tumor"] == ("false" if row["label"] == "no_tumor" else "true")
        assert row["model"] == "tiny-classifier:openvino-int8"  # the bundle's fastest engine by default
    # the network memorised the samples: INT8 gives each file its own label
    truth = {Path(p["image"]).name: p["label"] for p in csv.DictReader(open(work["manifest"]))}
    assert {Path(r["path"]).name: r["label"] for r in rows} == truth

    _done, errors_path = sidecar_paths(out)
    errors = _rows(errors_path)
    assert sorted(e["path"] for e in errors) == work["bad"]
    reasons = {Path(e["path"]).name: e["error"] for e in errors}
    assert "empty" in reasons["empty.png"] and "truncated" in reasons["corrupt.png"]
    assert "not a PNG, JPEG" in reasons["text.jpg"]
    # the summary: counts per label, the failures, the throughput
    assert "slices labelled no_tumor" in r.output and "failed" in r.output and "images/s" in r.output
    assert "empty.png" in r.output and not isinstance(r.exception, Exception)


def test_interrupted_run_resumes_without_duplicates(work):
    out = work["tmp"] / "resumed.csv"
    first = classify_paths([work["scans"]], work["exported"], out, limit=4)
    assert first.stopped_early and first.n_scored + first.n_failed == 4

    # a run stopped by Ctrl-C in the middle: after its third file
    def stop(done, total, images):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        classify_paths([work["scans"]], work["exported"], out, on_progress=stop)
    # and a crash between writing a file's rows and listing it as done, that also tore the last line
    with open(out, "a") as fh:
        fh.write(f"{work['good'][-1]},0,glioma,0.9,0.9,0.0,0.1,0.0,true,tiny-classifier:openvino-int8\n")
        fh.write(f"{work['good'][-2]},0,gli")
    partial = [r["path"] for r in _rows(out)]
    assert 4 <= len(set(partial)) < len(work["good"])

    r = _run(work["scans"], "--out", out, "--model", work["exported"])
    assert r.exit_code == 0, r.output
    paths = [row["path"] for row in _rows(out)]
    assert sorted(paths) == work["good"]  # every file exactly once
    done_list, errors_path = sidecar_paths(out)
    assert sorted(done_list.read_text().split()) == work["good"]
    assert sorted(e["path"] for e in _rows(errors_path)) == work["bad"]  # retried, listed once
    assert "done before (resumed)" in r.output

    # nothing left to do: a rerun writes nothing and succeeds
    r = _run(work["scans"], "--out", out, "--model", work["exported"])
    assert r.exit_code == 0, r.output
    assert [row["path"] for row in _rows(out)] == paths
    # another model's results are not mixed into the same file
    r = _run(work["scans"], "--out", out, "--model", work["exported"], "--engine", "openvino-fp32")
    _assert_one_line_error(r, 2, "openvino-int8", "--overwrite")


def test_volumes_give_one_row_per_slice_and_jsonl_parses(work, tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:80, :80]
    head = (((yy - 40) ** 2 + (xx - 40) ** 2) < 30 ** 2).astype(np.float32)
    volume = np.stack([head * (200 + 40 * rng.random((80, 80))) for _ in range(3)], axis=-1).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 4.0, 1.0])), tmp_path / "volume.nii.gz")
    frames = np.stack([head * (900 + 100 * rng.random((80, 80))) for _ in range(2)]).astype(np.uint16)
    write_dicom(tmp_path / "series.dcm", frames, PixelSpacing=[0.9, 0.9])

    out = tmp_path / "slices.jsonl"
    r = _run(tmp_path / "volume.nii.gz", tmp_path / "series.dcm", "--out", out, "--model", work["exported"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(list(row) == COLUMNS for row in rows)
    slices = {}
    for row in rows:
        slices.setdefault(Path(row["path"]).name, []).append(row["slice"])
        assert isinstance(row["confidence"], float) and isinstance(row["tumor"], bool)
        assert row["label"] in CLASSES and abs(sum(row[f"p_{c}"] for c in CLASSES) - 1) < 1e-3
    assert slices == {"volume.nii.gz": [0, 1, 2], "series.dcm": [0, 1]}

    csv_out = tmp_path / "slices.csv"
    r = _run(tmp_path, "--out", csv_out, "--model", work["exported"], "--format", "csv")
    assert r.exit_code == 0, r.output
    assert sorted((Path(r["path"]).name, int(r["slice"])) for r in _rows(csv_out)) == sorted(
        (name, s) for name, ss in slices.items() for s in ss)


def test_keras_and_openvino_engines_give_the_same_labels(work, tmp_path):
    keras_out, ov_out = tmp_path / "keras.csv", tmp_path / "fp32.csv"
    r = _run(work["scans"], "--out", keras_out, "--model", work["exported"] / "model.keras")  # TensorFlow
    assert r.exit_code == 0, r.output
    r = _run(work["scans"], "--out", ov_out, "--model", work["exported"], "--engine", "openvino-fp32",
             "--batch-size", "3", "--workers", "1")
    assert r.exit_code == 0, r.output
    k = {row["path"]: row for row in _rows(keras_out)}
    o = {row["path"]: row for row in _rows(ov_out)}
    assert set(k) == set(o) == set(work["good"])
    assert {row["model"] for row in k.values()} == {"tiny-classifier:keras"}
    for path in k:
        assert k[path]["label"] == o[path]["label"]
        for c in CLASSES:
            assert abs(float(k[path][f"p_{c}"]) - float(o[path][f"p_{c}"])) < 1e-4


def test_with_segmentation_adds_measurements_and_masks(work, tmp_path):
    import keras

    from neuralscan_cli.inference.segmentation import FIELDS

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 1))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    seg = _write_bundle(tmp_path / "tiny-seg", keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same",
                                                                                     activation="sigmoid")(y)),
                        "segment", ["tumor"], openvino=False)
    scans = tmp_path / "two"
    scans.mkdir()
    for p in work["good"][:2]:
        shutil.copy(p, scans)
    out = tmp_path / "both.csv"
    r = _run(scans, "--out", out, "--model", work["exported"], "--with-segmentation", "--segmenter", seg)
    assert r.exit_code == 0, r.output
    with open(out, newline="") as fh:
        header = next(csv.reader(fh))
    assert header == COLUMNS + [c for c in FIELDS if c not in ("path", "slice")]
    rows = _rows(out)
    assert len(rows) == 2 and all(row["tumor_present"] in ("true", "false") for row in rows)
    seg_dir = tmp_path / "both_segmentation"
    for row in rows:
        assert (seg_dir / row["mask_file"]).is_file() and (seg_dir / row["overlay_file"]).is_file()
    # the model column names both networks, so a resume with another segmenter is refused, not mixed in
    assert {row["model"] for row in rows} == {"tiny-classifier:openvino-int8+tiny-seg:keras"}
    _assert_one_line_error(_run(scans, "--out", out, "--model", work["exported"], "--with-segmentation"), 2,
                           "use the same model to resume")
    # a file from before the segmenter joined the tag (classifier tag only) still resumes
    text = out.read_text().replace("tiny-classifier:openvino-int8+tiny-seg:keras", "tiny-classifier:openvino-int8")
    out.write_text(text)
    r = _run(scans, "--out", out, "--model", work["exported"], "--with-segmentation", "--segmenter", seg)
    assert r.exit_code == 0, r.output


def test_user_mistakes_are_one_line_errors(work, tmp_path):
    _assert_one_line_error(_run(tmp_path / "missing", "--out", tmp_path / "o.csv", "--model", work["exported"]), 2,
                           "no such file or folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_one_line_error(_run(empty, "--out", tmp_path / "o.csv", "--model", work["exported"]), 2, "no scan")
    _assert_one_line_error(_run(work["scans"], "--out", tmp_path, "--model", work["exported"]), 2, "is a folder")
    _assert_one_line_error(_run(work["scans"], "--out", tmp_path / "o.csv", "--model", work["exported"],
                                "--format", "xml"), 2, "--format")
    _assert_one_line_error(_run(work["scans"], "--out", tmp_path / "o.csv", "--model", tmp_path / "nope"), 2,
                           "no such model")
    # the shipped classifier missing from this installation
    import neuralscan_cli.inference.bundle as bundle_module

    with pytest.MonkeyPatch.context() as m:
        m.setattr(bundle_module, "bundled_path", lambda name: tmp_path / "not-installed")
        _assert_one_line_error(_run(work["scans"], "--out", tmp_path / "o.csv"), 2, "bundled", "not installed")
    # every file failing is exit 1, with the reason
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"")
    (bad / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    r = _run(bad, "--out", tmp_path / "bad.csv", "--model", work["exported"])
    assert r.exit_code == 1 and not isinstance(r.exception, Exception)
    assert r.output.strip().splitlines()[-1].startswith("error: no scan could be classified")
    _assert_one_line_error(_run(bad / "a.png", "--out", tmp_path / "bad1.csv", "--model", work["exported"]), 1,
                           "empty file")


def test_bundled_models_on_the_samples(tmp_path):
    """The shipped INT8 classifier against its own Keras weights on the bundled samples, and the demo's output."""
    import csv as _csv

    from typer.testing import CliRunner as _Runner

    from neuralscan_cli.cli.app import app as _app

    samples = Path(__file__).resolve().parents[2] / "neuralscan_cli" / "samples" / "images"
    runner = _Runner()
    labels = {}
    for engine in ("openvino-int8", "keras"):
        out = tmp_path / engine / "results.csv"
        args = ["classify", str(samples), "--out", str(out), "--engine", engine]
        if engine == "openvino-int8":
            args += ["--with-segmentation", "--seg-out", str(tmp_path / "seg")]
        r = runner.invoke(_app, args)
        assert r.exit_code == 0, r.output
        rows = list(_csv.DictReader(open(out)))
        assert len(rows) == 11
        labels[engine] = {Path(row["path"]).name: row["label"] for row in rows}
        if engine == "openvino-int8":
            assert "Per scan" in r.output and all(name in r.output for name in labels[engine])
            assert {"tumor_present", "max_diameter_px"} <= set(rows[0])
            assert len(list((tmp_path / "seg" / "overlays").glob("*.png"))) == 11
    # the shipped segmenter is gated by the shipped classifier: no row says no_tumor beside a measured tumour
    seg_rows = list(_csv.DictReader(open(tmp_path / "openvino-int8" / "results.csv")))
    assert not any(row["label"] == "no_tumor" and row["tumor_present"] == "true" for row in seg_rows)
    from neuralscan_cli.inference import load_bundle
    from neuralscan_cli.inference.segmentation import load_gate

    gate = load_gate(load_bundle("bundled-segmenter"))
    assert gate is not None and gate.bundle.root == bundled_path("bundled")
    # INT8 may flip only near-ties: where the two engines disagree, the FP32 network's probabilities for the
    # two labels are close
    keras_rows = {Path(row["path"]).name: row for row in _csv.DictReader(open(tmp_path / "keras" / "results.csv"))}
    for name, int8_label in labels["openvino-int8"].items():
        row = keras_rows[name]
        if int8_label != row["label"]:
            gap = float(row[f"p_{row['label']}"]) - float(row[f"p_{int8_label}"])
            assert gap < 0.2, (name, row["label"], int8_label, gap)


def test_resume_never_edits_a_foreign_file(tmp_path):
    """--out pointing at someone else's CSV (no trailing newline): refused, and the file is left as it was."""
    from typer.testing import CliRunner as _Runner

    from neuralscan_cli.cli.app import app as _app

    out = tmp_path / "theirs.csv"
    out.write_text("name,score\nalice,1\nbob,2")
    samples = Path(__file__).resolve().parents[2] / "neuralscan_cli" / "samples" / "images"
    r = _Runner().invoke(_app, ["classify", str(samples), "--out", str(out)])
    assert r.exit_code == 2 and not isinstance(r.exception, Exception)
    assert out.read_text() == "name,score\nalice,1\nbob,2"



def test_with_segmentation_a_gated_segmenter_follows_the_classifier(work, tmp_path):
    """A segmenter whose model.json names a gate: slices this classifier calls no_tumor get empty masks."""
    import keras

    sys.path.insert(0, str(TESTS / "cli"))
    from test_segment_cli import constant_classifier

    inp = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid")
    everywhere = keras.Model(inp, conv(inp))  # calls every pixel tumour
    conv.set_weights([np.zeros((1, 1, 1, 1), np.float32), np.array([10.0], np.float32)])
    seg = _write_bundle(tmp_path / "everywhere", everywhere, "segment", ["tumor"], openvino=False)
    healthy = constant_classifier(tmp_path / "says-healthy", "no_tumor", size=SIZE)
    scans = tmp_path / "two"
    scans.mkdir()
    for p in work["good"][:2]:
        shutil.copy(p, scans)

    def present(name: str) -> list[str]:
        r = _run(scans, "--out", tmp_path / f"{name}.csv", "--model", healthy, "--with-segmentation",
                 "--segmenter", seg)
        assert r.exit_code == 0, r.output
        rows = _rows(tmp_path / f"{name}.csv")
        assert [row["label"] for row in rows] == ["no_tumor", "no_tumor"]
        return [row["tumor_present"] for row in rows]

    assert present("ungated") == ["true", "true"]
    meta = json.loads((seg / "model.json").read_text())
    meta["postprocessing"] = {"gate": "bundled"}
    (seg / "model.json").write_text(json.dumps(meta))
    assert present("gated") == ["false", "false"]


def test_listing_is_sorted_like_paths_and_skips_hidden_and_excluded(tmp_path):
    """find_scans walks with os.scandir and keeps plain strings (memory); its order must stay that of
    sorted(Path.rglob): by path parts, so "a/x.png" comes before "a-b/x.png" although "-" sorts before "/"."""
    from neuralscan_cli.inference.segmentation import find_scans

    root = tmp_path / "tree"
    names = ["a/x.png", "a-b/x.png", "a.png", "a/b/c.dcm", "B.png", "a/.hidden.png", "z/note.txt",
             ".cache/y.png", "out/skip.png"]
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"x")
    (root / "link").symlink_to(root / "a", target_is_directory=True)  # rglob does not enter symlinked folders
    files, found_root, ignored = find_scans([root], exclude=root / "out")
    assert all(isinstance(f, str) for f in files)
    expected = [str(p) for p in sorted(root.resolve().rglob("*")) if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(root.resolve()).parts)
                and p.suffix in (".png", ".dcm") and "out" not in p.parts]
    assert files == expected
    # hidden files and folders (.cache, .git, .Trash) are left out alike
    assert files == [str(root.resolve() / n) for n in ["B.png", "a/b/c.dcm", "a/x.png", "a-b/x.png", "a.png"]]
    assert ignored == 2 and found_root == root.resolve()  # note.txt, and the symlinked folder (counted, not entered)
    # a file named twice (directly and through its folder) is listed once
    again, _, _ = find_scans([root / "a", root / "a" / "x.png"])
    assert again == [str(root.resolve() / "a/b/c.dcm"), str(root.resolve() / "a/x.png")]


def test_classify_reports_the_calibrated_probabilities_evaluate_scores(tmp_path):
    """`classify` scores through OpenVINO's asynchronous queue, `evaluate` through `Runner.predict`: the same
    engine must give the same (temperature-calibrated) probabilities on the same scans."""
    import csv as _csv

    from typer.testing import CliRunner as _Runner

    from neuralscan_cli.cli.app import app as _app
    from neuralscan_cli.inference import load_bundle

    bundle = load_bundle("bundled")
    assert bundle.temperature != 1.0  # otherwise this test could not tell calibrated from raw
    samples = Path(__file__).resolve().parents[2] / "neuralscan_cli" / "samples"
    runner = _Runner()
    r = runner.invoke(_app, ["classify", str(samples / "images"), "--out", str(tmp_path / "c.csv"),
                             "--engine", "openvino-int8"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(_app, ["evaluate", "bundled", str(samples / "labels.csv"), "--out", str(tmp_path / "ev"),
                             "--engine", "openvino-int8", "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    classified = {Path(row["path"]).name: row for row in _csv.DictReader(open(tmp_path / "c.csv"))}
    evaluated = {Path(row["path"]).name: row for row in _csv.DictReader(open(tmp_path / "ev" / "predictions.csv"))}
    assert len(classified) == 11 and set(evaluated) <= set(classified) and len(evaluated) >= 8
    for name, row in evaluated.items():
        for c in bundle.classes:
            assert abs(float(classified[name][f"p_{c}"]) - float(row[f"p_{c}"])) < 2e-3, (name, c)


def test_with_segmentation_never_reuses_another_scans_mask_name(tmp_path):
    """Two folders each holding an `x.png`, classified one run after the other into one results file."""
    import csv as _csv
    import shutil as _shutil

    from typer.testing import CliRunner as _Runner

    from neuralscan_cli.cli.app import app as _app

    samples = Path(__file__).resolve().parents[2] / "neuralscan_cli" / "samples" / "images"
    out = tmp_path / "r.csv"
    for folder, sample in (("A", "0153.png"), ("B", "2200.png")):
        (tmp_path / folder).mkdir()
        _shutil.copy(samples / sample, tmp_path / folder / "x.png")
        r = _Runner().invoke(_app, ["classify", str(tmp_path / folder), "--out", str(out), "--with-segmentation"])
        assert r.exit_code == 0, r.output
    rows = list(_csv.DictReader(open(out)))
    assert [Path(row["path"]).parent.name for row in rows] == ["A", "B"]
    assert rows[0]["mask_file"] != rows[1]["mask_file"] and rows[0]["overlay_file"] != rows[1]["overlay_file"]
    from PIL import Image as _Image

    for row in rows:
        mask = np.asarray(_Image.open(tmp_path / "r_segmentation" / row["mask_file"])) > 0
        assert int(row["area_px"]) == int(mask.sum())


def test_blank_slices_are_labelled_blank_not_guessed(tmp_path):
    """An all-black and a uniform grey image (a volume's empty end slices): no class, no probabilities, no
    tumour, and an empty mask; the real scan beside them is classified as usual."""
    import csv as _csv
    import shutil as _shutil

    from PIL import Image as _Image
    from typer.testing import CliRunner as _Runner

    from neuralscan_cli.cli.app import app as _app

    scans = tmp_path / "scans"
    scans.mkdir()
    _Image.fromarray(np.zeros((128, 128), np.uint8)).save(scans / "black.png")
    _Image.fromarray(np.full((128, 128), 120, np.uint8)).save(scans / "grey.png")
    _shutil.copy(Path(__file__).resolve().parents[2] / "neuralscan_cli" / "samples" / "images" / "0153.png", scans)
    r = _Runner().invoke(_app, ["classify", str(scans), "--out", str(tmp_path / "r.csv"), "--with-segmentation"])
    assert r.exit_code == 0, r.output
    rows = {Path(row["path"]).name: row for row in _csv.DictReader(open(tmp_path / "r.csv"))}
    for name in ("black.png", "grey.png"):
        row = rows[name]
        assert row["label"] == "blank" and row["confidence"] == "" and row["tumor"] == "false", row
        assert all(row[k] == "" for k in row if k.startswith("p_"))
        assert row["tumor_present"] == "false"
        assert not (np.asarray(_Image.open(tmp_path / "r_segmentation" / row["mask_file"])) > 0).any()
    assert rows["0153.png"]["label"] != "blank" and float(rows["0153.png"]["confidence"]) > 0.25


def test_a_csv_manifest_lists_the_scans_and_a_missing_one_is_one_failed_row(work, tmp_path):
    """Hospital exports come as lists: classify reads a manifest's `image` column (paths relative to it), as
    preprocess and evaluate do; a listed file that is gone is reported and skipped, not a stop."""
    listed = work["good"][:3]
    lines = (["image,label"] + [f"{Path(p).relative_to(work['scans'])},x" for p in listed] + ["gone.png,x"]
             + [",x"])  # a row whose image cell is blank names no file: counted as ignored, not silently dropped
    # the manifest lives beside the scans, so its relative paths resolve against its own folder
    manifest = work["scans"] / "batch.csv"
    manifest.write_text("\n".join(lines) + "\n")
    try:
        out = tmp_path / "r.csv"
        r = _run(manifest, "--out", out, "--model", work["exported"])
        assert r.exit_code == 0, r.output
        assert sorted(row["path"] for row in _rows(out)) == sorted(listed)
        errors = _rows(sidecar_paths(out)[1])
        assert [Path(e["path"]).name for e in errors] == ["gone.png"]
        ignored = r.output.split("blank manifest rows")[1].split("\n")[0]
        assert ignored.replace("│", "").split() == ["1"], r.output
        # a CSV without an image column is a user mistake, said in one line
        bad = tmp_path / "bad.csv"
        bad.write_text("file,label\na.png,x\n")
        _assert_one_line_error(_run(bad, "--out", tmp_path / "r2.csv", "--model", work["exported"]), 2, "'image'")
    finally:
        manifest.unlink()


def test_limit_reaches_new_files_before_retrying_failed_ones(work, tmp_path):
    """A bad file must not hold a `--limit`ed batch back: files that failed before go last."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("image\n" + "\n".join([str(tmp_path / "gone.png"), *work["good"][:2]]) + "\n")
    out = tmp_path / "r.csv"
    r = _run(manifest, "--out", out, "--model", work["exported"], "--limit", "1")
    assert r.exit_code == 0, r.output  # only the bad file was tried, but files are left: not a fatal run
    assert not out.exists() or _rows(out) == []
    for n in (1, 2):
        r = _run(manifest, "--out", out, "--model", work["exported"], "--limit", "1")
        assert r.exit_code == 0, r.output
        assert sorted(row["path"] for row in _rows(out)) == work["good"][:n]
    # only the file that failed before is left: not "left for a later run" (a rerun loop would never end)
    assert "left for a later run" not in r.output and "failed before, not retried" in r.output
    # and the earlier failure is still listed, though this run did not retry it
    assert [Path(e["path"]).name for e in _rows(sidecar_paths(out)[1])] == ["gone.png"]


def test_overwrite_never_deletes_a_file_it_did_not_write(work, tmp_path):
    """--out naming the input manifest, or another program's CSV: --overwrite refuses instead of deleting."""
    manifest = tmp_path / "cases.csv"
    manifest.write_text("image,patient_id\n" + "\n".join(f"{p},P{k}" for k, p in enumerate(work["good"][:2])) + "\n")
    before = manifest.read_text()
    _assert_one_line_error(_run(manifest, "--out", manifest, "--overwrite", "--model", work["exported"]), 2,
                           "is one of the inputs")
    theirs = tmp_path / "theirs.csv"
    theirs.write_text("name,score\nalice,1\n")
    _assert_one_line_error(_run(manifest, "--out", theirs, "--overwrite", "--model", work["exported"]), 2,
                           "not a results file")
    assert manifest.read_text() == before and theirs.read_text() == "name,score\nalice,1\n"
    # its own results are replaced as before
    out = tmp_path / "r.csv"
    assert _run(manifest, "--out", out, "--model", work["exported"]).exit_code == 0
    r = _run(manifest, "--out", out, "--overwrite", "--model", work["exported"])
    assert r.exit_code == 0, r.output
    assert len(_rows(out)) == 2
