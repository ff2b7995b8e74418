"""NIfTI volumes (.nii, .nii.gz), read with nibabel (imported only when a NIfTI file is read).

Orientation: the volume is first reoriented to the closest canonical RAS+ orientation
(`nib.as_closest_canonical`), so array axis 0 runs towards patient Right, 1 towards Anterior, 2 towards
Superior. A slice along `axis` is `volume.take(index, axis)`, not rotated or flipped, so its rows follow the
lower remaining axis and its columns the higher one. For the default axis 2 (axial) rows run Left->Right and
columns Posterior->Anterior; shown as an image that is rotated 90 degrees from the usual view. The usual
radiological display (anterior up, patient's right on the image's left) of an axial slice `p` is
`p[::-1, ::-1].T`, and a mask drawn on that display goes back with `mask.T[::-1, ::-1]`.

`slice_index` is the slice's number as stored in the file: the index along the stored axis that canonical
`axis` comes from (for a file stored Superior->Inferior, canonical slice 0 is stored slice n-1), so the
number a user reads in a CSV is the slice a viewer shows under that number. Slices still come out in canonical
order. Every slice carries the canonical affine and `extra={"volume_shape", "axis", "canonical_index"}`:
stacking per-slice masks (unrotated) at their `extra["canonical_index"]` along `axis` into a zero volume of
`volume_shape` and saving it with that affine (`write_mask_nifti`) lines up with the original scan in any
viewer; `neuralscan segment` goes one step further and maps that volume back onto the file's own voxel grid.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ScanReadError, ScanReader, ScanSlice, middle_indices, register_reader

_NIFTI1_MAGIC = b"n+1\x00"  # single-file NIfTI-1, at byte 344
_NIFTI2_MAGIC = b"n+2\x00"  # single-file NIfTI-2, at byte 4


def _load(path: Path):
    """The NIfTI image; by content when the name lacks a NIfTI extension (nibabel picks by name)."""
    import nibabel as nib

    # nibabel logs each header fix (e.g. "setting 0 dims to 1") to the terminal; the reader handles those
    import logging

    logging.getLogger("nibabel.global").setLevel(logging.ERROR)
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return nib.load(path)
    if name.endswith(".nii"):
        with open(path, "rb") as fh:
            head = fh.read(348)
        if not NiftiReader.sniff(head):  # nibabel's own message for this is obscure
            raise ScanReadError(f"{path}: not a NIfTI file (no NIfTI magic in the header)")
        return nib.load(path)
    data = path.read_bytes()
    image_class = nib.Nifti2Image if data[4:8] == _NIFTI2_MAGIC else nib.Nifti1Image
    return image_class.from_bytes(data)


_MM_PER_UNIT = {"meter": 1000.0, "mm": 1.0, "micron": 0.001}  # NIfTI xyzt_units; 'unknown' is taken as mm


def _zero_pixdim(path: Path, axes: list[int]) -> bool:
    """Whether the file's own header gives a voxel size of 0 along any of the stored `axes` (0-2; nibabel
    replaces those with 1 when loading)."""
    import gzip

    import nibabel as nib

    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"  # by content: extension-less files are read by content too
        with (gzip.open if gz else open)(path, "rb") as fh:
            head = fh.read(540)
        nifti2 = head[4:8] == _NIFTI2_MAGIC
        header_class = nib.Nifti2Header if nifti2 else nib.Nifti1Header
        header = header_class(binaryblock=head[:540 if nifti2 else 348], check=False)  # extensions not read
        pixdim = np.asarray(header["pixdim"], dtype=float)
        return bool(np.any(pixdim[[a + 1 for a in axes]] <= 0))
    except Exception:  # noqa: BLE001 -- unreadable here means nibabel read it some other way: keep its spacing
        return False


def _has_orientation(image) -> bool:
    """Whether the header says where the patient is (a qform or sform code), as NIfTI's methods 2 and 3."""
    header = image.header
    try:
        return int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0
    except (KeyError, ValueError, TypeError):
        return True


