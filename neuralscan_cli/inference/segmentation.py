"""Outlining tumours in scans on disk with a segmentation bundle, writing masks, overlays and measurements.

`segment_paths(paths, model, out_dir)` walks files and folders (recursively, every format `read_scan` reads),
preprocesses each slice exactly as the model's training data was, predicts in batches, thresholds, drops
specks, maps the mask back onto the scan's own grid and measures it. It writes, in `out_dir`:

  measurements.csv   one row per slice (`FIELDS`), appended and flushed as each scan finishes
  errors.csv         path, error: the files that could not be segmented in the latest run(s)
  masks/<name>_mask.png            (multi-slice sources: <name>_s<slice>_mask.png), 255 = tumour
  masks/<name>_mask.nii.gz         NIfTI inputs: one mask volume with the source's affine and orientation
  overlays/<name>[_s<slice>]_overlay.png   the scan in grey with the tumour's outline in red
  segment.json       the model, threshold, small-blob rule and gate the folder's results came from

<name> is the input's path relative to the common folder of all inputs, without its extension, so two
`scan.png` in different folders do not collide; a name another scan already owns in this folder (an earlier
run from another root, or `y.dcm`'s slice 1 beside a `y_s1.jpg`) becomes `<name>~2` (`OutputFiles`).
Rerunning the same command resumes: scans whose rows are already in measurements.csv are skipped; files that
failed before are tried again.

NIfTI slices are segmented in the usual radiological display (the reader's canonical slice `p` shown as
`p[::-1, ::-1].T`: anterior / superior up, the patient's right on the image's left), which is how the 2-D
training datasets look; the mask PNGs, overlays and measurement coordinates of NIfTI inputs are in that
display, and the NIfTI mask volume is mapped back to the source's voxel grid.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import NeuralScanError
from ..io.base import display_slice, file_error_text, printable_path, stored_from_display
from ..evaluation.measurements import COLUMNS, measure_mask, remove_small_components
from ..evaluation.metrics import NO_TUMOR
from ..preprocess import no_signal
from .bundle import ModelBundle

FIELDS = ["path", "slice", *COLUMNS, "mask_file", "overlay_file"]
ERROR_FIELDS = ["path", "error"]
MEASUREMENTS = "measurements.csv"
ERRORS = "errors.csv"
RUN_INFO = "segment.json"


@dataclass
class SegmentSummary:
    out_dir: Path
    model: str = ""
    engine: str = ""
    n_files: int = 0  # scan files found
    n_resumed: int = 0  # already in measurements.csv: skipped
    n_segmented: int = 0  # files segmented in this run
    n_slices: int = 0  # slices segmented in this run
    n_tumor: int = 0  # of which with a tumour
    n_ignored: int = 0  # files in the folders that are not scans, and manifest rows with a blank image cell
    errors: list[str] = field(default_factory=list)  # one line per failed file
    seconds: float = 0.0
    n_left: int = 0  # files never tried, left by `limit` for a later run
    n_not_retried: int = 0  # files that failed in an earlier run, not retried in this one (`limit`)

    @property
    def n_failed(self) -> int:
        return len(self.errors)

    @property
    def stopped_early(self) -> bool:
        return self.n_left > 0


# ------------------------------------------------------------------------------------------------ inputs

def _unlistable_folder(path: str) -> bool:
    """A folder the walk could not enter (no permission): reported as a failed entry, not ignored."""
    return os.path.isdir(path) and not os.path.islink(path) and not os.access(path, os.R_OK | os.X_OK)


def _walk_files(folder: str, exclude: str | None) -> Iterator[str]:
    """Entries under `folder`, recursively, in the order `sorted(Path(folder).rglob("*"))` gives (a Path sorts
    by its parts: siblings by name, files and folders alike), as plain strings: a Path object costs ~0.5 KB,
    which over an archive of files listed up front would grow `classify`'s memory with the number of files.
    Like rglob, symlinked folders are not entered (they are yielded, and then counted as not scans); a folder
    that cannot be listed is yielded itself, so it fails as one bad entry instead of vanishing; hidden files
    and folders, `lost+found` and anything under `exclude` are left out."""
    try:
        with os.scandir(folder) as it:
            items = sorted(it, key=lambda e: e.name)
    except OSError:
        yield folder
        return
    for e in items:
        if exclude is not None and (e.path == exclude or e.path.startswith(exclude + os.sep)):
            continue
        if e.name.startswith(".") or e.name == "lost+found":  # hidden entries, a file system's own folder
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                yield from _walk_files(e.path, exclude)
            else:
                yield e.path
        except OSError:
            yield e.path


def find_scans(paths: Sequence[str | Path], exclude: str | Path | None = None) -> tuple[list[str], Path, int]:
    """(scan file paths as strings, their common root, number of entries ignored: non-scan files in the folders
    and manifest rows with a blank image cell) for files and folders.

    Folders are walked recursively (hidden files and anything under `exclude` left out) in sorted order; a
    `.csv` file is a manifest whose `image` column lists the scans (as `preprocess` and `evaluate` read it; a
    listed file that is missing fails later, as one bad file); any other file named explicitly is always
    taken, whatever its format (a bad one fails later, with its reason). Raises NeuralScanError for a missing
    path or when no scan file is found.
    """
    from ..data import manifest_scan_paths
    from ..io import is_scan_file

    exclude = str(Path(exclude).resolve()) if exclude is not None else None
    files: list[str] = []
    roots: list[str] = []
    ignored = 0
    for p in map(Path, paths):
        if not p.exists():
            raise NeuralScanError(f"{p}: no such file or folder")
        p = p.resolve()
        if p.is_dir():
            roots.append(str(p))
            for f in _walk_files(str(p), exclude):
                if is_scan_file(f) or _unlistable_folder(f):
                    files.append(f)
                else:
                    ignored += 1
        elif p.suffix.lower() == ".csv":
            listed, blank = manifest_scan_paths(p)
            listed = [str(f) for f in listed]
            ignored += blank  # a row with no image path names no file to fail; counted in the summary
            # output names are relative to the folders of the files that exist (a missing one only fails)
            roots.extend({os.path.dirname(f) for f in listed if os.path.isfile(f)} or {str(p.parent)})
            files.extend(listed)
        else:
            roots.append(str(p.parent))
            files.append(str(p))
    files = list(dict.fromkeys(files))  # a file reached twice is segmented once
    if not files:
        raise NeuralScanError(f"no scan files found in {', '.join(map(str, paths))}")
    return files, Path(os.path.commonpath(roots)), ignored


def _strip_extension(name: str) -> str:
    from ..io import supported_extensions

    low = name.lower()
    for ext in sorted(supported_extensions(), key=len, reverse=True):
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name  # e.g. a DICOM file named by its UID: keep the whole name


def output_names(files: Sequence[str | Path], root: Path) -> dict:
    """A unique output stem per file (keyed as given): its path relative to `root`, without the scan extension."""
    rel = {}
    for f in files:
        fp = Path(f)
        rel[f] = fp.relative_to(root) if root in fp.parents else Path(fp.name)
    stems = {f: (r.parent / _strip_extension(r.name)).as_posix() for f, r in rel.items()}
    counts: dict[str, int] = {}
    for s in stems.values():
        counts[s] = counts.get(s, 0) + 1
    for f, s in stems.items():
        if counts[s] > 1:  # scan.png and scan.dcm side by side: keep the extension in the name
            stems[f] = (rel[f].parent / rel[f].name.replace(".", "_")).as_posix()
    return {f: _fit_name(s) for f, s in stems.items()}


MAX_STEM_BYTES = 180  # file systems allow 255 bytes a name; "_s123~2_overlay.png" and the like must still fit


def _fit_name(stem: str) -> str:
    """`stem` with a last part too long for an output file name cut short and given a hash of the whole
    (the same input always gets the same name, so a resumed run finds its files)."""
    import hashlib

    head, _, last = stem.rpartition("/")
    raw = last.encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_STEM_BYTES:
        return stem
    short = raw[:MAX_STEM_BYTES - 9].decode("utf-8", "ignore")
    digest = hashlib.sha1(raw).hexdigest()[:8]
    return f"{head}/{short}-{digest}" if head else f"{short}-{digest}"


# ---------------------------------------------------------------------------------------- output files

def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


class OutputFiles:
    """The output files (relative to the output folder) each scan owns, so that no scan writes over another's
    mask or overlay: two inputs named alike under different roots, segmented one run after the other into one
    folder, or a multi-slice `y.dcm` (its slice 1 is `y_s1`) beside a `y_s1.jpg`. A scan whose names are taken
    gets `<name>~2` (then ~3...); a rerun of the same scan keeps its own names."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}

    def claim_rows(self, rows) -> None:
        """Names already written, from earlier rows (dicts with path, slice, mask_file, overlay_file)."""
        for row in rows:
            path = str(row.get("path") or "")
            for key in ("mask_file", "overlay_file"):
                if row.get(key):
                    self.owner.setdefault(str(row[key]), path)
            mask = str(row.get("mask_file") or "")
            if path.lower().endswith((".nii", ".nii.gz")) and mask.endswith("_mask.png"):
                stem = mask[len("masks/"):-len("_mask.png")]
                suffix = f"_s{row.get('slice')}"
                for name in {stem, stem[:-len(suffix)] if stem.endswith(suffix) else stem}:
                    self.owner.setdefault(f"masks/{name}_mask.nii.gz", path)

    @staticmethod
    def files_of(job: "ScanJob", name: str) -> tuple[list[tuple[str, str]], str | None]:
        """Per slice (mask, overlay) names, and the NIfTI mask volume's name (None for other sources)."""
        multi = len(job.slices) > 1
        per_slice = []
        for s in job.slices:
            stem = f"{name}_s{s.slice_index}" if multi else name
            per_slice.append((f"masks/{stem}_mask.png", f"overlays/{stem}_overlay.png"))
        first = job.slices[0]
        volume = f"masks/{name}_mask.nii.gz" if first.affine is not None and "volume_shape" in first.extra else None
        return per_slice, volume

    def claim(self, job: "ScanJob") -> tuple[list[tuple[str, str]], str | None]:
        path = str(job.path)
        k = 1
        while True:
            name = job.name if k == 1 else f"{job.name}~{k}"
            per_slice, volume = self.files_of(job, name)
            wanted = [f for pair in per_slice for f in pair] + ([volume] if volume else [])
            if all(self.owner.get(f, path) == path for f in wanted) and len(set(wanted)) == len(wanted):
                for f in wanted:
                    self.owner[f] = path
                return per_slice, volume
            k += 1


