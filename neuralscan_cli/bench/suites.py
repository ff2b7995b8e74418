"""The benchmark suites: each accelerated path against its stock twin, same data, same model, one run.

  classical   scikit-learn-intelex vs stock scikit-learn (SVC, random forest, kNN, logistic regression, PCA,
              k-means) on a radiomics feature matrix: fit and predict seconds, speed-up, agreement
  training    training images/s of the classifier architecture: oneDNN off, oneDNN on, ITEX, bf16 -- every
              variant in its own interpreter (`train_worker`), variants rotated across repeats
  inference   TF FP32, OpenVINO FP32 and OpenVINO INT8 for the classifier and the segmenter: batch-1 latency
              (LATENCY hint, sync request), best throughput (THROUGHPUT hint, AsyncInferQueue, batch 1/8/32),
              agreement with TF, metric deltas on labelled images, share of the CPU's INT8 peak
  classify    `classify_paths` over a folder with each engine, end to end (read, preprocess, infer, write)

`run_bench` runs the chosen suites and writes OUT/bench.json, OUT/bench.png and OUT/bench.md. Every row of
every section is either measured (`available: true`) or says why not (`available: false`, `reason`): a missing
accelerator, model or data is a row, not a failure.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import NeuralScanError
from ..training.accel import itex_installed
from .harness import rotated, run_worker, time_interleaved
from .machine import describe_machine
from .stats import ratio_ci, speedup, summarize
from .train_worker import VARIANTS

SECTIONS = ("classical", "training", "inference", "classify")
SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CLASSES = ["glioma", "meningioma", "pituitary", "no_tumor"]
TRAIN_ORDER = ("onednn_off", "onednn_on", "itex", "onednn_bf16", "itex_bf16", "itex_keras_bf16")
CLASSICAL = ("svc", "rf", "knn", "logreg", "pca", "kmeans")
ENGINE_KEYS = {"tf_fp32": "TF FP32 (Keras)", "ov_fp32": "OpenVINO FP32", "ov_int8": "OpenVINO INT8"}
DEFAULT_GHZ = 2.3
SLOW_FIT_SECONDS = 20.0  # a stock + intel fit round longer than this is repeated 3 times at most
INT8_OPS_PER_CYCLE = {"avx512_vnni": 256, "avx_vnni": 128}  # per core: VPDPBUSD on 512 / 256-bit vectors
TINY = "tiny"
TINY_EPOCHS = {"classify": 40, "segment": 25}


class BenchError(NeuralScanError):
    """Bad input for `bench` (one-line message)."""


@dataclass
class Settings:
    quick: bool = False
    repeats: int = 5  # classical fit/predict calls, throughput rounds, classify runs per path
    train_repeats: int = 3  # processes per training variant
    train_steps: int = 10
    train_warmup: int = 3
    train_batch: int | None = None  # None: the bundle's training batch size, else 32 (16 in quick mode)
    latency_calls: int = 200
    throughput_batches: tuple[int, ...] = (1, 8, 32)
    throughput_images: int = 512  # images per throughput round
    eval_images: int = 256  # images for agreement and metrics
    classical_rows: int | None = None  # None: every labelled image of the cache
    rf_trees: int = 300
    kmeans_init: int = 10
    sample_copies: int = 16  # classify suite without --images: the 11 sample scans, each copied this often
    clock_ghz: float | None = None
    seed: int = 0

    @classmethod
    def make(cls, quick: bool, repeats: int | None = None, steps: int | None = None,
             clock_ghz: float | None = None) -> "Settings":
        s = cls(quick=True, repeats=3, train_repeats=1, train_steps=5, train_warmup=2, train_batch=16,
                latency_calls=30, throughput_images=128, eval_images=64, classical_rows=1500, rf_trees=100,
                kmeans_init=3, sample_copies=4) if quick else cls()
        if repeats is not None:
            s = replace(s, repeats=max(1, repeats), train_repeats=max(1, repeats))
        if steps is not None:
            s = replace(s, train_steps=max(1, steps), train_warmup=min(s.train_warmup, max(1, steps)))
        return replace(s, clock_ghz=clock_ghz)


def _no(reason: str, **extra) -> dict:
    return {"available": False, "reason": reason, **extra}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@contextlib.contextmanager
def _quiet():
    """Libraries that print progress on stdout (NNCF) or warn on every fit (scikit-learn) stay quiet."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# ============================================================================================ classical
