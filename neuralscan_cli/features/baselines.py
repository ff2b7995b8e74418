"""Classical baselines on radiomics features: scaled pipelines, group-aware cross-validation, stock vs oneDAL.

Evaluation is by the cache's patient folds when it has them (figshare: folds 1-4 = 4-fold patient-level CV),
else by `StratifiedGroupKFold` on the cache's groups; a group (patient or near-duplicate set) is never on
both sides of a split, and `check_group_disjoint` proves it for every split used.

Both engines fit the same pipeline with the same hyper-parameters on the same folds in one process, so their
fit and predict times are comparable and their predictions can be compared one by one.
"""
from __future__ import annotations

import json
import os
import platform
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import NeuralScanError
from .engines import ENGINES, MODEL_NAMES, MODELS, Timer, engine_versions, make_estimator
from .radiomics import FeatureConfig, extract_features, extract_matrix, feature_path, resolve_region

DEFAULT_MODELS = {
    "svc": {"params": {"C": 3.0, "gamma": "scale", "kernel": "rbf"},
            "grid": {"C": [1.0, 3.0, 10.0, 30.0], "gamma": ["scale", 0.0003, 0.001]}},
    "rf": {"params": {"n_estimators": 300, "max_features": "sqrt", "random_state": 0, "n_jobs": 2},
           "grid": {"n_estimators": [300], "max_features": ["sqrt", 0.1], "min_samples_leaf": [1, 3]}},
    "knn": {"params": {"n_neighbors": 5, "weights": "distance", "n_jobs": 2},
            "grid": {"n_neighbors": [3, 5, 9, 15], "weights": ["uniform", "distance"]}},
    "logreg": {"params": {"C": 0.1, "max_iter": 3000},
               "grid": {"C": [0.01, 0.03, 0.1, 0.3, 1.0]}},
}


class BaselineError(NeuralScanError):
    """Bad input for `baseline` (one-line message)."""


class GroupLeakError(BaselineError):
    """A split with one group on both sides: the evaluation would be optimistic."""


@dataclass
class BaselineConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    models: dict = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_MODELS)))
    cv_folds: int = 5  # StratifiedGroupKFold splits when the cache has no folds
    inner_folds: int = 3  # grid search: group-aware inner CV
    seed: int = 42

    def to_dict(self) -> dict:
        return {"features": self.features.to_dict(), "models": self.models, "cv_folds": self.cv_folds,
                "inner_folds": self.inner_folds, "seed": self.seed}


def load_config(path: str | Path | None) -> BaselineConfig:
    """Defaults, overridden by a YAML file (`configs/baseline.yaml` layout)."""
    cfg = BaselineConfig()
    if path is None:
        return cfg
    from ..yamlfile import read_yaml_mapping

    path = Path(path)
    raw = read_yaml_mapping(path, BaselineError)
    unknown = set(raw) - {"features", "models", "cv", "cv_folds", "inner_folds", "seed"}
    if unknown:
        raise BaselineError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    if raw.get("features"):
        cfg.features = FeatureConfig.from_dict({**cfg.features.to_dict(), **raw["features"]})
    for name, spec in (raw.get("models") or {}).items():
        if name not in MODELS:
            raise BaselineError(f"{path}: unknown model '{name}' (choose from {', '.join(MODELS)})")
        spec = spec or {}
        if "params" in spec:
            cfg.models[name]["params"] = dict(spec["params"] or {})
        if "grid" in spec:
            cfg.models[name]["grid"] = dict(spec["grid"] or {})
    cv = raw.get("cv") or {}
    cfg.cv_folds = int(cv.get("folds", raw.get("cv_folds", cfg.cv_folds)))
    cfg.inner_folds = int(cv.get("inner_folds", raw.get("inner_folds", cfg.inner_folds)))
    cfg.seed = int(cv.get("seed", raw.get("seed", cfg.seed)))
    return cfg


def parse_models(spec: str) -> list[str]:
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if not names:
        raise BaselineError(f"no model given: choose {'|'.join(MODELS)}|all")
    if "all" in names:
        return list(MODELS)
    for n in names:
        if n not in MODELS:
            raise BaselineError(f"unknown model '{n}': choose {'|'.join(MODELS)}|all")
    return list(dict.fromkeys(names))


def parse_engines(spec: str) -> list[str]:
    if spec == "both":
        return ["stock", "intel"]
    if spec not in ENGINES:
        raise BaselineError(f"unknown engine '{spec}': choose intel, stock or both")
    return [spec]


