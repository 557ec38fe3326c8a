"""Mean ± std over seeds."""

from __future__ import annotations

import json

import pytest

from monai_das.engines.multiseed import aggregate_metrics, format_summary, main


def _report(path, seed, auc, acc):
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"seed": seed, "metrics": {"auc": auc, "accuracy": acc}}))
    return path


def test_aggregate(tmp_path, capsys):
    paths = [_report(tmp_path / f"seed{s}" / "eval" / "metrics.json", s, auc, acc)
             for s, auc, acc in [(0, 0.8, 0.7), (1, 0.9, None), (2, 1.0, 0.9)]]
    summary = aggregate_metrics(paths)
    assert summary["num_runs"] == 3
    assert summary["mean"]["auc"] == pytest.approx(0.9) and summary["std"]["auc"] == pytest.approx(0.1)
    assert summary["count"]["accuracy"] == 2 and summary["mean"]["accuracy"] == pytest.approx(0.8)
    assert "auc: 0.9000 ± 0.1000 (n=3)" in format_summary(summary)
    main(["aggregate", *map(str, paths)])
    assert json.loads((tmp_path / "summary.json").read_text())["mean"]["auc"] == pytest.approx(0.9)
    assert "±" in capsys.readouterr().out


def test_errors(tmp_path):
    with pytest.raises(ValueError):
        aggregate_metrics([])
    with pytest.raises(FileNotFoundError):
        aggregate_metrics([tmp_path / "missing.json"])
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="metrics"):
        aggregate_metrics([tmp_path / "x.json"])
