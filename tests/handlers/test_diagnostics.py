"""SelectionDiagnosticsHandler on a real SupervisedEvaluator: evidence kept, entropy, adaptivity, churn, and the
constant-prediction guard that keeps such an epoch out of the best checkpoint."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd

from monai_das.handlers import AtomicCheckpointSaver, SamplerWarmupHandler, SelectionDiagnosticsHandler, jaccard_distance
from monai_das.networks import build_classifier


def _data(n=6, t=8):
    g = torch.Generator().manual_seed(0)
    # evidence: two bright slices per item at item-dependent positions (the uniform sampler keeps 1, 3, 5, 7)
    items = []
    for i in range(n):
        image = torch.rand(1, t, 12, 12, generator=g) * 0.1
        ev = torch.tensor([i % t, (i + 3) % t])
        image[:, ev] += 1.0
        items.append({"image": image, "label": torch.tensor(i % 2), "informative": ev})
    return items


def _evaluator(net, data, handlers):
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)
    post = Activationsd(keys="pred", softmax=True)

    def with_prob(x):
        x = post(x)
        x["prob"] = x["pred"]
        return x

    return SupervisedEvaluator(device="cpu", val_data_loader=loader, network=net, postprocessing=with_prob,
                               val_handlers=handlers)


def _ignoring_input(net):
    """Zero every Linear weight: a network that ignores its input (only the bias of the last layer is left)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.zero_()
    return net


def test_jaccard_distance():
    assert jaccard_distance({1, 2}, {1, 2}) == 0.0
    assert jaccard_distance({1, 2}, {3, 4}) == 1.0
    assert jaccard_distance({1, 2, 3}, {2, 3, 4}) == pytest.approx(0.5)
    assert jaccard_distance(set(), set()) == 0.0


def test_metrics_with_a_static_sampler():
    torch.manual_seed(0)
    net = build_classifier("uniform", num_classes=2, num_frames=8, keep_ratio=0.5).eval()
    data = _data()
    diag = SelectionDiagnosticsHandler(net)
    evaluator = _evaluator(net, data, [diag])
    evaluator.run()
    m = evaluator.state.metrics
    kept = set(net.sample(torch.rand(1, 1, 8, 12, 12)).indices[0].tolist())
    expected = sum(len(kept & set(d["informative"].tolist())) for d in data) / (2 * len(data))
    assert m["val_evidence_kept"] == pytest.approx(expected)
    assert m["val_adaptivity"] == 0.0  # the same slices for everyone
    assert m["val_selection_entropy"] == pytest.approx(math.log(4) / math.log(8))
    assert "val_churn" not in m  # no previous epoch yet
    assert m["val_prediction_std"] >= 0
    evaluator.run()  # second epoch: same choices
    assert evaluator.state.metrics["val_churn"] == 0.0
    assert "_kept_indices" not in evaluator.state.output[0]


def test_an_evaluator_that_does_not_decollate_gets_the_same_metrics():
    """decollate=False: the handler collected no item and added no metric, without a word (trial T63b)."""
    net = build_classifier("das", num_classes=2, num_frames=8, keep_ratio=0.5).eval()
    data = _data()
    runs = []
    for decollate in (True, False):
        loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)
        # (no softmax postprocessing: with decollate=False MONAI applies it to the batch, over its first axis)
        evaluator = SupervisedEvaluator(device="cpu", val_data_loader=loader, network=net, decollate=decollate)
        SelectionDiagnosticsHandler(net, prob_key="pred").attach(evaluator)
        evaluator.run()
        runs.append(evaluator.state.metrics)
    assert {"val_evidence_kept", "val_adaptivity", "val_prediction_std"} <= set(runs[1])
    assert runs[0] == pytest.approx(runs[1])