# ---------------------------------------------------------------------------------------------- CV splits
def check_group_disjoint(splits, groups: np.ndarray) -> None:
    """Raise GroupLeakError when any group has items on both sides of any split."""
    groups = np.asarray(groups)
    for k, (tr, te) in enumerate(splits):
        both = np.intersect1d(groups[tr], groups[te])
        if both.size:
            raise GroupLeakError(f"split {k + 1}: {both.size} group(s) on both sides (e.g. group {both[0]})")


def group_cv_splits(y: np.ndarray, groups: np.ndarray, folds: np.ndarray | None = None, n_splits: int = 5,
                    seed: int = 42) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict]:
    """Train/test index pairs for cross-validation that keep every group on one side.

    Given folds (all items have one, at least two distinct) are the splits, after moving any group that
    spans folds entirely into its most common fold. Otherwise StratifiedGroupKFold over the groups.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    n = len(y)
    folds = np.asarray(folds if folds is not None else [""] * n).astype(str)
    info: dict = {}
    if n and (folds != "").all() and len(set(folds)) >= 2:
        folds = folds.copy()
        moved = 0
        for g in np.unique(groups):
            sel = groups == g
            fs = Counter(folds[sel])
            if len(fs) > 1:
                folds[sel] = sorted(fs.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
                moved += 1
        names = sorted(set(folds), key=lambda s: (len(s), s))
        splits = [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in names]
        info = {"kind": "given folds", "folds": names, "groups_moved_to_one_fold": moved}
    else:
        from sklearn.model_selection import StratifiedGroupKFold

        cache_groups = groups
        if len(set(folds[folds != ""].tolist())) >= 2:
            # some items have a fold, some not (figshare beside Br35H): a fold is the patient boundary of its
            # items (figshare's PNGs carry no patient ids), so a fold's items are joined into one group, and so
            # is anything the cache groups with them (a near-duplicate across datasets)
            from ..data.dedup import merge_groups

            fold_keys = [f"fold {f}" if f else None for f in folds.tolist()]
            groups = merge_groups(n, np.zeros((0, 2), np.int64), [[str(g) for g in groups.tolist()], fold_keys])
            info["folds_as_groups"] = sorted(set(folds[folds != ""].tolist()))
        n_groups = len(np.unique(groups))
        min_class_groups = min(len(np.unique(groups[y == c])) for c in np.unique(y))
        k = min(n_splits, n_groups, max(2, min_class_groups))
        if n_groups < 2 or k < 2:
            raise BaselineError(f"cross-validation needs at least 2 groups per class (found {n_groups} groups)")
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = [(tr, te) for tr, te in cv.split(np.zeros(n), y, groups)]
        info |= {"kind": "StratifiedGroupKFold", "n_splits": k, "seed": seed}
    splits = [(tr, te) for tr, te in splits if len(tr) and len(te)]
    if len(splits) < 2:
        raise BaselineError("cross-validation needs at least two non-empty folds")
    check_group_disjoint(splits, groups)
    if "folds_as_groups" in info:
        check_group_disjoint(splits, cache_groups)  # the cache's own groups too (the joined ones contain them)
    info["n_splits"] = len(splits)
    info["test_sizes"] = [int(len(te)) for _, te in splits]
    return splits, info


# ---------------------------------------------------------------------------------------------- metrics
def classification_metrics(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    from sklearn.metrics import confusion_matrix, f1_score

    k = len(classes)
    cm = confusion_matrix(y, pred, labels=list(range(k)))
    total = cm.sum()
    per_class = {}
    for i, c in enumerate(classes):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = total - tp - fn - fp
        per_class[c] = {"sensitivity": float(tp / (tp + fn)) if tp + fn else None,
                        "specificity": float(tn / (tn + fp)) if tn + fp else None,
                        "precision": float(tp / (tp + fp)) if tp + fp else None,
                        "support": int(tp + fn)}
    return {"accuracy": float(np.trace(cm) / total) if total else 0.0,
            "macro_f1": float(f1_score(y, pred, labels=list(range(k)), average="macro", zero_division=0)),
            "per_class": per_class, "confusion": cm.tolist(), "n": int(total)}


# ---------------------------------------------------------------------------------------------- fitting
def build_pipeline(model: str, engine: str, params: dict):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("clf", make_estimator(model, engine, **params))])


def grid_search(model: str, engine: str, params: dict, grid: dict, X, y, groups, inner_folds: int, seed: int):
    """Best hyper-parameters by macro-F1 over a group-aware inner CV."""
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

    if not grid:
        return dict(params), None
    k = max(2, min(inner_folds, len(np.unique(groups))))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    search = GridSearchCV(build_pipeline(model, engine, params), {f"clf__{p}": list(v) for p, v in grid.items()},
                          scoring="f1_macro", cv=cv, n_jobs=1, refit=False, error_score="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X, y, groups=groups)
    best = {k.removeprefix("clf__"): v for k, v in search.best_params_.items()}
    return {**params, **best}, float(search.best_score_)


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _warm_up(model: str, engine: str, params: dict, X: np.ndarray, y: np.ndarray) -> None:
    """An untimed fit and predict on a slice, so first-call costs (imports, thread pools, JIT dispatch) do not
    count against whichever engine happens to run first."""
    rng = np.random.default_rng(0)
    sel = rng.choice(len(y), size=min(len(y), 200), replace=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_pipeline(model, engine, params).fit(X[sel], y[sel]).predict(X[sel[:20]])
    except Exception:  # noqa: BLE001 - a failed warm-up only means no warm-up; the real fit reports errors
        pass


def cross_validate(X: np.ndarray, y: np.ndarray, groups: np.ndarray, splits, models: list[str],
                   engines: list[str], classes: list[str], config: BaselineConfig, grid: bool = False,
                   on_step: Callable[[str], None] | None = None) -> dict:
    """Out-of-fold predictions, metrics and per-fold fit/predict times for every model and engine."""
    results = {}
    for model in models:
        spec = config.models[model]
        base_params = dict(spec.get("params") or {})
        oof = {e: np.full(len(y), -1, np.int64) for e in engines}
        times = {e: {"fit": [], "predict": []} for e in engines}
        fold_params, fold_acc = [], {e: [] for e in engines}
        for k, (tr, te) in enumerate(splits):
            params = base_params
            if grid:
                if on_step:
                    on_step(f"{model}: grid search, fold {k + 1}/{len(splits)}")
                # one search per fold (with the faster Intel engine when it runs); both engines then fit the
                # chosen parameters, so their timings compare like with like
                params, _ = grid_search(model, "intel" if "intel" in engines else engines[0], base_params,
                                        spec.get("grid") or {}, X[tr], y[tr], groups[tr], config.inner_folds,
                                        config.seed)
            fold_params.append({p: _py(v) for p, v in params.items()})
            for e in engines:
                if on_step:
                    on_step(f"{model} [{e}]: fold {k + 1}/{len(splits)}")
                if k == 0:
                    _warm_up(model, e, params, X[tr], y[tr])
                pipe = build_pipeline(model, e, params)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with Timer() as t_fit:
                        pipe.fit(X[tr], y[tr])
                    with Timer() as t_pred:
                        pred = pipe.predict(X[te])
                oof[e][te] = pred
                times[e]["fit"].append(t_fit.seconds)
                times[e]["predict"].append(t_pred.seconds)
                fold_acc[e].append(float((pred == y[te]).mean()))
        tested = np.concatenate([te for _, te in splits])
        entry = {"name": MODEL_NAMES[model], "params_per_fold": fold_params, "engines": {}}
        for e in engines:
            m = classification_metrics(y[tested], oof[e][tested], classes)
            m["fold_accuracy"] = fold_acc[e]
            m["fit_seconds"] = float(sum(times[e]["fit"]))
            m["predict_seconds"] = float(sum(times[e]["predict"]))
            m["fit_seconds_per_fold"] = times[e]["fit"]
            m["predict_seconds_per_fold"] = times[e]["predict"]
            entry["engines"][e] = m
        if len(engines) == 2:
            s, i = entry["engines"]["stock"], entry["engines"]["intel"]
            entry["comparison"] = {
                "prediction_agreement": float((oof["stock"][tested] == oof["intel"][tested]).mean()),
                "accuracy_difference": i["accuracy"] - s["accuracy"],
                "fit_speedup": s["fit_seconds"] / i["fit_seconds"] if i["fit_seconds"] > 0 else None,
                "predict_speedup": s["predict_seconds"] / i["predict_seconds"] if i["predict_seconds"] > 0 else None,
            }
        entry["_oof"] = {e: oof[e] for e in engines}
        results[model] = entry
    return results


def slower_step_notes(model: str, entry: dict) -> list[str]:
    """One note per step (fit, predict) where the Intel path measured slower than stock."""
    eng = entry["engines"]
    if set(eng) != {"stock", "intel"}:
        return []
    notes = []
    for step in ("fit", "predict"):
        s, i = eng["stock"][f"{step}_seconds"], eng["intel"][f"{step}_seconds"]
        if i > s:
            notes.append(f"{model} {step}: the Intel path was slower here ({i:.3f} s vs stock {s:.3f} s over all "
                         f"folds, {s / i:.2f}x)")
    return notes


def faster_engine(entry: dict) -> tuple[str, str | None]:
    """The engine with the shorter fit + predict time, and a note when that is not Intel."""
    eng = entry["engines"]
    if len(eng) == 1:
        return next(iter(eng)), None
    total = {e: m["fit_seconds"] + m["predict_seconds"] for e, m in eng.items()}
    best = min(total, key=total.get)
    note = None
    if best == "stock":
        note = (f"{entry['name']}: the Intel path was slower here ({total['intel']:.2f} s vs stock "
                f"{total['stock']:.2f} s fit+predict), so the saved model uses stock scikit-learn")
    return best, note


# ---------------------------------------------------------------------------------------------- machine
def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "python": platform.python_version(), **engine_versions()}


# ---------------------------------------------------------------------------------------------- the run
def run_baseline(cache_path: str | Path, out: str | Path, *, models: list[str], engines: list[str],
                 config: BaselineConfig, grid: bool = False, region: str | None = None, workers: int = 2,
                 on_step: Callable[[str], None] | None = None) -> dict:
    """Features, cross-validation, final fit and saved model; writes OUT/results.json, PNGs and report.md."""
    from ..data.cache import DatasetCache

    cache = DatasetCache.open(cache_path)
    classes = cache.classes
    labels = cache.labels
    idx = np.flatnonzero(labels >= 0)
    if len(idx) == 0 or len(classes) < 2:
        raise BaselineError(f"{cache.root}: 'baseline' needs a labelled cache with at least two classes "
                            f"(found {len(idx)} labelled images, {len(classes)} class(es))")
    present = sorted(set(labels[idx].tolist()))
    if len(present) < 2:
        raise BaselineError(f"{cache.root}: only one class has labelled images")
    fcfg = config.features if region is None else config.features.with_region(region)
    if on_step:
        on_step("features")
    reused = feature_path(cache, fcfg.with_region(resolve_region(cache, fcfg))).is_file()
    with Timer() as t_feat:
        X_all, names, fcfg = extract_matrix(cache, fcfg, workers=workers)
    X, y, groups = X_all[idx], labels[idx], cache.groups[idx]
    splits, cv_info = group_cv_splits(y, groups, cache.folds[idx], config.cv_folds, config.seed)
    results = cross_validate(X, y, groups, splits, models, engines, classes, config, grid=grid, on_step=on_step)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    model_root = out / "model"
    saved = {}
    for model, entry in results.items():
        engine, note = faster_engine(entry)
        notes += slower_step_notes(model, entry)
        if note:
            notes.append(note)
        elif len(entry["engines"]) == 2:
            notes.append(f"{model}: saved model uses {engine} (shorter fit + predict time)")
        params = dict(config.models[model].get("params") or {})
        grid_score = None
        if grid:
            if on_step:
                on_step(f"{model}: grid search on all data for the saved model")
            params, grid_score = grid_search(model, engine, params, config.models[model].get("grid") or {}, X, y,
                                             groups, config.inner_folds, config.seed)
        if on_step:
            on_step(f"{model} [{engine}]: final fit on all {len(y)} labelled images")
        pipe = build_pipeline(model, engine, params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe.fit(X, y)
        m = entry["engines"][engine]
        meta = {"model": model, "name": MODEL_NAMES[model], "engine": engine,
                "params": {p: _py(v) for p, v in params.items()}, "grid_cv_macro_f1": grid_score,
                "classes": classes, "feature_config": fcfg.to_dict(), "feature_names": names,
                "preprocessing": cache.info.get("preprocessing"), "read_options": cache.info.get("read_options", {}),
                "trained_on": {"cache": str(Path(cache.root).resolve()), "fingerprint": cache.info.get("fingerprint"),
                               "n": int(len(y))},
                "cv": {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], **cv_info}}
        save_model(model_root / model, pipe, meta)
        saved[model] = {"dir": str(model_root / model), "engine": engine}
        entry["saved_model"] = saved[model]
    best = max(results, key=lambda k: max(m["macro_f1"] for m in results[k]["engines"].values()))
    (model_root / "best.json").write_text(json.dumps({"best": best, "models": saved}, indent=2))

    summary = {
        "cache": str(Path(cache.root).resolve()), "fingerprint": cache.info.get("fingerprint"),
        "classes": classes, "n_images": int(len(y)), "class_counts": {c: int((y == i).sum()) for i, c in
                                                                      enumerate(classes)},
        "features": {"n": len(names), "region": fcfg.region, "seconds": t_feat.seconds, "workers": workers,
                     "read_from_file": reused, "file": str(feature_path(cache, fcfg).name), "config": fcfg.to_dict()},
        "cv": cv_info, "grid_search": grid, "engines": engines, "machine": machine_info(), "notes": notes,
        "best_model": best,
        "models": {k: {kk: vv for kk, vv in v.items() if kk != "_oof"} for k, v in results.items()},
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    for model, entry in results.items():
        for e, m in entry["engines"].items():
            (out / f"confusion-{model}-{e}.json").write_text(json.dumps(
                {"classes": classes, "rows": "true", "columns": "predicted", "matrix": m["confusion"]}, indent=2))
        shown = entry["saved_model"]["engine"]
        plot_confusion(np.array(entry["engines"][shown]["confusion"]), classes,
                       f"{entry['name']} [{shown}]: acc {entry['engines'][shown]['accuracy']:.3f}",
                       out / f"confusion-{model}.png")
    if len(engines) == 2:
        plot_timing(summary, out / "timing.png")
    write_report(summary, out / "report.md")
    return summary


# ---------------------------------------------------------------------------------------------- saving
def save_model(folder: Path, pipeline, meta: dict) -> None:
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, folder / "pipeline.joblib")
    (folder / "model.json").write_text(json.dumps(meta, indent=2))


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder, the `model/` folder of a run (its best model), or the run folder itself."""
    p = Path(path)
    for _ in range(3):
        if (p / "pipeline.joblib").is_file() and (p / "model.json").is_file():
            return p
        if (p / "best.json").is_file():
            p = p / json.loads((p / "best.json").read_text())["best"]
        elif (p / "model").is_dir():
            p = p / "model"
        else:
            break
    raise BaselineError(f"{path}: not a saved baseline model (no model.json and pipeline.joblib; "
                        "give the --out folder of 'neuralscan baseline' or a model inside it)")


