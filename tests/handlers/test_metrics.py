"""BalancedAccuracy against scikit-learn, with tensors and with decollated lists."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from sklearn.metrics import balanced_accuracy_score

from monai_das.handlers import BalancedAccuracy, balanced_accuracy_from_confusion


@pytest.mark.parametrize("num_classes", [2, 3])
def test_matches_sklearn_on_decollated_outputs(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    logits = torch.randn(37, num_classes, generator=g)
    labels = torch.randint(0, num_classes, (37,), generator=g)
    batches = [(logits[i:i + 8], labels[i:i + 8]) for i in range(0, 37, 8)]
    # MONAI engines give decollated lists: one dict per item
    engine = Engine(lambda e, b: [{"pred": p, "label": t} for p, t in zip(*b)])
    metric = BalancedAccuracy(num_classes, output_transform=lambda out: ([o["pred"] for o in out],
                                                                         [o["label"] for o in out]))
    metric.attach(engine, "bal_acc")
    state = engine.run(batches, max_epochs=1)
    expected = balanced_accuracy_score(labels.numpy(), logits.argmax(1).numpy())
    assert state.metrics["bal_acc"] == pytest.approx(expected)


def test_from_confusion():
    cm = torch.tensor([[8, 2], [1, 1]])
    assert balanced_accuracy_from_confusion(cm) == pytest.approx((0.8 + 0.5) / 2)
    # an absent class is left out (as scikit-learn does)
    assert balanced_accuracy_from_confusion(np.array([[3, 1, 0], [0, 0, 0], [0, 1, 1]])) == pytest.approx(0.625)
    assert math.isnan(balanced_accuracy_from_confusion(torch.zeros(2, 2)))
