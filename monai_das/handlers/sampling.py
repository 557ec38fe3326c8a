"""Handlers that expose what the sampler kept: per-item indices in the engine output, and pictures."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_das.data.studies import item_label
from monai_das.handlers.utils import attach_once
from monai_das.networks.utils import network_device, unwrap_network

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["unwrap_network", "SampledIndicesHandler", "SamplingFiguresHandler"]


class SampledIndicesHandler:
    """
    Adds the indices of the kept frames to every item of a (decollated) engine output, under ``output_key``
    (``B×k`` → one length-``k`` long tensor per item), from a forward hook on ``network.sampler`` or, for the
    inference engines of :func:`monai_das.engines.inference_network` (ONNX Runtime, TorchScript), from the
    network's ``last_indices``: either way the indices of the very forward pass that produced the prediction.

    Attach it to an evaluator/inference engine (``decollate=True``, the MONAI default); items are matched in
    batch order. With ``decollate=False`` the batched output gets the ``B×k`` tensor under ``output_key``. In
    MONAI's workflows the indices are taken when the engine's own forward pass completes
    (``IterationEvents.FORWARD_COMPLETED``), so a handler that runs the network again later in the iteration (e.g.
    on evenly spaced frames) does not replace them, whatever the order of the handlers; in a plain Ignite engine,
    they are those of the last forward pass before the handler runs.

    Args:
        network: the ``SubsampledClassifier`` (wrappers such as DDP are unwrapped), or a network with
            ``last_indices`` (:class:`~monai_das.networks.OnnxClassifier`, :class:`~monai_das.engines.IndicesRecorder`).
        output_key: key added to each output item.
    """

    def __init__(self, network: torch.nn.Module, output_key: str = "indices") -> None:
        self.network = network
        self.output_key = output_key
        self._last: torch.Tensor | None = None  # the indices of the sampler's last forward (hook)
        self._taken: torch.Tensor | None = None  # those of the engine's forward pass (FORWARD_COMPLETED)
        self._took = False
        self.num_frames: int | None = None
        self._hook = None

    def _store(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        # kept where it is: the hook also fires in the trainer's forward passes (a shared network), and a copy to the
        # CPU there would wait for the GPU every training step (R70b); taken to the CPU when read (_current)
        self._last = output.indices.detach()
        if args and isinstance(args[0], torch.Tensor):
            self.num_frames = int(args[0].shape[1])  # T of the sampler's B×T×C×H×W input

    def attach(self, engine: Any) -> None:
        from monai.engines.utils import IterationEvents

        net = unwrap_network(self.network, require_sampler=False)
        if self._hook is None and not hasattr(net, "last_indices"):
            self._hook = unwrap_network(self.network).sampler.register_forward_hook(self._store)
        attach_once(engine, Events.ITERATION_STARTED, self._reset)
        if engine.has_registered_events(IterationEvents.FORWARD_COMPLETED):  # a MONAI workflow
            attach_once(engine, IterationEvents.FORWARD_COMPLETED, self._take)
        attach_once(engine, Events.ITERATION_COMPLETED, self)

    def _reset(self, engine: Any) -> None:
        self._last = self._taken = None
        self._took = False

    def _current(self) -> torch.Tensor | None:
        """The indices of the last forward pass: the hook's, or the runtime network's ``last_indices``."""
        last = self._last if self._hook is not None else getattr(
            unwrap_network(self.network, require_sampler=False), "last_indices", None)
        return None if last is None else last.detach().cpu()

    def _take(self, engine: Any) -> None:
        self._taken, self._took = self._current(), True

    def detach(self) -> None:
        """Remove the forward hook."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def __call__(self, engine: Any) -> None:
        indices = self._taken if self._took else self._current()
        output = engine.state.output
        if indices is not None and isinstance(output, dict):  # decollate=False: the batch's B×k beside its B×C
            output[self.output_key] = indices
        if indices is None or not isinstance(output, list):
            return
        if len(output) != indices.shape[0]:
            raise RuntimeError(
                f"sampler returned indices for {indices.shape[0]} items but the engine output has {len(output)}."
            )
        for item, idx in zip(output, indices):
            item[self.output_key] = idx


