"""Optimizer with a separate sampler learning rate."""

from __future__ import annotations

import pytest
import torch

from monai_das.engines import build_optimizer, sampler_param_groups
from monai_das.networks import build_classifier


def test_das_groups():
    net = build_classifier("das", num_classes=2, num_frames=8)
    groups = sampler_param_groups(net, lr=1e-4, sampler_lr=1e-3)
    assert [g["name"] for g in groups] == ["sampler", "network"]
    assert groups[0]["lr"] == 1e-3 and groups[1]["lr"] == 1e-4
    sampler_ids = {id(p) for p in net.sampler.parameters()}
    assert {id(p) for p in groups[0]["params"]} == sampler_ids
    assert not sampler_ids & {id(p) for p in groups[1]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_an_encoder_shared_with_the_sampler_trains_at_the_network_lr():
    """ADPS given the classifier's encoder: the encoder was in the sampler's group, trained at lr / 10 (trial T63b)."""
    from monai_das.networks import MobileNetV3Small

    enc = MobileNetV3Small(in_channels=1)
    net = build_classifier("adps", 2, num_frames=8, num_samples=3, encoder=enc, sampler_kwargs={"encoder": enc})
    assert net.sampler.encoder is net.encoder
    sampler, network = sampler_param_groups(net, lr=1e-3, sampler_lr=1e-4)
    enc_ids = {id(p) for p in enc.parameters()}
    assert sampler["name"] == "sampler" and not enc_ids & {id(p) for p in sampler["params"]}
    assert enc_ids <= {id(p) for p in network["params"]} and network["lr"] == 1e-3
    assert sampler["params"] and sum(len(g["params"]) for g in (sampler, network)) == len(list(net.parameters()))


def test_fixed_sampler_has_one_group_and_default_lr():
    net = build_classifier("uniform", num_classes=3, num_frames=8)
    opt = build_optimizer(net, lr=2e-4)
    assert isinstance(opt, torch.optim.Adam)
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [("network", 2e-4)]


def test_wrapped_network_and_errors():
    net = build_classifier("dps", num_classes=2, num_frames=8)
    wrapped = torch.nn.DataParallel(net)
    assert [g["name"] for g in sampler_param_groups(wrapped, 1e-4)] == ["sampler", "network"]
    with pytest.raises(ValueError, match="learning rates"):
        sampler_param_groups(net, lr=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(net, name="Nope")
