"""Every path that prepares pixels for a model sees a NIfTI slice in the same (radiological) orientation."""
import nibabel as nib
import numpy as np

from neuralscan_cli.data import DatasetCache, build_cache
from neuralscan_cli.inference.streaming import _File, _decode
from neuralscan_cli.io import read_scan
from neuralscan_cli.io.base import display_slice
from neuralscan_cli.preprocess import PreprocessConfig, preprocess_image


def test_cache_and_classify_see_the_same_nifti_pixels(tmp_path):
    vol = np.zeros((64, 48, 3), np.float32)
    yy, xx = np.mgrid[:64, :48]
    vol[((yy - 32) ** 2 + (xx - 24) ** 2) < 20 ** 2] = 100.0  # head
    vol[10:20, 30:40, :] = 400.0  # an off-centre bright block makes any rotation visible
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([0.9, 0.8, 5.0, 1.0])), path)
    cfg = PreprocessConfig(size=64)
    build_cache([path], tmp_path / "cache", config=cfg, workers=1)
    cached = np.asarray(DatasetCache.open(tmp_path / "cache").images)

    entry = _decode(_File(path=path, name="scan"), cfg, None)
    assert entry.error is None
    np.testing.assert_array_equal(entry.images, cached)

    s = read_scan(path)[0]
    shown, spacing = display_slice(s)
    assert shown.shape == (s.pixels.shape[1], s.pixels.shape[0])  # rotated, not the raw canonical slice
    expected = np.rint(preprocess_image(shown, cfg)[0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(cached[0], expected)
    assert spacing == (s.spacing[1], s.spacing[0])
