"""The model bundle: the one format every command reads.

A bundle is a folder:
  model.json            task, classes (output order), input size/channels, preprocessing, provenance, metrics;
                        a segmenter's mask rule (postprocessing), a classifier's temperature (calibration)
  model.keras           the Keras network (optional once exported)
  openvino/fp32/model.xml|.bin, openvino/int8/model.xml|.bin   OpenVINO IR (optional)

Every network takes float32 images in [0, 1] shaped (N, S, S, 1) -- exactly the cache's images / 255 -- and
does any further scaling inside the graph, so the Keras model and its IR see identical input. A classifier
returns class probabilities (N, C); a segmenter returns tumour probabilities (N, S, S, 1).
`train` writes a bundle, `export` adds IR to it, and `evaluate`, `classify` and `segment` only read it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import NeuralScanError
from ..preprocess import PreprocessConfig

BUNDLE_FORMAT = "neuralscan-bundle"
BUNDLE_VERSION = 1
TASKS = ("classify", "segment")
BUNDLED = {"bundled": "classifier", "bundled-classifier": "classifier", "bundled-segmenter": "segmenter"}
ENGINES = ("auto", "openvino-int8", "openvino-fp32", "keras")
DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_COMPONENT = 0.0005  # segmenters: predicted blobs smaller than this share of the input are dropped


class BundleError(NeuralScanError):
    pass


@dataclass
class ModelBundle:
    root: Path
    meta: dict = field(default_factory=dict)

    # --- what the model is
    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes", []))

    @property
    def postprocessing(self) -> dict:
        """A segmenter's mask rule: pixels above `threshold`, then blobs smaller than `min_component` (a share
        of the input image) dropped. model.json's `postprocessing` holds the model's own values; `segment`,
        `classify --with-segmentation` and `evaluate` apply them unless told otherwise. `gate` (or None) names a
        classifier whose `no_tumor` call empties the mask (inference.segmentation.TumourGate)."""
        p = self.meta.get("postprocessing") or {}
        return {"threshold": float(p.get("threshold", DEFAULT_THRESHOLD)),
                "min_component": float(p.get("min_component", DEFAULT_MIN_COMPONENT)),
                "gate": p.get("gate") or None}

    def min_component_pixels(self, min_component: float | None = None) -> int:
        share = self.postprocessing["min_component"] if min_component is None else float(min_component)
        return int(math.ceil(share * self.size * self.size))

    @property
    def temperature(self) -> float:
        """A classifier's probability temperature (model.json `calibration.temperature`, set by `neuralscan
        calibrate`; 1.0 when uncalibrated). Runners apply it to every engine's output alike."""
        return float((self.meta.get("calibration") or {}).get("temperature", 1.0))

    @property
    def partial_labels(self) -> dict[str, list[str]]:
        """Labels the model was trained to read as a set of its classes (data.labels), e.g. tumor -> types."""
        return {k: list(v) for k, v in (self.meta.get("partial_labels") or {}).items()}

    @property
    def size(self) -> int:
        return int(self.meta["input"]["size"])

    @property
    def preprocessing(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.meta["preprocessing"])

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.root.name

    # --- files
    def path_of(self, kind: str) -> Path | None:
        rel = self.meta.get("files", {}).get(kind)
        if rel and (self.root / rel).is_file():
            return self.root / rel
        return None

    def keras_member_paths(self) -> list[Path] | None:
        """An ensemble's per-member weights files (`files.keras_members`), None for other bundles; the Keras
        engine rebuilds the ensemble from them when it has no model.keras (or cannot load it)."""
        members = self.meta.get("files", {}).get("keras_members")
        return [self.root / rel for rel in members] if members else None

    @property
    def has_keras(self) -> bool:
        """Whether the Keras engine can load this bundle: model.keras (or a weights file), or every member's
        weights file of an ensemble."""
        members = self.keras_member_paths()
        return self.path_of("keras") is not None or bool(members) and all(p.is_file() for p in members)

    def available_engines(self) -> list[str]:
        kinds = {"openvino-int8": "openvino_int8", "openvino-fp32": "openvino_fp32"}
        have = [e for e, k in kinds.items() if self.path_of(k) is not None]
        return have + ["keras"] if self.has_keras else have

    def resolve_engine(self, engine: str = "auto") -> str:
        have = self.available_engines()
        if engine == "auto":
            if not have:
                raise BundleError(f"{self.root}: the bundle holds no model file")
            return have[0]  # fastest first: INT8, FP32 IR, Keras
        if engine not in have:
            raise BundleError(f"{self.root}: no {engine} model in this bundle (has: {', '.join(have) or 'none'})")
        return engine

    def save_meta(self) -> None:
        (self.root / "model.json").write_text(json.dumps(self.meta, indent=2, default=_jsonable))


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def bundled_path(name: str) -> Path:
    return Path(str(resources.files("neuralscan_cli") / "bundled" / BUNDLED[name]))


def resolve_bundle_path(spec: str | Path) -> Path:
    """'bundled' / 'bundled-segmenter', a bundle folder, a file inside one (model.keras, model.xml)."""
    s = str(spec)
    if s in BUNDLED:
        p = bundled_path(s)
        if not (p / "model.json").is_file():
            raise BundleError(f"the {s} model is not installed in this copy of neuralscan ({p})")
        return p
    p = Path(s).expanduser()
    if not p.exists():
        raise BundleError(f"{p}: no such model (give a bundle folder, a run folder, 'bundled' or 'bundled-segmenter')")
    if p.is_file():
        for parent in [p.parent, *p.parents][:4]:
            if (parent / "model.json").is_file():
                return parent
        raise BundleError(f"{p}: no model.json beside it; a model must come with its bundle metadata")
    if not (p / "model.json").is_file():
        raise BundleError(f"{p}: not a model bundle (no model.json)")
    return p


def load_bundle(spec: str | Path) -> ModelBundle:
    root = resolve_bundle_path(spec)
    try:
        meta = json.loads((root / "model.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{root / 'model.json'}: unreadable ({exc})") from None
    if meta.get("format") != BUNDLE_FORMAT or meta.get("task") not in TASKS:
        raise BundleError(f"{root}: model.json is not a neuralscan bundle (format/task missing)")
    bundle = ModelBundle(root, meta)
    if str(spec) not in BUNDLED and Path(spec).expanduser().is_file():
        _check_named_file(bundle, Path(spec).expanduser())
    return bundle


def _check_named_file(bundle: ModelBundle, path: Path) -> None:
    """A file named as the model must be one the bundle lists: any other (a checkpoint, history.csv) would
    silently be replaced by the bundle's own model."""
    # the files an engine runs (model.keras, an IR's .xml/.bin) pick that engine; anything else (a checkpoint,
    # an ensemble member's weights, history.csv) would run the bundle's default model instead
    files = bundle.meta.get("files") or {}
    models = [files[k] for k in ("openvino_int8", "openvino_fp32", "keras", "keras_weights")
              if isinstance(files.get(k), str)]
    listed = [bundle.root / "model.json"]
    for r in models:
        listed += [bundle.root / r, (bundle.root / r).with_suffix(".bin")] if r.endswith(".xml") else [bundle.root / r]
    if path.resolve() not in {f.resolve() for f in listed}:
        raise BundleError(f"{path}: not a model file of the bundle {bundle.root} (its models: "
                          f"{', '.join(models) or 'none'}); name the bundle folder or one of those (a checkpoint "
                          f"becomes a bundle with `train --resume --epochs N`)")


def new_bundle_meta(*, task: str, classes: list[str], size: int, preprocessing: dict, name: str,
                    architecture: str, architecture_options: dict | None = None, **extra) -> dict:
    """The model.json skeleton that `train` fills in; keys other commands read are fixed here."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")
    return {
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "task": task, "name": name,
        "classes": list(classes), "input": {"size": int(size), "channels": 1, "range": [0.0, 1.0],
                                            "layout": "NHWC"},
        "preprocessing": preprocessing, "architecture": architecture,
        "architecture_options": architecture_options or {}, "files": {}, "metrics": {}, **extra,
    }
