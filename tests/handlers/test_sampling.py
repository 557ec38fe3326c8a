"""SampledIndicesHandler and SamplingFiguresHandler with a real SubsampledClassifier."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator

from monai_das.handlers import SampledIndicesHandler, SamplingFiguresHandler, unwrap_network
from monai_das.handlers.sampling import distinct_tails
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
    # not decollated: the batch's B×k beside its predictions (nothing was added, without a word; trial 60a)
    batched = SupervisedEvaluator(device="cpu", val_data_loader=loader, network=net, decollate=False,
                                  val_handlers=[SampledIndicesHandler(net)])
    shapes = []
    batched.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda e: shapes.append(tuple(e.state.output["indices"].shape)))
    batched.run()
    assert shapes == [(2, 4), (1, 4)]


def test_indices_of_the_engines_own_pass(net):
    """A handler attached before it that runs the network again in the iteration (here at k=2, as the evenly spaced
    check runs it at another selection) replaced the recorded indices: in a MONAI workflow they are taken when the
    engine's forward pass completes. A plain Ignite engine keeps the last pass before the handler (documented)."""
    from ignite.engine import Engine

    data = [{"image": torch.rand(1, 8, 16, 16), "label": torch.tensor(i % 2)} for i in range(3)]
    loader = torch.utils.data.DataLoader(data, batch_size=2)

    def again(engine):
        net(engine.state.batch[0]["image"][None] if isinstance(engine.state.batch, list)
            else engine.state.batch["image"], 2)

    evaluator = SupervisedEvaluator(device="cpu", val_data_loader=loader, network=net)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, again)  # before the handler
    SampledIndicesHandler(net).attach(evaluator)
    seen = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.extend(o["indices"] for o in e.state.output))
    evaluator.run()
    assert [i.tolist() for i in seen] == [[1, 3, 5, 7]] * 3  # k=4 of the engine's pass, not the k=2 of the rerun

    plain = Engine(lambda e, b: [{"pred": p} for p in net(b["image"])])
    plain.add_event_handler(Events.ITERATION_COMPLETED, lambda e: net(e.state.batch["image"], 2))
    SampledIndicesHandler(net).attach(plain)
    plain.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.extend(o["indices"] for o in e.state.output))
    plain.run(loader)
    assert [len(i) for i in seen[3:]] == [2, 2, 2]


def test_the_sampler_hook_copies_nothing_in_a_forward_pass(net):
    """The hook fires in every forward pass of the shared network, the trainer's too: it copied the indices to the CPU
    each time (on a GPU, a wait every training step; R70b). It keeps them where they are (a meta tensor here, which
    cannot be copied); the handler takes them to the CPU when it reads them."""
    from types import SimpleNamespace

    handler = SampledIndicesHandler(net)
    indices = torch.zeros(2, 3, dtype=torch.long, device="meta")
    handler._store(net.sampler, (torch.zeros(2, 8, 1, 4, 4),), SimpleNamespace(indices=indices))
    assert handler._last.device.type == "meta" and handler.num_frames == 8


@pytest.mark.parametrize("engine", ["torchscript", "onnxruntime", "eager"])
def test_indices_of_every_inference_engine(net, engine, tmp_path):
    """The bundle's inference engines (a traced module in an IndicesRecorder, OnnxClassifier, the network itself):
    the handler reads each one's kept indices (the TorchScript one crashed: unwrap went into the traced module)."""
    from monai_das.engines import inference_network

    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    runtime = inference_network(net, ckpt, engine, [1, 8, 16, 16], tmp_path / "model.onnx")
    data = [{"image": torch.rand(1, 8, 16, 16), "label": torch.tensor(i % 2)} for i in range(3)]
    evaluator = SupervisedEvaluator(device="cpu", val_data_loader=torch.utils.data.DataLoader(data, batch_size=2),
                                    network=runtime, val_handlers=[SampledIndicesHandler(runtime)])
    seen = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.extend(o["indices"] for o in e.state.output))
    evaluator.run()
    assert [i.tolist() for i in seen] == [[1, 3, 5, 7]] * 3


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


