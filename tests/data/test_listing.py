"""Clip listings: the POCUS benchmark listing with patient-level folds, CSV / folder listings and their errors."""

from __future__ import annotations

import collections
import logging
import os
import re
from pathlib import Path

import pytest

from monai_das.data import POCUS_CLASSES, assign_group_folds, pocus_listing, read_video_listing, split_by_fold


@pytest.fixture(scope="module")
def pocus_root(shared_data):
    root = shared_data / "video" / "covid19_lus_pocus"
    if not (root / "MANIFEST.csv").is_file():
        pytest.skip(f"POCUS videos not found in {root}")
    return root


def test_pocus_listing_convex_three_classes(pocus_root):
    items = pocus_listing(pocus_root)
    assert len(items) == 121  # convex clips (27 covid, 36 bacterial + 2 viral pneumonia, 56 healthy)
    assert collections.Counter(it["label"] for it in items) == {0: 27, 1: 38, 2: 56}
    assert POCUS_CLASSES == ("covid", "pneumonia", "healthy")
    by_name = {it["label_name"]: it["label"] for it in items}
    assert by_name == {"covid": 0, "bacterial_pneumonia": 1, "viral_pneumonia": 1, "healthy": 2}
    assert all(it["probe"] == "convex" and os.path.isfile(it["image"]) for it in items)
    assert {it["fold"] for it in items} == set(range(5))
    assert len(pocus_listing(pocus_root, probe=None)) == 131


