"""Frame-sequence transforms: volume → frames, and uniform / random temporal subsampling (array and dict forms)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Randomizable, Transform

from monai_das.networks.utils import check_count
from monai_das.networks.utils import uniform_indices as _uniform_indices
from monai.utils import TraceKeys, TransformBackends, convert_to_tensor

__all__ = [
    "KEPT_INDICES",
    "SOURCE_INDICES",
    "NO_SOURCE",
    "affine_source_indices",
    "affine_evidence_slices",
    "source_coordinates",
    "resolved",
    "uniform_indices",
    "select_frames",
    "subsampled_meta",
    "subsample_frame_records",
    "FramePositions",
    "volume_to_frames",
    "VolumeToFrames",
    "VolumeToFramesd",
    "VolumeToFramesD",
    "VolumeToFramesDict",
    "UniformTemporalSubsample",
    "UniformTemporalSubsampled",
    "UniformTemporalSubsampleD",
    "UniformTemporalSubsampleDict",
    "RandTemporalSubsample",
    "RandTemporalSubsampled",
    "RandTemporalSubsampleD",
    "RandTemporalSubsampleDict",
]

#: ``MetaTensor.meta`` key: indices (``k`` long, ascending) kept by the last temporal step, relative to its input.
KEPT_INDICES = "kept_indices"
#: ``MetaTensor.meta`` key: positions of the output frames in the original sequence (file / volume), composed over
#: every temporal step applied so far.
SOURCE_INDICES = "source_indices"
#: a :data:`SOURCE_INDICES` entry of a frame that comes from no frame/slice of the file (padding)
NO_SOURCE = -1


def source_coordinates(original_affine: torch.Tensor, affine: torch.Tensor, shape: Sequence[int], frame_axis: int
                       ) -> tuple[np.ndarray, float, int, bool]:
    """For each index along spatial axis ``frame_axis`` of a preprocessed volume of spatial ``shape`` (centre of the
    other two axes), its coordinate along the source volume's axis it runs along (continuous, in source slices);
    half a preprocessed slice's thickness in source slices; that source axis; whether they run the same way."""
    original_affine = torch.as_tensor(original_affine, dtype=torch.float64)
    affine = torch.as_tensor(affine, dtype=torch.float64)
    a_src = original_affine[:4, :4] if original_affine.shape[0] >= 4 else torch.eye(4, dtype=torch.float64)
    m = torch.linalg.inv(a_src) @ affine[:4, :4]
    src_axis = int(torch.argmax(m[:3, frame_axis].abs()))
    # every frame's centre voxel at once (one matrix product instead of one per frame)
    v = torch.tensor([[(s - 1) / 2.0 for s in shape] + [1.0]], dtype=torch.float64).repeat(int(shape[frame_axis]), 1)
    v[:, frame_axis] = torch.arange(int(shape[frame_axis]), dtype=torch.float64)
    p = (v @ m.T)[:, src_axis].numpy()
    return p, abs(float(m[src_axis, frame_axis])) / 2.0, src_axis, float(m[src_axis, frame_axis]) > 0


def affine_evidence_slices(
    original_affine: torch.Tensor, affine: torch.Tensor, shape: Sequence[int], frame_axis: int,
    source_slices: Sequence[int],
) -> list[int]:
    """
    The indices along spatial axis ``frame_axis`` of a preprocessed volume of spatial ``shape`` that carry the
    largest share of one of the ``source_slices`` (indices along the source volume's axis that ``frame_axis`` runs
    along, as :func:`affine_source_indices` names it; all of them on a tie), ascending. Each preprocessed slice is
    taken as the average of the whole source slices its extent reaches, as area resizing (MONAI's ``Resize`` mode
    ``"area"``, the recipes') averages them: exact after orientation and an area resize (not after an interpolating
    resampling such as ``Spacing``), so that a slice downsampled from 31 to 24 slices, shared half and half between
    two preprocessed slices, is both (the nearest one alone, :func:`affine_source_indices`, counted the other, which
    shows the finding as much, as no evidence); a slice of the padding around a study carries none.
    """
    p, half, _, _ = source_coordinates(original_affine, affine, shape, frame_axis)
    # the whole source slices each preprocessed slice averages: [start, end) of its extent [p - half, p + half]
    start = np.floor(p - half + 0.5 + 1e-9).astype(int)
    end = np.ceil(p + half + 0.5 - 1e-9).astype(int)
    kept: set[int] = set()
    for i in sorted({int(i) for i in source_slices}):
        share = np.where((start <= i) & (i < end), 1.0 / np.maximum(end - start, 1), 0.0)
        if share.max() > 0:
            kept.update(int(j) for j in np.flatnonzero(share >= share.max() - 1e-9))
    return sorted(kept)


