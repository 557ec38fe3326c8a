"""User datalists (JSON / CSV), their classes and checks, the patient-level split and the header-only data facts."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from monai_das.data.datalist import (
    check_class_names,
    check_no_copies,
    check_study_shapes,
    content_key,
    datalist_classes,
    datalist_splits,
    load_datalist,
    split_training,
)


# ------------------------------------------------------------------------------------------------------ helpers
def _touch(root: Path, *names: str) -> None:
    """Small `.npy` volumes (4×5×6) at `root/name`."""
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / n, np.zeros((4, 5, 6), np.uint8))


def _json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path


def _csv(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _nifti(path: Path, shape) -> str:
    import nibabel as nib

    nib.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4)).to_filename(str(path))
    return str(path)


def _clip(path: Path, frames: int, size=(12, 16)) -> str:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size[1], size[0]))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((*size, 3), 30 * i, np.uint8))
    writer.release()
    return str(path)


def _dicom(path: Path, rows: int, cols: int, frames: int = 1, series: str | None = None, number: int | None = None
           ) -> str:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series or generate_uid()
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "US", rows, cols, 1
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
        "MONOCHROME2", 8, 8, 7, 0)
    if frames > 1:
        ds.NumberOfFrames = frames
    if number is not None:
        ds.InstanceNumber = number
    ds.PixelData = np.zeros((frames, rows, cols), np.uint8).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return str(path)


@pytest.fixture
def json_datalist(tmp_path):
    _touch(tmp_path, "img/a.npy", "img/b.npy", "img/c.npy", "img/d.npy", "img/e.npy")
    (tmp_path / "benign").mkdir()  # a folder named like a label: MONAI's reader would turn the label into a path
    (tmp_path / "p1").mkdir()
    return _json(tmp_path / "datalist.json", {
        "labels": {"0": "benign", "1": "malignant"},
        "training": [
            {"image": "img/a.npy", "label": "benign", "group": "p1", "evidence": [2, 3]},
            {"image": "img/b.npy", "label": 1, "group": None, "fold": 0},
        ],
        "validation": [{"image": "img/c.npy", "label": "malignant", "group": 7}],
        "test": ["img/d.npy", {"image": "img/e.npy", "label": -1}],
    })


# ---------------------------------------------------------------------------------------------------- load_datalist
def test_json_datalist_items(json_datalist):
    root = json_datalist.parent
    train = load_datalist(json_datalist)
    assert train == [
        {"image": str(root / "img/a.npy"), "label": 0, "label_name": "benign", "group": "p1",
         "source_line": f"{json_datalist}:training[0]", "evidence": [2, 3]},
        {"image": str(root / "img/b.npy"), "label": 1, "label_name": "malignant", "group": str(root / "img/b.npy"),
         "source_line": f"{json_datalist}:training[1]", "evidence": []},  # blank group → the image itself; "fold" is
        # not carried; no evidence → [] since the other item has some (every item the same keys, for the collation)
    ]
    (val,) = load_datalist(json_datalist, split="validation")
    assert (val["label"], val["group"]) == (1, "7")
    test = load_datalist(json_datalist, split="test")
    assert [(t["image"], t["label"], t["label_name"]) for t in test] == [
        (str(root / "img/d.npy"), -1, ""), (str(root / "img/e.npy"), -1, "")]
    assert datalist_splits(json_datalist) == ["training", "validation", "test"]
    assert datalist_classes(json_datalist) == ["benign", "malignant"]


def test_csv_datalist_classes_dataset_dir_and_evidence(tmp_path):
    data = tmp_path / "data"
    _touch(data, "x1.npy", "x2.npy", "sub/x3.npy", "abs.npy")
    (tmp_path / "lists").mkdir()
    path = _csv(tmp_path / "lists" / "labels.csv",
                "image, label ,group,evidence,comment", "x1.npy,normal,pA,1;4,hi", "sub/x3.npy,tumor,,,",
                f"{data / 'abs.npy'},tumor,pB,,",  # an absolute path inside dataset_dir is allowed
                "x2.npy,normal,pA, 0 ; 2 ,")
    items = load_datalist(path, dataset_dir=data)
    assert [(it["label"], it["label_name"]) for it in items] == [
        (0, "normal"), (1, "tumor"), (1, "tumor"), (0, "normal")]
    assert items[0]["evidence"] == [1, 4] and items[3]["evidence"] == [0, 2] and items[1]["evidence"] == []
    assert items[1]["group"] == str(data / "sub/x3.npy") and items[1]["source_line"] == f"{path}:3"
    assert all(set(it) <= {"image", "label", "label_name", "group", "source_line", "evidence"} for it in items)
    assert datalist_classes(path) == ["normal", "tumor"] and datalist_splits(path) == ["training"]
    # class names given: their order decides the indices
    assert [it["label"] for it in load_datalist(path, data, label_names=["tumor", "normal"])] == [1, 0, 0, 1]


def test_class_names_one_check_naming_its_source():
    """One check of class names for a datalist, label_names, a model card and MONAI Label's --conf labels (the app
    had its own copy): each error names where the names came from and what is wrong with them."""
    assert check_class_names([" a", "b "], "--conf labels", strip=True) == ["a", "b"]
    assert check_class_names([" a", "b"], "l.json: 'labels'") == [" a", "b"]  # a file's names stay the model's
    for names, strip, why in (([], False, "none given"), (["a", " "], False, "name 2 is blank"),
                              (["a", "b ", " b"], True, "'b' is given 2 times"), (["a", "a", "a"], False,
                                                                                   "'a' is given 3 times")):
        with pytest.raises(ValueError, match=rf"^--conf labels must be distinct, non-blank class names \({why}\)"):
            check_class_names(names, "--conf labels", strip=strip)
    with pytest.raises(ValueError, match=r"^the model card 'm' das_model#label_names: class name '\$x' starts"):
        check_class_names(["a", "$x"], "the model card 'm' das_model#label_names")
    # names spelled alike (a datalist's labels are refused so): refused where a user gives them (spelling=True), kept
    # where a model card holds them (trained so; trial h72i: --conf labels Normal,normal passed, training failed later)
    assert check_class_names(["Normal", "normal"], "the model card 'm' das_model#label_names") == ["Normal", "normal"]
    with pytest.raises(ValueError, match=r"^--conf labels: the class names 'Normal' and 'normal' differ only in case"):
        check_class_names(["Normal", " normal"], "--conf labels", strip=True, spelling=True)
    with pytest.raises(ValueError, match=r"'non-covid' and 'Non Covid' differ only in case, spaces or punctuation"):
        check_class_names(["non-covid", "Non Covid"], "label_names", spelling=True)
    assert check_class_names(["T1", "T2", "t1c"], "label_names", spelling=True) == ["T1", "T2", "t1c"]


def test_a_huge_list_of_class_names_gives_a_short_error(tmp_path):
    """A hostile datalist with 10^5 class names was refused by an error printing every one of them: the errors that
    echo class names show the first ones and the count."""
    _touch(tmp_path, "a.npy", "b.npy")
    names = [f"class{i}" for i in range(10**5)]
    js = _json(tmp_path / "l.json", {"labels": names, "training": [{"image": "a.npy", "label": 0},
                                                                    {"image": "b.npy", "label": 1}]})
    for kwargs, what in (({"label_names": ["a", "b"]}, "top-level 'labels' name the classes"),
                         ({"label_names": names + ["class7"]}, "label_names must be distinct")):
        with pytest.raises(ValueError, match=what) as refused:
            datalist_classes(js, **kwargs)
        assert "... (100000 in all)" in str(refused.value) or "... (100001 in all)" in str(refused.value)
        assert len(str(refused.value)) < 1500


def test_class_order_given_for_a_datalist(tmp_path):
    """A CSV cannot name its classes: label_names (the bundle's key) gives their order; checked, and never two
    sources of class names that disagree."""
    _touch(tmp_path, "a.npy", "b.npy")
    path = _csv(tmp_path / "l.csv", "image,label", "a.npy,normal", "b.npy,abnormal")
    assert datalist_classes(path) == ["abnormal", "normal"]  # sorted by default
    assert datalist_classes(path, label_names=("normal", "abnormal")) == ["normal", "abnormal"]
    for bad, match in ((["normal", "normal"], "distinct"), ("normal", "at least 2"), (["normal", " "], "non-blank"),
                       (["normal", "$abnormal"], "label_names")):
        with pytest.raises(ValueError, match=match):
            datalist_classes(path, label_names=bad)
    # a JSON that names its classes: label_names must name the same ones, else refused naming both
    js = _json(tmp_path / "l.json", {"labels": {"0": "normal", "1": "abnormal"},
                                     "training": [{"image": "a.npy", "label": 0}, {"image": "b.npy", "label": 1}]})
    assert datalist_classes(js, label_names=["normal", "abnormal"]) == ["normal", "abnormal"]
    with pytest.raises(ValueError, match=r"top-level 'labels' name the classes \['normal', 'abnormal'\], "
                                         r"label_names gives \['abnormal', 'tumour'\]"):
        datalist_classes(js, label_names=["abnormal", "tumour"])
    # among many classes the one that differs is named: both lists end after 20 names (review r72f)
    many = [f"class{i:02d}" for i in range(30)]
    js30 = _json(tmp_path / "l30.json", {"labels": many, "training": [{"image": "a.npy", "label": 0}]})
    with pytest.raises(ValueError, match=r"\(30 in all\)\] \(only in 'labels': \['class25'\]; only in label_names: "
                                         r"\['Class25'\]\)"):
        datalist_classes(js30, label_names=[*many[:25], "Class25", *many[26:]])
    # ... in any order (an external test list coded the other way round: the card's order given, its --label_names
    # was refused, trial T68b): its integer labels index its own list, so they are read by name
    assert datalist_classes(js, label_names=["abnormal", "normal"]) == ["abnormal", "normal"]
    items = load_datalist(js, label_names=["abnormal", "normal"])
    assert [(it["label"], it["label_name"]) for it in items] == [(1, "normal"), (0, "abnormal")]
    named = _json(tmp_path / "n.json", {"labels": ["normal", "abnormal"], "training": [{"image": "a.npy",
                                                                                       "label": "abnormal"}]})
    assert [it["label"] for it in load_datalist(named, label_names=["abnormal", "normal"])] == [0]  # names as names
    # a label that is not among the names given: refused naming the line
    with pytest.raises(ValueError, match=r"l\.csv:3: label 'abnormal' is not one of \['normal', 'tumour'\]"):
        load_datalist(path, label_names=["normal", "tumour"])
    floats = _csv(tmp_path / "f.csv", "image,label", "a.npy,0.0", "b.npy,1.0")  # a spreadsheet's numbers (trial T57)
    with pytest.raises(ValueError, match=r"f\.csv:2: label '0\.0' is not one of \['normal', 'tumour'\] \(a class "
                                         r"index is an integer: 0 for 'normal'"):
        load_datalist(floats, label_names=["normal", "tumour"])
    with pytest.raises(ValueError, match="label_names must be distinct"):  # as datalist_classes (one class twice)
        load_datalist(path, label_names=["normal", "abnormal", "normal"])


def test_csv_header_columns_in_any_case(tmp_path):
    """A spreadsheet's capitalised header ('Image,Label,Split') was refused as lacking 'label', though a patient column
    is matched in any case (trial T61a): the known columns in any case; two spellings of one column are refused."""
    _touch(tmp_path, "a.npy", "b.npy", "c.npy")
    path = _csv(tmp_path / "caps.csv", "Image,LABEL,Split,Evidence", "a.npy,x,train,1;2", "b.npy,y,train,",
                "c.npy,x,test,")
    assert [(it["label"], it.get("evidence")) for it in load_datalist(path)] == [(0, [1, 2]), (1, [])]
    assert len(load_datalist(path, split="test")) == 1
    for header in ("image,Label,label", "image,Label,LABEL"):  # which one holds the labels would be a guess
        both = _csv(tmp_path / "both.csv", header, "a.npy,x,y")
        with pytest.raises(ValueError, match=r"both\.csv:1: the CSV header has the column 'label' 2 times "
                                             rf"\(\[{header[6:11]!r}, {header[12:]!r}\].*keep one"):
            load_datalist(both)


def test_csv_split_column_gives_validation_and_test_lists(tmp_path):
    _touch(tmp_path, "a.npy", "b.npy", "c.npy", "d.npy", "e.npy")
    path = _csv(tmp_path / "labels.csv", "image,label,group,split", "a.npy,x,p1,", "b.npy,y,p2,Train",
                "c.npy,x,p3,val", "d.npy,y,p4,test", "e.npy,,p5,test")
    assert datalist_splits(path) == ["training", "validation", "test"]
    assert [it["image"] for it in load_datalist(path)] == [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]
    assert [it["source_line"] for it in load_datalist(path, split="validation")] == [f"{path}:4"]
    test = load_datalist(path, split="test")
    assert [(it["label_name"], it["source_line"]) for it in test] == [("y", f"{path}:5"), ("", f"{path}:6")]
    # only the training list: the error says how to give another one
    only = _csv(tmp_path / "only.csv", "image,label", "a.npy,x")
    with pytest.raises(ValueError, match=r"only\.csv: has no 'test' list .*'split' column"):
        load_datalist(only, split="test")


@pytest.mark.parametrize(
    "rows, match",
    [
        (["image,label,group,split", "a.npy,x,p1,", "b.npy,y,p1,test"],
         r"labels\.csv:3: patient \(group\) 'p1' is in the 'test' list and in the 'training' list \(.*labels\.csv:2\)"),
        (["image,label,split", "a.npy,x,", "./a.npy,x,validation"],
         r"labels\.csv:3: image '\./a\.npy' is in the 'validation' list and in the 'training' list"),
        # one study grouped on one side only, or under two groups: still the same image in two lists
        (["image,label,group,split", "a.npy,x,p1,", "a.npy,x,,test"],
         r"labels\.csv:3: image 'a\.npy' is in the 'test' list and in the 'training' list \(.*labels\.csv:2\)"),
        (["image,label,group,split", "a.npy,x,p1,", "a.npy,x,p9,validation"],
         r"labels\.csv:3: image 'a\.npy' is in the 'validation' list and in the 'training' list"),
        (["image,label,split", "a.npy,x,holdout"], r"labels\.csv:2: split 'holdout' is not one of"),
        # a spreadsheet's semicolons, and indices written as floats (trial T57): said what they are
        (["image;label;split", "a.npy;x;"], r"labels\.csv:1: the CSV header lacks .* separated by ';': a datalist "
                                            r"CSV is comma-separated"),
    ],
)
def test_csv_split_column_errors(tmp_path, rows, match):
    _touch(tmp_path, "a.npy", "b.npy")
    with pytest.raises(ValueError, match=match):
        load_datalist(_csv(tmp_path / "labels.csv", *rows))


def test_json_patient_in_two_lists_is_refused(tmp_path):
    _touch(tmp_path, "a.npy", "b.npy")
    path = _json(tmp_path / "list.json", {"training": [{"image": "a.npy", "label": "x", "group": "p1"}],
                                         "test": [{"image": "b.npy", "label": "x", "group": "p1"}]})
    with pytest.raises(ValueError, match=r"list\.json:test\[0\]: patient \(group\) 'p1' .*'training' list"):
        load_datalist(path)


def test_integer_labels_and_classes_over_all_splits(tmp_path):
    _touch(tmp_path, "a.npy", "b.npy", "c.npy")
    csv_path = _csv(tmp_path / "ints.csv", "image,label", "a.npy,0", "b.npy,2", "c.npy,1")
    assert datalist_classes(csv_path) == ["0", "1", "2"]  # indices, not sorted strings
    assert [it["label"] for it in load_datalist(csv_path)] == [0, 2, 1]
    # a gap (labels 1, 2 of a 1-based grading) would add a class without items: refused, naming it
    gap = _csv(tmp_path / "grades.csv", "image,label", "a.npy,1", "b.npy,2")
    with pytest.raises(ValueError, match=r"grades\.csv: integer labels are class indices 0\.\.2, but no item has "
                                         r"class \[0\].*test list of a model trained before: give label_names "
                                         r"with the model's classes.*renumber them from 0, or name the classes"):
        datalist_classes(gap)
    assert load_datalist(gap, label_names=["none", "mild", "severe"])[1]["label"] == 2  # named: every index meant
    # integers written as floats (pandas, a column that held a blank) were names sorted as text: class '10.0' was
    # index 2, and a study list coded 0..10 was read permuted without a word (trial T61a): refused, said why
    floats = _csv(tmp_path / "floats.csv", "image,label", *(f"{n}.npy,{i}.0" for i, n in enumerate("abc")),
                  "a.npy,10", "b.npy,-1.00")
    with pytest.raises(ValueError, match=r"floats\.csv: the labels \['-1\.00', '0\.0', '1\.0', '2\.0', '10'\] are "
                                         r"whole numbers written with a decimal point \('0\.0' at .*floats\.csv:2"):
        datalist_classes(floats)
    grades = _csv(tmp_path / "grades.csv", "image,label", "a.npy,1.5", "b.npy,2.0", "c.npy,10.0")
    assert datalist_classes(grades) == ["1.5", "2.0", "10.0"]  # numbers by value (review: '10.0' before '2.0')
    latin = tmp_path / "excel.csv"
    latin.write_bytes("image,label\na.npy,lésion\n".encode("cp1252"))
    with pytest.raises(ValueError, match=r"excel\.csv:2: not UTF-8 text \(byte 0xe9 at offset 19, in 'a\.npy,lésion' "
                                         r"as Windows-1252 reads it\)"):
        datalist_classes(latin)
    # a class seen only in validation still gets its index in training, so both splits agree
    path = _json(tmp_path / "split.json", {"training": [{"image": "a.npy", "label": "cyst"}],
                                           "validation": [{"image": "b.npy", "label": "cancer"}]})
    assert datalist_classes(path) == ["cancer", "cyst"]
    assert load_datalist(path)[0]["label"] == 1 and load_datalist(path, split="validation")[0]["label"] == 0


def test_capitalised_class_names_sorted_first_are_warned(tmp_path, caplog):
    """String labels become classes sorted by character code, so ``Yes``/``no`` make ``Yes`` class 0 and ``no`` class
    1, the positive class of sensitivity/specificity (trial h72e): a warning names the order and ``label_names``.
    Names of one case, or whose order does not depend on case, pass without a word."""
    data = tmp_path / "data"
    _touch(data, "a.npy", "b.npy")
    with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):
        path = _csv(data / "labels.csv", "image,label", "a.npy,Yes", "b.npy,no")
        assert datalist_classes(path) == ["Yes", "no"]
    assert re.search(r"labels\.csv: the classes are the labels sorted by character code, capitals first: 0 'Yes', "
                     r"1 'no' \(class 1 is the positive class .*give label_names", caplog.text)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):
        for a, b in [("yes", "no"), ("Normal", "Tumour"), ("Abnormal", "normal")]:
            path = _csv(data / "labels.csv", "image,label", f"a.npy,{a}", f"b.npy,{b}")
            assert datalist_classes(path) == sorted([a, b])
    assert not caplog.text


def test_label_typos_are_warned_and_spellings_refused(tmp_path, caplog):
    """A rare label one typo from a frequent one (``malignnt`` once beside 12 ``malignant``) would become a class of
    its own: a warning names both and where they are (not an error: ``EMCI``/``LMCI`` are both classes). Labels that
    differ only in case, spaces or punctuation are refused. Alike real classes (``grade1``/``grade2``,
    ``normal``/``abnormal``, a frequent pair, short names) pass without a word; so does a JSON that names both."""
    from monai_das.data.datalist import _one_typo_apart, classes_of_labels

    assert _one_typo_apart("malignnt", "malignant") and _one_typo_apart("bengin", "benign")
    assert _one_typo_apart("benign", "benigm") and _one_typo_apart("covid", "covid1")
    assert not _one_typo_apart("grade1", "grade2") and not _one_typo_apart("normal", "abnormal")
    assert not _one_typo_apart("benign", "benign") and not _one_typo_apart("cyst", "cancer")
    from monai_das.data.datalist import misspelt_class

    assert misspelt_class("bb", ["a", "b", "bb"]) == "b" and misspelt_class("Benigm", ["benign", "x"]) == "benign"
    assert misspelt_class("c", ["a", "b", "c"]) is None and misspelt_class("T2", ["T1", "T2"]) is None
    assert misspelt_class("ba", ["ab"]) is None and misspelt_class("grade2", ["grade1"]) is None
    assert misspelt_class("10", [str(i) for i in range(11)]) is None  # class indices (review)

    data = tmp_path / "data"
    names = [f"c{i}.npy" for i in range(14)]
    _touch(data, *names)
    rows = [f"{n},malignant" for n in names[:12]]
    warned = (r"labels\.csv: the label '{}' \(.*labels\.csv:14\) occurs in 1 item and is one typo away from "
              r"'malignant' \(12 items, first at .*labels\.csv:2\): if it is misspelt, fix it")
    for typo in ("malignnt", "Malignnt"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):
            items = load_datalist(_csv(data / "labels.csv", "image,label", *rows, f"{names[12]},{typo}"))
        assert re.search(warned.format(typo), caplog.text) and items[-1]["label_name"] == typo
    # a small study: 7 'bright', 6 'dark' and one 'brigth' (5× as many and at least 5 items suffice)
    caplog.clear()
    small = [f"{n},bright" for n in names[:7]] + [f"{n},dark" for n in names[7:13]] + [f"{names[13]},brigth"]
    with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):
        load_datalist(_csv(data / "labels.csv", "image,label", *small))
    assert re.search(r"the label 'brigth' .* occurs in 1 item and is one typo away from 'bright' \(7 items", caplog.text)
    with pytest.raises(ValueError, match=r"'non-covid' .* and 'Non_Covid' .* differ only in case, spaces or punct"):
        load_datalist(_csv(data / "labels.csv", "image,label", f"{names[0]},non-covid", f"{names[1]},Non_Covid"))
    # real classes that look alike: no word
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):
        for a, b in [("grade1", "grade2"), ("normal", "abnormal"), ("ab", "abc")]:
            path = _csv(data / "labels.csv", "image,label", *[f"{n},{a}" for n in names[:12]], f"{names[12]},{b}")
            assert datalist_classes(path) == sorted([a, b])
        # too few items to tell which spelling is meant: 4 'benign', 1 'bengin'
        path = _csv(data / "labels.csv", "image,label", *[f"{n},benign" for n in names[:4]], f"{names[4]},bengin")
        assert datalist_classes(path) == ["bengin", "benign"]
        frequent = {"benign": "x:1", "benigns": "x:2"}  # both frequent: two meant classes
        assert classes_of_labels(frequent, "x", {"benign": 30, "benigns": 20}) == ["benign", "benigns"]
        # a labels block names both classes
        items = [{"image": n, "label": "malignant"} for n in names[:12]] + [{"image": names[12], "label": "malignnt"}]
        path = _json(data / "named.json", {"labels": {"0": "malignant", "1": "malignnt"}, "training": items})
        assert [it["label"] for it in load_datalist(path)][-2:] == [0, 1]
    assert "typo" not in caplog.text
    # many distinct labels (a numeric column by mistake): no pairwise stall, every one a class
    many = {f"{i}.5": f"x:{i}" for i in range(3000)}
    assert len(classes_of_labels(many, "x", {k: 1 for k in many})) == 3000


@pytest.mark.parametrize(
    "content, exc, match",
    [
        (["image,label", "a.npy,x", "missing.npy,y"], FileNotFoundError, r"labels\.csv:3: image .*missing\.npy"),
        (["image,label", "a.npy,x", "b.npy,"], ValueError, r"labels\.csv:3: the label is blank"),
        (["file,class", "a.npy,x"], ValueError,
         r"labels\.csv:1: .*lacks .*\['image', 'label'\].*has \['file', 'class'\]"),
        (["image,label", "../outside.npy,x"], ValueError, r"labels\.csv:2: image '\.\./outside\.npy' .*outside"),
        (["image,label", "a.npy,x", "b.npy,y", "./a.npy,x"], ValueError,
         r"labels\.csv:4: .*a\.npy' is listed twice .*labels\.csv:2"),
        (["image,label"], ValueError, r"labels\.csv: the 'training' list is empty"),
        (["image,label", "a.npy,benign", "b.npy,3"], ValueError, r"labels\.csv.*mix class indices and class names.*write every label the same way"),
        (["image,label,evidence", "a.npy,x,1;two"], ValueError, r"labels\.csv:2: evidence '1;two'"),
        (["image,label,evidence", "a.npy,x,5 22 29"], ValueError,
         r"labels\.csv:2: evidence '5 22 29' .*separate the indices with ';'"),
        (["image,label", ",x"], ValueError, r"labels\.csv:2: the image is blank"),
        (["image,label,group", "a.npy,x,p1", "b.npy,y,p2,extra"], ValueError,
         r"labels\.csv:3: 4 cells for the 3 header columns .*extra: \['extra'\].*quote a value that holds a comma"),
        (["image,label", "a.npy,Benign", "b.npy,benign"], ValueError,
         r"labels\.csv: the labels 'Benign' \(.*labels\.csv:2\) and 'benign' \(.*labels\.csv:3\) differ only in case"),
        # class names go into the model card, which MONAI's ckpt_export parses: '%/f.json#k' would copy a file in
        (["image,label", "a.npy,x", "b.npy,%/etc/secret.json#token"], ValueError,
         r"labels\.csv:3: class name '%/etc/secret\.json#token' starts with '%' \(a macro"),
        (["image,label", "a.npy,x", "b.npy,grade@#2"], ValueError,  # rewritten in place by MONAI's parser
         r"labels\.csv:3: class name 'grade@#2' holds '%#' or '@#'"),
        (["image,label", "a.npy,x", "b.npy,grade #2"], ValueError,  # 'grade ::2' in an exported model.ts
         r"labels\.csv:3: class name 'grade #2' holds '#' \(MONAI's config parser rewrites it to '::'"),
        # a name that prints as another one, or as another log line (security review T69b)
        (["image,label", "a.npy,x", 'b.npy,"ok\nFAKE LOG LINE - INFO - all good"'], ValueError,
         r"labels\.csv:3: class name 'ok\\nFAKE LOG LINE - INFO - all good' holds characters that print as something "
         r"else or nothing \(\\n\)"),
        (["image,label", "a.npy,x", "b.npy,benign\u202egnam"], ValueError,
         r"class name 'benign\\u202egnam' holds .*\(\\u202e\)"),
        # it goes into every report and predictions row (a card's 10 MB name: 20 MB reports; trial T71g)
        (["image,label", "a.npy,x", "b.npy," + "y" * 257], ValueError,
         r"labels\.csv:3: class name 'y{40}'\.\.\. is 257 characters long, more than 256"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, content, exc, match):
    data = tmp_path / "data"
    _touch(data, "a.npy", "b.npy")
    _touch(tmp_path, "outside.npy")
    with pytest.raises(exc, match=match):
        load_datalist(_csv(data / "labels.csv", *content))


def test_a_csv_not_utf8_is_refused_naming_the_line_and_offset_in_the_file(tmp_path):
    """
    A datalist saved by a spreadsheet as Windows-1252/Latin-1, its ``é`` on line 1402 (byte 17803): the refusal named
    "offset 1419", the offset in the 8 KiB chunk the reader was decoding, and no line. It names the line, the offset in
    the file and the line as Windows-1252 reads it; the study-list reader (inference ``--input list.csv``) too. A
    UTF-16 file ('Unicode Text') is named as such.
    """
    from monai_das.data.studies import list_studies

    _touch(tmp_path, "a.npy")
    rows = [f"a{i}.npy,{'yes' if i % 2 else 'no'}" for i in range(1400)]
    data = ("\n".join(["image,label", *rows, "résumé.npy,no"]) + "\n").encode("cp1252")
    assert data.index(b"\xe9") == 17803
    (tmp_path / "excel.csv").write_bytes(data)
    with pytest.raises(ValueError, match=r"excel\.csv:1402: not UTF-8 text \(byte 0xe9 at offset 17803, in "
                                         r"'résumé\.npy,no' as Windows-1252 reads it\); save it as UTF-8"):
        load_datalist(tmp_path / "excel.csv")
    with pytest.raises(ValueError, match=r"study list '.*excel\.csv' is not UTF-8 text \(line 1402: byte 0xe9 at "
                                         r"offset 17803, in 'résumé\.npy,no' as Windows-1252 reads it\)"):
        list_studies(tmp_path / "excel.csv")
    (tmp_path / "unicode.csv").write_bytes("image,label\na.npy,no\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"unicode\.csv: not UTF-8 text \(UTF-16 text, a spreadsheet's 'Unicode "
                                         r"Text'\); save it as UTF-8"):
        load_datalist(tmp_path / "unicode.csv")


def test_unreadable_datalist_text_is_a_short_refusal(tmp_path):
    """A datalist CSV or JSON that is not UTF-8, or not JSON, is a refusal of the run's input (one line at a bundle
    run's end, :func:`monai_das.engines.checks.refusal_site`), whose message names file, line and byte: it was raised
    ``from`` the decoder's error, so the run printed that error's traceback and MONAI's before it; a JSON file is not
    told to be saved in a spreadsheet's CSV format (trial t72h)."""
    from monai_das.data.listing import read_video_listing
    from monai_das.engines.checks import refusal_site

    _touch(tmp_path, "a.npy")
    (tmp_path / "latin.csv").write_bytes("image,label\na.npy,lésion\n".encode("cp1252"))
    (tmp_path / "latin.json").write_bytes('{"training": [{"image": "a.npy", "label": "lésion"}]}'.encode("cp1252"))
    (tmp_path / "broken.json").write_text('{"training": [{"image": "a.npy" "label": "no"}]}')
    for path, reader, message in (
        ("latin.csv", load_datalist, r"latin\.csv:2: not UTF-8 text \(byte 0xe9 at offset 19"),
        ("latin.json", load_datalist, r"latin\.json:1: not UTF-8 text \(byte 0xe9 .*\); save it as UTF-8\.$"),
        ("broken.json", load_datalist, r"broken\.json:1: not valid JSON: Expecting ',' delimiter \(column 33\)"),
        ("latin.csv", read_video_listing, r"latin\.csv:2: not UTF-8 text \(byte 0xe9 at offset 19"),
    ):
        with pytest.raises(ValueError, match=message) as e:
            reader(tmp_path / path)
        assert e.value.__cause__ is None and refusal_site(e.value) is not None, path


@pytest.mark.parametrize(
    "training, extra, match",
    [
        ([{"image": "a.npy", "label": "benign"}, {"image": "b.npy", "label": "cyst"}], {"labels": {"0": "benign"}},
         r"datalist\.json:training\[1\]: label 'cyst' is not one of \['benign'\]"),
        ([{"image": "a.npy", "label": 0}, {"image": "b.npy", "label": 7}], {"labels": {"0": "n", "1": "t"}},
         r"datalist\.json:training\[1\]: label 7 is outside 0\.\.1"),
        ([{"image": "a.npy", "label": "n"}, {"image": "b.npy"}], {},
         r"datalist\.json:training\[1\]: the label is blank"),
        ([{"image": "a.npy", "label": "n"}, {"image": "ABS", "label": "n"}], {},
         r"datalist\.json:training\[1\]: image '/.*other\.npy' resolves .*outside .*must lie inside dataset_dir"),
        ([{"image": "a.npy", "label": "n"}, {"image": "a.npy", "label": "n"}], {},
         r"datalist\.json:training\[1\]: .*listed twice .*training\[0\]"),
        ([{"image": "nope.npy", "label": "n"}], {}, r"datalist\.json:training\[0\]: image .*nope\.npy' does not exist"),
        ([], {}, r"datalist\.json: the 'training' list is empty"),
        ([{"image": "a.npy", "label": [0, 1]}], {}, r"datalist\.json:training\[0\]: label \[0, 1\] must be"),
        ([{"image": "a.npy", "label": 0}], {"labels": {"0": "$print(1)"}},
         r"datalist\.json: 'labels': class name '\$print\(1\)' starts with"),
        # a patient id of another type: ["p1"] was the patient "['p1']", NaN "nan" (trial T64b)
        ([{"image": "a.npy", "label": "n", "group": "p1"}, {"image": "b.npy", "label": "n", "group": ["p1"]}], {},
         r"datalist\.json:training\[1\]: the patient \('group'\) \['p1'\] is a list: a patient id is a text or"),
        ([{"image": "a.npy", "label": "n", "patient_id": float("nan")}], {},
         r"datalist\.json:training\[0\]: the patient \('patient_id'\) nan is a float"),
        ([{"image": "a.npy", "label": "n", "patient_id": 12.5}, {"image": "b.npy", "label": "n", "patient_id": 3.0}],
         {}, r"datalist\.json:training\[0\]: the patient \('patient_id'\) 12\.5 is a float"),
    ],
)
def test_json_errors_name_file_and_item(tmp_path, training, extra, match):
    data = tmp_path / "data"
    _touch(data, "a.npy", "b.npy")
    _touch(tmp_path, "other.npy")
    for it in training:
        if it["image"] == "ABS":
            it["image"] = str(tmp_path / "other.npy")
    path = _json(data / "datalist.json", {"training": training, **extra})
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_datalist(path)


def test_json_keys_given_twice_and_nesting_too_deep_are_refused(tmp_path):
    """json.load keeps the last of a key given twice: a second "training" list dropped the first's studies, and
    {"label": 0, "label": 1} trained label 1 (trial T64b); a JSON nested 100 000 deep was a bare RecursionError."""
    data = tmp_path / "data"
    _touch(data, "a.npy", "b.npy")
    (data / "twice.json").write_text('{"training": [{"image": "a.npy", "label": 0}], '
                                     '"training": [{"image": "b.npy", "label": 1}]}')
    with pytest.raises(ValueError, match=r"twice\.json: an object has the key 'training' twice \('<list>', then "
                                         r"'<list>'\).*keep one"):
        load_datalist(data / "twice.json")
    (data / "label.json").write_text('{"training": [{"image": "a.npy", "label": 0, "label": 1}]}')
    with pytest.raises(ValueError, match=r"label\.json: an object has the key 'label' twice \(0, then 1\)"):
        load_datalist(data / "label.json")
    # a whole-number float patient id (pandas' to_json of an id column with gaps) loads, as before (review)
    (data / "floats.json").write_text('{"training": [{"image": "a.npy", "label": 0, "patient_id": 12.0}, '
                                      '{"image": "b.npy", "label": 1, "patient_id": 3.0}]}')
    assert [it["group"] for it in load_datalist(data / "floats.json")] == ["12.0", "3.0"]
    (data / "deep.json").write_text('{"training": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match=r"deep\.json: nested too deeply to be a datalist"):
        load_datalist(data / "deep.json")


def test_integers_too_long_to_be_labels_are_named(tmp_path):
    """A 5000-digit label was Python's bare "Exceeds the limit (4300 digits) for integer string conversion" (JSON)
    or that from the class count (CSV), naming no file (trial T67b); a 10-digit CSV label would have been checked
    against every class index up to it."""
    data = tmp_path / "data"
    _touch(data, "a.npy", "b.npy")
    (data / "digits.json").write_text('{"training": [{"image": "a.npy", "label": ' + "9" * 5000 + "}]}")
    with pytest.raises(ValueError, match=r"digits\.json: not readable as a datalist: Exceeds the limit"):
        load_datalist(data / "digits.json")
    for label in ("9" * 5000, "1234567890"):
        (data / "list.csv").write_text(f"image,label\na.npy,{label}\nb.npy,0\n")
        with pytest.raises(ValueError, match=r"list\.csv: the label \d+(\.\.\.)? at .*list\.csv:2 is no class "
                                             r"index \(an integer of \d+ digits\)"):
            load_datalist(data / "list.csv")


def test_missing_images_are_named_together_with_a_hint_for_windows_paths(tmp_path):
    """A CSV written on Windows ('clips\\a\\p01.mp4') was refused naming its first row only, of 23, without a word
    on the separators (trial Z): the first row, how many others and where, and how to write the paths here."""
    _touch(tmp_path / "clips" / "a", "p00.npy", "p01.npy", "p02.npy")
    rows = [f"clips\\a\\p0{i}.npy,x" for i in range(3)] + ["clips/a/p00.npy,y", "clips/a/gone.npy,y"]
    path = _csv(tmp_path / "list.csv", "image,label", *rows)
    with pytest.raises(FileNotFoundError) as e:
        load_datalist(path)
    assert str(e.value) == (
        f"{path}:2: image '{tmp_path}{os.sep}clips\\a\\p00.npy' does not exist. 3 more image(s) do not exist "
        "either (at list.csv:3, list.csv:4, list.csv:6). Their paths hold '\\' separators, a list written on "
        "Windows? Here paths are separated by '/': write them with '/' (e.g. 'clips/a/p00.npy').")
    path = _csv(tmp_path / "list.csv", "image,label", "clips/a/p00.npy,x", "clips/a/gone.npy,y")
    with pytest.raises(FileNotFoundError, match=r"list\.csv:3: image '.*gone\.npy' does not exist\.$"):
        load_datalist(path)  # one, no hint
    # a file of several lists: every list's missing images in the one error (the test rows were met in a second
    # run, trial T63a; then the validation rows in a third, trial T69a); a list's blank image is left to its reading
    split = _csv(tmp_path / "split.csv", "image,label,split", "clips/a/gone.npy,x,training", "clips/a/p00.npy,x,test",
                 "clips/a/lost.npy,y,test", "clips/a/p01.npy,y,validation", "clips/a/away.npy,x,validation",
                 ",y,validation")
    with pytest.raises(FileNotFoundError, match=r"gone\.npy' does not exist\. 2 more image\(s\) do not exist "
                                                r"either \(at split\.csv:6, split\.csv:4\)\. Missing in every list of "
                                                r"the file: 1 in 'training', 1 in 'validation', 1 in 'test'\.$"):
        load_datalist(split)
    import json

    listed = tmp_path / "split.json"  # a JSON datalist alike, its items named by list and index
    listed.write_text(json.dumps({"training": [{"image": "clips/a/gone.npy", "label": 0}],
                                  "test": [{"image": "clips/a/p00.npy", "label": 1},
                                           {"image": "lost.npy", "label": 1}]}))
    with pytest.raises(FileNotFoundError, match=r"1 more image\(s\) do not exist either \(at split\.json:test"
                                                r"\[1\]\)\. Missing in every list of the file: 1 in 'training', 1 in "
                                                r"'test'\.$"):
        load_datalist(listed)
    many = _csv(tmp_path / "many.csv", "image,label", *[f"m{i}.npy,{'xy'[i % 2]}" for i in range(25)])
    with pytest.raises(FileNotFoundError, match=r"24 more image\(s\) do not exist either \(at many\.csv:3, "
                                                r".*many\.csv:21, and 5 more\)\. Relative image paths"):
        load_datalist(many)  # up to 20 named


def test_paths_written_from_the_working_directory_name_the_dataset_dir_that_reads_them(tmp_path, monkeypatch):
    """Trial T56: a datalist in data/lists/ with paths written from the working directory ('data/images/a.npy') was
    refused with "image '.../data/lists/data/images/a.npy' does not exist" and no word on what to give; absolute paths
    elsewhere with "must lie inside dataset_dir" and no folder to give."""
    _touch(tmp_path / "data" / "images", "a.npy", "b.npy")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "lists").mkdir()
    path = _csv(tmp_path / "data" / "lists" / "list.csv", "image,label", "data/images/a.npy,x", "data/images/b.npy,y")
    with pytest.raises(FileNotFoundError) as e:
        load_datalist(path)
    assert (f"Relative image paths are read from the dataset folder '{path.parent}' (the datalist's folder unless "
            f"--dataset_dir gives another); 2 of them exist from the working directory '{tmp_path}' (e.g. "
            f"'{tmp_path / 'data' / 'images' / 'a.npy'}'): give --dataset_dir {tmp_path}") in str(e.value)
    assert len(load_datalist(path, dataset_dir=tmp_path)) == 2  # what it says reads them
    # relative to a third folder (neither the datalist's nor the working directory): the folder they are read from,
    # and that --dataset_dir gives another (trial T61a: nothing was said)
    monkeypatch.chdir(tmp_path / "data" / "lists")
    with pytest.raises(FileNotFoundError, match=r"Relative image paths are read from the dataset folder '.*lists' "
                                                r"\(the datalist's folder unless --dataset_dir gives another\): if "
                                                r"they are relative to another folder, give it as --dataset_dir\."):
        load_datalist(path)
    absolute = [f"{tmp_path / 'data' / 'images' / n},x" for n in ("a.npy", "b.npy")]
    with pytest.raises(ValueError, match=r"images must lie inside dataset_dir \(the datalist's folder unless "
                                         r"--dataset_dir gives another: .*, e\.g\. --dataset_dir "
                                         rf"{tmp_path}/data/images\)"):
        load_datalist(_csv(tmp_path / "data" / "lists" / "abs.csv", "image,label", *absolute))


def test_missing_split_and_unsupported_files(tmp_path, json_datalist):
    _touch(tmp_path, "a.npy")
    only = _json(tmp_path / "only.json", {"training": [{"image": "a.npy", "label": "x"}]})
    with pytest.raises(ValueError, match=r"only\.json: has no 'validation' list \(it has \['training'\]\)"):
        load_datalist(only, split="validation")
    with pytest.raises(ValueError, match=r"labels\.csv: has no 'test' list .*a CSV gives it with a 'split' column"):
        load_datalist(_csv(tmp_path / "labels.csv", "image,label", "a.npy,x"), split="test")
    with pytest.raises(ValueError, match=r"list\.txt' must be a MONAI datalist \.json or a \.csv"):
        load_datalist(_csv(tmp_path / "list.txt", "image,label"))
    with pytest.raises(FileNotFoundError, match=r"datalist file '.*nothere\.csv' does not exist"):
        datalist_classes(tmp_path / "nothere.csv")
    with pytest.raises(ValueError, match=r"bad\.json: 'labels' must map the indices 0\.\.N-1"):
        datalist_classes(_json(tmp_path / "bad.json", {"labels": {"1": "a"}, "training": []}))


# ----------------------------------------------------------------------------------------------- split_training
def _items(groups_per_label: dict[int, int], per_group: int = 2) -> list[dict]:
    return [{"image": f"{lab}_{g}_{i}", "label": lab, "group": f"L{lab}G{g}"}
            for lab, n in groups_per_label.items() for g in range(n) for i in range(per_group)]


def test_split_training_by_group_stratified_and_seeded(caplog):
    items = _items({0: 10, 1: 5})
    with caplog.at_level(logging.INFO, logger="monai_das.data.datalist"):
        train, val = split_training(items, val_fraction=0.2, seed=0)
    assert "15 groups → 12 training" in caplog.text
    val_groups, train_groups = {it["group"] for it in val}, {it["group"] for it in train}
    assert not val_groups & train_groups and len(train) + len(val) == len(items)
    assert len(val_groups) == 3  # round(0.2 × 15 groups)
    assert sorted(it["label"] for it in val)[::2] == [0, 0, 1]  # stratified: 2 of 10 label-0, 1 of 5 label-1 groups
    assert split_training(items, 0.2, seed=0) == (train, val)  # same seed, same split
    assert any(split_training(items, 0.2, seed=s)[1] != val for s in range(1, 6))
    assert [it["image"] for it in train] == [it["image"] for it in items if it in train]  # input order kept


def test_split_training_validates_every_class_of_two_or_more_patients(caplog):
    """18 patients, 2 of the rare class, val_fraction 0.2: the rounding gave the rare class no validation patient, so
    the validation AUC was NaN in every epoch and the best model epoch 1's (trial X). It gets one now; the other
    classes' picks stay; a class of one patient keeps it for training."""
    items = _items({0: 9, 1: 7, 2: 2, 3: 1})
    old_train, old_val = split_training(items, 0.2, seed=0, every_class=False)
    assert {it["label"] for it in old_val} == {0, 1}
    with caplog.at_level(logging.INFO, logger="monai_das.data.datalist"):
        train, val = split_training(items, 0.2, seed=0)
    assert {it["label"] for it in val} == {0, 1, 2} and {it["label"] for it in train} == {0, 1, 2, 3}
    assert [it for it in val if it["label"] != 2] == old_val  # the others' picks as before
    assert len({it["group"] for it in val if it["label"] == 2}) == 1
    assert "label(s) ['2'] had no validation group" in caplog.text  # classes by name (here their labels)
    assert split_training(items, 0.2, seed=0, return_added=True) == (train, val, ["2"])
    assert split_training(_items({0: 10, 1: 5}), 0.2, seed=0) == split_training(_items({0: 10, 1: 5}), 0.2, seed=0,
                                                                                 every_class=False)


def test_split_training_takes_the_classes_by_name_not_index():
    """The same patients as a JSON whose 'labels' keep the user's order and as a CSV (classes sorted) got other
    validation patients (trial T57: val AUC 0.851 vs 0.490, nothing said): the split follows the class names."""
    from monai_das.data.datalist import class_name_order

    names = ["normal", "benign", "malignant"]  # a JSON's own order; a CSV sorts them
    counts = {0: 21, 1: 10, 2: 4}
    items = [{**it, "label_name": names[it["label"]]} for it in _items(counts)]
    as_csv = [{**it, "label": sorted(names).index(it["label_name"])} for it in items]
    groups = [sorted(it["group"] for it in split_training(lst, 0.2, seed=0)[1]) for lst in (items, as_csv)]
    assert groups[0] == groups[1] and len(groups[0]) > 0
    assert class_name_order(names) == ["benign", "malignant", "normal"]
    assert class_name_order(["10", "2", "b", "1"]) == ["1", "2", "10", "b"]  # integer names by value
    # where the name order is the index order (every CSV, integer labels), the split is the one index order gave
    plain = _items(counts)
    named = [{**it, "label_name": str(it["label"])} for it in plain]
    assert [[it["group"] for it in part] for part in split_training(plain, 0.2, seed=3)] == \
        [[it["group"] for it in part] for part in split_training(named, 0.2, seed=3)]


def test_split_training_edge_cases():
    train, val = split_training(_items({0: 1, 1: 1}), val_fraction=0.1)  # 2 groups: one each, whatever the fraction
    assert len({it["group"] for it in train}) == 1 and len({it["group"] for it in val}) == 1
    train, val = split_training(_items({0: 4, 1: 1}), val_fraction=0.4)
    assert {it["label"] for it in train} == {0, 1}  # the only label-1 patient stays in training
    with pytest.raises(ValueError, match="at least 2 groups"):
        split_training(_items({0: 1}, per_group=3))
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        split_training(_items({0: 3}), val_fraction=1.0)
    with pytest.raises(ValueError, match=r"have no 'group' \(e\.g\. x\.csv:2\)"):
        split_training([{"image": "a", "label": 0, "group": " ", "source_line": "x.csv:2"}])


# -------------------------------------------------------------------------------------------- check_study_shapes
def test_check_study_shapes_volumes(tmp_path):
    items = [{"image": _nifti(tmp_path / "a.nii.gz", (10, 12, 6))},
             {"image": str(tmp_path / "b.npy")}]
    np.save(tmp_path / "b.npy", np.zeros((5, 8, 9), np.float32))
    facts = check_study_shapes(items, "volume")
    assert facts == {"in_channels": 1, "shapes": {items[0]["image"]: (1, 10, 12, 6), items[1]["image"]: (1, 5, 8, 9)},
                     "num_frames_range": (5, 10), "content_ids": {
                         content_key(it["image"]): f"'{it['image']}'" for it in items},  # no DICOM: file contents
                     "content_paths": {content_key(it["image"]): it["image"] for it in items},
                     "modalities": {},  # no DICOM file: no modality
                     # the NIfTI file's extent and voxel size in mm (identity affine: 1 mm); the .npy array has none
                     "geometry": {items[0]["image"]: ([10.0, 12.0, 6.0], [1.0, 1.0, 1.0])}, "patients": {},
                     "frame_rates": {}}
    assert check_study_shapes(items, "volume", slice_axis=2)["num_frames_range"] == (6, 9)
    assert list(check_study_shapes(items, "volume", max_items=1)["shapes"]) == [items[0]["image"]]
    # a multi-channel NIfTI (X×Y×Z×C) and a channel-first NumPy volume
    rgb = [_nifti(tmp_path / "c.nii", (6, 7, 8, 3)), str(tmp_path / "d.npy")]
    np.save(rgb[1], np.zeros((3, 4, 5, 6), np.uint8))
    assert check_study_shapes(rgb, "volume")["shapes"] == {rgb[0]: (3, 6, 7, 8), rgb[1]: (3, 4, 5, 6)}
    # a format without a header reader here is loaded with MONAI's LoadImage (and the given reader)
    np.savez(tmp_path / "e.npz", np.zeros((4, 5, 6), np.float32))
    assert check_study_shapes([str(tmp_path / "e.npz")], "volume", reader="NumpyReader")["shapes"] == {
        str(tmp_path / "e.npz"): (1, 4, 5, 6)}
    # as clips: frames along the first spatial axis
    assert check_study_shapes(items, "video")["shapes"][items[0]["image"]] == (10, 1, 12, 6)


def test_check_study_shapes_clips_and_dicom(tmp_path):
    avi = _clip(tmp_path / "clip.avi", 5)
    multi = _dicom(tmp_path / "cine.dcm", 12, 16, frames=4)
    facts = check_study_shapes([avi], "video")
    key = content_key(avi)
    assert facts == {"in_channels": 3, "shapes": {avi: (5, 3, 12, 16)}, "num_frames_range": (5, 5),
                     "content_ids": {key: f"'{avi}'"}, "content_paths": {key: avi}, "modalities": {}, "geometry": {},
                     "patients": {}, "frame_rates": {avi: 10.0}}
    assert check_study_shapes([multi], "video")["shapes"] == {multi: (4, 1, 12, 16)}
    assert check_study_shapes([avi, multi], "video", mixed_channels=True)["modalities"] == {"US": [multi]}
    # grey and colour clips: one channel count for a volume model, mixed for a video recipe (it decodes them all to
    # the network's channels)
    with pytest.raises(ValueError, match=r"mixed channel counts: '.*clip\.avi' has 3 channel\(s\), '.*cine\.dcm' has 1"):
        check_study_shapes([avi, multi], "video")
    assert check_study_shapes([avi, multi], "video", mixed_channels=True)["in_channels"] == 3
    assert check_study_shapes([multi], "volume", slice_axis=1)["shapes"] == {multi: (1, 12, 4, 16)}
    series = tmp_path / "series"
    series.mkdir()
    uid = "1.2.3.4"
    for i in range(3):
        _dicom(series / f"s{i}.dcm", 10, 14, series=uid, number=i + 1)
    assert check_study_shapes([str(series)], "volume")["shapes"] == {str(series): (1, 14, 10, 3)}  # columns, rows, n
    # a DICOMDIR index and a hidden copy ('._s0.dcm' of an archive, here a real DICOM file) are no slices, as in discovery
    _dicom(series / "._s0.dcm", 10, 14, series=uid)
    _dicom(series / "DICOMDIR", 20, 20)
    assert check_study_shapes([str(series)], "volume")["shapes"] == {str(series): (1, 14, 10, 3)}
    # the folder's own files, as the training recipe's LoadImage reads them: a series one level down is refused up
    # front (LoadImage would fail on it while caching), a second series too
    study = tmp_path / "study"
    (study / "series1").mkdir(parents=True)
    for i in range(3):
        _dicom(study / "series1" / f"s{i}.dcm", 10, 14, series=uid, number=i + 1)
    with pytest.raises(ValueError, match=r"study' holds no DICOM file of its own, but its sub-folders hold DICOM "
                                         r"files \(series1\): give one series folder as the image"):
        check_study_shapes([str(study)], "volume")
    # a series with another study in a sub-folder: LoadImage reads the series, but the study layer (inference, the
    # Deploy app) would refuse the folder; refused now, naming what it holds
    (series / "old").mkdir()
    (series / "empty_sub").mkdir()
    (series / ".hidden").mkdir()
    _dicom(series / ".hidden" / "x.dcm", 10, 14)
    (series / "old" / "readme.txt").write_text("not a study")
    assert check_study_shapes([str(series)], "volume")["shapes"] == {str(series): (1, 14, 10, 3)}
    _dicom(series / "old" / "x.dcm", 10, 14, series="9.9.9")
    with pytest.raises(ValueError, match=r"series' must hold exactly one study, found 2 \(.*\)\. Inference and the "
                                         r"Deploy app would refuse it"):
        check_study_shapes([str(series)], "volume")
    for sub in ("old", "empty_sub", ".hidden"):
        shutil.rmtree(series / sub)
    _dicom(series / "other.dcm", 10, 14, series="5.6.7")
    with pytest.raises(ValueError, match=r"series' holds 2 DICOM series: 3 file\(s\) of series #4 "
                                         r"\('s0\.dcm', \.\.\.\); 1 file\(s\) of series .*\('other\.dcm', \.\.\.\); "
                                         r"give one folder per series"):
        check_study_shapes([str(series)], "volume")
    # two series numbered alike (#4, #4): told apart by the end of their UIDs (trial T58b)
    _dicom(series / "other.dcm", 10, 14, series="5.6.4")
    with pytest.raises(ValueError, match=r"3 file\(s\) of series #4 \(UID \.\.\.1\.2\.3\.4\) \('s0\.dcm', \.\.\.\); "
                                         r"1 file\(s\) of series #4 \(UID \.\.\.5\.6\.4\)"):
        check_study_shapes([str(series)], "volume")


def test_check_study_shapes_clips_only(tmp_path):
    """What a clip-decoding recipe (LoadVideod) cannot read is refused naming it, before anything is decoded: a
    volume file, a folder (also one holding a single cine), a file of another kind, a single-frame DICOM image; a
    video file and a multi-frame DICOM file pass. Without clips_only a volume is read as a clip, as at inference."""
    avi, multi = _clip(tmp_path / "clip.avi", 5), _dicom(tmp_path / "cine.dcm", 12, 16, frames=4)
    assert check_study_shapes([avi], "video", clips_only=True)["shapes"] == {avi: (5, 3, 12, 16)}
    assert check_study_shapes([multi], "video", clips_only=True)["shapes"] == {multi: (4, 1, 12, 16)}
    vol = _nifti(tmp_path / "vol.nii.gz", (6, 7, 8))
    folder = tmp_path / "cine_folder"
    folder.mkdir()
    _dicom(folder / "cine.dcm", 12, 16, frames=4)
    (tmp_path / "notes.txt").write_text("no clip")
    single = _dicom(tmp_path / "still.dcm", 8, 10)
    for image, match in [(vol, r"vol\.nii\.gz' is no clip \(neither a video nor a DICOM file\)"),
                         (str(folder), r"cine_folder' is no clip \(a folder\)"),
                         (str(tmp_path / "notes.txt"), r"notes\.txt' is no clip \(neither a video nor a DICOM file\)")]:
        with pytest.raises(ValueError, match=r"list\.csv:3: '.*" + match + ": a video model trains on video files"):
            check_study_shapes([avi, {"image": image, "source_line": "list.csv:3"}], "video", clips_only=True)
    # a single-frame DICOM image is a still: refused below min_frames, a one-frame clip with min_frames 1 (as the
    # recipe's LoadVideod repeats it)
    with pytest.raises(ValueError, match=r"list\.csv:3: '.*still\.dcm' is a single-frame DICOM image \(8×10\): a "
                                         r"still image, fewer than min_frames=2 frames; min_frames 1 accepts it"):
        check_study_shapes([avi, {"image": single, "source_line": "list.csv:3"}], "video", clips_only=True)
    assert check_study_shapes([single], "video", clips_only=True, min_frames=1)["shapes"] == {single: (1, 1, 8, 10)}
    assert check_study_shapes([vol], "video")["shapes"] == {vol: (6, 1, 7, 8)}
    assert check_study_shapes([str(folder)], "video")["shapes"] == {str(folder): (4, 1, 12, 16)}
    assert check_study_shapes([vol], "volume", clips_only=True)["shapes"] == {vol: (1, 6, 7, 8)}
    # a volume recipe (the volume bundle's readers) refuses a video file naming its line, where it read the clip as a
    # 3-channel volume and ITK then failed in the cache (trial T68b); a multi-frame DICOM stays a volume of frames
    with pytest.raises(ValueError, match=r"list\.csv:3: '.*clip\.avi' is a video file, not a volume: a volume model "
                                         r"trains on and classifies volumes .*; train clips with a video model"):
        check_study_shapes([vol, {"image": avi, "source_line": "list.csv:3"}], "volume", clips_only=True)
    assert check_study_shapes([multi], "volume", clips_only=True)["shapes"] == {multi: (1, 4, 12, 16)}
    assert check_study_shapes([avi], "volume")["shapes"] == {avi: (3, 5, 12, 16)}  # the API: a clip as a volume


def test_check_study_shapes_errors(tmp_path):
    flat = _nifti(tmp_path / "flat.nii.gz", (10, 12))
    with pytest.raises(ValueError, match=r"list\.csv:4: '.*flat\.nii\.gz' is a 2D image \(spatial shape \[10, 12\]"):
        check_study_shapes([{"image": flat, "source_line": "list.csv:4"}], "volume")
    one = _clip(tmp_path / "one.avi", 1)
    with pytest.raises(ValueError, match=r"list\.json:test\[0\]: '.*one\.avi' is a clip of 1 frame\(s\) \(12×16\), "
                                         r"fewer than min_frames=2"):
        check_study_shapes([{"image": one, "source_line": "list.json:test[0]"}], "video")
    assert check_study_shapes([one], "video", min_frames=1)["num_frames_range"] == (1, 1)
    # a clip of no frame: not "min_frames 1 accepts it", also said to min_frames 1 (trial Z)
    empty = _clip(tmp_path / "empty.avi", 0)
    for min_frames in (2, 1):
        with pytest.raises(ValueError, match=r"empty\.avi' is a clip of 0 frames \(12×16\): no frame decodes \(an "
                                             r"empty or damaged file\?\)"):
            check_study_shapes([empty], "video", min_frames=min_frames)
        with pytest.raises(ValueError, match=r"empty\.avi' is a volume of 0 slices \(spatial shape \[.*\]\): no slice "
                                             r"decodes \(an empty or damaged file\?\)"):  # read as a volume (review H6)
            check_study_shapes([empty], "volume", min_frames=min_frames)
    single = _dicom(tmp_path / "still.dcm", 8, 8)
    with pytest.raises(ValueError, match=r"still\.dcm' is a 2D image .*; min_frames 1 accepts it as a one-slice volume"):
        check_study_shapes([single], "volume")
    # min_frames 1: a 2D image is a one-slice volume, as the recipe's RequireVolume makes it
    assert check_study_shapes([flat], "volume", min_frames=1)["shapes"] == {flat: (1, 10, 12, 1)}
    thin = _nifti(tmp_path / "thin.nii.gz", (10, 12, 2))
    with pytest.raises(ValueError, match=r"thin\.nii\.gz' is a volume of 2 slice\(s\) along an axis, fewer than "
                                         r"min_frames=3"):
        check_study_shapes([thin], "volume", min_frames=3)
    gray, rgb = str(tmp_path / "gray.npy"), _nifti(tmp_path / "rgb.nii.gz", (6, 6, 6, 3))
    np.save(gray, np.zeros((6, 6, 6), np.uint8))
    with pytest.raises(ValueError, match=r"mixed channel counts: '.*gray\.npy' has 1 channel\(s\), '.*rgb\.nii\.gz' "
                                         r"has 3 \(its 4th, non-spatial axis \(e\.g\. a 4D NIfTI's timepoints or "
                                         r"echoes\) read as channels\)"):
        check_study_shapes([gray, rgb], "volume")  # the 4th axis said (trial T69a)
    # with another unusable image: both in one error (the channel error dropped the ones collected before)
    with pytest.raises(FileNotFoundError, match=r"2 of the 3 images checked cannot be used:\n  .*gone\.nii' does not "
                                                r"exist\.\n  mixed channel counts"):
        check_study_shapes([gray, str(tmp_path / "gone.nii"), rgb], "volume")
    with pytest.raises(FileNotFoundError, match=r"x\.csv:2: '.*gone\.nii' does not exist"):
        check_study_shapes([{"image": str(tmp_path / "gone.nii"), "source_line": "x.csv:2"}], "volume")
    (tmp_path / "bad.avi").write_bytes(b"not a video")
    with pytest.raises(RuntimeError, match=r"bad\.avi' cannot be read"):
        check_study_shapes([str(tmp_path / "bad.avi")], "video")
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.avi' is an empty file \(0 bytes\)"):
        check_study_shapes([str(tmp_path / "empty.avi")], "video")
    # every unusable image in one error (one per run took three runs to find three), the good ones not named
    good = _clip(tmp_path / "good.avi", 4)
    with pytest.raises(ValueError, match=r"3 of the 4 images checked cannot be used:\n  .*one\.avi' is a clip of 1 "
                                         r"frame.*\n  .*bad\.avi' cannot be read.*\n  .*empty\.avi' is an empty file") as e:
        check_study_shapes([one, good, str(tmp_path / "bad.avi"), str(tmp_path / "empty.avi")], "video")
    assert "good.avi" not in str(e.value)
    with pytest.raises(ValueError, match="layout must be one of"):
        check_study_shapes([gray], "clip")


def test_datalist_to_study_shapes(json_datalist):
    """The two layers together: datalist items carry their source line into the shape errors."""
    items = load_datalist(json_datalist)
    assert check_study_shapes(items, "volume")["num_frames_range"] == (4, 4)
    np.save(items[1]["image"], np.zeros((1, 5, 6), np.uint8))
    with pytest.raises(ValueError, match=r"datalist\.json:training\[1\]: '.*b\.npy' is a volume of 1 slice"):
        check_study_shapes(items, "volume")
    assert os.path.isabs(items[0]["image"])


def test_check_study_shapes_refuses_a_copied_dicom_file(tmp_path):
    """Two multi-frame DICOM files with one SOPInstanceUID are one image (a copied cine): refused, naming both;
    ``content_ids`` maps each image's SOPInstanceUID to its item."""
    import shutil

    pydicom_data = pytest.importorskip("pydicom.data")
    cine = pydicom_data.get_testdata_file("examples_ybr_color.dcm")
    if cine is None:
        pytest.skip("pydicom test file examples_ybr_color.dcm not installed")
    a, b = shutil.copy(cine, tmp_path / "a.dcm"), shutil.copy(cine, tmp_path / "b.dcm")
    (uid, where), = check_study_shapes([a], "video")["content_ids"].items()
    import pydicom

    assert uid == str(pydicom.dcmread(cine, stop_before_pixels=True).SOPInstanceUID) and where == f"'{a}'"
    with pytest.raises(ValueError, match=r"'.*b\.dcm' holds the same DICOM image as '.*a\.dcm' \(SOPInstanceUID "):
        check_study_shapes([a, b], "video")


def test_check_study_shapes_warns_about_a_copied_file(tmp_path, caplog):
    """The same clip exported twice (another name, another folder) in the training and the test list was trained and
    tested on; files are compared by content (sampled bytes for large files, confirmed on the whole files)."""
    import shutil

    from monai_das.data.datalist import content_key

    clip = _clip(tmp_path / "a.avi", 4)
    (tmp_path / "other").mkdir()
    copy = shutil.copy(clip, tmp_path / "other" / "renamed.avi")
    with caplog.at_level(logging.WARNING):  # within one list: counted twice, warned
        check_study_shapes([clip, copy], "video")
    assert "1 image(s) have the same content (byte for byte) as another of the same list" in caplog.text
    assert "renamed.avi" in caplog.text
    # across lists (BundleData checks each validation/test list against the lists read before)
    train = check_study_shapes([clip], "video")
    test = check_study_shapes([copy], "video")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_no_copies(train["content_ids"], test["content_ids"], train["content_paths"], test["content_paths"])
    assert "1 image(s) have the same content (byte for byte) as an image of another list" in caplog.text
    assert "renamed.avi' = '" in caplog.text and "metrics are optimistic" in caplog.text
    # large files: sampled bytes; two that differ only between the samples get one key, and the whole files decide
    big_a, big_b = tmp_path / "a.bin", tmp_path / "b.bin"
    data = bytearray(4 << 20)
    big_a.write_bytes(bytes(data))
    data[300 << 10] = 1  # between the first 256 KiB and the first sampled block at ~246-262 KiB ... ~492 KiB
    big_b.write_bytes(bytes(data))
    ka, kb = content_key(big_a), content_key(big_b)
    assert ka == kb and ka.startswith("file:4194304:~")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_no_copies({ka: "'a.bin'"}, {kb: "'b.bin'"}, {ka: str(big_a)}, {kb: str(big_b)})
    assert "same content" not in caplog.text
    big_b.write_bytes(big_a.read_bytes())
    with caplog.at_level(logging.WARNING):
        check_no_copies({ka: "'a.bin'"}, {kb: "'b.bin'"}, {ka: str(big_a)}, {kb: str(big_b)})
    assert "'b.bin' = 'a.bin'" in caplog.text


def test_nifti_without_orientation_is_warned(tmp_path, caplog):
    """A NIfTI saved without its affine (qform and sform codes 0) was read as stored without a word."""
    import logging

    import nibabel as nib

    from monai_das.data import check_study_shapes
    from monai_das.data.studies import LoadStudy, nifti_without_orientation

    img = nib.Nifti1Image(np.random.default_rng(0).random((8, 9, 10)).astype(np.float32), None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    bare = tmp_path / "bare.nii.gz"
    nib.save(img, str(bare))
    oriented = tmp_path / "oriented.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 9, 10), np.float32), np.eye(4)), str(oriented))
    assert nifti_without_orientation(oriented) is None and "bare.nii.gz' has no orientation" in nifti_without_orientation(bare)
    with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):
        check_study_shapes([str(bare), str(oriented)], "volume", axcodes="RAS")
    assert "1 NIfTI image(s) have no orientation in their header" in caplog.text and "bare.nii.gz" in caplog.text
    study = LoadStudy({"layout": "volume", "spatial_size": [8, 8, 8]}).load(str(bare))
    assert any("has no orientation in its NIfTI header" in w for w in study.info["warnings"])


def test_a_series_training_reader_would_read_in_part_is_refused(tmp_path):
    """ITK (training's LoadImage) silently left out a truncated slice and split a series whose slices wrote a header
    value differently, where inference reads every image file: refused, naming what it leaves out."""
    from monai_das.data import check_study_shapes

    def series(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for i in range(4):
            _dicom(folder / f"s{i}.dcm", 10, 14, series="1.2.3.4", number=i + 1)
        return folder

    fine = series("fine")
    assert check_study_shapes([str(fine)], "volume")["shapes"] == {str(fine): (1, 14, 10, 4)}
    cut = series("cut")
    data = (cut / "s2.dcm").read_bytes()
    (cut / "s2.dcm").write_bytes(data[: len(data) - 70])  # half of its pixel data
    # (refused from its header since R69, before the reader that would leave it out: its bytes fall short)
    with pytest.raises(RuntimeError, match=r"cut' cannot be read: DICOM file '.*s2\.dcm' says NumberOfFrames 1 .* but "
                                           r"its pixel data holds 70 bytes .*damaged or cut short"):
        check_study_shapes([str(cut)], "volume")
    import pydicom

    split = series("split")
    for i in range(4):
        ds = pydicom.dcmread(split / f"s{i}.dcm")
        ds.SliceThickness = "2.50" if i == 3 else "2.5"
        ds.save_as(split / f"s{i}.dcm")
    with pytest.raises(ValueError, match=r"stacks 1 file\(s\) .* holds 4 .*leaves out 3 .*SliceThickness"):
        check_study_shapes([str(split)], "volume")
    _dicom(fine / "DICOMDIR", 10, 14, series="1.2.3.4", number=5)  # an image under the index's name: ITK stacks it
    with pytest.raises(ValueError, match=r"stacks 5 file\(s\) as the series where the folder holds 4 DICOM "
                                         r"image file\(s\), and adds DICOMDIR, which inference skips"):
        check_study_shapes([str(fine)], "volume")


# ------------------------------------------------------------------------------------------ trial I / K findings
def _nifti_file(path: Path, shape, zooms) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.diag([*zooms, 1.0])), str(path))
    return path


