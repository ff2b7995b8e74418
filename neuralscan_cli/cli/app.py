"""The `neuralscan` command: one Typer app, one module per sub-command."""
from __future__ import annotations

import os

import typer

# TensorFlow and ITEX log a dozen start-up lines at every import, before any output of ours; level 3, because
# TF 2.15 logs its CUDA-stub registration noise at ERROR level (real failures still raise); a user's setting wins
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("ITEX_CPP_MIN_LOG_LEVEL", "3")

from .. import __version__

app = typer.Typer(
    name="neuralscan",
    help="Find, classify and outline brain tumours in MRI, fast on CPUs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        typer.echo(f"neuralscan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Find, classify and outline brain tumours in MRI, fast on CPUs."""


def _register() -> None:
    # each module adds its command to `app`; imports stay light so `--help` is fast
    from . import preprocess  # noqa: F401
    from . import analyze  # noqa: F401
    from . import baseline  # noqa: F401
    from . import train  # noqa: F401
    from . import models  # noqa: F401
    from . import ensemble  # noqa: F401
    from . import calibrate  # noqa: F401
    from . import evaluate  # noqa: F401
    from . import segment  # noqa: F401
    from . import export  # noqa: F401
    from . import classify  # noqa: F401
    from . import bench  # noqa: F401


_register()


def main() -> None:
    """The console script: expected failures exit 2 with one line inside each command; this is the last resort,
    so that an unforeseen one still ends in one line (NEURALSCAN_DEBUG=1 shows the traceback)."""
    import sys

    try:
        app()
    except Exception as exc:  # noqa: BLE001 - the catch-all a console script needs
        if os.environ.get("NEURALSCAN_DEBUG"):
            raise
        from .common import fail

        text = str(exc).splitlines()[0] if str(exc) else ""
        fail(f"unexpected {type(exc).__name__}{': ' + text if text else ''} (please report it; "
             "NEURALSCAN_DEBUG=1 shows the traceback)")
        sys.exit(1)
