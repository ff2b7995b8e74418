"""Per-image preprocessing: intensity normalisation, head crop, square resize with padding, CLAHE.

Pure array functions (nothing here touches files). Every geometric step is recorded in a `Geometry` so the
same transform applies to a mask (nearest neighbour) and a predicted mask can be mapped back onto the scan.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from PIL import Image
from scipy import ndimage


@dataclass(frozen=True)
class PreprocessConfig:
    """Every parameter that changes the pixels a model sees; saved in the cache and in model bundles."""

    size: int = 256  # output side, pixels (square)
    clip_low: float = 0.5  # percentile mapped to 0
    clip_high: float = 99.5  # percentile mapped to 1
    crop: bool = True  # crop to the head's bounding box before resizing
    head_threshold: float = 0.08  # normalised intensity above which a pixel counts as head
    margin: float = 0.02  # margin added around the head box, as a fraction of its side
    clahe: bool = False  # contrast-limited adaptive histogram equalisation after resizing
    clahe_clip: float = 0.01

    def __post_init__(self):
        if not 16 <= self.size <= 2048:
            raise ValueError(f"size must be between 16 and 2048, got {self.size}")
        if not 0 <= self.clip_low < self.clip_high <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.clip_low}, {self.clip_high}")
        if not 0 <= self.head_threshold <= 1 or self.margin < 0:
            raise ValueError(f"head_threshold must be in [0, 1] and margin >= 0, got {self.head_threshold}, {self.margin}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Geometry:
    """Where the output square came from: crop box in the source, then padding to a square, then scale."""

    src_shape: tuple[int, int]
    box: tuple[int, int, int, int]  # r0, r1, c0, c1 (half-open) in the source image
    pad: tuple[int, int]  # rows, cols of zero padding added before the crop box (top, left)
    side: int  # side of the padded square, in source pixels
    size: int  # output side


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's linear interpolation between order statistics, operation for operation (bit-identical)."""
    d = b - a
    return b - d * (1.0 - t) if t >= 0.5 else a + d * t


def _integer_percentiles(sample: np.ndarray, qs) -> list[float] | None:
    """np.percentile(sample.astype(float32), qs) of an integer image from a histogram: O(n) instead of a
    partial sort, and the same numbers to the last bit. None when the value range is too wide for one."""
    lo_v, hi_v = int(sample.min()), int(sample.max())
    if hi_v - lo_v >= 1 << 20:
        return None
    cum = np.cumsum(np.bincount((sample.ravel() - lo_v).astype(np.int64)))
    n = int(cum[-1])
    out = []
    for q in qs:
        h = (n - 1) * (q / 100.0)
        k = int(np.floor(h))
        a = float(np.float32(np.searchsorted(cum, k, side="right") + lo_v))
        b = float(np.float32(np.searchsorted(cum, min(k + 1, n - 1), side="right") + lo_v))
        out.append(_lerp(a, b, h - k))
    return out


