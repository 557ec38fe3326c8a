"""
What an exported file says of itself, checked by the predictor: a card of another checkpoint (ONNX and TorchScript
``monai_das.source`` records), a ``.ts`` written by MONAI's ``ckpt_export`` alone, the kept indices of a traced export
with context frames, and the messages for a ``k`` a fixed-k graph cannot keep.
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from das_deploy_helpers import LABELS, ONNX_GRID, model_card
from monai_das.deploy import DASPredictor, ModelSpec
from monai_das.deploy.predictor import RAW_CKPT_EXPORT, _indices_of, kept_indices
from monai_das.networks import build_classifier

SOURCE = "monai_das.source"


def _card(checkpoint_sha256: str | None, **kw) -> dict:
    card = model_card(spatial=ONNX_GRID, keep_ratio=0.5, **kw)
    if checkpoint_sha256 is not None:
        card["das_model"].update(checkpoint="model.pt", checkpoint_sha256=checkpoint_sha256)
    return card


# ---------------------------------------------------------------------------------------------- kept indices
@pytest.mark.parametrize("context_frames", [0, 1])
@pytest.mark.parametrize("width", [16, 4])
def test_kept_indices_of_a_traced_export_by_structure(tmp_path, context_frames, width):
    """A traced sampler returns the kept frames alone (no context) or (matrix, indices, frames) (context_frames > 0):
    the indices are the integer B×k output, not whatever sits at position 2 (the frames: a wrong 'keeps 16 of 16'
    error, and with W == k a silent B×k×C×H×W list as kept_indices)."""
    torch.manual_seed(0)
    net = build_classifier("das", 3, num_frames=16, keep_ratio=0.25, context_frames=context_frames).eval()
    x = torch.rand(1, 1, 16, 16, width)  # width 4 == k: the frames' last axis has k entries too
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, x), tmp_path / "m.ts")
        ts = torch.jit.load(tmp_path / "m.ts")
        expected = sorted(net.sample(x).indices[0].tolist())
        got = kept_indices(ts, x, net.to_frames(x))
    assert got.dtype == torch.long and got.tolist() == [expected]
    spec = ModelSpec(layout="volume", spatial_size=(16, 16, width), in_channels=1, slice_axis=0,
                     labels=["a", "b", "c"], num_kept=4, method="das")
    pred = DASPredictor(ts, spec, source="m.ts", model_format="torchscript").predict(x[0])
    assert pred.kept_indices == expected and pred.num_kept == 4


def test_indices_are_found_by_what_they_are_not_where():
    frames = torch.rand(2, 6, 1, 4, 4)
    idx = torch.tensor([[1, 4], [0, 5]])
    kept = torch.stack([frames[i, idx[i]] for i in range(2)])
    matrix = torch.nn.functional.one_hot(idx, 6).float()
    for out in ((matrix, idx, kept), (kept, matrix, idx), (idx, kept), (kept, matrix), (kept,), kept):
        assert _indices_of(out, frames).tolist() == idx.tolist()
    assert _indices_of((idx, idx.clone()), frames) is None  # two candidates: not guessed
    assert _indices_of((torch.rand(2, 3),), frames) is None


# ---------------------------------------------------------------------------------------------- ONNX card vs source
@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """A DAS (8×16×16, any k) exported with save_onnx; its props are rewritten per test."""
    pytest.importorskip("onnxruntime")
    from monai_das.engines.export import save_onnx

    torch.manual_seed(0)
    net = build_classifier("das", len(LABELS), ONNX_GRID[0], keep_ratio=0.5).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    save_onnx(net, path, [1, *ONNX_GRID], metadata=_card(None), check=False)
    return path


def _with_props(src, dst, card: dict, source: dict | None):
    import onnx

    model = onnx.load(str(src))
    # as an export without a digest writes it (an edited file that records one is refused before these checks)
    props = {p.key: p.value for p in model.metadata_props if p.key not in (SOURCE, "monai_das.digest")}
    props["metadata.json"] = json.dumps(card)
    if source is not None:
        props[SOURCE] = json.dumps(source)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def test_onnx_whose_card_describes_another_checkpoint_is_refused(tmp_path, onnx_file):
    """runA's weights exported under runD's card (other slice axis) were served with warnings []: the file's own
    record of its checkpoint (monai_das.source) and its card's checkpoint_sha256 must agree."""
    mixed = _with_props(onnx_file, tmp_path / "mix" / "model.onnx", _card("a" * 64), {"checkpoint_sha256": "b" * 64})
    with pytest.raises(RuntimeError) as err:
        DASPredictor.from_path(mixed)
    text = str(err.value)
    assert f"the ONNX model '{mixed}' was exported from the checkpoint with SHA-256 {'b' * 64}" in text
    assert f"the model card embedded in it was written for the checkpoint with SHA-256 {'a' * 64}" in text
    assert "python -m monai_das.engines.export onnx" in text
    # a bundle folder falls back to its checkpoint, and every report says why
    root = tmp_path / "bundle"
    shutil.copytree(mixed.parent, root / "models")
    torch.manual_seed(0)
    torch.save(build_classifier("das", len(LABELS), ONNX_GRID[0], keep_ratio=0.5).state_dict(),
               root / "models" / "model.pt")
    (root / "models" / "metadata.json").write_text(json.dumps(_card(None)))
    from das_deploy_helpers import inference_config

    (root / "configs").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(inference_config(num_frames=ONNX_GRID[0])))
    pred = DASPredictor.from_path(root)
    assert pred.engine == "eager" and any("written for the checkpoint with SHA-256" in w for w in pred.warnings)
    # agreeing records, or a card of an older run without a hash: served, nothing said
    for card in (_card("c" * 64), _card(None)):
        ok = _with_props(onnx_file, tmp_path / "ok" / "model.onnx", card, {"checkpoint_sha256": "c" * 64})
        assert DASPredictor.from_path(ok).warnings == []


