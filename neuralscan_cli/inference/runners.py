"""Scoring images with a bundle, whatever engine holds the network, and loading data the way the bundle saw it.

`make_runner(bundle, engine)` returns a `Runner` whose `predict(images01)` takes float32 (N, S, S) or
(N, S, S, 1) images in [0, 1] and returns the network's outputs as float32 numpy: (N, C) class probabilities
for a classifier, (N, S, S, 1) tumour probabilities for a segmenter. The same images give the same outputs
from every engine (up to INT8 quantisation).

`load_images_for_bundle` and `load_cache_for_bundle` give the images, labels, masks and per-image records of
raw data (re-preprocessed with the bundle's own saved parameters) or of a preprocess cache, labels mapped to
the bundle's class order by name.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import NeuralScanError
from ..io.base import one_line
from .bundle import BundleError, ModelBundle

def _shape_text(dims: tuple) -> str:
    return "x".join("?" if d is None else str(d) for d in dims) or "scalar"


class Runner(ABC):
    """One loaded network. `predict` batches internally; outputs are float32 numpy."""

    engine: str = ""

    def __init__(self, bundle: ModelBundle):
        self.bundle = bundle
        self.size = bundle.size

    def _check_network(self, where, input_shape, output_shape) -> None:
        """The network must fit model.json (its size, its classes): a model file from another bundle would
        otherwise fail deep inside the engine, or give rows under the wrong class names."""
        dims = lambda shape: tuple(None if d is None else int(d) for d in list(shape)[1:])  # noqa: E731
        expected_in = (self.size, self.size, 1)
        got_in = dims(input_shape)
        if len(got_in) != 3 or any(g is not None and g != e for g, e in zip(got_in, expected_in)):
            raise BundleError(f"{where}: the network takes {_shape_text(got_in)} images, model.json says "
                              f"{self.size}x{self.size}x1; the model file does not belong to this bundle")
        got_out = dims(output_shape)
        if self.bundle.task == "classify":
            n = len(self.bundle.classes)
            if len(got_out) != 1 or (got_out[0] is not None and got_out[0] != n):
                raise BundleError(f"{where}: the network outputs {_shape_text(got_out)} values per image, model.json "
                                  f"lists {n} classes ({', '.join(self.bundle.classes)}); the model file does not "
                                  "belong to this bundle")
        elif len(got_out) != 3 or got_out[-1] not in (1, None):
            raise BundleError(f"{where}: the network outputs {_shape_text(got_out)} per image, not a one-channel "
                              "mask; the model file does not belong to this bundle")

    def _as_input(self, images01: np.ndarray) -> np.ndarray:
        x = np.asarray(images01, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[1:] != (self.size, self.size, 1):
            raise NeuralScanError(f"{self.bundle.name} takes images of {self.size}x{self.size}x1, "
                                  f"got an array shaped {tuple(np.shape(images01))}")
        return np.ascontiguousarray(x)

    def predict(self, images01: np.ndarray, batch_size: int = 32, *, calibrated: bool = True) -> np.ndarray:
        """The network's outputs; a classifier's probabilities pass through the bundle's temperature unless
        `calibrated` is False (the raw outputs, which `calibrate` fits the temperature on)."""
        x = self._as_input(images01)
        if len(x) == 0:
            return np.zeros((0, *self._output_tail()), dtype=np.float32)
        out = self._predict(x, max(1, int(batch_size))).astype(np.float32, copy=False)
        return self.calibrate(out) if calibrated else out

    def calibrate(self, outputs: np.ndarray) -> np.ndarray:
        """A classifier's raw probabilities through the bundle's temperature; every path that scores with this
        runner (here, and the asynchronous queue of `classify`) passes through this one place."""
        if self.bundle.task == "classify" and self.bundle.temperature != 1.0:
            from ..evaluation.calibration import apply_temperature

            return apply_temperature(outputs, self.bundle.temperature)
        return outputs

    def _output_tail(self) -> tuple[int, ...]:
        if self.bundle.task == "classify":
            return (len(self.bundle.classes),)
        return (self.size, self.size, 1)

    @abstractmethod
    def _predict(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        """x is float32 (N, S, S, 1), N >= 1."""


def load_keras_model(bundle: ModelBundle):
    """The bundle's Keras network (compile=False: scoring needs no optimizer state)."""
    path = bundle.path_of("keras")
    if path is None and bundle.has_keras:  # an ensemble shipped as its members' weights files only
        return _rebuild_from_weights(bundle, bundle.keras_member_paths()[0])
    if path is None:
        raise BundleError(f"{bundle.root}: the bundle holds no Keras model (model.keras); "
                          f"it has: {', '.join(bundle.available_engines()) or 'nothing'}")
    try:  # registers the project's custom layers, if that package is present
        import neuralscan_cli.models  # noqa: F401
    except ImportError:
        pass
    import keras

    weights = path if path.name.endswith(".weights.h5") else (
        bundle.path_of("keras_weights") or path.with_name("model.weights.h5"))
    if path.suffix == ".keras":
        try:
            return keras.models.load_model(path, compile=False)
        except (OSError, ValueError, TypeError) as exc:
            # a .keras file does not load across Keras 2 and 3; the weights file plus the architecture does
            if not weights.is_file() and bundle.keras_member_paths() is None:
                raise BundleError(f"{path}: cannot load the Keras model ({one_line(str(exc))})") from None
    return _rebuild_from_weights(bundle, weights)


