"""A DAS classifier exported to ONNX (:func:`monai_das.engines.save_onnx`), run with ONNX Runtime."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from monai_das.networks.nets.sampler import check_count
from monai_das.networks.utils import check_finite, frame_axis

#: the ONNX Runtime sessions of this process (weakly held)
_SESSIONS: weakref.WeakSet = weakref.WeakSet()
#: in a forked child (a DataLoader worker): the sessions inherited from the parent, never freed there
_INHERITED: list = []


def _keep_inherited_sessions() -> None:
    """After ``fork``: hold every session the parent had, so the child never frees one. A session's thread pool does
    not survive a fork (its threads stay in the parent), and freeing it waits on them forever: a DataLoader worker
    whose garbage collection met an unused session (an earlier export check's) hung, and the run with it."""
    _INHERITED.extend(list(_SESSIONS))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_keep_inherited_sessions)

__all__ = ["OnnxClassifier", "ONNX_CARD_PROP", "NETWORK_PROP", "DIGEST_PROP", "onnx_digest", "digest_state",
           "check_onnx_digest", "external_tensors"]

#: ``metadata_props`` key of the model card in an exported ONNX file
ONNX_CARD_PROP = "metadata.json"
#: ``metadata_props`` key of the network facts (``layout``, ``slice_axis``, ``num_frames``, ``num_kept``, ``method``)
NETWORK_PROP = "monai_das.network"
#: ``metadata_props`` key of an export's digest (:func:`onnx_digest`), written last by ``save_onnx``
DIGEST_PROP = "monai_das.digest"

logger = logging.getLogger(__name__)


