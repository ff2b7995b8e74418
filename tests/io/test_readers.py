"""Readers for every scan format: real dataset samples, files built here, broken input, the registry."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEGLSLossless, MRImageStorage, generate_uid

from neuralscan_cli.io import (
    ScanReader,
    ScanReadError,
    ScanSlice,
    is_scan_file,
    patient_key,
    read_scan,
    reader_for,
    register_reader,
    supported_extensions,
    unregister_reader,
    write_mask_nifti,
    write_mask_png,
)


def assert_clean_error(excinfo, path) -> str:
    message = str(excinfo.value)
    assert str(path) in message
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- real dataset samples


def test_figshare_png_reads_as_8bit_grey(shared_datasets):
    (scan,) = read_scan(shared_datasets / "figshare" / "images" / "0001.png")
    assert scan.pixels.shape == (256, 256)
    assert scan.pixels.dtype == np.float32
    assert 0 <= scan.pixels.min() and scan.pixels.max() <= 255 and scan.pixels.max() > 0
    assert scan.slice_index == 0 and scan.patient_key is None and scan.mask is None


def test_br35h_rgb_jpeg_reads_as_grey(shared_datasets):
    path = shared_datasets / "br35h" / "yes" / "y1.jpg"
    with Image.open(path) as image:
        width, height = image.size
        expected = np.asarray(image.convert("L"), dtype=np.float32)
    (scan,) = read_scan(path)
    assert scan.pixels.shape == (height, width)
    assert scan.pixels.dtype == np.float32
    assert 0 <= scan.pixels.min() and scan.pixels.max() <= 255 and scan.pixels.max() > 0
    # libjpeg's direct-to-grey decode may differ from Pillow's RGB->L by rounding only.
    assert np.abs(scan.pixels - expected).mean() < 1.0


# ---------------------------------------------------------------- images written here

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], dtype=np.uint8)
COLOUR_LUMINANCE = np.array([76, 150, 29, 255], dtype=np.float32)  # ITU-R 601 of the four colours


def test_16bit_png_keeps_full_range(tmp_path):
    values = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    (scan,) = read_scan(path)
    assert scan.pixels.max() == 55000
    np.testing.assert_array_equal(scan.pixels, values.astype(np.float32))


def test_16bit_tiff_keeps_full_range(tmp_path):
    values = np.array([[0, 300], [40000, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.tif"
    Image.fromarray(values).save(path)
    (scan,) = read_scan(path)
    np.testing.assert_array_equal(scan.pixels, values.astype(np.float32))


def test_palette_png_becomes_luminance(tmp_path):
    image = Image.fromarray(np.array([[0, 1], [2, 3]], dtype=np.uint8), mode="P")
    image.putpalette(COLOURS.ravel().tolist())
    path = tmp_path / "palette.png"
    image.save(path)
    (scan,) = read_scan(path)
    np.testing.assert_allclose(scan.pixels.ravel(), COLOUR_LUMINANCE, atol=1)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_png_becomes_luminance(tmp_path, mode):
    image = Image.fromarray(COLOURS.reshape(2, 2, 3), mode="RGB").convert(mode)
    path = tmp_path / f"colour_{mode}.png"
    image.save(path)
    (scan,) = read_scan(path)
    assert scan.pixels.shape == (2, 2)
    np.testing.assert_allclose(scan.pixels.ravel(), COLOUR_LUMINANCE, atol=1)


def test_grey_alpha_png_drops_alpha(tmp_path):
    grey = np.array([[10, 200]], dtype=np.uint8)
    image = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(np.array([[0, 128]], dtype=np.uint8))])
    path = tmp_path / "la.png"
    image.save(path)
    (scan,) = read_scan(path)
    np.testing.assert_array_equal(scan.pixels, grey.astype(np.float32))


def test_multipage_tiff_gives_one_slice_per_page(tmp_path):
    pages = [Image.fromarray(np.full((3, 5), value, dtype=np.uint8)) for value in (7, 99)]
    path = tmp_path / "stack.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    scans = read_scan(path)
    assert [s.slice_index for s in scans] == [0, 1]
    assert [float(s.pixels.mean()) for s in scans] == [7.0, 99.0]
    assert all(s.pixels.shape == (3, 5) for s in scans)


def test_image_with_unknown_extension_is_recognised_by_content(tmp_path):
    path = tmp_path / "scan.data"
    Image.fromarray(np.full((4, 4), 42, dtype=np.uint8)).save(path, format="PNG")
    assert is_scan_file(path)
    (scan,) = read_scan(path)
    assert scan.pixels.max() == 42


# ---------------------------------------------------------------- DICOM written here

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PAT-0042"
BIRTH_DATE = "19700101"
IDENTIFYING_VALUES = [PATIENT_NAME, "Doe", "Jane", PATIENT_ID, "0042", BIRTH_DATE, "ACC-98765", "General Hospital"]


def write_dicom(path: Path, frames: np.ndarray, **attributes) -> Path:
    """An MR DICOM file holding `frames` (2-D, or frames x rows x cols) as 16-bit unsigned pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.AccessionNumber = "ACC-98765"
    ds.InstitutionName = "General Hospital"
    ds.Rows, ds.Columns = frames.shape[-2:]
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = frames.astype("<u2").tobytes()
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


