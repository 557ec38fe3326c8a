"""The study layer (monai_das.data.studies): discovery, ids, fingerprints, study lists, LoadStudy(d), kept indices."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_das.data import (
    LoadStudy,
    LoadStudyd,
    StudySource,
    discover_studies,
    kept_source_indices,
    repeated_source_warning,
    list_studies,
    study_fingerprint,
)
from monai_das.transforms import uniform_indices

VOLUME = {"layout": "volume", "spatial_size": [8, 8, 8]}
VIDEO = {"layout": "video", "num_frames": 6, "spatial_size": [8, 10]}


def _nifti(path: Path, shape=(10, 12, 9), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.random.default_rng(seed).random(shape).astype(np.float32), np.eye(4)), path)
    return path


def _ct_series(folder: Path, n: int, series_uid: str | None = None, number: int = 1, prefix: str = "s") -> Path:
    """pydicom's CT_small.dcm repeated at increasing positions, written in reverse InstanceNumber order."""
    import pydicom
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or pydicom.uid.generate_uid()
    for i in range(n):
        d = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        d.InstanceNumber, d.SeriesInstanceUID, d.SeriesNumber = i + 1, uid, number
        x, y, z = (float(v) for v in d.ImagePositionPatient)
        d.ImagePositionPatient = [x, y, z + 5.0 * i]
        d.SOPInstanceUID = pydicom.uid.generate_uid()
        d.save_as(folder / f"{prefix}{n - 1 - i}.dcm")
    return folder