def distinct_tails(paths: Sequence[str]) -> list[str]:
    """Each path's file or folder name, with as many parent folders as it takes to tell it from the others' (DICOM
    series folders ``p1/CT`` and ``p2/CT``, or ``t1.nii.gz`` in every patient's folder, all read ``CT`` or
    ``t1.nii.gz``); a name that is no path (an ``id``) stays as it is."""
    parts = [Path(p).parts or (str(p),) for p in paths]
    depth = [1] * len(paths)
    while True:
        shown = ["/".join(q[-d:]) for q, d in zip(parts, depth)]
        alike = {i for i, name in enumerate(shown) if shown.count(name) > 1 and depth[i] < len(parts[i])}
        if not alike:
            return shown
        for i in alike:
            depth[i] += 1


class SamplingFiguresHandler:
    """
    Pictures of the sampler's choice for ``num_images`` items of a dataset, written to ``output_dir`` (the first item
    of each class, then the second, ..., in the dataset's order, when its raw items (a MONAI dataset's ``data``, e.g. a
    datalist's) give their labels, so that a rare class is shown too; else the first ``num_images``):
    ``kept_frames.png`` (montage of the kept slices/frames with their indices, a row per item titled with its image
    file name, true label and prediction) and ``sampling_matrix.png`` (heat map
    of ``P`` for the first item). With ``epoch_level=True`` they are redrawn after every ``interval`` epochs of the
    attached engine (files replaced), otherwise once when it completes. Only the returned paths are kept; logging
    them to MLflow is left to ``MLFlowHandler(artifacts=...)`` (attach this handler before it).

    Args:
        network: the ``SubsampledClassifier`` (or a DDP wrapper of it).
        dataset: items ``{"image": ..., "label": ...}`` in the network's input layout (without batch dimension).
        output_dir: folder for the PNG files.
        num_images: how many items to show.
        device: where to run the network (``None``, the default: the device of its parameters; ``"cpu"`` was the
            default, and a network on a GPU then failed with a device mismatch when training ended).
        epoch_level: redraw every ``interval`` epochs instead of only on completion.
        interval: epochs between redraws.
        label_names: optional class names for the row titles.
        checkpoint: draw with the weights of this file (e.g. the best model ``models/model.pt``, read with
            ``torch.load(weights_only=True)``) when it exists (loaded into the network for the drawing, its own
            weights put back after); otherwise, and by default, with the network as it is.
        num_samples: the ``k`` to draw at, as an evaluation at another ``k`` than the network's runs it
            (``network(x, num_samples=k)``); ``None``: the network's own.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        dataset: Sequence,
        output_dir: str | os.PathLike,
        num_images: int = 4,
        device: str | torch.device | None = None,
        epoch_level: bool = False,
        interval: int = 1,
        label_names: Sequence[str] | None = None,
        checkpoint: str | os.PathLike | None = None,
        num_samples: int | None = None,
    ) -> None:
        self.network = network
        self.num_samples = None if num_samples is None else int(num_samples)
        self.checkpoint = checkpoint
        self.dataset = dataset
        self.output_dir = Path(output_dir)
        self.num_images = int(num_images)
        self.device = None if device is None else torch.device(device)
        self.epoch_level = epoch_level
        self.interval = max(1, int(interval))
        self.label_names = label_names
        self.logger = logging.getLogger(__name__)
        self.paths: list[str] = []
        self._shown: list[int] = []  # the dataset indices of the items drawn

    def attach(self, engine: Any) -> None:
        if self.epoch_level:
            attach_once(engine, Events.EPOCH_COMPLETED(every=self.interval), self)
        else:
            attach_once(engine, Events.COMPLETED, self)

    def _name(self, label: int) -> str:
        return str(self.label_names[label]) if self.label_names is not None and label < len(self.label_names) else str(label)

    def _item_name(self, index: int, item: Mapping) -> str:
        """What a row of the montage shows: the item's image path from the dataset's raw items (a MONAI dataset's
        ``data``, e.g. a datalist's; cut to its file or folder name by :func:`distinct_tails`), its ``id``, else its
        position ``item <i>``."""
        raw = getattr(self.dataset, "data", None)
        raw = raw[index] if isinstance(raw, Sequence) and index < len(raw) else None
        for source in (raw, item):
            if isinstance(source, Mapping):
                image = source.get("image")
                if isinstance(image, (str, os.PathLike)):
                    return str(image)
                if isinstance(source.get("id"), str):
                    return source["id"]
        return f"item {index}"

    def _indices(self) -> list[int]:
        """The items shown: every class in turn, in the dataset's order, when the raw items give labels; else the
        first ones (a montage of 4 validation items showed 2 classes of 3, never the rare one; trial X)."""
        n = min(self.num_images, len(self.dataset))
        raw = getattr(self.dataset, "data", None)
        if not isinstance(raw, Sequence) or len(raw) != len(self.dataset):
            return list(range(n))
        by_class: dict[int, list[int]] = {}
        for i, item in enumerate(raw):  # items of no (or an unknown) label come after every class's
            label = item_label(item)
            by_class.setdefault(-1 if label is None else label, []).append(i)
        if list(by_class) == [-1]:
            return list(range(n))
        turns = [ids[r] for r in range(max(map(len, by_class.values()), default=0))
                 for _, ids in sorted(by_class.items(), key=lambda c: (c[0] < 0, c[0])) if r < len(ids)]
        return sorted(turns[:n])

    def _batch(self, net: torch.nn.Module) -> tuple[torch.Tensor, list[dict]]:
        indices = self._indices()
        if not indices:
            raise ValueError("SamplingFiguresHandler: the dataset is empty.")
        self._shown = indices
        items = [self.dataset[i] for i in indices]
        device = self.device or network_device(net)
        images = torch.stack([torch.as_tensor(it["image"]) for it in items]).float().to(device)
        return images, [it if isinstance(it, dict) else {} for it in items]

    def draw(self) -> list[str]:
        """Draw both pictures now; returns the file paths."""
        net = unwrap_network(self.network)
        if self.checkpoint is not None and Path(self.checkpoint).is_file():
            from monai_das.engines.export import load_weights

            # the network's own weights are put back afterwards (no deepcopy: a module inside DDP carries DDP's hooks,
            # and copying them rebuilds DDP on a half-built module)
            saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
            load_weights(net, self.checkpoint)
            try:
                return self._draw(net)
            finally:
                net.load_state_dict(saved)
        return self._draw(net)

    def _draw(self, net: torch.nn.Module) -> list[str]:
        from monai.networks.utils import eval_mode

        from monai_das.networks.utils import preserved_modes
        from monai_das.visualize import plot_kept_frames, plot_sampling_matrix

        images, items = self._batch(net)
        with preserved_modes(net), eval_mode(net), torch.no_grad():
            out = net.sample(images, num_samples=self.num_samples)
            # the prediction of the frames shown: a second pass drew other frames for the random sampler (trial T71e)
            probs = torch.softmax(net.classify_kept(net.to_frames(images), out.indices).float(), dim=-1).cpu()
        titles, evidence = [], []
        names = distinct_tails([self._item_name(i, it) for i, it in zip(self._shown, items)])
        for i, (it, p) in enumerate(zip(items, probs)):
            pred = int(p.argmax())
            title = f"pred {self._name(pred)} ({float(p[pred]):.2f})"
            label = item_label(it)  # none for an unknown one (-1 named the last class)
            if label is not None:
                title = f"label {self._name(label)}\n{title}"
            titles.append(f"{names[i]}\n{title}")
            ev = next((it[k] for k in ("evidence", "informative") if k in it), None)
            evidence.append(None if ev is None else [int(j) for j in torch.as_tensor(ev).reshape(-1) if int(j) >= 0])
        self.paths = [
            plot_kept_frames(out.frames, out.indices, self.output_dir / "kept_frames.png", titles=titles,
                             num_frames=int(out.matrix.shape[-1]), evidence=evidence),
            plot_sampling_matrix(
                out.matrix, self.output_dir / "sampling_matrix.png",
                title=f"sampling matrix P ({titles[0].splitlines()[0]})"
            ),
        ]
        return self.paths

    def __call__(self, engine: Any) -> None:
        paths = self.draw()
        self.logger.info(f"sampling pictures written: {', '.join(paths)}")