def test_missing_probabilities_key_is_warned_once(caplog):
    """In MONAI's own evaluator the probabilities are under 'pred': with the default prob_key the constant-prediction
    check was off without a word."""
    torch.manual_seed(0)
    net = build_classifier("uniform", num_classes=2, num_frames=8, keep_ratio=0.5).eval()
    loader = torch.utils.data.DataLoader(_data(), batch_size=4, shuffle=False)
    evaluator = SupervisedEvaluator(device="cpu", val_data_loader=loader, network=net,
                                    postprocessing=Activationsd(keys="pred", softmax=True),
                                    val_handlers=[SelectionDiagnosticsHandler(net)])
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.diagnostics"):
        evaluator.run()
    assert caplog.text.count("the engine's output has no 'prob'") == 1 and "prob_key='pred'" in caplog.text
    assert "val_prediction_std" not in evaluator.state.metrics
    given = SupervisedEvaluator(device="cpu", val_data_loader=loader, network=net,
                                postprocessing=Activationsd(keys="pred", softmax=True),
                                val_handlers=[SelectionDiagnosticsHandler(net, prob_key="pred")])
    given.run()
    assert given.state.metrics["val_prediction_std"] >= 0.0


def test_auc_interval_is_the_bootstrap_of_the_validation_items():
    """With ``auc_interval`` the epoch's AUC gets its 95 % bootstrap interval over the items (the same numbers as
    ``bootstrap_intervals`` of the collected probabilities and labels); without it, no interval. The probabilities
    come from the items themselves (an untrained network on 12×12 frames answers nearly the same for all)."""
    from monai_das.handlers import bootstrap_intervals

    torch.manual_seed(0)
    net = build_classifier("full", num_classes=2, num_frames=8).eval()
    data = _data(n=10)

    def prob_of(image):  # where the bright evidence slices lie: varies across items, only loosely with the label
        p = torch.sigmoid(10 * (image[:, :4].mean() - image[:, 4:].mean()))
        return torch.stack([1 - p, p])

    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)
    plain, diag = SelectionDiagnosticsHandler(net), SelectionDiagnosticsHandler(net, prefix="x_", auc_interval=True)
    evaluator = SupervisedEvaluator(device="cpu", val_data_loader=loader, network=net,
                                    postprocessing=lambda x: {**x, "prob": prob_of(x["image"])},
                                    val_handlers=[plain, diag])
    evaluator.run()
    m = evaluator.state.metrics
    assert "val_auc_low" not in m
    probs = torch.stack([prob_of(d["image"]) for d in data])
    assert len(set(probs[:, 1].tolist())) > 2
    want = bootstrap_intervals(probs.numpy(), [int(d["label"]) for d in data])["auc"]
    assert [m["x_auc_low"], m["x_auc_high"]] == pytest.approx(want, abs=1e-6)
    assert 0.0 <= m["x_auc_low"] < m["x_auc_high"] <= 1.0


def test_no_auc_interval_with_too_few_items_of_a_class(caplog):
    """One positive among 9 would give resamples that all score it first ([1.000, 1.000]): no interval, one warning
    naming the class."""
    torch.manual_seed(0)
    net = build_classifier("full", num_classes=2, num_frames=8).eval()
    data = _data(n=10)
    for i, d in enumerate(data):
        d["label"] = torch.tensor(int(i == 0))
    diag = SelectionDiagnosticsHandler(net, auc_interval=True, label_names=["no", "yes"])
    evaluator = _evaluator(net, data, [diag])
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.diagnostics"):
        evaluator.run()
        evaluator.run()
    assert "val_auc_low" not in evaluator.state.metrics
    assert caplog.text.count("holds 1 item(s) of class 'yes': its AUC says little, and no interval") == 1


