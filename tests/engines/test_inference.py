"""Study listing (the study layer, monai_das.data.studies), sharding, resume and unreadable studies for batch
inference."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_das.data import LoadStudyd, list_studies, study_fingerprint
from monai_das.engines import (
    StudyDataset,
    merge_predictions,
    predictions_path,
    select_studies,
)


def study_transform(layout="volume", size=28, num_frames=32, min_frames=2):
    """The bundles' preprocessing: LoadStudyd with a volume (``size³``) or video (``num_frames×size²``) recipe."""
    if layout == "volume":
        recipe = {"layout": "volume", "spatial_size": [size] * 3, "min_frames": min_frames}
    else:
        recipe = {"layout": "video", "num_frames": num_frames, "spatial_size": [size, size], "min_frames": min_frames}
    return LoadStudyd("image", recipe=recipe, in_channels=1)


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


def test_study_warnings_reach_the_predictions(tmp_path):
    """The study layer's warnings (here: a NIfTI without orientation) were logged only: the bundle's predictions.csv
    showed a confident prediction without them, where the Deploy report carries them (trial Y). They are the item's
    ``warnings`` and the row's ``warnings`` column now; an older file without the column gets it, its rows kept."""
    from ignite.engine import Engine

    from monai_das.handlers import PredictionWriter

    vol = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
    img = nib.Nifti1Image(vol, None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "bare.nii.gz"))
    (item,) = list_studies(tmp_path / "bare.nii.gz")
    recipe = {"layout": "volume", "spatial_size": [28] * 3, "min_frames": 2, "axcodes": "RAS"}  # reoriented: said
    out = StudyDataset([item], (1, 28, 28, 28), LoadStudyd("image", recipe=recipe, in_channels=1))[0]
    assert out["error"] == "" and "has no orientation in its NIfTI header" in out["warnings"]
    path = tmp_path / "out" / "predictions.csv"
    writer = PredictionWriter(path, ["neg", "pos"])
    path.parent.mkdir()
    old = [c for c in writer.fields if c not in ("warnings", "label_name")]  # two versions ago: neither column
    cells = {"id": "old", "label": "1"}
    path.write_text(",".join(old) + "\n" + ",".join(cells.get(c, "") for c in old) + "\n")

    def step(engine, batch):
        engine.state.batch = [{k: out[k] for k in ("id", "source", "fingerprint", "error", "warnings")}]
        return [{"pred": torch.tensor([0.3, 0.7]), "label": torch.tensor(-1)}]

    engine = Engine(step)
    writer.attach(engine)
    engine.run([0], max_epochs=1)
    rows = {r["id"]: r for r in csv.DictReader(open(path))}
    assert set(rows) == {"old", "bare.nii.gz"}
    assert rows["old"]["warnings"].startswith("not recorded: predicted by an older version")  # not "nothing to say"
    assert rows["old"]["label_name"] == "pos" and rows["bare.nii.gz"]["label_name"] == ""  # from label; -1: unknown
    assert "has no orientation" in rows["bare.nii.gz"]["warnings"] and rows["bare.nii.gz"]["pred_name"] == "pos"


def test_folder_listing(study_folder):
    items = list_studies(study_folder)
    assert [it["id"] for it in items] == ["a.nii.gz", "broken.nii.gz", "series1", "sub/b.nii"]
    assert items[2]["image"] == str(study_folder / "series1") and os.path.isabs(items[0]["image"])
    st = (study_folder / "a.nii.gz").stat()
    assert items[0]["fingerprint"] == f"{st.st_size}-{st.st_mtime_ns}"
    assert items[2]["fingerprint"].startswith("4files-")  # a DICOM series: every member file


def test_dataset_reads_and_reports_errors(study_folder):
    items = list_studies(study_folder)
    ds = StudyDataset(items, image_shape=(1, 28, 28, 28), transform=study_transform("volume", 28), num_frames=28)
    out = {d["id"]: d for d in (ds[i] for i in range(len(ds)))}
    for sid in ("a.nii.gz", "series1", "sub/b.nii"):
        assert out[sid]["error"] == "" and out[sid]["image"].shape == (1, 28, 28, 28)
        assert 0.0 <= float(out[sid]["image"].min()) and float(out[sid]["image"].max()) <= 1.0
        src = out[sid]["source_indices"].tolist()  # the file's own slice numbers along the axis RAS x runs along
        assert len(src) == 28 and min(src) >= 0 and src in (sorted(src), sorted(src, reverse=True))
    assert int(out["a.nii.gz"]["source_indices"].max()) == 19 and int(out["broken.nii.gz"]["source_indices"][0]) == -1
    bad = out["broken.nii.gz"]
    assert "broken.nii.gz" in bad["error"]
    assert torch.count_nonzero(bad["image"]) == 0 and int(bad["label"]) == -1
    # wrong shape is an error for that study only
    wrong = StudyDataset(items[:1], image_shape=(1, 16, 16, 16), transform=study_transform("volume", 28))[0]
    assert "expected (1, 16, 16, 16)" in wrong["error"]


def test_csv_listing(tmp_path, study_folder):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(f"id,image,label\nx,{study_folder / 'a.nii.gz'},1\ny,missing.nii.gz,\n")
    items = list_studies(csv_path, dataset_dir=os.path.commonpath([study_folder, tmp_path]))  # the folder of both
    fp = study_fingerprint(study_folder / "a.nii.gz")
    plain = [{k: v for k, v in it.items() if k != "study"} for it in items]  # "study": the StudySource
    assert plain == [{"id": "x", "image": str(study_folder / "a.nii.gz"), "fingerprint": fp, "label": 1},
                     {"id": "y", "image": str(tmp_path / "missing.nii.gz"), "fingerprint": "missing"}]
    assert items[0]["study"].kind == "volume" and items[1]["study"].kind == "invalid"
    ds = StudyDataset(items, (1, 28, 28, 28), study_transform("volume", 28))
    assert int(ds[0]["label"]) == 1 and "does not exist" in ds[1]["error"]
    # an error this package raises under MONAI's "applying transform" wrapper, from a reader's: both said, the
    # package's first (it names the file at fault, e.g. one slice of a series; only the reader's was kept: trial S)
    def broken(d):
        try:
            try:
                raise ValueError("The number of bytes of pixel data is less than expected")
            except ValueError as reader:
                raise ValueError("its file 'IM0009.dcm' cannot be decoded") from reader
        except ValueError as ours:
            raise RuntimeError("applying transform <LoadStudyd>") from ours

    error = StudyDataset(items[:1], (1, 28, 28, 28), broken)[0]["error"]
    assert error.startswith(f"cannot read '{study_folder / 'a.nii.gz'}': ValueError: its file 'IM0009.dcm' cannot be "
                            "decoded (from ValueError: The number of bytes of pixel data is less than expected)")
    (tmp_path / "dup.csv").write_text("id,image\nx,a\ny,b\nx,c\n")
    with pytest.raises(ValueError, match=r"dup\.csv' line 4: duplicate id 'x' \(also on line 2\)"):
        list_studies(tmp_path / "dup.csv")
    # an id with a line break forged a second line in every log (trial 60b): refused, naming the line (the quoted
    # field spans lines 3-4 of the file)
    (tmp_path / "forged.csv").write_text('id,image\nx,a\n"y\nERROR forged",b\n')
    with pytest.raises(ValueError, match=r"forged\.csv' line 3: the study id 'y\\nERROR forged' holds the "
                                         r"character '\\n'"):
        list_studies(tmp_path / "forged.csv")
    (tmp_path / "bidi.csv").write_text("id,image\nx\u202egpj.exe,a\n", encoding="utf-8")  # a direction override
    with pytest.raises(ValueError, match=r"bidi\.csv' line 2: the study id .* holds the character '\\u202e'"):
        list_studies(tmp_path / "bidi.csv")
    (tmp_path / "twice.csv").write_text("id,image\nx,a.nii.gz\ny,b.nii.gz\nz,./a.nii.gz\n")  # one file, two spellings
    with pytest.raises(ValueError, match=r"twice\.csv' line 4: '\./a\.nii\.gz' is the study of line 2 again"):
        list_studies(tmp_path / "twice.csv")
    with pytest.raises(FileNotFoundError):
        list_studies(tmp_path / "nope")


