"""Parameter and multiply-accumulate counts of samplers and encoders (torch's own FLOP counter)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from monai.networks.utils import eval_mode

from monai_das.networks.nets.sampler import SamplerOutput
from monai_das.networks.nets.subsampled_classifier import SubsampledClassifier

__all__ = ["count_parameters", "count_macs", "model_cost", "macs_breakdown"]


def count_parameters(module: nn.Module) -> int:
    """Number of learnable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_macs(fn, *args) -> int:
    """Multiply-accumulates of ``fn(*args)`` (matmuls and convolutions; FLOPs / 2), no gradient."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn(*args)
    return counter.get_total_flops() // 2


def _encoder_input(net: SubsampledClassifier, seq: torch.Tensor, out=None) -> torch.Tensor:
    """What the encoder takes for the sampler output ``out`` (every frame of ``seq`` when ``None``), context included."""
    if out is None:
        idx = torch.arange(seq.shape[1], device=seq.device).expand(seq.shape[0], -1)
        out = SamplerOutput(seq, torch.eye(seq.shape[1], dtype=seq.dtype, device=seq.device).expand(seq.shape[0], -1, -1),
                            idx)
    return net.add_context(seq, out) if hasattr(net, "add_context") else out.frames


def model_cost(net: SubsampledClassifier, x: torch.Tensor) -> dict[str, int]:
    """
    Cost of one forward pass of ``net`` (in ``eval()``) on ``x``, split into sampler and downstream network.

    Returns ``params_sampler``, ``params_downstream``, ``macs_sampler``, ``macs_downstream`` (encoder on the kept
    frames + temporal head + classifier), ``frames_kept`` (per input) and ``frames_total``.
    """
    with eval_mode(net):
        seq = net.to_frames(x)
        out = net.sampler(seq)
        sampler_params = count_parameters(net.sampler)
        shared = net.sampler.encoder is net.encoder if hasattr(net.sampler, "encoder") else False
        return {
            "params_sampler": sampler_params - (count_parameters(net.encoder) if shared else 0),
            "params_downstream": count_parameters(net) - sampler_params,
            "macs_sampler": count_macs(net.sampler, seq) // x.shape[0],
            "macs_downstream": count_macs(net.classify_frames, _encoder_input(net, seq, out)) // x.shape[0],
            "frames_kept": int(out.indices.shape[1]),
            "frames_total": int(seq.shape[1]),
        }


def macs_breakdown(net: SubsampledClassifier, x: torch.Tensor) -> dict[str, int]:
    """
    Multiply-accumulates per input of one forward pass of ``net`` (in ``eval()``) on ``x``: ``sampler``,
    ``downstream`` (encoder on the ``k`` kept frames + temporal head + classifier, as :func:`model_cost`) and
    ``full_sequence`` (the same downstream network on all ``T`` frames: what a model without a sampler would cost).
    ``1 - (sampler + downstream) / full_sequence`` is the compute the sampler saves, its own cost included.
    """
    cost = model_cost(net, x)
    with eval_mode(net):
        full = count_macs(net.classify_frames, _encoder_input(net, net.to_frames(x))) // x.shape[0]
    return {
        "sampler": int(cost["macs_sampler"]),
        "downstream": int(cost["macs_downstream"]),
        "full_sequence": int(full),
    }