@pytest.mark.parametrize("method", ["das", "dps", "uniform"])
def test_auc_with_evenly_spaced_frames(method):
    """``evenly_spaced``: the same network's AUC on k evenly spaced frames, computed in the validation pass (equal to
    the AUC of the network with its sampler swapped for ``UniformSampler``); only for samplers with parameters; the
    global random state is untouched."""
    from monai.metrics import compute_roc_auc

    from monai_das.networks.nets.simple_samplers import UniformSampler

    torch.manual_seed(0)
    net = build_classifier(method, num_classes=2, num_frames=8, keep_ratio=0.5)
    data = _data(n=10)
    with torch.no_grad():  # BatchNorm statistics of the data, so that the predictions vary across items
        for _ in range(20):
            net(torch.stack([d["image"] for d in data]))
    net.train()  # as during training: the evaluator puts it in eval mode for its pass, and back afterwards
    states, buffers = [], []
    for evenly in (False, True):  # the same random state and BatchNorm statistics after the pass with and without it
        torch.manual_seed(1)
        evaluator = _evaluator(net, data, [SelectionDiagnosticsHandler(net, evenly_spaced=evenly)])
        evaluator.run()
        states.append(torch.get_rng_state())
        buffers.append([b.clone() for b in net.buffers()])
    assert torch.equal(*states) and all(torch.equal(a, b) for a, b in zip(*buffers))
    assert net.training
    net.eval()
    m = evaluator.state.metrics
    if method == "uniform":  # nothing learned to compare with
        assert "val_auc_evenly_spaced" not in m
        return
    with torch.no_grad():
        seq = net.to_frames(torch.stack([d["image"] for d in data]))
        probs = torch.softmax(net.classify_frames(UniformSampler(4)(seq).frames), 1)
    want = float(compute_roc_auc(probs, torch.nn.functional.one_hot(torch.tensor([i % 2 for i in range(10)]), 2)))
    assert m["val_auc_evenly_spaced"] == pytest.approx(want, abs=1e-6)
    # the input is read under image_key: a batch without it gives no such AUC (nothing read from another key)
    other = _evaluator(net, data, [SelectionDiagnosticsHandler(net, evenly_spaced=True, image_key="volume")])
    other.run()
    assert "val_auc_evenly_spaced" not in other.state.metrics


def test_churn_after_a_restart_from_the_checkpointed_state():
    """The previous epoch's kept sets live on the engine state (KEPT_ATTR); restored through EngineStateAttributes,
    a fresh handler and evaluator (a resumed run) measure the churn of their first epoch as the first run would."""
    from monai_das.handlers import EngineStateAttributes
    from monai_das.handlers.diagnostics import KEPT_ATTR

    torch.manual_seed(0)
    net = build_classifier("uniform", num_classes=2, num_frames=8, keep_ratio=0.5).eval()
    data = _data()
    first = _evaluator(net, data, [SelectionDiagnosticsHandler(net)])
    first.run()
    attributes = ("best_metric", "best_metric_epoch", KEPT_ATTR)
    saved = EngineStateAttributes(first, attributes).state_dict()
    kept = sorted(net.sample(torch.rand(1, 1, 8, 12, 12)).indices[0].tolist())
    assert saved[KEPT_ATTR] == [kept] * len(data)
    shifted = [[(i + 1) % 8 for i in kept]] * len(data)  # a previous epoch that kept other slices
    resumed = _evaluator(net, data, [SelectionDiagnosticsHandler(net)])
    EngineStateAttributes(resumed, attributes).load_state_dict({**saved, KEPT_ATTR: shifted})
    resumed.run()
    assert resumed.state.metrics["val_churn"] == pytest.approx(jaccard_distance(set(kept), set(shifted[0])))
    assert resumed.state.metrics["val_churn"] > 0


def test_adaptive_sampler_varies():
    torch.manual_seed(0)
    net = build_classifier("das", num_classes=2, num_frames=8, keep_ratio=0.25).eval()
    evaluator = _evaluator(net, _data(), [SelectionDiagnosticsHandler(net, prefix="x_")])
    evaluator.run()
    m = evaluator.state.metrics
    assert 0.0 < m["x_adaptivity"] <= 1.0 and 0.0 < m["x_selection_entropy"] <= 1.0
    assert 0.0 <= m["x_evidence_kept"] <= 1.0
    assert m["x_evidence_at_random"] == 0.25  # k/T = 2/8: what random frames keep of the evidence, its yardstick


@pytest.mark.parametrize("evidence, warned", [((0, 2), True), ((0, 1), False), ((1, 3), False)])
def test_warns_when_the_kept_frames_avoid_the_evidence(caplog, evidence, warned):
    """uniform keeps slices 1, 3, 5, 7 of 8 (k/T = 0.5): evidence kept 0 is below half of chance, 0.5 and 1 are not."""
    net = build_classifier("uniform", num_classes=2, num_frames=8, keep_ratio=0.5).eval()
    data = [{**d, "informative": torch.tensor(evidence)} for d in _data()]
    evaluator = _evaluator(net, data, [SelectionDiagnosticsHandler(net)])
    with caplog.at_level(logging.WARNING):
        evaluator.run()
    assert evaluator.state.metrics["val_evidence_kept"] == {(0, 2): 0.0, (0, 1): 0.5, (1, 3): 1.0}[evidence]
    assert ("looks away from the evidence" in caplog.text) == warned
    assert ("0.00 of the known evidence frames, less than half of what 0.50" in caplog.text) == warned


