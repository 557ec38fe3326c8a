"""BundleData: the data of a bundle run from a ready-made dataset or a datalist, and the facts from the data."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch

from monai_das.engines import (
    BundleData,
    class_weights,
    flag,
    optional,
    precise_bn_batches,
    resolve_data_dir,
    slice_axis_index,
)


def test_synthetic_volumes_and_clips():
    src = BundleData("synthetic", size=16, num_samples={"val": "7"})
    info = src.info
    assert info["layout"] == "volume" and info["num_frames"] == 16 and info["image_shape"] == [1, 16, 16, 16]
    assert info["spatial_size"] == [16, 16, 16] and info["datalist"] is None and not src.from_files
    val = src.data("val")
    assert len(val) == 7 and tuple(torch.as_tensor(val[0]["image"]).shape) == (1, 16, 16, 16)
    assert "informative" in val[0]  # the evidence the diagnostics check
    turned = BundleData("synthetic", size=16, num_samples={"val": "7"}, slice_axis="axial").data("val")[0]
    np.testing.assert_array_equal(turned["image"], np.moveaxis(np.asarray(val[0]["image"]), 1, 3))  # along axis 2
    # those volumes are other data than the former ones (evidence along D) of the same seed: facts and split identity
    # say so, only for them (a resume of the former is refused, its evaluation scored as other data; every other run's
    # facts are unchanged)
    axial = BundleData("synthetic", size=16, slice_axis="axial")
    assert axial.facts["synthetic_evidence_axis"] == 2 and axial.split_identity()["synthetic_evidence_axis"] == 2
    assert "synthetic_evidence_axis" not in src.facts and "synthetic_evidence_axis" not in src.split_identity()
    clips = BundleData("synthetic", layout="video", size=16, num_frames=8, num_samples={"train": 3})
    assert clips.info["image_shape"] == [8, 1, 16, 16] and clips.info["layout"] == "video"
    assert tuple(torch.as_tensor(clips.data("train")[0]["image"]).shape) == (8, 1, 16, 16)
    with pytest.raises(ValueError, match="split must be one of"):
        src.data("training")
    with pytest.raises(ValueError, match="holds clips: use the video bundle"):
        BundleData("pocus").info
    assert resolve_data_dir("synthetic", None) is None


def test_synthetic_options():
    opts = {"distractor": "texture", "distractor_prob": 1.0, "num_informative": 2}
    vol = BundleData("synthetic", size=16, num_samples={"train": 2}, synthetic_options=opts).data("train")[0]
    assert len(vol["informative"]) == 2
    plain = BundleData("synthetic", size=16, num_samples={"train": 2}).data("train")[0]
    assert len(plain["informative"]) == 4 and not np.array_equal(vol["image"], plain["image"])
    clip = BundleData("synthetic", layout="video", size=16, num_frames=8, num_samples={"train": 1},
                      synthetic_options={"num_informative": 3}).data("train")[0]
    assert len(clip["informative"]) == 3
    with pytest.raises(ValueError, match=r"synthetic_options \['distractors'\] unknown"):
        BundleData("synthetic", synthetic_options={"distractors": "texture"})
    with pytest.raises(ValueError, match="apply to dataset 'synthetic' only"):
        BundleData("vesselmnist3d", synthetic_options={"noise": 0.1})


def test_slice_axis_names():
    assert [slice_axis_index(a) for a in ("sagittal", "coronal", "axial", 1, "2")] == [0, 1, 2, 1, 2]
    # a name is resolved against the orientation the volumes are turned to (axial was 2 whatever axcodes said)
    assert [slice_axis_index(a, "SLP") for a in ("sagittal", "coronal", "axial")] == [1, 2, 0]
    assert slice_axis_index("axial", "LPS") == 2 and slice_axis_index(1, None) == 1
    with pytest.raises(ValueError, match="capital letters: give 'LPS'"):  # MONAI's Orientation fails on 'lps'
        slice_axis_index("axial", "lps")
    with pytest.raises(ValueError, match="names an anatomical direction, which needs axcodes"):
        slice_axis_index("axial", None)
    for codes in ("RAX", "RRS"):  # a value that is no orientation is named as such, not as missing
        with pytest.raises(ValueError, match=f"axcodes '{codes}' is not an orientation"):
            slice_axis_index("axial", codes)
    assert slice_axis_index("axial", ["S", "L", "P"]) == 0  # axcodes as a list, as Orientationd takes them
    # a ready-made dataset's arrays are not reoriented: names keep their RAS meaning whatever axcodes says
    assert BundleData("synthetic", size=8, slice_axis="axial", axcodes=None).slice_axis == 2
    with pytest.raises(ValueError, match="axial"):
        slice_axis_index("transverse")
    with pytest.raises(ValueError, match="slice_axis"):
        slice_axis_index(3)


def _npy_datalist(tmp_path, shapes, labels=("b", "a", "b", "a", "b", "a")):
    items = []
    for i, (shape, label) in enumerate(zip(shapes, labels)):
        np.save(tmp_path / f"v{i}.npy", np.zeros(shape, np.float32))
        items.append({"image": f"v{i}.npy", "label": label, "group": f"p{i // 2}"})
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"training": items}))
    return path


def test_datalist_facts_and_split(tmp_path):
    path = _npy_datalist(tmp_path, [(12, 10, 6)] * 6)
    src = BundleData(datalist=path, slice_axis="axial", val_fraction=0.34, seed=0)
    info = src.info
    assert info["label_names"] == ["a", "b"] and info["num_classes"] == 2
    assert info["spatial_size"] == [12, 10, 6] and info["num_frames"] == 6 and info["slice_axis"] == 2
    assert info["image_shape"] == [1, 12, 10, 6] and len(info["datalist_sha256"]) == 64 and src.from_files
    train, val = src.data("train"), src.data("val")
    assert len(train) + len(val) == 6 and val
    assert not {it["group"] for it in train} & {it["group"] for it in val}  # a patient on one side only
    with pytest.raises(ValueError, match="no 'test' items"):
        src.data("test")
    with pytest.raises(ValueError, match=r"dl\.json' has no 'test' items .*a JSON datalist gives it as its 'test' list"):
        src.data("test")
    # the datalist's name of a list is not a split name (--validate#split validation): refused naming the split
    with pytest.raises(ValueError, match=r"got 'validation': 'validation' is the datalist's name of the list, the "
                                         r"split is 'val'"):
        src.data("validation")
    # spatial_size given: the grid is the user's; T follows slice_axis
    assert BundleData(datalist=path, spatial_size=[8, 8, 4], slice_axis=0).info["num_frames"] == 8
    # files: the intensity options are the recipe's (the training's transforms apply them)
    assert src.intensity_recipe([-1000, 400], None) == {"intensity_range": [-1000, 400], "percentiles": None}
    # a swapped window or percentile pair would invert or flatten every training input: refused, named as the option
    with pytest.raises(ValueError, match=r"--intensity_range .* a_min < a_max, got \[400, -1000\]"):
        src.intensity_recipe([400, -1000], None)
    with pytest.raises(ValueError, match=r"--percentiles .* lower < upper <= 100, got \[99.5, 0.5\]"):
        src.intensity_recipe(None, [99.5, 0.5])


def test_recipe_options_are_checked_with_a_ready_made_dataset_too(caplog):
    """The model card records axcodes, pixdim and the intensity steps as the recipe inference applies to files: a
    wrong one is refused before training whatever the source (it trained to the end, and the Deploy app refused the
    model), and one a ready-made dataset does not apply is said."""
    with pytest.raises(ValueError, match=r"axcodes 'RAX' is not an orientation"):
        BundleData(axcodes="RAX")
    with pytest.raises(ValueError, match=r"pixdim \[0.7, 0.7\] must be null, one number"):
        BundleData(pixdim=[0.7, 0.7])
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.datasets"):
        src = BundleData(pixdim=[1.0, 1.0, 1.0])
    assert "--pixdim [1.0, 1.0, 1.0] does not resample the ready-made dataset 'synthetic'" in caplog.text
    with pytest.raises(ValueError, match=r"--intensity_range .* a_min < a_max"):
        src.intensity_recipe([400, -1000], None)
    with pytest.raises(ValueError, match=r"--percentiles .* lower < upper"):
        src.intensity_recipe(None, [50, 40])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.datasets"):
        for _ in range(2):  # the config asks twice: said once
            assert src.intensity_recipe([0, 100], None) == {"intensity_range": [0.0, 1.0], "percentiles": None}
    said = "--intensity_range [0, 100] is not applied: the model's data is the ready-made dataset"
    assert caplog.text.count(said) == 1


def test_a_datalist_of_a_test_list_alone(tmp_path):
    """An external test set (a 'test' list, no 'training' one) was refused at once: its facts come from its own
    files; it can be evaluated or predicted, and training on it is refused naming the missing list."""
    path = _npy_datalist(tmp_path, [(12, 10, 6)] * 6)
    items = json.loads(path.read_text())["training"]
    (tmp_path / "ext.json").write_text(json.dumps({"labels": {"0": "a", "1": "b"}, "test": items[:3]}))
    src = BundleData(datalist=tmp_path / "ext.json", slice_axis="axial")
    assert src.info["spatial_size"] == [12, 10, 6] and src.info["label_names"] == ["a", "b"]
    assert len(src.data("test")) == 3
    with pytest.raises(ValueError, match=r"has no 'training' list \(a JSON datalist gives it as its 'training' list\): "
                                         r"a test set can be evaluated"):
        src.training_facts
    with pytest.raises(ValueError, match="has no 'training' items"):
        src.data("train")


def test_a_model_card_stands_in_for_the_images_of_its_own_datalist(tmp_path, caplog):
    """Bundle inference of new studies needed the training CSV and every training image on disk (trial T55: 'image
    ... does not exist. 15 more'); the model card written for that datalist's bytes gives the facts its images gave.
    Another datalist's card, or none, leaves the error as it was; the images, when here, are read as before."""
    from monai_das.utils.io import file_digest

    path = _npy_datalist(tmp_path, [(12, 10, 6), (14, 10, 6), (12, 10, 6), (12, 10, 8), (12, 10, 6), (12, 10, 6)])
    trained = BundleData(datalist=path, slice_axis="axial", val_fraction=0.34, seed=0).info
    card = tmp_path / "models" / "metadata.json"
    card.parent.mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"the trained weights")
    facts = {k: trained[k] for k in ("layout", "spatial_size", "in_channels", "num_frames", "label_names")}
    card.write_text(json.dumps({"das_model": {**facts, "datalist_sha256": file_digest(path), "source": "datalist",
                                              "datalist": str(path), "checkpoint": "model.pt",
                                              "checkpoint_sha256": file_digest(tmp_path / "models" / "model.pt"),
                                              "recipe": {"modalities": None}}}))
    for f in tmp_path.glob("v*.npy"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"dl\.json:training\[0\]: image .*v0\.npy' does not exist"):
        BundleData(datalist=path, slice_axis="axial", val_fraction=0.34, seed=0)  # no card: as before
    with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):
        src = BundleData(datalist=path, slice_axis="axial", val_fraction=0.34, seed=0, card=card)
    assert "does not exist" not in caplog.text  # nothing reads those images: no warning naming them (R70g)
    keys = ("label_names", "num_classes", "in_channels", "num_frames", "spatial_size", "image_shape", "slice_axis")
    assert {k: src.info[k] for k in keys} == {k: trained[k] for k in keys}  # [12, 10, 6]: the median grid
    # no datalist at all (batch inference on --input with the training's options from the card): the card gives the
    # classes and the facts; the lists are not here, and the studies are given as --input
    src = BundleData(dataset="datalist", slice_axis="axial", card=card)
    assert {k: src.info[k] for k in keys} == {k: trained[k] for k in keys} and src.from_files
    assert src.info["splits"] == {"dataset": "datalist", "datalist_sha256": file_digest(path)}
    assert src.intensity_recipe(None, [0.5, 99.5])["percentiles"] == [0.5, 99.5]  # files: the options, not [0, 1]
    with pytest.raises(ValueError, match=r"no datalist: the model card .* gives this run the classes and grid .*"
                                         r"dl\.json', not its lists; give --input .* or --datalist for its 'test' "
                                         r"list"):
        src.data("test")
    assert BundleData(dataset="datalist", label_names=["b", "a"], card=card).info["label_names"] == ["b", "a"]
    # the card is data: a class name the bundle tools would evaluate is refused, as in a datalist
    with pytest.raises(ValueError, match=r"das_model#label_names: class name \"\$__import__.*evaluates it as Python"):
        BundleData(dataset="datalist", label_names=["$__import__('os')", "a"], card=card)
    with pytest.raises(ValueError, match="dataset 'datalist' needs --datalist"):
        BundleData(dataset="datalist", slice_axis="axial")
    other = tmp_path / "other.json"
    other.write_text(path.read_text().replace("p0", "p7"))  # other bytes: the card is not its own
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BundleData(datalist=other, slice_axis="axial", card=card)
    (tmp_path / "models" / "model.pt").write_bytes(b"another run's weights")  # the card describes another model
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BundleData(datalist=path, slice_axis="axial", card=card)
    # why the card is not one is in the error, not only in the log at INFO (trial T64a)
    with pytest.raises(ValueError, match=r"needs --datalist .* \(the card .*metadata\.json' is not one: it describes "
                                         r"another file than '.*model\.pt' \(its checkpoint_sha256\)\)"):
        BundleData(dataset="datalist", slice_axis="axial", card=card)
    (tmp_path / "models" / "model.pt").write_bytes(b"the trained weights")
    with pytest.raises(ValueError, match=r"is not one: it describes a volume model trained on 'datalist', not on a "
                                         r"datalist of videos\)"):
        BundleData(dataset="datalist", layout="video", card=card)


