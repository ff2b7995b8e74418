"""The one reader interface every scan format implements, and the registry that picks a reader.

A new format plugs in by subclassing `ScanReader` and decorating it with `@register_reader`; the
preprocessing pipeline only ever calls `read_scan(path)`.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import NeuralScanError


class ScanReadError(NeuralScanError):
    """A file that cannot be read as a scan. The message is one line, fit to show a user."""


def one_line(text: str, limit: int = 300) -> str:
    """An error text as a single line: library messages often spread their detail over several lines."""
    joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def printable_path(path: str | Path) -> str:
    """A path as text that can be written anywhere: a file name whose bytes are not UTF-8 (an old Latin-1
    archive) gets its bad bytes as \\xNN escapes instead of failing every results file it is written to."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def file_error_text(path: str | Path, exc: BaseException) -> str:
    """The one-line message of a file that failed in a batch, starting with its (printable) path."""
    where = printable_path(path)
    text = printable_path(one_line(str(exc)))
    if not isinstance(exc, (ScanReadError, NeuralScanError)):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if text.startswith(where) else f"{where}: {text}"


@dataclass
class ScanSlice:
    """One 2-D slice of a scan, as float32, with what is known about where it came from."""

    pixels: np.ndarray  # 2-D float32, rows x cols, intensities as stored (rescaled for DICOM)
    source: str  # the path it was read from
    slice_index: int = 0  # 0 for single images; the slice number along the read axis for volumes
    spacing: tuple[float, float] | None = None  # (row, col) pixel spacing in mm, when known
    modality: str | None = None  # e.g. "MR", when known
    patient_key: str | None = None  # salted hash of the patient identity, never the identity itself
    label: str | None = None  # a label carried by the file itself (figshare .mat), else None
    mask: np.ndarray | None = None  # a tumour mask carried by the file itself (figshare .mat), else None
    affine: np.ndarray | None = None  # 4x4 voxel-to-world affine for NIfTI input, to write masks back
    extra: dict = field(default_factory=dict)  # format-specific, non-identifying details


class ScanReader(ABC):
    """Reads one file format into `ScanSlice`s."""

    name: ClassVar[str] = ""
    extensions: ClassVar[tuple[str, ...]] = ()  # lower-case, with the dot; ".nii.gz" allowed

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        """True when the file's first bytes show this format (used when the extension says nothing)."""
        return False

    @abstractmethod
    def read(self, path: Path, *, axis: int = 2, middle: int | None = None) -> list[ScanSlice]:
        """All slices of the file (volumes: along `axis`, or only the `middle` N slices)."""


_READERS: list[type[ScanReader]] = []

# Enough for every signature we sniff: DICOM "DICM" at 128, NIfTI magic at 344, HDF5 after MAT's
# 512-byte header.
SNIFF_BYTES = 1024


def register_reader(cls: type[ScanReader]) -> type[ScanReader]:
    if cls not in _READERS:  # re-importing a module must not register a reader twice
        _READERS.append(cls)
    return cls


def unregister_reader(cls: type[ScanReader]) -> None:
    """Remove a reader (tests register toy readers and must leave the registry as they found it)."""
    if cls in _READERS:
        _READERS.remove(cls)


def registered_readers() -> list[type[ScanReader]]:
    return list(_READERS)


def supported_extensions() -> set[str]:
    return {ext for r in _READERS for ext in r.extensions}


def _extension_of(path: Path) -> str:
    name = path.name.lower()
    # Longest match first, so ".nii.gz" wins over any reader that might claim ".gz".
    for ext in sorted(supported_extensions(), key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(SNIFF_BYTES)


def is_scan_file(path: str | Path) -> bool:
    """Used to walk folders: a known extension, or else a file whose first bytes a reader recognises.

    The signature check catches DICOM files saved without an extension (or with a UID as the "extension"),
    which is how most scanners and PACS exports name them.
    """
    name = os.path.basename(path).lower()  # a str test first: no Path object per file of a big archive
    if any(name.endswith(ext) for ext in supported_extensions()):
        return True
    path = Path(path)
    try:
        if not path.is_file():
            return False
        head = _read_head(path)
    except PermissionError:  # with no extension maybe a scan (DICOM from a PACS): tried, and reported
        return "." not in name or Path(name).suffix[1:].isdigit()  # no extension, or a UID's last number
    except OSError:
        return False
    return any(r.sniff(head) for r in _READERS)


def middle_indices(count: int, middle: int | None) -> range:
    """Indices of the `middle` central slices out of `count` (all of them when `middle` is None)."""
    if middle is None or middle >= count:
        return range(count)
    start = (count - middle) // 2
    return range(start, start + middle)


def reader_for(path: str | Path) -> ScanReader:
    """The reader for `path`: by extension first, then by the file's signature."""
    path = Path(path)
    ext = _extension_of(path)
    for r in _READERS:
        if ext in r.extensions:
            return r()
    try:
        head = _read_head(path)
    except OSError as exc:
        raise ScanReadError(f"{path}: cannot open ({exc.strerror or exc})") from None
    for r in _READERS:
        if r.sniff(head):
            return r()
    raise ScanReadError(f"{path}: not a supported scan format (extension {ext or 'none'})")


def read_scan(path: str | Path, *, axis: int = 2, middle: int | None = None) -> list[ScanSlice]:
    """Read any supported scan file. Raises `ScanReadError` with a one-line message on failure."""
    path = Path(path)
    if middle is not None and middle < 1:
        raise ValueError(f"middle must be a positive number of slices, got {middle}")
    if printable_path(path) != str(path):  # its name could not be written to any results or errors file
        raise ScanReadError(f"{printable_path(path)}: the file name is not valid UTF-8; rename the file (e.g. "
                            f"convmv -f latin1 -t utf8)")
    if not path.exists():
        raise ScanReadError(f"{path}: no such file")
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise ScanReadError(f"{printable_path(path)}: folder cannot be read (permission denied); its scans "
                                "were not seen")
        raise ScanReadError(f"{path}: is a folder, not a scan file")
    if path.stat().st_size == 0:
        raise ScanReadError(f"{path}: empty file")
    reader = reader_for(path)
    try:
        slices = reader.read(path, axis=axis, middle=middle)
    except ScanReadError:
        raise
    except Exception as exc:  # a corrupt file must never surface as a traceback
        msg = one_line(str(exc)) or type(exc).__name__
        raise ScanReadError(f"{path}: cannot read as {reader.name}: {msg}") from None
    if not slices:
        raise ScanReadError(f"{path}: holds no image data")
    return slices


def display_slice(s: ScanSlice) -> tuple[np.ndarray, tuple[float, float] | None]:
    """A slice as shown in radiological display, which is how every model sees it, and its (row, col) spacing.

    NIfTI slices come out of the reader in canonical RAS voxel order and are turned here; 2-D images and DICOM
    are stored for display already. Every path that prepares pixels for a model (the cache, evaluate,
    classify, segment) goes through this one function, so a volume is never seen in two orientations.
    """
    if s.affine is not None and "axis" in s.extra:
        spacing = (s.spacing[1], s.spacing[0]) if s.spacing else None
        return np.ascontiguousarray(s.pixels[::-1, ::-1].T), spacing
    return s.pixels, s.spacing


def stored_from_display(mask: np.ndarray, s: ScanSlice) -> np.ndarray:
    """Inverse of `display_slice` for a mask drawn on the displayed slice."""
    if s.affine is not None and "axis" in s.extra:
        return np.ascontiguousarray(mask.T[::-1, ::-1])
    return mask