def _stored_axis_flipped(ornt: np.ndarray, axis: int) -> bool | None:
    """Whether canonical `axis` runs against the stored axis it comes from (None: no single such axis).

    `ornt` is `io_orientation` of the stored affine, one row (canonical axis, flip) per stored axis, which is
    what `as_closest_canonical` applies."""
    rows = np.flatnonzero(ornt[:, 0] == axis)
    return bool(ornt[rows[0], 1] < 0) if len(rows) == 1 else None


@register_reader
class NiftiReader(ScanReader):
    name = "NIfTI"
    extensions = (".nii", ".nii.gz")

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        # Gzipped files are recognised by extension only: gzip's magic says nothing about the content.
        return head[344:348] == _NIFTI1_MAGIC or head[4:8] == _NIFTI2_MAGIC

    def read(self, path: Path, *, axis: int = 2, middle: int | None = None) -> list[ScanSlice]:
        try:
            import nibabel as nib
        except ImportError:
            raise ScanReadError(f"{path}: reading NIfTI needs nibabel (pip install nibabel)") from None
        if axis not in (0, 1, 2):
            raise ScanReadError(f"{path}: slice axis must be 0, 1 or 2, got {axis}")

        image = _load(path)
        if image.ndim < 2:
            raise ScanReadError(f"{path}: NIfTI holds {image.ndim}-D data, not an image")
        if image.ndim > 3:  # 4-D (time series, multi-echo...): the first volume only
            image = image.slicer[(slice(None),) * 3 + (0,) * (image.ndim - 3)]
        if image.ndim == 2:
            # Canonical reorientation needs three axes; the single slice's axis is wherever axis 2 lands.
            image = nib.Nifti1Image(np.asanyarray(image.dataobj)[:, :, None], image.affine, image.header)
            axis = int(nib.io_orientation(image.affine)[2, 0])
        canonical = nib.as_closest_canonical(image)
        flipped = _stored_axis_flipped(nib.io_orientation(image.affine), axis)
        if flipped is None:
            raise ScanReadError(f"{path}: cannot tell which stored axis is slice axis {axis} (degenerate affine)")
        volume_shape = tuple(int(n) for n in canonical.shape)
        in_plane = [a for a in range(3) if a != axis]
        affine = np.array(canonical.affine, dtype=np.float64)
        # Voxel sizes from the affine (what maps voxels to mm), not pixdim, which sform may override.
        voxel_sizes = nib.affines.voxel_sizes(affine) * _MM_PER_UNIT.get(image.header.get_xyzt_units()[0], 1.0)
        spacing = (float(voxel_sizes[in_plane[0]]), float(voxel_sizes[in_plane[1]]))
        oriented = _has_orientation(image)
        # in-plane axes as stored (with no orientation the canonical axes are the stored ones, as nibabel
        # orients such a file by pixdim alone)
        if not oriented and _zero_pixdim(path, in_plane):
            spacing = None  # no voxel size in the file: nibabel's stand-in 1 mm would invent millimetres

        indices = middle_indices(volume_shape[axis], middle)
        if len(indices) == 0:
            raise ScanReadError(f"{path}: NIfTI volume has no slices along axis {axis}")
        # Read only the wanted slab (a proxy reads just those bytes from an uncompressed .nii).
        slab = [slice(None)] * 3
        slab[axis] = slice(indices.start, indices.stop)
        data = np.asarray(canonical.dataobj[tuple(slab)], dtype=np.float32)
        return [
            ScanSlice(
                pixels=np.ascontiguousarray(data.take(offset, axis=axis)),
                source=str(path),
                slice_index=volume_shape[axis] - 1 - index if flipped else index,  # the file's own number
                spacing=spacing,
                modality=None,
                affine=affine.copy(),
                extra={"volume_shape": volume_shape, "axis": axis, "canonical_index": index,
                       # no qform/sform: nibabel's fallback orientation is a guess, so left-right is unknown
                       "lateral": None if not oriented or axis == 0 else "radiological"},
            )
            for offset, index in enumerate(indices)
        ]
