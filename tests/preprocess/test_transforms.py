"""Per-image preprocessing on synthetic images with known answers: normalisation, head box, geometry, masks."""
import numpy as np
import pytest
from scipy import ndimage

from neuralscan_cli.preprocess.transforms import (Geometry, PreprocessConfig, apply_geometry, head_box,
                                                  normalize_intensity, preprocess_image, restore_mask)


def _disc_image(h=256, w=256, radius=60, value=200.0, centre=None, noise=0.0, seed=0):
    yy, xx = np.mgrid[:h, :w]
    cy, cx = centre if centre is not None else (h / 2 - 0.5, w / 2 - 0.5)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    img = np.where(disc, value, 0.0).astype(np.float32)
    if noise:
        img += np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)
        img = np.clip(img, 0, None)
    return img, disc


def _extent(region: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(region)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def _iou(a, b) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return (a & b).sum() / max((a | b).sum(), 1)


# --- intensity normalisation

def test_normalize_maps_percentiles_to_0_and_1():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 1000, (256, 256)).astype(np.float32)
    lo, hi = np.percentile(img, [0.5, 99.5])
    out = normalize_intensity(img, 0.5, 99.5)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.all(out[img <= lo] == 0.0)
    assert np.all(out[img >= hi] == 1.0)
    mid = (img > lo) & (img < hi)
    np.testing.assert_allclose(out[mid], (img[mid] - lo) / (hi - lo), atol=1e-5)
    # about 0.5 % of the pixels at each end are clipped
    assert 0.003 < (out == 0).mean() < 0.007 and 0.003 < (out == 1).mean() < 0.007


def test_normalize_robust_to_a_few_hot_pixels():
    img, disc = _disc_image(noise=5.0)
    clean = normalize_intensity(img)
    hot = img.copy()
    rng = np.random.default_rng(2)
    idx = rng.choice(hot.size, 20, replace=False)  # 20 of 65,536 pixels: far under 0.5 %
    hot.flat[idx] = 1e6
    out = normalize_intensity(hot)
    keep = np.ones(img.size, dtype=bool)
    keep[idx] = False
    keep = keep.reshape(img.shape)
    # the head still fills the intensity range: hot pixels do not squash it towards 0
    assert np.median(out[disc & keep]) > 0.8
    np.testing.assert_allclose(out[keep], clean[keep], atol=0.02)
    assert np.all(out.flat[idx] == 1.0)


def test_normalize_constant_image_gives_zeros():
    for value in (0.0, 7.0, 65535.0):
        out = normalize_intensity(np.full((64, 80), value, dtype=np.float32))
        assert out.shape == (64, 80) and out.dtype == np.float32
        assert np.all(out == 0) and not np.isnan(out).any()


def test_normalize_mostly_constant_image_uses_full_range():
    # percentiles coincide (a tiny bright spot): falls back to min/max rather than dividing by zero
    img = np.zeros((64, 64), dtype=np.float32)
    img[10, 10] = 50.0
    out = normalize_intensity(img)
    assert not np.isnan(out).any()
    assert out[10, 10] == 1.0 and out.sum() == 1.0


def test_preprocess_constant_image_no_nan():
    out, mask, geom = preprocess_image(np.full((100, 120), 42.0), PreprocessConfig(size=64))
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert mask is None
    assert not np.isnan(out).any() and np.all(out == 0)
    assert geom.box == (0, 100, 0, 120)


# --- head box

def test_head_box_finds_bright_disc():
    img, disc = _disc_image(256, 256, radius=60, centre=(140, 110))
    box = head_box(normalize_intensity(img), threshold=0.08, margin=0.0)
    r0, r1, c0, c1 = box
    rows, cols = np.nonzero(disc)
    # the box holds the disc, up to the reduced-grid step (2 pixels at 256)
    assert abs(r0 - rows.min()) <= 2 and abs(r1 - (rows.max() + 1)) <= 2
    assert abs(c0 - cols.min()) <= 2 and abs(c1 - (cols.max() + 1)) <= 2


def test_head_box_ignores_text_blob_in_corner():
    img, disc = _disc_image(256, 256, radius=60)
    img[4:14, 200:250] = 255.0  # burnt-in text: brighter than the head, much smaller
    box = head_box(normalize_intensity(img), threshold=0.08, margin=0.0)
    rows, cols = np.nonzero(disc)
    r0, r1, c0, c1 = box
    assert r0 >= rows.min() - 2 and c1 <= cols.max() + 3
    assert (r1 - r0) < 130 and (c1 - c0) < 130


