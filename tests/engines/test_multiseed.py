"""Mean ± std over seeds."""

from __future__ import annotations

import json

import pytest

from monai_das.engines.multiseed import aggregate_metrics, format_summary, main


def _report(path, seed, auc, acc):
    path.parent.mkdir(parents=True, exist_ok=True)
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
    one = aggregate_metrics(paths[:1])  # one seed has no spread: not "± 0.0000" (trial T59a)
    assert one["std"]["auc"] is None and "auc: 0.8000 (n=1: no spread)" in format_summary(one)
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


def test_aggregate_refuses_what_a_mean_would_hide(tmp_path):
    a = _report(tmp_path / "a" / "metrics.json", 0, 0.8, 0.7)
    with pytest.raises(ValueError, match="given twice"):
        aggregate_metrics([a, tmp_path / "a" / ".." / "a" / "metrics.json"])
    b = _report(tmp_path / "b" / "metrics.json", 0, 0.9, 0.7)
    with pytest.raises(ValueError, match=r"seed\(s\) \[0\] occur in more than one report"):
        aggregate_metrics([a, b])
    c = tmp_path / "c" / "metrics.json"
    c.parent.mkdir()
    c.write_text(json.dumps({"seed": 1, "method": "uniform", "metrics": {"auc": 0.6}}))
    with pytest.raises(ValueError, match=r"different experiments: method None in .*a/metrics.json' but 'uniform'"):
        aggregate_metrics([a, c])


def test_run_resumes_by_seed(tmp_path, monkeypatch, capsys):
    """A rerun after a kill does not train finished seeds again (it trained seed 0 anew, and MLflow got a second
    run of it) and continues an unfinished one from its last.pt (--resume True); other overrides are refused."""
    import subprocess

    from monai_das.engines import multiseed

    calls = []

    def fake_run(cmd, check=True):
        root = cmd[cmd.index("--bundle_root") + 1]
        calls.append((root.rsplit("/", 1)[-1], "evaluate" if "evaluate.json" in cmd[cmd.index("--config_file") + 1]
                      else "train", "--resume" in cmd))
        if calls[-1][1] == "evaluate":  # told where to write, whatever k it evaluates at (--num_kept)
            assert cmd[cmd.index("--output_dir") + 1] == str(tmp_path / "out" / calls[-1][0] / "eval")
            _report(tmp_path / "out" / calls[-1][0] / "eval" / "metrics.json", int(root[-1]), 0.8, 0.7)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(multiseed, "run_child", fake_run)
    out = tmp_path / "out"
    multiseed.run_seeds([0, 1], out, ["--max_epochs", "2"])
    assert calls == [("seed0", "train", True), ("seed0", "evaluate", False), ("seed1", "train", True),
                     ("seed1", "evaluate", False)]
    (out / "seed1" / multiseed.DONE_FILE).unlink()  # killed before seed 1 finished
    calls.clear()
    summary = multiseed.run_seeds([0, 1], out, ["--max_epochs", "2"])
    assert calls == [("seed1", "train", True), ("seed1", "evaluate", False)] and summary["num_runs"] == 2
    with pytest.raises(ValueError, match="seed 0 .* finished with other settings"):
        multiseed.run_seeds([0, 1], out, ["--max_epochs", "3"])
    with pytest.raises(FileNotFoundError, match=r"no_train: no checkpoint to evaluate at .*seed2"):
        multiseed.run_seeds([2], out, [], train=False)
