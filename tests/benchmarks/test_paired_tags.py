"""``benchmarks/paired_tags.py``: candidate − reference of a recipe study, paired by cell, from its run tables."""

from __future__ import annotations

import csv

import pytest


def _write_runs(path, rows):
    fields = ["dataset", "method", "keep_ratio", "seed", "fold", "tag", "best_val_auc", "code_hash"]
    fields += [k for r in rows for k in r if k not in fields]
    fields = list(dict.fromkeys(fields))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
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


def test_a_cell_with_an_undefined_metric_is_not_paired(paired_tags_script):
    # "nan" in the run table (best_val_auc of a run whose every validation AUC was undefined): left out, as
    # compare_methods.paired_differences does; it failed in statistics.stdev (trial T71a)
    rows = [dict(dataset="vessel", method="das", keep_ratio="0.5", seed=str(seed), fold="", tag=tag,
                 best_val_auc="nan" if (seed, tag) == (2, "new") else str(0.7 + 0.01 * seed + 0.05 * (tag == "new")))
            for seed in range(4) for tag in ("new", "ref")]
    (row,) = paired_tags_script.paired_by_tag(rows, "new", "ref")
    assert row["pairs"] == "3" and row["mean"] == "+0.050" and row["wins"] == "3/3"


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
    # the grid's cells ran other training code (its hash covers the bundle configs' defaults too): refused, naming both
    with pytest.raises(SystemExit, match=r"(?s)2 of 2 pairs ran with other training code.*vessel/das keep 0.5 "
                                         r"seed 3 \[gated\] and vessel/das keep 0.5 seed 3 \[untagged\]: "
                                         r"code_hash: new vs old"):
        paired_tags_script.main([str(study), "--candidate", "gated", "--reference", "",
                                 "--reference-folder", str(grid)])
    assert not (study / "paired_gated_vs_untagged.md").exists()  # nothing written when refused
    text = paired_tags_script.main([str(study), "--candidate", "gated", "--reference", "",
                                    "--reference-folder", str(grid), "--allow-code-change"])
    assert "2 of 2 pairs ran with other training code (accepted with --allow-code-change)" in text
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
    text = paired_tags_script.main([str(tmp_path), "--candidate", "new", "--reference", "ref", "--allow-code-change"])
    assert "| vessel | all | 1 | +0.100 |" in text
    assert "`new` cand; `ref` refcode." in text and "unfinished" not in text


def test_seeds_are_units_when_keep_ratios_are_pooled(paired_tags_script, tmp_path):
    """Without folds, the cells of one seed at several keep ratios share its weights and data order: one unit."""
    rows = []
    for seed, diffs in enumerate([(-0.16, -0.06), (0.04, -0.01), (0.01, 0.03)]):
        for keep, d in zip((0.25, 0.5), diffs):
            rows += [dict(dataset="vessel", method="das", keep_ratio=keep, seed=seed, fold="", tag=t,
                          best_val_auc=0.7 + (d if t == "new" else 0.0)) for t in ("new", "ref")]
    _write_runs(tmp_path / "vessel_runs.csv", rows)
    by_keep = {r["keep"]: r for r in paired_tags_script.paired_by_tag(paired_tags_script.read_runs(tmp_path), "new",
                                                                       "ref", by_keep=True)}
    pooled = by_keep["all"]
    assert pooled["pairs"] == "3 seeds (6 runs)" and pooled["diffs"] == "-0.110 +0.015 +0.020"
    assert pooled["wins"] == "2/3" and pooled["mean"] == "-0.025"
    assert by_keep["25%"]["pairs"] == "3" and by_keep["25%"]["diffs"] == "-0.160 +0.040 +0.010"


def _cells_with_settings(tag, overrides, command="", code="c1", seeds=(0, 1)):
    return [dict(dataset="vessel", method="das", keep_ratio=0.5, seed=s, fold="", tag=tag, best_val_auc=0.7 + 0.01 * s,
                 code_hash=code, command=command, eval_split="val",
                 overrides=str({"max_epochs": 30, "lr": 0.001, "data_dir": f"/data/{tag}", "mlflow": tag == "ref",
                                "method": "das", "keep_ratio": 0.5, "seed": s, **overrides}))
            for s in seeds]


def test_pairs_with_other_settings_are_refused(paired_tags_script, tmp_path):
    """Only the setting the candidate is about may differ within a pair (what its command set, or --about)."""
    cmd = "python benchmarks/compare_methods.py --standard --override 'temporal_head=\"gated\"' --tag gated"
    # the reference was rerun later with augmentation on: a setting the candidate is not about
    _write_runs(tmp_path / "vessel_runs.csv",
                _cells_with_settings("gated", {"temporal_head": "gated"}, cmd)
                + _cells_with_settings("ref", {"augmentation": True}))
    args = [str(tmp_path), "--candidate", "gated", "--reference", "ref"]
    with pytest.raises(SystemExit, match=r"2 of 2 pairs ran with other settings, e\.g\.\n  vessel/das keep 0.5 seed 0 "
                                         r"\[gated\] and vessel/das keep 0.5 seed 0 \[ref\]: augmentation: "
                                         r"\(not set; no bundle default\) vs True\n"):
        paired_tags_script.main(args)
    assert not (tmp_path / "paired_gated_vs_ref.md").exists()
    text = paired_tags_script.main(args + ["--allow-other-settings"])
    assert "2 of 2 pairs ran with other settings (accepted with --allow-other-settings)" in text
    # temporal_head (set by the candidate's --override), data_dir and MLflow may differ; the split does not matter to
    # best_val_auc, but does to a metric of the evaluation
    _write_runs(tmp_path / "vessel_runs.csv",
                [{**r, "auc": 0.75} for r in _cells_with_settings("gated", {"temporal_head": "gated"}, cmd)]
                + [{**r, "eval_split": "test", "auc": 0.8, "best_val_auc": 0.6}
                   for r in _cells_with_settings("ref", {"temporal_head": "mean"})])
    text = paired_tags_script.main(args)
    assert "| vessel | all | 2 | +0.105 |" in text and "Mismatched" not in text
    with pytest.raises(SystemExit, match=r"eval_split: 'val' vs 'test'"):
        paired_tags_script.main(args + ["--metric", "auc"])
    # without the command recorded, --about names what the candidate is about
    _write_runs(tmp_path / "vessel_runs.csv", _cells_with_settings("gated", {"temporal_head": "gated"})
                + _cells_with_settings("ref", {}))
    with pytest.raises(SystemExit, match=r"temporal_head: 'gated' vs 'mean'"):  # unset: the bundle's default
        paired_tags_script.main(args)
    assert "| vessel | all | 2 | +0.000 |" in paired_tags_script.main(args + ["--about", "temporal_head"])
    # a same-code reference tagged by overriding a key with its bundle default (--override class_weights=null) pairs
    # with cells that left it unset (review H: the published sampler_lr study was refused)
    _write_runs(tmp_path / "vessel_runs.csv", _cells_with_settings("gated", {})
                + _cells_with_settings("ref", {"class_weights": None}))
    assert "| vessel | all | 2 | +0.000 |" in paired_tags_script.main(args)


def test_command_keys(paired_tags_script):
    keys = paired_tags_script.command_keys(
        "python benchmarks/compare_methods.py --override 'network_def#sampler_kwargs={\"spread\": true}' "
        "--override=lr=0.01 --max-epochs 5 --patience=2 --tag x")
    assert keys == {"network_def#sampler_kwargs", "lr", "max_epochs", "patience"}
    assert paired_tags_script.command_keys(None) == set() and paired_tags_script.command_keys("a 'b") == set()