def _us_cine(path: Path, declared=(8, 10, 4)) -> Path:
    """A multi-frame ultrasound DICOM whose header declares ``declared`` (rows, columns, frames) and that holds 4
    frames of 8×10 zeros (all of it when that is what it declares)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.TransferSyntaxUID = UltrasoundMultiFrameImageStorage, \
        ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SeriesInstanceUID, ds.Modality = UltrasoundMultiFrameImageStorage, generate_uid(), "US"
    (ds.Rows, ds.Columns, ds.NumberOfFrames), ds.SamplesPerPixel = declared, 1
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
        "MONOCHROME2", 8, 8, 7, 0)
    ds.PixelData = np.zeros((4, 8, 10), np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _gif(path: Path, frames: int = 5, size=(12, 14)) -> Path:
    from PIL import Image

    images = [Image.fromarray(np.full((*size, 3), 30 * t, np.uint8)) for t in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from pydicom.data import get_testdata_file

    root = tmp_path_factory.mktemp("mixed")
    _nifti(root / "a.nii.gz")
    _nifti(root / "sub" / "b.nii", seed=1)
    np.save(root / "arr.npy", np.random.default_rng(2).random((6, 7, 8)).astype(np.float32))
    (root / "meta.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 7 6 5\nElementType = MET_FLOAT\n"
                                   "ElementDataFile = meta.raw\n")
    np.random.default_rng(3).random((5, 6, 7)).astype(np.float32).tofile(root / "meta.raw")
    _ct_series(root / "ct", 3)
    _ct_series(root / "two", 2, number=4, prefix="a")
    _ct_series(root / "two", 3, number=9, prefix="b")
    (root / "us").mkdir()
    shutil.copy(get_testdata_file("examples_ybr_color.dcm"), root / "us" / "cine.dcm")
    _gif(root / "clip.gif")
    (root / "notes.txt").write_text("a sidecar")
    (root / "dataset.json").write_text("{}")
    (root / "ct" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (root / "photo.png").write_bytes(b"\x89PNG")
    (root / "empty").mkdir()
    return root


def test_discovery_ids_and_kinds(folder):
    studies = {s.study_id: s for s in discover_studies(folder)}
    assert sorted(studies) == ["a.nii.gz", "arr.npy", "clip.gif", "ct", "empty", "meta.mhd", "photo.png",
                               "sub/b.nii", "two#series_4", "two#series_9", "us/cine.dcm"]
    kinds = {k: s.kind for k, s in studies.items()}
    assert kinds == {"a.nii.gz": "volume", "arr.npy": "volume", "clip.gif": "video", "ct": "dicom_series",
                     "empty": "invalid", "meta.mhd": "volume", "photo.png": "invalid", "sub/b.nii": "volume",
                     "two#series_4": "dicom_series", "two#series_9": "dicom_series", "us/cine.dcm": "video"}
    assert len(studies["ct"].files) == 3 and studies["ct"].path == folder / "ct"  # DICOMDIR is no slice
    assert [len(studies[f"two#series_{n}"].files) for n in (4, 9)] == [2, 3]
    assert [f.suffix for f in studies["meta.mhd"].files] == [".mhd", ".raw"]  # the data file is a member
    assert all(Path(s.path).is_absolute() for s in studies.values())
    # a single file: one study named after it; a single-frame DICOM file is a one-slice series
    (one,) = discover_studies(folder / "ct" / "s0.dcm")
    assert (one.study_id, one.kind, one.files) == ("s0.dcm", "dicom_series", [folder / "ct" / "s0.dcm"])
    with pytest.raises(ValueError, match=r"notes\.txt' is not supported"):
        discover_studies(folder / "notes.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_studies(folder / "missing")



def test_discovery_skips_an_unzipped_archives_resource_forks(tmp_path):
    """macOS archives unpack `__MACOSX/<path>/._<name>` beside every file: no study, and no empty-folder error."""
    import shutil

    for rel in ("a.nii.gz", "__MACOSX/._a.nii.gz", "__MACOSX/sub/._b.nii.gz", ".git/config"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert [s.study_id for s in discover_studies(tmp_path)] == ["a.nii.gz"]
    shutil.rmtree(tmp_path / "__MACOSX")
    (tmp_path / "__MACOSX").mkdir()  # only an empty __MACOSX: still skipped, not an "empty study folder"
    assert [s.study_id for s in discover_studies(tmp_path)] == ["a.nii.gz"]


def test_discovery_follows_linked_folders_once(tmp_path, caplog):
    """A study folder linked in from elsewhere (a PACS export, an archive) is listed; a link back up the tree, or a
    second link to a folder listed already, is skipped with a warning: no loop, no study twice."""
    archive, root = tmp_path / "archive", tmp_path / "studies"
    for rel in ("p1/a.nii.gz", "p2/b.nii.gz"):
        (archive / rel).parent.mkdir(parents=True, exist_ok=True)
        (archive / rel).write_bytes(b"x")
    (root / "local").mkdir(parents=True)
    (root / "local" / "c.nii.gz").write_bytes(b"x")
    os.symlink(archive / "p1", root / "p1")
    os.symlink(archive / "p1", root / "p1_again")
    os.symlink(archive, root / "zarchive")  # p1 inside it is listed already
    os.symlink(root, root / "local" / "loop")
    with caplog.at_level("WARNING", logger="monai_das.data.studies"):
        ids = sorted(s.study_id for s in discover_studies(root))
    assert ids == ["local/c.nii.gz", "p1/a.nii.gz", "zarchive/p2/b.nii.gz"]
    assert caplog.text.count("which is listed already: skipped") == 3
    # a link sorted before the real folder it leads to: the folder keeps its own path
    os.symlink(root / "local", root / "a_link")
    assert sorted(s.study_id for s in discover_studies(root)) == ids


def test_fingerprints(folder, tmp_path):
    studies = {s.study_id: s for s in discover_studies(folder)}
    st = (folder / "a.nii.gz").stat()
    assert studies["a.nii.gz"].fingerprint == f"{st.st_size}-{st.st_mtime_ns}" == study_fingerprint(folder / "a.nii.gz")
    assert studies["ct"].fingerprint.startswith("3files-")  # the member files, not the DICOMDIR beside them
    assert studies["two#series_9"].fingerprint.startswith("3files-")
    assert studies["meta.mhd"].fingerprint == study_fingerprint(folder / "meta.mhd")  # .mhd + .raw
    assert studies["meta.mhd"].fingerprint.startswith("2files-")
    assert study_fingerprint(tmp_path / "nope.nii") == "missing"
    # an .mhd whose ElementDataFile has another stem: that file is a member (no study of its own) and in the fingerprint
    other = tmp_path / "mhd"
    other.mkdir()
    (other / "vol.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
                                   "ElementDataFile = data_0001.raw\n")
    (other / "data_0001.raw").write_bytes(bytes(8))
    (src,) = discover_studies(other)
    assert src.study_id == "vol.mhd" and [f.name for f in src.files] == ["data_0001.raw", "vol.mhd"]
    before = study_fingerprint(other / "vol.mhd")
    os.utime(other / "data_0001.raw", ns=(1, 1))  # the data rewritten: the study runs again on resume
    assert before.startswith("2files-") and study_fingerprint(other / "vol.mhd") != before
    series = _ct_series(tmp_path / "s", 2)
    before = study_fingerprint(series)
    os.utime(series / "s0.dcm", ns=(1, 1))  # one member touched: the study runs again on resume
    assert study_fingerprint(series) != before
    item = studies["a.nii.gz"].item()
    assert item["id"] == "a.nii.gz" and item["image"] == str(folder / "a.nii.gz")
    assert item["study"] is studies["a.nii.gz"]
    assert os.fspath(studies["a.nii.gz"]) == str(folder / "a.nii.gz")


def test_study_lists(folder, tmp_path, caplog):
    (tmp_path / "two_series").mkdir()
    listing = tmp_path / "list.csv"
    listing.write_text(f"image,label,id\n{folder / 'a.nii.gz'},pos,first\n{folder / 'ct'},,\n{folder / 'two'},0,\n"
                       "missing.nii,-1,\n")
    both = os.path.commonpath([folder, tmp_path])  # rows of another folder: read with the folder that holds them
    items = {it["id"]: it for it in list_studies(listing, label_names=["neg", "pos"], dataset_dir=both)}
    assert set(items) == {"first", str(folder / "ct"), str(folder / "two"), "missing.nii"}
    assert items["first"]["label"] == 1 and "label" not in items[str(folder / "ct")]
    assert items[str(folder / "ct")]["study"].kind == "dicom_series"  # a folder holding one study
    two = items[str(folder / "two")]["study"]
    assert two.kind == "invalid" and "must hold exactly one study, found 2 (two#series_4, two#series_9)" in two.error
    # a damaged file beside the series of a listed folder: an error study with -i <folder>, dropped unsaid here (T63c)
    series = _ct_series(tmp_path / "junk", 2)
    (series / "cut.dcm").write_bytes(b"")
    junk_list = tmp_path / "junk.csv"
    junk_list.write_text(f"image\n{series}\n")
    with caplog.at_level(logging.WARNING, logger="monai_das"):
        (item,) = list_studies(junk_list)
    assert item["study"].kind == "dicom_series" and len(item["study"].files) == 2
    assert any(f"'{series}' also holds what is no part of this study and was not read: '{series / 'cut.dcm'}' is an "
               "empty file" in w for w in item["study"].warnings)
    # a file that is not DICOM there (a thumbnail): skipped by both (as training's reader does; trial T72c)
    (series / "cut.dcm").unlink()
    (series / "scan.bin").write_bytes(b"\x00" * 300)
    with caplog.at_level(logging.INFO, logger="monai_das"):
        (item,) = list_studies(junk_list)
    assert len(item["study"].files) == 2 and not item["study"].warnings and "(scan.bin)" in caplog.text
    assert items[str(folder / "two")]["label"] == 0
    assert items["missing.nii"]["fingerprint"] == "missing"
    # a header typed with spaces after the commas still names its columns; capitalised names are refused, not ignored
    listing.write_text(f"image, label, id\n{folder / 'a.nii.gz'}, pos, first\n")
    (item,) = list_studies(listing, label_names=["neg", "pos"], dataset_dir=both)
    assert item["id"] == "first" and item["label"] == 1
    # a spreadsheet's capitalised header names the columns, as in a training datalist CSV (it was refused here while
    # training read the same header; review R67d)
    listing.write_text(f"Image,Label,ID\n{folder / 'a.nii.gz'},pos,first\n")
    (item,) = list_studies(listing, label_names=["neg", "pos"], dataset_dir=both)
    assert item["id"] == "first" and item["label"] == 1
    # a column twice: csv kept the last one, its labels and ids read without a word (trial T64b); in any case
    for header in ("image,label,id,label,id", "image,Label,id,label,id"):
        listing.write_text(f"{header}\n{folder / 'a.nii.gz'},pos,x0,neg,x1\n")
        with pytest.raises(ValueError, match=r"list\.csv' line 1: the CSV header has the column 'label' 2 times"):
            list_studies(listing, label_names=["neg", "pos"])
    # a training datalist CSV written with a capitalised header: its test rows, as load_datalist reads them
    training = folder / "train.csv"
    training.write_text("Image,Label,Split\na.nii.gz,pos,test\nsub/b.nii,neg,train\n")
    try:
        (item,) = list_studies(training, label_names=["neg", "pos"])
        assert item["label"] == 1 and item["id"] == "a.nii.gz"
        # with an ID column it is a study list in any case, every row a study (review R67e)
        training.write_text("Image,Label,ID,Split\na.nii.gz,pos,first,test\nsub/b.nii,neg,second,train\n")
        assert sorted(it["id"] for it in list_studies(training, label_names=["neg", "pos"])) == ["first", "second"]
    finally:
        training.unlink()
    # a MONAI datalist: its test list, ids relative to the dataset folder
    datalist = folder / "list.json"
    datalist.write_text(json.dumps({"labels": {"0": "neg", "1": "pos"}, "training": [],
                                    "test": [{"image": "sub/b.nii", "label": "pos"}, {"image": "a.nii.gz"}]}))
    try:
        items = {it["id"]: it for it in list_studies(datalist)}
    finally:
        datalist.unlink()
    assert set(items) == {"sub/b.nii", "a.nii.gz"} and items["sub/b.nii"]["label"] == 1
    assert "label" not in items["a.nii.gz"] and items["a.nii.gz"]["image"] == str(folder / "a.nii.gz")
    # an image of the list that does not exist is one study that cannot be read, the others go on (it stopped the
    # whole run, bundle inference and the Deploy app, where a CSV study list gave an error row; trial X)
    datalist.write_text(json.dumps({"labels": {"0": "neg", "1": "pos"}, "training": [],
                                    "test": [{"image": "gone.nii.gz", "label": "pos"}, {"image": "a.nii.gz"}]}))
    try:
        studies = {s.study_id: s for s in discover_studies(datalist)}
    finally:
        datalist.unlink()
    assert studies["a.nii.gz"].kind == "volume" and studies["gone.nii.gz"].kind == "invalid"
    assert studies["gone.nii.gz"].error == f"{datalist}:test[0]: image '{folder / 'gone.nii.gz'}' does not exist."
    assert studies["gone.nii.gz"].label == 1
    # a training datalist CSV (a split column): its test rows, as the JSON's test list (every row was predicted,
    # training and validation studies among the "test" predictions), said in a warning
    datalist = folder / "list.csv"
    datalist.write_text("image,label,group,split\nsub/b.nii,pos,p1,test\na.nii.gz,neg,p2,training\n")
    try:
        with caplog.at_level("WARNING", logger="monai_das.data.studies"):
            items = {it["id"]: it for it in list_studies(datalist, label_names=["neg", "pos"])}
    finally:
        datalist.unlink()
    assert set(items) == {"sub/b.nii"} and items["sub/b.nii"]["label"] == 1
    assert "has a 'split' column: read as a datalist, its 1 'test' row(s) are the studies" in caplog.text
    # a study list that happens to have a split column (an id column, other values) stays a study list, said
    listing.write_text(f"image,id,split\n{folder / 'a.nii.gz'},p0,batch1\n{folder / 'sub' / 'b.nii'},p1,test\n")
    with caplog.at_level("WARNING", logger="monai_das.data.studies"):
        items = {it["id"]: it for it in list_studies(listing, label_names=["neg", "pos"], dataset_dir=both)}
    assert set(items) == {"p0", "p1"} and "is read as a study list" in caplog.text
    # a bundle's datalist split as a dataset (inference.json without --input): its files, not item numbers, so the
    # predictions name each study (and the study layer gives its source frames); array datasets keep their indices
    from monai.data import Dataset

    split = Dataset([{"image": str(folder / "sub" / "b.nii"), "label": torch.tensor(1)},
                     {"image": str(folder / "a.nii.gz"), "label": -1}])
    items = {it["id"]: it for it in list_studies(None, dataset=split, id_prefix="datalist_test_")}
    assert set(items) == {"sub/b.nii", "a.nii.gz"} and items["sub/b.nii"]["label"] == 1
    assert items["a.nii.gz"]["image"] == str(folder / "a.nii.gz") and "label" not in items["a.nii.gz"]
    assert items["sub/b.nii"]["fingerprint"] == study_fingerprint(folder / "sub" / "b.nii")  # size, mtime
    tif = folder / "volume.tif"  # a format LoadImage reads but the study layer does not: the dataset's items
    tif.write_bytes(b"II*\x00")
    try:
        items = list_studies(None, dataset=Dataset([{"image": str(tif), "label": 0}]), id_prefix="datalist_test_")
    finally:
        tif.unlink()
    assert [it["id"] for it in items] == ["datalist_test_000000"] and items[0]["index"] == 0
    arrays = Dataset([{"image": torch.zeros(1, 4, 4, 4), "label": 0}] * 2)
    assert [it["id"] for it in list_studies(None, dataset=arrays, id_prefix="vessel_test_")] == \
        ["vessel_test_000000", "vessel_test_000001"]
    # the same ids in the dataset's order (an evaluation's per-item rows), not sorted
    from monai_das.data import dataset_item_ids

    assert dataset_item_ids(split, id_prefix="datalist_test_") == ["sub/b.nii", "a.nii.gz"]
    assert dataset_item_ids(arrays, id_prefix="vessel_test_") == ["vessel_test_000000", "vessel_test_000001"]


def test_load_volumes_and_source_indices(folder):
    load = LoadStudy({**VOLUME, "axcodes": None}, in_channels=1)
    arr = load(folder / "arr.npy")  # identity affine: frames along axis 0 are the array's first-axis slices
    assert tuple(arr.shape) == (1, 8, 8, 8) and arr.dtype == torch.float32
    assert arr.meta["source_indices"].tolist() == [0, 1, 1, 2, 3, 4, 4, 5]  # 6 slices stretched to 8 (voxel centres)
    assert arr.meta["study_id"] == "arr.npy"
    study = load.load(StudySource("four_d", "volume", folder / "arr.npy"))
    assert study.info["num_source_frames"] == 6 and study.info["source_axis"] == 0
    four = folder.parent / "four_d.npy"
    np.save(four, np.random.default_rng(0).random((3, 5, 6, 7)).astype(np.float32))  # C×D×H×W
    assert tuple(LoadStudy(VOLUME, in_channels=3)(four).shape) == (3, 8, 8, 8)
    # its channels are not known to be colours (training reads them as they are): never averaged into one
    for channels in (1, 2):
        with pytest.raises(ValueError, match=rf"study 'four_d.npy' .* has 3 channel\(s\).*the network expects {channels}"):
            LoadStudy(VOLUME, in_channels=channels)(four)
    # a DICOM series: frames along file axis 2 are the slices in InstanceNumber order
    series = LoadStudy({**VOLUME, "slice_axis": 2}).load(next(s for s in discover_studies(folder)
                                                              if s.study_id == "ct"))
    assert series.info["instance_numbers"] == [1, 2, 3] and series.info["source_axis"] == 2
    assert series.source_indices == [0, 0, 0, 1, 1, 2, 2, 2]
    assert [int(h.InstanceNumber) for h in series.dicom_headers] == [1, 2, 3]


def test_nifti_studies_share_one_loader(folder, monkeypatch):
    """MONAI's LoadImage without a reader builds every reader (and logs the nvImageCodec notice) when made: one per
    LoadStudy for NIfTI files, not one per study; a pickled LoadStudy (spawned workers) makes its own. The recipe's
    transforms after loading are built once per LoadStudy as well (same outputs)."""
    import pickle

    import monai.transforms

    made = []

    class Counting(monai.transforms.LoadImage):
        def __init__(self, *a, **k):
            made.append(k.get("reader"))
            super().__init__(*a, **k)

    monkeypatch.setattr(monai.transforms, "LoadImage", Counting)
    load = LoadStudy({**VOLUME, "axcodes": None}, in_channels=1)
    first = [load(folder / "a.nii.gz"), load(folder / "sub" / "b.nii"), load(folder / "a.nii.gz")]
    assert made == [None]
    assert torch.equal(first[0], first[2]) and not torch.equal(first[0], first[1])
    xform = load._volume_xform  # the recipe's transforms are built once too, not per study
    assert xform is not None and torch.equal(load(folder / "sub" / "b.nii"), first[1]) and load._volume_xform is xform
    again = pickle.loads(pickle.dumps(load))
    assert again._default_loader is None and torch.equal(again(folder / "a.nii.gz"), first[0])


def test_clips_and_layout_changes(folder):
    clip = LoadStudy(VIDEO).load(folder / "clip.gif")
    assert tuple(clip.image.shape) == (6, 1, 8, 10) and clip.source_indices == uniform_indices(5, 6).tolist()
    # a volume recipe refuses a video file, as its training does (trial T68b: a CT model classified a clip as a volume
    # of frames, silently); a multi-frame DICOM is a volume whose slices along slice_axis are its frames
    with pytest.raises(ValueError, match=r"clip\.gif\) is a video file, not a volume: .*classify it with a video "
                                         r"model"):
        LoadStudy({**VOLUME, "slice_axis": 1})(folder / "clip.gif")
    as_volume = LoadStudy({**VOLUME, "slice_axis": 1})(folder / "us" / "cine.dcm")  # frames along slice axis 1
    assert tuple(as_volume.shape) == (1, 8, 8, 8) and as_volume.meta["source_indices"].tolist() == \
        uniform_indices(30, 8).tolist()
    along_0 = LoadStudy(VOLUME)(folder / "us" / "cine.dcm")
    torch.testing.assert_close(as_volume.as_tensor(), along_0.as_tensor().movedim(1, 2))
    # a video recipe takes clips, as its training does: a volume is refused (its frames were its first axis)
    with pytest.raises(ValueError, match=r"a\.nii\.gz\) is an image or volume file, not a clip"):
        LoadStudy({**VIDEO, "grayscale": False}).load(folder / "a.nii.gz")
    cine = LoadStudy(VOLUME, in_channels=1).load(folder / "us" / "cine.dcm")
    assert cine.info["modality"] == "US" and cine.info["num_source_frames"] == 30
    with pytest.raises(ValueError, match="disagrees with the video recipe's grayscale"):
        LoadStudy(VIDEO, in_channels=3)
    with pytest.raises(ValueError, match=r"modality US is not one of the accepted modalities \['CT'\]"):
        LoadStudy(VOLUME, allowed_modalities=["ct"]).load(folder / "us" / "cine.dcm")


def test_load_study_dict_and_errors(folder):
    out = LoadStudyd("image", recipe=VOLUME, study_suffix=None)({"image": discover_studies(folder / "a.nii.gz")[0]})
    assert set(out) == {"image"} and tuple(out["image"].shape) == (1, 8, 8, 8)
    out = LoadStudyd("image", recipe=VOLUME)({"image": str(folder / "ct")})  # a folder holding one study
    assert out["image_study"].source.kind == "dicom_series"
    with pytest.raises(ValueError, match="must hold exactly one study, found 2"):
        LoadStudyd("image", recipe=VOLUME)({"image": str(folder / "two")})
    with pytest.raises(ValueError, match="either a recipe or a loader"):
        LoadStudyd("image")
    invalid = {s.study_id: s for s in discover_studies(folder)}
    with pytest.raises(ValueError, match="is empty"):
        LoadStudy(VOLUME).load(invalid["empty"])
    with pytest.raises(ValueError, match="unsupported file"):
        LoadStudy(VOLUME).load(invalid["photo.png"])
    with pytest.raises(FileNotFoundError, match=r"study 'gone.nii'"):
        LoadStudy(VOLUME)(folder / "gone.nii")


def test_kept_source_indices():
    assert kept_source_indices([0, 2, 3], [10, 11, 12, 13]) == [10, 12, 13]
    assert kept_source_indices(torch.tensor([1]), torch.tensor([5, 6])) == [6]
    assert kept_source_indices(None, [1, 2]) is None and kept_source_indices([0], None) is None
    assert kept_source_indices([0, 1], [-1, -1]) is None  # unknown
    assert kept_source_indices([4], [0, 1]) is None  # out of range
    assert kept_source_indices([0, 1, 3], [-1, 0, 2, -1]) == ["padding", 0, "padding"]  # resize "pad"


def test_pad_resize_padding_slices_map_to_no_source(tmp_path):
    """resize "pad": the zero slices added around a 20-slice study were reported as its last slice (19, 19, 19 in a
    Deploy report); they have no source slice, and the reports say "padding"."""
    vol = np.random.default_rng(0).normal(300, 10, (48, 48, 20)).astype(np.float32)
    path = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([0.7, 0.7, 5.0, 1.0])), path)
    recipe = {"layout": "volume", "spatial_size": [32, 32, 16], "slice_axis": 2}
    study = LoadStudy({**recipe, "resize": "pad"}).load(path)
    img = torch.as_tensor(study.image)[0]
    blank = [j for j in range(16) if float(img[..., j].abs().max()) == 0.0]
    assert blank == [0, 14, 15]  # 20 slices scaled by 32/48 to 13, padded (1, 2)
    assert [j for j, i in enumerate(study.source_indices) if i == -1] == blank
    assert study.source_indices[1] == 0 and study.source_indices[13] == 19
    assert study.image.meta["source_indices"].tolist() == study.source_indices
    kept = kept_source_indices([13, 14, 15], study.source_indices)
    assert kept == [19, "padding", "padding"]
    msg = repeated_source_warning("'s'", kept, 16)
    assert "2 of them are padding" in msg and "[19, padding, padding]" in msg and "T=16" not in msg
    # stretch never pads: every slice has a source slice, also with a spacing that enlarges the grid
    for extra in ({}, {"pixdim": [1.4, 1.4, 10.0]}):
        assert min(LoadStudy({**recipe, "spatial_size": [32, 32, 40], **extra}).load(path).source_indices) == 0


def test_repeated_source_warning():
    assert repeated_source_warning("'a'", [3, 5, 9], 28) is None and repeated_source_warning("'a'", None, 28) is None
    msg = repeated_source_warning("'a' (/x/a.mp4)", [4, 6, 6, 6], 32)
    assert msg.startswith("study 'a' (/x/a.mp4): the 4 kept frames are only 2 distinct slices/frames of the file")
    assert "[4, 6, 6, 6]" in msg and "T=32" in msg


@pytest.mark.parametrize("syntax", ["JPEG2000Lossless", "RLELossless"])
def test_compressed_dicom_series_read_as_training_reads_it(tmp_path, syntax):
    """A PACS export in a compressed transfer syntax: training's ITK/GDCM read it, inference's pydicom refused it
    ("missing dependencies: gdcm / pylibjpeg"); the project installs pydicom's pylibjpeg decoders."""
    import pydicom
    from pydicom import uid

    from monai_das.data import check_study_shapes
    from monai_das.data.studies import LoadStudy

    plain = _ct_series(tmp_path / "plain", 4)
    packed = tmp_path / "packed"
    packed.mkdir()
    for f in sorted(plain.iterdir()):
        d = pydicom.dcmread(f)
        d.compress(getattr(uid, syntax))
        d.save_as(packed / f.name)
    assert str(pydicom.dcmread(next(packed.iterdir())).file_meta.TransferSyntaxUID) == str(getattr(uid, syntax))
    assert check_study_shapes([str(packed)], "volume")["shapes"][str(packed)] == (1, 128, 128, 4)
    recipe = {"layout": "volume", "spatial_size": [4, 16, 16], "intensity_range": [-1000, 400]}
    a, b = (LoadStudy(recipe).load(str(p)) for p in (plain, packed))
    assert torch.equal(a.image, b.image) and a.source_indices == b.source_indices  # lossless: the same input