FRAME = np.array([[0, 10, 20], [30, 40, 1000]], dtype=np.uint16)


def test_dicom_plain_values_spacing_and_modality(tmp_path):
    path = write_dicom(tmp_path / "plain.dcm", FRAME, PixelSpacing=[0.5, 0.75])
    (scan,) = read_scan(path)
    np.testing.assert_array_equal(scan.pixels, FRAME.astype(np.float32))
    assert scan.pixels.dtype == np.float32
    assert scan.spacing == (0.5, 0.75)
    assert scan.modality == "MR"


def test_dicom_rescale_is_applied(tmp_path):
    path = write_dicom(tmp_path / "rescaled.dcm", FRAME, RescaleSlope=2, RescaleIntercept=-100)
    (scan,) = read_scan(path)
    np.testing.assert_array_equal(scan.pixels, FRAME.astype(np.float32) * 2 - 100)


def test_dicom_monochrome1_is_inverted(tmp_path):
    path = write_dicom(tmp_path / "mono1.dcm", FRAME, PhotometricInterpretation="MONOCHROME1")
    (scan,) = read_scan(path)
    np.testing.assert_array_equal(scan.pixels, 1000 + 0 - FRAME.astype(np.float32))


def test_dicom_multiframe_gives_one_slice_per_frame(tmp_path):
    frames = np.stack([FRAME + offset for offset in (0, 1, 2)])
    path = write_dicom(tmp_path / "multi.dcm", frames, PixelSpacing=[1.0, 1.0])
    scans = read_scan(path)
    assert [s.slice_index for s in scans] == [0, 1, 2]
    for offset, scan in enumerate(scans):
        np.testing.assert_array_equal(scan.pixels, (FRAME + offset).astype(np.float32))
    (middle,) = read_scan(path, middle=1)
    assert middle.slice_index == 1


def test_dicom_rgb_becomes_grey(tmp_path):
    path = write_dicom(
        tmp_path / "rgb.dcm",
        np.zeros((2, 2), dtype=np.uint16),
        SamplesPerPixel=3,
        PhotometricInterpretation="RGB",
        PlanarConfiguration=0,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelData=COLOURS.tobytes(),
    )
    (scan,) = read_scan(path)
    assert scan.pixels.shape == (2, 2)
    np.testing.assert_allclose(scan.pixels.ravel(), COLOUR_LUMINANCE, atol=1)