def test_study_shapes_follow_the_recipes_resampling(tmp_path):
    """spatial_size null + pixdim: the median grid was that of the native voxel counts ([48, 48, 20]) while the
    resampled volumes are about [24, 24, 40]: with pixdim the shapes are those after Orientation and Spacing."""
    from monai.transforms import Compose, LoadImage, Orientation, Spacing

    a = _nifti_file(tmp_path / "a.nii.gz", (48, 48, 20), (0.7, 0.7, 5.0))
    b = _nifti_file(tmp_path / "b.nii.gz", (20, 40, 44), (5.0, 0.8, 0.7))  # another spacing
    items = [str(a), str(b)]
    native = check_study_shapes(items, "volume", slice_axis=2, axcodes="RAS")["shapes"]
    facts = check_study_shapes(items, "volume", slice_axis=2, axcodes="RAS", pixdim=(1.4, 1.4, 2.5))
    for f in items:  # MONAI's own shapes, from reading the files
        real = Compose([LoadImage(image_only=True, ensure_channel_first=True), Orientation("RAS", labels=None),
                        Spacing(pixdim=(1.4, 1.4, 2.5))])(f)
        assert list(facts["shapes"][f][1:]) == list(real.shape[1:]) != list(native[f][1:])
    assert facts["shapes"][str(a)] == (1, 24, 24, 39) and facts["num_frames_range"] == (13, 39)
    keep_z = check_study_shapes([str(a)], "volume", slice_axis=2, pixdim=[1.4, 1.4, 0])  # <= 0: native 5 mm slices
    assert keep_z["shapes"][str(a)] == (1, 24, 24, 20)
    with pytest.raises(ValueError, match=r"pixdim \[0.7, 0.7\] must be null, one number .* or three numbers"):
        check_study_shapes(items, "volume", slice_axis=2, pixdim=[0.7, 0.7])