def test_evidence_numbering_another_sequence_is_refused():
    """Evidence of the 24 file frames on a network that sees 8 (a subsampling that did not renumber it, trial 60a)
    was counted as never kept: evidence_kept silently low. Refused, naming the item and both numbers."""
    net = build_classifier("uniform", num_classes=2, num_frames=8, keep_ratio=0.5).eval()
    data = [{**d, "informative": torch.tensor([3, 20]), "id": f"case{i}"} for i, d in enumerate(_data())]
    with pytest.raises(ValueError, match=r"item 'case0' has evidence at frame 20, but the network saw 8 frames"):
        _evaluator(net, data, [SelectionDiagnosticsHandler(net)]).run()


def test_constant_predictions_never_best(tmp_path, caplog):
    torch.manual_seed(0)
    net = _ignoring_input(build_classifier("uniform", num_classes=2, num_frames=8, keep_ratio=0.5).eval())
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="val_std",
                                  key_metric_filename="model.pt")
    evaluator = _evaluator(net, _data(), [SelectionDiagnosticsHandler(net), saver])
    evaluator.state.metrics = {}

    @evaluator.on(Events.EPOCH_STARTED)
    def _key(e):  # a key metric that would call this epoch perfect
        e.state.metrics["val_std"] = 1.0

    evaluator.run()
    assert evaluator.state.degenerate_predictions
    assert evaluator.state.metrics["val_prediction_std"] < 1e-3
    assert "do not vary" in caplog.text
    assert not (tmp_path / "model.pt").exists()
    # control: the same run with the guard off saves the checkpoint
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="val_std",
                                  key_metric_filename="model.pt")
    evaluator = _evaluator(net, _data(), [SelectionDiagnosticsHandler(net, min_prediction_std=0.0), saver])
    evaluator.add_event_handler(Events.EPOCH_STARTED, _key)
    evaluator.run()
    assert not evaluator.state.degenerate_predictions and (tmp_path / "model.pt").exists()


def test_constant_predictions_never_best_with_the_saver_listed_first(tmp_path):
    """MONAI's usual order lists the saver first in ``val_handlers``: it decided before the diagnostics flagged the
    epoch, and an epoch with constant predictions became the best model (trial T71e)."""
    torch.manual_seed(0)
    net = _ignoring_input(build_classifier("uniform", num_classes=2, num_frames=8, keep_ratio=0.5).eval())
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="val_std",
                                  key_metric_filename="model.pt")
    evaluator = _evaluator(net, _data(), [saver, SelectionDiagnosticsHandler(net)])
    evaluator.add_event_handler(Events.EPOCH_STARTED, lambda e: e.state.metrics.update(val_std=1.0))
    evaluator.run()
    assert evaluator.state.degenerate_predictions
    assert not (tmp_path / "model.pt").exists() and saver.best_epoch is None


@pytest.mark.parametrize("method,vetoed", [("das", True), ("dps", True), ("adps", False), ("uniform", False)])
def test_warmup_epochs_never_best(tmp_path, caplog, method, vetoed):
    """A learned sampler still in its warm-up has not learned: that model is not saved as the best, however good."""
    torch.manual_seed(0)
    net = build_classifier(method, num_classes=2, num_frames=8, keep_ratio=0.5)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="val_auc",
                                  key_metric_filename="model.pt")
    # min_prediction_std=0: the untrained network's answers barely vary; that guard is tested above
    evaluator = _evaluator(net, _data(), [SelectionDiagnosticsHandler(net, min_prediction_std=0.0), saver])
    aucs = {1: 0.9, 2: 0.6}  # the warm-up epoch scores best

    @evaluator.on(Events.EPOCH_STARTED)
    def _key(e):
        e.state.metrics["val_auc"] = aucs[trainer.state.epoch]

    trainer = Engine(lambda e, b: None)
    SamplerWarmupHandler(net, epochs=1).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run(global_epoch=e.state.epoch))
    with caplog.at_level(logging.INFO):
        trainer.run([0], max_epochs=2)
    assert (saver.best_epoch, saver.best_score) == ((2, 0.6) if vetoed else (1, 0.9))
    assert ("sampler is still in its warm-up" in caplog.text) == vetoed


