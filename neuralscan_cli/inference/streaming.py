"""Classifying scans on disk as a stream: `classify_paths(paths, model, out)`.

The pipeline, one stage feeding the next through bounded buffers, so memory stays flat however many files:

  find_scans        the input files and folders (recursive, every format `read_scan` reads), sorted
  skip done         files already in the output (resume)
  decode            a thread pool reads and preprocesses a few files ahead (PIL, numpy and the readers release
                    the GIL; threads also avoid forking a process that holds OpenVINO or TensorFlow)
  infer             OpenVINO: an AsyncInferQueue on the bundle's IR compiled with the THROUGHPUT hint, as many
                    requests as the plugin finds optimal, `batch_size` images per request; Keras (a .keras
                    model or --engine keras, for comparison): batched, synchronous
  write             rows in input order, every file's rows in one write, flushed; then the file's path is
                    appended to the `<out>.done` list

Every slice of a file is one row (`columns`): path, slice, label, confidence, p_<class> for each class of the
model in its class order (the 4-class model's classes are sorted: p_glioma, p_meningioma, p_no_tumor,
p_pituitary), tumor (true unless the label is no_tumor or blank; empty for a model without a no_tumor class)
and model (bundle name:engine). A slice with no signal (`preprocess.no_signal`) is labelled blank, with empty
probabilities. With a segmenter (`with_segmentation`), the segmentation library's measurement columns
follow, and its masks and overlays are written to `seg_out_dir`. When the segmenter's model.json names a gate
(inference.segmentation.TumourGate), this classifier's own no_tumor calls are the gate.

Resuming: a file is done when its path is in `<out>.done`, which is written after its rows; a rerun first
drops any rows of files not in that list (a run killed between the two writes) and a torn last line, then
scores only the rest, so every file ends up in the output exactly once. Files that failed are listed in
`<out stem>.errors.csv` (path, error) and tried again by a rerun.

Slices are preprocessed exactly as `load_images_for_bundle` does (the bundle's saved parameters, rounded
to 8 bits as the cache stores them), so a scan scores the same here as in `evaluate`. NIfTI slices are turned
to the usual radiological display first, as the segmentation library does (2-D training images look so).
"""
from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import NeuralScanError
from ..io.base import file_error_text, printable_path
from .bundle import ModelBundle

FORMATS = ("csv", "jsonl")
NO_TUMOR = "no_tumor"
BLANK = "blank"  # the label of a slice with no signal (no probabilities, no tumour)
OPENVINO_BATCH = 4  # images per infer request (see `classify_paths`)
KERAS_BATCH = 32
MAX_PENDING_FILES = 64  # files decoded and submitted but not yet written
AHEAD_PER_WORKER = 4  # files decoded ahead of inference, per decode thread


@dataclass
class ClassifySummary:
    out: Path
    errors_path: Path
    model: str = ""
    engine: str = ""
    n_files: int = 0  # scan files found
    n_resumed: int = 0  # already in the output: skipped
    n_scored: int = 0  # files scored in this run
    n_slices: int = 0  # rows written in this run
    n_ignored: int = 0  # files in the folders that are not scans, and manifest rows with a blank image cell
    counts: dict = field(default_factory=dict)  # label -> slices, this run
    n_tumor: int = 0  # slices with a tumour label, this run
    errors: list[str] = field(default_factory=list)  # one line per failed file
    seconds: float = 0.0
    n_left: int = 0  # files never tried, left by `limit` for a later run
    n_not_retried: int = 0  # files that failed in an earlier run, not retried in this one (`limit`)
    batch_size: int = 0
    infer_requests: int = 0
    workers: int = 0

    @property
    def n_failed(self) -> int:
        return len(self.errors)

    @property
    def images_per_second(self) -> float:
        return self.n_slices / self.seconds if self.seconds > 0 else 0.0

    @property
    def stopped_early(self) -> bool:
        return self.n_left > 0


def columns(bundle: ModelBundle, with_segmentation: bool = False) -> list[str]:
    # probability columns in alphabetical class order (p_glioma, p_meningioma, p_no_tumor, p_pituitary), so a
    # results file reads the same whatever order the model's outputs are in
    cols = ["path", "slice", "label", "confidence", *(f"p_{c}" for c in sorted(bundle.classes)), "tumor", "model"]
    if with_segmentation:
        from .segmentation import FIELDS

        cols += [c for c in FIELDS if c not in ("path", "slice")]
    return cols