def test_dicom_never_exposes_patient_identity(tmp_path):
    frames = np.stack([FRAME, FRAME])
    scans = read_scan(write_dicom(tmp_path / "private.dcm", frames, PixelSpacing=[1.0, 1.0]))
    for scan in scans:
        for field in dataclasses.fields(ScanSlice):
            value = getattr(scan, field.name)
            for shown in (repr(value), str(value)):
                for identifying in IDENTIFYING_VALUES:
                    assert identifying not in shown, f"{identifying!r} leaked into ScanSlice.{field.name}"
    assert scans[0].patient_key == patient_key(PATIENT_ID)
    assert len(scans[0].patient_key) == 16


def test_dicom_patient_key_falls_back_and_follows_salt(tmp_path, monkeypatch):
    by_name = write_dicom(tmp_path / "by_name.dcm", FRAME, PatientID=None)
    (scan,) = read_scan(by_name)
    assert scan.patient_key == patient_key(f"{PATIENT_NAME}|{BIRTH_DATE}")
    anonymous = write_dicom(tmp_path / "anon.dcm", FRAME, PatientID=None, PatientName=None, StudyInstanceUID=None)
    assert read_scan(anonymous)[0].patient_key is None

    default_key = read_scan(write_dicom(tmp_path / "a.dcm", FRAME))[0].patient_key
    monkeypatch.setenv("NEURALSCAN_SALT", "site-secret")
    assert read_scan(tmp_path / "a.dcm")[0].patient_key != default_key


def test_dicom_without_extension_is_recognised_by_content(tmp_path):
    path = write_dicom(tmp_path / "IM0001", FRAME)
    assert is_scan_file(path)
    assert reader_for(path).name == "DICOM"
    (scan,) = read_scan(path)
    np.testing.assert_array_equal(scan.pixels, FRAME.astype(np.float32))


