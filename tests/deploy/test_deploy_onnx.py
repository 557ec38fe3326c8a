"""
ONNX Runtime as the deployment's default engine, and a frame budget ``k`` chosen at inference (issue 12).

The real DAS classifier on an 8×16×16 grid (T = 8, trained k = 4) is exported once per session with
``monai_das.engines.save_onnx`` (``onnx_bundle`` fixture); the predictor on that file must give the eager network's
probabilities and kept indices, at the trained k and at others, and refuse what it cannot do with messages naming the
file.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from das_deploy_helpers import LABELS, ONNX_GRID, calibrate_batchnorm, make_torchscript_standin, model_card
from monai_das.deploy import DASPredictor, MissingMetadataError, find_bundle_files
from monai_das.deploy.spec import OverrideError
from monai_das.engines import save_onnx

pytest.importorskip("onnxruntime")

T = ONNX_GRID[0]


def study(seed: int = 1) -> torch.Tensor:
    """One preprocessed study ``1×D×H×W`` with a few bright slices."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, *ONNX_GRID, generator=gen)
    x[:, [1, 6]] += 1.5
    return x


def eager(net: torch.nn.Module, x: torch.Tensor, k: int | None) -> tuple[torch.Tensor, list[int]]:
    with torch.no_grad():
        logits, idx = net.forward_with_indices(x[None], k)
    return torch.softmax(logits, 1)[0], sorted(idx[0].tolist())


def onnx_copy(onnx_bundle, folder: Path, edit=None, keep_digest: bool = False) -> Path:
    """``model.onnx`` of the fixture copied alone to ``folder`` (no card beside it), optionally edited with ``onnx``:
    as an export without a digest (before monai_das recorded one, or by other code) unless ``keep_digest``, so that
    the checks of its metadata are reached (an edited file that records its digest is refused before them)."""
    import onnx

    from monai_das.networks.nets.onnx_classifier import DIGEST_PROP

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    if edit is None:
        shutil.copy(onnx_bundle[0] / "models" / "model.onnx", path)
        return path
    model = onnx.load(str(onnx_bundle[0] / "models" / "model.onnx"))
    edit(model)
    if not keep_digest:
        keep = [p for p in model.metadata_props if p.key != DIGEST_PROP]
        del model.metadata_props[:]
        model.metadata_props.extend(keep)
    onnx.save(model, str(path))
    return path


def test_onnx_is_the_default_and_matches_eager(onnx_bundle):
    """Bundle folder and bare .onnx file: ONNX Runtime, spec from the embedded card, probabilities and kept indices of
    the eager network (1e-4) at the trained k, at other k per call and at a k chosen when loading."""
    root, net = onnx_bundle
    files = find_bundle_files(root)
    assert files["onnx"] == root / "models" / "model.onnx"
    for path in (root, root / "models" / "model.onnx"):
        pred = DASPredictor.from_path(path)
        assert pred.engine == "onnxruntime" and pred.model_format == "onnx" and pred.engine_fallback is None
        assert pred.spec.spatial_size == ONNX_GRID and pred.spec.labels == LABELS and pred.spec.num_kept == 4
        assert pred.spec.recipe is not None and pred.num_kept == 4
    x = study()
    for k in (None, 2, 7):
        out = pred.predict(x, num_samples=k)
        probs, kept = eager(net, x, k or 4)
        torch.testing.assert_close(torch.tensor(out.probabilities), probs, rtol=0, atol=1e-4)
        assert out.kept_indices == kept and out.num_kept == (k or 4) and out.num_frames == T
        assert out.compute_saved == pytest.approx(1 - (k or 4) / T) and out.macs is None  # MACs: eager only
    assert pred.predict(study(2)).probabilities != pred.predict(x).probabilities  # depends on the input
    for kwargs, k in (({"num_kept": 2}, 2), ({"keep_ratio": 0.75}, 6)):
        pred = DASPredictor.from_path(root, **kwargs)
        info = pred.describe()
        assert info["num_kept"] == k and info["trained_num_kept"] == 4 and info["engine"] == "onnxruntime"
        # where it runs: the session's provider, not the torch device a caller set (MONAI Label's _get_network)
        assert info["device"] == "cpu"
        pred.device = torch.device("cuda:1")
        assert pred.describe()["device"] == "cpu"
        pred.device = torch.device("cpu")
        out = pred.predict(x)
        assert out.num_kept == k and out.kept_indices == eager(net, x, k)[1]