def test_no_patient_in_two_folds(pocus_root):
    items = pocus_listing(pocus_root, num_folds=5, seed=0)
    folds_of = collections.defaultdict(set)
    for it in items:
        folds_of[it["group"]].add(it["fold"])
    assert len(folds_of) > 5 and all(len(f) == 1 for f in folds_of.values())
    # stratified: every fold holds every class
    for fold in range(5):
        assert {it["label"] for it in items if it["fold"] == fold} == {0, 1, 2}
    split = split_by_fold(items, fold=2)
    groups = {name: {it["group"] for it in part} for name, part in split.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(len(p) for p in split.values()) == len(items)
    assert {it["fold"] for it in split["test"]} == {2} and {it["fold"] for it in split["val"]} == {3}
    # deterministic per seed, different across seeds
    assert [it["fold"] for it in pocus_listing(pocus_root, seed=0)] == [it["fold"] for it in items]
    assert [it["fold"] for it in pocus_listing(pocus_root, seed=1)] != [it["fold"] for it in items]


def test_group_folds_unstratified_and_errors():
    items = [{"image": f"{i}.mp4", "label": i % 2, "group": f"p{i // 3}"} for i in range(12)]
    out = assign_group_folds(items, num_folds=4, stratified=False)
    assert "fold" not in items[0]  # inputs untouched
    for g in {it["group"] for it in out}:
        assert len({it["fold"] for it in out if it["group"] == g}) == 1
    with pytest.raises(ValueError, match="num_folds"):
        assign_group_folds(items, num_folds=5)  # only 4 groups
    with pytest.raises(ValueError, match="fold 7"):
        split_by_fold(out, 7)


def _write_csv(path, rows, header=("file", "label", "patient_id")):
    path.write_text("\n".join([",".join(header)] + [",".join(r) for r in rows]) + "\n")


def test_csv_listing_and_bad_rows(pocus_root, tmp_path, caplog):
    a, b = "convex/Reg_liftl_case3_clip2.mp4", "convex/Cov-Atlas+(45).gif"
    csv_path = tmp_path / "list.csv"
    _write_csv(csv_path, [(str(pocus_root / a), "healthy", "7"), (str(pocus_root / b), "covid", "9")])
    items = read_video_listing(csv_path, label_names=["covid", "healthy"])
    assert [(it["label"], it["group"]) for it in items] == [(1, "7"), (0, "9")]
    # relative paths against root=
    _write_csv(csv_path, [(a, "1", "7")])
    assert read_video_listing(csv_path, root=pocus_root, label_names=["covid", "healthy"])[0]["label"] == 1
    # a row whose file is missing: clear error naming the line and the file, or skipped and counted
    _write_csv(csv_path, [(a, "healthy", "7"), ("convex/gone.mp4", "covid", "8")])
    with pytest.raises(FileNotFoundError, match=r"line 3.*gone\.mp4"):
        read_video_listing(csv_path, root=pocus_root)
    with caplog.at_level(logging.WARNING):
        items = read_video_listing(csv_path, root=pocus_root, on_error="skip")
    assert len(items) == 1 and "skipped 1 of 2" in caplog.text
    # a label outside the classes
    _write_csv(csv_path, [(a, "pneumothorax", "7")])
    with pytest.raises(ValueError, match="pneumothorax"):
        read_video_listing(csv_path, root=pocus_root, label_names=["covid", "healthy"])
    _write_csv(csv_path, [(a, "5", "7")])
    with pytest.raises(ValueError, match="outside"):
        read_video_listing(csv_path, root=pocus_root, label_names=["covid", "healthy"])
    _write_csv(csv_path, [(a, "healthy")], header=("file", "label"))
    with pytest.raises(ValueError, match="patient_id"):
        read_video_listing(csv_path, root=pocus_root)
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        read_video_listing(tmp_path / "nothing.csv")


def test_folder_listing(pocus_root, tmp_path):
    for label, name in [("covid", "Cov-Atlas+(45).gif"), ("healthy", "Reg_liftl_case3_clip2.mp4"),
                        ("healthy", "Reg_pat1Image_133410.mpeg")]:
        (tmp_path / label).mkdir(exist_ok=True)
        os.symlink(pocus_root / "convex" / name, tmp_path / label / name)
    (tmp_path / "healthy" / "notes.txt").write_text("not a clip")
    items = read_video_listing(tmp_path)
    assert [(it["label"], it["label_name"]) for it in items] == [(0, "covid"), (1, "healthy"), (1, "healthy")]
    assert items[1]["group"] == "Reg_liftl_case3_clip2"
    with pytest.raises(ValueError, match="no clips"):
        read_video_listing(tmp_path / "covid")


def test_blank_label_or_group_is_an_error(tmp_path, caplog):
    """A blank label is not a class '' and a blank/missing patient id is not the group 'None': errors with file+line."""
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / name).write_bytes(b"x")  # the listing only checks that the file exists
    csv_path = tmp_path / "list.csv"
    _write_csv(csv_path, [("a.mp4", "covid", "1"), ("b.mp4", "", "2"), ("c.mp4", "healthy", "3")])
    with pytest.raises(ValueError, match=r"list\.csv' line 3: the label is blank"):
        read_video_listing(csv_path)  # default classes: the distinct non-blank labels
    with caplog.at_level(logging.WARNING):
        items = read_video_listing(csv_path, on_error="skip")
    assert [(it["label_name"], it["label"]) for it in items] == [("covid", 0), ("healthy", 1)]
    assert "skipped 1 of 3" in caplog.text
    _write_csv(csv_path, [("a.mp4", "covid", "1"), ("b.mp4", "covid", " ")])
    with pytest.raises(ValueError, match=r"list\.csv' line 3: the group \('patient_id'\) is blank"):
        read_video_listing(csv_path)
    csv_path.write_text("file,label,patient_id\na.mp4,covid,1\nb.mp4,covid\n")  # a short row: no patient id at all
    with pytest.raises(ValueError, match=r"list\.csv' line 3: the group"):
        read_video_listing(csv_path)
    assert all(it["group"] != "None" for it in read_video_listing(csv_path, on_error="skip"))
    _write_csv(csv_path, [("a.mp4", "covid", "1"), ("", "covid", "2")])
    with pytest.raises(ValueError, match=r"list\.csv' line 3: the path \('file'\) is blank"):
        read_video_listing(csv_path)
    with pytest.raises(ValueError, match="no 'group'"):
        assign_group_folds([{"image": "a.mp4", "label": 0, "group": None}, {"image": "b", "label": 1, "group": "2"}],
                           num_folds=2)


