"""BalancedAccuracy against scikit-learn, with tensors and with decollated lists; the epoch loss with class weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from sklearn.metrics import balanced_accuracy_score

from monai_das.handlers import BalancedAccuracy, EpochLoss, PresentClassesROCAUC, balanced_accuracy_from_confusion


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


def test_one_hot_labels_give_the_same_metrics_as_class_indices():
    """MONAI's usual classification labels, ``AsDiscreted(to_onehot=C)``: the balanced accuracy and the epoch loss
    read them as class indices (element 0 of a one-hot vector was taken as the class: the labels inverted, 0.25
    instead of 0.75); a label of another length is refused, naming it."""
    from monai.transforms import AsDiscrete

    from monai_das.handlers import label_indices

    pred = [torch.tensor([0.9, 0.1]), torch.tensor([0.8, 0.2]), torch.tensor([0.3, 0.7]), torch.tensor([0.6, 0.4])]
    index = [torch.tensor(i) for i in (0, 0, 1, 1)]
    one_hot = [AsDiscrete(to_onehot=2)(t[None]) for t in index]
    results = []
    for labels in (index, one_hot, torch.stack(one_hot), torch.stack(index)):
        acc, loss = BalancedAccuracy(2), EpochLoss(torch.nn.CrossEntropyLoss())
        acc.reset(), loss.reset()
        acc.update((pred, labels)), loss.update((pred, labels))
        results.append((acc.compute(), loss.compute()))
    assert results[0][0] == pytest.approx(0.75)
    assert all(r == pytest.approx(results[0]) for r in results)
    assert label_indices(torch.tensor([[0.0, 0.0, 1.0]]), 3).tolist() == [2]
    assert label_indices([torch.tensor([False, True])], 2).tolist() == [1]  # bool one-hot (argmax refused bool)
    for soft in ([1.0, 1.0, 0.0], [0.1, 0.45, 0.45]):  # multi-hot, soft: no class (taken as 0 and 1, silently)
        with pytest.raises(ValueError, match=r"is not one-hot"):
            label_indices([torch.tensor(soft)], 3)
    with pytest.raises(ValueError, match="a label of 3 values: give a class index or a one-hot vector of 2 values"):
        BalancedAccuracy(2).update((pred[:1], [torch.tensor([0.0, 1.0, 0.0])]))


@pytest.mark.parametrize("bundle", ["das_volume_classification", "das_video_classification"])
def test_validation_loss_is_class_weighted_over_the_epoch_and_test_loss_is_not(bundle):
    """The bundles' val_loss (early stopping, best model) with --class_weights: the weighted mean over all items, as
    training weighs a batch. MONAI's IgniteMetricHandler(loss_fn) took each decollated item alone, where a weighted
    mean over one item cancels its weight: the unweighted loss whatever the weights (trial N). The test loss is the
    unweighted cross-entropy (log loss) of the predictions: weighted by the --class_weights given at evaluation, the
    same model on the same items had another test loss with and without the option (trial X)."""
    from pathlib import Path

    from monai.bundle import ConfigParser
    from monai.handlers import from_engine

    configs = Path(__file__).resolve().parents[2] / "bundles" / bundle / "configs"
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(11, 2, generator=g), torch.tensor([0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0])
    weighted = float(torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor([1.0, 4.0])))
    assert abs(weighted - float(torch.nn.functional.cross_entropy(logits, labels))) > 0.05  # the weights matter here
    for files, key in (([configs / "train.json"], "validate#additional_metrics#val_loss"),
                       ([configs / "train.json", configs / "evaluate.json"], "validate#additional_metrics#test_loss")):
        parser = ConfigParser()
        parser.read_config([str(f) for f in files])
        parser.update({"class_weights": [1.0, 4.0], "num_train": 4, "num_val": 4, "num_test": 4, "device": "$'cpu'"})
        parser.get_parsed_content("network").eval()
        metric = parser.get_parsed_content(key)
        assert isinstance(metric, EpochLoss)
        engine = Engine(lambda e, b: [{"pred": p, "label": t.reshape(1)} for p, t in zip(*b)])  # MONAI's decollated
        metric.attach(engine, "loss")
        state = engine.run([(logits[:5], labels[:5]), (logits[5:], labels[5:])], max_epochs=1)
        want = weighted if key.endswith("val_loss") else float(torch.nn.functional.cross_entropy(logits, labels))
        assert state.metrics["loss"] == pytest.approx(want, rel=1e-6), key


def test_epoch_loss_gathers_ranks_of_different_sizes(monkeypatch):
    """Under torchrun the validation sampler splits without padding (5 items: 3 and 2): the loss is over all ranks'
    items; a fixed-size all_gather (ignite's EpochMetric) aborted there (review H3)."""
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(5, 2, generator=g), torch.tensor([0, 1, 1, 0, 1])
    loss = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0]))
    other = [(logits[i:i + 1], labels[i:i + 1]) for i in (3, 4)]  # what the other rank holds: 2 items
    import monai_das.handlers.utils as utils

    monkeypatch.setattr(utils, "rank_world", lambda: (0, 2))
    monkeypatch.setattr(torch.distributed, "all_gather_object", lambda parts, obj: parts.__setitem__(slice(None),
                                                                                                    [obj, other]))
    engine = Engine(lambda e, b: [{"pred": p, "label": t} for p, t in zip(*b)])
    EpochLoss(loss, lambda out: ([o["pred"] for o in out], [o["label"] for o in out])).attach(engine, "loss")
    state = engine.run([(logits[:3], labels[:3])], max_epochs=1)  # this rank: 3 items
    assert state.metrics["loss"] == pytest.approx(float(loss(logits, labels)))


