"""Writing predicted tumour masks next to the scans they belong to."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """Save a 2-D mask as an 8-bit PNG: 255 where `mask` is non-zero, else 0 (the datasets' convention)."""
    from PIL import Image

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a PNG mask must be 2-D, got shape {mask.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask != 0, 255, 0).astype(np.uint8), mode="L").save(path)


def write_mask_nifti(path: str | Path, mask_volume: np.ndarray, affine: np.ndarray, header=None) -> None:
    """Save a mask volume as uint8 0/1 NIfTI with the scan's affine, so viewers overlay it on the scan.

    Pass the `affine` and `extra["volume_shape"]` of the slices `read_scan` returned (the canonical RAS+
    volume): the mask then lines up with the original file, whatever its stored orientation. With the source's
    own `header` (and a volume on its stored grid), its sform/qform and their codes and units are kept instead.
    """
    import nibabel as nib

    mask_volume = np.asarray(mask_volume)
    if mask_volume.ndim not in (2, 3):
        raise ValueError(f"a NIfTI mask must be 2-D or 3-D, got shape {mask_volume.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image((mask_volume != 0).astype(np.uint8), affine)
    image.set_data_dtype(np.uint8)
    if header is not None:
        # the source's own transforms and codes (a code says what the world space is: scanner, aligned, MNI...)
        image.header.set_xyzt_units(*header.get_xyzt_units())
        image.set_sform(header.get_sform(), code=int(header["sform_code"]))
        image.set_qform(header.get_qform(), code=int(header["qform_code"]))
    else:
        # Code 1 = scanner anatomical: tells viewers both transforms are real-world, like the source scan.
        image.set_sform(affine, code=1)
        image.set_qform(affine, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
