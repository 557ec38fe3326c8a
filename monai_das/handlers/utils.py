"""What the handlers share."""

from __future__ import annotations

from typing import Any

__all__ = ["attach_once", "gather_items", "rank_world"]


def attach_once(engine: Any, event: Any, handler: Any) -> None:
    """
    ``engine.add_event_handler(event, handler)`` unless ``handler`` is attached to ``event`` already, MONAI's guard
    (``ClassificationSaver.attach``): a handler attached twice (listed twice in a bundle's handler list, or attached
    by hand after the config did) would run twice per event (doubled report rows, a schedule stepped twice).
    """
    if not engine.has_event_handler(handler, event):
        engine.add_event_handler(event, handler)


def rank_world() -> tuple[int, int]:
    """
    ``(rank, world size)`` of this process in an initialised ``torch.distributed`` group, ``(0, 1)`` otherwise: what
    a handler that only needs to know whether it writes (rank 0) or gathers (several ranks) reads. Ignite's ``idist``
    raises once a group it saw is destroyed (``multi_gpu_train.json``'s ``finalize``), so a later evaluation in the
    same process would fail (review R68d); handlers that communicate use ``idist`` while the group lives.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_items(items: list) -> list:
    """
    Every rank's ``items`` (a list of picklable objects, any number on each rank), concatenated in rank order
    (``torch.distributed.all_gather_object``; every rank must call it), on every rank; ``items`` itself outside a
    distributed run. What the handlers that see a whole evaluation (metrics, reports, predictions, diagnostics) read.
    """
    import torch.distributed as dist

    world = rank_world()[1]
    if world < 2:
        return items
    parts: list = [None] * world
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]