def test_eager_engine_any_k_one_pass(onnx_bundle):
    """engine="eager" on the same bundle: the checkpoint, forward_with_indices at another k equals ONNX; MACs are
    counted at the network's own k only."""
    root, net = onnx_bundle
    pred = DASPredictor.from_path(root, engine="eager", num_kept=3)
    assert pred.engine == "eager" and pred.model_format == "checkpoint" and pred.engine_fallback is None
    x = study()
    out, ref = pred.predict(x), DASPredictor.from_path(root, num_kept=3).predict(x)
    assert out.kept_indices == ref.kept_indices == eager(net, x, 3)[1] and out.num_kept == 3
    assert out.probabilities == pytest.approx(ref.probabilities, abs=1e-4) and out.macs is None
    assert set(pred.predict(x, num_samples=4).macs) == {"sampler", "downstream", "full_sequence"}


def test_frame_budget_refused(onnx_bundle, tmp_path):
    root, _ = onnx_bundle
    pred = DASPredictor.from_path(root)
    path = str(root / "models" / "model.onnx")
    for bad in (T + 1, 100):
        with pytest.raises(ValueError, match=rf"cannot keep k={bad} frames") as err:
            DASPredictor.from_path(root, num_kept=bad)
        assert path in str(err.value) and f"T={T}" in str(err.value)
        with pytest.raises(ValueError, match=rf"k={bad}.*T={T}"):
            pred.predict(study(), num_samples=bad)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="must be an integer >= 1") as err:
            DASPredictor.from_path(root, num_kept=bad)
        assert path in str(err.value)
    with pytest.raises(ValueError, match="keep_ratio"):
        DASPredictor.from_path(root, keep_ratio=1.5)
    with pytest.raises(ValueError, match="not both"):
        DASPredictor.from_path(root, num_kept=2, keep_ratio=0.5)
    # TorchScript keeps its trained k (the card's): another one is refused, naming the engines that can
    ts_path, _ = make_torchscript_standin(tmp_path / "model.ts", k=4, meta=model_card(keep_ratio=0.25))
    ts = DASPredictor.from_path(ts_path, engine="torchscript")
    assert ts.engine == "torchscript" and ts.num_kept == 4 and ts.engine_fallback is None  # a file: no warning
    with pytest.raises(ValueError, match="cannot keep k=2.*engine='onnxruntime'"):
        DASPredictor.from_path(ts_path, num_kept=2, engine="torchscript")
    assert ts.predict(torch.rand(1, 16, 16, 16), num_samples=4).num_kept == 4  # the trained k is fine


def test_wrong_grid_refused(onnx_bundle):
    root, _ = onnx_bundle
    path = str(root / "models" / "model.onnx")
    pred = DASPredictor.from_path(root)
    with pytest.raises(ValueError, match="spatial size") as err:
        pred.predict(torch.rand(1, 8, 16, 8))
    assert path in str(err.value) and "1×8×16×16 (C×D×H×W)" in str(err.value) and "1×8×16×8" in str(err.value)
    with pytest.raises(ValueError, match="channel"):
        pred.predict(torch.rand(3, *ONNX_GRID))
    # a grid override that is not the graph's: the option (it blamed "its metadata"), both shapes and the file, and
    # no other model file is tried (the checkpoint would take it, with a warning, only when asked: --engine eager)
    with pytest.raises(OverrideError, match=r"spatial_size=\(8, 16, 8\) \(CLI: --spatial-size 8 16 8\) is not the "
                                            r"grid of the ONNX model .*takes input \[batch, 1, 8, 16, 16\].*this "
                                            r"option gives \[batch, 1, 8, 16, 8\]") as err:
        DASPredictor.from_path(root, spatial_size=(8, 16, 8))
    assert path in str(err.value) and "metadata" not in str(err.value)
    with pytest.raises(RuntimeError, match="slice_axis=0.*slice_axis=1"):  # the frames of the graph are along D
        DASPredictor.from_path(path, slice_axis=1)


def test_a_card_of_another_grid_is_named_as_another_models(onnx_bundle, tmp_path):
    """The graph takes 8×16×16, the card embedded in it says 8×12×12: the card belongs to another model. The message
    said "pass the grid of the graph", which leads to --spatial-size and its refusal of another T (trial T54)."""
    import json

    def other_card(model):
        for prop in model.metadata_props:
            if prop.key == "metadata.json":
                prop.value = json.dumps(model_card(spatial=(8, 12, 12)))

    path = onnx_copy(onnx_bundle, tmp_path / "other", other_card)
    with pytest.raises(RuntimeError, match=r"takes input \[batch, 1, 8, 16, 16\], its metadata .*describes "
                                           r"\[batch, 1, 8, 12, 12\] \(volume\): the metadata belongs to another "
                                           r"model: re-export this model with its own card \(`python -m "
                                           r"monai_das.engines.export onnx"):
        DASPredictor.from_path(path)