def test_class_order_given_by_label_names(tmp_path):
    path = _npy_datalist(tmp_path, [(12, 10, 6)] * 6)
    src = BundleData(datalist=path, label_names=["b", "a"], val_fraction=0.34, seed=0)
    assert src.info["label_names"] == ["b", "a"] and src.info["num_classes"] == 2
    # the validation list is drawn by class name: an order other than the names' is recorded as a split older
    # versions drew otherwise (they took the classes by index), so their checkpoints are not resumed on it
    assert src.info["splits"]["validation_classes_by_name"] is True
    assert src.facts["validation_classes_by_name"] is True
    plain = BundleData(datalist=path, val_fraction=0.34, seed=0)
    assert "validation_classes_by_name" not in plain.info["splits"] and "validation_classes_by_name" not in plain.facts
    assert {it["group"] for it in plain.data("val")} == {it["group"] for it in src.data("val")}
    assert {(it["label"], it["label_name"]) for it in src.data("train")} == {(0, "b"), (1, "a")}
    # recorded with the split facts: a resume with another class order is refused by the resume recipe
    assert src.training_facts["label_names"] == ["b", "a"]
    assert "label_names" not in BundleData(datalist=path).training_facts  # as before: earlier content tags still hold
    # a class named without training items: refused before training, as a JSON's 'labels' would be
    with pytest.raises(ValueError, match=r"no training item has the class\(es\) \['c'\]"):
        BundleData(datalist=path, label_names=["b", "a", "c"]).training_facts
    with pytest.raises(ValueError, match="label_names .* names the classes of a datalist"):
        BundleData(dataset="synthetic", label_names=["b", "a"])


def test_a_datalist_of_one_class_is_refused_before_training(tmp_path):
    """Only positives (or a BCE habit of "one class"): a softmax of one class says 1.0 for every study."""
    path = _npy_datalist(tmp_path, [(12, 10, 6)] * 4, labels=("tumour",) * 4)
    with pytest.raises(ValueError, match=r"has one class \['tumour'\]: a classifier learns at least two .*binary task"):
        BundleData(datalist=path, val_fraction=0.5, seed=0).training_facts


