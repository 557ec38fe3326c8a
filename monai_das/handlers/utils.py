"""What the handlers share."""

from __future__ import annotations

from typing import Any

__all__ = ["attach_once"]


def attach_once(engine: Any, event: Any, handler: Any) -> None:
    """
    ``engine.add_event_handler(event, handler)`` unless ``handler`` is attached to ``event`` already, MONAI's guard
    (``ClassificationSaver.attach``): a handler attached twice (listed twice in a bundle's handler list, or attached
    by hand after the config did) would run twice per event (doubled report rows, a schedule stepped twice).
    """
    if not engine.has_event_handler(handler, event):
        engine.add_event_handler(event, handler)
