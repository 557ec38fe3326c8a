"""Smoke run of ``benchmarks/bn_lag.py`` (synthetic volumes, 2 epochs): well-formed, paired outputs."""

from __future__ import annotations

import csv


def test_smoke(bn_lag_script, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the variants' bundle roots go
    rows = bn_lag_script.main(["--smoke", "--out", str(tmp_path), "--threads", "1"])
    # each variant's temporary bundle root was removed (torch's inductor cache, made here when this process first
    # compiles something, is torch's)
    assert [p for p in scratch.iterdir() if not p.name.startswith("torchinductor_")] == []
    assert [(r["precise_bn"], r["epoch"]) for r in rows] == [(False, 1), (False, 2), (True, 1), (True, 2)]
    # both variants start from the same weights and data order: identical first epoch of training
    assert rows[0]["train_loss_train_mode"] == rows[2]["train_loss_train_mode"]
    for r in rows:
        assert r["train_prob_std_eval_mode"] >= 0 and r["val_loss_eval_mode"] > 0
    with open(tmp_path / "bn_lag.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    md = (tmp_path / "bn_lag.md").read_text()
    assert "Mode: **smoke**" in md and "precise bn" in md
