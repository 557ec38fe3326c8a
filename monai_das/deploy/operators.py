"""
MONAI Deploy App SDK operators of the DAS classification application (need ``monai-deploy-app-sdk``).

The graph streams one study per tick: :class:`StudyLoaderOperator` → :class:`DASInferenceOperator` →
:class:`DASReportWriterOperator` (→ :class:`DASTextSRWriterOperator` for DICOM studies when a DICOM SR is wanted).
Every operator catches the errors of the study it is handling and passes an error report on, so a bad study never
stops the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.core.domain.dicom_series_selection import SelectedSeries, StudySelectedSeries
from monai.deploy.core.domain.dicom_study import DICOMStudy
from monai.deploy.operators.dicom_text_sr_writer_operator import DICOMTextSRWriterOperator

from monai_das.data.studies import LoadStudy, Study, StudySource
from monai_das.deploy.predictor import DASPredictor
from monai_das.deploy.report import (
    error_report,
    report_text,
    study_output_path,
    study_report,
    write_json,
    write_summary,
)
from monai_das.utils.io import fsync_path

__all__ = [
    "StudyMessage",
    "StudyLoaderOperator",
    "DASInferenceOperator",
    "DASReportWriterOperator",
    "DASTextSRWriterOperator",
    "dicom_selection",
]

logger = logging.getLogger(__name__)


def _replaced_source(path: Path, source: str) -> str | None:
    """The ``source`` of an earlier run's report at ``path`` when it is another study's, else ``None``."""
    import json

    try:
        earlier = json.loads(path.read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):  # no report there yet, or not one this app wrote
        return None
    return str(earlier) if earlier and os.path.realpath(str(earlier)) != os.path.realpath(source) else None


@dataclass
class StudyMessage:
    """What flows between the operators: the study's source, the loaded study (if it could be) and its report."""

    source: StudySource
    study: Study | None = None
    report: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def dicom_selection(study: Study, selection_name: str = "das",
                    kept_images: list | None = None) -> list[StudySelectedSeries]:
    """The SDK's ``StudySelectedSeries`` list of a DICOM study (``DICOMTextSRWriterOperator`` copies tags from it);
    its metadata carries the study id and the report's ``kept_images`` (the SR references them)."""
    if not study.dicom_headers:
        raise ValueError(f"study '{study.source.study_id}' is not a DICOM study.")
    first = study.dicom_headers[0]
    series = DICOMSeries(str(first.get("SeriesInstanceUID", "")))
    for ds in study.dicom_headers:
        series.add_sop_instance(ds)  # wrapped in a DICOMSOPInstance by the series
    dicom_study = DICOMStudy(str(first.get("StudyInstanceUID", "")))
    dicom_study.add_series(series)
    selected = StudySelectedSeries(dicom_study, metadata={"study_id": study.source.study_id,
                                                          "kept_images": list(kept_images or [])})
    selected.add_selected_series(SelectedSeries(selection_name, series))
    return [selected]


class StudyLoaderOperator(Operator):
    """
    Emit the studies one per tick (give it ``CountCondition(fragment, count=len(sources))``).

    Named output:
        study: :class:`StudyMessage`; ``study`` is the preprocessed :class:`Study`, or ``report`` an error report
        when the study could not be read (stage ``"load"``).

    Args:
        fragment: the application.
        sources: the studies (:func:`monai_das.data.discover_studies`).
        loader: the :class:`monai_das.data.LoadStudy` that reads and preprocesses a study (for a model:
            :class:`monai_das.deploy.studies.StudyLoader`).
    """

    def __init__(self, fragment: Fragment, *args, sources: list[StudySource], loader: LoadStudy, **kwargs) -> None:
        self.sources = list(sources)
        self.loader = loader
        self._next = 0
        self.output_name = "study"
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output(self.output_name)

    def compute(self, op_input, op_output, context) -> None:
        if self._next >= len(self.sources):  # more ticks than studies: nothing left to emit
            return
        source = self.sources[self._next]
        self._next += 1
        try:
            message = StudyMessage(source, study=self.loader.load(source))
        except Exception as e:  # one bad study must not stop the others
            logger.error("study %s could not be loaded: %s", source.study_id, e)
            message = StudyMessage(source, report=error_report(source, e, stage="load"))
        op_output.emit(message, self.output_name)


