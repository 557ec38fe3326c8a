"""A CacheDataset whose loading errors name the item: the datalist line and the image file."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from monai.data import CacheDataset

from monai_das.utils.logs import MAX_NAMED, root_cause

__all__ = ["ItemLoadError", "NamedCacheDataset", "failures_text", "MAX_NAMED_FAILURES"]


class ItemLoadError(RuntimeError):
    """An item of a dataset could not be loaded or preprocessed; the message names it and the first cause."""


def _where(item: Any, index: int) -> str:
    if isinstance(item, Mapping):
        image = item.get("image")
        image = f"image '{image}'" if isinstance(image, str) else None
        line = item.get("source_line")
        if line and image:
            return f"{line} ({image})"
        if line or image:
            return str(line or image)
    return f"item {index}"


class _Failed:
    """Placeholder for an item whose caching failed (kept until every item of the cache was tried)."""

    def __init__(self, error: ItemLoadError) -> None:
        self.error = error


@contextmanager
def _naming(data: Any, index: int) -> Iterator[None]:
    """
    An exception of the block as an :class:`ItemLoadError` naming item ``index`` of ``data``. The item is read only
    then: a lazily made one (the synthetic datasets make an item on every access) was made again for every transform
    of every epoch just to have its name at hand (1.7 of the 2.4 s an epoch of the main job's training loader took).
    """
    try:
        yield
    except ItemLoadError:
        raise
    except Exception as e:
        root = root_cause(e)
        try:
            item = data[index]
        except Exception:  # the item itself cannot be read: named by its index
            item = None
        raise ItemLoadError(f"{_where(item, index)}: cannot be loaded: {type(root).__name__}: {root}") from e


#: failures named one by one in a cache's error; the rest are counted
MAX_NAMED_FAILURES = MAX_NAMED


def failures_text(failed: list[ItemLoadError]) -> str:
    """The error of a cache fill where ``failed`` items could not be loaded: the first on the first line (what a log
    reader that keeps one line shows), then every other one (up to :data:`MAX_NAMED_FAILURES` in all, then counted),
    one per line, so that one run names every file to mend (trial T68b: a training list with four bad clips took
    three runs, each naming the first and counting the others)."""
    if len(failed) == 1:
        return str(failed[0])
    first, *rest = str(failed[0]).splitlines() or [""]  # a cause spanning lines (ITK's): the count stays on line 1
    lines = [f"{first} (and {len(failed) - 1} more item(s) that cannot be loaded, below)", *(f"  {r}" for r in rest),
             *("- " + "\n  ".join(str(e).splitlines()) for e in failed[1:MAX_NAMED_FAILURES])]
    if len(failed) > MAX_NAMED_FAILURES:
        lines.append(f"... and {len(failed) - MAX_NAMED_FAILURES} more")
    return "\n".join(lines)


class NamedCacheDataset(CacheDataset):
    """
    :class:`monai.data.CacheDataset` (same arguments) that says *which* item failed: an exception while an item is
    loaded, cached or transformed (a truncated NIfTI, an unreadable DICOM, a transform that refuses the image)
    becomes an :class:`ItemLoadError` naming the datalist line (``source_line`` of
    :func:`monai_das.data.load_datalist` items), the image path and the first cause, e.g.
    ``labels.csv:7 (image '/data/case005.nii.gz'): cannot be loaded: EOFError: Compressed file ended before the
    end-of-stream marker was reached``. MONAI's own message names the transform but not the file. When the cache is
    filled, every item is tried and the failures are raised together, each named (up to :data:`MAX_NAMED_FAILURES`).
    """

    def _load_cache_item(self, idx: int):
        try:
            with _naming(self.data, idx):
                return super()._load_cache_item(idx)
        except ItemLoadError as e:
            if not getattr(self, "_collect_errors", False):
                raise
            return _Failed(e)

    def _fill_cache(self, indices=None) -> list:
        # an exception inside MONAI's caching thread pool leaves the other workers running when the pool is torn
        # down (the process then aborts at exit); let every item finish, then report the failures together
        self._collect_errors = True
        try:
            cache = super()._fill_cache(indices)
        finally:
            self._collect_errors = False
        failed = [c.error for c in cache if isinstance(c, _Failed)]
        if failed:
            raise ItemLoadError(failures_text(failed)) from failed[0]
        return cache

    def _transform(self, index: int):
        if not -len(self.data) <= index < len(self.data):  # past the end: what ends a for loop over the dataset
            raise IndexError(f"index {index} out of range for {len(self.data)} items.")
        with _naming(self.data, index):
            return super()._transform(index)
