"""OnnxClassifier: the input checks of the eager network, applied to an exported graph."""

from __future__ import annotations

import pytest
import torch

from monai_das.networks import build_classifier
from monai_das.networks.blocks.frame_features import FrameFeatures

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ITEM = [1, 8, 16, 12]  # C×D×H×W


@pytest.fixture(scope="module")
def das_export(tmp_path_factory):
    from monai_das.engines import save_onnx

    torch.manual_seed(0)
    net = build_classifier("das", 2, num_frames=8, keep_ratio=0.5).eval()
    path = tmp_path_factory.mktemp("onnx") / "das.onnx"
    save_onnx(net, path, ITEM)
    return path, net


def test_das_export_refuses_what_its_eager_sampler_refuses(das_export):
    """
    A DAS export run by ONNX Runtime computes the same float32 frame statistics: at 1e19 they overflowed to Inf/NaN
    and the graph still returned logits and the first k frames, where the eager network refuses. The same limit
    (:meth:`FrameFeatures.max_input` of the file's ``T``) and message, naming the file and the shape given; up to
    the limit the output is the graph's own.
    """
    from monai_das.networks import OnnxClassifier

    path, net = das_export
    onnx_net = OnnxClassifier(path)
    limit = FrameFeatures.max_input(8)
    for x in (torch.full((1, *ITEM), 1e19), torch.rand(2, *ITEM) * -1e19, torch.rand(1, *ITEM) * limit * 1.01):
        with pytest.raises(ValueError) as onnx_error:
            onnx_net(x)
        with pytest.raises(ValueError) as eager_error:
            net(x)
        beyond = str(eager_error.value).split(" has values up to ")[1]
        assert str(onnx_error.value) == (f"the input of the ONNX model '{path}' of shape {tuple(x.shape)} has "
                                         f"values up to {beyond}")
    x = torch.rand(2, *ITEM)
    x[0, 0, 3, 4, 5] = limit  # at the limit: computed
    for y in (x, x.double()):
        logits, indices = onnx_net.forward_with_indices(y)
        session = onnx_net.session.run(["pred", "indices"], {"image": y.float().numpy(),
                                                              "num_samples": torch.tensor([4]).numpy()})
        assert torch.equal(logits, torch.from_numpy(session[0])) and torch.equal(indices, torch.from_numpy(session[1]))
        with torch.no_grad():
            eager_logits, eager_indices = net.forward_with_indices(y.float())
        assert torch.equal(indices, eager_indices)
    with pytest.raises(ValueError, match="contains NaN or Inf values"):
        onnx_net(torch.full((1, *ITEM), float("nan")))


def test_an_export_without_frame_statistics_checks_finiteness_only(tmp_path):
    """The uniform baseline computes no statistics of the intensities: 1e19 is computed (as in eager PyTorch)."""
    from monai_das.engines import save_onnx
    from monai_das.networks import OnnxClassifier

    net = build_classifier("uniform", 2, num_frames=8, keep_ratio=0.5).eval()
    onnx_net = OnnxClassifier(save_onnx(net, tmp_path / "uniform.onnx", ITEM))
    x = torch.full((1, *ITEM), 1e19)
    assert torch.equal(onnx_net.forward_with_indices(x)[1], net.forward_with_indices(x)[1])
