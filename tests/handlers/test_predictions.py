"""PredictionWriter: streaming rows, error rows, appending after a kill."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from ignite.engine import Engine

from monai_das.engines import read_done_ids
from monai_das.handlers import PredictionWriter


def _engine(batches):
    """Mimics a MONAI evaluator: decollated batch items (id/source/error) and output items (pred/indices)."""

    def step(engine, batch):
        engine.state.batch = [{"id": i, "source": f"/data/{i}", "error": err} for i, err in batch]
        return [{"pred": torch.tensor([0.2, 0.8]) if not err else torch.tensor([0.5, 0.5]),
                 "label": torch.tensor(1), "indices": torch.tensor([1, 4, 6])} for _, err in batch]

    return Engine(step), batches


def test_rows_errors_and_json(tmp_path):
    path = tmp_path / "out" / "predictions.csv"
    engine, batches = _engine([[("a", ""), ("b", "RuntimeError: cannot read\nfile")], [("c", "")]])
    writer = PredictionWriter(path, ["neg", "pos"])
    writer.attach(engine)
    engine.run(batches, max_epochs=1)
    rows = list(csv.DictReader(open(path)))
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["pred_label"] == "1" and rows[0]["pred_name"] == "pos" and rows[0]["kept_indices"] == "1;4;6"
    assert float(rows[0]["prob_pos"]) == pytest.approx(0.8) and rows[0]["error"] == ""
    assert rows[1]["error"] == "RuntimeError: cannot read file"
    assert rows[1]["pred_label"] == "" and rows[1]["prob_neg"] == ""
    data = json.loads(path.with_suffix(".json").read_text())
    assert data[0]["kept_indices"] == [1, 4, 6] and data[1]["pred_label"] is None and data[2]["prob_neg"] == 0.2
    assert writer.num_written == 3 and writer.num_errors == 1


def test_append_after_kill(tmp_path):
    path = tmp_path / "predictions.csv"
    engine, batches = _engine([[("a", "")]])
    PredictionWriter(path, ["neg", "pos"]).attach(engine)
    engine.run(batches, max_epochs=1)
    with open(path, "a") as f:  # a kill in the middle of a row: no newline, missing columns
        f.write("b,/data/b,1,1")
    assert read_done_ids(path) == {"a"}
    engine2, batches2 = _engine([[("b", "")]])
    PredictionWriter(path, ["neg", "pos"]).attach(engine2)
    engine2.run(batches2, max_epochs=1)
    assert read_done_ids(path) == {"a", "b"}
    rows = list(csv.reader(open(path)))
    assert rows[2] == ["b", "/data/b", "1", "1"]  # the cut row stays on its own line, ignored
    assert rows[3][0] == "b" and len(rows[3]) == len(rows[0])


def test_other_columns_refused(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("id,something\n")
    engine, batches = _engine([[("a", "")]])
    PredictionWriter(path, ["neg", "pos"]).attach(engine)
    with pytest.raises(ValueError, match="columns"):
        engine.run(batches, max_epochs=1)
