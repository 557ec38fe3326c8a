"""Logging helpers."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator, Mapping, Set
from typing import Any

__all__ = ["quiet_loggers", "log_once", "quiet_other_ranks", "cause_chain", "root_cause", "first_cause",
           "bounded_repr"]

#: how the messages of exceptions that only wrap another begin (MONAI's config expressions and components, its
#: transforms)
#: how many items (files, datalist lines) one error names one by one; the others are counted
MAX_NAMED = 20
WRAPPER_PREFIXES = ("Failed to evaluate", "Failed to instantiate", "applying transform")


def bounded_repr(value: Any, max_items: int = MAX_NAMED, max_chars: int = 80, _depth: int = 0) -> str:
    """
    ``repr(value)`` bounded for a message that echoes what a user, a file or a model card gave: a list, tuple, set or
    mapping shows its first ``max_items`` items and ``... (N in all)`` (nested ones 3 items, and none below two
    levels), a string (and any other value's ``repr``) its first ``max_chars`` characters and ``... (N characters)``.
    A card with a million class names or a 10 MB name gives a short error, never one as long as the input; the whole
    ``repr`` of a container is never built.

    Examples: ``bounded_repr(["a", "b"])`` is ``"['a', 'b']"``; ``bounded_repr([str(i) for i in range(10**6)], 2)``
    is ``"['0', '1', ... (1000000 in all)]"``.
    """
    if isinstance(value, Set) and not value:
        return repr(value)  # set(), not {}
    if isinstance(value, (list, tuple, Set, Mapping)):
        ends = "{}" if isinstance(value, (Set, Mapping)) else "()" if isinstance(value, tuple) else "[]"
        limit = max_items if _depth == 0 else 3 if _depth == 1 else 0
        inner = {"max_items": max_items, "max_chars": max_chars, "_depth": _depth + 1}
        shown = []
        for item in itertools.islice(value.items() if isinstance(value, Mapping) else value, limit):
            shown.append(f"{bounded_repr(item[0], **inner)}: {bounded_repr(item[1], **inner)}"
                         if isinstance(value, Mapping) else bounded_repr(item, **inner))
        more = [f"... ({len(value)} in all)"] if len(value) > limit else []
        one = "," if isinstance(value, tuple) and len(value) == 1 else ""
        return ends[0] + ", ".join(shown + more) + one + ends[1]
    if isinstance(value, str) and len(value) > max_chars:
        return f"{value[:max_chars]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= max_chars + 2 else f"{text[:max_chars]}... ({len(text)} characters)"


@contextlib.contextmanager
def quiet_loggers(levels: Mapping[str, int]) -> Iterator[None]:
    """
    Raise the named loggers to at least the given levels while the block runs, then restore their own levels.

    A logger already quieter than asked stays as it is. Used to keep third-party chatter (the ONNX exporter's, the
    bundle set-up's) out of a run's log without hiding its errors.

    Args:
        levels: ``{logger name: minimum level}``, e.g. ``{"onnxscript": logging.WARNING}``.
    """
    before = {logging.getLogger(name): logging.getLogger(name).level for name in levels}
    _raise_levels(levels)
    try:
        yield
    finally:
        for lg, level in before.items():
            lg.setLevel(level)


def quiet_other_ranks(names: tuple[str, ...] = ("monai_das", "ignite", "monai"), level: int = logging.ERROR) -> bool:
    """
    In a distributed run (``torch.distributed`` initialised), raise the loggers ``names`` of every rank but 0 to
    ``level``: rank 0 logs the data facts, the datalist checks, the warnings and the engines' lines once (a rank
    that saves nothing no longer says "Saved checkpoint": MONAI's saver logs through the engine's ``ignite.*``
    logger), every rank still logs its errors. Returns whether this process was quieted (call it after
    ``init_process_group``).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_rank() > 0):
        return False
    _raise_levels(dict.fromkeys(names, level))
    return True


def _raise_levels(levels: Mapping[str, int]) -> None:
    """Set each named logger to at least its level (one already quieter stays as it is)."""
    for name, level in levels.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(level, logger.getEffectiveLevel()))


class _OnceFilter(logging.Filter):
    """Lets each distinct message of a logger through once per process."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def log_once(name: str) -> None:
    """
    Show each distinct message of the logger ``name`` once per process: for a library that repeats one notice on
    every call, e.g. MONAI's ``monai.data.nvimgcodec_pydicom_plugin`` warning that nvImageCodec is not installed each
    time a ``LoadImage`` is built (once per DICOM study read). Calling it again adds no second filter.
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, _OnceFilter) for f in logger.filters):
        logger.addFilter(_OnceFilter())


def cause_chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions that caused it, in order, as Python's traceback shows them: ``__cause__``, else
    ``__context__`` unless it is suppressed (``raise ... from None``: a message that replaces the error under it);
    each once."""
    chain, seen = [error], {id(error)}
    while True:
        last = chain[-1]
        nxt = last.__cause__ or (None if last.__suppress_context__ else last.__context__)
        if nxt is None or id(nxt) in seen:
            return chain
        seen.add(id(nxt))
        chain.append(nxt)


def root_cause(error: BaseException) -> BaseException:
    """The last exception of :func:`cause_chain`: the one at the bottom of it."""
    return cause_chain(error)[-1]


def first_cause(error: BaseException) -> BaseException:
    """The first exception of :func:`cause_chain` that does not only wrap another (:data:`WRAPPER_PREFIXES`): the
    message that says what went wrong, e.g. this package's refusal under MONAI's "Failed to evaluate
    ConfigExpression" (not the reader's error under it, which the refusal already names)."""
    chain = cause_chain(error)
    return next((e for e in chain if not str(e).startswith(WRAPPER_PREFIXES)), chain[-1])
