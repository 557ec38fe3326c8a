"""Load the benchmark scripts (``benchmarks/*.py`` are scripts, not a package) as modules for the smoke tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_utils():
    return _load("bench_utils")


@pytest.fixture(scope="session")
def cost_script():
    return _load("cost")


@pytest.fixture(scope="session")
def compare_script():
    return _load("compare_methods")


@pytest.fixture(scope="session")
def bn_lag_script():
    return _load("bn_lag")


@pytest.fixture(scope="session")
def paired_tags_script():
    return _load("paired_tags")


@pytest.fixture(scope="session")
def own_data_script():
    return _load("own_data")


@pytest.fixture(scope="session")
def inference_speed_script():
    return _load("inference_speed")