def _rebuild_from_weights(bundle: ModelBundle, weights: Path):
    """The registry's architecture with the bundle's saved options, then its weights (portable across Keras)."""
    from ..models import create_model, model_options

    name = bundle.meta.get("architecture")
    try:
        valid = model_options(name)
        opts = dict(bundle.meta.get("architecture_options") or {})
        opts["input_size"] = bundle.size
        if "num_classes" in valid:
            opts["num_classes"] = len(bundle.classes)
        if "weights" in valid:
            opts["weights"] = "none"
        model = create_model(name, **opts)
        members = bundle.keras_member_paths()
        if members:  # an ensemble keeps one weights file per member (each a few MB, not one file of them all)
            from ..models.ensemble import member_models

            subs = member_models(model)
            if len(subs) != len(members):
                raise ValueError(f"{len(members)} member weight files for {len(subs)} members")
            for sub, path in zip(subs, members):
                sub.load_weights(str(path))
        else:
            model.load_weights(str(weights))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"{weights}: cannot rebuild the '{name}' network from its weights ({one_line(str(exc))})") \
            from None
    return model


class KerasRunner(Runner):
    engine = "keras"

    def __init__(self, bundle: ModelBundle, model=None):
        super().__init__(bundle)
        self.model = model if model is not None else load_keras_model(bundle)
        outputs = self.model.outputs if isinstance(self.model.outputs, (list, tuple)) else [self.model.outputs]
        self._check_network(bundle.path_of("keras") or bundle.root, self.model.inputs[0].shape, outputs[0].shape)

    def _predict(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        out = self.model.predict(x, batch_size=batch_size, verbose=0)
        if isinstance(out, (list, tuple)):  # a network with auxiliary outputs: the first is the prediction
            out = out[0]
        return np.asarray(out)


class OpenVINORunner(Runner):
    """OpenVINO IR on the CPU plugin, several batches in flight at once (throughput mode)."""

    def __init__(self, bundle: ModelBundle, engine: str):
        super().__init__(bundle)
        self.engine = engine
        kind = engine.replace("-", "_")  # openvino-int8 -> openvino_int8, the bundle's files key
        xml = bundle.path_of(kind)
        if xml is None:
            raise BundleError(f"{bundle.root}: no {engine} model in this bundle")
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(xml))
        except RuntimeError as exc:
            raise BundleError(f"{xml}: cannot read the OpenVINO model ({str(exc).splitlines()[0]})") from None
        in_shape, out_shape = model.inputs[0].partial_shape, model.outputs[0].partial_shape
        if not in_shape.rank.is_dynamic and not out_shape.rank.is_dynamic:
            static = lambda s: [None if d.is_dynamic else d.get_length() for d in s]  # noqa: E731
            self._check_network(xml, static(in_shape), static(out_shape))
        shape = in_shape
        if shape.rank.is_dynamic or shape.rank.get_length() != 4 or not shape[0].is_dynamic:
            # IR exported with a fixed batch: make the batch free so any batch size runs without recompiling
            model.reshape([-1, self.size, self.size, 1])
        config = {"PERFORMANCE_HINT": "THROUGHPUT"}
        if engine == "openvino-fp32":
            # the CPU plugin otherwise runs FP32 IR in bf16 where the CPU supports it; "fp32" should mean fp32
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self.compiled = core.compile_model(model, "CPU", config)
        self._queue_cls = ov.AsyncInferQueue
        self._queue = None  # made on first use: as many requests as the plugin finds optimal

    def _predict(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        starts = range(0, len(x), batch_size)
        if len(starts) == 1:
            # share_inputs=False: a shared input stays bound to the compiled model's own request after the call;
            # with the async queue also in use, that dangling buffer corrupted the heap (mixed-size batches)
            return np.array(self.compiled(x, share_inputs=False)[0])
        results: dict[int, np.ndarray] = {}

        def done(request, start):
            results[start] = np.array(request.get_output_tensor(0).data)  # copy: the request buffer is reused

        if self._queue is None:
            self._queue = self._queue_cls(self.compiled)
        queue = self._queue
        queue.set_callback(done)
        for start in starts:
            queue.start_async({0: x[start:start + batch_size]}, start)
        queue.wait_all()
        return np.concatenate([results[s] for s in starts])


def engine_of_file(bundle: ModelBundle, path: str | Path) -> str | None:
    """The engine a model file inside the bundle belongs to (model.keras, an IR's model.xml), else None."""
    path = Path(path).expanduser().resolve()
    for engine in bundle.available_engines():
        f = bundle.path_of(engine.replace("-", "_"))
        if f is not None and f.resolve() in (path, path.with_suffix(".xml")):
            return engine
    weights = bundle.path_of("keras_weights")  # the Keras model's portable weights: the Keras engine
    if weights is not None and weights.resolve() == path and bundle.has_keras:
        return "keras"
    return None


def make_runner(bundle: ModelBundle, engine: str = "auto") -> Runner:
    """A runner on the engine asked for ('auto': the fastest the bundle holds)."""
    chosen = bundle.resolve_engine(engine)
    if chosen == "keras":
        return KerasRunner(bundle)
    return OpenVINORunner(bundle, chosen)


# --------------------------------------------------------------------------------------------- data loading

def _class_index(bundle: ModelBundle) -> dict[str, int] | None:
    return {c: k for k, c in enumerate(bundle.classes)} if bundle.task == "classify" else None


def _known_labels(bundle: ModelBundle) -> set[str]:
    """Labels a classifier can be scored on: its classes and its partial labels (a set of classes)."""
    return set(bundle.classes) | set(bundle.partial_labels)


def _unknown_labels_error(unknown: set[str], bundle: ModelBundle) -> NeuralScanError:
    partial = "".join(f"; '{k}' means one of {', '.join(v)}" for k, v in bundle.partial_labels.items())
    return NeuralScanError(f"label(s) {', '.join(sorted(unknown))} are not classes of model {bundle.name} "
                           f"(its classes: {', '.join(bundle.classes)}{partial})")


def load_images_for_bundle(paths_or_source: str | Path | Sequence[str | Path], bundle: ModelBundle, *,
                           workers: int | None = None, on_problem: Callable[[str], None] | None = None):
    """Raw data (CSV manifest, folder holding one, folder per class, loose scans) preprocessed as the bundle was.

    Returns (images01, labels, masks, records):
      images01  float32 (N, S, S) in [0, 1], bit-identical to a cache built with the same parameters
      labels    for a classifier: int64 class indices in the bundle's order, -1 where unlabelled or where the
                label is a partial label (its name is in the record); None when no
                image carries a label or the bundle is a segmenter (label names are in the records)
      masks     uint8 (N, S, S) 0/1, zeros where no mask was given; None when no image has a mask
      records   one dict per image: path, slice, label (name or ''), group, has_mask, spacing ((row, col) mm
                of one output pixel, or None)
    A label that is not one of a classifier's classes raises NeuralScanError naming it and the classes.
    Files that cannot be read are skipped and reported through `on_problem` (one line each).
    """
    from ..data import discover, process_file
    from ..io import ScanReadError

    sources = [paths_or_source] if isinstance(paths_or_source, (str, Path)) else list(paths_or_source)
    items, problems = [], []
    for src in sources:
        found, found_problems = discover(src)
        items += found
        problems += found_problems
    index = _class_index(bundle)
    if index is not None:
        unknown = {it.label for it in items if it.label is not None and it.label not in _known_labels(bundle)}
        if unknown:
            raise _unknown_labels_error(unknown, bundle)
    cfg = bundle.preprocessing
    if cfg.size != bundle.size:
        raise BundleError(f"{bundle.root}: preprocessing size {cfg.size} differs from the input size {bundle.size}")

    def read(item):
        try:
            return process_file(item, cfg)
        except ScanReadError as exc:
            return str(exc)
        except (OSError, ValueError, MemoryError) as exc:
            return f"{item.path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    # threads, not processes: decoding and resizing release the GIL, and forking a process that holds
    # TensorFlow or OpenVINO is unsafe
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(read, items))

    images, masks, records = [], [], []
    for item, res in zip(items, results):
        if isinstance(res, str):
            problems.append(res)
            continue
        imgs, msks, has_mask, _thumbs, metas = res
        for img, msk, has, meta in zip(imgs, msks, has_mask, metas):
            label = item.label or meta.get("file_label") or ""
            if index is not None and label and label not in _known_labels(bundle):  # a label inside the file
                raise _unknown_labels_error({label}, bundle)
            spacing = None
            if meta.get("spacing"):
                factor = meta["side"] / cfg.size
                spacing = (float(meta["spacing"][0]) * factor, float(meta["spacing"][1]) * factor)
            images.append(img)
            masks.append(msk)
            records.append({"path": str(item.path), "slice": int(meta["slice"]), "label": label,
                            "group": item.group or meta.get("patient_key") or str(item.path),
                            "has_mask": bool(has), "spacing": spacing})
    for p in problems:
        if on_problem:
            on_problem(p)
    size = bundle.size
    images01 = (np.stack(images).astype(np.float32) / 255.0 if images
                else np.zeros((0, size, size), np.float32))
    mask_arr = np.stack(masks).astype(np.uint8) if any(r["has_mask"] for r in records) else None
    return images01, _labels_for(records, index), mask_arr, records