def test_figures_at_another_k(tmp_path, net, monkeypatch):
    """An evaluation at k=2 (the network's own k 4) drew its montage and predictions at k=4 (trial W): num_samples."""
    import monai_das.visualize as visualize

    drawn = {}
    monkeypatch.setattr(visualize, "plot_kept_frames",
                        lambda frames, indices, path, **kw: drawn.setdefault("k", indices.shape[-1]) and str(path))
    monkeypatch.setattr(visualize, "plot_sampling_matrix", lambda matrix, path, **kw: str(path))
    data = [{"image": torch.rand(1, 8, 16, 16), "label": torch.tensor(i % 2)} for i in range(2)]
    SamplingFiguresHandler(net, data, tmp_path, num_images=2, num_samples=2).draw()
    assert drawn["k"] == 2
    drawn.clear()
    SamplingFiguresHandler(net, data, tmp_path, num_images=2).draw()
    assert drawn["k"] == 4  # the network's own


def test_figures_show_every_class_in_turn(tmp_path, net):
    """A montage of the first 4 validation items showed 2 of 3 classes, never the rare one (trial X): with the
    labels in the dataset's raw items, the first of each class, then the second, ..., in the dataset's order."""
    from monai.data import Dataset

    labels = [0, 0, 1, 0, 1, 0, 2, 0]
    data = Dataset([{"image": torch.rand(1, 8, 16, 16), "label": lab} for lab in labels])
    h = SamplingFiguresHandler(net, data, tmp_path / "fig", num_images=4, label_names=["n", "s", "m"])
    assert h._indices() == [0, 1, 2, 6]  # 0, 2, 6: one of each class; then 1: the second of class 0
    assert SamplingFiguresHandler(net, [{"image": torch.rand(1, 8, 16, 16)}] * 5, tmp_path, 3)._indices() == [0, 1, 2]
    # an item of an unknown label (-1) no longer turns the class turns off; it comes after every class (review H6)
    unknown = Dataset([{"image": torch.rand(1, 8, 16, 16), "label": lab} for lab in [-1, 0, 0, 1]])
    assert SamplingFiguresHandler(net, unknown, tmp_path, num_images=3)._indices() == [0, 1, 3]
    h.draw()
    assert h._shown == [0, 1, 2, 6]


def test_unwrap_errors():
    with pytest.raises(ValueError, match="sampler"):
        unwrap_network(torch.nn.Linear(2, 2))


