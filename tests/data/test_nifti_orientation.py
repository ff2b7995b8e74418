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


def test_a_mask_volume_gives_each_slice_its_own_mask(tmp_path):
    """A NIfTI image with a NIfTI mask volume: slice k gets mask slice k (every slice took slice 0's)."""
    vol = np.zeros((64, 64, 4), np.float32)
    yy, xx = np.mgrid[:64, :64]
    vol[((yy - 32) ** 2 + (xx - 32) ** 2) < 28 ** 2] = 100.0  # head
    mask = np.zeros(vol.shape, np.uint8)
    for k in range(4):  # a tumour that moves from slice to slice
        mask[20:28, 8 + 12 * k:16 + 12 * k, k] = 1
        vol[..., k][mask[..., k] > 0] = 400.0
    affine = np.diag([1.0, 1.0, 5.0, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "scan_mask.nii.gz")
    (tmp_path / "m.csv").write_text("image,mask,label\nscan.nii.gz,scan_mask.nii.gz,glioma\n")
    build_cache([tmp_path / "m.csv"], tmp_path / "cache", config=PreprocessConfig(size=64, crop=False), workers=1)
    cache = DatasetCache.open(tmp_path / "cache")
    masks, images = np.asarray(cache.masks), np.asarray(cache.images)
    assert len(masks) == 4 and all(m.any() for m in masks)
    centres = [np.argwhere(m).mean(0) for m in masks]
    assert len({tuple(np.round(c)) for c in centres}) == 4  # four different places
    for img, m in zip(images, masks):  # and each on its own slice's bright tumour
        assert img[m > 0].mean() > img[(m == 0) & (img > 0)].mean() + 50