def test_csv_labels_are_checked(tmp_path):
    """Labels: index or class name of the model; blank / -1 = unknown; errors name the file and the line."""
    names = ["neg", "pos"]
    good = tmp_path / "good.csv"
    good.write_text("id,image,label\na,a.nii,1\nb,b.nii,neg\nc,c.nii,\nd,d.nii,  \ne,e.nii,-1\n")
    labels = {it["id"]: it.get("label") for it in list_studies(good, label_names=names)}
    assert labels == {"a": 1, "b": 0, "c": None, "d": None, "e": None}  # a blank label is no class
    cases = {
        "cat": r"cat\.csv' line 3: label 'cat' is not a class index 0\.\.1 or a class name \['neg', 'pos'\]",
        "seven": r"seven\.csv' line 3: label '7' is outside the model's classes: expected a class index 0\.\.1",
    }
    for name, pattern in cases.items():
        bad = tmp_path / f"{name}.csv"
        bad.write_text(f"id,image,label\na,a.nii,1\nb,b.nii,{'cat' if name == 'cat' else 7}\n")
        with pytest.raises(ValueError, match=pattern):
            list_studies(bad, label_names=names)
    with pytest.raises(ValueError, match=r"seven\.csv' line 3: label '7' is outside .* 0\.\.1"):
        list_studies(tmp_path / "seven.csv", num_classes=2)
    with pytest.raises(ValueError, match=r"cat\.csv' line 3: label 'cat' is not an integer class index"):
        list_studies(tmp_path / "cat.csv")  # no classes known: integers only
    (tmp_path / "noimage.csv").write_text("id,path\na,a.nii\n")
    with pytest.raises(ValueError, match=r"noimage\.csv' line 1: needs a 'image' column"):
        list_studies(tmp_path / "noimage.csv")
    (tmp_path / "blank.csv").write_text("id,image\na,a.nii\nb,\n")
    with pytest.raises(ValueError, match=r"blank\.csv' line 3: empty 'image'"):
        list_studies(tmp_path / "blank.csv")
    # a spreadsheet's rows of blank cells hold no study: skipped, said once, as in a datalist (trial T69a, R69)
    (tmp_path / "sheet.csv").write_text("id,image\n,,\n,,,\n")
    with pytest.raises(ValueError, match=r"no studies found in '.*sheet\.csv'"):
        list_studies(tmp_path / "sheet.csv")


def test_single_study_file_as_input(tmp_path, study_folder):
    """--input one_file: one study (not read as a CSV); a .csv is a list; anything else: error naming the file. A
    volume is a study for a video network too (its slices become the frames)."""
    items = list_studies(study_folder / "a.nii.gz")
    assert [(it["id"], it["image"]) for it in items] == [("a.nii.gz", str(study_folder / "a.nii.gz"))]
    (series,) = list_studies(study_folder / "series1" / "slice0.dcm")  # one DICOM file
    assert series["id"] == "slice0.dcm"
    with pytest.raises(ValueError, match=r"notes\.txt' is not supported: expected a folder of studies, a CSV"):
        list_studies(study_folder / "notes.txt")
    binary = tmp_path / "list.csv"
    binary.write_bytes(b"\x89\xff\x00 not text")
    with pytest.raises(ValueError, match=r"list\.csv' is not UTF-8 text"):
        list_studies(binary)


def _nifti(path, shape, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.random.default_rng(seed).random(shape).astype(np.float32), np.eye(4)), path)
    return path


def test_2d_images_and_single_slices_are_refused(tmp_path):
    """A 2D NIfTI or a one-slice series would become a constant-along-one-axis volume: an error row instead."""
    _nifti(tmp_path / "flat2d.nii.gz", (40, 50))
    _nifti(tmp_path / "one_slice.nii.gz", (40, 50, 1))
    write_dicom_series(tmp_path / "series_of_one", n=1)
    _nifti(tmp_path / "vol.nii.gz", (12, 14, 2))
    items = list_studies(tmp_path)
    ds = StudyDataset(items, (1, 16, 16, 16), study_transform("volume", 16))
    out = {d["id"]: d for d in (ds[i] for i in range(len(ds)))}
    assert out["vol.nii.gz"]["error"] == ""  # two slices are enough
    assert "study 'flat2d.nii.gz'" in out["flat2d.nii.gz"]["error"]
    assert "is a 2D image" in out["flat2d.nii.gz"]["error"]
    assert "has 1 slice(s) along spatial axis 2" in out["one_slice.nii.gz"]["error"]
    assert "study 'series_of_one'" in out["series_of_one"]["error"]
    assert "has 1 slice(s), fewer than min_frames=2" in out["series_of_one"]["error"]
    for sid in ("flat2d.nii.gz", "one_slice.nii.gz", "series_of_one"):
        assert torch.count_nonzero(out[sid]["image"]) == 0
    # asked for: accepted (a 2D image becomes one slice)
    ds1 = StudyDataset(items, (1, 16, 16, 16), study_transform("volume", 16, min_frames=1))
    assert all(ds1[i]["error"] == "" for i in range(len(ds1)))