class _Scripted(Metric):
    """A key metric whose value at each trainer epoch is given."""

    def __init__(self, values, trainer):
        self.values, self.trainer = values, trainer
        super().__init__()

    def reset(self):
        pass

    def update(self, output):
        pass

    def compute(self):
        return self.values[self.trainer.state.epoch]


@pytest.mark.parametrize("method,values,constant,best", [
    ("das", (0.9, 0.6, 0.7), False, (3, 0.7)),  # epoch 1 is the sampler's warm-up: vetoed however good
    ("dps", (0.9, 0.6, 0.7), False, (3, 0.7)),
    ("uniform", (0.9, 0.6, 0.7), False, (1, 0.9)),  # no learned sampler, no warm-up
    ("uniform", (math.nan, 0.6, 0.5), False, (2, 0.6)),  # a NaN AUC (one class) is beaten by any real one
    ("uniform", (0.9, 0.6, 0.7), True, None),  # predictions that do not vary: no epoch counts
])
def test_vetoed_epoch_is_not_the_workflows_best_either(tmp_path, method, values, constant, best):
    """MONAI's own best epoch (``best_metric``/``best_metric_epoch``, what StatsHandler prints as "Key metric ...
    best value ... at epoch") names the epoch of the saved best model, not a vetoed epoch that scored higher."""
    torch.manual_seed(0)
    net = build_classifier(method, num_classes=2, num_frames=8, keep_ratio=0.5)
    if constant:
        _ignoring_input(net)
    trainer = Engine(lambda e, b: None)
    SamplerWarmupHandler(net, epochs=1).attach(trainer)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="val_auc",
                                  key_metric_filename="model.pt")
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=torch.utils.data.DataLoader(_data(), batch_size=4), network=net,
        postprocessing=Activationsd(keys="pred", softmax=True),
        key_val_metric={"val_auc": _Scripted(dict(enumerate(values, 1)), trainer)},
        val_handlers=[SelectionDiagnosticsHandler(net, prob_key="pred", min_prediction_std=1e-3 if constant else 0.0),
                      saver])
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run(global_epoch=e.state.epoch))
    trainer.run([0], max_epochs=3)
    workflow = (evaluator.state.best_metric_epoch, evaluator.state.best_metric)
    if best is None:
        assert workflow == (-1, -1) and saver.best_epoch is None
    else:
        assert workflow == best and (saver.best_epoch, saver.best_score) == best


def test_kept_positions_written_per_class(tmp_path):
    net = build_classifier("uniform", num_classes=2, num_frames=8, keep_ratio=0.5).eval()
    diag = SelectionDiagnosticsHandler(net, prefix="test_", output_dir=tmp_path, label_names=["neg", "pos"],
                                       split="val")
    _evaluator(net, _data(), [diag]).run()
    out = json.loads((tmp_path / "test_kept_positions.json").read_text())
    assert out["num_frames"] == 8 and out["num_kept"] == 4 and out["items"] == {"all": 6, "neg": 3, "pos": 3}
    assert out["split"] == "val"  # evaluate.json run on the validation split says so
    # uniform keeps slices 1, 3, 5, 7 of every volume, whatever its class
    assert out["kept_fraction"]["all"] == out["kept_fraction"]["pos"] == [0.0, 1.0] * 4
    assert (tmp_path / "test_kept_positions.png").read_bytes()[:4] == b"\x89PNG"


def test_kept_positions_file_names_follow_file_prefix(tmp_path):
    """evaluate.json on ``--validate#split val`` wrote ``test_kept_positions.json`` into ``eval/val/``: the file names
    take ``file_prefix`` (the split's), the metric names keep ``prefix``."""
    net = build_classifier("uniform", num_classes=2, num_frames=8, keep_ratio=0.5).eval()
    diag = SelectionDiagnosticsHandler(net, prefix="test_", output_dir=tmp_path, split="val", file_prefix="val_")
    engine = _evaluator(net, _data(), [diag])
    engine.run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val_kept_positions.json", "val_kept_positions.png"]
    assert "test_selection_entropy" in engine.state.metrics


