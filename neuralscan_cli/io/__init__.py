"""Reading scans of every supported format into `ScanSlice`s, and writing masks back.

Importing this package registers every reader. Format libraries other than numpy (Pillow, pydicom,
nibabel, h5py, scipy) are imported only when a file of that format is read, so a missing one only
affects its own format.
"""
from __future__ import annotations

from .base import (
    ScanReadError,
    ScanReader,
    ScanSlice,
    is_scan_file,
    reader_for,
    read_scan,
    register_reader,
    registered_readers,
    supported_extensions,
    unregister_reader,
)
from .privacy import patient_key
from .masks import write_mask_nifti, write_mask_png

# Registration order is sniffing order: the specific signatures (DICOM's "DICM", NIfTI's magic, MAT's
# header) go before images, whose TIFF/BMP signatures can also start a DICOM preamble.
from .dicom import DicomReader
from .nifti import NiftiReader
from .matlab import MatReader
from .images import ImageReader

__all__ = [
    "DicomReader",
    "ImageReader",
    "MatReader",
    "NiftiReader",
    "ScanReadError",
    "ScanReader",
    "ScanSlice",
    "is_scan_file",
    "patient_key",
    "read_scan",
    "reader_for",
    "register_reader",
    "registered_readers",
    "supported_extensions",
    "unregister_reader",
    "write_mask_nifti",
    "write_mask_png",
]
