"""FrameRelevanceLoss: the sampler learns to rank its kept frames as the classifier rates them one by one."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from monai_das.losses import FrameRelevanceLoss
from monai_das.networks import build_classifier

CE = torch.nn.CrossEntropyLoss


def _net(method="das", **kw):
    torch.manual_seed(0)
    return build_classifier(method, num_classes=3, num_frames=10, keep_ratio=0.5, **kw)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 1, 10, 16, 16, generator=g), torch.tensor([0, 1, 2, 1])


def _grads(module):
    return {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()}


def test_weight_zero_is_the_base_loss_and_records_nothing():
    plain = torch.nn.Linear(3, 2)  # weight 0 accepts any network (no sampler needed)
    assert torch.equal(FrameRelevanceLoss(CE(), plain, weight=0.0)(torch.ones(1, 2), torch.tensor([1])),
                       CE()(torch.ones(1, 2), torch.tensor([1])))
    with pytest.raises(ValueError, match="no 'sampler' attribute"):
        FrameRelevanceLoss(CE(), plain, weight=1.0)
    net = _net()
    loss = FrameRelevanceLoss(CE(), net, weight=0.0)
    assert not net.record_relevance and not net.sampler.record_scores
    x, y = _batch()
    net.train()
    out = net(x)
    assert net.relevance is None
    assert torch.equal(loss(out, y), CE()(out, y))


@pytest.mark.parametrize("method", ["das", "dps"])
def test_relevance_trains_the_sampler_only(method):
    """Same forward, same encoder/classifier gradients as the base loss; the sampler gets the term's gradient."""
    x, y = _batch()
    grads = {}
    for weight in (0.0, 1.0):
        net = _net(method)
        loss = FrameRelevanceLoss(CE(), net, weight=weight)
        net.train()
        torch.manual_seed(5)
        out = net(x)
        value = loss(out, y)
        if weight:
            assert value > CE()(out, y)  # the term is a cross-entropy over k frames: > 0
        value.backward()
        grads[weight] = _grads(net)
    for name, g in grads[0.0].items():
        if name.startswith("sampler."):
            continue
        assert torch.allclose(g, grads[1.0][name], atol=1e-6), name
    sampler_grads = [g for n, g in grads[1.0].items() if n.startswith("sampler.") and g is not None]
    assert sampler_grads and any(g.abs().sum() > 0 for g in sampler_grads)


