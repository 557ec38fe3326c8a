"""MONAI image readers for the arrays users bring: a ``.npy`` volume with or without a channel axis."""

from __future__ import annotations

import copy

import numpy as np
from monai.data import NumpyReader
from monai.utils import ensure_tuple

__all__ = ["VolumeNumpyReader"]


class VolumeNumpyReader(NumpyReader):
    """
    :class:`monai.data.NumpyReader` for volumes of either form: a 2D/3D array has no channel axis (``D×H×W``), a 4D
    array is channel first (``C×D×H×W``), decided per file. MONAI's reader takes one ``channel_dim`` for every file,
    so with its default a ``C×D×H×W`` array became ``1×C×D×H×W`` after ``EnsureChannelFirst`` (refused as no
    volume) while the study check had read it as ``C×D×H×W``. Pickled (object) arrays are refused
    (``allow_pickle=False``).
    """

    def __init__(self, **kwargs) -> None:
        kwargs.pop("channel_dim", None)
        super().__init__(channel_dim=None, allow_pickle=False, **kwargs)

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        reader = copy.copy(self)  # this call's channel axis, not shared with other threads
        arrays = (img,) if isinstance(img, np.ndarray) else ensure_tuple(img)  # one file's array, or several
        reader.channel_dim = 0 if {np.ndim(a) for a in arrays} == {4} else None
        return NumpyReader.get_data(reader, img)
