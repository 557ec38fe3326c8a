"""The paired comparison of two evaluations of one test list (python -m monai_das.engines.compare)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from monai_das.engines.compare import compare_predictions, main
from monai_das.handlers.metrics import paired_bootstrap

CLASSES = ["normal", "benign", "malignant"]


def _write(path, labels, probs, ids=None, extra=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "id", "label", "label_name", *[f"prob_{c}" for c in CLASSES], "kept_indices"])
        for i, (lab, p) in enumerate(zip(labels, probs)):
            w.writerow([i, (ids or [f"s{j:02d}.nii.gz" for j in range(len(labels))])[i], lab, CLASSES[lab],
                        *[f"{v:.6f}" for v in p], "0;1"])
    return path


def _probs(labels, skill, seed):
    """Probabilities that rank the true class first with a chance growing with ``skill``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), 3))
    logits[np.arange(len(labels)), labels] += skill
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


LABELS = np.array([0] * 30 + [1] * 12 + [2] * 6)


def test_a_better_model_is_shown_better_and_equal_models_are_not(tmp_path):
    good = [_write(tmp_path / f"das{s}" / "test_predictions.csv", LABELS, _probs(LABELS, 4.0, s)) for s in range(2)]
    weak = [_write(tmp_path / f"uni{s}.csv", LABELS, _probs(LABELS, 0.3, 10 + s)) for s in range(2)]
    report = compare_predictions([p.parent for p in good], weak, resamples=500)  # a folder: its test_predictions.csv
    auc = report["auc"]
    # the point values are the evaluation's metrics (sklearn's macro one-vs-rest AUC, balanced accuracy)
    for k, path in enumerate(good):
        probs = _probs(LABELS, 4.0, k)
        assert auc["candidate"][k] == pytest.approx(roc_auc_score(LABELS, np.round(probs, 6), multi_class="ovr"),
                                                    abs=1e-9)
        assert report["balanced_accuracy"]["candidate"][k] == pytest.approx(
            balanced_accuracy_score(LABELS, np.round(probs, 6).argmax(1)))
    assert auc["interval"][0] > 0 and auc["pairs_higher"] == 2 and report["class_counts"] == [30, 12, 6]
    assert auc["difference"] == pytest.approx(np.mean(auc["per_pair"]))
    same = compare_predictions(good, good, resamples=300)
    assert same["auc"]["interval"] == [0.0, 0.0] and same["auc"]["pairs_higher"] == 0
    # swapped: the interval lies below zero
    assert compare_predictions(weak, good, resamples=500)["auc"]["interval"][1] < 0


def test_a_rare_class_keeps_its_items_in_every_resample():
    """A class of 2 items: an unstratified resample of 16 items lacks it about 1 time in 8 (no AUC); drawn within each
    class, never."""
    labels = np.array([0] * 10 + [1] * 4 + [2] * 2)
    a, b = _probs(labels, 2.0, 0), _probs(labels, 1.0, 1)
    out = paired_bootstrap([a], [b], labels, resamples=400, seed=3)
    assert all(np.isfinite(out["auc"]["interval"])) and out == paired_bootstrap([a], [b], labels, 400, seed=3)
    with pytest.raises(ValueError, match=r"labels must cover every class 0\.\.2.*\[10, 4, 0\]"):
        paired_bootstrap([a[:14]], [b[:14]], labels[:14])


def test_files_of_other_items_labels_or_classes_are_refused(tmp_path):
    base = _write(tmp_path / "a.csv", LABELS, _probs(LABELS, 1, 0))
    other_ids = _write(tmp_path / "b.csv", LABELS, _probs(LABELS, 1, 1), ids=[f"t{j}" for j in range(len(LABELS))])
    with pytest.raises(ValueError, match=r"hold other items: 48 only in the first \(e\.g\. \['s00\.nii\.gz'"):
        compare_predictions([base], [other_ids])
    relabelled = LABELS.copy()
    relabelled[0] = 1
    with pytest.raises(ValueError, match=r"give other labels to 1 item\(s\), e\.g\. \['s00\.nii\.gz'\]"):
        compare_predictions([base], [_write(tmp_path / "c.csv", relabelled, _probs(LABELS, 1, 2))])
    unlabelled = tmp_path / "d.csv"
    unlabelled.write_text(base.read_text().replace("\n0,s00.nii.gz,0,", "\n0,s00.nii.gz,-1,", 1))
    with pytest.raises(ValueError, match=r"d\.csv' line 2 \(id 's00\.nii\.gz'\): label -1 is not a class index"):
        compare_predictions([unlabelled], [base])
    cut = tmp_path / "cut.csv"  # a run killed while writing: the last row is cut short
    cut.write_text(base.read_text()[:-20])
    with pytest.raises(ValueError, match=r"cut\.csv' has 1 incomplete row\(s\)"):
        compare_predictions([cut], [base])
    with pytest.raises(FileNotFoundError, match=r"nowhere' does not exist: give an evaluation folder"):
        compare_predictions([tmp_path / "nowhere"], [base])
    with pytest.raises(ValueError, match="as many --candidate as --reference"):
        compare_predictions([base], [base, base])