class DASInferenceOperator(Operator):
    """
    Classify a study with the DAS network and build its report.

    Named input:
        study: :class:`StudyMessage` from :class:`StudyLoaderOperator`.
    Named output:
        report: the same message with ``report`` set (see :func:`monai_das.deploy.report.study_report`); errors
        during inference give an error report (stage ``"inference"``). Every report, a passed-on error report of a
        study that could not be loaded too, carries the model's warnings (``predictor.warnings``).

    Args:
        fragment: the application.
        predictor: the loaded :class:`DASPredictor` (its engine and default ``k``: ``predictor.num_kept``).
        num_samples: ``k`` kept per study instead of the predictor's default (``None``: the default); the report's
            ``num_kept`` and ``model.num_kept`` give the ``k`` used.
        recipe: the preprocessing recipe the study loader applies (the model's with the app's overrides), reported
            as ``model.recipe`` (``None``: the model's own).
    """

    def __init__(
        self, fragment: Fragment, *args, predictor: DASPredictor, num_samples: int | None = None,
        recipe: Mapping[str, Any] | None = None, **kwargs
    ) -> None:
        self.predictor = predictor
        self.num_samples = predictor.budget(num_samples) if num_samples is not None else None
        self.recipe = dict(recipe) if recipe is not None else None
        self.input_name, self.output_name = "study", "report"
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name)
        spec.output(self.output_name)

    def compute(self, op_input, op_output, context) -> None:
        message: StudyMessage = op_input.receive(self.input_name)
        if message.report is None and message.study is not None:
            try:
                prediction = self.predictor.predict(message.study.image, num_samples=self.num_samples)
                model = self.predictor.describe()
                if self.num_samples is not None:
                    model["num_kept"] = self.num_samples
                if self.recipe is not None:  # what the study loader applied (with the app's overrides)
                    model["recipe"] = self.recipe
                message.report = study_report(message.study, prediction, model)
            except Exception as e:
                logger.error("study %s could not be classified: %s", message.source.study_id, e)
                message.report = error_report(message.source, e, stage="inference", warnings=self.predictor.warnings)
        elif message.report is not None and message.report.get("status") != "ok":  # a study that could not be read
            # the model's warnings (a grid override, an engine fallback) are in every report of the run
            message.report["warnings"] = [*(message.report.get("warnings") or []), *self.predictor.warnings]
        op_output.emit(message, self.output_name)


class DASReportWriterOperator(Operator):
    """
    Write ``<output_folder>/<study_id>.json`` per study (see :func:`~monai_das.deploy.report.study_output_path`)
    and ``summary.json`` after the last one.

    Named input:
        report: :class:`StudyMessage` with its ``report``.
    Named outputs (optional receivers; only emitted for classified DICOM studies when ``write_sr``):
        text: the report as text; study_selected_series_list: the study's series, for the DICOM SR writer.

    Args:
        fragment: the application.
        output_folder: where the JSON files go (created).
        num_studies: how many reports to expect before writing ``summary.json``.
        write_sr: emit the SR inputs for classified DICOM studies.

    Attributes:
        reports: the reports written so far, in order.
    """

    def __init__(
        self, fragment: Fragment, *args, output_folder: str | Path, num_studies: int, write_sr: bool = False,
        **kwargs,
    ) -> None:
        self.output_folder = Path(output_folder)
        self.num_studies = int(num_studies)
        self.write_sr = write_sr
        self.reports: list[dict[str, Any]] = []
        self.input_name = "report"
        self.output_text, self.output_series = "text", "study_selected_series_list"
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name)
        spec.output(self.output_text).condition(ConditionType.NONE)
        spec.output(self.output_series).condition(ConditionType.NONE)

    def compute(self, op_input, op_output, context) -> None:
        message: StudyMessage = op_input.receive(self.input_name)
        report = message.report or error_report(message.source, "no report was produced", stage="report")
        path = study_output_path(self.output_folder, message.source.study_id, ".json")
        if _outside(path.parent, self.output_folder):  # nothing written or removed through a planted link
            error = (f"its report folder {path.parent} leads outside {self.output_folder} (a symbolic link): nothing "
                     "is written there")
            logger.error("report of study %s could not be written: %s", message.source.study_id, error)
            report = error_report(message.source, error, stage="report")
        else:
            replaced = _replaced_source(path, str(message.source.path))
            if replaced:  # e.g. two series folders named SE0002 run one after the other into one output folder
                note = (f"this report replaces '{path.name}' of another study, '{replaced}' (same study id "
                        f"'{message.source.study_id}'): to keep both, give each run its own output folder.")
                logger.warning("study %s: %s", message.source.study_id, note)
                report["warnings"] = [*report.get("warnings", []), note]
            try:
                report["report_file"] = str(write_json(report, path))
            except Exception as e:
                logger.error("report of study %s could not be written: %s", message.source.study_id, e)
                report = error_report(message.source, e, stage="report")  # no field of the unwritten report stays
                try:  # the error report replaces an earlier run's file, which would contradict summary.json
                    report["report_file"] = str(write_json(report, path))
                except Exception:
                    with contextlib.suppress(OSError):
                        path.unlink(missing_ok=True)
        self.reports.append(report)
        if self.write_sr and report["status"] == "ok" and message.study is not None and message.study.dicom_headers:
            op_output.emit(report_text(report), self.output_text)
            op_output.emit(dicom_selection(message.study, kept_images=report.get("kept_images")), self.output_series)
        elif self.write_sr and report["status"] != "ok":  # an earlier run's SR of this study would contradict it
            remove_srs(study_output_path(self.output_folder / SR_FOLDER, message.source.study_id),
                       self.output_folder / SR_FOLDER)
        if len(self.reports) == self.num_studies:
            write_summary(self.reports, self.output_folder / "summary.json")