def test_a_class_of_one_patient_is_refused_when_the_validation_list_is_drawn(tmp_path, caplog):
    """A CSV row labelled 'blbo' beside 'blob' (warned as a likely typo) trained a 3-class model whose validation AUC
    was NaN in every epoch, the best-model file epoch 1's, exit 0 (trial T55): with the validation list drawn from the
    training list, a class of one patient cannot be on both sides; refused before training, naming its row."""
    rows = [f"v{i}.npy,{'ab'[i % 2]},p{i // 2}" for i in range(10)] + ["v10.npy,bb,p9"]
    for i in range(11):
        np.save(tmp_path / f"v{i}.npy", np.zeros((12, 10, 6), np.float32))
    (tmp_path / "dl.csv").write_text("image,label,group\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"the class\(es\) \['bb'\] have items of a single patient \(items: "
                                         r".*dl\.csv:12\), so the validation list drawn"):
        BundleData(datalist=tmp_path / "dl.csv", val_fraction=0.34, seed=0).training_facts
    (tmp_path / "ok.csv").write_text("image,label,group\n" + "\n".join(rows[:10]) + "\n")
    BundleData(datalist=tmp_path / "ok.csv", val_fraction=0.34, seed=0).training_facts  # two classes: fine
    # 'b' of two patients whose other items make them 'a' patients in the split: not validated, but not one patient:
    # the warning of before, not the refusal (review)
    mixed = [f"v{i}.npy,a,p{i}" for i in range(8)] + ["v8.npy,a,p8", "v9.npy,b,p8", "v10.npy,a,p9", "v11.npy,b,p9"]
    np.save(tmp_path / "v11.npy", np.zeros((12, 10, 6), np.float32))
    (tmp_path / "mixed.csv").write_text("image,label,group\n" + "\n".join(mixed) + "\n")
    for seed in range(6):
        BundleData(datalist=tmp_path / "mixed.csv", val_fraction=0.2, seed=seed).training_facts
    # the CSV's own validation rows: 'bb' on one training row became a 3rd class of one item, only warned about as a
    # class without validation items (note 62): the warning says it is one typo from 'b', naming its row. A warning,
    # not a refusal: 'T1a' beside 'T1', 'AB' beside 'A' are classes (review)
    split = [f"{row},{'validation' if i in (8, 9) else 'training'}" for i, row in enumerate(rows)]
    (tmp_path / "own.csv").write_text("image,label,group,split\n" + "\n".join(split) + "\n")
    said = (r"the class\(es\) 'bb' \(one typo from 'b'\) have training items of a single patient \(items: "
            r".*own\.csv:12\) and no validation item: a misspelt label\?")
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.datasets"):
        BundleData(datalist=tmp_path / "own.csv").training_facts
    assert re.search(said, caplog.text), caplog.text
    # a name of its own ('c', not one typo from 'a' or 'b' once replacements of short names are left out), classes
    # named by --label_names, or integer labels ('10' beside '0'): not said
    caplog.clear()
    (tmp_path / "own_c.csv").write_text((tmp_path / "own.csv").read_text().replace(",bb,", ",c,"))
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.datasets"):
        BundleData(datalist=tmp_path / "own_c.csv").training_facts
        BundleData(datalist=tmp_path / "own.csv", label_names=["a", "b", "bb"]).training_facts
    assert "misspelt label?" not in caplog.text


def test_a_class_without_validation_items_is_warned_before_training(tmp_path, caplog):
    """No validation item of a class: the validation AUC is NaN in every epoch, which training met only at its end
    ('no validation epoch with a usable val_auc')."""
    path = _npy_datalist(tmp_path, [(12, 10, 6)] * 6)
    items = json.loads(path.read_text())["training"]
    (tmp_path / "dl3.json").write_text(json.dumps({"training": items[:4], "validation": [items[5]]}))
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.datasets"):
        BundleData(datalist=tmp_path / "dl3.json").training_facts
    assert "no validation item has the class(es) ['b']: the validation AUC is undefined" in caplog.text
    caplog.clear()
    # three classes, two of them in validation: the key metric averages those (PresentClassesROCAUC)
    (tmp_path / "three").mkdir()
    path3 = _npy_datalist(tmp_path / "three", [(12, 10, 6)] * 6, labels=("a", "b", "c", "a", "b", "c"))
    items3 = json.loads(path3.read_text())["training"]
    path3.write_text(json.dumps({"training": items3[2:], "validation": items3[:2]}))
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.datasets"):
        BundleData(datalist=path3).training_facts
    assert ("no validation item has the class(es) ['c']: the validation AUC that chooses the best model and the "
            "validation balanced accuracy average the classes present only") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.datasets"):
        BundleData(datalist=path, val_fraction=0.34, seed=0).training_facts  # both classes on both sides
    assert "no validation item" not in caplog.text and "no training item" not in caplog.text
    # no training item of a class: refused before training (the model would never learn it, yet give it
    # probabilities; a MONAI Label datastore of one patient per class did this)
    (tmp_path / "dl4.json").write_text(json.dumps({"training": items[1:2] + items[3:4], "validation": items[4:6]}))
    with pytest.raises(ValueError, match=r"no training item has the class\(es\) \['b'\]: the model would never"):
        BundleData(datalist=tmp_path / "dl4.json").training_facts
    # a misspelt label of a CSV's test row is a class of its own: the error names the row and what to do for a CSV
    # (it said "leave the class out of the datalist's 'labels'", which a CSV has not; trial X)
    rows = [f"v{i}.npy,{'ab'[i % 2]},p{i // 2},training" for i in range(4)] + ["v4.npy,tumour,p9,test"]
    (tmp_path / "typo.csv").write_text("image,label,group,split\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"\['tumour'\].*Items with them: .*typo\.csv:6\..*correct a misspelt label, "
                                         r"or give --label_names"):
        BundleData(datalist=tmp_path / "typo.csv").training_facts


def test_validation_and_test_files_are_checked_like_the_training_ones(tmp_path):
    """A validation/test list is header-checked when its data is asked for: a 2D image or another channel count than
    the training files' is refused there, naming the datalist, not met as a confusing error (or a silently misread
    file) inside the evaluator."""
    path = _npy_datalist(tmp_path, [(12, 10, 6)] * 6)
    items = json.loads(path.read_text())["training"]
    np.save(tmp_path / "rgb.npy", np.zeros((3, 12, 10, 6), np.float32))  # C×D×H×W: 3 channels
    np.save(tmp_path / "flat.npy", np.zeros((12, 10), np.float32))
    for test, match in (([{"image": "rgb.npy", "label": "a"}], r"dl2\.json': the 'test' images have 3 channel\(s\), "
                                                              r"the training images 1"),
                        ([{"image": "flat.npy", "label": "a"}], r"flat\.npy' is a 2D image")):
        (tmp_path / "dl2.json").write_text(json.dumps({"training": items, "test": test}))
        src = BundleData(datalist=tmp_path / "dl2.json", val_fraction=0.34, seed=0)
        assert src.data("val")  # the validation split of the training files passes
        with pytest.raises(ValueError, match=match):
            src.data("test")
        with pytest.raises(ValueError, match=match):  # and before training (train.json never loads the test list)
            BundleData(datalist=tmp_path / "dl2.json", val_fraction=0.34, seed=0).training_facts


def test_unusable_files_of_every_list_are_named_in_one_error(tmp_path):
    """Trial T56: a 2D file in the training list and a 3-channel one that the drawn validation list took were refused
    one run at a time (the validation list is checked only once the training list passes)."""
    path = _npy_datalist(tmp_path, [(12, 10, 6)] * 6)
    data = json.loads(path.read_text())
    np.save(tmp_path / "flat.npy", np.zeros((12, 10), np.float32))
    np.save(tmp_path / "rgb.npy", np.zeros((3, 12, 10, 6), np.float32))
    data["training"].append({"image": "flat.npy", "label": "a", "group": "q1"})
    data["validation"] = [{"image": "v0.npy", "label": "a", "group": "q2"},
                          {"image": "rgb.npy", "label": "b", "group": "q3"}]
    data["training"] = data["training"][1:]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as e:
        BundleData(datalist=path).info
    assert re.search(r"dl\.json:training\[5\]: '.*flat\.npy' is a 2D image.*\nThe 'validation' list too: mixed channel "
                     r"counts: '.*v0\.npy' has 1 channel\(s\), .*dl\.json:validation\[1\]: '.*rgb\.npy' has 3",
                     str(e.value))
    data["validation"] = data["validation"][:1]  # the other lists usable: the training list's error as it was
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"flat\.npy' is a 2D image[^\n]*$"):
        BundleData(datalist=path).info


def test_video_bundle_refuses_volumes_in_its_datalist(tmp_path):
    path = _npy_datalist(tmp_path, [(12, 10, 6)] * 6)
    with pytest.raises(ValueError, match=r"dl\.json:training\[0\]: '.*v0\.npy' is no clip \(neither a video nor "
                                         r"a DICOM file\): a video model trains on video files"):
        BundleData(datalist=path, layout="video", num_frames=8).info


def test_datalist_median_grid_when_shapes_differ(tmp_path, caplog):
    path = _npy_datalist(tmp_path, [(12, 10, 6), (12, 10, 8), (14, 10, 8), (12, 10, 6), (12, 12, 8), (12, 10, 8)])
    src = BundleData(datalist=path)
    shapes = np.array([np.load(it["image"], mmap_mode="r").shape for it in src.data("train")])
    with caplog.at_level("WARNING"):
        grid = src.info["spatial_size"]
    assert grid == [int(v) for v in np.median(shapes, axis=0).round()]
    # said before training only: inference and evaluation read the grid from the card (it was said in every run)
    assert "differ in shape" not in caplog.text
    with caplog.at_level("WARNING"):
        src.training_facts
    odd = sum(list(s) != grid for s in shapes)
    assert "differ in shape" in caplog.text and f"{odd} of {len(shapes)} differ from it, e.g. '" in caplog.text
    assert re.search(r"e\.g\. '.*v\d\.npy' \[\d+, \d+, \d+\]", caplog.text)  # names the odd images


