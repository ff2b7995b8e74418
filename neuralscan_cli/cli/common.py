"""What every command shares: the console, the one-line error exit, progress bars, option parsing helpers."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape
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
    # escaped: a path or library message may hold [brackets] that rich would read as markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn expected failures into `error: <one line>` and exit 2."""
    try:
        yield
    except user_errors() as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    except OSError as exc:
        # a missing file, an --out inside a file, a read-only or full disk: the OS says which path and why
        raise fail(os_error_line(exc)) from None
    except ValueError as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def os_error_line(exc: OSError) -> str:
    """'<path>: <reason>' from an OSError, falling back to its text."""
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def split_list(value: str | None) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c']; None or '' -> []."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def progress_bar(transient: bool = False) -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err_console, transient=transient, disable=not sys.stderr.isatty())


@contextlib.contextmanager
def resumable(saved_in, overwrite: bool = False) -> Iterator[None]:
    """Ctrl-C in a batch: say where the finished work is and that a rerun resumes; exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        # the same command with --overwrite would start afresh again
        again = "the command again without --overwrite" if overwrite else "the same command again"
        err_console.print(f"interrupted: the scans finished so far are saved in {saved_in}; run {again} to resume",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def fail_if_single_bad_file(*, n_files: int, n_failed: int, errors: list[str]) -> None:
    """One file given, and it is bad: just say why (exit 1)."""
    if n_files == 1 and n_failed == 1:
        raise fail(errors[0], code=1)


def fail_if_nothing_done(*, n_failed: int, n_done: int, n_resumed: int, verb: str, errors_path,
                         more_left: bool = False) -> None:
    """Every file failed (none done now or before, and none left for a later --limit run): exit 1, pointing at
    the errors file."""
    if n_failed and n_done == 0 and n_resumed == 0 and not more_left:
        raise fail(f"no scan could be {verb} ({n_failed} file(s) failed; see {errors_path})", code=1)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def print_problems(header: str, problems: list[str], limit: int = 10) -> None:
    """A header line, then the first `limit` problems (one line each) and how many more there are."""
    err_console.print(header, highlight=False, soft_wrap=True)
    for p in problems[:limit]:
        err_console.print(f"  {p}", highlight=False, soft_wrap=True)
    if len(problems) > limit:
        err_console.print(f"  ... and {len(problems) - limit} more", highlight=False)


def print_counts(title: str, rows: list[tuple[str, int]]) -> None:
    """The end-of-run summary table of a batch command: one label and one count per row."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("count", justify="right")
    for name, n in rows:
        table.add_row(name, str(n))
    console.print(table)