#: the DICOM SR files go to ``<output>/dicom_sr/<study_id>/``
SR_FOLDER = "dicom_sr"


#: prefix of the temporary folder an SR is written into before it is moved into its study's SR folder
_SR_TMP_PREFIX = ".sr-"


def _outside(folder: Path, root: Path) -> bool:
    """Whether ``folder`` resolves (symbolic links followed) to a place outside ``root``: a link planted inside the
    output folder must not make the application write or delete files elsewhere."""
    return not Path(os.path.realpath(folder)).is_relative_to(os.path.realpath(root))


def remove_srs(folder: Path, root: Path, keep: Sequence[str] = ()) -> None:
    """Remove the SR files (``*.dcm`` files, not folders: ``us/cine.dcm/`` may be another study's) of one study's SR
    folder but those named in ``keep``, and the temporary folders a killed run left there, logging (not raising)
    what cannot be removed. Nothing is removed when ``folder`` resolves outside ``root``, the SR folder of the
    output (a symbolic link)."""
    try:
        exists = folder.is_dir()  # a study id longer than a file name may be: ENAMETOOLONG, not a stopped run
    except OSError as e:
        logger.error("SR folder %s cannot be looked at: %s", folder, e)
        return
    if exists and _outside(folder, root):
        logger.error("SR folder %s leads outside %s (a symbolic link): nothing removed there", folder, root)
        return
    for tmp in folder.glob(_SR_TMP_PREFIX + "*") if exists else ():
        if tmp.is_dir():
            try:
                shutil.rmtree(tmp)
            except OSError as e:
                logger.error("temporary SR folder %s could not be removed: %s", tmp, e)
    for old in folder.glob("*.dcm") if exists else ():
        if old.is_file() and old.name not in keep:
            try:
                old.unlink()
            except OSError as e:
                logger.error("earlier SR %s could not be removed: %s", old, e)


def _fit_name_group(group: str, limit: int = 64) -> str:
    """A PN component group (``family^given^middle^prefix^suffix``) within ``limit`` characters: its longest
    component shortened, one character at a time, so that ``"X" * 70 + "^Y"`` keeps its given name."""
    parts = group.split("^")[:5]
    while len("^".join(parts)) > limit:
        longest = max(range(len(parts)), key=lambda i: len(parts[i]))
        parts[longest] = parts[longest][:-1]
    return "^".join(parts)