def normalize_intensity(img: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Clip to the [low, high] percentiles and scale to [0, 1] (robust to a few hot pixels).

    NaN / inf pixels (a float NIfTI's background after skull stripping or registration) count as the darkest
    finite value; a slice with no finite pixel at all (such a volume's end slices) is empty: all zeros."""
    img = np.asarray(img)
    if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
        finite = np.isfinite(img)
        if not finite.any():
            return np.zeros(img.shape, np.float32)
        img = np.where(finite, img, img[finite].min())
    # percentiles of a strided subsample: same answer to within a grey level, several times faster
    step = max(1, int(np.sqrt(img.size / 65536)))
    sample = img[::step, ::step]
    pct = None
    if sample.size and np.issubdtype(sample.dtype, np.integer):
        pct = _integer_percentiles(sample, (low, high))
    elif sample.size and sample.dtype == np.float32:
        # readers hand over float32; most scans hold whole grey levels (8/12/16-bit), exact in float32
        whole = np.rint(sample)
        if np.array_equal(whole, sample) and np.abs(whole).max() < 1 << 24:
            pct = _integer_percentiles(whole.astype(np.int64), (low, high))
    img = img.astype(np.float32, copy=False)
    lo, hi = pct if pct is not None else np.percentile(img[::step, ::step], [low, high])
    if hi <= lo:
        hi = float(img.max())
        lo = float(img.min())
    if hi <= lo:
        return np.zeros_like(img, dtype=np.float32)
    out = (img - lo) * (1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    return out


def head_box(norm: np.ndarray, threshold: float = 0.08, margin: float = 0.02) -> tuple[int, int, int, int]:
    """Bounding box of the largest bright connected region (the head), ignoring burnt-in text and noise."""
    h, w = norm.shape
    fg = norm > threshold
    # work on a reduced grid: labelling a 4x smaller image finds the same head far faster
    f = max(1, min(h, w) // 128)
    small = fg[::f, ::f]
    small = ndimage.binary_opening(small, iterations=1)
    labels, n = ndimage.label(small)
    if n == 0:
        return 0, h, 0, w
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    rows, cols = np.nonzero(labels == sizes.argmax())
    r0, r1 = rows.min() * f, min(h, (rows.max() + 1) * f)
    c0, c1 = cols.min() * f, min(w, (cols.max() + 1) * f)
    if (r1 - r0) < 0.1 * h or (c1 - c0) < 0.1 * w:  # nothing head-like: keep the whole image
        return 0, h, 0, w
    m = int(round(margin * max(r1 - r0, c1 - c0)))
    return max(0, r0 - m), min(h, r1 + m), max(0, c0 - m), min(w, c1 + m)


def _resize(arr: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    if arr.shape == (size, size):
        return arr
    if nearest:
        im = Image.fromarray(arr.astype(np.uint8))
        return np.array(im.resize((size, size), Image.NEAREST))
    im = Image.fromarray(arr.astype(np.float32), mode="F")
    # reducing_gap gives a box pre-filter on big downscales (less aliasing) at little cost
    return np.array(im.resize((size, size), Image.BILINEAR, reducing_gap=2.0), dtype=np.float32)


def apply_geometry(arr: np.ndarray, geom: Geometry, *, nearest: bool) -> np.ndarray:
    r0, r1, c0, c1 = geom.box
    crop = arr[r0:r1, c0:c1]
    square = np.zeros((geom.side, geom.side), dtype=crop.dtype)
    pt, pl = geom.pad
    square[pt:pt + crop.shape[0], pl:pl + crop.shape[1]] = crop
    return _resize(square, geom.size, nearest)


def restore_mask(mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Map an output-space mask back onto the source image grid (inverse of `apply_geometry`)."""
    square = np.asarray(Image.fromarray((mask > 0).astype(np.uint8)).resize((geom.side, geom.side), Image.NEAREST))
    r0, r1, c0, c1 = geom.box
    pt, pl = geom.pad
    out = np.zeros(geom.src_shape, dtype=np.uint8)
    out[r0:r1, c0:c1] = square[pt:pt + (r1 - r0), pl:pl + (c1 - c0)]
    return out


def clahe(img01: np.ndarray, clip: float = 0.01) -> np.ndarray:
    from skimage.exposure import equalize_adapthist

    return equalize_adapthist(img01, clip_limit=clip).astype(np.float32)


def preprocess_image(img: np.ndarray, config: PreprocessConfig, mask: np.ndarray | None = None):
    """Normalise, crop, pad and resize one slice (and its mask). Returns (image01, mask01 | None, geometry)."""
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {img.shape}")
    if mask is not None and mask.shape != img.shape:
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {img.shape[1]}x{img.shape[0]}")
    if not (np.issubdtype(img.dtype, np.integer) or img.dtype == np.float32):
        img = img.astype(np.float32)
    norm = normalize_intensity(img, config.clip_low, config.clip_high)
    h, w = norm.shape
    box = head_box(norm, config.head_threshold, config.margin) if config.crop else (0, h, 0, w)
    bh, bw = box[1] - box[0], box[3] - box[2]
    side = max(bh, bw)
    geom = Geometry((h, w), tuple(int(v) for v in box), (int(side - bh) // 2, int(side - bw) // 2), int(side),
                    config.size)
    out = apply_geometry(norm, geom, nearest=False)
    np.clip(out, 0.0, 1.0, out=out)
    if config.clahe:
        out = clahe(out, config.clahe_clip)
    out_mask = None
    if mask is not None:
        out_mask = apply_geometry((np.asarray(mask) > 0).astype(np.uint8), geom, nearest=True)
    return out, out_mask, geom


def no_signal(images: np.ndarray) -> np.ndarray:
    """Per preprocessed image (uint8 0-255 or float 0-1, shape (n, S, S[, 1])): True where it holds no signal,
    under two grey levels between its darkest and brightest pixel (a blank or uniform slice, the empty end
    slices of a volume). A model's call on such an image means nothing, so it is not reported as one."""
    x = np.asarray(images)
    x = x.reshape(len(x), -1).astype(np.float32)
    if np.issubdtype(np.asarray(images).dtype, np.floating):
        x = x * 255.0
    return (x.max(axis=1) - x.min(axis=1)) < 2.0
