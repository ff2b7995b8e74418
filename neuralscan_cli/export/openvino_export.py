"""`export_bundle`: a trained Keras bundle to OpenVINO IR, FP32 always, INT8 on request with an accuracy check.

The Keras network is converted in memory (`openvino.convert_model`) with a free batch dimension, so one IR
serves batch 1 (latency) and larger batches (throughput), and saved with FP32 weights
(`compress_to_fp16=False`: the CPU plugin computes in FP32 either way, and FP16 weights would only shrink the
file at the cost of a small, avoidable difference from Keras).

INT8 is NNCF post-training quantisation of that OpenVINO model: activation ranges from ~300 calibration
images (by default a random sample of the training split of the cache the model was trained on, as recorded
in model.json), then bias correction (the full, layer-by-layer kind: on the shipped classifier it kept 98.8%
of the top-1 calls against 97.9% with fast bias correction, for seconds more). The channel-attention MLPs
stay FP32 (`models.INT8_KEEP_FP32`, `fp32_scope`): quantising them moved ~8% of the shipped classifier's
calls for no speed. Preset PERFORMANCE (symmetric weights and activations) is the default: it is what the
CPU's INT8 instructions run fastest, NNCF makes the quantisers after ReLU unsigned so no range is wasted on
the project's ReLU networks, and on the project's tiny test networks (ReLU and swish CNNs, U-Net) it lost no
more than MIXED (asymmetric activations), which stays available for networks whose activations sit far from
zero on one side.

The INT8 model is then checked on validation images (by default the validation split of the same cache): the
FP32 and INT8 IR are scored side by side (classifier: accuracy, macro-F1 and how often the two agree on the
top class; segmenter: mean Dice) and INT8 is kept only if it loses at most `max_drop_accuracy` of accuracy
(`max_drop_dice` of Dice). Otherwise, with `accuracy_control`, NNCF's accuracy-aware quantisation retries
(reverting the most harmful layers to FP32 until the drop is within the margin); if INT8 still loses too
much it is not written, the FP32 IR is, and the report says why (`int8_accepted` False, `message`).

model.json travels with the IR: classes, input and preprocessing as trained, the training provenance, and an
`export` section (versions, calibration and validation data, sizes, the accuracy check); the metrics land in
`metrics.val_fp32` / `metrics.val_int8`. The same facts are embedded in the IR's rt_info under "neuralscan",
so an IR copied out of its bundle still says what it is.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..data.labels import in_set, label_sets
from ..errors import NeuralScanError
from ..inference.bundle import ModelBundle, load_bundle

PRESETS = ("performance", "mixed")
DEFAULT_CALIBRATION_SIZE = 300
FP32_DIR = Path("openvino") / "fp32"
INT8_DIR = Path("openvino") / "int8"
SEG_THRESHOLD = 0.5
PREDICT_BATCH = 16
POSTPROCESS_IMAGES = 1000  # training images (a seeded sample) on which a segmenter's mask rule is chosen
SEED = 0


@dataclass
class ExportReport:
    out_dir: Path
    model: str
    task: str
    fp32_path: Path | None = None
    int8_path: Path | None = None  # None when INT8 was not asked for or not accepted
    int8_requested: bool = False
    int8_accepted: bool | None = None  # None when INT8 was not asked for
    accuracy_control_used: bool = False
    preset: str | None = None
    calibration: dict | None = None  # source, kind (cache/raw), split, n
    validation: dict | None = None
    metric: str | None = None  # what the check compares: "accuracy" or "dice_mean"
    max_drop: float | None = None
    drop: float | None = None  # FP32 minus INT8 on `metric` (positive: INT8 is worse)
    val_fp32: dict | None = None
    val_int8: dict | None = None
    fp32_max_abs_diff: float | None = None  # Keras vs FP32 IR on a few images
    sizes: dict = field(default_factory=dict)  # bytes of model.keras, fp32 and int8 IR (.xml + .bin)
    message: str | None = None  # why INT8 was rejected, one line
    postprocessing: dict | None = None  # segmenters: the mask rule chosen on training images
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- data

@dataclass
class _Data:
    """Images as the cache stores them (uint8 0..255 = [0, 1]), with labels (classifier) or masks (segmenter)."""

    images: np.ndarray  # uint8 (N, S, S)
    labels: np.ndarray | None  # int64 class indices in the bundle's order, -1 for a partial label
    masks: np.ndarray | None  # uint8 (N, S, S) 0/1
    info: dict  # source, kind, split, n
    sets: np.ndarray | None = None  # classifiers: (N, K) 1 on each image's allowed classes (data.labels)

    def __len__(self) -> int:
        return len(self.images)

    def batch01(self, start: int, stop: int) -> np.ndarray:
        return (self.images[start:stop].astype(np.float32) / 255.0)[..., None]


def _is_cache(path: str | Path) -> bool:
    return (Path(path) / "dataset.json").is_file()


def _sample(n: int, limit: int | None) -> np.ndarray:
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(SEED).choice(n, limit, replace=False))


def _from_cache(path: str | Path, bundle: ModelBundle, split: str | None, *, limit: int | None,
                need_truth: bool) -> _Data:
    from ..data import DatasetCache
    from ..evaluation import segmentation_truth_rows

    from ..inference.runners import preprocessing_differences

    cache = DatasetCache.open(path)
    if cache.size != bundle.size:
        raise NeuralScanError(f"{cache.root}: cache images are {cache.size}x{cache.size} but model {bundle.name} "
                              f"takes {bundle.size}x{bundle.size}; preprocess again with --size {bundle.size}")
    diffs = preprocessing_differences(cache.preprocessing, bundle.preprocessing)
    if diffs:  # INT8 ranges fitted, or checked, on images the model never sees would pass a wrong model
        raise NeuralScanError(f"{cache.root}: preprocessed differently from model {bundle.name} (cache vs model: "
                              f"{'; '.join(diffs)}); give a cache built with the model's settings, or raw scans")
    idx = cache.indices(split)
    if split is not None and len(idx) == 0:  # e.g. a cache built without a validation split: use all of it
        split, idx = None, cache.indices(None)
    names = [cache.records[i]["label"] for i in idx]
    labels = masks = None
    if need_truth and bundle.task == "classify":
        index = {c: k for k, c in enumerate(bundle.classes)}
        unknown = sorted({n for n in names if n and n not in index and n not in bundle.partial_labels})
        if unknown:
            raise NeuralScanError(f"{cache.root}: label(s) {', '.join(unknown)} are not classes of model "
                                  f"{bundle.name} (its classes: {', '.join(bundle.classes)})")
        # unlabelled images cannot be checked; a partial label is right when the call is in its set
        keep = np.array([n in index or n in bundle.partial_labels for n in names], dtype=bool)
        idx, names = idx[keep], [n for n, k in zip(names, keep) if k]
        labels = np.array([index.get(n, -1) for n in names], dtype=np.int64)
    elif need_truth:
        keep = segmentation_truth_rows(cache.has_mask[idx], names)  # masks, and no_tumor images (empty truth)
        idx = idx[keep]
    pick = _sample(len(idx), limit)
    idx = idx[pick]
    sets = None
    if labels is not None:
        labels = labels[pick]
        sets = label_sets([names[i] for i in pick], bundle.classes, bundle.partial_labels)
    if len(idx) == 0:
        what = "labelled images" if bundle.task == "classify" else "images with a mask or the label no_tumor"
        raise NeuralScanError(f"{cache.root}: no {what} in split '{split or 'all'}'" if need_truth
                              else f"{cache.root}: holds no images")
    images = np.asarray(cache.images[idx])
    if need_truth and bundle.task == "segment":
        cm = cache.masks
        masks = np.asarray(cm[idx], dtype=np.uint8) if cm is not None else np.zeros(images.shape, np.uint8)
    return _Data(images, labels, masks, {"source": str(cache.root), "kind": "cache", "split": split or "all",
                                         "n": int(len(idx))}, sets)


def _from_raw(path: str | Path, bundle: ModelBundle, *, limit: int | None, need_truth: bool,
              on_warning: Callable[[str], None] | None) -> _Data:
    from ..evaluation import segmentation_truth_rows
    from ..inference import load_images_for_bundle

    problems: list[str] = []
    images01, labels, masks, records = load_images_for_bundle(path, bundle, on_problem=problems.append)
    if problems and on_warning:
        on_warning(f"{len(problems)} file(s) of {path} skipped (first: {problems[0]})")
    keep = np.ones(len(images01), dtype=bool)
    if need_truth and bundle.task == "classify":
        if labels is None:
            raise NeuralScanError(f"{path}: the images carry no labels; the accuracy check needs labelled images")
        keep = (labels >= 0) | np.array([r["label"] in bundle.partial_labels for r in records], dtype=bool)
    elif need_truth:
        keep = segmentation_truth_rows([r["has_mask"] for r in records], [r["label"] for r in records])
    idx = np.nonzero(keep)[0]
    idx = idx[_sample(len(idx), limit)]
    if len(idx) == 0:
        raise NeuralScanError(f"{path}: no usable images" + (f" ({problems[0]})" if problems else ""))
    images = np.rint(images01[idx] * 255.0).astype(np.uint8)  # exact: they were cache-style uint8 / 255
    lab = labels[idx] if need_truth and labels is not None and bundle.task == "classify" else None
    sets = None if lab is None else label_sets([records[i]["label"] for i in idx], bundle.classes,
                                                bundle.partial_labels)
    msk = None
    if need_truth and bundle.task == "segment":
        msk = masks[idx] if masks is not None else np.zeros(images.shape, np.uint8)
    return _Data(images, lab, msk, {"source": str(Path(path).resolve()), "kind": "raw", "split": "all",
                                    "n": int(len(idx))}, sets)


def _load(path: str | Path, bundle: ModelBundle, split: str | None, *, limit: int | None, need_truth: bool,
          on_warning) -> _Data:
    if not Path(path).exists():
        raise NeuralScanError(f"{path}: no such file or folder")
    if _is_cache(path):
        return _from_cache(path, bundle, split, limit=limit, need_truth=need_truth)
    return _from_raw(path, bundle, limit=limit, need_truth=need_truth, on_warning=on_warning)


def _training_data(bundle: ModelBundle, on_warning=None) -> tuple[Path | None, str, str]:
    """(the training cache recorded in model.json if it is still on disk and still preprocessed as the model
    expects, train split name, val split name)."""
    data = (bundle.meta.get("training") or {}).get("data") or {}
    cache = data.get("cache")
    path = Path(cache) if cache and _is_cache(cache) else None
    if path is not None:
        from ..data import DatasetCache
        from ..inference.runners import preprocessing_differences

        try:
            opened = DatasetCache.open(path)
            diffs = preprocessing_differences(opened.preprocessing, bundle.preprocessing)
            if data.get("split_counts") and opened.info.get("split_counts") != data["split_counts"]:
                diffs.append("split otherwise (its validation split may hold training images)")
        except Exception:  # noqa: BLE001 -- an unreadable cache is as good as none
            diffs = ["unreadable"]
        if diffs:  # rebuilt since: its images or splits are not the ones the model was trained with
            if on_warning:
                on_warning(f"the training cache {path} recorded in model.json has changed since ({'; '.join(diffs)});"
                           f" it is not used")
            path = None
    return path, data.get("train_split") or "train", data.get("val_split") or "val"


# ------------------------------------------------------------------------------------------ inference

def _compile(ov_model, fp32: bool):
    import openvino as ov

    config = {"PERFORMANCE_HINT": "THROUGHPUT"}
    if fp32:  # as OpenVINORunner: no silent bf16 on CPUs that have it
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return ov.Core().compile_model(ov_model, "CPU", config)


def _predict(compiled, data: _Data) -> np.ndarray:
    """Outputs for every image, several requests in flight."""
    import openvino as ov

    results: dict[int, np.ndarray] = {}

    def done(request, start):
        results[start] = np.array(request.get_output_tensor(0).data)

    queue = ov.AsyncInferQueue(compiled)
    queue.set_callback(done)
    starts = list(range(0, len(data), PREDICT_BATCH))
    for s in starts:
        queue.start_async({0: data.batch01(s, s + PREDICT_BATCH)}, s)
    queue.wait_all()
    return np.concatenate([results[s] for s in starts])


def _dice_per_image(masks: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Dice per image at the export threshold (evaluation.metrics.dice_per_image)."""
    from ..evaluation.metrics import dice_per_image

    return dice_per_image(masks, probs, SEG_THRESHOLD)


