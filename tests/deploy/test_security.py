"""
A model file is data: loading one must never run code written in it (issue 11).

MONAI's ``ConfigParser`` evaluates ``$`` strings, and ``monai.bundle ckpt_export`` embeds the bundle's
``inference.json`` (and ``metadata.json``) in the TorchScript archive, so a hostile ``.ts`` could carry
``$__import__(...)`` strings. ``DASPredictor.from_path`` must read them as plain JSON and use literal values only.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from das_deploy_helpers import GRID, LABELS, WritesAFile, inference_config, metadata
from monai_das.deploy import DASPredictor


def touch(marker: Path, result: str = "volume") -> str:
    """A config expression that creates ``marker`` when evaluated (and then yields ``result``)."""
    return f"$__import__('pathlib').Path({str(marker)!r}).touch() or {result!r}"


def hostile_inference(tmp_path: Path) -> dict:
    """``inference_config()`` with expressions at every key the predictor reads, and elsewhere."""
    config = inference_config()
    config["network_def"].update(
        layout=touch(tmp_path / "layout"),
        slice_axis="@evil_axis",  # a reference to an expression: looked up, then refused
        in_channels=touch(tmp_path / "in_channels", 1),
    )
    config["evil_axis"] = touch(tmp_path / "evil_axis", 0)
    config["label_names"] = touch(tmp_path / "label_names", LABELS)
    config["elsewhere"] = touch(tmp_path / "elsewhere")
    return config


def save_ts(path: Path, extra_files: dict[str, str]) -> tuple[Path, torch.nn.Module]:
    """The real classifier (uniform sampler, 16³ grid) traced and saved as ``ckpt_export`` does, with ``extra_files``
    (named as ``monai.data.save_net_with_metadata`` names them: ``metadata.json``, ``inference.json``)."""
    from monai_das.networks import build_classifier

    torch.manual_seed(0)
    net = build_classifier("uniform", len(LABELS), num_frames=GRID[0], keep_ratio=0.25).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.rand(1, 1, *GRID), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={k: v.encode() for k, v in extra_files.items()})
    return path, net


def markers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.is_file() and p.suffix == "")


def check_predicts(pred: DASPredictor, net: torch.nn.Module) -> None:
    x = torch.rand(1, *GRID)
    out = pred.predict(x)
    with torch.no_grad():
        expected = torch.softmax(net(x[None]), 1)[0]
        kept = net.sample(x[None]).indices[0].tolist()
    torch.testing.assert_close(torch.tensor(out.probabilities), expected, rtol=0, atol=1e-5)
    assert out.kept_indices == kept and out.num_kept == 4


def test_hostile_embedded_inference_json_is_not_evaluated(tmp_path, caplog):
    path, net = save_ts(tmp_path / "m" / "model.ts", {
        "metadata.json": json.dumps(metadata()), "inference.json": json.dumps(hostile_inference(tmp_path)),
    })
    with caplog.at_level(logging.WARNING, logger="monai_das.deploy"):
        pred = DASPredictor.from_path(path, engine="torchscript")
    assert markers(tmp_path) == [], "loading a model file evaluated an expression embedded in it"
    # the refused values fall back to the metadata and the defaults, and the network still runs
    assert pred.spec.layout == "volume" and pred.spec.slice_axis == 0 and pred.spec.in_channels == 1
    assert pred.spec.labels == LABELS and pred.spec.spatial_size == GRID
    for key in ("network_def#layout", "network_def#slice_axis", "network_def#in_channels"):
        assert key in caplog.text
    assert f"inference.json embedded in '{path}'" in caplog.text
    check_predicts(pred, net)
    assert markers(tmp_path) == []


def test_literal_values_and_references_are_used(tmp_path):
    """Literal network_def values and whole-string ``@id`` references to literals still count (looked up)."""
    config = inference_config(slice_axis=1)  # network_def#slice_axis is "@slice_axis"
    config["label_names"] = ["a", "b"]
    meta = metadata()
    del meta["network_data_format"]["outputs"]["pred"]["channel_def"]  # labels then come from label_names
    path, _ = save_ts(tmp_path / "model.ts", {"metadata.json": json.dumps(meta), "inference.json": json.dumps(config)})
    pred = DASPredictor.from_path(path, engine="torchscript")
    assert pred.spec.slice_axis == 1 and pred.spec.layout == "volume" and pred.spec.labels == ["a", "b"]


def test_hostile_embedded_metadata_is_ignored(tmp_path, caplog):
    meta = metadata()
    fmt = meta["network_data_format"]
    fmt["inputs"]["image"]["num_channels"] = touch(tmp_path / "num_channels", 1)
    fmt["inputs"]["image"]["spatial_shape"] = touch(tmp_path / "spatial_shape", list(GRID))
    fmt["outputs"]["pred"]["channel_def"] = {"0": touch(tmp_path / "channel_def"), "1": "abnormal"}
    meta["elsewhere"] = touch(tmp_path / "elsewhere")
    path, net = save_ts(tmp_path / "model.ts", {"metadata.json": json.dumps(meta)})
    with caplog.at_level(logging.WARNING, logger="monai_das.deploy"):
        # the grid is not readable from the metadata any more
        pred = DASPredictor.from_path(path, spatial_size=GRID, engine="torchscript")
    assert markers(tmp_path) == []
    assert "network_data_format#inputs#image#num_channels" in caplog.text
    assert "network_data_format#outputs#pred#channel_def" in caplog.text
    assert f"metadata.json embedded in '{path}'" in caplog.text
    assert pred.spec.in_channels == 1 and pred.spec.labels == [] and pred.predict(torch.rand(1, *GRID)).label_name
    # the class names dropped: said in every report too, not only in the log (trial 60b)
    assert any("ignoring network_data_format#outputs#pred#channel_def" in w for w in pred.warnings)
    check_predicts(pred, net)
    with pytest.raises(ValueError, match="no metadata"):  # no grid left to read: refused, never a guessed default
        DASPredictor.from_path(path, engine="torchscript")
    assert markers(tmp_path) == []


def test_model_file_in_bundle_does_not_parse_neighbouring_config(tmp_path, checkpoint_bundle):
    """A bundle folder's config is trusted; the same config next to a model file passed on its own is not parsed."""
    root = tmp_path / "bundle"
    shutil.copytree(checkpoint_bundle[0], root)
    config = hostile_inference(tmp_path)
    config["network_def"]["layout"] = "$'vid' + 'eo'"  # harmless, shows whether the config was evaluated
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    save_ts(root / "models" / "model.ts", {"metadata.json": json.dumps(metadata())})
    pred = DASPredictor.from_path(root / "models" / "model.ts", engine="torchscript")
    assert pred.spec.layout == "volume" and markers(tmp_path) == []
    with pytest.raises(ValueError, match="config_file"):  # a checkpoint needs a config the user points at
        DASPredictor.from_path(root / "models" / "model.pt")
    assert markers(tmp_path) == []
    # the user points at the bundle: its config is code and is evaluated, as MONAI does with bundle configs
    trusted = inference_config()
    trusted["network_def"]["layout"] = touch(tmp_path / "trusted")
    (root / "configs" / "inference.json").write_text(json.dumps(trusted))
    assert DASPredictor.from_path(root).model_format == "torchscript" and markers(tmp_path) == ["trusted"]
    (tmp_path / "trusted").unlink()
    pred = DASPredictor.from_path(root / "models" / "model.pt", config_file=root / "configs" / "inference.json")
    assert pred.model_format == "checkpoint" and markers(tmp_path) == ["trusted"]


