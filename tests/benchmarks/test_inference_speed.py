"""``benchmarks/inference_speed.py`` in its smoke mode: it runs every part and writes well-formed tables.

Run as its own process, as a user runs it: its folder part forks a data-loader worker (``num_workers`` 1), and a
fork from a test worker that earlier tests left with threads (ONNX Runtime pools, MLflow, torchrun) can deadlock in
the child (seen once in CI: the worker waited on its forked child for 40 minutes).
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "inference_speed.py"


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_inference_speed_smoke(tmp_path):
    subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path), "--scenarios", "vol8",
                    "--methods", "full", "das", "das_fs14"], check=True, timeout=900)
    rows = _rows(tmp_path / "inference_speed_latency.csv")
    assert len(rows) == 12
    assert {(int(r["threads"]), r["method"], int(r["batch"])) for r in rows} == {
        (t, m, b) for t in (2, 1) for m in ("full", "das", "das_fs14") for b in (1, 4)}  # default: 2 and 1 threads
    latency = {(r["method"], int(r["batch"])): r for r in rows if int(r["threads"]) == 1}
    for r in latency.values():
        assert float(r["eager_ms"]) > 0 and float(r["onnxruntime_ms"]) > 0
        assert math.isfinite(float(r["ort_speedup_vs_eager"]))
    assert float(latency[("full", 1)]["onnxruntime_vs_full"]) == 1.0 and int(latency[("das", 1)]["k"]) == 4
    folder = _rows(tmp_path / "inference_speed_folder.csv")
    parts = [r["part"] for r in folder]
    assert any("num_workers=1" in p for p in parts) and any("model alone" in p for p in parts)
    assert all(float(r["studies_per_s"]) > 0 for r in folder)
    # the limit named is the slower of the two parts timed alone (data loader vs model on batches in memory)
    alone = {p.split(" alone")[0]: float(r["seconds"]) for p, r in zip(parts, folder) if " alone" in p}
    assert set(alone) == {"data loader", "model"}
    expected = {"data (decoding/preprocessing)" if alone["data loader"] > alone["model"] else "model"}
    if alone["data loader"] == alone["model"]:  # equal after rounding to 0.01 s: either may be the limit
        expected = {"data (decoding/preprocessing)", "model"}
    assert len({r["limit"] for r in folder}) == 1 and {r["limit"] for r in folder} <= expected
    variants = [r for r in _rows(tmp_path / "inference_speed_training.csv") if r.get("speedup_vs_before")]
    assert len(variants) == 2 and all(float(r["epoch_s"]) > 0 for r in variants)
    md = (tmp_path / "inference_speed.md").read_text()
    assert "SMOKE" in md and "command:" in md and "| das | 1 |" in md and "| das_fs14 | 1 |" in md
    assert "DAS (feature_size 14)/full under ONNX Runtime" in md


def test_a_part_not_measured_keeps_its_csv_and_the_report_says_so(inference_speed_script, tmp_path):
    """``--no-latency`` truncated inference_speed_latency.csv to an empty line; --no-folder left the old folder CSV
    beside a report that did not say so."""
    import argparse

    script = inference_speed_script
    earlier = {"inference_speed_latency.csv": "scenario,method\nvol28,das\n",
               "inference_speed_folder.csv": "part,seconds\nwhole,1.0\n"}
    for name, text in earlier.items():
        (tmp_path / name).write_text(text)
    env = script.environment(["inference_speed.py", "--no-latency", "--no-folder"])
    args = argparse.Namespace(smoke=True)
    training = [{"variant": "after", "epoch_s": 1.0}]
    text = script.write_results(tmp_path, env, args, [], [], training)
    assert {name: (tmp_path / name).read_text() for name in earlier} == earlier  # left as they were
    assert _rows(tmp_path / "inference_speed_training.csv") == [{"variant": "after", "epoch_s": "1.0"}]
    assert "Parts measured by this run: training epoch." in text
    assert ("Not measured: latency; `inference_speed_latency.csv` beside this report is from an earlier run, not this "
            "one") in text and "Not measured: folder throughput; `inference_speed_folder.csv`" in text
    assert (tmp_path / "inference_speed.md").read_text() == text + "\n"
    # in a folder of its own nothing is stale
    other = tmp_path / "own"
    other.mkdir()
    text = script.write_results(other, env, args, [], [], training)
    assert "Not measured: latency. Not measured: folder throughput." in text
    assert sorted(p.name for p in other.iterdir()) == ["inference_speed.md", "inference_speed_training.csv"]
