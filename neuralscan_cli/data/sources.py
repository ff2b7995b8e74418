"""Finding the scans of a dataset on disk: a CSV manifest, a folder per class, or an unlabelled folder.

`discover(path)` returns `SourceItem`s (one per scan file) and a list of problems found on the way (one line
each), never raising for a problem in the data itself; a user mistake (a path that does not exist) raises
`SourceError`.
"""
from __future__ import annotations

from ..errors import NeuralScanError

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..io import is_scan_file

PATIENT_COLUMNS = ("patient", "patient_id", "subject", "subject_id")
GROUP_COLUMNS = ("group", "duplicate_group", *PATIENT_COLUMNS)  # every one present joins rows into one group
MASK_FOLDER_NAMES = {"masks", "mask", "labels_masks", "segmentations"}


class SourceError(NeuralScanError):
    """A source that cannot be used at all (one-line message)."""


@dataclass
class SourceItem:
    path: Path
    label: str | None = None
    mask_path: Path | None = None
    fold: str | None = None
    group: str | None = None  # a grouping given by the dataset (patient, duplicate set), source-qualified
    source: str = ""  # short name of the source it came from
    patient_given: bool = False  # `group` joins rows by a patient column (a duplicate set is no patient boundary)


def _manifest_rows(csv_path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row with lower-case keys and stripped values) of a manifest; SourceError if it has no
    'image' column or cannot be read."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip().lower() for c in (reader.fieldnames or [])]
            if "image" not in cols:
                raise SourceError(f"{csv_path}: a manifest needs an 'image' column (found: {', '.join(cols) or 'none'})")
            for lineno, raw in enumerate(reader, start=2):
                yield lineno, {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"{csv_path}: cannot read manifest ({exc})") from None


def manifest_scan_paths(csv_path: str | Path) -> tuple[list[Path], int]:
    """Every image a manifest lists (paths relative to its folder, resolved), present or not, and the number of
    rows whose image cell is blank: for commands that score a list of scans (`classify`, `segment`), where a
    missing file is one failed row, not a stop."""
    csv_path = Path(csv_path).resolve()
    rows = [row.get("image") for _, row in _manifest_rows(csv_path)]
    return [(csv_path.parent / r).resolve() for r in rows if r], sum(1 for r in rows if not r)


def _read_csv_manifest(csv_path: Path) -> tuple[list[SourceItem], list[str]]:
    base = csv_path.parent
    name = csv_path.parent.name if csv_path.name.lower() in {"labels.csv", "manifest.csv"} else csv_path.stem
    problems: list[str] = []
    items: list[SourceItem] = []
    group_keys: list[list[str]] = []
    patient_cols: list[str] | None = None
    for lineno, row in _manifest_rows(csv_path):
        if patient_cols is None:
            patient_cols = [c for c in PATIENT_COLUMNS if c in row]
        if not row.get("image"):
            problems.append(f"{csv_path}:{lineno}: empty image path")
            continue
        img = (base / row["image"]).resolve()
        if not img.is_file():
            problems.append(f"{img}: listed in {csv_path.name} line {lineno} but missing")
            continue
        mask = None
        if row.get("mask"):
            mask = (base / row["mask"]).resolve()
            if not mask.is_file():
                problems.append(f"{mask}: mask listed in {csv_path.name} line {lineno} but missing")
                mask = None
        items.append(SourceItem(img, row.get("label") or None, mask, row.get("fold") or None, None, name,
                                patient_given=any(row.get(c) for c in patient_cols or [])))
        group_keys.append([row.get(c) or None for c in GROUP_COLUMNS])
    # rows that share a value in ANY group column are one group: a patient column and a duplicate-set column
    # together must not let a patient's near-duplicate sets fall into different splits
    from .dedup import merge_groups

    columns = [list(col) for col in zip(*group_keys)] if group_keys else []
    joined = merge_groups(len(items), np.zeros((0, 2), np.int64), columns)
    for item, keys, group in zip(items, group_keys, joined):  # keyed by the manifest's own path: unique
        item.group = f"{csv_path}:{group}" if any(keys) else None
    return items, problems


def _scan_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_scan_file(p) and not p.name.startswith("."))


def _find_manifest(folder: Path) -> Path | None:
    for name in ("labels.csv", "manifest.csv"):
        if (folder / name).is_file():
            return folder / name
    csvs = sorted(folder.glob("*.csv"))
    for c in csvs:
        with open(c, newline="", encoding="utf-8-sig") as fh:
            header = [h.strip().lower() for h in next(csv.reader(fh), [])]
        if "image" in header:
            return c
    return None


def _read_folder(folder: Path) -> tuple[list[SourceItem], list[str]]:
    name = folder.name
    problems: list[str] = []
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    mask_dirs = [d for d in subdirs if d.name.lower() in MASK_FOLDER_NAMES]
    class_dirs = [d for d in subdirs if d not in mask_dirs]
    loose = sorted(p for p in folder.iterdir() if p.is_file() and is_scan_file(p))
    items: list[SourceItem] = []
    if class_dirs:
        # "Training/glioma/x.jpg" layouts: the class is the folder that holds the file
        for d in class_dirs:
            files = _scan_files(d)
            if not files:
                problems.append(f"{d}: class folder holds no scans")
                continue
            for f in files:
                items.append(SourceItem(f, f.parent.name if f.parent != folder else None, source=name))
        if loose:
            problems.append(f"{folder}: {len(loose)} scans lie outside the class folders and were left out")
    else:
        items = [SourceItem(f, None, source=name) for f in loose]
    # masks matched to images by file stem
    if mask_dirs:
        by_stem: dict[str, SourceItem] = {}
        for it in items:
            by_stem.setdefault(it.path.stem.lower(), it)
        for d in mask_dirs:
            for m in _scan_files(d):
                stem = m.stem.lower()
                for suffix in ("", "_mask", "-mask", "_seg"):
                    key = stem[: -len(suffix)] if suffix and stem.endswith(suffix) else stem
                    if key in by_stem:
                        by_stem[key].mask_path = m
                        break
                else:
                    problems.append(f"{m}: mask with no image")
    return items, problems


def discover(path: str | Path) -> tuple[list[SourceItem], list[str]]:
    """All scans of one source: a CSV manifest, a folder holding one, a folder per class, or loose scans."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return _read_csv_manifest(path.resolve())
        return [SourceItem(path.resolve(), None, source=path.stem)], []
    manifest = _find_manifest(path)
    if manifest is not None:
        return _read_csv_manifest(manifest.resolve())
    items, problems = _read_folder(path.resolve())
    if not items and not problems:
        problems.append(f"{path}: no scans found")
    return items, problems
