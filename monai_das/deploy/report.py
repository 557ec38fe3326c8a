"""JSON reports of the DAS deployment: one file per study plus a summary, written atomically."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_das.data.studies import PADDING, Study, StudySource, kept_source_indices, repeated_source_warning
from monai_das.deploy.predictor import Prediction
from monai_das.utils.io import write_text_atomic

__all__ = [
    "REPORT_VERSION",
    "study_output_path",
    "study_report",
    "error_report",
    "report_text",
    "write_json",
    "write_summary",
]

logger = logging.getLogger(__name__)

#: bumped when the report layout changes (not for an added key)
REPORT_VERSION = "1"


def study_output_path(folder: str | os.PathLike, study_id: str, suffix: str = "") -> Path:
    """
    ``<folder>/<study_id><suffix>``, where the study id (a relative path such as ``sub/b.nii.gz``, or a study list's
    ``id``) stays inside ``folder``: empty, ``.`` and ``..`` parts become ``_`` and a leading ``/`` is dropped.
    """
    parts = [p if p not in ("", ".", "..") else "_" for p in re.split(r"[\\/]+", str(study_id).strip("/\\"))]
    return Path(folder, *parts[:-1], parts[-1] + suffix)


def check_output_paths(folder: str | os.PathLike, study_ids: list[str], reserved: tuple[str, ...] = ("summary.json",)
                       ) -> None:
    """
    Refuse studies whose report files (:func:`study_output_path`) would be one file: two ids that map to the same path
    (``a/b`` and ``a\\b``, ``..`` and ``_``), or an id that maps to a file the application writes itself
    (``summary.json``). One report would silently overwrite the other.
    """
    seen = {Path(folder, name): f"the application's own '{name}'" for name in reserved}
    for study_id in study_ids:
        path = study_output_path(folder, study_id, ".json")
        if path in seen:
            raise ValueError(f"study {study_id!r} would write its report to '{path}', as does {seen[path]}: rename "
                             "one of them (a folder or file of the input, or an 'id' of the study list).")
        seen[path] = f"study {study_id!r}"


def study_report(study: Study, prediction: Prediction, model: Mapping[str, Any]) -> dict[str, Any]:
    """
    The report of a classified study.

    Keys: ``study_id``, ``status`` (``"ok"``), ``source`` (path), ``kind``, ``modality``, ``probabilities``
    (``{label name: p}``), ``predicted_label`` (id), ``predicted_name``, ``label`` and ``label_name`` (the class a
    CSV study list gave the study; ``null`` when unknown), ``kept_indices`` (network frame positions,
    ``0..T-1``), ``kept_source_indices`` (the same frames as the file's own slice/frame numbers, ``"padding"`` for
    a padding slice of ``resize="pad"``, see :func:`monai_das.data.kept_source_indices`; the ``source_frames`` of a
    bundle's predictions),
    ``kept_instance_numbers`` (DICOM series only), ``kept_images`` (DICOM studies only,
    :func:`kept_image_references`), ``num_frames`` (``T``), ``num_kept`` (``k``), ``compute_saved``
    (``1 - k/T``), ``macs`` / ``macs_saved`` (measured, eager models only, else ``null``), ``input`` (original shape
    and reader facts), ``model`` (source, format, layout, ...), ``warnings`` (messages, also logged: a gap or a gantry
    tilt in a DICOM series, :func:`monai_das.data.check_series_stack`; a recipe option other than the training's; the
    model's own, ``model["warnings"]`` (:attr:`DASPredictor.warnings`: a grid override, an engine fallback), moved
    here from the ``model`` block; the prediction's own (:attr:`Prediction.warnings`: kept indices of a traced export
    matched among identical frames); kept frames that are fewer distinct source frames than ``k``,
    :func:`monai_das.data.repeated_source_warning`; a model whose frames run across a DICOM series' slices), ``error``
    (``null``).
    """
    model = dict(model)
    model_warnings = [w for w in model.pop("warnings", None) or [] if w]
    p = prediction.to_dict()
    labels = list(model.get("labels") or [])
    names = [labels[i] if i < len(labels) else f"class_{i}" for i in range(len(p["probabilities"]))]
    kept = p["kept_indices"]
    kept_src = kept_source_indices(kept, study.source_indices)
    instance_numbers = study.info.get("instance_numbers")
    kept_instances = None
    if kept_src is not None and instance_numbers and study.info.get("source_axis") == 2:  # slices of the series
        kept_instances = [i if i == PADDING else instance_numbers[i]  # "padding": no slice, no InstanceNumber
                          for i in kept_src if i == PADDING or i < len(instance_numbers)]
    info = {k: v for k, v in study.info.items() if k not in ("modality", "instance_numbers", "warnings")}
    kept_images = kept_image_references(study, kept_src)
    repeated = repeated_source_warning(f"'{study.source.study_id}'", kept_src, p["num_frames"])
    if repeated:
        logger.warning(repeated)
    across = _across_slices(study, kept_src)
    if across:
        logger.warning(across)
    # the study layer's (a gap in a DICOM series, a gantry tilt: logged when it read the study) and this one
    # each once (discovery and the reading can say the same of a series: "parts of one DICOM series", trial Y)
    warnings = list(dict.fromkeys([*study.info.get("warnings", []), *model_warnings, *prediction.warnings,
                                   *(w for w in (repeated, across) if w)]))
    return {
        "report_version": REPORT_VERSION,
        "study_id": study.source.study_id,
        "status": "ok",
        "source": str(study.source.path),
        "kind": study.source.kind,
        "modality": study.info.get("modality"),
        "probabilities": dict(zip(names, p["probabilities"])),
        "predicted_label": p["predicted_label"],
        "predicted_name": p["predicted_name"],
        # the class a study list gave the study (index, name; null when unknown): reports can be scored as they are
        "label": study.source.label,
        "label_name": names[study.source.label] if study.source.label is not None
        and 0 <= study.source.label < len(names) else None,
        "kept_indices": kept,
        "kept_source_indices": kept_src,
        "kept_instance_numbers": kept_instances,
        "kept_images": kept_images,
        "num_frames": p["num_frames"],
        "num_kept": p["num_kept"],
        "compute_saved": p["compute_saved"],
        "macs": p["macs"],
        "macs_saved": p["macs_saved"],
        "input": info,
        "model": model,
        "warnings": warnings,
        "error": None,
    }


def _across_slices(study: Study, kept_src: list | None) -> str | None:
    """A warning when the model's frames of a DICOM series (or an Enhanced CT/MR file) are not its slices: a model
    whose ``slice_axis`` runs across the series (e.g. sagittal planes of an axial CT series) keeps planes the report
    would otherwise number like slices (trial Y: "source indices [31, ..., 0]" of a 24-slice series)."""
    headers = study.dicom_headers
    axis = study.info.get("source_axis")
    if not headers or kept_src is None or axis is None or axis == 2 or study.source.kind == "video":
        return None
    if len(headers) == 1 and int(headers[0].get("NumberOfFrames", 1) or 1) <= 1:
        return None
    across = "columns" if axis == 0 else "rows"
    return (f"'{study.source.study_id}': the model's frames run across the series' {across} (voxel axis {axis}), not "
            "along its slices: its kept source indices are planes across the slices, not slice or frame numbers. "
            "The model was trained with another slice_axis than these images' slice direction: use a model trained "
            "on images of this orientation.")


def kept_image_references(study: Study, kept_src: list | None) -> list[dict[str, Any]] | None:
    """
    The DICOM images the kept slices/frames are, in kept order (each once; a padding slice is none): ``{"sop_class_uid",
    "sop_instance_uid", "frame"}``, ``frame`` the 1-based frame number within a multi-frame file (a cine, an Enhanced
    CT/MR), ``None`` for a single-frame image of a series. ``None`` for a study that is no DICOM study, or whose frame
    axis is not the series' slice axis or the file's frame axis (a series read across its slices).
    """
    headers = study.dicom_headers
    if not headers or kept_src is None:
        return None
    axis = study.info.get("source_axis")
    frames = int(headers[0].get("NumberOfFrames", 1) or 1) if len(headers) == 1 else 1
    if len(headers) > 1 and axis == 2:  # slices of a series, ordered like the source slices
        refs = [(headers[i], None) for i in kept_src if i != PADDING and i < len(headers)]
    elif frames > 1 and axis == (0 if study.source.kind == "video" else 2):  # a clip's frames, an Enhanced volume's
        refs = [(headers[0], i + 1) for i in kept_src if i != PADDING and i < frames]
    else:
        return None
    out: list[dict[str, Any]] = []
    for h, frame in refs:
        ref = {"sop_class_uid": str(h.get("SOPClassUID", "")), "sop_instance_uid": str(h.get("SOPInstanceUID", "")),
               "frame": frame}
        if ref["sop_instance_uid"] and ref["sop_class_uid"] and ref not in out:  # both Type 1 in an SR reference
            out.append(ref)
    return out


def error_report(source: StudySource, error: BaseException | str, stage: str,
                 warnings: list[str] | None = None) -> dict[str, Any]:
    """The report of a study that could not be processed: ``status="error"``, ``stage`` and ``error`` message;
    ``warnings``: the model's (:attr:`DASPredictor.warnings`), which every report repeats."""
    message = str(error) if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {
        "report_version": REPORT_VERSION,
        "study_id": source.study_id,
        "status": "error",
        "source": str(source.path),
        "kind": source.kind,
        "label": source.label,
        "stage": stage,
        "warnings": list(warnings or []),
        "error": message,
    }


def report_text(report: Mapping[str, Any]) -> str:
    """A short human-readable summary of a report (the text of the optional DICOM SR); a study id with characters that
    are not printable (a line break in a folder name or header) is quoted with escapes, so it never forges a line."""
    study = str(report.get("study_id"))
    study = study if study.isprintable() else ascii(study)
    if report.get("status") != "ok":
        return f"Study {study}: not classified ({report.get('error')})."
    probs = ", ".join(f"{k}: {v:.3f}" for k, v in report["probabilities"].items())
    lines = [
        f"DAS classification of study {study} (research use only).",
        f"Predicted: {report['predicted_name']} (class {report['predicted_label']}).",
        f"Probabilities: {probs}.",
    ]
    if report.get("kept_source_indices") is not None:
        saved = report.get("compute_saved")
        numbers = report.get("kept_instance_numbers")
        lines.append(
            f"Slices/frames used: {report['num_kept']} of {report['num_frames']} "
            f"(source indices, counted from 0: {report['kept_source_indices']}"
            + (f"; InstanceNumbers {numbers}" if numbers else "")
            + f"); encoder compute saved: {saved:.1%}."
        )
    # a report for PACS names files, not where this machine keeps them: quoted paths are cut to their file name
    lines += [f"Warning: {_file_names(w)}" for w in report.get("warnings") or []]
    return "\n".join(lines)


def _file_names(text: str) -> str:
    """``text`` with every quoted absolute path (``'/data/in/ct/IM3.dcm'``) cut to its last part (``'IM3.dcm'``)."""
    return re.sub(r"'(?:/|[A-Za-z]:[\\/])[^']*?([^/\\']+)[/\\]?'", r"'\1'", str(text))


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write ``data`` as JSON (no NaN/Infinity, newline at the end) to ``path`` atomically
    (:func:`monai_das.utils.io.write_text_atomic`)."""
    write_text_atomic(json.dumps(data, indent=2, allow_nan=False) + "\n", path)
    return Path(path)


def write_summary(reports: list[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """``summary.json``: counts and, per study, ``study_id``, ``status``, ``predicted_name`` (and the study list's
    ``label_name``, ``null`` when unknown) or ``error``."""
    items = [
        {
            "study_id": r["study_id"],
            "status": r["status"],
            "predicted_name": r.get("predicted_name"),
            "label_name": r.get("label_name"),
            "compute_saved": r.get("compute_saved"),
            "error": r.get("error"),
        }
        for r in reports
    ]
    ok = sum(r["status"] == "ok" for r in reports)
    return write_json(
        {"report_version": REPORT_VERSION, "num_studies": len(reports), "num_ok": ok, "num_errors": len(reports) - ok,
         "studies": items},
        path,
    )