def test_a_study_of_another_modality_than_a_hu_window_is_warned(tmp_path):
    """An MR series through a CT model (a window in HU) was classified without a word (trial S): said in the study's
    warnings; a CT study, or a window that is no HU window, is not."""
    import pydicom

    from monai_das.data.studies import LoadStudy

    folder = _ct_series(tmp_path / "mr", 4)
    for f in folder.glob("*.dcm"):
        d = pydicom.dcmread(f)
        d.Modality, d.RescaleIntercept = "MR", 0  # MR values: not negative, mostly above a HU window's top
        d.save_as(f)
    ct = _ct_series(tmp_path / "ct", 4)
    (mr_src,), (ct_src,) = discover_studies(folder), discover_studies(ct)
    hu = {"layout": "volume", "spatial_size": [8, 8, 4], "slice_axis": 2, "intensity_range": [-1000, 400]}
    warned = LoadStudy(hu).load(mr_src).info.get("warnings") or []
    assert any("is a MR study, but the model scales a fixed intensity window intensity_range [-1000.0, 400.0] that "
               "reaches below 0: Hounsfield units" in w for w in warned), warned
    assert not any("intensity window intensity_range [-1000, 400]" in w for w in warned)  # not also the window's
    assert not any("Hounsfield" in w for w in LoadStudy(hu).load(ct_src).info.get("warnings") or [])
    plain = {**hu, "intensity_range": [0, 4000]}
    assert not any("Hounsfield" in w for w in LoadStudy(plain).load(mr_src).info.get("warnings") or [])


def test_a_study_of_a_modality_the_model_was_not_trained_on_is_warned(tmp_path, folder):
    """A CT study through a model trained on MR studies (percentile scaling: no HU window to tell) was classified
    without a word: the recipe's ``modalities`` (the training's, recorded in the card) name it in the study's warnings,
    for a series as for a cine; a study of a trained modality, a non-DICOM file or a recipe without modalities is not
    warned about."""
    from monai_das.data.studies import LoadStudy
    from monai_das.transforms import check_recipe

    ct = _ct_series(tmp_path / "ct", 4)
    mr_model = {"layout": "volume", "spatial_size": [8, 8, 4], "slice_axis": 2, "modalities": ["mr"]}
    assert check_recipe(mr_model)["modalities"] == ["MR"] and check_recipe(VOLUME)["modalities"] is None
    warned = LoadStudy(mr_model).load(ct).info.get("warnings") or []
    assert any("is a CT study, but the model was trained on MR studies only (its recipe's modalities)" in w
               and "--modalities MR" in w for w in warned), warned
    assert not any("trained on" in w for w in LoadStudy({**mr_model, "modalities": ["CT", "MR"]}).load(ct).info.get(
        "warnings") or [])
    assert not any("trained on" in w for w in LoadStudy({**mr_model, "modalities": None}).load(ct).info.get(
        "warnings") or [])
    nifti = LoadStudy({**VOLUME, "modalities": ["MR"]}).load(folder / "a.nii.gz")  # no modality: nothing to compare
    assert not any("trained on" in w for w in nifti.info.get("warnings") or [])
    cine = LoadStudy({**VIDEO, "modalities": ["CT"]}).load(folder / "us" / "cine.dcm")  # a US cine, a CT model
    assert any("is a US study, but the model was trained on CT studies only" in w for w in cine.info["warnings"])
    assert not LoadStudy({**VIDEO, "modalities": ["US"]}).load(folder / "us" / "cine.dcm").info.get("warnings")
    for bad in ("CT", [""], [1]):
        with pytest.raises(ValueError, match="recipe 'modalities' must be null or a list of DICOM modalities"):
            check_recipe({**VOLUME, "modalities": bad})


def test_a_scout_series_beside_the_stack_is_no_study(tmp_path, caplog):
    """A localizer stored as a series of its own in the study folder became a study '#series_2' refused as too short
    (Deploy exit status 3 on every such folder; trial S): skipped, said at INFO. Alone it stays a study."""
    import logging

    import pydicom

    folder = _ct_series(tmp_path / "study", 4, number=2)
    scout = _ct_series(tmp_path / "study", 1, number=1, prefix="scout")
    d = pydicom.dcmread(scout / "scout0.dcm")
    d.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    d.save_as(scout / "scout0.dcm")
    with caplog.at_level(logging.INFO, logger="monai_das.data.studies"):
        found = discover_studies(folder)
    assert [(s.kind, len(s.files)) for s in found] == [("dicom_series", 4)]
    assert "skipped 1 localizer (scout) image(s) beside its series (scout0.dcm)" in caplog.text
    for f in folder.glob("s[0-9]*.dcm"):
        f.unlink()
    assert [(s.kind, len(s.files)) for s in discover_studies(folder)] == [("dicom_series", 1)]  # alone: a study


def test_report_and_scout_series_in_folders_of_their_own_are_no_study(tmp_path, caplog):
    """A PACS export keeps a dose report and a scout series in series folders of their own (``SE997_DOSE/``,
    ``SE1_SCOUT/``): each became an error study, so the Deploy app exited 3 on a clean export (trial Y). Skipped with
    one info line when the input holds other studies; an input of such series alone stays a study each (its loading
    says what it is)."""
    import logging

    import pydicom

    study = tmp_path / "export" / "P001" / "ST1"
    _ct_series(study / "SE2_CT", 4, number=2)
    for name, number, change in (("SE1_SCOUT", 1, {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}),
                                 ("SE997_DOSE", 997, {"Modality": "SR"}), ("SE998_KO", 998, {"Modality": "KO"})):
        _ct_series(study / name, 1, number=number)
        d = pydicom.dcmread(study / name / "s0.dcm")
        for key, value in change.items():
            setattr(d, key, value)
        d.save_as(study / name / "s0.dcm")
    with caplog.at_level(logging.INFO, logger="monai_das.data.studies"):
        found = discover_studies(tmp_path / "export")
    assert [(s.study_id, s.kind, len(s.files)) for s in found] == [("P001/ST1/SE2_CT", "dicom_series", 4)]
    assert ("skipped 3 DICOM series holding no study image, only reports, key objects, a secondary capture or "
            "localizer (scout) images beside their study's images (P001/ST1/SE1_SCOUT, P001/ST1/SE997_DOSE, "
            "P001/ST1/SE998_KO)") in caplog.text
    # another patient whose export holds only its scout (the CT never arrived): a study, not gone without a word
    # (review H6); nor does an invalid file count as the scout's images
    _ct_series(tmp_path / "export" / "P002" / "SE1_SCOUT", 1, number=1)
    d = pydicom.dcmread(tmp_path / "export" / "P002" / "SE1_SCOUT" / "s0.dcm")
    d.ImageType, d.StudyInstanceUID = ["ORIGINAL", "PRIMARY", "LOCALIZER"], pydicom.uid.generate_uid()
    d.save_as(tmp_path / "export" / "P002" / "SE1_SCOUT" / "s0.dcm")
    (tmp_path / "export" / "P002" / "notes.xyz").write_bytes(b"\0\1")
    assert [(s.study_id, s.kind) for s in discover_studies(tmp_path / "export")] == [
        ("P001/ST1/SE2_CT", "dicom_series"), ("P002/SE1_SCOUT", "dicom_series"), ("P002/notes.xyz", "invalid")]
    shutil.rmtree(tmp_path / "export" / "P002")
    # a study list's row naming the study folder: its one image series (three studies before, refused as several)
    (tmp_path / "list.csv").write_text("image,label\nexport/P001/ST1,1\n")
    assert [(s.kind, len(s.files), s.label) for s in discover_studies(tmp_path / "list.csv", num_classes=2)] == [
        ("dicom_series", 4, 1)]
    # alone, or only with each other: still studies (loading names what each is), not "no studies found"
    assert [s.study_id for s in discover_studies(study / "SE997_DOSE")] == ["SE997_DOSE"]
    for f in (study / "SE2_CT").iterdir():
        f.unlink()
    (study / "SE2_CT").rmdir()
    assert [s.study_id for s in discover_studies(tmp_path / "export")] == [
        "P001/ST1/SE1_SCOUT", "P001/ST1/SE997_DOSE", "P001/ST1/SE998_KO"]
    # a dose screen saved as one secondary capture image: an error saying what it is, not "a lower min_frames
    # accepts it" (trial Y); a series of several such images is not refused by this rule
    from monai_das.data.studies import LoadStudy

    d = pydicom.dcmread(study / "SE1_SCOUT" / "s0.dcm")
    d.SOPClassUID = d.file_meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    d.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    (study / "SC").mkdir()
    d.save_as(study / "SC" / "sc.dcm")
    with pytest.raises(ValueError, match=r"'sc\.dcm' is a secondary capture image \(SOP class Secondary Capture: a "
                                         r"screen save such as a dose screen, a scanned document\): one picture"):
        LoadStudy({"layout": "volume", "spatial_size": [4, 16, 16]}).load(str(study / "SC"))
    # in its folder beside the study's CT (a PACS export's dose screen): skipped as the reports are (recheck R53)
    _ct_series(study / "SE2_CT", 4, number=2)
    assert [s.study_id for s in discover_studies(tmp_path / "export")] == ["P001/ST1/SE2_CT"]
    shutil.rmtree(study / "SE2_CT")
    d.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"  # VL Photographic Image: no secondary capture (review H6)
    d.save_as(study / "SC" / "sc.dcm")
    with pytest.raises(ValueError, match=r"has 1 slice\(s\), fewer than min_frames=2"):
        LoadStudy({"layout": "volume", "spatial_size": [4, 16, 16]}).load(str(study / "SC"))