def _mr_series(folder: Path, orientation, step: float, spacing, rows: int = 20, cols: int = 16, n: int = 6,
               shift=(0.0, 0.0, 0.0), slots=None) -> str:
    """An MR series of ``n`` slices ``rows × cols`` in the plane ``orientation`` (ImageOrientationPatient), ``step``
    mm apart along its normal (plus ``shift`` per slice: a gantry tilt; at positions ``slots``, e.g. one missing),
    ``spacing`` = PixelSpacing."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True)
    series, normal = generate_uid(), np.cross(orientation[:3], orientation[3:])
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = "MR", series, k + 1
        ds.ImageOrientationPatient = list(orientation)
        at = k if slots is None else slots[k]
        ds.ImagePositionPatient = [float(v) for v in np.array([5.0, -3.0, 7.0]) + (normal * step + shift) * at]
        ds.PixelSpacing, ds.Rows, ds.Columns = list(spacing), rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored = 1, "MONOCHROME2", 16, 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.PixelData = (np.arange(rows * cols, dtype=np.uint16) + 100 * k).tobytes()
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    return str(folder)


@pytest.mark.parametrize("plane", ["sagittal", "coronal", "axial", "tilted", "gap"])
def test_study_shapes_of_dicom_series_follow_orientation_and_spacing(tmp_path, plane):
    """A sagittal series is stored columns × rows × slices = A/P × S/I × L/R: its header shape was taken as the RAS
    shape, so the automatic grid of sagittal or coronal series was [16, 20, 6] where the oriented volumes are
    [6, 16, 20] (every volume resized across its axes, slice_axis counting the wrong axis): the shapes now follow
    ImageOrientationPatient and PixelSpacing as training's Orientation and Spacing do (MONAI's own shapes here)."""
    from monai.transforms import Compose, LoadImage, Orientation, Spacing

    orientation = {"sagittal": [0, 1, 0, 0, 0, -1], "coronal": [1, 0, 0, 0, 0, -1]}.get(plane, [1, 0, 0, 0, 1, 0])
    # a gantry tilt steps along the positions, not the normal; a missing slice widens ITK's every step (review H4)
    series = _mr_series(tmp_path / plane, orientation, 2.5, (0.7, 0.9), shift=(0, 0.9 if plane == "tilted" else 0, 0),
                        slots=[0, 1, 2, 3, 5, 6] if plane == "gap" else None)
    for axcodes, pixdim in (("RAS", None), ("LPS", None), ("RAS", (1.5, 1.5, 1.5)), (None, (0.8, 1.2, 2.0))):
        got = check_study_shapes([series], "volume", axcodes=axcodes, pixdim=pixdim)["shapes"][series]
        steps = [LoadImage(image_only=True, ensure_channel_first=True)]
        steps += [Orientation(axcodes, labels=None)] if axcodes else []
        steps += [Spacing(pixdim=pixdim)] if pixdim else []
        assert list(got[1:]) == list(Compose(steps)(series).shape[1:]), (axcodes, pixdim)
    assert check_study_shapes([series], "volume")["shapes"][series] == (1, 16, 20, 6)  # as stored: columns, rows, n
    if plane == "sagittal":
        assert check_study_shapes([series], "volume", axcodes="RAS")["shapes"][series] == (1, 6, 16, 20)


def _enhanced_mr(path: Path, orientation, step: float, frames: int = 7, rows: int = 12, cols: int = 10) -> str:
    """An Enhanced MR file whose geometry lies in its functional groups only (pixel spacing 0.8 × 1.1 mm)."""
    from dicom_files import write_enhanced

    pixels = np.arange(frames * rows * cols, dtype=np.uint16).reshape(frames, rows, cols)
    return str(write_enhanced(path, pixels, "MR", "1.2.840.10008.5.1.4.1.1.4.1", orientation, step, (0.8, 1.1),
                              origin=(5.0, -3.0, 7.0)))


@pytest.mark.parametrize("plane", ["sagittal", "oblique", "axial"])
def test_study_shapes_of_enhanced_files_follow_their_functional_groups(tmp_path, plane):
    """An Enhanced CT/MR file keeps its geometry in functional groups, which the header check did not read: a
    sagittal Enhanced MR was taken as stored (columns × rows × frames) where training's LoadImage (ITK reads the
    groups), Orientation and Spacing give another shape. Now equal to MONAI's, for the file and a folder holding it."""
    from monai.transforms import Compose, LoadImage, Orientation, Spacing

    c, s = np.cos(np.deg2rad(25)), np.sin(np.deg2rad(25))
    orientation = {"sagittal": [0, 1, 0, 0, 0, -1], "oblique": [c, s, 0, 0, 0, -1]}.get(plane, [1, 0, 0, 0, 1, 0])
    path = _enhanced_mr(tmp_path / plane / "enhanced.dcm", orientation, -2.0 if plane == "sagittal" else 2.5)
    for axcodes, pixdim in (("RAS", None), ("LPS", None), ("RAS", (1.5, 1.5, 1.5)), (None, (0.7, 1.3, 2.5))):
        steps = [LoadImage(image_only=True, ensure_channel_first=True)]
        steps += [Orientation(axcodes, labels=None)] if axcodes else []
        steps += [Spacing(pixdim=pixdim)] if pixdim else []
        want = list(Compose(steps)(path).shape[1:])
        for item in (path, str(Path(path).parent)):
            got = check_study_shapes([item], "volume", axcodes=axcodes, pixdim=pixdim)["shapes"][item]
            assert list(got[1:]) == want, (item, axcodes, pixdim)
    assert check_study_shapes([path], "volume")["shapes"][path] == (1, 10, 12, 7)  # as stored: columns, rows, frames
    if plane == "sagittal":
        assert check_study_shapes([path], "volume", axcodes="RAS")["shapes"][path] == (1, 7, 10, 12)


