"""``benchmarks/paired_tags.py``: candidate − reference of a recipe study, paired by cell, from its run tables."""

from __future__ import annotations

import csv

import pytest


def _write_runs(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["dataset", "method", "keep_ratio", "seed", "fold", "tag", "best_val_auc"])
        w.writeheader()
        w.writerows(rows)


def test_pairs_by_cell_and_reports_interval(paired_tags_script, tmp_path):
    rows = []
    for seed, (cand, ref) in enumerate([(0.80, 0.70), (0.75, 0.70), (0.72, 0.70)]):
        rows += [dict(dataset="vessel", method="das", keep_ratio=0.5, seed=seed, fold="", tag="new", best_val_auc=cand),
                 dict(dataset="vessel", method="das", keep_ratio=0.5, seed=seed, fold="", tag="ref", best_val_auc=ref)]
    # a cell only one tag ran is not paired; another tag is ignored
    rows += [dict(dataset="vessel", method="das", keep_ratio=0.25, seed=0, fold="", tag="new", best_val_auc=0.1),
             dict(dataset="vessel", method="das", keep_ratio=0.5, seed=0, fold="", tag="other", best_val_auc=0.0)]
    _write_runs(tmp_path / "vessel_runs.csv", rows)
    text = paired_tags_script.main([str(tmp_path), "--candidate", "new", "--reference", "ref"])
    (row,) = paired_tags_script.paired_by_tag(paired_tags_script.read_runs(tmp_path), "new", "ref")
    assert row["pairs"] == 3 and row["mean"] == "+0.057" and row["wins"] == "3/3"
    assert row["diffs"] == "+0.100 +0.050 +0.020" and row["ci"] == "[-0.044, +0.157]"  # mean ± t(0.975, 2)·sd/√3
    assert (tmp_path / "paired_new_vs_ref.md").read_text() == text and "command:" in text
    with pytest.raises(SystemExit, match="no cell was run with both tags"):
        paired_tags_script.paired_by_tag(rows, "new", "missing")
