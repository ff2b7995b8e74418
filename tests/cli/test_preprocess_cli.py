"""`neuralscan preprocess` end to end on the bundled sample images, and its error exits."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neuralscan_cli.cli.app import app
from neuralscan_cli.data import DatasetCache

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "neuralscan_cli" / "samples"
SAMPLE_CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary", "tumor"]
# one worker: no process pool forked from a test process that may already hold TensorFlow
FAST = ["--size", "64", "--workers", "1"]

cli = CliRunner()


def _run(*args):
    return cli.invoke(app, ["preprocess", *map(str, args)])


def _assert_one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    assert not isinstance(result.exception, Exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


def test_samples_end_to_end(tmp_path):
    out = tmp_path / "cache"
    result = _run(SAMPLES, out, *FAST)
    assert result.exit_code == 0, result.output
    assert not isinstance(result.exception, Exception)
    for c in SAMPLE_CLASSES:
        assert c in result.stdout
    assert "near-duplicates" in result.stdout and "11 processed" in result.stdout
    cache = DatasetCache.open(out)
    assert len(cache) == 11 and cache.classes == SAMPLE_CLASSES and cache.size == 64
    assert (cache.labels >= 0).all()
    assert cache.has_mask.sum() == 8  # six figshare masks and two Br35H outlines
    # a rerun into the same cache reads nothing again
    again = _run(SAMPLES, out, *FAST)
    assert again.exit_code == 0, again.output
    assert "0 processed" in again.stdout and "11 unchanged" in again.stdout
    assert "multiple of 32" not in again.stdout  # 64 px trains


def test_a_size_no_network_takes_is_said_at_preprocess_time(tmp_path):
    result = _run(SAMPLES, tmp_path / "cache", "--size", "50", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "`train` cannot use this 50 px cache" in " ".join(result.stdout.split())


def test_json_summary(tmp_path):
    result = _run(SAMPLES, tmp_path / "cache", *FAST, "--json", "--classes", "glioma,meningioma,pituitary,no_tumor",
                  "--val-fraction", "0.3", "--test-fraction", "0.2", "--seed", "1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"duplicates", "split_counts", "classes", "n_files", "n_processed", "errors",
            "images_per_second"} <= set(data)
    assert data["classes"] == ["glioma", "meningioma", "pituitary", "no_tumor"]
    assert data["n_excluded"] == 2 and data["n_files"] == 9  # the two Br35H "tumor" rows are left out
    assert {"pairs", "groups", "naive_image_split"} <= set(data["duplicates"])
    assert set(data["split_counts"]) <= {"train", "val", "test"}
    assert sum(sum(v.values()) for v in data["split_counts"].values()) == 9
    info = json.loads((tmp_path / "cache" / "dataset.json").read_text())
    assert info["split"]["seed"] == 1 and info["split"]["val_fraction"] == 0.3


def test_missing_source_exit_2(tmp_path):
    result = _run(tmp_path / "nope", tmp_path / "cache", *FAST)
    _assert_one_line_error(result)
    assert "nope" in result.stderr
    assert not (tmp_path / "cache" / "dataset.json").exists()


def test_out_is_non_cache_folder_exit_2(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    result = _run(SAMPLES, out, *FAST)
    _assert_one_line_error(result)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]  # nothing written into it


def test_out_is_a_file_exit_2(tmp_path):
    out = tmp_path / "file.txt"
    out.write_text("x")
    _assert_one_line_error(_run(SAMPLES, out, *FAST))


def test_only_one_path_exit_2(tmp_path):
    _assert_one_line_error(_run(SAMPLES, "--workers", "1"))


@pytest.mark.parametrize("args", [["--size", "abc"], ["--axis", "7"], ["--workers", "-1"], ["--bogus"]])
def test_bad_option_values_no_traceback(tmp_path, args):
    result = _run(SAMPLES, tmp_path / "cache", *args)
    assert result.exit_code != 0
    assert not isinstance(result.exception, Exception)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("args", [["--size", "8"], ["--clip-low", "60", "--clip-high", "40"],
                                  ["--val-fraction", "0.7", "--test-fraction", "0.5"],
                                  ["--val-folds", "4", "--test-folds", "4"]])
def test_invalid_settings_one_line_error(tmp_path, args):
    result = _run(SAMPLES, tmp_path / "cache", "--workers", "1", *args)
    _assert_one_line_error(result)


def test_strict_with_bad_file_exit_1_cache_written(tmp_path):
    src = tmp_path / "samples"
    shutil.copytree(SAMPLES, src)
    (src / "images" / "broken.png").write_text("not an image at all\n")
    with open(src / "labels.csv", "a", newline="") as fh:
        csv.writer(fh).writerow(["images/broken.png", "glioma", "", "", "figshare"])
    out = tmp_path / "cache"
    result = _run(src, out, *FAST, "--strict")
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception)
    assert "broken.png" in result.stderr and "error:" in result.stderr
    cache = DatasetCache.open(out)
    assert len(cache) == 11
    assert "broken.png" in (out / "errors.csv").read_text()
    # without --strict the same input is a success with a warning
    ok = _run(src, tmp_path / "cache2", *FAST)
    assert ok.exit_code == 0 and "broken.png" in ok.stderr


def test_python_m_help():
    venv_python = REPO / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.is_file() else sys.executable
    proc = subprocess.run([python, "-m", "neuralscan_cli", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "preprocess" in proc.stdout and "Traceback" not in proc.stderr
    proc = subprocess.run([python, "-m", "neuralscan_cli", "preprocess", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--val-folds" in proc.stdout and "--strict" in proc.stdout


def test_a_cache_built_otherwise_is_replaced_only_with_overwrite(tmp_path):
    """Models trained on a cache stop matching it if a rerun swaps its size or sources: that needs --overwrite."""
    out = tmp_path / "cache"
    assert _run(SAMPLES, out, *FAST).exit_code == 0
    before = (out / "dataset.json").read_text()
    r = _run(SAMPLES, out, "--size", "96", "--workers", "1")
    _assert_one_line_error(r)
    assert "size 64 -> 96" in r.stderr and "--overwrite" in r.stderr
    assert (out / "dataset.json").read_text() == before
    assert _run(SAMPLES, out, *FAST).exit_code == 0  # the same command again updates it, as before
    r = _run(SAMPLES, out, "--size", "96", "--workers", "1", "--overwrite")
    assert r.exit_code == 0, r.output
    assert DatasetCache.open(out).size == 96


def test_a_fold_the_sources_do_not_have_is_a_one_line_error(tmp_path):
    r = _run(SAMPLES, tmp_path / "cache", *FAST, "--val-folds", "9")
    _assert_one_line_error(r)
    assert "no fold 9" in r.stderr
    assert not (tmp_path / "cache" / "dataset.json").exists()


def test_a_rerun_that_would_split_otherwise_or_a_class_typo_is_refused(tmp_path):
    """A rerun with other folds, fractions, seed or classes would move validation images into training under
    models already validated on them: refused without --overwrite. A --classes typo is refused outright."""
    out = tmp_path / "cache"
    assert _run(SAMPLES, out, *FAST).exit_code == 0
    for args, said in ((["--val-fraction", "0.3"], "val_fraction"), (["--seed", "7"], "seed"),
                       (["--classes", "glioma,meningioma"], "classes"), (["--dedup-threshold", "0.9"], "dedup")):
        r = _run(SAMPLES, out, *FAST, *args)
        _assert_one_line_error(r)
        assert said in r.output and "--overwrite" in r.output, r.output
    assert _run(SAMPLES, out, *FAST, "--seed", "7", "--overwrite").exit_code == 0
    r = _run(SAMPLES, tmp_path / "typo", *FAST, "--classes", "glioma,menigioma")
    _assert_one_line_error(r)
    assert "menigioma (did you mean meningioma?)" in r.output and not (tmp_path / "typo").exists()
