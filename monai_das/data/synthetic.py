"""
Deterministic synthetic volumes and videos whose class evidence sits in a few slices/frames at known positions.

Each sequence of ``T`` frames (``H = W = size``):

- every frame: a smooth low-frequency background (a few random 2D sinusoids whose phases drift slowly over the
  sequence, so neighbouring frames are near-duplicates) plus Gaussian noise;
- ``num_informative`` frames at random positions: a small sharp-edged shape (random position, size and
  contrast) whose *kind* is the class — 0 disc, 1 square, 2 cross, 3 ring, 4 triangle (up to 5 classes);
- other frames, with probability ``distractor_prob``: a class-independent distractor. ``distractor="blob"``
  (default): a blurred Gaussian blob (weak edges), so "something bright" alone does not tell informative frames
  apart. ``distractor="texture"``: a bright patch of sharp 2-pixel stripes, whose brightness, variance, gradient and
  Laplacian energy exceed those of the informative frames (and whose inter-frame differences are as large around
  the evidence as elsewhere): **per-frame statistics mislead** (with ``distractor_prob`` 0.7 more than half of the frames are such decoys, so a sampler that keeps the
  busiest frames keeps no evidence at 50 %); only learning which frames help the classifier finds the evidence.

With blobs the shapes' sharp edges make Sobel / Laplacian energy and inter-frame variance single out informative
frames, while telling the classes apart needs the shape itself (learnable, not trivial). Item ``i`` of a dataset is drawn
from ``numpy.random.default_rng([seed, i])``: deterministic, independent of access order and workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from monai.data import Dataset

__all__ = [
    "SYNTHETIC_CLASS_NAMES",
    "DISTRACTORS",
    "SYNTHETIC_OPTIONS",
    "SPLIT_SEED_OFFSETS",
    "make_synthetic_sequence",
    "SyntheticVolumeDataset",
    "SyntheticVideoDataset",
]

SYNTHETIC_CLASS_NAMES = ("disc", "square", "cross", "ring", "triangle")
#: kinds of class-independent distractor frames (see :func:`make_synthetic_sequence`)
DISTRACTORS = ("blob", "texture")
#: options of :func:`make_synthetic_sequence` a bundle may set (``synthetic_options``)
SYNTHETIC_OPTIONS = ("num_informative", "noise", "contrast", "distractor_prob", "distractor")
#: seed offsets that give each split its own items (``get_dataset(..., seed)`` adds them)
SPLIT_SEED_OFFSETS = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def _shape_mask(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``size×size`` mask of one shape of ``kind`` with random centre and radius."""
    r = rng.uniform(0.12, 0.18) * size
    margin = r + 1.5
    cy, cx = rng.uniform(margin, size - 1 - margin, size=2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    if kind == 0:  # disc
        return dy**2 + dx**2 <= r**2
    if kind == 1:  # square
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if kind == 2:  # cross
        w = max(r * 0.3, 1.0)
        return ((np.abs(dy) <= w) & (np.abs(dx) <= r)) | ((np.abs(dx) <= w) & (np.abs(dy) <= r))
    if kind == 3:  # ring
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    # triangle (apex up)
    return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.55)


