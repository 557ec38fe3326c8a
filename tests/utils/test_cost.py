"""MAC counts split into sampler, downstream network and the downstream network on the full sequence."""

from __future__ import annotations

import pytest
import torch

from monai_das.networks import build_classifier
from monai_das.utils.cost import count_macs, macs_breakdown, model_cost


@pytest.mark.parametrize("method", ["das", "uniform", "full"])
def test_macs_breakdown(method):
    torch.manual_seed(0)
    net = build_classifier(method, num_classes=2, num_frames=8, keep_ratio=0.5).train()
    x = torch.rand(2, 1, 8, 16, 16)
    macs = macs_breakdown(net, x)
    assert set(macs) == {"sampler", "downstream", "full_sequence"} and net.training  # mode restored
    assert all(isinstance(v, int) for v in macs.values())
    cost = model_cost(net, x)
    assert macs["sampler"] == cost["macs_sampler"] and macs["downstream"] == cost["macs_downstream"]
    with torch.no_grad():
        full = count_macs(net.eval().classify_frames, net.to_frames(x)) // 2  # per input
    assert macs["full_sequence"] == full
    if method == "full":
        assert macs["downstream"] == macs["full_sequence"] and macs["sampler"] == 0
    else:  # 4 of 8 frames through the encoder
        assert 0 < macs["downstream"] < macs["full_sequence"]
    assert (macs["sampler"] > 0) == (method == "das")


def test_macs_breakdown_video():
    net = build_classifier("uniform", num_classes=3, num_frames=6, keep_ratio=0.5, in_channels=3, layout="video")
    macs = macs_breakdown(net, torch.rand(1, 6, 3, 16, 16))
    assert 0 < macs["downstream"] < macs["full_sequence"]