def test_an_export_before_the_graph_rewrites_is_served_and_said_in_the_log(tmp_path, onnx_file, caplog):
    """A file whose record has no "graph" (exported before monai_das.engines.onnx_graph): the same answers, slower:
    served without a report warning; the log says how to write the faster graph."""
    old = _with_props(onnx_file, tmp_path / "old" / "model.onnx", _card("c" * 64), {"checkpoint_sha256": "c" * 64})
    with caplog.at_level("INFO", logger="monai_das.deploy.predictor"):
        assert DASPredictor.from_path(old).warnings == []
    assert f"the ONNX model '{old}' was exported before the graph rewrites for ONNX Runtime" in caplog.text
    caplog.clear()
    new = _with_props(onnx_file, tmp_path / "new" / "model.onnx", _card("c" * 64),
                      {"checkpoint_sha256": "c" * 64, "graph": "global_pools"})
    with caplog.at_level("INFO", logger="monai_das.deploy.predictor"):
        DASPredictor.from_path(new)
    assert "before the graph rewrites" not in caplog.text


def test_an_export_older_than_the_training_beside_it_is_refused(tmp_path, onnx_file):
    """Retrained into the same bundle_root (a new model.pt and card) after an export: Deploy's default engine and
    MONAI Label served the old model.onnx, the old model's answers, without a word (trial S). Its record names
    another checkpoint than the card beside it: refused, and a bundle with a config falls back to the checkpoint."""
    models = tmp_path / "run" / "models"
    _with_props(onnx_file, models / "model.onnx", _card("a" * 64), {"checkpoint_sha256": "a" * 64})
    (models / "metadata.json").write_text(json.dumps(_card("d" * 64)))  # the new training's card
    with pytest.raises(RuntimeError) as err:
        DASPredictor.from_path(tmp_path / "run")
    text = str(err.value)
    assert f"the model card '{models / 'metadata.json'}' beside it was written for the checkpoint with SHA-256 " \
           f"{'d' * 64} (a training run again after the export" in text and "the export is stale" in text
    assert "python -m monai_das.engines.export onnx" in text
    (models / "metadata.json").write_text(json.dumps(_card("a" * 64)))  # the export's own training: served
    assert DASPredictor.from_path(tmp_path / "run").warnings == []


# ---------------------------------------------------------------------------------------------- TorchScript source
@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    torch.manual_seed(0)
    net = build_classifier("das", len(LABELS), ONNX_GRID[0], keep_ratio=0.5).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(net, torch.rand(1, 1, *ONNX_GRID))


