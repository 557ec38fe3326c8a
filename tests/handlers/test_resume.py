"""Early-stopping and engine-state handlers that survive a restart."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine

from engine_helpers import engine_with_metric

from monai_das.handlers import (
    EngineStateAttributes,
    RandomStates,
    ResumableEarlyStopHandler,
    RunSettings,
    val_loss_score,
)


def _validator(values):
    return engine_with_metric("val_loss", values)


def test_early_stop_counts_and_round_trips():
    trainer = Engine(lambda e, b: None)
    validator = _validator([1.0, 0.5, 0.6, 0.7])
    stop = ResumableEarlyStopHandler(patience=3, score_function=val_loss_score("val_loss"))
    stop.set_trainer(trainer)
    stop.attach(validator)
    validator.run([0], max_epochs=4)
    state = stop.state_dict()
    assert state["counter"] == 2 and state["best_score"] == pytest.approx(-0.5)

    # a new handler gets the state before the trainer is set (as CheckpointLoader does on resume) ...
    restored = ResumableEarlyStopHandler(patience=3, score_function=val_loss_score("val_loss"))
    restored.load_state_dict(torch.load(_roundtrip(state), weights_only=True))
    assert restored.counter == 2
    restored.set_trainer(trainer)
    # ... and one more epoch without improvement stops the trainer (patience 3 reached)
    v2 = _validator([0.9])
    restored.attach(v2)
    v2.run([0], max_epochs=1)
    assert trainer.should_terminate
    assert restored.counter == 3


def test_early_stop_state_of_a_numpy_score_loads_weights_only():
    """A score_function returning MONAI's ROCAUC value (np.float64) made last.pt unloadable with weights_only=True:
    the run could not resume (trial W). The state holds Python numbers."""
    import numpy as np

    trainer = Engine(lambda e, b: None)
    validator = _validator([0.6, 0.7])
    stop = ResumableEarlyStopHandler(patience=3, score_function=lambda e: np.float64(e.state.metrics["val_loss"]))
    stop.set_trainer(trainer)
    stop.attach(validator)
    validator.run([0], max_epochs=2)
    state = torch.load(_roundtrip(stop.state_dict()), weights_only=True)
    assert type(state["best_score"]) is float and state["best_score"] == pytest.approx(0.7)


@pytest.mark.parametrize("counter, epochs_trained", [(3, 0), (2, 4)])
def test_early_stopped_run_stays_stopped_on_resume(counter, epochs_trained, caplog):
    # a run killed after early stopping (e.g. during its evaluation) and resumed must not train on
    steps = []
    trainer = Engine(lambda e, b: steps.append(e.state.epoch))
    earlier = ResumableEarlyStopHandler(patience=3, score_function=val_loss_score("val_loss"))
    earlier.set_trainer(Engine(lambda e, b: None))
    state = {**earlier.state_dict(), "counter": counter, "best_score": -0.5}
    stop = ResumableEarlyStopHandler(patience=3, score_function=val_loss_score("val_loss"))
    stop.load_state_dict(torch.load(_roundtrip(state), weights_only=True))
    stop.set_trainer(trainer)
    stop.set_trainer(trainer)  # set twice: the loaded count is kept, one check
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.resume"):
        trainer.run([0], max_epochs=4)
    assert len(steps) == epochs_trained
    assert ("nothing more to train" in caplog.text) == (epochs_trained == 0)


def _roundtrip(obj, _store={}):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_val_loss_score_missing_metric():
    engine = Engine(lambda e, b: None)
    with pytest.raises(KeyError, match="val_loss"):
        val_loss_score("val_loss")(engine)


def test_engine_state_attributes():
    engine = Engine(lambda e, b: None)
    engine.state.best_metric, engine.state.best_metric_epoch = torch.tensor(0.75), 3
    saved = EngineStateAttributes(engine).state_dict()
    assert saved == {"best_metric": 0.75, "best_metric_epoch": 3} and isinstance(saved["best_metric"], float)
    other = Engine(lambda e, b: None)
    EngineStateAttributes(other).load_state_dict(saved)
    assert other.state.best_metric == 0.75 and other.state.best_metric_epoch == 3


def test_random_states_round_trip_weights_only(tmp_path):
    import random

    import numpy as np
    from monai.transforms import Compose, RandFlipd, RandGaussianNoised

    transforms = Compose([RandFlipd("image", prob=0.5), Compose([RandGaussianNoised("image")])])
    gen = torch.Generator().manual_seed(3)
    states = RandomStates(transforms, generators=[gen])
    # both Compose objects, both random transforms and the array transform RandGaussianNoised draws from
    assert len(states.transforms) == 5
    path = tmp_path / "rng.pt"
    torch.save(states.state_dict(), path)

    def draw():
        return (random.random(), float(np.random.rand()), float(torch.rand(1)),
                [float(t.R.rand()) for t in states.transforms], float(torch.rand(1, generator=gen)))

    first = draw()
    states.load_state_dict(torch.load(path, weights_only=True))
    assert draw() == first


def test_random_states_restore_what_dictionary_transforms_draw(tmp_path):
    """A dictionary transform draws from its array twin's generator (RandAffined: RandAffine and RandAffineGrid)."""
    from monai.transforms import Compose, RandAffined, RandGaussianNoised

    transforms = Compose([RandAffined("image", prob=0.5, rotate_range=(0.5, 0, 0), scale_range=(0, 0.1, 0.1)),
                          RandGaussianNoised("image", prob=0.5)])
    transforms.set_random_state(0)
    states = RandomStates(transforms)
    names = [type(t).__name__ for t in states.transforms]
    assert names == ["Compose", "RandAffined", "RandAffine", "RandAffineGrid", "RandGaussianNoised", "RandGaussianNoise"]
    path = tmp_path / "rng.pt"
    torch.save(states.state_dict(), path)
    x = torch.rand(1, 6, 8, 8)
    first = [transforms({"image": x})["image"] for _ in range(4)]
    states.load_state_dict(torch.load(path, weights_only=True))
    again = [transforms({"image": x})["image"] for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(first[0], f) for f in first[1:])  # the transforms did draw


