"""MONAI image readers for the arrays users bring: a ``.npy`` volume with or without a channel axis."""

from __future__ import annotations

import copy
import os

import numpy as np
from monai.data import NumpyReader
from monai.utils import ensure_tuple

__all__ = ["VolumeNumpyReader", "read_npy_header"]


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


def read_npy_header(path: str | os.PathLike) -> tuple[list[int], np.dtype]:
    """
    The shape and data type a ``.npy`` file's header declares, read without its data (never unpickled).

    Raises:
        ValueError: naming the file: not a ``.npy`` file; an array of Python objects (pickled: refused, as
            ``allow_pickle=False`` refuses it, where MONAI's ``LoadImage`` only said no reader suits the file); data
            shorter than the header declares (a truncated copy), with both sizes.
    """
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh)
        except ValueError as e:
            raise ValueError(f"'{path}' is not a NumPy .npy file ({e}).") from None
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"'{path}' is a NumPy array of Python objects (dtype {dtype}), stored pickled: refused "
                         "(arrays of numbers only; pickled data can run code when loaded).")
    need, size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, os.path.getsize(path) - offset
    if size < need:
        raise ValueError(f"'{path}' is truncated: its header declares {'×'.join(map(str, shape)) or 'a scalar'} values "
                         f"of {dtype} ({need:,} bytes of data), the file holds {size:,} (an interrupted copy?).")
    return [int(n) for n in shape], dtype
