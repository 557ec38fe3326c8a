"""ClassificationReportSaver: metrics JSON, confusion matrix JSON and PNG."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch
from ignite.engine import Engine, Events

from monai_das.handlers import ClassificationReportSaver


@pytest.mark.parametrize("one_hot", [False, True])
def test_report_files(tmp_path, capsys, caplog, one_hot):
    """Labels as class indices or one-hot (``AsDiscreted(to_onehot=C)``; element 0 was read as the class)."""
    preds = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    labels = torch.tensor([0, 1, 2, 2])
    given = torch.nn.functional.one_hot(labels, 3).float() if one_hot else labels
    engine = Engine(lambda e, b: [{"pred": p, "label": t} for p, t in zip(preds[b], given[b])])

    @engine.on(Events.EPOCH_COMPLETED)
    def _metrics(e):
        e.state.metrics.update(test_auc=torch.tensor(0.9), test_accuracy=0.75, test_loss=float("nan"))

    ClassificationReportSaver(tmp_path, 3, ["a", "b", "c"], metric_prefix="test_", file_prefix="x_",
                              extra={"method": "das"}).attach(engine)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.report"):
        engine.run([[0, 1], [2, 3]], max_epochs=1)
    report = json.loads((tmp_path / "x_metrics.json").read_text())
    assert report["method"] == "das" and report["num_samples"] == 4
    assert report["metrics"]["auc"] == pytest.approx(0.9) and report["metrics"]["accuracy"] == 0.75
    assert report["metrics"]["loss"] is None  # NaN is written as null (valid JSON)
    assert report["metrics"]["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    # per class: support, recall, precision of the arg-max, one-vs-rest AUC (sklearn's on these items)
    from sklearn.metrics import roc_auc_score

    probs = torch.softmax(preds, 1).numpy()
    for c, name in enumerate("abc"):
        m = report["per_class"][name]
        assert m["support"] == int((labels == c).sum()) and m["auc"] == pytest.approx(
            roc_auc_score((labels == c).numpy(), probs[:, c]))
    assert report["per_class"]["c"]["recall"] == 0.5 and report["per_class"]["b"]["precision"] == 0.5
    cm = json.loads((tmp_path / "x_confusion_matrix.json").read_text())
    assert cm["matrix"] == report["confusion_matrix"] and cm["labels"] == ["a", "b", "c"]
    assert (tmp_path / "x_confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "evaluation on 4 samples" in caplog.text
    assert capsys.readouterr().out == ""  # logged (the bundles' logging.conf sends INFO to stdout), not printed


def test_distributed_ranks(tmp_path, monkeypatch, caplog):
    """The items of every rank are gathered; the matrix and intervals cover them all; only rank 0 writes and logs."""
    import monai_das.handlers.report as mod
    import monai_das.handlers.utils as utils

    # the other rank: 5 of class 0, predicted right
    other = [(0, 0, [0.9, 0.1], f"r1_{i}", None, None, None) for i in range(5)]

    def gather(parts, obj):
        parts[:] = [obj, other]

    monkeypatch.setattr(torch.distributed, "all_gather_object", gather)
    for rank in (1, 0):
        engine = Engine(lambda e, b: [{"pred": torch.tensor([0.0, 1.0]), "label": torch.tensor(1)}])
        for module in (mod, utils):
            monkeypatch.setattr(module, "rank_world", lambda r=rank: (r, 2))
        out = tmp_path / f"rank{rank}"
        ClassificationReportSaver(out, 2).attach(engine)
        with caplog.at_level(logging.INFO, logger="monai_das.handlers.report"):
            engine.run([0, 1, 2, 3, 4], max_epochs=1)
        assert out.exists() == (rank == 0) and ("evaluation on" in caplog.text) == (rank == 0)
    report = json.loads((tmp_path / "rank0" / "metrics.json").read_text())
    assert report["confusion_matrix"] == [[5, 0], [0, 5]] and report["num_samples"] == 10
    assert report["metrics"]["balanced_accuracy"] == 1.0
    assert report["intervals"]["auc"] == [1.0, 1.0] and report["intervals"]["balanced_accuracy"] == [1.0, 1.0]
    rows = list(csv.DictReader(open(tmp_path / "rank0" / "evaluated_predictions.csv")))
    assert [r["id"] for r in rows] == [""] * 5 + [f"r1_{i}" for i in range(5)]  # rank 0's items carry no id


def test_per_item_predictions(tmp_path, caplog):
    """One row per evaluated item, in the evaluated order: its id (the batch item's own, else ``item_ids`` by position),
    label and prediction with their names, probabilities and kept frames; every metric can be recomputed from them.
    Cells are written as text a spreadsheet does not run (an id starting with ``=``)."""
    from sklearn.metrics import roc_auc_score

    probs = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9], [0.55, 0.45]])
    labels = torch.tensor([0, 1, 1, 1, 0])
    # the file's own numbers of the 8 input frames (SourceIndicesd): a flipped file, one padding frame; unknown
    source = {"source_indices": torch.tensor([-1, 14, 12, 10, 8, 6, 4, 2])}
    from monai.data import MetaTensor

    data = [{"id": "own", "group": "P7", **source}, {"source_indices": torch.full((8,), -1)}, {},
            {"id": "images/c3.nii.gz", "group": "/data/study/images/c3.nii.gz"},
            {"id": "../c2.nii.gz", "group": "/data/c2.nii.gz",  # an image outside dataset_dir: by its path (review)
             "image": MetaTensor(torch.zeros(1), meta={"filename_or_obj": "/data/c2.nii.gz"})}]

    def step(engine, idx):
        engine.state.batch = [data[i] for i in idx]
        return [{"pred": probs[i].log(), "prob": probs[i], "label": labels[i], "kept_indices": torch.tensor([i, 7])}
                for i in idx]

    engine = Engine(step)
    saver = ClassificationReportSaver(tmp_path, 2, ["neg", "pos"], item_ids=["a", "b", "=c", "d", "e"],
                                      predictions="test_predictions.csv")
    saver.attach(engine)
    engine.run([[0, 1], [2, 3], [4]], max_epochs=1)
    text = (tmp_path / "test_predictions.csv").read_text()
    assert "'=c" in text  # not a formula
    rows = list(csv.DictReader(text.splitlines()))
    assert [r["id"] for r in rows] == ["own", "b", "'=c", "images/c3.nii.gz", "../c2.nii.gz"]
    assert [r["index"] for r in rows] == list("01234")
    assert [r["kept_indices"] for r in rows] == [f"{i};7" for i in range(5)]
    assert [r["source_frames"] for r in rows] == ["padding;2", "", "", "", ""]
    # a datalist item's patient; without one, the image itself by its id, not its absolute path (trial T64a)
    assert [r["group"] for r in rows] == ["P7", "", "", "images/c3.nii.gz", "../c2.nii.gz"]
    assert [r["pred_name"] for r in rows] == ["neg", "pos", "neg", "pos", "neg"]
    assert [r["label_name"] for r in rows] == ["neg", "pos", "pos", "pos", "neg"]
    assert [float(r["prob_pos"]) for r in rows] == pytest.approx(probs[:, 1].tolist())
    report = json.loads((tmp_path / "metrics.json").read_text())
    pos = [float(r["prob_pos"]) for r in rows]
    assert report["per_class"]["pos"]["auc"] == pytest.approx(roc_auc_score(labels, pos))
    # ids of another count are not used (a warning says why); predictions=None writes no file
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.report"):
        ClassificationReportSaver(tmp_path / "n", 2, item_ids=["a"]).attach(engine2 := Engine(step))
        engine2.run([[1, 2]], max_epochs=1)
    assert [r["id"] for r in csv.DictReader(open(tmp_path / "n" / "evaluated_predictions.csv"))] == ["", ""]
    assert "1 item ids for 2 evaluated items" in caplog.text
    ClassificationReportSaver(tmp_path / "none", 2, predictions=None).attach(engine3 := Engine(step))
    engine3.run([[1, 2]], max_epochs=1)
    assert (tmp_path / "none" / "metrics.json").is_file() and not list((tmp_path / "none").glob("*.csv"))


def test_kept_frames_of_a_short_clip_that_are_one_frame_of_it_are_warned(tmp_path, caplog):
    """A 4-frame test clip stretched to T=8: its 2 kept frames were one frame of the file, without a word in the
    evaluation (inference warned; trial T63a)."""
    short = {"id": "p7 clip0.avi", "source_indices": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    full = {"id": "long", "source_indices": torch.arange(8)}

    def step(engine, idx):
        engine.state.batch = [(short, full)[i] for i in idx]
        return [{"pred": torch.zeros(2), "label": torch.tensor(i), "kept_indices": torch.tensor([0, 1])} for i in idx]

    engine = Engine(step)
    ClassificationReportSaver(tmp_path, 2).attach(engine)
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.report"):
        engine.run([[0, 1]], max_epochs=1)
    assert "study 'p7 clip0.avi': the 2 kept frames are only 1 distinct slices/frames of the file" in caplog.text
    assert "'long'" not in caplog.text
    # an item without an id (the bundle's evaluation): named as its row of the predictions file names it, by
    # item_ids (trial T69a: "study (no id)"), else by its image file
    caplog.clear()
    anonymous = {"source_indices": short["source_indices"]}

    def step2(engine, idx):
        engine.state.batch = [(full, anonymous)[i] for i in idx]
        return [{"pred": torch.zeros(2), "label": torch.tensor(i), "kept_indices": torch.tensor([0, 1])} for i in idx]

    ClassificationReportSaver(tmp_path / "ids", 2, item_ids=["a.avi", "images/case001.avi"]).attach(
        engine := Engine(step2))
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.report"):
        engine.run([[0, 1]], max_epochs=1)
    assert "study 'images/case001.avi': the 2 kept frames are only 1" in caplog.text
    from monai.data import MetaTensor

    anonymous["image"] = MetaTensor(torch.zeros(1), meta={"filename_or_obj": "/d/c9.avi"})
    ClassificationReportSaver(tmp_path / "file", 2).attach(engine := Engine(step2))
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.report"):
        engine.run([[0, 1]], max_epochs=1)
    assert "study '/d/c9.avi': the 2 kept frames" in caplog.text and "(no id)" not in caplog.text


def test_intervals_count_and_draw_patients(tmp_path, caplog):
    """12 studies of 2 patients a class gave an interval of [1.000, 1.000] ("over the 12 samples"): with the items'
    patients (a datalist's group) the bootstrap draws patients and needs 5 of each class; then it says so."""
    def run(n_patients, folder):
        labels = [i % 2 for i in range(6 * n_patients)]
        data = [{"group": f"P{i % (2 * n_patients)}"} for i in range(len(labels))]  # a patient: one class

        def step(engine, idx):
            engine.state.batch = [data[i] for i in idx]
            return [{"pred": torch.tensor([0.3 - 0.01 * i, 0.2 + 0.01 * i]) if labels[i] else
                     torch.tensor([0.2 + 0.01 * i, 0.3 - 0.01 * i]), "label": torch.tensor(labels[i])} for i in idx]

        engine = Engine(step)
        ClassificationReportSaver(tmp_path / folder, 2, ["neg", "pos"]).attach(engine)
        with caplog.at_level(logging.INFO, logger="monai_das.handlers.report"):
            engine.run([list(range(len(labels)))], max_epochs=1)
        return json.loads((tmp_path / folder / "metrics.json").read_text())

    few = run(2, "few")
    assert "intervals" not in few
    assert "holds 2 patient(s) of class 'neg' and 2 of class 'pos': no bootstrap interval" in caplog.text
    enough = run(5, "enough")
    assert enough["intervals"]["num_groups"] == 10 and "over patients (10 groups of 30 items)" in \
        enough["intervals"]["method"]
    assert "over the 30 samples (10 patients, drawn whole)" in caplog.text


def test_too_few_items_of_a_class_give_no_interval(tmp_path, caplog):
    """No class-0 item, then 3 of each (a 6-study test list): no interval, which would look certain ([1.000, 1.000]),
    but a warning naming the class, as validation does."""
    engine = Engine(lambda e, b: [{"pred": torch.tensor([0.0, 1.0]), "label": torch.tensor(1)}])
    ClassificationReportSaver(tmp_path, 2, label_names=["normal", "lesion"]).attach(engine)
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.report"):
        engine.run([0, 1, 2], max_epochs=1)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["confusion_matrix"] == [[0, 0], [0, 3]] and "intervals" not in report
    assert "holds 0 item(s) of class 'normal' and 3 of class 'lesion': no bootstrap interval" in caplog.text
    # the macro AUC is undefined without a class: said naming it (MONAI's own line names none), per class in the JSON
    assert "holds no item of class(es) ['normal']: the macro AUC is undefined" in caplog.text
    assert report["per_class"]["normal"] == {"support": 0, "recall": None, "precision": None, "auc": None}
    assert report["per_class"]["lesion"] == {"support": 3, "recall": 1.0, "precision": 1.0, "auc": None}
    six = Engine(lambda e, b: [{"pred": torch.tensor([1.0 - i % 2, i % 2 * 1.0]), "label": torch.tensor(i % 2)}
                               for i in b])
    ClassificationReportSaver(tmp_path / "six", 2).attach(six)
    six.run([list(range(6))], max_epochs=1)
    assert "intervals" not in json.loads((tmp_path / "six" / "metrics.json").read_text())


def test_intervals_from_the_items(tmp_path, caplog):
    """metrics.json holds bootstrap intervals of AUC and balanced accuracy around the items' own values."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 2
    probs = torch.softmax(torch.stack([-labels.float(), labels.float()], 1) + torch.randn(60, 2, generator=g), 1)
    engine = Engine(lambda e, b: [{"pred": probs[i].log(), "prob": probs[i], "label": labels[i]} for i in b])
    ClassificationReportSaver(tmp_path, 2).attach(engine)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.report"):
        engine.run([list(range(30)), list(range(30, 60))], max_epochs=1)
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(labels.numpy(), probs[:, 1].numpy())
    iv = json.loads((tmp_path / "metrics.json").read_text())["intervals"]
    assert iv["auc"][0] < auc < iv["auc"][1] and 0.05 < iv["auc"][1] - iv["auc"][0] < 0.4
    assert iv["level"] == 0.95 and iv["resamples"] == 1000 and iv["seed"] == 0
    assert "95 % bootstrap intervals over the 60 samples: auc [" in caplog.text
    ClassificationReportSaver(tmp_path / "off", 2, interval_resamples=0).attach(engine)
    engine.run([list(range(60))], max_epochs=1)
    assert "intervals" not in json.loads((tmp_path / "off" / "metrics.json").read_text())


def test_label_out_of_range(tmp_path):
    engine = Engine(lambda e, b: [{"pred": torch.zeros(2), "label": torch.tensor(5)}])
    ClassificationReportSaver(tmp_path, 2).attach(engine)
    with pytest.raises(ValueError, match="label 5"):
        engine.run([0], max_epochs=1)
    # items without labels (MONAI's evaluators put None there): "Could not infer dtype of NoneType" (trial T63b)
    unlabelled = Engine(lambda e, b: [{"pred": torch.zeros(2), "label": None}])
    ClassificationReportSaver(tmp_path / "u", 2).attach(unlabelled)
    with pytest.raises(ValueError, match=r"an item has no label under label_key 'label' .*PredictionWriter"):
        unlabelled.run([0], max_epochs=1)


@pytest.mark.parametrize("evenly, warned", [(1.0, True), (0.38, False)])
def test_an_evaluation_worse_than_evenly_spaced_frames_is_warned(tmp_path, caplog, evenly, warned):
    """At another k than trained a DAS model scored AUC 0.333 where evenly spaced frames gave 1.000, without a word
    (trial V; training's summary warned, evaluation did not): the same rule and message as training's."""
    def step(engine, batch):
        engine.state.metrics.update(auc=0.333, auc_evenly_spaced=evenly)
        return [{"pred": torch.tensor([0.4, 0.6]), "label": torch.tensor(i % 2)} for i in batch]

    engine = Engine(step)
    ClassificationReportSaver(tmp_path, 2).attach(engine)
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.report"):
        engine.run([[0, 1]], max_epochs=1)
    assert ("the learned selection does worse than evenly spaced frames with the same network (auc 0.333 vs "
            in caplog.text) == warned