def onnx_digest(model: Any) -> str:
    """
    SHA-256 of an ONNX ``ModelProto`` without its metadata, followed by every metadata property but
    :data:`DIGEST_PROP` (sorted by key): what ``save_onnx`` records in :data:`DIGEST_PROP`, so that a card edited in
    the file, or another model's card put on this graph, is told from the export (trial T68e: both were served
    without a word, e.g. class names swapped). A check against edits and mix-ups, not a signature: whoever can
    write the file can write a new digest.
    """
    bare = type(model)()
    bare.CopyFrom(model)
    props = sorted((p.key, p.value) for p in bare.metadata_props if p.key != DIGEST_PROP)
    del bare.metadata_props[:]
    digest = hashlib.sha256(bare.SerializeToString(deterministic=True))
    digest.update(json.dumps(props, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def digest_state(model: Any) -> bool | None:
    """``True`` when the ONNX ``ModelProto`` ``model`` holds the digest of its graph and metadata
    (:func:`onnx_digest`), ``False`` when it holds another one (changed after export), ``None`` when it holds none
    (written before the digest, or by other code)."""
    recorded = next((p.value for p in model.metadata_props if p.key == DIGEST_PROP), None)
    return None if recorded is None else recorded == onnx_digest(model)


def check_onnx_digest(path: str | os.PathLike) -> bool | None:
    """:func:`digest_state` of the ONNX file ``path`` (its protobuf parsed, weights included, no external data)."""
    import onnx

    return digest_state(onnx.load(str(path), load_external_data=False))


def external_tensors(model: Any) -> list[str]:
    """
    Names of the tensors of the ONNX ``ModelProto`` ``model`` (initializers, sparse initializers, node attributes,
    subgraphs included) whose data lies in another file (``data_location`` ``EXTERNAL``). ``save_onnx`` never writes
    one; a received file naming ``secret.bin`` has ONNX Runtime, which is handed the file's bytes, read
    ``./secret.bin`` of the working directory as weights (security review T71g).
    """
    import onnx

    found: list[str] = []

    def tensors(t: Any) -> None:
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
            found.append(t.name or "(unnamed)")

    def nodes(items: Any) -> None:
        for node in items:
            for a in node.attribute:
                sparse = [x for s in (a.sparse_tensor, *a.sparse_tensors) for x in (s.values, s.indices)]
                for t in (a.t, *a.tensors, *sparse):
                    tensors(t)
                for sub in (a.g, *a.graphs):
                    graph(sub)

    def graph(g: Any) -> None:
        for t in (*g.initializer, *(x for s in g.sparse_initializer for x in (s.values, s.indices))):
            tensors(t)
        nodes(g.node)

    graph(model.graph)
    for f in model.functions:
        nodes(f.node)
    return found


def sampler_input_limit(method: Any, num_frames: int) -> tuple[float, str] | None:
    """
    :meth:`~monai_das.networks.BaseSampler.input_limit` in float32 (what an export computes in) of the sampler class
    named ``method`` (``type(sampler).__name__``, as ``save_onnx`` records it in :data:`NETWORK_PROP`) for
    ``num_frames`` frames; ``None`` for a sampler without a limit, no method, or a class this version does not know.
    """
    from monai_das.networks.factory import SAMPLERS  # here: the factory imports this module's package

    classes = {cls.__name__: cls for cls in SAMPLERS.values()}
    sampler = classes.get(method) if isinstance(method, str) else None
    return sampler.input_limit(num_frames, torch.float32) if sampler is not None else None


class OnnxClassifier(nn.Module):
    """
    Runs an ONNX export of a :class:`~monai_das.networks.SubsampledClassifier` with ONNX Runtime, as a module with
    the same calls: ``forward(x)`` → logits, :meth:`forward_with_indices` → logits and kept indices of the same pass
    (the graph's second output, not re-derived). Tensors in and out are torch tensors on the CPU (inputs on another
    device are copied).

    The file must be what :func:`monai_das.engines.save_onnx` writes: input ``image`` (``[batch, *item_shape]``),
    optionally ``num_samples`` (``int64 [1]``: any ``k`` at inference), outputs ``pred`` and ``indices``; its model
    card (``metadata_props["metadata.json"]``, :attr:`card`) and network facts (``"monai_das.network"``: layout,
    slice axis, ``T``, default ``k``) are read as plain JSON, never evaluated.

    Args:
        path: the ``.onnx`` file.
        num_samples: ``k`` used when a call does not give one; ``None``: the ``k`` the network was exported with
            (the trained one).
        num_threads: ONNX Runtime intra-op threads (``None``: its default, one per core).
        providers: execution providers (default ``["CPUExecutionProvider"]``).

    Raises:
        FileNotFoundError: no such file. ValueError: the file is not such an export (inputs/outputs named), or
        ``num_samples`` is outside ``1..T``.

    Shapes: ``x`` ``B×C×D×H×W`` (volume) or ``B×T×C×H×W`` (video), exactly the exported item shape → logits
    ``B×num_classes``, indices ``B×k``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        num_samples: int | None = None,
        num_threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file '{self.path}' does not exist.")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = check_count(num_threads, "num_threads")
        # one read: ONNX Runtime runs, and the digest check below reads, the same bytes (a file replaced between
        # two reads would otherwise be checked but not run)
        data = self.path.read_bytes()
        import onnx

        try:
            proto = onnx.load_model_from_string(data)
        except Exception:  # not a whole file: ONNX Runtime's refusal below says so
            proto = None
        external = external_tensors(proto) if proto is not None else []
        if external:
            raise ValueError(
                f"'{self.path}' keeps the data of {len(external)} tensor(s) ({', '.join(external[:3])}) in other "
                f"files (ONNX external data), which a monai_das export never does: ONNX Runtime would read them from "
                f"the working directory, whatever file they name. A model file is data: export it again as one file "
                f"(`python -m monai_das.engines.export onnx ...`).")
        try:
            self.session = ort.InferenceSession(data, options, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:
            damaged = "INVALID_PROTOBUF" in str(e) or "Protobuf parsing failed" in str(e)
            hint = (" (not a whole ONNX file: truncated or damaged in a copy? export it again: `python -m "
                    "monai_das.engines.export onnx ...`)") if damaged else ""
            raise ValueError(f"ONNX Runtime cannot load '{self.path}'{hint}: {e}") from e
        _SESSIONS.add(self.session)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if "image" not in inputs or not {"pred", "indices"} <= set(outputs):
            raise ValueError(
                f"'{self.path}' is not a monai_das ONNX export: inputs {sorted(inputs)}, outputs {outputs}; expected "
                f"input 'image' (and optionally 'num_samples') and outputs 'pred' and 'indices' "
                f"(export with `python -m monai_das.engines.export onnx`)."
            )
        shape = inputs["image"].shape
        if any(not isinstance(s, int) for s in shape[1:]):
            raise ValueError(f"'{self.path}': input 'image' must have a fixed item shape, got {shape}.")
        self.item_shape = tuple(int(s) for s in shape[1:])
        self.any_k = "num_samples" in inputs
        meta = self.session.get_modelmeta().custom_metadata_map
        if DIGEST_PROP in meta and not digest_state(proto):
            raise ValueError(
                f"'{self.path}' was changed after its export: its graph or metadata (model card, network facts) do "
                f"not match the '{DIGEST_PROP}' recorded at export, so the card may not describe this graph (edited "
                f"class names or preprocessing, another model's card). Export it again from its checkpoint "
                f"(`python -m monai_das.engines.export onnx --bundle_root <bundle_root> --config_file "
                f"<bundle>/configs/inference.json`).")
        if DIGEST_PROP not in meta:
            logger.info(f"'{self.path}' records no '{DIGEST_PROP}' (exported before monai_das checked it, or by other "
                        "code): its metadata is not checked against its graph.")
        self.card: dict | None = self._json_prop(meta, ONNX_CARD_PROP)
        facts = self._json_prop(meta, NETWORK_PROP)
        if facts is None:
            raise ValueError(f"'{self.path}' has no '{NETWORK_PROP}' metadata (layout, slice axis, T): it was not "
                             f"written by monai_das.engines.save_onnx; export it again.")
        self.layout, axis = str(facts.get("layout")), facts.get("slice_axis", 0)
        self.slice_axis = axis if isinstance(axis, int) and not isinstance(axis, bool) else -1
        if self.layout not in ("volume", "video") or not 0 <= self.slice_axis <= 2 or len(self.item_shape) != 4:
            raise ValueError(f"'{self.path}': unusable network metadata {facts} for input shape {shape}.")
        self.num_frames = self.item_shape[frame_axis(self.layout, self.slice_axis)]
        #: ``(max |x|, why)`` beyond which the exported sampler's float32 computation overflows (its class's
        #: :meth:`~monai_das.networks.BaseSampler.input_limit` for this file's ``T``: what the eager network refuses);
        #: ``None``: finiteness only (no such limit, or a sampler this version does not know)
        self.input_limit = sampler_input_limit(facts.get("method"), self.num_frames)
        out_k = self.session.get_outputs()[outputs.index("indices")].shape[-1]
        self.exported_k = int(out_k) if isinstance(out_k, int) else None
        default = num_samples
        if default is None:
            default = facts.get("num_kept") if self.any_k else self.exported_k
        self.num_samples = self.check_num_samples(default) if default is not None else None
        self.last_indices: torch.Tensor | None = None

    def _json_prop(self, meta: dict, key: str) -> dict | None:
        """A metadata property read as plain JSON (never evaluated); ``None`` when absent."""
        if key not in meta:
            return None
        try:
            value = json.loads(meta[key])
        except ValueError as e:
            raise ValueError(f"'{self.path}': embedded '{key}' is not valid JSON: {e}") from e
        return value if isinstance(value, dict) else None

    def check_num_samples(self, num_samples: Any) -> int:
        """``num_samples`` as an int in ``1..T`` that this file can keep (``ValueError`` naming the file)."""
        k = check_count(num_samples, f"num_samples (k) for '{self.path}'")
        if k > self.num_frames:
            raise ValueError(f"cannot keep k={k} frames: the model '{self.path}' takes T={self.num_frames} frames "
                             f"(1 <= k <= T).")
        if not self.any_k and self.exported_k is not None and k != self.exported_k:
            raise ValueError(f"'{self.path}' was exported for k={self.exported_k} kept frames and has no "
                             f"'num_samples' input; it cannot keep k={k}.")
        return k

    def check_input(self, x: torch.Tensor) -> np.ndarray:
        """
        ``x`` as a float32 array of shape ``[B, *item_shape]``. ``ValueError`` naming the file: another shape (both
        named), integer or boolean input (as the eager network: a ``uint8`` image is not the ``[0, 1]`` intensities
        it was trained on), NaN or Inf values, values beyond :attr:`input_limit` (DAS: ``1e19`` overflowed the frame
        statistics in the graph to NaN, and it returned logits and the first ``k`` frames without a word).
        """
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if x.ndim != len(self.item_shape) + 1 or tuple(x.shape[1:]) != self.item_shape:
            raise ValueError(
                f"the ONNX model '{self.path}' takes input [batch, {', '.join(map(str, self.item_shape))}], got "
                f"{list(x.shape)}."
            )
        if not x.is_floating_point():
            raise ValueError(f"the ONNX model '{self.path}' expects a floating point input (preprocessed "
                             f"intensities), got dtype {x.dtype}.")
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        max_abs, beyond = self.input_limit or (None, "")
        # as the eager check, on what the graph computes (float32); one pass (a torch view: one aminmax)
        check_finite(torch.from_numpy(arr), f"the input of the ONNX model '{self.path}'", inf="Inf", max_abs=max_abs,
                     beyond=beyond)
        return arr

    def forward_with_indices(self, x: torch.Tensor, num_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``B×num_classes`` and kept indices ``B×k`` (ascending) of one run."""
        feeds: dict[str, np.ndarray] = {"image": self.check_input(x)}
        k = self.check_num_samples(num_samples) if num_samples is not None else self.num_samples
        if self.any_k:
            if k is None:
                raise ValueError(f"'{self.path}' takes 'num_samples' and its card gives no default: pass num_samples.")
            feeds["num_samples"] = np.array([k], dtype=np.int64)
        pred, indices = self.session.run(["pred", "indices"], feeds)
        self.check_outputs(pred, indices, x.shape[0], k)
        return torch.from_numpy(pred), torch.from_numpy(indices).long()

    def check_outputs(self, pred: np.ndarray, indices: np.ndarray, batch: int, k: int | None) -> None:
        """
        Refuse what this file's graph returned unless it is ``batch × classes`` logits and ``batch × k`` distinct
        integer frame indices in ``0..T-1``: a graph carrying an export's metadata with indices ``[-1, 0, 7, 100]``
        (``T = 8``) or ``[2, 2, 2, 2]`` was reported as a study's kept frames, the source mapping silently dropped
        (trial T64b). ``RuntimeError`` naming the file and what it returned.
        """
        where = f"the ONNX model '{self.path}'"
        if pred.ndim != 2 or pred.shape[0] != batch:
            raise RuntimeError(f"{where} returned 'pred' of shape {list(pred.shape)} for a batch of {batch}: "
                               "expected [batch, classes].")
        want = k if k is not None else self.exported_k
        if indices.ndim != 2 or indices.shape[0] != batch or (want is not None and indices.shape[1] != want):
            raise RuntimeError(f"{where} returned 'indices' of shape {list(indices.shape)} for a batch of {batch}"
                               + (f" keeping k={want}" if want is not None else "") + ": expected [batch, k].")
        if not np.issubdtype(indices.dtype, np.integer):
            raise RuntimeError(f"{where} returned 'indices' of dtype {indices.dtype}: frame numbers are integers.")
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_frames):
            raise RuntimeError(f"{where} returned kept frame indices {indices.min()}..{indices.max()}, outside the "
                               f"T={self.num_frames} frames it takes (0..{self.num_frames - 1}): a damaged or edited "
                               "graph, or one exported for another model?")
        ordered = np.sort(indices, axis=1)
        repeats = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)  # (no column to compare for k = 1)
        if repeats.any():
            row = int(np.nonzero(repeats)[0][0])
            raise RuntimeError(f"{where} returned kept frame indices {indices[row].tolist()} with repeats: the "
                               "samplers keep k distinct frames (a damaged or edited graph?).")

    def forward(self, x: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        """Logits ``B×num_classes``; the kept indices of this call are left in :attr:`last_indices`."""
        logits, self.last_indices = self.forward_with_indices(x, num_samples)
        return logits.to(x.device) if isinstance(x, torch.Tensor) else logits
