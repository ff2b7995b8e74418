"""Tumour measurements on synthetic masks with known answers."""
import math

import numpy as np
import pytest

from neuralscan_cli.evaluation.measurements import (COLUMNS, diameters, largest_component, measure_mask,
                                                    remove_small_components)

MM_FIELDS = ("area_mm2", "max_diameter_mm", "perpendicular_diameter_mm", "bidimensional_product_mm2")


def ellipse(a: float, b: float, angle_deg: float = 0.0, shape=(200, 200), centre=(100, 100)) -> np.ndarray:
    """Filled ellipse, semi-axes a (along x before rotation) and b, in pixels."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    t = math.radians(angle_deg)
    x, y = xx - centre[1], yy - centre[0]
    xr = x * math.cos(t) + y * math.sin(t)
    yr = -x * math.sin(t) + y * math.cos(t)
    return (xr / a) ** 2 + (yr / b) ** 2 <= 1


def rectangle(rows: int, cols: int, shape=(100, 120), top=10, left=20) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[top:top + rows, left:left + cols] = True
    return m


@pytest.mark.parametrize("angle", [0, 30, 90])
def test_ellipse_diameters_and_area(angle):
    m = measure_mask(ellipse(30, 15, angle), (0.5, 0.5))
    assert m["tumor_present"] is True
    # pixels are squares: the drawn ellipse reaches half a pixel beyond its extreme pixel centres, so it
    # measures 2a + 1 by 2b + 1 pixels (within half a pixel, whatever the rotation); a pixel is 0.5 mm
    assert m["max_diameter_px"] == pytest.approx(61.0, abs=0.5)
    assert m["perpendicular_diameter_px"] == pytest.approx(31.0, abs=0.5)
    assert m["max_diameter_mm"] == pytest.approx(30.5, abs=0.25)
    assert m["perpendicular_diameter_mm"] == pytest.approx(15.5, abs=0.25)
    assert m["area_px"] == pytest.approx(math.pi * 30 * 15, rel=0.02)
    assert m["area_mm2"] == pytest.approx(m["area_px"] * 0.25)
    assert m["bidimensional_product_mm2"] == pytest.approx(m["max_diameter_mm"] * m["perpendicular_diameter_mm"])
    assert m["centroid_x"] == pytest.approx(100, abs=0.5) and m["centroid_y"] == pytest.approx(100, abs=0.5)


def test_rectangle_diagonal_and_perpendicular_chord():
    # 20 rows x 40 columns: the longest diameter is the diagonal; the longest chord perpendicular to it runs
    # from one long side to the other, 20 / cos(angle between it and the vertical) = 20 * diagonal / 40
    m = measure_mask(rectangle(20, 40), (1.0, 1.0))
    diagonal = math.hypot(40, 20)
    assert m["max_diameter_mm"] == pytest.approx(diagonal, abs=1e-6)
    assert m["perpendicular_diameter_mm"] == pytest.approx(20 * diagonal / 40, abs=0.3)
    assert m["area_px"] == 800 and m["area_mm2"] == pytest.approx(800)
    assert m["bbox"] == "20 10 59 29"  # x0 y0 x1 y1, inclusive
    assert (m["centroid_x"], m["centroid_y"]) == (39.5, 19.5)


def test_anisotropic_spacing_is_measured_in_mm():
    # 40 x 40 pixels of 1.0 mm (rows) x 0.5 mm (cols): 40 mm tall, 20 mm wide
    m = measure_mask(rectangle(40, 40), (1.0, 0.5))
    diagonal = math.hypot(40, 20)
    assert m["max_diameter_mm"] == pytest.approx(diagonal, abs=1e-6)
    assert m["perpendicular_diameter_mm"] == pytest.approx(20 * diagonal / 40, abs=0.3)
    assert m["area_mm2"] == pytest.approx(800)
    # in pixel units it is a square
    assert m["max_diameter_px"] == pytest.approx(40 * math.sqrt(2), abs=1e-6)
    assert m["perpendicular_diameter_px"] == pytest.approx(40 * math.sqrt(2), abs=0.3)


def test_empty_mask_has_no_measurements():
    m = measure_mask(np.zeros((50, 60), dtype=np.uint8), (0.5, 0.5), midline_x=30)
    assert set(m) == set(COLUMNS)
    assert m["tumor_present"] is False
    assert all(m[k] is None for k in COLUMNS if k != "tumor_present")


def test_unknown_spacing_leaves_mm_fields_empty():
    m = measure_mask(rectangle(20, 40), None)
    assert all(m[k] is None for k in MM_FIELDS)
    assert m["area_px"] == 800
    assert m["max_diameter_px"] == pytest.approx(math.hypot(40, 20), abs=1e-6)
    # an unusable spacing counts as unknown
    assert measure_mask(rectangle(20, 40), (0.0, 1.0))["area_mm2"] is None


def test_hemisphere_follows_the_radiological_convention():
    left_of_image = rectangle(10, 10, shape=(100, 100), top=40, left=10)
    right_of_image = rectangle(10, 10, shape=(100, 100), top=40, left=80)
    straddling = rectangle(10, 20, shape=(100, 100), top=40, left=40)
    assert measure_mask(left_of_image, None, midline_x=49.5)["hemisphere"] == "patient_right"
    assert measure_mask(right_of_image, None, midline_x=49.5)["hemisphere"] == "patient_left"
    assert measure_mask(straddling, None, midline_x=49.5)["hemisphere"] == "midline"
    assert measure_mask(left_of_image, None)["hemisphere"] is None
    # a mirrored (neurological) image: the image's left is the patient's left
    assert measure_mask(left_of_image, None, midline_x=49.5, radiological=False)["hemisphere"] == "patient_left"
    assert measure_mask(straddling, None, midline_x=49.5, radiological=False)["hemisphere"] == "midline"


def test_diameters_use_the_largest_component_and_area_all():
    m = ellipse(20, 10) | rectangle(3, 3, shape=(200, 200), top=5, left=5)
    out = measure_mask(m, (1.0, 1.0))
    assert out["area_px"] == int(m.sum())
    assert out["max_diameter_mm"] == pytest.approx(41, abs=0.5)  # 2a + 1, not the distance to the far speck
    assert diameters(np.zeros((4, 4))) == (0.0, 0.0)
    assert largest_component(m).sum() == ellipse(20, 10).sum()


def test_remove_small_components():
    m = ellipse(20, 10) | rectangle(2, 2, shape=(200, 200), top=5, left=5)
    cleaned = remove_small_components(m, 5)
    assert cleaned.sum() == ellipse(20, 10).sum()
    assert remove_small_components(m, 0).sum() == m.sum()
