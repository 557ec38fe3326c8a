"""What the handlers share."""

from __future__ import annotations

from typing import Any

__all__ = ["attach_once", "gather_items", "move_to_end", "rank_world"]


def attach_once(engine: Any, event: Any, handler: Any) -> None:
    """
    ``engine.add_event_handler(event, handler)`` unless ``handler`` is attached to ``event`` already, MONAI's guard
    (``ClassificationSaver.attach``): a handler attached twice (listed twice in a bundle's handler list, or attached
    by hand after the config did) would run twice per event (doubled report rows, a schedule stepped twice).
    """
    if not engine.has_event_handler(handler, event):
        engine.add_event_handler(event, handler)


def move_to_end(engine: Any, event: Any, kinds: tuple[type, ...], name: str | None = None) -> None:
    """
    Move the handlers of ``event`` already attached to ``engine`` that belong to an object of one of ``kinds`` (its
    bound method named ``name``, or any of its handlers when ``name`` is ``None``; behind ignite's wrapper of a
    filtered event such as ``EPOCH_COMPLETED(every=2)``) to the end of the event's list, as they were registered: a
    handler attached just before this call then runs before them whatever order a handler list gave. ignite runs an
    event's handlers in the order they were attached and has no public listing of them: its registry
    (``engine._event_handlers``) is read here alone.
    """
    entries = getattr(engine, "_event_handlers", {}).get(event)
    if not entries:
        return

    def owned(func: Any) -> bool:
        func = func._parent() if hasattr(func, "_parent") else func  # ignite's filter wrapper keeps a weak reference
        owner = getattr(func, "__self__", func)
        return isinstance(owner, kinds) and (name is None or getattr(func, "__name__", None) == name)

    moved = [entry for entry in entries if owned(entry[0])]
    entries[:] = [entry for entry in entries if not owned(entry[0])] + moved


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