def test_command_line_prints_the_table_and_writes_the_report(tmp_path, capsys):
    a = _write(tmp_path / "a.csv", LABELS, _probs(LABELS, 4.0, 0))
    b = _write(tmp_path / "b.csv", LABELS, _probs(LABELS, 0.2, 1))
    out = tmp_path / "report.json"
    assert main(["--candidate", str(a), "--reference", str(b), "--resamples", "300", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| auc |" in text and "auc: the interval above zero: the candidate is better" in text
    assert json.loads(out.read_text())["auc"]["interval"][0] > 0
    assert main(["--candidate", str(a), "--reference", str(tmp_path / "none.csv")]) == 2
    assert "none.csv' does not exist" in capsys.readouterr().err


def _with_groups(path, groups):
    rows = list(csv.reader(open(path, newline="")))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([rows[0] + ["group"]] + [r + [g] for r, g in zip(rows[1:], groups)])
    return path


def test_patients_are_drawn_whole_where_the_files_name_them(tmp_path, capsys):
    """12 clips of 6 patients were resampled clip by clip: an interval too narrow, and a verdict "better" that
    resampling patients did not support (trial T58). The files' ``group`` column (evaluate.json writes a datalist's
    patients) makes the bootstrap draw whole patients; files naming other patients for an item are refused."""
    labels = LABELS
    groups = [f"p{i // 4}" for i in range(len(labels))]  # 4 studies a patient, one class each
    cand = _write(tmp_path / "das" / "test_predictions.csv", labels, _probs(labels, 2.0, 0))
    ref = _write(tmp_path / "uni" / "test_predictions.csv", labels, _probs(labels, 1.0, 1))
    by_item = compare_predictions([cand], [ref], resamples=500)
    assert "over items" in by_item["method"] and "no patient" in by_item["note"]
    _with_groups(cand, groups)
    _with_groups(ref, groups)
    by_patient = compare_predictions([cand], [ref], resamples=500)
    assert by_patient["method"].startswith("paired percentile bootstrap over patients (12 groups of 48 items)")
    assert by_patient["num_groups"] == 12
    # counted in patients, as drawn (12 studies of 2 patients a class looked certain while counting studies)
    assert "2 patient(s) of class 'malignant' and 4 of class 'benign'" in by_patient["note"]
    assert by_patient["auc"]["difference"] == by_item["auc"]["difference"]  # the point estimate is the same
    expected = paired_bootstrap([_probs(labels, 2.0, 0)], [_probs(labels, 1.0, 1)], labels, resamples=500,
                                groups=groups)["auc"]["interval"]
    assert by_patient["auc"]["interval"] == pytest.approx(expected, abs=1e-5)  # 6-decimal files
    assert by_patient["auc"]["interval"] != pytest.approx(by_item["auc"]["interval"])
    assert main(["--candidate", str(cand), "--reference", str(ref), "--resamples", "200"]) == 0
    assert "over patients (12 groups of 48 items)" in capsys.readouterr().out
    # a first file without the column (bundle inference's) and a second with it, its rows in another order: the
    # patients follow the items (they were taken in the second file's row order: 12 of 12 studies given another's)
    order = np.random.default_rng(0).permutation(len(labels))
    plain = _write(tmp_path / "plain.csv", labels, _probs(labels, 2.0, 0))
    shuffled = _with_groups(_write(tmp_path / "shuffled.csv", labels[order], _probs(labels, 1.0, 1)[order],
                                   ids=[f"s{j:02d}.nii.gz" for j in order]), [groups[j] for j in order])
    assert compare_predictions([plain], [shuffled], resamples=500)["auc"] == by_patient["auc"]
    _with_groups(_write(ref, labels, _probs(labels, 1.0, 1)), groups[1:] + groups[:1])  # another patient per item
    with pytest.raises(ValueError, match=r"give other patients \(group\) to \d+ item\(s\)"):
        compare_predictions([cand], [ref])


def test_grouped_bootstrap_of_singletons_is_the_item_bootstrap():
    """Every item a patient of its own: the same draws, hence the same intervals, as without patients."""
    from monai_das.handlers.metrics import bootstrap_intervals

    p, q = _probs(LABELS, 2.0, 0), _probs(LABELS, 1.0, 1)
    ids = [f"s{i}" for i in range(len(LABELS))]
    assert paired_bootstrap([p], [q], LABELS, groups=ids)["auc"] == paired_bootstrap([p], [q], LABELS)["auc"]
    assert bootstrap_intervals(p, LABELS, groups=ids)["auc"] == bootstrap_intervals(p, LABELS)["auc"]
    with pytest.raises(ValueError, match="one patient per item"):
        bootstrap_intervals(p, LABELS, groups=ids[1:])


def test_an_evaluation_of_a_replaced_checkpoint_is_said(tmp_path):
    """A retrain into the same bundle_root left eval/ describing the earlier model, and compare used it as the model
    there without a word (trial T58b): its metrics.json's checkpoint_sha256 is checked against the file."""
    from monai_das.utils.io import file_digest

    ckpt = tmp_path / "das" / "models" / "model.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"first model")
    cand = _write(tmp_path / "das" / "eval" / "test_predictions.csv", LABELS, _probs(LABELS, 2.0, 0))
    (cand.parent / "metrics.json").write_text(json.dumps({"checkpoint": str(ckpt),
                                                          "checkpoint_sha256": file_digest(ckpt)}))
    ref = _write(tmp_path / "uni" / "eval" / "test_predictions.csv", LABELS, _probs(LABELS, 1.0, 1))
    assert "describes an earlier model" not in (compare_predictions([cand.parent], [ref.parent], 200)["note"] or "")
    ckpt.write_bytes(b"retrained")
    note = compare_predictions([cand.parent], [ref.parent], 200)["note"]
    assert f"'{cand}' describes an earlier model: '{ckpt}' has changed since this evaluation" in note
