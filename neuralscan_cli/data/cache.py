"""The dataset cache: what `preprocess` writes and every training, feature and evaluation step reads.

Layout of a cache folder (format version 1):
  dataset.json   classes, image size, preprocessing parameters, split counts, fingerprint, duplicates
  manifest.csv   one row per slice: source path, slice, label, split, group, fold, mask flag, geometry
  images.npy     uint8 (N, S, S): the preprocessed slices, 0..255 for intensities 0..1 (memory-mapped)
  masks.npy      uint8 (N, S, S): 0/1 tumour masks, zeros where `has_mask` is 0 (only when any mask exists)
  thumbs.npy     float16 (N, 1024): near-duplicate thumbnails
  errors.csv     the files that were skipped, and why
A patient key, where a file carried one (DICOM, .mat), is stored only as its salted hash.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import NeuralScanError

from ..preprocess import PreprocessConfig

FORMAT_VERSION = 1
MANIFEST_COLUMNS = ["index", "path", "slice", "label", "label_index", "split", "group", "fold", "source",
                    "has_mask", "spacing_row", "spacing_col", "src_height", "src_width", "box", "pad", "side",
                    "digest", "item_key", "file_label", "patient_key"]


class CacheError(NeuralScanError):
    """A folder that is not a usable dataset cache (one-line message)."""


@dataclass
class DatasetCache:
    """Read access to a preprocessed dataset. Arrays are memory-mapped: opening a cache is cheap."""

    root: Path
    info: dict
    records: list[dict]

    @classmethod
    def open(cls, root: str | Path) -> "DatasetCache":
        root = Path(root)
        meta = root / "dataset.json"
        if not meta.is_file():
            raise CacheError(f"{root}: not a dataset cache (no dataset.json; build one with 'neuralscan preprocess')")
        try:
            info = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CacheError(f"{meta}: unreadable ({exc})") from None
        if info.get("format_version") != FORMAT_VERSION:
            raise CacheError(f"{root}: cache format {info.get('format_version')} is not {FORMAT_VERSION}; rebuild it")
        with open(root / "manifest.csv", newline="") as fh:
            records = list(csv.DictReader(fh))
        return cls(root, info, records)

    # --- what the data is
    @property
    def classes(self) -> list[str]:
        return list(self.info.get("classes", []))

    @property
    def size(self) -> int:
        return int(self.info["size"])

    @property
    def preprocessing(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.info["preprocessing"])

    def __len__(self) -> int:
        return len(self.records)

    # --- per-item columns as arrays
    def column(self, name: str) -> np.ndarray:
        return np.array([r[name] for r in self.records], dtype=object)

    @property
    def labels(self) -> np.ndarray:
        """Class index per item, -1 where unlabelled."""
        return np.array([int(r["label_index"]) for r in self.records], dtype=np.int64)

    @property
    def splits(self) -> np.ndarray:
        return np.array([r["split"] for r in self.records])

    @property
    def groups(self) -> np.ndarray:
        return np.array([int(r["group"]) for r in self.records], dtype=np.int64)

    @property
    def folds(self) -> np.ndarray:
        return np.array([r["fold"] for r in self.records])

    @property
    def paths(self) -> list[str]:
        return [r["path"] for r in self.records]

    @property
    def has_mask(self) -> np.ndarray:
        return np.array([r["has_mask"] == "1" for r in self.records], dtype=bool)

    @property
    def spacing(self) -> np.ndarray:
        """(N, 2) source pixel spacing in mm, NaN where unknown."""
        def f(v):
            return float(v) if v not in ("", None) else np.nan
        return np.array([[f(r["spacing_row"]), f(r["spacing_col"])] for r in self.records], dtype=np.float64)

    # --- pixels
    @property
    def images(self) -> np.ndarray:
        """uint8 (N, S, S) memory map; divide by 255 for the [0, 1] intensities models see."""
        return np.load(self.root / "images.npy", mmap_mode="r")

    @property
    def masks(self) -> np.ndarray | None:
        p = self.root / "masks.npy"
        return np.load(p, mmap_mode="r") if p.is_file() else None

    @property
    def thumbs(self) -> np.ndarray:
        return np.load(self.root / "thumbs.npy", mmap_mode="r")

    def indices(self, split: str | None = None, labelled: bool = False) -> np.ndarray:
        keep = np.ones(len(self), dtype=bool)
        if split is not None:
            keep &= self.splits == split
        if labelled:
            keep &= self.labels >= 0
        return np.nonzero(keep)[0]

    def load(self, split: str | None = None, labelled: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(float32 images in [0, 1] with shape (n, S, S), class indices) for one split."""
        idx = self.indices(split, labelled)
        x = np.asarray(self.images[idx], dtype=np.float32) / 255.0
        return x, self.labels[idx]


def write_cache(root: Path, info: dict, records: list[dict], images: np.ndarray, masks: np.ndarray | None,
                thumbs: np.ndarray, errors: list[str]) -> None:
    """Write a complete cache. Arrays go in first and dataset.json last, so a half-written cache never opens."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").unlink(missing_ok=True)

    def save(name, arr):  # write beside, then rename: a memory map of the old file stays valid
        tmp = root / f".{name}.tmp.npy"
        np.save(tmp, arr)
        os.replace(tmp, root / name)

    save("images.npy", images)
    if masks is not None:
        save("masks.npy", masks)
    else:
        (root / "masks.npy").unlink(missing_ok=True)
    save("thumbs.npy", thumbs.astype(np.float16))
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        w.writeheader()
        w.writerows(records)
    with open(root / "errors.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["problem"])
        w.writerows([e] for e in errors)
    info = {"format_version": FORMAT_VERSION, **info}
    (root / "dataset.json").write_text(json.dumps(info, indent=2))