def test_study_shapes_of_an_enhanced_file_of_several_time_points(tmp_path):
    """2 time points × 4 positions (a DCE or diffusion Enhanced MR): ITK steps 2.5 mm between positions, the header
    check took the extent over 7 steps (1.07 mm) and gave another grid with pixdim (review H5)."""
    from monai.transforms import Compose, LoadImage, Spacing

    path = _enhanced_mr(tmp_path / "dce.dcm", [1, 0, 0, 0, 1, 0], 2.5, frames=4)
    import pydicom

    ds = pydicom.dcmread(path)  # the 4 positions again for a second time point: 8 frames
    ds.PerFrameFunctionalGroupsSequence = list(ds.PerFrameFunctionalGroupsSequence) * 2
    ds.NumberOfFrames = 8
    ds.PixelData = np.arange(8 * 12 * 10, dtype=np.uint16).tobytes()
    ds.save_as(path)
    want = list(Compose([LoadImage(image_only=True, ensure_channel_first=True), Spacing(pixdim=(1.5, 1.5, 1.5))])(
        path).shape[1:])
    assert list(check_study_shapes([path], "volume", pixdim=(1.5, 1.5, 1.5))["shapes"][path][1:]) == want


def test_study_shapes_refuse_a_dicom_header_declaring_more_frames_than_its_data(tmp_path, monkeypatch):
    """Security review T69b: the training check took a 6-frame CT file saying NumberOfFrames 12 for a volume of 12
    frames (ITK then read 6 of zeros), and one saying 2,000,000 for one ITK would allocate ~1 GB for (the memory
    check prices the header alone): refused from the header, naming the file and both sizes, alone or in a series
    folder; the honest file, and one holding more than it says, are checked as before."""
    from dicom_files import declare_frames, write_enhanced
    from monai_das.data import studies

    monkeypatch.setattr(studies, "available_memory", lambda: 1 << 40)  # the memory check lets 2,000,000 frames pass
    pixels = np.stack([np.full((12, 10), 1024 + 100 * i, np.int16) for i in range(6)])
    honest = str(write_enhanced(tmp_path / "honest.dcm", pixels, rescale=(-1024, 1)))
    assert check_study_shapes([honest], "volume")["shapes"][honest] == (1, 10, 12, 6)
    longer = str(declare_frames(write_enhanced(tmp_path / "longer.dcm", pixels, rescale=(-1024, 1)), 4))
    assert check_study_shapes([longer], "volume")["shapes"][longer] == (1, 10, 12, 4)
    for frames, need in ((12, "2,880"), (2_000_000, "480,000,000")):
        lie = declare_frames(write_enhanced(tmp_path / str(frames) / "lie.dcm", pixels, rescale=(-1024, 1)), frames)
        for item in (lie, lie.parent):
            with pytest.raises(RuntimeError, match=rf"cannot be read: DICOM file '.*{frames}/lie\.dcm' says "
                                                   rf"NumberOfFrames {frames} \(12×10, 1 sample\(s\) per pixel, 16 "
                                                   rf"bits allocated: {need} bytes\) but its pixel data holds 1,440 "
                                                   r"bytes \(6 frame\(s\)\): the header and the data disagree"):
                check_study_shapes([str(item)], "volume")
    # a copy cut inside its pixel data, whose length field still says the whole (R69): the bytes it holds count
    cut = tmp_path / "cut" / "cut.dcm"
    cut.parent.mkdir()
    cut.write_bytes(Path(honest).read_bytes()[:-480])
    with pytest.raises(RuntimeError, match=r"cut\.dcm' says NumberOfFrames 6 .*: 1,440 bytes\) but its pixel data "
                                           r"holds 960 bytes \(4 frame\(s\)\)"):
        check_study_shapes([str(cut)], "volume")