def test_extensionless_non_dicom_files_beside_a_series_are_no_study(tmp_path):
    """A PACS export's VERSION file beside the slices became an error study (Deploy exit status 3 on a clean export);
    training's reader passes over it. A damaged DICOM file without an extension stays an error."""
    series = _ct_series(tmp_path / "export" / "SE0002", 3)
    (series / "VERSION").write_text("1.0\n")
    found = discover_studies(tmp_path / "export")
    assert [(s.study_id, s.kind, len(s.files)) for s in found] == [("SE0002", "dicom_series", 3)]
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "VERSION").write_text("1.0\n")
    with pytest.raises(ValueError, match="no studies found"):  # nothing else there: said
        discover_studies(tmp_path / "alone")
    # beside a DICOMDIR at an export's root, or in a patient folder (no DICOM file of its own), and a CD's
    # AUTORUN.INF, Thumbs.db, desktop.ini: no studies either (each was an error study; trial Y)
    (tmp_path / "export" / "VERSION").write_text("1.0\n")
    (tmp_path / "export" / "DICOMDIR").write_bytes(b"\0" * 132)
    for name in ("AUTORUN.INF", "Thumbs.db", "desktop.ini"):
        (tmp_path / "export" / name).write_bytes(b"x")
    assert [s.kind for s in discover_studies(tmp_path / "export")] == ["dicom_series"]
    (tmp_path / "export" / "empty.dcm").write_bytes(b"")  # said as what it is, not pydicom's "use force=True"
    bad = [s for s in discover_studies(tmp_path / "export") if s.kind == "invalid"]
    assert [s.error for s in bad] == [f"'{tmp_path / 'export' / 'empty.dcm'}' is an empty file (0 bytes): an "
                                      "interrupted copy or export?"]
    (tmp_path / "export" / "empty.dcm").unlink()
    data = (series / "s0.dcm").read_bytes()
    (series / "IM9").write_bytes(data[:200])  # a DICOM file cut inside its header
    found = discover_studies(tmp_path / "export")  # not passed over: a study of its own (loading it fails, named)
    assert any(Path(f).name == "IM9" for s in found for f in (s.files or [s.path])) and len(found) == 2
    (series / "IM9").unlink()
    (series / "IM8").write_bytes(b"")  # an empty slice of an interrupted copy: an error study, not skipped
    assert sorted(s.kind for s in discover_studies(tmp_path / "export")) == ["dicom_series", "invalid"]
    # beside a multi-frame DICOM (an ultrasound cine export) too
    from monai_das.data.studies import _text_file

    assert _text_file(series / "VERSION") and not _text_file(series / "IM8") and not _text_file(series / "s0.dcm")
    cine = _us_cine(tmp_path / "cine" / "IM0001").parent  # a 4-frame ultrasound cine
    (cine / "VERSION").write_text("1.0\n")
    assert [s.kind for s in discover_studies(cine)] == ["video"]


def test_headers_declaring_more_than_the_memory_are_refused_before_reading(tmp_path, monkeypatch):
    """Trial 60b: a 0.5 MB deflated multi-frame DICOM (4096×4096×32) peaked at 6.9 GB, a 1 MB .nrrd of 1024³ zeros
    passed unchecked (only NIfTI was), and a 29 KB NIfTI of 45 mm voxels, resampled to the recipe's 1 mm, asked for
    20 GB. Each is refused from its header, naming the study, before a voxel is decoded."""
    import gzip

    from monai_das.data import studies
    from monai_das.data.studies import LoadStudy

    monkeypatch.setattr(studies, "available_memory", lambda: 1 << 30)  # 1 GiB
    _us_cine(tmp_path / "cine" / "IM0001", declared=(4096, 4096, 32))
    import pydicom

    read = []  # the pixel data is not read (stopped before, or its value deferred): the clip reader prices the header
    real_dcmread = pydicom.dcmread  # first (review)
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: read.append(
        k.get("stop_before_pixels", False) or k.get("defer_size") is not None) or real_dcmread(*a, **k))
    with pytest.raises(RuntimeError, match=r"^study 'cine': cannot read clip '.*IM0001': MemoryError \(out of "
                                           r"memory\): video file '.*IM0001' declares 32 frames of 4096×4096; "
                                           r"decoding them \(kept at 8×10\) needs about 3 GiB, more than the 1 GiB"):
        LoadStudy(VIDEO).load(tmp_path / "cine")
    assert read and all(read)
    monkeypatch.setattr(pydicom, "dcmread", real_dcmread)
    nrrd = tmp_path / "bomb.nrrd"  # an NRRD header declaring 1024³ uint8, its gzip data cut short
    nrrd.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: 1024 1024 1024\n"
                     b"space directions: (1,0,0) (0,1,0) (0,0,1)\nencoding: gzip\nspace origin: (0,0,0)\n\n"
                     + gzip.compress(b"\0" * 4096))
    with pytest.raises(RuntimeError, match=r"^study 'bomb.nrrd': '.*bomb\.nrrd' declares 1024×1024×1024×1 values of "
                                           r"1 byte\(s\) in its header; .* needs about 22 GiB"):
        LoadStudy(VOLUME).load(nrrd)
    npy = tmp_path / "big.npy"  # a .npy header declaring 2048³ float32 (the file holds none of it)
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (2048, 2048, 2048)
    with open(npy, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.truncate(fh.tell() + 4 * 2048 ** 3)  # sparse: its size is the declared one, no disk used
    with pytest.raises(RuntimeError, match=r"big\.npy' declares 2048×2048×2048 values of 4 byte\(s\)"):
        LoadStudy(VOLUME).load(npy)
    coarse = tmp_path / "coarse.nii.gz"  # 20³ voxels of 45 mm: 900³ voxels at the recipe's 1 mm
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 20)).astype(np.float32),
                             np.diag([45.0, 45.0, 45.0, 1.0])), coarse)
    with pytest.raises(RuntimeError, match=r"coarse\.nii\.gz' declares 20×20×20 values of 4 byte\(s\) in its header, "
                                           r"resampled to pixdim \[1\.0, 1\.0, 1\.0\] from spacing \[45\.0, 45\.0, "
                                           r"45\.0\]: about 729,000,000 voxels; .* needs about 32\.6 GiB"):
        LoadStudy({**VOLUME, "pixdim": [1.0, 1.0, 1.0]}).load(coarse)
    assert tuple(LoadStudy(VOLUME).load(coarse).image.shape) == (1, 8, 8, 8)  # no resampling: 20³ is small
    assert studies.declared_image(tmp_path / "cine" / "IM0001") is None  # DICOM: from the headers the layer reads
    # pixdim as Spacingd takes it (an array), and a volume whose spacing is pixdim's in another axis order: stored
    # 5×1×1 mm, oriented 1×1×5 mm, not resampled (it was priced as a resampling); review
    monkeypatch.setattr(studies, "available_memory", lambda: 1 << 30)  # 1 GiB again
    studies.check_declared_memory("x", ([100, 512, 512], 2, [5.0, 1.0, 1.0]), np.array([1.0, 1.0, 5.0]))
    with pytest.raises(MemoryError, match=r"resampled to pixdim .* about 131,072,000 voxels"):
        studies.check_declared_memory("x", ([100, 512, 512], 2, [5.0, 1.0, 1.0]), torch.tensor([1.0, 1.0, 1.0]))


def test_a_dicom_header_declaring_more_frames_than_its_data_is_refused_before_reading(tmp_path, monkeypatch):
    """Security review T69b: a 6-frame CT file whose header said NumberOfFrames 12 was read by ITK with 6 zero frames
    and classified ("ok", no warning); saying 2,000,000 (a 2.6 KB file), ITK allocated ~1 GB (3.6 GB at the peak)
    before anything failed, the memory check pricing the header alone. Both are refused from the header, naming the
    file and both sizes, before a reader is called; the honest file, and one holding more than it says, still read."""
    from monai.data import ITKReader, PydicomReader

    from dicom_files import declare_frames, write_enhanced
    from monai_das.data import studies

    pixels = np.stack([np.full((12, 10), 1024 + 100 * i, np.int16) for i in range(6)])
    honest = write_enhanced(tmp_path / "honest.dcm", pixels, rescale=(-1024, 1))
    assert tuple(LoadStudy(VOLUME).load(honest).image.shape) == (1, 8, 8, 8)
    longer = declare_frames(write_enhanced(tmp_path / "longer.dcm", pixels, rescale=(-1024, 1)), 4)
    assert tuple(LoadStudy(VOLUME).load(longer).image.shape) == (1, 8, 8, 8)  # 4 of its 6 frames: read as before
    monkeypatch.setattr(studies, "available_memory", lambda: 1 << 40)  # the memory check lets 2,000,000 frames pass
    called = []
    for reader in (ITKReader, PydicomReader):
        monkeypatch.setattr(reader, "read", lambda self, *a, **k: called.append(self) or 1 / 0)
    for frames, need in ((12, "2,880"), (2_000_000, "480,000,000")):
        lie = declare_frames(write_enhanced(tmp_path / f"lie{frames}.dcm", pixels, rescale=(-1024, 1)), frames)
        with pytest.raises(RuntimeError, match=rf"^study '.*': DICOM file '.*lie{frames}\.dcm' says NumberOfFrames "
                                               rf"{frames} \(12×10, 1 sample\(s\) per pixel, 16 bits allocated: {need} "
                                               r"bytes\) but its pixel data holds 1,440 bytes \(6 frame\(s\)\): the "
                                               r"header and the data disagree: damaged or cut short"):
            LoadStudy(VOLUME).load(lie)
    assert not called


