"""
Plots for monai_das (matplotlib, ``Agg`` backend, written straight to image files):

- :func:`plot_kept_frames`: a montage of the frames/slices a sampler kept for a few inputs, titled with their indices;
- :func:`plot_sampling_matrix`: the sampling matrix ``P`` (k×T) as a heat map;
- :func:`plot_confusion_matrix`: a confusion matrix with counts;
- :func:`plot_kept_positions`: how often each frame position was kept, over all inputs and per class.

Every function returns the path it wrote; the parent folder is created if needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["plot_kept_frames", "plot_sampling_matrix", "plot_confusion_matrix", "plot_kept_positions"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _save(fig, filepath: str | os.PathLike) -> str:
    from monai_das.utils.io import atomic_file

    path = Path(filepath)
    try:
        with atomic_file(path) as tmp:  # same suffix: matplotlib picks the format from it
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return str(path)


def _shown(frame: np.ndarray) -> np.ndarray:
    """What :func:`_display` shows of a ``C×H×W`` frame: ``H×W×3`` (RGB) or ``H×W`` (the first channel)."""
    if frame.ndim != 3:
        raise ValueError(f"expected a C×H×W frame, got shape {frame.shape}.")
    return frame.transpose(1, 2, 0) if frame.shape[0] == 3 else frame[0]


def _display(frame: np.ndarray, window: tuple[float, float] | None = None) -> tuple[np.ndarray, str | None]:
    """``C×H×W`` → ``H×W`` (grey, first channel) or ``H×W×3`` (RGB) scaled to [0, 1] for ``imshow``: by ``window``
    ``(lo, hi)`` when given (one scale for several frames), else by the frame's own minimum and maximum."""
    img = _shown(frame)
    lo, hi = (float(img.min()), float(img.max())) if window is None else window
    img = np.clip(img, lo, hi)
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img, ("gray" if img.ndim == 2 else None)


