"""Radiomics-style handcrafted features of one preprocessed slice, and of a whole dataset cache.

Feature families (scikit-image does the texture maths):
  first-order  intensity statistics and a normalised histogram inside the region
  glcm         Haralick properties of the grey-level co-occurrence matrix of the region, per distance,
               as the mean and the range over angles (rotation-robust)
  lbp          histograms of rotation-invariant uniform local binary patterns, at several radii
  hog          histogram of oriented gradients of the region's bounding square (and, optionally, of the
               whole slice: where a tumour sits is informative)
  shape        area, perimeter, eccentricity, solidity, ... and position of the tumour (mask region only)
  context      first-order statistics of a ring of tissue around the tumour (mask region only)

The region is the tumour mask when one exists (`region="auto"` or `"mask"`), otherwise the head (pixels
above a small threshold: cache images are already head-cropped and normalised to [0, 1]).

Nothing here knows about TensorFlow or estimators: arrays in, arrays out.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage, stats

from ..errors import NeuralScanError

FEATURE_VERSION = 1  # bump when the maths changes: old feature files are then recomputed
REGIONS = ("auto", "mask", "head")
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "ASM", "energy", "correlation", "entropy", "variance")


class FeatureError(NeuralScanError):
    """Features cannot be computed for this input (one-line message)."""


@dataclass(frozen=True)
class FeatureConfig:
    """Every parameter that changes the feature vector; saved with feature files and fitted models."""

    region: str = "auto"  # "mask" (tumour), "head", or "auto" (mask when every image has one, else head)
    head_threshold: float = 0.05  # normalised intensity above which a pixel is head
    hist_bins: int = 16  # first-order histogram bins over [0, 1]
    glcm_levels: int = 32  # grey levels the region is quantised to
    glcm_distances: tuple[int, ...] = (1, 2, 4)
    glcm_angles: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0)  # degrees
    lbp: tuple[tuple[int, float], ...] = ((8, 1.0), (16, 2.0))  # (points P, radius R) pairs
    hog_size: int = 64  # side the region's bounding square is resized to before HOG
    hog_cell: int = 16  # HOG cell side in pixels (of the hog_size image)
    hog_orientations: int = 9
    hog_global: bool = True  # also a HOG of the whole slice (tumour position and surroundings)
    crop_margin: float = 0.15  # margin added around the region's box for HOG/LBP, as a fraction of its side
    ring: float = 0.04  # width of the peritumoral ring, as a fraction of the image side (0 = no ring features)

    def __post_init__(self):
        if self.region not in REGIONS:
            raise FeatureError(f"region must be one of {', '.join(REGIONS)}, got '{self.region}'")
        if not 2 <= self.glcm_levels <= 256:
            raise FeatureError(f"glcm_levels must be in 2..256, got {self.glcm_levels}")
        if self.hist_bins < 2:
            raise FeatureError(f"hist_bins must be at least 2, got {self.hist_bins}")
        if self.hog_size < 2 * self.hog_cell:
            raise FeatureError(f"hog_size ({self.hog_size}) must hold at least 2 HOG cells of {self.hog_cell}")
        if not self.glcm_distances or not self.glcm_angles:
            raise FeatureError("give at least one GLCM distance and one angle")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["glcm_distances"] = list(self.glcm_distances)
        d["glcm_angles"] = list(self.glcm_angles)
        d["lbp"] = [list(p) for p in self.lbp]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in (d or {}).items() if k in names}
        for k in ("glcm_distances", "glcm_angles"):
            if k in d:
                d[k] = tuple(d[k])
        if "lbp" in d:
            d["lbp"] = tuple((int(p), float(r)) for p, r in d["lbp"])
        return cls(**d)

    def with_region(self, region: str) -> "FeatureConfig":
        return FeatureConfig.from_dict({**self.to_dict(), "region": region})

    def digest(self) -> str:
        blob = json.dumps({"v": FEATURE_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.blake2b(blob.encode(), digest_size=6).hexdigest()


# ---------------------------------------------------------------------------------------------- regions
def head_region(image01: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """The head: the largest bright connected component, holes filled."""
    fg = image01 > threshold
    if not fg.any():
        return np.ones_like(fg)  # a blank slice: the whole image
    labels, n = ndimage.label(fg)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        fg = labels == sizes.argmax()
    return ndimage.binary_fill_holes(fg)


def _box(region: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """Square bounding box of a region, widened by `margin` of its side, clipped to the image."""
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    h, w = region.shape
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(r1 - r0, c1 - c0)
    side = int(round(side * (1 + 2 * margin)))
    cr, cc = (r0 + r1) / 2, (c0 + c1) / 2
    r0, c0 = int(round(cr - side / 2)), int(round(cc - side / 2))
    return max(0, r0), min(h, r0 + side), max(0, c0), min(w, c0 + side)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize

    if img.shape == (size, size):
        return img
    return resize(img, (size, size), order=1, anti_aliasing=img.shape[0] > size, preserve_range=True)


# ---------------------------------------------------------------------------------------------- families
def first_order(values: np.ndarray, bins: int, prefix: str = "fo") -> tuple[list[float], list[str]]:
    v = values.astype(np.float64)
    if v.size == 0:
        v = np.zeros(1)
    p10, p25, p50, p75, p90 = np.percentile(v, [10, 25, 50, 75, 90])
    hist = np.histogram(np.clip(v, 0, 1), bins=bins, range=(0.0, 1.0))[0] / v.size
    nz = hist[hist > 0]
    sd = v.std()
    skew = float(stats.skew(v)) if sd > 1e-9 else 0.0
    kurt = float(stats.kurtosis(v)) if sd > 1e-9 else 0.0
    vals = [v.mean(), sd, v.min(), v.max(), p10, p25, p50, p75, p90, p75 - p25, np.abs(v - v.mean()).mean(),
            skew, kurt, float(-(nz * np.log2(nz)).sum()), float((hist ** 2).sum()), float(np.sqrt((v ** 2).mean()))]
    names = ["mean", "std", "min", "max", "p10", "p25", "median", "p75", "p90", "iqr", "mad", "skewness",
             "kurtosis", "entropy", "uniformity", "rms"]
    return vals + hist.tolist(), [f"{prefix}_{n}" for n in names] + [f"{prefix}_hist{i:02d}" for i in range(bins)]


def glcm_features(image01: np.ndarray, region: np.ndarray, cfg: FeatureConfig) -> tuple[list[float], list[str]]:
    """Haralick properties of the region only: pixels outside get grey level 0, which is then dropped."""
    from skimage.feature import graycomatrix, graycoprops

    r0, r1, c0, c1 = _box(region, 0.0)
    img, reg = image01[r0:r1, c0:c1], region[r0:r1, c0:c1]
    L = cfg.glcm_levels
    q = np.minimum((img * L).astype(np.int32), L - 1) + 1
    q[~reg] = 0
    angles = np.deg2rad(np.asarray(cfg.glcm_angles, dtype=np.float64))
    P = graycomatrix(q.astype(np.uint16 if L >= 255 else np.uint8), list(cfg.glcm_distances), angles,
                     levels=L + 1, symmetric=True, normed=False)[1:, 1:].astype(np.float64)
    sums = P.sum(axis=(0, 1))
    empty = sums == 0
    if empty.any():  # a region too thin for this distance: treat it as uniform
        P[0, 0][empty] = 1.0
    vals, names = [], []
    with np.errstate(invalid="ignore", divide="ignore"):
        props = {p: graycoprops(P, p) for p in GLCM_PROPS}  # each (n_distances, n_angles)
    # a uniform region has no defined correlation: use 1 (perfectly predictable), as most radiomics tools do
    props["correlation"] = np.where(np.isfinite(props["correlation"]), props["correlation"], 1.0)
    for k, d in enumerate(cfg.glcm_distances):
        for p in GLCM_PROPS:
            row = np.nan_to_num(props[p][k])
            vals += [float(row.mean()), float(row.max() - row.min())]
            names += [f"glcm_d{d}_{p}_mean", f"glcm_d{d}_{p}_range"]
    return vals, names


def lbp_features(image01: np.ndarray, region: np.ndarray, cfg: FeatureConfig) -> tuple[list[float], list[str]]:
    from skimage.feature import local_binary_pattern

    r0, r1, c0, c1 = _box(region, cfg.crop_margin)
    pad = int(max((r for _, r in cfg.lbp), default=1)) + 1
    r0, c0 = max(0, r0 - pad), max(0, c0 - pad)
    r1, c1 = min(region.shape[0], r1 + pad), min(region.shape[1], c1 + pad)
    img = np.rint(image01[r0:r1, c0:c1] * 255).astype(np.uint8)
    reg = region[r0:r1, c0:c1]
    vals, names = [], []
    for P, R in cfg.lbp:
        codes = local_binary_pattern(img, int(P), float(R), method="uniform")[reg]
        hist = np.bincount(codes.astype(np.int64), minlength=int(P) + 2)[: int(P) + 2] / max(1, codes.size)
        vals += hist.tolist()
        names += [f"lbp_p{int(P)}r{R:g}_{i:02d}" for i in range(int(P) + 2)]
    return vals, names


def hog_features(image01: np.ndarray, cfg: FeatureConfig, prefix: str) -> tuple[list[float], list[str]]:
    from skimage.feature import hog

    small = _resize(image01.astype(np.float64), cfg.hog_size)
    v = hog(small, orientations=cfg.hog_orientations, pixels_per_cell=(cfg.hog_cell, cfg.hog_cell),
            cells_per_block=(2, 2), block_norm="L2-Hys", feature_vector=True)
    return v.tolist(), [f"{prefix}_{i:03d}" for i in range(v.size)]


def shape_features(mask: np.ndarray) -> tuple[list[float], list[str]]:
    """Shape and position of the tumour mask; lengths as fractions of the image side, areas of its square."""
    from skimage.measure import label, regionprops

    m = mask.astype(bool)
    S = float(max(m.shape))
    lab = label(m)
    n = int(lab.max())
    whole = regionprops(m.astype(np.uint8))[0]
    area = float(whole.area)
    perim = float(sum(r.perimeter for r in regionprops(lab)))
    cr, cc = whole.centroid
    h, w = m.shape
    vals = [area, area / (h * w), perim, perim / S, float(whole.eccentricity), float(whole.solidity),
            float(whole.extent), whole.axis_major_length / S, whole.axis_minor_length / S,
            4 * np.pi * area / perim ** 2 if perim > 0 else 0.0, float(n), cr / h - 0.5, cc / w - 0.5,
            float(np.hypot(cr / h - 0.5, cc / w - 0.5)), abs(cc / w - 0.5)]
    names = ["area_px", "area_frac", "perimeter_px", "perimeter_frac", "eccentricity", "solidity", "extent",
             "major_axis", "minor_axis", "compactness", "n_components", "centroid_row", "centroid_col",
             "centre_distance", "midline_distance"]
    return vals, [f"shape_{n}" for n in names]


# ---------------------------------------------------------------------------------------------- one image
def extract_features(image01: np.ndarray, mask: np.ndarray | None = None,
                     config: FeatureConfig = FeatureConfig()) -> tuple[np.ndarray, list[str]]:
    """Feature vector (float32) and names of one preprocessed slice with values in [0, 1].

    With a non-empty `mask` and region "mask" or "auto" the features describe the tumour (and shape and
    peritumoral-ring features are added); otherwise the head. Region "mask" without a mask is an error.
    """
    img = np.asarray(image01, dtype=np.float32)
    if img.ndim != 2:
        raise FeatureError(f"expected a 2-D image, got shape {img.shape}")
    if img.max(initial=0) > 1.0 + 1e-6 or img.min(initial=0) < -1e-6:
        raise FeatureError("image values must lie in [0, 1] (divide uint8 cache images by 255)")
    has = mask is not None and np.asarray(mask).any()
    if config.region == "mask" and not has:
        raise FeatureError("region 'mask' needs a non-empty tumour mask for every image")
    use_mask = has and config.region != "head"
    head = head_region(img, config.head_threshold)
    region = (np.asarray(mask) > 0) if use_mask else head
    vals, names = [], []
    for v, n in (first_order(img[region], config.hist_bins), glcm_features(img, region, config),
                 lbp_features(img, region, config)):
        vals += v
        names += n
    r0, r1, c0, c1 = _box(region, config.crop_margin)
    v, n = hog_features(img[r0:r1, c0:c1], config, "hog")
    vals += v
    names += n
    if config.hog_global:
        v, n = hog_features(img, config, "hogglobal")
        vals += v
        names += n
    if use_mask:
        v, n = shape_features(region)
        vals += v
        names += n
        if config.ring > 0:
            width = max(1, int(round(config.ring * max(img.shape))))
            ring = ndimage.binary_dilation(region, iterations=width) & ~region & head
            v, n = first_order(img[ring] if ring.any() else img[region], config.hist_bins, "ring")
            vals += v[:16]  # the ring's statistics, not its histogram
            names += n[:16]
            vals.append(float(img[region].mean() - (img[ring].mean() if ring.any() else img[region].mean())))
            names.append("ring_contrast")
    return np.nan_to_num(np.asarray(vals, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0), names


# ---------------------------------------------------------------------------------------------- a cache
def resolve_region(cache, config: FeatureConfig) -> str:
    """'mask' or 'head' for a whole cache: every image must be described the same way."""
    masks_ok = cache.masks is not None and len(cache) > 0 and bool(cache.has_mask.all())
    if masks_ok:
        m = cache.masks
        masks_ok = all(bool(m[i].any()) for i in range(len(cache)))
    if config.region == "mask" and not masks_ok:
        n_missing = int((~cache.has_mask).sum()) if cache.masks is not None else len(cache)
        raise FeatureError(f"{cache.root}: region 'mask' needs a tumour mask for every image "
                           f"({n_missing or 'some'} without); use --region head or auto")
    if config.region == "head":
        return "head"
    return "mask" if masks_ok else "head"


def _work(args) -> tuple[int, np.ndarray, list[str]]:
    from ..data.cache import DatasetCache

    start, stop, root, cfg_dict = args
    cache = DatasetCache.open(root)
    cfg = FeatureConfig.from_dict(cfg_dict)
    images, masks = cache.images, cache.masks if cfg.region == "mask" else None
    rows, names = [], []
    for i in range(start, stop):
        v, names = extract_features(images[i] / np.float32(255.0), masks[i] if masks is not None else None, cfg)
        rows.append(v)
    return start, np.stack(rows), names


def feature_path(cache, config: FeatureConfig) -> Path:
    return Path(cache.root) / f"features-{config.digest()}.npz"


def extract_matrix(cache, config: FeatureConfig = FeatureConfig(), workers: int = 2, *, use_file: bool = True,
                   on_progress: Callable[[int, int], None] | None = None
                   ) -> tuple[np.ndarray, list[str], FeatureConfig]:
    """Features of every image of a cache: (X float32 (N, F), names, the config with its region resolved).

    Saved as CACHE/features-<config hash>.npz and reused while the cache fingerprint is unchanged.
    """
    cfg = config.with_region(resolve_region(cache, config))
    fingerprint = str(cache.info.get("fingerprint", ""))
    path = feature_path(cache, cfg)
    if use_file and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fingerprint and z["X"].shape[0] == len(cache):
                    return z["X"], [str(n) for n in z["names"]], cfg
        except (OSError, KeyError, ValueError):
            pass  # unreadable or old: compute again
    n = len(cache)
    if n == 0:
        raise FeatureError(f"{cache.root}: the cache holds no images")
    chunk = max(8, min(64, n // (max(1, workers) * 8) or 8))
    tasks = [(s, min(n, s + chunk), str(cache.root), cfg.to_dict()) for s in range(0, n, chunk)]
    X = np.zeros((n, 0), np.float32)
    names: list[str] = []
    done = 0

    def take(result):
        nonlocal X, names, done
        start, rows, nm = result
        if X.shape[1] == 0:
            X = np.zeros((n, rows.shape[1]), np.float32)
            names = nm
        X[start:start + len(rows)] = rows
        done += len(rows)
        if on_progress:
            on_progress(done, n)

    if workers > 1 and len(tasks) > 1:
        # spawn, not fork: forking a process that has loaded TensorFlow or OpenVINO can deadlock
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for result in pool.map(_work, tasks):
                take(result)
    else:
        for t in tasks:
            take(_work(t))
    if use_file:
        try:
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, X=X, names=np.array(names), fingerprint=np.array(fingerprint),
                     config=np.array(json.dumps(cfg.to_dict())))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache: features are simply recomputed next time
    return X, names, cfg