def _read_done(path: Path, files: OutputFiles | None = None) -> set[str]:
    """Source paths that already have all their rows in measurements.csv; `files` claims the names those rows
    wrote (one pass over the file: an archive's rows are not all held in memory).

    A scan's rows are written in one go, so a crash can only tear the last scan's rows: the torn line and
    every complete row of that same scan are dropped (the scan is redone). The header is checked first, so a
    file that is not ours is never modified.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return set()
    with open(path, "rb") as fh:
        header = next(csv.reader([fh.readline().decode("utf-8", "replace")]), None)
        fh.seek(-1, os.SEEK_END)
        torn = fh.read(1) != b"\n"
    if header != FIELDS:
        raise NeuralScanError(f"{path}: not a measurements file written by this version of neuralscan "
                              f"segment; choose another --out folder")
    if torn:  # rare (a crash mid-write): only then is the whole file read
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        fragment = (next(csv.reader([data[cut:].decode("utf-8", "replace")]), None) or [""])[0]
        lines = data[:cut].decode("utf-8").splitlines(keepends=True)
        paths = [(next(csv.reader([ln]), None) or [""])[0] for ln in lines[1:]]
        # the tear may cut the path itself: a last scan whose path the fragment begins is redone as well
        # (redoing a finished scan costs a little time; keeping half a scan would lose its other slices)
        drop = {fragment} | ({paths[-1]} if paths and paths[-1].startswith(fragment) else set())
        keep = [ln for ln, p in zip(lines[1:], paths) if p not in drop]
        path.write_text(lines[0] + "".join(keep))
    done: set[str] = set()

    def rows():
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                done.add(row["path"])
                yield row

    if files is not None:
        files.claim_rows(rows())
    else:
        for _ in rows():
            pass
    return done


def clear_results(out_dir: Path) -> None:
    """Remove a folder's earlier results (for a fresh start): measurements.csv, errors.csv and segment.json,
    then the masks and overlays measurements.csv listed. Files it does not list are left alone, and a
    measurements.csv this program did not write is refused, not deleted."""
    measurements = out_dir / MEASUREMENTS
    written = OutputFiles()
    if measurements.is_file() and measurements.stat().st_size:
        with open(measurements, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != FIELDS:
                raise NeuralScanError(f"{measurements}: not a measurements file written by neuralscan segment; "
                                      f"choose another --out folder")
            written.claim_rows(reader)
    # the list goes first: stopped half-way, the folder then holds no results that name deleted files
    for name in (MEASUREMENTS, ERRORS, RUN_INFO):
        (out_dir / name).unlink(missing_ok=True)
    root = out_dir.resolve()
    for name in written.owner:
        f = (out_dir / name).resolve()
        if f.is_relative_to(root):
            f.unlink(missing_ok=True)


def earlier_failures(errors_csv: Path) -> set[str]:
    """The paths an errors file (path, error) lists from earlier runs."""
    if not errors_csv.is_file():
        return set()
    with open(errors_csv, newline="", encoding="utf-8", errors="replace") as fh:
        return {row[0] for row in list(csv.reader(fh))[1:] if row}


def limit_todo(todo: list[str], limit: int | None, failed: set[str]) -> tuple[list[str], int, int]:
    """(the files this run does, files left that were never tried, files left that failed before): a file
    that failed before is not "left for a later run", or a `--limit` loop would never end."""
    if limit is None or len(todo) <= limit:
        return todo, 0, 0
    rest = todo[limit:]
    failed_before = sum(1 for f in rest if printable_path(f) in failed)
    return todo[:limit], len(rest) - failed_before, failed_before


def failed_last(todo: list[str], failed: set[str]) -> list[str]:
    """`todo` with the files that failed before moved to the end (order kept otherwise), so that a run with a
    `limit` reaches the files not tried yet instead of retrying the same bad ones every time."""
    tried = [printable_path(f) in failed for f in todo]  # errors files hold printable paths
    return [f for f, t in zip(todo, tried) if not t] + [f for f, t in zip(todo, tried) if t]


def _check_run_info(out_dir: Path, info: dict) -> None:
    """Results in one folder must come from one model and threshold, or a resumed run would mix them."""
    path = out_dir / RUN_INFO
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            before = {}
        if (out_dir / MEASUREMENTS).is_file():
            for key in ("model_path", "engine", "threshold", "min_component", "gate"):
                # older folders had no gate or engine
                old = before.get(key, None if key == "gate" else info[key])
                if old != info[key]:
                    raise NeuralScanError(f"{out_dir} holds results made with {key.replace('_', ' ')} "
                                          f"{old}, not {info[key]}; use the same settings to resume, "
                                          f"--overwrite, or another --out folder")
    path.write_text(json.dumps(info, indent=2))


class ErrorsFile:
    """The errors file (path, error) of a resumable batch. Rows of this run are appended as files fail; an
    earlier row goes only when the run ends (or is stopped) after its file was tried again, so an
    interrupted rerun loses no earlier failure. Paths are printable (see io.base.printable_path)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.earlier: list[list[str]] = []
        if self.path.is_file():
            with open(self.path, newline="", encoding="utf-8", errors="replace") as fh:
                self.earlier = [r for r in list(csv.reader(fh))[1:] if r]
        self._earlier_paths = {r[0] for r in self.earlier}
        self.attempted: set[str] = set()
        self.new: list[list[str]] = []
        self._fh = open(self.path, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh, lineterminator="\n")
        self._writer.writerow(ERROR_FIELDS)
        self._writer.writerows(self.earlier)
        self._fh.flush()

    def failed(self, path: str, message: str) -> None:
        self.tried(path)
        self.new.append([path, message])
        self._writer.writerow([path, message])
        self._fh.flush()

    def tried(self, path: str) -> None:
        if path in self._earlier_paths:  # only those matter at close: memory stays flat over an archive
            self.attempted.add(path)

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.close()
        keep = [r for r in self.earlier if r[0] not in self.attempted] + self.new
        if len(keep) != len(self.earlier) + len(self.new):
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(ERROR_FIELDS)
                writer.writerows(keep)
            os.replace(tmp, self.path)

    def __enter__(self) -> "ErrorsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def overlay_rgb(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The scan in grey (0.5-99.5 percentile window) with the mask's outline in red, as uint8 RGB."""
    from scipy import ndimage

    from ..preprocess import normalize_intensity

    grey = (normalize_intensity(pixels) * 255.0 + 0.5).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    m = np.asarray(mask, dtype=bool)
    if m.any():
        edge = m & ~ndimage.binary_erosion(m, border_value=0)
        thick = max(pixels.shape) // 384  # about one line per 384 pixels, so the outline shows on big images
        if thick:
            edge = ndimage.binary_dilation(edge, iterations=thick) & ~ndimage.binary_erosion(m, iterations=thick + 1)
        rgb[edge] = (255, 0, 0)
    return rgb


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_nifti_mask(path: Path, source: Path, slices, masks: list[np.ndarray]) -> None:
    """One uint8 0/1 mask volume for a NIfTI source, on exactly the source's voxel grid: same shape (its first
    3-D volume for 4-D data), same voxel order, same sform and qform with the same codes, so it can be used
    voxel by voxel against the source (numpy, fslmaths -mas) as well as overlaid in a viewer.

    The reader hands out slices of the canonical (RAS+) volume, `as_closest_canonical`, which applies
    `io_orientation(source affine)` to the stored array; the mask volume is built in that canonical order and
    brought back with the inverse transform, from canonical (RAS) to the stored orientation. A mask that
    cannot be put on the source's grid is an error, never written on another grid.
    """
    import nibabel as nib
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    from ..io import write_mask_nifti
    from ..io.nifti import _load

    first = slices[0]
    shape, axis = tuple(first.extra["volume_shape"]), int(first.extra["axis"])
    volume = np.zeros(shape, dtype=np.uint8)
    for s, m in zip(slices, masks):
        index = [slice(None)] * 3
        index[axis] = s.extra.get("canonical_index", s.slice_index)  # slice_index is the stored number
        volume[tuple(index)] = stored_from_display(m, s) != 0

    stored = _load(Path(source))
    header = stored.header
    stored_shape = tuple(int(n) for n in stored.shape[:3])
    if len(stored_shape) == 2:  # a single 2-D slice: the reader added a third axis of length 1
        stored_shape += (1,)
    affine = np.asarray(stored.affine, dtype=np.float64)
    to_stored = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(affine))
    back = apply_orientation(volume, to_stored).astype(np.uint8)
    canonical_affine = np.asarray(first.affine, dtype=np.float64)
    if back.shape != stored_shape or not np.allclose(
            canonical_affine @ nib.orientations.inv_ornt_aff(to_stored, shape), affine, atol=1e-4):
        raise NeuralScanError(f"{source}: the mask does not map back onto the source's voxel grid "
                              f"(shape {back.shape} vs {stored_shape})")
    if len(stored.shape) == 2:
        back = back[:, :, 0]
    write_mask_nifti(path, back, affine, header=header)


