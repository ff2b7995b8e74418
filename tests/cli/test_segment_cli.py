"""`neuralscan segment` end to end with a tiny segmenter whose output is a fixed function of its input.

The test model marks pixels brighter than 0.85 (after the bundle's preprocessing) as tumour. The synthetic
heads are a fine 60/160 checkerboard, which averages to a mid grey once resized to the model's 64 x 64; a
disc of 255 in it is the "tumour". Without the disc the checkerboard's bright squares are the brightest
pixels, but averaged away by the resize, so nothing is predicted.
"""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from neuralscan_cli.cli.app import app
from neuralscan_cli.inference import new_bundle_meta
from neuralscan_cli.inference.segmentation import FIELDS, segment_paths
from neuralscan_cli.preprocess import PreprocessConfig

SIZE = 64
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "neuralscan_cli" / "samples"
cli = CliRunner()


def head_image(side: int, head_r: float, blob=None, blob_r: float = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side]
    c = (side - 1) / 2
    img = np.zeros((side, side), np.float32)
    head = (yy - c) ** 2 + (xx - c) ** 2 <= head_r ** 2
    img[head] = np.where((yy + xx) % 2 == 0, 60, 160)[head]
    if blob is not None:
        img[(yy - blob[0]) ** 2 + (xx - blob[1]) ** 2 <= blob_r ** 2] = 255
    return img


def blob_mask(side, blob, blob_r) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side]
    return (yy - blob[0]) ** 2 + (xx - blob[1]) ** 2 <= blob_r ** 2


def save_png(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.astype(np.uint8)).save(path)
    return path


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    import keras

    root = tmp_path_factory.mktemp("segment") / "tiny-seg"
    root.mkdir()
    inp = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid")
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.full((1, 1, 1, 1), 60.0, np.float32), np.array([-51.0], np.float32)])  # > 0.85
    model.save(root / "model.keras")
    meta = new_bundle_meta(task="segment", classes=["tumor"], size=SIZE,
                           preprocessing=PreprocessConfig(size=SIZE).to_dict(), name="tiny-seg", architecture="test")
    meta["files"] = {"keras": "model.keras"}
    (root / "model.json").write_text(json.dumps(meta))
    return root


def run(bundle, *args):
    return cli.invoke(app, ["segment", *map(str, args), "--model", str(bundle)])


def rows_of(out: Path) -> list[dict]:
    with open(out / "measurements.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == FIELDS
        return list(reader)


def errors_of(out: Path) -> list[dict]:
    with open(out / "errors.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_one_line_error(result, code=2, *fragments):
    assert result.exit_code == code, result.output
    assert not isinstance(result.exception, Exception)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for f in fragments:
        assert f in lines[0]


def test_png_with_and_without_tumour(bundle, tmp_path):
    blob = save_png(tmp_path / "in" / "blob.png", head_image(256, 110, (100, 70), 20))
    empty = save_png(tmp_path / "in" / "sub" / "clear.png", head_image(256, 110))
    out = tmp_path / "out"
    r = run(bundle, tmp_path / "in", "--out", out)
    assert r.exit_code == 0, r.output
    rows = {Path(row["path"]).name: row for row in rows_of(out)}
    assert set(rows) == {"blob.png", "clear.png"}

    b = rows["blob.png"]
    assert b["tumor_present"] == "true" and b["slice"] == "0"
    assert b["hemisphere"] == "patient_right"  # left side of the image, radiological display
    assert b["area_mm2"] == b["max_diameter_mm"] == ""  # a PNG has no pixel spacing
    assert float(b["max_diameter_px"]) == pytest.approx(41, abs=6)
    assert float(b["centroid_x"]) == pytest.approx(70, abs=3) and float(b["centroid_y"]) == pytest.approx(100, abs=3)
    mask = np.array(Image.open(out / "masks" / "blob_mask.png"))
    assert mask.shape == (256, 256) and set(np.unique(mask)) == {0, 255}
    assert dice(mask, blob_mask(256, (100, 70), 20)) > 0.8
    overlay = np.array(Image.open(out / "overlays" / "blob_overlay.png"))
    assert overlay.shape == (256, 256, 3)
    red = (overlay[..., 0] == 255) & (overlay[..., 1] == 0)
    assert red.sum() > 50 and blob_mask(256, (100, 70), 24)[red].all()  # the outline is around the blob

    c = rows["clear.png"]
    assert c["tumor_present"] == "false"
    assert all(c[k] == "" for k in FIELDS if k not in ("path", "slice", "tumor_present", "mask_file",
                                                       "overlay_file"))
    assert not np.array(Image.open(out / "masks" / "sub" / "clear_mask.png")).any()
    assert (out / "overlays" / "sub" / "clear_overlay.png").is_file()
    assert errors_of(out) == []
    assert blob.is_file() and empty.is_file()


def test_nifti_in_gives_nifti_out_on_the_same_grid(bundle, tmp_path):
    import nibabel as nib

    # stored left-right flipped (canonical RAS reverses axis 0), anisotropic slices
    affine = np.diag([-1.2, 1.2, 3.0, 1.0])
    affine[:3, 3] = [90.0, -100.0, -20.0]
    volume = np.stack([head_image(160, 70)] + [head_image(160, 70, (60, 100), 12)] * 2, axis=2)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.int16), affine), path)
    out = tmp_path / "out"
    r = run(bundle, path, "--out", out)
    assert r.exit_code == 0, r.output

    written = nib.load(out / "masks" / "vol_mask.nii.gz")
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    mask = np.asarray(written.dataobj)
    assert mask.shape == volume.shape and mask.dtype == np.uint8
    assert not mask[:, :, 0].any()
    for k in (1, 2):  # the mask voxels are where the bright disc is in the input array
        assert dice(mask[:, :, k], blob_mask(160, (60, 100), 12)) > 0.8

    rows = rows_of(out)
    assert [row["slice"] for row in rows] == ["0", "1", "2"]
    assert [row["tumor_present"] for row in rows] == ["false", "true", "true"]
    # voxel i = 60 of 160 along a Right-to-Left axis (affine x = 90 - 1.2 i) lies on the patient's right
    assert rows[1]["hemisphere"] == "patient_right"
    # NIfTI carries the pixel spacing: mm columns filled (blob diameter 25 px of 1.2 mm)
    assert float(rows[1]["max_diameter_mm"]) == pytest.approx(25 * 1.2, abs=5)
    assert float(rows[1]["area_mm2"]) == pytest.approx(float(rows[1]["area_px"]) * 1.44, rel=0.01)
    assert (out / "masks" / "vol_s1_mask.png").is_file() and (out / "overlays" / "vol_s2_overlay.png").is_file()