def test_a_spatial_size_that_permutes_the_images_shape_is_warned_about(tmp_path, caplog):
    """Trial T56: --spatial_size [36, 48, 48] for files of 48×48×36 (slices first, as 'D, H, W' suggested) trained on
    volumes resized across their axes without a word."""
    path = _npy_datalist(tmp_path, [(12, 10, 6)] * 6)
    with caplog.at_level("WARNING"):
        BundleData(datalist=path, spatial_size=[6, 12, 10], slice_axis=0).training_facts
    assert ("spatial_size [6, 12, 10] holds the training images' shape [12, 10, 6] in another order: the grid is in "
            "the array order of the loaded images (after axcodes RAS: axes R, A, S), not slices first") in caplog.text
    assert "Give --spatial_size [12, 10, 6] for the files' own grid (slice_axis 0: 12 slices)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # another grid (not a reordering) or the files' own: nothing to say
        BundleData(datalist=path, spatial_size=[12, 10, 8]).training_facts
        BundleData(datalist=path, spatial_size=[12, 10, 6]).training_facts
    assert "in another order" not in caplog.text


def test_datalist_grid_is_that_of_the_oriented_volumes(tmp_path):
    """NIfTI files that store their axes z, x, y (with an affine saying so): the grid and T along the axial axis are
    those after Orientation(axcodes), as training reads them (the stored shape made 20 axial slices 41 frames and
    squashed the plane); the same voxels stored x, y, z give the same facts."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    xyz = rng.random((12, 10, 6)).astype(np.float32)
    perm = np.zeros((4, 4))
    perm[0, 1] = perm[1, 2] = perm[2, 0] = perm[3, 3] = 1.0  # stored axis 0 is z, 1 is x, 2 is y
    items = []
    for i, (array, affine) in enumerate([(xyz, np.eye(4)), (xyz.transpose(2, 0, 1), perm)] * 2):
        nib.Nifti1Image(array, affine).to_filename(str(tmp_path / f"v{i}.nii.gz"))
        items.append({"image": f"v{i}.nii.gz", "label": "ab"[i % 2], "group": f"p{i}"})
    (tmp_path / "dl.json").write_text(json.dumps({"training": items}))
    info = BundleData(datalist=tmp_path / "dl.json", slice_axis="axial", val_fraction=0.5, seed=0).info
    assert info["spatial_size"] == [12, 10, 6] and info["num_frames"] == 6
    stored = BundleData(datalist=tmp_path / "dl.json", slice_axis=2, axcodes=None, val_fraction=0.5, seed=0).info
    # without reorientation (axcodes null) the recipe reads the stored axes: the median of [12, 10, 6] and [6, 12, 10]
    assert stored["spatial_size"] == [9, 11, 8] and stored["num_frames"] == 8
    # the physical range the recipe records (geometry: what inference compares a study with), per oriented axis:
    # 1 mm voxels, 12 x 10 x 6 mm in RAS whatever the storage
    assert info["geometry"] == {"extent_mm": {"min": [12.0, 10.0, 6.0], "max": [12.0, 10.0, 6.0]},
                                "spacing_mm": {"min": [1.0, 1.0, 1.0], "max": [1.0, 1.0, 1.0]}}
    # a test list alone (an external test set) is no training data: its range is not recorded as the model's
    (tmp_path / "ext.json").write_text(json.dumps({"test": items}))
    assert BundleData(datalist=tmp_path / "ext.json", slice_axis="axial").info["geometry"] is None
    # .npy arrays have no physical size: none recorded (nothing compared at inference)
    (tmp_path / "npy").mkdir()
    assert BundleData(datalist=_npy_datalist(tmp_path / "npy", [(12, 10, 6)] * 6)).info["geometry"] is None


def test_datalist_grid_follows_the_recipes_resampling(tmp_path):
    """With pixdim the automatic grid is the median of the shapes after Spacing (it was the native voxel counts: 5 mm
    slices resampled to 2.5 mm were squeezed back to the native count); two pixdim values are refused at start-up."""
    import nibabel as nib

    items = []
    for i in range(4):
        nib.Nifti1Image(np.zeros((16, 16, 8), np.float32), np.diag([0.5, 0.5, 5.0, 1.0])).to_filename(
            str(tmp_path / f"v{i}.nii.gz"))
        items.append({"image": f"v{i}.nii.gz", "label": "ab"[i % 2], "group": f"p{i}"})
    (tmp_path / "dl.json").write_text(json.dumps({"training": items}))
    native = BundleData(datalist=tmp_path / "dl.json", slice_axis="axial", val_fraction=0.5, seed=0).info
    resampled = BundleData(datalist=tmp_path / "dl.json", slice_axis="axial", val_fraction=0.5, seed=0,
                           pixdim=[1.0, 1.0, 2.5]).info
    assert native["spatial_size"] == [16, 16, 8] and resampled["spatial_size"][2] in (15, 16)
    assert resampled["spatial_size"][:2] in ([8, 8], [7, 7]) and resampled["num_frames"] == resampled["spatial_size"][2]
    with pytest.raises(ValueError, match="pixdim"):
        BundleData(datalist=tmp_path / "dl.json", slice_axis="axial", pixdim=[0.7, 0.7])


def test_missing_datalist(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        BundleData(datalist=tmp_path / "nope.json")


def test_vessel(medmnist_root):
    src = BundleData("vesselmnist3d", size=28, data_dir=medmnist_root, num_samples={"test": 5})
    assert src.info["num_classes"] == 2 and src.info["label_names"][1] == "aneurysm"
    ds = src.data("test")
    assert len(ds) == 5 and tuple(torch.as_tensor(ds[0]["image"]).shape) == (1, 28, 28, 28)


def test_data_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MONAI_DAS_DATA", str(tmp_path))
    assert resolve_data_dir("vesselmnist3d", "null") == str(tmp_path / "medmnist3d")
    assert resolve_data_dir("pocus") == str(tmp_path / "video" / "covid19_lus_pocus")
    assert resolve_data_dir("pocus", "/x") == "/x"
    monkeypatch.delenv("MONAI_DAS_DATA")
    monkeypatch.delenv("POCUS_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="MONAI_DAS_DATA"):
        BundleData("pocus", layout="video").data("train")


def test_one_rule_for_the_data_folder(monkeypatch, tmp_path):
    """The bundles never read $POCUS_ROOT (their docs said they did), and the Python API read it before
    $MONAI_DAS_DATA where the bundles read $MONAI_DAS_DATA first: one rule now (review R67d)."""
    from monai_das.data import pocus_root

    monkeypatch.delenv("MONAI_DAS_DATA", raising=False)
    monkeypatch.setenv("POCUS_ROOT", str(tmp_path / "clips"))
    assert resolve_data_dir("pocus") == str(tmp_path / "clips") == str(pocus_root())
    with pytest.raises(FileNotFoundError, match="MANIFEST.csv"):  # the bundle looks there too now
        BundleData("pocus", layout="video").data("train")
    monkeypatch.setenv("MONAI_DAS_DATA", str(tmp_path))
    shared = str(tmp_path / "video" / "covid19_lus_pocus")
    assert resolve_data_dir("pocus") == shared == str(pocus_root())
    assert resolve_data_dir("synthetic") is None and resolve_data_dir("vesselmnist3d") == str(tmp_path / "medmnist3d")


def test_pocus(shared_data):
    root = shared_data / "video" / "covid19_lus_pocus"
    if not (root / "MANIFEST.csv").is_file():
        pytest.skip(f"POCUS clips not found in {root}")
    src = BundleData("pocus", layout="video", size=32, num_frames=8, data_dir=root, num_samples={"test": 2})
    assert src.info["num_classes"] == 3 and src.info["image_shape"] == [8, 1, 32, 32] and src.from_files
    items = src.data("test")
    assert len(items) == 2 and str(items[0]["image"]).startswith(str(root)) and 0 <= int(items[0]["label"]) < 3


def test_flags_and_precise_bn():
    assert flag("True") and flag("yes") and flag(1) and not flag("false") and not flag(None) and not flag("0")
    with pytest.raises(ValueError, match="boolean"):
        flag("maybe")
    assert optional("null") is None and optional("None") is None and optional(3) == 3
    assert precise_bn_batches("auto", range(16)) == -1 and precise_bn_batches("auto", range(84)) == 0
    assert precise_bn_batches(5, range(3)) == 5
    with pytest.raises(ValueError, match="precise_bn_batches"):
        precise_bn_batches(-3)


def test_class_counts_and_weights(tmp_path, caplog):
    src = BundleData("synthetic", size=8, num_samples={"train": 10})
    counts = src.class_counts("train")
    assert sum(counts) == 10 and len(counts) == 2
    # "balanced": n / (C · n_c), counted only when asked for (counts may be a callable), and said (the card records
    # only 'balanced')
    with caplog.at_level(logging.INFO, logger="monai_das.engines.utils"):
        w = class_weights("balanced", lambda: [30, 10], 2)
    assert torch.allclose(w, torch.tensor([40 / 60, 40 / 20])) and w.dtype == torch.float32
    assert "class_weights 'balanced': [0.6667, 2.0] for the training items per class [30, 10]" in caplog.text
    assert class_weights(None, lambda: 1 / 0) is None and class_weights("null", None) is None
    assert torch.equal(class_weights([1, 3], None, 2), torch.tensor([1.0, 3.0]))
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have no training items"):
        class_weights("balanced", [5, 0], 2)
    # named where the names are known (an index of 11 classes named nothing; trial T59a)
    with pytest.raises(ValueError, match=r"class\(es\) 'bladder' \(index 1\) have no training items \(counts "
                                         r"\{'liver': 5, 'bladder': 0\}\)"):
        class_weights("balanced", [5, 0], 2, label_names=["liver", "bladder"])
    with pytest.raises(ValueError, match="3 classes"):
        class_weights([1, 2], None, 3)
    for bad in ("inverse", [1, -1], [1, float("nan")], "x"):
        with pytest.raises(ValueError, match="class"):
            class_weights(bad, [1, 1], 2)
    # the bundle's loss takes them
    from pathlib import Path

    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(__file__).resolve().parents[2] / "bundles/das_volume_classification/configs/train.json"))
    parser.update({"bundle_root": str(tmp_path), "size": 8, "num_train": 12, "class_weights": "balanced"})
    loss = parser.get_parsed_content("loss")
    counts = parser.get_parsed_content("source").class_counts("train")
    assert torch.allclose(loss.loss.weight, torch.tensor([12 / (2 * c) for c in counts]))  # the wrapped CE's
    parser.update({"class_weights": None})
    parser.parse(True)
    assert parser.get_parsed_content("loss").loss.weight is None


def test_content_tag_names_the_items(tmp_path):
    """Batch inference fingerprints dataset items with it: another fold, seed or datalist is another test set."""
    from monai_das.engines import BundleData

    tag = BundleData("synthetic", seed=0).content_tag
    assert len(tag) == 16 and tag == BundleData("synthetic", seed=0).content_tag
    assert tag != BundleData("synthetic", seed=1).content_tag
    assert BundleData("synthetic", fold=0).content_tag != BundleData("synthetic", fold=1).content_tag
    assert tag != BundleData("synthetic", seed=0, synthetic_options={"num_informative": 3}).content_tag


def test_a_test_item_copied_from_a_training_item_is_warned(tmp_path, caplog):
    """A training volume saved again under another name in the test list was trained on and scored, unnoticed."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        np.save(tmp_path / f"v{i}.npy", rng.random((6, 6, 4)).astype(np.float32))
        items.append({"image": f"v{i}.npy", "label": "ab"[i % 2], "group": f"p{i}"})
    (tmp_path / "again.npy").write_bytes((tmp_path / "v0.npy").read_bytes())
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"training": items[:2], "validation": items[2:],
                                "test": [{"image": "again.npy", "label": "a", "group": "p9"}]}))
    src = BundleData(datalist=path)
    with caplog.at_level(logging.WARNING):
        src.data("val")
    assert "same content" not in caplog.text
    with caplog.at_level(logging.WARNING):
        src.data("test")
    assert "1 image(s) have the same content (byte for byte) as an image of another list" in caplog.text
    assert "again.npy" in caplog.text and "v0.npy" in caplog.text


