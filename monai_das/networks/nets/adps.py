"""ADPS: Active Deep Probabilistic Subsampling (van Gorp et al., ICML 2021) — sequential, LSTM-driven picks."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from monai_das.networks.blocks.frame_encoder import (
    SmallFrameEncoder, encoder_in_channels, encoder_out_features, probe_encoder_features
)
from monai_das.networks.blocks.gumbel import sample_without_replacement, select_frames
from monai_das.networks.nets.sampler import BaseSampler, check_count

__all__ = ["ADPSSampler"]


class ADPSSampler(BaseSampler):
    """
    Picks ``k`` frames one at a time: an LSTM cell reads the encoding of the frame picked at step ``j`` and emits
    logits over the ``T`` positions for step ``j+1`` (Gumbel-softmax over the frames not taken, straight-through
    estimator; arg-max in ``eval()``). ``k`` sequential steps, each running the frame encoder once; another ``k`` at
    inference runs that many steps (the LSTM was trained for ``num_samples``).

    Args:
        num_samples: ``k``.
        num_frames: ``T`` (the logits layer is ``T`` wide).
        in_channels: frame channels ``C`` (for the default encoder; checked against the input). With ``encoder``
            given, its ``in_channels``/``n_input_channels`` attribute (if any) is checked instead.
        hidden_dim: LSTM width.
        encoder: frame encoder ``N×C×H×W → N×E``; by default a :class:`SmallFrameEncoder`. Passing the downstream
            encoder shares it. ``E`` is its ``out_features`` attribute, else found by one probe run (as in
            :class:`SubsampledClassifier`).
        tau: softmax temperature of the relaxation.
    """

    learnable = True
    #: the ``k`` picks are unrolled steps: an export keeps the ``k`` it was traced with
    export_any_k = False

    def __init__(
        self,
        num_samples: int,
        num_frames: int,
        in_channels: int = 1,
        hidden_dim: int = 64,
        encoder: nn.Module | None = None,
        tau: float = 1.0,
    ) -> None:
        super().__init__(num_samples)
        self.fix_num_frames(num_frames)
        self.tau = float(tau)
        if encoder is None:
            self.in_channels = check_count(in_channels, "in_channels")
            self.encoder: nn.Module = SmallFrameEncoder(self.in_channels)
        else:
            self.in_channels, self.encoder = encoder_in_channels(encoder), encoder
        hidden_dim = check_count(hidden_dim, "hidden_dim")
        # a shared MONAI encoder (DenseNet, ResNet...) has no out_features: probe it as SubsampledClassifier does
        features = encoder_out_features(self.encoder)
        if features is None:
            features = probe_encoder_features(self.encoder, self.in_channels, owner="ADPSSampler")
        self.cell = nn.LSTMCell(features, hidden_dim)
        self.h0 = nn.Parameter(torch.zeros(hidden_dim))
        self.to_logits = nn.Linear(hidden_dim, self.num_frames)

    def sampling_matrix(self, x: torch.Tensor, num_samples: Any) -> torch.Tensor:
        b = x.shape[0]
        h = self.h0.repeat(b, 1)
        c = torch.zeros_like(h)
        rows: list[torch.Tensor] = []
        taken = torch.zeros(b, self.num_frames, dtype=x.dtype, device=x.device)
        for j in range(num_samples):
            # frames already taken get -inf logits through the mask built from earlier rows
            logits = self.to_logits(h).masked_fill(taken > 0.5, float("-inf"))
            row = sample_without_replacement(logits[:, None], self.tau, noisy=self.training)[:, 0]
            rows.append(row)
            taken = taken + row.detach()
            if j + 1 < num_samples:
                frame = select_frames(row[:, None], x, row.detach().argmax(-1, keepdim=True))[:, 0]
                h, c = self.cell(self.encoder(frame), (h, c))
        return torch.stack(rows, 1)
