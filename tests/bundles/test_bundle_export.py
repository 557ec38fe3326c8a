"""
End to end through the CLIs: train (tiny, 16³ synthetic volumes) → the run's model card → evaluate adds the test
metrics → ``monai.bundle ckpt_export`` with the card as ``--meta_file`` (input shape from the card) → a bare
``model.ts`` loads with the card's grid and gives the eager checkpoint's probabilities; ONNX export with the card.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from das_bundle_helpers import EVALUATE, INFERENCE, TINY, TRAIN, bundle, run_cmd
from monai_das.deploy import DASPredictor
from monai_das.engines.export import build_network, card_overrides, read_onnx_card

pytestmark = pytest.mark.slow


def test_train_evaluate_export_and_load_use_the_card(tmp_path):
    root = tmp_path / "run"
    models = root / "models"
    # a non-default sampler setting (frame statistics on frames averaged to 12 px): the card carries it to every
    # consumer below, the weights refuse a network built without it
    args = [*TINY, "--bundle_root", root, "--max_epochs", "1", "--mlflow", "False", "--size", "16", "--num_test", "16",
            "--num_figures", "0", "--sampler_kwargs", "{'feature_size': 12}"]
    run_cmd(TRAIN, args=args)
    card = json.loads((models / "metadata.json").read_text())
    facts = card["das_model"]
    assert facts["spatial_size"] == [16, 16, 16] and facts["image_shape"] == [1, 16, 16, 16]
    assert facts["num_frames"] == 16 and facts["num_kept"] == 8 and facts["method"] == "das"
    assert facts["recipe"]["spatial_size"] == [16, 16, 16] and facts["validation"]["best_epoch"] == 1
    assert facts["sampler_kwargs"] == {"feature_size": 12}
    assert card["network_data_format"]["inputs"]["image"]["spatial_shape"] == [16, 16, 16]
    assert "val_auc" in card["eval_metrics"] and "auc" not in card["eval_metrics"]  # no placeholder

    run_cmd(TRAIN, EVALUATE, args=args)
    card = json.loads((models / "metadata.json").read_text())
    report = json.loads((root / "eval" / "metrics.json").read_text())["metrics"]
    assert {k: card["eval_metrics"][k] for k in ("auc", "accuracy", "balanced_accuracy")} == \
        {k: report[k] for k in ("auc", "accuracy", "balanced_accuracy")}
    assert "val_auc" in card["eval_metrics"] and card["das_model"]["evaluation"]["split"] == "test"

    # MONAI's exporter, the card as meta_file: no --input_shape (read from the card), the card embedded
    ts = models / "model.ts"
    bundle([sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(ts),
            "--ckpt_file", str(models / "model.pt"), "--meta_file", str(models / "metadata.json"),
            "--config_file", INFERENCE, "--bundle_root", str(root), "--use_trace", "True", "--size", "16",
            "--sampler_kwargs", "{'feature_size': 12}"])
    pred = DASPredictor.from_path(ts, engine="torchscript")  # a bare file: everything from the embedded card
    assert pred.spec.spatial_size == (16, 16, 16) and pred.spec.num_kept == 8 and pred.spec.recipe == facts["recipe"]
    eager = build_network(INFERENCE, models / "model.pt", card, bundle_root=root)
    assert eager.sampler.frame_features.feature_size == 12
    with pytest.raises(RuntimeError, match=r"trained with DAS frame features .*'feature_size': 12.*but this "
                                           r"network has"):
        # built without the card's sampler setting (inference.json would take it from the card: given as none)
        build_network(INFERENCE, models / "model.pt", None, bundle_root=root, info=card_overrides(card)["info"],
                      sampler_kwargs={})
    x = torch.rand(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    out = pred.predict(x)
    with torch.no_grad():
        expected = torch.softmax(eager(x[None]), dim=1)[0]
        kept = eager.sample(x[None]).indices[0]
    torch.testing.assert_close(torch.tensor(out.probabilities), expected, rtol=0, atol=1e-5)
    assert out.kept_indices == sorted(kept.tolist())

    # ONNX: dynamic batch, the card in metadata_props (checked against eager at batch 1 and 3 by the exporter)
    out = bundle([sys.executable, "-m", "monai_das.engines.export", "onnx", "--bundle_root", str(root),
                  "--config_file", INFERENCE])
    assert "found in sys.modules" not in out.stderr  # no runpy warning about running an imported module
    assert read_onnx_card(models / "model.onnx") == card
    from monai_das.engines.onnx_graph import REWRITES
    from monai_das.engines.runtime import _onnx_source
    from monai_das.utils.io import file_digest

    # it names its checkpoint, so the bundle's inference (engine onnxruntime) runs this file instead of exporting again
    assert _onnx_source(models / "model.onnx") == {"checkpoint_sha256": file_digest(models / "model.pt"),
                                                   "num_kept": None, "item_shape": [1, 16, 16, 16],
                                                   "layout": "volume", "slice_axis": 0,
                                                   "graph": REWRITES}
    from monai_das.networks import OnnxClassifier

    xb = torch.rand(3, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    got, kept = OnnxClassifier(models / "model.onnx").forward_with_indices(xb)
    with torch.no_grad():
        ref, ref_kept = eager.forward_with_indices(xb)
    got, ref = got.numpy(), ref.numpy()
    assert got.shape == (3, 2) and np.abs(got - ref).max() <= 1e-4 * (1 + np.abs(ref).max())  # float32 rounding
    assert torch.equal(kept, ref_kept)
