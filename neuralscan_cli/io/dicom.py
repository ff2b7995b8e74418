"""DICOM scans, read with pydicom (imported only when a DICOM file is read).

Pixels are the modality values: Rescale Slope/Intercept (or a Modality LUT) applied, MONOCHROME1 inverted
so that bright always means high signal, colour converted to luminance. No VOI window is applied. A
multi-frame file gives one slice per frame (slice_index = frame number).

Privacy: nothing that identifies the patient, institution or study leaves this module. The patient is
represented only by `patient_key`, a salted hash; `extra` holds technical fields only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ScanReadError, ScanReader, ScanSlice, middle_indices, one_line, register_reader
from .privacy import patient_key

# What to install for each compressed transfer syntax, as pip package names.
_JPEG_BASELINE_HINT = "pillow, or pylibjpeg and pylibjpeg-libjpeg, or python-gdcm"
_JPEG_LOSSLESS_HINT = "pylibjpeg and pylibjpeg-libjpeg, or python-gdcm"
_JPEG_LS_HINT = "pyjpegls, or pylibjpeg and pylibjpeg-libjpeg, or python-gdcm"
_JPEG_2000_HINT = "pylibjpeg and pylibjpeg-openjpeg, or pillow built with OpenJPEG, or python-gdcm"
_DECODER_HINTS = {
    "1.2.840.10008.1.2.4.50": _JPEG_BASELINE_HINT,
    "1.2.840.10008.1.2.4.51": _JPEG_BASELINE_HINT,
    "1.2.840.10008.1.2.4.57": _JPEG_LOSSLESS_HINT,
    "1.2.840.10008.1.2.4.70": _JPEG_LOSSLESS_HINT,
    "1.2.840.10008.1.2.4.80": _JPEG_LS_HINT,
    "1.2.840.10008.1.2.4.81": _JPEG_LS_HINT,
    "1.2.840.10008.1.2.4.90": _JPEG_2000_HINT,
    "1.2.840.10008.1.2.4.91": _JPEG_2000_HINT,
    "1.2.840.10008.1.2.4.201": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle",
}
_LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _dicom_patient_key(ds) -> str | None:
    """Hash of PatientID, else PatientName + BirthDate, else StudyInstanceUID; None if none is present."""
    patient_id = _text(ds, "PatientID")
    if patient_id:
        return patient_key(patient_id)
    name = _text(ds, "PatientName")
    if name:
        return patient_key(f"{name}|{_text(ds, 'PatientBirthDate')}")
    study_uid = _text(ds, "StudyInstanceUID")
    return patient_key(study_uid) if study_uid else None


def _pixel_spacing(ds) -> tuple[float, float] | None:
    """(row, col) spacing in mm, from the top level or, for enhanced multi-frame, the shared groups."""
    spacing = ds.get("PixelSpacing")
    if spacing is None:
        try:
            spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        except (AttributeError, IndexError, KeyError):
            return None
    try:
        row, col = (float(v) for v in spacing)
    except (TypeError, ValueError):  # malformed value: better unknown than wrong
        return None
    return (row, col)


def _lateral_display(ds) -> str | None:
    """How patient left-right lies across the image (extra["lateral"], read by `segment`'s hemisphere):
    'radiological' (the image's left is the patient's right: the usual display, assumed when the file has no
    ImageOrientationPatient), 'neurological' (mirrored), or None when left-right does not run along the
    image's rows (sagittal, or a rotated slice)."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        try:
            iop = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
        except (AttributeError, IndexError, KeyError):
            return "radiological"
    try:
        row_x = float(iop[0])  # DICOM LPS: +x is the patient's left; iop[:3] is the direction of a row
    except (TypeError, ValueError, IndexError):
        return "radiological"
    if abs(row_x) < 0.7:
        return None
    return "radiological" if row_x > 0 else "neurological"


def _check_decoder(path: Path, ds) -> None:
    """Fail with an install hint, before pydicom tries, when compressed pixels have no decoder."""
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None or not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except Exception:  # pydicom has no decoder class at all for this transfer syntax (it raises, not returns)
        raise ScanReadError(f"{path}: pixel data uses {syntax.name} ({syntax}), which pydicom cannot decode") from None
    if not decoder.is_available:
        hint = _DECODER_HINTS.get(str(syntax)) or "; ".join(decoder.missing_dependencies)
        raise ScanReadError(f"{path}: pixel data uses {syntax.name} ({syntax}) and no decoder is installed: install {hint}")


def _rescale_of(item) -> tuple[float, float] | None:
    if item is None or ("RescaleSlope" not in item and "RescaleIntercept" not in item):
        return None
    return float(item.get("RescaleSlope", 1.0) or 1.0), float(item.get("RescaleIntercept", 0.0) or 0.0)


def _first_item(ds, sequence: str, index: int = 0):
    items = ds.get(sequence)
    return items[index] if items and index < len(items) else None


def _frame_rescale(ds, frame_count: int) -> list[tuple[float, float]]:
    """(slope, intercept) per frame: top level, else enhanced multi-frame per-frame or shared groups."""
    top = _rescale_of(ds)
    if top is not None:
        return [top] * frame_count
    shared_group = _first_item(ds, "SharedFunctionalGroupsSequence")
    shared = _rescale_of(_first_item(shared_group, "PixelValueTransformationSequence")) if shared_group else None
    rescales = []
    for frame in range(frame_count):
        frame_group = _first_item(ds, "PerFrameFunctionalGroupsSequence", frame)
        own = _rescale_of(_first_item(frame_group, "PixelValueTransformationSequence")) if frame_group else None
        rescales.append(own or shared or (1.0, 0.0))
    return rescales


def _modality_pixels(ds, decoded: np.ndarray) -> np.ndarray:
    """Decoded pixels -> (frames, rows, cols) float32 modality values, colour made grey."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    photometric = _text(ds, "PhotometricInterpretation").upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric == "PALETTE COLOR":
        decoded = apply_color_lut(decoded, ds)
        samples = 3
    if samples == 3:
        # pydicom has already converted YBR_* to RGB.
        return (decoded.astype(np.float32) @ _LUMINANCE).reshape(-1, *decoded.shape[-3:-1])
    if ds.get("ModalityLUTSequence"):
        grey = apply_modality_lut(decoded, ds).astype(np.float32).reshape(-1, *decoded.shape[-2:])
    else:
        grey = decoded.astype(np.float32).reshape(-1, *decoded.shape[-2:])
        rescale = np.asarray(_frame_rescale(ds, len(grey)), dtype=np.float32)
        if np.any(rescale != (1.0, 0.0)):
            grey = grey * rescale[:, 0, None, None] + rescale[:, 1, None, None]
    if photometric == "MONOCHROME1":  # stored inverted (0 = white): flip so bright means high signal
        grey = grey.max() + grey.min() - grey
    return grey


@register_reader
class DicomReader(ScanReader):
    name = "DICOM"
    extensions = (".dcm", ".dicom")

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        return head[128:132] == b"DICM"

    def read(self, path: Path, *, axis: int = 2, middle: int | None = None) -> list[ScanSlice]:
        try:
            import pydicom
            from pydicom.errors import InvalidDicomError
        except ImportError:
            raise ScanReadError(f"{path}: reading DICOM needs pydicom (pip install pydicom)") from None

        try:
            ds = pydicom.dcmread(path, force=False)
        except InvalidDicomError:
            raise ScanReadError(f"{path}: not a DICOM file (no DICM marker at byte 128)") from None
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise ScanReadError(f"{path}: DICOM file holds no image (e.g. a report, DICOMDIR or presentation state)")
        _check_decoder(path, ds)
        try:
            decoded = ds.pixel_array
        except Exception as exc:  # a decoder exists but the data is broken: still one clean line
            syntax = ds.file_meta.get("TransferSyntaxUID")
            syntax_name = syntax.name if syntax is not None else "unknown transfer syntax"
            raise ScanReadError(f"{path}: cannot decode {syntax_name} pixel data: {one_line(str(exc)) or type(exc).__name__}") from None
        frames = _modality_pixels(ds, decoded)

        spacing = _pixel_spacing(ds)
        modality = _text(ds, "Modality") or None
        key = _dicom_patient_key(ds)
        syntax = ds.file_meta.get("TransferSyntaxUID")
        extra = {
            "frames": len(frames),
            "photometric": _text(ds, "PhotometricInterpretation"),
            "transfer_syntax": syntax.name if syntax is not None else None,
            "lateral": _lateral_display(ds),
        }
        return [
            ScanSlice(
                pixels=np.ascontiguousarray(frames[index]),
                source=str(path),
                slice_index=index,
                spacing=spacing,
                modality=modality,
                patient_key=key,
                extra=dict(extra),
            )
            for index in middle_indices(len(frames), middle)  # frames of a multi-frame file form a volume
        ]