# -------------------------------------------------------------------------------------------- the work

@dataclass
class ScanJob:
    path: Path
    name: str
    slices: list
    images: list  # model inputs, float32 (S, S)
    geoms: list
    displays: list  # (pixels, spacing, midline_x) per slice


def prepare_scan(path: Path, name: str, config) -> ScanJob:
    from ..io import read_scan
    from ..preprocess import head_box, normalize_intensity, preprocess_image

    slices = read_scan(path)
    job = ScanJob(path, name, slices, [], [], [])
    for s in slices:
        pixels, spacing = display_slice(s)
        image01, _, geom = preprocess_image(pixels, config)
        image01 = np.rint(image01 * 255.0) / 255.0  # 8-bit, as the training cache stores images
        r0, r1, c0, c1 = geom.box if config.crop else head_box(normalize_intensity(pixels, config.clip_low,
                                                                                   config.clip_high),
                                                               config.head_threshold, config.margin)
        job.images.append(image01)
        job.geoms.append(geom)
        job.displays.append((pixels, spacing, (c0 + c1 - 1) / 2.0))
    return job


def check_postprocessing(threshold: float | None, min_component: float | None) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise NeuralScanError(f"threshold must be between 0 and 1, got {threshold}")
    if min_component is not None and not 0.0 <= min_component < 1.0:
        raise NeuralScanError(f"min_component must be a share of the image in [0, 1), got {min_component}")