def test_a_distributed_validator_measures_every_rank_s_items(monkeypatch):
    """Under DDP each rank validates its share: the diagnostics (evidence kept, entropy, adaptivity, prediction std,
    the AUC interval) are those of the whole list, as one process measures them, not rank 0's share. Two ranks
    simulated: rank 1's share is measured on its half, rank 0 gathers it (idist replaced by a stand-in)."""
    from types import SimpleNamespace

    import monai_das.handlers.diagnostics as diagnostics

    torch.manual_seed(0)
    net = build_classifier("das", num_classes=2, num_frames=8, keep_ratio=0.5).eval()
    data = _data(n=12)
    whole = SelectionDiagnosticsHandler(net, auc_interval=True)
    evaluator = _evaluator(net, data, [whole])
    evaluator.run()
    expected = dict(evaluator.state.metrics)
    assert "val_auc_low" in expected and "val_evidence_kept" in expected

    share = {}  # rank 1: its half measured, its plain share kept instead of computing metrics

    def keep_share(self, engine):
        share["items"] = [(i.label, i.prob.tolist(), sorted(i.kept), None, i.group) for i in self._items]
        share["evidence"], share["frames"] = list(self._evidence), self._num_frames

    rank1 = SelectionDiagnosticsHandler(net, auc_interval=True)
    monkeypatch.setattr(SelectionDiagnosticsHandler, "__call__", keep_share)
    _evaluator(net, data[6:], [rank1]).run()
    monkeypatch.undo()

    def all_reduce(t, op="SUM"):
        other = torch.tensor(share["frames"]) if op == "MAX" else torch.tensor(share["evidence"], dtype=t.dtype)
        return torch.maximum(t, other) if op == "MAX" else t + other

    import monai_das.handlers.utils as utils

    fake = SimpleNamespace(get_world_size=lambda: 2, get_rank=lambda: 0, all_reduce=all_reduce)
    monkeypatch.setattr(diagnostics, "idist", fake)
    monkeypatch.setattr(utils, "rank_world", lambda: (0, 2))
    monkeypatch.setattr(torch.distributed, "all_gather_object",
                        lambda parts, mine: parts.__setitem__(slice(None), [mine, share["items"]]))
    rank0 = SelectionDiagnosticsHandler(net, auc_interval=True)
    evaluator = _evaluator(net, data[:6], [rank0])
    evaluator.run()
    got = evaluator.state.metrics
    for key in ("val_evidence_kept", "val_selection_entropy", "val_adaptivity", "val_prediction_std", "val_auc_low",
                "val_auc_high"):
        assert got[key] == pytest.approx(expected[key]), key


def test_an_earlier_version_s_kept_positions_of_the_split_are_removed(tmp_path, caplog):
    """Up to volume 0.6.30 evaluate.json on ``--validate#split val`` wrote ``eval/val/test_kept_positions.json``: after
    an upgrade it stayed beside ``val_kept_positions.json``, a stale copy a script reading the old name went on
    reading. The one of this split is removed with a warning; another split's, or a file not ours, is left."""
    net = build_classifier("uniform", num_classes=2, num_frames=8, keep_ratio=0.5).eval()
    (tmp_path / "test_kept_positions.json").write_text(json.dumps({"epoch": 1, "split": "val"}))
    (tmp_path / "test_kept_positions.png").write_bytes(b"\x89PNG old")
    diag = SelectionDiagnosticsHandler(net, prefix="test_", output_dir=tmp_path, split="val", file_prefix="val_")
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.diagnostics"):
        _evaluator(net, _data(), [diag]).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val_kept_positions.json", "val_kept_positions.png"]
    assert "an earlier version's name" in caplog.text and "val_kept_positions" in caplog.text
    for other in ({"split": "test"}, [1, 2]):  # another split's file, a JSON not of this handler: left alone
        (tmp_path / "test_kept_positions.json").write_text(json.dumps(other))
        diag = SelectionDiagnosticsHandler(net, prefix="test_", output_dir=tmp_path, split="val", file_prefix="val_")
        _evaluator(net, _data(), [diag]).run()
        assert json.loads((tmp_path / "test_kept_positions.json").read_text()) == other
