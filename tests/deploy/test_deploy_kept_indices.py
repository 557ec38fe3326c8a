"""The three ways ``kept_indices`` recovers the sampler's choice, and frame matching for traced exports."""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from monai_das.deploy.predictor import _match_frames, kept_indices
from monai_das.networks import build_classifier
from monai_das.networks.nets.sampler import SamplerOutput


def _match_frames_loop(kept, frames):
    """The greedy matching written out (earliest unused frame among equal nearest ones), as a reference."""
    b, k, t = kept.shape[0], kept.shape[1], frames.shape[1]
    dist = torch.cdist(kept.reshape(b, k, -1).double(), frames.reshape(b, t, -1).double(),
                       compute_mode="donot_use_mm_for_euclid_dist")
    rows = []
    for i in range(b):
        used, row = set(), []
        for j in range(k):
            best = int(torch.argmin(dist[i, j]))
            ties = [c for c in torch.nonzero(dist[i, j] <= dist[i, j, best] + 1e-9).flatten().tolist() if c not in used]
            pick = ties[0] if ties else best
            used.add(pick)
            row.append(pick)
        rows.append(sorted(row))
    return torch.tensor(rows, dtype=torch.long)


def test_match_frames_distinct():
    torch.manual_seed(0)
    frames = torch.rand(3, 10, 1, 4, 4)
    idx = torch.tensor([[7, 1, 4], [0, 9, 5], [2, 3, 8]])
    kept = torch.stack([frames[i, idx[i]] for i in range(3)])
    out = _match_frames(kept, frames)
    assert out.dtype == torch.long and out.tolist() == torch.sort(idx, dim=-1).values.tolist()
    assert torch.equal(out, _match_frames_loop(kept, frames))


def test_match_frames_identical_frames():
    torch.manual_seed(1)
    frames = torch.rand(2, 6, 1, 3, 3)
    frames[0, 1] = frames[0, 4] = frames[0, 5] = 0.0  # three identical frames in the first input only
    kept = torch.stack([frames[0, [4, 4, 2]], frames[1, [3, 0, 5]]])
    out = _match_frames(kept, frames)
    assert out.tolist() == [[1, 2, 4], [0, 3, 5]]  # the earliest unused copies: 1, then 4
    assert torch.equal(out, _match_frames_loop(kept, frames))
    # more copies kept than exist: the nearest one repeats, as in the loop
    kept = torch.stack([frames[0, [0, 0, 0]], frames[1, [0, 1, 2]]])
    assert torch.equal(_match_frames(kept, frames), _match_frames_loop(kept, frames))
    # which of identical frames the model took cannot be told from pixels: said for the report (frozen clips)
    notes = []
    kept = torch.stack([frames[0, [4, 4, 2]], frames[1, [3, 0, 5]]])
    _match_frames(kept, frames, notes)
    assert len(notes) == 1 and notes[0].startswith("2 of the 3 kept frames are identical to other frames")
    notes = []
    _match_frames(torch.stack([frames[0, [0, 2, 3]], frames[1, [3, 0, 5]]]), frames, notes)
    assert notes == []  # identical frames in the study, none of them kept: nothing to say


def test_match_frames_of_a_replayed_segment_of_video_frames():
    """A clip whose frames 25-27 replay frames 2-4: cdist's matrix-product distances put kept frame 2 at 2.7e-6 from
    itself and 0.0 from its copy, so the tie went unseen and both kept frames 2 and 25 were reported as 25 (a
    TorchScript model in the Deploy app / MONAI Label; trial T61b). Exact differences: distinct, earliest first."""
    frames = torch.full((1, 32, 1, 64, 64), 0.5)  # a grey clip with a bright square moving down
    for t in range(32):
        frames[0, t, :, 10 + t:20 + t, 10:20] = 0.9
    frames[0, 25:28] = frames[0, 2:5]  # the replayed segment
    kept_at = [2, 3, 4, 18, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]
    notes = []
    out = _match_frames(frames[:, kept_at], frames, notes)
    assert out.tolist() == [kept_at] and len(notes) == 1  # 2-4 and their copies 25-27: all distinct, ties said
    assert len(set(out[0].tolist())) == len(kept_at)


def test_traced_sampler_on_a_frozen_clip_says_its_indices_are_matched():
    """A traced export's sampler returns bare frames; on a study whose kept frames repeat others, kept_indices says
    so in ``notes`` (the Deploy report's warnings), where the ONNX/eager engines give the model's own indices."""
    frames = torch.rand(1, 6, 1, 3, 3)
    frames[0, 1] = frames[0, 3] = 0.5  # the sampler keeps 3 and 1, identical: matched as the earliest ones
    notes = []
    idx = kept_indices(_WithSampler(bare=True), frames, frames, notes)
    assert idx.tolist() == [[1, 3]] and len(notes) == 1 and "the model may have kept later ones" in notes[0]
    notes = []
    kept_indices(_WithSampler(bare=False), frames, frames, notes)  # indices returned: exact, nothing to say
    assert notes == []


def test_match_frames_shape_mismatch():
    assert _match_frames(torch.rand(1, 2, 1, 3, 3), torch.rand(1, 5, 1, 4, 4)) is None
    assert _match_frames(torch.rand(2, 2, 1, 3, 3), torch.rand(1, 5, 1, 3, 3)) is None


class _Sampler(nn.Module):
    """Keeps frames 3 and 1 (in that order); ``bare`` returns only the frames, as a traced sampler does."""

    def __init__(self, bare: bool = False, fail: bool = False):
        super().__init__()
        self.bare, self.fail = bare, fail

    def forward(self, frames):
        if self.fail:
            raise RuntimeError("boom")
        idx = torch.tensor([[3, 1]] * frames.shape[0])
        kept = torch.stack([frames[i, idx[i]] for i in range(frames.shape[0])])
        return kept if self.bare else SamplerOutput(kept, torch.zeros(frames.shape[0], 2, frames.shape[1]), idx)


class _WithSampler(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.sampler = _Sampler(**kw)


def test_kept_indices_order(caplog):
    torch.manual_seed(0)
    net = build_classifier("das", 2, num_frames=8, keep_ratio=0.5).eval()
    x = torch.rand(2, 1, 8, 8, 8)
    frames = net.to_frames(x)
    with torch.no_grad():
        expected = net.sample(x).indices
    assert torch.equal(kept_indices(net, x, frames), expected)  # 1. network.sample
    assert kept_indices(_WithSampler(), x, frames).tolist() == [[1, 3], [1, 3]]  # 2. network.sampler, sorted
    assert kept_indices(_WithSampler(bare=True), x, frames).tolist() == [[1, 3], [1, 3]]  # 3. matched frames
    assert kept_indices(nn.Identity(), x, frames) is None
    with caplog.at_level(logging.WARNING, logger="monai_das.deploy"):
        assert kept_indices(_WithSampler(fail=True), x, frames) is None
    assert "could not be called" in caplog.text
