"""ModelCardSaver: the run writes <ckpt_dir>/metadata.json with the data facts and only the metrics it measured."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from monai_das.handlers import CARD_KEY, ModelCardSaver, card_input_shape, model_facts
from monai_das.networks import build_classifier

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "bundles" / "das_volume_classification" / "configs" / "metadata.json"
SCHEMA = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"

#: a non-cubic volume grid (D×H×W), frames along W
INFO = {
    "num_classes": 3, "label_names": ["a", "b", "c"], "in_channels": 1, "num_frames": 12, "layout": "volume",
    "slice_axis": 2, "spatial_size": [20, 16, 12], "image_shape": [1, 20, 16, 12], "source": "datalist",
    "datalist": "/data/list.json", "datalist_sha256": "ab" * 32,
}
RECIPE = {"layout": "volume", "spatial_size": [20, 16, 12], "slice_axis": 2, "axcodes": "RAS", "pixdim": None,
          "intensity_range": [-1000, 400], "percentiles": [0.5, 99.5], "output_range": [0.0, 1.0],
          "resize": "stretch", "min_frames": 2}
#: validation metrics of epochs 1..3; epoch 2 is the best (val_auc)
VAL = [
    {"val_auc": 0.6, "val_accuracy": 0.5, "val_loss": 0.9},
    {"val_auc": 0.8, "val_accuracy": 0.7, "val_loss": 0.5, "val_churn": float("nan")},
    {"val_auc": 0.7, "val_accuracy": 0.9, "val_loss": 0.4},
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: the network keys of :func:`model_facts` (the bundles' ``model_facts`` entry)
FACT_KEYS = ("method", "keep_ratio", "temporal_head", "encoder", "encoder_kwargs", "context_frames", "sampler_kwargs")


def saver(tmp_path: Path, info=INFO, recipe=RECIPE, **kwargs) -> ModelCardSaver:
    keys = dict(method="uniform", keep_ratio=0.25, temporal_head="mean", encoder=None, encoder_kwargs={})
    keys.update({k: kwargs.pop(k) for k in FACT_KEYS if k in kwargs})
    args = dict(output_dir=tmp_path / "models", meta_file=TEMPLATE, facts=model_facts(info, recipe, **keys))
    return ModelCardSaver(**{**args, **kwargs})


def train(tmp_path: Path, val=VAL, save=True) -> tuple[Engine, Engine]:
    """A trainer whose epoch e validates with metrics ``val[e-1]``; a stand-in of the best-model saver rewrites
    models/model.pt when val_auc improves (before the card handler runs, as in the bundle)."""
    ckpt = tmp_path / "models" / "model.pt"
    evaluator = Engine(lambda e, b: None)
    evaluator.state.key_metric_name, evaluator.state.best = "val_auc", -math.inf

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metrics(e):
        e.state.epoch = trainer.state.epoch  # MONAI's evaluator runs with the trainer's epoch
        e.state.metrics = dict(val[trainer.state.epoch - 1])
        if save and e.state.metrics["val_auc"] > e.state.best:
            e.state.best = e.state.metrics["val_auc"]
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"epoch": torch.tensor(trainer.state.epoch)}, ckpt)

    trainer = Engine(lambda e, b: None)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
    saver(tmp_path, evaluator=evaluator).attach(trainer)
    return trainer, evaluator


def read(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "models" / "metadata.json").read_text())


def test_training_writes_card_with_best_validation_metrics(tmp_path):
    trainer, evaluator = train(tmp_path)
    trainer.run([0], max_epochs=3)
    card = read(tmp_path)
    # metrics: exactly those of the best epoch (2), NaN left out, no template placeholder
    assert card["eval_metrics"] == {"val_auc": 0.8, "val_accuracy": 0.7, "val_loss": 0.5}
    assert all(v != 0.0 for v in card["eval_metrics"].values())
    facts = card[CARD_KEY]
    assert facts["validation"] == {"key_metric": "val_auc", "best_epoch": 2, "epochs": 3}
    assert facts["checkpoint"] == "model.pt" and facts["checkpoint_sha256"] == sha256(tmp_path / "models" / "model.pt")
    assert facts["layout"] == "volume" and facts["spatial_size"] == [20, 16, 12] and facts["slice_axis"] == 2
    assert facts["num_frames"] == 12 and facts["num_kept"] == 3 and facts["in_channels"] == 1
    assert facts["method"] == "uniform" and facts["keep_ratio"] == 0.25 and facts["temporal_head"] == "mean"
    assert facts["label_names"] == ["a", "b", "c"] and facts["recipe"] == RECIPE
    assert facts["datalist"] == "/data/list.json" and facts["datalist_sha256"] == "ab" * 32
    # the data source is this model's datalist, not the template's "Synthetic volumes ... (default); ..." (trial T56)
    assert card["data_source"] == ("the user's own studies: datalist 'list.json' (SHA-256 abababababababab...); path "
                                   "and digest in das_model#datalist, #datalist_sha256")
    # network_data_format from the data, the rest of the template kept
    image = card["network_data_format"]["inputs"]["image"]
    pred = card["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [20, 16, 12]
    assert image["channel_def"] == {"0": "image"}
    assert pred["num_channels"] == 3 and pred["channel_def"] == {"0": "a", "1": "b", "2": "c"}
    assert card["label_classes"] == "integer class index, 3 classes: 0 a, 1 b, 2 c"  # not the template's examples
    template = json.loads(TEMPLATE.read_text())
    assert card["description"] == template["description"] and card["version"] == template["version"]
    assert card_input_shape(card) == [1, 1, 20, 16, 12]
    if SCHEMA.is_file():
        from monai.bundle import verify_metadata

        verify_metadata(meta_file=str(tmp_path / "models" / "metadata.json"), filepath=str(SCHEMA))


def test_a_ready_made_datasets_card_names_it_after_the_templates_sources():
    from monai_das.handlers import build_model_card

    template = json.loads(TEMPLATE.read_text())
    card = build_model_card(template, {**INFO, "source": "vesselmnist3d", "datalist": None, "datalist_sha256": None})
    assert card["data_source"] == template["data_source"] + ". This model: dataset 'vesselmnist3d'"


def test_no_metric_is_written_when_none_was_measured(tmp_path):
    """No validation replaced the checkpoint: the card has the facts and no eval_metrics at all."""
    trainer, _ = train(tmp_path, save=False)
    trainer.run([0], max_epochs=1)
    card = read(tmp_path)
    assert "eval_metrics" not in card and "checkpoint_sha256" not in card[CARD_KEY]
    assert card[CARD_KEY]["spatial_size"] == [20, 16, 12]


def test_evaluation_adds_test_metrics(tmp_path, caplog):
    trainer, _ = train(tmp_path)
    trainer.run([0], max_epochs=3)
    ckpt = tmp_path / "models" / "model.pt"

    def evaluate(metrics: dict, **kwargs) -> dict:
        engine = Engine(lambda e, b: None)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(metrics))
        saver(tmp_path, checkpoint=ckpt, metric_prefix="test_", **{"split": "test", **kwargs}).attach(engine)
        engine.run([0])
        return read(tmp_path)

    card = evaluate({"test_auc": 0.9, "test_accuracy": 0.75, "test_balanced_accuracy": 0.7, "test_loss": math.nan})
    assert card["eval_metrics"] == {"val_auc": 0.8, "val_accuracy": 0.7, "val_loss": 0.5, "auc": 0.9,
                                    "accuracy": 0.75, "balanced_accuracy": 0.7}  # loss was NaN: not measured
    assert card[CARD_KEY]["evaluation"]["split"] == "test" and card[CARD_KEY]["validation"]["best_epoch"] == 2
    # an evaluation of the validation split (validate#split val): its metrics are no test metrics, the card keeps its
    # own (they were replaced by the validation split's, said only by evaluation#split; trial N)
    assert evaluate({"test_auc": 0.99}, split="val") == card
    # the same model evaluated at another k (any k at inference): the card keeps describing it at its trained k, the
    # default k of inference and exports, with the metrics measured there
    assert evaluate({"test_auc": 0.6}, keep_ratio=0.5) == card
    # another keep_ratio that keeps as many frames (3 of 12) is the trained k: its metrics go into the card
    card = evaluate({"test_auc": 0.7}, keep_ratio=0.26)
    assert card["eval_metrics"] == {"val_auc": 0.8, "val_accuracy": 0.7, "val_loss": 0.5, "auc": 0.7}
    assert card[CARD_KEY]["num_kept"] == 3
    # and the reports of a run at another k go beside those at the trained k, never over them
    from monai_das.handlers import output_dir_at_k

    assert output_dir_at_k(tmp_path / "eval", ckpt, 3) == str(tmp_path / "eval")
    assert output_dir_at_k(tmp_path / "eval", ckpt, 6) == str(tmp_path / "eval" / "k6")
    assert output_dir_at_k(tmp_path / "eval", ckpt, None) == str(tmp_path / "eval")
    assert output_dir_at_k(tmp_path / "eval", tmp_path / "none.pt", 6) == str(tmp_path / "eval")  # no card: as given
    # the default frame budget of evaluation and bundle inference is the card's trained one (a fixed 0.5 ran a model
    # trained at 0.25 at twice its k, where the Deploy app runs the card's; trial T56); no card: the default given
    from monai_das.handlers import trained_options

    trained = trained_options(ckpt, {"keep_ratio": 0.5})["keep_ratio"]
    assert trained == card[CARD_KEY]["keep_ratio"] == 0.26  # its k: 3 of 12 frames
    assert trained_options(tmp_path / "none.pt", {"keep_ratio": 0.5}) == {"keep_ratio": 0.5}
    # an evaluation that could not measure the AUC (a class absent from a small test list: NaN) replaces the earlier
    # evaluation's metrics as a whole: no AUC of another test set beside this one's accuracy
    card = evaluate({"test_auc": math.nan, "test_accuracy": 0.5}, keep_ratio=0.26)
    assert card["eval_metrics"] == {"val_auc": 0.8, "val_accuracy": 0.7, "val_loss": 0.5, "accuracy": 0.5}
    # another checkpoint in place (copied in from elsewhere: maybe another kind of model): the card is left describing
    # its own file, not rewritten to vouch for this one, and inference on it is warned that nothing can be checked
    torch.save({"other": torch.tensor(1)}, ckpt)
    assert evaluate({"test_auc": 0.55}) == card and card[CARD_KEY]["checkpoint_sha256"] != sha256(ckpt)
    assert output_dir_at_k(tmp_path / "eval", ckpt, 6) == str(tmp_path / "eval")  # the card describes another file
    assert trained_options(ckpt, {"keep_ratio": 0.5}) == {"keep_ratio": 0.5}  # nor its keep ratio
    from monai_das.handlers import check_model_card

    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.model_card"):
        check_model_card(ckpt, {})
    assert "was written for another file than" in caplog.text and "cannot be checked" in caplog.text


def test_the_trainings_options_come_from_the_card(tmp_path, caplog, monkeypatch):
    """Evaluation and batch inference default to the options a model was trained with (its card): a model trained on
    a datalist with --slice_axis 2 ran on new studies only with the datalist and every option typed again."""
    from monai_das.handlers import trained_options
    from monai_das.utils.io import file_digest

    ckpt, datalist = tmp_path / "run" / "models" / "model.pt", tmp_path / "datalist.json"
    ckpt.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, ckpt)
    datalist.write_text("{}")
    facts = {"layout": "volume", "source": "datalist", "datalist": str(datalist), "slice_axis": 2,
             "spatial_size": [24, 24, 16], "label_names": ["normal", "lesion"], "method": "dps", "keep_ratio": 0.25,
             "encoder": "DenseNet121", "encoder_kwargs": {"spatial_dims": 2, "pretrained": True, "weights_path": "/x"},
             "recipe": {"axcodes": "LPS", "pixdim": [1, 1, 2], "intensity_range": [-100, 200], "percentiles": None},
             "run_params": {"dataset": "datalist", "dataset_dir": str(tmp_path), "data_dir": "/not/here", "size": None,
                            "synthetic_options": None, "data_seed": 3},
             "checkpoint_sha256": file_digest(ckpt)}
    card = ckpt.parent / "metadata.json"
    card.write_text(json.dumps({CARD_KEY: facts}))
    defaults = {"method": "das", "dataset": "synthetic", "datalist": None, "dataset_dir": None, "data_dir": None,
                "size": 28, "synthetic_options": None, "label_names": None, "keep_ratio": 0.5, "slice_axis": 0,
                "spatial_size": None, "axcodes": "RAS", "pixdim": None, "intensity_range": None,
                "percentiles": [0.5, 99.5], "encoder": None, "encoder_kwargs": {}, "data_seed": 0, "num_frames": 32}
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.model_card"):
        got = trained_options(ckpt, defaults)
    assert got == {**defaults, "method": "dps", "dataset": "datalist", "datalist": str(datalist),
                   "dataset_dir": str(tmp_path), "label_names": ["normal", "lesion"], "keep_ratio": 0.25,
                   "slice_axis": 2, "spatial_size": [24, 24, 16], "axcodes": "LPS", "pixdim": [1, 1, 2],
                   "intensity_range": [-100, 200], "percentiles": None, "encoder": "DenseNet121",
                   # weights come from the checkpoint: a file or download the card names is never taken (and a
                   # network that downloads by default is built with pretrained=False, as the exports rebuild it)
                   "encoder_kwargs": {"spatial_dims": 2, "pretrained": False}, "data_seed": 3}
    assert "slice_axis 2" in caplog.text and "from the model card" in caplog.text and "data_dir" not in caplog.text
    from monai_das.handlers.model_card import _trained_value

    # EfficientNetBN downloads ImageNet weights by default: rebuilt without (as the exports rebuild it); the project's
    # MobileNetV3Small (encoder None, no download by default) keeps its options as given (they key the predictions)
    assert _trained_value("encoder_kwargs", {"encoder": "EfficientNetBN", "encoder_kwargs": {"model_name": "b0"}}) \
        == {"model_name": "b0", "pretrained": False}
    assert _trained_value("encoder_kwargs", {"encoder": None, "encoder_kwargs": {}}) == {}
    # options typed on the command line are not said to come from the card (another datalist: nor its classes)
    monkeypatch.setattr(sys, "argv", ["/m/monai/bundle/__main__.py", "run", "--config_file", "x.json",
                                      "--slice_axis", "0", "--datalist", "site2.json"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.model_card"):
        trained_options(ckpt, defaults)
    assert "method \"dps\"" in caplog.text and "slice_axis" not in caplog.text and "label_names" not in caplog.text
    monkeypatch.undo()
    # a list (or data folder) in the folder the model came in is not followed: a received model's list could name
    # any file here, to be read and its name and prediction written (trial 60b); told how to give it
    shipped = ckpt.parent.parent / "shipped.json"
    shipped.write_text("{}")
    card.write_text(json.dumps({CARD_KEY: {**facts, "datalist": str(shipped), "run_params": {
        **facts["run_params"], "dataset_dir": "/", "data_dir": str(ckpt.parent)}}}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.model_card"):
        got = trained_options(ckpt, {**defaults, "dataset": "pocus"})
    assert (got["datalist"], got["dataset_dir"], got["data_dir"]) == (None, None, None)
    assert f"lies in the model's own folder '{ckpt.parent.parent}': a list a model brings along is not followed" \
        in caplog.text
    # a value that reads as config code: refused naming the card and the option (it was a TypeError far away)
    for key, value in (("sampler_kwargs", {"tau0": "$__import__('os').getcwd()"}), ("data_seed", "@seed")):
        card.write_text(json.dumps({CARD_KEY: {**facts, key: value} if key == "sampler_kwargs" else
                                    {**facts, "run_params": {**facts["run_params"], key: value}}}))
        with pytest.raises(ValueError, match=rf"model card '.*metadata\.json': the training's {key} = .* holds a "
                                             r"string that starts with '[$@]'.*altered or damaged; give --" + key):
            trained_options(ckpt, {**defaults, "sampler_kwargs": {}})
        # given on the command line, as the message says: the card's value is not used, so not refused (review)
        monkeypatch.setattr(sys, "argv", ["/m/monai/bundle/__main__.py", "run", "--config_file", "x.json",
                                          f"--{key}", "0"])
        trained_options(ckpt, {**defaults, "sampler_kwargs": {}})
        monkeypatch.undo()
    # a link inside the received folder does not move its root (models/model.pt -> models/a/b/model.pt), and a
    # checkpoint outside a models/ folder has its own folder as root (review)
    from monai_das.handlers.model_card import model_root

    assert model_root(ckpt) == ckpt.parent.parent and model_root(tmp_path / "x.pt") == tmp_path
    (ckpt.parent / "a").mkdir()
    linked = ckpt.parent / "a" / "model.pt"
    ckpt.rename(linked)
    ckpt.symlink_to(linked)
    card.write_text(json.dumps({CARD_KEY: {**facts, "datalist": str(shipped), "checkpoint_sha256": file_digest(ckpt)}}))
    assert trained_options(ckpt, defaults)["datalist"] is None
    ckpt.unlink()
    linked.rename(ckpt)
    card.write_text(json.dumps({CARD_KEY: facts}))
    # batch inference on --input needs the training's classes and grid, not its lists; nor a datalist that is gone
    # (said, for an evaluation that then needs one)
    assert trained_options(ckpt, defaults, datalist=False)["datalist"] is None
    datalist.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.model_card"):
        assert trained_options(ckpt, defaults)["datalist"] is None
    assert f"the training's datalist '{datalist}'" in caplog.text and "is not here: give --datalist" in caplog.text
    monkeypatch.setattr(sys, "argv", ["/m/monai/bundle/__main__.py", "run", "--config_file", "x.json",
                                      "--datalist", "site2.json"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.model_card"):
        trained_options(ckpt, defaults)  # another datalist given: nothing to say of the training's
    assert "is not here" not in caplog.text
    monkeypatch.undo()
    # a model trained on a ready-made dataset: its grid, classes and intensity steps are the dataset's, not options
    facts.update(source="synthetic", run_params={"dataset": "synthetic", "size": 32, "synthetic_options": {"noise": 1}})
    card.write_text(json.dumps({CARD_KEY: facts}))
    got = trained_options(ckpt, defaults)
    assert got["size"] == 32 and got["synthetic_options"] == {"noise": 1} and got["dataset"] == "synthetic"
    assert [got[k] for k in ("label_names", "spatial_size", "axcodes", "intensity_range", "dataset_dir")] == \
        [None, None, "RAS", None, None]
    # clips of a datalist: square frames are --size (so that another --size given is compared, not overruled)
    facts.update(layout="video", source="datalist", spatial_size=[24, 24], num_frames=8, run_params={"size": None})
    card.write_text(json.dumps({CARD_KEY: facts}))
    got = trained_options(ckpt, defaults)
    assert (got["size"], got["spatial_size"], got["num_frames"], got["slice_axis"]) == (24, None, 8, 0)
    facts.update(spatial_size=[24, 32])
    card.write_text(json.dumps({CARD_KEY: facts}))
    assert [trained_options(ckpt, defaults)[k] for k in ("size", "spatial_size")] == [28, [24, 32]]
    # a card of another file, or none: the defaults
    torch.save({"w": torch.ones(1)}, ckpt)
    assert trained_options(ckpt, defaults) == defaults


def test_card_describes_a_checkpoint_by_its_recorded_digest():
    from monai_das.handlers.model_card import card_describes

    card = {CARD_KEY: {"checkpoint_sha256": "ab" * 32, "num_kept": 4}}
    assert card_describes(card, "ab" * 32) is True
    assert card_describes(card, "cd" * 32) is False
    # nothing recorded on either side, or not a card: nothing can be said (each caller decides)
    assert card_describes({CARD_KEY: {"num_kept": 4}}, "ab" * 32) is None
    assert card_describes(card, None) is None
    assert card_describes({"name": "a bundle's metadata"}, "ab" * 32) is None
    assert card_describes(None, "ab" * 32) is None


def test_a_card_whose_outputs_disagree_with_its_classes_is_refused(tmp_path):
    """Training writes the classes twice (das_model#label_names, the output's channel_def): a card edited to claim 3
    outputs for a 2-class model is refused before inference or an export embeds it."""
    from monai_das.handlers import check_model_card

    trainer, _ = train(tmp_path)
    trainer.run([0], max_epochs=1)
    ckpt, path = tmp_path / "models" / "model.pt", tmp_path / "models" / "metadata.json"
    card = read(tmp_path)
    names = card[CARD_KEY]["label_names"]
    facts = saver(tmp_path).facts  # this run's, as training's
    check_model_card(ckpt, facts, path)  # as training wrote it
    card["network_data_format"]["outputs"]["pred"]["num_channels"] = len(names) + 1
    path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match=rf"describes {len(names)} classes .*outputs#pred says \{{'num_channels': "
                                         rf"{len(names) + 1}\}}: the card was edited"):
        check_model_card(ckpt, facts, path)


def test_evaluation_refuses_other_classes_than_the_checkpoints(tmp_path):
    trainer, _ = train(tmp_path)
    trainer.run([0], max_epochs=3)
    ckpt = tmp_path / "models" / "model.pt"
    engine = Engine(lambda e, b: None)
    saver(tmp_path, info={**INFO, "label_names": ["A", "b", "c"]}, checkpoint=ckpt, metric_prefix="test_",
          split="test").attach(engine)
    with pytest.raises(ValueError, match=r"'/data/list\.json' gives the classes \['A', 'b', 'c'\].*model\.pt' was "
                                         r"trained with \['a', 'b', 'c'\] \(its model card '.*'; first class 0: 'A' "
                                         r"against 'a'\)"):  # named: with many classes both lists end early (r72f)
        engine.run([0])
    assert read(tmp_path)[CARD_KEY]["label_names"] == ["a", "b", "c"]  # the card is left as it was
    torch.save({"other": torch.tensor(1)}, ckpt)  # another checkpoint: its card says nothing about its classes
    engine = Engine(lambda e, b: None)
    saver(tmp_path, info={**INFO, "label_names": ["A", "b", "c"]}, checkpoint=ckpt, metric_prefix="test_",
          split="test").attach(engine)
    engine.run([0])


def test_runs_on_a_checkpoint_must_use_its_training_settings(tmp_path):
    """An evaluation or inference whose frames, grid, preprocessing or network keys differ from the card of the
    checkpoint is refused, naming each key with both values and the options to pass; what may change at inference
    (k, min_frames) and a card of another file are not checked."""
    from monai_das.handlers import check_model_card
    from monai_das.handlers.model_card import card_mismatches

    trainer, _ = train(tmp_path)
    trainer.run([0], max_epochs=3)
    ckpt = tmp_path / "models" / "model.pt"
    keys = dict(method="uniform", keep_ratio=0.25, temporal_head="mean", encoder=None, encoder_kwargs={})

    def facts(info=INFO, recipe=RECIPE, **kw):
        return model_facts(info, recipe, **{**keys, **kw})

    check_model_card(ckpt, facts())  # as trained
    check_model_card(ckpt, facts(keep_ratio=0.5, recipe={**RECIPE, "min_frames": 1}))  # any k, stills accepted
    # percentiles are unused under a fixed intensity_range; a step the card does not record is not compared; where
    # pretrained weights came from does not matter once the checkpoint is loaded
    check_model_card(ckpt, facts(recipe={**RECIPE, "percentiles": [1, 99], "new_step": 3},
                                 encoder_kwargs={"pretrained": True, "weights_path": "/elsewhere/w.pth"}))
    grid = {**INFO, "spatial_size": [20, 16, 24], "num_frames": 24, "image_shape": [1, 20, 16, 24]}
    with pytest.raises(ValueError, match=r"model\.pt' was trained with other settings than this run gives \(its model "
                                         r"card '.*metadata\.json'\): spatial_size: trained \[20, 16, 12\], this run "
                                         r"\[20, 16, 24\]; num_frames: trained 12, this run 24\..*Give the training's "
                                         r"options: --spatial_size \"\[20, 16, 12\]\" \(or leave them out: "
                                         r"evaluation and batch inference take the training's from the model "
                                         r"card\)\.$"):
        check_model_card(ckpt, facts(info=grid, recipe={**RECIPE, "spatial_size": [20, 16, 24]}))
    with pytest.raises(ValueError, match=r"recipe\.intensity_range: trained \[-1000, 400\], this run None.*"
                                         r"--intensity_range '\[-1000, 400\]'"):
        check_model_card(ckpt, facts(recipe={**RECIPE, "intensity_range": None}))
    with pytest.raises(ValueError, match=r"temporal_head: trained 'mean', this run 'attention'.*--temporal_head mean"):
        check_model_card(ckpt, facts(temporal_head="attention"))
    with pytest.raises(ValueError, match=r"label_names: trained \['a', 'b', 'c'\], this run \['0', '1', '2'\].*"
                                         r"the classes \['a', 'b', 'c'\] in this order: --datalist /data/list\.json"):
        check_model_card(ckpt, facts(info={**INFO, "label_names": ["0", "1", "2"]}))
    with pytest.raises(ValueError, match=r"recipe\.percentiles: trained \[0\.5, 99\.5\], this run \[1, 99\]"):
        check_model_card(ckpt, facts(recipe={**RECIPE, "intensity_range": None, "percentiles": [1, 99]},
                                     info={**INFO}))
    from monai_das.handlers.model_card import _option

    preset = {"layout": "volume", "datalist": None, "label_names": ["0", "1"]}  # MedMNIST3D / synthetic: --size
    assert _option("spatial_size", [64, 64, 64], preset) == "--size 64"
    assert _option("spatial_size", [20, 16, 12], {**preset, "datalist": "/d.json"}) == '--spatial_size "[20, 16, 12]"'
    assert _option("label_names", ["0", "1"], preset) == "the training's --dataset (classes ['0', '1'])"
    # the dataset named where the card records it (trial T59a: an organmnist3d model run on fracturemnist3d)
    organ = {**preset, "run_params": {"dataset": "organmnist3d"}}
    assert _option("label_names", ["0", "1"], organ) == "--dataset organmnist3d (the training's: classes ['0', '1'])"
    assert _option("in_channels", 3, preset).startswith("images with 3 channel(s)")
    video = {"layout": "video", "spatial_size": [32, 32], "num_frames": 16, "in_channels": 1, "recipe": {}}
    assert [k for k, _, _ in card_mismatches(video, {**video, "spatial_size": [64, 64], "num_frames": 32})] == [
        "spatial_size", "num_frames"]
    # the evaluation refuses it before anything is scored, and leaves the card as it was
    engine = Engine(lambda e, b: None)
    saver(tmp_path, info=grid, recipe={**RECIPE, "spatial_size": [20, 16, 24]}, checkpoint=ckpt,
          metric_prefix="test_", split="test").attach(engine)
    with pytest.raises(ValueError, match="num_frames: trained 12, this run 24"):
        engine.run([0])
    assert read(tmp_path)[CARD_KEY]["num_frames"] == 12
    # a model of a ready-made dataset (no datalist): its intensity steps are the dataset's own, not compared with a
    # run on that dataset (older cards recorded unused options), but compared with a run on a datalist's files
    preset = {**INFO, "datalist": None, "datalist_sha256": None}
    trained = facts(info=preset, recipe={**RECIPE, "intensity_range": [0.0, 1.0], "percentiles": None})
    assert card_mismatches(trained, facts(info=preset)) == []
    assert [k for k, _, _ in card_mismatches(trained, facts())] == ["recipe.intensity_range"]
    # the training's DICOM modalities are a fact of its data, no step: not compared (review H4)
    assert card_mismatches(facts(recipe={**RECIPE, "modalities": ["CT"]}), facts(recipe={**RECIPE})) == []
    # no card, or a card of another file: nothing to compare with
    check_model_card(ckpt, facts(temporal_head="attention"), card_path=tmp_path / "nowhere.json")
    torch.save({"other": torch.tensor(1)}, ckpt)
    check_model_card(ckpt, facts(temporal_head="attention"))


def test_resumed_training_keeps_metrics_of_its_best_checkpoint(tmp_path):
    trainer, _ = train(tmp_path)
    trainer.run([0], max_epochs=2)
    first = read(tmp_path)
    # a resumed run whose validations do not beat the best model (the saver keeps it): its card still carries that
    # model's metrics
    trainer, _ = train(tmp_path, val=[{"val_auc": 0.1, "val_loss": 2.0}] * 2, save=False)
    trainer.run([0], max_epochs=2)
    assert read(tmp_path)["eval_metrics"] == first["eval_metrics"] == {"val_auc": 0.8, "val_accuracy": 0.7,
                                                                       "val_loss": 0.5}
    # evaluated on the test split, then trained on (resumed to 4 epochs, or rerun with nothing left to train) without
    # a better model: the test metrics measured on that same file stay, and the card says how long it was trained
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update({"test_auc": 0.9}))
    saver(tmp_path, checkpoint=tmp_path / "models" / "model.pt", metric_prefix="test_", split="test").attach(engine)
    engine.run([0])
    evaluated = read(tmp_path)
    assert evaluated["eval_metrics"]["auc"] == 0.9 and evaluated[CARD_KEY]["evaluation"]["split"] == "test"
    trainer, _ = train(tmp_path, val=[{"val_auc": 0.1, "val_loss": 2.0}] * 4, save=False)
    trainer.run([0], max_epochs=4)
    card = read(tmp_path)
    assert card["eval_metrics"] == evaluated["eval_metrics"]
    assert card[CARD_KEY]["evaluation"] == evaluated[CARD_KEY]["evaluation"]
    assert card[CARD_KEY]["validation"] == {**first[CARD_KEY]["validation"], "epochs": 4}
    assert first[CARD_KEY]["validation"]["best_epoch"] == 2


def test_video_card_and_network_kept_frames(tmp_path):
    info = {**INFO, "layout": "video", "slice_axis": 0, "num_frames": 10, "in_channels": 3, "spatial_size": [24, 20],
            "image_shape": [10, 3, 24, 20]}
    net = build_classifier("das", 3, num_frames=10, in_channels=3, keep_ratio=0.3, layout="video")
    card = saver(tmp_path, info=info, recipe={"layout": "video", "num_frames": 10, "spatial_size": [24, 20]},
                 method="das", keep_ratio=0.3, network=net).write({"val_auc": 0.5})
    image = card["network_data_format"]["inputs"]["image"]
    # MONAI's tools build (1, num_channels, *spatial_shape) = (1, T, C, H, W)
    assert image["num_channels"] == 10 and image["spatial_shape"] == [3, 24, 20] and len(image["channel_def"]) == 10
    assert card_input_shape(card) == [1, 10, 3, 24, 20]
    assert card[CARD_KEY]["num_kept"] == 3 and card[CARD_KEY]["slice_axis"] is None
    assert read(tmp_path) == json.loads(json.dumps(card))


def test_only_rank0_writes(tmp_path, monkeypatch):
    import monai_das.handlers.model_card as mc

    monkeypatch.setattr(mc, "rank_world", lambda: (1, 2))
    trainer, _ = train(tmp_path)
    trainer.run([0], max_epochs=2)
    assert not (tmp_path / "models" / "metadata.json").exists()


def test_needs_the_data_facts(tmp_path):
    with pytest.raises(ValueError, match=r"model facts .*facts=@model_facts\), got dict without \['num_frames', "
                                         r"'label_names'\]"):
        ModelCardSaver(output_dir=tmp_path, facts={"layout": "volume"})
    with pytest.raises(ValueError, match="lack"):
        model_facts({"layout": "volume"})


def test_missing_template_warns_once_with_the_way_out(tmp_path, caplog):
    """A card_meta_file that does not exist: one warning naming the way out (--meta_file)."""
    trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)
    evaluator.state.key_metric_name, evaluator.state.best = "val_auc", -math.inf
    evaluator.add_event_handler(Events.EPOCH_COMPLETED,
                                lambda e: setattr(e.state, "metrics", dict(VAL[trainer.state.epoch - 1])))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
    saver(tmp_path, meta_file=tmp_path / "nowhere" / "metadata.json", evaluator=evaluator).attach(trainer)
    with caplog.at_level(logging.WARNING):
        trainer.run([0], max_epochs=3)
    warnings = [r.getMessage() for r in caplog.records if "not found: the model card" in r.getMessage()]
    assert len(warnings) == 1 and "--meta_file" in warnings[0]
    card = read(tmp_path)
    assert CARD_KEY in card and "network_data_format" in card and "version" not in card


def _train_with(tmp_path: Path, info: dict, **kwargs) -> None:
    """One training epoch whose card is written from ``info``."""
    evaluator = Engine(lambda e, b: None)
    evaluator.state.key_metric_name, evaluator.state.best = "val_auc", -math.inf
    ckpt = tmp_path / "models" / "model.pt"

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metrics(e):
        e.state.metrics = dict(VAL[0])
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"epoch": torch.tensor(1)}, ckpt)

    trainer = Engine(lambda e, b: None)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
    saver(tmp_path, info=info, evaluator=evaluator, **kwargs).attach(trainer)
    trainer.run([0], max_epochs=1)


def _evaluate_with(tmp_path: Path, info: dict, split: str = "test", recipe: dict = RECIPE) -> dict:
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update({"test_auc": 0.9}))
    saver(tmp_path, info=info, recipe=recipe, checkpoint=tmp_path / "models" / "model.pt", metric_prefix="test_",
          split=split).attach(engine)
    engine.run([0])
    return read(tmp_path)


def test_evaluation_refuses_splits_holding_training_items(tmp_path):
    """A POCUS model of fold 0 evaluated with --fold 2 was scored on its own training patients (fold 2's test fold is
    a training fold of fold 0), and the card's test metrics replaced by those."""
    pocus = {**INFO, "source": "pocus", "datalist": None, "datalist_sha256": None,
             "splits": {"dataset": "pocus", "fold": 0, "num_folds": 5, "probe": "convex", "seed": 0}}
    _train_with(tmp_path, pocus)  # the card of a training on fold 0
    assert read(tmp_path)[CARD_KEY]["splits"]["fold"] == 0
    before = read(tmp_path)
    for change, option in (({"fold": 2}, "--fold 0"), ({"seed": 1}, "--data_seed 0"),
                           ({"num_folds": 4}, "--num_folds 5")):
        other = {**pocus, "splits": {**pocus["splits"], **change}}
        with pytest.raises(ValueError, match=rf"trained on other splits of 'pocus'.*{list(change)[0]}: trained .*"
                                             rf"would hold items the checkpoint was trained or validated on.*{option}"):
            _evaluate_with(tmp_path, other)
        assert read(tmp_path) == before  # the card is left as it was
    card = _evaluate_with(tmp_path, pocus)  # the training's fold: evaluated
    assert card["eval_metrics"]["auc"] == 0.9 and card[CARD_KEY]["evaluation"]["data"]["splits"]["fold"] == 0


def test_evaluation_on_other_data_keeps_the_trainings_provenance(tmp_path, caplog):
    """Evaluating with an edited datalist rewrote the card's datalist and digest (the training's provenance) with the
    evaluation's; then its test metrics too (an external list of 3 studies replaced those of the training's test
    split, trial X): other data leaves the card as it is. A datalist's validation split drawn with another seed is
    refused, its test list is not."""
    ident = {"dataset": "datalist", "datalist_sha256": "ab" * 32, "seed": 0, "val_fraction": 0.2}
    info = {**INFO, "splits": ident}
    _train_with(tmp_path, info)
    own = _evaluate_with(tmp_path, info)  # the training's own test split: into the card
    assert own["eval_metrics"]["auc"] == 0.9 and own[CARD_KEY]["evaluation"]["data"]["datalist"] == "/data/list.json"
    edited = {**info, "datalist": "/data/edited.json", "datalist_sha256": "cd" * 32,
              "splits": {**ident, "datalist_sha256": "cd" * 32}}
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.model_card"):
        card = _evaluate_with(tmp_path, edited)
    assert "on other data than it was trained with ('/data/edited.json'" in caplog.text
    assert "is left as it is" in caplog.text and card == own
    assert (card[CARD_KEY]["datalist"], card[CARD_KEY]["datalist_sha256"]) == ("/data/list.json", "ab" * 32)
    assert card[CARD_KEY]["splits"] == ident
    reseeded = {**info, "splits": {**ident, "seed": 3}}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.model_card"):
        _evaluate_with(tmp_path, reseeded)  # the same test list: no warning
    assert "other data" not in caplog.text
    with pytest.raises(ValueError, match=r"seed: trained 0, this run 3.*validation split would hold.*--data_seed 0"):
        _evaluate_with(tmp_path, reseeded, split="validation")
    # the validation list drawn from the training's datalist file edited since: other groups, training items among
    # them; another datalist file is other data (warned: a digest cannot tell an edit from an external list)
    edited_in_place = {**edited, "datalist": "/data/list.json"}
    with pytest.raises(ValueError, match=r"datalist_sha256: trained '/data/list\.json', this run '/data/list\.json'"
                                         r".*--datalist /data/list\.json"):
        _evaluate_with(tmp_path, edited_in_place, split="validation")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.model_card"):
        _evaluate_with(tmp_path, edited, split="validation")
    assert "on other data than it was trained with" in caplog.text


def test_an_evaluation_keeps_the_trainings_recipe_and_the_card_gives_min_frames_and_val_fraction(tmp_path):
    """evaluate.json took train.json's min_frames 2 for a model trained with 1 and wrote it into the card's recipe:
    the Deploy app's eager engine (the card) then refused one-slice studies its ONNX export (the card embedded at
    export) classified; and a validation evaluation or inference of a model trained with another val_fraction
    needed it typed again, or predicted another validation list without a word (trial T66a)."""
    from monai_das.handlers import trained_options

    ident = {"dataset": "datalist", "datalist_sha256": "ab" * 32, "seed": 0, "val_fraction": 0.4}
    info = {**INFO, "splits": ident}
    recipe = {**RECIPE, "min_frames": 1, "geometry": {"frame_aspect": [1.0, 1.2]}}
    _train_with(tmp_path, info, recipe=recipe)
    card = _evaluate_with(tmp_path, info, recipe={**RECIPE, "min_frames": 2, "geometry": {"frame_aspect": [3.0, 3.1]}})
    assert card["eval_metrics"]["auc"] == 0.9 and card[CARD_KEY]["recipe"] == recipe
    assert card[CARD_KEY]["evaluation"]["min_frames"] == 2  # what the metrics were measured with (review)
    ckpt = tmp_path / "models" / "model.pt"
    assert trained_options(ckpt, {"min_frames": 2, "val_fraction": 0.2}) == {"min_frames": 1, "val_fraction": 0.4}
    with pytest.raises(ValueError, match=r"val_fraction: trained 0\.4, this run 0\.2.*--val_fraction 0\.4") as e:
        _evaluate_with(tmp_path, {**info, "splits": {**ident, "val_fraction": 0.2}}, split="validation")
    assert "test metrics" not in str(e.value)  # a validation evaluation never writes them


def test_card_records_how_the_model_was_trained_and_its_input(tmp_path):
    """The card had no learning rates, class weights or warm-up (MLflow had them), and its image_classes said
    "default 28x28x28" for a 20x16x12 model (trial X): run_params come with the training and stay after an evaluation;
    image_classes describe this model's input."""
    params = {"lr": 0.001, "class_weights": "balanced", "sampler_warmup_epochs": 1, "recipe": {"axcodes": "RAS"}}
    _train_with(tmp_path, {**INFO, "splits": {"dataset": "datalist"}}, run_params=params)
    card = read(tmp_path)
    assert card[CARD_KEY]["run_params"] == params
    assert "[20, 16, 12]" in card["image_classes"] and "slice_axis 2" in card["image_classes"]
    assert "28x28x28" not in card["image_classes"]
    card = _evaluate_with(tmp_path, {**INFO, "splits": {"dataset": "datalist"}})
    assert card["eval_metrics"]["auc"] == 0.9 and card[CARD_KEY]["run_params"] == params


def test_external_evaluation_writes_beside_and_older_validation_split_is_refused(tmp_path):
    """An external test list's reports went to eval/, over the training's own test reports the card keeps (review
    H5): they go to eval/<its datalist file name>-<tag>/. A validation split this version draws with one patient of every
    class (every_class_validated) holds training patients of a checkpoint of the older split: refused."""
    from monai_das.handlers import evaluation_output_dir
    from monai_das.utils.io import input_folder_name

    ident = {"dataset": "datalist", "datalist_sha256": "ab" * 32, "seed": 0, "val_fraction": 0.2}
    info = {**INFO, "splits": ident}
    _train_with(tmp_path, info)
    ckpt, out = tmp_path / "models" / "model.pt", tmp_path / "eval"
    assert evaluation_output_dir(out, ckpt, info) == str(out)  # the training's data
    assert evaluation_output_dir(out, ckpt, {**info, "splits": {**ident, "seed": 3}}) == str(out)  # its test list
    external = {**info, "datalist": "/site2/ext_test.json", "splits": {**ident, "datalist_sha256": "cd" * 32}}
    assert evaluation_output_dir(out, ckpt, external) == str(out / input_folder_name("/site2/ext_test.json"))
    # two sites' datalists of one name (site2/datalist.json, site3/datalist.json) shared eval/datalist/: the second
    # evaluation replaced the first's reports; other datasets (no datalist) are told apart by their split identity
    names = {evaluation_output_dir(out, ckpt, {**external, "datalist": f"/site{i}/datalist.json"}) for i in (2, 3)}
    assert len(names) == 2 and all(Path(n).name.startswith("datalist.json-") for n in names)
    syn = [{**info, "datalist": None, "splits": {"dataset": "synthetic", "variant": v}} for v in ("a", "b")]
    names = [evaluation_output_dir(out, ckpt, s) for s in syn]
    assert names[0] != names[1] and Path(names[0]).name.startswith("synthetic-")
    assert evaluation_output_dir(out, tmp_path / "none.pt", external) == str(out)  # no card describing it
    newer = {**info, "splits": {**ident, "every_class_validated": True}}
    with pytest.raises(ValueError, match=r"every_class_validated: trained None, this run True.*train anew"):
        _evaluate_with(tmp_path, newer, split="validation")
    assert _evaluate_with(tmp_path, newer)["eval_metrics"]["auc"] == 0.9  # its test list is the training's


def test_an_external_evaluation_warns_about_renamed_copies_of_training_studies(tmp_path, caplog):
    """An external list compared with the training's by path passed a renamed copy of a training study (note 58):
    files of a training file's size are compared by content; other sizes are not read."""
    from monai_das.handlers.model_card import _copies_of_listed_files

    files = {name: tmp_path / name for name in ("a.nii.gz", "b.nii.gz", "copy_of_a.nii.gz", "c.nii.gz", "d.nii.gz")}
    files["a.nii.gz"].write_bytes(b"volume a" * 10)
    files["b.nii.gz"].write_bytes(b"volume b" * 10)
    files["copy_of_a.nii.gz"].write_bytes(b"volume a" * 10)
    files["c.nii.gz"].write_bytes(b"volume c" * 10)  # a training file's size, other bytes
    files["d.nii.gz"].write_bytes(b"other size")
    lists = [[{"image": str(files["a.nii.gz"]), "source_line": "list.json training[0]"}],
             [{"image": str(files["b.nii.gz"]), "source_line": "list.json validation[0]"}]]
    studies = [{"image": str(files[n]), "source_line": f"site2.json test[{i}]"}
               for i, n in enumerate(("copy_of_a.nii.gz", "c.nii.gz", "d.nii.gz"))]
    with caplog.at_level(logging.WARNING, logger="monai_das.data.datalist"):
        assert _copies_of_listed_files(lists, studies) == 1
    assert "site2.json test[0] = list.json training[0]" in caplog.text and "test[1]" not in caplog.text
    caplog.clear()
    assert _copies_of_listed_files(lists, studies[1:]) == 0 and not caplog.text


def test_a_capped_evaluation_leaves_the_cards_metrics_of_the_whole_split(tmp_path, caplog):
    """A --num_test 15 smoke evaluation replaced the test metrics of all 610 studies in the card (trial T59a): the
    card keeps those of the larger evaluation of the same split, with a warning; a full evaluation replaces them."""
    from types import SimpleNamespace

    trainer, _ = train(tmp_path)
    trainer.run([0], max_epochs=3)

    def evaluate(auc: float, n: int) -> dict:
        engine = Engine(lambda e, b: None)
        engine.data_loader = SimpleNamespace(dataset=list(range(n)))  # as MONAI's evaluators hold theirs
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update({"test_auc": auc}))
        saver(tmp_path, checkpoint=tmp_path / "models" / "model.pt", metric_prefix="test_", split="test").attach(engine)
        engine.run([0])
        return read(tmp_path)

    full = evaluate(0.9, 610)
    assert full["eval_metrics"]["auc"] == 0.9 and full[CARD_KEY]["evaluation"]["num_samples"] == 610
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.model_card"):
        assert evaluate(0.5, 15) == full
    assert "read 15 studies of the 'test' split, fewer than the 610 of the evaluation the model card" in caplog.text
    again = evaluate(0.8, 610)
    assert again["eval_metrics"]["auc"] == 0.8 and again[CARD_KEY]["evaluation"]["num_samples"] == 610
    # the bundles say the cap itself (BundleData.capped): the card is left even with no evaluation recorded before
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update({"test_auc": 0.1}))
    saver(tmp_path, checkpoint=tmp_path / "models" / "model.pt", metric_prefix="test_", split="test",
          num_items_cap=15).attach(engine)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.model_card"):
        engine.run([0])
    assert read(tmp_path) == again and "read 15 studies, a cap of the 'test' split" in caplog.text


