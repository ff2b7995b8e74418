"""`neuralscan segment PATH... --out DIR`: outline tumours, write masks, overlays and measurements.csv."""
from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .common import (console, fail, fail_if_nothing_done, fail_if_single_bad_file, friendly_errors,
                     print_counts, print_problems, progress_bar, resumable)

MAX_PROBLEMS_SHOWN = 10


@app.command(no_args_is_help=True)
def segment(
    paths: list[Path] = typer.Argument(..., help="Scan files, folders (searched recursively) or CSV manifests "
                                       "(an 'image' column): PNG, JPEG, BMP, TIFF, DICOM, NIfTI, figshare .mat.",
                                       metavar="PATH..."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for masks/, overlays/, measurements.csv and "
                             "errors.csv. Rerunning into the same folder resumes."),
    model: str = typer.Option("bundled-segmenter", help="A segmentation bundle folder, a model file inside one, "
                              "or 'bundled-segmenter'."),
    engine: str = typer.Option("auto", help="auto, openvino-int8, openvino-fp32 or keras."),
    threshold: float = typer.Option(None, min=0.0, max=1.0, help="Probability above which a pixel is tumour "
                                    "(default: the model's own, 0.5 unless its model.json says otherwise)."),
    batch_size: int = typer.Option(16, min=1, help="Images per inference batch."),
    min_component: float = typer.Option(None, min=0.0, max=0.5, help="Drop predicted blobs smaller than this "
                                        "share of the model's input image (default: the model's own)."),
    gate: str = typer.Option(None, help="A classifier (bundle folder or 'bundled') whose no_tumor call empties "
                             "a slice's mask, or 'none' (default: the model's own; the shipped segmenter is "
                             "gated by the shipped classifier)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh: delete this folder's earlier "
                                   "results (measurements, errors, and the masks and overlays they list) "
                                   "instead of resuming."),
    limit: int = typer.Option(None, min=0, help="Segment at most N files in this run (a rerun does the rest)."),
):
    """Outline the tumour in every scan: a mask (PNG; NIfTI too for NIfTI input, with the scan's affine), an
    overlay PNG, and one row of measurements (area, RANO diameters, centroid, side) per slice."""
    from ..inference.bundle import ENGINES

    if engine not in ENGINES:
        raise fail(f"--engine must be one of {', '.join(ENGINES)}, not '{engine}'")
    if out.exists() and not out.is_dir():
        raise fail(f"{out}: exists and is not a folder")
    with friendly_errors():
        from ..inference.segmentation import find_scans, load_gate, load_segmenter, segment_paths

        find_scans(paths, exclude=out)  # a missing path or an empty folder fails before the model loads
        bundle, runner = load_segmenter(model, engine)
        load_gate(bundle, gate)  # a wrong gate fails before anything is written
        with resumable(out / "measurements.csv", overwrite), progress_bar() as bar:
            task = bar.add_task(f"segmenting ({runner.engine})", total=None, rate="")

            def on_total(n):
                bar.update(task, total=n)

            def on_progress(done, total):
                elapsed = bar.tasks[task].elapsed or 1e-9
                bar.update(task, completed=done, rate=f"{done / elapsed:.1f} scans/s")

            summary = segment_paths(paths, bundle, out, threshold=threshold, batch_size=batch_size,
                                    min_component=min_component, gate=gate, runner=runner,
                                    overwrite=overwrite, limit=limit, on_total=on_total, on_progress=on_progress)
    fail_if_single_bad_file(n_files=summary.n_files, n_failed=summary.n_failed, errors=summary.errors)
    _print_summary(summary)
    fail_if_nothing_done(n_failed=summary.n_failed, n_done=summary.n_segmented, n_resumed=summary.n_resumed,
                         verb="segmented", errors_path=out / "errors.csv", more_left=summary.stopped_early)


def _print_summary(s) -> None:
    rows = [("scan files found", s.n_files), ("segmented now", s.n_segmented), ("  slices", s.n_slices),
            ("  slices with tumour", s.n_tumor), ("done before (resumed)", s.n_resumed), ("failed", s.n_failed)]
    if s.n_left:
        rows.append(("left for a later run (--limit)", s.n_left))
    if s.n_not_retried:
        rows.append(("failed before, not retried (--limit)", s.n_not_retried))
    if s.n_ignored:
        rows.append(("ignored: non-scan files, blank manifest rows", s.n_ignored))
    print_counts(f"Segmentation with {s.model} ({s.engine})", rows)
    rate = f", {s.n_segmented / s.seconds:.1f} scans/s" if s.n_segmented and s.seconds > 0 else ""
    console.print(f"{s.seconds:.1f} s{rate}; measurements in {Path(s.out_dir) / 'measurements.csv'}",
                  highlight=False, soft_wrap=True)
    if s.errors:
        print_problems(f"[yellow]{s.n_failed} file(s) skipped, listed in {Path(s.out_dir) / 'errors.csv'}:[/]",
                       s.errors, MAX_PROBLEMS_SHOWN)
