"""Failures no command foresaw one by one: an output path inside a file (any OSError) and an unexpected
exception must still end in one `error:` line, never a traceback."""
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neuralscan_cli.cli import app as app_module

SAMPLE = Path(__file__).resolve().parents[2] / "neuralscan_cli" / "samples" / "images" / "0153.png"

cli = CliRunner()


@pytest.mark.parametrize("command", [
    ["preprocess", str(SAMPLE), "{blocked}/cache", "--size", "64", "--workers", "1"],
    ["classify", str(SAMPLE), "--out", "{blocked}/results.csv"],
    ["segment", str(SAMPLE), "--out", "{blocked}/seg"],
])
def test_output_inside_a_file_is_one_line(tmp_path, command):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    result = cli.invoke(app_module.app, [arg.replace("{blocked}", str(blocked)) for arg in command])
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, Exception), result.exception
    lines = [ln for ln in result.output.splitlines() if ln.strip().startswith("error:")]
    assert len(lines) == 1 and str(blocked) in lines[0], result.output
    assert blocked.read_text() == "not a folder"


def test_unexpected_exception_is_one_line_from_the_console_script(monkeypatch, capsys):
    import neuralscan_cli.data as data

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(data, "build_cache", broken)
    monkeypatch.setattr(sys, "argv", ["neuralscan", "preprocess", str(SAMPLE), "/nonexistent-out-dir/cache"])
    monkeypatch.delenv("NEURALSCAN_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        app_module.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: unexpected RuntimeError: something nobody foresaw"), err
    assert "Traceback" not in err and "second line" not in err
    # and the traceback is there for whoever asks for it
    monkeypatch.setenv("NEURALSCAN_DEBUG", "1")
    with pytest.raises(RuntimeError):
        app_module.main()


def _tiny_bundle(root: Path, *, net_size: int, net_classes: int, json_size: int, json_classes: list[str]) -> Path:
    import json

    import keras

    from neuralscan_cli.inference import new_bundle_meta
    from neuralscan_cli.preprocess import PreprocessConfig

    root.mkdir(parents=True)
    inp = keras.Input((net_size, net_size, 1))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    model = keras.Model(inp, keras.layers.Dense(net_classes, activation="softmax")(x))
    model.save(root / "model.keras")
    meta = new_bundle_meta(task="classify", classes=json_classes, size=json_size,
                           preprocessing=PreprocessConfig(size=json_size).to_dict(), name="mismatch",
                           architecture="test")
    meta["files"] = {"keras": "model.keras"}
    (root / "model.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("net_size, net_classes, expected", [
    (64, 3, "outputs 3 values per image, model.json lists 4 classes"),
    (32, 4, "takes 32x32x1 images, model.json says 64x64x1"),
])
def test_network_that_does_not_fit_its_model_json_is_one_line(tmp_path, net_size, net_classes, expected):
    bundle = _tiny_bundle(tmp_path / "bundle", net_size=net_size, net_classes=net_classes, json_size=64,
                          json_classes=["glioma", "meningioma", "no_tumor", "pituitary"])
    out = tmp_path / "r.csv"
    result = cli.invoke(app_module.app, ["classify", str(SAMPLE), "--out", str(out), "--model", str(bundle),
                                         "--engine", "keras"])
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, Exception), result.exception
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], result.output
    assert not out.exists()


def test_brackets_in_a_path_are_printed_not_read_as_markup(tmp_path):
    missing = tmp_path / "[study 7]" / "scan.png"
    result = cli.invoke(app_module.app, ["classify", str(missing), "--out", str(tmp_path / "r.csv")])
    assert result.exit_code == 2 and not isinstance(result.exception, Exception), result.exception
    assert "[study 7]" in result.output


@pytest.mark.parametrize("overwrite, advice", [(False, "the same command again"),
                                               (True, "without --overwrite")])
def test_an_interrupted_batch_says_how_to_resume(overwrite, advice):
    """Rerunning an --overwrite command would start afresh again, so its Ctrl-C advice must differ."""
    import typer

    from neuralscan_cli.cli import common

    with common.err_console.capture() as captured, pytest.raises(typer.Exit) as stop:
        with common.resumable("out.csv", overwrite):
            raise KeyboardInterrupt
    assert stop.value.exit_code == 130
    assert advice in captured.get() and "out.csv" in captured.get()


@pytest.mark.parametrize("command", [
    ["preprocess", "{scans}", "{tmp}/cache", "--size", "64", "--workers", "1"],
    ["classify", "{scans}", "--out", "{tmp}/results.csv"],
    ["segment", "{scans}", "--out", "{tmp}/seg", "--gate", "none"],
])
def test_a_file_name_that_is_not_utf8_is_one_failed_file(tmp_path, command):
    """Old Latin-1 archives hold such names: the file is reported (its bad byte escaped), the others are
    processed. It stopped the whole batch, on every rerun."""
    import csv
    import os

    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "good.png").write_bytes(SAMPLE.read_bytes())
    bad = os.path.join(os.fsencode(scans), b"caf\xe9.png")  # Latin-1 e-acute: not UTF-8
    with open(bad, "wb") as fh:
        fh.write(SAMPLE.read_bytes())
    result = cli.invoke(app_module.app, [a.replace("{scans}", str(scans)).replace("{tmp}", str(tmp_path))
                                         for a in command])
    assert result.exit_code == 0, result.output
    errors = {"preprocess": tmp_path / "cache" / "errors.csv", "classify": tmp_path / "results.errors.csv",
              "segment": tmp_path / "seg" / "errors.csv"}[command[0]]
    with open(errors, newline="", encoding="utf-8") as fh:  # valid UTF-8, the byte written as \xe9
        rows = list(csv.reader(fh))[1:]
    assert len(rows) == 1 and "caf\\xe9.png" in rows[0][0] and "not valid UTF-8" in rows[-1][-1]