def make_synthetic_sequence(
    rng: np.random.Generator,
    label: int,
    num_frames: int = 28,
    size: int = 28,
    num_informative: int = 4,
    channels: int = 1,
    noise: float = 0.04,
    contrast: tuple[float, float] = (0.25, 0.4),
    distractor_prob: float = 0.3,
    distractor: str = "blob",
) -> tuple[np.ndarray, np.ndarray]:
    """
    One sequence: float32 ``T×C×H×W`` in ``[0, 1]`` and the sorted int64 indices of its informative frames.

    Args:
        rng: the random generator (the only source of randomness).
        label: the class, ``0 <= label < len(SYNTHETIC_CLASS_NAMES)``.
        num_frames: ``T``. size: ``H = W``. num_informative: frames with class evidence (``<= T``).
        channels: ``C`` (channels get the same content with small per-channel gains).
        noise: std of the Gaussian noise. contrast: range of the shape's added intensity.
        distractor_prob: chance that an uninformative frame holds a class-independent distractor.
        distractor: ``"blob"`` (blurred, weak edges) or ``"texture"`` (sharp stripes that outshine the
            evidence in every frame statistic, see the module docstring).
    """
    if distractor not in DISTRACTORS:
        raise ValueError(f"distractor must be one of {DISTRACTORS}, got {distractor!r}.")
    if not 0.0 <= float(distractor_prob) <= 1.0:
        raise ValueError(f"distractor_prob must be in [0, 1], got {distractor_prob}.")
    if not 0 <= int(label) < len(SYNTHETIC_CLASS_NAMES):
        raise ValueError(f"label must be in 0..{len(SYNTHETIC_CLASS_NAMES) - 1}, got {label}.")
    if not 1 <= int(num_informative) <= int(num_frames):
        raise ValueError(f"num_informative must be in 1..num_frames={num_frames}, got {num_informative}.")
    t, s = int(num_frames), int(size)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    tt = np.linspace(0.0, 1.0, t, dtype=np.float32)[:, None, None]
    bg = np.full((t, s, s), rng.uniform(0.3, 0.45), dtype=np.float32)
    for _ in range(3):
        fy, fx = rng.uniform(0.3, 1.5, size=2)
        phase, drift, amp = rng.uniform(0, 2 * np.pi), rng.uniform(-1.0, 1.0), rng.uniform(0.03, 0.08)
        bg += amp * np.sin(2 * np.pi * (fy * yy + fx * xx)[None] + phase + drift * np.pi * tt)
    informative = np.sort(rng.choice(t, size=int(num_informative), replace=False)).astype(np.int64)
    for i in informative:
        bg[i] += rng.uniform(*contrast) * _shape_mask(int(label), s, rng)
    for i in np.setdiff1d(np.arange(t), informative):
        if rng.random() < distractor_prob:
            cy, cx = rng.uniform(0.25, 0.75, size=2)
            if distractor == "texture":  # a bright patch of 2-pixel stripes: busier than any shape, at both scales
                side = max(4, (s // 3) // 2 * 2)
                stripes = ((np.arange(side) // 2) % 2).astype(np.float32)
                stripes = np.tile(stripes[None], (side, 1)) if rng.random() < 0.5 else np.tile(stripes[:, None], (1, side))
                y0, x0 = 2 * int(cy * (s - side) / 2), 2 * int(cx * (s - side) / 2)  # even: 2×2 pooling keeps them
                bg[i, y0:y0 + side, x0:x0 + side] += 0.2 + rng.uniform(0.45, 0.6) * stripes
            else:
                sigma = rng.uniform(0.06, 0.1)
                bg[i] += rng.uniform(0.1, 0.2) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    gains = 1.0 + rng.uniform(-0.05, 0.05, size=(1, channels, 1, 1)).astype(np.float32)
    seq = bg[:, None] * gains + rng.normal(0.0, noise, size=(t, channels, s, s)).astype(np.float32)
    return np.clip(seq, 0.0, 1.0).astype(np.float32), informative


class _SyntheticItems(Sequence):
    """Lazily generated items (holds no reference to the dataset: MONAI's ``set_rnd`` walks attributes)."""

    def __init__(self, labels: np.ndarray, seed: int, layout: str, params: dict, slice_axis: int = 0) -> None:
        self.labels, self.seed, self.layout, self.params, self.slice_axis = labels, seed, layout, params, slice_axis

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items.")
        index = int(i) % len(self)
        rng = np.random.default_rng([self.seed, index])
        seq, informative = make_synthetic_sequence(rng, int(self.labels[index]), **self.params)
        if self.layout == "volume":
            # T×1×H×W → 1×D×H×W, the frames as the slices along slice_axis (D = H = W)
            seq = np.ascontiguousarray(np.moveaxis(seq.transpose(1, 0, 2, 3), 1, 1 + self.slice_axis))
        return {"image": seq, "label": self.labels[index], "informative": informative}


class _SyntheticBase(Dataset):
    layout = "volume"

    def __init__(
        self,
        num_samples: int,
        num_classes: int,
        size: int,
        num_frames: int | None,
        num_informative: int,
        channels: int,
        seed: int,
        transform: Callable | Sequence[Callable] | None,
        slice_axis: int = 0,
        **kwargs,
    ) -> None:
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        if not 2 <= int(num_classes) <= len(SYNTHETIC_CLASS_NAMES):
            raise ValueError(f"num_classes must be in 2..{len(SYNTHETIC_CLASS_NAMES)}, got {num_classes}.")
        if int(size) < 8:
            raise ValueError(f"size must be >= 8, got {size}.")
        self.num_samples, self.num_classes, self.size = int(num_samples), int(num_classes), int(size)
        self.num_frames = int(num_frames) if num_frames is not None else self.size
        self.num_informative, self.in_channels, self.seed = int(num_informative), int(channels), int(seed)
        if not 1 <= self.num_informative <= self.num_frames:
            raise ValueError(f"num_informative must be in 1..{self.num_frames}, got {num_informative}.")
        self.label_names = list(SYNTHETIC_CLASS_NAMES[: self.num_classes])
        self.task = "binary-class" if self.num_classes == 2 else "multi-class"
        # balanced labels in a seeded order
        self.labels = np.random.default_rng([self.seed, 2**31 - 1]).permutation(
            np.arange(self.num_samples) % self.num_classes
        ).astype(np.int64)
        params = dict(num_frames=self.num_frames, size=self.size, num_informative=self.num_informative,
                      channels=self.in_channels, **kwargs)
        if self.layout == "volume" and slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}.")
        self.slice_axis = int(slice_axis)
        super().__init__(_SyntheticItems(self.labels, self.seed, self.layout, params, self.slice_axis), transform)


class SyntheticVolumeDataset(_SyntheticBase):
    """
    Synthetic volumes; items ``{"image": float32 1×D×H×W in [0, 1], "label": int64, "informative": int64 array
    of the informative slice indices along ``slice_axis``}`` (``D = H = W = size``).

    Args:
        num_samples: items. num_classes: 2..5 (disc, square, cross, ring, triangle). size: 28 or 64 (any >= 8).
        num_informative: informative slices per volume. seed: base seed (item ``i`` uses ``[seed, i]``).
        transform: MONAI transform(s) on each item dict.
        slice_axis: the spatial axis (0 = D, 1 = H, 2 = W) whose slices hold the class evidence, as a network that
            takes its frames along that axis sees them (the same volumes for every axis, turned).
        kwargs: ``noise``, ``contrast``, ``distractor_prob``, ``distractor`` of :func:`make_synthetic_sequence`.
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int = 2,
        size: int = 28,
        num_informative: int = 4,
        seed: int = 0,
        transform: Callable | Sequence[Callable] | None = None,
        slice_axis: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(num_samples, num_classes, size, None, num_informative, 1, seed, transform, slice_axis,
                         **kwargs)


class SyntheticVideoDataset(_SyntheticBase):
    """
    Synthetic videos; items ``{"image": float32 T×C×H×W in [0, 1], "label": int64, "informative": int64 array of
    the informative frame indices}``.

    Args:
        num_samples: items. num_classes: 2..5. size: ``H = W``. num_frames: ``T`` (default ``size``).
        num_informative: informative frames per video. in_channels: ``C``. seed, transform, kwargs: as
        :class:`SyntheticVolumeDataset`.
    """

    layout = "video"

    def __init__(
        self,
        num_samples: int,
        num_classes: int = 2,
        size: int = 28,
        num_frames: int | None = None,
        num_informative: int = 4,
        in_channels: int = 1,
        seed: int = 0,
        transform: Callable | Sequence[Callable] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(
            num_samples, num_classes, size, num_frames, num_informative, in_channels, seed, transform, **kwargs
        )
