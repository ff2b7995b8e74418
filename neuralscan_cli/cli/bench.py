"""`neuralscan bench --out DIR`: the stock and the Intel-accelerated paths side by side, on this machine."""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import typer
from rich.table import Table

from .app import app
from .common import console, err_console, fail, friendly_errors, split_list

SUITES = ("classical", "training", "inference", "classify")


@app.command()
def bench(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for bench.json, bench.png and bench.md."),
    quick: bool = typer.Option(False, "--quick", help="Tiny models built on the fly, the sample scans, few "
                               "repeats: under 2 minutes on 2 cores. Without it: the shipped models, ~20 min."),
    suite: str = typer.Option("all", "--suite", help="all, or a comma list of: classical, training, inference, "
                              "classify."),
    cache: Path = typer.Option(None, "--cache", help="A preprocess cache: its radiomics features for the classical "
                               "suite (else the sample scans' features), its images for the training steps (full "
                               "mode) and its validation split for accuracy when the models' own is missing."),
    model: str = typer.Option(None, "--model", "-m", help="Classifier bundle, 'bundled' (default), or 'tiny' "
                              "(default with --quick)."),
    segmenter: str = typer.Option(None, "--segmenter", help="Segmenter bundle, 'bundled-segmenter' (default), or "
                                  "'tiny' (default with --quick)."),
    images: Path = typer.Option(None, "--images", help="Folder (or CSV manifest) of scans for the end-to-end "
                                "classify suite (default: the bundled sample scans)."),
    repeats: int = typer.Option(None, "--repeats", min=1, help="Timed repeats per path (and processes per "
                                "training variant). Default: 5 (3 with --quick; training 3, 1 with --quick)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Timed training steps per process (default 10, 5 with "
                              "--quick)."),
    arch: str = typer.Option(None, "--arch", help="Training suite: measure this registry architecture instead "
                             "of the classifier's."),
    size: int = typer.Option(None, "--size", help="Training suite: input size instead of the classifier's."),
    clock_ghz: float = typer.Option(None, "--clock-ghz", help="CPU clock for the INT8 peak (default: /proc/cpuinfo "
                                    "'cpu MHz', else 2.3)."),
    save_results: bool = typer.Option(False, "--save-results", help="Also copy the results to "
                                      "a bench-<date> folder in benchmarks/results."),
    json_out: bool = typer.Option(False, "--json", help="Print bench.json instead of tables."),
):
    """Measure scikit-learn-intelex, oneDNN/ITEX/bf16 training and OpenVINO FP32/INT8 inference against their
    stock twins on the same data and model; every accelerated path also reports its agreement with stock."""
    chosen = list(SUITES) if suite.strip() == "all" else split_list(suite)
    bad = [s for s in chosen if s not in SUITES]
    if bad or not chosen:
        raise fail(f"unknown suite '{', '.join(bad) or suite}': choose all or a comma list of {', '.join(SUITES)}")
    if out.exists() and not out.is_dir():
        raise fail(f"{out}: exists and is not a folder")
    if cache is not None and not (cache / "dataset.json").is_file():
        raise fail(f"{cache}: not a dataset cache (no dataset.json; build one with 'neuralscan preprocess')")
    if images is not None and not images.exists():
        raise fail(f"{images}: no such file or folder")
    if clock_ghz is not None and clock_ghz <= 0:
        raise fail("--clock-ghz must be positive")
    from ..bench.suites import machine_line, run_bench

    with friendly_errors():
        _check_models(model, segmenter)
        if arch is not None:  # a typo would run the whole bench and fill the table with "unknown model"
            from ..models import list_models, model_task

            if arch not in list_models() or model_task(arch) != "classify" or arch == "ensemble":
                raise fail(f"--arch {arch}: not a classifier the training suite can build (choose from "
                           f"{', '.join(m for m in list_models('classify') if m != 'ensemble')})")
        with err_console.status("bench") as status:
            results = run_bench(out, quick=quick, suites=chosen, cache=cache, classifier=model, segmenter=segmenter,
                                images=images, repeats=repeats, steps=steps, clock_ghz=clock_ghz, arch=arch,
                                size=size, on_step=lambda s: status.update(f"bench: {s}"))
    saved = _save(out) if save_results else None
    if json_out:
        console.print_json(json.dumps(json.loads((out / "bench.json").read_text())))
        return
    console.print(f"[bold]Machine:[/] {machine_line(results['machine'])}", highlight=False, soft_wrap=True)
    _print_tables(results)
    console.print(f"{results['seconds']:.0f} s; results in {out / 'bench.json'}, chart {out / 'bench.png'}, "
                  f"tables {out / 'bench.md'}" + (f"; saved to {saved}" if saved else ""), highlight=False)


def _check_models(classifier: str | None, segmenter: str | None) -> None:
    """A named model that is missing or of the wrong task is the user's mistake: stop before measuring."""
    from ..inference.bundle import BundleError, load_bundle

    for spec, task in ((classifier, "classify"), (segmenter, "segment")):
        if spec in (None, "tiny"):
            continue
        bundle = load_bundle(spec)
        if bundle.task != task:
            raise BundleError(f"{spec} is a {bundle.task} model; --{'model' if task == 'classify' else 'segmenter'} "
                              f"needs a {'classification' if task == 'classify' else 'segmentation'} model")


def _print_tables(results: dict) -> None:
    from ..bench.suites import SECTION_OF, TITLES, table_rows, tf_line

    for name, (head, body) in table_rows(results).items():
        sec = results[SECTION_OF.get(name, name)]
        secs = "" if name in SECTION_OF else f" ({sec.get('seconds', 0):.0f} s)"
        t = Table(title=f"{TITLES[name]}{secs}", title_justify="left")
        n_left = 2 if name.startswith("inference") else 1
        for k, h in enumerate(head):
            t.add_column(h, justify="left" if k < n_left else "right")
        for row in body:
            t.add_row(*row)
        console.print(t)
        if name == "classical":
            d = sec["data"]
            console.print(f"  data: {d['kind']}, {d['n']} rows x {d['features']} features", highlight=False)
        elif name == "training":
            console.print(f"  {sec['model']} at {sec['size']} px, batch {sec['batch']}, {sec['steps']} steps x "
                          f"{sec['repeats']} process(es) per variant; {sec['architecture_source']}", highlight=False)
        elif name == "inference":
            console.print(f"  TF FP32 path: {tf_line(sec.get('tf') or {})}", highlight=False)
            for role, m in sec.get("models", {}).items():
                console.print(f"  {role}: {m.get('weights') or m.get('reason')}", highlight=False, soft_wrap=True)
    for name in SUITES:
        sec = results.get(name, {})
        if not sec.get("available") and not sec.get("skipped"):
            err_console.print(f"[yellow]{name}: not available:[/] {sec.get('reason')}", highlight=False,
                              soft_wrap=True)
    for note in results.get("notes", []):
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


def _results_root() -> Path:
    repo = Path(__file__).resolve().parents[2] / "benchmarks"
    return (repo if repo.is_dir() else Path.cwd() / "benchmarks") / "results"


def _save(out: Path) -> Path:
    dest = _results_root() / f"bench-{dt.date.today().isoformat()}"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("bench.json", "bench.png", "bench.md"):
        if (out / name).is_file():
            shutil.copy2(out / name, dest / name)
    return dest