def plot_kept_frames(
    frames: torch.Tensor | np.ndarray,
    indices: torch.Tensor | np.ndarray,
    filepath: str | os.PathLike,
    titles: Sequence[str] | None = None,
    max_frames: int = 16,
    num_frames: int | None = None,
    evidence: Sequence[Sequence[int] | None] | None = None,
) -> str:
    """
    Montage of kept frames: one row per input, one column per kept frame, each titled with its index; a row's
    frames share one grey scale (a near-empty slice looks dark beside the slice that shows the finding). With
    ``num_frames`` a first column shows the whole sequence as a strip of ``T`` cells, kept ones dark and dropped ones
    light, with the known evidence frames (``evidence``) marked in red, so what was dropped is visible too.

    Args:
        frames: ``B×k×C×H×W`` kept frames (``SamplerOutput.frames``).
        indices: ``B×k`` indices of the kept frames among the network's ``T`` input frames (after temporal
            resampling: a file's own frame numbers are the ``source_indices`` of the reports).
        filepath: PNG file to write.
        titles: optional row titles (e.g. ``"label 1 · pred 1 (0.93)"``), one per input; long lines are wrapped
            (and the rows made taller) so that they do not run into the next row.
        max_frames: show at most this many frames per row (evenly spread over the k kept ones).
        num_frames: ``T``, to draw the kept/dropped strip.
        evidence: per input, the indices of its known evidence frames (or ``None``), marked on the strip.
    """
    frames_np, idx = _np(frames), _np(indices).astype(int)
    if frames_np.ndim != 5 or idx.shape != frames_np.shape[:2]:
        raise ValueError(f"frames must be B×k×C×H×W and indices B×k; got {frames_np.shape} and {idx.shape}.")
    b, k = idx.shape
    cols = np.unique(np.linspace(0, k - 1, min(k, max_frames)).round().astype(int))
    strip = 1 if num_frames else 0
    plt = _pyplot()
    widths = ([2.5] if strip else []) + [1.0] * len(cols)
    if titles is not None:  # "label displaced rib fracture" at fontsize 7 ran into the next row (trial T59a)
        import textwrap

        titles = ["\n".join(textwrap.fill(line, 22) for line in str(t).splitlines()) for t in titles]
    lines = max((len(str(t).splitlines()) for t in titles), default=1) if titles is not None else 1
    row = max(1.5, 0.13 * lines + 0.6)  # the titles read across, left of the row
    fig, axes = plt.subplots(b, len(cols) + strip, figsize=(1.3 * (len(cols) + 2.5 * strip) + 0.6, row * b),
                             squeeze=False, gridspec_kw={"width_ratios": widths})
    for r in range(b):
        if strip:
            _kept_strip(axes[r, 0], idx[r], int(num_frames), evidence[r] if evidence is not None else None)
        row_pixels = [_shown(frames_np[r, j]) for j in cols]
        window = (min(float(p.min()) for p in row_pixels), max(float(p.max()) for p in row_pixels))
        for c, j in enumerate(cols):
            img, cmap = _display(frames_np[r, j], window)
            ax = axes[r, c + strip]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
            ax.set_title(f"#{idx[r, j]}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        if titles is not None:
            axes[r, 0].set_ylabel(str(titles[r]), fontsize=7, rotation=0, ha="right", va="center")
    note = "; strip: kept dark, dropped light, evidence red" if strip else ""
    subset = f", {len(cols)} of them shown, evenly spread" if len(cols) < k else ""
    fig.suptitle(f"kept frames ({k} per input{subset}; index among the network's {num_frames or 'T'} input frames, "
                 f"not the file's frame number{note}; one grey scale per row)", fontsize=9)
    return _save(fig, filepath)


def _kept_strip(ax, kept: np.ndarray, num_frames: int, evidence: Sequence[int] | None) -> None:
    """One row of ``num_frames`` cells: kept frames dark, dropped light; evidence frames marked with red ticks."""
    cells = np.full((1, num_frames), 0.15)
    cells[0, kept[(kept >= 0) & (kept < num_frames)]] = 0.85
    ax.imshow(cells, cmap="Greys", vmin=0, vmax=1, aspect="auto", extent=(-0.5, num_frames - 0.5, 0, 1))
    if evidence is not None and len(evidence):
        ev = [int(e) for e in evidence if 0 <= int(e) < num_frames]
        ax.scatter(ev, [1.15] * len(ev), marker="v", color="red", s=14, clip_on=False)
        hit = len(set(ev) & {int(i) for i in kept})
        ax.set_title(f"T={num_frames}, evidence kept {hit}/{len(ev)}", fontsize=7)
    else:
        ax.set_title(f"T={num_frames}", fontsize=7)
    ax.set_xticks([0, num_frames - 1])
    ax.tick_params(labelsize=6)
    ax.set_yticks([])


def plot_sampling_matrix(
    matrix: torch.Tensor | np.ndarray, filepath: str | os.PathLike, title: str = "sampling matrix P"
) -> str:
    """
    Heat map of a sampling matrix ``P``: rows are the k draws, columns the T frames.

    Args:
        matrix: ``k×T`` or ``B×k×T`` (then the first input is shown).
        filepath: PNG file to write.
        title: figure title.
    """
    p = _np(matrix)
    if p.ndim == 3:
        p = p[0]
    if p.ndim != 2:
        raise ValueError(f"matrix must be k×T or B×k×T, got shape {p.shape}.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.18 * p.shape[1] + 1.5), max(2.0, 0.18 * p.shape[0] + 1.2)))
    im = ax.imshow(p, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("frame / slice index t")
    ax.set_ylabel("draw j")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, filepath)


def plot_confusion_matrix(
    cm: np.ndarray | Sequence[Sequence[int]],
    filepath: str | os.PathLike,
    labels: Sequence[str] | None = None,
    title: str = "confusion matrix",
) -> str:
    """Confusion matrix (rows: true class, columns: predicted class) with the counts written in the cells."""
    m = np.asarray(cm)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {m.shape}.")
    n = m.shape[0]
    labels = [str(i) for i in range(n)] if labels is None else [str(x) for x in labels]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.8 * n))
    ax.imshow(m, cmap="Blues")
    thresh = m.max() / 2.0 if m.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > thresh else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return _save(fig, filepath)


def plot_kept_positions(
    kept_fraction: dict[str, Sequence[float]],
    filepath: str | os.PathLike,
    items: dict[str, int] | None = None,
    title: str = "kept positions",
) -> str:
    """
    Fraction of the inputs that kept each frame position, one curve per group (e.g. ``"all"`` and each class).

    Args:
        kept_fraction: group name → ``T`` fractions in ``[0, 1]``.
        filepath: PNG file to write.
        items: group name → number of inputs (shown in the legend).
        title: figure title.
    """
    if not kept_fraction:
        raise ValueError("kept_fraction is empty.")
    lengths = {len(v) for v in kept_fraction.values()}
    if len(lengths) != 1:
        raise ValueError(f"every group needs the same number of positions, got lengths {sorted(lengths)}.")
    t = lengths.pop()
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.16 * t + 2.0) + 1.6 * (len(kept_fraction) > 4), 3.2))
    groups = [n for n in kept_fraction if n != "all"]
    # a distinct colour per class up to 20 (the default cycle repeats after 10: an 11-class set had two blue curves)
    cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    colours = {n: cmap(i % cmap.N) for i, n in enumerate(groups)}
    for name, values in kept_fraction.items():
        label = f"{name} ({items[name]})" if items and name in items else name
        ax.plot(range(t), values, marker="o", markersize=3, lw=2.2 if name == "all" else 1.2,
                color="black" if name == "all" else colours[name], label=label)
    ax.set_xlabel("frame / slice index t")
    ax.set_ylabel("fraction of inputs that kept it")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(-0.5, t - 0.5)
    ax.grid(alpha=0.3)
    if len(kept_fraction) > 4:  # beside the axes, not over the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    else:
        ax.legend(fontsize=8, loc="best")
    ax.set_title(title, fontsize=9)
    return _save(fig, filepath)
