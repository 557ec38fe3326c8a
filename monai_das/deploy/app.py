"""
The MONAI Deploy App SDK application: classify every study under an input path with an exported DAS bundle and
write a JSON report per study (plus, optionally, a DICOM Basic Text SR for DICOM studies).

In-process::

    app = DASClassifierApp(input_path="studies/", output_path="out/", model_path="bundles/das_volume_classification")
    app.run()
    app.reports  # the reports, also in out/<study_id>.json and out/summary.json

Command line: ``python -m monai_das.deploy --input studies/ --output out/ --model bundles/das_volume_classification``
(``--engine onnxruntime|torchscript|eager``, default ``onnxruntime`` on ``models/model.onnx``; ``--num_kept K`` or
``--keep_ratio R``: the frames kept at inference, default the trained ``k``).
Paths left out fall back to the SDK's environment variables ``HOLOSCAN_INPUT_PATH``, ``HOLOSCAN_OUTPUT_PATH`` and
``HOLOSCAN_MODEL_PATH`` (defaults ``input``, ``output``, ``models``), as in a MONAI Application Package.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application, RuntimeEnv
from monai.deploy.operators.dicom_utils import ModelInfo

from monai_das.deploy.operators import (
    SR_FOLDER,
    DASInferenceOperator,
    DASReportWriterOperator,
    DASTextSRWriterOperator,
    StudyLoaderOperator,
)
from monai_das.data.studies import discover_studies
from monai_das.deploy.predictor import DASPredictor, resolve_engine
from monai_das.deploy.report import check_output_paths, study_output_path
from monai_das.deploy.studies import VOLUME_ONLY_OPTIONS, StudyLoader
from monai_das.networks.factory import check_one_budget

__all__ = ["DASClassifierApp"]

logger = logging.getLogger(__name__)

#: the output folder's lock of a run and its holder (hidden files; see DASClassifierApp._hold_output)
_LOCK_NAME, _OWNER_NAME = ".monai_das_deploy.lock", ".monai_das_deploy.owner"


class DASClassifierApp(Application):
    """
    Classify studies (NIfTI/ITK volumes, DICOM series, multi-frame DICOM, video files) with a DAS bundle.

    Args:
        input_path: a study file, a folder of studies, a CSV study list or a datalist JSON (see
            :func:`monai_das.data.discover_studies`: the same studies and ids as the bundles' batch inference).
        dataset_dir: the folder every image of a CSV study list or datalist must lie in (default: the list's
            folder; a datalist's relative paths start there, a CSV's from its own folder), as the bundles'
            ``dataset_dir``: a row outside it refuses the list, naming its line.
        output_path: folder for ``<study_id>.json``, ``summary.json`` and ``dicom_sr/<study_id>/*.dcm`` (ids are
            relative paths, e.g. ``sub/scan.nii.gz`` → ``sub/scan.nii.gz.json``).
        model_path: bundle folder, ONNX file, TorchScript file or checkpoint (see :meth:`DASPredictor.from_path`).
        config_file: bundle config for a bare checkpoint.
        engine: ``"onnxruntime"`` (default: ``models/model.onnx``), ``"torchscript"`` (``models/model.ts``) or
            ``"eager"`` (``models/model.pt`` + config). A bundle without that engine's file falls back with a logged
            warning (the reports' ``model`` block gives ``engine`` and ``engine_fallback``).
        num_kept: ``k``, the frames kept per study at inference (``1 <= k <= T``; any ``k`` needs the ONNX export or
            the checkpoint); default: the trained ``k`` of the model card.
        keep_ratio: the same as a fraction of ``T`` (``k = max(1, round(keep_ratio·T))``); not with ``num_kept``.
        prefer: the former option, an alias: ``"torchscript"`` = ``engine="torchscript"``, ``"checkpoint"`` =
            ``engine="eager"``.
        device: torch device, ``"cpu"`` by default.
        write_sr: also write a DICOM Basic Text SR (the SDK's ``DICOMTextSRWriterOperator``) for each classified
            DICOM study, with the patient/study tags copied from it.
        loader_options: :class:`~monai_das.deploy.studies.StudyLoader` options: ``allowed_modalities`` and
            overrides of the model's preprocessing recipe (``min_frames``, ``axcodes``, ``pixdim``,
            ``intensity_range``, ``percentiles``, ``output_range``, ``resize``, ``temporal_mode``; see
            :func:`monai_das.deploy.studies.spec_recipe`).
        spec_overrides: :class:`~monai_das.deploy.spec.ModelSpec` fields overriding the bundle's
            (``spatial_size``, ``layout``, ``slice_axis``, ``in_channels``, ``labels``).
        predictor: an already loaded :class:`DASPredictor` (then ``model_path``, ``engine`` are ignored;
            ``num_kept``/``keep_ratio`` still apply).
        argv: command line for the Holoscan ``Application`` (default: this program, no flags).

    Attributes (after :meth:`run`): ``reports`` (list of report dicts), ``sr_files`` (``{study_id: [paths]}``),
    ``sr_errors`` (``{study_id: message}``).
    """

    #: what the SDK's ``Application.__init__`` sets first and its ``__del__`` reads: an app refused before that
    #: ``__init__`` (both budgets, an unknown engine) printed "Exception ignored in ... Application.__del__ ...
    #: AttributeError: ... '_async_executor'" after the refusal when it was collected (trial t72h)
    _async_executor = None

    def __init__(
        self,
        input_path: str | Path | None = None,
        output_path: str | Path | None = None,
        model_path: str | Path | None = None,
        config_file: str | Path | None = None,
        engine: str | None = None,
        device: str = "cpu",
        write_sr: bool = False,
        loader_options: Mapping[str, Any] | None = None,
        spec_overrides: Mapping[str, Any] | None = None,
        predictor: DASPredictor | None = None,
        argv: Sequence[str] | None = None,
        num_kept: int | None = None,
        keep_ratio: float | None = None,
        prefer: str | None = None,
        dataset_dir: str | Path | None = None,
    ) -> None:
        env = RuntimeEnv()
        self.input_path = Path(input_path if input_path is not None else env.input)
        self.output_path = Path(output_path if output_path is not None else env.output)
        self.dataset_dir = dataset_dir
        self.model_path = Path(model_path if model_path is not None else env.model)
        self.config_file, self.device = config_file, device
        # None when neither was given: a model file then runs with its own engine without a "fallback" warning
        self.engine = resolve_engine(engine, prefer) if engine is not None or prefer is not None else None
        check_one_budget(num_kept, keep_ratio, ("--num_kept", "--keep_ratio"))  # the CLI's names, which pass them
        self.num_kept, self.keep_ratio = num_kept, keep_ratio
        self.write_sr = write_sr
        self.loader_options = dict(loader_options or {})
        self.spec_overrides = dict(spec_overrides or {})
        self.predictor = predictor
        self.reports: list[dict[str, Any]] = []
        self.sr_files: dict[str, list[str]] = {}
        self.sr_errors: dict[str, str] = {}
        self._writer: DASReportWriterOperator | None = None
        self._sr_writer: DASTextSRWriterOperator | None = None
        self._holds_output = False  # this run took the lock of the output folder (_hold_output)
        super().__init__(list(argv) if argv is not None else [sys.executable, "monai_das.deploy"])

    def _hold_output(self) -> None:
        """
        One run at a time writes into the output folder (an OS file lock, :func:`monai_das.utils.io.hold_lock`, let
        go when the run ends, or its process, killed or not): two runs into one folder left the reports of two models
        side by side and a ``summary.json`` of one of them that contradicted the others (trial T67c).

        Raises:
            RuntimeError: another process, or another app of this process, writes into the folder.
        """
        from monai_das.utils.io import hold_lock

        if not self._holds_output:
            refusal = (lambda o: f"another run of the Deploy app is writing into '{self.output_path}'"
                       f"{f' ({o})' if o else ''}: wait for it to finish, or give this run another --output.")
            if not hold_lock(self.output_path, _LOCK_NAME, _OWNER_NAME, refusal, what="Deploy run"):
                raise RuntimeError(f"another run of the Deploy app in this process is writing into "
                                   f"'{self.output_path}': wait for it to finish, or give this run another --output.")
            self._holds_output = True

    def _clear_earlier_run(self, sources: list) -> None:
        """
        An earlier run's ``summary.json`` is removed before this run writes anything (it is written again at the end):
        a run killed half-way never leaves a summary that describes another run. Reports of studies that are not in
        this run (an earlier run on more studies) are kept, and named in a warning.
        """
        summary = self.output_path / "summary.json"
        summary.unlink(missing_ok=True)
        ours = {study_output_path(self.output_path, s.study_id, ".json").resolve() for s in sources}
        others = [p for p in self.output_path.rglob("*.json")
                  if SR_FOLDER not in p.relative_to(self.output_path).parts and p.resolve() not in ours]
        if others:
            names = ", ".join(str(p.relative_to(self.output_path)) for p in sorted(others)[:3])
            logger.warning(f"'{self.output_path}' also holds {len(others)} report(s) of studies that are not in this "
                           f"run ({names}{', ...' if len(others) > 3 else ''}), from an earlier run: kept, not in this "
                           "run's summary.json.")

    def compose(self) -> None:
        """Build the graph: loader → inference → report writer (→ SR writer)."""
        from monai_das.engines.checks import check_writable

        # before the model is loaded and any study read: an unwritable output would waste the whole run
        check_writable(self.output_path, option="output folder (--output)", create=False)
        budget = None
        if self.predictor is None:
            self.predictor = DASPredictor.from_path(
                self.model_path, config_file=self.config_file, device=self.device, engine=self.engine,
                num_kept=self.num_kept, keep_ratio=self.keep_ratio, **self.spec_overrides,
            )
        else:  # validated against the given predictor's model, passed to the inference operator
            budget = self.predictor.budget(self.num_kept, self.keep_ratio)
        logger.info("model %s: engine %s, k=%s of T=%d frames", self.predictor.source, self.predictor.engine,
                    budget or self.predictor.num_kept, self.predictor.spec.num_frames)
        # a study list's labels are the model's classes (a name or an index), checked before anything is read
        labels = self.predictor.spec.labels
        if self.dataset_dir is not None and not (self.input_path.is_file()
                                                 and self.input_path.suffix.lower() in (".csv", ".json")):
            logger.warning(f"dataset_dir '{self.dataset_dir}' is read for a CSV study list or a datalist only: "
                           f"ignored for the input '{self.input_path}'.")
        sources = discover_studies(self.input_path, label_names=labels or None, dataset_dir=self.dataset_dir)
        check_output_paths(self.output_path, [s.study_id for s in sources])
        logger.info("%d stud%s found under %s", len(sources), "y" if len(sources) == 1 else "ies", self.input_path)
        self.output_path.mkdir(parents=True, exist_ok=True)
        self._hold_output()
        self._clear_earlier_run(sources)
        study_loader = StudyLoader(self.predictor.spec, **self.loader_options)
        loader = StudyLoaderOperator(
            self, CountCondition(self, count=len(sources)), sources=sources, loader=study_loader, name="study_loader",
        )
        applied = {k: v for k, v in study_loader.recipe.items()  # a clip's recipe has no volume steps
                   if not (study_loader.layout == "video" and k in VOLUME_ONLY_OPTIONS)}
        infer = DASInferenceOperator(self, predictor=self.predictor, num_samples=budget, name="das_inference",
                                     recipe=applied)
        self._writer = DASReportWriterOperator(
            self, output_folder=self.output_path, num_studies=len(sources), write_sr=self.write_sr,
            name="report_writer",
        )
        self.add_flow(loader, infer, {("study", "study")})
        self.add_flow(infer, self._writer, {("report", "report")})
        if self.write_sr:
            from importlib.metadata import PackageNotFoundError, version

            try:
                das_version = version("monai_das")
            except PackageNotFoundError:
                das_version = "unknown"
            self._sr_writer = DASTextSRWriterOperator(
                self, output_folder=self.output_path / SR_FOLDER, copy_tags=True,
                model_info=ModelInfo(creator="monai_das", name=f"DAS {Path(self.predictor.source).name}",
                                     version=str(das_version)),
                custom_tags={"SeriesDescription": "DAS classification. Not for clinical use."},
                name="sr_writer",
            )
            self.add_flow(self._writer, self._sr_writer,
                          {("text", "text"), ("study_selected_series_list", "study_selected_series_list")})

    def run(self, *args, **kwargs) -> None:  # type: ignore[override]
        """
        Run the graph in this process; afterwards ``reports``, ``sr_files`` and ``sr_errors`` are filled.

        Raises:
            RuntimeError: the graph stopped before every study had its report (Ctrl-C or SIGTERM: Holoscan stops the
                graph and returns normally, and the command line said ``num_studies 13`` with exit status 0 for a
                run of 38 studies; trial T67c).
        """
        from monai_das.utils.io import release_lock

        try:
            super().run(*args, **kwargs)
        finally:
            if self._holds_output:
                release_lock(self.output_path, _LOCK_NAME, _OWNER_NAME)
            self._holds_output = False
        self.reports = list(self._writer.reports) if self._writer is not None else []
        if self._sr_writer is not None:
            self.sr_files, self.sr_errors = dict(self._sr_writer.written), dict(self._sr_writer.failed)
        expected = self._writer.num_studies if self._writer is not None else 0
        if len(self.reports) < expected:
            raise RuntimeError(
                f"the run stopped after {len(self.reports)} of {expected} studies (interrupted: Ctrl-C or SIGTERM?): "
                f"the other studies have no report in '{self.output_path}' and summary.json was not written. Run the "
                "same command again (every study is predicted again).")