def _labels_for(records: list[dict], index: dict[str, int] | None) -> np.ndarray | None:
    if index is None or not any(r["label"] for r in records):
        return None
    return np.array([index.get(r["label"], -1) for r in records], dtype=np.int64)


def preprocessing_differences(a, b) -> list[str]:
    """'name: a vs b' for every preprocessing parameter that differs between two PreprocessConfigs."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: {da.get(k)} vs {db.get(k)}" for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]


def load_cache_for_bundle(cache, bundle: ModelBundle, split: str | None = "val", *,
                          on_warning: Callable[[str], None] | None = None):
    """A preprocess cache's images for one split (None: all), as `load_images_for_bundle` returns them.

    Every label of the cache must be one of a classifier's classes or partial labels (order may differ:
    labels are mapped by name; a cache may hold fewer classes); otherwise NeuralScanError names the others. A cache preprocessed differently from the bundle is scored
    anyway, with a warning through `on_warning`.
    """
    from ..data import DatasetCache

    if not isinstance(cache, DatasetCache):
        cache = DatasetCache.open(cache)
    if cache.size != bundle.size:
        raise NeuralScanError(f"{cache.root}: cache images are {cache.size}x{cache.size} but model {bundle.name} "
                              f"takes {bundle.size}x{bundle.size}; preprocess again with --size {bundle.size}")
    index = _class_index(bundle)
    if index is not None and set(cache.classes) - _known_labels(bundle):
        raise _unknown_labels_error(set(cache.classes) - _known_labels(bundle), bundle)
    diffs = preprocessing_differences(cache.preprocessing, bundle.preprocessing)
    if diffs and on_warning:
        on_warning(f"the cache was preprocessed differently from model {bundle.name} (cache vs model: "
                   f"{'; '.join(diffs)}); results may not reflect the model")
    idx = cache.indices(split)
    if len(idx) == 0:
        present = ", ".join(f"{s} {int((cache.splits == s).sum())}" for s in sorted(set(cache.splits.tolist())))
        raise NeuralScanError(f"{cache.root}: split '{split}' holds no images (splits: {present or 'none'})")
    images01 = np.asarray(cache.images[idx], dtype=np.float32) / 255.0
    has_mask = cache.has_mask[idx]
    cache_masks = cache.masks
    masks = np.asarray(cache_masks[idx], dtype=np.uint8) if cache_masks is not None and has_mask.any() else None
    spacing = cache.spacing[idx]
    records = []
    for k, i in enumerate(idx):
        r = cache.records[i]
        sp = None
        if np.isfinite(spacing[k]).all():
            factor = float(r["side"]) / cache.size  # source pixels per cache pixel
            sp = (float(spacing[k][0]) * factor, float(spacing[k][1]) * factor)
        records.append({"path": r["path"], "slice": int(r["slice"]), "label": r["label"], "group": r["group"],
                        "has_mask": bool(has_mask[k]), "spacing": sp})
    return images01, _labels_for(records, index), masks, records


def load_data_for_bundle(data: str | Path, bundle: ModelBundle, split: str | None = None, *,
                         on_warning: Callable[[str], None] | None = None,
                         on_problem: Callable[[str], None] | None = None):
    """A preprocess cache's split (None: 'val'; 'all': every split) or raw data, as the bundle sees it:
    (images01, labels, masks, records, kind) with kind 'cache' or 'raw' (raw data is read whole, so a split
    other than 'all' is refused; unreadable files go to `on_problem`). NeuralScanError when nothing is left."""
    data = Path(data)
    problems: list[str] = []
    if (data / "dataset.json").is_file():
        split = split or "val"
        loaded = load_cache_for_bundle(data, bundle, None if split == "all" else split, on_warning=on_warning)
        kind = "cache"
    elif split not in (None, "all"):
        raise NeuralScanError(f"--split {split}: {data} is raw data, which has no splits and is scored whole "
                              "(splits are a preprocess cache's)")
    else:
        loaded = load_images_for_bundle(data, bundle, on_problem=problems.append)
        kind = "raw"
        if on_problem and len(loaded[0]):
            for p in problems:
                on_problem(p)
    if len(loaded[0]) == 0:
        raise NeuralScanError(f"{data}: no images to score" + (f" ({problems[0]})" if problems else ""))
    return (*loaded, kind)


TASK_EXAMPLE = {"classify": "bundled", "segment": "bundled-segmenter"}


def load_for_task(model, task: str, engine: str = "auto"):
    """(bundle, runner) for a model spec that must be a `task` model. A model file named explicitly
    (model.keras, model.xml) picks its own engine; BundleError for a missing model or the wrong task."""
    from .bundle import load_bundle

    bundle = model if isinstance(model, ModelBundle) else load_bundle(model)
    if bundle.task != task:
        raise BundleError(f"{bundle.name} is a {bundle.task} model; {task} needs a "
                          f"{'classification' if task == 'classify' else 'segmentation'} model "
                          f"(e.g. {TASK_EXAMPLE[task]})")
    if bundle.preprocessing.size != bundle.size:
        raise BundleError(f"{bundle.root}: preprocessing size {bundle.preprocessing.size} differs from the input "
                          f"size {bundle.size}")
    if engine == "auto" and not isinstance(model, ModelBundle) and Path(str(model)).is_file():
        engine = engine_of_file(bundle, model) or ("keras" if str(model).endswith(".keras") else engine)
    return bundle, make_runner(bundle, engine)