def test_split_identity_names_what_decides_the_splits(tmp_path):
    """Recorded in the model card (info["splits"]); an evaluation on another identity is checked against it."""
    path = _npy_datalist(tmp_path, [(12, 10, 6)] * 6)
    derived = BundleData(datalist=path, val_fraction=0.34, seed=0)
    ident = derived.info["splits"]
    assert ident == {"dataset": "datalist", "datalist_sha256": derived.info["datalist_sha256"], "seed": 0,
                     "val_fraction": 0.34}
    assert BundleData(datalist=path, val_fraction=0.34, seed=1).split_identity()["seed"] == 1
    # a split the every-class rule changed says so: a checkpoint of the older split (another validation list drawn
    # from the same options) is refused on resume and evaluation, not silently given other items
    rare = tmp_path / "rare"
    rare.mkdir()
    labels = ["a"] * 9 + ["b"] * 7 + ["c"] * 2  # 18 patients: round(0.2 × 18) = 4 gave class c none
    for i in range(len(labels)):
        np.save(rare / f"r{i}.npy", np.zeros((8, 8, 4), np.float32))
    (rare / "dl.json").write_text(json.dumps({"training": [
        {"image": f"r{i}.npy", "label": lab, "group": f"q{i}"} for i, lab in enumerate(labels)]}))
    src = BundleData(datalist=rare / "dl.json", val_fraction=0.2, seed=0)
    assert src.split_identity().get("every_class_validated") is True
    assert src.facts.get("every_class_validated") is True  # in the resume recipe: an older last.pt is refused
    assert {it["label_name"] for it in src.data("val")} == {"a", "b", "c"}
    assert "every_class_validated" not in derived.split_identity()  # a split the rule left alone: as before
    pocus = BundleData("pocus", layout="video", data_dir=tmp_path, fold=2, num_folds=4, seed=3).split_identity()
    assert pocus == {"dataset": "pocus", "fold": 2, "num_folds": 4, "probe": "convex", "seed": 3}
    assert BundleData("synthetic", seed=1).split_identity() == {"dataset": "synthetic", "seed": 1,
                                                                 "synthetic_options": {}}
    assert BundleData("vesselmnist3d", data_dir=tmp_path, seed=5).split_identity() == {"dataset": "vesselmnist3d"}


def test_intensity_recipe_maps_a_file_to_the_training_intensities(tmp_path):
    """A ready-made dataset's items are not scaled by the intensity options: the recipe (model card, inference on
    files, the Deploy app) records what they already are. A synthetic volume written to NIfTI and read back through
    that recipe is the training input itself; percentile scaling (the options' default) changed it, and the main
    job's model then called 8 of 8 such studies 'disc'."""
    import nibabel as nib

    from monai_das.data.studies import LoadStudy

    src = BundleData("synthetic", size=16, num_samples={"val": 2})
    assert src.intensity_recipe(None, [0.5, 99.5]) == {"intensity_range": [0.0, 1.0], "percentiles": None}
    # MedMNIST3D items are uint8 / 255, whatever the options: [0, 255] -> [0, 1] (min-max scaling, recorded before,
    # gave p = 1.0 for every one of 6 FractureMNIST3D-like volumes that did not span 0..255)
    assert BundleData("vesselmnist3d").intensity_recipe([-1000, 400], [1, 99]) == {"intensity_range": [0.0, 255.0],
                                                                                   "percentiles": None}
    vol = torch.as_tensor(src.data("val")[0]["image"]).float()  # 1×16×16×16 in [0, 1]
    nib.save(nib.Nifti1Image(vol[0].numpy(), np.eye(4)), str(tmp_path / "v.nii.gz"))
    recipe = {"layout": "volume", "spatial_size": [16, 16, 16], "slice_axis": 0, "axcodes": "RAS"}
    back = LoadStudy({**recipe, **src.intensity_recipe(None, [0.5, 99.5])}, in_channels=1)(tmp_path / "v.nii.gz")
    torch.testing.assert_close(torch.as_tensor(back), vol, atol=1e-6, rtol=0)
    stretched = LoadStudy({**recipe, "percentiles": [0.5, 99.5]}, in_channels=1)(tmp_path / "v.nii.gz")
    assert float((torch.as_tensor(stretched) - vol).abs().max()) > 0.05


def _ct_series(folder, n=4):
    """pydicom's CT_small.dcm as an ``n``-slice series of its own (new SeriesInstanceUID) in ``folder``."""
    import pydicom
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True)
    uid = pydicom.uid.generate_uid()
    for i in range(n):
        d = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        d.InstanceNumber, d.SeriesInstanceUID, d.SOPInstanceUID = i + 1, uid, pydicom.uid.generate_uid()
        x, y, z = (float(v) for v in d.ImagePositionPatient)
        d.ImagePositionPatient = [x, y, z + 5.0 * i]
        d.save_as(folder / f"s{i}.dcm")