def test_a_card_one_best_model_behind_gives_its_runs_options(tmp_path, caplog):
    """A training killed between replacing model.pt and rewriting its card left a card one best model behind; batch
    inference then ran on the defaults (another slice axis), warned as if the model were copied from elsewhere
    (trial T59b). The last.pt beside it tells the run: its settings agree with the card's, so the card's options are
    used, with a warning saying what happened; a last.pt of another run does not."""
    from monai_das.handlers import check_model_card, trained_options

    trainer, _ = train(tmp_path)
    trainer.run([0], max_epochs=3)
    ckpt = tmp_path / "models" / "model.pt"
    facts = read(tmp_path)[CARD_KEY]
    settings = {k: facts[k] for k in ("method", "keep_ratio", "slice_axis", "num_frames", "label_names",
                                      "spatial_size", "in_channels")}
    settings["preprocessing"] = dict(facts["recipe"])
    unfinished = {"iteration": 6, "epoch_length": 2, "max_epochs": 5}  # epoch 3 of 5
    torch.save({"settings": settings, "trainer": unfinished, "model": {}}, tmp_path / "models" / "last.pt")
    torch.save({"epoch": torch.tensor(4)}, ckpt)  # the next best model, its card not yet rewritten
    defaults = {"slice_axis": 9, "keep_ratio": 0.5}
    assert trained_options(ckpt, defaults) == {"slice_axis": facts["slice_axis"], "keep_ratio": facts["keep_ratio"]}
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.model_card"):
        check_model_card(ckpt, facts)  # checked against the card, as the run's own options
    with pytest.raises(ValueError, match=r"slice_axis: trained 2, this run 0"):
        check_model_card(ckpt, {**facts, "slice_axis": 0})
    assert "describes an earlier best model of the training that wrote" in caplog.text
    assert "--resume True" in caplog.text and "copied in" not in caplog.text
    # and the reports of an evaluation at another k go beside the trained k's then too (review of T59b's fix)
    from monai_das.handlers import output_dir_at_k

    other_k = facts["num_kept"] + 1
    assert output_dir_at_k(tmp_path / "eval", ckpt, other_k) == str(tmp_path / "eval" / f"k{other_k}")
    last = tmp_path / "models" / "last.pt"
    for other in ({"settings": {**settings, "label_names": ["x", "y"]}, "trainer": unfinished},  # another run's
                  {"settings": {**settings, "preprocessing": {**settings["preprocessing"], "intensity_range": [0, 9]}},
                   "trainer": unfinished},  # another intensity window: the card's recipe would be taken wrongly
                  {"settings": settings, "trainer": {**unfinished, "iteration": 10}}):  # finished: card rewritten
        torch.save({**other, "model": {}}, last)
        assert trained_options(ckpt, defaults) == defaults  # nothing vouches for the card
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.handlers.model_card"):
        check_model_card(ckpt, {})
    assert "was written for another file than" in caplog.text