def _sample_features(workdir: Path, n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Radiomics features of the bundled sample scans, tiled with noise to `n_rows` rows (no cache given)."""
    from ..data import DatasetCache, SplitConfig, build_cache
    from ..features import FeatureConfig, extract_matrix
    from ..preprocess import PreprocessConfig

    root = workdir / "samples-cache"
    if not (root / "dataset.json").is_file():
        build_cache([SAMPLES / "labels.csv"], root, config=PreprocessConfig(size=128), workers=1,
                    split=SplitConfig(val_fraction=0.0, test_fraction=0.0))
    cache = DatasetCache.open(root)
    X, names, fcfg = extract_matrix(cache, FeatureConfig(), workers=1)
    y = cache.labels
    keep = y >= 0
    X, y = X[keep].astype(np.float64), y[keep]
    rng = np.random.default_rng(seed)
    reps = int(math.ceil(n_rows / len(X)))
    sd = X.std(axis=0, keepdims=True) + 1e-9
    Xt = np.tile(X, (reps, 1))[:n_rows] + rng.normal(0.0, 0.05, size=(n_rows, X.shape[1])) * sd
    yt = np.tile(y, reps)[:n_rows]
    return Xt.astype(np.float32), yt, {
        "source": f"the {len(X)} bundled sample scans (neuralscan_cli/samples), {fcfg.region} region",
        "kind": f"real radiomics features tiled to {n_rows} rows with 5% noise (no --cache given)",
        "n": int(n_rows), "features": int(X.shape[1]), "classes": cache.classes}


def _cache_features(cache_path, rows: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    from ..data import DatasetCache
    from ..features import FeatureConfig, extract_matrix

    cache = DatasetCache.open(cache_path)
    X, names, fcfg = extract_matrix(cache, FeatureConfig(), workers=os.cpu_count() or 1)
    idx = np.flatnonzero(cache.labels >= 0)
    if len(idx) < 20 or len(set(cache.labels[idx].tolist())) < 2:
        raise BenchError(f"{cache.root}: the classical suite needs at least 20 labelled images of 2+ classes")
    full = len(idx)
    if rows and len(idx) > rows:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=rows, replace=False))
    return X[idx], cache.labels[idx], {
        "source": str(Path(cache.root).resolve()), "kind": f"radiomics feature matrix ({fcfg.region} region)",
        "n": int(len(idx)), "n_labelled": int(full), "features": int(X.shape[1]), "classes": cache.classes}


def _pca_agreement(a, b, k: int) -> float:
    """Mean |cosine| between matching principal axes (sign-free) of two fitted PCAs, first k components."""
    ca, cb = np.asarray(a.components_[:k], np.float64), np.asarray(b.components_[:k], np.float64)
    cos = np.abs((ca * cb).sum(1)) / (np.linalg.norm(ca, axis=1) * np.linalg.norm(cb, axis=1) + 1e-12)
    return float(cos.mean())


def classical_suite(cache=None, *, settings: Settings, workdir: Path,
                    on_step: Callable[[str], None] | None = None) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from ..features.analysis import _standardise
    from ..features.baselines import DEFAULT_MODELS, build_pipeline
    from ..features.engines import MODEL_NAMES, EngineError, engine_versions, make_estimator

    step = on_step or (lambda _m: None)
    step("classical: features")
    if cache is not None:
        X, y, data = _cache_features(cache, settings.classical_rows if settings.quick else None, settings.seed)
    else:
        X, y, data = _sample_features(workdir, 480 if settings.quick else 2000, settings.seed)
    rng = np.random.default_rng(settings.seed)
    perm = rng.permutation(len(y))
    n_tr = int(round(0.75 * len(y)))
    tr, te = perm[:n_tr], perm[n_tr:]
    Z, _keep = _standardise(X)
    n_classes = len(np.unique(y))
    reps = settings.repeats
    rows = []
    for name in CLASSICAL:
        step(f"classical: {name}")
        try:
            rows.append(_classical_row(name, X, y, Z, tr, te, n_classes, reps, settings, DEFAULT_MODELS,
                                       build_pipeline, make_estimator, adjusted_rand_score))
        except EngineError as exc:
            rows.append({"estimator": name, **_no(str(exc))})
        except Exception as exc:  # noqa: BLE001 - one estimator failing must not lose the others
            rows.append({"estimator": name, **_no(_one_line(exc))})
        rows[-1]["name"] = MODEL_NAMES.get(name, {"pca": "PCA", "kmeans": "k-means"}.get(name, name))
    return {"available": True, "data": {**data, "train": int(len(tr)), "test": int(len(te))},
            "versions": engine_versions(), "repeats": reps,
            "method": "fit on 75% of rows, predict (PCA: transform) on the other 25%; stock and intel calls "
                      "alternate (A B A B ...) after an untimed warm-up fit on 200 rows; speed-up = median stock "
                      "seconds / median intel seconds (95% bootstrap interval)",
            "rows": rows}


def _classical_row(name, X, y, Z, tr, te, n_classes, reps, settings, defaults, build_pipeline, make_estimator,
                   ari) -> dict:
    engines = ("stock", "intel")
    if name in defaults:
        params = dict(defaults[name]["params"])
        if name == "rf":
            params["n_estimators"] = settings.rf_trees

        def new(e):
            return build_pipeline(name, e, params)

        Xtr, Xte, ytr = X[tr], X[te], y[tr]
        fit = lambda est: est.fit(Xtr, ytr)  # noqa: E731
        use = lambda est: est.predict(Xte)  # noqa: E731
    elif name == "pca":
        params = {"n_components": int(min(50, Z.shape[1], len(tr) - 1)), "svd_solver": "full"}

        def new(e):
            return make_estimator("pca", e, **params)

        fit = lambda est: est.fit(Z[tr])  # noqa: E731
        use = lambda est: est.transform(Z[te])  # noqa: E731
    else:
        params = {"n_clusters": int(n_classes), "n_init": settings.kmeans_init, "random_state": 0}

        def new(e):
            return make_estimator("kmeans", e, **params)

        fit = lambda est: est.fit(Z[tr])  # noqa: E731
        use = lambda est: est.predict(Z[te])  # noqa: E731

    fitted, outputs = {}, {}
    warm = np.random.default_rng(0).choice(tr, size=min(200, len(tr)), replace=False)
    with _quiet():
        for e in engines:  # untimed: imports, thread pools, dispatch
            try:
                est = new(e)
                if name in defaults:
                    est.fit(X[warm], y[warm])
                else:
                    est.fit(Z[warm])
            except Exception:  # noqa: BLE001 - e.g. fewer classes in the slice: the timed fit will say
                pass

        def fitter(e):
            def f():
                est = new(e)
                fit(est)
                fitted[e] = est
            return f

        def user(e):
            def f():
                outputs[e] = use(fitted[e])
            return f

        fits = {e: fitter(e) for e in engines}
        t_fit = time_interleaved(fits, 1, warmup=0)
        # slow fits (a big matrix, stock SVC / random forest) get at most 3 rounds: the suite must stay bounded
        more = (min(reps, 3) if sum(v[0] for v in t_fit.values()) > SLOW_FIT_SECONDS else reps) - 1
        if more > 0:
            for e, v in time_interleaved(fits, more, warmup=0).items():
                t_fit[e] += v
        t_pred = time_interleaved({e: user(e) for e in engines}, max(reps, 5), warmup=1)
    if name in defaults:
        agreement = float(np.mean(np.asarray(outputs["stock"]) == np.asarray(outputs["intel"])))
        kind = "share of identical test predictions"
        extra = {"accuracy": {e: float(np.mean(np.asarray(outputs[e]) == y[te])) for e in engines}}
    elif name == "pca":
        k = min(10, params["n_components"])
        agreement = _pca_agreement(fitted["stock"], fitted["intel"], k)
        kind = f"mean |cosine| of the first {k} principal axes"
        evr = [np.asarray(fitted[e].explained_variance_ratio_[:k]) for e in engines]
        extra = {"explained_variance_max_abs_diff": float(np.abs(evr[0] - evr[1]).max())}
    else:
        agreement = float(ari(outputs["stock"], outputs["intel"]))
        kind = "adjusted Rand index between the two clusterings of the test rows"
        extra = {"inertia": {e: float(fitted[e].inertia_) for e in engines}}
    return {"estimator": name, "available": True,
            "params": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                       for k, v in params.items()},
            "fit": {e: {**summarize(t_fit[e]), "seconds": t_fit[e]} for e in engines},
            "predict": {e: {**summarize(t_pred[e]), "seconds": t_pred[e]} for e in engines},
            "fit_speedup": speedup(t_fit["stock"], t_fit["intel"]),
            "predict_speedup": speedup(t_pred["stock"], t_pred["intel"]),
            "agreement": agreement, "agreement_kind": kind, **extra}


# ============================================================================================ training
def training_spec(classifier: str | None, *, quick: bool, arch: str | None = None, size: int | None = None
                  ) -> dict:
    """Which architecture the training suite measures: --arch/--size, else the classifier bundle's, else
    attention_cnn at 160 (small_cnn at 64 in quick mode with the tiny models)."""
    spec = {"model": "attention_cnn", "size": 160, "options": {}, "batch": None,
            "source": "attention_cnn at 160 with default options (the bundled classifier is not installed)"}
    if classifier == TINY or (classifier is None and quick):
        spec = {"model": "small_cnn", "size": 64, "options": {}, "batch": None,
                "source": "small_cnn at 64 (quick mode: the tiny model)"}
    else:
        from ..inference.bundle import BundleError, load_bundle

        try:
            b = load_bundle(classifier or "bundled")
            if b.task == "classify" and b.meta.get("architecture"):
                batch = (((b.meta.get("training") or {}).get("config") or {}).get("train") or {}).get("batch_size")
                spec = {"model": b.meta["architecture"], "size": b.size,
                        "options": dict(b.meta.get("architecture_options") or {}), "batch": batch,
                        "source": f"architecture of {b.name} ({b.root})"}
                if spec["model"] == "ensemble":  # its members are trained one at a time: time the first
                    first = spec["options"]["members"][0]
                    spec.update(model=first["name"], options=dict(first.get("options") or {}),
                                source=f"architecture of {b.name}'s first member ({b.root})")
        except BundleError as exc:
            spec["source"] = f"attention_cnn at 160 with default options ({exc})"
    if arch:
        spec.update(model=arch, options={}, source=f"--arch {arch}")
    if size:
        spec.update(size=int(size), source=spec["source"] + f", --size {size}")
    return spec


def _median(v):
    return float(np.median(v)) if len(v) else None


def training_suite(*, settings: Settings, spec: dict, cache=None, variants=TRAIN_ORDER,
                   on_step: Callable[[str], None] | None = None) -> dict:
    step = on_step or (lambda _m: None)
    batch = int(settings.train_batch or spec.get("batch") or 32)
    have_itex = itex_installed()
    runnable = [v for v in variants if have_itex or not VARIANTS[v]["itex"]]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    args_common = ["--model", spec["model"], "--size", spec["size"], "--options", json.dumps(spec["options"]),
                   "--batch", batch, "--steps", settings.train_steps, "--warmup", settings.train_warmup,
                   "--seed", settings.seed]
    if cache is not None:
        args_common += ["--cache", str(cache)]
    timeout = 120 + 60 * (settings.train_steps + settings.train_warmup)
    for r in range(settings.train_repeats):
        for v in rotated(runnable, r):
            step(f"training: {v} (repeat {r + 1}/{settings.train_repeats}, own process)")
            runs[v].append(run_worker("neuralscan_cli.bench.train_worker", ["--variant", v, *args_common],
                                      timeout=timeout))
    stock = next((runs[v] for v in ("onednn_off",) if any(x.get("available") for x in runs.get(v, []))), None)
    stock_steps = [t for x in (stock or []) if x.get("available") for t in x["step_seconds"]]
    on_runs = [x for x in runs.get("onednn_on", []) if x.get("available")]
    on_steps = [t for x in on_runs for t in x["step_seconds"]]
    rows = []
    for v in variants:
        base = {"variant": v, "label": VARIANTS[v]["label"], "precision": VARIANTS[v]["precision"]}
        if v not in runnable:
            rows.append({**base, **_no("intel-extension-for-tensorflow not installed")})
            continue
        ok = [x for x in runs[v] if x.get("available")]
        if not ok:
            first = runs[v][0] if runs[v] else {}
            rows.append({**base, **_no(first.get("reason", "not run")), "accel": first.get("accel")})
            continue
        steps = [t for x in ok for t in x["step_seconds"]]
        s = summarize(steps)
        per_run_ips = [x["images_per_second"] for x in ok]
        row = {**base, "available": True, "runs": len(ok), "failed_runs": len(runs[v]) - len(ok),
               "bf16_mode": ok[0].get("bf16_mode"), "accel": ok[0]["accel"],
               "itex_loaded": ok[0]["accel"].get("itex_loaded"), "onednn": ok[0]["accel"].get("onednn"),
               "step_seconds": s, "images_per_second": batch / s["median"],
               "images_per_second_iqr": [batch / s["p75"], batch / s["p25"]],
               "images_per_second_per_run": per_run_ips,
               "speedup_vs_onednn_off": speedup(stock_steps, steps) if stock_steps and v != "onednn_off" else None,
               "speedup_vs_onednn_on": speedup(on_steps, steps) if on_steps and v != "onednn_on" else None}
        if stock:
            ref = next(x for x in stock if x.get("available"))["losses"]
            mine = ok[0]["losses"]
            n = min(len(ref), len(mine))
            diff = np.abs(np.asarray(ref[:n]) - np.asarray(mine[:n]))
            row["loss_vs_onednn_off"] = {"max_abs_diff": float(diff.max()) if n else None,
                                         "last_rel_diff": float(diff[-1] / max(abs(ref[n - 1]), 1e-9)) if n else None,
                                         "steps": n}
        rows.append(row)
    first_ok = next((x for v in variants for x in runs[v] if x.get("available")), {})
    return {"available": True, "model": spec["model"], "size": spec["size"], "options": spec["options"],
            "params": first_ok.get("params"), "batch": batch, "data": first_ok.get("data"),
            "architecture_source": spec["source"], "steps": settings.train_steps, "warmup": settings.train_warmup,
            "repeats": settings.train_repeats,
            "method": "each variant in its own Python process (ITEX hidden at import where the variant has no "
                      "ITEX; oneDNN set by TF_ENABLE_ONEDNN_OPTS before import), variants in rotating order per "
                      "repeat; train_on_batch on prepared batches, same seed and data in every variant; images/s "
                      "= batch / median step seconds; loss_vs_onednn_off compares the loss curves step by step",
            "rows": rows}


# ============================================================================================ models
def sample_folder(workdir: Path, copies: int = 1) -> tuple[Path, dict[str, str]]:
    """The bundled sample scans (not their masks), each copied `copies` times into one folder, and their labels
    by resolved path."""
    import csv

    folder = workdir / "sample-scans"
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    with open(SAMPLES / "labels.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            src = SAMPLES / r["image"]
            for k in range(max(1, copies)):
                dst = folder / (src.name if k == 0 else f"{src.stem}-copy{k}{src.suffix}")
                shutil.copy2(src, dst)
                truth[str(dst.resolve())] = r["label"]
    return folder, truth


def sample_manifest(workdir: Path, classes: list[str] | None) -> Path:
    """The bundled samples as a CSV manifest (absolute paths), only the rows whose label is one of `classes`
    (None: all rows). The samples hold Br35H 'tumor' images that a 4-class classifier does not know."""
    import csv

    with open(SAMPLES / "labels.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = [r for r in reader if classes is None or r["label"] in classes]
    for r in rows:
        for k in ("image", "mask"):
            if r.get(k):
                r[k] = str((SAMPLES / r[k]).resolve())
    path = workdir / ("samples-all.csv" if classes is None else f"samples-{len(classes)}class.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


@dataclass
class Subject:
    """One model under test: its bundle (with IR), Keras model and evaluation images."""
    role: str  # classifier | segmenter
    bundle: object = None
    keras: object = None
    images: np.ndarray | None = None  # float32 (N, S, S, 1)
    labels: np.ndarray | None = None  # classifier: class indices
    masks: np.ndarray | None = None  # segmenter: 0/1 (N, S, S)
    data: str = ""
    weights: str = ""
    export: str = ""
    notes: list = field(default_factory=list)
    reason: str | None = None  # set when the model cannot be benchmarked


def _export(src, out_dir: Path, calibration, validation) -> str:
    from ..export import export_bundle
    from ..inference import load_bundle

    # any drop is accepted: the bench measures speed, and reports the INT8 figures beside the FP32 ones
    margin = {"max_drop_accuracy": 1.0} if load_bundle(src).task == "classify" else {"max_drop_dice": 1.0}
    with _quiet():
        rep = export_bundle(src, out_dir, int8=True, calibration=calibration, validation=validation,
                            calibration_size=300, **margin)
    return (f"export_bundle (FP32 + NNCF INT8, {rep.preset} preset, calibration "
            f"{(rep.calibration or {}).get('n', '?')} images)")


def _tiny_subjects(workdir: Path, seed: int, on_step) -> tuple[Subject, Subject]:
    """A small_cnn classifier and a small U-Net at 64 px, fitted for a few seconds on the sample scans (so their
    outputs are not the flat outputs of random weights), saved as bundles and exported to FP32 and INT8 IR."""
    import keras

    from ..inference.bundle import ModelBundle, load_bundle, new_bundle_meta
    from ..inference.runners import load_images_for_bundle
    from ..models import create_model
    from ..preprocess import PreprocessConfig
    from ..training.losses import dice_bce_loss

    size = 64
    pre = PreprocessConfig(size=size).to_dict()
    out = []
    for role, task, arch, opts in (("classifier", "classify", "small_cnn", {"width": 8}),
                                   ("segmenter", "segment", "unet", {"base_filters": 8, "depth": 3, "dropout": 0.0})):
        on_step(f"inference: building the tiny {role}")
        src = workdir / f"tiny-{role}-keras"
        src.mkdir(parents=True, exist_ok=True)
        meta = new_bundle_meta(task=task, classes=CLASSES if task == "classify" else ["tumor"], size=size,
                               preprocessing=pre, name=f"tiny-{role}", architecture=arch, architecture_options=opts)
        samples = sample_manifest(workdir, CLASSES if task == "classify" else None)
        images, labels, masks, _ = load_images_for_bundle(samples, ModelBundle(src, meta))
        x = images[..., None]
        keras.utils.set_random_seed(seed)
        if task == "classify":
            model = create_model(arch, num_classes=len(CLASSES), input_size=size, **opts)
            target, loss = np.eye(len(CLASSES), dtype=np.float32)[labels], "categorical_crossentropy"
        else:
            model = create_model(arch, input_size=size, **opts)
            target, loss = masks[..., None].astype(np.float32), dice_bce_loss
        for layer in model.layers:  # so the moving statistics follow the few full batches
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.5
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
        model.fit(x, target, epochs=TINY_EPOCHS[task], batch_size=len(x), verbose=0)
        model.save(src / "model.keras")
        meta["files"] = {"keras": "model.keras"}
        (src / "model.json").write_text(json.dumps(meta))
        on_step(f"inference: exporting the tiny {role} to OpenVINO FP32 and INT8")
        dst = workdir / f"tiny-{role}"
        export = _export(src, dst, samples, samples)
        bundle = load_bundle(dst)
        seg = task == "segment"
        out.append(Subject(role, bundle=bundle, keras=model, images=x, labels=None if seg else labels,
                           masks=masks if seg else None,
                           data=(f"the {len(x)} bundled sample scans "
                                 f"({'with their tumour masks' if seg else 'of the 4 classes, labelled'})"),
                           weights=(f"{arch} {opts} at {size} px, fitted {TINY_EPOCHS[task]} full-batch steps on "
                                    "the sample scans (a smoke model, not a diagnostic one)"),
                           export=export))
    return out[0], out[1]


def _eval_data(subject: Subject, bundle, cache, limit: int, seed: int, workdir: Path) -> None:
    """Evaluation images: the validation split of the bundle's training cache, else of --cache, else the samples."""
    from ..inference.runners import load_cache_for_bundle, load_images_for_bundle

    recorded = (((bundle.meta.get("training") or {}).get("data") or {}).get("cache"))
    for source in [c for c in (recorded, cache) if c]:
        if not (Path(source) / "dataset.json").is_file():
            subject.notes.append(f"{source}: no dataset cache there")
            continue
        try:
            images, labels, masks, _ = load_cache_for_bundle(source, bundle, "val")
        except NeuralScanError as exc:
            subject.notes.append(f"{source}: {str(exc).splitlines()[0]}")
            continue
        n = len(images)
        if n > limit:
            pick = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
            images = images[pick]
            labels = labels[pick] if labels is not None else None
            masks = masks[pick] if masks is not None else None
        subject.images, subject.labels, subject.masks = images[..., None], labels, masks
        subject.data = f"validation split of {source} ({len(images)} of {n} images)"
        return
    samples = sample_manifest(workdir, bundle.classes if bundle.task == "classify" else None)
    images, labels, masks, _ = load_images_for_bundle(samples, bundle)
    subject.images, subject.labels, subject.masks = images[..., None], labels, masks
    subject.data = f"the {len(images)} bundled sample scans"


def _bundle_subject(role: str, spec: str, workdir: Path, cache, settings: Settings, on_step) -> Subject:
    from ..inference.bundle import BundleError, load_bundle
    from ..inference.runners import load_keras_model

    task = "classify" if role == "classifier" else "segment"
    s = Subject(role)
    try:
        bundle = load_bundle(spec)
    except BundleError as exc:
        s.reason = str(exc).splitlines()[0]
        return s
    if bundle.task != task:
        s.reason = f"{bundle.name} is a {bundle.task} model, not a {role}"
        return s
    if not bundle.has_keras:
        s.reason = f"{bundle.root}: no Keras model (model.keras) to compare the IR against"
        return s
    s.weights = f"{bundle.meta.get('architecture', '?')} at {bundle.size} px, weights from {bundle.root}"
    if bundle.path_of("openvino_fp32") is None or bundle.path_of("openvino_int8") is None:
        on_step(f"inference: exporting the {role} to OpenVINO FP32 and INT8 (its bundle has no IR)")
        try:
            s.export = _export(bundle.root, workdir / f"export-{role}", cache, None)
            bundle = load_bundle(workdir / f"export-{role}")
        except NeuralScanError as exc:
            s.reason = f"the bundle has no OpenVINO IR and exporting it failed: {str(exc).splitlines()[0]}"
            return s
    else:
        s.export = f"the bundle's own IR ({bundle.root / 'openvino'})"
    s.bundle = bundle
    s.keras = load_keras_model(bundle)
    _eval_data(s, bundle, cache, settings.eval_images, settings.seed, workdir)
    return s


# ============================================================================================ inference
def int8_peak(machine: dict, clock_ghz: float | None = None) -> dict:
    """cores x GHz x INT8 ops/cycle/core (256 with AVX-512 VNNI, 128 with AVX-VNNI)."""
    isa = machine.get("isa") or {}
    per_cycle, basis = None, None
    for flag, ops in INT8_OPS_PER_CYCLE.items():
        if isa.get(flag):
            per_cycle, basis = ops, flag
            break
    if clock_ghz:
        ghz, src = float(clock_ghz), "--clock-ghz"
    elif machine.get("cpu_mhz"):
        ghz, src = machine["cpu_mhz"] / 1000.0, "/proc/cpuinfo 'cpu MHz' (the current clock, not the all-core turbo)"
    else:
        ghz, src = DEFAULT_GHZ, f"default {DEFAULT_GHZ} GHz (no clock found)"
    cores = int(machine.get("cpus_usable") or machine.get("cores") or 1)
    if per_cycle is None:
        return {"ops_per_second": None, "reason": "no VNNI on this CPU: no INT8 peak to compare with",
                "ghz": ghz, "clock_source": src, "cores": cores}
    return {"ops_per_second": cores * ghz * 1e9 * per_cycle, "cores": cores, "ghz": ghz, "clock_source": src,
            "ops_per_cycle_per_core": per_cycle, "basis": f"{basis}: {per_cycle} INT8 ops/cycle/core",
            "note": "cores = logical CPUs usable by this process (with SMT two share one core's VNNI units)"}


def _dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from ..evaluation.metrics import dice_per_image

    return dice_per_image(a, np.asarray(b).astype(bool))


class _Engines:
    """The three paths of one model, compiled once per (engine, batch, hint)."""

    def __init__(self, subject: Subject):
        import openvino as ov

        from ..training.accel import import_tensorflow

        self.s = subject
        self.size = subject.bundle.size
        self.core = ov.Core()
        self.ov = ov
        self.xml = {"ov_fp32": subject.bundle.path_of("openvino_fp32"),
                    "ov_int8": subject.bundle.path_of("openvino_int8")}
        tf = import_tensorflow()
        model = subject.keras
        self.tf = tf
        self._fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def tf_call(self, x: np.ndarray) -> np.ndarray:
        out = self._fn(self.tf.constant(x))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.numpy()

    def compile(self, engine: str, batch: int | None, hint: str):
        model = self.core.read_model(str(self.xml[engine]))
        if batch is not None:
            model.reshape([batch, self.size, self.size, 1])
        cfg = {"PERFORMANCE_HINT": hint}
        if engine == "ov_fp32":
            cfg["INFERENCE_PRECISION_HINT"] = "f32"  # as the runner: FP32 means FP32, not bf16 where supported
        return self.core.compile_model(model, "CPU", cfg)

    def predict_all(self, engine: str, x: np.ndarray, batch: int = 16) -> np.ndarray:
        if engine == "tf_fp32":
            return np.concatenate([self.tf_call(x[i:i + batch]) for i in range(0, len(x), batch)])
        compiled = self.compile(engine, None, "THROUGHPUT")
        return np.concatenate([np.array(compiled(x[i:i + batch])[0]) for i in range(0, len(x), batch)])


def _precision_of(compiled) -> str | None:
    try:
        return str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    except Exception:  # noqa: BLE001
        return None


def _model_rows(subject: Subject, settings: Settings, peak: dict, on_step) -> dict:
    from ..evaluation.metrics import accuracy, macro_f1
    from .flops import count_flops

    eng = _Engines(subject)
    x = np.ascontiguousarray(subject.images, dtype=np.float32)
    names = list(ENGINE_KEYS)
    flops = count_flops(subject.keras)

    # --- batch-1 latency: one sync request per engine, calls interleaved
    on_step(f"inference: {subject.role} batch-1 latency")
    x1 = np.ascontiguousarray(x[:1])
    reqs, precisions = {}, {}
    for e in ("ov_fp32", "ov_int8"):
        compiled = eng.compile(e, 1, "LATENCY")
        precisions[e] = _precision_of(compiled)
        reqs[e] = compiled.create_infer_request()
    calls = {"tf_fp32": lambda: eng.tf_call(x1), "ov_fp32": lambda: reqs["ov_fp32"].infer({0: x1}),
             "ov_int8": lambda: reqs["ov_int8"].infer({0: x1})}
    lat = time_interleaved(calls, settings.latency_calls, warmup=5)
    del reqs

    # --- throughput: THROUGHPUT hint, AsyncInferQueue, a few batch sizes; TF at batch 32
    on_step(f"inference: {subject.role} throughput")
    configs, runners = [], {}
    xb = {b: np.ascontiguousarray(np.resize(x, (b, *x.shape[1:]))) for b in (*settings.throughput_batches, 32)}
    for e in ("ov_fp32", "ov_int8"):
        for b in settings.throughput_batches:
            compiled = eng.compile(e, b, "THROUGHPUT")
            queue = eng.ov.AsyncInferQueue(compiled)
            nreq = len(queue)
            try:
                streams = int(compiled.get_property("NUM_STREAMS"))
            except Exception:  # noqa: BLE001
                streams = None
            jobs = max(2 * nreq, int(math.ceil(settings.throughput_images / b)))
            runners[(e, b)] = {"queue": queue, "jobs": jobs, "images": jobs * b, "streams": streams,
                               "requests": nreq, "compiled": compiled}
            configs.append((e, b))
    tf_jobs = max(2, int(math.ceil(settings.throughput_images / 32)))
    configs.append(("tf_fp32", 32))

    def round_of(e, b):
        if e == "tf_fp32":
            for _ in range(tf_jobs):
                eng.tf_call(xb[32])
            return
        r = runners[(e, b)]
        q, data = r["queue"], {0: xb[b]}
        for _ in range(r["jobs"]):
            q.start_async(data)
        q.wait_all()

    tput: dict[tuple, list[float]] = {c: [] for c in configs}
    for c in configs:  # warm-up round
        round_of(*c)
    for r in range(settings.repeats):
        for c in rotated(configs, r):
            t0 = time.perf_counter()
            round_of(*c)
            secs = time.perf_counter() - t0
            n_img = tf_jobs * 32 if c[0] == "tf_fp32" else runners[c]["images"]
            tput[c].append(n_img / secs)
    # --- agreement and metrics on the evaluation images
    on_step(f"inference: {subject.role} agreement on {len(x)} images")
    outs = {e: eng.predict_all(e, x) for e in names}
    rows = []
    lat_tf = lat["tf_fp32"]
    best_tf = tput[("tf_fp32", 32)]
    for e in names:
        cands = [(c, tput[c]) for c in configs if c[0] == e]
        best_c, best_v = max(cands, key=lambda cv: np.median(cv[1]))
        throughput = {"images_per_second": _median(best_v), "summary": summarize(best_v), "batch": best_c[1],
                      "per_batch": {str(c[1]): _median(v) for c, v in cands}}
        if e == "tf_fp32":
            throughput.update(streams=None, requests=1, note="one tf.function call at a time")
        else:
            r = runners[best_c]
            throughput.update(streams=r["streams"], requests=r["requests"])
        row = {"model": subject.role, "engine": e, "label": ENGINE_KEYS[e], "available": True,
               "latency_ms": summarize([t * 1000 for t in lat[e]]),
               "latency_speedup_vs_tf": speedup(lat_tf, lat[e]) if e != "tf_fp32" else None,
               "throughput": throughput,
               "throughput_speedup_vs_tf": ratio_ci(best_v, best_tf) if e != "tf_fp32" else None}
        if e != "tf_fp32":
            row["inference_precision"] = precisions.get(e)
        ops = flops["flops"] * (throughput["images_per_second"] or 0)
        row["gops_per_second"] = ops / 1e9
        if e == "ov_int8" and peak.get("ops_per_second"):
            row["share_of_int8_peak"] = ops / peak["ops_per_second"]
        rows.append(row)
    runners.clear()
    _agreement(subject, outs, rows, accuracy, macro_f1)
    return {"rows": rows, "flops_per_image": flops["flops"], "macs_by_type": flops["by_type"],
            "input_size": eng.size}


def _agreement(subject: Subject, outs: dict, rows: list[dict], accuracy, macro_f1) -> None:
    ref = outs["tf_fp32"]
    for row in rows:
        e = row["engine"]
        o = outs[e]
        if subject.role == "classifier":
            row["agreement"] = {"top1_with_tf": float(np.mean(o.argmax(1) == ref.argmax(1))),
                                "max_abs_prob_diff": float(np.abs(o - ref).max()), "n": int(len(o))}
            if subject.labels is not None and (subject.labels >= 0).any():
                k = subject.labels >= 0
                n_classes = o.shape[1]
                acc = accuracy(subject.labels[k], o[k].argmax(1))
                f1 = macro_f1(subject.labels[k], o[k].argmax(1), n_classes)
                acc_tf = accuracy(subject.labels[k], ref[k].argmax(1))
                f1_tf = macro_f1(subject.labels[k], ref[k].argmax(1), n_classes)
                row["metrics"] = {"accuracy": acc, "macro_f1": f1, "accuracy_delta_vs_tf": acc - acc_tf,
                                  "macro_f1_delta_vs_tf": f1 - f1_tf, "n": int(k.sum())}
        else:
            m, mref = o[..., 0] > 0.5, ref[..., 0] > 0.5
            d = _dice(m, mref)
            row["agreement"] = {"dice_with_tf_mean": float(d.mean()), "dice_with_tf_min": float(d.min()),
                                "max_abs_prob_diff": float(np.abs(o - ref).max()), "n": int(len(o))}
            if subject.masks is not None:
                gt = subject.masks.astype(bool)
                has = gt.reshape(len(gt), -1).any(1)
                if has.any():
                    dm = float(_dice(m[has], gt[has]).mean())
                    dref = float(_dice(mref[has], gt[has]).mean())
                    row["metrics"] = {"dice_mean": dm, "dice_delta_vs_tf": dm - dref, "n": int(has.sum())}


def inference_suite(classifier: Subject, segmenter: Subject, *, settings: Settings, machine: dict,
                    on_step: Callable[[str], None] | None = None) -> dict:
    step = on_step or (lambda _m: None)
    peak = int8_peak(machine, settings.clock_ghz)
    models, rows = {}, []
    for subj in (classifier, segmenter):
        info = {"weights": subj.weights, "export": subj.export, "data": subj.data, "notes": subj.notes}
        if subj.reason:
            models[subj.role] = {"available": False, "reason": subj.reason, **info}
            rows += [{"model": subj.role, "engine": e, "label": ENGINE_KEYS[e], **_no(subj.reason)}
                     for e in ENGINE_KEYS]
            continue
        try:
            res = _model_rows(subj, settings, peak, step)
        except Exception as exc:  # noqa: BLE001 - the other model and the other suites still run
            reason = _one_line(exc)
            models[subj.role] = {"available": False, "reason": reason, "traceback": traceback.format_exc(limit=3),
                                 **info}
            rows += [{"model": subj.role, "engine": e, "label": ENGINE_KEYS[e], **_no(reason)} for e in ENGINE_KEYS]
            continue
        models[subj.role] = {"available": True, "bundle": subj.bundle.name, "input_size": res["input_size"],
                             "flops_per_image": res["flops_per_image"], "macs_by_type": res["macs_by_type"], **info}
        rows += res["rows"]
    from ..training.accel import acceleration_info

    return {"available": True, "models": models, "int8_peak": peak, "tf": acceleration_info(),
            "settings": {"latency_calls": settings.latency_calls, "throughput_batches": settings.throughput_batches,
                         "throughput_images_per_round": settings.throughput_images, "rounds": settings.repeats},
            "method": "latency: batch 1, PERFORMANCE_HINT LATENCY, one synchronous infer request per engine (TF: "
                      "a tf.function call), the three engines called in turn; throughput: PERFORMANCE_HINT "
                      "THROUGHPUT with an AsyncInferQueue of the plugin's optimal size at batch 1/8/32 (best "
                      "kept), TF at batch 32, rounds rotated across engines; agreement and metrics on the "
                      "evaluation images; GOPS = 2 x MACs per image x images/s",
            "rows": rows}


# ============================================================================================ classify
def classify_suite(subject: Subject, folder, *, settings: Settings, workdir: Path,
                   on_step: Callable[[str], None] | None = None) -> dict:
    import csv

    from ..data import discover
    from ..inference.runners import make_runner
    from ..inference.streaming import classify_paths, decode_only

    step = on_step or (lambda _m: None)
    engines = {"keras": "tf_fp32", "openvino-fp32": "ov_fp32", "openvino-int8": "ov_int8"}
    if subject.reason:
        return {"available": True, "folder": str(folder or SAMPLES),
                "rows": [{"engine": k, "label": ENGINE_KEYS[v], **_no(subject.reason)} for k, v in engines.items()]}
    bundle = subject.bundle
    if folder is None:
        folder, truth = sample_folder(workdir, settings.sample_copies)
        source = f"the bundled sample scans, each copied {settings.sample_copies} times ({len(truth)} files)"
    else:
        folder, truth = Path(folder), {}
        source = str(Path(folder).resolve())
        try:
            items, _ = discover(folder)
            truth = {str(Path(it.path).resolve()): it.label for it in items if it.label}
        except Exception as exc:  # noqa: BLE001 - labels are optional: speed is still measured, accuracy is not
            warnings.warn(f"{folder}: no labels read ({type(exc).__name__}: {exc}); accuracy left out",
                          RuntimeWarning, stacklevel=2)
    truth = {p: lab for p, lab in truth.items() if lab in bundle.classes}
    runners, load_s = {}, {}
    for k in engines:
        if k not in bundle.available_engines():
            continue
        t0 = time.perf_counter()
        runners[k] = make_runner(bundle, k)
        load_s[k] = time.perf_counter() - t0
    outdir = workdir / "classify"
    outdir.mkdir(parents=True, exist_ok=True)
    last = {}

    def run(k):
        def f():
            out = outdir / f"{k}.csv"
            s = classify_paths([folder], bundle, out, engine=k, runner=runners[k], overwrite=True)
            last[k] = (s, out)
        return f

    decoded = {}

    def decode():
        decoded["result"] = decode_only([folder], bundle.preprocessing)

    step(f"classify: {folder} with {', '.join(runners)}, and decoding alone")
    times = time_interleaved({**{k: run(k) for k in runners}, "decode_only": decode}, settings.repeats, warmup=1,
                             rotate=True)
    preds = {}
    for k, (s, out) in last.items():
        with open(out, newline="") as fh:
            preds[k] = {(r["path"], r["slice"]): r["label"] for r in csv.DictReader(fh)}
    rows = []
    ref_t = times.get("keras")
    for k, key in engines.items():
        if k not in runners:
            rows.append({"engine": k, "label": ENGINE_KEYS[key], **_no(f"the bundle has no {k} model")})
            continue
        s, _ = last[k]
        n = s.n_slices
        sm = summarize(times[k])
        row = {"engine": k, "label": ENGINE_KEYS[key], "available": True, "files": s.n_files, "images": n,
               "failed": s.n_failed, "seconds": sm, "images_per_second": n / sm["median"] if sm["median"] else None,
               "model_load_seconds": load_s[k], "batch_size": s.batch_size, "workers": s.workers,
               "speedup_vs_keras": speedup(ref_t, times[k]) if ref_t and k != "keras" else None}
        if "keras" in preds:
            common = set(preds[k]) & set(preds["keras"])
            row["agreement_with_keras"] = (float(np.mean([preds[k][c] == preds["keras"][c] for c in common]))
                                           if common else None)
        if truth:
            scored = [(truth[str(Path(p).resolve())], lab) for (p, _sl), lab in preds[k].items()
                      if str(Path(p).resolve()) in truth]
            if scored:
                row["accuracy"] = float(np.mean([t == p for t, p in scored]))
                row["accuracy_n"] = len(scored)
        rows.append(row)
    n_dec, _s = decoded["result"]
    sm = summarize(times["decode_only"])
    decode_row = {"images": n_dec, "seconds": sm,
                  "images_per_second": n_dec / sm["median"] if sm["median"] else None}
    return {"available": True, "folder": str(folder.resolve()), "model": bundle.name, "repeats": settings.repeats,
            "images_source": source,
            "method": "classify_paths (find, decode and preprocess on worker threads, infer, write CSV) over the "
                      "whole folder, engines and a decode-only pass in rotating order after one warm-up run each; "
                      "model load/compile time excluded (model_load_seconds)",
            "rows": rows, "decode_only": decode_row}


# ============================================================================================ the run
def _section(fn, *args, **kwargs) -> dict:
    t0 = time.perf_counter()
    try:
        res = fn(*args, **kwargs)
    except NeuralScanError as exc:
        res = {"available": False, "reason": str(exc).splitlines()[0], "rows": []}
    except Exception as exc:  # noqa: BLE001 - one suite failing must not lose the others' figures
        res = {"available": False, "reason": _one_line(exc), "traceback": traceback.format_exc(limit=4), "rows": []}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def run_bench(out: str | Path, *, quick: bool = False, suites=SECTIONS, cache=None, classifier: str | None = None,
              segmenter: str | None = None, images=None, repeats: int | None = None, steps: int | None = None,
              clock_ghz: float | None = None, arch: str | None = None, size: int | None = None,
              variants=TRAIN_ORDER, on_step: Callable[[str], None] | None = None) -> dict:
    """Run the chosen suites; write OUT/bench.json, OUT/bench.png and OUT/bench.md; return the results."""
    t0 = time.perf_counter()
    step = on_step or (lambda _m: None)
    suites = [s for s in SECTIONS if s in set(suites)]
    settings = Settings.make(quick, repeats, steps, clock_ghz)
    classifier = classifier or (TINY if quick else "bundled")
    segmenter = segmenter or (TINY if quick else "bundled-segmenter")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    results = {"benchmark": "neuralscan bench", "date": dt.datetime.now().isoformat(timespec="seconds"),
               "quick": quick, "command": " ".join(["neuralscan", *sys.argv[1:]]) if sys.argv else None,
               "settings": {**asdict(settings), "classifier": classifier, "segmenter": segmenter,
                            "cache": str(cache) if cache else None, "images": str(images) if images else None},
               "machine": machine}
    for name in SECTIONS:
        results[name] = {"available": False, "skipped": True, "reason": "not selected (--suite)", "rows": []}
    with tempfile.TemporaryDirectory(prefix="neuralscan-bench-") as tmp:
        work = Path(tmp)
        if "classical" in suites:
            results["classical"] = _section(classical_suite, cache, settings=settings, workdir=work, on_step=step)
        if "training" in suites:
            spec = training_spec(classifier if classifier != TINY else None, quick=quick or classifier == TINY,
                                 arch=arch, size=size)
            train_cache = cache if cache and not quick else None
            results["training"] = _section(training_suite, settings=settings, spec=spec, cache=train_cache,
                                           variants=variants, on_step=step)
        if "inference" in suites or "classify" in suites:
            from ..training.accel import import_tensorflow

            # the stock twin is TensorFlow as installed, without ITEX (measured in the training suite); the
            # first import in the process decides, and the section records what was active
            import_tensorflow(itex=False)
            subjects = _section(_subjects, classifier, segmenter, work, cache, settings, step)
            if not subjects.get("available", True):
                reason = subjects["reason"]
                cls_s, seg_s = Subject("classifier", reason=reason), Subject("segmenter", reason=reason)
            else:
                cls_s, seg_s = subjects["classifier"], subjects["segmenter"]
            if "inference" in suites:
                results["inference"] = _section(inference_suite, cls_s, seg_s, settings=settings, machine=machine,
                                                on_step=step)
                results["inference"]["prepare_seconds"] = subjects.get("seconds")
            if "classify" in suites:
                results["classify"] = _section(classify_suite, cls_s, images, settings=settings,
                                               workdir=work, on_step=step)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["notes"] = busy_notes(machine)
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=_jsonable))
    step("plots")
    plot_ratios(results, out / "bench.png")
    (out / "bench.md").write_text(markdown(results))
    return results