def _choose_postprocessing(compiled, cache: Path, bundle: ModelBundle, split: str, on_warning) -> dict:
    from ..inference.segmentation import choose_min_component

    data = _load(cache, bundle, split, limit=POSTPROCESS_IMAGES, need_truth=True, on_warning=on_warning)
    best, scores = choose_min_component(_predict(compiled, data), data.masks, SEG_THRESHOLD)
    return {"threshold": SEG_THRESHOLD, "min_component": best,
            "chosen_on": {**data.info, "criterion": "mean Dice, an empty truth predicted empty scoring 1",
                          "mean_dice": {str(k): round(v, 4) for k, v in scores.items()}}}


def _metrics(task: str, data: _Data, outputs: np.ndarray, n_classes: int) -> dict:
    from ..evaluation import macro_f1

    if task == "classify":
        # accuracy: the call is one of the image's allowed classes (its class, or a partial label's set);
        # macro-F1 over the images of one class
        pred = outputs.argmax(1)
        single = data.labels >= 0
        m = {"n": int(len(pred)), "accuracy": float(in_set(data.sets, pred).mean()),
             "macro_f1": float(macro_f1(data.labels[single], pred[single], n_classes))}
        return m | ({"n_partial": int((~single).sum())} if not single.all() else {})
    return {"n": int(len(outputs)), "dice_mean": float(_dice_per_image(data.masks, outputs).mean()),
            "threshold": SEG_THRESHOLD}