def test_a_dicom_series_copied_into_another_folder_is_one_study(tmp_path):
    """The same series (one SeriesInstanceUID) in two folders is a copy: in the training list it would count twice
    (and an automatic validation split, by path, could put one copy on each side), in the training and the test list
    it would be tested on what was trained on. Refused naming both items, as the same path in two lists is."""
    import shutil

    for i in range(4):
        _ct_series(tmp_path / f"p{i}")
    shutil.copytree(tmp_path / "p0", tmp_path / "p0_copy")
    train = [{"image": f"p{i}", "label": "ab"[i % 2]} for i in range(4)]
    (tmp_path / "copy_in_test.json").write_text(json.dumps({"training": train,
                                                            "test": [{"image": "p0_copy", "label": "a"}]}))
    src = BundleData(datalist=tmp_path / "copy_in_test.json", val_fraction=0.5, seed=0)
    assert src.data("val") and src.info["spatial_size"] == [128, 128, 4]  # the training files pass
    with pytest.raises(ValueError, match=r"copy_in_test\.json:test\[0\]: '.*p0_copy' holds the same DICOM image as "
                                         r".*copy_in_test\.json:training\[0\]: '.*p0' \(SOPInstanceUID [0-9.]+\): "
                                         r"a copy"):
        src.data("test")
    (tmp_path / "copy_in_train.json").write_text(json.dumps({"training": [*train, {"image": "p0_copy",
                                                                                   "label": "a"}]}))
    with pytest.raises(ValueError, match=r"training\[4\]: '.*p0_copy' holds the same DICOM image as .*training\[0\]"):
        BundleData(datalist=tmp_path / "copy_in_train.json", val_fraction=0.5, seed=0).info
    # two parts of one series (one SeriesInstanceUID, other images: e.g. two phases) are no copies
    import pydicom

    for f in (tmp_path / "p1").glob("*.dcm"):
        d = pydicom.dcmread(f)
        d.SeriesInstanceUID = pydicom.dcmread(next((tmp_path / "p0").glob("*.dcm"))).SeriesInstanceUID
        d.save_as(f)
    (tmp_path / "parts.json").write_text(json.dumps({"training": train}))
    assert BundleData(datalist=tmp_path / "parts.json", val_fraction=0.5, seed=0).info["spatial_size"] == [128, 128, 4]


def test_a_test_series_of_a_training_patient_is_warned_about(tmp_path, caplog):
    """A series moved to the test list with a blank patient cell (its image its own patient) was tested on its
    patient's other, trained series without a word (trial T58b): the DICOM PatientIDs of the lists are compared. A
    de-identified export writing one PatientID for most studies names no patient: passed over."""
    import pydicom

    def series(name, patient):
        _ct_series(tmp_path / name)
        for f in (tmp_path / name).glob("*.dcm"):
            d = pydicom.dcmread(f)
            d.PatientID = patient
            d.save_as(f)

    for i in range(6):
        series(f"p{i}", f"PT{i:03d}")
    series("p0_other", "PT000")  # the same patient's other series
    train = [{"image": f"p{i}", "label": "ab"[i % 2], "group": f"PT{i:03d}"} for i in range(6)]
    (tmp_path / "dl.json").write_text(json.dumps({"training": train, "test": [{"image": "p0_other", "label": "a"}]}))
    src = BundleData(datalist=tmp_path / "dl.json", val_fraction=0.34, seed=0)
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.datasets"):
        src.data("test")
    assert re.search(r"1 DICOM stud\(ies\) of the 'test' list have the PatientID of a training study.*"
                     r"dl\.json:test\[0\]: '.*p0_other' and .*dl\.json:training\[0\]: '.*p0' \(PatientID 'PT000'\)",
                     caplog.text)
    caplog.clear()
    for i in range(6):  # one PatientID for every study: de-identified, no patient named
        for f in (tmp_path / f"p{i}").glob("*.dcm"):
            d = pydicom.dcmread(f)
            d.PatientID = "ANONYMOUS"
            d.save_as(f)
    for f in (tmp_path / "p0_other").glob("*.dcm"):
        d = pydicom.dcmread(f)
        d.PatientID = "ANONYMOUS"
        d.save_as(f)
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.datasets"):
        BundleData(datalist=tmp_path / "dl.json", val_fraction=0.34, seed=0).data("test")
    assert "have the PatientID of a training study" not in caplog.text
    # a test list alone (an external test set): its studies are not compared with themselves
    for i, folder in enumerate(["p0", "p1", "p0_other"]):
        for f in (tmp_path / folder).glob("*.dcm"):
            d = pydicom.dcmread(f)
            d.PatientID = f"EXT{i}"
            d.save_as(f)
    (tmp_path / "ext.json").write_text(json.dumps({"labels": {"0": "a", "1": "b"}, "test": [
        {"image": name, "label": "a"} for name in ("p0", "p1", "p0_other")]}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.datasets"):
        BundleData(datalist=tmp_path / "ext.json").data("test")
    assert "have the PatientID of a training study" not in caplog.text


def _as_modality(folder, modality):
    import pydicom

    for f in folder.glob("*.dcm"):
        d = pydicom.dcmread(f)
        d.Modality = modality
        d.save_as(f)


def test_a_datalist_records_its_dicom_modalities_and_warns_about_a_mix(tmp_path, caplog):
    """The training studies' DICOM modalities are data facts (the bundle records them in the recipe, so inference
    warns about a study of another one): an MR series among CT training series, and an MR series in the test list of a
    CT model, trained and scored without a word. Both warned, naming the files; a list without DICOM files records
    none."""
    import logging

    for i in range(5):
        _ct_series(tmp_path / f"p{i}")
    _as_modality(tmp_path / "p4", "MR")
    train = [{"image": f"p{i}", "label": "ab"[i % 2]} for i in range(4)]
    (tmp_path / "ct.json").write_text(json.dumps({"training": train, "test": [{"image": "p4", "label": "a"}]}))
    with caplog.at_level(logging.WARNING):
        src = BundleData(datalist=tmp_path / "ct.json", val_fraction=0.5, seed=0)
        assert src.info["modalities"] == ["CT"] and not any("modalities" in r.getMessage() for r in caplog.records)
        src.data("test")
    assert any("the 'test' images include DICOM modalities the training images lack: 1 MR ('" in r.getMessage()
               and "p4')" in r.getMessage() and "(training: ['CT'])" in r.getMessage() for r in caplog.records)
    caplog.clear()
    _ct_series(tmp_path / "p5")
    (tmp_path / "mixed.json").write_text(json.dumps({"training": [*train, {"image": "p4", "label": "a"}],
                                                     "validation": [{"image": "p5", "label": "b"}]}))
    with caplog.at_level(logging.WARNING):
        assert BundleData(datalist=tmp_path / "mixed.json", val_fraction=0.5, seed=0).info["modalities"] == ["CT", "MR"]
    assert any("are of 2 DICOM modalities: 4 CT ('" in r.getMessage() and ", 1 MR ('" in r.getMessage()
               for r in caplog.records), caplog.text
    assert BundleData().info["modalities"] is None  # a ready-made dataset: not known
    # a training list with files that are no DICOM (CT converted to NIfTI beside MR series): not known either
    import nibabel as nib

    nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)).to_filename(str(tmp_path / "ct.nii.gz"))
    (tmp_path / "part.json").write_text(json.dumps({"training": [*train, {"image": "ct.nii.gz", "label": "a"}],
                                                   "validation": [{"image": "p5", "label": "b"}]}))
    assert BundleData(datalist=tmp_path / "part.json", spatial_size=[8, 8, 4]).info["modalities"] is None


