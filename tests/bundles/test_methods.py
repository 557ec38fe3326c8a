"""Every sampling method trains through train.json (in-process, one tiny epoch); --tracking mlflow logs once."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import run

from das_bundle_helpers import META, TRAIN

pytestmark = pytest.mark.slow

TINY = dict(num_train=8, num_val=4, batch_size=4, max_epochs=1, progress_bar=False, num_figures=0)


@pytest.mark.parametrize("method", ["dps", "adps", "random", "full"])
def test_method_trains(method, tmp_path):
    run(config_file=TRAIN, meta_file=META, logging_file=False, bundle_root=str(tmp_path), method=method,
        mlflow=False, **TINY)
    ckpt = torch.load(tmp_path / "models" / "last.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2
    assert not (tmp_path / "mlflow.db").exists()  # --mlflow False
    names = [g["name"] for g in ckpt["optimizer"]["param_groups"]]
    assert names == (["sampler", "network"] if method in ("dps", "adps") else ["network"])


def test_tracking_flag_logs_once(tmp_path):
    from mlflow import MlflowClient
    from monai.utils import path_to_sqlite_uri

    run(config_file=TRAIN, meta_file=META, logging_file=False, bundle_root=str(tmp_path), method="uniform",
        tracking="mlflow", sampler_lr=1e-3, **TINY)
    client = MlflowClient(tracking_uri=path_to_sqlite_uri(tmp_path / "mlflow.db"))
    (run_info,) = client.search_runs([client.get_experiment_by_name("das_volume_classification").experiment_id])
    assert len(client.get_metric_history(run_info.info.run_id, "val_loss")) == 1  # not twice
    assert len(client.get_metric_history(run_info.info.run_id, "train_loss")) == 1
    artifacts = {a.path for a in client.list_artifacts(run_info.info.run_id)}
    assert any(a.startswith("config_") and a.endswith(".json") for a in artifacts)  # the executed config
    assert "model.pt" in artifacts
    assert run_info.data.params["sampler_lr"] == "0.001"


def test_relevance_loss_alone_trains_the_sampler(tmp_path):
    """``relevance_weight`` wires FrameRelevanceLoss into train.json: with ``sampler_gradient none`` the sampler has
    no straight-through gradient, so its Adam state exists only because the relevance term reached it."""
    run(config_file=TRAIN, meta_file=META, logging_file=False, bundle_root=str(tmp_path), method="das",
        mlflow=False, relevance_weight=1.0, sampler_gradient="none", sampler_warmup_epochs=0, **TINY)
    ckpt = torch.load(tmp_path / "models" / "last.pt", weights_only=True)
    sampler_group = next(g for g in ckpt["optimizer"]["param_groups"] if g["name"] == "sampler")
    states = [ckpt["optimizer"]["state"].get(i) for i in sampler_group["params"]]
    # without the term no sampler parameter would have a gradient, hence no Adam state (the temperature MLP has none:
    # the term ranks the scores, it does not involve the temperature)
    assert any(s is not None and s["exp_avg"].abs().sum() > 0 for s in states)
