"""monai_das.visualize writes PNG files and checks shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_das.visualize import plot_confusion_matrix, plot_kept_frames, plot_sampling_matrix


def test_plots(tmp_path):
    frames = torch.rand(2, 5, 1, 8, 8)
    idx = torch.tensor([[0, 2, 3, 5, 7], [1, 2, 4, 6, 9]])
    for p in (
        plot_kept_frames(frames, idx, tmp_path / "a" / "kept.png", titles=["x", "y"], max_frames=3),
        plot_kept_frames(torch.rand(1, 2, 3, 8, 8), torch.tensor([[0, 1]]), tmp_path / "rgb.png"),
        plot_sampling_matrix(torch.eye(10)[idx], tmp_path / "p.png"),
        plot_confusion_matrix(np.array([[3, 1], [0, 2]]), tmp_path / "cm.png", ["n", "p"]),
    ):
        assert open(p, "rb").read(4) == b"\x89PNG"


def test_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="B×k×C×H×W"):
        plot_kept_frames(torch.rand(5, 1, 8, 8), torch.arange(5), tmp_path / "x.png")
    with pytest.raises(ValueError, match="k×T"):
        plot_sampling_matrix(torch.rand(3), tmp_path / "x.png")
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.zeros((2, 3)), tmp_path / "x.png")


def test_kept_frames_share_a_row_scale_and_long_titles_fit(tmp_path):
    """Each slice was stretched to its own range, so a near-empty slice looked as busy as the evidence, and long class
    names ran into the next row (trial T59a): a row shares one scale; wrapped titles make taller rows."""
    from PIL import Image

    from monai_das.visualize import _display

    dim = np.full((1, 4, 4), 0.1)
    dim[0, 0, 0] = 0.0
    assert _display(dim)[0].max() == 1.0  # alone, stretched to full white
    assert _display(dim, (0.0, 1.0))[0].max() == pytest.approx(0.1)  # on the row's scale: as dim as it is
    frames, idx = torch.rand(2, 4, 1, 8, 8), torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])
    short = plot_kept_frames(frames, idx, tmp_path / "short.png", titles=["a", "b"])
    title = ("item 0\nlabel displaced rib fracture of the left side, healed\npred buckle rib fracture (0.51)\n"
             "p 0.51 0.30 0.19")
    long = plot_kept_frames(frames, idx, tmp_path / "long.png", titles=[title, title])
    assert Image.open(long).size[1] > Image.open(short).size[1]