def write_compressed_dicom(path: Path, transfer_syntax) -> Path:
    """A DICOM that claims compressed pixels but holds junk fragments."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = 8, 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([b"not a real codestream " * 4])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_jpeg2000_with_broken_data_gives_clean_error(tmp_path):
    path = write_compressed_dicom(tmp_path / "j2k.dcm", JPEG2000)
    with pytest.raises(ScanReadError) as excinfo:
        read_scan(path)
    message = assert_clean_error(excinfo, path)
    assert "JPEG 2000" in message and len(message) < 500
    if not get_decoder(JPEG2000).is_available:
        assert "pylibjpeg-openjpeg" in message


def test_dicom_without_decoder_names_what_to_install(tmp_path):
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    path = write_compressed_dicom(tmp_path / "jls.dcm", JPEGLSLossless)
    with pytest.raises(ScanReadError) as excinfo:
        read_scan(path)
    message = assert_clean_error(excinfo, path)
    assert "JPEG-LS" in message and "install" in message and "pyjpegls" in message


def test_file_named_dcm_that_is_not_dicom(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"\x00" * 300)
    with pytest.raises(ScanReadError) as excinfo:
        read_scan(path)
    assert "not a DICOM file" in assert_clean_error(excinfo, path)


# ---------------------------------------------------------------- NIfTI written here

VOLUME = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)


def ras_affine() -> np.ndarray:
    affine = np.diag([0.9, 0.9, 5.0, 1.0])
    affine[:3, 3] = [-90.0, -120.0, -40.0]
    return affine


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_volume_slices_spacing_and_affine(tmp_path, suffix):
    path = tmp_path / f"volume{suffix}"
    nib.save(nib.Nifti1Image(VOLUME, ras_affine()), path)
    scans = read_scan(path)
    assert [s.slice_index for s in scans] == list(range(6))
    for k, scan in enumerate(scans):
        np.testing.assert_array_equal(scan.pixels, VOLUME[:, :, k].astype(np.float32))
        assert scan.pixels.dtype == np.float32
        assert scan.spacing == pytest.approx((0.9, 0.9))
        np.testing.assert_allclose(scan.affine, ras_affine())
        assert scan.extra == {"volume_shape": (4, 5, 6), "axis": 2, "canonical_index": k, "lateral": "radiological"}
        assert scan.modality is None


def test_nifti_middle_keeps_true_indices(tmp_path):
    path = tmp_path / "volume.nii"
    nib.save(nib.Nifti1Image(VOLUME, ras_affine()), path)
    scans = read_scan(path, middle=3)
    assert [s.slice_index for s in scans] == [1, 2, 3]
    for scan in scans:
        np.testing.assert_array_equal(scan.pixels, VOLUME[:, :, scan.slice_index].astype(np.float32))


def test_nifti_other_axis(tmp_path):
    path = tmp_path / "volume.nii"
    nib.save(nib.Nifti1Image(VOLUME, ras_affine()), path)
    scans = read_scan(path, axis=0)
    assert len(scans) == 4
    assert scans[0].pixels.shape == (5, 6)
    assert scans[0].spacing == pytest.approx((0.9, 5.0))


def test_nifti_is_reoriented_to_canonical_and_mask_lines_up(tmp_path):
    # Stored Left-to-... flipped in x: canonical RAS reverses axis 0.
    affine = ras_affine()
    affine[0, 0] = -0.9
    path = tmp_path / "flipped.nii.gz"
    nib.save(nib.Nifti1Image(VOLUME, affine), path)
    scans = read_scan(path)
    canonical_affine = scans[0].affine
    assert canonical_affine[0, 0] > 0
    np.testing.assert_array_equal(scans[2].pixels, VOLUME[::-1, :, 2].astype(np.float32))
    # The same voxel maps to the same world point through both affines.
    np.testing.assert_allclose(canonical_affine @ [0, 1, 2, 1], affine @ [3, 1, 2, 1])

    # A mask built from the slices and written with the canonical affine marks the same world voxel.
    mask_volume = np.zeros(scans[0].extra["volume_shape"], dtype=np.uint8)
    mask_volume[0, 1, 2] = 1
    mask_path = tmp_path / "mask.nii.gz"
    write_mask_nifti(mask_path, mask_volume, canonical_affine)
    written = nib.load(mask_path)
    assert written.get_data_dtype() == np.uint8
    on_original_grid = nib.as_closest_canonical(written)  # already canonical: unchanged
    np.testing.assert_allclose(on_original_grid.affine, canonical_affine)
    back_to_stored = written.as_reoriented(nib.orientations.io_orientation(affine))
    assert np.argwhere(np.asarray(back_to_stored.dataobj)).tolist() == [[3, 1, 2]]


@pytest.mark.parametrize("codes", ["RAS", "LPS", "RAI", "LIA", "PIR", "ASL"])
def test_nifti_slice_index_is_the_stored_index(tmp_path, codes):
    """slice_index numbers a slice as the file stores it (what a viewer shows), whatever the orientation;
    the canonical index the pixels were taken at is kept in extra."""
    ornt = nib.orientations.axcodes2ornt(tuple(codes))
    affine = np.diag([0.0, 0.0, 0.0, 1.0])
    for stored_axis, (world_axis, flip) in enumerate(ornt):
        affine[int(world_axis), stored_axis] = flip * (1.0 + stored_axis)
    path = tmp_path / f"{codes}.nii.gz"
    nib.save(nib.Nifti1Image(VOLUME, affine), path)
    scans = read_scan(path)
    stored_axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])  # the stored axis that runs (inferior-)superior
    assert len(scans) == VOLUME.shape[stored_axis]
    for k, scan in enumerate(scans):
        assert scan.extra["canonical_index"] == k
        stored = VOLUME.take(scan.slice_index, axis=stored_axis)  # the file's slice under that number
        assert sorted(scan.pixels.ravel().tolist()) == sorted(stored.astype(np.float32).ravel().tolist())
    flipped = ornt[stored_axis, 1] < 0
    assert [s.slice_index for s in scans] == (list(range(len(scans)))[::-1] if flipped else list(range(len(scans))))


def test_nifti_middle_on_a_z_flipped_volume_keeps_stored_indices(tmp_path):
    path = tmp_path / "flipped_z.nii"
    nib.save(nib.Nifti1Image(VOLUME, np.diag([1.0, 1.0, -2.0, 1.0])), path)
    scans = read_scan(path, middle=3)
    assert [s.extra["canonical_index"] for s in scans] == [1, 2, 3]
    assert [s.slice_index for s in scans] == [4, 3, 2]
    for scan in scans:
        np.testing.assert_array_equal(scan.pixels, VOLUME[:, :, scan.slice_index].astype(np.float32))


def test_nifti_scaling_is_applied(tmp_path):
    image = nib.Nifti1Image(VOLUME, ras_affine())
    image.header.set_slope_inter(2.0, -100.0)
    path = tmp_path / "scaled.nii"
    nib.save(image, path)
    scans = read_scan(path)
    np.testing.assert_allclose(scans[0].pixels, VOLUME[:, :, 0] * 2.0 - 100.0)


def test_nifti_2d_gives_one_slice(tmp_path):
    plane = np.arange(20, dtype=np.float32).reshape(4, 5)
    path = tmp_path / "plane.nii"
    nib.save(nib.Nifti1Image(plane, ras_affine()), path)
    (scan,) = read_scan(path)
    np.testing.assert_array_equal(scan.pixels, plane)
    assert scan.spacing == pytest.approx((0.9, 0.9))


def test_nifti_4d_reads_first_volume(tmp_path):
    series = np.stack([VOLUME, VOLUME + 1000], axis=-1)
    path = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(series, ras_affine()), path)
    scans = read_scan(path)
    assert len(scans) == 6
    np.testing.assert_array_equal(scans[5].pixels, VOLUME[:, :, 5].astype(np.float32))


def test_nifti_without_extension_is_recognised_by_content(tmp_path):
    named = tmp_path / "volume.nii"
    nib.save(nib.Nifti1Image(VOLUME, ras_affine()), named)
    path = named.rename(tmp_path / "volume_export")
    assert reader_for(path).name == "NIfTI"
    scans = read_scan(path, middle=1)
    assert [s.slice_index for s in scans] == [2]
    np.testing.assert_array_equal(scans[0].pixels, VOLUME[:, :, 2].astype(np.float32))


# ---------------------------------------------------------------- figshare .mat written here

MAT_IMAGE = np.arange(4 * 6, dtype=np.int16).reshape(4, 6)  # not square, so a missed transpose shows
MAT_MASK = np.zeros((4, 6), dtype=np.uint8)
MAT_MASK[1:3, 2:5] = 1
MAT_PID = "MRN-12345"


def matlab_header(version: str) -> bytes:
    text = f"MATLAB {version} MAT-file, Platform: GLNXA64, Created on: Mon Jan  2 10:00:00 2017 HDF5 schema 1.00 ."
    return text.encode("ascii").ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def write_mat_v73(path: Path, with_cjdata: bool = True) -> Path:
    with h5py.File(path, "w", userblock_size=512) as mat:
        group = mat.create_group("cjdata" if with_cjdata else "other")
        # MATLAB writes column-major, so 2-D arrays land in HDF5 transposed.
        group["image"] = MAT_IMAGE.T
        group["tumorMask"] = MAT_MASK.T
        group["label"] = np.array([[2.0]])
        group["PID"] = np.array([[ord(c)] for c in MAT_PID], dtype=np.uint16)
        group["tumorBorder"] = np.array([[1.0, 2.0, 3.0, 4.0]])
    with open(path, "r+b") as fh:
        fh.write(matlab_header("7.3").ljust(512, b"\x00"))
    return path


def test_mat_v73_orientation_label_mask_and_key(tmp_path):
    (scan,) = read_scan(write_mat_v73(tmp_path / "1.mat"))
    np.testing.assert_array_equal(scan.pixels, MAT_IMAGE.astype(np.float32))
    assert scan.pixels.dtype == np.float32
    assert scan.label == "glioma"
    assert scan.mask.dtype == np.uint8
    np.testing.assert_array_equal(scan.mask, MAT_MASK)
    assert scan.patient_key == patient_key(MAT_PID)
    assert "12345" not in scan.patient_key
    assert MAT_PID not in repr(scan)


def test_mat_v73_is_recognised_by_content(tmp_path):
    path = write_mat_v73(tmp_path / "figshare_slice")
    assert reader_for(path).name == "figshare .mat"
    assert read_scan(path)[0].label == "glioma"


def test_mat_v5_is_read_with_scipy(tmp_path):
    path = tmp_path / "v5.mat"
    struct = {"image": MAT_IMAGE, "label": 3.0, "PID": MAT_PID, "tumorMask": MAT_MASK.astype(bool)}
    scipy.io.savemat(path, {"cjdata": struct})
    (scan,) = read_scan(path)
    np.testing.assert_array_equal(scan.pixels, MAT_IMAGE.astype(np.float32))
    np.testing.assert_array_equal(scan.mask, MAT_MASK)
    assert scan.label == "pituitary"
    assert scan.patient_key == patient_key(MAT_PID)


def test_mat_without_cjdata(tmp_path):
    path = write_mat_v73(tmp_path / "other.mat", with_cjdata=False)
    with pytest.raises(ScanReadError) as excinfo:
        read_scan(path)
    assert "cjdata" in assert_clean_error(excinfo, path)


# ---------------------------------------------------------------- masks


def test_write_mask_png_is_0_255(tmp_path):
    path = tmp_path / "out" / "mask.png"
    write_mask_png(path, MAT_MASK.astype(bool))
    with Image.open(path) as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), MAT_MASK * 255)


# ---------------------------------------------------------------- bad input


@pytest.fixture
def truncated_jpeg(tmp_path, shared_datasets) -> Path:
    data = (shared_datasets / "br35h" / "yes" / "y1.jpg").read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_jpeg_raises(truncated_jpeg):
    with pytest.raises(ScanReadError) as excinfo:
        read_scan(truncated_jpeg)
    assert_clean_error(excinfo, truncated_jpeg)


def test_truncated_png_raises(tmp_path):
    full = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(full)
    path = tmp_path / "truncated.png"
    path.write_bytes(full.read_bytes()[:200])
    with pytest.raises(ScanReadError) as excinfo:
        read_scan(path)
    assert_clean_error(excinfo, path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the broken TIFF before failing
@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.png", b""),
        ("text.png", b"this is a text file, not an image\nsecond line\n"),
        ("text.jpg", b"hello"),
        ("text.nii", b"not a nifti header" * 30),
        ("text.nii.gz", b"not gzip data" * 10),
        ("text.mat", b"not a mat file" * 10),
        ("text.tif", b"II*\x00 but nothing after"),
        ("notes.xyz", b"unknown content of an unknown kind"),
    ],
)
def test_bad_files_raise_one_line_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ScanReadError) as excinfo:
        read_scan(path)
    assert_clean_error(excinfo, path)


def test_missing_path_raises(tmp_path):
    path = tmp_path / "missing.png"
    with pytest.raises(ScanReadError) as excinfo:
        read_scan(path)
    assert "no such file" in assert_clean_error(excinfo, path)


def test_folder_raises(tmp_path):
    with pytest.raises(ScanReadError) as excinfo:
        read_scan(tmp_path)
    assert "folder" in assert_clean_error(excinfo, tmp_path)


def test_middle_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        read_scan(tmp_path / "any.nii", middle=0)


def test_is_scan_file(tmp_path):
    notes = tmp_path / "labels.csv"
    notes.write_text("id,label\n1,glioma\n")
    assert not is_scan_file(notes)
    assert is_scan_file(tmp_path / "not_yet_written.nii.gz")
    assert not is_scan_file(tmp_path / "missing_without_extension")


# ---------------------------------------------------------------- registry


class ToyReader(ScanReader):
    name = "toy"
    extensions = (".toyscan",)

    def read(self, path: Path, *, axis: int = 2, middle: int | None = None) -> list[ScanSlice]:
        return [ScanSlice(pixels=np.ones((2, 2), dtype=np.float32), source=str(path), label="toy")]


@pytest.fixture
def toy_reader():
    register_reader(ToyReader)
    yield ToyReader
    unregister_reader(ToyReader)


def test_registered_reader_is_used(tmp_path, toy_reader):
    path = tmp_path / "scan.TOYSCAN"
    path.write_bytes(b"anything")
    assert ".toyscan" in supported_extensions()
    assert is_scan_file(path)
    assert isinstance(reader_for(path), ToyReader)
    (scan,) = read_scan(path)
    assert scan.label == "toy"
    # unregistering leaves the registry as it was found (idempotent: the fixture's teardown does it again)
    unregister_reader(ToyReader)
    unregister_reader(ToyReader)
    assert ".toyscan" not in supported_extensions() and not is_scan_file(path)



def test_dicom_orientation_says_how_left_right_lies_across_the_image(tmp_path):
    """ImageOrientationPatient's row direction: towards the patient's left is the usual (radiological)
    display, towards the right a mirrored one, neither (sagittal) leaves left-right unknown."""
    cases = {"axial": ([1, 0, 0, 0, 1, 0], "radiological"), "mirrored": ([-1, 0, 0, 0, 1, 0], "neurological"),
             "coronal": ([1, 0, 0, 0, 0, -1], "radiological"), "sagittal": ([0, 1, 0, 0, 0, -1], None),
             "none": (None, "radiological")}
    for name, (iop, lateral) in cases.items():
        attrs = {"ImageOrientationPatient": iop} if iop is not None else {}
        (scan,) = read_scan(write_dicom(tmp_path / f"{name}.dcm", FRAME, **attrs))
        assert scan.extra["lateral"] == lateral, name


def test_nifti_units_and_missing_orientation_or_spacing(tmp_path):
    """Spacing in mm whatever xyzt_units says; no qform/sform: left-right unknown; pixdim 0 as well: no
    spacing (nibabel's stand-in 1 mm would invent millimetres)."""
    for unit, factor in (("mm", 1.0), ("micron", 0.001), ("meter", 1000.0)):
        image = nib.Nifti1Image(VOLUME, ras_affine())
        image.header.set_xyzt_units(xyz=unit)
        nib.save(image, tmp_path / f"{unit}.nii")
        scan = read_scan(tmp_path / f"{unit}.nii")[0]
        assert scan.spacing == pytest.approx((0.9 * factor, 0.9 * factor)), unit
        assert scan.extra["lateral"] == "radiological"
    bare = nib.Nifti1Image(VOLUME, None)
    bare.header.set_qform(None, code=0)
    bare.header.set_sform(None, code=0)
    bare.header["pixdim"][1:4] = [0.8, 0.8, 4.0]
    nib.save(bare, tmp_path / "bare.nii")
    scan = read_scan(tmp_path / "bare.nii")[0]
    assert scan.extra["lateral"] is None and scan.spacing == pytest.approx((0.8, 0.8))
    bare.header["pixdim"][1:4] = [0, 0, 0]
    nib.save(bare, tmp_path / "no-spacing.nii")
    assert read_scan(tmp_path / "no-spacing.nii")[0].spacing is None
    bare.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment"))  # header extensions follow
    nib.save(bare, tmp_path / "no-spacing-ext.nii.gz")
    assert read_scan(tmp_path / "no-spacing-ext.nii.gz")[0].spacing is None
    # only the in-plane sizes matter: a 2-D image with no slice thickness keeps its pixel spacing
    flat = nib.Nifti1Image(VOLUME[:, :, 0], None)
    flat.header.set_qform(None, code=0)
    flat.header.set_sform(None, code=0)
    flat.header["pixdim"][1:4] = [0.7, 0.7, 0]
    nib.save(flat, tmp_path / "flat.nii")
    assert read_scan(tmp_path / "flat.nii")[0].spacing == pytest.approx((0.7, 0.7))