@pytest.mark.parametrize("axcodes", ["RAX", "RRS"])
def test_study_shapes_refuse_invalid_axcodes_once(tmp_path, axcodes):
    """--slice_axis 2 --axcodes RAX: "24 of the 24 images checked cannot be used: ... Not all axis codes" (RRS was
    taken): one error naming axcodes, before any file is read."""
    items = [str(_nifti_file(tmp_path / f"{i}.nii.gz", (8, 8, 6), (1.0, 1.0, 2.0))) for i in range(3)]
    with pytest.raises(ValueError, match=rf"^axcodes '{axcodes}' is not an orientation \(it has none of"):
        check_study_shapes(items, "volume", slice_axis=2, axcodes=axcodes)


def test_misspelt_item_key_is_warned_once(tmp_path, caplog):
    """"evidnce": [1, 2] was ignored without a word: the item trained as one without evidence."""
    from monai_das.data import datalist as dl_module

    _touch(tmp_path, "a.npy", "b.npy", "c.npy")
    dl = _json(tmp_path / "dl.json", {"training": [
        {"image": "a.npy", "label": 0, "evidence": [1]}, {"image": "b.npy", "label": 1, "evidnce": [1, 2]},
        {"image": "c.npy", "label": 1, "evidnce": [3], "note": "kept aside"}]})
    csv_dl = _csv(tmp_path / "dl.csv", "image,lable,label,grup,patient", "a.npy,x,0,p1,p1", "b.npy,y,1,p2,p2")
    dl_module._warned_keys.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):
        items = load_datalist(dl)
        load_datalist(dl)  # the same datalist again (another split, a second read): not warned again
        load_datalist(csv_dl)
    assert items[1]["evidence"] == []  # ignored, as before: warned now
    assert caplog.text.count("'evidnce'") == 1 and "note" not in caplog.text
    assert (f"{dl}:training[1]: the item key 'evidnce' is not one the datalist is read by and is one typo from "
            "'evidence'") in caplog.text
    assert f"{csv_dl}:1 (the header): the column 'lable'" in caplog.text and "typo from 'label'" in caplog.text
    assert "the column 'grup'" in caplog.text and "typo from 'group'" in caplog.text  # 'patient' names them


