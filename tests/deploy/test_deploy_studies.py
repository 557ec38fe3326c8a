"""Study discovery and loading for deployment (no MONAI Deploy SDK needed)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from das_deploy_helpers import (
    nibabel_anatomical,
    pydicom_file,
    write_dicom_series,
    write_nifti,
    write_sr,
)
from monai_das.deploy import ModelSpec, StudyLoader, discover_studies
from monai_das.deploy.studies import LoadStudyd
from monai_das.transforms.temporal import uniform_indices

SPEC = ModelSpec(layout="volume", spatial_size=(16, 16, 16), in_channels=1, slice_axis=0, labels=["a", "b"])


def test_discover_mixed_folder(tmp_path):
    shutil.copy(nibabel_anatomical(), tmp_path / "anatomical.nii")
    shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "ct.dcm")
    (tmp_path / "us").mkdir()
    shutil.copy(pydicom_file("examples_ybr_color.dcm"), tmp_path / "us" / "cine.dcm")
    write_dicom_series(tmp_path / "two", num_slices=3, series_number=1, prefix="a")
    write_dicom_series(tmp_path / "two", num_slices=4, series_number=7, prefix="b")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 200)
    (tmp_path / ".hidden.nii").write_bytes(b"")

    studies = {s.study_id: s for s in discover_studies(tmp_path)}
    assert set(studies) == {
        "anatomical", tmp_path.name, "us__cine", "two__series_1", "two__series_7", "empty", "notes.txt", "broken",
    }
    assert studies["anatomical"].kind == "volume"
    assert studies[tmp_path.name].kind == "dicom_series" and len(studies[tmp_path.name].files) == 1  # loose CT_small
    assert studies["us__cine"].kind == "video"
    assert studies["two__series_1"].kind == "dicom_series" and len(studies["two__series_1"].files) == 3
    assert len(studies["two__series_7"].files) == 4
    for bad in ("empty", "notes.txt", "broken"):
        assert studies[bad].kind == "invalid" and studies[bad].error
    assert "empty" in studies["empty"].error and "unsupported" in studies["notes.txt"].error
    assert "broken.dcm" in studies["broken"].error


def test_discover_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_studies(tmp_path / "missing")
    with pytest.raises(ValueError, match="contains no files"):
        discover_studies(tmp_path)


def test_load_nifti_volume():
    path = nibabel_anatomical()
    (src,) = discover_studies(path)
    study = StudyLoader(SPEC).load(src)
    assert study.image.shape == (1, 16, 16, 16) and study.image.dtype == torch.float32
    assert 0.0 <= float(study.image.min()) and float(study.image.max()) <= 1.0 + 1e-6
    assert study.info["original_shape"] == [1, 33, 41, 25]
    # RAS slice axis 0 runs along the file's first (x) axis, which nibabel's anatomical.nii stores flipped (−2 mm)
    assert study.info["source_axis"] == 0 and study.info["num_source_frames"] == 33
    assert len(study.source_indices) == 16 and study.source_indices == sorted(study.source_indices, reverse=True)
    assert 0 <= min(study.source_indices) and max(study.source_indices) <= 32


def test_load_synthetic_series_keeps_slice_order(tmp_path):
    """Shuffled files, slice i filled with 10·(i+1): network frames must follow InstanceNumber order."""
    write_dicom_series(tmp_path / "series", num_slices=6)
    (src,) = discover_studies(tmp_path / "series")
    spec = ModelSpec(spatial_size=(8, 8, 6), slice_axis=2, labels=["a", "b"])  # frames = the 6 axial slices
    study = StudyLoader(spec, percentiles=None).load(src)
    assert study.image.shape == (1, 8, 8, 6)
    assert study.info["modality"] == "MR" and study.info["instance_numbers"] == [1, 2, 3, 4, 5, 6]
    assert study.info["source_axis"] == 2 and study.source_indices == [0, 1, 2, 3, 4, 5]
    means = study.image[0].mean(dim=(0, 1))
    assert torch.all(means[1:] > means[:-1]), means
    assert [int(h.InstanceNumber) for h in study.dicom_headers] == [1, 2, 3, 4, 5, 6]


def test_load_single_ct_file_and_min_frames():
    path = pydicom_file("CT_small.dcm")
    (src,) = discover_studies(path)
    assert src.kind == "dicom_series"
    # one slice would be stretched into a volume constant along the slice axis: refused unless asked for
    with pytest.raises(ValueError, match=r"study 'CT_small' .* has 1 slice\(s\), fewer than the 2 required"):
        StudyLoader(SPEC).load(src)
    study = StudyLoader(SPEC, min_frames=1).load(src)
    assert study.image.shape == (1, 16, 16, 16) and study.info["modality"] == "CT"
    assert study.info["original_shape"] == [1, 128, 128]  # one 2D slice, read as a 1-slice volume


def test_2d_image_and_still_clips_are_refused(tmp_path):
    """A 2D NIfTI, a one-slice series and a one-frame GIF get an error naming the study, unless min_frames=1."""
    from PIL import Image

    flat = write_nifti(tmp_path / "flat.nii.gz", np.random.rand(40, 50).astype(np.float32))
    write_dicom_series(tmp_path / "one", num_slices=1)
    Image.fromarray(np.full((20, 24, 3), 120, np.uint8)).save(tmp_path / "still.gif")
    sources = [discover_studies(flat)[0], discover_studies(tmp_path / "one")[0],
               discover_studies(tmp_path / "still.gif")[0]]
    for src in sources:
        with pytest.raises(ValueError, match=rf"study '{src.study_id}' .*has 1 (slice|frame).*fewer than the 2"):
            StudyLoader(SPEC).load(src)
        assert StudyLoader(SPEC, min_frames=1).load(src).image.shape == (1, 16, 16, 16)
    video_spec = ModelSpec(layout="video", spatial_size=(8, 12, 10))
    with pytest.raises(ValueError, match="still"):
        StudyLoader(video_spec).load(sources[2])
    assert StudyLoader(video_spec, min_frames=1).load(sources[2]).image.shape == (8, 1, 12, 10)


def test_load_multiframe_ultrasound():
    (src,) = discover_studies(pydicom_file("examples_ybr_color.dcm"))
    assert src.kind == "video"
    study = StudyLoader(SPEC).load(src)
    assert study.image.shape == (1, 16, 16, 16)  # RGB → one channel, 30 frames → 16 along slice axis 0
    assert study.info["modality"] == "US" and study.info["num_source_frames"] == 30
    assert study.source_indices == uniform_indices(30, 16).tolist()
    video = StudyLoader(ModelSpec(layout="video", spatial_size=(8, 12, 10))).load(src)
    assert video.image.shape == (8, 1, 12, 10)


def test_wrong_modality_and_non_image(tmp_path):
    write_dicom_series(tmp_path / "mr", num_slices=3)
    (src,) = discover_studies(tmp_path / "mr")
    with pytest.raises(ValueError, match=r"modality MR is not one of the accepted modalities \['CT', 'US'\]"):
        StudyLoader(SPEC, allowed_modalities=("CT", "us")).load(src)
    StudyLoader(SPEC, allowed_modalities=("MR",)).load(src)  # accepted
    (sr,) = discover_studies(write_sr(tmp_path / "sr" / "report.dcm"))
    with pytest.raises(ValueError, match="modality SR holds no image"):
        StudyLoader(SPEC).load(sr)


def test_bad_volumes(tmp_path):
    many = write_nifti(tmp_path / "fmri.nii.gz", np.random.rand(8, 8, 8, 5).astype(np.float32))
    (src,) = discover_studies(many)
    with pytest.raises(ValueError, match="5 channel"):
        StudyLoader(SPEC).load(src)
    line = write_nifti(tmp_path / "line.nii", np.random.rand(9, 1, 1).astype(np.float32))
    with pytest.raises(ValueError, match="not a 2D/3D image"):
        StudyLoader(SPEC).load(discover_studies(line)[0])
    nan = np.random.rand(6, 6, 6).astype(np.float32)
    nan[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        StudyLoader(SPEC).load(discover_studies(write_nifti(tmp_path / "nan.nii", nan))[0])
    corrupt = tmp_path / "corrupt.nii"
    corrupt.write_bytes(b"this is not nifti")
    with pytest.raises(RuntimeError, match="cannot read"):
        StudyLoader(SPEC).load(discover_studies(corrupt)[0])
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 300)
    with pytest.raises(ValueError, match="broken.dcm"):
        StudyLoader(SPEC).load(discover_studies(tmp_path / "broken.dcm")[0])


def test_load_study_dict_transform(tmp_path):
    out = LoadStudyd("image", StudyLoader(SPEC))({"image": str(nibabel_anatomical())})
    assert out["image"].shape == (1, 16, 16, 16) and out["image_study"].source.kind == "volume"
    write_dicom_series(tmp_path / "a", num_slices=3)
    write_dicom_series(tmp_path / "b", num_slices=3)
    with pytest.raises(ValueError, match="exactly one study, found 2"):
        LoadStudyd("image", StudyLoader(SPEC))({"image": str(tmp_path)})


def test_load_synthetic_video(tmp_path):
    """An AVI written with OpenCV: 12 frames of growing brightness."""
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (24, 20))
    for i in range(12):
        writer.write(np.full((20, 24, 3), 20 * i, dtype=np.uint8))
    writer.release()
    (src,) = discover_studies(path)
    assert src.kind == "video"
    study = StudyLoader(SPEC).load(src)
    assert study.image.shape == (1, 16, 16, 16) and study.info["num_source_frames"] == 12
    assert study.source_indices == uniform_indices(12, 16).tolist()  # a short clip is stretched
    means = study.image[0].mean(dim=(1, 2))
    assert torch.all(means[1:] >= means[:-1])  # brightness grows frame by frame


def test_load_real_ultrasound_video(shared_data):
    """The smallest real lung-ultrasound MP4 of the shared data."""
    import csv

    root = shared_data / "video" / "covid19_lus_pocus"
    rows = list(csv.DictReader(open(root / "MANIFEST.csv")))
    row = min(rows, key=lambda r: int(r["bytes"]))
    (src,) = discover_studies(root / row["file"])
    study = StudyLoader(SPEC).load(src)
    assert study.image.shape == (1, 16, 16, 16) and study.info["num_source_frames"] == int(row["frames"])
