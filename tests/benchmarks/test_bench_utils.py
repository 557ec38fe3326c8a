"""Helpers of the benchmark scripts: timing bookkeeping, peak memory, tables, provenance (no timed assertions)."""

from __future__ import annotations

import argparse
import csv

import pytest
import torch


def test_time_interleaved_calls_in_rounds(bench_utils):
    calls = []
    times = bench_utils.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                         repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4  # one warm-up round, then 3 timed rounds, interleaved
    assert set(times) == {"a", "b"} and all(len(v) == 3 for v in times.values())
    assert all(t >= 0 for v in times.values() for t in v)
    with pytest.raises(ValueError, match="repeats"):
        bench_utils.time_interleaved({"a": lambda: None}, repeats=0)
    # blocks: consecutive calls of one callable per round, one time (the best of the block) per round
    calls.clear()
    times = bench_utils.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                         repeats=2, warmup=0, block=3)
    assert calls == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert all(len(v) == 2 for v in times.values())
    with pytest.raises(ValueError, match="block"):
        bench_utils.time_interleaved({"a": lambda: None}, repeats=1, block=0)


def test_summarize_times(bench_utils):
    s = bench_utils.summarize_times([4.0, 1.0, 3.0, 2.0, 100.0])
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["n"] == 5
    assert s["iqr"] > 0
    assert bench_utils.summarize_times([2.0])["iqr"] == 0.0


def test_peak_tensor_memory_sees_a_known_allocation(bench_utils):
    n = 1 << 20  # 4 MiB of float32

    def alloc():
        a = torch.ones(n)
        b = a * 2  # a second buffer alive at the same time: peak 8 MiB
        return float(b[0])

    peak = bench_utils.peak_tensor_memory(alloc)
    assert 8 * 2**20 <= peak < 16 * 2**20
    assert bench_utils.peak_tensor_memory(lambda: None) == 0


def test_markdown_and_csv(bench_utils, tmp_path):
    rows = [{"a": 1, "b": "x"}, {"a": 2, "c": 3.5}]
    md = bench_utils.markdown_table(rows, [("a", "A"), ("b", "B")]).splitlines()
    assert md[0] == "| A | B |" and md[1] == "|---|---|" and md[3] == "| 2 |  |"
    path = bench_utils.write_csv(rows, tmp_path / "t.csv")
    with open(path) as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == ["a", "b", "c"] and got[1]["c"] == "3.5"


def test_environment_has_provenance(bench_utils):
    env = bench_utils.environment(["benchmarks/x.py", "--flag"])
    assert env["command"].endswith("benchmarks/x.py --flag")
    for key in ("date_utc", "cpu_model", "logical_cpus", "torch_threads", "versions", "git_commit"):
        assert env[key] not in (None, "")
    assert "MONAI" in env["versions"] and "Pytorch" in env["versions"]
    text = bench_utils.environment_markdown(env)
    assert "command:" in text and "machine:" in text and "software:" in text


def test_parse_override(bench_utils):
    assert bench_utils.parse_override('network_def#sampler_kwargs={"tau0": 0.5}') == (
        "network_def#sampler_kwargs", {"tau0": 0.5})
    assert bench_utils.parse_override("temporal_head=mean") == ("temporal_head", "mean")
    assert bench_utils.parse_override("precise_bn_batches=-1") == ("precise_bn_batches", -1)
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        bench_utils.parse_override("temporal_head")


def test_metric_text_says_an_undefined_metric(bench_utils):
    """A cell whose test AUC is undefined (a class without test items: null in result.json) stopped any_k.py and
    compare_methods.py at their progress line (format of None; trial N): 'n/a' there now."""
    assert bench_utils.metric_text(0.84726) == "0.8473" and bench_utils.metric_text(1, digits=1) == "1.0"
    assert bench_utils.metric_text(None) == "n/a" and bench_utils.metric_text(float("nan")) == "n/a"


def test_code_hash_leaves_out_the_bundles_metadata(tmp_path, monkeypatch):
    """A changelog-only commit (bundles' metadata.json) changed every cell's code hash, so every finished cell of a
    grid was refused as run by other code (review R71h); a config or module change still changes it."""
    import bench_utils

    configs = tmp_path / "bundles" / "b" / "configs"
    configs.mkdir(parents=True)
    (configs / "train.json").write_text("{}")
    (configs / "metadata.json").write_text('{"version": "0.1"}')
    monkeypatch.setattr(bench_utils, "REPO", tmp_path)
    before = bench_utils.code_hash(["bundles/b/configs"])
    (configs / "metadata.json").write_text('{"version": "0.2"}')
    assert bench_utils.code_hash(["bundles/b/configs"]) == before
    (configs / "train.json").write_text('{"lr": 1}')
    assert bench_utils.code_hash(["bundles/b/configs"]) != before