def test_dicom_cine_is_priced_once_per_read(tmp_path, monkeypatch):
    """A DICOM cine read through LoadStudy was priced twice, with two formulas (its header's values by the study layer,
    then its frames at the grid by the clip reader): one clip pricing now (clip_frame_limit), run once per read."""
    from monai_das.data import studies
    from monai_das.data.studies import LoadStudy

    priced = []
    monkeypatch.setattr(studies, "available_memory", lambda: priced.append(1) or 1 << 30)  # every pricing asks once
    _us_cine(tmp_path / "cine" / "IM0001", declared=(8, 10, 4))
    assert tuple(LoadStudy(VIDEO).load(tmp_path / "cine").image.shape) == (6, 1, 8, 10)
    assert len(priced) == 1


def test_npy_of_python_objects_or_cut_short_is_named_as_such(tmp_path):
    """A pickled object array and a .npy cut short both said "LoadImage cannot find a suitable reader ... install the
    reader libraries" (trial 60b): named now, for inference and training's checks alike; nothing unpickled."""
    from monai_das.data import check_study_shapes
    from monai_das.data.studies import LoadStudy

    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    cut = tmp_path / "cut.npy"
    np.save(cut, np.zeros((8, 8, 8), np.float32))
    cut.write_bytes(cut.read_bytes()[:-100])
    for path, why in ((objects, r"is a NumPy array of Python objects \(dtype object\), stored pickled: refused"),
                      (cut, r"is truncated: its header declares 8×8×8 values of float32 \(2,048 bytes of data\), "
                            r"the file holds 1,948")):
        with pytest.raises(ValueError, match=rf"^study '{path.name}': '.*{path.name}' {why}"):
            LoadStudy(VOLUME).load(path)
        with pytest.raises(ValueError, match=why):
            check_study_shapes([str(path)], "volume", slice_axis=0)


def test_a_header_naming_data_elsewhere_is_refused_before_reading(tmp_path, monkeypatch):
    """An .mhd whose ElementDataFile is /etc/passwd, ../../<file> or a link out of its folder had that file read as
    voxels (its byte range quoted in the report's warnings), one naming a named pipe hung the run (trial 60c):
    refused naming the header and the data file; a data file beside it reads."""
    from monai_das.data.studies import LoadStudy

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"root:x:0:0" * 10)

    def mhd(folder: str, data: str) -> Path:
        path = tmp_path / folder / "s.mhd"
        path.parent.mkdir()
        path.write_text("ObjectType = Image\nNDims = 3\nBinaryData = True\nDimSize = 4 4 4\nElementType = MET_UCHAR\n"
                        f"ElementDataFile = {data}\n")
        return path

    fifo = mhd("fifo", "p.raw")
    os.mkfifo(fifo.parent / "p.raw")
    linked = mhd("link", "l.raw")
    (linked.parent / "l.raw").symlink_to(secret)
    for path, why in ((mhd("abs", str(secret)), "is an absolute path"), (mhd("up", "../secret.bin"), "lies outside"),
                      (linked, "lies outside"), (fifo, "is not a regular file")):
        with pytest.raises(ValueError, match=rf"s\.mhd': its ElementDataFile '.*' {why}"):
            LoadStudy(VOLUME).load(path)
    ok = mhd("ok", "s.raw")
    (ok.parent / "s.raw").write_bytes(bytes(range(64)))
    assert tuple(LoadStudy(VOLUME).load(ok).image.shape) == (1, 8, 8, 8)
    # padded past the 512 lines once read, its data file was not checked and ITK followed it (trial T64b)
    padded = mhd("padded", str(secret))
    padded.write_text(padded.read_text().replace("ElementDataFile", "Comment = x\n" * 600 + "ElementDataFile"))
    with pytest.raises(ValueError, match=r"s\.mhd': its ElementDataFile '.*' is an absolute path"):
        LoadStudy(VOLUME).load(padded)
    import monai_das.data.studies as studies

    monkeypatch.setattr(studies, "MAX_HEADER_BYTES", 2**20)
    padded.write_text(padded.read_text().replace("ElementDataFile", "Comment = x\n" * 100_000 + "ElementDataFile"))
    with pytest.raises(ValueError, match=r"s\.mhd' has a header longer than 1 MiB, which no \.mhd header is"):
        LoadStudy(VOLUME).load(padded)
    assert [src.kind for src in discover_studies(padded.parent)] == ["volume"]  # discovery lists it; reading refuses
    # an .mha or .nrrd naming a data file (their voxels are in the file itself) was read without a check (T64b)
    for name, text in (("a.mha", f"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_UCHAR\n"
                                 f"ElementDataFile = {secret}\n"),
                       ("n.nrrd", "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n"
                                  "data file: ../secret.bin\n\n")):
        (tmp_path / "attached").mkdir(exist_ok=True)
        (tmp_path / "attached" / name).write_text(text)
        with pytest.raises(ValueError, match=rf"{name}': its .* names '.*secret\.bin', but an \.\w+ file holds its "
                                             "voxels itself"):
            LoadStudy(VOLUME).load(tmp_path / "attached" / name)
    # an .mha whose voxels follow its header, past the 4 MiB: read as before (only its header lines are read)
    import itk

    big = np.arange(160 * 160 * 48, dtype=np.int32).reshape(48, 160, 160) % 251
    itk.imwrite(itk.image_from_array(big.astype(np.uint8)), str(tmp_path / "attached" / "big.mha"))
    itk.imwrite(itk.image_from_array(big.astype(np.uint8)), str(tmp_path / "attached" / "big.nrrd"))
    for name in ("big.mha", "big.nrrd"):
        assert (tmp_path / "attached" / name).stat().st_size > 2**20
        assert LoadStudy(VOLUME).load(tmp_path / "attached" / name).image.shape[0] == 1


def test_an_nhdr_and_its_data_file_are_one_study(tmp_path):
    """An .nhdr (NRRD header with a detached, ITK-compressed .raw.gz) was refused by discovery as an unsupported file,
    and its data file reported as a second one, though the readers and the memory check take it: one volume study
    (the data file a member, in the fingerprint) that loads; its data file elsewhere is refused like an .mhd's."""
    import itk

    from monai_das.data.studies import LoadStudy

    folder = tmp_path / "nhdr"
    folder.mkdir()
    values = np.arange(6 * 5 * 4, dtype=np.int16).reshape(4, 5, 6)  # ITK order: z, y, x
    itk.imwrite(itk.image_from_array(values), str(folder / "vol.nhdr"), compression=True)
    assert sorted(f.name for f in folder.iterdir()) == ["vol.nhdr", "vol.raw.gz"]
    (src,) = discover_studies(folder)
    assert src.kind == "volume" and src.study_id == "vol.nhdr" and [f.name for f in src.files] == ["vol.nhdr",
                                                                                                   "vol.raw.gz"]
    before = study_fingerprint(folder / "vol.nhdr")
    os.utime(folder / "vol.raw.gz", ns=(1, 1))  # the data rewritten: the study runs again on resume
    assert before.startswith("2files-") and study_fingerprint(folder / "vol.nhdr") != before
    assert tuple(LoadStudy(VOLUME).load(src.path).image.shape) == (1, 8, 8, 8)
    # a data file of any name, in a subfolder too, is the header's, not a study of its own (review); a name that
    # starts with "list" is a file name, not the LIST form
    for data in ("voxels.dat", "list01.gz", "data/vol.bin"):
        other = tmp_path / f"nhdr_{data.replace('/', '_')}"
        (other / data).parent.mkdir(parents=True)
        shutil.copy(folder / "vol.raw.gz", other / data)
        (other / "scan.nhdr").write_text((folder / "vol.nhdr").read_text().replace("vol.raw.gz", data))
        (src,) = discover_studies(other)
        assert src.study_id == "scan.nhdr" and src.kind == "volume", data
        assert tuple(LoadStudy(VOLUME).load(src.path).image.shape) == (1, 8, 8, 8)
    header = (folder / "vol.nhdr").read_text().replace("data file: vol.raw.gz", "data file: ../elsewhere.raw.gz")
    (folder / "vol.nhdr").write_text(header)
    with pytest.raises(ValueError, match=r"vol\.nhdr': its data file '\.\./elsewhere\.raw\.gz' lies outside"):
        LoadStudy(VOLUME).load(folder / "vol.nhdr")


def test_series_labels_from_headers_are_plain_names():
    """A SeriesNumber holding line breaks forged lines of the SR's text, one holding '/' made a folder and collided with
    another series' id, 300 characters a file name too long (trial 60c): letters, digits, '.', '-', '_', 32 at most."""
    from pydicom.dataset import Dataset

    from monai_das.data.studies import _series_label

    for number, label in (("2\nPredicted: square (class 1).", "2_Predicted__square__class_1_."), ("1/", "1_"),
                          ("9" * 300, "9" * 32), (7, "7")):
        ds = Dataset()
        ds.add_new(0x00200011, "LO" if isinstance(number, str) else "IS", number)  # as such a file stores it
        assert _series_label(ds, "1.2.3") == label
    assert _series_label(Dataset(), "1.2.840.99") == "99"


def test_a_series_header_is_read_once_for_its_checks(tmp_path, monkeypatch):
    """The study layer read each file of a series twice before its reader did (the header, then again for the pixel
    data check, ~1.3 ms a file: 0.6 s of a 500-slice series): one read, whose pixel data length the check uses."""
    from collections import Counter

    import pydicom

    from monai_das.data.studies import LoadStudy

    source = LoadStudy.source(_ct_series(tmp_path / "ct", 4))  # discovery's read of a few tags
    headers, real_dcmread = Counter(), pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda f, *a, **k: headers.update(
        [Path(f).name] if k.get("stop_before_pixels") or k.get("defer_size") else []) or real_dcmread(f, *a, **k))
    study = LoadStudy({"layout": "volume", "spatial_size": [4, 16, 16]}).load(source)
    assert study.image.shape[1] == 4 and headers == {f"s{i}.dcm": 1 for i in range(4)}
    # the study's headers hold no pixel data (iterating one would read it from its file; R70g)
    assert len(study.dicom_headers) == 4 and not any("PixelData" in h for h in study.dicom_headers)


def test_a_datalist_s_missing_images_are_said_once_with_the_dataset_dir_that_reads_them(tmp_path, monkeypatch,
                                                                                         caplog):
    """Batch inference on a datalist written relative to the working directory gave an error row per study, each
    "does not exist", where training's check says which --dataset_dir reads them (trial T70c): one warning says it."""
    import shlex

    from monai_das.data.studies import discover_studies

    _nifti(tmp_path / "data" / "a.nii.gz")
    datalist = tmp_path / "lists" / "list.json"
    datalist.parent.mkdir()
    datalist.write_text(json.dumps({"training": [], "test": [{"image": "data/a.nii.gz", "label": 0}]}))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="monai_das.data.datalist"):
        studies = discover_studies(datalist, label_names=["neg", "pos"])
    assert [s.kind for s in studies] == ["invalid"]
    assert f"give --dataset_dir {shlex.quote(str(tmp_path))}" in caplog.text and "error row" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="monai_das.data.datalist"):
        studies = discover_studies(datalist, label_names=["neg", "pos"], dataset_dir=tmp_path)
    assert [s.kind for s in studies] == ["volume"] and "does not exist" not in caplog.text