def test_random_states_of_a_distributed_run_continue_every_rank_s_device_stream(tmp_path, monkeypatch):
    """R70b: only rank 0 writes last.pt, and it saved every device's CUDA stream as rank 0 sees them: cuda:1 at the
    seed (rank 1 draws there, rank 0 never does). Resumed, rank 1's stream started again from the seed. Simulated with
    one CPU generator per device (no two GPUs here): ranks are seeded alike and draw in step."""
    from monai_das.handlers import resume

    gens, current = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)], {"device": 0}
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: 2)
    monkeypatch.setattr(cuda, "get_rng_state", lambda device="cuda": gens[current["device"]].get_state())
    monkeypatch.setattr(cuda, "set_rng_state", lambda state, device="cuda": gens[current["device"]].set_state(state))
    monkeypatch.setattr(cuda, "get_rng_state_all", lambda: [g.get_state() for g in gens])
    monkeypatch.setattr(cuda, "set_rng_state_all", lambda states: [g.set_state(s) for g, s in zip(gens, states)])
    monkeypatch.setattr(resume, "rank_world", lambda: (0, 2))
    torch.rand(5, generator=gens[0])  # rank 0's epoch on cuda:0, then it saves last.pt
    torch.save(RandomStates().state_dict(), tmp_path / "last.pt")
    torch.rand(5, generator=gens[1])  # rank 1's same epoch on cuda:1 (another process)
    uninterrupted = torch.rand(3, generator=gens[1])
    gens[1].manual_seed(0)  # killed; rank 1 starts again on cuda:1, seeded, and loads last.pt
    current["device"] = 1
    RandomStates().load_state_dict(torch.load(tmp_path / "last.pt", weights_only=True))
    assert torch.equal(torch.rand(3, generator=gens[1]), uninterrupted)


def test_random_states_refuse_other_transforms(tmp_path):
    from monai.transforms import RandFlipd

    saved = RandomStates([RandFlipd("image")]).state_dict()
    with pytest.raises(ValueError, match="1 random transforms states, this run has 0"):
        RandomStates(None).load_state_dict(saved)