class _Items:
    """A re-iterable, lazily built sequence of data items for nncf.Dataset (memory stays at one batch)."""

    def __init__(self, data: _Data, with_truth: bool):
        self.data, self.with_truth = data, with_truth

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator:
        d = self.data
        for i in range(len(d)):
            x = d.batch01(i, i + 1)
            if not self.with_truth:
                yield x
            else:
                yield x, (d.sets[i] if d.sets is not None else d.masks[i])


def _validation_fn(task: str):
    """NNCF accuracy control's metric: higher is better, computed on (image, truth) items."""
    def validate(compiled_model, items) -> float:
        scores = []
        for x, truth in items:
            out = np.asarray(compiled_model(x)[0])
            if task == "classify":  # truth: the allowed classes
                scores.append(float(truth[out[0].argmax()] > 0))
            else:
                scores.append(float(_dice_per_image(truth[None], out)[0]))
        return float(np.mean(scores)) if scores else 0.0
    return validate


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF prints INFO lines and progress bars on stdout; the command shows its own steps instead."""
    import nncf

    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf.set_log_level(level or logging.INFO)


# -------------------------------------------------------------------------------------------- export

def fp32_scope(ov_model) -> list[str]:
    """Names of the nodes INT8 quantisation leaves in FP32 (models.INT8_KEEP_FP32: channel-attention MLPs)."""
    import re

    from ..models import INT8_KEEP_FP32  # imports keras, which an export has loaded anyway

    patterns = [re.compile(p) for p in INT8_KEEP_FP32]
    return sorted({op.get_friendly_name() for op in ov_model.get_ops()
                   if op.get_type_name() not in ("Constant", "Parameter", "Result")
                   and any(p.fullmatch(op.get_friendly_name()) for p in patterns)})


def _ir_bytes(xml: Path) -> int:
    return sum(p.stat().st_size for p in (xml, xml.with_suffix(".bin")) if p.is_file())


def _versions() -> dict:
    import keras
    import nncf
    import openvino as ov

    from .. import __version__

    return {"neuralscan": __version__, "openvino": ov.get_version(), "nncf": nncf.__version__,
            "keras": keras.__version__}


def _rt_info(ov_model, bundle: ModelBundle, precision: str) -> None:
    """What the IR is, inside the IR: so a copied .xml still names its classes and preprocessing."""
    info = {"format": bundle.meta.get("format"), "task": bundle.task, "name": bundle.name,
            "classes": bundle.classes, "input": bundle.meta.get("input"),
            "preprocessing": bundle.meta.get("preprocessing"), "precision": precision}
    ov_model.set_rt_info(json.dumps(info), ["neuralscan", "bundle"])


def _check_out_dir(out_dir: Path, src_root: Path) -> bool:
    """True when exporting into the source bundle itself."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NeuralScanError(f"{out_dir}: exists and is not a folder")
    in_place = out_dir.exists() and out_dir.resolve() == src_root.resolve()
    if out_dir.is_dir() and not in_place and any(out_dir.iterdir()) and not (out_dir / "model.json").is_file():
        raise NeuralScanError(f"{out_dir}: a folder that is not empty and not a model bundle; choose another --out")
    return in_place


