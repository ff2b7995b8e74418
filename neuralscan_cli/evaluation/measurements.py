"""Size, position and side of a tumour mask: the numbers a radiologist reports (RANO-style diameters).

Pure array maths (numpy, scipy); nothing here knows about models or files.

Conventions
-----------
* Coordinates are pixel indices of the mask's own grid: x = column, y = row, (0, 0) the top-left pixel's centre.
* `spacing` is (row_mm, col_mm), the size of one pixel; None when unknown. Anisotropic spacing is handled by
  scaling the coordinates to mm before any distance is taken. Columns in mm are None when spacing is unknown;
  the `*_px` columns are always given, in pixel units (i.e. as if the spacing were 1 x 1).
* Area and centroid and bounding box are of the whole mask (every component). The diameters are measured on
  the largest connected component (8-connectivity), as a radiologist measures the one lesion, not the gap
  between two.
* A pixel is a square, not a point: the lesion is the union of its pixel squares. So a 40 x 20 pixel rectangle
  measures exactly 40 x 20, and a disc of radius r drawn as pixels measures about 2r + 1.
* Maximum diameter: the longest segment between two points of the lesion, i.e. the largest distance between
  two vertices of the convex hull of the pixel squares' corners.
* Perpendicular diameter: the longest chord of the lesion perpendicular to that maximum diameter. The lesion
  is sampled on lines perpendicular to the maximum diameter (lines a quarter-pixel apart, samples a quarter-
  pixel apart along each line); on each line the longest unbroken run of lesion samples is a chord, and the
  longest chord is the perpendicular diameter. A chord never bridges a gap outside the lesion (for a concave
  lesion it is the longest segment that stays inside it). Accurate to about a quarter of a pixel.
* Bidimensional product: maximum x perpendicular diameter (RANO's measure of enhancing tumour size).
* Hemisphere: which side of the head's midline holds the lesion, reported from the PATIENT's point of view.
  Radiological display (the image's left side is the patient's right, as in the public MRI datasets and DICOM
  viewers) unless told the image is mirrored (a DICOM row direction towards the patient's right):
  "patient_right" when at least `MIDLINE_SHARE` of the lesion's area lies on the patient's right of the
  midline column, "patient_left" for the left, "midline" otherwise (a lesion straddling the midline). None
  when no midline is given (left-right unknown: a sagittal or rotated slice, a NIfTI file without
  orientation) or there is no lesion.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

COLUMNS = ("tumor_present", "area_px", "area_mm2", "max_diameter_mm", "perpendicular_diameter_mm",
           "bidimensional_product_mm2", "centroid_x", "centroid_y", "bbox", "hemisphere",
           "max_diameter_px", "perpendicular_diameter_px")
MIDLINE_SHARE = 0.75  # share of the lesion area on one side for it to count as that side's
SAMPLES_PER_PIXEL = 4  # perpendicular chords: sampling step, in fractions of the smallest pixel side
MAX_SAMPLES_PER_LINE = 4000  # caps the sampling of huge lesions (the step grows instead)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (the mask itself when empty)."""
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def remove_small_components(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """The mask without its 8-connected components smaller than `min_pixels` pixels."""
    mask = np.asarray(mask, dtype=bool)
    if min_pixels <= 1 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def _corner_points(component: np.ndarray) -> np.ndarray:
    """(x, y) corners of the boundary pixels' squares: everything the convex hull of the lesion depends on."""
    boundary = component & ~ndimage.binary_erosion(component, border_value=0)
    rows, cols = np.nonzero(boundary)
    offsets = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    pts = np.stack([cols, rows], axis=1).astype(np.float64)[:, None, :] + offsets[None, :, :]
    return np.unique(pts.reshape(-1, 2), axis=0)


def _max_diameter(points_mm: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Length and end points of the longest segment between two of the points (via their convex hull)."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = points_mm[ConvexHull(points_mm).vertices]
    except (QhullError, ValueError):  # fewer than three points or all on a line
        hull = points_mm
    d2 = ((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(d2.argmax()), d2.shape)
    return math.sqrt(float(d2[i, j])), hull[i], hull[j]


def _longest_runs(inside: np.ndarray) -> np.ndarray:
    """Per row of a boolean array, the length of its longest run of True."""
    n_rows, n_cols = inside.shape
    padded = np.zeros((n_rows, n_cols + 2), dtype=np.int8)
    padded[:, 1:-1] = inside
    d = np.diff(padded, axis=1)
    starts_r, starts_c = np.nonzero(d == 1)
    _, ends_c = np.nonzero(d == -1)  # row-major order: ends pair up with starts
    best = np.zeros(n_rows, dtype=np.int64)
    if len(starts_r):
        np.maximum.at(best, starts_r, ends_c - starts_c)
    return best


def _perpendicular_diameter(component: np.ndarray, spacing: tuple[float, float], p: np.ndarray, q: np.ndarray,
                            points_mm: np.ndarray) -> float:
    """Longest chord of the component perpendicular to the segment p-q (all in mm, x then y)."""
    row_mm, col_mm = spacing
    u = (q - p) / max(np.linalg.norm(q - p), 1e-12)  # along the maximum diameter
    v = np.array([-u[1], u[0]])  # perpendicular to it
    along, across = points_mm @ u, points_mm @ v
    a0, a1, b0, b1 = along.min(), along.max(), across.min(), across.max()
    step = min(row_mm, col_mm) / SAMPLES_PER_PIXEL
    step = max(step, max(a1 - a0, b1 - b0) / MAX_SAMPLES_PER_LINE)
    ts = np.arange(a0 + step / 2, a1, step)  # one line per t, perpendicular to the maximum diameter
    ws = np.arange(b0 + step / 2, b1, step)  # samples along each line
    if len(ts) == 0 or len(ws) == 0:
        return 0.0
    h, w = component.shape
    best = 0
    # lines in chunks: bounded memory for big lesions
    chunk = max(1, 2_000_000 // len(ws))
    for start in range(0, len(ts), chunk):
        t = ts[start:start + chunk]
        x = t[:, None] * u[0] + ws[None, :] * v[0]
        y = t[:, None] * u[1] + ws[None, :] * v[1]
        # a point inside pixel (r, c)'s square rounds to (r, c)
        c = np.floor(x / col_mm + 0.5).astype(np.int64)
        r = np.floor(y / row_mm + 0.5).astype(np.int64)
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        inside = np.zeros(r.shape, dtype=bool)
        inside[ok] = component[r[ok], c[ok]]
        best = max(best, int(_longest_runs(inside).max()))
    return best * step


def diameters(mask: np.ndarray, spacing: tuple[float, float] | None = None) -> tuple[float, float]:
    """(maximum, perpendicular) diameter of the mask's largest component, in mm (pixels when spacing is None).

    (0.0, 0.0) for an empty mask. See the module docstring for the method.
    """
    component = largest_component(mask)
    if not component.any():
        return 0.0, 0.0
    row_mm, col_mm = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    corners = _corner_points(component)
    points_mm = corners * np.array([col_mm, row_mm])
    longest, p, q = _max_diameter(points_mm)
    perpendicular = _perpendicular_diameter(component, (row_mm, col_mm), p, q, points_mm)
    return longest, perpendicular


def hemisphere(mask: np.ndarray, midline_x: float | None, radiological: bool = True) -> str | None:
    """'patient_right' / 'patient_left' / 'midline'; `radiological`: the image's left is the patient's right
    (False: a mirrored, neurological-convention image)."""
    mask = np.asarray(mask, dtype=bool)
    if midline_x is None or not mask.any():
        return None
    cols = np.nonzero(mask)[1].astype(np.float64)
    left = float((cols < midline_x).sum()) + 0.5 * float((cols == midline_x).sum())  # the image's left
    share_left = left / len(cols)
    image_left, image_right = ("patient_right", "patient_left") if radiological else ("patient_left", "patient_right")
    if share_left >= MIDLINE_SHARE:
        return image_left
    if 1.0 - share_left >= MIDLINE_SHARE:
        return image_right
    return "midline"


def measure_mask(mask: np.ndarray, spacing: Sequence[float] | None = None,
                 midline_x: float | None = None, radiological: bool = True) -> dict:
    """The measurements of one 2-D tumour mask, keyed by `COLUMNS`.

    mask       (H, W), non-zero = tumour
    spacing    (row_mm, col_mm) of one pixel, or None when unknown (then every *_mm* value is None)
    midline_x  the column of the head's midline (e.g. the centre of the head's bounding box), for `hemisphere`
               (None: left-right unknown, no hemisphere)
    radiological  whether the image's left is the patient's right (the usual display)

    An empty mask gives tumor_present False and None for every measurement.
    """
    mask = np.asarray(mask) != 0
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {mask.shape}")
    if spacing is not None:
        spacing = (float(spacing[0]), float(spacing[1]))
        if not all(math.isfinite(s) and s > 0 for s in spacing):
            spacing = None
    out: dict = {k: None for k in COLUMNS}
    out["tumor_present"] = bool(mask.any())
    if not out["tumor_present"]:
        return out
    rows, cols = np.nonzero(mask)
    area = int(len(rows))
    out["area_px"] = area
    out["centroid_x"] = float(cols.mean())
    out["centroid_y"] = float(rows.mean())
    out["bbox"] = f"{int(cols.min())} {int(rows.min())} {int(cols.max())} {int(rows.max())}"  # inclusive
    out["hemisphere"] = hemisphere(mask, midline_x, radiological)
    out["max_diameter_px"], out["perpendicular_diameter_px"] = diameters(mask, None)
    if spacing is not None:
        out["area_mm2"] = area * spacing[0] * spacing[1]
        longest, perpendicular = diameters(mask, spacing)
        out["max_diameter_mm"] = longest
        out["perpendicular_diameter_mm"] = perpendicular
        out["bidimensional_product_mm2"] = longest * perpendicular
    return out
