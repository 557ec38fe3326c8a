"""MONAI Label infer task serving a DAS bundle as a classifier (label, probabilities and the kept slices/frames)."""

from __future__ import annotations

import difflib
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.writer import ClassificationWriter

from monai_das.data.studies import LoadStudyd
from monai_das.deploy.predictor import ENGINES, DASPredictor, exported_checkpoint, find_bundle_files, resolve_engine
from monai_das.deploy.report import study_report
from monai_das.deploy.studies import StudyLoader
from monai_das.networks.factory import check_one_budget
from monai_das.utils.io import file_digest
from monai_das.utils.logs import bounded_repr

from ..keys import misspelling_of

logger = logging.getLogger(__name__)


class DASClassification(BasicInferTask):
    """
    Classification infer task for a DAS bundle (``InferType.CLASSIFICATION``).

    The request's ``image`` (a volume file, a DICOM series folder, a multi-frame DICOM or a video file, as the
    datastore hands it over) is read and preprocessed by the study layer shared with bundle inference and the Deploy
    app (:class:`monai_das.data.LoadStudyd` with the model's recipe: :class:`monai_das.deploy.studies.StudyLoader`),
    classified by :class:`monai_das.deploy.predictor.DASPredictor` (by default ONNX Runtime on ``models/model.onnx``,
    falling back to TorchScript ``models/model.ts``, then to ``models/model.pt`` + ``configs/inference.json``: see
    ``engine``), and the result JSON holds MONAI Label's usual ``prediction`` list (``[{"idx", "label", "score"}]``)
    plus ``das``: the predicted label, the probabilities, the kept slice/frame indices (network and source
    positions), ``k`` and the fraction of compute saved, and the engine that ran.

    Frame budget: a request may give ``num_kept`` (``k``, ``1 <= k <= T``) or ``keep_ratio`` (``k =
    round(keep_ratio·T)``); ``0``: the trained ``k`` of the model card; neither: the task's default (its ``num_kept``
    / ``keep_ratio``, shown in ``config`` by ``/info``; none: the trained ``k``). A request that carries both (a client
    echoing ``/info``'s ``config`` with one value changed) is read by the one that differs from ``config``; two values
    both changed and both non-zero are refused. Any ``k`` needs the ONNX export or the checkpoint (TorchScript keeps
    the trained one; another ``k`` is refused with a ``ValueError``).

    Engine: a request may give ``engine`` (:data:`ENGINES`; default the task's, shown in ``config``); another value is
    refused. The result's ``das`` says which engine ran (``engine``) and which was asked for (``engine_requested``),
    and where it ran (``device``: ``"cpu"`` or ``"cuda"``; MONAI Label turns a request's ``cuda…`` into ``cpu`` on a
    machine without a GPU, and an ONNX model runs on ONNX Runtime's CPU provider here whatever the request); when
    the engines differ (no file for the engine asked for, or an export of another checkpoint) ``das.warnings`` says
    why. A request key that looks like a misspelling of ``num_kept``, ``keep_ratio`` or ``engine``
    (:func:`lib.keys.misspelling_of`: ``num_kep``, ``keepRatio``) is named in ``das.warnings`` (and ignored); MONAI
    Label's own request keys (``device``, ``result_extension``, ``label_info``, ...) are far from those and pass.

    A model folder holding a training run's lock file (``models/.monai_das_training.lock``: a run writing there now,
    or one killed there, e.g. a bundle run into the model folder itself; the app's train task trains elsewhere and
    publishes completed runs only) may hold a partly trained model: each result's ``das.warnings`` says so.

    The model is reloaded when its files change (the app's train task writes ``<model_dir>/models/model.pt`` from
    another process): before each request the task looks for a model in ``model_dir``, then in ``bundle_path``, and
    reloads when the model/config files it finds differ (path, size or modification time) from the loaded ones. A
    checkpoint other than the one the ONNX/TorchScript export of the same folder records (its SHA-256, as
    ``python -m monai_das.engines.export`` writes) wins (``engine="eager"``: the export is of an older training); a
    folder copied with ``cp -r``, or a touched file, keeps its export. An export without that record is stale when the
    checkpoint is newer than it. A reload that fails (e.g. a training run that has written its configs but
    not yet its first checkpoint) keeps the loaded model and logs a warning.

    Args:
        bundle_path: DAS bundle folder (or an ONNX/TorchScript/checkpoint file, see ``DASPredictor.from_path``).
        engine: ``"onnxruntime"`` (default: ``models/model.onnx``), ``"torchscript"`` (``models/model.ts``) or
            ``"eager"`` (``models/model.pt`` + config); a folder without that engine's file falls back with a logged
            warning (see ``DASPredictor.from_path``), but never to TorchScript in a folder without the bundle's
            ``configs/`` (a program: ``engine="torchscript"`` runs it).
        num_kept: default ``k`` of a request (``None``: the trained ``k``); ``keep_ratio``: the same as a fraction of
            ``T`` (not both).
        prefer: the former option: ``"torchscript"`` = ``engine="torchscript"``, ``"checkpoint"`` =
            ``engine="eager"``.
        loader_options: :class:`StudyLoader` options: ``allowed_modalities`` and recipe overrides (``min_frames``,
            ``intensity_range``, ...; see :func:`monai_das.deploy.studies.spec_recipe`).
        description: shown by MONAI Label's ``/info``.
        model_dir: the app's model folder written by the train task (a bundle folder), preferred to ``bundle_path``
            once it holds a model. With ``model_dir`` the task may start without any model (``is_valid()`` is then
            ``False`` and a request fails until training has written one); without it a missing model raises
            ``FileNotFoundError`` here.
        kwargs: passed to ``BasicInferTask`` (``preload``, ``skip_writer``, ...).
    """

    def __init__(
        self,
        bundle_path: str,
        engine: str | None = None,
        loader_options: Mapping[str, Any] | None = None,
        description: str = "DAS: classify a volume/video from the slices/frames chosen by a learned sampler",
        model_dir: str | None = None,
        num_kept: int | None = None,
        keep_ratio: float | None = None,
        prefer: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.engine = resolve_engine(engine, prefer)
        check_one_budget(num_kept, keep_ratio, ("--conf num_kept", "--conf keep_ratio"))  # the app's defaults
        self.bundle_path = str(bundle_path)
        self.model_dir = str(model_dir) if model_dir is not None else None
        self.loader_options = dict(loader_options or {})
        self.predictor: DASPredictor | None = None
        self._signature: tuple | None = None
        self._load_error: str | None = None  # why the model found last could not be loaded (named by requests)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._others: dict[str, tuple[tuple, DASPredictor]] = {}  # engine → (signature, predictor), other engines
        self._checkpoint_digest: tuple[tuple, str] | None = None  # (the checkpoint's _stat, its SHA-256)
        self.base_description = description
        self.refresh(strict=model_dir is None)
        super().__init__(
            path=self.predictor.source if self.predictor else None,
            network=None,
            type=InferType.CLASSIFICATION,
            labels=self._labels(self.predictor),
            dimension=self._dimension(self.predictor),
            description=description,
            # request keys win over these; 0: not set (the trained k of the model card)
            config={"engine": self.engine, "num_kept": int(num_kept or 0), "keep_ratio": float(keep_ratio or 0.0)},
            load_strict=False,
            **kwargs,
        )
        self._describe()

    # ------------------------------------------------------------------------------------------ model (re)loading
    def _dimension(self, predictor: DASPredictor | None) -> int:
        """MONAI Label's ``dimension``: 2 for a clip model (2D frames over time), 3 for a volume model; before any
        model is served, the bundle's layout (its train config's recipe)."""
        if predictor is not None:
            return 2 if predictor.spec.layout == "video" else 3
        from ..trainers.das_train import bundle_layout

        return 2 if bundle_layout(self.bundle_path) == "video" else 3

    @staticmethod
    def _labels(predictor: DASPredictor | None) -> dict[str, int] | None:
        spec = predictor.spec if predictor else None
        if spec is None or not spec.labels:
            return None
        return {spec.label_name(i): i for i in range(len(spec.labels))}

    def _find_model(self) -> tuple[str, dict[str, Path | None]] | tuple[None, None]:
        """The first of ``model_dir``, ``bundle_path`` that holds a model, with its files."""
        for folder in [f for f in (self.model_dir, self.bundle_path) if f]:
            try:
                files = find_bundle_files(folder)
            except FileNotFoundError:
                continue
            if any(files[k] is not None for k in ("onnx", "torchscript", "checkpoint")):
                return folder, files
        return None, None

    def _stand_in(self, source: str | os.PathLike) -> bool:
        """Whether the model file (or folder) ``source`` is the bundle's own model served in place of the model
        folder's (none trained there yet)."""
        if not self.model_dir:
            return False
        return not Path(os.path.realpath(source)).is_relative_to(os.path.realpath(self.model_dir))

    @staticmethod
    def _stat(path: Path | None) -> tuple | None:
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return str(path), st.st_mtime_ns, st.st_size

    def _engine_for(self, files: Mapping[str, Path | None], engine: str | None = None) -> str:
        """``engine`` (default ``self.engine``), or ``"eager"`` when that engine's export is not of the checkpoint
        beside it (and a config can build the checkpoint): the export records another checkpoint's SHA-256 (a
        training run wrote ``model.pt`` after the export); an export without that record is stale when the checkpoint
        is newer. A copy (``cp -r``) or a touch changes the times, not the recorded checkpoint: its export is served."""
        engine = engine or self.engine
        export = {"onnxruntime": "onnx", "torchscript": "torchscript"}.get(engine)
        if export is None:
            return engine
        exported, ckpt = self._stat(files[export]), self._stat(files["checkpoint"])
        if not (exported and ckpt and files["config"] is not None):
            return engine
        recorded = exported_checkpoint(export, files[export])
        if recorded is not None:
            try:
                if recorded == self._digest(ckpt):
                    return engine
            except OSError:  # gone meanwhile: the reload that follows says so
                return engine
            logger.info("%s records another checkpoint than %s: serving the checkpoint (eager).", files[export],
                        files["checkpoint"])
            return "eager"
        if ckpt[1] > exported[1]:
            logger.info("%s is newer than %s: serving the checkpoint (eager).", files["checkpoint"], files[export])
            return "eager"
        return engine

    def _digest(self, stat: tuple) -> str:
        """SHA-256 of the checkpoint of ``stat`` (:meth:`_stat`), hashed once per (path, time, size)."""
        if self._checkpoint_digest is None or self._checkpoint_digest[0] != stat:
            self._checkpoint_digest = (stat, file_digest(stat[0]))
        return self._checkpoint_digest[1]

    def _describe(self) -> None:
        """``/info``'s description: what is served now and with which engine (``config``'s ``engine`` is only the
        request default: with no ``models/model.onnx`` another engine runs)."""
        predictor = self.predictor
        if predictor is None:
            self.description = f"{self.base_description} [no model yet]"
            return
        served = f"serving {predictor.source} with {predictor.engine}"
        if predictor.engine != self.engine:
            served += f", not {self.engine}: " + (predictor.engine_fallback or "the export is of another checkpoint")
        self.description = f"{self.base_description} [{served}]"

    def _other_engine(self, folder: str, files: Mapping[str, Path | None], engine: str) -> DASPredictor:
        """The predictor of ``folder`` for a request's ``engine`` other than the task's (loaded once per model files;
        a failure raises: the request named that engine)."""
        signature = (folder, engine) + tuple(self._stat(files[k]) for k in files)
        cached = self._others.get(engine)
        if cached is not None and cached[0] == signature:
            return cached[1]
        predictor = DASPredictor.from_path(folder, engine=self._engine_for(files, engine), device="cpu")
        self._others[engine] = (signature, predictor)
        return predictor

    def refresh(self, strict: bool = False, engine: str | None = None) -> DASPredictor | None:
        """
        (Re)load the model when its files changed since the last look; returns the current predictor (``None``:
        no model yet). ``strict``: raise when no model can be loaded and none is loaded yet. ``engine``: a request's
        engine other than the task's (its predictor is loaded beside the task's; a failure to load it raises).
        """
        with self._lock:
            folder, files = self._find_model()
            current = self._refresh(folder, files, strict)  # the task's own engine first: /info follows a new model
            if folder is not None and engine is not None and engine != self.engine:
                return self._other_engine(folder, files, engine)
            return current

    def _refresh(self, folder: str | None, files: Mapping[str, Path | None] | None, strict: bool
                 ) -> DASPredictor | None:
        """:meth:`refresh` of the task's own engine on what :meth:`_find_model` found (under ``self._lock``)."""
        if folder is None:
            self._load_error = None  # the refused model is gone too: "no model yet" again
            if strict:
                raise FileNotFoundError(
                    f"no model found at '{self.bundle_path}'"
                    + (f" or '{self.model_dir}'" if self.model_dir else "")
                    + ": expected a bundle with models/model.onnx, models/model.ts or models/model.pt (train one "
                    "first)."
                )
            return self.predictor
        signature = (folder, self.engine) + tuple(self._stat(files[k]) for k in files)
        if signature == self._signature and self.predictor is not None:
            return self.predictor
        self._signature = signature
        try:
            predictor = DASPredictor.from_path(folder, engine=self._engine_for(files), device="cpu")
        except Exception as e:
            self._load_error = f"the model in '{folder}' could not be loaded: {e}"
            if strict and self.predictor is None:
                raise
            logger.warning("could not (re)load the DAS model from %s (%s); keeping %s", folder, e,
                           self.predictor.source if self.predictor else "no model")
            return self.predictor
        self._load_error = None
        if self._stand_in(folder):
            logger.warning("%s: no model trained by the train task in '%s' yet; serving the bundle's own model "
                           "(classes %s) until there is one.", predictor.source, self.model_dir,
                           list(predictor.spec.labels or []))
        if self.predictor is not None:
            logger.info("DAS model reloaded: %s (was %s)", predictor.source, self.predictor.source)
        self.predictor = predictor
        if hasattr(self, "path"):  # not yet during __init__ (BasicInferTask sets it)
            self.path = [predictor.source]
            self.labels = self._labels(predictor)
            self.dimension = self._dimension(predictor)
            self._describe()
        return predictor

    def is_valid(self) -> bool:
        try:
            return self.refresh() is not None
        except Exception as e:  # /info must not fail on a broken model folder
            logger.warning("DAS model check failed: %s", e)
            return False

    def _current(self) -> DASPredictor:
        """The predictor of the running request (fixed for its whole run), else the loaded one."""
        predictor = getattr(self._local, "predictor", None) or self.predictor
        if predictor is None:
            # a model that is there but was refused (a truncated model.pt of a crashed training, a file holding
            # objects) is named with its reason, not reported as "no model yet"
            raise MONAILabelException(
                MONAILabelError.INFERENCE_ERROR,
                f"no DAS model is loaded: {self._load_error}" if self._load_error else
                f"no DAS model yet in '{self.model_dir}' or '{self.bundle_path}': run the training task first.",
            )
        return predictor

    def __call__(self, request, callbacks=None):
        notes = self._misspelt_keys(request)
        engine = self._request_engine(request)
        predictor = self.refresh(engine=engine)
        if predictor is None:
            self._current()  # raises: no model
        request = {**request, **self._request_budget(request), "engine": engine}
        self._local.predictor, self._local.notes = predictor, notes
        try:
            label, result = super().__call__(request, callbacks)
        finally:
            self._local.predictor, self._local.notes = None, None
        if isinstance(result, dict) and "label_names" in result:  # MONAI Label's: the task's, not the served one's
            result["label_names"] = self._labels(predictor)
        return label, result

    # ------------------------------------------------------------------------------------------ request keys
    def _misspelt_keys(self, request: Mapping[str, Any]) -> list[str]:
        """Warnings (also logged) for the request keys that look like misspellings of this task's own keys."""
        notes = []
        for key in request:
            meant = misspelling_of(key, REQUEST_KEYS) if isinstance(key, str) else None
            if meant is not None:
                notes.append(f"request key {key!r} is not a key of this task and was ignored: did you mean {meant!r}? "
                             f"(its keys: {', '.join(REQUEST_KEYS)})")
                logger.warning(notes[-1])
        return notes

    def _request_engine(self, request: Mapping[str, Any]) -> str:
        """The request's ``engine`` (absent or blank: the task's); an unknown one is refused."""
        engine = request.get("engine")
        if engine is None or (isinstance(engine, str) and not engine.strip()):
            return self.engine
        if engine not in ENGINES:
            close = [e for e in ENGINES if str(engine).strip().lower() in (e, e[:len(str(engine).strip())])]
            close = close or difflib.get_close_matches(str(engine).strip().lower(), list(ENGINES), n=1, cutoff=0.5)
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}"
                             + (f": did you mean {close[0]!r}?" if close else "."))
        return engine

    def _request_budget(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """
        The frame budget of a request as ``{"num_kept": k or 0, "keep_ratio": r or 0}`` (both keys, so that MONAI
        Label's merge with the task's ``config`` adds nothing to it), ``{}`` when the request gives none (the task's
        default). See the class docstring: an explicit ``0`` is the trained ``k``; of a request carrying both keys,
        the one that differs from ``config`` decides.
        """
        given = {key: _option(request, key, kind) or 0 for key, kind in _BUDGET if not _blank(request.get(key))}
        if len(given) == 2:  # e.g. /info's config sent back with one value changed
            default = {key: _option(self._config, key, kind) or 0 for key, kind in _BUDGET}
            changed = {k: v for k, v in given.items() if not math.isclose(v, default[k], rel_tol=1e-9)}
            if not changed:
                return {}  # the config itself: the task's default
            if len(changed) == 2:  # 0 is the trained k: only two non-zero values are both given
                check_one_budget(changed["num_kept"] or None, changed["keep_ratio"] or None,
                                 note=f"; the task's config, which a request may send back with one of them changed, "
                                 f"has num_kept={default['num_kept']!r}, keep_ratio={default['keep_ratio']!r}")
                changed = {k: v for k, v in changed.items() if v}
            given = changed
        return {**{key: 0 for key, _ in _BUDGET}, **given} if given else {}

    # ------------------------------------------------------------------------------------------ BasicInferTask
    def pre_transforms(self, data=None) -> Sequence[Callable]:
        loader = StudyLoader(self._current().spec, **self.loader_options)
        return [LoadStudyd(keys=self.input_key, loader=loader)]

    def post_transforms(self, data=None) -> Sequence[Callable]:
        return []

    def _get_network(self, device, data):
        """The predictor's network (loaded once per model file: ONNX, TorchScript or checkpoint), moved to
        ``device`` (an ONNX model runs on ONNX Runtime's CPU provider whatever the device). ``data`` ``None``
        (``BasicInferTask``'s ``preload`` at start-up) before any model is there: ``None``, the first request loads
        it (``--conf preload true`` on a model folder the train task has yet to fill stopped the app from starting,
        so it could not train one)."""
        if data is None and self.predictor is None:
            logger.info("preload: no DAS model yet; the first request after training loads it.")
            return None
        predictor = self._current()
        device = torch.device(device)
        if predictor.device != device:
            predictor.network.to(device)
            predictor.device = device
        return predictor.network

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu"):
        """
        Classify ``data[input_key]``; ``data[output_label_key]`` = probabilities, ``data["das"]`` = the report.

        ``data["num_kept"]`` / ``data["keep_ratio"]`` (the request's, else the task's config; ``0`` or ``None``: not
        set) choose ``k`` for this request.

        Raises:
            ValueError: a study of another grid than the model's, or a ``k`` the model cannot keep (the message names
            the model file and ``T``).
        """
        predictor = self._current()
        self._get_network(device, data)
        budget = predictor.budget(_option(data, "num_kept", int), _option(data, "keep_ratio", float))
        prediction = predictor.predict(data[self.input_key], num_samples=budget)
        data[self.output_label_key] = MetaTensor(torch.tensor(prediction.probabilities))
        # the model's warnings (an engine fallback, a grid override) go into the report's warnings
        model = {**predictor.describe(), "warnings": list(predictor.warnings)}
        report = study_report(data[f"{self.input_key}_study"], prediction, model)
        data["das"] = {
            k: report[k]
            for k in ("predicted_label", "predicted_name", "probabilities", "kept_indices", "kept_source_indices",
                      "kept_instance_numbers", "kept_images", "num_frames", "num_kept", "compute_saved", "macs_saved",
                      "warnings")
        }
        requested = data.get("engine") or self.engine
        data["das"]["engine"], data["das"]["engine_requested"] = predictor.engine, requested
        # MONAI Label maps a request's "cuda…" to "cpu" where there is no GPU, and an ONNX model runs on ONNX
        # Runtime's provider whatever the device: say where it ran
        data["das"]["device"] = predictor.running_device()
        warnings = list(data["das"]["warnings"] or [])
        if predictor.engine != requested and not predictor.engine_fallback:  # a fallback says so itself
            warnings.append(f"engine {requested!r} was not used: the {requested} export beside '{predictor.source}' "
                            "is of another checkpoint (it records another checkpoint's SHA-256, or, recording none, "
                            f"is older than the checkpoint: an export of an older training), so it runs "
                            f"{predictor.engine}.")
        if self._stand_in(predictor.source):  # a client sees it too, not only the server log
            warnings.append(
                f"served by the bundle's own model '{predictor.source}' (classes "
                f"{bounded_repr(list(predictor.spec.labels or []))}): no model has been trained on this datastore yet "
                f"(the train task writes '{self.model_dir}')."
            )
        unfinished = training_lock(predictor.source)
        if unfinished:
            warnings.append(unfinished)
        data["das"]["warnings"] = warnings + list(getattr(self._local, "notes", None) or [])
        return data

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[Any, Any]:
        """
        MONAI Label's ``ClassificationWriter`` result (``prediction``: ``[{"idx", "label", "score"}]``) with the class
        names of the model that ran, plus the ``das`` block; no label file. MONAI Label's writer names the scores
        from the task's ``labels``, those of the task's own engine: a request for another engine after a retraining
        got the former model's names ("normal" on the new model's "aneurysm" score, a third class dropped; T65a).
        """
        labels = self._labels(self._current())
        if labels is None:
            _, result = super().writer(data, extension=extension, dtype=dtype)
        else:  # MONAI Label's own writer, given the names of the model that ran
            _, result = ClassificationWriter(label=self.output_label_key,
                                             label_names={i: name for name, i in labels.items()})(data)
        result = dict(result or {})
        result["das"] = data["das"]
        return None, result


#: the frame-budget options of a request and their types
_BUDGET = (("num_kept", int), ("keep_ratio", float))
#: the request keys of this task (also its ``config``)
REQUEST_KEYS = ("num_kept", "keep_ratio", "engine")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def training_lock(source: str | os.PathLike) -> str | None:
    """
    A warning when the ``models/`` folder of the model file ``source`` holds a training run's lock file
    (:data:`monai_das.handlers.checkpoint.LOCK_NAME`, deleted when a run completes): a run is writing there, or one
    was killed or failed there, and the model may be partly trained. ``None`` otherwise.
    """
    from monai_das.handlers.checkpoint import LOCK_NAME, lock_owner

    folder = Path(source).parent
    if not (folder / LOCK_NAME).exists():
        return None
    owner = lock_owner(folder)
    return (f"'{folder}' holds the lock file of a training run ({owner or 'owner unknown'}) that is writing there or "
            f"did not complete (killed or failed): '{Path(source).name}' may be a partly trained model. Retrain (the "
            "app's train task trains in a staging folder and publishes completed runs only), or delete "
            f"'{folder / LOCK_NAME}' once the model is known to be good.")


def _option(data: Mapping[str, Any], key: str, kind: type) -> Any:
    """A numeric request option (``num_kept``, ``keep_ratio``): ``None`` when absent, empty or 0; ``ValueError``
    when it is not a number."""
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = kind(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or (kind is int and isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{key} must be {'a whole number (k, frames kept)' if kind is int else 'a number'}, got "
                         f"{value!r}.")
    return number or None