def test_an_edited_export_is_refused(onnx_bundle, tmp_path):
    """Trial T68e: class names swapped in the card embedded in an export were served (a "square" study reported as
    "disc"). The export records a digest of its graph and metadata; a file changed after it is refused by the
    Deploy path, naming the file and the way out."""
    import json

    def swapped(model):
        for prop in model.metadata_props:
            if prop.key == "metadata.json":
                card = json.loads(prop.value)
                card["das_model"]["label_names"] = card["das_model"]["label_names"][::-1]
                prop.value = json.dumps(card)

    path = onnx_copy(onnx_bundle, tmp_path / "swapped", swapped, keep_digest=True)
    with pytest.raises((RuntimeError, ValueError), match=r"swapped[/\\]model\.onnx' was changed after its export: .* "
                                                         r"Export it again from its checkpoint"):
        DASPredictor.from_path(path)


def test_a_card_of_other_classes_is_refused_when_loading(onnx_bundle, tmp_path):
    """The graph gives 2 class probabilities, its card names 3 classes: refused when the model loads (the graph's
    output shape says it), not study by study with an error report each (trial T54: exit 3, six error reports)."""
    import json

    def three_classes(model):
        for prop in model.metadata_props:
            if prop.key == "metadata.json":
                prop.value = json.dumps(model_card(spatial=ONNX_GRID, labels=["a", "b", "c"]))

    path = onnx_copy(onnx_bundle, tmp_path / "three", three_classes)
    with pytest.raises(RuntimeError, match=r"model\.onnx' gives 2 class probabilities, but its metadata names 3 classes "
                                           r"\['a', 'b', 'c'\]: the model card belongs to another model"):
        DASPredictor.from_path(path)


def test_onnx_without_card_or_outputs(onnx_bundle, tmp_path):
    root, net = onnx_bundle
    def drop_card(model):
        keep = [p for p in model.metadata_props if p.key != "metadata.json"]
        del model.metadata_props[:]
        model.metadata_props.extend(keep)

    bare = onnx_copy(onnx_bundle, tmp_path / "nocard", edit=drop_card)
    with pytest.raises(MissingMetadataError, match="has no model card") as err:
        DASPredictor.from_path(bare)
    assert str(bare) in str(err.value) and "spatial_size=" in str(err.value)
    # what the message asks for: the grid (and k) given by hand
    pred = DASPredictor.from_path(bare, spatial_size=ONNX_GRID, num_kept=4)
    assert pred.spec.num_kept is None and pred.num_kept == 4
    x = study()
    assert pred.predict(x).kept_indices == eager(net, x, 4)[1]

    def drop_indices(model):
        keep = [o for o in model.graph.output if o.name != "indices"]
        del model.graph.output[:]
        model.graph.output.extend(keep)

    broken = onnx_copy(onnx_bundle, tmp_path / "noindices", edit=drop_indices)
    with pytest.raises(RuntimeError, match="not a monai_das ONNX export") as err:
        DASPredictor.from_path(broken)
    assert str(broken) in str(err.value) and "'indices'" in str(err.value)


def test_onnx_default_k_is_the_cards(tmp_path):
    """The bundle's batch inference exports models/model.onnx from its own run's network: after a first run with
    --num_kept 2 the any-k graph's default k is 2, and its card's trained k (4) must still be what Deploy serves (a
    check of the graph's k against the card refused it); a fixed-k graph whose card claims another k is refused."""
    import json as _json

    from monai_das.engines.runtime import inference_network
    from monai_das.networks import build_classifier

    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    t = ONNX_GRID[0]
    (root / "models" / "metadata.json").write_text(_json.dumps(model_card(spatial=ONNX_GRID, keep_ratio=0.5)))
    torch.manual_seed(0)
    net = build_classifier("das", len(LABELS), t, keep_ratio=0.5)
    calibrate_batchnorm(net, torch.rand(4, 1, *ONNX_GRID))
    torch.save(net.state_dict(), root / "models" / "model.pt")
    first_run = build_classifier("das", len(LABELS), t, keep_ratio=0.5, num_samples=2)
    inference_network(first_run, root / "models" / "model.pt", "onnxruntime", [1, *ONNX_GRID])
    pred = DASPredictor.from_path(root / "models" / "model.onnx")
    x = study()
    out = pred.predict(x)
    assert pred.num_kept == 4 and out.num_kept == 4 and out.kept_indices == eager(net, x, 4)[1]

    adps = build_classifier("adps", len(LABELS), t, keep_ratio=0.5).eval()  # an export that keeps a fixed k
    save_onnx(adps, tmp_path / "adps.onnx", [1, *ONNX_GRID], metadata=model_card(spatial=ONNX_GRID, keep_ratio=0.25,
                                                                                   method="adps"), check=False)
    with pytest.raises(RuntimeError, match=r"keeps k=4 frames \(a fixed-k graph\).*says num_kept=2"):
        DASPredictor.from_path(tmp_path / "adps.onnx")