def _epoch_auc(handler, probs, labels):
    engine = Engine(lambda e, b: b)  # two batches, as a validation epoch gives them
    handler.attach(engine, "auc")
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1])
    return engine.run([(probs[:7], onehot[:7]), (probs[7:], onehot[7:])], max_epochs=1).metrics["auc"]


def test_validation_auc_averages_the_classes_present():
    """A class without validation items made the bundles' key metric (MONAI's macro ROCAUC) NaN in every epoch, so the
    best model was the first epoch's (trial T61a); PresentClassesROCAUC leaves that class out of the mean and equals
    ROCAUC (and scikit-learn) otherwise."""
    from monai.handlers import ROCAUC
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(20, 4, generator=g), 1)
    labels = torch.arange(20) % 4
    assert _epoch_auc(PresentClassesROCAUC(), probs, labels) == pytest.approx(
        _epoch_auc(ROCAUC(), probs, labels)) == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"))
    assert _epoch_auc(PresentClassesROCAUC(average="weighted"), probs, labels) == pytest.approx(
        _epoch_auc(ROCAUC(average="weighted"), probs, labels))  # MONAI's other averages as they are
    with pytest.raises(ValueError, match="gives one number"):
        PresentClassesROCAUC(average="none")
    three = torch.where(labels == 2, 0, labels)  # no item of class 2
    with pytest.warns(UserWarning):
        assert math.isnan(_epoch_auc(ROCAUC(), probs, three))
    expected = np.mean([roc_auc_score(three == c, probs[:, c]) for c in (0, 1, 3)])
    assert _epoch_auc(PresentClassesROCAUC(), probs, three) == pytest.approx(expected)
    # two classes, one missing: no AUC to give, as before; binary with both present: the usual AUC
    with pytest.warns(UserWarning):
        assert math.isnan(_epoch_auc(PresentClassesROCAUC(), probs[:, :2], torch.zeros(20, dtype=torch.long)))
    binary, two = torch.arange(20) % 2, probs[:, :2] / probs[:, :2].sum(1, keepdim=True)
    assert _epoch_auc(PresentClassesROCAUC(), two, binary) == pytest.approx(roc_auc_score(binary, two[:, 1]))


def test_from_confusion():
    cm = torch.tensor([[8, 2], [1, 1]])
    assert balanced_accuracy_from_confusion(cm) == pytest.approx((0.8 + 0.5) / 2)
    # an absent class is left out (as scikit-learn does)
    assert balanced_accuracy_from_confusion(np.array([[3, 1, 0], [0, 0, 0], [0, 1, 1]])) == pytest.approx(0.625)
    assert math.isnan(balanced_accuracy_from_confusion(torch.zeros(2, 2)))


def test_weighted_auc_with_unit_weights_is_the_usual_auc():
    from sklearn.metrics import roc_auc_score

    from monai_das.handlers.metrics import _weighted_auc

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 50) / 5.0  # many ties
    positive = rng.random(50) < 0.4
    counts = rng.integers(0, 3, 50).astype(float)  # bootstrap-like counts: an item drawn c times weighs c
    got = _weighted_auc(scores, positive, np.stack([np.ones(50), counts]))
    assert got[0] == pytest.approx(roc_auc_score(positive, scores))
    assert got[1] == pytest.approx(roc_auc_score(np.repeat(positive, counts.astype(int)),
                                                 np.repeat(scores, counts.astype(int))))
    assert math.isnan(_weighted_auc(scores, np.zeros(50, bool), np.ones((1, 50)))[0])


def test_bootstrap_intervals_cover_the_value_and_narrow_with_more_items():
    from sklearn.metrics import roc_auc_score

    from monai_das.handlers import bootstrap_intervals

    rng = np.random.default_rng(1)
    widths = []
    for n in (40, 400):
        labels = rng.integers(0, 3, n)
        logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[labels]
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        iv = bootstrap_intervals(probs, labels, resamples=500, seed=3)
        auc = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
        bacc = balanced_accuracy_score(labels, probs.argmax(1))
        assert iv["auc"][0] < auc < iv["auc"][1] and iv["balanced_accuracy"][0] < bacc < iv["balanced_accuracy"][1]
        assert iv == bootstrap_intervals(probs, labels, resamples=500, seed=3)  # seeded: the same interval
        widths.append(iv["auc"][1] - iv["auc"][0])
    assert widths[1] < widths[0] / 2  # ~1/sqrt(n): 10x the items, about a third of the width


def test_bootstrap_intervals_without_a_class_and_bad_shapes():
    from monai_das.handlers import bootstrap_intervals

    iv = bootstrap_intervals(np.array([[0.2, 0.8, 0.0], [0.7, 0.3, 0.0]]), np.array([1, 0]), resamples=50)
    assert iv["auc"] is None and iv["resamples_used"] == 0  # class 2 has no item: ROCAUC is undefined too
    with pytest.raises(ValueError, match=r"n×C and labels n.*\(3, 2\) and \(2,\)"):
        bootstrap_intervals(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        bootstrap_intervals(np.zeros((2, 2)), np.array([0, 2]))


def test_few_items_named_names_every_rare_class():
    """The warning named the rarest class only ('normal'), though 'nodule' and 'mass' were as rare (trial X)."""
    from monai_das.handlers.metrics import few_items_named

    names = ["normal", "nodule", "mass"]
    assert few_items_named([2, 2, 2], names) == "2 item(s) of class 'mass', 2 of class 'nodule' and 2 of class 'normal'"
    assert few_items_named([9, 3, 2], names) == "2 item(s) of class 'mass' and 3 of class 'nodule'"
    assert few_items_named([9, 7, 1], names) == "1 item(s) of class 'mass'"
    assert few_items_named([9, 9, 9], names) == ""  # none below the minimum (it raised IndexError; review H5)