def test_misspelt_patient_key_without_another_is_refused(tmp_path):
    """A CSV column 'patiant_id' was warned about and ignored: every clip became a patient of its own and one
    patient's clips landed in training and validation (trial T55). Refused when no other key names the patients."""
    _touch(tmp_path, "a.npy", "b.npy", "c.npy", "d.npy")
    rows = ["a.npy,x,p1", "b.npy,x,p1", "c.npy,y,p2", "d.npy,y,p2"]
    csv_dl = _csv(tmp_path / "dl.csv", "image,label,patiant_id", *rows)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(csv_dl))}:1 \(the header\): the column 'patiant_id' is "
                       r"one typo from 'patient_id' \(an item's patient\) and no item names its patient otherwise"):
        load_datalist(csv_dl)
    dl = _json(tmp_path / "dl.json", {"training": [{"image": "a.npy", "label": 0, "gruop": "p1"},
                                                   {"image": "b.npy", "label": 1, "gruop": "p2"}]})
    with pytest.raises(ValueError, match=r"dl\.json:training\[0\]: the item key 'gruop' is one typo from 'group'"):
        load_datalist(dl)
    assert len(load_datalist(_csv(tmp_path / "ok.csv", "image,label,patient_id", *rows))) == 4
    # a list read for prediction (a test list): warned as other keys are, not refused (review)
    test = _json(tmp_path / "test.json", {"test": [{"image": "a.npy", "label": 0, "pateint_id": "p1"}]})
    assert len(load_datalist(test, split="test")) == 1