def test_single_frame_clips_are_refused(tmp_path):
    """A single-frame DICOM or a one-frame GIF is not repeated to T frames unless min_frames=1."""
    import shutil

    from PIL import Image
    from pydicom.data import get_testdata_file

    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "still.dcm")
    Image.fromarray(np.full((20, 24, 3), 120, np.uint8)).save(tmp_path / "still.gif")
    frames = [Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=100)
    items = list_studies(tmp_path)
    dcm = "still.dcm"  # the loose single-frame DICOM beside other studies' files: a one-slice series, its file's name
    assert [it["id"] for it in items] == sorted(["clip.gif", dcm, "still.gif"])
    ds = StudyDataset(items, (8, 1, 16, 16), study_transform("video", 16, num_frames=8))
    out = {d["id"]: d for d in (ds[i] for i in range(len(ds)))}
    assert out["clip.gif"]["error"] == "" and out["clip.gif"]["source_indices"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert "study 'still.gif'" in out["still.gif"]["error"]
    assert "has 1 frame(s), fewer than min_frames=2" in out["still.gif"]["error"]
    assert f"study '{dcm}'" in out[dcm]["error"] and "has 1 frame(s), fewer than min_frames=2" in out[dcm]["error"]
    ds1 = StudyDataset(items, (8, 1, 16, 16), study_transform("video", 16, num_frames=8, min_frames=1))
    assert all(ds1[i]["error"] == "" for i in range(len(ds1)))


def test_dataset_items():
    data = [{"image": torch.rand(1, 8, 8, 8), "label": i % 2} for i in range(5)]
    items = list_studies(None, dataset=data, id_prefix="syn_")
    assert items[3] == {"id": "syn_000003", "index": 3, "fingerprint": "syn/3"}
    assert list_studies(None, dataset=data, dataset_tag="synthetic/test")[3]["fingerprint"] == "synthetic/test/3"
    ds = StudyDataset(items, (1, 8, 8, 8), dataset=data)
    assert torch.equal(ds[2]["image"], data[2]["image"]) and int(ds[3]["label"]) == 1
    with pytest.raises(ValueError, match="source"):
        list_studies(None)


def test_error_row_keeps_the_listed_label_and_json_follows_the_csv(tmp_path):
    """A study that cannot be read keeps its listing's label in its row (a merge of sharded runs compares it with the
    listing), and a resume rewrites predictions.json from the CSV even when no row is dropped (a run killed after
    appending its CSV rows left the JSON behind)."""
    from monai_das.engines import resume_predictions

    ds = StudyDataset([{"id": "x", "image": str(tmp_path / "gone.nii.gz"), "label": 1, "fingerprint": "missing"}],
                      (1, 8, 8, 8), None)
    row = ds[0]
    assert "does not exist" in row["error"] and int(row["label"]) == 1
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("id,source,fingerprint,label,pred_label,error\na,/x/a,1,,0,\nb,/x/b,1,,1,\n")
    csv_path.with_suffix(".json").write_text('[{"id": "a"}]')  # the JSON of an earlier, shorter run
    items = [{"id": i, "image": f"/x/{i}", "fingerprint": "1"} for i in "ab"]
    assert resume_predictions(csv_path, items) == {"a", "b"}
    assert [r["id"] for r in json.loads(csv_path.with_suffix(".json").read_text())] == ["a", "b"]


def test_replacing_other_studies_predictions_is_a_warning(tmp_path, caplog):
    """A second --input into one output folder (or another study under the same id, e.g. two series folders named
    SE0002) dropped the first run's rows with an INFO line only."""
    import logging

    from monai_das.engines import resume_predictions

    csv_path = tmp_path / "p.csv"
    csv_path.write_text("id,source,fingerprint,label,pred_label,error\nSE0002,/N000/SE0002,1,,0,\nb,/x/b,1,,1,\n"
                        "c,/x/c,1,,,failed\n")
    with caplog.at_level(logging.INFO, logger="monai_das.engines.inference"):
        assert resume_predictions(csv_path, [{"id": "SE0002", "image": "/N002/SE0002", "fingerprint": "1"},
                                             {"id": "c", "image": "/x/c", "fingerprint": "1"}]) == set()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "replaces the predictions of 2 earlier stud(y/ies)" in warned[0].getMessage()
    assert "give each input its own --output_dir" in warned[0].getMessage()
    # a study whose file changed since (size or time): predicted again, said so, without the --output_dir advice
    # (which fits another input, not a touched file; trial Y)
    caplog.clear()
    csv_path.write_text("id,source,fingerprint,label,pred_label,error\nb,/x/b,1,,1,\n")
    with caplog.at_level(logging.INFO, logger="monai_das.engines.inference"):
        assert resume_predictions(csv_path, [{"id": "b", "image": "/x/b", "fingerprint": "2"}]) == set()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "1 stud(y/ies) changed since their prediction" in warned[0]
    assert "--output_dir" not in warned[0]
    # an error row of a study no longer listed (a VERSION file discovery skips now) is no result of another listing
    caplog.clear()
    csv_path.write_text("id,source,fingerprint,label,pred_label,error\nVERSION,/x/VERSION,1,,,unsupported\n")
    with caplog.at_level(logging.INFO, logger="monai_das.engines.inference"):
        resume_predictions(csv_path, [{"id": "b", "image": "/x/b", "fingerprint": "2"}])
    assert "error row of a study not listed any more" in caplog.text
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)
    caplog.clear()
    csv_path.write_text("id,source,fingerprint,label,pred_label,error\nc,/x/c,1,,,failed\n")  # a retry only: routine
    with caplog.at_level(logging.INFO, logger="monai_das.engines.inference"):
        resume_predictions(csv_path, [{"id": "c", "image": "/x/c", "fingerprint": "1"}])
    assert "error, run again" in caplog.text and not any(r.levelno >= logging.WARNING for r in caplog.records)
    # another model's results replaced: a warning with the advice, not an INFO line (trial T67c)
    caplog.clear()
    csv_path.write_text("id,source,fingerprint,label,pred_label,error,model\nb,/x/b,1,,1,,m1\n")
    with caplog.at_level(logging.INFO, logger="monai_das.engines.inference"):
        assert resume_predictions(csv_path, [{"id": "b", "image": "/x/b", "fingerprint": "1"}], "m2") == set()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "replaces 1 prediction(s) of another model or setting" in warned[0]
    assert "give this run its own --output_dir" in warned[0]


@pytest.mark.parametrize("source,model_key,why", [
    ("/x/lists/a", "m1", "error row of another file under its id"), ("/x/a", "m2", "error row of another model")])
def test_error_rows_replaced_are_no_predictions(tmp_path, caplog, source, model_key, why):
    """An error row of another file under its id (a datalist's missing image, given again with --dataset_dir) or of
    another model holds no result: run again at INFO, not warned as replaced predictions with the --output_dir advice
    (trial T70c)."""
    from monai_das.engines import resume_predictions

    csv_path = tmp_path / "p.csv"
    csv_path.write_text(f"id,source,fingerprint,label,pred_label,error,model\na,{source},1,,,missing,m1\n")
    with caplog.at_level(logging.INFO, logger="monai_das.engines.inference"):
        assert resume_predictions(csv_path, [{"id": "a", "image": "/x/a", "fingerprint": "1"}], model_key) == set()
    assert why in caplog.text and not any(r.levelno >= logging.WARNING for r in caplog.records)