def postprocess_masks(probs: np.ndarray, threshold: float, min_pixels: int) -> np.ndarray:
    """(N, S, S[, 1]) probabilities -> (N, S, S) bool masks: above threshold, small blobs dropped."""
    probs = np.asarray(probs)
    if probs.ndim == 4:
        probs = probs[..., 0]
    return np.stack([remove_small_components(p > threshold, min_pixels) for p in probs]) if len(probs) else \
        np.zeros(probs.shape, bool)


MIN_COMPONENT_GRID = (0.0, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.008)


def choose_min_component(probs: np.ndarray, masks_true: np.ndarray, threshold: float = 0.5,
                         grid: Sequence[float] = MIN_COMPONENT_GRID) -> tuple[float, dict[float, float]]:
    """The smallest-blob rule that maximises mean Dice (an empty truth predicted empty scores 1) on the given
    images -- meant for the training split, so that validation figures stay untouched by the choice. Ties go
    to the smaller value. Returns (best share, {share: mean Dice})."""
    from ..evaluation.metrics import dice_per_image

    size = np.asarray(probs).shape[1]
    scores = {}
    for share in grid:
        pred = postprocess_masks(probs, threshold, int(np.ceil(share * size * size)))
        scores[float(share)] = float(dice_per_image(masks_true, pred).mean())
    best = max(scores, key=lambda s: (round(scores[s], 6), -s))
    return best, scores