def test_head_box_margin_and_clamping():
    img, _ = _disc_image(256, 256, radius=60)
    norm = normalize_intensity(img)
    tight = head_box(norm, margin=0.0)
    wide = head_box(norm, margin=0.1)
    assert wide[0] < tight[0] and wide[1] > tight[1] and wide[2] < tight[2] and wide[3] > tight[3]
    # a disc touching the border: the box is clamped to the image
    img2, _ = _disc_image(256, 256, radius=60, centre=(20, 128))
    r0, r1, c0, c1 = head_box(normalize_intensity(img2), margin=0.2)
    assert r0 == 0 and r1 <= 256 and c0 >= 0 and c1 <= 256


def test_head_box_dark_or_tiny_keeps_whole_image():
    assert head_box(np.zeros((100, 80), np.float32)) == (0, 100, 0, 80)
    tiny = np.zeros((256, 256), np.float32)
    tiny[100:106, 100:106] = 1.0  # nothing head-like (< 10 % of a side)
    assert head_box(tiny) == (0, 256, 0, 256)


# --- output geometry

@pytest.mark.parametrize("shape", [(256, 256), (100, 200), (300, 140), (513, 512)])
@pytest.mark.parametrize("crop", [True, False])
def test_output_square_float32_in_unit_range(shape, crop):
    img, _ = _disc_image(*shape, radius=min(shape) // 3, noise=3.0)
    out, mask, geom = preprocess_image(img, PreprocessConfig(size=96, crop=crop))
    assert out.shape == (96, 96) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert mask is None
    assert isinstance(geom, Geometry) and geom.src_shape == shape and geom.size == 96
    r0, r1, c0, c1 = geom.box
    assert geom.side == max(r1 - r0, c1 - c0)


@pytest.mark.parametrize("crop", [True, False])
def test_aspect_kept_by_padding(crop):
    # 100 rows x 200 cols with a centred disc: stretching to a square would make it twice as tall as wide
    img, _ = _disc_image(100, 200, radius=35)
    out, _, geom = preprocess_image(img, PreprocessConfig(size=128, crop=crop))
    region = out > 0.5
    h, w = _extent(region)
    assert abs(h - w) <= 2, (h, w)
    if not crop:
        assert geom.box == (0, 100, 0, 200) and geom.side == 200 and geom.pad == (50, 0)
        assert h == pytest.approx(70 * 128 / 200, abs=2)
        # padding rows are zero
        assert np.all(out[:25] == 0) and np.all(out[-25:] == 0)


def test_clahe_option_stays_in_range():
    img, _ = _disc_image(noise=10.0)
    out, _, _ = preprocess_image(img, PreprocessConfig(size=64, clahe=True))
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_non_2d_input_raises():
    with pytest.raises(ValueError, match="2-D"):
        preprocess_image(np.zeros((4, 32, 32)), PreprocessConfig(size=32))


# --- masks follow the image

@pytest.mark.parametrize("shape,crop", [((256, 256), True), ((100, 200), True), ((100, 200), False),
                                        ((333, 250), True)])
def test_mask_follows_image_exactly(shape, crop):
    img, disc = _disc_image(*shape, radius=min(shape) // 3)
    mask = (img > 100).astype(np.uint8) * 255  # the disc, at a threshold, stored as 0/255
    out, out_mask, _ = preprocess_image(img, PreprocessConfig(size=128, crop=crop), mask)
    assert out_mask.shape == (128, 128)
    assert set(np.unique(out_mask).tolist()) <= {0, 1}
    region = out > 0.5
    # where they differ, it is only on the outline: within one pixel of the mask's border
    border = ndimage.binary_dilation(out_mask) & ~ndimage.binary_erosion(out_mask)
    diff = region ^ out_mask.astype(bool)
    assert not (diff & ~border).any(), int((diff & ~border).sum())
    assert _iou(region, out_mask) > 0.95


def test_restore_mask_inverts_apply():
    img, _ = _disc_image(300, 220, radius=70, centre=(160, 100))
    mask = np.zeros(img.shape, np.uint8)
    yy, xx = np.mgrid[:300, :220]
    mask[(yy - 150) ** 2 / 30 ** 2 + (xx - 110) ** 2 / 20 ** 2 <= 1] = 1  # an ellipse inside the head
    for crop in (True, False):
        _, out_mask, geom = preprocess_image(img, PreprocessConfig(size=128, crop=crop), mask)
        back = restore_mask(out_mask, geom)
        assert back.shape == mask.shape and back.dtype == np.uint8
        assert set(np.unique(back).tolist()) <= {0, 1}
        assert _iou(back, mask) > 0.95
        # apply_geometry on the same mask gives the same thing as preprocess_image did
        np.testing.assert_array_equal(apply_geometry(mask, geom, nearest=True), out_mask)


def test_restore_mask_outside_box_is_zero():
    img, _ = _disc_image(256, 256, radius=50)
    _, _, geom = preprocess_image(img, PreprocessConfig(size=64))
    back = restore_mask(np.ones((64, 64), np.uint8), geom)
    r0, r1, c0, c1 = geom.box
    assert back[r0:r1, c0:c1].all()
    assert back.sum() == (r1 - r0) * (c1 - c0)


def test_mask_of_wrong_size_names_both_sizes():
    img = np.zeros((80, 100), np.float32)
    with pytest.raises(ValueError) as info:
        preprocess_image(img, PreprocessConfig(size=32), np.zeros((40, 50), np.uint8))
    msg = str(info.value)
    assert "50x40" in msg and "100x80" in msg


# --- configuration

@pytest.mark.parametrize("kwargs", [
    {"size": 8}, {"size": 0}, {"size": 4096},
    {"clip_low": 50, "clip_high": 50}, {"clip_low": 60, "clip_high": 40},
    {"clip_low": -1}, {"clip_high": 101},
    {"margin": -0.5}, {"head_threshold": -0.1}, {"head_threshold": 1.5},
])
def test_invalid_config_raises(kwargs):
    with pytest.raises(ValueError):
        PreprocessConfig(**kwargs)


def test_config_round_trip():
    cfg = PreprocessConfig(size=128, clip_low=1.0, clip_high=99.0, crop=False, clahe=True)
    d = cfg.to_dict()
    assert PreprocessConfig.from_dict(d) == cfg
    assert PreprocessConfig.from_dict({**d, "unknown_key": 1}) == cfg  # older/newer caches still load


@pytest.mark.parametrize("dtype,low,high", [(np.uint8, 0, 256), (np.uint16, 0, 4096), (np.int16, -1024, 3000),
                                            (np.float32, 0, 256)])
def test_histogram_percentiles_equal_numpy_to_the_bit(dtype, low, high):
    """Whole-number images take the histogram route; the clip points must be exactly numpy's."""
    from neuralscan_cli.preprocess.transforms import _integer_percentiles

    rng = np.random.default_rng(3)
    for shape in [(256, 256), (37, 41), (5, 1)]:
        img = rng.integers(low, high, shape).astype(dtype)
        ref = np.percentile(img.astype(np.float32), [0.5, 99.5])
        got = _integer_percentiles(np.rint(img).astype(np.int64), (0.5, 99.5))
        assert got == [float(ref[0]), float(ref[1])]
        fractional = img.astype(np.float32) + 0.25  # not whole numbers: numpy's own route
        assert np.array_equal(normalize_intensity(fractional), normalize_intensity(fractional.astype(np.float64)))


def test_nan_background_counts_as_the_darkest_value():
    """A float NIfTI with NaN outside the brain is normalised as if the background were its darkest value."""
    rng = np.random.default_rng(0)
    img = rng.uniform(10, 200, (64, 64)).astype(np.float32)
    img[:, :8] = 10.0
    with_nan = img.copy()
    with_nan[:, :8] = np.nan
    with_nan[0, 0] = np.inf
    out = normalize_intensity(with_nan)
    assert np.isfinite(out).all()
    darkest = float(np.nanmin(np.where(np.isinf(with_nan), np.nan, with_nan)))
    expected = np.where(np.isfinite(with_nan), with_nan, darkest)
    np.testing.assert_allclose(out, normalize_intensity(expected), atol=1e-6)
    assert (out[:, :8] == 0).all() and out[0, 0] == 0
    # a slice with no finite pixel (a NaN-background volume's end slices) is empty, not an error
    empty = normalize_intensity(np.full((8, 8), np.nan, np.float32))
    assert empty.shape == (8, 8) and (empty == 0).all()


def test_no_signal_flags_blank_and_uniform_images_only():
    from neuralscan_cli.preprocess import no_signal

    rng = np.random.default_rng(1)
    images = np.stack([np.zeros((16, 16)), np.full((16, 16), 120.0), np.full((16, 16), 120.0),
                       rng.integers(0, 256, (16, 16))]).astype(np.uint8)
    images[2, 3, 3] = 125  # one pixel five grey levels brighter: a signal, however faint
    assert no_signal(images).tolist() == [True, True, False, False]
    # the same on float images in [0, 1]
    assert no_signal(images.astype(np.float32) / 255.0).tolist() == [True, True, False, False]
