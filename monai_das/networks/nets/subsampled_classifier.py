"""Sampler → 2D frame encoder → temporal head → linear classifier."""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_das.networks.blocks.frame_encoder import encoder_in_channels, encoder_out_features, probe_encoder_features
from monai_das.networks.blocks.gumbel import indices_to_matrix, select_frames
from monai_das.networks.blocks.temporal_head import TemporalHead
from monai_das.networks.nets.sampler import (
    BaseSampler, SamplerOutput, cast_to_parameters, check_count, input_given_as
)
from monai_das.networks.utils import SavedSettings, preserved_modes, refuse_scripting, to_frames

__all__ = ["SubsampledClassifier", "LAYOUTS", "check_context_frames"]

LAYOUTS = ("volume", "video")

logger = logging.getLogger(__name__)


def check_context_frames(value: object) -> int:
    """``context_frames`` (neighbours on either side of a kept frame) as an ``int >= 0``; ``ValueError`` otherwise
    (floats and booleans included: it is a count of frames)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"context_frames must be an integer >= 0, got {value!r}.")
    return value


#: how the sampler's straight-through gradient reaches it in training (see ``SubsampledClassifier``)
SAMPLER_GRADIENTS = ("pixels", "features", "none")


class SubsampledClassifier(SavedSettings, nn.Module):
    """
    Classifies a volume or a video from ``k`` of its ``T`` slices/frames chosen by ``sampler``.

    Args:
        sampler: a :class:`BaseSampler` (``das``, ``dps``, ``adps``, ``uniform``, ``random``, ``full``).
        encoder: any 2D network ``N×C×H×W → N×E`` (one embedding per frame): :class:`MobileNetV3Small`, a MONAI
            network such as ``DenseNet121(spatial_dims=2, in_channels=1, out_channels=64)``,
            ``resnet18(spatial_dims=2, n_input_channels=1, num_classes=32)`` or ``EfficientNetBN``, a
            ``nn.Sequential`` ending in a global pooling and a flatten, or a backbone returning feature maps
            wrapped in :class:`~monai_das.networks.blocks.FrameEncoder`. ``E`` comes from ``encoder_features``,
            else from the encoder's ``out_features`` attribute, else from one probe run (see below).
        num_classes: number of output logits (classes, >= 2: the outputs are softmax probabilities).
        layout: ``"volume"``: input ``B×C×D×H×W`` (MONAI channel-first), frames are the slices along spatial axis
            ``slice_axis``; ``"video"``: input ``B×T×C×H×W``.
        slice_axis: 0, 1 or 2 for slices along D, H or W (``layout="volume"`` only).
        temporal_head: ``"mean"`` (default), ``"max"``, ``"attention"`` or ``"gated"`` (gated attention MIL)
            pooling of the ``k`` frame embeddings (:class:`~monai_das.networks.blocks.TemporalHead`).
        dropout: dropout before the final linear layer.
        encoder_features: ``E``. ``None`` (default) reads the encoder's ``out_features``; an encoder without it is
            run once on zeros ``2×C×s×s`` with ``s =`` :data:`~monai_das.networks.blocks.PROBE_SIZE` (64), in
            ``eval()`` without gradients, its train/eval mode restored afterwards, and ``E`` is the last dimension
            of the output. Give it for an encoder that needs frames larger than 64×64 (or other probe input).
        in_channels: frame channels ``C``, checked against the input. ``None`` (default) takes the encoder's
            ``in_channels`` or ``n_input_channels`` attribute (divided by ``2c+1`` with context frames); an encoder
            with neither (MONAI ``DenseNet``, ``ResNet``) leaves the check to the sampler (DAS, ADPS) or to the
            encoder's first layer.
        context_frames: ``c``, 2.5D input: each kept frame reaches the encoder with its ``c`` neighbours on either
            side as extra channels (``C·(2c+1)`` channels, neighbours ``-c..c`` in order, clamped at the ends of the
            sequence), so a kept slice sees the structure around it. The sampler still chooses ``k`` frames; the
            neighbours are taken through the same straight-through sampling matrix (shifted), so the sampler's
            gradient sees them. The encoder must take ``C·(2c+1)`` channels. Default 0 (single frames).
        sampler_gradient: how a learned sampler's straight-through gradient is formed in training. ``"pixels"``
            (default, as in DPS/DAS): through ``P·x``, the gradient for frame ``t`` is the inner product of the
            loss gradient with the frame's pixels, which favours bright, busy frames. ``"features"``: through
            ``P·z`` with ``z`` the encoder embeddings of all ``T`` frames (one extra forward pass over all frames,
            without gradient, encoder in eval mode), so the sampler is told how each frame would change the
            prediction. Logits, the encoder's gradient and BN statistics are the same either way; eval is unaffected.
            Measured on a task with misleading frame statistics: no reliable gain yet (benchmarks/README.md).
            ``"none"``: no straight-through gradient (``P`` is detached); the sampler learns only from a loss on its
            scores, :class:`~monai_das.losses.FrameRelevanceLoss` (see :attr:`record_relevance`).

    Raises:
        ValueError: ``encoder_features`` disagrees with the encoder's ``out_features``, or ``in_channels`` with its
            ``in_channels``/``n_input_channels`` or with the sampler's ``in_channels`` (DAS, ADPS); the probe run
            fails (the message suggests ``encoder_features=``); the probe output is not ``N×E`` (e.g. a ``N×E×h×w`` map from a backbone without pooling: the message
            says to add a global pooling and a flatten, or wrap the backbone in ``FrameEncoder``).

    Shapes: ``forward(x)`` → logits ``B×num_classes``; :meth:`sample` → :class:`SamplerOutput`.

    Dtypes: floating point input is cast to the dtype of the network's parameters (float16/bfloat16/float64 input to
    a float32 network is computed in float32, and :meth:`sample` returns float32 frames); for half precision convert
    the network (``net.half()``) or use ``torch.autocast``. Integer input is refused by the sampler.

    State dict: ``layout`` and ``slice_axis`` (which no weight's shape records) are saved with the weights, as
    ``classifier_settings``; weights saved with others are refused by ``load_state_dict``
    (:class:`~monai_das.networks.utils.SavedSettings`).
    """

    settings_key = "classifier_settings"
    settings_hint = "build it with the training run's layout and slice_axis (the bundle's model card records both)"

    __prepare_scriptable__ = refuse_scripting  # traced or exported, never scripted

    def __init__(
        self,
        sampler: BaseSampler,
        encoder: nn.Module,
        num_classes: int,
        layout: str = "volume",
        slice_axis: int = 0,
        temporal_head: str = "mean",
        dropout: float = 0.2,
        encoder_features: int | None = None,
        in_channels: int | None = None,
        context_frames: int = 0,
        sampler_gradient: str = "pixels",
    ) -> None:
        super().__init__()
        self.context_frames = check_context_frames(context_frames)
        if sampler_gradient not in SAMPLER_GRADIENTS:
            raise ValueError(f"sampler_gradient must be one of {SAMPLER_GRADIENTS}, got {sampler_gradient!r}.")
        self.sampler_gradient = sampler_gradient
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2 (D, H, W), got {slice_axis}.")
        num_classes = check_count(num_classes, "num_classes")
        if num_classes < 2:  # the softmax of one logit is 1 whatever the input: a model that cannot answer
            raise ValueError(f"num_classes must be >= 2, got {num_classes}: the classifier's outputs are softmax "
                             "probabilities, one per class (a binary task is 2 classes: negative and positive).")
        self.sampler, self.encoder = sampler, encoder
        self.layout, self.slice_axis, self.num_classes = layout, slice_axis, num_classes
        if not isinstance(encoder, nn.Module):
            raise ValueError(
                f"SubsampledClassifier: encoder must be a torch.nn.Module mapping N×C×H×W → N×E, got "
                f"{type(encoder).__name__}."
            )
        self.in_channels = self._discover_in_channels(encoder, in_channels)
        sampler_channels = encoder_in_channels(sampler)  # DAS, ADPS: the channels their features were built for
        if None not in (sampler_channels, self.in_channels) and sampler_channels != self.in_channels:
            raise ValueError(
                f"SubsampledClassifier: the sampler {type(sampler).__name__} was built for in_channels="
                f"{sampler_channels} but the frame encoder takes frames of {self.in_channels} channel(s); build both "
                "for the frames' channel count C."
            )
        features = self._discover_features(encoder, encoder_features, sampler)
        self.encoder_features = features
        self.temporal_head = TemporalHead(features, temporal_head)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))
        #: what the last training forward pass leaves for :class:`monai_das.losses.FrameRelevanceLoss` (see
        #: :meth:`record_relevance`): per-frame logits ``B×k×num_classes`` of the kept frames, their indices ``B×k``
        #: and the sampler's scores ``B×T``
        self.relevance: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._record_relevance = False
        self._warned_untrained = False

    def _settings_tensor(self) -> torch.Tensor:
        """``[layout index in LAYOUTS, slice_axis (-1 for video)]`` as int64."""
        axis = self.slice_axis if self.layout == "volume" else -1
        return torch.tensor([LAYOUTS.index(self.layout), axis], dtype=torch.int64)

    @staticmethod
    def _settings_of(v: list[int]) -> dict:
        if len(v) != 2 or not 0 <= v[0] < len(LAYOUTS):
            return {"unreadable": v}
        return {"layout": LAYOUTS[v[0]], **({"slice_axis": v[1]} if LAYOUTS[v[0]] == "volume" else {})}

    def _discover_in_channels(self, encoder: nn.Module, in_channels: int | None) -> int | None:
        declared = encoder_in_channels(encoder)
        span = 2 * self.context_frames + 1  # frames per encoder input
        context = f" (C×{span}: {self.context_frames} context frame(s) on either side)" if span > 1 else ""
        if declared is not None and declared % span:
            raise ValueError(
                f"SubsampledClassifier: the frame encoder {type(encoder).__name__} declares {declared} input "
                f"channel(s), not a multiple of {span}{context}.")
        if in_channels is None:
            return None if declared is None else declared // span
        in_channels = check_count(in_channels, "in_channels")
        if declared is not None and declared != in_channels * span:
            raise ValueError(
                f"SubsampledClassifier: in_channels={in_channels} but the frame encoder {type(encoder).__name__} "
                f"declares {declared} input channel(s); build the encoder for {in_channels * span}{context} or pass "
                f"in_channels={declared // span}."
            )
        return in_channels

    def _discover_features(self, encoder: nn.Module, encoder_features: int | None, sampler: nn.Module) -> int:
        declared = encoder_out_features(encoder)
        if encoder_features is None:
            if declared is not None:
                return declared
            # the probe needs C: ours, else the sampler's (DAS/ADPS are built for it); the helper falls back to
            # the encoder's first convolution
            c = self.in_channels or encoder_in_channels(sampler)
            c = None if c is None else c * (2 * self.context_frames + 1)
            return probe_encoder_features(encoder, c, owner="SubsampledClassifier")
        encoder_features = check_count(encoder_features, "encoder_features")
        if declared is not None and declared != encoder_features:
            raise ValueError(
                f"SubsampledClassifier: encoder_features={encoder_features} but the frame encoder "
                f"{type(encoder).__name__} has out_features={declared}; leave encoder_features=None to use it."
            )
        return encoder_features

    @property
    def record_relevance(self) -> bool:
        """
        Whether training forward passes keep :attr:`relevance` (set by :class:`monai_das.losses.FrameRelevanceLoss`):
        each kept frame's logits on its own (the classifier's linear layer on its embedding, no gradient) beside the
        sampler's scores, so a loss can teach the sampler which frames carry the class. Samplers without scores
        (``uniform``, ``random``, ``full``, ``adps``) leave :attr:`relevance` ``None``.
        """
        return self._record_relevance

    @record_relevance.setter
    def record_relevance(self, value: bool) -> None:
        self._record_relevance = bool(value)
        self.sampler.record_scores = bool(value)
        self.relevance = None

    def pop_relevance(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """:attr:`relevance` of the last training forward pass, then forgotten (``None`` when there is none)."""
        out, self.relevance = self.relevance, None
        self.sampler.scores = None  # a non-leaf tensor kept on the module would block copy.deepcopy (EMA copies)
        return out

    def to_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Input as the network takes it → frame sequence ``B×T×C×H×W`` (floating input in the parameters' dtype)."""
        expected = "B×C×D×H×W" if self.layout == "volume" else "B×T×C×H×W"
        if not isinstance(x, torch.Tensor) or x.ndim != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected a 5D input {expected} (layout={self.layout!r}), got {shape}.")
        given = tuple(x.shape)
        if any(s == 0 for s in given):  # named as given, not as the sampler's frame sequence (trial T67f)
            raise ValueError(f"input has an empty dimension: shape {given} ({expected}, layout={self.layout!r}).")
        x = to_frames(x, self.layout, self.slice_axis)
        channels = x.shape[2]
        if self.in_channels is not None and channels != self.in_channels:
            raise ValueError(
                f"input of shape {given} has {channels} channel(s) but the "
                f"encoder expects {self.in_channels} (layout={self.layout!r}: channels are dim "
                f"{1 if self.layout == 'volume' else 2}; a channel-last input needs moving its channels there)."
            )
        return cast_to_parameters(self, x)

    def sample(self, x: torch.Tensor, num_samples: Optional[int] = None) -> SamplerOutput:
        """The sampler's choice for ``x`` (same layout as :meth:`forward`); ``num_samples``: see :meth:`forward`."""
        seq = self.to_frames(x)
        with input_given_as(x.shape):
            return self.sampler(seq, num_samples)

    def add_context(self, x: torch.Tensor, out: SamplerOutput) -> torch.Tensor:
        """
        The encoder input of the kept frames: ``out.frames`` (``B×k×C×H×W``) with ``context_frames`` neighbours on
        either side of each as channels (``B×k×C·(2c+1)×H×W``); ``x`` is the sequence ``B×T×C×H×W`` the sampler saw.
        Neighbour ``d`` of every kept frame is ``(P·S_d)·x`` with ``S_d`` the shift by ``d`` clamped to ``0..T-1``:
        gathered bit for bit, with the straight-through gradient of ``P``.
        """
        c = self.context_frames
        if c == 0:
            return out.frames
        t = x.shape[1]
        eye = torch.eye(t, dtype=out.matrix.dtype, device=x.device)
        steps = torch.arange(t, device=x.device)
        pieces = []
        for d in range(-c, c + 1):
            if d == 0:
                pieces.append(out.frames)
                continue
            shifted = out.matrix @ eye[(steps + d).clamp(0, t - 1)]  # row t of S_d: one-hot at clamp(t + d)
            pieces.append(select_frames(shifted, x, (out.indices + d).clamp(0, t - 1)))
        return torch.cat(pieces, 2)

    def classify_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """
        Logits ``B×num_classes`` from the encoder input of the kept frames, ``B×k×C'×H×W`` (``C' = C`` without
        context frames, else :meth:`add_context`'s ``C·(2c+1)``; floating frames cast as in :meth:`to_frames`).
        """
        return self.classify_embeddings(self.encode_frames(frames))

    def classify_embeddings(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``B×num_classes`` from the frame embeddings ``B×k×E`` (temporal head, then the classifier)."""
        return self.classifier(self.temporal_head(z))

    def classify_kept(self, seq: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """
        Logits ``B×num_classes`` of the frames ``indices`` (``B×k`` long, ascending) of ``seq`` (``B×T×C×H×W``, as
        :meth:`to_frames` gives it), as if the sampler had kept them (context frames included): e.g. ``k`` evenly
        spaced frames instead of the sampler's, or the frames an exported graph of the random baseline drew.
        """
        indices = indices.to(seq.device).long()
        out = BaseSampler.apply_matrix(indices_to_matrix(indices, seq.shape[1], seq.dtype), seq, indices)
        return self.classify_frames(self.add_context(seq, out))

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frame embeddings ``B×k×E`` of the encoder input ``B×k×C'×H×W`` (cast as in :meth:`to_frames`)."""
        frames = cast_to_parameters(self, frames)
        b, k = frames.shape[:2]
        try:
            return self.encoder(frames.reshape(b * k, *frames.shape[2:])).reshape(b, k, -1)
        except (ValueError, RuntimeError) as e:
            size = list(frames.shape[-2:])
            if self.training and "more than 1 value per channel" in str(e):  # BatchNorm of one value per channel
                raise ValueError(
                    f"training step with B={b} input(s) of k={k} kept frame(s) of {size} pixels: the encoder's "
                    f"BatchNorm gets one value per channel ({e}). Train with batch_size >= 2 (or keep more frames, or "
                    "larger frames); a last batch of one item can be dropped (DataLoader drop_last=True)."
                ) from e
            if any(m in str(e) for m in ("Output size is too small", "Kernel size can't be greater")):
                raise ValueError(
                    f"frames of {size} pixels are too small for the encoder {type(self.encoder).__name__} ({e}): give "
                    "larger frames (spatial_size), or an encoder for small frames (MobileNetV3Small, the default; "
                    "DenseNet121 needs at least 32×32)."
                ) from e
            raise

    def forward(self, x: torch.Tensor, num_samples: Optional[int] = None) -> torch.Tensor:
        """
        Logits ``B×num_classes``. ``num_samples``: keep that many frames instead of the sampler's ``k`` (a frame
        budget chosen at inference; ``1 <= num_samples <= T``; samplers with ``any_k``: DAS, DPS, uniform, random,
        ADPS; ``full`` always keeps ``T`` and refuses another ``num_samples``).
        """
        return self.forward_with_indices(x, num_samples)[0]

    def forward_with_indices(self, x: torch.Tensor, num_samples: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``B×num_classes`` and the kept frame indices ``B×k`` (ascending) of the same pass."""
        seq = self.to_frames(x)
        with input_given_as(x.shape):  # a refusal of its values names the shape given, not the frames'
            out = self.sampler(seq, num_samples)
        if self.sampler_gradient == "features" and self.training and out.matrix.requires_grad:
            z = self._encode_with_feature_gradient(seq, out)
        else:
            z = self.encode_frames(self.add_context(seq, out.detach() if self.sampler_gradient == "none" else out))
        logits = self.classify_embeddings(z)
        if (self.sampler_gradient == "none" and self.training and not self._record_relevance
                and not self._warned_untrained and any(p.requires_grad for p in self.sampler.parameters())):
            self._warned_untrained = True  # once: a plain loss gives the sampler no gradient at all (trial T63b)
            logger.warning("SubsampledClassifier: sampler_gradient='none' and no FrameRelevanceLoss records frame "
                           "scores: the sampler gets no gradient and never learns. Train with "
                           "monai_das.losses.FrameRelevanceLoss(loss, network, weight > 0), or sampler_gradient "
                           "'pixels'.")
        if self._record_relevance:
            self.relevance = None  # never a record of an earlier pass
            scores = getattr(self.sampler, "scores", None)
            if scores is not None and self.training:
                lin = self.classifier[-1]
                with torch.no_grad():
                    self.relevance = (F.linear(z, lin.weight, lin.bias), out.indices, scores)
                # the scores reach the loss through `relevance`; adding them at zero weight puts the sampler in the
                # output's graph, so DistributedDataParallel counts its parameters as used (warm-up, "none")
                logits = logits + 0.0 * scores.sum()
        return logits, out.indices

    def _encode_with_feature_gradient(self, seq: torch.Tensor, out: SamplerOutput) -> torch.Tensor:
        """
        Frame embeddings ``B×k×E`` in training with ``sampler_gradient="features"``: the kept frames are encoded as
        usual (same values, same encoder gradient), but the sampler's straight-through gradient is taken in the
        encoder's feature space, ``P·z_all`` with ``z_all`` the embeddings of all ``T`` frames (no gradient, encoder in
        eval mode), instead of in pixel space ``P·x``.
        """
        z = self.encode_frames(self.add_context(seq, out.detach()))
        b, t = seq.shape[:2]
        with torch.no_grad():
            eye = torch.eye(t, dtype=out.matrix.dtype, device=seq.device).expand(b, t, t)
            steps = torch.arange(t, device=seq.device).expand(b, t)
            with preserved_modes(self.encoder):
                self.encoder.eval()
                z_all = self.encode_frames(self.add_context(seq, SamplerOutput(seq, eye, steps)))
        proxy = out.matrix @ z_all
        return z + (proxy - proxy.detach())