def test_csv_labels_as_a_datalist_and_malformed_files(tmp_path, caplog):
    """Integer labels are indices (not string-sorted: '10' after '9'), a gap or a case variant is refused, and a
    row with extra cells or a file that is not UTF-8 is refused naming the file."""
    for i in range(12):
        (tmp_path / f"{i}.mp4").write_bytes(b"x")
    csv_path = tmp_path / "list.csv"
    _write_csv(csv_path, [(f"{i}.mp4", str(i), str(i)) for i in range(11)])
    assert [it["label"] for it in read_video_listing(csv_path)] == list(range(11))
    _write_csv(csv_path, [("0.mp4", "1", "1"), ("1.mp4", "2", "2")])  # 1-based grades: class 0 would be empty
    with pytest.raises(ValueError, match=r"list\.csv: integer labels are class indices 0\.\.2, but no item has class"):
        read_video_listing(csv_path)
    assert [it["label"] for it in read_video_listing(csv_path, label_names=["0", "1", "2"])] == [1, 2]
    _write_csv(csv_path, [("0.mp4", "Covid", "1"), ("1.mp4", "covid", "2")])
    with pytest.raises(ValueError, match=r"'Covid' \(CSV '.*list\.csv' line 2\) and 'covid' .* differ only in case"):
        read_video_listing(csv_path)
    _write_csv(csv_path, [(f"{i}.mp4", "covid", str(i)) for i in range(11)] + [("11.mp4", "cvoid", "11")])
    with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):
        assert len(read_video_listing(csv_path)) == 12
    assert re.search(r"the label 'cvoid' \(CSV '.*list\.csv' line 13\) occurs in 1 item and is one typo away from "
                     r"'covid' \(11 items", caplog.text)
    csv_path.write_text("file,label,patient_id\n0.mp4,covid,1\n1.mp4,covid,2,left\n")
    with pytest.raises(ValueError, match=r"list\.csv' line 3: more cells than the header's 3 columns .*'left'"):
        read_video_listing(csv_path)
    csv_path.write_bytes("file,label,patient_id\n0.mp4,lésion,1\n".encode("cp1252"))
    with pytest.raises(ValueError, match=r"list\.csv:2: not UTF-8 text \(byte 0xe9 .*save it as UTF-8"):
        read_video_listing(csv_path)


def test_folder_listing_skips_hidden_entries_and_refuses_an_empty_class(tmp_path):
    """An unzipped archive's `__MACOSX/` and `._clip.mp4` are not a class or clips; an empty class is an error."""
    for rel in ("covid/a.mp4", "covid/._a.mp4", "healthy/b.mp4", "__MACOSX/covid/._a.mp4", ".cache/c.mp4",
                "healthy/.thumbs/d.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")  # the listing only looks at names
    items = read_video_listing(tmp_path)
    assert [(Path(it["image"]).name, it["label_name"]) for it in items] == [("a.mp4", "covid"), ("b.mp4", "healthy")]
    (tmp_path / "pneumonia").mkdir()
    (tmp_path / "pneumonia" / "notes.txt").write_text("no clip")
    with pytest.raises(ValueError, match=r"class folder '.*pneumonia' holds no clips"):
        read_video_listing(tmp_path)


def test_csv_listing_refuses_a_clip_listed_twice(tmp_path, caplog):
    """The same file under two rows (or two patients) would be counted twice and could sit in two folds."""
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    csv_path = tmp_path / "list.csv"
    _write_csv(csv_path, [("a.mp4", "covid", "1"), ("b.mp4", "healthy", "2"), ("./a.mp4", "covid", "3")])
    with pytest.raises(ValueError, match=r"list\.csv' line 4: clip file '.*a\.mp4' is listed twice \(first at "
                                         r"CSV '.*list\.csv' line 2\)"):
        read_video_listing(csv_path)
    with caplog.at_level(logging.WARNING):
        items = read_video_listing(csv_path, on_error="skip")
    assert [it["group"] for it in items] == ["1", "2"] and "skipped 1 of 3" in caplog.text


def test_an_evidence_column_is_read_as_frame_indices(tmp_path):
    """A CSV's evidence '11;12;13;14' was carried over as a string: MapEvidenced read '12' as frames 1 and 2
    (trial U). Read as a datalist's evidence: a list, blank: []; a bad cell names the line."""
    from monai_das.transforms import map_evidence

    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    _write_csv(tmp_path / "list.csv", [("a.mp4", "covid", "1", "11;12;13;14"), ("b.mp4", "healthy", "2", "")],
               header=("file", "label", "patient_id", "evidence"))
    items = read_video_listing(tmp_path / "list.csv")
    assert [it["evidence"] for it in items] == [[11, 12, 13, 14], []]
    _write_csv(tmp_path / "list.csv", [("a.mp4", "covid", "1", "11 12")], header=("file", "label", "patient_id",
                                                                                   "evidence"))
    with pytest.raises(ValueError, match=r"list\.csv' line 2: evidence '11 12' holds '11 12'.*separate the indices "
                                         r"with ';'"):
        read_video_listing(tmp_path / "list.csv")
    import torch

    with pytest.raises(ValueError, match=r"evidence '12' is a string, not a list of indices"):
        map_evidence("12", torch.zeros(16, 1, 4, 4), frame_axis=0)
