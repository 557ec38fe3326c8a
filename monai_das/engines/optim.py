"""Optimizer set-up with a separate learning rate for the sampler."""

from __future__ import annotations

from typing import Any

import torch

from monai_das.networks.utils import unwrap_network

__all__ = ["sampler_param_groups", "build_optimizer"]


def sampler_param_groups(
    network: torch.nn.Module, lr: float, sampler_lr: float | None = None, weight_decay: float = 0.0
) -> list[dict]:
    """
    Parameter groups ``[{"params": sampler params, "lr": sampler_lr, "name": "sampler"}, {"params": the rest, "lr": lr,
    "name": "network"}]`` for a ``SubsampledClassifier`` (wrappers such as DDP are unwrapped). ``sampler_lr=None``
    uses ``lr``. Parameters the sampler shares with the rest of the network (an ADPS sampler given the classifier's
    encoder) are the network's. Groups without trainable parameters are left out (non-learned samplers have none); a
    network without a ``sampler`` attribute gives one group.
    """
    if lr <= 0 or (sampler_lr is not None and sampler_lr <= 0):
        raise ValueError(f"learning rates must be > 0, got lr={lr}, sampler_lr={sampler_lr}.")
    net = unwrap_network(network, require_sampler=False)
    sampler = getattr(net, "sampler", None)
    sampler_ids = {id(p) for p in sampler.parameters()} if isinstance(sampler, torch.nn.Module) else set()
    # a module the sampler shares with the classifier (ADPS given the classifier's encoder) trains at the network's lr:
    # it was in the sampler's group, its encoder at lr / 10 without a word (trial T63b)
    sampler_ids -= {id(p) for m in net.children() if m is not sampler for p in m.parameters()}
    sampler_params = [p for p in net.parameters() if p.requires_grad and id(p) in sampler_ids]
    other_params = [p for p in net.parameters() if p.requires_grad and id(p) not in sampler_ids]
    groups = [
        {"params": sampler_params, "lr": float(lr if sampler_lr is None else sampler_lr), "name": "sampler"},
        {"params": other_params, "lr": float(lr), "name": "network"},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["weight_decay"] = float(weight_decay)
    if not groups:
        raise ValueError(f"{type(net).__name__} has no trainable parameters.")
    return groups


def build_optimizer(
    network: torch.nn.Module,
    lr: float = 1e-4,
    sampler_lr: float | None = None,
    name: str = "Adam",
    weight_decay: float = 0.0,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """
    ``torch.optim.<name>`` over :func:`sampler_param_groups` (default Adam, lr 1e-4; the sampler gets ``sampler_lr``,
    default ``lr``). ``kwargs`` go to the optimizer (e.g. ``betas``).
    """
    if not hasattr(torch.optim, name):
        raise ValueError(f"unknown optimizer {name!r} (not in torch.optim).")
    return getattr(torch.optim, name)(sampler_param_groups(network, lr, sampler_lr, weight_decay), **kwargs)
