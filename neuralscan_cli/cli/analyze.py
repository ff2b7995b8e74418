"""`neuralscan analyze CACHE --out DIR`: what the data looks like in radiomics feature space."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from .app import app
from .common import console, err_console, fail, friendly_errors


@app.command(no_args_is_help=True)
def analyze(
    cache: Path = typer.Argument(..., help="A dataset cache folder (from 'neuralscan preprocess')."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for analysis.json, the PNG plots and report.md."),
    engine: str = typer.Option("both", help="intel (scikit-learn-intelex / oneDAL), stock (scikit-learn), or both: "
                               "each step is fitted and timed with both and the faster result is used."),
    region: str = typer.Option("auto", help="Feature region: auto (tumour mask when every image has one, else "
                               "head), mask or head."),
    config: Path = typer.Option(None, "--config", help="YAML with a 'features:' section (e.g. configs/baseline.yaml)."),
    pca_solver: str = typer.Option("full", help="PCA svd_solver (full, covariance_eigh, randomized, auto)."),
    outliers: int = typer.Option(20, min=0, help="Outliers listed per kind."),
    workers: int = typer.Option(2, min=1, help="Processes computing features."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of tables."),
):
    """PCA, k-means against the labels, class separability, feature correlation and label-noise suspects."""
    from ..features.analysis import analyze as run
    from ..features.baselines import load_config, parse_engines

    if out.exists() and not out.is_dir():
        raise fail(f"{out}: exists and is not a folder")
    with friendly_errors():
        engines = parse_engines(engine)
        fcfg = load_config(config).features.with_region(region)
        with err_console.status("analysing") as status:
            summary = run(cache, out, config=fcfg, engines=engines, workers=workers, n_outliers=outliers,
                          pca_solver=pca_solver, on_step=lambda s: status.update(f"analysing: {s}"))
    if json_out:
        console.print_json(json.dumps(summary))
        return
    _print(summary, out)


def _print(s: dict, out: Path) -> None:
    t = Table(title=f"Feature analysis of {Path(s['cache']).name}", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("images", f"{s['n_images']} ({s['n_labelled']} labelled): "
              + ", ".join(f"{c} {n}" for c, n in s["class_counts"].items()))
    t.add_row("features", f"{s['features']['n']} over the {s['features']['region']} region "
              f"({s['features']['n_constant']} constant)")
    p = s["pca"]
    t.add_row("PCA", f"PC1+PC2 {p['first_two']:.1%} of variance; {p['components_for_90pct']} components for 90%, "
              f"{p['components_for_95pct']} for 95%")
    if s["kmeans"]:
        k = s["kmeans"]
        t.add_row("k-means", f"k={k['k']}: ARI {k['adjusted_rand_index']:.3f}, NMI {k['normalized_mutual_info']:.3f}")
    t.add_row("correlation", f"{s['correlation']['pairs_above_0.95']} feature pairs with |r| >= 0.95")
    o = s["outliers"]
    if o:
        c = o["counts"]
        t.add_row("outliers", f"{c['far_from_class']} far from their class, {c['neighbours_disagree']} whose "
                  f"neighbours carry another label, {c['cross_label_twins']} near-twins under another label")
    for step, tm in s["timings"].items():
        t.add_row(f"{step} time",
                  ", ".join(f"{e} {v:.2f} s" for e, v in tm["seconds"].items()) + f" (used {tm['used']})")
    console.print(t)
    top = s["separability"]["top"][:10]
    if top:
        ft = Table(title="Most class-separating features", title_justify="left")
        ft.add_column("feature")
        ft.add_column("ANOVA F", justify="right")
        ft.add_column("mutual info", justify="right")
        for r in top:
            ft.add_row(r["feature"], f"{r['anova_f']:.1f}", f"{r['mutual_info']:.3f}")
        console.print(ft)
    if o and (o["neighbours_disagree"] or o["cross_label_twins"]):
        ot = Table(title="Label-noise / duplicate suspects (first 5 of each; all in analysis.json)",
                   title_justify="left")
        ot.add_column("kind")
        ot.add_column("image", overflow="fold")
        ot.add_column("detail")
        for r in o["neighbours_disagree"][:5]:
            ot.add_row("neighbours disagree", r["path"], f"{r['label']}; neighbours say {r['neighbours_say']} "
                       f"({r['share']:.0%})")
        for r in o["cross_label_twins"][:5]:
            ot.add_row("twin, other label", r["a"], f"{r['label_a']} vs {r['label_b']}: {r['b']}")
        for r in o["far_from_class"][:5]:
            ot.add_row("far from class", r["path"], f"{r['label']}, robust z {r['robust_z']:.1f}")
        console.print(ot)
    for n in s["notes"]:
        console.print(f"[dim]engine:[/] {n}", highlight=False)
    console.print(f"report: {out / 'report.md'}")
