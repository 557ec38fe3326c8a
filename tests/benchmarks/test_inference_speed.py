"""``benchmarks/inference_speed.py`` in its smoke mode: it runs every part and writes well-formed tables."""

from __future__ import annotations

import csv
import math

import pytest


@pytest.mark.slow
def test_inference_speed_smoke(speed_script, tmp_path):
    result = speed_script.main(["--smoke", "--out", str(tmp_path), "--scenarios", "vol8", "--methods", "full", "das",
                                "das_fs14"])
    rows = result["latency"]
    assert {(r["threads"], r["method"], r["batch"]) for r in rows} == {
        (t, m, b) for t in (2, 1) for m in ("full", "das", "das_fs14") for b in (1, 4)}  # default: 2 and 1 threads
    latency = {(r["method"], r["batch"]): r for r in rows if r["threads"] == 1}
    for r in latency.values():
        assert r["eager_ms"] > 0 and r["onnxruntime_ms"] > 0 and math.isfinite(r["ort_speedup_vs_eager"])
    assert latency[("full", 1)]["onnxruntime_vs_full"] == 1.0 and latency[("das", 1)]["k"] == 4
    parts = [r["part"] for r in result["folder"]]
    assert any("num_workers=1" in p for p in parts) and any("model alone" in p for p in parts)
    assert all(r["studies_per_s"] > 0 for r in result["folder"])
    assert len({r["limit"] for r in result["folder"]}) == 1
    variants = [r for r in result["training"] if "speedup_vs_before" in r]
    assert len(variants) == 2 and all(r["epoch_s"] > 0 for r in variants)
    md = (tmp_path / "inference_speed.md").read_text()
    assert "SMOKE" in md and "command:" in md and "| das | 1 |" in md and "| das_fs14 | 1 |" in md
    assert "DAS (feature_size 14)/full under ONNX Runtime" in md
    with open(tmp_path / "inference_speed_latency.csv") as f:
        assert len(list(csv.DictReader(f))) == 12