def sr_text_value(keyword: str, value: Any) -> str | None:
    """
    A patient or study attribute of a source image as the SR may carry it: the value itself when valid for its VR,
    else made valid — control characters (line breaks, escapes) become spaces, a value longer than its VR allows is
    cut (LO 64 characters, SH and CS 16; a PN to 3 component groups of 64, its longest components shortened), a CS
    upper-cased (``Chest``) — and ``None`` when still invalid (a CS with ``-`` or ``!``: left out of the SR, or
    written empty where the SR must carry it). A receiver may refuse an SR that is not valid DICOM (trial T60c: tags
    copied verbatim, 300 characters and line breaks, were written as they were). What changed is logged by attribute
    name, never its value (it may name the patient).
    """
    from pydicom import config
    from pydicom.datadict import dictionary_VR
    from pydicom.valuerep import MAX_VALUE_LEN, validate_value

    vr = dictionary_VR(keyword)
    if not isinstance(value, (str, bytes)) and isinstance(value, Sequence):  # several values (a backslash in it)
        values = [sr_text_value(keyword, v) for v in value]
        return None if any(v is None for v in values) else "\\".join(str(v) for v in values)
    text = str(value)
    cleaned = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text)
    if vr == "PN":  # at most 3 groups (alphabetic, ideographic, phonetic) of 64 characters, each component kept
        cleaned = "=".join(_fit_name_group(group) for group in cleaned.split("=")[:3])
    elif vr in MAX_VALUE_LEN:
        cleaned = cleaned[:MAX_VALUE_LEN[vr]]
    if vr == "CS":
        cleaned = cleaned.upper()  # "Chest" as BodyPartExamined: common, and CHEST is what it means
    try:
        validate_value(vr, cleaned, config.RAISE)
    except ValueError:
        logger.warning("SR: the source's %s is not a valid %s, even cleaned: left out of the SR.", keyword, vr)
        return None
    if cleaned != text:
        logger.warning("SR: the source's %s was not a valid %s (control characters, too long or lower-case): "
                       "written corrected.", keyword, vr)
        return cleaned
    return value


def copy_text_attributes(ds: Any, source: Any, keywords: Sequence[str], required: Sequence[str] = ()) -> None:
    """
    Set each of ``keywords`` the ``source`` dataset has on ``ds`` as :func:`sr_text_value` makes it valid; one that
    cannot be made valid is written empty when ``required`` names it (DICOM type 2: present, empty when unknown),
    else removed from ``ds`` (not the SDK's Latin-1 rendering of it either).
    """
    for keyword in keywords:
        if keyword in source:
            value = sr_text_value(keyword, source.get(keyword))
            if value is not None:
                setattr(ds, keyword, value)
            elif keyword in required:
                setattr(ds, keyword, "")
            else:
                ds.pop(keyword, None)