def sidecar_paths(out: Path) -> tuple[Path, Path]:
    """(<out>.done, <out stem>.errors.csv)."""
    return out.with_name(out.name + ".done"), out.with_name(out.stem + ".errors.csv")


def load_classifier(model: str | Path | ModelBundle, engine: str = "auto"):
    """(bundle, runner) for a classifier spec; BundleError for a missing model or one that is not a classifier."""
    from .runners import load_for_task

    return load_for_task(model, "classify", engine)


# ------------------------------------------------------------------------------------------ output files

def _fmt_csv(value, six: bool) -> str:
    """A CSV cell: probabilities with 6 decimals, measurements with 2 (as segment's measurements.csv)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}" if six else f"{value:.2f}"
    return str(value)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class _Output:
    """The results file (CSV or JSON lines), resumable."""

    def __init__(self, path: Path, fmt: str, cols: list[str], model_tag: str, legacy_tag: str | None = None):
        self.path, self.fmt, self.cols, self.model_tag, self.legacy_tag = path, fmt, cols, model_tag, legacy_tag
        self.done_path, self.errors_path = sidecar_paths(path)
        self.fh = self.done_fh = None

    # --- resume
    def _read_rows(self) -> Iterator[dict]:
        with open(self.path, newline="", encoding="utf-8") as fh:
            if self.fmt == "csv":
                reader = csv.reader(fh)
                header = next(reader, None)
                if header is None:
                    return
                if header != self.cols:
                    raise NeuralScanError(f"{self.path}: holds results with other columns (another model or "
                                          f"--with-segmentation setting); use --overwrite or another --out")
                for row in reader:
                    if row:
                        yield dict(zip(header, row))
            else:
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        raise NeuralScanError(f"{self.path}: not a JSON-lines results file; use --overwrite or "
                                              f"another --out") from None
                    if not isinstance(row, dict) or list(row) != self.cols:
                        raise NeuralScanError(f"{self.path}: holds results with other columns (another model or "
                                              f"--with-segmentation setting); use --overwrite or another --out")
                    yield row

    def _is_results_file(self) -> bool:
        """Whether the file at `path` looks like results this command writes (any model's columns)."""
        try:
            with open(self.path, newline="", encoding="utf-8") as fh:
                first = fh.readline()
        except (OSError, UnicodeDecodeError):
            return False
        if not first.strip():
            return True
        if self.fmt == "csv":
            header = next(csv.reader([first]), [])
            return header[:4] == ["path", "slice", "label", "confidence"] and "model" in header
        try:
            row = json.loads(first)
        except json.JSONDecodeError:
            return False
        return isinstance(row, dict) and list(row)[:4] == ["path", "slice", "label", "confidence"]

    def prepare(self, overwrite: bool) -> set[str]:
        """The source paths already done; drops rows of unfinished files and a torn last line."""
        if overwrite:
            if self.path.is_file() and not self._is_results_file():  # e.g. the input manifest named as --out
                raise NeuralScanError(f"{self.path}: not a results file written by neuralscan classify, so "
                                      f"--overwrite will not delete it; choose another --out")
            for p in (self.path, self.done_path, self.errors_path):
                p.unlink(missing_ok=True)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            self.done_path.unlink(missing_ok=True)
            return set()
        with open(self.path, "rb") as fh:  # the last byte only: a big results file is not read into memory
            fh.seek(-1, os.SEEK_END)
            torn = fh.read(1) != b"\n"
        if torn:  # a row cut short by a crash (rare): drop it
            data = self.path.read_bytes()
            if b"\n" in data:
                next(self._read_rows(), None)  # a file that is not ours raises here, before anything is changed
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])
            del data
        listed = None
        if self.done_path.is_file():
            listed = {ln for ln in self.done_path.read_text(encoding="utf-8").splitlines() if ln}
        in_file, unfinished = set(), False
        for row in self._read_rows():
            # rows written before the segmenter joined the tag (classifier only) resume as the same run
            if row.get("model") not in (self.model_tag, self.legacy_tag):
                raise NeuralScanError(f"{self.path}: holds results of model {row.get('model')}, not "
                                      f"{self.model_tag}; use the same model to resume, --overwrite or another --out")
            in_file.add(row["path"])
            unfinished |= listed is not None and row["path"] not in listed
        if listed is None:  # no list (deleted, or an older file): every file in the output counts as done
            self._write_done(sorted(in_file))
            return in_file
        if unfinished:  # rows written, then stopped before the file was listed as done: redo that file
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            rows = [r for r in self._read_rows() if r["path"] in listed]
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                self._write_rows(fh, rows, header=True)
            os.replace(tmp, self.path)
        done = listed & in_file
        if done != listed:
            self._write_done(sorted(done))
        return done

    def _write_done(self, paths: list[str]) -> None:
        tmp = self.done_path.with_name(f".{self.done_path.name}.tmp")
        tmp.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
        os.replace(tmp, self.done_path)

    # --- writing
    def _write_rows(self, fh, rows: list[dict], header: bool = False) -> None:
        if self.fmt == "csv":
            w = csv.writer(fh, lineterminator="\n")
            if header:
                w.writerow(self.cols)
            six = [c == "confidence" or c.startswith("p_") for c in self.cols]
            w.writerows([[_fmt_csv(r[c], x) for c, x in zip(self.cols, six)] for r in rows])
        else:
            for r in rows:
                fh.write(json.dumps({c: r[c] for c in self.cols}, default=_json_default) + "\n")

    def open(self):
        """Open the outputs for appending (the errors file keeps earlier failures until their files are
        tried again: see `ErrorsFile`)."""
        from .segmentation import ErrorsFile

        new = not self.path.is_file() or self.path.stat().st_size == 0
        self.fh = open(self.path, "a", newline="", encoding="utf-8")
        if new and self.fmt == "csv":
            csv.writer(self.fh, lineterminator="\n").writerow(self.cols)
            self.fh.flush()
        self.done_fh = open(self.done_path, "a", encoding="utf-8")
        self.errors = ErrorsFile(self.errors_path)

    def file_done(self, path: str, rows: list[dict]) -> None:
        buf = io.StringIO()
        self._write_rows(buf, rows)
        self.fh.write(buf.getvalue())  # one write per file: its rows land together
        self.fh.flush()
        self.done_fh.write(path + "\n")  # only then is the file done
        self.done_fh.flush()
        self.errors.tried(printable_path(path))

    def file_failed(self, path: str, message: str) -> None:
        self.errors.failed(path, message)

    def close(self) -> None:
        for fh in (self.fh, self.done_fh, getattr(self, "errors", None)):
            if fh is not None:
                fh.close()


