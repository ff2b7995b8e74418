"""PNG, JPEG, BMP and TIFF scans (the public 2-D MRI datasets), read with Pillow.

Grey images keep their stored values (8-bit 0..255, 16-bit 0..65535, float TIFF as is); colour, palette
and grey+alpha images become luminance (ITU-R 601 weights, Pillow's "L"). A multi-page TIFF gives one slice
per page. EXIF orientation is not applied: MRI exports do not set it, and reading it costs time per image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ScanReadError, ScanReader, ScanSlice, middle_indices, register_reader

_PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # identified by content, so a JPEG named .png still reads
# Modes whose pixels numpy can take directly, keeping the full stored range.
_DIRECT_MODES = {"L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_BMP_INFO_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}


def _grey_pixels(image) -> np.ndarray:
    """One Pillow frame as a 2-D float32 array of its grey values."""
    mode = image.mode
    if mode not in _DIRECT_MODES:
        # Signed / other 16-bit variants go through 32-bit int to keep their range; "1", colour,
        # palette and alpha modes become 8-bit luminance (a binary image becomes 0/255, like our masks).
        image = image.convert("I" if mode.startswith("I;") else "L")
    return np.asarray(image).astype(np.float32)


@register_reader
class ImageReader(ScanReader):
    name = "image"
    extensions = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
            return True
        # "BM" alone matches too much text, so also require a known BMP info-header size.
        return head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_INFO_HEADER_SIZES

    def read(self, path: Path, *, axis: int = 2, middle: int | None = None) -> list[ScanSlice]:
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(path, formats=_PILLOW_FORMATS)
        except UnidentifiedImageError:
            raise ScanReadError(f"{path}: not a PNG, JPEG, BMP or TIFF image") from None
        with image:
            stored_mode = image.mode
            if image.format == "JPEG" and image.mode == "RGB":
                # Let libjpeg output grey directly: skips the colour conversion and the RGB buffer.
                image.draft("L", image.size)
            page_count = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
            slices = []
            for page in middle_indices(page_count, middle):  # a TIFF stack is a volume: `middle` applies
                if page:
                    image.seek(page)
                    stored_mode = image.mode
                # asarray forces the decode; a truncated file raises here (LOAD_TRUNCATED_IMAGES stays off).
                pixels = _grey_pixels(image)
                slices.append(
                    ScanSlice(
                        pixels=pixels,
                        source=str(path),
                        slice_index=page,
                        extra={"format": image.format, "mode": stored_mode},
                    )
                )
        return slices