class DASTextSRWriterOperator(DICOMTextSRWriterOperator):
    """
    The SDK's Basic Text SR writer, writing ``<output_folder>/<study_id>/<SOPInstanceUID>.dcm`` (replacing an earlier
    run's SR of that study) and logging (not raising) a failure, so a bad study does not stop the application.

    The SR (the SDK's, completed by :meth:`write`: UTF-8 patient and study attributes copied exactly, made valid for
    their VR when they are not, references to the source series and its instances) is written into a hidden
    temporary folder (``.sr-*``) in the study's SR folder and moved into place (``os.replace``, each file flushed to
    the disk first) once complete, then the earlier run's SR is removed: no ``*.dcm`` there is ever half-written
    (the temporary folder of a killed run is removed by the next run). When the write fails, the earlier run's SR is
    removed too (it would contradict this run's report) and the failure is in ``failed``.

    Named inputs: ``text`` and ``study_selected_series_list`` (see :class:`DASReportWriterOperator`).

    Attributes:
        written: ``{study_id: [paths]}``; failed: ``{study_id: error message}``.
    """

    def __init__(self, fragment: Fragment, *args, output_folder: str | Path, **kwargs) -> None:
        self.base_folder = Path(output_folder)
        self.written: dict[str, list[str]] = {}
        self.failed: dict[str, str] = {}
        super().__init__(fragment, *args, output_folder=output_folder, **kwargs)

    #: patient and study attributes the SDK copies from the source: copied again, in the SR's character set, exactly
    #: when valid for their VR (:func:`sr_text_value`)
    COPIED_TEXT = ("PatientName", "PatientID", "IssuerOfPatientID", "AccessionNumber", "StudyDescription", "StudyID",
                   "ReferringPhysicianName", "BodyPartExamined", "RequestedProcedureID")

    #: those an SR must carry (type 2), empty when the source's value cannot be made valid
    REQUIRED_TEXT = ("PatientName", "PatientID", "AccessionNumber", "StudyID", "ReferringPhysicianName")

    #: concept name of the SR's IMAGE items, the images the classifier kept (a private coding scheme: DICOM has no
    #: code for it)
    KEPT_IMAGE_CODE = ("KEPT", "99MONAIDAS", "Slice or frame used by the classifier")

    def write(self, content_text, dicom_series, output_dir: Path, kept_images: list | None = None):
        """
        The SDK's SR, then completed: written in UTF-8 (``SpecificCharacterSet`` ``ISO_IR 192``; the SDK writes
        ``ISO_IR 100`` and turns a name outside Latin-1, ``Müller^Jürgen=中文``, into ``??``) with the patient and study
        attributes copied again from the source and the report text set again (a study id ``Müller 中文/cine 1.dcm``
        in it), the source series and every SOP instance of it referenced in
        ``CurrentRequestedProcedureEvidenceSequence`` (the SDK references none), and one IMAGE content item per kept
        image (``kept_images``: the report's, :func:`~monai_das.deploy.report.kept_image_references`; concept
        :attr:`KEPT_IMAGE_CODE`, with ``ReferencedFrameNumber`` for a frame of a multi-frame file), so that a viewer
        opens the slices the classifier looked at.
        """
        import pydicom
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence as DicomSequence

        super().write(content_text, dicom_series, output_dir)
        instances = [i.get_native_sop_instance() for i in dicom_series.get_sop_instances()]
        source = instances[0]
        for path in output_dir.glob("*.dcm"):
            ds = pydicom.dcmread(str(path))
            ds.decode()  # every text in the SDK's character set first: read after the change, Latin-1 bytes were UTF-8
            ds.SpecificCharacterSet = "ISO_IR 192"
            for item in ds.get("ContentSequence", []):  # the report text, as given (not its Latin-1 rendering)
                if item.get("ValueType") == "TEXT" and "TextValue" in item:
                    item.TextValue = str(content_text)
            copy_text_attributes(ds, source, self.COPIED_TEXT, self.REQUIRED_TEXT)
            series = Dataset()
            series.SeriesInstanceUID = source.SeriesInstanceUID
            refs = []
            for inst in instances:
                ref = Dataset()
                ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = inst.SOPClassUID, inst.SOPInstanceUID
                refs.append(ref)
            series.ReferencedSOPSequence = DicomSequence(refs)
            study = Dataset()
            study.StudyInstanceUID = source.StudyInstanceUID
            study.ReferencedSeriesSequence = DicomSequence([series])
            ds.CurrentRequestedProcedureEvidenceSequence = DicomSequence([study])
            items = list(ds.get("ContentSequence", []))
            for kept in kept_images or []:
                code = Dataset()
                code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = self.KEPT_IMAGE_CODE
                ref = Dataset()
                ref.ReferencedSOPClassUID = kept["sop_class_uid"]
                ref.ReferencedSOPInstanceUID = kept["sop_instance_uid"]
                if kept.get("frame") is not None:
                    ref.ReferencedFrameNumber = int(kept["frame"])
                item = Dataset()
                item.RelationshipType, item.ValueType = "CONTAINS", "IMAGE"
                item.ConceptNameCodeSequence = DicomSequence([code])
                item.ReferencedSOPSequence = DicomSequence([ref])
                items.append(item)
            if kept_images:
                ds.ContentSequence = DicomSequence(items)
            pydicom.dcmwrite(str(path), ds, enforce_file_format=True)

    def compute(self, op_input, op_output, context) -> None:
        text = str(op_input.receive(self.input_name_text))
        selection = op_input.receive(self.input_name_dcm_series)
        study_id = selection[0].metadata().get("study_id", "study") if selection else "study"
        folder = study_output_path(self.base_folder, study_id)
        tmp = None
        try:
            series = selection[0].selected_series[0].series
            if _outside(folder, Path(self.base_folder)):  # checked before any folder is made through the link
                raise RuntimeError(f"its SR folder {folder} leads outside {self.base_folder} (a symbolic link): "
                                   "nothing is written there")
            folder.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=_SR_TMP_PREFIX, dir=folder))  # same file system: os.replace
            self.write(text, series, tmp, kept_images=selection[0].metadata().get("kept_images"))
            new = sorted(p.name for p in tmp.glob("*.dcm"))
            if not new:
                raise RuntimeError("the SR writer wrote no file.")
            for name in new:
                fsync_path(tmp / name)  # on the disk before its name appears
                os.replace(tmp / name, folder / name)
            fsync_path(folder)
            self.written[study_id] = [str(folder / name) for name in new]
        except Exception as e:
            logger.error("DICOM SR of study %s could not be written: %s", study_id, e)
            new = []  # an earlier run's SR would contradict this run's report: removed below
            self.failed[study_id] = f"{type(e).__name__}: {e}"
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        remove_srs(folder, Path(self.base_folder), keep=new)  # an earlier run's SR (a new UID each run)
