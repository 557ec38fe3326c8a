"""ClassificationReportSaver: metrics JSON, confusion matrix JSON and PNG."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine, Events

from monai_das.handlers import ClassificationReportSaver


def test_report_files(tmp_path, capsys):
    preds = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    labels = torch.tensor([0, 1, 2, 2])
    engine = Engine(lambda e, b: [{"pred": p, "label": t} for p, t in zip(preds[b], labels[b])])

    @engine.on(Events.EPOCH_COMPLETED)
    def _metrics(e):
        e.state.metrics.update(test_auc=torch.tensor(0.9), test_accuracy=0.75, test_loss=float("nan"))

    ClassificationReportSaver(tmp_path, 3, ["a", "b", "c"], metric_prefix="test_", file_prefix="x_",
                              extra={"method": "das"}).attach(engine)
    engine.run([[0, 1], [2, 3]], max_epochs=1)
    report = json.loads((tmp_path / "x_metrics.json").read_text())
    assert report["method"] == "das" and report["num_samples"] == 4
    assert report["metrics"]["auc"] == pytest.approx(0.9) and report["metrics"]["accuracy"] == 0.75
    assert report["metrics"]["loss"] is None  # NaN is written as null (valid JSON)
    assert report["metrics"]["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    cm = json.loads((tmp_path / "x_confusion_matrix.json").read_text())
    assert cm["matrix"] == report["confusion_matrix"] and cm["labels"] == ["a", "b", "c"]
    assert (tmp_path / "x_confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "evaluation on 4 samples" in capsys.readouterr().out


def test_label_out_of_range(tmp_path):
    engine = Engine(lambda e, b: [{"pred": torch.zeros(2), "label": torch.tensor(5)}])
    ClassificationReportSaver(tmp_path, 2).attach(engine)
    with pytest.raises(ValueError, match="label 5"):
        engine.run([0], max_epochs=1)
