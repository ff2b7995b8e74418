"""Turning scan sources into a dataset cache: read, preprocess in parallel, find duplicates, group, split.

Reruns are incremental: every cache row records a key made of its file's path, size and modification time
and the preprocessing parameters; a rerun into the same folder takes unchanged files' rows from the existing
cache and reads only added or changed files, then reassembles the arrays (cheap) so duplicate detection and
splits always see everything.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import NeuralScanError

from ..io import ScanReadError, read_scan
from ..io.base import display_slice, one_line
from ..preprocess import PreprocessConfig, preprocess_image
from .cache import CacheError, DatasetCache, write_cache
from .dedup import merge_groups, near_duplicate_pairs, thumbnail
from .sources import SourceItem, discover
from .splits import SPLITS, SplitConfig, assign_splits, naive_split_leaks, whole_fold_splits


class BuildError(NeuralScanError):
    """Nothing usable could be built (one-line message)."""


@dataclass
class BuildReport:
    out: str
    n_files: int = 0
    n_slices: int = 0
    n_processed: int = 0  # files read this run
    n_reused: int = 0  # files taken from the previous run unchanged
    n_excluded: int = 0  # files left out by the class filter
    classes: list[str] = field(default_factory=list)
    split_counts: dict = field(default_factory=dict)
    duplicates: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.n_processed / self.seconds if self.seconds > 0 else 0.0


def _item_key(item: SourceItem, cfg: dict, axis: int, middle: int | None) -> str:
    parts = [str(item.path)]
    for p in (item.path, item.mask_path):
        if p is not None:
            st = p.stat()
            parts += [str(p), str(st.st_size), str(st.st_mtime_ns)]
    parts += [json.dumps(cfg, sort_keys=True), str(axis), str(middle)]
    if str(item.path).lower().endswith((".nii", ".nii.gz")):
        parts.append("slice numbers as stored")  # older caches hold canonical ones: such rows are redone
    if item.mask_path is not None:
        parts.append("mask per slice")  # older caches gave every slice the mask's first slice: redone
    # surrogateescape: a file name that is not UTF-8 still gets a key (reading it then fails, as one bad file)
    return hashlib.blake2b("|".join(parts).encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


def _read_masks(path: Path, axis: int, middle: int | None) -> list[np.ndarray]:
    """The mask file's slices, read as the image is (same axis and middle slices), each as 0/1: a mask volume
    gives each image slice its own mask (all of them took the first slice's)."""
    slices = read_scan(path, axis=axis, middle=middle)
    top = max(float(s.pixels.max()) for s in slices)
    return [(s.pixels > 0.5 * top).astype(np.uint8) if top > 0 else np.zeros(s.pixels.shape, np.uint8)
            for s in slices]


def process_file(item: SourceItem, cfg: PreprocessConfig, axis: int = 2, middle: int | None = None):
    """Read and preprocess every slice of one file. Returns (images u8, masks u8, has_mask, thumbs, metas)."""
    slices = read_scan(item.path, axis=axis, middle=middle)
    given_masks = _read_masks(item.mask_path, axis, middle) if item.mask_path is not None else None
    if given_masks is not None and len(given_masks) not in (1, len(slices)):
        raise ScanReadError(f"{item.mask_path}: mask has {len(given_masks)} slices but the image "
                            f"{len(slices)}")
    digest = hashlib.blake2b(item.path.read_bytes(), digest_size=12)
    if item.mask_path is not None:
        digest.update(item.mask_path.read_bytes())
    images, masks, has_mask, thumbs, metas = [], [], [], [], []
    for k, s in enumerate(slices):
        mask = given_masks[k if len(given_masks) > 1 else 0] if given_masks is not None else (
            (s.mask > 0).astype(np.uint8) if s.mask is not None else None)
        if mask is not None and mask.shape != s.pixels.shape:
            raise ScanReadError(f"{item.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but the image "
                                f"is {s.pixels.shape[1]}x{s.pixels.shape[0]}")
        pixels, spacing = display_slice(s)
        if mask is not None:
            mask = display_slice(replace(s, pixels=mask))[0]
        try:
            img01, m, geom = preprocess_image(pixels, cfg, mask)
        except ValueError as exc:
            raise ScanReadError(f"{item.path}: {exc}") from None
        images.append(np.rint(img01 * 255).astype(np.uint8))
        masks.append(m if m is not None else np.zeros_like(images[-1]))
        has_mask.append(m is not None)
        # rounded as the cache stores them (float16), so a rerun that reuses cached thumbnails finds exactly
        # the same near-duplicate pairs as the run that computed them
        thumbs.append(thumbnail(img01).astype(np.float16).astype(np.float32))
        metas.append({"slice": s.slice_index, "file_label": s.label, "patient_key": s.patient_key,
                      "spacing": list(spacing) if spacing else None, "src_shape": list(geom.src_shape),
                      "box": list(geom.box), "pad": list(geom.pad), "side": geom.side,
                      "digest": digest.hexdigest()})
    return np.stack(images), np.stack(masks), np.array(has_mask), np.stack(thumbs), metas


def _work(args):
    """Pool task: process one file; returns (position, result or None, error or None)."""
    pos, item, cfg_dict, axis, middle = args
    try:
        return pos, process_file(item, PreprocessConfig.from_dict(cfg_dict), axis, middle), None
    except ScanReadError as exc:
        return pos, None, str(exc)
    except Exception as exc:  # one bad file must never stop the batch: it becomes one line in errors.csv
        return pos, None, f"{item.path}: {type(exc).__name__}: {one_line(str(exc))}"


def _previous_rows(out: Path, config_dict: dict) -> tuple[dict[str, list[int]], DatasetCache | None]:
    """Rows of an existing cache at `out`, by item key, so unchanged files are not read again."""
    try:
        prev = DatasetCache.open(out)
    except (CacheError, OSError, KeyError):
        return {}, None
    if prev.info.get("preprocessing") != config_dict:
        return {}, None
    rows: dict[str, list[int]] = {}
    for k, r in enumerate(prev.records):
        rows.setdefault(r.get("item_key", ""), []).append(k)
    rows.pop("", None)
    return rows, prev


def _rows_from_cache(prev: DatasetCache, rows: list[int]):
    """The (images, masks, has_mask, thumbs, metas) of one file as stored in a previous cache."""
    idx = np.array(rows)
    images = np.asarray(prev.images[idx])
    pm = prev.masks
    masks = np.asarray(pm[idx]) if pm is not None else np.zeros_like(images)
    has_mask = prev.has_mask[idx]
    thumbs = np.asarray(prev.thumbs[idx], dtype=np.float32)
    metas = []
    for k in rows:
        r = prev.records[k]
        sp = [float(r["spacing_row"]), float(r["spacing_col"])] if r["spacing_row"] != "" else None
        metas.append({"slice": int(r["slice"]), "file_label": r["file_label"] or None,
                      "patient_key": r["patient_key"] or None, "spacing": sp,
                      "src_shape": [int(r["src_height"]), int(r["src_width"])],
                      "box": [int(v) for v in r["box"].split()], "pad": [int(v) for v in r["pad"].split()],
                      "side": int(r["side"]), "digest": r["digest"]})
    return images, masks, has_mask, thumbs, metas


DEDUP_FLIPS = "left-right, up-down, half turn"  # what near_duplicate_pairs matches besides the image itself


def _check_replacing(out: Path, sources, config: PreprocessConfig, axis: int, middle: int | None,
                     split: SplitConfig | None = None, classes: list[str] | None = None,
                     dedup_threshold: float | None = None) -> None:
    """BuildError when `out` holds a cache made from other sources, with other preprocessing, or split
    otherwise (a re-split moves images models were validated on into training)."""
    info_path = out / "dataset.json"
    if not info_path.is_file():
        return
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return
    changed = []
    old_pre = info.get("preprocessing") or {}
    for k, v in config.to_dict().items():
        if k in old_pre and old_pre[k] != v:
            changed.append(f"{k} {old_pre[k]} -> {v}")
    if sorted(info.get("sources") or []) != sorted(str(Path(s).resolve()) for s in sources):
        changed.append("other sources")
    old_read = info.get("read_options") or {}
    if old_read and (old_read.get("axis"), old_read.get("middle")) != (axis, middle):
        changed.append("other slicing (--axis/--middle)")
    old_split = info.get("split") or {}
    if split is not None and old_split:
        def same(k, a, b):  # fold lists name a set: 3,4 is 4,3
            return sorted(map(str, a)) == sorted(map(str, b)) if k.endswith("_folds") else a == b

        changed += [f"{k} {old_split.get(k)} -> {v}" for k, v in split.to_dict().items()
                    if k in old_split and not same(k, old_split[k], v)]
    if classes and info.get("classes") and list(classes) != list(info["classes"]):
        changed.append(f"classes {','.join(info['classes'])} -> {','.join(classes)}")
    if info.get("duplicates") and (info["duplicates"].get("flips") or "") != DEDUP_FLIPS:
        changed.append("an older near-duplicate search (mirror only: up-down flips went unmatched)")
    old_threshold = (info.get("duplicates") or {}).get("threshold")
    if dedup_threshold is not None and old_threshold is not None and float(old_threshold) != float(dedup_threshold):
        changed.append(f"dedup threshold {old_threshold} -> {dedup_threshold}")
    if changed:
        raise BuildError(f"{out} holds a cache built with {', '.join(changed)}; models trained on it would no "
                         f"longer match: use --overwrite to replace it, or another folder")


def build_cache(sources: list[str | Path], out: str | Path, *, config: PreprocessConfig = PreprocessConfig(),
                classes: list[str] | None = None, split: SplitConfig = SplitConfig(), workers: int | None = None,
                axis: int = 2, middle: int | None = None, dedup_threshold: float = 0.95,
                on_progress: Callable[[int, int], None] | None = None,
                on_total: Callable[[int], None] | None = None, overwrite: bool = False) -> BuildReport:
    """Build (or update) the cache at `out`. A rerun with the same sources and preprocessing reuses unchanged
    files; a cache built from other sources or with other preprocessing is replaced only with `overwrite`
    (models trained on it would no longer match it)."""
    t0 = time.perf_counter()
    out = Path(out)
    if not overwrite:
        _check_replacing(out, sources, config, axis, middle, split, classes, dedup_threshold)
    report = BuildReport(out=str(out))
    items: list[SourceItem] = []
    for src in sources:
        found, problems = discover(src)  # SourceError (a user mistake) propagates
        items += found
        report.errors += problems
    if classes:
        import difflib

        # a class no scan has is allowed (a cache keeps a model's class order), but one that looks like a typo
        # of a label that is there is a stop, not a class of 0 images beside the real one left out
        found = sorted({it.label for it in items if it.label})
        typos = {c: difflib.get_close_matches(c, found, n=1, cutoff=0.85) for c in classes if c not in found}
        typos = {c: m[0] for c, m in typos.items() if m and m[0] not in classes}
        if typos:
            raise BuildError("--classes: " + ", ".join(f"{c} (did you mean {m}?)" for c, m in typos.items())
                             + f"; labels found: {', '.join(found)}")
        wanted = set(classes)
        kept = [it for it in items if it.label is None or it.label in wanted]
        report.n_excluded = len(items) - len(kept)
        items = kept
    if not items:
        if report.n_excluded:
            raise BuildError(f"no valid scans: all {report.n_excluded} scan(s) found were left out by --classes "
                             f"{','.join(classes)}")
        raise BuildError("no scans found in " + ", ".join(str(s) for s in sources))
    folds = {str(it.fold) for it in items if it.fold}
    unknown = [f for f in (*split.val_folds, *split.test_folds) if str(f) not in folds]
    if unknown:  # a typo here would silently leave the split empty
        raise BuildError(f"no fold {', '.join(map(str, unknown))} in the sources (their folds: "
                         f"{', '.join(sorted(folds)) or 'none'})")

    cfg_dict = config.to_dict()
    keys = [_item_key(it, cfg_dict, axis, middle) for it in items]
    previous, prev_cache = _previous_rows(out, cfg_dict)
    results: dict[int, tuple] = {i: _rows_from_cache(prev_cache, previous[k])
                                 for i, k in enumerate(keys) if k in previous}
    todo = [i for i in range(len(items)) if i not in results]
    report.n_reused = len(results)
    failed: dict[int, str] = {}
    if on_total:
        on_total(len(todo))
    tasks = [(i, items[i], cfg_dict, axis, middle) for i in todo]
    workers = workers or os.cpu_count() or 1

    def collect(done, outcome):
        pos, result, err = outcome
        if err:
            failed[pos] = err
        else:
            results[pos] = result
        if on_progress:
            on_progress(done, len(tasks))

    if workers > 1 and len(tasks) > 8:
        # spawn, not fork: forking a process that has loaded TensorFlow or OpenVINO can deadlock
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            chunk = max(1, min(16, len(tasks) // (workers * 8)))
            for done, outcome in enumerate(pool.map(_work, tasks, chunksize=chunk), 1):
                collect(done, outcome)
    else:
        for done, task in enumerate(tasks, 1):
            collect(done, _work(task))
    report.n_processed = len(todo) - len(failed)
    report.errors += [failed[i] for i in sorted(failed)]

    # assemble every good file's slices, in discovery order
    parts, records = [], []
    for i, item in enumerate(items):
        if i in failed:
            continue
        images_i, masks_i, has_i, thumbs_i, metas = results[i]
        label = item.label or metas[0]["file_label"]
        if classes and label is not None and label not in classes:
            report.n_excluded += 1
            continue
        parts.append((images_i, masks_i, has_i, thumbs_i))
        for m, has in zip(metas, has_i):
            records.append({"item": i, "item_key": keys[i], "path": str(item.path), "label": label,
                            "fold": item.fold or "", "given_group": item.group, "given_patient": item.patient_given,
                            "source": item.source,
                            "has_mask": bool(has), **m})
    if not records:  # one line that says why; nothing is written, so there is no errors.csv to point to
        if failed:
            first = failed[min(failed)]
            raise BuildError(f"no valid scans: {len(failed)} of {len(items)} file(s) could not be read; the "
                             f"first: {first}")
        raise BuildError(f"no valid scans: every file was left out by --classes {','.join(classes or [])}")
    images = np.concatenate([p[0] for p in parts])
    has_mask = np.concatenate([p[2] for p in parts]).astype(bool)
    masks = np.concatenate([p[1] for p in parts]) if has_mask.any() else None
    thumbs = np.concatenate([p[3] for p in parts])
    del results, parts, prev_cache

    # classes: as given, else the sorted labels found
    found_labels = sorted({r["label"] for r in records if r["label"]})
    class_list = list(classes) if classes else found_labels
    missing = [c for c in class_list if c not in found_labels]
    report.errors += [f"class '{c}': no scans found" for c in missing]
    index = {c: k for k, c in enumerate(class_list)}
    labels = [r["label"] or None for r in records]

    # groups: near-duplicates + given groups + patient keys + slices of one file
    n = len(records)
    pairs = near_duplicate_pairs(thumbs, dedup_threshold)
    group_keys = [[r["given_group"] for r in records], [r["patient_key"] for r in records],
                  [str(r["item"]) for r in records]]
    groups = merge_groups(n, pairs, group_keys)
    # A dataset's folds are patient-grouped; without a patient key they are the only patient boundary known
    # (figshare's PNG release: adjacent slices of one patient are not near-duplicates), so when no fold is
    # named for val/test, a split by fraction sends whole folds. The cache's groups stay fine-grained
    # (bootstrap intervals resample them).
    folds = [r["fold"] for r in records]
    fold_split = None
    if not split.val_folds and not split.test_folds:
        # only items whose patients are unknown otherwise (no patient key, no patient column); a fold is
        # named with its source, so one dataset's fold 1 is not another's
        # (a duplicate-set column is no patient boundary: only a patient column makes the fold unnecessary)
        keyless = [f"{r['source']} fold {r['fold']}" if r["fold"] and not r["patient_key"] and not r["given_patient"]
                   else "" for r in records]
        if any(keyless):
            fold_split = whole_fold_splits(keyless, labels, split)
            folds = keyless  # the others split by group, as without folds
    splits, moved = assign_splits(groups, labels, folds, split, fold_split=fold_split)
    cross = int(sum(1 for a, b in pairs if labels[a] != labels[b]))
    leaks = naive_split_leaks(pairs, groups, n, split)
    group_sizes = Counter(groups.tolist())
    report.duplicates = {
        "pairs": int(len(pairs)), "pairs_across_labels": cross,
        "images_in_duplicate_sets": int(len(np.unique(pairs))) if len(pairs) else 0,
        "groups": int(len(group_sizes)), "largest_group": int(max(group_sizes.values())),
        "groups_moved_to_one_split": moved, "naive_image_split": leaks, "threshold": dedup_threshold,
        "flips": DEDUP_FLIPS,
        "folds_kept_whole": fold_split or {},
    }
    for s in SPLITS:
        sel = [labels[i] for i in range(n) if splits[i] == s]
        if sel:
            report.split_counts[s] = {c: sel.count(c) for c in class_list} | (
                {"unlabelled": sel.count(None)} if None in sel else {})
    report.classes = class_list
    report.n_files = len({r["item"] for r in records})
    report.n_slices = n

    out_records = []
    for k, r in enumerate(records):
        sp = r["spacing"] or ["", ""]
        out_records.append({
            "index": k, "path": r["path"], "slice": r["slice"], "label": r["label"] or "",
            "label_index": index.get(r["label"], -1), "split": splits[k], "group": int(groups[k]),
            "fold": r["fold"], "source": r["source"], "has_mask": int(r["has_mask"]),
            "spacing_row": sp[0], "spacing_col": sp[1], "src_height": r["src_shape"][0],
            "src_width": r["src_shape"][1], "box": " ".join(map(str, r["box"])),
            "pad": " ".join(map(str, r["pad"])), "side": r["side"], "digest": r["digest"],
            "item_key": r["item_key"], "file_label": r["file_label"] or "", "patient_key": r["patient_key"] or ""})
    fingerprint = hashlib.sha256("\n".join(sorted(f"{r['digest']} {r['label']} {r['slice']}" for r in records))
                                 .encode()).hexdigest()[:16]
    from .. import __version__

    info = {
        "classes": class_list, "size": config.size, "n": n, "n_files": report.n_files,
        "preprocessing": cfg_dict, "split": split.to_dict(), "split_counts": report.split_counts,
        "n_masks": int(has_mask.sum()), "duplicates": report.duplicates, "fingerprint": fingerprint,
        "sources": [str(Path(s).resolve()) for s in sources], "read_options": {"axis": axis, "middle": middle},
        "n_errors": len(report.errors), "created_by": f"neuralscan {__version__}",
    }
    write_cache(out, info, out_records, images, masks, thumbs, report.errors)
    report.seconds = time.perf_counter() - t0
    return report


def report_dict(report: BuildReport) -> dict:
    d = asdict(report)
    d["images_per_second"] = report.images_per_second
    return d
