"""Misspelt keys: the app's own keys (``--conf``, request options) against a key it does not know."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: how alike (``difflib`` ratio of the keys lower-cased, ``_``/``-``/spaces dropped) a key must be to one of the
#: app's keys to be taken for a misspelling of it: ``num_kep``/``numKept``/``n_kept`` → ``num_kept`` (0.92, 1.0, 0.83),
#: ``spatial_sise`` → ``spatial_size``, ``engin`` → ``engine``; MONAI Label's own keys stay below it (``device`` vs
#: ``engine`` 0.5, ``num_samples`` vs ``num_kept`` 0.47, ``label_info``, ``client_id``, ``result_*`` < 0.45)
CUTOFF = 0.8


def _norm(key: str) -> str:
    return "".join(c for c in str(key).lower() if c not in "_- ")


def misspelling_of(key: str, known: Iterable[str], cutoff: float = CUTOFF) -> str | None:
    """The key of ``known`` that ``key`` (not itself one of them) most likely misspells, or ``None``."""
    known = list(known)
    if key in known:
        return None
    scored = [(difflib.SequenceMatcher(None, _norm(key), _norm(k)).ratio(), k) for k in known]
    score, best = max(scored, default=(0.0, None))
    return best if score >= cutoff else None
