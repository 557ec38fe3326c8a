"""Recompute BatchNorm running statistics with the current weights before validation ("precise BN")."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from typing import Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_das.handlers.utils import attach_once, move_to_end, rank_world
from monai_das.networks.utils import network_device, preserved_modes

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["PreciseBNHandler"]


class PreciseBNHandler:
    """
    At the end of every training epoch (before ``ValidationHandler``: one attached earlier is moved after it), reset
    the BatchNorm running statistics of ``network`` and recompute them as plain averages over ``num_batches``
    training batches with the current weights (``torch.optim.swa_utils.update_bn``: train-mode forward passes
    without gradient). Every BatchNorm layer's statistics are recomputed, also those of a layer the caller put in
    eval mode to freeze it; each submodule's own train/eval mode is restored afterwards (``update_bn`` alone sets the
    whole network's).

    Why: running averages with ``momentum`` lag behind weights that change quickly. With few batches per epoch
    (e.g. 72 POCUS clips = 5 batches of 16) the eval-mode network of the first epochs then returns almost the same
    probabilities for every input — even for its own training clips — so validation loss, early stopping and the
    best checkpoint only see the class prior. Recomputed statistics make eval mode match what was trained.

    Args:
        loader: training data loader yielding dicts (or sequences whose first item is the image).
        network: the network (DDP wrappers are fine: each rank recomputes on its own batches, then the running
            statistics are averaged across ranks so that every replica validates and is saved with the same ones).
        num_batches: batches used per recomputation (``0`` or less: the whole loader).
        image_key: key of the image in dict batches.
        device: device the images are moved to (default: the network's).
    """

    def __init__(self, loader: Iterable, network: torch.nn.Module, num_batches: int = 32, image_key: str = "image",
                 device: str | torch.device | None = None) -> None:
        self.loader, self.network, self.image_key = loader, network, image_key
        self.num_batches = int(num_batches)
        self.device = device

    def attach(self, engine: Any) -> None:
        attach_once(engine, Events.EPOCH_COMPLETED, self)
        # a ValidationHandler attached earlier (listed first in train_handlers) validated, and chose the best
        # checkpoint, with the lagging statistics, and the recomputed ones were never validated (trial T71e)
        from monai.handlers import ValidationHandler

        move_to_end(engine, Events.EPOCH_COMPLETED, (ValidationHandler,))

    def _images(self):
        batches = self.loader if self.num_batches <= 0 else itertools.islice(self.loader, self.num_batches)
        for batch in batches:
            if isinstance(batch, dict):
                if self.image_key not in batch:
                    raise KeyError(f"PreciseBNHandler: batch has no key {self.image_key!r} (keys: {sorted(batch)}).")
                yield batch[self.image_key]
            else:
                yield batch[0] if isinstance(batch, (list, tuple)) else batch

    def __call__(self, engine: Any = None) -> None:
        device = self.device if self.device is not None else network_device(self.network)
        count = 0

        def images():
            nonlocal count
            for count, image in enumerate(self._images(), 1):  # noqa: B007 (count read after the loop)
                yield image

        with preserved_modes(self.network):
            torch.optim.swa_utils.update_bn(images(), self.network, device=device)
        _average_across_ranks(self.network)
        epoch = getattr(getattr(engine, "state", None), "epoch", None)
        logging.getLogger(__name__).info(f"precise BN: BatchNorm statistics recomputed on {count} training batches"
                                         + (f" after epoch {epoch}" if epoch is not None else ""))


def _average_across_ranks(network: torch.nn.Module) -> None:
    """Average BatchNorm running statistics over the ranks of an initialised process group (no-op otherwise)."""
    world = rank_world()[1]
    if world < 2:
        return
    for m in network.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for buf in (m.running_mean, m.running_var):
                if buf is not None:
                    torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
                    buf.div_(world)