def test_run_settings_refuse_mismatch():
    settings = RunSettings({"method": "random", "keep_ratio": 0.5, "label_names": ["a", "b"]}, "models/last.pt")
    settings.load_state_dict({"method": "random", "keep_ratio": 0.5, "label_names": ("a", "b")})  # same: fine
    with pytest.raises(ValueError, match=r"'models/last.pt'.*method: checkpoint 'uniform', this run 'random'"):
        settings.load_state_dict({"method": "uniform", "keep_ratio": 0.5, "label_names": ["a", "b"]})
    with pytest.raises(ValueError, match="keep_ratio: checkpoint 0.25, this run 0.5"):
        settings.load_state_dict({"method": "random", "keep_ratio": 0.25, "label_names": ["a", "b"]})
    with pytest.raises(ValueError, match="not recorded: label_names"):
        settings.load_state_dict({"method": "random", "keep_ratio": 0.5})
    # dictionaries (the data facts, the preprocessing recipe) name the entry that changed
    facts = RunSettings({"data": {"fold": 1, "num_samples": {"train": None}, "spatial_size": (28, 28)}})
    facts.load_state_dict({"data": {"fold": 1, "num_samples": {"train": None}, "spatial_size": [28, 28]}})
    with pytest.raises(ValueError, match=r"data\.fold: checkpoint 0, this run 1; data\.num_samples\.train: "
                                         r"checkpoint 64, this run None\)"):
        facts.load_state_dict({"data": {"fold": 0, "num_samples": {"train": 64}, "spatial_size": [28, 28]}})
    # the recipe's record of the training data's DICOM modalities is no setting: a last.pt written before it resumes
    dicom = RunSettings({"preprocessing": {"axcodes": "RAS", "modalities": ["CT"]}})
    dicom.load_state_dict({"preprocessing": {"axcodes": "RAS"}})
    with pytest.raises(ValueError, match="preprocessing.axcodes: checkpoint 'LPS'"):
        dicom.load_state_dict({"preprocessing": {"axcodes": "LPS"}})
    # a setting newer than the checkpoint is accepted at its default None, refused otherwise
    newer = RunSettings({"method": "random", "synthetic_options": None})
    newer.load_state_dict({"method": "random"})
    with pytest.raises(ValueError, match="not recorded: synthetic_options"):
        RunSettings({"method": "random", "synthetic_options": {"distractor": "texture"}}).load_state_dict(
            {"method": "random"})