# -------------------------------------------------------------------------------------------- decoding

@dataclass
class _File:
    path: str
    name: str
    slices: list[int] = field(default_factory=list)
    images: np.ndarray | None = None  # uint8 (n, S, S), dropped once submitted
    probs: np.ndarray | None = None
    remaining: int = 0
    error: str | None = None
    seg_job: object = None
    blank: np.ndarray | None = None  # per slice: no signal (see preprocess.no_signal)


def _decode(entry: _File, config, seg_config) -> _File:
    """Read and preprocess every slice (in a worker thread); a failure is recorded, never raised."""
    from ..io import read_scan
    from ..preprocess import no_signal, preprocess_image
    from ..io.base import display_slice
    from .segmentation import prepare_scan

    try:
        scans = read_scan(entry.path)
        images = []
        for s in scans:
            pixels, _spacing = display_slice(s)
            img01, _mask, _geom = preprocess_image(pixels, config)
            images.append(np.rint(img01 * 255.0).astype(np.uint8))  # as the cache stores it
            entry.slices.append(int(s.slice_index))
        entry.images = np.stack(images)
        entry.blank = no_signal(entry.images)
        if seg_config is not None:
            entry.seg_job = prepare_scan(Path(entry.path), entry.name, seg_config)
    except Exception as exc:  # noqa: BLE001 -- corrupt, empty, not a scan: reported and skipped
        entry.error = file_error_text(entry.path, exc)
        entry.images = entry.seg_job = None
        entry.slices = []
    return entry


def _decoded(entries: Iterable[_File], pool: ThreadPoolExecutor, ahead: int, config, seg_config) -> Iterator[_File]:
    """Decoded files in input order, at most `ahead` in progress at once."""
    todo = iter(entries)
    futures: deque = deque()
    for e in todo:
        futures.append(pool.submit(_decode, e, config, seg_config))
        if len(futures) >= ahead:
            break
    while futures:
        done = futures.popleft().result()
        nxt = next(todo, None)
        if nxt is not None:
            futures.append(pool.submit(_decode, nxt, config, seg_config))
        yield done