def busy_notes(machine: dict) -> list[str]:
    """A warning when the machine was not idle: the load average at the start and now."""
    cpus = machine.get("cpus_usable") or machine.get("cores") or 1
    start = (machine.get("load_average") or [None])[0]
    try:
        end = os.getloadavg()[0]
    except (OSError, AttributeError):
        end = None
    worst = max(v for v in (start, end, 0.0) if v is not None)
    if worst > 0.5 * cpus:
        return [f"the machine was busy (1-minute load average {start if start is not None else '?'} at the start, "
                f"{end:.2f} at the end, on {cpus} CPUs): other work slows the measured paths unevenly; run the "
                f"benchmark on an idle machine for figures to publish"]
    return []


def _subjects(classifier, segmenter, work, cache, settings, step) -> dict:
    if classifier == TINY or segmenter == TINY:
        tiny_c, tiny_s = _tiny_subjects(work, settings.seed, step)
    c = tiny_c if classifier == TINY else _bundle_subject("classifier", classifier, work, cache, settings, step)
    s = tiny_s if segmenter == TINY else _bundle_subject("segmenter", segmenter, work, cache, settings, step)
    if classifier == TINY:
        _eval_limit(c, settings)
    if segmenter == TINY:
        _eval_limit(s, settings)
    return {"classifier": c, "segmenter": s}