def test_run_settings_check_the_recipe(caplog):
    recipe = {"lr": 0.001, "relevance_weight": 0.0, "sampler_gradient": "pixels"}
    settings = RunSettings({"method": "das"}, "models/last.pt", recipe=recipe)
    saved = settings.state_dict()
    assert saved == {"method": "das", **recipe}
    settings.load_state_dict(saved)
    # a changed learning rate would be overridden by the optimizer state: refused, naming both values
    with pytest.raises(ValueError, match=r"lr: checkpoint 0.0001, this run 0.001"):
        settings.load_state_dict({**saved, "lr": 0.0001})
    with pytest.raises(ValueError, match=r"relevance_weight: checkpoint 1.0, this run 0.0"):
        settings.load_state_dict({**saved, "relevance_weight": 1.0})
    # the option to give, where its name is not the entry's: --max_epochs 10 with sampler_warmup_epochs 'auto' gave
    # another warm-up than the checkpoint's, refused as "warmup_epochs: checkpoint 1, this run 2" (trial X)
    warm = RunSettings({"method": "das"}, recipe={"warmup_epochs": 2, "class_weights": None, "lr": 0.001})
    with pytest.raises(ValueError, match=r"give the checkpoint's: --sampler_warmup_epochs 1 \(its warm-up; 'auto' "
                                         r"counts max_epochs\); --class_weights \[1\.0,5\.0\]\."):
        warm.load_state_dict({"method": "das", "warmup_epochs": 1, "class_weights": [1.0, 5.0], "lr": 0.001})
    # another --lr: its sampler_lr (lr / 10 by default) follows it, so only --lr is the option to give (both were)
    rates = RunSettings({"method": "das"}, recipe={"lr": 0.01, "sampler_lr": 0.001})
    with pytest.raises(ValueError) as refused:
        rates.load_state_dict({"method": "das", "lr": 0.001, "sampler_lr": 0.0001})
    assert "give the checkpoint's: --lr 0.001." in str(refused.value) and "--sampler_lr" not in str(refused.value)
    with pytest.raises(ValueError, match=r"give the checkpoint's: --lr 0\.001; --sampler_lr 5e-05\."):  # given apart
        rates.load_state_dict({"method": "das", "lr": 0.001, "sampler_lr": 0.00005})
    # a schedule switched on or off: --temperature_schedule, not a '--max_epochs $None' (review H5)
    sched = RunSettings({"method": "das"}, recipe={"temperature_schedule": [1.0, 0.1], "temperature_epochs": 15})
    with pytest.raises(ValueError) as refused:
        sched.load_state_dict({"method": "das", "temperature_schedule": None, "temperature_epochs": None})
    assert "--temperature_schedule '$None'" in str(refused.value) and "--max_epochs" not in str(refused.value)
    # an edited datalist: its digest alone named the change (two hex strings); the message says what they are
    edited = RunSettings({"method": "das"}, recipe={"data": {"datalist": "9a" * 32}})
    with pytest.raises(ValueError, match=r"data\.datalist: checkpoint '3f3f.*this run '9a9a.*The datalist's bytes "
                                         r"changed since the checkpoint was written.*put the former file back"):
        edited.load_state_dict({"method": "das", "data": {"datalist": "3f" * 32}})
    # a split this version draws otherwise: said that no option draws the older one
    data = RunSettings({"method": "das"}, recipe={"data": {"seed": 0, "every_class_validated": True}})
    with pytest.raises(ValueError, match=r"data\.every_class_validated: checkpoint None, this run True.*no option draws "
                                         r"the older list; train anew"):
        data.load_state_dict({"method": "das", "data": {"seed": 0}})
    data = RunSettings({"method": "das"}, recipe={"data": {"seed": 0, "validation_classes_by_name": True}})
    with pytest.raises(ValueError, match=r"data\.validation_classes_by_name: checkpoint None, this run True.*"
                                         r"otherwise \(the classes taken by name, not by index.*train anew"):
        data.load_state_dict({"method": "das", "data": {"seed": 0}})
    # a checkpoint written before the recipe was recorded: resumed, with a warning naming what is not checked
    with caplog.at_level("WARNING"):
        settings.load_state_dict({"method": "das"})
    assert "does not record the training recipe (lr, relevance_weight, sampler_gradient)" in caplog.text
    with pytest.raises(ValueError, match="lr given twice"):
        RunSettings({"lr": 0.1}, recipe={"lr": 0.1})
    # another --seed was accepted and recorded in the card and MLflow, though the resumed run goes on with the
    # checkpoint's random states (weights of seed 0 under the name of seed 1; trial T59b): refused, naming --seed
    seeded = RunSettings({"method": "das"}, recipe={"seed": 1})
    with pytest.raises(ValueError, match=r"seed: checkpoint 0, this run 1.*give the checkpoint's: --seed 0\."):
        seeded.load_state_dict({"method": "das", "seed": 0})
    # another thread count changes float rounding only: warned, naming the option, and resumed
    threads = RunSettings({"method": "das"}, advisory={"num_threads": 2})
    assert threads.state_dict() == {"method": "das", "num_threads": 2}
    caplog.clear()
    with caplog.at_level("WARNING"):
        threads.load_state_dict({"method": "das", "num_threads": 1})
        threads.load_state_dict({"method": "das"})  # not recorded (an older checkpoint): nothing to say
    assert caplog.text.count("num_threads: checkpoint 1, this run 2") == 1
    assert "will not equal an uninterrupted run bit for bit; give --num_threads 1 for that" in caplog.text


def test_keep_latest_best_is_part_of_the_recipe(caplog):
    """A resume with another --keep_latest_best went on without a word: epochs before it chose the best with '>',
    those after with '>=', and the card said the new value for the whole run (trial T66c). A checkpoint written
    before it was recorded resumes with the warning that names what cannot be checked (it may have been either)."""
    from monai_das.handlers import RunSettings

    saved = RunSettings({"method": "das"}, "last.pt", recipe={"keep_latest_best": True}).state_dict()
    with pytest.raises(ValueError, match=r"keep_latest_best: checkpoint True, this run False.*--keep_latest_best true"):
        RunSettings({"method": "das"}, "last.pt", recipe={"keep_latest_best": False}).load_state_dict(saved)
    RunSettings({"method": "das"}, "last.pt", recipe={"keep_latest_best": True}).load_state_dict(saved)
    with caplog.at_level("WARNING"):  # a last.pt of an earlier version: no keep_latest_best entry
        RunSettings({"method": "das"}, "last.pt", recipe={"keep_latest_best": True}).load_state_dict({"method": "das"})
    assert "does not record the training recipe (keep_latest_best)" in caplog.text