def test_shards_and_resume(tmp_path):
    from monai_das.engines import shard_of

    items = [{"id": f"s{i:02d}", "image": f"/x/{i}", "fingerprint": f"{i}-1"} for i in range(10)]
    shards = [select_studies(items, i, 3) for i in range(3)]
    ids = [it["id"] for s in shards for it in s]
    assert sorted(ids) == [it["id"] for it in items] and len(set(ids)) == 10  # a partition
    assert all(shard_of(it["id"], 3) == i for i, s in enumerate(shards) for it in s)
    # studies added to the listing never move the others between shards (their finished rows stay valid)
    more = items + [{"id": f"new{i}", "image": f"/y/{i}", "fingerprint": "1"} for i in range(7)]
    for i in range(3):
        assert [it for it in select_studies(more, i, 3) if it["id"].startswith("s")] == shards[i]
    assert predictions_path(tmp_path, 1, 3).endswith("predictions.shard1of3.csv")
    assert predictions_path(tmp_path).endswith("predictions.csv")
    with pytest.raises(ValueError, match="shard_index"):
        select_studies(items, 3, 3)
    done = tmp_path / "p.csv"
    # of s00, s03, s06, s09: s06 failed (run again), s03 changed on disk, s05 is no longer listed,
    # s00 twice (the last row wins), and a kill cut the last row (s09) short
    mine = [items[i] for i in (0, 3, 6, 9)]
    done.write_text("id,source,fingerprint,pred_label,error\ns00,/x/0,0-1,1,\ns03,/x/3,3-0,0,\ns06,/x/6,6-1,,x\n"
                    "s05,/x/5,5-1,1,\ns00,/x/0,0-1,0,\ns09,/x/9,9-")
    todo = select_studies(mine, 0, 1, done_csv=done)
    assert [it["id"] for it in todo] == ["s03", "s06", "s09"]
    assert done.read_text().splitlines() == ["id,source,fingerprint,pred_label,error", "s00,/x/0,0-1,0,"]
    assert len(select_studies(mine, 0, 1, done_csv=done)) == 3  # stable
    assert len(select_studies(mine, 0, 1, done_csv=done, skip_done="false")) == 4
    assert done.read_bytes() == b""  # start afresh: nothing appended to the old rows
    for text in ("name,value\na,1\n", "id,image,label\na,a.nii,1\n"):  # e.g. the study list, by mistake
        other = tmp_path / "other.csv"
        other.write_text(text)
        for skip in (True, False):  # never emptied when it is not a predictions file
            with pytest.raises(ValueError, match=r"other\.csv' is not a predictions file"):
                select_studies(items, 0, 1, done_csv=other, skip_done=skip)
        assert other.read_text() == text
    old = tmp_path / "old.csv"  # an older version's file (no fingerprint column), even without rows: emptied
    old.write_text("id,source,label,pred_label,error\n")
    assert len(select_studies(items, 0, 1, done_csv=old)) == 10 and old.read_bytes() == b""

    # rows of another model (checkpoint, k or preprocessing: the ``model`` column) are predicted again
    keyed = tmp_path / "keyed.csv"
    keyed.write_text("id,source,fingerprint,pred_label,error,model\ns00,/x/0,0-1,1,,k1\ns01,/x/1,1-1,0,,k2\n")
    assert [it["id"] for it in select_studies(items[:2], 0, 1, done_csv=keyed, model_key="k1")] == ["s01"]
    assert keyed.read_text().splitlines()[1:] == ["s00,/x/0,0-1,1,,k1"]
    old.write_text("id,source,fingerprint,pred_label,error\ns00,/x/0,0-1,1,\n")  # no model column: not trusted
    assert len(select_studies(items[:1], 0, 1, done_csv=old, model_key="k1")) == 1
    # a label corrected in the study list: the row (whose label column is the old one) is written again
    labelled = [{**items[0], "label": 1}, {**items[1], "label": 0}]
    keyed.write_text("id,source,fingerprint,label,pred_label,error,model\ns00,/x/0,0-1,1,1,,k1\n"
                     "s01,/x/1,1-1,1,0,,k1\n")
    assert [it["id"] for it in select_studies(labelled, 0, 1, done_csv=keyed, model_key="k1")] == ["s01"]
    # dataset items carry no label in the listing (it comes with the loaded item): their rows are kept
    keyed.write_text("id,source,fingerprint,label,pred_label,error,model\ns00,/x/0,0-1,1,1,,k1\n")
    assert select_studies(items[:1], 0, 1, done_csv=keyed, model_key="k1") == []


def test_one_run_per_predictions_file(tmp_path):
    """Two batch inferences into one output folder resumed, truncated and appended one file under each other: rows
    of two models in one file, or the file emptied and appended without its header (trial T67c). The second is
    refused before it reads the file; the run lets go at its end (exit_status)."""
    from filelock import FileLock, Timeout

    from monai_das.engines import exit_status
    from monai_das.engines.checks import refusal_site

    items = [{"id": f"s{i}", "image": f"/x/{i}", "fingerprint": f"{i}-1"} for i in range(3)]
    done = tmp_path / "out" / "predictions.csv"
    done.parent.mkdir()
    done.write_text("id,source,fingerprint,pred_label,error\ns0,/x/0,0-1,1,\n")
    other = FileLock(str(done.parent / ".predictions.csv.lock"))
    other.acquire(timeout=0)  # another process predicts into this file
    (done.parent / ".predictions.csv.owner").write_text("pid 4242 on host7, since 2026-12-07 09:00:00\n")
    with pytest.raises(RuntimeError, match=r"another batch inference is writing '.*predictions\.csv' \(pid 4242 on "
                                           r"host7, since 2026-12-07 09:00:00\): wait for it to finish, or give this "
                                           r"run another --output_dir") as refused:
        select_studies(items, 0, 1, done_csv=done, skip_done=False)
    # a refusal: the bundle run ends with its advice, not 80 lines of MONAI's traceback around it (trial T70c)
    assert (refusal_site(refused.value) or "").startswith("monai_das/utils/io.py:")
    assert done.read_text().count("\n") == 2  # untouched
    other.release()
    assert [it["id"] for it in select_studies(items, 0, 1, done_csv=done)] == ["s1", "s2"]
    with pytest.raises(Timeout):
        FileLock(str(done.parent / ".predictions.csv.lock")).acquire(timeout=0)  # held while the run goes on
    assert select_studies(items, 0, 1, done_csv=done)  # this process holds it already: a second run here goes on
    exit_status(done)
    assert sorted(p.name for p in done.parent.iterdir()) == ["predictions.csv", "predictions.json"]  # let go


@pytest.mark.parametrize("target_exists", [False, True])
def test_a_predictions_file_that_is_a_link_is_refused(tmp_path, target_exists):
    """Security review T69b: a link planted as predictions.csv made batch inference empty the file it points to (another
    run's results), then append its rows there, outside its output folder. A link is refused before anything reads or
    writes it, and the writer never opens one."""
    from monai_das.handlers import PredictionWriter

    elsewhere = tmp_path / "victim" / "other_results.csv"
    elsewhere.parent.mkdir()
    if target_exists:
        elsewhere.write_text("id,source,fingerprint,pred_label,error\ns0,/x/0,0-1,1,\n")
    before = elsewhere.read_bytes() if target_exists else None
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").symlink_to(elsewhere)
    items = [{"id": f"s{i}", "image": f"/x/{i}", "fingerprint": f"{i}-1"} for i in range(2)]
    for skip_done in (True, False):
        with pytest.raises(ValueError, match=r"predictions file '.*out[/\\]predictions\.csv' is a symbolic link \(to "
                                             r"'.*other_results\.csv'\): monai_das writes its outputs in the output "
                                             r"folder, never through a link"):
            select_studies(items, 0, 1, done_csv=out / "predictions.csv", skip_done=skip_done)
    writer = PredictionWriter(out / "predictions.csv", label_names=["a", "b"], model_key="m")
    with pytest.raises(ValueError, match=r"is a symbolic link"):
        writer._open()
    assert (elsewhere.read_bytes() if target_exists else None) == before and elsewhere.exists() == target_exists
    (out / "predictions.csv").unlink()
    (out / "predictions.json").symlink_to(elsewhere)  # the JSON beside it is rewritten too
    with pytest.raises(ValueError, match=r"predictions\.json' is a symbolic link"):
        select_studies(items, 0, 1, done_csv=out / "predictions.csv")
    (out / "predictions.json").unlink()
    (out / ".predictions.csv.lock").symlink_to(elsewhere)  # a link as its lock left the run unlocked (R69)
    with pytest.raises(ValueError, match=r"\.predictions\.csv\.lock' is a symbolic link"):
        select_studies(items, 0, 1, done_csv=out / "predictions.csv")


@pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="no O_NOFOLLOW on this system (Windows): the check alone")
def test_open_in_place_never_follows_a_link(tmp_path):
    """The open itself refuses a link (O_NOFOLLOW): a link put there after a check is not followed either."""
    import monai_das.utils.io as io

    target = tmp_path / "t.csv"
    target.write_text("x\n")
    (tmp_path / "l.csv").symlink_to(target)
    with pytest.raises(ValueError, match="is a symbolic link"):
        io.open_in_place(tmp_path / "l.csv", "a")
    checked = io.refuse_link
    try:
        io.refuse_link = lambda *a, **k: None  # the check passed before the link was made
        with pytest.raises(ValueError, match="is a symbolic link"):
            io.open_in_place(tmp_path / "l.csv", "a")
    finally:
        io.refuse_link = checked
    assert target.read_text() == "x\n"
    with io.open_in_place(tmp_path / "new.csv", "w", encoding="utf-8") as f:
        f.write("y\n")
    assert (tmp_path / "new.csv").read_text() == "y\n"


def test_shard_files(tmp_path, monkeypatch):
    from monai_das.engines import launcher_shard

    items = [{"id": "only", "image": "/x/only", "fingerprint": "1"}]
    paths = [Path(predictions_path(tmp_path, i, 2)) for i in range(2)]
    todo = [select_studies(items, i, 2, done_csv=paths[i]) for i in range(2)]
    # the shard without studies leaves an empty file (it ran, with nothing to do), so all shards can be merged;
    # the other one's file is the predictions writer's to create
    empty = next(i for i in range(2) if not todo[i])
    assert paths[empty].read_bytes() == b"" and not paths[1 - empty].exists()
    with pytest.raises(ValueError, match=r"not named for shard 1 of 2"):  # two shards would write one file
        select_studies(items, 1, 2, done_csv=tmp_path / "mine.csv")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert launcher_shard() == (0, 1)  # a stray RANK does not shard a single process
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "r")
    assert launcher_shard() == (3, 4)  # started by torchrun: one shard per process


class _NotWeights:
    """An object a weights-only load refuses (any class of its own)."""


def test_prediction_key_follows_the_checkpoint_and_the_settings(tmp_path):
    from monai_das.engines import prediction_key

    ckpt = tmp_path / "model.pt"
    torch.save({"w": torch.tensor([1.0])}, ckpt)
    key = prediction_key(ckpt, {"keep_ratio": 0.5, "recipe": {"percentiles": [0.5, 99.5]}})
    assert len(key) == 16 and key == prediction_key(ckpt, {"recipe": {"percentiles": [0.5, 99.5]}, "keep_ratio": 0.5})
    assert key != prediction_key(ckpt, {"keep_ratio": 0.25, "recipe": {"percentiles": [0.5, 99.5]}})
    assert key != prediction_key(ckpt, {"keep_ratio": 0.5, "recipe": {"percentiles": [1, 99]}})
    torch.save({"w": torch.tensor([2.0])}, ckpt)  # retrained: the same path, other bytes
    assert key != prediction_key(ckpt, {"keep_ratio": 0.5, "recipe": {"percentiles": [0.5, 99.5]}})
    with pytest.raises(FileNotFoundError, match="missing.pt"):  # refused before any earlier prediction is touched
        prediction_key(tmp_path / "missing.pt")
    (tmp_path / "cut.pt").write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cut\.pt \(100 bytes\) is not a readable PyTorch checkpoint"):
        prediction_key(tmp_path / "cut.pt")
    # a whole torch.save archive of another Python object (a pickle weights_only refuses): refused here too, before
    # the earlier predictions are read (it emptied predictions.csv when only the engine's load refused it)
    torch.save({"model": _NotWeights()}, tmp_path / "pickle.pt")
    with pytest.raises(ValueError, match=r"pickle\.pt holds Python objects other than tensors"):
        prediction_key(tmp_path / "pickle.pt")


