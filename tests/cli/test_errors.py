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
