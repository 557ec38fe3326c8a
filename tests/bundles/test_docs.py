"""Every user-facing setting of the bundle (top-level scalar keys of train.json and inference.json) is documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "das_volume_classification"


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_settings_are_documented(config):
    settings = json.loads((BUNDLE / "configs" / config).read_text())
    docs = (BUNDLE / "docs" / "README.md").read_text()
    missing = [k for k, v in settings.items() if not isinstance(v, (dict, list)) and f"`{k}`" not in docs]
    assert not missing, f"{config}: settings not in docs/README.md: {missing}"
