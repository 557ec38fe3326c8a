"""PredictionWriter: streaming rows, error rows, appending after a kill, one row per id, logging, ranks."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch
from ignite.engine import Engine, Events

from monai_das.handlers import PredictionWriter
from monai_das.handlers.predictions import read_predictions_csv


def _engine(batches):
    """Mimics a MONAI evaluator: decollated batch items (id/source/error) and output items (pred/indices)."""

    def step(engine, batch):
        engine.state.batch = [{"id": i, "source": f"/data/{i}", "fingerprint": f"fp{i}", "error": err}
                              for i, err in batch]
        return [{"pred": torch.tensor([0.2, 0.8]) if not err else torch.tensor([0.5, 0.5]),
                 "label": torch.tensor(1), "indices": torch.tensor([1, 4, 6])} for _, err in batch]

    return Engine(step), batches


def test_rows_errors_and_json(tmp_path, capsys, caplog):
    path = tmp_path / "out" / "predictions.csv"
    engine, batches = _engine([[("a", ""), ("b", "RuntimeError: cannot read\nfile")], [("c", "")]])
    writer = PredictionWriter(path, ["neg", "pos"])
    writer.attach(engine)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.predictions"):
        engine.run(batches, max_epochs=1)
    rows = list(csv.DictReader(open(path)))
    assert [r["id"] for r in rows] == ["a", "b", "c"] and rows[0]["fingerprint"] == "fpa"
    assert rows[0]["pred_label"] == "1" and rows[0]["pred_name"] == "pos" and rows[0]["kept_indices"] == "1;4;6"
    assert float(rows[0]["prob_pos"]) == pytest.approx(0.8) and rows[0]["error"] == ""
    assert rows[1]["error"] == "RuntimeError: cannot read file"
    assert rows[1]["pred_label"] == "" and rows[1]["prob_neg"] == ""
    data = json.loads(path.with_suffix(".json").read_text())
    assert data[0]["kept_indices"] == [1, 4, 6] and data[1]["pred_label"] is None and data[2]["prob_neg"] == 0.2
    assert writer.num_written == 3 and writer.num_errors == 1
    assert f"predictions: 3 studies written to {path} (1 unreadable)" in caplog.text
    assert capsys.readouterr().out == ""  # logged, not printed


def test_kept_frames_from_one_source_frame_are_warned(tmp_path, caplog):
    """source_frames maps every kept frame; a study stretched to T whose kept frames share a source frame is warned."""
    sources = {"long": list(range(10, 18)), "short": [0, 0, 1, 1, 2, 2, 3, 3], "dup": [0, 0, 0, 1, 1, 1, 2, 2]}

    def step(engine, batch):  # kept 1, 4, 6 of T = 8 for every study
        engine.state.batch = [{"id": i, "source": f"/data/{i}", "fingerprint": i, "error": "",
                               "source_indices": sources[i]} for i in batch]
        return [{"pred": torch.tensor([0.2, 0.8]), "indices": torch.tensor([1, 4, 6])} for _ in batch]

    path = tmp_path / "predictions.csv"
    engine = Engine(step)
    PredictionWriter(path, ["neg", "pos"]).attach(engine)
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.predictions"):
        engine.run([["long", "short", "dup"]], max_epochs=1)
    rows = {r["id"]: r for r in csv.DictReader(open(path))}
    assert [rows[i]["source_frames"] for i in sources] == ["11;14;16", "0;2;3", "0;1;2"]
    assert "'long'" not in caplog.text and "'short'" not in caplog.text  # shorter than T, but distinct kept frames
    sources["dup"] = [0, 1, 1, 1, 1, 1, 1, 2]  # kept 1, 4, 6 → 1, 1, 1
    engine.run([["dup"]], max_epochs=1)
    assert "study 'dup' (/data/dup): the 3 kept frames are only 1 distinct slices/frames of the file" in caplog.text
    assert "T=8" in caplog.text and len([r for r in caplog.records if "kept frames are only" in r.message]) == 1
    sources["pad"] = [-1, 3, 4, 5, 6, 7, -1, -1]  # resize "pad": zeros around the study are no slice of it
    engine.run([["pad"]], max_epochs=1)  # the JSON written at the end keeps "padding" (it was int("padding"))
    assert {r["id"]: r for r in csv.DictReader(open(path))}["pad"]["source_frames"] == "3;6;padding"
    assert [r for r in json.loads(path.with_suffix(".json").read_text())
            if r["id"] == "pad"][0]["source_frames"] == [3, 6, "padding"]
    assert "padding" in caplog.records[-1].message


def test_non_finite_probabilities_are_an_error_row(tmp_path):
    """A damaged model's NaN probabilities give an error row naming the study, never a label argmax'd out of NaN (nor a
    bare NaN in predictions.json, which is not JSON)."""
    path = tmp_path / "predictions.csv"
    def step(engine, batch):
        engine.state.batch = [{"id": "a", "source": "/data/a", "fingerprint": "fp", "error": ""}]
        return [{"pred": torch.tensor([float("nan"), 0.5]), "indices": torch.tensor([1])}]

    engine = Engine(step)
    PredictionWriter(path, ["neg", "pos"]).attach(engine)
    engine.run([0], max_epochs=1)
    (row,) = list(csv.DictReader(open(path)))
    assert "non-finite probabilities" in row["error"] and "/data/a" in row["error"] and row["pred_label"] == ""
    assert json.loads(path.with_suffix(".json").read_text())[0]["prob_neg"] is None


def test_append_after_kill(tmp_path):
    path = tmp_path / "predictions.csv"
    engine, batches = _engine([[("a", ""), ("b", "")]])
    PredictionWriter(path, ["neg", "pos"]).attach(engine)
    engine.run(batches, max_epochs=1)
    text = path.read_bytes()
    path.write_bytes(text[: -len(text.splitlines()[-1]) // 2 - 2])  # a kill in the middle of b's row
    _, rows, dropped = read_predictions_csv(path)
    assert [r["id"] for r in rows] == ["a"] and dropped == 1  # the cut row is not read
    engine2, batches2 = _engine([[("b", "")], [("a", "x")], [("a", "")]])  # a: run again (the last row wins)
    writer = PredictionWriter(path, ["neg", "pos"])
    writer.attach(engine2)
    engine2.run(batches2, max_epochs=1)
    rows = list(csv.reader(open(path)))
    assert [r[0] for r in rows] == ["id", "a", "b"]  # the cut row is gone, one row per id, sorted
    assert all(len(r) == len(rows[0]) for r in rows) and rows[1][-1] == ""
    assert [r["id"] for r in json.loads(path.with_suffix(".json").read_text())] == ["a", "b"]
    assert writer.num_written == 3


def test_a_full_disk_names_the_predictions_file(tmp_path, monkeypatch):
    """An append that fails (a full disk, ``ulimit -f``) said "[Errno 27] File too large" alone: the error names the
    file and what is kept (trial T70a)."""
    import errno
    import os

    path = tmp_path / "predictions.csv"
    engine, batches = _engine([[("a", "")], [("b", "")]])
    PredictionWriter(path, ["neg", "pos"]).attach(engine)

    def fsync(fd):
        raise OSError(errno.EFBIG, "File too large")

    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: monkeypatch.setattr(os, "fsync", fsync))
    with pytest.raises(OSError, match=r"could not append to the predictions file '.*predictions\.csv': File too "
                                      r"large \(a full disk.*the rows written before are kept"):
        engine.run(batches, max_epochs=1)
    monkeypatch.undo()
    assert [r["id"] for r in read_predictions_csv(path)[1]][0] == "a"  # the first batch's row is kept


def test_only_rank0_writes(tmp_path, monkeypatch, capsys, caplog):
    """With torch.distributed initialised, rank 0 writes every rank's rows (gathered) and alone logs."""
    import monai_das.handlers.predictions as mod

    other = [["z", "/data/z", "fpz", "-1", "", "1", "pos", "0.2", "0.8", "", "", "", "", ""]]  # ..., warnings, model
    import monai_das.handlers.utils as utils

    gathered = []
    monkeypatch.setattr(torch.distributed, "all_gather_object", lambda parts, rows: gathered.append(rows)
                        or parts.__setitem__(slice(None), [rows, other]))
    for module in (mod, utils):
        monkeypatch.setattr(module, "rank_world", lambda: (1, 2))
    path = tmp_path / "rank1" / "predictions.csv"
    engine, batches = _engine([[("a", "")]])
    PredictionWriter(path, ["neg", "pos"]).attach(engine)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.predictions"):
        engine.run(batches, max_epochs=1)
    assert len(gathered) == 1 and not path.parent.exists() and "predictions:" not in caplog.text
    monkeypatch.setattr(mod, "rank_world", lambda: (0, 2))
    path = tmp_path / "rank0" / "predictions.csv"
    engine, batches = _engine([[("a", "")]])
    PredictionWriter(path, ["neg", "pos"]).attach(engine)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.predictions"):
        engine.run(batches, max_epochs=1)
    assert [r["id"] for r in csv.DictReader(open(path))] == ["a", "z"]
    assert "predictions: 2 studies written" in caplog.text and capsys.readouterr().out == ""


