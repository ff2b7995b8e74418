"""Stock scikit-learn or oneDAL (scikit-learn-intelex) estimators, side by side in one process.

The Intel engine imports the `sklearnex` estimator classes directly; `patch_sklearn()` is never called, so
the stock classes stay stock and both can be timed in the same run.
"""
from __future__ import annotations

import importlib
import time
import warnings

from ..errors import NeuralScanError

ENGINES = ("intel", "stock")
MODELS = ("svc", "rf", "knn", "logreg")
MODEL_NAMES = {"svc": "SVC (RBF)", "rf": "random forest", "knn": "k-nearest neighbours",
               "logreg": "logistic regression"}

# name -> (stock module, intel module, class)
_CLASSES = {
    "svc": ("sklearn.svm", "sklearnex.svm", "SVC"),
    "rf": ("sklearn.ensemble", "sklearnex.ensemble", "RandomForestClassifier"),
    "knn": ("sklearn.neighbors", "sklearnex.neighbors", "KNeighborsClassifier"),
    "logreg": ("sklearn.linear_model", "sklearnex.linear_model", "LogisticRegression"),
    "pca": ("sklearn.decomposition", "sklearnex.decomposition", "PCA"),
    "kmeans": ("sklearn.cluster", "sklearnex.cluster", "KMeans"),
}

class EngineError(NeuralScanError):
    """An unknown engine or estimator name, or the Intel extension is missing."""


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise EngineError(f"unknown engine '{engine}': choose {' or '.join(ENGINES)}")
    return engine


def estimator_class(name: str, engine: str):
    if name not in _CLASSES:
        raise EngineError(f"unknown model '{name}': choose one of {', '.join(MODELS)}")
    check_engine(engine)
    stock_mod, intel_mod, cls = _CLASSES[name]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(intel_mod if engine == "intel" else stock_mod)
    except ImportError as exc:
        raise EngineError(f"engine 'intel' needs scikit-learn-intelex ({exc})") from None
    return getattr(module, cls)


def make_estimator(name: str, engine: str = "intel", **params):
    """A fresh, unfitted estimator `name` (svc, rf, knn, logreg, pca, kmeans) from the chosen engine."""
    cls = estimator_class(name, engine)
    if name == "svc":
        params.setdefault("kernel", "rbf")
    try:
        return cls(**params)
    except TypeError as exc:
        raise EngineError(f"bad parameter for {name}: {exc}") from None


def fit_fastest(name: str, engines: list[str], X, **params) -> tuple[object, str, dict, str | None]:
    """Fit `name` with each engine, keep the faster fit. Returns (fitted, engine used, seconds per engine, note).

    Which path is faster depends on the step, the data shape and the machine (the issue measured sklearnex
    PCA with svd_solver="full" at 2x stock's time on its machine), so it is measured, not assumed; the note
    says which was used and why when both ran.
    """
    seconds, fitted = {}, {}
    for e in engines:
        est = make_estimator(name, e, **params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # untimed warm-up on a slice: first-call costs (imports, thread pools) are not the algorithm's
            try:
                make_estimator(name, e, **params).fit(X[: max(64, int(params.get("n_components") or 0),
                                                              4 * int(params.get("n_clusters") or 0))])
            except Exception:  # noqa: BLE001 - a warm-up that fails only means no warm-up
                pass
            with Timer() as t:
                est.fit(X)
        seconds[e], fitted[e] = t.seconds, est
    used = min(seconds, key=seconds.get)
    note = None
    if len(seconds) == 2:
        other = "stock" if used == "intel" else "intel"
        ratio = seconds[other] / seconds[used] if seconds[used] > 0 else float("inf")
        note = (f"{name}: {used} {seconds[used]:.2f} s vs {other} {seconds[other]:.2f} s "
                f"({ratio:.1f}x); used {used}" + (" because the Intel path was slower here" if used == "stock" else ""))
    return fitted[used], used, seconds, note


def engine_versions() -> dict:
    import sklearn

    out = {"scikit-learn": sklearn.__version__}
    try:
        import sklearnex

        out["scikit-learn-intelex"] = sklearnex.__version__
    except ImportError:
        out["scikit-learn-intelex"] = None
    return out


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
