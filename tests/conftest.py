"""Shared fixtures: where the real data lives (``MONAI_DAS_DATA`` or ``<repo>/../shared/data``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("MONAI_DAS_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set MONAI_DAS_DATA to the shared/data folder)")
    return root


@pytest.fixture(scope="session")
def medmnist_root(shared_data: Path) -> Path:
    root = shared_data / "medmnist3d"
    if not (root / "vesselmnist3d.npz").is_file():
        pytest.skip(f"vesselmnist3d.npz not found in {root}")
    return root


@pytest.fixture(autouse=True)
def _no_tracking_store_of_the_shell(monkeypatch):
    """MONAI's MLflow handler logs to ``MLFLOW_TRACKING_URI`` when set, and the tracking check prepares that store:
    a developer's shell variable must not have the tests log to (or make) their real store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