def _eval_limit(s: Subject, settings: Settings) -> None:
    if s.images is not None and len(s.images) > settings.eval_images:
        s.images = s.images[:settings.eval_images]


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, Subject)):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    return str(o)


# ============================================================================================ outputs
def ratio_rows(results: dict) -> dict[str, list[tuple[str, dict]]]:
    """(label, ratio dict) per section: the speed-ups the chart and the summary show."""
    out: dict[str, list[tuple[str, dict]]] = {}
    for r in results.get("classical", {}).get("rows", []):
        if r.get("available"):
            out.setdefault("classical: intel / stock", []).append((f"{r['estimator']} fit", r["fit_speedup"]))
            out["classical: intel / stock"].append((f"{r['estimator']} predict", r["predict_speedup"]))
    for r in results.get("training", {}).get("rows", []):
        if r.get("available") and r.get("speedup_vs_onednn_off") and r["variant"] != "onednn_off":
            out.setdefault("training images/s vs oneDNN off", []).append((r["variant"], r["speedup_vs_onednn_off"]))
    for r in results.get("inference", {}).get("rows", []):
        if r.get("available") and r["engine"] != "tf_fp32":
            key = f"inference vs TF FP32 ({r['model']})"
            out.setdefault(key, []).append((f"{r['engine']} latency", r["latency_speedup_vs_tf"]))
            out[key].append((f"{r['engine']} throughput", r["throughput_speedup_vs_tf"]))
    for r in results.get("classify", {}).get("rows", []):
        if r.get("available") and r.get("speedup_vs_keras") and r["engine"] != "keras":
            out.setdefault("classify end to end vs Keras", []).append((r["engine"], r["speedup_vs_keras"]))
    return out