def test_patient_ids_that_differ_only_in_case_or_spaces_are_refused(tmp_path):
    """'PT002' in training and 'pt002 ' in test were two patients: one patient's series trained on and tested, without
    a word (trial T58b). Refused naming both lines, within a list too (its validation list is drawn by patient)."""
    _touch(tmp_path, "a.npy", "b.npy", "c.npy", "d.npy")
    for rows in (["a.npy,x,PT002,training", "b.npy,y,P3,training", "c.npy,x,pt002 ,test"],
                 ["a.npy,x,PT002,training", "b.npy,y,P3,training", "c.npy,x,PT 002,training"]):
        dl = _csv(tmp_path / "dl.csv", "image,label,patient_id,split", *rows)
        with pytest.raises(ValueError, match=r"dl\.csv:4: patient \(group\) '(pt002|PT 002)' and 'PT002' "
                                             r"\(.*dl\.csv:2\) differ only in case or spaces"):
            load_datalist(dl)
    ok = _csv(tmp_path / "ok.csv", "image,label,patient_id,split", "a.npy,x,PT002,training", "b.npy,y,P3,training",
              "c.npy,x,PT002,training", "d.npy,y,P4,test")
    assert len(load_datalist(ok)) == 3


def test_an_unread_column_that_may_name_the_patients_is_warned(tmp_path, caplog):
    """A CSV whose patients were in a column 'MRN' (not a patient key) trained with every clip a patient of its own,
    drawing one patient's clips into training and validation, said only at INFO (trial T58). Warned, naming it."""
    names = [f"{c}.npy" for c in "abcdefghijkl"]
    _touch(tmp_path, *names)
    # MRN: 2 studies a patient; site, sex: categories (few values, many items each); accession: one a study
    rows = [f"{n},{'xy'[i % 2]},P{i // 2},{'site' + str(i % 3)},{'FM'[i % 2]},acc{i}" for i, n in enumerate(names)]
    with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):
        assert len(load_datalist(_csv(tmp_path / "dl.csv", "image,label,MRN,site,sex,accession", *rows))) == 12
    assert "dl.csv: no training item names its patient" in caplog.text
    assert "The column(s) 'MRN' (6 values over 12 items) repeat" in caplog.text
    assert "'site'" not in caplog.text and "'sex'" not in caplog.text and "accession" not in caplog.text
    assert "rename it to 'patient_id'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):  # the patients named: nothing to say
        load_datalist(_csv(tmp_path / "ok.csv", "image,label,patient_id,site,sex,accession", *rows))
        # a column of one value per item names no shared patient
        load_datalist(_csv(tmp_path / "one.csv", "image,label,accession", *[r.split(",P")[0] + f",acc{i}"
                                                                            for i, r in enumerate(rows)]))
    assert "names its patient" not in caplog.text