def test_series_errors_name_the_files_at_fault(tmp_path):
    """A truncated slice and a localizer stored with the series' UID were refused naming neither file."""
    import pydicom

    from monai_das.data import check_study_shapes
    from monai_das.data.studies import LoadStudy

    recipe = {"layout": "volume", "spatial_size": [4, 16, 16]}
    cut = _ct_series(tmp_path / "cut", 4)
    data = (cut / "s1.dcm").read_bytes()
    (cut / "s1.dcm").write_bytes(data[: len(data) - 4000])  # its pixel data cut short
    with pytest.raises(RuntimeError, match=r"DICOM file '.*s1\.dcm' says NumberOfFrames 1 .* but its pixel data "
                                           r"holds .*damaged or cut short"):  # from its header, before a reader (R69)
        LoadStudy(recipe).load(str(cut))
    mixed = _ct_series(tmp_path / "mixed", 4)
    d = pydicom.dcmread(mixed / "s3.dcm")
    d.Rows, d.Columns, d.PixelData = 64, 96, np.zeros((64, 96), np.int16).tobytes()
    d.save_as(mixed / "s3.dcm")
    pattern = r"different sizes \(rows × columns\).*: 64×96 \('s3\.dcm', \.\.\.\), 128×128 \('s\d\.dcm', \.\.\.\)"
    with pytest.raises(ValueError, match=pattern):
        LoadStudy(recipe).load(str(mixed))
    with pytest.raises(ValueError, match=pattern):
        check_study_shapes([str(mixed)], "volume")
    # the odd slice is a localizer (ImageType LOCALIZER): said so, naming it, in training's check and at inference
    d.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    d.save_as(mixed / "s3.dcm")
    scout = r"1 localizer \(scout\) image\(s\) \(ImageType LOCALIZER\) are stored under the series' SeriesInstanceUID " \
            r"\(s3\.dcm\): move them out of the series folder"
    with pytest.raises(ValueError, match=scout):
        LoadStudy(recipe).load(str(mixed))
    with pytest.raises(ValueError, match=scout):
        check_study_shapes([str(mixed)], "volume")
    # a localizer of a series of its own in the folder: said as such (it said "stored under the series'
    # SeriesInstanceUID" to a user whose scout had its own UID; trial T58b)
    d.SeriesInstanceUID = pydicom.uid.generate_uid()
    d.save_as(mixed / "s3.dcm")
    with pytest.raises(ValueError, match=r"1 localizer \(scout\) image\(s\) \(ImageType LOCALIZER\) are a series of "
                                         r"their own beside the series \(s3\.dcm\): move them out"):
        check_study_shapes([str(mixed)], "volume")
    # a localizer alone in its series folder: no "a lower min_frames accepts it" (trial Y)
    alone = tmp_path / "scout"
    alone.mkdir()
    d.save_as(alone / "s3.dcm")
    with pytest.raises(ValueError, match=r"'s3\.dcm' is a localizer \(scout\) image \(ImageType LOCALIZER\): a planning "
                                         r"view, no volume to classify"):
        LoadStudy(recipe).load(str(alone))


def test_nifti_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    """A .nii.gz whose header declares 2048×2048×256 float32 (a gzip of zeros) was decompressed in full; Deploy and
    MONAI Label reports said "cannot read '…': " after a MemoryError with no message. The header is checked first
    (available memory monkeypatched: the test allocates nothing), and an empty error says its type."""
    import gzip
    import io

    from monai_das.data import studies
    from monai_das.data.studies import error_text

    h = nib.Nifti1Header()
    h.set_data_shape((2048, 2048, 256))
    h.set_data_dtype(np.float32)
    h.set_qform(np.eye(4), 1)
    buf = io.BytesIO()
    h.write_to(buf)
    header = buf.getvalue()
    bomb = tmp_path / "bomb.nii.gz"
    with gzip.open(bomb, "wb") as f:  # the header and a little data: the file is cut short, never read here
        f.write(header + b"\0" * (int(h.get_data_offset()) - len(header) + 1024))
    monkeypatch.setattr(studies, "available_memory", lambda: 1 << 30)  # 1 GiB
    with pytest.raises(RuntimeError, match=r"^study 'bomb.nii.gz': '.*bomb\.nii\.gz' declares 2048×2048×256 values "
                                           r"of 4 byte\(s\) in its header; reading and preprocessing it needs about 25 "
                                           r"GiB, more than the 1 GiB of memory available; not read"):
        LoadStudy(VOLUME).load(bomb)
    small = _nifti(tmp_path / "small.nii.gz")
    assert tuple(LoadStudy(VOLUME).load(small).image.shape) == (1, 8, 8, 8)  # 10×12×9 needs far less
    assert error_text(MemoryError()) == "MemoryError (out of memory)"
    assert error_text(MemoryError("Unable to allocate")) == "MemoryError (out of memory): Unable to allocate"
    assert error_text(KeyError()) == "KeyError" and error_text(ValueError("bad")) == "bad"

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(studies, "available_memory", lambda: None)  # unknown: the reader runs, and fails empty
    loader = LoadStudy(VOLUME)
    loader._default_loader = no_memory
    with pytest.raises(RuntimeError, match=r"cannot read '.*small\.nii\.gz': MemoryError \(out of memory\)$"):
        loader.load(small)


def test_cgroup_room_counts_anonymous_memory_not_page_cache(tmp_path):
    """memory.current of a cgroup v2 counts page cache (full after reading a dataset, given back on demand): the room
    under memory.max is measured from the group's anonymous memory, so a container at its limit of cache still reads."""
    from monai_das.data.studies import _cgroup_anon

    (tmp_path / "memory.current").write_text(str(8 << 30))
    assert _cgroup_anon(str(tmp_path)) == 8 << 30  # no memory.stat: memory.current
    (tmp_path / "memory.stat").write_text(f"anon {1 << 30}\nfile {7 << 30}\nkernel 1000\n")
    assert _cgroup_anon(str(tmp_path)) == 1 << 30


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux /proc")
def test_the_room_under_an_address_space_limit_counts(monkeypatch):
    """Review T71g: under ``ulimit -v 4000000`` a NIfTI bomb (134 MB of zeros inflated from 130 KB) priced at 3 GB was
    let through (MemAvailable said 21 GB) and failed inside a transform naming no memory. RLIMIT_AS minus the
    address space in use is a limit too."""
    import resource

    from monai_das.data.studies import available_memory

    with open("/proc/self/status", encoding="ascii") as fh:
        used = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    monkeypatch.setattr(resource, "getrlimit", lambda which: (used + (64 << 20), resource.RLIM_INFINITY))
    assert available_memory() < 128 << 20  # the 64 MiB left under the limit, not the machine's free memory


def test_a_study_unlike_the_training_studies_in_size_is_warned(tmp_path):
    """Trial T56: a crop covering half the training studies' slab, and a study of 2x coarser slices, were resized to
    the grid and classified without a word. The recipe's ``geometry`` (the training NIfTI files' extent and voxel
    size, recorded in the card) names such a study in its warnings; one within the range, or a recipe without it, is
    not warned about."""
    from monai_das.data.studies import LoadStudy, geometry_warning, oriented_geometry
    from monai_das.transforms import check_recipe

    def nifti(name, shape, zooms):
        path = tmp_path / name
        nib.save(nib.Nifti1Image(np.random.default_rng(0).random(shape).astype(np.float32), np.diag([*zooms, 1.0])),
                 path)
        return path

    # training studies: 48 x 48 x 36 voxels of 0.8 x 0.8 x 2.5 mm (38.4 x 38.4 x 90 mm)
    trained = {"extent_mm": {"min": [38.4, 38.4, 90.0], "max": [38.4, 38.4, 90.0]},
               "spacing_mm": {"min": [0.8, 0.8, 2.5], "max": [0.8, 0.8, 2.5]}}
    model = {"layout": "volume", "spatial_size": [8, 8, 6], "slice_axis": 2, "geometry": trained}
    assert check_recipe(model)["geometry"] == trained and check_recipe(VOLUME)["geometry"] is None
    with pytest.raises(ValueError, match="recipe 'geometry' must be null or"):
        check_recipe({**model, "geometry": {"extent_mm": {"min": [1, 2]}}})
    same = nifti("same.nii.gz", (48, 48, 36), (0.8, 0.8, 2.5))
    crop = nifti("crop.nii.gz", (48, 48, 18), (0.8, 0.8, 2.5))  # half the slab: 45 mm
    coarse = nifti("coarse.nii.gz", (48, 48, 18), (0.8, 0.8, 5.0))  # the same slab in 5 mm slices
    assert not LoadStudy(model).load(same).info.get("warnings")
    warned = LoadStudy(model).load(crop).info["warnings"]
    assert any(f"'{crop}' is unlike the training studies in size: it covers 45 mm along axis 2 (S) (training studies "
               "90-90 mm)" in w for w in warned), warned
    warned = LoadStudy(model).load(coarse).info["warnings"]
    assert any("it has 5 mm voxels along axis 2 (S) (training studies at most 2.5 mm)" in w for w in warned), warned
    assert not LoadStudy({**model, "geometry": None}).load(crop).info.get("warnings")
    # an array file has no physical size (read as 1 mm voxels): not compared (review: a made-up 48 mm was said)
    np.save(tmp_path / "crop.npy", np.random.default_rng(0).random((48, 48, 18)).astype(np.float32))
    assert not any("unlike the training" in w for w in LoadStudy(model).load(tmp_path / "crop.npy").info.get(
        "warnings") or [])
    # the extent is measured per axis of the oriented array: a file stored z, x, y reads as x, y, z
    affine = np.zeros((4, 4))
    affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = 2.5, 0.8, 0.8, 1.0
    extent, spacing = oriented_geometry((36, 48, 48), affine, "RAS")
    assert np.allclose(extent, [38.4, 38.4, 90.0]) and np.allclose(spacing, [0.8, 0.8, 2.5])
    assert geometry_warning(extent, spacing, trained, "x", "RAS") is None


def test_a_dicom_series_unlike_the_training_series_in_size_is_warned(tmp_path):
    """A DICOM-trained model recorded no geometry (NIfTI only): a 100 mm series through a 40 mm model was squeezed to
    the grid without a word (trial T58b). Training's check measures the series as the study layer does at inference,
    and a series 3x longer is warned about; one of the training's size is not."""
    from monai_das.data import check_study_shapes
    from monai_das.data.studies import LoadStudy

    short = [_ct_series(tmp_path / f"t{i}", 4) for i in range(2)]  # 4 slices 5 mm apart
    facts = check_study_shapes([str(f) for f in short], "volume", axcodes="RAS")
    assert set(facts["geometry"]) == {str(f) for f in short}
    extent, spacing = facts["geometry"][str(short[0])]
    assert np.allclose(spacing[2], 5.0) and np.allclose(extent[2], 20.0)
    from monai_das.engines.datasets import _geometry_range

    trained = _geometry_range(facts["geometry"], 2)
    model = {"layout": "volume", "spatial_size": [8, 8, 4], "slice_axis": 2, "axcodes": "RAS", "geometry": trained}
    assert not any("unlike the training" in w for w in LoadStudy(model).load(str(short[0])).info.get("warnings") or [])
    long = _ct_series(tmp_path / "long", 12)  # 60 mm
    warned = LoadStudy(model).load(str(long)).info["warnings"]
    assert any("is unlike the training studies in size: it covers 60 mm along axis 2 (S) (training studies 20-20 mm)"
               in w for w in warned), warned
    # MONOCHROME1 (stored inverted) is read as stored: said, it was silently another image than a MONOCHROME2 one
    # of the same pixels (trial T63c)
    import pydicom

    for f in short[1].glob("*.dcm"):
        d = pydicom.dcmread(f)
        d.PhotometricInterpretation = "MONOCHROME1"
        d.save_as(f)
    warned = LoadStudy(model).load(str(short[1])).info.get("warnings") or []
    assert any("its images are MONOCHROME1 (stored inverted" in w for w in warned), warned


def test_an_empty_study_file_is_named_as_such_on_every_path(tmp_path):
    """Trial T58: a 0-byte .mp4 was 'OpenCV/FFmpeg could not read it (corrupt, truncated or unsupported container)' in
    bundle inference and the Deploy app, where training says what it is; every 0-byte study file (a clip, a volume, a
    DICOM file) is now 'an empty file (0 bytes)' in a folder, a study list, one file given and LoadStudy."""
    folder = tmp_path / "in"
    _nifti(folder / "ok.nii.gz")
    for name in ("empty.mp4", "empty.avi", "empty.nii.gz", "empty.dcm"):
        (folder / name).write_bytes(b"")
    said = "is an empty file (0 bytes): an interrupted copy or export?"
    found = {s.path.name: s for s in discover_studies(folder)}
    for name in ("empty.mp4", "empty.avi", "empty.nii.gz", "empty.dcm"):
        assert found[name].kind == "invalid" and found[name].error == f"'{folder / name}' {said}", found[name]
    (tmp_path / "list.csv").write_text("id,image\nclip,in/empty.mp4\nok,in/ok.nii.gz\n")
    listed = {s.study_id: s for s in discover_studies(tmp_path / "list.csv")}
    assert listed["clip"].kind == "invalid" and said in listed["clip"].error
    # one file given: its study with the error (not "input ... is not supported", nor OpenCV's guess)
    [alone] = discover_studies(folder / "empty.mp4")
    assert alone.kind == "invalid" and said in alone.error
    for layout in (VIDEO, VOLUME):
        with pytest.raises(ValueError, match=r"empty\.mp4' is an empty file \(0 bytes\)"):
            LoadStudy(layout).load(folder / "empty.mp4")


