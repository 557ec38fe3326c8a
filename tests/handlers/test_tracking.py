"""unique_trackers merges duplicate MLflow handlers (built-in tracking + --tracking mlflow)."""

from __future__ import annotations

from monai.handlers import MLFlowHandler, StatsHandler
from monai.utils import path_to_sqlite_uri

from monai_das.handlers import unique_trackers


def test_merge(tmp_path):
    uri = path_to_sqlite_uri(tmp_path / "mlflow.db")
    mine = MLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r", artifacts=["a.png"])
    added = MLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r", artifacts="config.json")
    other_run = MLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r_eval")
    stats = StatsHandler()
    out = unique_trackers([mine, None, stats, added, other_run])
    assert out == [mine, stats, other_run]
    assert mine.artifacts == ("a.png", "config.json")
    assert unique_trackers(None) is None
