"""What a dataset's feature matrix looks like: PCA, k-means against the labels, class separability,
feature correlation, and outliers that point at label noise or leftover duplicates.

PCA and k-means run on oneDAL (scikit-learn-intelex) and/or stock scikit-learn; with both engines each step
is fitted by both, timed, and the faster one's result is used (the output says which).
"""
from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import NeuralScanError
from .engines import ENGINES, fit_fastest
from .radiomics import FeatureConfig, extract_matrix


class AnalysisError(NeuralScanError):
    """Bad input for `analyze` (one-line message)."""


def family(name: str) -> str:
    return name.split("_", 1)[0]


def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z-scores of the non-constant columns, and the mask of kept columns."""
    X = X.astype(np.float64)
    sd = X.std(axis=0)
    keep = sd > 1e-12
    Z = (X[:, keep] - X[:, keep].mean(axis=0)) / sd[keep]
    return Z, keep


def separability(Z: np.ndarray, y: np.ndarray, names: list[str], seed: int = 0) -> list[dict]:
    """ANOVA F (with p) and mutual information of every feature with the class, best first."""
    from sklearn.feature_selection import f_classif, mutual_info_classif

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        F, p = f_classif(Z, y)
        mi = mutual_info_classif(Z, y, random_state=seed, n_neighbors=3)
    rows = [{"feature": n, "family": family(n), "anova_f": float(np.nan_to_num(f)),
             "p": float(np.nan_to_num(pp, nan=1.0)), "mutual_info": float(m)} for n, f, pp, m in zip(names, F, p, mi)]
    return sorted(rows, key=lambda r: -r["anova_f"])


def correlated_pairs(Z: np.ndarray, names: list[str], threshold: float = 0.95) -> tuple[np.ndarray, list[dict]]:
    C = np.corrcoef(Z, rowvar=False)
    C = np.nan_to_num(C)
    iu = np.triu_indices_from(C, k=1)
    hit = np.abs(C[iu]) >= threshold
    pairs = [{"a": names[i], "b": names[j], "r": float(C[i, j])} for i, j in zip(iu[0][hit], iu[1][hit])]
    return C, sorted(pairs, key=lambda d: -abs(d["r"]))


def find_outliers(Y: np.ndarray, y: np.ndarray, groups: np.ndarray, paths: list[str], classes: list[str],
                  n_show: int = 20, k: int = 10) -> dict:
    """Label-noise and duplicate suspects in a whitened PCA space of labelled images.

    far_from_class     robust z-score (median/MAD) of the distance to the own class's median above 3.5
    neighbours_disagree at least 80% of the k nearest images of other groups carry one other label
    cross_label_twins  pairs with different labels closer than the 1st percentile of all nearest-neighbour
                       distances: a duplicate (or the same scan) under two labels
    """
    from sklearn.neighbors import NearestNeighbors

    out = {"far_from_class": [], "neighbours_disagree": [], "cross_label_twins": []}
    n = len(y)
    if n < 3:
        return out
    for c in np.unique(y):
        sel = np.flatnonzero(y == c)
        centre = np.median(Y[sel], axis=0)
        d = np.linalg.norm(Y[sel] - centre, axis=1)
        mad = np.median(np.abs(d - np.median(d))) * 1.4826 or 1e-9
        z = (d - np.median(d)) / mad
        for i, zi, di in zip(sel, z, d):
            if zi > 3.5:
                out["far_from_class"].append({"index": int(i), "path": paths[i], "label": classes[y[i]],
                                              "distance": float(di), "robust_z": float(zi)})
    out["far_from_class"].sort(key=lambda r: -r["robust_z"])

    kk = min(n - 1, k + 30)  # extra neighbours, since same-group ones are skipped
    nn = NearestNeighbors(n_neighbors=kk + 1).fit(Y)
    dist, ind = nn.kneighbors(Y)
    nn_dist = dist[:, 1]
    twin_limit = float(np.percentile(nn_dist, 1))
    seen = set()
    for i in range(n):
        others = [(d, j) for d, j in zip(dist[i, 1:], ind[i, 1:]) if groups[j] != groups[i]][:k]
        if len(others) >= 3:
            labs = np.array([y[j] for _, j in others])
            counts = np.bincount(labs, minlength=len(classes))
            top = int(counts.argmax())
            share = counts[top] / len(labs)
            if top != y[i] and share >= 0.8:
                out["neighbours_disagree"].append({"index": int(i), "path": paths[i], "label": classes[y[i]],
                                                   "neighbours_say": classes[top], "share": float(share)})
        for d, j in zip(dist[i, 1:], ind[i, 1:]):
            if d > twin_limit:
                break
            if y[j] != y[i] and (min(i, j), max(i, j)) not in seen:
                seen.add((min(i, j), max(i, j)))
                out["cross_label_twins"].append({"a": paths[i], "b": paths[int(j)], "label_a": classes[y[i]],
                                                 "label_b": classes[y[j]], "distance": float(d),
                                                 "index_a": int(i), "index_b": int(j)})
    out["neighbours_disagree"].sort(key=lambda r: -r["share"])
    out["counts"] = {k2: len(v) for k2, v in out.items()}
    out["twin_distance_limit"] = twin_limit
    for key in ("far_from_class", "neighbours_disagree", "cross_label_twins"):
        out[key] = out[key][:n_show]
    return out


def analyze(cache_path: str | Path, out: str | Path, *, config: FeatureConfig = FeatureConfig(),
            engines: list[str] = ("stock", "intel"), workers: int = 2, n_outliers: int = 20,
            pca_solver: str = "full", on_step: Callable[[str], None] | None = None) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from ..data.cache import DatasetCache

    engines = list(engines)
    for e in engines:
        if e not in ENGINES:
            raise AnalysisError(f"unknown engine '{e}': choose intel, stock or both")
    cache = DatasetCache.open(cache_path)
    if len(cache) < 3:
        raise AnalysisError(f"{cache.root}: analysis needs at least 3 images (found {len(cache)})")
    if on_step:
        on_step("features")
    X, names, fcfg = extract_matrix(cache, config, workers=workers)
    Z, keep = _standardise(X)
    names_k = [n for n, k in zip(names, keep) if k]
    labels, classes, paths = cache.labels, cache.classes, cache.paths
    lab = labels >= 0
    notes, timings = [], {}

    # PCA
    if on_step:
        on_step("PCA")
    n_comp = int(min(Z.shape[0], Z.shape[1]))  # every component: the full decomposition costs the same
    pca, used, secs, note = fit_fastest("pca", engines, Z, n_components=n_comp, svd_solver=pca_solver)
    timings["pca"] = {"seconds": secs, "used": used, "solver": pca_solver}
    if note:
        notes.append(note)
    evr = np.asarray(pca.explained_variance_ratio_, dtype=np.float64)
    cum = np.cumsum(evr)
    Y = np.asarray(pca.transform(Z), dtype=np.float64)
    n95 = int(min(len(cum), np.searchsorted(cum, 0.95) + 1))
    n90 = int(min(len(cum), np.searchsorted(cum, 0.90) + 1))
    Yw = Y[:, :max(2, n90)] / np.sqrt(np.maximum(pca.explained_variance_[:max(2, n90)], 1e-12))

    # k-means against the labels
    summary_kmeans = None
    if lab.sum() >= 3 and len(classes) >= 2:
        if on_step:
            on_step("k-means")
        km, used, secs, note = fit_fastest("kmeans", engines, Y[lab][:, :max(2, n90)], n_clusters=len(classes),
                                           n_init=10, random_state=0)
        timings["kmeans"] = {"seconds": secs, "used": used}
        if note:
            notes.append(note)
        clusters = np.asarray(km.labels_)
        summary_kmeans = {"k": len(classes), "adjusted_rand_index": float(adjusted_rand_score(labels[lab], clusters)),
                          "normalized_mutual_info": float(normalized_mutual_info_score(labels[lab], clusters)),
                          "space": f"first {max(2, n90)} principal components (90% of variance)"}

    # separability, correlation, outliers
    sep = []
    if lab.sum() >= 3 and len(np.unique(labels[lab])) >= 2:
        if on_step:
            on_step("class separability")
        sep = separability(Z[lab], labels[lab], names_k)
    if on_step:
        on_step("correlation")
    C, pairs = correlated_pairs(Z, names_k)
    outliers = None
    if lab.sum() >= 3:
        if on_step:
            on_step("outliers")
        sel = np.flatnonzero(lab)
        outliers = find_outliers(Yw[sel], labels[sel], cache.groups[sel], [paths[i] for i in sel], classes,
                                 n_show=n_outliers)
        for kind in ("far_from_class", "neighbours_disagree"):
            for r in outliers[kind]:
                r["index"] = int(sel[r["index"]])
        for r in outliers["cross_label_twins"]:
            r["index_a"], r["index_b"] = int(sel[r["index_a"]]), int(sel[r["index_b"]])

    fam_sep = {}
    for r in sep:
        fam_sep.setdefault(r["family"], []).append(r["anova_f"])
    summary = {
        "cache": str(Path(cache.root).resolve()), "fingerprint": cache.info.get("fingerprint"),
        "n_images": len(cache), "n_labelled": int(lab.sum()), "classes": classes,
        "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(classes)},
        "features": {"n": len(names), "n_constant": int((~keep).sum()), "region": fcfg.region,
                     "families": dict(Counter(map(family, names))),
                     "config": fcfg.to_dict()},
        "pca": {"explained_variance_ratio": evr[:100].tolist(), "n_components": n_comp,
                "components_for_90pct": n90, "components_for_95pct": n95,
                "first_two": float(cum[min(1, len(cum) - 1)])},
        "kmeans": summary_kmeans,
        "separability": {"top": sep[:25],
                         "by_family_median_anova_f": {f: float(np.median(v)) for f, v in fam_sep.items()}},
        "correlation": {"pairs_above_0.95": len(pairs), "top_pairs": pairs[:20]},
        "outliers": outliers, "cache_duplicates": cache.info.get("duplicates", {}),
        "timings": timings, "engines": engines, "notes": notes,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if on_step:
        on_step("plots")
    _plot_pca(Y, labels, classes, out / "pca-scatter.png")
    _plot_variance(evr[:60], out / "pca-variance.png")
    top = [names_k.index(r["feature"]) for r in sep[:30]] if sep else list(range(min(30, len(names_k))))
    _plot_correlation(C[np.ix_(top, top)], [names_k[i] for i in top], out / "correlation.png")
    if sep:
        _plot_separability(sep[:20], out / "separability.png")
    (out / "analysis.json").write_text(json.dumps(summary, indent=2))
    _write_report(summary, out / "report.md", has_sep=bool(sep))
    return summary


# ---------------------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_pca(Y, labels, classes, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if (labels < 0).any():
        sel = labels < 0
        ax.scatter(Y[sel, 0], Y[sel, 1], s=5, c="#bbbbbb", label="unlabelled", alpha=0.6)
    for i, c in enumerate(classes):
        sel = labels == i
        ax.scatter(Y[sel, 0], Y[sel, 1], s=5, label=c, alpha=0.6)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("Radiomics features: first two principal components", fontsize=10)
    ax.legend(markerscale=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_variance(evr, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    x = np.arange(1, len(evr) + 1)
    ax.bar(x, evr, color="#0071c5", label="per component")
    ax.plot(x, np.cumsum(evr), "k.-", label="cumulative")
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_correlation(C, names, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(C, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_title("Correlation of the most class-separating features", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_separability(rows, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.barh([r["feature"] for r in rows][::-1], [r["anova_f"] for r in rows][::-1], color="#0071c5")
    ax.set_xlabel("ANOVA F")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("Most class-separating features", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_report(s: dict, path: Path, has_sep: bool) -> None:
    km = s["kmeans"]
    o = s["outliers"] or {}
    lines = [f"# Feature analysis of {Path(s['cache']).name}", "",
             f"{s['n_images']} images ({s['n_labelled']} labelled; "
             + ", ".join(f"{c} {n}" for c, n in s["class_counts"].items()) + f"); {s['features']['n']} features over "
             f"the {s['features']['region']} region ("
             + ", ".join(f"{f} {n}" for f, n in s["features"]["families"].items()) + ").", "",
             "## Principal components", "",
             f"The first two components explain {s['pca']['first_two']:.1%} of the variance; "
             f"{s['pca']['components_for_90pct']} explain 90%, {s['pca']['components_for_95pct']} explain 95%.", "",
             "![PCA scatter](pca-scatter.png) ![explained variance](pca-variance.png)", ""]
    if km:
        lines += ["## k-means against the labels", "",
                  f"k = {km['k']} on the {km['space']}: adjusted Rand index {km['adjusted_rand_index']:.3f}, "
                  f"normalised mutual information {km['normalized_mutual_info']:.3f} (1 = clusters are the classes).",
                  ""]
    if has_sep:
        lines += ["## Class separability", "", "| feature | ANOVA F | mutual information |", "|---|---|---|"]
        lines += [f"| {r['feature']} | {r['anova_f']:.1f} | {r['mutual_info']:.3f} |"
                  for r in s["separability"]["top"][:15]]
        lines += ["", "![separability](separability.png)", ""]
    lines += ["## Correlation", "", f"{s['correlation']['pairs_above_0.95']} feature pairs correlate at |r| >= 0.95 "
              "(redundant features).", "", "![correlation](correlation.png)", ""]
    if o:
        c = o.get("counts", {})
        lines += ["## Outliers (label-noise and duplicate suspects)", "",
                  f"- far from their class: {c.get('far_from_class', 0)}",
                  "- nearest images of other patients/groups mostly carry another label: "
                  f"{c.get('neighbours_disagree', 0)}",
                  f"- near-twins under another label: {c.get('cross_label_twins', 0)}", ""]
        if o["neighbours_disagree"]:
            lines += ["| image | label | neighbours say | share |", "|---|---|---|---|"]
            lines += [f"| `{r['path']}` | {r['label']} | {r['neighbours_say']} | {r['share']:.0%} |"
                      for r in o["neighbours_disagree"][:10]]
            lines.append("")
        if o["cross_label_twins"]:
            lines += ["| image A | label A | image B | label B |", "|---|---|---|---|"]
            lines += [f"| `{r['a']}` | {r['label_a']} | `{r['b']}` | {r['label_b']} |"
                      for r in o["cross_label_twins"][:10]]
            lines.append("")
    if s["notes"]:
        lines += ["## Engines", ""] + [f"- {n}" for n in s["notes"]] + [""]
    lines += ["Full numbers and every listed path: [analysis.json](analysis.json).", ""]
    path.write_text("\n".join(lines))
