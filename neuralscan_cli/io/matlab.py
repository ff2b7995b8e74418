"""The figshare brain-tumour `.mat` files (Cheng et al. 2017): one slice with its tumour type and mask.

Each file holds a struct `cjdata` with `image` (int16, 512x512), `label` (1 meningioma, 2 glioma,
3 pituitary), `PID` (patient ID as characters), `tumorMask` and `tumorBorder`. The originals are MATLAB
v7.3, i.e. HDF5 after a 512-byte header, read with h5py; MATLAB v5 files with the same fields are read with
scipy. h5py/scipy are imported only when a .mat file is read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ScanReadError, ScanReader, ScanSlice, register_reader
from .privacy import patient_key

FIGSHARE_LABELS = {1: "meningioma", 2: "glioma", 3: "pituitary"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MAT_HEADER_BYTES = 512  # MATLAB v7.3 puts its text header in the HDF5 user block


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(_MAT_HEADER_BYTES + len(_HDF5_SIGNATURE))


def _fields_v73(path: Path) -> dict:
    try:
        import h5py
    except ImportError:
        raise ScanReadError(f"{path}: reading MATLAB v7.3 .mat needs h5py (pip install h5py)") from None
    with h5py.File(path, "r") as mat:
        struct = mat.get("cjdata")
        if not isinstance(struct, h5py.Group):
            raise ScanReadError(f"{path}: .mat file has no 'cjdata' struct (not a figshare brain-tumour file)")
        fields = {name: np.asarray(struct[name][()]) for name in ("image", "label", "PID", "tumorMask") if name in struct}
    # HDF5 keeps MATLAB's column-major layout, so 2-D arrays come out transposed.
    for name in ("image", "tumorMask"):
        if name in fields:
            fields[name] = fields[name].T
    if "PID" in fields:  # MATLAB chars are stored as uint16 code units
        fields["PID"] = "".join(chr(code) for code in fields["PID"].ravel())
    return fields


def _fields_v5(path: Path) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ScanReadError(f"{path}: MATLAB v5 .mat is not supported: re-save as v7.3 (or install scipy)") from None
    contents = loadmat(path, simplify_cells=True)
    struct = contents.get("cjdata")
    if not isinstance(struct, dict):
        raise ScanReadError(f"{path}: .mat file has no 'cjdata' struct (not a figshare brain-tumour file)")
    fields = {name: struct[name] for name in ("image", "label", "tumorMask") if name in struct}
    if "PID" in struct:
        fields["PID"] = str(struct["PID"])
    return {name: value if name == "PID" else np.asarray(value) for name, value in fields.items()}


@register_reader
class MatReader(ScanReader):
    name = "figshare .mat"
    extensions = (".mat",)

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        is_mat_header = head.startswith(b"MATLAB") and b"MAT-file" in head[:128]
        return is_mat_header or head[_MAT_HEADER_BYTES : _MAT_HEADER_BYTES + 8] == _HDF5_SIGNATURE

    def read(self, path: Path, *, axis: int = 2, middle: int | None = None) -> list[ScanSlice]:
        head = _read_head(path)
        if head[_MAT_HEADER_BYTES:] == _HDF5_SIGNATURE:
            fields = _fields_v73(path)
        elif head.startswith(b"MATLAB"):
            fields = _fields_v5(path)
        else:
            raise ScanReadError(f"{path}: not a MATLAB .mat file (no MATLAB header)")
        image = fields.get("image")
        if image is None or image.ndim != 2:
            raise ScanReadError(f"{path}: 'cjdata.image' is missing or not a 2-D image")

        mask = fields.get("tumorMask")
        if mask is not None:
            if mask.shape != image.shape:
                raise ScanReadError(f"{path}: tumour mask shape {mask.shape} differs from image shape {image.shape}")
            mask = np.ascontiguousarray(mask != 0, dtype=np.uint8)

        label_code = None
        if fields.get("label") is not None and fields["label"].size:
            label_code = int(fields["label"].ravel()[0])
        pid = fields.get("PID", "").strip()
        return [
            ScanSlice(
                pixels=np.ascontiguousarray(image, dtype=np.float32),
                source=str(path),
                patient_key=patient_key(pid) if pid else None,
                label=FIGSHARE_LABELS.get(label_code),  # an unknown code stays visible in extra
                mask=mask,
                extra={"label_code": label_code},
            )
        ]
