"""A classification loss plus a term that teaches a learned sampler which of the kept frames carry the class."""

from __future__ import annotations

import logging
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_das.networks.utils import unwrap_network

__all__ = ["FrameRelevanceLoss"]

logger = logging.getLogger(__name__)


class FrameRelevanceLoss(nn.Module):
    """
    ``loss(input, target) + weight · relevance``, where ``relevance`` teaches the sampler of ``network`` (a
    :class:`~monai_das.networks.SubsampledClassifier` with a learned sampler: DAS, DPS) to rank the frames it kept
    the way the classifier rates them one by one.

    For each training item, every kept frame ``j`` is classified on its own (the classifier's linear layer on the
    frame's embedding, no gradient): ``ℓ_j`` is its cross-entropy against the item's label, and
    ``q = softmax(-ℓ / temperature)`` over the ``k`` kept frames says how much each frame alone supports the true
    class. ``relevance = -Σ_j q_j · log softmax(A_kept)_j`` is the cross-entropy between ``q`` and the softmax of the
    sampler's scores ``A`` at the kept frames (a listwise ranking loss), averaged over the batch. Only the sampler's
    parameters receive its gradient; the encoder, head and classifier learn from ``loss`` alone.

    Why: the straight-through gradient through ``P·x`` rates a frame by the inner product of the loss gradient with
    its pixels, which favours bright, busy frames whatever they show; on data whose busiest frames carry no class
    evidence it steers the sampler away from the evidence (benchmarks/README.md, "Frame statistics that mislead").
    This term rates frames by what the classifier reads in them. During the encoder warm-up
    (:class:`~monai_das.handlers.SamplerWarmupHandler`) the kept frames are random, so the sampler learns from an
    unbiased sample of frames before it chooses.

    In ``eval()`` (validation loss) and for samplers without scores (``uniform``, ``random``, ``full``, ``adps``) the
    value is ``loss(input, target)``. The term weighs every item alike (the wrapped loss's class weights do not apply
    to it); items whose label is outside ``0..C-1`` (an ``ignore_index``) are left out of it. With ``k = 1`` it is 0
    (one kept frame has nothing to be ranked against). The network's training output carries the scores at weight 0,
    so ``DistributedDataParallel`` counts the sampler as used; ``nn.DataParallel`` over several devices is refused
    (its replicas' records are lost).

    Raises:
        ValueError: ``weight < 0`` or ``temperature <= 0``; ``weight > 0`` with a network without a sampler;
            ``sampler_gradient="none"`` with ``weight == 0`` or a learned sampler without scores (``adps``): the
            sampler would never learn; ``nn.DataParallel`` over several devices; ``B×1`` integer labels with a
            ``CrossEntropyLoss`` (in the call, naming the fix).

    Args:
        loss: the classification loss, e.g. ``torch.nn.CrossEntropyLoss()``.
        network: the classifier (DDP wrappers are unwrapped); with ``weight > 0`` it must be a
            :class:`~monai_das.networks.SubsampledClassifier` (else ``ValueError``), whose
            :attr:`~monai_das.networks.SubsampledClassifier.record_relevance` is switched on.
        weight: weight of the relevance term (``0``: ``loss`` alone, nothing recorded).
        temperature: of the per-frame target ``q`` (smaller: the best-rated frame takes more of ``q``).

    Shapes: ``input`` ``B×num_classes`` logits; ``target`` what the wrapped ``loss`` takes: ``B`` class indices
    (``CrossEntropyLoss``), ``B×1`` class indices (losses that take them, e.g. MONAI's ``FocalLoss``; not
    ``CrossEntropyLoss``), or ``B×num_classes`` one-hot labels or class probabilities, of any dtype (an integer
    one-hot is read as one-hot, not as indices).
    """

    def __init__(self, loss: nn.Module, network: nn.Module, weight: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__()
        weight, temperature = float(weight), float(temperature)
        if not weight >= 0:
            raise ValueError(f"FrameRelevanceLoss: weight must be >= 0, got {weight}.")
        if not temperature > 0:
            raise ValueError(f"FrameRelevanceLoss: temperature must be > 0, got {temperature}.")
        self.loss, self.weight, self.temperature = loss, weight, temperature
        if isinstance(network, nn.DataParallel) and len(network.device_ids or []) > 1:
            raise ValueError("FrameRelevanceLoss: nn.DataParallel over several devices runs replicas whose records are "
                             "lost; use DistributedDataParallel (multi_gpu_train.json).")
        inner = unwrap_network(network, require_sampler=weight > 0)  # the term needs a SubsampledClassifier
        sampler = getattr(inner, "sampler", None)
        if getattr(inner, "sampler_gradient", None) == "none" and getattr(sampler, "learnable", False):
            if weight == 0 or not getattr(sampler, "has_scores", False):
                why = "relevance weight is 0" if weight == 0 else f"{type(sampler).__name__} has no frame scores"
                raise ValueError(f"sampler_gradient='none' with this loss would leave the sampler untrained ({why}): "
                                 "give the relevance term a weight > 0 (bundle: relevance_weight) with das or dps, "
                                 "or use sampler_gradient 'pixels'.")
        # not a submodule: the network's parameters are the trainer's, not this loss's. With weight 0 the network is
        # not touched (any network, also one without a sampler, trains with the plain loss)
        self.__dict__["network"] = inner if weight > 0 else network
        if weight > 0:
            self.network.record_relevance = True
        self._warned = False
        #: (weak reference to the output, record) of the last record taken: a second call on that output reuses it
        self._last: tuple[weakref.ref | None, tuple] | None = None

    def __getstate__(self) -> dict:
        # copies (deepcopy, pickle) leave the last record behind: its tensors are a training step's graph (review)
        return {**super().__getstate__(), "_last": None}

    def relevance(self, target: torch.Tensor, input: torch.Tensor | None = None) -> torch.Tensor | None:
        """
        The relevance term of the last training forward pass of the network (``None`` when there is none). Its record
        is taken from the network once; a second call on the same output ``input`` (the network's logits) gives the
        same term again (it gave the classification loss alone: trial T63b).
        """
        record = self.network.pop_relevance()
        if record is not None:
            self._last = (None if input is None else weakref.ref(input), record)
        elif input is not None and self._last is not None and self._last[0] is not None and self._last[0]() is input:
            record = self._last[1]
        if record is None:
            if self.weight > 0 and self.network.training and not self._warned:
                self._warned = True
                logger.info(f"FrameRelevanceLoss: no frame scores were recorded in training (the "
                            f"{type(self.network.sampler).__name__} sampler keeps none); only the classification "
                            "loss is used")
            return None
        frame_logits, indices, scores = record
        b, k, c = frame_logits.shape
        log_p = F.log_softmax(frame_logits, -1)
        if target.ndim == 2 and target.shape[1] == c and c > 1:  # one-hot (an integer one too) or probabilities
            per_frame = -(log_p * target.to(log_p.dtype)[:, None, :]).sum(-1)
            valid = torch.ones(b, dtype=torch.bool, device=target.device)
        else:
            labels = target.reshape(b, -1)[:, :1].long()  # B or B×1 class indices
            valid = (labels[:, 0] >= 0) & (labels[:, 0] < c)  # an ignore_index (-100) item teaches nothing
            per_frame = -log_p.gather(2, labels.clamp(0, c - 1)[:, None, :].expand(b, k, 1)).squeeze(2)
        q = F.softmax(-per_frame / self.temperature, dim=1)
        kept = scores.gather(1, indices)
        per_item = -(q * F.log_softmax(kept, dim=1)).sum(1)
        return (per_item * valid).sum() / valid.sum().clamp(min=1)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if (isinstance(self.loss, nn.CrossEntropyLoss) and input.ndim == 2 and target.ndim == 2
                and target.shape[1] == 1 and input.shape[1] != 1 and not target.is_floating_point()):
            raise ValueError(
                "FrameRelevanceLoss: CrossEntropyLoss takes B class indices, got labels of shape "
                f"{tuple(target.shape)} (B×1, as MONAI's transforms often give them): pass target[:, 0], or squeeze "
                "the label in the data pipeline (e.g. monai.transforms.SqueezeDimd('label', dim=0) per item)."
            )
        value = self.loss(input, target)
        if self.weight == 0 or not self.network.training:
            return value
        term = self.relevance(target, input)
        return value if term is None else value + self.weight * term