def oriented_affine(codes: str, zooms=(1.1, 1.3, 2.0), tilt_deg: float = 0.0) -> np.ndarray:
    """An affine whose stored axes point along `codes` (e.g. "LIA": axis 0 -> Left, 1 -> Inferior, 2 ->
    Anterior), optionally tilted about the world z axis by `tilt_deg` (oblique, still closest to `codes`)."""
    import nibabel as nib

    affine = np.diag([0.0, 0.0, 0.0, 1.0])
    for axis, (world, flip) in enumerate(nib.orientations.axcodes2ornt(tuple(codes))):
        affine[int(world), axis] = flip * zooms[axis]
    t = np.deg2rad(tilt_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    affine[:3, :3] = rot @ affine[:3, :3]
    affine[:3, 3] = [-70.0, 85.0, -30.0]
    return affine


def stored_head_volume(affine: np.ndarray, n_slices: int, blob_slices, side=120, blob=(40, 75), blob_r=11):
    """(volume, expected mask) in STORED voxel order: a head in every plane across the stored axis that runs
    inferior-superior (so it is the axial slicing axis), a bright disc centred at in-plane stored voxel
    `blob` of the planes `blob_slices` (stored indices)."""
    import nibabel as nib

    slice_axis = int(np.flatnonzero(nib.orientations.io_orientation(affine)[:, 0] == 2)[0])
    planes = [head_image(side, 50, blob if k in blob_slices else None, blob_r) for k in range(n_slices)]
    masks = [blob_mask(side, blob, blob_r) & (k in blob_slices) for k in range(n_slices)]
    return np.stack(planes, axis=slice_axis), np.stack(masks, axis=slice_axis), slice_axis


@pytest.mark.parametrize("codes,tilt", [("RAS", 0), ("LPS", 0), ("LIA", 0), ("PIR", 0), ("ASL", 0), ("ALS", 0),
                                        ("LIA", 12)])
def test_nifti_mask_is_on_the_source_voxel_grid_for_every_orientation(bundle, tmp_path, codes, tilt):
    """The mask NIfTI is used voxel by voxel against its source (numpy, fslmaths -mas): read back WITHOUT any
    reorientation it must have the source's shape, affine, sform/qform codes, and the tumour at the source's
    stored voxels -- for permuted orientations (FreeSurfer's LIA...) and oblique affines too."""
    import nibabel as nib

    affine = oriented_affine(codes, tilt_deg=tilt)
    volume, expected, slice_axis = stored_head_volume(affine, 3, blob_slices={0, 1})
    source = nib.Nifti1Image(volume.astype(np.int16), affine)
    source.set_sform(affine, code=2)  # aligned
    source.set_qform(affine, code=1)  # scanner
    path = tmp_path / f"vol_{codes}.nii.gz"
    nib.save(source, path)
    out = tmp_path / "out"
    r = run(bundle, path, "--out", out)
    assert r.exit_code == 0, r.output
    assert errors_of(out) == []

    written = nib.load(out / "masks" / f"vol_{codes}_mask.nii.gz")
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    assert (int(written.header["sform_code"]), int(written.header["qform_code"])) == (2, 1)
    np.testing.assert_allclose(written.header.get_qform(), nib.load(path).header.get_qform(), atol=1e-5)
    mask = np.asarray(written.dataobj)  # as stored: no as_closest_canonical
    assert mask.shape == volume.shape and mask.dtype == np.uint8
    assert dice(mask, expected) > 0.8
    assert not mask.take(2, axis=slice_axis).any()
    for k in (0, 1):
        assert dice(mask.take(k, axis=slice_axis), expected.take(k, axis=slice_axis)) > 0.8
    # the CSV numbers slices as the file does
    rows = {int(row["slice"]): row["tumor_present"] for row in rows_of(out)}
    assert rows == {0: "true", 1: "true", 2: "false"}


def test_z_flipped_volume_reports_stored_slice_numbers(bundle, tmp_path):
    """A volume stored superior-to-inferior (affine z step -2): the tumour in stored slice 0 is reported as
    slice 0, in the CSV and the file names, where the mask NIfTI (and any viewer) puts it."""
    import nibabel as nib

    affine = np.diag([1.0, 1.0, -2.0, 1.0])
    volume, expected, _ = stored_head_volume(affine, 4, blob_slices={0})
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.int16), affine), path)
    out = tmp_path / "out"
    r = run(bundle, path, "--out", out)
    assert r.exit_code == 0, r.output

    rows = {row["slice"]: row for row in rows_of(out)}
    assert set(rows) == {"0", "1", "2", "3"}
    assert [k for k, row in rows.items() if row["tumor_present"] == "true"] == ["0"]
    assert rows["0"]["mask_file"] == "masks/vol_s0_mask.png"
    assert rows["0"]["overlay_file"] == "overlays/vol_s0_overlay.png"
    assert np.array(Image.open(out / "masks" / "vol_s0_mask.png")).any()
    for k in (1, 2, 3):
        assert rows[str(k)]["mask_file"] == f"masks/vol_s{k}_mask.png"
        assert not np.array(Image.open(out / "masks" / f"vol_s{k}_mask.png")).any()
    mask = np.asarray(nib.load(out / "masks" / "vol_mask.nii.gz").dataobj)
    assert dice(mask[:, :, 0], expected[:, :, 0]) > 0.8 and not mask[:, :, 1:].any()


