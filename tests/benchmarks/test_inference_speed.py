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
    assert len({r["limit"] for r in folder}) == 1
    variants = [r for r in _rows(tmp_path / "inference_speed_training.csv") if r.get("speedup_vs_before")]
    assert len(variants) == 2 and all(float(r["epoch_s"]) > 0 for r in variants)
    md = (tmp_path / "inference_speed.md").read_text()
    assert "SMOKE" in md and "command:" in md and "| das | 1 |" in md and "| das_fs14 | 1 |" in md
    assert "DAS (feature_size 14)/full under ONNX Runtime" in md