def test_video_datalist_mixes_grey_and_colour_clips(tmp_path, caplog):
    """A video recipe decodes every clip grey (in_channels 1) or RGB (3): a datalist of grey DICOM cines beside a colour
    video trains (it was refused as "mixed channel counts"); the network's channels are the run's in_channels, and
    another count is refused."""
    import cv2

    items = []
    for i in range(4):
        path = tmp_path / f"c{i}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (16, 12))
        for t in range(6):
            writer.write(np.full((12, 16, 3), 20 * t + 40 * i, np.uint8))
        writer.release()
        items.append({"image": path.name, "label": "ab"[i % 2]})
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    ds = Dataset()  # a grey ultrasound cine: 6 frames of 12×16, MONOCHROME2
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.SeriesInstanceUID, ds.NumberOfFrames, ds.Rows, ds.Columns = "US", generate_uid(), 6, 12, 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, "MONOCHROME2", 8, 8, 7
    ds.PixelRepresentation, ds.PixelData = 0, np.arange(6 * 12 * 16, dtype=np.uint8).tobytes()
    ds.save_as(tmp_path / "grey.dcm", enforce_file_format=True)
    items.append({"image": "grey.dcm", "label": "a"})
    (tmp_path / "dl.json").write_text(json.dumps({"training": items}))
    for channels in (1, 3):
        info = BundleData(datalist=tmp_path / "dl.json", layout="video", num_frames=8, in_channels=channels).info
        assert info["in_channels"] == channels and info["image_shape"][1] == channels
    # the grey cine is 12×16 as the videos: no frame-size warning; a 30×40 one would be stretched to the grid: named
    assert "differ in frame size" not in caplog.text
    # 6 frames each for num_frames=8: repeated, said before training (it stretched them without a word; inference
    # warns per clip, so reading the facts for inference or evaluation does not say it)
    assert "fewer frames than num_frames" not in caplog.text
    BundleData(datalist=tmp_path / "dl.json", layout="video", num_frames=8, val_fraction=0.4, seed=1).training_facts
    assert re.search(r"(\d) of \1 training clips of '.*dl\.json' have fewer frames than num_frames=8, "
                     r"e\.g\. '.*\.(avi|dcm)' \(6 frames\)", caplog.text)
    import shutil

    other = cv2.VideoWriter(str(tmp_path / "wide.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (40, 20))
    for t in range(6):
        other.write(np.full((20, 40, 3), 30 * t, np.uint8))
    other.release()
    # a validation list of its own: the wide clip stays a training item whatever a drawn split would pick
    (tmp_path / "dl_wide.json").write_text(json.dumps({"training": [*items[2:], {"image": "wide.avi", "label": "b"}],
                                                       "validation": items[:2]}))
    caplog.clear()
    with caplog.at_level("WARNING"):  # said before training only: every evaluation and export repeated it (T58)
        BundleData(datalist=tmp_path / "dl_wide.json", layout="video", num_frames=8).info
    assert "differ in frame size" not in caplog.text
    with caplog.at_level("WARNING"):
        BundleData(datalist=tmp_path / "dl_wide.json", layout="video", num_frames=8).training_facts
    assert re.search(r"differ in frame size; every frame is resized to \[28, 28\] .*1 of \d+ differ from the most "
                     r"common size \[12, 16\]; the most stretched: '.*wide\.avi' 20×40 \(H×W\) \(2×\)", caplog.text)
    # spatial_size given as [W, H] (OpenCV's order): every landscape clip stretched to portrait without a word (T63a)
    caplog.clear()
    with caplog.at_level("WARNING"):
        BundleData(datalist=tmp_path / "dl_wide.json", layout="video", num_frames=8,
                   spatial_size=[16, 12]).training_facts
    assert re.search(r"spatial_size \[16, 12\] \(height, width\) is portrait, but \d+ of \d+ training clips of "
                     r"'.*dl_wide\.json' are landscape, e\.g\. '.*' 12×16 \(H×W\).*stretched up to 2\.7× to fit\. "
                     r"spatial_size is \[height, width\] .*did you mean \[12, 16\]\?", caplog.text)
    assert "differ in frame size" not in caplog.text  # one warning, the one that says what to do
    with pytest.raises(ValueError, match="in_channels of a video model is 1 .* or 3 .*, got 4"):
        BundleData(datalist=tmp_path / "dl.json", layout="video", num_frames=8, in_channels=4).info


def test_frame_size_warning_names_clips_of_another_size(tmp_path, caplog):
    """The frame-size warning's examples are clips that differ from the most common size: ranked over every clip, it
    said "2 of 5 differ from the most common size [24, 24]; the most stretched: 'c0.avi' 24×24 (H×W) (1×), ..." of
    square clips on a square grid, naming clips of the common size (trial t72h)."""
    import cv2

    items = []
    for i, side in enumerate((24, 24, 24, 32, 40, 24, 24)):  # 5 training clips, 2 validation ones
        path = tmp_path / f"c{i}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (side, side))
        for t in range(6):
            writer.write(np.full((side, side, 3), 10 * t + 20 * i, np.uint8))
        writer.release()
        items.append({"image": path.name, "label": "ab"[i % 2]})
    (tmp_path / "dl.json").write_text(json.dumps({"training": items[:5], "validation": items[5:]}))
    with caplog.at_level("WARNING"):
        BundleData(datalist=tmp_path / "dl.json", layout="video", num_frames=6, spatial_size=[24, 24]).training_facts
    said = re.search(r"2 of 5 differ from the most common size \[24, 24\]; the most stretched: (.*)\.", caplog.text)
    assert said is not None, caplog.text
    assert sorted(re.findall(r"c\d\.avi", said.group(1))) == ["c3.avi", "c4.avi"]


def test_clips_of_another_frame_aspect_than_the_training_clips_are_warned(tmp_path, caplog):
    """A portrait clip given to a model trained on landscape clips was stretched to the grid without a word at
    inference and in the test metrics, where training warned of such clips (trial T63a): the training clips' frame
    aspect range is the recipe's geometry, and a clip far outside it is named in the list's check and by LoadStudy."""
    import cv2

    from monai_das.data import LoadStudy
    from monai_das.transforms import check_recipe

    def clip(name: str, hw: tuple) -> str:
        writer = cv2.VideoWriter(str(tmp_path / name), cv2.VideoWriter_fourcc(*"MJPG"), 10, hw[::-1])
        for t in range(6):
            writer.write(np.full((*hw, 3), 30 * t, np.uint8))
        writer.release()
        return name

    train = [{"image": clip(f"t{i}.avi", (12, 16) if i % 2 else (18, 32)), "label": "ab"[i % 2]} for i in range(4)]
    test = [{"image": clip("portrait.avi", (32, 16)), "label": "a"}, {"image": clip("wide.avi", (15, 24)),
                                                                      "label": "b"}]
    path = tmp_path / "dl.json"
    val = [{"image": clip(f"v{i}.avi", (12, 16)), "label": "ab"[i]} for i in range(2)]
    path.write_text(json.dumps({"training": train, "validation": val, "test": test}))
    src = BundleData(datalist=path, layout="video", num_frames=6, spatial_size=[16, 24])
    geometry = src.info["geometry"]
    assert geometry == {"frame_aspect": {"min": 0.562, "max": 0.75}, "clip_seconds": {"min": 0.6, "max": 0.6}}
    with caplog.at_level(logging.WARNING, logger="monai_das"):
        assert len(src.data("test")) == 2
    assert re.search(r"dl\.json': 1 of the 2 'test' images is unlike the training images in frame aspect or duration, "
                     r"and scored "
                     r"in its metrics as they are: 'portrait\.avi' has frames of 32×16 \(H×W, height/width 2\.00\), "
                     r"the training clips' 0\.56-0\.75: resized to the network's 16×24", caplog.text)
    assert "wide.avi" not in caplog.text  # 0.625: within the training clips' range
    recipe = check_recipe({"layout": "video", "num_frames": 6, "spatial_size": [16, 24], "geometry": geometry})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das"):
        assert not LoadStudy(recipe).load(tmp_path / "wide.avi").info.get("warnings")
        study = LoadStudy(recipe).load(tmp_path / "portrait.avi")
    assert any("has frames of 32×16" in w and "stretched unlike any clip" in w for w in study.info["warnings"])
    assert "portrait.avi' has frames of 32×16" in caplog.text
    for bad in ({"frame_aspect": {"min": 0.8, "max": 0.5}}, {"frame_aspect": {"min": 0}}):
        with pytest.raises(ValueError, match=r"recipe 'geometry' of clips must be .*frame_aspect"):
            check_recipe({"layout": "video", "num_frames": 6, "spatial_size": [16, 24], "geometry": bad})


def test_clips_far_shorter_or_longer_than_the_training_clips_are_warned(tmp_path, caplog):
    """A 2 fps clip given to a model trained on 10 fps clips was classified without a word (trial T68b): its T frames,
    taken evenly over the clip, span 5x the time. The training clips' range of duration is the recipe's geometry, and
    a clip far outside it is named in the list's check and by LoadStudy; a DICOM cine or a clip whose file declares
    no frame rate is not judged."""
    import cv2

    from monai_das.data import LoadStudy
    from monai_das.transforms import check_recipe

    def clip(name: str, frames: int, fps: float) -> str:
        writer = cv2.VideoWriter(str(tmp_path / name), cv2.VideoWriter_fourcc(*"MJPG"), fps, (16, 12))
        for t in range(frames):
            writer.write(np.full((12, 16, 3), 20 * t, np.uint8))
        writer.release()
        return name

    train = [{"image": clip(f"t{i}.avi", 6 + 2 * (i % 2), 10), "label": "ab"[i % 2]} for i in range(4)]  # 0.6-0.8 s
    val = [{"image": clip(f"v{i}.avi", 6, 10), "label": "ab"[i]} for i in range(2)]
    test = [{"image": clip("slow.avi", 6, 2), "label": "a"}, {"image": clip("ok.avi", 12, 10), "label": "b"}]
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"training": train, "validation": val, "test": test}))
    src = BundleData(datalist=path, layout="video", num_frames=6, spatial_size=[12, 16])
    geometry = src.info["geometry"]
    assert geometry["clip_seconds"] == {"min": 0.6, "max": 0.8}
    with caplog.at_level(logging.WARNING, logger="monai_das"):
        assert len(src.data("test")) == 2
    assert re.search(r"1 of the 2 'test' images is unlike the training images in frame aspect or duration, and scored "
                     r"in its metrics as they are: 'slow\.avi' lasts 3 s \(6 frames at 2 fps\), the training clips "
                     r"0\.6-0\.8 s: its frames span a far longer stretch of time", caplog.text)
    assert "ok.avi" not in caplog.text  # 1.2 s: within twice the longest training clip
    recipe = check_recipe({"layout": "video", "num_frames": 6, "spatial_size": [12, 16], "geometry": geometry})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das"):
        assert not LoadStudy(recipe).load(tmp_path / "ok.avi").info.get("warnings")
        study = LoadStudy(recipe).load(tmp_path / "slow.avi")
    assert any("lasts 3 s (6 frames at 2 fps)" in w for w in study.info["warnings"])
    for bad in ({"frame_aspect": {"min": 0.5, "max": 0.8}, "clip_seconds": {"min": 0}},
                {"frame_aspect": {"min": 0.5, "max": 0.8}, "clip_seconds": {"min": 2, "max": 1}}):
        with pytest.raises(ValueError, match=r"recipe 'geometry' of clips must be .*clip_seconds"):
            check_recipe({"layout": "video", "num_frames": 6, "spatial_size": [12, 16], "geometry": bad})