def test_dicom_spacing_fills_mm_columns(bundle, tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    img = head_image(256, 110, (120, 170), 20)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelSpacing = [0.8, 0.8]
    ds.PixelData = img.astype("<u2").tobytes()
    path = tmp_path / "scan.dcm"
    ds.save_as(path, enforce_file_format=True)

    out = tmp_path / "out"
    r = run(bundle, path, "--out", out)
    assert r.exit_code == 0, r.output
    (row,) = rows_of(out)
    assert row["tumor_present"] == "true" and row["hemisphere"] == "patient_left"
    assert float(row["area_mm2"]) == pytest.approx(float(row["area_px"]) * 0.64, rel=0.01)
    assert float(row["max_diameter_mm"]) == pytest.approx(41 * 0.8, abs=4)
    assert float(row["bidimensional_product_mm2"]) == pytest.approx(
        float(row["max_diameter_mm"]) * float(row["perpendicular_diameter_mm"]), rel=0.01)


def test_bad_files_are_skipped_and_a_rerun_resumes(bundle, tmp_path):
    data = tmp_path / "data"
    save_png(data / "a" / "scan.png", head_image(256, 110, (100, 70), 20))
    save_png(data / "b" / "scan.png", head_image(256, 110))  # same name, another folder
    (data / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    (data / "empty.png").write_bytes(b"")
    (data / "fake.dcm").write_text("not a dicom file\n")
    (data / "notes.txt").write_text("a text file: not a scan, ignored\n")
    out = tmp_path / "out"
    r = run(bundle, data, "--out", out)
    assert r.exit_code == 0, r.output
    assert not isinstance(r.exception, Exception)
    rows = rows_of(out)
    assert sorted(Path(row["path"]).parent.name for row in rows) == ["a", "b"]
    assert (out / "masks" / "a" / "scan_mask.png").is_file() and (out / "masks" / "b" / "scan_mask.png").is_file()
    errors = errors_of(out)
    assert sorted(Path(e["path"]).name for e in errors) == ["corrupt.png", "empty.png", "fake.dcm"]
    assert all("\n" not in e["error"] and e["error"].startswith(e["path"]) for e in errors)
    assert "corrupt.png" in r.output and "failed" in r.output

    before = (out / "measurements.csv").read_bytes()
    mtime = (out / "masks" / "a" / "scan_mask.png").stat().st_mtime_ns
    r = run(bundle, data, "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "measurements.csv").read_bytes() == before  # nothing reprocessed, no duplicate rows
    assert (out / "masks" / "a" / "scan_mask.png").stat().st_mtime_ns == mtime
    assert len(errors_of(out)) == 3  # the bad files were retried, and listed once
    # results from other settings would mix with these: refused
    assert_one_line_error(run(bundle, data, "--out", out, "--threshold", "0.7"), 2, "threshold")


def test_interrupted_run_resumes_without_duplicates(bundle, tmp_path):
    data = tmp_path / "data"
    for k in range(4):
        save_png(data / f"s{k}.png", head_image(256, 110, (100, 60 + 30 * k), 15))
    out = tmp_path / "out"

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_paths([data], bundle, out, batch_size=1, on_progress=stop_after_two)
    assert len(rows_of(out)) == 2  # what finished was saved at once

    r = run(bundle, data, "--out", out)
    assert r.exit_code == 0, r.output
    paths = [Path(row["path"]).name for row in rows_of(out)]
    assert sorted(paths) == ["s0.png", "s1.png", "s2.png", "s3.png"]
    assert all(row["tumor_present"] == "true" for row in rows_of(out))


def test_user_mistakes_are_one_line_errors(bundle, tmp_path, monkeypatch):
    good = save_png(tmp_path / "in" / "x.png", head_image(256, 110))
    assert_one_line_error(run(bundle, tmp_path / "missing.png", "--out", tmp_path / "o1"), 2, "missing.png")
    (tmp_path / "nothing").mkdir()
    assert_one_line_error(run(bundle, tmp_path / "nothing", "--out", tmp_path / "o2"), 2, "no scan files")
    r = cli.invoke(app, ["segment", str(good), "--out", str(tmp_path / "o3"), "--model", str(tmp_path / "nope")])
    assert_one_line_error(r, 2, "nope")
    # the shipped segmenter missing from this installation
    import neuralscan_cli.inference.bundle as bundle_module

    monkeypatch.setattr(bundle_module, "bundled_path", lambda name: tmp_path / "not-installed")
    r = cli.invoke(app, ["segment", str(good), "--out", str(tmp_path / "o4")])
    assert_one_line_error(r, 2, "bundled-segmenter", "not installed")
    # one bad file named on its own: exit 1, one line saying why
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    assert_one_line_error(run(bundle, bad, "--out", tmp_path / "o5"), 1, "bad.png")
    assert len(errors_of(tmp_path / "o5")) == 1


def test_torn_multi_slice_scan_is_redone_whole(tmp_path):
    """A crash in the middle of one scan's rows: the torn line and that scan's complete rows are dropped."""
    from neuralscan_cli.inference.segmentation import FIELDS, _read_done

    path = tmp_path / "measurements.csv"
    head = ",".join(FIELDS) + "\n"
    filler = "," * (len(FIELDS) - 2)
    done_row = f"/data/a.png,0{filler}\n"
    vol_rows = f"/data/vol.nii.gz,3{filler}\n/data/vol.nii.gz,4{filler}\n"
    path.write_text(head + done_row + vol_rows + "/data/vol.nii.gz,5,tr")  # the third slice's row was cut
    assert _read_done(path) == {"/data/a.png"}
    assert path.read_text() == head + done_row
    # cut inside the path itself: the fragment is no whole path, and the scan it begins is still redone
    path.write_text(head + done_row + vol_rows + "/data/vol.ni")
    assert _read_done(path) == {"/data/a.png"}
    assert path.read_text() == head + done_row


def test_resume_refuses_a_foreign_file_without_touching_it(tmp_path):
    from neuralscan_cli.errors import NeuralScanError
    from neuralscan_cli.inference.segmentation import _read_done

    path = tmp_path / "measurements.csv"
    path.write_text("a,b\n1,2")  # not ours, and no trailing newline
    with pytest.raises(NeuralScanError):
        _read_done(path)
    assert path.read_text() == "a,b\n1,2"


def test_the_model_json_mask_rule_applies_unless_overridden(bundle, tmp_path):
    """model.json `postprocessing` sets the smallest blob kept; --min-component overrides it."""
    import shutil

    strict = tmp_path / "strict-seg"
    shutil.copytree(bundle, strict)
    meta = json.loads((strict / "model.json").read_text())
    meta["postprocessing"] = {"threshold": 0.5, "min_component": 0.2}  # the ~6% blob is below 20% of the image
    (strict / "model.json").write_text(json.dumps(meta))
    save_png(tmp_path / "in" / "blob.png", head_image(256, 110, (100, 70), 20))

    r = run(strict, tmp_path / "in", "--out", tmp_path / "own")
    assert r.exit_code == 0, r.output
    assert rows_of(tmp_path / "own")[0]["tumor_present"] == "false"
    r = run(strict, tmp_path / "in", "--out", tmp_path / "override", "--min-component", "0.001")
    assert r.exit_code == 0, r.output
    assert rows_of(tmp_path / "override")[0]["tumor_present"] == "true"


def test_choose_min_component_drops_specks_that_cost_dice():
    from neuralscan_cli.inference.segmentation import choose_min_component

    probs = np.zeros((3, 64, 64), np.float32)
    truth = np.zeros((3, 64, 64), np.uint8)
    probs[0, 10:30, 10:30] = truth[0, 10:30, 10:30] = 1  # a 400 px tumour, found
    probs[1, 40:43, 40:43] = 1  # a 9 px speck on a healthy scan
    probs[2, 5:9, 5:9] = 1      # a 16 px speck on a healthy scan
    best, scores = choose_min_component(probs, truth, grid=(0.0, 0.001, 0.005, 0.2))
    assert scores[0.0] == pytest.approx(1 / 3)   # both healthy scans score 0
    assert scores[0.005] == pytest.approx(1.0)   # 21 px minimum: specks gone, tumour kept
    assert scores[0.2] == pytest.approx(2 / 3)   # 820 px minimum: the tumour is dropped too
    assert best == 0.005


def constant_classifier(root: Path, call: str, classes=("glioma", "meningioma", "no_tumor", "pituitary"),
                        size: int = SIZE) -> Path:
    """A classifier bundle that calls every scan `call` (its logit is 20 above the others)."""
    import keras

    inp = keras.Input((size, size, 1))
    dense = keras.layers.Dense(len(classes), activation="softmax")
    model = keras.Model(inp, dense(keras.layers.GlobalAveragePooling2D()(inp)))
    dense.set_weights([np.zeros((1, len(classes)), np.float32),
                       np.array([20.0 if c == call else 0.0 for c in classes], np.float32)])
    root.mkdir(parents=True)
    model.save(root / "model.keras")
    meta = new_bundle_meta(task="classify", classes=list(classes), size=size,
                           preprocessing=PreprocessConfig(size=size).to_dict(), name=root.name, architecture="test")
    meta["files"] = {"keras": "model.keras"}
    (root / "model.json").write_text(json.dumps(meta))
    return root


def test_a_gate_classifier_empties_the_masks_of_scans_it_calls_healthy(bundle, tmp_path):
    """The gate named in model.json applies by default; --gate overrides it; 'none' turns it off."""
    import shutil

    healthy = constant_classifier(tmp_path / "says-healthy", "no_tumor")
    glioma = constant_classifier(tmp_path / "says-glioma", "glioma")
    gated = tmp_path / "gated-seg"
    shutil.copytree(bundle, gated)
    meta = json.loads((gated / "model.json").read_text())
    meta["postprocessing"] = {"threshold": 0.5, "min_component": 0.0005, "gate": str(healthy)}
    (gated / "model.json").write_text(json.dumps(meta))
    save_png(tmp_path / "in" / "blob.png", head_image(256, 110, (100, 70), 20))

    r = run(gated, tmp_path / "in", "--out", tmp_path / "own")
    assert r.exit_code == 0, r.output
    row = rows_of(tmp_path / "own")[0]
    assert row["tumor_present"] == "false" and row["area_px"] == ""
    assert not np.array(Image.open(tmp_path / "own" / row["mask_file"])).any()
    for gate, present in (("none", "true"), (str(glioma), "true")):
        out = tmp_path / f"gate-{Path(gate).name}"
        r = run(gated, tmp_path / "in", "--out", out, "--gate", gate)
        assert r.exit_code == 0, r.output
        assert rows_of(out)[0]["tumor_present"] == present
    # a resumed run must not mix gated and ungated results in one folder
    assert_one_line_error(run(gated, tmp_path / "in", "--out", tmp_path / "own", "--gate", "none"), 2, "gate")


def test_a_gate_must_be_a_classifier_with_no_tumor_reading_the_same_images(bundle, tmp_path):
    save_png(tmp_path / "in" / "blob.png", head_image(256, 110, (100, 70), 20))
    two_types = constant_classifier(tmp_path / "two-types", "glioma", classes=("glioma", "meningioma"))
    other_size = constant_classifier(tmp_path / "other-size", "glioma", size=96)
    for gate, fragment in ((two_types, "no_tumor"), (other_size, "preprocessing"), (bundle, "segment model"),
                           (tmp_path / "missing", "no such model")):
        r = run(bundle, tmp_path / "in", "--out", tmp_path / "out", "--gate", gate)
        assert_one_line_error(r, 2, fragment)
    assert not (tmp_path / "out" / "measurements.csv").exists()


def test_no_scan_writes_over_another_scans_files(bundle, tmp_path):
    """Two `x.png` under different roots segmented one run after the other into one folder, and a three-slice
    `y.nii.gz` (its slice 1 is `y_s1`) beside a `y_s1.png`: every row points at its own scan's mask."""
    import nibabel as nib

    out = tmp_path / "out"
    a = save_png(tmp_path / "rootA" / "images" / "x.png", head_image(96, 40, blob=(30, 40), blob_r=10))
    b = save_png(tmp_path / "rootB" / "images" / "x.png", head_image(96, 40, blob=(60, 55), blob_r=6))
    assert run(bundle, a.parent, "--out", out, "--gate", "none").exit_code == 0
    assert run(bundle, b.parent, "--out", out, "--gate", "none").exit_code == 0
    mixed = tmp_path / "mixed"
    volume = np.stack([head_image(96, 40, blob=(30 + 10 * k, 40), blob_r=8) for k in range(3)], axis=2)
    nib.save(nib.Nifti1Image(volume.astype(np.int16), np.eye(4)), save_png(mixed / "y_s1.png", head_image(
        96, 40, blob=(70, 70), blob_r=5)).parent / "y.nii.gz")
    r = run(bundle, mixed, "--out", out, "--gate", "none")
    assert r.exit_code == 0, r.output
    rows = rows_of(out)
    assert len(rows) == 2 + 3 + 1
    for key in ("mask_file", "overlay_file"):
        assert len({row[key] for row in rows}) == len(rows), [row[key] for row in rows]
    # each mask file holds its own scan's outline: the blobs differ in size, so do the areas
    for row in rows:
        mask = np.asarray(Image.open(out / row["mask_file"])) > 0
        assert int(row["area_px"]) == int(mask.sum()), row
    assert {row["mask_file"] for row in rows if row["path"] == str(b)} == {"masks/x~2_mask.png"}
    assert (out / "masks" / "y_mask.nii.gz").is_file() or (out / "masks" / "y~2_mask.nii.gz").is_file()
    # a rerun resumes and keeps every scan's names
    r = run(bundle, mixed, "--out", out, "--gate", "none")
    assert r.exit_code == 0 and rows_of(out) == rows


def test_limit_splits_a_batch_over_runs_and_overwrite_starts_afresh(bundle, tmp_path):
    data = tmp_path / "data"
    for k in range(3):
        save_png(data / f"s{k}.png", head_image(256, 110, (100, 60 + 30 * k), 15))
    out = tmp_path / "out"
    r = run(bundle, data, "--out", out, "--limit", "2")
    assert r.exit_code == 0, r.output
    assert sorted(Path(row["path"]).name for row in rows_of(out)) == ["s0.png", "s1.png"]
    assert "later run" in r.output
    r = run(bundle, data, "--out", out)
    assert r.exit_code == 0, r.output
    assert sorted(Path(row["path"]).name for row in rows_of(out)) == ["s0.png", "s1.png", "s2.png"]

    # other settings into the same folder: refused without --overwrite, a fresh start with it
    (out / "notes.txt").write_text("the user's own file")
    assert_one_line_error(run(bundle, data, "--out", out, "--threshold", "0.99"), 2, "--overwrite")
    (data / "s2.png").unlink()
    (out / "masks" / "s0_mask.png").write_bytes(b"stale")  # a resumed run would leave this as it is
    r = run(bundle, data, "--out", out, "--threshold", "0.99", "--overwrite")
    assert r.exit_code == 0, r.output
    rows = rows_of(out)
    assert sorted(Path(row["path"]).name for row in rows) == ["s0.png", "s1.png"]
    assert Image.open(out / "masks" / "s0_mask.png").size == (256, 256)  # segmented again, not resumed
    assert not (out / "masks" / "s2_mask.png").exists()  # the earlier run's files are gone...
    assert (out / "notes.txt").read_text() == "the user's own file"  # ...files it did not write are not
    assert json.loads((out / "segment.json").read_text())["threshold"] == 0.99


def test_a_csv_manifest_lists_the_scans(bundle, tmp_path):
    data = tmp_path / "data"
    save_png(data / "a.png", head_image(256, 110, (100, 70), 20))
    save_png(data / "b.png", head_image(256, 110))
    save_png(data / "c.png", head_image(256, 110))  # not listed: not segmented
    (data / "list.csv").write_text("image,label\na.png,tumor\nb.png,no_tumor\nmissing.png,tumor\n")
    out = tmp_path / "out"
    r = run(bundle, data / "list.csv", "--out", out)
    assert r.exit_code == 0, r.output
    rows = {Path(row["path"]).name: row for row in rows_of(out)}
    assert sorted(rows) == ["a.png", "b.png"]
    assert rows["a.png"]["tumor_present"] == "true" and rows["b.png"]["tumor_present"] == "false"
    assert [Path(e["path"]).name for e in errors_of(out)] == ["missing.png"]


def test_overwrite_refuses_a_foreign_measurements_file_and_a_stopped_clear_leaves_no_stale_list(bundle, tmp_path,
                                                                                                monkeypatch):
    from neuralscan_cli.inference.segmentation import clear_results

    save_png(tmp_path / "in" / "a.png", head_image(256, 110, (100, 70), 20))
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "measurements.csv").write_text("patient,volume\nA,12\n")
    assert_one_line_error(run(bundle, tmp_path / "in", "--out", foreign, "--overwrite"), 2, "measurements")
    assert (foreign / "measurements.csv").read_text() == "patient,volume\nA,12\n"

    out = tmp_path / "out"
    assert run(bundle, tmp_path / "in", "--out", out).exit_code == 0
    real_unlink = Path.unlink

    def stop_at_the_masks(self, *args, **kwargs):
        if self.suffix == ".png":
            raise KeyboardInterrupt
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", stop_at_the_masks)
    with pytest.raises(KeyboardInterrupt):
        clear_results(out)
    monkeypatch.undo()
    # stopped before any mask was deleted, yet the list of results is already gone: nothing names a lost file
    assert not (out / "measurements.csv").exists() and (out / "masks" / "a_mask.png").exists()


def test_limit_reaches_new_files_before_retrying_failed_ones(bundle, tmp_path):
    data = tmp_path / "data"
    save_png(data / "a.png", head_image(256, 110, (100, 70), 20))
    save_png(data / "b.png", head_image(256, 110))
    (data / "list.csv").write_text("image\ngone.png\na.png\nb.png\n")
    out = tmp_path / "out"
    r = run(bundle, data / "list.csv", "--out", out, "--limit", "1")
    assert r.exit_code == 0, r.output  # only the bad file was tried, but files are left: not a fatal run
    assert [Path(e["path"]).name for e in errors_of(out)] == ["gone.png"]
    for names in (["a.png"], ["a.png", "b.png"]):
        r = run(bundle, data / "list.csv", "--out", out, "--limit", "1")
        assert r.exit_code == 0, r.output
        assert sorted(Path(row["path"]).name for row in rows_of(out)) == names


def test_mixed_batch_sizes_on_openvino_do_not_corrupt_memory(tmp_path):
    """Single scans (one request) and a volume (the async queue) in one run: a shared input buffer left bound
    to the compiled model's own request crashed the process (heap corruption) on most runs. Run in a child
    process, several times, since a crash takes the process with it."""
    import subprocess
    import sys

    import nibabel as nib

    scans = tmp_path / "scans"
    scans.mkdir()
    for p in sorted((SAMPLE_DIR / "images").rglob("*.png"))[:5]:
        (scans / p.name).write_bytes(p.read_bytes())
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.integers(0, 1000, (96, 96, 6)).astype(np.int16), np.diag([0.9, 0.9, 5.0, 1.0])),
             scans / "volume.nii.gz")
    code = ("import sys; from neuralscan_cli.inference.segmentation import segment_paths; "
            "s = segment_paths([sys.argv[1]], 'bundled-segmenter', sys.argv[2], gate='none', batch_size=2, "
            "engine='openvino-int8'); print(s.n_segmented, len(s.errors))")
    for k in range(3):
        r = subprocess.run([sys.executable, "-c", code, str(scans), str(tmp_path / f"out{k}")], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0 and r.stdout.split() == ["6", "0"], (r.returncode, r.stderr[-500:])


def test_resume_refuses_another_engine(tmp_path):
    """INT8 and Keras masks differ by a few pixels: one folder holds one engine's results."""
    scans = tmp_path / "scans"
    scans.mkdir()
    for p in sorted((SAMPLE_DIR / "images").rglob("*.png"))[:2]:
        (scans / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    r = cli.invoke(app, ["segment", str(scans), "--out", str(out), "--limit", "1", "--gate", "none"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "segment.json").read_text())["engine"] == "openvino-int8"
    assert_one_line_error(cli.invoke(app, ["segment", str(scans), "--out", str(out), "--gate", "none", "--engine",
                                           "keras"]), 2, "engine openvino-int8, not keras")
    assert len(rows_of(out)) == 1


def test_an_interrupted_rerun_keeps_earlier_failures(bundle, tmp_path, monkeypatch):
    """errors.csv dropped the files a rerun was about to retry when it opened; stopped before reaching them,
    the rerun lost their earlier failures."""
    import neuralscan_cli.inference.segmentation as seg

    data = tmp_path / "data"
    save_png(data / "a.png", head_image(256, 110, (100, 70), 20))
    (data / "bad.png").write_text("not an image")
    out = tmp_path / "out"
    assert run(bundle, data, "--out", out).exit_code == 0
    assert [Path(e["path"]).name for e in errors_of(out)] == ["bad.png"]
    save_png(data / "c.png", head_image(256, 110))  # new: tried first, and the run stops there
    real = seg.prepare_scan

    def stop_at_c(path, *args, **kwargs):
        if Path(path).name == "c.png":
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(seg, "prepare_scan", stop_at_c)
    with pytest.raises(KeyboardInterrupt):
        segment_paths([data], bundle, out)
    assert [Path(e["path"]).name for e in errors_of(out)] == ["bad.png"]
    monkeypatch.setattr(seg, "prepare_scan", real)
    (data / "bad.png").unlink()
    save_png(data / "bad.png", head_image(256, 110))  # fixed: retried, segmented, and its old error goes
    segment_paths([data], bundle, out)
    assert errors_of(out) == [] and len(rows_of(out)) == 3


def test_a_folder_that_cannot_be_listed_and_links_are_accounted_for(bundle, tmp_path, monkeypatch):
    """An unreadable subfolder is one failed entry (its scans were not seen), not silence; a symlinked folder
    is counted as ignored and a broken link named like a scan fails."""
    import os

    data = tmp_path / "data"
    save_png(data / "a.png", head_image(256, 110, (100, 70), 20))
    save_png(data / "locked" / "b.png", head_image(256, 110))
    (data / "elsewhere").symlink_to(tmp_path / "data" / "locked", target_is_directory=True)
    (data / "gone.png").symlink_to(tmp_path / "nowhere.png")
    locked = str(data / "locked")
    real_scandir, real_access = os.scandir, os.access

    def scandir(path="."):  # as for a user without read permission (tests may run as root, who has it)
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) != locked and real_access(p, mode))
    out = tmp_path / "out"
    r = run(bundle, data, "--out", out)
    assert r.exit_code == 0, r.output
    assert [Path(row["path"]).name for row in rows_of(out)] == ["a.png"]
    errors = {Path(e["path"]).name: e["error"] for e in errors_of(out)}
    assert sorted(errors) == ["gone.png", "locked"] and "permission denied" in errors["locked"]
    assert "no such file" in errors["gone.png"]  # a broken link with a scan's name: reported
    ignored = " ".join(r.output.split()).split("blank manifest rows")[1].split()[1]
    assert ignored == "1", r.output  # the symlinked folder (not entered, as rglob)


def test_a_very_long_file_name_still_gets_its_mask_and_overlay(bundle, tmp_path):
    """A 240-character name: the overlay's name went over the file system's 255 bytes after the mask was
    written, leaving an orphan mask and a failed file."""
    data = tmp_path / "data"
    long_name = "x" * 240 + ".png"
    save_png(data / long_name, head_image(256, 110, (100, 70), 20))
    out = tmp_path / "out"
    r = run(bundle, data, "--out", out)
    assert r.exit_code == 0, r.output
    (row,) = rows_of(out)
    assert (out / row["mask_file"]).is_file() and (out / row["overlay_file"]).is_file()
    assert errors_of(out) == []
    r = run(bundle, data, "--out", out)  # a rerun finds it done under the same names
    assert r.exit_code == 0 and len(rows_of(out)) == 1
