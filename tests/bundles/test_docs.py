"""Every user-facing setting of both bundles (top-level keys of their configs) is documented in their docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


@pytest.mark.parametrize("bundle", ["das_volume_classification", "das_video_classification"])
@pytest.mark.parametrize("config", ["train.json", "evaluate.json", "inference.json", "multi_gpu_train.json"])
def test_settings_are_documented(bundle, config):
    settings = json.loads((BUNDLES / bundle / "configs" / config).read_text())
    docs = (BUNDLES / bundle / "docs" / "README.md").read_text()
    # a "+validate": {...} entry (evaluate.json) merges into train.json's validate: its keys are validate#...
    merged = [f"{k[1:]}#{sub}" for k, v in settings.items() if k.startswith("+") and isinstance(v, dict) for sub in v]
    plain = [k for k in settings if "#" not in k and not k.startswith("+")]
    missing = [k for k in [*plain, *merged] if k not in ("imports", "initialize", "run", "finalize")
               and f"`{k}`" not in docs]
    assert not missing, f"{bundle}/configs/{config}: settings not in docs/README.md: {missing}"