def affine_source_indices(
    original_affine: torch.Tensor, affine: torch.Tensor, shape: Sequence[int], source_shape: Sequence[int],
    frame_axis: int, outside: int | None = None,
) -> tuple[list[int], int]:
    """
    For each index along spatial axis ``frame_axis`` of a preprocessed volume of spatial ``shape`` (centre of the
    other two axes), the nearest slice index of the source volume (spatial ``source_shape``), found through the
    affines (world = affine · voxel; ``original_affine`` the source's, ``affine`` the preprocessed one's, as a
    MetaTensor keeps them through orientation, spacing and resizing); and the source axis it runs along.

    ``outside``: the index of a slice whose voxel lies wholly outside the source volume (beyond its first or last
    slice by at least its own thickness): give :data:`NO_SOURCE` (``-1``) where the volume may be padded (the zeros
    that ``resize="pad"`` adds around a study to fill the grid have no source slice; the nearest edge slice would be
    named as a slice the network saw); ``None`` (default): the nearest edge slice (a slice that resampling to a
    coarser ``pixdim`` extrapolated from the edge).
    """
    p, half, src_axis, ascending = source_coordinates(original_affine, affine, shape, frame_axis)
    # a frame half-way between two source slices (24 slices resized to 20) takes the one towards lower frame
    # indices, a rule of the network's (oriented) axis: the same slice whichever way the file stores its slices
    # (round() took the even index in the file's own order, so a file and its flipped copy named other slices)
    n = int(source_shape[src_axis])

    def nearest(x: float) -> int:
        if outside is not None and (x + half <= -0.5 + 1e-6 or x - half >= n - 0.5 - 1e-6):  # wholly outside
            return int(outside)
        low = math.floor(x)
        if abs(x - low - 0.5) < 1e-6:
            return int(np.clip(low if ascending else low + 1, 0, n - 1))
        return int(np.clip(round(x), 0, n - 1))

    return [nearest(float(x)) for x in p], src_axis


def uniform_indices(num_frames: int, num_samples: int) -> torch.Tensor:
    """
    ``k`` evenly spread frame indices of a ``T``-frame sequence: ``floor((j + 0.5)·T/k)`` for ``j = 0..k-1``
    (the centre of each of ``k`` equal segments; the same rule as ``monai_das.networks.UniformSampler``).
    For ``k > T`` frames repeat (nearest-neighbour temporal upsampling). Returns a ``k`` long tensor, non-decreasing.
    """
    t, k = int(num_frames), int(num_samples)
    if t < 1:
        raise ValueError(f"cannot resample a sequence with {t} frames.")
    if k < 1:
        raise ValueError(f"the number of frames to keep must be >= 1, got {k}.")
    return _uniform_indices(t, k)


def _check_sequence(img: torch.Tensor | np.ndarray, name: str) -> None:
    if img.ndim != 4:
        raise ValueError(f"{name} expects a T×C×H×W sequence (4 dimensions), got shape {tuple(img.shape)}.")
    if img.shape[0] == 0:
        raise ValueError(f"{name} got a sequence with zero frames (shape {tuple(img.shape)}).")