def test_merge(tmp_path):
    (tmp_path / "a.csv").write_text("id,v\nb,1\na,2\n")
    (tmp_path / "b.csv").write_text("id,v\nc,3\n")
    out = merge_predictions([tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path / "all.csv")
    assert [r["id"] for r in csv.DictReader(open(out))] == ["a", "b", "c"]
    (tmp_path / "c.csv").write_text("id,w\nd,1\n")
    with pytest.raises(ValueError, match="columns"):
        merge_predictions([tmp_path / "a.csv", tmp_path / "c.csv"], tmp_path / "x.csv")
    # every shard of one split, rows of one model: merged; a shard left out or another model's rows: refused
    for i, text in enumerate(["id,model\na,k1\n", "id,model\nb,k1\n", ""]):
        (tmp_path / f"predictions.shard{i}of3.csv").write_text(text)
    shard_files = [tmp_path / f"predictions.shard{i}of3.csv" for i in range(3)]
    out = merge_predictions(shard_files, tmp_path / "predictions.csv")
    assert [r["id"] for r in csv.DictReader(open(out))] == ["a", "b"]
    with pytest.raises(ValueError, match=r"all shards 0..n-1 of one split \(got shards \[0, 2\] of \[3\]\)"):
        merge_predictions(shard_files[::2], tmp_path / "x.csv")
    (tmp_path / "predictions.shard1of3.csv").write_text("id,model\nb,k2\n")
    with pytest.raises(ValueError, match="different models or inference settings"):
        merge_predictions(shard_files, tmp_path / "x.csv")


def test_merge_takes_shards_of_the_version_before_the_added_columns(tmp_path):
    """A shard finished by the version before label_name beside one of this version (an upgrade between shards): one
    layout, the older rows' label_name from their label (review); other columns are still refused."""
    new = "id,label,label_name,prob_neg,prob_pos,model\nb,0,neg,0.9,0.1,k1\n"
    for first, second in ((new, "id,label,prob_neg,prob_pos,model\na,1,0.3,0.7,k1\nc,-1,0.5,0.5,k1\n"),
                          ("id,label,prob_neg,prob_pos,model\na,1,0.3,0.7,k1\nc,-1,0.5,0.5,k1\n", new)):
        (tmp_path / "predictions.shard0of2.csv").write_text(first)
        (tmp_path / "predictions.shard1of2.csv").write_text(second)
        out = merge_predictions([tmp_path / f"predictions.shard{i}of2.csv" for i in range(2)], tmp_path / "m.csv")
        rows = {r["id"]: r for r in csv.DictReader(open(out))}
        assert list(next(iter(rows.values()))) == ["id", "label", "label_name", "prob_neg", "prob_pos", "model"]
        assert {k: r["label_name"] for k, r in rows.items()} == {"a": "pos", "b": "neg", "c": ""}


def test_merge_checks_the_listing(tmp_path):
    """With the listing, a merge proves the result whole: a row for every study, every row still right."""
    from monai_das.engines import shard_of

    header = "id,source,fingerprint,label,model,pred_label,error\n"
    studies = [{"id": i, "image": f"/d/{i}", "fingerprint": f"f{i}"} for i in "abcdef"]
    rows = {i: f"{i},/d/{i},f{i},,k1,0,\n" for i in "abcdef"}
    shard_files = [tmp_path / f"predictions.shard{j}of2.csv" for j in range(2)]
    for j, f in enumerate(shard_files):
        f.write_text(header + "".join(r for i, r in rows.items() if shard_of(i, 2) == j))
    out = merge_predictions(shard_files, tmp_path / "all.csv", studies=studies, model_key="k1")
    assert [r["id"] for r in read_rows(out)] == list("abcdef")
    # an error row is a result (the error column says why); a study without a row is owed by its shard
    missing = "a"
    owner = shard_files[shard_of(missing, 2)]
    owner.write_text(header + "".join(r for i, r in rows.items() if shard_of(i, 2) == shard_of(missing, 2)
                                      and i != missing) + f"{missing},/d/{missing},f{missing},,k1,,boom\n")
    assert read_rows(merge_predictions(shard_files, tmp_path / "all.csv", studies=studies))[0]["error"] == "boom"
    # a study missing from either shard is blamed on the shard that owns it, not on the last file
    for j, f in enumerate(shard_files):
        kept = f.read_text()
        gone = next(i for i in "abcdef" if shard_of(i, 2) == j)
        f.write_text("".join(line for line in kept.splitlines(True) if not line.startswith(f"{gone},")))
        with pytest.raises(ValueError, match=rf"'{re.escape(str(f))}': no row for 1 listed study \('{gone}': not run "
                                             r"yet, or the shard was killed\)"):
            merge_predictions(shard_files, tmp_path / "x.csv", studies=studies)
        f.write_text(kept)
    owner.write_text(header)  # killed after writing its header only
    with pytest.raises(ValueError, match=rf"'{re.escape(str(owner))}': no row for \d listed stud.*'a'.*killed"):
        merge_predictions(shard_files, tmp_path / "x.csv", studies=studies)
    owner.unlink()  # not run yet: named with the studies it owes, as the docs say (it was a bare FileNotFoundError)
    with pytest.raises(ValueError, match=rf"'{re.escape(str(owner))}': no row for \d listed stud.*'a'.*not run yet"):
        merge_predictions(shard_files, tmp_path / "x.csv", studies=studies)
    with pytest.raises(FileNotFoundError, match=rf"'{re.escape(str(owner))}' does not exist \(a shard not run yet"):
        merge_predictions(shard_files, tmp_path / "x.csv")  # no listing: nothing to name the studies by
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(ValueError, match="would overwrite one of the files it merges"):
        merge_predictions(shard_files, tmp_path / "." / shard_files[0].name)
    # rows that no longer hold: a changed file, a study no longer listed, another model
    owner.write_text(header + "".join(r for i, r in rows.items() if shard_of(i, 2) == shard_of(missing, 2)))
    changed = [dict(s, fingerprint="new") if s["id"] == "a" else s for s in studies]
    with pytest.raises(ValueError, match=r"1 row\(s\) file changed since"):
        merge_predictions(shard_files, tmp_path / "x.csv", studies=changed)
    with pytest.raises(ValueError, match=r"1 row\(s\) not in this listing"):
        merge_predictions(shard_files, tmp_path / "x.csv", studies=[s for s in studies if s["id"] != "a"])
    with pytest.raises(ValueError, match=r"row\(s\) another model or inference setting \(checkpoint, engine, k, "
                                         r"preprocessing\)"):  # the engine named (trial Z: the only change)
        merge_predictions(shard_files, tmp_path / "x.csv", studies=studies, model_key="k2")
    # labels of a study list are compared too
    labelled = [dict(s, label=0) for s in studies]
    merge_predictions(shard_files, tmp_path / "x.csv", studies=[dict(s, label="") for s in studies])
    with pytest.raises(ValueError, match="label changed"):
        merge_predictions(shard_files, tmp_path / "x.csv", studies=labelled)


# ---------------------------------------------------------------- inference.json, run at the Python level
REPO = Path(__file__).resolve().parents[2]
INFERENCE = REPO / "bundles" / "das_volume_classification" / "configs" / "inference.json"
SIZE = 16  # synthetic network on a 16³ grid: fast on CPU


def _parser(bundle_root, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser.update({"bundle_root": str(bundle_root), "size": SIZE, "device": "$torch.device('cpu')", **overrides})
    return parser


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory):
    """A bundle folder with ``models/model.pt``: the untrained network of inference.json (deterministic in eval)."""
    root = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    net = _parser(root).get_parsed_content("network_def")
    (root / "models").mkdir()
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def run_inference(bundle_root, **overrides) -> list[str]:
    """Build inference.json's evaluator (with overrides) and run it; returns the ids it ran."""
    parser = _parser(bundle_root, **overrides)
    todo = parser.get_parsed_content("todo")
    parser.get_parsed_content("evaluator").run()
    return [it["id"] for it in todo]


def read_rows(csv_path):
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def check_outputs(csv_path, ids):
    """Exactly one row per id, in the CSV and in the JSON."""
    import json

    rows = read_rows(csv_path)
    assert [r["id"] for r in rows] == sorted(ids), [r["id"] for r in rows]
    data = json.loads(Path(csv_path).with_suffix(".json").read_text())
    assert [r["id"] for r in data] == sorted(ids)
    return {r["id"]: r for r in rows}


def test_inference_kill_resume_other_folder_and_restart(tmp_path, bundle_root):
    import shutil

    a = tmp_path / "A"
    for i, name in enumerate(("a.nii.gz", "b.nii.gz", "c.nii.gz", "d.nii.gz")):
        _nifti(a / name, (10, 12, 9), seed=i)
    (a / "broken.nii.gz").write_bytes(b"not a nifti file")
    ids = ["a.nii.gz", "b.nii.gz", "broken.nii.gz", "c.nii.gz", "d.nii.gz"]
    out = tmp_path / "out"
    csv_path = out / "predictions.csv"
    assert run_inference(bundle_root, input=str(a), output_dir=str(out)) == ids
    rows = check_outputs(csv_path, ids)
    assert rows["broken.nii.gz"]["error"] and not rows["a.nii.gz"]["error"]
    assert rows["a.nii.gz"]["source"] == str(a / "a.nii.gz")
    assert rows["a.nii.gz"]["fingerprint"] == study_fingerprint(a / "a.nii.gz")
    kept = [int(i) for i in rows["a.nii.gz"]["kept_indices"].split(";")]
    frames = [int(i) for i in rows["a.nii.gz"]["source_frames"].split(";")]  # slices of the file, for volumes too
    assert len(frames) == len(kept) == SIZE // 2 and all(0 <= f < 10 for f in frames)

    # a kill: rows a, b, broken and c are complete, d was cut in the middle (no line end); a marker in a kept row
    # shows that it is not predicted again
    lines = csv_path.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\r\n").split(",")
    a_row = lines[1].rstrip("\r\n").split(",")
    a_row[header.index("prob_" + rows["a.nii.gz"]["pred_name"])] = "0.424242"
    lines[1] = ",".join(a_row) + "\r\n"
    csv_path.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    assert run_inference(bundle_root, input=str(a), output_dir=str(out)) == ["broken.nii.gz", "d.nii.gz"]
    rows = check_outputs(csv_path, ids)  # 5 rows for 5 studies: no duplicate of the cut row
    assert "0.424242" in rows["a.nii.gz"].values() and rows["broken.nii.gz"]["error"]

    # a second folder with the same file names (same sizes and times): other sources, so every study runs again
    b = tmp_path / "B"
    shutil.copytree(a, b)
    assert run_inference(bundle_root, input=str(b), output_dir=str(out)) == ids
    rows = check_outputs(csv_path, ids)
    assert {r["source"] for r in rows.values()} == {str(b / i) for i in ids}

    # the unreadable study is repaired and another one changes: only those two run again
    _nifti(b / "broken.nii.gz", (10, 12, 9), seed=7)
    _nifti(b / "c.nii.gz", (11, 12, 9), seed=8)
    assert run_inference(bundle_root, input=str(b), output_dir=str(out)) == ["broken.nii.gz", "c.nii.gz"]
    rows = check_outputs(csv_path, ids)
    assert not any(r["error"] for r in rows.values())

    # skip_done false: everything runs again and the file is rewritten, not appended to
    assert run_inference(bundle_root, input=str(b), output_dir=str(out), skip_done="false") == ids
    check_outputs(csv_path, ids)

    # a study removed from the folder: its row goes too; nothing left to run still gives a consistent JSON
    (b / "d.nii.gz").unlink()
    assert run_inference(bundle_root, input=str(b), output_dir=str(out)) == []
    check_outputs(csv_path, ids[:-1])

    # another k at inference (any k from one model): no row of the former k is kept, every study runs again
    assert run_inference(bundle_root, input=str(b), output_dir=str(out), keep_ratio=0.25) == ids[:-1]
    rows = check_outputs(csv_path, ids[:-1])
    assert {len(r["kept_indices"].split(";")) for r in rows.values()} == {round(0.25 * SIZE)}
    assert len({r["model"] for r in rows.values()}) == 1
    assert run_inference(bundle_root, input=str(b), output_dir=str(out), keep_ratio=0.25) == []  # same k: resumed
    # the same k given as num_kept (whatever keep_ratio says) is the same key: nothing runs again
    assert run_inference(bundle_root, input=str(b), output_dir=str(out), num_kept=round(0.25 * SIZE)) == []

    # k itself (--num_kept) instead of the ratio: another key, every study again with k slices
    assert run_inference(bundle_root, input=str(b), output_dir=str(out), num_kept=3) == ids[:-1]
    rows = check_outputs(csv_path, ids[:-1])
    assert {len(r["kept_indices"].split(";")) for r in rows.values()} == {3}
    # a k the network refuses fails in `initialize` (the network is built first): the former rows stay untouched
    before = csv_path.read_bytes()
    parser = _parser(bundle_root, input=str(b), output_dir=str(out), num_kept=SIZE + 1)
    with pytest.raises(Exception) as failed:  # MONAI's "Failed to instantiate", raised from the network's error
        parser.get_parsed_content("initialize")
    cause = failed.value.__cause__
    while cause.__cause__ is not None:  # the expression's error inside MONAI's "Failed to instantiate"
        cause = cause.__cause__
    # the option the user typed is named (trial T62a)
    said = (f"--num_kept (k) {SIZE + 1}: cannot keep k={SIZE + 1} frames of an input with T={SIZE} frames "
            "(k must be <= T)")
    assert said in str(cause)
    parser = _parser(bundle_root, input=str(b), output_dir=str(out), num_kept=True)
    with pytest.raises(Exception) as failed:
        parser.get_parsed_content("initialize")
    cause = failed.value.__cause__
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert "--num_kept (k) must be an integer >= 1, got True" in str(cause)  # it named num_samples (k)
    assert csv_path.read_bytes() == before


def test_inference_keeps_the_trained_k_by_default(tmp_path, bundle_root, caplog):
    """A model trained at keep_ratio 0.25 ran at the default 0.5 (twice its k) unless --keep_ratio was given again:
    4 of 8 labels differed from the Deploy app, which takes k from the model card (trial T56). The card's ratio is
    the default now; --keep_ratio or --num_kept still choose another budget."""
    import json
    import shutil

    from monai_das.handlers import CARD_KEY
    from monai_das.utils import file_digest

    root = tmp_path / "bundle"
    shutil.copytree(bundle_root, root)
    ckpt = root / "models" / "model.pt"
    card = {CARD_KEY: {"checkpoint_sha256": file_digest(ckpt), "keep_ratio": 0.25, "num_kept": round(0.25 * SIZE)}}
    (root / "models" / "metadata.json").write_text(json.dumps(card))
    folder = tmp_path / "studies"
    _nifti(folder / "a.nii.gz", (10, 12, 9))
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.model_card"):
        assert run_inference(root, input=str(folder), output_dir=str(tmp_path / "out")) == ["a.nii.gz"]
    (row,) = read_rows(tmp_path / "out" / "predictions.csv")
    assert len(row["kept_indices"].split(";")) == round(0.25 * SIZE)
    assert "the training's options, from the model card" in caplog.text and "keep_ratio 0.25" in caplog.text
    # the recipe's geometry (training data facts that only drive a warning) is no part of the predictions' key
    assert "geometry" in _parser(root).get_parsed_content("recipe")
    assert "geometry" not in _parser(root).get_parsed_content("prediction_settings")["recipe"]
    run_inference(root, input=str(folder), output_dir=str(tmp_path / "half"), keep_ratio=0.5)  # asked for: as given
    (row,) = read_rows(tmp_path / "half" / "predictions.csv")
    assert len(row["kept_indices"].split(";")) == round(0.5 * SIZE)


def test_inference_shards_resume_and_merge(tmp_path, bundle_root):
    folder = tmp_path / "studies"
    ids = [f"s{i}.nii.gz" for i in range(5)]
    for i, name in enumerate(ids):
        _nifti(folder / name, (10, 12, 9), seed=i)
    out = tmp_path / "out"
    ran = [run_inference(bundle_root, input=str(folder), output_dir=str(out), shard_index=i, shard_count=2)
           for i in range(2)]
    from monai_das.engines import shard_of

    assert ran == [[s for s in ids if shard_of(s, 2) == i] for i in range(2)] and all(ran)
    paths = [predictions_path(out, i, 2) for i in range(2)]
    assert run_inference(bundle_root, input=str(folder), output_dir=str(out), shard_index=0, shard_count=2) == []
    merged = merge_predictions(paths, out / "predictions.csv")
    assert [r["id"] for r in read_rows(merged)] == ids

    # the bundle's `merge` entry (`monai.bundle run merge ... --shard_count 2`): checked against the listing
    def merge(**overrides):
        parser = _parser(bundle_root, input=str(folder), output_dir=str(out), shard_count=2, **overrides)
        try:
            return parser.get_parsed_content("merge")[0]
        except RuntimeError as e:  # MONAI's "Failed to evaluate", raised from merge_shards' error
            raise e.__cause__ from None

    (out / "predictions.csv").unlink()
    assert merge() == str(out / "predictions.csv") and [r["id"] for r in read_rows(out / "predictions.csv")] == ids
    assert [r["id"] for r in json.loads((out / "predictions.json").read_text())] == ids
    # shard 1 killed after writing only its header (a fresh run): merge names it and what it owes
    shard1 = Path(paths[1])
    owed = [s for s in ids if shard_of(s, 2) == 1]
    complete = shard1.read_text()
    shard1.write_text(complete.splitlines()[0] + "\n")
    with pytest.raises(ValueError, match=rf"predictions.shard1of2.csv': no row for {len(owed)} listed stud.*the shard "
                                         r"was killed.*run inference again for those shards"):
        merge()
    assert [r["id"] for r in read_rows(out / "predictions.csv")] == ids  # the former merged file is left as it was
    assert run_inference(bundle_root, input=str(folder), output_dir=str(out), shard_index=1, shard_count=2) == owed
    merge()
    # a study added to the folder after the shards ran is owed by its shard; another k: every row is stale
    _nifti(folder / "s9.nii.gz", (10, 12, 9), seed=9)
    with pytest.raises(ValueError, match=rf"predictions.shard{shard_of('s9.nii.gz', 2)}of2.csv': no row for 1 listed "
                                         r"study \('s9.nii.gz': not run yet"):
        merge()
    (folder / "s9.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"shard0of2.csv': \d row\(s\) another model or inference setting"):
        merge(keep_ratio=0.25)
    # an unreadable study: its shard writes an error row; the merge writes the whole file, then ends with status 3
    # (it ended 0, so a script chaining shards and merge saw success)
    (folder / "s8.nii.gz").write_bytes(b"not a nifti file")
    run_inference(bundle_root, input=str(folder), output_dir=str(out), shard_index=shard_of("s8.nii.gz", 2),
                  shard_count=2)
    with pytest.raises(SystemExit) as stop:
        merge()
    assert stop.value.code == 3
    rows = {r["id"]: r for r in read_rows(out / "predictions.csv")}
    assert sorted(rows) == sorted([*ids, "s8.nii.gz"]) and rows["s8.nii.gz"]["error"]


@pytest.mark.slow
def test_bundle_cli_single_file_input(tmp_path, bundle_root):
    """`--input one_file.nii.gz` is one study (it used to be read as a CSV); the summary line is logged to stdout."""
    import subprocess
    import sys

    study = _nifti(tmp_path / "one_file.nii.gz", (10, 12, 9))
    out = tmp_path / "out"
    configs = REPO / "bundles" / "das_volume_classification" / "configs"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(INFERENCE),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
           "--bundle_root", str(bundle_root), "--size", str(SIZE), "--input", str(study), "--output_dir", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f"predictions: 1 studies written to {out / 'predictions.csv'} (0 unreadable)" in proc.stdout
    (row,) = read_rows(out / "predictions.csv")
    assert row["id"] == "one_file.nii.gz" and row["error"] == "" and row["source"] == str(study)

    # `run merge --init_id merge_initialize`: only the start-up checks, no network built; checked against the
    # listing, here the folder with one more study than was predicted: refused, naming the file and the study
    _nifti(tmp_path / "extra.nii.gz", (10, 12, 9), seed=3)
    onnx = bundle_root / "models" / "model.onnx"
    onnx_state = onnx.stat().st_mtime_ns if onnx.exists() else None
    merge = [c if c != str(study) else str(tmp_path) for c in cmd]
    merge[4:4] = ["merge", "--init_id", "merge_initialize"]
    proc = subprocess.run(merge, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert (f"'{out / 'predictions.csv'}': no row for 1 listed study ('extra.nii.gz': not run yet, or the shard was "
            "killed)") in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-4000:]
    assert "Engine run" not in proc.stdout and (onnx.stat().st_mtime_ns if onnx.exists() else None) == onnx_state


VIDEO_INFERENCE = REPO / "bundles" / "das_video_classification" / "configs" / "inference.json"


def test_video_bundle_inference_records_source_frames(tmp_path):
    """The video bundle's inference.json over a folder: clips, a still image and a volume (error rows: a video model
    takes clips, as its training does)."""
    from monai.bundle import ConfigParser
    from PIL import Image

    from monai_das.transforms import uniform_indices

    folder = tmp_path / "clips"
    folder.mkdir()
    for name, n in (("a.gif", 12), ("b.gif", 5), ("still.gif", 1)):
        frames = [Image.fromarray(np.full((20, 24, 3), 20 * t, np.uint8)) for t in range(n)]
        frames[0].save(folder / name, save_all=True, append_images=frames[1:], duration=100)
    _nifti(folder / "vol.nii.gz", (9, 12, 10))

    def parser(root, **overrides):
        p = ConfigParser()
        p.read_config(str(VIDEO_INFERENCE))
        p.update({"bundle_root": str(root), "size": 16, "num_frames": 8, "device": "$torch.device('cpu')",
                  **overrides})
        return p

    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(parser(root).get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    out = tmp_path / "out"
    parser(root, input=str(folder), output_dir=str(out)).get_parsed_content("evaluator").run()
    rows = check_outputs(out / "predictions.csv", ["a.gif", "b.gif", "still.gif", "vol.nii.gz"])
    assert "has 1 frame(s), fewer than min_frames=2" in rows["still.gif"]["error"]
    assert "is an image or volume file, not a clip" in rows["vol.nii.gz"]["error"]
    for sid, n in (("a.gif", 12), ("b.gif", 5)):
        assert rows[sid]["error"] == "", rows[sid]["error"]
        kept = [int(i) for i in rows[sid]["kept_indices"].split(";")]
        frames = [int(i) for i in rows[sid]["source_frames"].split(";")]
        assert frames == uniform_indices(n, 8)[kept].tolist()  # the clip's own frame numbers


def test_exit_status_is_3_when_the_predictions_file_holds_errors(tmp_path, caplog, monkeypatch):
    """Bundle inference ended with status 0 when every study failed (trial T55); the Deploy app exits 3."""
    from monai_das.engines import exit_status

    csv_path = tmp_path / "predictions.csv"
    exit_status(csv_path)  # no file (nothing listed): nothing to say
    csv_path.write_text("id,source,fingerprint,label,pred_label,error\na,/x/a,1,,0,\nb,/x/b,1,,1,\n")
    exit_status(csv_path)  # every study classified: returns
    csv_path.write_text("id,source,fingerprint,label,pred_label,error\na,/x/a,1,,0,\n"
                        "b,/x/b,1,,,cannot read '/x/b': truncated\n")
    with caplog.at_level(logging.ERROR, logger="monai_das.engines"), pytest.raises(SystemExit) as stop:
        exit_status(csv_path)
    assert stop.value.code == 3
    # a torchrun shard says it and ends 0: a failing worker would make torchrun stop the shards still predicting
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "x"}.items():
        monkeypatch.setenv(key, value)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="monai_das.engines"):
        exit_status(csv_path)
    assert "(a torchrun shard: exit status 0, so that the other shards finish)" in caplog.text
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="monai_das.engines"), pytest.raises(SystemExit):
        exit_status(csv_path)
    assert (f"1 of 2 studies in '{csv_path}' could not be classified (their 'error' cells say why; the first, 'b': "
            "cannot read '/x/b': truncated): exit status 3") in caplog.text