def load_model(path: str | Path):
    import joblib

    folder = resolve_model_dir(path)
    meta = json.loads((folder / "model.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = joblib.load(folder / "pipeline.joblib")
    return pipe, meta, folder


def predict_paths(model_dir: str | Path, paths: list[str | Path]) -> tuple[list[dict], dict]:
    """Score new scans with a saved model, preprocessing them exactly as its training cache was.

    Returns one row per slice (path, slice, prediction, probabilities when the model gives them, the given
    label when a manifest had one, error) and the model's metadata.
    """
    from ..data import process_file
    from ..data.sources import discover
    from ..io import ScanReadError
    from ..preprocess import PreprocessConfig

    pipe, meta, folder = load_model(model_dir)
    classes = meta["classes"]
    fcfg = FeatureConfig.from_dict(meta["feature_config"])
    pcfg = PreprocessConfig.from_dict(meta["preprocessing"] or {})
    ropt = meta.get("read_options") or {}
    items, rows = [], []
    for p in paths:
        found, problems = discover(p)
        items += found
        rows += [{"path": str(p), "slice": "", "error": msg} for msg in problems]
    if not items:
        raise BaselineError("no scans found in " + ", ".join(str(p) for p in paths))
    feats, keys = [], []
    n_expected = len(meta.get("feature_names") or [])
    for item in items:
        try:
            axis = ropt.get("axis")
            images, masks, has_mask, _, metas = process_file(item, pcfg, 2 if axis is None else int(axis),
                                                             ropt.get("middle"))
        except (ScanReadError, OSError, ValueError) as exc:
            rows.append({"path": str(item.path), "slice": "", "error": str(exc).splitlines()[0]})
            continue
        for img, msk, has, m in zip(images, masks, has_mask, metas):
            row = {"path": str(item.path), "slice": m["slice"], "label": item.label or ""}
            if fcfg.region == "mask" and not (has and msk.any()):
                row["error"] = ("the model uses tumour-mask features and this scan has no mask (give a CSV "
                                "manifest with a 'mask' column, or train with --region head)")
                rows.append(row)
                continue
            v, names = extract_features(img / np.float32(255.0), msk if fcfg.region == "mask" else None, fcfg)
            if n_expected and len(v) != n_expected:
                row["error"] = f"feature length {len(v)} differs from the model's {n_expected}"
                rows.append(row)
                continue
            feats.append(v)
            keys.append(len(rows))
            rows.append(row)
    if not feats:
        first = next((r["error"] for r in rows if r.get("error")), "no usable scans")
        raise BaselineError(f"nothing to score: {first}")
    X = np.stack(feats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = pipe.predict(X)
        proba = pipe.predict_proba(X) if hasattr(pipe, "predict_proba") else None
    for j, r in enumerate(keys):
        rows[r]["prediction"] = classes[int(pred[j])]
        if proba is not None:
            for c, col in zip(pipe.classes_, proba[j]):
                rows[r][f"p_{classes[int(c)]}"] = float(col)
    return rows, {**meta, "folder": str(folder)}


# ---------------------------------------------------------------------------------------------- outputs
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.3 * len(classes) + 2.5, 1.1 * len(classes) + 2))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_timing(summary: dict, path: Path) -> None:
    plt = _plt()
    models = list(summary["models"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, what in zip(axes, ("fit", "predict")):
        x = np.arange(len(models))
        for k, (e, colour) in enumerate((("stock", "#999999"), ("intel", "#0071c5"))):
            vals = [summary["models"][m]["engines"][e][f"{what}_seconds"] for m in models]
            ax.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=e, color=colour)
        ax.set_xticks(x, models)
        ax.set_ylabel("seconds (all folds)")
        ax.set_title(f"{what} time")
        ax.legend()
    fig.suptitle("scikit-learn (stock) vs scikit-learn-intelex (oneDAL)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f(v, fmt=".3f"):
    return "n/a" if v is None else format(v, fmt)


def write_report(summary: dict, path: Path) -> None:
    cv = summary["cv"]
    lines = [f"# Classical baselines on {Path(summary['cache']).name}", "",
             f"{summary['n_images']} labelled images, classes {', '.join(summary['classes'])}; "
             f"{summary['features']['n']} radiomics features over the {summary['features']['region']} region.",
             f"Cross-validation: {cv['kind']} ({cv['n_splits']} splits"
             + (f": folds {', '.join(cv['folds'])}" if cv.get("folds") else "")
             + "); no group (patient / near-duplicate set) is on both sides of any split."
             + (" Hyper-parameters by a group-aware inner grid search." if summary["grid_search"] else ""),
             f"Machine: {summary['machine']['cpu']}, {summary['machine']['cores']} cores; scikit-learn "
             f"{summary['machine']['scikit-learn']}, scikit-learn-intelex "
             f"{summary['machine']['scikit-learn-intelex']}.",
             "", "## Accuracy", "", "| model | engine | accuracy | macro-F1 | " +
             " | ".join(f"sens/spec {c}" for c in summary["classes"]) + " |",
             "|---|---|---|---|" + "---|" * len(summary["classes"])]
    for m, entry in summary["models"].items():
        for e, r in entry["engines"].items():
            pc = " | ".join(f"{_f(r['per_class'][c]['sensitivity'])} / {_f(r['per_class'][c]['specificity'])}"
                            for c in summary["classes"])
            lines.append(f"| {entry['name']} | {e} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {pc} |")
    if len(summary["engines"]) == 2:
        lines += ["", "## Time: stock scikit-learn vs scikit-learn-intelex (sum over folds)", "",
                  "| model | fit stock s | fit intel s | fit speed-up | predict stock s | predict intel s | "
                  "predict speed-up | same predictions |", "|---|---|---|---|---|---|---|---|"]
        for m, entry in summary["models"].items():
            s, i, c = entry["engines"]["stock"], entry["engines"]["intel"], entry["comparison"]
            lines.append(f"| {entry['name']} | {s['fit_seconds']:.2f} | {i['fit_seconds']:.2f} | "
                         f"{_f(c['fit_speedup'], '.1f')}x | {s['predict_seconds']:.3f} | {i['predict_seconds']:.3f} | "
                         f"{_f(c['predict_speedup'], '.1f')}x | {c['prediction_agreement']:.2%} |")
        lines += ["", "![timing](timing.png)"]
    if summary["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in summary["notes"]]
    lines += ["", "## Confusion matrices", ""]
    lines += [f"![{m}](confusion-{m}.png)" for m in summary["models"]]
    lines += ["", f"Saved models: `model/<name>/` (best: `{summary['best_model']}`); full numbers in "
              "[results.json](results.json).", ""]
    path.write_text("\n".join(lines))