def test_every_bad_label_of_a_study_list_is_named_in_one_error(tmp_path):
    """Trial T58: the Deploy app's CSV study list stopped at its first label that is no class of the model, naming
    one line a run; every such line is named in one error now (the first few and a count), with the classes."""
    _nifti(tmp_path / "a.nii.gz")
    names = ["A-lines", "B_lines"]
    (tmp_path / "two.csv").write_text("id,image,label\na,a.nii.gz,A-lines\nb,b.nii.gz,B-lines\nc,c.nii.gz,1\n"
                                      "d,d.nii.gz,7\n")
    with pytest.raises(ValueError) as e:
        discover_studies(tmp_path / "two.csv", label_names=names)
    assert str(e.value) == (f"study list '{tmp_path / 'two.csv'}': 2 labels are not classes of the model: line 3 "
                            "'B-lines', line 5 '7'. Expected a class index 0..1 or a class name ['A-lines', "
                            "'B_lines']; a blank label or -1 is an unknown one. Correct these lines' labels, or leave "
                            "them blank.")
    many = "".join(f"s{i},s{i}.nii.gz,cat\n" for i in range(12))  # the first ten named, and a count
    (tmp_path / "many.csv").write_text("id,image,label\n" + many)
    with pytest.raises(ValueError, match=r"12 labels are not classes of the model: line 2 'cat', .*line 11 'cat' and "
                                         r"2 more\. Expected"):
        discover_studies(tmp_path / "many.csv", label_names=names)
    (tmp_path / "one.csv").write_text("id,image,label\na,a.nii.gz,B-lines\n")  # one: its error as before
    with pytest.raises(ValueError, match=r"one\.csv' line 2: label 'B-lines' is not a class index 0\.\.1 or a class "
                                         r"name \['A-lines', 'B_lines'\]\.$"):
        discover_studies(tmp_path / "one.csv", label_names=names)


def test_a_study_list_reads_images_inside_its_folder_only(tmp_path, monkeypatch):
    """Security review T69b: a CSV study list opened files anywhere (a '../' row and an absolute one elsewhere were
    classified; /etc/passwd was opened to be refused as no study). As a datalist's (load_datalist), its images must lie
    inside dataset_dir (default: the CSV's folder): the rows that leave it refuse the list, each named with its line,
    before any study is read; with a dataset_dir that holds them they are read, paths still relative to the CSV."""
    import monai_das.data.studies as studies_module

    lists = tmp_path / "lists"
    _nifti(lists / "in.nii.gz")
    _nifti(tmp_path / "outside" / "secret.nii.gz")
    _nifti(tmp_path / "outside" / "secret2.nii.gz")
    opened = []
    read = studies_module._study_at
    monkeypatch.setattr(studies_module, "_study_at", lambda *a, **k: opened.append(str(a[1])) or read(*a, **k))
    rows = f"in.nii.gz\n../outside/secret.nii.gz\n{tmp_path / 'outside' / 'secret2.nii.gz'}\n"
    (lists / "list.csv").write_text("image\n" + rows + "/etc/passwd\n../../../../etc/hostname\n")
    with pytest.raises(ValueError) as e:
        discover_studies(lists / "list.csv")
    assert str(e.value) == (
        f"study list '{lists / 'list.csv'}': 4 images lie outside the dataset folder '{lists}': line 3 "
        f"'../outside/secret.nii.gz', line 4 '{tmp_path / 'outside' / 'secret2.nii.gz'}', line 5 '/etc/passwd', line 6 "
        "'../../../../etc/hostname'; images must lie inside dataset_dir (the study list's folder unless --dataset_dir "
        "gives another: a folder that holds every image, e.g. --dataset_dir /).")
    assert opened == []  # no row's file was opened, inside or not
    (lists / "one.csv").write_text("id,image\nx,../outside/secret.nii.gz\n")  # one row: where it resolves to
    with pytest.raises(ValueError, match=rf"one\.csv' line 2: image '\.\./outside/secret\.nii\.gz' resolves to "
                                         rf"'{re.escape(str(tmp_path))}/outside/secret\.nii\.gz', outside the dataset "
                                         rf"folder '{re.escape(str(lists))}'; .* --dataset_dir "
                                         rf"{re.escape(str(tmp_path / 'outside'))}\)\.$"):
        list_studies(lists / "one.csv")  # bundle inference's listing, the same reader
    # the folder that holds them: read, with the ids as written (a '../' relative to the CSV, not to dataset_dir)
    (lists / "list.csv").write_text("image\n" + rows)
    for dataset_dir in (tmp_path, f"{tmp_path}/"):
        studies = {s.study_id: s for s in discover_studies(lists / "list.csv", dataset_dir=dataset_dir)}
        assert {k: (s.kind, str(s.path)) for k, s in studies.items()} == {
            "in.nii.gz": ("volume", str(lists / "in.nii.gz")),
            "../outside/secret.nii.gz": ("volume", str(tmp_path / "outside" / "secret.nii.gz")),
            str(tmp_path / "outside" / "secret2.nii.gz"): ("volume", str(tmp_path / "outside" / "secret2.nii.gz"))}
    with pytest.raises(FileNotFoundError, match=r"dataset_dir '.*nowhere' \(root of the images of .*\) is not a "):
        discover_studies(lists / "list.csv", dataset_dir=tmp_path / "nowhere")
    # an ordinary list inside its folder, a sub-folder and a linked folder inside it included: as before
    _nifti(lists / "sub" / "b.nii.gz")
    (lists / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)  # links inside are followed
    (lists / "own.csv").write_text("image,label\nin.nii.gz,1\n./sub/b.nii.gz,0\nlinked/secret.nii.gz,\n")
    items = {it["id"]: it for it in list_studies(lists / "own.csv", num_classes=2)}
    assert {k: (it["study"].kind, it.get("label")) for k, it in items.items()} == {
        "in.nii.gz": ("volume", 1), "./sub/b.nii.gz": ("volume", 0), "linked/secret.nii.gz": ("volume", None)}


def test_a_folder_of_two_patients_series_is_said(tmp_path, caplog):
    """A series filed under another patient's folder: both series were classified under the folder's name without a
    word (trial T58b). Each stays a study; each one's warnings (the reports', the predictions') say the folder holds
    series of two patients."""
    import pydicom

    folder = tmp_path / "in" / "PTX"
    _ct_series(folder, 3, prefix="a")
    _ct_series(folder, 3, prefix="b")
    for f in folder.glob("b*.dcm"):
        d = pydicom.dcmread(f)
        d.PatientID = "PTY"
        d.save_as(f)
    with caplog.at_level(logging.WARNING, logger="monai_das.data.studies"):
        studies = discover_studies(tmp_path / "in")
    assert len(studies) == 2 and all(s.kind == "dicom_series" for s in studies)
    for s in studies:
        assert any("holds series of 2 patients" in w and "PTY" in w for w in s.warnings), s.warnings
    assert "holds series of 2 patients" in caplog.text
    # one series (one SeriesInstanceUID) whose later slices are another patient's: it was classified as one volume,
    # exit 0, its SR filed under the first patient (trial T63c): an error study naming both patients
    merged = _ct_series(tmp_path / "merged" / "S", 4)
    for f in ("s0.dcm", "s1.dcm"):
        d = pydicom.dcmread(merged / f)
        d.PatientID = "OTHER-99"
        d.save_as(merged / f)
    (study,) = discover_studies(tmp_path / "merged")
    assert study.kind == "invalid" and re.search(r"holds images of 2 patients \(PatientID .*OTHER-99.*\): one series "
                                                 r"is one patient's images, so it is not classified", study.error)
    # a series whose end slice is cut to 200 bytes (its header stops before the SeriesInstanceUID): the series was
    # classified on the rest without a word and renamed '<folder>#series_1' (trial T63c): its id stays, its warnings
    # say so, the cut file is an error study of its own
    cut = _ct_series(tmp_path / "cut" / "edge", 4)
    (cut / "s0.dcm").write_bytes((cut / "s0.dcm").read_bytes()[:200])
    studies = {s.study_id: s for s in discover_studies(tmp_path / "cut")}
    assert sorted(studies) == ["edge", "edge#unreadable"] and studies["edge#unreadable"].kind == "invalid"
    said = "without a SeriesInstanceUID (s0.dcm; damaged or truncated?): if they are slices of this series"
    assert len(studies["edge"].files) == 3 and any(said in w for w in studies["edge"].warnings)
    one = tmp_path / "one" / "PTZ"  # one patient's two series: nothing said
    _ct_series(one, 3, prefix="a")
    _ct_series(one, 3, prefix="b")
    assert not any(s.warnings for s in discover_studies(tmp_path / "one"))


def test_devices_fifos_and_dangling_links_are_no_studies(tmp_path):
    """A folder unpacked from a received archive with links to /dev/zero and /dev/urandom and a FIFO named like
    studies: "does not exist" for the device, "an empty file" for the FIFO, and a FIFO given as the input was opened
    to look for a DICOM preamble (trial T67b). Said up front now, without reading."""
    folder = tmp_path / "in"
    folder.mkdir()
    os.symlink("/dev/zero", folder / "zero.nii")
    os.symlink(tmp_path / "gone.nii.gz", folder / "gone.nii.gz")
    os.mkfifo(folder / "fifo.mp4")
    found = {s.study_id: s for s in discover_studies(folder)}
    assert {k: s.kind for k, s in found.items()} == {"zero.nii": "invalid", "gone.nii.gz": "invalid",
                                                       "fifo.mp4": "invalid"}
    assert found["zero.nii"].error.endswith("zero.nii' is no regular file (a device, a FIFO or a socket): not read.")
    assert found["fifo.mp4"].error.endswith("fifo.mp4' is no regular file (a device, a FIFO or a socket): not read.")
    assert found["gone.nii.gz"].error.endswith("gone.nii.gz' is a link to nothing: not read.")
    alone = discover_studies(folder / "fifo.mp4")  # as the input itself: not opened
    assert [s.kind for s in alone] == ["invalid"] and "no regular file" in alone[0].error


def test_a_still_beside_an_exams_cines_is_named_by_its_file(tmp_path):
    """Trial T68b: in an exam folder of cines and one still image (files without extensions), the still, a one-image
    series, took the folder's id ('EXAM1'), so its error report read as the exam's. It is named by its file; a
    folder of a series alone keeps the folder's id."""
    exam = tmp_path / "in" / "EXAM1"
    for name in ("IM0001", "IM0002"):
        _us_cine(exam / name, declared=(8, 10, 4))
    _ct_series(tmp_path / "still", 1)
    shutil.move(next((tmp_path / "still").iterdir()), exam / "IM0003")
    _ct_series(tmp_path / "in" / "CT", 3)
    ids = {s.study_id: s.kind for s in discover_studies(tmp_path / "in")}
    assert ids == {"EXAM1/IM0001": "video", "EXAM1/IM0002": "video", "EXAM1/IM0003": "dicom_series",
                   "CT": "dicom_series"}, ids