# ------------------------------------------------------------------------------------------- inference

class _AsyncScorer:
    """OpenVINO AsyncInferQueue on the runner's THROUGHPUT-compiled model; results arrive via `on_done`."""

    def __init__(self, runner, on_done):
        import openvino as ov

        self.compiled = runner.compiled
        self.calibrate = runner.calibrate
        try:
            n = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        except RuntimeError:
            n = 0
        self.n_requests = max(1, n)
        self.queue = ov.AsyncInferQueue(self.compiled, self.n_requests)
        self.on_done = on_done
        self.queue.set_callback(self._callback)

    def _callback(self, request, tags) -> None:
        # copied before the request's buffer is reused, and calibrated as `Runner.predict` is
        outputs = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        self.on_done(tags, self.calibrate(outputs))

    def submit(self, x: np.ndarray, tags: list) -> None:
        self.queue.start_async({0: x}, tags)  # blocks while every request is busy: natural back-pressure

    def wait(self) -> None:
        self.queue.wait_all()


class _SyncScorer:
    """Any runner (Keras), one batch at a time."""

    n_requests = 1

    def __init__(self, runner, on_done):
        self.runner, self.on_done = runner, on_done

    def submit(self, x: np.ndarray, tags: list) -> None:
        self.on_done(tags, self.runner.predict(x, batch_size=len(x)))

    def wait(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------ main

def classify_paths(paths: Sequence[str | Path], model: str | Path | ModelBundle = "bundled",
                   out: str | Path = "results.csv", *, engine: str = "auto", fmt: str | None = None,
                   workers: int | None = None, batch_size: int | None = None,
                   with_segmentation: str | Path | None = None, seg_out_dir: str | Path | None = None,
                   seg_threshold: float | None = None, overwrite: bool = False, limit: int | None = None, runner=None,
                   on_total: Callable[[int], None] | None = None,
                   on_progress: Callable[[int, int, int], None] | None = None) -> ClassifySummary:
    """Classify every slice of every scan under `paths` into `out` (see the module notes); resumable.

    fmt        "csv" or "jsonl" (default: from the suffix of `out`)
    workers    decode threads (default: the CPU count, at most 4). Decode processes were tried: alone they
               decoded ~1.4x faster, but end to end on 2 cores (where decoding and the network share the
               CPU) they scored no faster (INT8, 2,400 figshare PNGs: 324/356 vs 319/370 img/s), so it
               stays with threads, which need no `if __name__ == "__main__"` guard in a caller's script
    batch_size images per inference request (default: 4 for OpenVINO, 32 for Keras). With the THROUGHPUT
               hint the plugin runs one request per CPU stream; a few images per request amortise the
               per-request overhead (on a tiny 64 px network, 2 streams: ~5.9k img/s at batch 1, ~13k at 4,
               ~20k at 8 or 32), which matters little for real networks, whose compute dominates, and
               not at all while decoding is the bottleneck (the pipeline ran ~250-290 img/s on 512 px
               PNG/JPEG either way on a busy 2-core machine)
    limit      score at most this many files in this run (the rest are left for a rerun)
    on_total(n) once, with the number of files to do in this run; on_progress(files_done, n, images_done)
    after each file (scored or failed).
    User mistakes (missing path, no scans, wrong model, an output holding other results) raise
    NeuralScanError/BundleError before anything is written; a file that cannot be read is recorded in the
    errors file and the summary, and the rest go on.
    """
    from .segmentation import (OutputFiles, earlier_failures, failed_last, find_scans, limit_todo, load_segmenter,
                               output_names)

    t0 = time.perf_counter()
    out = Path(out)
    fmt = fmt or ("jsonl" if out.suffix.lower() in (".jsonl", ".ndjson") else "csv")
    if fmt not in FORMATS:
        raise NeuralScanError(f"format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    if out.is_dir():
        raise NeuralScanError(f"{out}: is a folder; --out takes a file name such as results.csv")
    if limit is not None and limit < 0:
        raise NeuralScanError(f"limit must be 0 or more, got {limit}")
    seg_dir = None
    if with_segmentation is not None:
        seg_dir = Path(seg_out_dir) if seg_out_dir is not None else out.with_name(out.stem + "_segmentation")
        if seg_dir.exists() and not seg_dir.is_dir():
            raise NeuralScanError(f"{seg_dir}: exists and is not a folder")
    files, root, ignored = find_scans(paths, exclude=seg_dir)
    out_path = str(out.resolve())
    if out_path in files or any(out_path == str(Path(p).resolve()) for p in paths):
        raise NeuralScanError(f"{out}: is one of the inputs; --out names the results file to write")
    if runner is None:
        bundle, runner = load_classifier(model, engine)
    else:
        bundle = runner.bundle
    seg_bundle = seg_runner = None
    if with_segmentation is not None:
        seg_bundle, seg_runner = load_segmenter(with_segmentation)
    classes = bundle.classes
    tag = f"{bundle.name}:{runner.engine}"
    if seg_runner is not None:  # a resume must not mix masks of two segmenters either
        tag += f"+{seg_bundle.name}:{seg_runner.engine}"
    cols = columns(bundle, seg_runner is not None)
    is_openvino = runner.engine.startswith("openvino")
    batch_size = int(batch_size or (OPENVINO_BATCH if is_openvino else KERAS_BATCH))
    if batch_size < 1:
        raise NeuralScanError(f"batch size must be at least 1, got {batch_size}")
    workers = int(workers or min(4, os.cpu_count() or 1))

    # with segmentation columns, a row tagged with the classifier alone comes from before the segmenter joined
    # the tag (2026-11-28): the same run, not another model's
    output = _Output(out, fmt, cols, tag,
                     legacy_tag=f"{bundle.name}:{runner.engine}" if seg_runner is not None else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = output.prepare(overwrite)
    earlier = earlier_failures(output.errors_path)
    todo = failed_last([f for f in files if f not in done], earlier)
    summary = ClassifySummary(out, output.errors_path, model=bundle.name, engine=runner.engine,
                              n_files=len(files), n_resumed=len(files) - len(todo), n_ignored=ignored,
                              batch_size=batch_size, workers=workers)
    todo, summary.n_left, summary.n_not_retried = limit_todo(todo, limit, earlier)
    if on_total:
        on_total(len(todo))
    names = output_names(files, root) if seg_runner is not None else {}
    output_files = OutputFiles()
    if seg_runner is not None and output.path.is_file() and output.path.stat().st_size:
        output_files.claim_rows(output._read_rows())  # masks written by earlier runs into this folder
    # a file's record is made when decoding reaches it and dropped once written, so the run holds a few
    # dozen records, not one per file listed (a long run must not grow with the archive)
    entries = (_File(f, names.get(f, "")) for f in todo)
    n_todo = len(todo)
    del files, done
    min_pixels = 0
    if seg_dir is not None:
        seg_dir.mkdir(parents=True, exist_ok=True)
        min_pixels = seg_bundle.min_component_pixels()  # the segmenter's own mask rule
        if seg_threshold is None:
            seg_threshold = seg_bundle.postprocessing["threshold"]

    cond = threading.Condition()
    counts: Counter = Counter()
    finished = 0
    no_tumor_known = NO_TUMOR in classes
    gated = seg_bundle is not None and seg_bundle.postprocessing["gate"] is not None and no_tumor_known
    no_tumor_index = classes.index(NO_TUMOR) if no_tumor_known else -1

    def on_done(tags, outputs) -> None:  # an inference thread (OpenVINO) or the main thread (Keras)
        outputs = np.array(outputs, dtype=np.float32, copy=True)  # the request's buffer is reused
        with cond:
            for (entry, k), row in zip(tags, outputs):
                entry.probs[k] = row
                entry.remaining -= 1
            cond.notify_all()

    def rows_of(entry: _File) -> list[dict]:
        rows = []
        seg_rows = {}
        if entry.seg_job is not None:
            from .segmentation import FIELDS, finish_scan

            probs = seg_runner.predict(np.stack(entry.seg_job.images).astype(np.float32), batch_size=16)
            # a gated segmenter: this classifier's own no_tumor calls empty the masks, so a row never says
            # no_tumor beside a measured tumour (and no second classifier runs)
            absent = [bool(entry.blank[k]) or (gated and int(entry.probs[k].argmax()) == no_tumor_index)
                      for k in range(len(entry.slices))]
            srows, _n = finish_scan(entry.seg_job, probs, seg_dir, seg_threshold, min_pixels, absent,
                                    files=output_files)
            for r in srows:
                values = dict(zip(FIELDS, r))
                seg_rows[int(values["slice"])] = {k: values[k] for k in FIELDS if k not in ("path", "slice")}
        for k, s in enumerate(entry.slices):
            p = entry.probs[k]
            if entry.blank[k]:  # nothing to classify: said so, not guessed
                row = {"path": str(entry.path), "slice": s, "label": BLANK, "confidence": None}
                row |= {f"p_{c}": None for c in classes}
                row["tumor"] = False if no_tumor_known else None
            else:
                top = int(p.argmax())
                label = classes[top]
                row = {"path": str(entry.path), "slice": s, "label": label, "confidence": round(float(p[top]), 6)}
                row |= {f"p_{c}": round(float(v), 6) for c, v in zip(classes, p)}
                row["tumor"] = (label != NO_TUMOR) if no_tumor_known else None
            row["model"] = tag
            if entry.seg_job is not None:
                row |= seg_rows.get(s, {})
            rows.append(row)
        return rows

    def emit(entry: _File) -> None:
        nonlocal finished
        if entry.error is None:
            try:
                rows = rows_of(entry)
            except Exception as exc:  # noqa: BLE001 -- e.g. a mask that cannot be written: that file fails
                entry.error = file_error_text(entry.path, exc)
            else:
                output.file_done(str(entry.path), rows)
                summary.n_scored += 1
                summary.n_slices += len(rows)
                for r in rows:
                    counts[r["label"]] += 1
        if entry.error is not None:
            summary.errors.append(entry.error)
            output.file_failed(printable_path(entry.path), entry.error)
        entry.probs = entry.seg_job = None
        finished += 1
        if on_progress:
            on_progress(finished, n_todo, summary.n_slices)

    scorer = (_AsyncScorer if is_openvino and hasattr(runner, "compiled") else _SyncScorer)(runner, on_done)
    summary.infer_requests = scorer.n_requests
    size = bundle.size
    batch: list[np.ndarray] = []
    batch_tags: list = []
    pending: deque[_File] = deque()

    def submit() -> None:
        if batch:
            x = (np.stack(batch).astype(np.float32) / 255.0)[..., None]
            tags = list(batch_tags)
            batch.clear()
            batch_tags.clear()
            scorer.submit(x, tags)

    def write_ready() -> None:
        while pending:
            with cond:
                if pending[0].remaining:
                    return
            emit(pending.popleft())

    output.open()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    seg_config = seg_bundle.preprocessing if seg_bundle is not None else None
    try:
        for entry in _decoded(entries, pool, workers * AHEAD_PER_WORKER, bundle.preprocessing, seg_config):
            if entry.error is None:
                if entry.images.shape[1:] != (size, size):
                    entry.error = (f"{printable_path(entry.path)}: preprocessed to {entry.images.shape[1:]}, "
                                   f"not {size}x{size}")
                else:
                    entry.probs = np.zeros((len(entry.slices), len(classes)), np.float32)
                    entry.remaining = len(entry.slices)
            pending.append(entry)
            if entry.error is None:
                for k, img in enumerate(entry.images):
                    batch.append(img)
                    batch_tags.append((entry, k))
                    if len(batch) >= batch_size:
                        submit()
                entry.images = None
            write_ready()
            while len(pending) > MAX_PENDING_FILES:  # the oldest file holds up writing: wait for it
                submit()
                with cond:
                    cond.wait_for(lambda: pending[0].remaining == 0, timeout=1.0)
                write_ready()
        submit()
        scorer.wait()
        write_ready()
    finally:
        scorer.wait()  # nothing may still write into the entries once we leave
        pool.shutdown(wait=True, cancel_futures=True)
        output.close()
        summary.counts = dict(sorted(counts.items()))
        summary.n_tumor = sum(n for c, n in counts.items() if c not in (NO_TUMOR, BLANK)) if no_tumor_known else 0
        summary.seconds = time.perf_counter() - t0
    return summary


def decode_only(paths: Sequence[str | Path], config, *, workers: int | None = None) -> tuple[int, float]:
    """Find, read and preprocess every scan as `classify_paths` does, without a model: (slices, seconds).
    The ceiling that decoding alone puts on end-to-end scoring (bench)."""
    from .segmentation import find_scans

    t0 = time.perf_counter()
    files, _root, _ignored = find_scans(paths)
    workers = int(workers or min(4, os.cpu_count() or 1))
    entries = (_File(f, "") for f in files)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    n = 0
    try:
        for entry in _decoded(entries, pool, workers * AHEAD_PER_WORKER, config, None):
            n += len(entry.slices)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return n, time.perf_counter() - t0

