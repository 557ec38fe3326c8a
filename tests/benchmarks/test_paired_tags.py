"""``benchmarks/paired_tags.py``: candidate − reference of a recipe study, paired by cell, from its run tables."""

from __future__ import annotations

import csv

import pytest


def _write_runs(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["dataset", "method", "keep_ratio", "seed", "fold", "tag", "best_val_auc",
                                          "code_hash"])
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
    assert row["pairs"] == "3" and row["mean"] == "+0.057" and row["wins"] == "3/3"
    assert row["diffs"] == "+0.100 +0.050 +0.020" and row["ci"] == "[-0.044, +0.157]"  # mean ± t(0.975, 2)·sd/√3
    assert (tmp_path / "paired_new_vs_ref.md").read_text() == text and "command:" in text
    with pytest.raises(SystemExit, match="no cell was run with both tags"):
        paired_tags_script.paired_by_tag(rows, "new", "missing")


def test_cells_of_a_fold_are_one_unit(paired_tags_script, tmp_path):
    # two keep ratios and two seeds on each of 3 folds: 12 cells, 3 independent units (a fold's test patients)
    rows = []
    for fold, base in enumerate([0.10, 0.20, 0.30]):
        for seed in (0, 1):
            for keep in (0.1, 0.25):
                diff = base + (0.04 if seed else 0.0)
                rows += [dict(dataset="pocus", method="das", keep_ratio=keep, seed=seed, fold=fold, tag="new",
                              best_val_auc=0.5 + diff),
                         dict(dataset="pocus", method="das", keep_ratio=keep, seed=seed, fold=fold, tag="ref",
                              best_val_auc=0.5)]
    _write_runs(tmp_path / "pocus_runs.csv", rows)
    rows = paired_tags_script.paired_by_tag(paired_tags_script.read_runs(tmp_path), "new", "ref", by_keep=True)
    by_keep = {r["keep"]: r for r in rows}
    all_row = by_keep["all"]
    assert all_row["pairs"] == "3 folds (12 runs)" and by_keep["10%"]["pairs"] == "3 folds (6 runs)"
    assert all_row["diffs"] == "+0.120 +0.220 +0.320" and all_row["wins"] == "3/3"
    assert all_row["ci"] == "[-0.028, +0.468]"  # 0.22 ± 4.303·0.1/√3 over the 3 fold means


def test_reference_from_another_folder(paired_tags_script, tmp_path):
    """A study folder paired with the untagged cells of a grid folder (``--reference-folder``, ``--reference ""``)."""
    study, grid = tmp_path / "study", tmp_path / "grid"
    study.mkdir()
    grid.mkdir()
    _write_runs(study / "vessel_runs.csv", [
        dict(dataset="vessel", method="das", keep_ratio=0.5, seed=s, fold="", tag="gated", best_val_auc=v)
        for s, v in ((3, 0.80), (4, 0.70))])
    _write_runs(grid / "vessel_runs.csv", [  # the grid's own cells are untagged; a tagged one there is not used
        dict(dataset="vessel", method="das", keep_ratio=0.5, seed=s, fold="", tag=t, best_val_auc=v)
        for s, t, v in ((3, "", 0.75), (4, "", 0.72), (4, "gated", 0.0), (5, "", 0.9))])
    for path, code in ((study / "vessel_runs.csv", "new"), (grid / "vessel_runs.csv", "old")):  # code per cell
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        _write_runs(path, [{**r, "code_hash": "unpaired" if r["seed"] == "5" else code} for r in rows])
    text = paired_tags_script.main([str(study), "--candidate", "gated", "--reference", "",
                                    "--reference-folder", str(grid)])
    assert "| vessel | all | 2 | +0.015 |" in text and "+0.050 -0.020" in text
    assert f"(from `{grid}`)" in text and "gated − untagged" in text
    assert "`gated` new; `untagged` old (from" in text  # only the paired cells' code (seed 5 was not paired)
    assert (study / "paired_gated_vs_untagged.md").read_text() == text


def test_code_hashes_name_only_cells_that_were_paired(paired_tags_script, tmp_path):
    """A reference cell without the metric is not paired, so its code hash is not listed beside the differences."""
    rows = [dict(dataset="vessel", method="das", keep_ratio=0.5, seed=s, fold="", tag="new", best_val_auc=0.8,
                 code_hash="cand") for s in (0, 1)]
    rows += [dict(dataset="vessel", method="das", keep_ratio=0.5, seed=0, fold="", tag="ref", best_val_auc=0.7,
                  code_hash="refcode"),
             dict(dataset="vessel", method="das", keep_ratio=0.5, seed=1, fold="", tag="ref", best_val_auc="",
                  code_hash="unfinished")]
    _write_runs(tmp_path / "vessel_runs.csv", rows)
    text = paired_tags_script.main([str(tmp_path), "--candidate", "new", "--reference", "ref"])
    assert "| vessel | all | 1 | +0.100 |" in text
    assert "`new` cand; `ref` refcode." in text and "unfinished" not in text