@pytest.mark.parametrize("text", ["not json", "[1, 2]", "[" * 100_000])
def test_broken_embedded_json_is_ignored(tmp_path, text, caplog):
    path, net = save_ts(tmp_path / "model.ts", {"metadata.json": text, "inference.json": text})
    with caplog.at_level(logging.WARNING, logger="monai_das.deploy"):
        pred = DASPredictor.from_path(path, spatial_size=GRID, engine="torchscript")
    assert "metadata.json" in caplog.text and str(path) in caplog.text
    check_predicts(pred, net)


def test_a_null_label_names_in_an_embedded_config_is_no_ignored_value(caplog):
    """The bundle's inference.json embedded in every .ts says label_names null (the data name the classes): every
    TorchScript run warned 'ignoring label_names = None ... only literal values are used' (trial V). Null is left to
    the card; an expression is still ignored with the warning."""
    from monai_das.deploy.spec import _data_labels

    with caplog.at_level(logging.WARNING, logger="monai_das.deploy"):
        assert _data_labels({"label_names": None}, "inference.json embedded in 'model.ts'") is None
    assert "ignoring" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="monai_das.deploy"):
        assert _data_labels({"label_names": "$__import__('os')"}, "inference.json embedded in 'model.ts'") is None
    assert "ignoring label_names" in caplog.text
    # the bundles' own "from the model card" (trained_options) expressions: left to the card, which is read as data,
    # without the warning every TorchScript run of an exported bundle gave (trial T58); never evaluated either way
    caplog.clear()
    for bundle in ("das_volume_classification", "das_video_classification"):
        config = json.loads((Path(__file__).resolve().parents[2] / "bundles" / bundle / "configs" / "inference.json")
                            .read_text())
        assert "@trained_options" in config["label_names"]
        with caplog.at_level(logging.WARNING, logger="monai_das.deploy"):
            assert _data_labels(config, "inference.json embedded in 'model.ts'") is None
    assert "ignoring" not in caplog.text


