"""Temporal heads: pooling of the kept frames' embeddings (``monai_das.networks.blocks.TemporalHead``)."""

import pytest
import torch

from monai_das.networks import TemporalHead


@pytest.mark.parametrize("mode", ["attention", "gated"])
def test_learned_heads_weigh_frames_and_ignore_their_order(mode):
    torch.manual_seed(0)
    head = TemporalHead(6, mode)
    z = torch.randn(3, 5, 6)
    w = head.weights(z)
    assert w.shape == (3, 5, 1) and torch.allclose(w.sum(1), torch.ones(3, 1))
    assert (w.std(1) > 0).all()  # distinct frames get distinct weights
    perm = torch.randperm(5)
    torch.testing.assert_close(head(z[:, perm]), head(z))  # a bag of frames: order does not matter
    torch.testing.assert_close(head(z), (w * z).sum(1))


def test_mean_and_max_have_no_weights():
    z = torch.randn(2, 4, 3)
    assert TemporalHead(3, "mean").weights(z) is None and TemporalHead(3, "max").weights(z) is None
    torch.testing.assert_close(TemporalHead(3, "mean")(z), z.mean(1))
    torch.testing.assert_close(TemporalHead(3, "max")(z), z.amax(1))


def test_gated_head_learns_which_instance_matters():
    """Multiple-instance toy: a bag is positive when one of its 8 frames carries a marker; the gated head learns to
    put its weight on that frame (mean pooling dilutes it 8×)."""
    torch.manual_seed(0)
    head, clf = TemporalHead(4, "gated", hidden_features=16), torch.nn.Linear(4, 2)
    opt = torch.optim.Adam([*head.parameters(), *clf.parameters()], lr=1e-2)

    def bags(n):
        z, y = torch.randn(n, 8, 4) * 0.5, torch.randint(0, 2, (n,))
        where = torch.randint(0, 8, (n,))
        z[torch.arange(n), where, 0] += 3.0 * y  # the marker, in one frame of the positive bags
        return z, y, where

    for _ in range(150):
        z, y, _ = bags(64)
        loss = torch.nn.functional.cross_entropy(clf(head(z)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    z, y, where = bags(256)
    with torch.no_grad():
        w = head.weights(z)[..., 0]
        acc = (clf(head(z)).argmax(1) == y).float().mean()
    pos = y == 1
    assert acc > 0.9
    assert w[pos, where[pos]].mean() > 0.5  # the marked frame holds most of the weight (uniform: 1/8)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_gated_head_refuses_a_bad_width(bad):
    with pytest.raises(ValueError, match="hidden_features"):
        TemporalHead(4, "gated", hidden_features=bad)


def test_unknown_head_is_refused():
    with pytest.raises(ValueError, match="temporal_head must be one of"):
        TemporalHead(4, "lstm")
