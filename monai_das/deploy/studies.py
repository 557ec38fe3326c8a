"""
Find the studies under an input path and turn each into the network's input.

A *study* is one NIfTI (or other ITK/nibabel) volume file, one folder of single-frame DICOM files (one series), one
multi-frame DICOM file (ultrasound cine, ...) or one video file. :func:`discover_studies` never raises for a bad
study: it returns a :class:`StudySource` carrying the problem, so that one bad study never stops the others.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

from monai_das.data.video_io import DICOM_EXTENSIONS, VIDEO_EXTENSIONS, is_dicom
from monai_das.deploy.predictor import ModelSpec

__all__ = [
    "VOLUME_EXTENSIONS",
    "NON_IMAGE_MODALITIES",
    "StudySource",
    "Study",
    "StudyLoader",
    "LoadStudyd",
    "discover_studies",
]

logger = logging.getLogger(__name__)

#: volume file extensions read with MONAI ``LoadImage`` (nibabel / ITK)
VOLUME_EXTENSIONS = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")
#: DICOM modalities that hold no image to classify (structured reports, segmentations, RT objects, ...)
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "PR", "KO", "DOC", "REG", "AU", "ECG", "RWV", "PLAN"}
)


@dataclass
class StudySource:
    """
    Where one study is.

    Attributes:
        study_id: unique name (relative path), also the report's file name.
        kind: ``"volume"`` (image file), ``"dicom_series"`` (folder of single-frame DICOM), ``"video"`` (video
            file or multi-frame DICOM) or ``"invalid"``.
        path: the file, or the folder of a DICOM series.
        files: the DICOM files of a series (empty otherwise).
        error: why the study cannot be processed, found during discovery (``kind="invalid"``).
    """

    study_id: str
    kind: str
    path: Path
    files: list[Path] = field(default_factory=list)
    error: str | None = None


@dataclass
class Study:
    """
    One study ready for the network.

    Attributes:
        source: the :class:`StudySource`.
        image: network input without batch dimension (``C×D×H×W`` for a ``volume`` network, ``T×C×H×W`` for
            ``video``), float32.
        source_indices: for each of the network's ``T`` frames, its index in the original study (slice along the
            acquisition axis — ``InstanceNumber`` order for DICOM series — or frame of the clip).
        info: ``modality``, ``original_shape``, ``num_source_frames`` and reader facts.
        dicom_headers: pydicom datasets (no pixel data) of a DICOM study, ordered like the source slices/frames.
    """

    source: StudySource
    image: torch.Tensor
    source_indices: list[int]
    info: dict[str, Any]
    dicom_headers: list = field(default_factory=list)


def _strip_ext(name: str) -> str:
    lower = name.lower()
    for ext in (".nii.gz", *VOLUME_EXTENSIONS, *VIDEO_EXTENSIONS, *DICOM_EXTENSIONS):
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def _study_id(root: Path, path: Path, strip: bool = True) -> str:
    rel = path.relative_to(root) if path != root else Path(path.name)
    parts = list(rel.parts) or [path.name]
    if strip:
        parts[-1] = _strip_ext(parts[-1])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(parts)) or "study"


def _read_header(path: Path):
    import pydicom

    return pydicom.dcmread(str(path), stop_before_pixels=True)


def _is_multiframe(ds) -> bool:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1) > 1
    except (TypeError, ValueError):
        return False


def _classify_file(root: Path, path: Path, headers: dict[Path, Any]) -> StudySource | None:
    """A non-series study for ``path``, or ``None`` for a single-frame DICOM file (part of its folder's series)."""
    name = path.name.lower()
    sid = _study_id(root, path)
    if name.endswith(VOLUME_EXTENSIONS):
        return StudySource(sid, "volume", path)
    if name.endswith(VIDEO_EXTENSIONS):
        return StudySource(sid, "video", path)
    if is_dicom(path):
        try:
            ds = _read_header(path)
        except Exception as e:
            return StudySource(sid, "invalid", path, error=f"cannot read DICOM file '{path}': {e}")
        headers[path] = ds
        return StudySource(sid, "video", path, files=[path]) if _is_multiframe(ds) else None
    return StudySource(
        sid, "invalid", path,
        error=f"unsupported file '{path}': expected NIfTI/ITK volume {VOLUME_EXTENSIONS}, DICOM or video "
        f"{VIDEO_EXTENSIONS}.",
    )


def _series_label(ds, uid: str) -> str:
    number = ds.get("SeriesNumber")
    return str(number) if number not in (None, "") else (uid.rsplit(".", 1)[-1] or "unknown")


def discover_studies(path: str | os.PathLike) -> list[StudySource]:
    """
    The studies under ``path`` (sorted by id).

    ``path`` may be one file (one study) or a folder, searched recursively: every volume/video file is a study,
    every multi-frame DICOM file is a (video) study, and the single-frame DICOM files of each folder form one
    study per series (``<folder>__series_<SeriesNumber>`` when a folder holds several). Empty folders, unreadable
    DICOM and unsupported files become ``kind="invalid"`` studies with an error. Hidden files (``.name``) are
    skipped.

    Raises:
        FileNotFoundError: ``path`` does not exist. ValueError: ``path`` is a folder without any file.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"input path '{root}' does not exist.")
    headers: dict[Path, Any] = {}
    if root.is_file():
        src = _classify_file(root.parent, root, headers)
        return [src if src is not None else StudySource(_study_id(root.parent, root), "dicom_series", root, [root])]
    studies: list[StudySource] = []
    any_file = False
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        files = sorted(folder / f for f in filenames if not f.startswith("."))
        any_file = any_file or bool(files)
        if not files and not dirnames:
            studies.append(StudySource(_study_id(root, folder, strip=False), "invalid", folder,
                                       error=f"study folder '{folder}' is empty."))
            continue
        series: dict[str, list[Path]] = {}
        for f in files:
            src = _classify_file(root, f, headers)
            if src is None:
                series.setdefault(str(headers[f].get("SeriesInstanceUID", "")), []).append(f)
            else:
                studies.append(src)
        base = _study_id(root, folder, strip=False) if folder != root else _study_id(root.parent, root, strip=False)
        for uid, members in series.items():
            sid = base if len(series) == 1 else f"{base}__series_{_series_label(headers[members[0]], uid)}"
            studies.append(StudySource(sid, "dicom_series", folder, members))
    if not any_file:
        raise ValueError(f"input folder '{root}' contains no files.")
    seen: dict[str, int] = {}
    for s in studies:  # make ids unique (e.g. "a.nii" and "a.nii.gz")
        n = seen.get(s.study_id, 0)
        seen[s.study_id] = n + 1
        if n:
            s.study_id = f"{s.study_id}_{n}"
    return sorted(studies, key=lambda s: s.study_id)


class StudyLoader:
    """
    Read a :class:`StudySource` and preprocess it into the input of the network described by ``spec``.

    Volumes (NIfTI/ITK files, DICOM series) go through :func:`monai_das.transforms.preprocessing.volume_preprocessing`
    (reorientation, intensity scaling, resize to ``spec.spatial_size``); clips (video files, multi-frame DICOM)
    through :class:`monai_das.transforms.io.LoadVideo` (uniform temporal resampling to ``T`` frames, frame resize,
    grayscale when the network takes one channel). A clip fed to a ``volume`` network becomes a volume whose slices
    along ``spec.slice_axis`` are the frames; a volume fed to a ``video`` network becomes the sequence of its slices
    along the first axis.

    A study with fewer than ``min_frames`` slices/frames is refused (by default a 2D image, a one-slice DICOM series, a
    single-frame DICOM or a one-frame GIF): stretching it to the network's ``T`` would give an input that is constant
    along the frame axis and a prediction that looks valid.

    Args:
        spec: the network's :class:`~monai_das.deploy.predictor.ModelSpec`.
        allowed_modalities: DICOM modalities accepted (e.g. ``("CT", "MR")``); ``None`` accepts every image modality.
            Non-image modalities (:data:`NON_IMAGE_MODALITIES`) are always refused. Non-DICOM files have no modality
            and are not filtered.
        min_frames: studies with fewer original slices/frames (volumes: along their shortest axis, a 2D image
            counting as one slice; clips: decoded frames) are refused. Default 2; ``1`` accepts single slices and
            still images (a 2D image becomes a one-slice volume, a still image is repeated to ``T`` frames).
        axcodes, intensity_range, percentiles, resize: passed to ``volume_preprocessing`` (volumes only).
        temporal_mode: how clips shorter than ``T`` are lengthened (``"uniform"``, ``"loop"``, ``"edge"``).

    :meth:`load` raises ``FileNotFoundError``, ``ValueError`` (empty, wrong modality or shape) or ``RuntimeError``
    (unreadable) with a message naming the study.
    """

    def __init__(
        self,
        spec: ModelSpec,
        allowed_modalities: Sequence[str] | None = None,
        min_frames: int = 2,
        axcodes: str | None = "RAS",
        intensity_range: Sequence[float] | None = None,
        percentiles: Sequence[float] | None = (0.5, 99.5),
        resize: str = "stretch",
        temporal_mode: str = "uniform",
    ) -> None:
        if int(min_frames) < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}.")
        self.spec = spec
        self.allowed_modalities = None if allowed_modalities is None else {m.upper() for m in allowed_modalities}
        self.min_frames = int(min_frames)
        self.preprocessing = dict(axcodes=axcodes, intensity_range=intensity_range, percentiles=percentiles,
                                  resize=resize)
        self.temporal_mode = temporal_mode

    # ------------------------------------------------------------------ public
    def load(self, source: StudySource) -> Study:
        """Read and preprocess one study (see class docstring for the errors raised)."""
        if source.error is not None or source.kind == "invalid":
            raise ValueError(source.error or f"study '{source.study_id}' is invalid.")
        if not source.path.exists():
            raise FileNotFoundError(f"study '{source.study_id}': '{source.path}' does not exist.")
        if source.kind == "dicom_series":
            return self._load_dicom_series(source)
        if source.kind == "volume":
            return self._load_volume(source, source.path, reader=None, info={"modality": None})
        if source.kind == "video":
            return self._load_video(source)
        raise ValueError(f"study '{source.study_id}': unknown kind {source.kind!r}.")

    # ------------------------------------------------------------------ DICOM checks
    def _check_modality(self, source: StudySource, modality: str | None) -> None:
        mod = (modality or "").upper()
        if mod in NON_IMAGE_MODALITIES:
            raise ValueError(f"study '{source.study_id}' ({source.path}): modality {mod} holds no image to classify.")
        if self.allowed_modalities is not None and mod not in self.allowed_modalities:
            raise ValueError(
                f"study '{source.study_id}' ({source.path}): modality {mod or 'unknown'} is not one of the accepted "
                f"modalities {sorted(self.allowed_modalities)}."
            )

    def _dicom_headers(self, source: StudySource) -> list:
        headers = []
        for f in source.files:
            try:
                headers.append(_read_header(f))
            except Exception as e:
                raise RuntimeError(f"study '{source.study_id}': cannot read DICOM file '{f}': {e}") from e
        return headers

    def _check_frames(self, source: StudySource, n: int, what: str) -> None:
        if n < self.min_frames:
            raise ValueError(
                f"study '{source.study_id}' ({source.path}) has {n} {what}, fewer than the {self.min_frames} required "
                f"(min_frames; 1 accepts a single slice or still image)."
            )

    def _load_dicom_series(self, source: StudySource) -> Study:
        if not source.files:
            raise ValueError(f"study '{source.study_id}' ({source.path}) has no DICOM files.")
        headers = self._dicom_headers(source)
        modalities = {str(h.get("Modality", "")) for h in headers}
        self._check_modality(source, sorted(modalities)[0] if len(modalities) == 1 else "/".join(sorted(modalities)))
        no_image = [f for f, h in zip(source.files, headers) if "Rows" not in h or "Columns" not in h]
        if no_image:
            raise ValueError(f"study '{source.study_id}': DICOM file '{no_image[0]}' has no image (no Rows/Columns).")
        shapes = {(int(h.Rows), int(h.Columns)) for h in headers}
        if len(shapes) > 1:
            raise ValueError(f"study '{source.study_id}': slices of different sizes {sorted(shapes)} in one series.")
        self._check_frames(source, len(headers), "slice(s)")
        headers = sorted(headers, key=lambda h: int(h.get("InstanceNumber", 0) or 0))
        from monai.data import PydicomReader

        if source.path.is_dir():  # read exactly this series' files, whatever else the folder holds
            path = source.path
            names = "|".join(re.escape(os.path.join(str(source.path), f.name)) for f in source.files)
            reader = PydicomReader(fname_regex=f"^(?:{names})$")
        else:
            path, reader = source.files[0], PydicomReader()

        info = {
            "modality": str(headers[0].get("Modality", "")) or None,
            "study_instance_uid": str(headers[0].get("StudyInstanceUID", "")) or None,
            "series_instance_uid": str(headers[0].get("SeriesInstanceUID", "")) or None,
            "instance_numbers": [int(h.get("InstanceNumber", 0) or 0) for h in headers],
        }
        study = self._load_volume(source, path, reader=reader, info=info)
        study.dicom_headers = headers
        return study

    # ------------------------------------------------------------------ volumes
    def _load_volume(self, source: StudySource, path: Path, reader, info: dict) -> Study:
        from monai.data import MetaTensor
        from monai.data.utils import to_affine_nd
        from monai.transforms import LoadImage

        from monai_das.transforms.preprocessing import volume_preprocessing

        try:
            img = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(str(path))
        except Exception as e:
            raise RuntimeError(f"study '{source.study_id}': cannot read '{path}': {e}") from e
        if not isinstance(img, MetaTensor):
            img = MetaTensor(img)
        original_shape = [int(s) for s in img.shape]
        if img.ndim == 3:  # a 2D image: one slice
            meta = dict(img.meta)
            meta["affine"] = to_affine_nd(3, img.affine)
            img = MetaTensor(img.as_tensor()[..., None], meta=meta)
        if img.ndim != 4:
            raise ValueError(
                f"study '{source.study_id}' ({path}): expected a 2D or 3D image, got shape {original_shape} "
                f"(channel first)."
            )
        if img.numel() == 0 or min(img.shape[1:]) < 1:
            raise ValueError(f"study '{source.study_id}' ({path}) is empty (shape {original_shape}).")
        spatial = [int(s) for s in img.shape[1:]]
        if sorted(spatial)[-2] < 2:
            raise ValueError(
                f"study '{source.study_id}' ({path}): image of shape {original_shape} is not a 2D/3D image "
                f"(at most one axis longer than 1)."
            )
        img = self._fit_channels(source, img, channel_dim=0)
        if not torch.isfinite(img.as_tensor()).all():
            raise ValueError(f"study '{source.study_id}' ({path}) contains NaN or infinite values.")
        self._check_frames(source, min(spatial), "slice(s) along its shortest axis")
        original_affine = torch.as_tensor(img.affine, dtype=torch.float64).clone()
        if self.spec.layout == "volume":
            size = self.spec.spatial_size
            frame_axis = self.spec.slice_axis
        else:
            size = (self.spec.num_frames, *self.spec.frame_size)
            frame_axis = 0
        try:
            # min_slices=1: the slice count was checked above against min_frames (the user's choice)
            xform = volume_preprocessing(load=False, spatial_size=size, min_slices=1, **self.preprocessing)
            out = xform({"image": img})["image"]
        except Exception as e:
            raise RuntimeError(f"study '{source.study_id}' ({path}): preprocessing failed: {e}") from e
        src_idx = _source_indices(original_affine, torch.as_tensor(out.affine, dtype=torch.float64),
                                  [int(s) for s in out.shape[1:]], spatial, frame_axis)
        image = out.as_tensor().float()
        if self.spec.layout == "video":
            image = image.movedim(1, 0)  # C×T×H×W → T×C×H×W
        info = {**info, "original_shape": original_shape, "num_source_frames": int(spatial[src_idx[1]]),
                "source_axis": int(src_idx[1])}
        return Study(source, image.contiguous(), src_idx[0], info)

    def _fit_channels(self, source: StudySource, img: torch.Tensor, channel_dim: int) -> torch.Tensor:
        c, want = int(img.shape[channel_dim]), self.spec.in_channels
        if c == want:
            return img
        if want == 1 and c in (3, 4):  # RGB(A) → luminance (ITU-R 601)
            w = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype, device=img.device)
            shape = [1] * img.ndim
            shape[channel_dim] = 3
            return (img.narrow(channel_dim, 0, 3) * w.reshape(shape)).sum(dim=channel_dim, keepdim=True)
        raise ValueError(
            f"study '{source.study_id}' ({source.path}) has {c} channel(s); the network expects {want}."
        )

    # ------------------------------------------------------------------ clips
    def _load_video(self, source: StudySource) -> Study:
        from monai_das.transforms.io import LoadVideo

        info: dict[str, Any] = {"modality": None}
        headers = []
        if source.files:  # multi-frame DICOM
            headers = self._dicom_headers(source)
            h = headers[0]
            self._check_modality(source, str(h.get("Modality", "")))
            if "Rows" not in h or "Columns" not in h:
                raise ValueError(f"study '{source.study_id}': DICOM file '{source.path}' has no image.")
            info.update(
                modality=str(h.get("Modality", "")) or None,
                study_instance_uid=str(h.get("StudyInstanceUID", "")) or None,
                series_instance_uid=str(h.get("SeriesInstanceUID", "")) or None,
            )
        t = self.spec.num_frames
        frame_size = self.spec.frame_size
        loader = LoadVideo(num_frames=t, spatial_size=frame_size, grayscale=self.spec.in_channels == 1,
                           temporal_mode=self.temporal_mode, min_frames=1)  # min_frames is checked below
        try:
            clip = loader(str(source.path))
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"study '{source.study_id}': {e}") from e
        except Exception as e:
            raise RuntimeError(f"study '{source.study_id}': cannot read clip '{source.path}': {e}") from e
        n = int(clip.meta.get("original_num_frames", clip.shape[0]))
        self._check_frames(source, n, "frame(s)")
        image = self._fit_channels(source, clip.as_tensor().float(), channel_dim=1)  # T×C×H×W
        if self.spec.layout == "volume":
            image = image.movedim(0, 1).movedim(1, 1 + self.spec.slice_axis)  # C×T×H×W → T at slice_axis
        src = clip.meta.get("source_indices")
        src_list = [int(i) for i in (src.tolist() if src is not None else range(t))]
        info.update(
            original_shape=[n, *[int(s) for s in (clip.meta.get("original_size") or ())]],
            num_source_frames=n,
            fps=float(clip.meta.get("fps") or 0.0),
            reader=clip.meta.get("reader"),
        )
        return Study(source, image.contiguous(), src_list, info, headers)


class LoadStudyd(MapTransform):
    """
    Dictionary transform: replace the path under each key (a study file or a folder holding exactly one study) by the
    network input of that study, and store the :class:`Study` under ``f"{key}_{study_suffix}"``.

    Args:
        keys: keys of the paths.
        loader: the :class:`StudyLoader` (carries the network's :class:`ModelSpec`).
        study_suffix: suffix of the key the :class:`Study` is stored under.

    Raises:
        ValueError: the path holds no study, several studies, or a study that cannot be processed.
    """

    def __init__(self, keys, loader: StudyLoader, study_suffix: str = "study", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.loader = loader
        self.study_suffix = study_suffix

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            sources = discover_studies(d[key])
            valid = [s for s in sources if s.kind != "invalid"]
            if len(valid) != 1:
                problems = "; ".join(s.error or s.study_id for s in sources)
                raise ValueError(f"'{d[key]}' must hold exactly one study, found {len(valid)} ({problems}).")
            study = self.loader.load(valid[0])
            d[key] = study.image
            d[f"{key}_{self.study_suffix}"] = study
        return d


def _source_indices(
    original_affine: torch.Tensor, affine: torch.Tensor, shape: list[int], source_shape: list[int], frame_axis: int
) -> tuple[list[int], int]:
    """
    For each index along ``frame_axis`` of the preprocessed volume (centre of the other two axes), the nearest slice
    index of the source volume, found through the affines (world = affine · voxel); and the source axis it runs along.
    """
    a_src = original_affine[:4, :4] if original_affine.shape[0] >= 4 else torch.eye(4, dtype=torch.float64)
    m = torch.linalg.inv(a_src) @ affine[:4, :4]
    src_axis = int(torch.argmax(m[:3, frame_axis].abs()))
    centre = [(s - 1) / 2.0 for s in shape]
    out = []
    for i in range(shape[frame_axis]):
        v = list(centre)
        v[frame_axis] = float(i)
        p = m @ torch.tensor([*v, 1.0], dtype=torch.float64)
        out.append(int(np.clip(round(float(p[src_axis])), 0, source_shape[src_axis] - 1)))
    return out, src_axis
