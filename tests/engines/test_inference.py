"""Study listing, sharding, resume and unreadable studies for batch inference."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_das.engines import (
    StudyDataset,
    list_studies,
    merge_predictions,
    predictions_path,
    read_done_ids,
    select_studies,
    study_transform,
)


def write_dicom_series(folder, n=4):
    """A small CT series (pydicom's CT_small.dcm repeated at increasing slice positions)."""
    import pydicom
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True)
    src = get_testdata_file("CT_small.dcm")
    for i in range(n):
        d = pydicom.dcmread(src)
        d.InstanceNumber = i + 1
        x, y, z = (float(v) for v in d.ImagePositionPatient)
        d.ImagePositionPatient = [x, y, z + 5.0 * i]
        d.SOPInstanceUID = pydicom.uid.generate_uid()
        d.save_as(folder / f"slice{i}.dcm")
    return folder


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    rng = np.random.default_rng(0)
    for name in ("a.nii.gz", "sub/b.nii"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(rng.random((20, 24, 18)).astype(np.float32), np.eye(4)), root / name)
    (root / "broken.nii.gz").write_bytes(b"not a nifti file")
    write_dicom_series(root / "series1")
    (root / "notes.txt").write_text("ignored")
    return root


def test_folder_listing(study_folder):
    items = list_studies(study_folder, layout="volume")
    assert [it["id"] for it in items] == ["a.nii.gz", "broken.nii.gz", "series1", "sub/b.nii"]
    assert items[2]["image"] == str(study_folder / "series1")


def test_dataset_reads_and_reports_errors(study_folder):
    items = list_studies(study_folder, layout="volume")
    ds = StudyDataset(items, image_shape=(1, 28, 28, 28), transform=study_transform("volume", 28))
    out = {d["id"]: d for d in (ds[i] for i in range(len(ds)))}
    for sid in ("a.nii.gz", "series1", "sub/b.nii"):
        assert out[sid]["error"] == "" and out[sid]["image"].shape == (1, 28, 28, 28)
        assert 0.0 <= float(out[sid]["image"].min()) and float(out[sid]["image"].max()) <= 1.0
    bad = out["broken.nii.gz"]
    assert "broken.nii.gz" in bad["error"]
    assert torch.count_nonzero(bad["image"]) == 0 and int(bad["label"]) == -1
    # wrong shape is an error for that study only
    wrong = StudyDataset(items[:1], image_shape=(1, 16, 16, 16), transform=study_transform("volume", 28))[0]
    assert "expected (1, 16, 16, 16)" in wrong["error"]


def test_csv_listing(tmp_path, study_folder):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(f"id,image,label\nx,{study_folder / 'a.nii.gz'},1\ny,missing.nii.gz,\n")
    items = list_studies(csv_path)
    assert items == [{"id": "x", "image": str(study_folder / "a.nii.gz"), "label": 1},
                     {"id": "y", "image": str(tmp_path / "missing.nii.gz")}]
    ds = StudyDataset(items, (1, 28, 28, 28), study_transform("volume", 28))
    assert int(ds[0]["label"]) == 1 and "does not exist" in ds[1]["error"]
    (tmp_path / "dup.csv").write_text("id,image\nx,a\nx,b\n")
    with pytest.raises(ValueError, match="duplicate"):
        list_studies(tmp_path / "dup.csv")
    with pytest.raises(FileNotFoundError):
        list_studies(tmp_path / "nope")


def test_dataset_items():
    data = [{"image": torch.rand(1, 8, 8, 8), "label": i % 2} for i in range(5)]
    items = list_studies(None, dataset=data, id_prefix="syn_")
    assert items[3] == {"id": "syn_000003", "index": 3}
    ds = StudyDataset(items, (1, 8, 8, 8), dataset=data)
    assert torch.equal(ds[2]["image"], data[2]["image"]) and int(ds[3]["label"]) == 1
    with pytest.raises(ValueError, match="source"):
        list_studies(None)


def test_shards_and_resume(tmp_path):
    items = [{"id": f"s{i:02d}", "image": f"/x/{i}"} for i in range(10)]
    shards = [select_studies(items, i, 3) for i in range(3)]
    ids = [it["id"] for s in shards for it in s]
    assert sorted(ids) == [it["id"] for it in items] and len(set(ids)) == 10  # a partition
    assert predictions_path(tmp_path, 1, 3).endswith("predictions.shard1of3.csv")
    assert predictions_path(tmp_path).endswith("predictions.csv")
    with pytest.raises(ValueError, match="shard_index"):
        select_studies(items, 3, 3)
    done = tmp_path / "p.csv"
    done.write_text("id,error\ns00,\ns03,\ns06,x\n")  # error rows count as done too
    assert read_done_ids(done) == {"s00", "s03", "s06"}
    todo = select_studies(items, 0, 3, done_csv=done)
    assert [it["id"] for it in todo] == ["s09"]
    assert len(select_studies(items, 0, 3, done_csv=done, skip_done="false")) == 4


def test_merge(tmp_path):
    (tmp_path / "a.csv").write_text("id,v\nb,1\na,2\n")
    (tmp_path / "b.csv").write_text("id,v\nc,3\n")
    out = merge_predictions([tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path / "all.csv")
    assert [r["id"] for r in csv.DictReader(open(out))] == ["a", "b", "c"]
    (tmp_path / "c.csv").write_text("id,w\nd,1\n")
    with pytest.raises(ValueError, match="columns"):
        merge_predictions([tmp_path / "a.csv", tmp_path / "c.csv"], tmp_path / "x.csv")
