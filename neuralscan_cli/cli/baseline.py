"""`neuralscan baseline CACHE --out DIR`: classical models on radiomics features, stock vs oneDAL;
`neuralscan baseline --predict MODEL PATH...`: score new scans with a saved one."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import typer
from rich.table import Table

from .app import app
from .common import console, err_console, fail, friendly_errors


@app.command(no_args_is_help=True)
def baseline(
    args: list[str] = typer.Argument(None, help="Training: the dataset cache. With --predict: scans, folders or "
                                     "CSV manifests to score.", metavar="CACHE | PATH..."),
    out: Path = typer.Option(None, "--out", "-o", help="Training: output folder (results, plots, model/). "
                             "With --predict: a CSV file for the predictions."),
    model: str = typer.Option("all", "--model", "-m", help="svc, rf, knn, logreg, a comma list, or all."),
    engine: str = typer.Option("both", help="intel (scikit-learn-intelex / oneDAL), stock (scikit-learn), or both "
                               "(same folds, timed side by side)."),
    config: Path = typer.Option(None, "--config", help="Hyper-parameters and grids (e.g. configs/baseline.yaml; "
                                "defaults are built in)."),
    grid: bool = typer.Option(False, "--grid", help="Small group-aware grid search inside every training fold."),
    region: str = typer.Option(None, help="Feature region: auto, mask or head (default: the config's, auto)."),
    workers: int = typer.Option(2, min=1, help="Processes computing features."),
    predict: Path = typer.Option(None, "--predict", help="Score scans with this saved model (a baseline --out "
                                 "folder, its model/ folder, or model/<name>) instead of training."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of tables."),
):
    """Train SVC / random forest / kNN / logistic regression on radiomics features with patient-level CV."""
    from ..features.baselines import load_config, parse_engines, parse_models, predict_paths, run_baseline

    args = args or []
    if predict is not None:
        if not args:
            raise fail("give the scans to score: neuralscan baseline --predict MODEL PATH...")
        with friendly_errors():
            rows, meta = predict_paths(predict, args)
            _print_predictions(rows, meta, out, json_out)
        return
    if len(args) != 1:
        raise fail("give exactly one dataset cache: neuralscan baseline CACHE --out DIR")
    if out is None:
        raise fail("give an output folder with --out DIR")
    if out.exists() and not out.is_dir():
        raise fail(f"{out}: exists and is not a folder")
    with friendly_errors():
        models = parse_models(model)
        engines = parse_engines(engine)
        cfg = load_config(config)
        with err_console.status("baseline") as status:
            summary = run_baseline(args[0], out, models=models, engines=engines, config=cfg, grid=grid,
                                   region=region, workers=workers, on_step=lambda s: status.update(f"baseline: {s}"))
    if json_out:
        console.print_json(json.dumps(summary))
        return
    _print_summary(summary, out)


def _print_summary(s: dict, out: Path) -> None:
    cv = s["cv"]
    console.print(f"{s['n_images']} images, {s['features']['n']} features ({s['features']['region']} region); "
                  f"{cv['kind']}, {cv['n_splits']} splits, no group on both sides", highlight=False)
    t = Table(title="Cross-validated accuracy", title_justify="left")
    for c in ("model", "engine", "accuracy", "macro-F1"):
        t.add_column(c, justify="left" if c in ("model", "engine") else "right")
    for cls in s["classes"]:
        t.add_column(f"{cls} sens/spec", justify="right")
    for m, e in s["models"].items():
        for eng, r in e["engines"].items():
            t.add_row(m, eng, f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}",
                      *[f"{r['per_class'][c]['sensitivity'] or 0:.2f}/{r['per_class'][c]['specificity'] or 0:.2f}"
                        for c in s["classes"]])
    console.print(t)
    if len(s["engines"]) == 2:
        tt = Table(title="Seconds over all folds: stock scikit-learn vs scikit-learn-intelex", title_justify="left")
        for c in ("model", "fit stock", "fit intel", "fit ratio", "predict stock", "predict intel", "predict ratio",
                  "same predictions"):
            tt.add_column(c, justify="left" if c == "model" else "right")
        for m, e in s["models"].items():
            st, it, c = e["engines"]["stock"], e["engines"]["intel"], e["comparison"]
            tt.add_row(m, f"{st['fit_seconds']:.2f}", f"{it['fit_seconds']:.2f}",
                       f"{c['fit_speedup']:.1f}x" if c["fit_speedup"] else "n/a", f"{st['predict_seconds']:.3f}",
                       f"{it['predict_seconds']:.3f}",
                       f"{c['predict_speedup']:.1f}x" if c["predict_speedup"] else "n/a",
                       f"{c['prediction_agreement']:.2%}")
        console.print(tt)
    for n in s["notes"]:
        console.print(f"[yellow]note:[/] {n}", highlight=False)
    console.print(f"best: {s['best_model']}; models in {out / 'model'}; report: {out / 'report.md'}")


def _print_predictions(rows: list[dict], meta: dict, out: Path | None, json_out: bool) -> None:
    probs = sorted({k for r in rows for k in r if k.startswith("p_")})
    cols = ["path", "slice", "label", "prediction"] + probs + ["error"]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    if json_out:
        console.print_json(json.dumps(rows))
        return
    t = Table(title=f"{meta['name']} ({meta['engine']}) from {meta['folder']}", title_justify="left")
    for c in cols:
        if any(r.get(c) not in (None, "") for r in rows):
            t.add_column(c, overflow="fold" if c in ("path", "error") else "ellipsis")
    shown = [c.header for c in t.columns]
    for r in rows[:30]:
        t.add_row(*[f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in shown])
    console.print(t)
    if len(rows) > 30:
        console.print(f"... {len(rows) - 30} more" + (f" in {out}" if out else " (use --out FILE.csv)"))
    scored = [r for r in rows if r.get("prediction") and r.get("label")]
    if scored:
        acc = sum(r["prediction"] == r["label"] for r in scored) / len(scored)
        console.print(f"accuracy against the given labels: {acc:.3f} ({len(scored)} images)")
    bad = sum(1 for r in rows if r.get("error"))
    if bad:
        err_console.print(f"[yellow]{bad} scan(s) could not be scored (see the error column)[/]")
    if out is not None:
        console.print(f"predictions: {out}")
