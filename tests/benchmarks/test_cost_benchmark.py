"""``benchmarks/cost.py`` in its smoke mode: it runs and writes well-formed tables (no timed assertions)."""

from __future__ import annotations

import csv
import json

import pytest


@pytest.mark.slow
def test_cost_smoke_writes_wellformed_outputs(cost_script, tmp_path):
    result = cost_script.main(["--smoke", "--out", str(tmp_path), "--scenarios", "vol8",
                               "--methods", "full", "uniform", "das", "adps"])
    for name in ("cost.md", "cost.csv", "cost.json", "cost_samplers.csv", "cost_pipeline.csv"):
        assert (tmp_path / name).is_file(), name

    data = json.loads((tmp_path / "cost.json").read_text())
    assert data["mode"] == "smoke" and data["environment"]["command"]
    models = {r["method"]: r for r in data["models"]}
    assert set(models) == {"full", "uniform", "das", "adps"}
    for r in models.values():
        for key in ("params_sampler", "params_downstream", "macs_sampler", "macs_downstream", "latency_b1_ms",
                    "latency_batch_ms", "train_items_per_s", "peak_infer_mib", "peak_train_mib", "macs_x_full"):
            assert isinstance(r[key], (int, float)) and r[key] >= 0, (r["method"], key)
    # counts, not timings: the structure of the comparison
    assert models["full"]["frames_kept"] == 8 and models["das"]["frames_kept"] == 4
    assert models["full"]["macs_x_full"] == 1.0 and models["full"]["train_speedup_vs_full"] == 1.0
    assert models["uniform"]["params_sampler"] == 0 and models["uniform"]["macs_sampler"] == 0
    assert models["das"]["params_sampler"] > 0 and models["das"]["macs_sampler"] > 0
    assert models["das"]["macs_x_full"] < 1.0
    assert models["das"]["params_downstream"] == models["full"]["params_downstream"]

    samplers = {(r["sampler"], r["k"]): r for r in data["samplers"]}
    assert samplers[("das", 4)]["sequential_steps"] == 1 and samplers[("adps", 4)]["sequential_steps"] == 4
    assert len(data["pipeline"]) == 1 and data["pipeline"][0]["batches_timed"] >= 1

    with open(tmp_path / "cost.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["full", "uniform", "das", "adps"]
    md = (tmp_path / "cost.md").read_text()
    assert "SMOKE" in md and "command:" in md and "machine:" in md
    table = [line for line in md.splitlines() if line.startswith("| full |")]
    assert table and table[0].count("|") == len(cost_script.MODEL_COLUMNS) + 1
    assert result["models"] == data["models"]


def test_cost_rejects_unknown_scenario(cost_script, tmp_path):
    with pytest.raises(ValueError, match="unknown scenario"):
        cost_script.main(["--smoke", "--out", str(tmp_path), "--scenarios", "nope"])


def test_exact_counts_by_formula(cost_script):
    """The counters behind the MACs and parameter columns, pinned to counts worked out by hand."""
    import torch
    import torch.nn as nn

    linear = nn.Linear(10, 3)
    assert cost_script.count_parameters(linear) == 10 * 3 + 3
    assert cost_script.count_macs(linear, torch.zeros(4, 10)) == 4 * 10 * 3  # batch × in × out (bias adds no MAC)
    conv = nn.Conv2d(2, 5, kernel_size=3, padding=1)
    assert cost_script.count_parameters(conv) == 5 * 2 * 3 * 3 + 5
    # every output value (5 channels × 8 × 8) takes in_channels × kernel area multiply-accumulates
    assert cost_script.count_macs(conv, torch.zeros(1, 2, 8, 8)) == 5 * 8 * 8 * 2 * 3 * 3
    frozen = nn.Linear(4, 4)
    frozen.weight.requires_grad_(False)
    assert cost_script.count_parameters(frozen) == 4  # learnable parameters only: the bias


def test_no_pipeline_keeps_the_earlier_pipeline_table_and_says_so(cost_script, tmp_path):
    """``--no-pipeline`` left the old cost_pipeline.csv beside a new cost.md that did not say it was older."""
    import argparse

    (tmp_path / "cost_pipeline.csv").write_text("case,loader\nvesselmnist3d 28,bundle\n")
    args = argparse.Namespace(smoke=True, keep_ratio=0.5, batch=2, repeats=1, repeats_b1=1, no_pipeline=True)
    result = {"environment": cost_script.environment(["cost.py", "--no-pipeline"]),
              "models": [{"scenario": "vol8", "method": "full"}], "samplers": [{"sampler": "das"}], "pipeline": []}
    scenarios = [cost_script.SMOKE_SCENARIOS["vol8"]]
    cost_script.write_results(tmp_path, result, args, scenarios)
    assert (tmp_path / "cost_pipeline.csv").read_text() == "case,loader\nvesselmnist3d 28,bundle\n"
    md = (tmp_path / "cost.md").read_text()
    assert "Parts measured by this run: models and samplers (vol8)." in md
    assert "Not measured: data pipeline; `cost_pipeline.csv` beside this report is from an earlier run" in md
    data = json.loads((tmp_path / "cost.json").read_text())
    assert data["parts_measured"] == ["models and samplers (vol8)"] and data["pipeline"] == []