def test_value_is_the_listwise_cross_entropy():
    """Kept frame 1 supports the true class most: q peaks there; the term is CE(q, softmax(scores at kept frames))."""
    net = _net("dps")
    loss = FrameRelevanceLoss(CE(), net, weight=2.0, temperature=0.5)
    frame_logits = torch.tensor([[[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # B=1, k=3, 3 classes
    indices = torch.tensor([[2, 5, 7]])
    scores = torch.zeros(1, 10, requires_grad=True)
    net.train()
    net.relevance = (frame_logits, indices, scores)
    y = torch.tensor([0])
    logits = torch.zeros(1, 3)
    value = loss(logits, y)
    per_frame = -F.log_softmax(frame_logits, -1)[0, :, 0]
    q = F.softmax(-per_frame / 0.5, 0)
    expected = CE()(logits, y) + 2.0 * -(q * F.log_softmax(scores[0, [2, 5, 7]], 0)).sum()
    assert torch.allclose(value, expected)
    assert net.relevance is None  # consumed
    assert torch.equal(loss(logits, y), value)  # the same output again: the same value (the plain loss before; T63b)
    assert torch.equal(loss(logits.clone(), y), CE()(logits, y))  # another output: no record of its pass
    import copy

    assert copy.deepcopy(loss)._last is None  # copies leave the record (a step's graph) behind (review)
    value.backward()
    # gradient descent raises the score of the frame that supports the label (index 5), lowers the others
    assert scores.grad[0, 5] < 0 and scores.grad[0, 2] > 0 and scores.grad[0, 7] > 0
    assert torch.count_nonzero(scores.grad) == 3


def test_targets_as_column_or_probabilities():
    net = _net()
    loss = FrameRelevanceLoss(CE(), net)
    x, y = _batch()
    net.train()
    values = []
    # an integer one-hot (MONAI's FocalLoss takes one) was read as indices from its first column (trial W)
    for target in (y, y[:, None], F.one_hot(y, 3).float(), F.one_hot(y, 3)):
        torch.manual_seed(3)
        net(x)
        values.append(loss.relevance(target))
    assert torch.allclose(values[0], values[1]) and all(torch.allclose(values[0], v, atol=1e-6) for v in values[2:])


def test_column_labels_with_cross_entropy_are_named():
    """B×1 labels (MONAI-style) with CrossEntropyLoss: the shape and the fix, not torch's "multi-target" message."""
    net = _net()
    loss = FrameRelevanceLoss(CE(), net)
    x, y = _batch()
    net.train()
    with pytest.raises(ValueError, match=r"B class indices, got labels of shape \(4, 1\).*target\[:, 0\]"):
        loss(net(x), y[:, None])
    assert torch.isfinite(loss(net(x), y))


def test_eval_is_the_base_loss():
    net = _net()
    loss = FrameRelevanceLoss(CE(), net)
    x, y = _batch()
    net.eval()
    out = net(x)
    assert net.relevance is None
    assert torch.equal(loss(out, y), CE()(out, y))


def test_warmup_keeps_random_frames_but_teaches_the_scores():
    """In the encoder warm-up the kept frames are the same random draw with or without the term (the scores cost
    no random numbers), and the sampler learns from the term alone."""
    x, y = _batch()
    picked = []
    for weight in (0.0, 1.0):
        net = _net()
        loss = FrameRelevanceLoss(CE(), net, weight=weight)
        net.train()
        net.sampler.warming_up = True
        torch.manual_seed(9)
        out, idx = net.forward_with_indices(x)
        picked.append(idx)
        loss(out, y).backward()
        has_grad = any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.sampler.parameters())
        assert has_grad == bool(weight)
    assert torch.equal(picked[0], picked[1])


def test_samplers_without_scores_use_the_base_loss(caplog):
    net = _net("uniform")
    loss = FrameRelevanceLoss(CE(), torch.nn.DataParallel(net))  # wrappers are unwrapped
    x, y = _batch()
    net.train()
    out = net(x)
    with caplog.at_level(logging.INFO):
        assert torch.equal(loss(out, y), CE()(out, y))
        loss(net(x), y)
    assert sum("no frame scores were recorded" in r.message for r in caplog.records) == 1


def test_no_gradient_no_record():
    """Forward passes without gradient (precise BN, probes) leave nothing to pick up."""
    net = _net()
    FrameRelevanceLoss(CE(), net)
    x, _ = _batch()
    net.train()
    with torch.no_grad():
        net(x)
    assert net.relevance is None and net.sampler.scores is None


@pytest.mark.parametrize("kwargs, match", [({"weight": -1.0}, "weight must be >= 0"),
                                           ({"temperature": 0.0}, "temperature must be > 0")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FrameRelevanceLoss(CE(), _net(), **kwargs)


def test_sampler_gradient_none_needs_the_term():
    """``sampler_gradient="none"`` leaves the term as the sampler's only teacher: refused where it cannot teach."""
    with pytest.raises(ValueError, match="relevance weight is 0"):
        FrameRelevanceLoss(CE(), _net(sampler_gradient="none"), weight=0.0)
    with pytest.raises(ValueError, match="ADPSSampler has no frame scores"):
        FrameRelevanceLoss(CE(), _net("adps", sampler_gradient="none"), weight=1.0)
    FrameRelevanceLoss(CE(), _net("uniform", sampler_gradient="none"), weight=0.0)  # nothing to train: fine


def test_ignored_labels_are_left_out():
    net = _net()
    loss = FrameRelevanceLoss(CE(ignore_index=-100), net)
    x, y = _batch()
    net.train()
    net(x)
    frame_logits, indices, scores = net.relevance
    masked = loss.relevance(torch.tensor([0, -100, -100, -100]))
    net.relevance = (frame_logits[:1], indices[:1], scores[:1])
    first = loss.relevance(y[:1])
    assert torch.isfinite(masked) and torch.allclose(masked, first)


def test_records_do_not_outlive_their_pass():
    """A record is replaced by every forward pass (none without gradient), and consuming it frees the sampler's
    scores, so the network can be deep-copied (EMA/SWA copies) after a step."""
    import copy

    net = _net()
    loss = FrameRelevanceLoss(CE(), net)
    x, y = _batch()
    net.train()
    net(x)
    assert net.relevance is not None
    with torch.no_grad():
        net(x)
    assert net.relevance is None
    loss(net(x), y).backward()
    assert net.sampler.scores is None
    copy.deepcopy(net)
