"""`neuralscan preprocess SRC... OUT`: scans on disk to a leakage-safe dataset cache."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from .app import app
from .common import console, fail, friendly_errors, print_problems, progress_bar, split_list


@app.command(no_args_is_help=True)
def preprocess(
    paths: list[Path] = typer.Argument(..., help="One or more sources (a folder per class, a CSV manifest or a "
                                       "folder holding one, loose scans), then the output cache folder.",
                                       metavar="SRC... OUT"),
    classes: str = typer.Option("", "--classes", help="Keep only these classes, in this order (comma-separated)."),
    size: int = typer.Option(256, help="Output side in pixels (square)."),
    crop: bool = typer.Option(True, "--crop/--no-crop", help="Crop to the head before resizing."),
    clahe: bool = typer.Option(False, "--clahe/--no-clahe", help="Adaptive histogram equalisation."),
    clip_low: float = typer.Option(0.5, help="Intensity percentile mapped to 0."),
    clip_high: float = typer.Option(99.5, help="Intensity percentile mapped to 1."),
    val_folds: str = typer.Option("", help="Given folds that form the validation split (e.g. '4')."),
    test_folds: str = typer.Option("", help="Given folds that form the test split."),
    val_fraction: float = typer.Option(0.15, help="Share of groups without a named fold sent to validation."),
    test_fraction: float = typer.Option(0.15, help="Share of groups without a named fold sent to test."),
    seed: int = typer.Option(42, help="Seed of the group split."),
    dedup_threshold: float = typer.Option(0.95, help="Thumbnail correlation at which two images are duplicates."),
    axis: int = typer.Option(2, min=0, max=2, help="Volume axis to slice NIfTI along (canonical RAS: 2 = axial)."),
    middle: int = typer.Option(0, min=0, help="Keep only the middle N slices of each volume (0 = all)."),
    workers: int = typer.Option(0, min=0, help="Worker processes (0 = one per core)."),
    strict: bool = typer.Option(False, help="Exit non-zero when any file was skipped."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of tables."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a cache in OUT built from other sources "
                                   "or with other preprocessing (a rerun with the same ones updates it)."),
):
    """Read scans, normalise, crop and resize them, find near-duplicates, and split by group into a cache."""
    from ..data import SplitConfig, build_cache
    from ..data.build import report_dict
    from ..preprocess import PreprocessConfig

    if len(paths) < 2:
        raise fail("give at least one source and the output folder: neuralscan preprocess SRC... OUT")
    *sources, out = paths
    with friendly_errors():
        if out.exists() and not out.is_dir():
            raise fail(f"{out}: exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not (out / "dataset.json").exists():
            raise fail(f"{out}: folder is not empty and is not a dataset cache; choose a new output folder")
        config = PreprocessConfig(size=size, clip_low=clip_low, clip_high=clip_high, crop=crop, clahe=clahe)
        split = SplitConfig(val_fraction=val_fraction, test_fraction=test_fraction,
                            val_folds=tuple(split_list(val_folds)), test_folds=tuple(split_list(test_folds)), seed=seed)
        with progress_bar() as bar:
            task = bar.add_task("preprocessing", total=None, rate="")

            def on_total(n):
                bar.update(task, total=n)

            def on_progress(done, total):
                elapsed = bar.tasks[task].elapsed or 1e-9
                bar.update(task, completed=done, rate=f"{done / elapsed:.0f} img/s")

            report = build_cache(sources, out, config=config, classes=split_list(classes) or None, split=split,
                                 workers=workers or None, axis=axis, middle=middle or None,
                                 dedup_threshold=dedup_threshold, on_progress=on_progress, on_total=on_total,
                                 overwrite=overwrite)
    if json_out:
        console.print_json(json.dumps(report_dict(report)))
    else:
        _print_summary(report)
        if size % 32:
            console.print(f"[yellow]note: the networks take a multiple of 32 px, so `train` cannot use this {size} px "
                          f"cache (`analyze` and `baseline` can)[/]", highlight=False)
    if report.errors and strict:
        raise fail(f"{len(report.errors)} file(s) skipped (--strict); see {out / 'errors.csv'}", code=1)


def _print_summary(report) -> None:
    splits = [s for s in ("train", "val", "test") if s in report.split_counts]
    table = Table(title=f"Dataset cache {report.out}", title_justify="left")
    table.add_column("class")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    rows = list(report.classes) + (["unlabelled"] if any("unlabelled" in c for c in report.split_counts.values()) else [])
    for c in rows:
        vals = [report.split_counts[s].get(c, 0) for s in splits]
        table.add_row(c, *map(str, vals), str(sum(vals)))
    totals = [sum(report.split_counts[s].values()) for s in splits]
    table.add_row("[bold]all[/]", *map(str, totals), f"[bold]{sum(totals)}[/]")
    console.print(table)
    d = report.duplicates
    naive = d.get("naive_image_split", {})
    console.print(
        f"files {report.n_files} ({report.n_slices} slices): {report.n_processed} processed, {report.n_reused} "
        f"unchanged, {report.n_excluded} left out by --classes; "
        + (f"{report.images_per_second:.0f} files/s, " if report.n_processed else "")
        + f"{report.seconds:.1f} s")
    console.print(
        f"near-duplicates: {d.get('pairs', 0)} pairs ({d.get('pairs_across_labels', 0)} across labels) in "
        f"{d.get('images_in_duplicate_sets', 0)} images; {d.get('groups', 0)} groups, largest "
        f"{d.get('largest_group', 0)}; a naive image-level split would have put "
        f"{naive.get('duplicate_pairs_split', 0)} duplicate pairs and {naive.get('groups_split', 0)} groups on "
        f"both sides; here no group spans two splits")
    if d.get("folds_kept_whole"):
        where = ", ".join(f"{f} -> {s}" for f, s in sorted(d["folds_kept_whole"].items()))
        console.print(f"folds without patient keys went whole to one split (patients never straddle): {where}",
                      highlight=False, soft_wrap=True)
    if report.errors:
        print_problems(f"[yellow]{len(report.errors)} problem(s), listed in {Path(report.out) / 'errors.csv'}:[/]",
                       report.errors)