GATE_OFF = "none"


class TumourGate:
    """A classifier that empties the mask of every slice it calls `no_tumor`.

    A segmenter sees one slice at a time and paints a few false blobs on healthy scans; a classifier trained on
    whole healthy scans is the better judge of "is there a tumour at all". The gate classifier must read the
    segmenter's own preprocessed images (same preprocessing and size), so one decoding serves both.
    """

    def __init__(self, spec: str | Path, segmenter: ModelBundle, engine: str = "auto"):
        from .bundle import BundleError
        from .runners import load_for_task

        self.spec = str(spec)
        try:
            self.bundle, self.runner = load_for_task(_gate_path(spec, segmenter), "classify", engine)
        except BundleError as exc:  # say it is the gate that is wrong, not the command's own model
            raise NeuralScanError(f"gate {self.spec}: {exc}") from None
        if NO_TUMOR not in self.bundle.classes:
            raise NeuralScanError(f"gate {self.spec}: the classifier has no {NO_TUMOR} class "
                                  f"({', '.join(self.bundle.classes)}), so it cannot tell a scan has no tumour")
        if self.bundle.preprocessing != segmenter.preprocessing:
            raise NeuralScanError(f"gate {self.spec}: the classifier's preprocessing differs from the segmenter's "
                                  f"{segmenter.name}; a gate must read the same images")
        self.no_tumor = self.bundle.classes.index(NO_TUMOR)

    def absent(self, images01: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(N,) bool: the slices the classifier calls no_tumor (its top class), for (N, S, S) images in [0, 1]."""
        if not len(images01):
            return np.zeros(0, bool)
        probs = self.runner.predict(np.asarray(images01, np.float32), batch_size=batch_size)
        return np.asarray(probs).argmax(axis=1) == self.no_tumor


def _gate_path(spec: str | Path, segmenter: ModelBundle) -> str | Path:
    """A relative gate path in model.json is relative to the segmenter's bundle; names like 'bundled' stay."""
    p = Path(str(spec))
    if not p.is_absolute() and not p.exists() and (Path(segmenter.root) / p).exists():
        return Path(segmenter.root) / p
    return spec


def load_gate(segmenter: ModelBundle, gate: str | Path | None = None, engine: str = "auto") -> TumourGate | None:
    """The gate to apply: `gate` when given ('none' turns it off), else the segmenter's own (model.json)."""
    spec = segmenter.postprocessing["gate"] if gate is None else str(gate)
    if spec is None or spec == GATE_OFF:
        return None
    return TumourGate(spec, segmenter, engine)


def finish_scan(job: ScanJob, probs: np.ndarray, out_dir: Path, threshold: float, min_pixels: int,
                absent: Sequence[bool] | None = None, files: OutputFiles | None = None) -> tuple[list, int]:
    """Masks, overlays and measurement rows of one scan; slices marked in `absent` (a gate's no-tumour calls)
    get an empty mask; `files` keeps the scan off other scans' file names. Returns (csv rows, slices with
    tumour)."""
    from ..io import write_mask_png
    from ..preprocess import restore_mask

    per_slice, volume = (files or OutputFiles()).claim(job)
    rows, masks, n_tumor = [], [], 0
    for k, (s, prob, geom, (pixels, spacing, midline)) in enumerate(zip(job.slices, probs, job.geoms,
                                                                         job.displays)):
        small = postprocess_masks(prob[None], threshold, min_pixels)[0]
        if absent is not None and absent[k]:
            small[:] = False
        mask = restore_mask(small, geom).astype(bool)
        # the readers say how left-right lies across the displayed slice (None: not along its rows, or unknown)
        lateral = s.extra.get("lateral", "radiological")
        m = measure_mask(mask, spacing, None if lateral is None else midline,
                         radiological=lateral != "neurological")
        n_tumor += bool(m["tumor_present"])
        mask_rel, overlay_rel = per_slice[k]
        write_mask_png(out_dir / mask_rel, mask)
        _save_png(out_dir / overlay_rel, overlay_rgb(pixels, mask))
        masks.append(mask)
        rows.append([str(job.path), s.slice_index, *(m[c] for c in COLUMNS), mask_rel, overlay_rel])
    if volume is not None:
        _write_nifti_mask(out_dir / volume, job.path, job.slices, masks)
    return rows, n_tumor


def load_segmenter(model: str | Path | ModelBundle, engine: str = "auto"):
    """(bundle, runner) for a segmentation model spec; BundleError when it is missing or not a segmenter."""
    from .runners import load_for_task

    return load_for_task(model, "segment", engine)


def segment_paths(paths: Sequence[str | Path], model: str | Path | ModelBundle, out_dir: str | Path, *,
                  engine: str = "auto", threshold: float | None = None, batch_size: int = 16,
                  min_component: float | None = None, gate: str | Path | None = None, runner=None,
                  overwrite: bool = False, limit: int | None = None,
                  on_total: Callable[[int], None] | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> SegmentSummary:
    """Segment every scan under `paths` into `out_dir` (see the module docstring); resumable.

    `overwrite`: start afresh (`clear_results`) instead of resuming; `limit`: segment at most this many files
    in this run (a rerun does the rest).

    `on_total(n)` is called once with the number of files to process in this run, `on_progress(done, n)`
    after each file (segmented or failed). `gate`: a classifier that empties the masks of slices it calls
    no_tumor ('none': no gate; None: the model's own, see TumourGate). User mistakes (missing path, no scans,
    wrong model or gate, an output folder holding other results) raise NeuralScanError before anything is
    written; a file that cannot be segmented is recorded in errors.csv and the summary, and the batch goes on.
    """
    t0 = time.perf_counter()
    check_postprocessing(threshold, min_component)
    if limit is not None and limit < 0:
        raise NeuralScanError(f"limit must be 0 or more, got {limit}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NeuralScanError(f"{out_dir}: exists and is not a folder")
    files, root, ignored = find_scans(paths, exclude=out_dir)
    names = output_names(files, root)
    if runner is None:
        bundle, runner = load_segmenter(model, engine)
    else:
        bundle = runner.bundle
    config = bundle.preprocessing
    # None: the model's own rule (model.json `postprocessing`)
    threshold = bundle.postprocessing["threshold"] if threshold is None else float(threshold)
    min_component = bundle.postprocessing["min_component"] if min_component is None else float(min_component)
    tumour_gate = load_gate(bundle, gate)
    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        clear_results(out_dir)
    _check_run_info(out_dir, {"model": bundle.name, "model_path": str(Path(bundle.root).resolve()),
                              "engine": runner.engine,
                              "threshold": float(threshold), "min_component": float(min_component),
                              "gate": None if tumour_gate is None else str(Path(tumour_gate.bundle.root).resolve())})
    output_files = OutputFiles()
    done = _read_done(out_dir / MEASUREMENTS, output_files)
    earlier = earlier_failures(out_dir / ERRORS)
    todo = failed_last([f for f in files if f not in done], earlier)
    summary = SegmentSummary(out_dir, model=bundle.name, engine=runner.engine, n_files=len(files),
                             n_resumed=len(files) - len(todo), n_ignored=ignored)
    todo, summary.n_left, summary.n_not_retried = limit_todo(todo, limit, earlier)
    if on_total:
        on_total(len(todo))
    min_pixels = bundle.min_component_pixels(min_component)

    new_file = not (out_dir / MEASUREMENTS).is_file() or (out_dir / MEASUREMENTS).stat().st_size == 0
    with open(out_dir / MEASUREMENTS, "a", newline="") as out_fh, ErrorsFile(out_dir / ERRORS) as errors:
        if new_file:
            csv.writer(out_fh).writerow(FIELDS)
            out_fh.flush()
        finished = 0

        def failed(path: Path, exc: BaseException) -> None:
            msg = file_error_text(path, exc)
            summary.errors.append(msg)
            errors.failed(printable_path(path), msg)

        def advance() -> None:
            nonlocal finished
            finished += 1
            if on_progress:
                on_progress(finished, len(todo))

        def flush(pending: list[ScanJob]) -> None:
            if not pending:
                return
            images = np.stack([im for job in pending for im in job.images]).astype(np.float32)
            probs = runner.predict(images, batch_size=batch_size)
            # blank slices (a volume's empty ends) get an empty mask, as do the gate's no-tumour calls
            absent = no_signal(images)
            if tumour_gate is not None:
                absent |= np.asarray(tumour_gate.absent(images), dtype=bool)
            start = 0
            for job in pending:
                n = len(job.images)
                try:
                    rows, n_tumor = finish_scan(job, probs[start:start + n], out_dir, threshold, min_pixels,
                                                None if absent is None else absent[start:start + n],
                                                files=output_files)
                except Exception as exc:  # noqa: BLE001 -- one bad scan must not stop the batch
                    failed(job.path, exc)
                else:
                    buf = io.StringIO()
                    csv.writer(buf).writerows([[_format(v) for v in r] for r in rows])
                    out_fh.write(buf.getvalue())  # one write per scan: its rows land together
                    out_fh.flush()
                    errors.tried(printable_path(job.path))
                    summary.n_segmented += 1
                    summary.n_slices += n
                    summary.n_tumor += n_tumor
                start += n
                advance()
            pending.clear()

        pending: list[ScanJob] = []
        n_pending = 0
        for f in todo:
            try:
                job = prepare_scan(Path(f), names[f], config)
            except Exception as exc:  # noqa: BLE001 -- unreadable, corrupt, empty: reported and skipped
                failed(f, exc)
                advance()
                continue
            pending.append(job)
            n_pending += len(job.images)
            if n_pending >= batch_size:
                flush(pending)
                n_pending = 0
        flush(pending)
    summary.seconds = time.perf_counter() - t0
    return summary