def export_bundle(src_spec: str | Path, out_dir: str | Path, *, int8: bool = False,
                  calibration: str | Path | None = None, calibration_size: int | None = None,
                  max_drop_accuracy: float | None = None, max_drop_dice: float | None = None,
                  accuracy_control: bool = False, validation: str | Path | None = None, preset: str | None = None,
                  copy_keras: bool = True,
                  gate: str | None = None, on_step: Callable[[str], None] | None = None,
                  on_warning: Callable[[str], None] | None = None) -> ExportReport:
    """Write the OpenVINO IR of a bundle's Keras model into `out_dir` (see the module notes).

    User mistakes (no Keras model, no calibration or validation data, data that does not fit the model) raise
    NeuralScanError before anything is written. An INT8 model that fails the accuracy check is not an
    exception: the FP32 IR and model.json are written and the report has int8_accepted False and `message`.
    """
    t0 = time.perf_counter()
    step = on_step or (lambda _m: None)
    int8_only = {"calibration": calibration, "calibration size": calibration_size, "preset": preset,
                 "accuracy control": accuracy_control or None, "max accuracy drop": max_drop_accuracy,
                 "max Dice drop": max_drop_dice}
    given = [k for k, v in int8_only.items() if v is not None]
    if given and not int8:  # settings of the INT8 model, which is not being made: said, not ignored
        raise NeuralScanError(f"{', '.join(given)}: settings of the INT8 model; add --int8")
    preset = "performance" if preset is None else preset
    calibration_size = DEFAULT_CALIBRATION_SIZE if calibration_size is None else calibration_size
    if preset not in PRESETS:
        raise NeuralScanError(f"preset must be one of {', '.join(PRESETS)}, not '{preset}'")
    if calibration_size < 1:
        raise NeuralScanError(f"calibration size must be at least 1, got {calibration_size}")
    from ..inference import load_keras_model

    bundle = load_bundle(src_spec)
    wrong_task = max_drop_dice if bundle.task == "classify" else max_drop_accuracy
    if wrong_task is not None:
        raise NeuralScanError(f"{'max Dice drop' if bundle.task == 'classify' else 'max accuracy drop'}: "
                              f"{bundle.name} is a {'classifier' if bundle.task == 'classify' else 'segmenter'}; "
                              f"its margin is the {'max accuracy drop' if bundle.task == 'classify' else 'max Dice drop'}")
    max_drop_accuracy = 0.01 if max_drop_accuracy is None else max_drop_accuracy
    max_drop_dice = 0.01 if max_drop_dice is None else max_drop_dice
    if gate is not None:
        from ..inference.segmentation import GATE_OFF, TumourGate

        if bundle.task != "segment":
            raise NeuralScanError(f"{bundle.name} is a classifier; --gate is for segmenters")
        if gate != GATE_OFF:
            TumourGate(gate, bundle)  # a wrong gate fails before anything is written
    out_dir = Path(out_dir)
    in_place = _check_out_dir(out_dir, bundle.root)
    keras_model = load_keras_model(bundle)  # a bundle without model.keras fails here, one line
    report = ExportReport(out_dir=out_dir, model=bundle.name, task=bundle.task, int8_requested=int8)

    # --- the data, all checked before anything is written
    train_cache, train_split, val_split = _training_data(bundle, on_warning)
    calib = val = None
    if int8:
        if calibration is not None:
            calib = _load(calibration, bundle, train_split, limit=calibration_size, need_truth=False,
                          on_warning=on_warning)
        elif train_cache is not None:
            calib = _load(train_cache, bundle, train_split, limit=calibration_size, need_truth=False,
                          on_warning=on_warning)
        else:
            recorded = ((bundle.meta.get("training") or {}).get("data") or {}).get("cache")
            where = ("model.json records no training cache" if not recorded else
                     f"its training cache {recorded} has changed since" if _is_cache(recorded) else
                     f"its training cache {recorded} is not on this machine")
            raise NeuralScanError(f"INT8 needs calibration images and {where}; give --calibration DATA "
                                  f"(a preprocess cache or a folder of scans)")
    if validation is not None:
        val = _load(validation, bundle, val_split, limit=None, need_truth=True, on_warning=on_warning)
    elif int8:
        source = train_cache if train_cache is not None else (
            calibration if calibration is not None and _is_cache(calibration) else None)
        if source is None:
            raise NeuralScanError("the INT8 accuracy check needs validation images: give --validation DATA "
                                  "(a preprocess cache or labelled scans)")
        val = _load(source, bundle, val_split, limit=None, need_truth=True, on_warning=on_warning)
    report.calibration = calib.info if calib is not None else None
    report.validation = val.info if val is not None else None

    # --- FP32
    import openvino as ov

    step("converting the Keras model to OpenVINO IR")
    size = bundle.size
    try:
        ov_model = ov.convert_model(keras_model, input=[(-1, size, size, 1)])
    except Exception as exc:  # noqa: BLE001 -- an unconvertible layer: say which model, in one line
        from ..io.base import one_line

        raise NeuralScanError(f"{bundle.root}: OpenVINO cannot convert this model "
                              f"({one_line(str(exc)) or type(exc).__name__})") from None
    _rt_info(ov_model, bundle, "fp32")
    fp32 = _compile(ov_model, fp32=True)
    probe = val if val is not None else calib
    if probe is not None:  # the converted graph must compute what Keras computes
        x = probe.batch01(0, min(8, len(probe)))
        ref = keras_model.predict(x, verbose=0)
        ref = ref[0] if isinstance(ref, (list, tuple)) else ref
        report.fp32_max_abs_diff = float(np.abs(np.asarray(fp32(x)[0]) - np.asarray(ref)).max())
        if report.fp32_max_abs_diff > 1e-3 and on_warning:
            on_warning(f"the FP32 IR differs from Keras by up to {report.fp32_max_abs_diff:.2g} on validation images")

    out_dir.mkdir(parents=True, exist_ok=True)
    fp32_xml = out_dir / FP32_DIR / "model.xml"
    fp32_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, fp32_xml, compress_to_fp16=False)
    report.fp32_path = fp32_xml

    meta = json.loads(json.dumps(bundle.meta))  # a deep copy
    files = dict(meta.get("files") or {})
    keras_src = bundle.path_of("keras")
    if not in_place:
        files = {}
        if copy_keras and keras_src is not None:
            shutil.copy2(keras_src, out_dir / keras_src.name)  # model.keras, or model.weights.h5
            files["keras"] = keras_src.name
            weights = bundle.path_of("keras_weights")  # loads in Keras 2 and 3; model.keras does not
            if weights is not None and weights != keras_src:
                shutil.copy2(weights, out_dir / weights.name)
                files["keras_weights"] = weights.name
        members = bundle.keras_member_paths()
        if copy_keras and members and bundle.has_keras:
            # an ensemble: each member's folder (weights, config, history, provenance), paths kept
            for path in members:
                rel = path.parent.relative_to(bundle.root)
                shutil.copytree(path.parent, out_dir / rel, dirs_exist_ok=True)
            files["keras_members"] = list(bundle.meta["files"]["keras_members"])
    files["openvino_fp32"] = FP32_DIR.joinpath("model.xml").as_posix()
    metrics = dict(meta.get("metrics") or {})
    report.metric = "accuracy" if bundle.task == "classify" else "dice_mean"

    if bundle.task == "segment" and train_cache is not None:
        # the mask rule (smallest blob kept) is chosen on training images, so validation stays a fair test
        step("choosing the smallest-blob rule on training images")
        meta["postprocessing"] = _choose_postprocessing(fp32, train_cache, bundle, train_split, on_warning)
        report.postprocessing = meta["postprocessing"]
    if gate is not None:  # a classifier whose no_tumor call empties the mask (inference.segmentation)
        post = dict(meta.get("postprocessing") or {})
        post["gate"] = None if gate == GATE_OFF else str(gate)
        meta["postprocessing"] = report.postprocessing = post

    if val is not None:
        step(f"scoring the FP32 IR on {len(val)} validation images")
        fp32_out = _predict(fp32, val)
        report.val_fp32 = _metrics(bundle.task, val, fp32_out, len(bundle.classes))
        metrics["val_fp32"] = report.val_fp32

    # --- INT8
    int8_xml = out_dir / INT8_DIR / "model.xml"
    if int8:
        import nncf

        report.preset = preset
        report.max_drop = max_drop_accuracy if bundle.task == "classify" else max_drop_dice
        preset_enum = nncf.QuantizationPreset(preset)
        calib_ds = nncf.Dataset(_Items(calib, with_truth=False))
        subset = min(calibration_size, len(calib))
        step(f"quantising to INT8 ({preset} preset, {subset} calibration images)")
        keep_fp32 = fp32_scope(ov_model)
        common = dict(preset=preset_enum, subset_size=subset, fast_bias_correction=False,
                      ignored_scope=nncf.IgnoredScope(names=keep_fp32) if keep_fp32 else None)
        with _quiet_nncf():
            q_model = nncf.quantize(ov_model, calib_ds, **common)
        report.val_int8, report.drop, agree = _check_int8(q_model, val, fp32_out, bundle, step)
        accepted = report.drop <= report.max_drop + 1e-9
        if not accepted and accuracy_control:
            step(f"INT8 loses {_points(report.drop, bundle.task)}; retrying with accuracy-aware quantisation")
            val_ds = nncf.Dataset(_Items(val, with_truth=True), lambda item: item[0])
            with _quiet_nncf():
                q_model = nncf.quantize_with_accuracy_control(
                    ov_model, calib_ds, val_ds, validation_fn=_validation_fn(bundle.task),
                    max_drop=report.max_drop, drop_type=nncf.DropType.ABSOLUTE, **common)
            report.accuracy_control_used = True
            report.val_int8, report.drop, agree = _check_int8(q_model, val, fp32_out, bundle, step)
            accepted = report.drop <= report.max_drop + 1e-9
        report.int8_accepted = bool(accepted)
        if agree is not None:
            report.val_int8["top1_agreement_with_fp32"] = agree
        metrics["val_int8"] = report.val_int8
        if accepted:
            _rt_info(q_model, bundle, "int8")
            int8_xml.parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(q_model, int8_xml, compress_to_fp16=False)
            files["openvino_int8"] = INT8_DIR.joinpath("model.xml").as_posix()
            report.int8_path = int8_xml
        else:
            name = "accuracy" if bundle.task == "classify" else "Dice"
            fp, q = report.val_fp32[report.metric], report.val_int8[report.metric]
            report.message = (f"INT8 {name} {q:.3f} is {_points(report.drop, bundle.task)} below FP32 {fp:.3f} "
                              f"on {len(val)} validation images (allowed: {_points(report.max_drop, bundle.task)})"
                              f"; only the FP32 IR was written"
                              + ("" if accuracy_control else " (--accuracy-control may recover it)"))
            if files.pop("openvino_int8", None):  # an older INT8 IR may not match the model any more
                report.message += "; the earlier INT8 IR in the folder was removed"
            shutil.rmtree(out_dir / INT8_DIR, ignore_errors=True)
    elif not in_place:  # a fresh bundle: an INT8 IR left there by an earlier export is not this model's
        files.pop("openvino_int8", None)
        shutil.rmtree(out_dir / INT8_DIR, ignore_errors=True)
    if not int8 and "openvino_int8" not in files:  # the source's INT8 figures describe a model not in this bundle
        metrics.pop("val_int8", None)

    # --- model.json, last: a half-finished export never looks complete
    keras_files = ([files["keras"]] if "keras" in files else []) + list(files.get("keras_members") or [])
    report.sizes = {"keras": sum((out_dir / f).stat().st_size for f in keras_files) if keras_files else None,
                    "openvino_fp32": _ir_bytes(fp32_xml),
                    "openvino_int8": _ir_bytes(int8_xml) if "openvino_int8" in files else None}
    report.seconds = time.perf_counter() - t0
    meta["files"] = files
    meta["metrics"] = metrics
    export = {
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_bundle": str(bundle.root.resolve()), "versions": _versions(),
        "input_shape": [-1, size, size, 1], "fp32_weights": "fp32", "fp32_max_abs_diff_vs_keras":
            report.fp32_max_abs_diff, "sizes_bytes": report.sizes, "seconds": round(report.seconds, 1),
        "int8_requested": int8,
    }
    if int8:
        export |= {"int8_accepted": report.int8_accepted, "quantization": {
            "method": "nncf.quantize_with_accuracy_control" if report.accuracy_control_used else "nncf.quantize",
            "preset": preset, "subset_size": min(calibration_size, len(calib)), "fast_bias_correction": False,
            "kept_fp32": keep_fp32},
            "calibration": report.calibration, "accuracy_check": {
                "metric": report.metric, "max_drop": report.max_drop, "drop": report.drop,
                "message": report.message}}
    elif "export" in meta and in_place and "openvino_int8" in files:  # keep the record of the INT8 kept
        old = meta["export"]
        export |= {k: old[k] for k in ("int8_accepted", "quantization", "calibration", "accuracy_check")
                   if k in old}
    if val is not None:
        export["validation"] = report.validation
    meta["export"] = export
    tmp = out_dir / ".model.json.tmp"
    from ..inference.bundle import _jsonable

    tmp.write_text(json.dumps(meta, indent=2, default=_jsonable))
    os.replace(tmp, out_dir / "model.json")
    return report


def _points(drop: float, task: str) -> str:
    return f"{drop * 100:.1f} point(s)" if task == "classify" else f"{drop:.3f}"


def _check_int8(q_model, val: _Data, fp32_out: np.ndarray, bundle: ModelBundle, step):
    """(INT8 validation metrics, drop on the check's metric, top-1 agreement with FP32 or None)."""
    step(f"scoring the INT8 IR on {len(val)} validation images")
    out = _predict(_compile(q_model, fp32=False), val)
    m = _metrics(bundle.task, val, out, len(bundle.classes))
    key = "accuracy" if bundle.task == "classify" else "dice_mean"
    fp = _metrics(bundle.task, val, fp32_out, len(bundle.classes))[key]
    agree = float(np.mean(out.argmax(1) == fp32_out.argmax(1))) if bundle.task == "classify" else None
    return m, float(fp - m[key]), agree
