"""Fixtures of the deployment tests: tiny bundles built once per session."""

from __future__ import annotations

import pytest

from das_deploy_helpers import make_checkpoint_bundle, make_onnx_bundle, make_torchscript_standin


@pytest.fixture(scope="session")
def checkpoint_bundle(tmp_path_factory):
    """(bundle folder, eager network): the real DAS classifier on a 16³ grid, checkpoint + config."""
    return make_checkpoint_bundle(tmp_path_factory.mktemp("bundle_ckpt"))


@pytest.fixture(scope="session")
def torchscript_model(tmp_path_factory):
    """(model.ts path, eager stand-in) with metadata and inference config embedded."""
    return make_torchscript_standin(tmp_path_factory.mktemp("bundle_ts") / "models" / "model.ts")


@pytest.fixture(scope="session")
def onnx_bundle(tmp_path_factory):
    """(bundle folder, eager network): the real DAS classifier on an 8×16×16 grid, exported to ONNX (the card
    embedded, any k) next to its checkpoint, card and config. Exported once per session (~15-20 s)."""
    pytest.importorskip("onnxruntime")
    return make_onnx_bundle(tmp_path_factory.mktemp("bundle_onnx"))