def test_other_columns_refused(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("id,something\n")
    engine, batches = _engine([[("a", "")]])
    PredictionWriter(path, ["neg", "pos"]).attach(engine)
    with pytest.raises(ValueError, match="columns"):
        engine.run(batches, max_epochs=1)


def test_a_predictions_file_saved_by_a_spreadsheet_still_reads(tmp_path):
    """Excel writes a UTF-8 BOM: the header must still say `id`, not `\\ufeffid`."""
    path = tmp_path / "predictions.csv"
    path.write_bytes("id,pred_label\na,1\n".encode("utf-8-sig"))
    header, rows, dropped = read_predictions_csv(path)
    assert header == ["id", "pred_label"] and rows == [{"id": "a", "pred_label": "1"}] and dropped == 0


def test_cells_a_spreadsheet_would_run_as_formulas_are_escaped_and_read_back(tmp_path):
    """Ids, file names and class names come from outside: a cell starting with = + - @ (not a number) is written with a
    leading ', and read back (resume, shard merge, the JSON) as the original text."""
    from monai_das.handlers.predictions import csv_cell, csv_value

    names = ["=HYPERLINK(\"http://x\")", "+SUM(A1)", "-cmd", "@SUM(1)", "'quoted", "plain", "-1", "+0.5", "\tx"]
    assert [csv_value(csv_cell(n)) for n in names] == names
    assert [csv_cell(n) for n in ("-1", "+0.5", "plain", "")] == ["-1", "+0.5", "plain", ""]  # numbers unchanged

    def step(engine, batch):
        engine.state.batch = [{"id": i, "source": f"{i}.nii.gz", "fingerprint": "f", "error": ""} for i in batch]
        return [{"pred": torch.tensor([0.2, 0.8]), "label": torch.tensor(-1), "indices": torch.tensor([0, 2])}
                for _ in batch]

    path = tmp_path / "predictions.csv"
    engine = Engine(step)
    PredictionWriter(path, ["=1+1", "@pos"]).attach(engine)
    engine.run([["=cmd|' /C calc'!A0", "@SUM(1)"], ["ok"]], max_epochs=1)
    raw = list(csv.reader(open(path)))
    cells = [c for row in raw[1:] for c in row]
    assert not [c for c in cells if c and (c[0] in "=+@" or (c[0] == "-" and c != "-1"))], raw
    assert {r[raw[0].index("pred_name")] for r in raw[1:]} == {"'@pos"} and raw[1][raw[0].index("label")] == "-1"
    header, rows, _ = read_predictions_csv(path)  # what resume and the shard merge read
    assert [r["id"] for r in rows] == ["=cmd|' /C calc'!A0", "@SUM(1)", "ok"] and rows[0]["source"].startswith("=cmd")
    data = json.loads(path.with_suffix(".json").read_text())
    assert [d["id"] for d in data] == ["=cmd|' /C calc'!A0", "@SUM(1)", "ok"] and data[0]["pred_name"] == "@pos"


def test_items_without_an_id_are_named_by_their_file_or_refused(tmp_path):
    """A plain MONAI pipeline's items (image, label; no 'id'): every row had id '' and the file kept 1 of 8 (trial W).
    An item is named by its image's filename_or_obj; one with neither is refused, naming why."""
    from monai.data import MetaTensor

    def step(engine, batch):
        engine.state.batch = [{"image": MetaTensor(torch.zeros(1), meta={"filename_or_obj": f"/d/{i}.nii.gz"}),
                               "label": torch.tensor(1)} if named else {"image": torch.zeros(1)} for i, named in batch]
        return [{"pred": torch.tensor([0.2, 0.8]), "indices": torch.tensor([1])} for _ in batch]

    path = tmp_path / "p.csv"
    engine = Engine(step)
    PredictionWriter(path, ["neg", "pos"]).attach(engine)
    engine.run([[(i, True) for i in range(4)], [(i, True) for i in range(4, 8)]], max_epochs=1)
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 8 and rows[0]["id"] == rows[0]["source"] == "/d/0.nii.gz"
    engine = Engine(step)
    PredictionWriter(tmp_path / "q.csv", ["neg", "pos"]).attach(engine)
    with pytest.raises(ValueError, match=r"a batch item of iteration 1 has no 'id' .* Give every item an 'id'"):
        engine.run([[(0, False)]], max_epochs=1)
