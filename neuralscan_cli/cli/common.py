"""What every command shares: the console, the one-line error exit, progress bars, option parsing helpers."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import NeuralScanError

console = Console()
err_console = Console(stderr=True)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input: shown as one line with exit code 2."""
    from ..data import BuildError, CacheError, SourceError
    from ..io import ScanReadError

    return (NeuralScanError, ScanReadError, SourceError, BuildError, CacheError)


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn expected failures into `error: <one line>` and exit 2."""
    try:
        yield
    except user_errors() as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def split_list(value: str | None) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c']; None or '' -> []."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def progress_bar(transient: bool = False) -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err_console, transient=transient, disable=not sys.stderr.isatty())