def resolved(img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """
    ``img`` with its pending lazy operations applied (MONAI's ``apply_pending``): a ``MetaTensor`` out of a lazy
    spatial transform called outside a ``Compose`` (which applies them before a transform that is not lazy) holds
    its data as it was, the resampling only pending. The transforms here that build a new ``MetaTensor`` dropped
    them: a lazy ``Flip`` before ``VolumeToFrames`` gave the frames unflipped (trial T63b). Anything else is returned
    as it is.
    """
    if isinstance(img, MetaTensor) and img.pending_operations:
        from monai.transforms.lazy.functional import apply_pending

        img = apply_pending(img)[0]
    return img


def select_frames(img: torch.Tensor | np.ndarray, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """
    ``img[indices]`` along the first (time) axis, as a tensor. For a ``MetaTensor`` the result's meta gets
    :data:`KEPT_INDICES` (``indices``) and :data:`SOURCE_INDICES` (``indices`` composed with the input's own source
    indices, so they point into the original sequence); the input's meta is not modified. Pending lazy operations
    are applied first (:func:`resolved`).
    """
    img = resolved(img)
    img_t = convert_to_tensor(img, track_meta=isinstance(img, MetaTensor))
    idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    if isinstance(img_t, MetaTensor):
        out = img_t.as_tensor()[idx.to(img_t.device)]
        return MetaTensor(out, meta=subsampled_meta(img_t.meta, img_t.shape[0], idx))
    return img_t[idx.to(img_t.device)]


def subsampled_meta(meta: Mapping, num_frames: int, indices: torch.Tensor) -> dict:
    """A copy of ``meta`` with :data:`KEPT_INDICES` = ``indices`` and :data:`SOURCE_INDICES` = the input's source
    indices (when they describe its ``num_frames`` frames) indexed by ``indices``, else ``indices``."""
    idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1).cpu()
    meta = dict(meta)
    prior = meta.get(SOURCE_INDICES)
    prior = torch.as_tensor(prior, dtype=torch.long).reshape(-1).cpu() if prior is not None else None
    meta[KEPT_INDICES] = idx.clone()
    meta[SOURCE_INDICES] = prior[idx] if prior is not None and prior.numel() == int(num_frames) else idx.clone()
    return meta


class FramePositions(list):
    """
    Evidence as :func:`~monai_das.transforms.map_evidence` gives it: positions among the network input's ``T`` frames,
    padded with ``-1`` to ``T`` (a plain ``list`` otherwise). The mark tells the dictionary subsamplings which
    evidence lists number the frames they subsample (renumbered to the kept ones) from those still in the file's
    numbering (left alone: :class:`~monai_das.transforms.MapEvidenced` maps a clip's later, through its meta).
    """


#: the per-frame records a dictionary subsampling keeps in step with the frames, by default: the file's slice/frame
#: numbers of :class:`~monai_das.transforms.SourceIndicesd` (selected), the evidence positions of
#: :class:`~monai_das.transforms.MapEvidenced` (renumbered)
FRAME_RECORD_KEYS = (SOURCE_INDICES,)
EVIDENCE_KEYS = ("evidence",)


def subsample_frame_records(data: dict, indices: torch.Tensor | Sequence[int], num_frames: int, name: str,
                            record_keys: Sequence[Hashable] = FRAME_RECORD_KEYS,
                            evidence_keys: Sequence[Hashable] = EVIDENCE_KEYS) -> None:
    """
    Keep an item's per-frame records in step with its frames after a subsampling of its ``num_frames`` frames to
    ``indices`` (``k``), in place: each ``record_keys`` entry present (``T`` values, one per frame, e.g. the file's
    slice numbers of :class:`~monai_das.transforms.SourceIndicesd`) is indexed by ``indices``; each ``evidence_keys``
    entry that :class:`~monai_das.transforms.MapEvidenced` mapped (a :class:`FramePositions`: ``T`` frame positions
    padded with ``-1``) is renumbered to positions among the kept frames (evidence frames not kept are dropped; a frame
    kept twice, ``k > T``, counts once), padded to ``k``; evidence still in the file's numbering (a plain list, e.g.
    a datalist's before ``MapEvidenced``) is left alone. Left as they were, both would number the ``T`` frames while
    the network numbers the ``k``: the reports' source frames and ``evidence_kept`` were silently wrong.

    Raises:
        ValueError: a record of another length than ``num_frames``, naming ``name``, the key and both lengths.
    """
    idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    for key in record_keys:
        if key in data and data[key] is not None:
            values = torch.as_tensor(data[key]).reshape(-1)
            if values.numel() != num_frames:
                raise ValueError(f"{name}: {key!r} holds {values.numel()} values for a sequence of {num_frames} "
                                 "frames; a per-frame record must have one per frame (give record_keys=() if it is "
                                 "not one).")
            data[key] = values[idx.to(values.device)]
    for key in evidence_keys:
        evidence = data.get(key)
        if not isinstance(evidence, FramePositions):
            continue
        if len(evidence) != num_frames:
            raise ValueError(f"{name}: {key!r} lists {len(evidence)} positions for a sequence of {num_frames} frames: "
                             "it was mapped on another sequence (MapEvidenced before a resize or a subsampling "
                             "of its own?).")
        wanted, seen = {int(i) for i in evidence if int(i) >= 0}, set()
        kept = []
        for j, i in enumerate(idx.tolist()):
            if i in wanted and i not in seen:
                seen.add(i)
                kept.append(j)
        data[key] = FramePositions(kept + [-1] * (len(idx) - len(kept)))


def volume_to_frames(img: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """``C×D×H×W`` → ``T×C×…`` with the frames taken along spatial ``axis`` (0=D: ``D×C×H×W``, 1=H: ``H×C×D×W``,
    2=W: ``W×C×D×H``); the remaining axes keep their order (``torch.movedim(img, axis + 1, 0)``)."""
    if img.ndim != 4:
        raise ValueError(f"expected a C×D×H×W volume (4 dimensions), got shape {tuple(img.shape)}.")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0 (D), 1 (H) or 2 (W), got {axis}.")
    return torch.movedim(img, axis + 1, 0)


class VolumeToFrames(InvertibleTransform):
    """
    Turn a channel-first volume into a frame sequence: ``C×D×H×W`` → ``T×C×H'×W'`` along spatial ``axis``
    (0=D, 1=H, 2=W; see :func:`volume_to_frames`). ``MetaTensor`` meta is kept, with ``slice_axis`` added.
    Invertible (a permutation): a ``MetaTensor`` keeps its ``applied_operations`` with this step pushed on them, so
    ``Compose.inverse`` (or :meth:`inverse`) gives back the volume and goes on through the spatial steps before it.
    The frames keep the volume's ``affine`` (no affine describes a ``T×C×H×W`` layout): invert before saving them
    with MONAI's ``SaveImage`` or applying spatial transforms.

    Args:
        axis: the spatial axis that becomes time.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, axis: int = 0) -> None:
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0 (D), 1 (H) or 2 (W), got {axis}.")
        self.axis = axis

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor:
        img = resolved(img)  # a lazy spatial step before it, called outside a Compose
        is_meta = isinstance(img, MetaTensor)
        img_t = convert_to_tensor(img, track_meta=is_meta)
        out = volume_to_frames(img_t.as_tensor() if is_meta else img_t, self.axis).contiguous()
        if is_meta:
            meta = dict(img_t.meta)
            meta["slice_axis"] = self.axis
            out = MetaTensor(out, meta=meta, applied_operations=list(img_t.applied_operations))
            self.push_transform(out, extra_info={"axis": self.axis})
        return out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """``T×C×…`` frames (this transform's ``MetaTensor`` output) → the ``C×D×H×W`` volume."""
        if data.ndim != 4:
            raise ValueError(f"{type(self).__name__}.inverse expects T×C×H×W frames (4 dimensions), got shape "
                             f"{tuple(data.shape)}.")
        if isinstance(data, MetaTensor) and not data.applied_operations and KEPT_INDICES in data.meta:
            raise ValueError(f"{type(self).__name__}.inverse: these frames were subsampled after it (meta "
                             f"'{KEPT_INDICES}': {len(data.meta[KEPT_INDICES])} frames kept), and a subsampling cannot "
                             "be undone (the frames it dropped are gone): invert the spatial steps before the "
                             "subsampling, on its input.")
        axis = int(self.pop_transform(data)[TraceKeys.EXTRA_INFO]["axis"])
        out = torch.movedim(data.as_tensor(), 0, axis + 1).contiguous()
        meta = {k: v for k, v in data.meta.items() if k != "slice_axis"}
        return MetaTensor(out, meta=meta, applied_operations=list(data.applied_operations))


class VolumeToFramesd(MapTransform, InvertibleTransform):
    """Dictionary form of :class:`VolumeToFrames` (invertible too)."""

    backend = VolumeToFrames.backend

    def __init__(self, keys: KeysCollection, axis: int = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = VolumeToFrames(axis)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter.inverse(d[key])
        return d


class UniformTemporalSubsample(Transform):
    """
    Keep ``num_samples`` evenly spread frames of a ``T×C×H×W`` sequence (:func:`uniform_indices`), the uniform
    baseline as a preprocessing step. ``k > T`` repeats frames (``T = 1`` is refused: mostly a ``C×D×H×W`` volume
    read as one frame). Kept indices are recorded in ``MetaTensor`` meta
    (:data:`KEPT_INDICES`, :data:`SOURCE_INDICES`).

    Args:
        num_samples: ``k``, frames kept.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, num_samples: int) -> None:
        self.num_samples = check_count(num_samples, "num_samples")  # 2.7 or True were truncated to 2 or 1

    def indices(self, num_frames: int) -> torch.Tensor:
        """The ``k`` indices kept from a ``num_frames``-frame sequence."""
        return uniform_indices(num_frames, self.num_samples)

    def check(self, img: torch.Tensor | np.ndarray, name: str | None = None) -> None:
        """Refuse what is not a ``T×C×H×W`` sequence, and one frame to be repeated: mostly a ``C×D×H×W`` volume."""
        name = name or type(self).__name__
        _check_sequence(img, name)
        if img.shape[0] == 1 < self.num_samples:  # a C×D×H×W volume (C = 1) gave k copies of itself (trial T63b)
            raise ValueError(
                f"{name}: a sequence of one frame (shape {tuple(img.shape)}) would be repeated {self.num_samples} "
                "times: is it a C×D×H×W volume (MONAI's channel-first layout)? Take its slices as frames first "
                "(VolumeToFrames(slice_axis)); a single frame k times is img.repeat(k, 1, 1, 1)."
            )

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor:
        self.check(img)
        return select_frames(img, self.indices(img.shape[0]))


class UniformTemporalSubsampled(MapTransform):
    """
    Dictionary form of :class:`UniformTemporalSubsample`. Besides the meta of ``MetaTensor`` values, the kept
    indices are stored as ``d[f"{key}_kept_indices"]`` (``k`` long tensor; batches to ``B×k``). The item's
    per-frame records follow the frames (:func:`subsample_frame_records`: ``record_keys``, default
    ``("source_indices",)``, indexed by the kept indices; ``evidence_keys``, default ``("evidence",)``, renumbered
    when :class:`~monai_das.transforms.MapEvidenced` mapped them); all keys must then have the same ``T``.
    """

    backend = UniformTemporalSubsample.backend

    def __init__(self, keys: KeysCollection, num_samples: int, allow_missing_keys: bool = False,
                 record_keys: Sequence[Hashable] = FRAME_RECORD_KEYS,
                 evidence_keys: Sequence[Hashable] = EVIDENCE_KEYS) -> None:
        super().__init__(keys, allow_missing_keys)
        self.subsampler = UniformTemporalSubsample(num_samples)
        self.record_keys, self.evidence_keys = tuple(record_keys), tuple(evidence_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        name = type(self).__name__
        chosen: dict[int, torch.Tensor] = {}
        for key in self.key_iterator(d):
            self.subsampler.check(d[key], name + f"[{key!r}]")
            t = int(d[key].shape[0])
            idx = chosen.setdefault(t, self.subsampler.indices(t))
            d[key] = select_frames(d[key], idx)
            d[f"{key}_{KEPT_INDICES}"] = idx
        if len(chosen) > 1 and any(k in d for k in self.record_keys + self.evidence_keys):
            raise ValueError(f"{name}: keys of {sorted(chosen)} frames; the item's per-frame records can follow one "
                             "sequence only (give record_keys=() and evidence_keys=() to leave them alone).")
        for t, idx in chosen.items():
            subsample_frame_records(d, idx, t, name, self.record_keys, self.evidence_keys)
        return d


class RandTemporalSubsample(Randomizable, Transform):
    """
    Keep ``num_samples`` random frames of a ``T×C×H×W`` sequence, in temporal order (augmentation and the random
    baseline). Needs ``k <= T``. Kept indices are recorded in ``MetaTensor`` meta (:data:`KEPT_INDICES`).

    Args:
        num_samples: ``k``, frames kept.
        mode: ``"random"``: ``k`` distinct frames drawn uniformly; ``"segment"``: the sequence is cut into ``k``
            equal segments and one random frame is drawn from each (TSN-style; keeps the temporal coverage).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, num_samples: int, mode: str = "random") -> None:
        if mode not in ("random", "segment"):
            raise ValueError(f"mode must be 'random' or 'segment', got {mode!r}.")
        self.num_samples, self.mode = check_count(num_samples, "num_samples"), mode
        self._indices: torch.Tensor | None = None

    def randomize(self, num_frames: int) -> None:
        t, k = int(num_frames), self.num_samples
        if k > t:
            raise ValueError(f"cannot keep {k} random frames of a sequence with T={t} frames (k must be <= T).")
        if self.mode == "random":
            idx = np.sort(self.R.choice(t, size=k, replace=False))
        else:
            edges = np.floor(np.arange(k + 1) * (t / k)).astype(np.int64)
            idx = np.array([self.R.randint(lo, max(hi, lo + 1)) for lo, hi in zip(edges[:-1], edges[1:])])
        self._indices = torch.as_tensor(idx, dtype=torch.long)

    @property
    def indices(self) -> torch.Tensor | None:
        """The frames of the last draw (``k`` long, ascending), ``None`` before the first."""
        return self._indices

    def __call__(self, img: torch.Tensor | np.ndarray, randomize: bool = True) -> torch.Tensor:
        _check_sequence(img, type(self).__name__)
        if randomize or self._indices is None:
            self.randomize(img.shape[0])
        elif int(self._indices.max()) >= img.shape[0]:  # an IndexError from inside torch before
            raise ValueError(f"{type(self).__name__}: randomize=False reuses frames {self._indices.tolist()} drawn "
                             f"for a longer sequence, but this one has {img.shape[0]} frames: randomize again.")
        return select_frames(img, self._indices)


class RandTemporalSubsampled(Randomizable, MapTransform):
    """
    Dictionary form of :class:`RandTemporalSubsample`: the same random indices for every key (all keys must have
    the same ``T``), stored as ``d[f"{key}_kept_indices"]``; the item's per-frame records follow the frames, as in
    :class:`UniformTemporalSubsampled`.
    """

    backend = RandTemporalSubsample.backend

    def __init__(
        self, keys: KeysCollection, num_samples: int, mode: str = "random", allow_missing_keys: bool = False,
        record_keys: Sequence[Hashable] = FRAME_RECORD_KEYS, evidence_keys: Sequence[Hashable] = EVIDENCE_KEYS,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.subsampler = RandTemporalSubsample(num_samples, mode)
        self.record_keys, self.evidence_keys = tuple(record_keys), tuple(evidence_keys)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.subsampler.set_random_state(seed, state)
        return self

    def randomize(self, num_frames: int) -> None:
        self.subsampler.randomize(num_frames)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        for key in keys:
            _check_sequence(d[key], type(self).__name__ + f"[{key!r}]")
        lengths = {int(d[key].shape[0]) for key in keys}
        if len(lengths) != 1:
            raise ValueError(f"all keys must have the same number of frames, got {lengths} for keys {keys}.")
        t = lengths.pop()
        self.randomize(t)
        for key in keys:
            d[key] = self.subsampler(d[key], randomize=False)
            d[f"{key}_{KEPT_INDICES}"] = self.subsampler.indices.clone()
        subsample_frame_records(d, self.subsampler.indices, t, type(self).__name__, self.record_keys,
                                self.evidence_keys)
        return d


VolumeToFramesD = VolumeToFramesDict = VolumeToFramesd
UniformTemporalSubsampleD = UniformTemporalSubsampleDict = UniformTemporalSubsampled
RandTemporalSubsampleD = RandTemporalSubsampleDict = RandTemporalSubsampled