def test_onnx_without_card_takes_the_graphs_frame_axis(tmp_path):
    """A card-less ONNX file given its grid: layout and frame axis are the graph's own (here slices along W), not
    ModelSpec's defaults that the graph would then refuse."""
    from monai_das.engines import save_onnx
    from monai_das.networks import build_classifier

    torch.manual_seed(0)
    net = build_classifier("das", 2, 8, keep_ratio=0.5, slice_axis=2).eval()
    path = save_onnx(net, tmp_path / "m.onnx", [1, 16, 16, 8])
    pred = DASPredictor.from_path(path, spatial_size=(16, 16, 8))
    assert pred.spec.layout == "volume" and pred.spec.slice_axis == 2
    x = torch.rand(1, 16, 16, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        kept = net.sample(x[None]).indices[0].tolist()
    assert pred.predict(x).kept_indices == kept


def test_engine_fallback(onnx_bundle, tmp_path, caplog):
    """A folder without the chosen engine's file: the next engine, with a warning, said in describe()."""
    root = tmp_path / "bundle"
    shutil.copytree(onnx_bundle[0], root)
    with caplog.at_level(logging.WARNING, logger="monai_das.deploy"):
        pred = DASPredictor.from_path(root, engine="torchscript")  # no model.ts: eager
    assert pred.engine == "eager" and pred.describe()["engine_requested"] == "torchscript"
    assert "no models/model.ts" in caplog.text and "using eager" in pred.describe()["engine_fallback"]
    # two steps down (no model.ts, a checkpoint without its config): both reasons said, not only the last one
    bare = tmp_path / "bare"
    shutil.copytree(root / "models", bare / "models")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.deploy"):
        fallback = DASPredictor.from_path(bare, engine="torchscript", measure_macs=False).describe()["engine_fallback"]
    assert caplog.text.count("needs a bundle config") == 1  # said once, in the fallback (twice before: trial T62a)
    assert fallback.startswith(f"no models/model.ts in '{bare}' for engine 'torchscript'; checkpoint ")
    assert "needs a bundle config" in fallback and fallback.endswith(f"using onnxruntime ({bare / 'models' / 'model.onnx'})")
    (root / "models" / "model.onnx").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.deploy"):
        pred = DASPredictor.from_path(root, measure_macs=False)  # only model.pt + configs: eager
    info = pred.describe()
    assert info["engine"] == "eager" and info["engine_requested"] == "onnxruntime" and info["format"] == "checkpoint"
    assert "no models/model.onnx" in caplog.text and "no models/model.onnx" in info["engine_fallback"]
    # with the command that writes it for this very bundle (a user saw only "using eager")
    export = f"python -m monai_das.engines.export onnx --bundle_root {root} --config_file {root / 'configs'}"
    assert export in info["engine_fallback"]
    assert pred.predict(study(), num_samples=2).num_kept == 2
    # a model file runs with its own engine; a warning only when another one was asked for
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.deploy"):
        assert DASPredictor.from_path(onnx_bundle[0] / "models" / "model.onnx", engine="eager").engine == "onnxruntime"
    assert "engine 'eager' was not used: " in caplog.text
    with pytest.raises(ValueError, match="engine must be one of"):
        DASPredictor.from_path(root, engine="tensorrt")
    assert DASPredictor.from_path(root, prefer="checkpoint", measure_macs=False).engine == "eager"  # the former name


def test_grid_override_is_refused_for_another_T_and_warned_for_another_frame_size(onnx_bundle, caplog):
    """--spatial-size changed a model's grid without a word (trial: a T=48 clip model run on T=32 frames, a 48×48 one
    on 64×64 frames): another T than the model card's is refused naming the option (as bundle inference refuses it),
    whatever the engine; another frame size is a warning, logged and in the predictor's warnings (every report)."""
    root, _ = onnx_bundle
    for engine in ("onnxruntime", "eager"):
        with pytest.raises(OverrideError, match=r"spatial_size=\(6, 16, 16\) \(CLI: --spatial-size 6 16 16\) gives "
                                                r"the model .* T=6 slices along slice_axis 0, but it was trained on "
                                                r"T=8 .*--spatial-size 8 16 16"):
            DASPredictor.from_path(root, engine=engine, spatial_size=(6, 16, 16), measure_macs=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.deploy"):
        pred = DASPredictor.from_path(root, engine="eager", spatial_size=(8, 16, 20), measure_macs=False)
    assert pred.spec.spatial_size == (8, 16, 20)
    (warning,) = pred.warnings
    assert warning.startswith("spatial_size=(8, 16, 20) (CLI: --spatial-size 8 16 20) is not the grid the model ")
    assert "was trained on, (8, 16, 16) (its model card " in warning and warning in caplog.text
    assert pred.describe()["warnings"] == [warning]
    assert DASPredictor.from_path(root, engine="eager", spatial_size=ONNX_GRID, measure_macs=False).warnings == []