def _clip(path, frames: int, seed: int = 0) -> None:
    """An MJPG .avi of ``frames`` noise frames (16×16): JPEG frames of different sizes, so a cut file loses some."""
    import cv2

    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (16, 16))
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    writer.release()


def test_test_clips_are_checked_like_the_training_ones_before_training(tmp_path):
    """Trial T58: a video CSV datalist whose test row named a truncated .avi, or gave evidence past its clip's frames,
    trained without a word; only the evaluation after training stopped on it (as filling the training cache stops on
    such a training clip). Both are refused before training now, naming every such file and CSV line."""
    rows = ["image,label,patient_id,split,evidence"]
    for i in range(6):
        _clip(tmp_path / f"c{i}.avi", 12, seed=i)
        rows.append(f"c{i}.avi,{'ab'[i % 2]},p{i},training,")
    _clip(tmp_path / "t0.avi", 12, seed=10)
    _clip(tmp_path / "whole.avi", 40, seed=11)
    body = (tmp_path / "whole.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(body[: len(body) // 2])  # the header still declares 40 frames
    good = [*rows, "t0.avi,a,q0,test,3;4"]
    (tmp_path / "ok.csv").write_text("\n".join(good) + "\n")
    BundleData(datalist=tmp_path / "ok.csv", layout="video", num_frames=8, val_fraction=0.34, seed=0).training_facts
    (tmp_path / "dl.csv").write_text("\n".join([*good, "cut.avi,b,q1,test,", "whole.avi,a,q2,test,500;501"]) + "\n")
    with pytest.raises(ValueError) as e:
        BundleData(datalist=tmp_path / "dl.csv", layout="video", num_frames=8, val_fraction=0.34, seed=0).training_facts
    text = str(e.value)
    assert "2 of the 3 'test' clips cannot be evaluated after training" in text
    assert re.search(r"dl\.csv:9: '.*cut\.avi'.*looks truncated or corrupt: decoded \d+ of the 40 frames", text)
    assert re.search(r"dl\.csv:10: '.*whole\.avi': evidence index 500 is outside its 40 frames \(0\.\.39\)", text)
    # the evaluation's own check is as before: the test split's data is read, its clips loaded by the recipe
    assert BundleData(datalist=tmp_path / "ok.csv", layout="video", num_frames=8).data("test")


def test_a_capped_split_is_said_so(tmp_path):
    """--num_test 15 of 610 test items: the evaluation's reports go beside the whole split's, and the model card
    keeps the whole split's metrics (trial T59a); a cap at or above the split's size, or the synthetic data's count,
    is no cap."""
    from monai_das.handlers import output_dir_capped

    path = _npy_datalist(tmp_path, [(12, 10, 6)] * 6)
    whole = BundleData(datalist=path, slice_axis="axial")  # the training part after the drawn validation list
    assert BundleData(datalist=path, slice_axis="axial", num_samples={"train": 1}).capped("train") == 1
    n = len(whole.data("train"))
    assert BundleData(datalist=path, slice_axis="axial", num_samples={"train": n}).capped("train") is None
    assert whole.capped("train") is None
    assert BundleData("synthetic", size=16, num_samples={"test": 5}).capped("test") is None
    assert BundleData("vesselmnist3d", num_samples={"test": 15}).capped("test") == 15  # of medmnist.INFO's 382
    assert output_dir_capped(tmp_path / "eval", 15) == str(tmp_path / "eval" / "n15")
    assert output_dir_capped(tmp_path / "eval", None) == str(tmp_path / "eval")


def test_validation_and_test_images_unlike_the_training_ones_are_warned(tmp_path, caplog):
    """A crop of a few mm in the validation or test list was resized to the grid and scored in the metrics without a
    word, where bundle inference on the same file warned (trial T61a): the split's images unlike the training images
    in size are named when the list is checked."""
    import nibabel as nib

    rng = np.random.default_rng(0)

    def volume(name: str, shape: tuple, mm: float) -> str:
        nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32), np.diag([mm, mm, 2.5, 1.0])),
                 str(tmp_path / name))
        return name

    train = [{"image": volume(f"t{i}.nii.gz", (32, 36, 20), 0.8), "label": i % 2} for i in range(4)]
    val = [{"image": volume(f"v{i}.nii.gz", (32, 36, 20), 0.8), "label": i % 2} for i in range(2)]
    test = [{"image": volume("crop.nii.gz", (8, 9, 5), 0.8), "label": 0},
            {"image": volume("whole.nii.gz", (30, 36, 20), 0.8), "label": 1}]
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"training": train, "validation": val, "test": test}))
    src = BundleData(datalist=path, slice_axis="axial")
    with caplog.at_level(logging.WARNING, logger="monai_das"):
        assert len(src.data("val")) == 2
        assert "unlike the training images" not in caplog.text
        assert len(src.data("test")) == 2
    assert re.search(r"dl\.json': 1 of the 2 'test' images is unlike the training images in size, and scored in "
                     r"its metrics as they are: 'crop\.nii\.gz' is unlike the training studies in size: it covers 6 mm "
                     r"along axis 0 \(R\) \(training studies 26-26 mm\)", caplog.text)
    assert "whole.nii.gz" not in caplog.text


def test_thick_slices_across_another_axis_than_slice_axis_are_noted(tmp_path, caplog):
    """0.8×0.8×2.5 mm volumes trained along the default slice_axis 0 (sagittal) took every frame as a reformat across
    the thick slices without a word (trial T61a): the training's start says which axis the acquired slices lie
    across, and names the option; along that axis, nothing is said."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    items = []
    for i in range(6):
        nib.save(nib.Nifti1Image(rng.random((24, 24, 10)).astype(np.float32), np.diag([0.8, 0.8, 2.5, 1.0])),
                 str(tmp_path / f"v{i}.nii.gz"))
        items.append({"image": f"v{i}.nii.gz", "label": i % 2})
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"training": items[:4], "validation": items[4:]}))
    with caplog.at_level(logging.WARNING, logger="monai_das"):
        BundleData(datalist=path).training_facts
    assert re.search(r"voxels of 2\.5 mm along axis 2 \(axial\) and at most 0\.8 mm along the others \(medians\): "
                     r"their acquired slices lie across axis 2, but slice_axis 0 takes its frames along another axis.*"
                     r"give --slice_axis axial\.", caplog.text)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das"):
        BundleData(datalist=path, slice_axis="axial").training_facts
    assert "acquired slices" not in caplog.text


def test_training_clips_of_very_different_frame_rates_are_noted(tmp_path, caplog):
    """Clips at 1 and 240 fps trained beside 10-60 fps ones without a word, though a clip becomes T frames by count,
    not time (trial T61b): the training's start names the range and the clips; rates within 4× say nothing."""
    import cv2

    def clip(name: str, fps: float) -> dict:
        writer = cv2.VideoWriter(str(tmp_path / name), cv2.VideoWriter_fourcc(*"MJPG"), fps, (16, 12))
        for t in range(6):
            writer.write(np.full((12, 16, 3), 20 * t, np.uint8))
        writer.release()
        return {"image": name, "label": "ab"[len(name) % 2]}

    near = [clip("a.avi", 25), clip("bb.avi", 30), clip("c.avi", 25), clip("dd.avi", 30)]
    val = [clip("v.avi", 25), clip("vv.avi", 25)]
    (tmp_path / "near.json").write_text(json.dumps({"training": near, "validation": val}))
    with caplog.at_level(logging.WARNING, logger="monai_das"):
        BundleData(datalist=tmp_path / "near.json", layout="video", num_frames=4).training_facts
    assert "frame rates" not in caplog.text
    far = [*near[2:], clip("slow.avi", 2), clip("fast_.avi", 120)]
    (tmp_path / "far.json").write_text(json.dumps({"training": far, "validation": val}))
    with caplog.at_level(logging.WARNING, logger="monai_das"):
        BundleData(datalist=tmp_path / "far.json", layout="video", num_frames=4).training_facts
    assert re.search(r"far\.json' declare frame rates from 2 fps \('.*slow\.avi'\) to 120 fps \('.*fast_\.avi'\): a "
                     r"clip becomes num_frames=4 frames by its frame count, not by time", caplog.text)
