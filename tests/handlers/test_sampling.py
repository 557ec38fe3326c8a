"""SampledIndicesHandler and SamplingFiguresHandler with a real SubsampledClassifier."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator

from monai_das.handlers import SampledIndicesHandler, SamplingFiguresHandler, unwrap_network
from monai_das.networks import build_classifier


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_classifier("uniform", num_classes=2, num_frames=8, keep_ratio=0.5).eval()


def test_indices_in_evaluator_output(net):
    data = [{"image": torch.rand(1, 8, 16, 16), "label": torch.tensor(i % 2)} for i in range(3)]
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    evaluator = SupervisedEvaluator(device="cpu", val_data_loader=loader, network=net,
                                    val_handlers=[SampledIndicesHandler(net)])
    seen = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.extend(o["indices"] for o in e.state.output))
    evaluator.run()
    assert len(seen) == 3
    for idx in seen:
        assert idx.tolist() == net.sample(torch.rand(1, 1, 8, 16, 16)).indices[0].tolist()
        assert len(idx) == 4


def test_figures(tmp_path, net):
    data = [{"image": torch.rand(1, 8, 16, 16), "label": torch.tensor(i % 2)} for i in range(3)]
    h = SamplingFiguresHandler(net, data, tmp_path / "fig", num_images=2, label_names=["a", "b"])
    net.train()
    paths = h.draw()
    assert net.training  # mode restored
    net.eval()
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["kept_frames.png", "sampling_matrix.png"]
    for p in paths:
        assert open(p, "rb").read(4) == b"\x89PNG"


def test_unwrap_errors():
    with pytest.raises(ValueError, match="sampler"):
        unwrap_network(torch.nn.Linear(2, 2))
