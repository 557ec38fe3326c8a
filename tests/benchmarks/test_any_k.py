"""``benchmarks/any_k.py``: one DAS model at any k, end to end through the bundle (smoke profile), and its resume."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def any_k_script():
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location("benchmarks_any_k", BENCH_DIR / "any_k.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_ratio_list_and_cache(any_k_script, tmp_path):
    ak = any_k_script
    assert ak.ratio_list([0.5, 0.1, 0.5]) == [0.1, 0.5, 1.0]
    p = tmp_path / "r.json"
    assert ak.cached(p, {"a": 1}) is None
    p.write_text(json.dumps({"a": 1, "b": "x"}))
    assert ak.cached(p, {"a": 1, "b": None}) == {"a": 1, "b": "x"} and ak.cached(p, {"a": 2}) is None


def test_paired_rows_pair_by_seed_and_fold(any_k_script):
    ak = any_k_script
    evals = [{"dataset": "d", "keep_ratio": r, "seed": s, "fold": f, "auc": 0.8 + 0.01 * s + (0.05 if r == 0.5 else 0),
              "code_hash": "a", "train_keep_ratio": 0.25} for r in (0.25, 0.5, 1.0) for s in (0, 1) for f in (0, 1, 2)]
    trained = [{"dataset": "d", "method": m, "keep_ratio": r, "seed": s, "fold": f, "auc": 0.8 + 0.02 * f,
                "code_hash": "a" if m == "das" else "b"}
               for m, rs in (("das", (0.25, 0.5)), ("uniform", (0.5,)), ("full", (1.0,)))
               for r in rs for s in (0, 1) for f in (0, 1, 2)]
    trained.append({"dataset": "d", "method": "uniform", "keep_ratio": 0.25, "seed": 5, "fold": 0, "auc": 0.1,
                    "code_hash": "a"})  # no one-model run with seed 5: not paired
    rows = {(r["keep_ratio"], r["baseline"]): r for r in ak.paired_rows(evals, trained, ["uniform", "full"])}
    # uniform was trained at 0.5 only (its seed-5 cell has no partner); full pairs at every ratio, k = T included;
    # DAS trained at 0.25, the one model's own ratio, is the one model itself: no row (a zero difference, not a test)
    assert set(rows) == {(0.5, "das"), (0.5, "uniform"), (0.25, "full"), (0.5, "full"), (1.0, "full")}
    assert ak.cm.chance_note(list(rows.values())).startswith("5 intervals")  # the self-pair is not counted
    r = rows[(0.5, "uniform")]
    # the two seeds of a fold are one unit: 3 folds, 6 runs; per fold 0.855 − (0.8 + 0.02·f)
    assert (r["pairs"], r["runs"]) == (3, 6) and r["comparison"] == "one model − uniform trained at k"
    assert r["diffs"] == "+0.055 +0.035 +0.015" and r["mean_diff"] == pytest.approx(0.035)
    assert r["code_mixed"] == 6 and rows[(0.5, "das")]["code_mixed"] == 0
    assert r["ci95_low"] < 0.035 < r["ci95_high"] and r["wins"] == 3
    assert rows[(1.0, "full")]["comparison"] == "one model − full (all frames)"


def test_references_from_must_share_the_settings(any_k_script):
    ak = any_k_script
    over = {"max_epochs": 30, "lr": 0.001, "data_dir": "/a", "method": "das", "keep_ratio": 0.5, "seed": 0, "fold": 1}
    own = [{"overrides": over}]
    ref = {"dataset": "d", "method": "uniform", "keep_ratio": 0.1, "seed": 0, "fold": 1,
           "overrides": {**over, "method": "uniform", "keep_ratio": 0.1, "data_dir": "/elsewhere/same/data"}}
    ak.check_same_settings([ref], own)  # what the cell is and where the data lies may differ
    with pytest.raises(ValueError, match=r"d/uniform keep 0\.1 seed 0 fold 1 was trained with other settings than "
                                         r"the one model \(max_epochs: 5 there, 30 here\)"):
        ak.check_same_settings([{**ref, "overrides": {**ref["overrides"], "max_epochs": 5}}], own)


@pytest.mark.slow
def test_smoke_run_end_to_end_and_resume(any_k_script, tmp_path):
    ak = any_k_script
    args = ["--smoke", "--out", str(tmp_path), "--keep-ratios", "0.25", "0.5", "--references", "uniform",
            "--threads", "1"]
    out = ak.main(args)
    assert out["cells"] == {"cells": 4, "skipped": 0, "ran": 4, "failed": 0}
    assert out["evaluations"] == {"evaluations": 3, "ran": 3, "skipped": 0, "failed": 0, "latency_ran": 1,
                                  "latency_skipped": 0}
    key = "synthetic_16"
    for suffix in ("csv", "md", "png"):
        assert (tmp_path / f"any_k_{key}.{suffix}").is_file(), suffix
    assert (tmp_path / f"any_k_{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / f"any_k_{key}.csv") as f:
        rows = list(csv.DictReader(f))
    # one row per k: keep 25 %, 50 % and k = T, with T = 16
    assert [(float(r["keep_ratio"]), int(r["k"])) for r in rows] == [(0.25, 4), (0.5, 8), (1.0, 16)]
    for r in rows:
        for col in ("one_model_auc", "one_model_balanced_accuracy", "latency_ms_median"):
            v = float(r[col])
            assert math.isfinite(v) and v >= 0.0, (col, r)
        assert 0.0 <= float(r["one_model_auc"]) <= 1.0 and float(r["latency_ms_median"]) > 0.0
        assert int(r["train_k"]) == 8 and int(r["frames_total"]) == 16
    for r in rows[:2]:  # trained at that k: DAS and uniform cells of compare_methods
        assert 0.0 <= float(r["das_trained_auc"]) <= 1.0 and 0.0 <= float(r["uniform_trained_auc"]) <= 1.0
    assert rows[2]["das_trained_auc"] == "" and rows[2]["uniform_trained_auc"] == ""  # nothing trained at k = T

    # the numbers are those of the evaluations on disk, each run at its own k
    cell = tmp_path / "_work" / "smoke" / key / "das_keep0.5_seed0"
    assert (cell / "models" / "model.pt").is_file() and (cell / "any_k" / "model.onnx").is_file()
    for r in rows:
        d = cell / "any_k" / f"keep{float(r['keep_ratio']):g}"
        reports = d / "eval" / ("" if int(r["k"]) == 8 else f"k{r['k']}")  # the trained k's in eval/, others beside
        metrics = json.loads((reports / "metrics.json").read_text())
        assert metrics["keep_ratio"] == float(r["keep_ratio"]) and metrics["num_kept"] == int(r["k"])
        assert float(r["one_model_auc"]) == pytest.approx(metrics["metrics"]["auc"], abs=1e-5)
        positions = json.loads((reports / "test_kept_positions.json").read_text())
        assert sum(positions["kept_fraction"]["all"]) == pytest.approx(int(r["k"]))  # the network ran at this k
        card = json.loads((d / "models" / "metadata.json").read_text())
        assert card["das_model"]["num_kept"] == 8  # the card describes the trained k, whatever k was evaluated
        if int(r["k"]) != 8:  # the copy of the cell's card, untouched by an evaluation at another k
            assert card == json.loads((cell / "models" / "metadata.json").read_text())
        assert not (d / "models" / "model.pt").exists()  # the checkpoint link is removed after the run
    # at the training k the one model is the DAS cell itself: same checkpoint, same test metrics
    assert float(rows[1]["one_model_auc"]) == pytest.approx(float(rows[1]["das_trained_auc"]), abs=1e-5)
    # the training card of the checkpoint still describes keep 0.5
    assert json.loads((cell / "models" / "metadata.json").read_text())["das_model"]["keep_ratio"] == 0.5
    latency = json.loads((cell / "any_k" / "latency.json").read_text())
    assert set(latency["ms"]) == {"4", "8", "16"}
    # other cells keep no checkpoint
    assert not (tmp_path / "_work" / "smoke" / key / "uniform_keep0.5_seed0" / "models").exists()
    md = (tmp_path / f"any_k_{key}.md").read_text()
    assert "Mode: **smoke**" in md and "- command: `" in md and "- machine: " in md and f"any_k_{key}.png" in md
    assert "| 50% | 8 / 16 |" in md

    # second run: every cell, evaluation and latency is reused
    again = ak.main(args)
    assert again["cells"] == {"cells": 4, "skipped": 4, "ran": 0, "failed": 0}
    assert again["evaluations"] == {"evaluations": 3, "ran": 0, "skipped": 3, "failed": 0, "latency_ran": 0,
                                    "latency_skipped": 1}
    with open(tmp_path / f"any_k_{key}.csv") as f:
        assert list(csv.DictReader(f)) == rows
    # the paired differences: at the training k the one model is the DAS cell itself, so no "one model − das" there
    with open(tmp_path / f"any_k_{key}_paired.csv") as f:
        paired = {(float(r["keep_ratio"]), r["baseline"]): r for r in csv.DictReader(f)}
    assert set(paired) == {(0.25, "das"), (0.25, "uniform"), (0.5, "uniform")}
    assert "### Paired differences" in md
    # one seed: no standard deviation, an empty cell rather than 0.0
    assert rows[0]["one_model_auc_std"] == "" and rows[0]["das_trained_auc_std"] == ""

    # another results folder, the trained-at-k cells read from the first one: only the one model is trained there,
    # and it reproduces the first run's DAS cell (same seed, same code)
    other = tmp_path / "other"
    third = ak.main(["--smoke", "--out", str(other), "--keep-ratios", "0.25", "0.5", "--references", "uniform",
                     "--threads", "1", "--references-from", str(tmp_path)])
    assert third["cells"] == {"cells": 1, "skipped": 0, "ran": 1, "failed": 0}
    assert sorted(p.name for p in (other / "_work" / "smoke" / key).iterdir()) == ["das_keep0.5_seed0"]
    with open(other / f"any_k_{key}.csv") as f:
        rows3 = list(csv.DictReader(f))
    for a, b in zip(rows, rows3):
        for col in ("one_model_auc", "das_trained_auc", "uniform_trained_auc"):
            assert (a[col] == b[col] == "") or float(a[col]) == pytest.approx(float(b[col]), abs=1e-5), col
    assert "the finished compare_methods cells of" in (other / f"any_k_{key}.md").read_text()
    # a cell of this folder replaces the one read from --references-from (here: uniform at keep 25 %, rerun)
    src = tmp_path / "_work" / "smoke" / key / "uniform_keep0.25_seed0"
    dst = other / "_work" / "smoke" / key / "uniform_keep0.25_seed0"
    dst.mkdir()
    (dst / "result.json").write_text(json.dumps({**json.loads((src / "result.json").read_text()), "auc": 0.123}))
    ak.main(["--smoke", "--out", str(other), "--keep-ratios", "0.25", "0.5", "--references", "uniform",
             "--threads", "1", "--references-from", str(tmp_path)])
    with open(other / f"any_k_{key}.csv") as f:
        assert float(next(csv.DictReader(f))["uniform_trained_auc"]) == pytest.approx(0.123)
    with pytest.raises(FileNotFoundError, match="no cells of the smoke profile"):
        ak.main(["--smoke", "--out", str(other), "--references-from", str(tmp_path / "nowhere")])