def test_figures_use_the_checkpoint_and_leave_the_network_alone(tmp_path, monkeypatch):
    """With ``checkpoint=`` the pictures show the saved (best) model; the training network keeps its weights."""
    import monai_das.visualize as visualize

    torch.manual_seed(1)
    best = build_classifier("das", num_classes=2, num_frames=8).eval()
    torch.save(best.state_dict(), tmp_path / "model.pt")
    torch.manual_seed(2)
    current = build_classifier("das", num_classes=2, num_frames=8).eval()
    before = {k: v.clone() for k, v in current.state_dict().items()}
    data = [{"image": torch.rand(1, 8, 16, 16), "label": torch.tensor(i % 2)} for i in range(2)]
    seen = {}
    monkeypatch.setattr(visualize, "plot_kept_frames", lambda frames, indices, path, **kw: seen.update(
        indices=indices.clone(), titles=kw["titles"]) or str(path))
    SamplingFiguresHandler(current, data, tmp_path / "fig", num_images=2, checkpoint=tmp_path / "model.pt").draw()
    x = torch.stack([d["image"] for d in data])
    with torch.no_grad():
        assert torch.equal(seen["indices"], best.sample(x).indices)
        p = torch.softmax(best(x), -1)
    assert f"{float(p[0].max()):.2f}" in seen["titles"][0]
    assert [t.splitlines()[0] for t in seen["titles"]] == ["item 0", "item 1"]  # no file name to show: the position
    # a dataset of files (a datalist's raw items in `data`, as MONAI's datasets keep them): each row names its file
    from monai.data import Dataset

    files = Dataset([{"image": f"/studies/case{i}.nii.gz", "label": i % 2} for i in range(2)],
                    transform=lambda item: {**item, "image": data[item["label"]]["image"]})
    SamplingFiguresHandler(current, files, tmp_path / "fig", num_images=2, label_names=["a", "b"]).draw()
    assert [t.splitlines()[:2] for t in seen["titles"]] == [["case0.nii.gz", "label a"], ["case1.nii.gz", "label b"]]
    # DICOM series folders of one name (p1/CT, p2/CT): each row says whose (the rows all read 'CT')
    series = Dataset([{"image": f"/studies/p{i}/CT", "label": i % 2} for i in range(2)],
                     transform=lambda item: {**item, "image": data[item["label"]]["image"]})
    SamplingFiguresHandler(current, series, tmp_path / "fig", num_images=2).draw()
    assert [t.splitlines()[0] for t in seen["titles"]] == ["p0/CT", "p1/CT"]
    assert distinct_tails(["/a/x/t1.nii", "/b/x/t1.nii", "/a/y.nii", "item 3"]) == ["a/x/t1.nii", "b/x/t1.nii",
                                                                                     "y.nii", "item 3"]
    assert all(torch.equal(v, current.state_dict()[k]) for k, v in before.items())


def test_figures_predict_on_the_frames_they_show(tmp_path, monkeypatch):
    """The random sampler drew the montage's frames in one pass and the title's prediction in another, of other frames
    (trial T71e): one pass, the prediction of the frames shown."""
    import monai_das.visualize as visualize

    from monai_das.networks import FrameEncoder

    torch.manual_seed(0)  # a small encoder whose predictions differ from one draw of frames to the next
    net = build_classifier("random", 2, num_frames=8, keep_ratio=0.25, encoder=FrameEncoder(torch.nn.Conv2d(1, 8, 3)))
    net.eval()
    data = [{"image": torch.linspace(0, 1, 8).repeat_interleave(256).reshape(1, 8, 16, 16) * (i + 1)} for i in range(3)]
    seen, calls = {}, []
    net.sampler.register_forward_hook(lambda *args: calls.append(1))
    monkeypatch.setattr(visualize, "plot_kept_frames", lambda frames, indices, path, **kw: seen.update(
        indices=indices.clone(), titles=kw["titles"]) or str(path))
    monkeypatch.setattr(visualize, "plot_sampling_matrix", lambda matrix, path, **kw: str(path))
    SamplingFiguresHandler(net, data, tmp_path, num_images=3).draw()
    assert len(calls) == 1
    x = net.to_frames(torch.stack([d["image"] for d in data]))
    with torch.no_grad():
        p = torch.softmax(net.classify_kept(x, seen["indices"]), -1)
    assert [t.splitlines()[-1] for t in seen["titles"]] == [f"pred {int(q.argmax())} ({float(q.max()):.2f})" for q in p]


def test_figures_run_on_the_network_s_device(tmp_path, monkeypatch):
    """The default device was "cpu": a network on a GPU failed with a device mismatch when training ended (trial T71e).
    The frames now go to the network's device (the "meta" device stands in for a GPU here)."""

    class _Stop(Exception):
        pass

    net = build_classifier("uniform", num_classes=2, num_frames=8, keep_ratio=0.5).to("meta")
    seen = {}

    def sample(images, num_samples=None):
        seen["device"] = images.device
        raise _Stop

    monkeypatch.setattr(net, "sample", sample)
    with pytest.raises(_Stop):
        SamplingFiguresHandler(net, [{"image": torch.rand(1, 8, 16, 16)}], tmp_path).draw()
    assert seen["device"] == torch.device("meta")
