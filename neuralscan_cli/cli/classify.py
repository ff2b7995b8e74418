"""`neuralscan classify PATH... --out results.csv`: one row per slice, streamed, resumable."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .app import app
from .common import (console, fail, fail_if_nothing_done, fail_if_single_bad_file, friendly_errors,
                     print_counts, print_problems, progress_bar, resumable)

MAX_PROBLEMS_SHOWN = 5


@app.command(no_args_is_help=True)
def classify(
    paths: list[Path] = typer.Argument(..., help="Scan files, folders (searched recursively) or CSV manifests "
                                       "(an 'image' column): PNG, JPEG, BMP, TIFF, DICOM, NIfTI, figshare .mat. "
                                       "Volumes give one row per slice.",
                                       metavar="PATH..."),
    out: Path = typer.Option(..., "--out", "-o", help="Results file (.csv, or .jsonl). Rerunning with the same "
                             "file resumes; <name>.errors.csv lists the files that failed."),
    model: str = typer.Option("bundled", help="A classifier bundle folder, a model file inside one (model.keras "
                              "runs through TensorFlow), or 'bundled' (the shipped INT8 classifier)."),
    engine: str = typer.Option("auto", help="auto (fastest the bundle holds), openvino-int8, openvino-fp32 or "
                               "keras."),
    fmt: str = typer.Option(None, "--format", help="csv or jsonl (default: from the --out suffix)."),
    workers: int = typer.Option(None, min=1, help="Decode threads (default: CPU count, at most 4)."),
    batch_size: int = typer.Option(None, min=1, help="Images per inference request (default: 4 for OpenVINO, "
                                   "32 for Keras)."),
    with_segmentation: bool = typer.Option(False, "--with-segmentation", help="Also outline the tumour: adds the "
                                           "segmenter's measurement columns and writes masks and overlays."),
    segmenter: str = typer.Option("bundled-segmenter", help="The segmentation model for --with-segmentation."),
    seg_out: Path = typer.Option(None, help="Folder for the masks and overlays of --with-segmentation (default: "
                                 "<out name>_segmentation beside --out)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh instead of resuming --out."),
    limit: int = typer.Option(None, min=0, help="Score at most N files in this run (a rerun does the rest)."),
):
    """Classify every slice of every scan: label, confidence and the probability of each class, written as the
    scans are scored. One bad file is listed and skipped; an interrupted run resumes where it stopped."""
    from ..inference.bundle import ENGINES
    from ..inference.streaming import FORMATS

    if engine not in ENGINES:
        raise fail(f"--engine must be one of {', '.join(ENGINES)}, not '{engine}'")
    if fmt is not None and fmt not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    if out.is_dir():
        raise fail(f"{out}: is a folder; --out takes a file name such as results.csv")
    with friendly_errors():
        from ..inference.segmentation import find_scans
        from ..inference.streaming import classify_paths, load_classifier

        find_scans(paths)  # a missing path or an empty folder fails before the model loads
        bundle, runner = load_classifier(model, engine)
        with resumable(out, overwrite), progress_bar() as bar:
            task = bar.add_task(f"classifying ({runner.engine})", total=None, rate="")

            def on_total(n: int) -> None:
                bar.update(task, total=n)

            def on_progress(done: int, total: int, images: int) -> None:
                elapsed = bar.tasks[task].elapsed or 1e-9
                bar.update(task, completed=done, rate=f"{images / elapsed:.0f} img/s")

            summary = classify_paths(paths, bundle, out, fmt=fmt, workers=workers, batch_size=batch_size,
                                     with_segmentation=segmenter if with_segmentation else None,
                                     seg_out_dir=seg_out, overwrite=overwrite, limit=limit, runner=runner,
                                     on_total=on_total, on_progress=on_progress)
    fail_if_single_bad_file(n_files=summary.n_files, n_failed=summary.n_failed, errors=summary.errors)
    _print_summary(summary)
    fail_if_nothing_done(n_failed=summary.n_failed, n_done=summary.n_scored, n_resumed=summary.n_resumed,
                         verb="classified", errors_path=summary.errors_path, more_left=summary.stopped_early)


PER_SCAN_TABLE_MAX = 25  # small runs (the demo, a few files) also get one line per scan on screen


def _print_scans(s) -> None:
    """One line per scored slice, read back from the results file (small runs only; CSV output)."""
    import csv
    import itertools

    if s.out.suffix.lower() != ".csv" or not s.out.is_file():
        return
    with open(s.out, newline="") as fh:  # one row past the limit is enough to know: an archive is not loaded
        rows = list(itertools.islice(csv.DictReader(fh), PER_SCAN_TABLE_MAX + 1))
    if not rows or len(rows) > PER_SCAN_TABLE_MAX:
        return
    seg = "tumor_present" in rows[0]
    table = Table(title="Per scan", title_justify="left")
    for col, justify in [("scan", "left"), ("slice", "right"), ("label", "left"), ("conf.", "right")] + (
            [("outlined", "left"), ("area px", "right"), ("max diam.", "right")] if seg else []):
        table.add_column(col, justify=justify, no_wrap=True)
    for r in rows:
        cells = [Path(r["path"]).name, r["slice"], r["label"], f"{float(r['confidence']):.2f}" if r['confidence'] else ""]
        if seg:
            diameter = (f"{float(r['max_diameter_mm']):.1f} mm" if r.get("max_diameter_mm") else
                        f"{float(r['max_diameter_px']):.1f} px" if r.get("max_diameter_px") else "")
            cells += ["yes" if r["tumor_present"] == "true" else "no", r.get("area_px", ""), diameter]
        table.add_row(*cells)
    console.print(table)


def _print_summary(s) -> None:
    _print_scans(s)
    rows = [(f"slices labelled {label}", n) for label, n in s.counts.items()]
    rows += [("scan files found", s.n_files), ("scored now", s.n_scored), ("  slices", s.n_slices),
            ("done before (resumed)", s.n_resumed), ("failed", s.n_failed)]
    if s.n_left:
        rows.append(("left for a later run (--limit)", s.n_left))
    if s.n_not_retried:
        rows.append(("failed before, not retried (--limit)", s.n_not_retried))
    if s.n_ignored:
        rows.append(("ignored: non-scan files, blank manifest rows", s.n_ignored))
    print_counts(f"Classification with {s.model} ({s.engine})", rows)
    rate = f", {s.images_per_second:.0f} images/s" if s.n_slices and s.seconds > 0 else ""
    console.print(f"{s.seconds:.1f} s{rate} ({s.workers} decode threads, {s.infer_requests} infer request(s) of "
                  f"{s.batch_size}); results in {s.out}", highlight=False, soft_wrap=True)
    if s.errors:
        print_problems(f"[yellow]{s.n_failed} file(s) failed[/] (all listed in {s.errors_path}):", s.errors,
                       MAX_PROBLEMS_SHOWN)