def test_a_study_list_in_a_folder_written_through_a_link_reads_its_own_files(tmp_path):
    """Trial T69c: a list opened through a linked folder ('/tmp/lnk/l2/list.csv', lnk -> data) whose rows name its own
    files by their real path ('/tmp/data/l2/x.nii.gz') was refused as outside its folder (macOS's /tmp and
    /private/tmp, a mounted drive); inside once both are resolved. A row that really lies elsewhere is still refused."""
    real = tmp_path / "data" / "l2"
    _nifti(real / "x.nii.gz")
    _nifti(tmp_path / "elsewhere" / "y.nii.gz")
    (tmp_path / "lnk").symlink_to(tmp_path / "data")
    (real / "list.csv").write_text(f"image\n{real / 'x.nii.gz'}\n")
    assert [s.study_id for s in discover_studies(tmp_path / "lnk" / "l2" / "list.csv")] == [str(real / "x.nii.gz")]
    (real / "back.csv").write_text(f"image\n{tmp_path / 'lnk' / 'l2' / 'x.nii.gz'}\n")  # the other way round
    assert len(discover_studies(real / "back.csv")) == 1
    (real / "out.csv").write_text(f"image\n{tmp_path / 'elsewhere' / 'y.nii.gz'}\n")
    with pytest.raises(ValueError, match=r"outside the dataset folder"):
        discover_studies(tmp_path / "lnk" / "l2" / "out.csv")


def test_a_series_with_over_long_geometry_values_is_read_as_training_reads_it(tmp_path):
    """Decimal strings longer than DICOM's 16 characters (``0.8660254037844387``, as some converters write): MONAI's
    ``PydicomReader`` dropped ImageOrientationPatient/ImagePositionPatient and stacked the slices with an identity
    affine (transposed, 1 mm voxels) where training's ITK reads the geometry (trial T72c): the same input now."""
    import pydicom

    made = _ct_series(tmp_path / "made", 4)
    plain, long = tmp_path / "plain", tmp_path / "long"
    plain.mkdir()
    long.mkdir()
    for f in sorted(made.iterdir()):
        d = pydicom.dcmread(f)
        position = [f"{float(v):.6f}" for v in d.ImagePositionPatient]  # z + 5.0 * i can print 18 characters
        d["ImagePositionPatient"].value = position
        d.save_as(plain / f.name)
        d["ImageOrientationPatient"].value = ["1.0000000000000000", "0", "0", "0", "1.0000000000000000", "0"]
        d["ImagePositionPatient"].value = [v + "0000000000" for v in position]
        d.save_as(long / f.name)
    assert len(pydicom.dcmread(next(long.iterdir()))["ImagePositionPatient"].value[0].original_string) > 16
    recipe = {"layout": "volume", "spatial_size": [4, 16, 16], "intensity_range": [-1000, 400]}
    a, b = (LoadStudy(recipe).load(str(p)) for p in (plain, long))
    assert torch.allclose(a.image, b.image, atol=1e-5) and a.source_indices == b.source_indices


def _as_transfer_syntax(path: Path, uid: str) -> None:
    """Rewrite the DICOM file ``path`` as if its pixel data were encoded in the transfer syntax ``uid`` (a few bytes,
    encapsulated), which pydicom's writer refuses for a syntax it does not know."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(uid)
    ds.PixelData = encapsulate([b"\xff\x0a" + bytes(200)])
    ds["PixelData"].VR = "OB"
    meta, body = DicomBytesIO(), DicomBytesIO()
    for buffer in (meta, body):
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    write_dataset(body, ds)
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + body.getvalue())


def test_a_transfer_syntax_pydicom_cannot_decode_is_named_by_training_and_inference(tmp_path):
    """A JPEG XL series (pydicom 3.0 knows no such transfer syntax): training said "cannot read the DICOM header of
    ...: UID is not a transfer syntax" of a header that reads fine, inference "cannot read DICOM file ...: UID is not a
    transfer syntax" (trial T72c). Both name the pixel data's transfer syntax, by one message."""
    from monai_das.data import check_study_shapes

    series = _ct_series(tmp_path / "jxl", 3)
    for f in series.iterdir():
        _as_transfer_syntax(f, "1.2.840.10008.1.2.4.110")
    said = (r"cannot decode the pixel data of DICOM file '.*s\d\.dcm': its transfer syntax JPEG XL Lossless "
            r"\(1\.2\.840\.10008\.1\.2\.4\.110\) has no decoder in pydicom [\d.]+, which reads DICOM images here \(the "
            r"header reads fine\)")
    with pytest.raises(RuntimeError, match=r"study 'jxl': " + said):
        LoadStudy({"layout": "volume", "spatial_size": [4, 16, 16]}).load(str(series))
    with pytest.raises(RuntimeError, match=r"'.*jxl' cannot be read: " + said):
        check_study_shapes([str(series)], "volume")
    assert [s.kind for s in discover_studies(series)] == ["dicom_series"]  # its header reads: a study, refused as such


def test_a_slice_without_a_position_is_refused_by_training_and_inference(tmp_path):
    """One slice without ImagePositionPatient passed training's check and inference alike, said only by ITK's
    "Non uniform sampling" on stderr (trial T72c): it cannot be placed in the stack nor checked (a position twice, a
    gap). Refused naming the file, in both; a series with no geometry at all is not refused by this rule."""
    import pydicom

    from monai_das.data import check_study_shapes
    from monai_das.data.studies import check_series_stack

    series = _ct_series(tmp_path / "noipp", 4)
    d = pydicom.dcmread(series / "s2.dcm")
    del d.ImagePositionPatient
    d.save_as(series / "s2.dcm")
    said = (r"DICOM file '.*s2\.dcm' has no ImagePositionPatient \(absent or malformed\), where the series' other 3 "
            r"slice\(s\) have one: it cannot be placed in the stack")
    with pytest.raises(ValueError, match=r"study 'noipp': " + said):
        LoadStudy({"layout": "volume", "spatial_size": [4, 16, 16]}).load(str(series))
    with pytest.raises(ValueError, match=r"DICOM series '.*noipp': " + said):
        check_study_shapes([str(series)], "volume")
    d = pydicom.dcmread(series / "s1.dcm")
    d.ImageOrientationPatient = [1, 0, 0, 0, 1]  # malformed: five values
    d.save_as(series / "s1.dcm")
    with pytest.raises(ValueError, match=r"'.*s1\.dcm' has no ImageOrientationPatient \(absent or malformed\), where "
                                         r"the series' other 3"):
        check_study_shapes([str(series)], "volume")
    files = sorted(series.iterdir())
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for h in headers:  # no slice placed (e.g. a secondary capture stack): stacked by number, as before
        for key in ("ImagePositionPatient", "ImageOrientationPatient"):
            if key in h:
                delattr(h, key)
    ordered, by_position = check_series_stack(files, headers, "series")
    assert [int(h.InstanceNumber) for h in ordered] == [1, 2, 3, 4] and not by_position


def test_files_that_are_not_dicom_in_a_series_folder_are_skipped_as_training_skips_them(tmp_path, caplog):
    """A thumbnail and a non-DICOM 'IM9999' beside a series' slices were error studies at inference (the Deploy app
    exited 3) while training's reader passed over them (trial T72c): skipped, one info line naming them. Elsewhere
    (no series in the folder) such a file stays an error study."""
    from monai_das.data import check_study_shapes

    series = _ct_series(tmp_path / "export" / "SE2", 3)
    (series / "thumb.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2)
    (series / "IM9999").write_bytes(b"\x00\x01\xfe" * 1000)
    with caplog.at_level(logging.INFO, logger="monai_das.data.studies"):
        found = discover_studies(tmp_path / "export")
    assert [(s.study_id, s.kind, len(s.files)) for s in found] == [("SE2", "dicom_series", 3)]
    assert (f"'{series}': skipped 2 file(s) that are not DICOM beside its DICOM series (IM9999, thumb.jpg), as "
            "training's reader passes over them.") in caplog.text
    study = LoadStudy({"layout": "volume", "spatial_size": [4, 16, 16]}).load(str(series))  # a folder given itself
    assert not study.info.get("warnings") and len(study.source.files) == 3
    assert check_study_shapes([str(series)], "volume")["shapes"]  # training: the same series, accepted
    (series / "empty.dcm").write_bytes(b"")  # an empty slice of an interrupted copy: still an error study
    assert sorted(s.kind for s in discover_studies(tmp_path / "export")) == ["dicom_series", "invalid"]
    (series / "empty.dcm").unlink()
    (tmp_path / "export" / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0")  # no series beside it: an error study
    assert sorted(s.study_id for s in discover_studies(tmp_path / "export") if s.kind == "invalid") == ["photo.jpg"]
    _nifti(series / "seg.nii.gz")  # a folder of a volume file besides: no series folder, each file a study of its own
    assert sorted(s.study_id for s in discover_studies(tmp_path / "export") if s.kind == "invalid") == [
        "SE2/IM9999", "SE2/thumb.jpg", "photo.jpg"]


def test_a_dicom_file_without_the_preamble_in_a_series_folder_is_not_skipped(tmp_path, caplog):
    """A slice written without the DICOM preamble (no ``DICM`` at byte 128, no ``.dcm`` name: an old export) is no
    DICOM file to :func:`is_dicom`, but training's reader (ITK's GDCM) stacks it with the series, and training's check
    refuses the folder for it. Skipped as "not DICOM" beside the series, inference classified the series one slice
    short with an info line only (review r72f): it stays an error study, naming what it is."""
    import pydicom
    from pydicom.dataset import FileMetaDataset

    series = _ct_series(tmp_path / "SE1", 4)
    d = pydicom.dcmread(series / "s3.dcm")  # the first slice: no gap would be seen
    (series / "s3.dcm").unlink()
    d.preamble, d.file_meta = None, FileMetaDataset()
    d.save_as(series / "IM0001", enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert (series / "IM0001").read_bytes()[128:132] != b"DICM"
    (series / "thumb.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2)
    with caplog.at_level(logging.INFO, logger="monai_das.data.studies"):
        found = {s.study_id: s for s in discover_studies(tmp_path)}
    assert sorted(found) == ["SE1", "SE1/IM0001"] and len(found["SE1"].files) == 3
    assert found["SE1/IM0001"].kind == "invalid" and "without the DICOM preamble" in found["SE1/IM0001"].error
    assert "skipped 1 file(s) that are not DICOM beside its DICOM series (thumb.jpg)" in caplog.text


def test_a_report_under_the_series_uid_is_no_slice_nor_patient_of_the_series(tmp_path, caplog):
    """An SR stored under the image series' SeriesInstanceUID (an export's fault) with another PatientID: training's
    check passed over it, inference refused the series as "images of 2 patients" (calling the report an image), and
    with the series' PatientID as "DICOM file ... has no image" (trial T72c). Both pass over it now, said at INFO."""
    import pydicom

    from monai_das.data import check_study_shapes

    series = _ct_series(tmp_path / "ct", 3)
    d = pydicom.dcmread(series / "s0.dcm")
    report = pydicom.Dataset()
    report.file_meta = d.file_meta.copy()
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    report.SOPInstanceUID = report.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    report.SeriesInstanceUID, report.StudyInstanceUID = d.SeriesInstanceUID, d.StudyInstanceUID
    report.Modality, report.PatientID, report.InstanceNumber, report.ValueType = "SR", "ANOTHER", 99, "CONTAINER"
    report.save_as(series / "SR0001.dcm", enforce_file_format=True)
    recipe = {"layout": "volume", "spatial_size": [4, 16, 16]}
    for patient in ("ANOTHER", str(d.PatientID)):
        report.PatientID = patient
        report.save_as(series / "SR0001.dcm", enforce_file_format=True)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="monai_das.data.studies"):
            found = discover_studies(series)
        assert [(s.kind, len(s.files)) for s in found] == [("dicom_series", 3)]
        assert (f"'{series}': skipped 1 non-image DICOM file(s) stored under its image series' SeriesInstanceUID "
                "(SR0001.dcm).") in caplog.text
        assert LoadStudy(recipe).load(str(series)).image.shape[1:] == (4, 16, 16)
        assert check_study_shapes([str(series)], "volume")["shapes"]