def test_an_ignored_keys_line_break_is_escaped():
    """The ignored values' messages reach every report (collect_ignored): a hostile card's key with a line break
    forged a report line (review); the key is escaped."""
    from monai_das.deploy.spec import _ignored, collect_ignored

    with collect_ignored() as dropped:
        _ignored("das_model#recipe#x\nERROR forged", "$x", "card")
    assert len(dropped) == 1 and "\n" not in dropped[0] and "x\\nERROR forged" in dropped[0]


def test_a_bare_torchscript_file_runs_only_when_asked_for(tmp_path):
    """A .ts handed in is a program: its forward wrote any file the user can write, run by the Deploy app's default
    engine without a word (trial T67b). Refused unless engine='torchscript' says the user trusts it."""
    evil = tmp_path / "evil.ts"
    torch.jit.save(torch.jit.script(WritesAFile(str(tmp_path / "pwned"))), str(evil))
    with pytest.raises(ValueError, match=r"evil\.ts' is a TorchScript file, a program: .*engine='torchscript' "
                                         r"\(CLI: --engine torchscript\)"):
        DASPredictor.from_path(evil)
    with pytest.raises(ValueError, match="a program"):
        DASPredictor.from_path(evil, engine="eager")
    assert not (tmp_path / "pwned").exists()  # (the Deploy app's command line: tests/deploy/test_deploy_app.py)
    # the same file as models/model.ts of a folder without the bundle's configs/ (the Deploy app's default -m is a
    # folder): no trusted config comes with it, so neither the default engine's fallback nor eager runs it (R67e)
    (tmp_path / "app" / "models").mkdir(parents=True)
    shutil.copy(evil, tmp_path / "app" / "models" / "model.ts")
    for engine in (None, "eager", "onnxruntime"):
        with pytest.raises(ValueError, match=r"model\.ts' is a TorchScript file, a program"):
            DASPredictor.from_path(tmp_path / "app", engine=engine, layout="volume", spatial_size=(8, 8, 8))
    assert not (tmp_path / "pwned").exists()
    # asked for, it runs (and writes): what the refusal protects from
    DASPredictor.from_path(evil, engine="torchscript", layout="volume", spatial_size=(8, 8, 8)).predict(
        torch.zeros(1, 8, 8, 8))
    assert (tmp_path / "pwned").read_bytes() == b"pwned"