def plot_ratios(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ratio_rows(results)
    n = max(1, len(groups))
    heights = [max(1, len(v)) + 1.5 for v in groups.values()] or [1]
    fig, axes = plt.subplots(n, 1, figsize=(8, 0.8 + 0.3 * sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    if not groups:
        axes[0][0].text(0.5, 0.5, "no speed-ups measured", ha="center", va="center")
        axes[0][0].axis("off")
    for ax, (title, items) in zip(axes[:, 0], groups.items()):
        labels = [lab for lab, _ in items]
        vals = [(r or {}).get("ratio") or 0.0 for _, r in items]
        lo = [max(0.0, v - ((r or {}).get("lo") or v)) for v, (_, r) in zip(vals, items)]
        hi = [max(0.0, ((r or {}).get("hi") or v) - v) for v, (_, r) in zip(vals, items)]
        y = np.arange(len(items))
        colours = ["#0071c5" if v >= 1 else "#c55a00" for v in vals]
        ax.barh(y, vals, xerr=[lo, hi], color=colours, capsize=3)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("speed-up (x, 95% interval); > 1: the accelerated path is faster", fontsize=8)
        for yy, v, h in zip(y, vals, hi):
            ax.text(v + h, yy, f" {v:.2f}x", va="center", fontsize=7)
    m = results.get("machine", {})
    fig.suptitle(f"neuralscan bench{' --quick' if results.get('quick') else ''} on {m.get('cpu', '?')}, "
                 f"{m.get('cpus_usable', m.get('cores', '?'))} CPUs, {results.get('date', '')[:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _x(r: dict | None) -> str:
    if not r or r.get("ratio") is None:
        return "n/a"
    if r.get("lo") is None:
        return f"{r['ratio']:.2f}x"
    return f"{r['ratio']:.2f}x ({r['lo']:.2g}-{r['hi']:.2g})"


def _f(v, fmt=".3f", none="n/a") -> str:
    return none if v is None else format(v, fmt)


def table_rows(results: dict) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Every section as (header, rows of strings): shared by the rich tables and the markdown."""
    tables = {}
    c = results.get("classical", {})
    if c.get("rows"):
        head = ["estimator", "fit stock s", "fit intel s", "fit speed-up", "predict stock s", "predict intel s",
                "predict speed-up", "agreement"]
        body = []
        for r in c["rows"]:
            if not r.get("available"):
                body.append([r.get("name", r["estimator"]), f"not available: {r['reason']}"] + [""] * 6)
                continue
            f, p = r["fit"], r["predict"]
            body.append([r["name"], f"{f['stock']['median']:.3f} ±{f['stock']['iqr']:.3f}",
                         f"{f['intel']['median']:.3f} ±{f['intel']['iqr']:.3f}", _x(r["fit_speedup"]),
                         f"{p['stock']['median']:.4f}", f"{p['intel']['median']:.4f}", _x(r["predict_speedup"]),
                         f"{r['agreement']:.3f}"])
        tables["classical"] = (head, body)
    t = results.get("training", {})
    if t.get("rows"):
        head = ["variant", "ITEX loaded", "oneDNN", "precision", "images/s", "IQR", "vs oneDNN off", "vs oneDNN on",
                "loss diff vs off"]
        body = []
        for r in t["rows"]:
            if not r.get("available"):
                body.append([r["variant"], f"not available: {r['reason']}"] + [""] * 7)
                continue
            lo, hi = r["images_per_second_iqr"]
            loss = (r.get("loss_vs_onednn_off") or {}).get("max_abs_diff")
            prec = r["precision"] + (" (ITEX AMP)" if "ITEX auto" in (r.get("bf16_mode") or "") else
                                     " (Keras)" if r.get("bf16_mode") else "")
            body.append([r["variant"], str(r["itex_loaded"]).lower(), "on" if r["onednn"] else "off", prec,
                         f"{r['images_per_second']:.1f}", f"{lo:.1f}-{hi:.1f}",
                         "baseline" if r["variant"] == "onednn_off" else _x(r.get("speedup_vs_onednn_off")),
                         "baseline" if r["variant"] == "onednn_on" else _x(r.get("speedup_vs_onednn_on")),
                         _f(loss, ".2g")])
        tables["training"] = (head, body)
    i = results.get("inference", {})
    if i.get("rows"):
        head = ["model", "engine", "p50 ms", "p99 ms", "latency speed-up", "images/s", "b/str/req",
                "throughput speed-up", "INT8 peak"]
        head2 = ["model", "engine", "agreement with TF", "metric (TF) / delta vs TF"]
        body, body2 = [], []
        for r in i["rows"]:
            if not r.get("available"):
                body.append([r["model"], r["engine"], f"not available: {r['reason']}"] + [""] * 6)
                body2.append([r["model"], r["engine"], "not available", ""])
                continue
            tp = r["throughput"]
            ag = r.get("agreement", {})
            agree = (f"top-1 {ag['top1_with_tf']:.3f}" if "top1_with_tf" in ag else
                     f"Dice {ag.get('dice_with_tf_mean', float('nan')):.3f}")
            m = r.get("metrics") or {}
            if r["engine"] == "tf_fp32":
                agree = "reference"
                delta = (f"acc {m['accuracy']:.3f}, F1 {m['macro_f1']:.3f}" if "accuracy" in m else
                         f"Dice {m['dice_mean']:.3f}" if "dice_mean" in m else "n/a")
            elif "accuracy_delta_vs_tf" in m:
                delta = f"acc {m['accuracy_delta_vs_tf']:+.3f}, F1 {m['macro_f1_delta_vs_tf']:+.3f}"
            elif "dice_delta_vs_tf" in m:
                delta = f"Dice {m['dice_delta_vs_tf']:+.3f}"
            else:
                delta = "n/a"
            n = ag.get("n")
            share = r.get("share_of_int8_peak")
            body.append([r["model"], r["engine"], f"{r['latency_ms']['median']:.2f}", f"{r['latency_ms']['p99']:.2f}",
                         "baseline" if r["engine"] == "tf_fp32" else _x(r["latency_speedup_vs_tf"]),
                         f"{tp['images_per_second']:.0f}",
                         f"{tp['batch']}/{tp.get('streams') or '-'}/{tp.get('requests') or '-'}",
                         "baseline" if r["engine"] == "tf_fp32" else _x(r["throughput_speedup_vs_tf"]),
                         "" if share is None else f"{share:.1%}"])
            body2.append([r["model"], r["engine"], agree + (f" (n={n})" if n and agree != "reference" else ""),
                          delta])
        tables["inference"] = (head, body)
        tables["inference_accuracy"] = (head2, body2)
    k = results.get("classify", {})
    if k.get("rows"):
        head = ["engine", "images", "seconds (median)", "images/s", "speed-up vs Keras", "agreement with Keras",
                "accuracy"]
        body = []
        for r in k["rows"]:
            if not r.get("available"):
                body.append([r["engine"], f"not available: {r['reason']}"] + [""] * 5)
                continue
            body.append([r["engine"], str(r["images"]), f"{r['seconds']['median']:.3f}",
                         _f(r["images_per_second"], ".1f"),
                         "baseline" if r["engine"] == "keras" else _x(r.get("speedup_vs_keras")),
                         _f(r.get("agreement_with_keras")), _f(r.get("accuracy"))])
        d = k.get("decode_only")
        if d:  # the ceiling decoding puts on every engine
            body.append(["decode + preprocess only", str(d["images"]),
                         f"{d['seconds']['median']:.3f}", _f(d["images_per_second"], ".1f"), "", "", ""])
        tables["classify"] = (head, body)
    return tables


TITLES = {"classical": "Classical: scikit-learn-intelex vs stock scikit-learn (median ±IQR seconds; speed-ups "
                        "with 95% intervals)",
          "training": "Training: images/s by TensorFlow configuration (each in its own process)",
          "inference": "Inference speed: TF FP32 vs OpenVINO FP32 / INT8 (b/str/req: best batch, streams, requests)",
          "inference_accuracy": "Inference accuracy: OpenVINO against TF FP32 on the same images",
          "classify": "classify end to end over a folder"}
SECTION_OF = {"inference_accuracy": "inference"}


def machine_line(m: dict) -> str:
    isa = ", ".join(k for k, v in (m.get("isa") or {}).items() if v) or "none of the listed"
    v = m.get("versions") or {}
    libs = ", ".join(f"{k} {v[k]}" for k in ("tensorflow", "intel-extension-for-tensorflow", "scikit-learn",
                                               "scikit-learn-intelex", "openvino", "nncf") if v.get(k))
    return (f"{m.get('cpu', '?')}, {m.get('cpus_usable', m.get('cores'))} CPUs"
            + (f" at {m['cpu_mhz'] / 1000:.2f} GHz" if m.get("cpu_mhz") else "")
            + f", {m.get('memory_gib', '?')} GiB; ISA: {isa}; {libs}")


def tf_line(info: dict) -> str:
    if not info:
        return "?"
    return (f"TensorFlow {info.get('tensorflow')}, oneDNN {'on' if info.get('onednn') else 'off'}, "
            f"ITEX {'loaded' if info.get('itex_loaded') else 'not loaded'}")


def markdown(results: dict) -> str:
    lines = [f"# neuralscan bench{' --quick' if results.get('quick') else ''}, {results.get('date', '')}", "",
             f"Machine: {machine_line(results.get('machine', {}))}.", ""]
    for name, (head, body) in table_rows(results).items():
        sec = results[SECTION_OF.get(name, name)]
        lines += [f"## {TITLES[name]}", ""]
        n_before = len(lines)
        if name == "classical":
            lines.append(f"Data: {sec['data']['kind']}, {sec['data']['source']}; {sec['data']['n']} rows x "
                         f"{sec['data']['features']} features; {sec['repeats']} timed calls per path.")
        elif name == "training":
            lines.append(f"Model: {sec['model']} at {sec['size']} px, batch {sec['batch']}, {sec['steps']} timed "
                         f"steps x {sec['repeats']} process(es) per variant; {sec['architecture_source']}.")
        elif name == "inference":
            lines.append(f"TF: {tf_line(sec.get('tf') or {})}.")
            for role, mm in sec.get("models", {}).items():
                lines.append(f"- {role}: {mm.get('weights') or mm.get('reason')}; IR: {mm.get('export') or '-'}; "
                             f"data: {mm.get('data') or '-'}")
            p = sec.get("int8_peak") or {}
            if p.get("ops_per_second"):
                lines.append(f"- INT8 peak: {p['cores']} cores x {p['ghz']:.2f} GHz x {p['ops_per_cycle_per_core']} "
                             f"ops/cycle = {p['ops_per_second'] / 1e12:.2f} TOPS (clock: {p['clock_source']})")
        lines += ([""] if len(lines) > n_before else []) + ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
        lines.append("")
    for name in SECTIONS:
        sec = results.get(name, {})
        if not sec.get("available") and not sec.get("skipped"):
            lines += [f"{name}: not available: {sec.get('reason')}", ""]
    lines += [f"Total {results.get('seconds', 0):.0f} s. Full figures: bench.json; chart: bench.png.", ""]
    return "\n".join(lines)