def test_nifti_header_declaring_more_than_the_memory_is_refused(tmp_path, monkeypatch):
    """A 4 MB .nii.gz declaring 2048×2048×256 float32 was decompressed in full (4.9 GB); one declaring 10⁵×10⁵×10⁵
    died with "MemoryError: " (an empty reason). Refused from the header, naming the file, shape, dtype and need."""
    import nibabel as nib

    from monai_das.data import studies

    h = nib.Nifti2Header()
    h.set_data_shape((100000, 100000, 100000))
    h.set_data_dtype(np.float32)
    h.set_qform(np.eye(4), 1)
    huge = tmp_path / "huge.nii"
    with open(huge, "wb") as f:  # a valid header and a few bytes: no voxel data to speak of
        h.write_to(f)
        f.write(b"\0" * 4096)
    small = _nifti_file(tmp_path / "small.nii.gz", (8, 8, 6), (1.0, 1.0, 2.0))
    monkeypatch.setattr(studies, "available_memory", lambda: 8 << 30)  # 8 GiB: never the machine's own
    with pytest.raises(RuntimeError, match=r"huge\.nii' cannot be read: MemoryError \(out of memory\): .*huge\.nii' "
                                           r"declares 100000×100000×100000 values of 4 byte\(s\) .* needs about 22\.2 "
                                           r"PiB, more than the 8 GiB of memory available"):
        check_study_shapes([str(small), str(huge)], "volume", slice_axis=2, axcodes="RAS")
    assert check_study_shapes([str(small)], "volume", slice_axis=2)["shapes"][str(small)] == (1, 8, 8, 6)
    # training reads other files whole too: an NRRD header declaring 1024³, a series resampled far finer
    nrrd = tmp_path / "bomb.nrrd"
    nrrd.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1024 1024 1024\nencoding: raw\n\n" + b"\0" * 64)
    with pytest.raises(RuntimeError, match=r"bomb\.nrrd' cannot be read: MemoryError .*declares 1024×1024×1024×1 "
                                           r"values of 1 byte\(s\)"):
        check_study_shapes([str(nrrd)], "volume", slice_axis=2)
    coarse = _nifti_file(tmp_path / "coarse.nii.gz", (8, 8, 6), (40.0, 40.0, 40.0))
    with pytest.raises(RuntimeError, match=r"coarse\.nii\.gz' .* resampled to pixdim \[0\.5, 0\.5, 0\.5\] from "
                                           r"spacing \[40\.0, 40\.0, 40\.0\]: about 196,608,000 voxels"):
        check_study_shapes([str(coarse)], "volume", slice_axis=2, pixdim=[0.5, 0.5, 0.5])
    monkeypatch.setattr(studies, "available_memory", lambda: None)  # unknown: nothing refused from the header
    studies.check_study_memory(huge)


@pytest.mark.parametrize("column", ["patient_id", "PatientID", "Patient", "subject"])
def test_a_patient_column_of_another_name_is_the_group(tmp_path, column):
    """A CSV whose patient column is 'patient_id' (as read_video_listing and MONAI Label name it) was split by clip: the
    same patient in training and validation without a word (trial V). Read as the group; a patient in two lists is
    refused naming it."""
    from monai_das.data import split_training

    _touch(tmp_path, *(f"{i}.npy" for i in range(8)))
    rows = [f"{i}.npy,{'ab'[i % 2]},P{i // 2}" for i in range(8)]
    path = _csv(tmp_path / "l.csv", f"image,label,{column}", *rows)
    items = load_datalist(path)
    assert [it["group"] for it in items] == [f"P{i // 2}" for i in range(8)]
    train, val = split_training(items, val_fraction=0.5, seed=0)
    assert not {it["group"] for it in train} & {it["group"] for it in val}
    leak = _csv(tmp_path / "leak.csv", f"image,label,{column},split", "0.npy,a,P0,training", "1.npy,b,P0,test")
    with pytest.raises(ValueError, match=r"patient \(group\) 'P0' is in the 'test' list and in the 'training' list"):
        load_datalist(leak)


def test_classes_declared_by_the_file(tmp_path):
    """A JSON's top-level "labels" name the classes (no item's label can add one); a CSV's classes are its labels."""
    import json

    from monai_das.data.datalist import classes_declared

    (tmp_path / "named.json").write_text(json.dumps({"labels": {"0": "a", "1": "b"}, "training": []}))
    (tmp_path / "plain.json").write_text(json.dumps({"training": []}))
    (tmp_path / "list.csv").write_text("image,label\nx.npy,a\n")
    assert classes_declared(tmp_path / "named.json")
    assert not classes_declared(tmp_path / "plain.json") and not classes_declared(tmp_path / "list.csv")


def test_rows_of_blank_cells_are_skipped_with_a_warning(tmp_path, caplog):
    """Trial T69a: a spreadsheet's trailing rows of empty cells (',,,,') were refused as "the image is blank": they
    hold no item, so they are skipped, said once with their lines; a row with a label but no image is still refused."""
    _touch(tmp_path, "a.npy", "b.npy")
    path = _csv(tmp_path / "sheet.csv", "image,label,group", "a.npy,x,p1", ",,", "b.npy,y,p2", ",,", " , ,")
    with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):
        items = load_datalist(path)
    assert [(it["label_name"], it["source_line"].rsplit(":", 1)[1]) for it in items] == [("x", "2"), ("y", "4")]
    assert "sheet.csv: 3 row(s) whose every cell is blank skipped (line(s) 3, 5, 6): no item." in caplog.text
    with pytest.raises(ValueError, match=r"half\.csv:3: the image is blank"):
        load_datalist(_csv(tmp_path / "half.csv", "image,label", "a.npy,x", ",y"))