def _save_ts(traced, path, card: dict, source: dict | None):
    extra = {"metadata.json": json.dumps(card), "inference.json": "{}"}
    if source is not None:
        extra[SOURCE] = json.dumps(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def test_torchscript_of_monais_raw_ckpt_export_is_said_in_every_report(tmp_path, traced):
    """MONAI's ckpt_export alone builds network_def from the config and command line, not from the card (a max head
    exported as mean): a .ts without the wrapper's record gets a warning in every report; the wrapper's does not."""
    raw = _save_ts(traced, tmp_path / "raw" / "model.ts", _card("d" * 64), None)
    pred = DASPredictor.from_path(raw, engine="torchscript")
    assert pred.warnings == [RAW_CKPT_EXPORT.format(path=raw)]
    assert "exported by MONAI's ckpt_export (or by this project's export before it recorded its checkpoint): network " \
           "settings not checked against the card" in pred.warnings[0]
    assert "re-export with python -m monai_das.engines.export torchscript" in pred.warnings[0]
    assert pred.describe()["warnings"] == pred.warnings
    ours = _save_ts(traced, tmp_path / "ours" / "model.ts", _card("d" * 64),
                    {"checkpoint_sha256": "d" * 64, "network": "built from the model card"})
    assert DASPredictor.from_path(ours, engine="torchscript").warnings == []
    mixed = _save_ts(traced, tmp_path / "mix" / "model.ts", _card("d" * 64), {"checkpoint_sha256": "e" * 64})
    with pytest.raises(RuntimeError, match=rf"the TorchScript model '.*mix/model\.ts' was exported from the checkpoint "
                                           rf"with SHA-256 {'e' * 64} \(its extra file 'monai_das.source'\), but the "
                                           rf"metadata.json embedded in it was written for the checkpoint with "
                                           rf"SHA-256 {'d' * 64}"):
        DASPredictor.from_path(mixed, engine="torchscript")


# ---------------------------------------------------------------------------------------------- another k
@pytest.fixture(scope="module")
def spread_onnx(tmp_path_factory):
    """A spread DAS (16 frames, k = 4): its graph keeps only the exported k (no num_samples input)."""
    pytest.importorskip("onnxruntime")
    from monai_das.engines.export import save_onnx

    torch.manual_seed(0)
    net = build_classifier("das", len(LABELS), 16, keep_ratio=0.25, sampler_kwargs={"spread": True}).eval()
    path = tmp_path_factory.mktemp("spread") / "model.onnx"
    card = model_card(keep_ratio=0.25)
    save_onnx(net, path, [1, 16, 16, 16], metadata=card, check=False)
    return path, net


def test_a_fixed_k_graph_says_what_answers_another_k(spread_onnx):
    """Not 'needs an ONNX export of a DAS, DPS, ...' for a DAS whose re-export is the same file: the graph keeps only
    its exported k; the checkpoint (engine eager) or the bundle's inference (models/model.k<k>.onnx) keeps others."""
    pred = DASPredictor.from_path(spread_onnx[0])
    assert not pred.any_k and pred.num_kept == 4
    with pytest.raises(ValueError) as err:
        pred.budget(num_kept=2)
    text = str(err.value)
    assert "is a fixed-k ONNX graph" in text and "keeps only its exported k=4 frames, not k=2" in text
    assert "exporting it again gives the same graph" in text and "engine='eager'" in text
    assert "models/model.k<k>.onnx" in text and "needs an ONNX export of a DAS" not in text
    assert "was asked for but not used" not in text


def test_the_reason_eager_did_not_run_reaches_the_k_refusal(tmp_path, spread_onnx):
    """engine eager on a folder without configs/ falls back to the ONNX file: the refusal of another k says why
    eager did not run (a client of MONAI Label sees only this message)."""
    models = tmp_path / "bundle" / "models"
    models.mkdir(parents=True)
    shutil.copy(spread_onnx[0], models / "model.onnx")
    torch.save(spread_onnx[1].state_dict(), models / "model.pt")
    pred = DASPredictor.from_path(tmp_path / "bundle", engine="eager")
    assert pred.engine == "onnxruntime" and pred.engine_fallback
    with pytest.raises(ValueError) as err:
        pred.budget(num_kept=2)
    text = str(err.value)
    assert "is a fixed-k ONNX graph" in text
    assert f"Engine 'eager' was asked for but not used: {pred.engine_fallback.rstrip('.')}." in text
    assert "model.pt" in pred.engine_fallback
