"""
The one study layer of monai_das, shared by bundle batch inference, the MONAI Deploy application and the MONAI Label
infer task: find the studies under an input, name them, fingerprint them for resume, and turn each into the network
input described by a plain-data *recipe*, recording which slice/frame of the file every input frame is.

A *study* is one volume file (NIfTI, ITK formats, ``.npy``), one DICOM series (the single-frame DICOM files of a
folder that share a ``SeriesInstanceUID``), one multi-frame DICOM file (ultrasound cine, ...: a clip) or one video
file (a clip).

- :func:`discover_studies` → :class:`StudySource` list; :func:`list_studies` → the same as plain items (plus the items
  of a ready-made dataset) for :func:`monai_das.engines.select_studies` / :class:`monai_das.engines.StudyDataset`.
- :func:`study_fingerprint`: what identifies a study's content on disk (resume key, with its path).
- :class:`LoadStudy` / :class:`LoadStudyd`: study → network input (``C×D×H×W`` or ``T×C×H×W``) from a recipe
  (:func:`monai_das.transforms.check_recipe`), with ``meta["source_indices"]``.
- :func:`kept_source_indices`: the sampler's kept positions ``0..T-1`` → the file's own slice/frame numbers.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import math
import os
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from monai_das.data.video_io import VIDEO_EXTENSIONS, check_dicom_pixel_data, is_dicom, read_dicom_header
from monai_das.utils.config import optional
from monai_das.utils.logs import bounded_repr, log_once

__all__ = [
    "VOLUME_EXTENSIONS",
    "SIDECAR_EXTENSIONS",
    "NON_IMAGE_MODALITIES",
    "STUDY_KINDS",
    "StudySource",
    "Study",
    "study_fingerprint",
    "discover_studies",
    "list_studies",
    "dataset_item_ids",
    "item_label",
    "PADDING",
    "kept_source_indices",
    "repeated_source_warning",
    "available_memory",
    "BYTES_PER_CLIP_VALUE",
    "BYTES_PER_RESAMPLED_VOXEL",
    "BYTES_PER_VOXEL",
    "check_declared_memory",
    "clip_frame_limit",
    "check_header_data_file",
    "check_study_memory",
    "declared_dicom",
    "declared_image",
    "error_text",
    "check_series_stack",
    "check_no_localizers",
    "series_slice_ranks",
    "LoadStudy",
    "LoadStudyd",
    "LoadStudyD",
    "LoadStudyDict",
    "aspect_warning",
    "duration_warning",
    "ASPECT_FACTOR",
    "DURATION_FACTOR",
]

logger = logging.getLogger(__name__)
#: what a volume's channels are when they are no colours: how errors about its channel count say it (trial T69a)
FOURTH_AXIS_NOTE = "its 4th, non-spatial axis (e.g. a 4D NIfTI's timepoints or echoes) read as channels"
# MONAI warns that nvImageCodec is missing each time a LoadImage is built (here: once per DICOM study): once is enough
log_once("monai.data.nvimgcodec_pydicom_plugin")

#: single-file volume formats (read with MONAI ``LoadImage``; ``.npy``: a ``D×H×W`` or ``C×D×H×W`` array)
VOLUME_EXTENSIONS = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", ".npy")
#: files that commonly sit beside studies and are no study (notes, listings, sidecar metadata): skipped silently by
#: folder discovery; any other file that is not a study becomes an ``"invalid"`` study with an error
SIDECAR_EXTENSIONS = (".txt", ".md", ".csv", ".tsv", ".json", ".yaml", ".yml", ".log", ".pdf", ".html", ".htm", ".xml",
                      ".inf", ".ini", ".db")  # the last: a PACS CD's AUTORUN.INF, Windows' desktop.ini and Thumbs.db
#: headers whose voxels lie in another file (``.mhd``'s ``ElementDataFile``, ``.nhdr``'s ``data file``)
_DETACHED_HEADERS = (".mhd", ".nhdr")
#: endings of the data files of such a header (``vol.raw``, ``vol.zraw``, ITK's ``vol.raw.gz``): members of its study
_HEADER_DATA_ENDINGS = (".raw", ".zraw", ".raw.gz", ".raw.bz2")
#: DICOM modalities that hold no image to classify (structured reports, segmentations, RT objects, ...)
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "PR", "KO", "DOC", "REG", "AU", "ECG", "RWV", "PLAN"}
)
#: DICOM modalities whose multi-frame files (Enhanced CT/MR/PET, NM) are volumes, not clips: a ``volume`` recipe reads
#: them as its training does (MONAI's ``LoadImage`` choice), with their intensities (HU) and geometry
VOLUME_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
#: ``StudySource.kind`` values
STUDY_KINDS = ("volume", "dicom_series", "video", "invalid")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


# ---------------------------------------------------------------------------------------------------- memory
def error_text(e: BaseException) -> str:
    """``str(e)``, or its type where that is empty (``MemoryError()`` says nothing), with "out of memory" for a
    ``MemoryError``: what a message that quotes a reader's exception says after "cannot read '...': "."""
    text = str(e).strip()
    if isinstance(e, MemoryError):
        return f"MemoryError (out of memory){': ' + text if text else ''}"
    return text or type(e).__name__


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None  # cgroup "max": no limit


def _cgroup_anon(folder: str) -> int | None:
    """Bytes of anonymous memory the cgroup ``folder`` holds (``anon`` of ``memory.stat``; ``memory.current`` also
    counts page cache, which reading a dataset fills up to the limit and the kernel gives back on demand)."""
    try:
        with open(os.path.join(folder, "memory.stat"), encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(" ")
                if key == "anon" and value.strip().isdigit():
                    return int(value)
    except (OSError, UnicodeDecodeError):
        pass
    return _read_int(os.path.join(folder, "memory.current"))


def available_memory() -> int | None:
    """
    Bytes this process can still allocate, as far as Linux says: ``MemAvailable`` of ``/proc/meminfo``, lowered to
    the room left under a cgroup v2 limit (``memory.max`` minus the group's anonymous memory, ``anon`` of
    ``memory.stat``: page cache is given back on demand) when one is set, and to the room left under an address-space
    limit (``ulimit -v``: ``RLIMIT_AS`` minus ``VmSize`` of ``/proc/self/status``; a 130 KB ``.nii.gz`` of 512³
    zeros priced at 2.75 GiB passed under ``ulimit -v 4000000`` and failed mid-transform naming no memory: T71g);
    ``None`` when none is known (another system): nothing is refused then.
    """
    found = []
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status", encoding="ascii") as fh:
                used = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
            found.append(max(soft - used, 0))
    except (ImportError, OSError, ValueError, IndexError, StopIteration):
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)  # kB
                    break
    except (OSError, ValueError, IndexError):
        pass
    group = ""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            group = next((line.strip()[3:] for line in fh if line.startswith("0::")), "")
    except OSError:
        pass
    for folder in dict.fromkeys((os.path.join("/sys/fs/cgroup", group.lstrip("/")), "/sys/fs/cgroup")):
        limit = _read_int(os.path.join(folder, "memory.max"))
        if limit is not None:  # the room above the group's own memory: anon, not page cache the kernel reclaims
            found.append(max(limit - (_cgroup_anon(folder) or 0), 0))
            break
    return min(found) if found else None


#: bytes per voxel that reading and preprocessing a study holds at its peak besides the stored array (float32
#: copies: the reader's, orientation, intensity scaling, resizing), and per voxel of a resampling to the recipe's
#: ``pixdim`` (``Spacing``'s sampling grid and output); measured 2026-12-06 with bundle inference on 256³ volumes of
#: uint8/int16/float32 (+20.9/+18.0/+18.0 B per voxel) and 20³ volumes of 4–12 mm resampled to 1 mm (+47 B per output
#: voxel)
BYTES_PER_VOXEL = 21
BYTES_PER_RESAMPLED_VOXEL = 48
#: the same for a clip's values (frames are decoded into one array, then resized one at a time): the decoded array,
#: its float32 copy and the scaling's float32 temporary (``monai_das.data.video_io``), 1 + 4 + 4 bytes per value
BYTES_PER_CLIP_VALUE = 9
#: suffixes whose header ITK reads without the voxels (``itk.ImageIOFactory``)
_ITK_HEADER_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")


def declared_image(path: str | os.PathLike, image: Any = None) -> tuple[list[int], int, list[float]] | None:
    """
    What a single file's header declares, without reading a voxel: ``(shape, bytes per value, voxel spacing)``
    (all voxels of the array, channels/frames/components included; spacing of the first three axes, 1 where the
    header has none). NIfTI (``nibabel``; ``image``: its image when loaded already), ``.npy`` (NumPy's header),
    ``.mha``/``.mhd``/``.nrrd``/``.nhdr`` (ITK's header reader); ``None`` for other files (DICOM: the study layer
    reads its headers anyway, :func:`declared_dicom`) and for a header that cannot be read (the reader says why),
    except a ``.npy`` one (:func:`~monai_das.data.readers.read_npy_header`'s ``ValueError``: a pickled object array
    or a file cut short, named as such).
    """
    name = str(path).lower()
    check_header_data_file(path)  # a data file elsewhere is refused, not skipped
    if name.endswith(".npy"):  # the header alone (never an object array's pickle); a bad one is named, not skipped
        from monai_das.data.readers import read_npy_header

        shape, dtype = read_npy_header(path)
        return shape, dtype.itemsize, [1.0, 1.0, 1.0]
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            image = nib.load(str(path)) if image is None else image
            zooms = [float(z) for z in image.header.get_zooms()[:3]]
            return ([int(x) for x in image.header.get_data_shape()], np.dtype(image.header.get_data_dtype()).itemsize,
                    zooms + [1.0] * (3 - len(zooms)))
        if name.endswith(_ITK_HEADER_SUFFIXES):
            import itk

            io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
            if io is None:
                return None
            io.SetFileName(str(path))
            io.ReadImageInformation()
            n = io.GetNumberOfDimensions()
            spacing = [float(io.GetSpacing(a)) for a in range(min(n, 3))]
            return ([int(io.GetDimensions(a)) for a in range(n)] + [int(io.GetNumberOfComponents())],
                    int(io.GetComponentSize()), spacing + [1.0] * (3 - len(spacing)))
    except Exception:  # not a header these read: the reader says why
        return None
    return None


def declared_dicom(headers: Sequence[Any]) -> tuple[list[int], int, list[float]]:
    """:func:`declared_image` of DICOM files' headers (a series, or one multi-frame file): rows × columns × all their
    frames × samples per pixel, ``BitsAllocated`` rounded up to bytes, ``PixelSpacing`` and the slice spacing
    (``SpacingBetweenSlices``, else ``SliceThickness``, else 1)."""
    frames = sum(max(_dicom_int(h, "NumberOfFrames", 1), 1) for h in headers)
    h = headers[0]
    shape = [_dicom_int(h, "Rows", 0), _dicom_int(h, "Columns", 0), frames, max(_dicom_int(h, "SamplesPerPixel", 1), 1)]
    spacing = [1.0, 1.0, 1.0]
    with contextlib.suppress(Exception):
        spacing[:2] = [float(v) for v in h.PixelSpacing][:2]
    with contextlib.suppress(Exception):  # a series' slice spacing from its positions (thickness may overlap or gap)
        ends = [np.asarray([float(v) for v in g.ImagePositionPatient]) for g in (headers[0], headers[-1])]
        step = float(np.abs(ends[1] - ends[0]).max()) / (len(headers) - 1) if len(headers) > 1 else 0.0
        spacing[2] = step if step > 0 else spacing[2]
    for key in ("SpacingBetweenSlices", "SliceThickness"):  # one file: what its header says
        with contextlib.suppress(Exception):
            if len(headers) == 1 and float(h.get(key)) > 0:
                spacing[2] = float(h.get(key))
                break
    return shape, max((_dicom_int(h, "BitsAllocated", 8) + 7) // 8, 1), spacing


def _dicom_int(header: Any, key: str, default: int) -> int:
    try:
        return int(header.get(key, default))
    except (TypeError, ValueError):
        return default


def check_declared_memory(where: str, declared: tuple[list[int], int, list[float]] | None,
                          pixdim: Sequence[float] | float | None = None, per_value: int = BYTES_PER_VOXEL) -> None:
    """
    Refuse a study whose header declares more than this process has memory for, before any pixel is read: a 0.5 MB
    deflated DICOM can declare 4096×4096×32 (7 GB at the peak), a 1 MB ``.nii.gz`` or ``.nrrd`` 1024³ of zeros, a
    29 KB NIfTI of 45 mm voxels a resampling to 1 mm that asks for 20 GB. The need is the declared array plus
    ``per_value`` bytes per value (the preprocessing's copies: :data:`BYTES_PER_VOXEL` for a volume,
    :data:`BYTES_PER_CLIP_VALUE` for a clip) plus, with the recipe's ``pixdim``, :data:`BYTES_PER_RESAMPLED_VOXEL` per
    voxel of the resampled volume (its size from the header's spacing: the product of the spacings over that of
    ``pixdim``, whatever the orientation; none when the spacings are ``pixdim``'s in some order), compared with
    :func:`available_memory`; nothing is refused where that is unknown, or without a declaration (``None``).

    Raises:
        MemoryError: naming ``where``, the declared shape, the estimate and the memory available.
    """
    if declared is None:
        return
    shape, itemsize, spacing = declared
    voxels = 1
    for n in shape:
        voxels *= max(int(n), 1)
    need, resampled = voxels * (itemsize + per_value), 0
    if pixdim is not None:
        target = [float(p) for p in np.asarray(torch.as_tensor(pixdim).tolist(), dtype=float).reshape(-1)]
        target = (target * 3)[:3] if len(target) == 1 else (target + [0.0] * 3)[:3]
        if min(target) > 0:  # the oriented axes' order is not the stored one: compared as sets, priced by volume
            same = np.allclose(sorted(spacing), sorted(target), rtol=1e-3)
            ratio = math.prod(spacing) / math.prod(target)
        else:  # a value <= 0 keeps that axis' spacing: paired by stored axis (an estimate)
            ratios = [have / want for have, want in zip(spacing, target) if want > 0 and have > 0]
            same, ratio = all(abs(r - 1.0) <= 1e-3 for r in ratios), math.prod(ratios)
        if not same:  # MONAI's Spacing returns a volume of that spacing as it is
            resampled = int(voxels * ratio)
            need += resampled * BYTES_PER_RESAMPLED_VOXEL
    grid = f", resampled to pixdim {list(pixdim) if isinstance(pixdim, (list, tuple)) else pixdim} from " \
           f"spacing {[round(v, 4) for v in spacing]}: about {resampled:,} voxels" if resampled else ""
    _check_need(f"{where} declares {'×'.join(map(str, shape))} values of {itemsize} byte(s) in its header{grid}",
                "reading and preprocessing it", need,
                "A damaged or hostile header (a small compressed file can declare gigabytes of zeros, a voxel size can "
                "ask for a huge resampling)? Otherwise crop or downsample the image, or read it on a machine with more "
                "memory.")


def clip_frame_limit(where: str, frame_hw: Sequence[int], size: Sequence[int] | None, grayscale: bool,
                     declared: int = 0, native_bytes: int = 0) -> int | None:
    """
    The clip pricing: the most frames of a clip (named by ``where``, e.g. ``"video file '<path>'"``) this process has
    memory to decode and keep (``None``: not known), refusing up front a clip whose ``declared`` frame count does not
    fit. :func:`~monai_das.data.video_io.read_video` keeps every decoded frame at the network's grid (``size``, else
    ``frame_hw``) and copies it to float32 (:data:`BYTES_PER_CLIP_VALUE` per value in all); ``native_bytes`` per frame
    are held besides (a DICOM cine's stored and decoded pixel data). A 260 KB mp4 of 20 000 small frames took
    2.3 GB, with no check before decoding (trial T64b); a clip declaring more than the memory available ended the
    process.

    Raises:
        MemoryError: naming ``where``, the declared frames and their size, the estimate and the memory available.
    """
    h, w = size or frame_hw
    per_frame = int(h) * int(w) * (1 if grayscale else 3) * BYTES_PER_CLIP_VALUE + int(native_bytes)
    if per_frame <= 0:
        return None
    free = _check_need(f"{where} declares {declared} frames of {frame_hw[0]}×{frame_hw[1]}",
                       f"decoding them (kept at {h}×{w})", declared * per_frame,
                       "A damaged or hostile file (a small clip of identical frames can hold many thousands)? "
                       "Otherwise cut the clip or lower its frame rate.")
    return None if free is None else max(free // per_frame, 1)


def _check_need(declares: str, doing: str, need: int, hint: str) -> int | None:
    """:func:`available_memory`, after refusing a ``need`` of more bytes than that (the ``MemoryError`` reads
    "``declares``; ``doing`` needs about …, more than the … of memory available; not read. ``hint``")."""
    free = available_memory()
    if free is not None and need > free:
        raise MemoryError(f"{declares}; {doing} needs about {_bytes(need)}, more than the {_bytes(free)} of memory "
                          f"available; not read. {hint}")
    return free


def check_study_memory(path: str | os.PathLike, image: Any = None, pixdim: Sequence[float] | float | None = None
                       ) -> None:
    """:func:`check_declared_memory` of the single file ``path``'s header (:func:`declared_image`; ``image``: its
    ``nibabel`` image when loaded already), named ``'<path>'``."""
    check_declared_memory(f"'{path}'", declared_image(path, image), pixdim)


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{n} B"


# ---------------------------------------------------------------------------------------------------- fingerprint
def study_fingerprint(path: str | os.PathLike, files: Sequence[str | os.PathLike] | None = None) -> str:
    """
    What identifies the content of a study on disk, cheaply (no file is read): ``<size>-<mtime_ns>`` of a single
    file; ``<n>files-<hash>`` (a hash of the name, size and ``mtime_ns`` of every member file) for a study of several
    files — a DICOM series (``files``; for a folder without ``files``, every file directly in it) or an ``.mhd``
    header with its data file(s) (the files beside it with the same stem, and the one its ``ElementDataFile`` names);
    ``missing`` when it cannot be read. A
    study whose fingerprint (or path) changed is predicted again on resume.

    Args:
        path: the study's file or folder.
        files: the study's member files (``[]``/``None``: ``path`` alone, or every file of the folder ``path``).
    """
    path = Path(path)
    members = [Path(f) for f in files or ()]
    try:
        if len(members) > 1 or (members and members[0] != path):
            members = sorted(members)
        elif path.is_dir():
            members = sorted(f for f in path.iterdir() if f.is_file())
        elif path.suffix.lower() in _DETACHED_HEADERS:
            members = _header_members(path)
        else:
            st = path.stat()
            return f"{st.st_size}-{st.st_mtime_ns}"
        digest = hashlib.blake2b(digest_size=8)  # change detection, not security
        for f in members:
            st = f.stat()
            digest.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        return f"{len(members)}files-{digest.hexdigest()}"
    except OSError:
        return "missing"


# ---------------------------------------------------------------------------------------------------- sources
@dataclass
class StudySource:
    """
    Where one study is.

    Attributes:
        study_id: its unique name: the path of its file/folder relative to the input folder (``/``-separated, with
            the extension, e.g. ``"sub/b.nii.gz"``), ``"<folder>#series_<SeriesNumber>"`` for one of several DICOM
            series of a folder, the file name for a single-file input, or the ``id`` of a study list.
        kind: ``"volume"`` (image file), ``"dicom_series"`` (single-frame DICOM files), ``"video"`` (video file or
            multi-frame DICOM) or ``"invalid"`` (``error`` says why).
        path: the file, or the folder of a DICOM series (absolute when found by :func:`discover_studies`).
        files: the member files (a series' DICOM files; an ``.mhd``/``.nhdr`` and its data file; else the file
            itself).
        error: why the study cannot be processed, found during discovery (``kind="invalid"``).
        label: the class index given by a study list (``None``: unknown).
        fingerprint: :func:`study_fingerprint` of the member files (computed when not given).
        warnings: what discovery noticed about the study (e.g. the same DICOM series in another folder); they join
            the warnings of its reading (``Study.info["warnings"]``, the reports' ``warnings``).

    ``os.fspath(source)`` is ``path``, so path-based transforms accept a source.
    """

    study_id: str
    kind: str
    path: Path
    files: list[Path] = field(default_factory=list)
    error: str | None = None
    label: int | None = None
    fingerprint: str | None = None
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in STUDY_KINDS:
            raise ValueError(f"study '{self.study_id}': kind must be one of {STUDY_KINDS}, got {self.kind!r}.")
        self.path = Path(self.path)
        self.files = [Path(f) for f in self.files]
        if self.fingerprint is None:
            self.fingerprint = study_fingerprint(self.path, self.files)

    def __fspath__(self) -> str:
        return str(self.path)

    def item(self) -> dict:
        """
        The study as an inference item: ``{"id", "image": absolute path, "fingerprint", "study": self}`` plus
        ``"label"`` when known (see :func:`monai_das.engines.select_studies`).
        """
        item = {"id": self.study_id, "image": os.path.abspath(self.path), "fingerprint": self.fingerprint,
                "study": self}
        if self.label is not None:
            item["label"] = int(self.label)
        return item


@dataclass
class Study:
    """
    One study ready for the network.

    Attributes:
        source: the :class:`StudySource`.
        image: network input without batch dimension (``C×D×H×W`` for a ``volume`` recipe, ``T×C×H×W`` for
            ``video``), float32; a ``MetaTensor`` whose meta holds ``source_indices`` (as a tensor), ``study_id`` and
            ``filename_or_obj`` when made by :class:`LoadStudy`.
        source_indices: for each of the network's ``T`` frames, its slice/frame number in the study's file: the slice
            index along the file's own axis ``info["source_axis"]`` before any reorientation (for a DICOM series,
            axis 2 runs in ``InstanceNumber`` order), or the clip's frame number; ``-1`` for a frame that is no slice
            of the file (the padding of ``resize="pad"``).
        info: ``modality``, ``original_shape``, ``num_source_frames``, ``source_axis``, ``instance_numbers``
            (DICOM series, sorted) and reader facts.
        dicom_headers: pydicom datasets (no pixel data) of a DICOM study, ordered like the source slices/frames.
    """

    source: StudySource
    image: torch.Tensor
    source_indices: list[int]
    info: dict[str, Any]
    dicom_headers: list = field(default_factory=list)


#: what :func:`kept_source_indices` (the reports' ``kept_source_indices``, the predictions' ``source_frames``) gives
#: for a kept frame that is padding (no slice of the file: the zeros ``resize="pad"`` adds around a study)
PADDING = "padding"


def kept_source_indices(
    kept: Sequence[int] | torch.Tensor | None, source_indices: Sequence[int] | torch.Tensor | None
) -> list[int | str] | None:
    """
    The file's own slice/frame numbers of the frames the sampler kept: ``source_indices[kept]``, with
    :data:`PADDING` (``"padding"``) for a kept frame that is padding.

    Args:
        kept: positions ``0..T-1`` along the network's frame axis.
        source_indices: for each of the ``T`` frames, its number in the file (see :attr:`Study.source_indices`);
            ``-1`` (:data:`monai_das.transforms.NO_SOURCE`) for a frame made from no slice of the file (padding of
            ``resize="pad"``); all ``-1``: unknown (a dataset item that is no file).

    Returns:
        The list, or ``None`` when either is ``None``, every source index is unknown or a kept position is out of
        range.
    """
    if kept is None or source_indices is None:
        return None
    src = [int(i) for i in torch.as_tensor(source_indices).reshape(-1).tolist()]
    idx = [int(i) for i in torch.as_tensor(kept).reshape(-1).tolist()]
    if not src or max(src) < 0 or any(not 0 <= i < len(src) for i in idx):
        return None
    return [src[i] if src[i] >= 0 else PADDING for i in idx]


def repeated_source_warning(study: str, kept_source: Sequence[int | str] | None, num_frames: int) -> str | None:
    """
    The warning for a study whose kept frames are fewer distinct slices/frames of its file than were kept, else
    ``None``. Two causes, each named: kept frames that are padding (:data:`PADDING`: the zeros ``resize="pad"`` adds
    around a study to fill the grid; they show no slice of the file), and kept frames made from one source frame,
    which happens only when the study has fewer slices/frames along the frame axis than the network's ``T``
    (``num_frames``): the input repeats or interpolates them, and a sampler can keep two neighbouring network frames
    made from the same source frame. Either way the prediction rests on fewer distinct frames than ``k``.

    Args:
        study: how to name the study (id or path).
        kept_source: the kept frames' source numbers (:func:`kept_source_indices`; ``None``: unknown, no warning).
        num_frames: ``T``.
    """
    if not kept_source:
        return None
    real = [i for i in kept_source if i != PADDING]
    padding = len(kept_source) - len(real)
    distinct = len(set(real))
    if distinct == len(kept_source):
        return None
    listed = ", ".join(str(i) for i in kept_source)
    causes = []
    if padding:
        causes.append(f"{padding} of them {'is' if padding == 1 else 'are'} padding (zeros that resize 'pad' added "
                      "around the study to fill the grid: no slice of the file)")
    if distinct < len(real):
        causes.append(f"{len(real) - distinct} repeat a slice/frame kept already: the study has fewer along the frame "
                      f"axis than the network's T={num_frames}, so frames were repeated or interpolated to make the "
                      "input")
    return (f"study {study}: the {len(kept_source)} kept frames are only {distinct} distinct slices/frames of the "
            f"file (source numbers [{listed}]): {'; '.join(causes)}.")


# ---------------------------------------------------------------------------------------------------- discovery
@contextlib.contextmanager
def _series_links(files: Sequence[Path]) -> Iterator[tuple[str, list[str]]]:
    """A temporary folder of links to exactly ``files`` (``000000.dcm``, ... in their order), for readers that take a
    folder and read all of it; yields the folder and the link names, removed afterwards."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="das_series_") as tmp:
        links = [f"{i:06d}.dcm" for i in range(len(files))]
        for link, f in zip(links, files):
            os.symlink(os.path.abspath(f), os.path.join(tmp, link))
        yield tmp, links


def _without_pixel_data(headers: list) -> list:
    """DICOM headers as a :class:`Study` holds them, without the (deferred) ``PixelData`` element the checks read:
    iterating or serialising one would read the pixel data from its file (R70g)."""
    for h in headers:
        if "PixelData" in h:
            del h["PixelData"]
    return headers


#: the geometry elements MONAI's ``PydicomReader`` builds a series' affine from (orientation, position, spacing)
_GEOMETRY_TAGS = (0x00200037, 0x00200032, 0x00280030)


def _geometry_lost_by_pydicom_reader(headers: Sequence) -> bool:
    """
    Whether MONAI's ``PydicomReader`` would drop a geometry element of these slice headers: it reads them through
    ``to_json_dict(suppress_invalid_tags=True)``, which drops a value pydicom cannot serialise, e.g. a decimal string
    longer than 16 characters (``0.8660254037844387``, as some converters write), and then stacks the slices with an
    identity affine (warned on stderr only): the study was read transposed at 1 mm where training's ITK reads the
    series' real geometry (trial T72c).
    """
    from collections.abc import MutableSequence

    from pydicom.config import RAISE
    from pydicom.valuerep import validate_value

    for h in headers:
        for tag in _GEOMETRY_TAGS:
            if tag in h and h[tag].value is not None:
                value = h[tag].value
                for v in value if isinstance(value, MutableSequence) else [value]:
                    try:  # the string as written in the file (a DSfloat keeps it), as strict reading checks it
                        validate_value("DS", str(v), RAISE)
                    except ValueError:
                        return True
    return False


def _study_id(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else path.name


#: the DICOM elements discovery reads: a clip (several frames) or a slice of a series
_DISCOVERY_TAGS = ("NumberOfFrames", "SeriesInstanceUID", "SeriesNumber", "SOPInstanceUID", "Modality", "Rows",
                   "Columns", "ImageType", "StudyInstanceUID", "SOPClassUID", "PatientID")


def _is_non_image_object(ds) -> bool:
    """A DICOM object that is no image by its modality (:data:`NON_IMAGE_MODALITIES`: a report, a presentation state, a
    key object...): what discovery and training pass over beside a series. A file that only lacks ``Rows``/``Columns``
    (a truncated image) is not passed over: reading it fails, naming it."""
    return str(ds.get("Modality", "")).upper() in NON_IMAGE_MODALITIES


def modality_of(headers: Sequence) -> str | None:
    """The ``Modality`` of DICOM images (upper case, those of several joined by ``/``; ``None`` when blank): what
    training records of a series (the recipe's ``modalities``) and inference reports of it, by one rule."""
    found = sorted({str(h.get("Modality", "") or "").strip().upper() for h in headers} - {""})
    return "/".join(found) or None


def _modality_warning(modality: str | None, recipe: Mapping, name: str) -> str | None:
    """A warning when a DICOM study's modality is not one the model was trained on (the recipe's ``modalities``,
    recorded from the training's DICOM studies), or, where those are not known, when a study of another modality
    than CT meets a model whose fixed intensity window reaches below 0, i.e. is in Hounsfield units (CT's; MR,
    ultrasound, PET values are not negative): an MR series through a CT model was classified without a word (its
    intensities mapped as if they were HU)."""
    mod = str(modality or "").upper()
    trained, intensity_range = recipe.get("modalities"), recipe.get("intensity_range")
    if mod and trained and mod not in trained:
        return (f"'{name}' is a {mod} study, but the model was trained on {'/'.join(trained)} studies only (its "
                f"recipe's modalities): it never saw such images, so the prediction may mean nothing. Classify it "
                f"with a model trained on {mod} (or accept only {'/'.join(trained)} studies: the Deploy app's "
                f"--modalities {' '.join(trained)}, MONAI Label's conf modalities {','.join(trained)}).")
    if not mod or mod == "CT" or intensity_range is None or float(intensity_range[0]) >= 0:
        return None
    return (f"'{name}' is a {mod} study, but the model scales a fixed intensity window intensity_range "
            f"{[float(v) for v in intensity_range]} that reaches below 0: Hounsfield units, a CT model's. Its "
            f"intensities are mapped as if they were HU, so the prediction may mean nothing: classify it with a model "
            f"trained on {mod} (or restrict the accepted modalities: --modalities CT).")


#: the Secondary Capture Image Storage SOP classes (``...1.7``; multi-frame ones ``...1.7.1``-``.4``)
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _is_secondary_capture(ds) -> bool:
    """A Secondary Capture image (a screen save such as a dose screen, a scanned page), not ``...1.77`` (VL)."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    return sop_class == _SECONDARY_CAPTURE or sop_class.startswith(_SECONDARY_CAPTURE + ".")


def _study_uid(ds) -> str:
    return str(ds.get("StudyInstanceUID", "") or "").strip()


def _is_localizer(ds) -> bool:
    """A scout / localizer image (``ImageType`` holds ``LOCALIZER``): planning views, no part of the study's stack."""
    value = ds.get("ImageType") or ""
    parts = str(value).split("\\") if isinstance(value, (str, bytes)) else [str(v) for v in value]
    return "LOCALIZER" in (p.strip().upper() for p in parts)


def _series_beside(folder: Path, series: dict[str, list[Path]], headers: dict[Path, Any],
                   passed_over: Callable[[Any], bool], what: str) -> dict[str, list[Path]]:
    """``series`` without those whose every file ``passed_over(header)`` says is no part of the study, when other
    series remain (logged at INFO as ``skipped <n> <what>``); all of them otherwise (one of its own stays a study)."""
    kept = {uid: m for uid, m in series.items() if not all(passed_over(headers[f]) for f in m)}
    if not kept or len(kept) == len(series):
        return series
    skipped = [f.name for uid, m in series.items() if uid not in kept for f in m]
    logger.info(f"'{folder}': skipped {len(skipped)} {what} ({', '.join(skipped[:3])}"
                f"{', ...' if len(skipped) > 3 else ''}).")
    return kept


def _holds_no_image(ds) -> bool:
    """A DICOM object without an image: a report (SR), presentation state, key object, segmentation... (no
    ``Rows``/``Columns``, or a :data:`NON_IMAGE_MODALITIES` modality)."""
    return "Rows" not in ds or "Columns" not in ds or _is_non_image_object(ds)


def _is_multiframe(ds) -> bool:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1) > 1
    except (TypeError, ValueError):
        return False


def _header_members(path: Path, names: Sequence[str] | None = None) -> list[Path]:
    """An ``.mhd``/``.nhdr`` header and its data: the files beside it with its stem and the file its
    ``ElementDataFile`` (``data file``) names (which may have another stem: rewriting it must change the study's
    fingerprint); ``names``: :func:`_header_data_names` of ``path`` when read already."""
    members = {f for f in path.parent.glob(glob_escape(path.stem) + ".*") if f.is_file()}
    for name in _header_data_names(path) if names is None else names:
        data = path.parent / name
        if "%" not in name and data.is_file():
            members.add(data)
    return sorted(members)


#: the longest MetaImage/NRRD header read (a ``LIST`` of 10 000 slice files is ~200 KB)
MAX_HEADER_BYTES = 4 * 2**20


def _header_data_names(path: Path, strict: bool = False) -> list[str]:
    """The data files a MetaImage header's ``ElementDataFile`` names (one, the ``LIST`` that follows it, or a
    ``printf`` pattern such as ``slice%03d.raw 1 20 1`` as its first word; none for ``LOCAL``), or a NRRD header's
    ``data file``; ``[]`` for other files and an unreadable header. Every header line the reader reads is read: a
    MetaImage's up to ``ElementDataFile`` (its last field; a ``LIST`` to the end), a NRRD's up to its blank line
    (a cap of 512 lines let a header padded past them name any file, and an ``.mha``/``.nrrd``, whose voxels are
    mostly in the file itself, was not read at all; trial T64b). A header longer than :data:`MAX_HEADER_BYTES`:
    refused with ``strict`` (``ValueError``; :func:`check_header_data_file`, before the study is read), else ``[]``."""
    suffix = path.suffix.lower()
    if suffix not in _ITK_HEADER_SUFFIXES:
        return []
    meta = suffix in (".mhd", ".mha")
    names: list[str] | None = None  # the data files named, once the data-file line is read (a LIST: the lines after)
    size, started = 0, False
    try:
        with open(path, "rb") as f:
            while size <= MAX_HEADER_BYTES:
                raw = f.readline(MAX_HEADER_BYTES + 1 - size)
                if not raw:
                    break
                size += len(raw)
                line = raw.decode("latin-1").rstrip("\r\n")
                if not meta and not line.strip() and started:  # the end of a NRRD header (its data may follow)
                    break
                started = True
                if names is not None:  # a LIST: one file name per line ('list01.raw' is a name), to the end
                    names += [line.strip()] if line.strip() else []
                    continue
                key, _, value = line.partition("=" if meta else ":")
                if key.strip().replace(" ", "").lower() in ("elementdatafile", "datafile"):
                    value = value.strip()
                    if value.upper().split()[:1] == ["LIST"]:
                        names = []
                        continue
                    # the last header line read: LOCAL (or nothing) names no file
                    names = [] if not value or value.upper() == "LOCAL" else [
                        value.split()[0] if "%" in value else value]
                    break
    except OSError:
        return []  # the reader says why
    if size > MAX_HEADER_BYTES:
        if not strict:
            return []
        raise ValueError(f"'{path}' has a header longer than {MAX_HEADER_BYTES // 2**20} MiB, which no {suffix} "
                         "header is: refused (a header's data file is checked before the reader follows it).")
    return names or []


def check_header_data_file(path: str | os.PathLike) -> None:
    """
    Refuse a MetaImage or NRRD header whose ``ElementDataFile`` (or ``LIST`` entry; NRRD's ``data file``) is not a
    regular file beside it: ITK's reader follows any path, so a received header naming ``/etc/passwd`` (or
    ``../../secret``) had that file read as voxels and its byte range quoted in the report's intensity warning, and
    one naming a named pipe hung the run. An ``.mha`` or ``.nrrd`` naming a data file at all is refused (their voxels
    are in the file itself; a detached header is an ``.mhd`` or ``.nhdr``, whose data file is a member of its study).

    Raises:
        ValueError: naming the header, the data file and why (absolute, outside the header's folder, not a file).
    """
    path = Path(path)
    folder = path.parent.resolve()
    suffix = path.suffix.lower()
    what = "ElementDataFile" if suffix in (".mhd", ".mha") else "data file"
    for name in _header_data_names(path, strict=True):
        if suffix not in _DETACHED_HEADERS:
            detached = ".mhd" if suffix == ".mha" else ".nhdr"
            raise ValueError(f"'{path}': its {what} names '{name}', but an {suffix} file holds its voxels itself "
                             f"({what} LOCAL or none): refused (a header naming another file is an {detached}, whose "
                             "data file lies beside it).")
        data = path.parent / name
        why = ("is an absolute path" if Path(name).is_absolute() else
               "lies outside the header's folder" if not data.resolve().is_relative_to(folder) else
               "is not a regular file" if "%" not in name and not data.is_file() else None)
        if why:
            raise ValueError(f"'{path}': its {what} '{name}' {why}: a header may only name data files beside it "
                             "(the reader follows any path: another file's bytes would be read as voxels).")


def _unsupported(path: Path) -> str:
    return (f"unsupported file '{path}': expected a volume {VOLUME_EXTENSIONS}, a DICOM file or a video "
            f"{VIDEO_EXTENSIONS}.")


#: the error of a study file of 0 bytes (every format)
_EMPTY_FILE = "'{path}' is an empty file (0 bytes): an interrupted copy or export?"


#: the error of a file that training's reader (ITK's GDCM) reads as DICOM but :func:`is_dicom` does not
_NO_PREAMBLE = ("'{path}' is a DICOM file without the DICOM preamble ('DICM' at byte 128), which is not read here, "
                "while training's reader (ITK) stacks it with its folder's series: re-export the series as DICOM "
                "files (Part 10).")


def _gdcm_reads(path: Path) -> bool:
    """Whether training's reader (ITK's GDCM) reads the file ``path`` as DICOM, which :func:`is_dicom` does not (no
    ``DICM`` preamble, no ``.dcm`` name: GDCM's series lookup stacks it with the folder's series all the same)."""
    try:
        import itk

        return bool(itk.GDCMImageIO.New().CanReadFile(str(path)))
    except Exception:  # noqa: BLE001 - no ITK, or GDCM cannot tell: not read as DICOM
        return False


def _empty_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file of 0 bytes."""
    return os.path.isfile(path) and os.path.getsize(path) == 0


def _classify_file(root: Path, path: Path, headers: dict[Path, Any]) -> StudySource | None:
    """The study of the file ``path``, or ``None`` for a single-frame DICOM file (a slice of its folder's series)."""
    sid = _study_id(root, path)
    suffix = _suffix(path)
    if not path.is_file():  # a FIFO would block a reader, a link to /dev/zero was "an empty file" (trial T67b)
        what = "a link to nothing" if not path.exists() else "no regular file (a device, a FIFO or a socket)"
        return StudySource(sid, "invalid", path, [path], error=f"'{path}' is {what}: not read.")
    # first, whatever the format: not pydicom's "use force=True" for an empty .dcm, nor OpenCV's "corrupt, truncated
    # or unsupported container" for an empty .mp4 (trial T58), as training's check_study_shapes says it
    if _empty_file(path):
        return StudySource(sid, "invalid", path, [path], error=_EMPTY_FILE.format(path=path))
    if suffix in VOLUME_EXTENSIONS:
        return StudySource(sid, "volume", path, _header_members(path) if suffix in _DETACHED_HEADERS else [path])
    if suffix in VIDEO_EXTENSIONS:
        return StudySource(sid, "video", path, [path])
    if is_dicom(path):
        try:
            ds = read_dicom_header(path, _DISCOVERY_TAGS)
        except Exception as e:
            return StudySource(sid, "invalid", path, [path], error=f"cannot read DICOM file '{path}': {e}")
        headers[path] = ds
        return StudySource(sid, "video", path, [path]) if _is_multiframe(ds) else None
    return StudySource(sid, "invalid", path, [path], error=_unsupported(path))


def _text_file(path: Path) -> bool:
    """Whether ``path`` holds a little text (a PACS export's ``VERSION``, a lock file): not empty, and its first bytes
    decode as UTF-8 without NUL bytes. An empty file, or a DICOM file cut before its preamble ends, is not."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return False
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:  # a multi-byte character cut at the end of the 256 bytes is still text
        return e.start >= len(head) - 3
    return True


def _undecodable_dicom(files: Sequence[str | os.PathLike] | None) -> tuple[str, str] | None:
    """The first of ``files`` whose pixel data pydicom cannot decode and why (a series that failed to load: name the
    slice), ``None`` when every file decodes."""
    import pydicom

    for f in files or []:
        try:
            pydicom.dcmread(str(f)).pixel_array
        except Exception as e:  # the slice at fault, whatever the decoder's error
            return str(f), f"{type(e).__name__}: {e}"
    return None


def sizes_named(sized: Iterable[tuple[tuple[int, int], str | os.PathLike]]) -> str:
    """``"64×96 ('s3.dcm', ...), 128×128 ('s0.dcm', ...)"``: each (rows, columns) size of ``(size, file)`` pairs with
    the name of its first file, for a message about slices of different sizes in one series."""
    first: dict[tuple[int, int], str] = {}
    for size, f in sized:
        first.setdefault(size, Path(f).name)
    return ", ".join(f"{r}×{c} ('{first[(r, c)]}', ...)" for r, c in sorted(first))


def _series_label(ds, uid: str) -> str:
    """The series' part of a study id (``<folder>#series_<label>``): its ``SeriesNumber``, else the last part of its
    UID, kept to 32 characters of letters, digits, ``.``, ``-`` and ``_`` (a header may hold any text there: line
    breaks forged lines of the SR's text, a ``/`` a folder, 300 characters a file name too long)."""
    number = ds.get("SeriesNumber")
    text = str(number) if number not in (None, "") else (uid.rsplit(".", 1)[-1] or "unknown")
    return re.sub(r"[^0-9A-Za-z._-]", "_", text)[:32] or "unknown"


def _skipped(path: Path, header_data: set[Path], named: set[Path]) -> bool:
    """Files of a folder that are no study of their own: sidecars, a DICOMDIR index, the data files of ``.mhd`` /
    ``.nhdr`` headers: a file a header names (``named``, resolved; whatever its name, but for a study format of its
    own), or a file beside a header with its stem and a data file's ending (``header_data``)."""
    suffix = path.suffix.lower()
    if suffix in SIDECAR_EXTENSIONS or path.name.upper() == "DICOMDIR":
        return True
    if named and path.resolve() in named and _suffix(path) not in VOLUME_EXTENSIONS + VIDEO_EXTENSIONS:
        return True
    return path.name.lower().endswith(_HEADER_DATA_ENDINGS) and path in header_data


def is_hidden(name: str) -> bool:
    """A file or folder name that holds no study or clip: hidden (``.git``, ``._scan.nii.gz``, the resource forks an
    archive made on macOS unpacks) or the ``__MACOSX`` folder of such an archive."""
    return name.startswith(".") or name == "__MACOSX"


def _walk(root: Path, headers: dict[Path, Any] | None = None) -> list[StudySource]:
    """Every study under the folder ``root`` (see :func:`discover_studies`), ids relative to ``root``; the DICOM
    headers read go into ``headers`` (a study list's rows share one)."""
    headers = {} if headers is None else headers
    studies: list[StudySource] = []
    passed_over: list[StudySource] = []  # series of no study image (see the end)
    any_file = False
    named: set[Path] = set()  # the data files .mhd/.nhdr headers name (resolved): no studies of their own
    visited = {os.path.realpath(root)}  # folders are followed through links (a study linked in from an archive),
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # each real folder once (no loops)
        kept = []
        # real folders before links, so that a folder and a link to it are listed under the folder's own path
        names = (d for d in dirnames if not is_hidden(d))
        for d in sorted(names, key=lambda d: (os.path.islink(os.path.join(dirpath, d)), d)):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in visited:
                logger.warning(f"'{os.path.join(dirpath, d)}' leads to '{real}', which is listed already: skipped.")
                continue
            visited.add(real)
            kept.append(d)
        dirnames[:] = kept
        folder = Path(dirpath)
        files = sorted(folder / f for f in filenames if not is_hidden(f))
        any_file = any_file or bool(files)
        if not files and not dirnames:
            studies.append(StudySource(_study_id(root, folder), "invalid", folder,
                                       error=f"study folder '{folder}' is empty."))
            continue
        # each header read once: the files it names, also in a subfolder ('data file: data/vol.raw', walked after
        # this folder), and its members beside it
        data_names = {f: _header_data_names(f) for f in files if f.suffix.lower() in _DETACHED_HEADERS}
        header_data = {d for f, names in data_names.items() for d in _header_members(f, names)}
        named.update((f.parent / n).resolve() for f, names in data_names.items() for n in names if "%" not in n)
        series: dict[str, list[Path]] = {}
        bare: list[StudySource] = []  # files without an extension that are no study (a PACS export's VERSION, LOCK)
        foreign: list[StudySource] = []  # files of no study format (not DICOM): skipped beside a DICOM series
        first_here = len(studies)  # the studies of this folder's own files (cines, volumes) start here
        for f in files:
            if _skipped(f, header_data, named):
                continue
            src = _classify_file(root, f, headers)
            if src is None:
                series.setdefault(str(headers[f].get("SeriesInstanceUID", "")), []).append(f)
            elif src.kind == "invalid" and not f.suffix and _text_file(f):  # a damaged DICOM file stays an error
                bare.append(src)
            elif src.kind == "invalid" and src.error == _unsupported(f):  # neither empty, unreadable DICOM nor a link
                foreign.append(src)
            else:
                studies.append(src)
        if bare:  # a little text without an extension (a PACS export's VERSION or LOCK, beside its DICOMDIR, its
            # DICOM files or in a patient folder): no study format, not a study of its own
            logger.info(f"'{folder}': skipped {len(bare)} text file(s) without an extension "
                        f"({', '.join(b.path.name for b in bare[:3])}{', ...' if len(bare) > 3 else ''}).")
        # a thumbnail, a viewer's file, a non-DICOM 'IM9999' in a DICOM series' folder (no volume or clip file of its
        # own): training's reader (ITK) reads its DICOM files only; each was an error study (Deploy exit 3; T72c)
        if foreign and series and not any(st.kind in ("volume", "video") for st in studies[first_here:]):
            # but a DICOM file without the preamble, which training's reader stacks with the series (review r72f)
            dicom = {b.path for b in foreign if _gdcm_reads(b.path)}
            studies += [replace(b, error=_NO_PREAMBLE.format(path=b.path)) for b in foreign if b.path in dicom]
            foreign = [b for b in foreign if b.path not in dicom]
            if foreign:
                logger.info(f"'{folder}': skipped {len(foreign)} file(s) that are not DICOM beside its DICOM series "
                            f"({', '.join(b.path.name for b in foreign[:3])}{', ...' if len(foreign) > 3 else ''}), "
                            "as training's reader passes over them.")
        else:  # elsewhere (beside volume or clip files, alone): an error study each, naming what is expected
            studies += foreign
        base = _study_id(root, folder)
        for uid, members in series.items():  # a report stored under an image series' SeriesInstanceUID (an export's
            # fault): no slice, as training's check and reader pass over it; it was read as one (refused as "no image",
            # or the series as "images of 2 patients" by the report's PatientID; trial T72c)
            objects = [f for f in members if _is_non_image_object(headers[f])]
            if objects and len(objects) < len(members):
                series[uid] = [f for f in members if f not in objects]
                logger.info(f"'{folder}': skipped {len(objects)} non-image DICOM file(s) stored under its image "
                            f"series' SeriesInstanceUID ({', '.join(f.name for f in objects[:3])}"
                            f"{', ...' if len(objects) > 3 else ''}).")
        # a report or key object beside the images, then a scout series beside the study's stack: no study of its own
        series = _series_beside(folder, series, headers, _is_non_image_object,
                                "non-image DICOM file(s) beside its image series")
        series = _series_beside(folder, series, headers, _is_localizer, "localizer (scout) image(s) beside its series")
        # one folder, several patients (a mis-filed series): each series is still a study, and each report says so
        # (both were classified under the folder's name without a word; trial T58b)
        patients = sorted({str(headers[m[0]].get("PatientID", "") or "").strip() for m in series.values()} - {""})
        mixed = (f"the folder '{folder}' holds series of {len(patients)} patients (PatientID {', '.join(patients[:4])}"
                 f"{', ...' if len(patients) > 4 else ''}): a series filed under another patient's folder? Each series "
                 "is classified as a study of its own; check which patient this one is." if len(patients) > 1 else None)
        if mixed:
            logger.warning(mixed)
        # files without a SeriesInstanceUID beside a series (a truncated slice whose header stops early): an error
        # study of their own, said on the series too (it was classified without them, its id changed; trial T63c)
        stray = series.pop("", None) if len(series) > 1 and "" in series else None
        cut = (f"the folder '{folder}' also holds {len(stray)} DICOM file(s) without a SeriesInstanceUID "
               f"({', '.join(f.name for f in stray[:3])}{', ...' if len(stray) > 3 else ''}; damaged or truncated?): "
               "if they are slices of this series, it is classified without them." if stray else None)
        if stray:
            logger.warning(cut)
            studies.append(StudySource(f"{base}#unreadable", "invalid", folder, stray, error=(
                f"{len(stray)} DICOM file(s) in '{folder}' ({', '.join(f.name for f in stray[:3])}"
                f"{', ...' if len(stray) > 3 else ''}) have no SeriesInstanceUID beside the folder's series: damaged "
                "or truncated files? They are not classified.")))
        files_beside = any(st.path.parent == folder for st in studies[first_here:])
        for uid, members in series.items():
            sid = base if len(series) == 1 else f"{base}#series_{_series_label(headers[members[0]], uid)}"
            if len(members) == 1 and files_beside:  # one image beside the folder's cines: its own name, not the
                sid = _study_id(root, members[0])  # folder's (its error read as the exam's; trial T68b)
            owners = sorted({str(headers[f].get("PatientID", "") or "").strip() for f in members} - {""})
            if len(owners) > 1:  # one SeriesInstanceUID, two patients: classified as one volume (trial T63c)
                studies.append(StudySource(sid, "invalid", folder, error=(
                    f"the DICOM series {uid or '(no SeriesInstanceUID)'} in '{folder}' holds images of "
                    f"{len(owners)} patients (PatientID {', '.join(owners[:4])}{', ...' if len(owners) > 4 else ''}): "
                    "one series is one patient's images, so it is not classified. Separate the patients' files "
                    "(a mis-merged export?).")))
                continue
            study = StudySource(sid, "dicom_series", folder, members, warnings=[w for w in (mixed, cut) if w])
            no_study = (all(_is_non_image_object(headers[f]) or _is_localizer(headers[f]) for f in members)
                        or (len(members) == 1 and _is_secondary_capture(headers[members[0]])))  # a dose screen
            (passed_over if no_study else studies).append(study)
    if not any_file:
        raise ValueError(f"input folder '{root}' contains no files.")
    # a PACS export's report, dose report (SR or one secondary capture image) or scout series in a folder of its own,
    # beside an image series of its imaging study (one StudyInstanceUID): no study (each was an error study, a Deploy
    # exit status 3 on a clean export). Without one (a patient whose CT never arrived, only its scout) it stays a
    # study: its loading names what it is, an error row rather than a patient gone without a word
    imaged = {_study_uid(headers[f]) for s in studies if s.kind != "invalid" for f in s.files or [] if f in headers}
    skipped = [s for s in passed_over if _study_uid(headers[s.files[0]]) in imaged - {""}]
    if skipped:
        names = [s.study_id for s in skipped]
        logger.info(f"'{root}': skipped {len(names)} DICOM series holding no study image, only reports, key objects, "
                    "a secondary capture or localizer (scout) images beside their study's images "
                    f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}).")
    studies += [s for s in passed_over if not any(s is k for k in skipped)]
    _unique_ids(studies)
    _warn_copies(studies, headers)
    return studies


def _unique_ids(studies: list[StudySource]) -> None:
    """Give each study its own id (e.g. two series with one SeriesNumber in a folder: ``X``, ``X_1``)."""
    taken = {s.study_id for s in studies}
    seen: dict[str, int] = {}
    for s in sorted(studies, key=lambda s: s.study_id):  # unique ids (e.g. two series with one SeriesNumber)
        n = seen.get(s.study_id, 0)
        seen[s.study_id] = n + 1
        if n:
            new = f"{s.study_id}_{n}"
            while new in taken:  # never the id of another study (a folder 'X_1' beside two studies 'X')
                n += 1
                new = f"{s.study_id}_{n}"
            seen[s.study_id] = n + 1
            taken.add(new)
            s.study_id = new


def _warn_copies(studies: list[StudySource], headers: dict[Path, Any]) -> None:
    """
    Warn, on each study concerned, about DICOM studies that hold the same images (``SOPInstanceUID``) as another
    study of the input (a copy: classified twice), and series folders that are parts of one series
    (``SeriesInstanceUID``, other images: each part is classified as a study of its own). ``headers``: the files'
    headers read already (a folder's discovery); the others' are read here (a study list's rows).
    """
    said: dict[tuple[str, ...], str] = {}

    def header(f: Path) -> Any:
        if f not in headers:
            try:
                headers[f] = read_dicom_header(f, ("SOPInstanceUID", "SeriesInstanceUID")) if is_dicom(f) else None
            except Exception:  # unreadable: its reading reports it
                headers[f] = None
        return headers[f]

    def warn(same: list[StudySource], message: str) -> None:
        ids = tuple(sorted(s.study_id for s in same))
        if ids in said or len(ids) < 2:
            return
        said[ids] = message = f"studies {', '.join(repr(i) for i in ids)} {message}"
        logger.warning(message)
        for s in same:
            s.warnings.append(message)

    by_sop: dict[str, list[StudySource]] = {}
    by_series: dict[str, list[StudySource]] = {}
    for s in studies:
        if s.kind not in ("dicom_series", "video"):
            continue
        found = [h for h in (header(f) for f in s.files) if h is not None]
        for uid in dict.fromkeys(str(h.get("SOPInstanceUID", "") or "") for h in found):
            if uid:
                by_sop.setdefault(uid, []).append(s)
        series = str(found[0].get("SeriesInstanceUID", "") or "") if found and s.kind == "dicom_series" else ""
        if series:
            by_series.setdefault(series, []).append(s)
    copies = set()
    for uid, same in by_sop.items():
        if len(same) > 1:
            warn(same, f"hold the same DICOM image(s) (e.g. SOPInstanceUID {uid}): copies, each classified on its own.")
            copies.update(id(s) for s in same)
    for uid, same in by_series.items():
        if len(same) > 1 and not all(id(s) in copies for s in same):
            warn(same, f"are parts of one DICOM series (SeriesInstanceUID {uid}) in different folders: each part is "
                       "classified as a study of its own; put the series' files in one folder to classify it whole.")


def _study_at(study_id: str, path: Path, label: int | None = None,
              headers: dict[Path, Any] | None = None) -> StudySource:
    """The one study at ``path`` (a study file, or a folder holding exactly one study), named ``study_id``; the DICOM
    headers read go into ``headers``."""
    headers = {} if headers is None else headers
    if not path.exists():
        return StudySource(study_id, "invalid", path, error=f"study '{path}' does not exist.", label=label)
    if path.is_dir():
        problem = "no study file"
        try:
            walked = _walk(path, headers)
        except ValueError as e:
            walked, problem = [], str(e)
        found = [s for s in walked if s.kind != "invalid"]
        if found:
            problem = ", ".join(s.study_id for s in found)
        if len(found) != 1:
            return StudySource(study_id, "invalid", path, label=label,
                               error=f"'{path}' must hold exactly one study, found {len(found)} ({problem}).")
        src = found[0]
        others = [s for s in walked if s.kind == "invalid"]
        if others:  # a junk or damaged file beside the study: an error study with -i <folder>, unsaid here (T63c)
            said = (f"'{path}' also holds what is no part of this study and was not read: "
                    + "; ".join(s.error or str(s.path) for s in others[:3]) + (" ..." if len(others) > 3 else ""))
            logger.warning(said)
            src = replace(src, warnings=[*src.warnings, said])
    else:
        src = _classify_file(path.parent, path, headers) or StudySource(path.name, "dicom_series", path, [path])
    src.study_id, src.label = study_id, label
    return src


def _label_names(label_names: Sequence[str] | None, num_classes: int | None) -> list[str] | None:
    if label_names is not None:
        names = [str(n) for n in label_names]
        if num_classes is not None and int(num_classes) != len(names):
            raise ValueError(f"{len(names)} label names {bounded_repr(names)} for num_classes={num_classes}.")
        return names
    return None if num_classes is None else [str(i) for i in range(int(num_classes))]


def _valid_labels(names: list[str] | None) -> str:
    """What a CSV label cell may hold, for an error."""
    if not names:
        return "an integer class index >= 0"
    return f"a class index 0..{len(names) - 1} or a class name {bounded_repr(names)}"


#: bad label lines of a study list named in its error
_LABELS_SHOWN = 10


def _parse_label(value: str | None, names: list[str] | None, where: str) -> int | None:
    """A CSV label cell → class index; ``None`` for a blank cell or ``-1`` (unknown label)."""
    value = (value or "").strip()
    if value in ("", "-1"):
        return None
    if names is not None and value in names:
        return names.index(value)
    valid = _valid_labels(names)
    try:
        idx = int(value)
    except ValueError:
        raise ValueError(f"{where}: label {value!r} is not {valid}.") from None
    if idx < 0 or (names is not None and idx >= len(names)):
        raise ValueError(f"{where}: label {value!r} is outside the model's classes: expected {valid}.")
    return idx


def _read_csv(csv_path: Path, label_names: list[str] | None, image_column: str = "image",
              headers: dict[Path, Any] | None = None,
              dataset_dir: str | os.PathLike | None = None) -> list[StudySource]:
    """A CSV study list: ``image`` (path, relative to the CSV's folder) and optional ``label`` and ``id`` columns.
    Every image must lie inside ``dataset_dir`` (default: the CSV's folder), as a datalist's
    (:func:`monai_das.data.load_datalist`): the rows that leave it are refused, all named in one error. No study is
    read (nothing opened) before the whole list is checked."""
    from monai_das.data.datalist import _inside, csv_header, csv_rows, dataset_root, inside_rule, utf8_failure

    base = csv_path.parent
    root = dataset_root(csv_path, dataset_dir)
    images: list[str] = []  # every row's, for the --dataset_dir that holds them all
    outside: list[tuple[int, str, str]] = []  # (line, as written, resolved): a list is data (security review T69b)
    rows: list[tuple[str, Path, int | None]] = []  # (id, path, label): read once the whole list is checked
    first_line: dict[str, int] = {}
    path_line: dict[Path, int] = {}  # the same file twice (a.nii.gz, ./a.nii.gz) would be predicted twice
    bad_labels: list[tuple[int, str, str]] = []  # (line, label, error): every one named in one error
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets add a BOM
            reader = csv.DictReader(f)
            if reader.fieldnames is not None:  # as a training datalist CSV's: " label", "Label" is the label column
                reader.fieldnames = csv_header(reader.fieldnames, (image_column, "label", "id"),
                                               f"study list '{csv_path}' line 1")
            if reader.fieldnames is None or image_column not in reader.fieldnames:
                raise ValueError(f"study list '{csv_path}' line 1: needs a '{image_column}' column (path of each "
                                 f"study), got the columns {reader.fieldnames}.")
            for line, row in csv_rows(reader, csv_path):  # rows of blank cells skipped, as a datalist's
                where = f"study list '{csv_path}' line {line}"
                if None in row:
                    raise ValueError(f"{where}: {len(reader.fieldnames) + len(row[None])} fields for the "
                                     f"{len(reader.fieldnames)} columns of the header (unquoted comma?).")
                image = (row[image_column] or "").strip()
                if not image:
                    raise ValueError(f"{where}: empty '{image_column}' (path of the study).")
                path = Path(image).expanduser()
                path = Path(os.path.abspath(path if path.is_absolute() else base / path))
                images.append(str(path))
                if not _inside(str(path), root):  # never opened: /etc/passwd was read to be refused as no study
                    outside.append((line, image, str(path)))
                study_id = (row.get("id") or "").strip() or image
                control = next((c for c in study_id if not c.isprintable()), None)
                if control is not None:  # a line break in an id starts a forged line in every log and report
                    named = "the study id" if (row.get("id") or "").strip() else "the image path (the study's id)"
                    raise ValueError(f"{where}: {named} {study_id!r} holds the character {ascii(control)} (a line "
                                     "break, tab, escape, direction override, ...): give an id of printable "
                                     "characters (an 'id' column).")
                try:
                    label = _parse_label(row.get("label"), label_names, where)
                except ValueError as e:  # named with the others (it stopped at the first: one line a run; trial T58)
                    bad_labels.append((line, (row.get("label") or "").strip(), str(e)))
                    label = None
                if study_id in first_line:
                    raise ValueError(f"{where}: duplicate id {study_id!r} (also on line {first_line[study_id]}); "
                                     "add a unique 'id' column.")
                if path in path_line:
                    raise ValueError(f"{where}: '{image}' is the study of line {path_line[path]} again ({path}); "
                                     "list each study once.")
                first_line[study_id], path_line[path] = line, line
                rows.append((study_id, path, label))
    except UnicodeDecodeError as e:
        line, what = utf8_failure(csv_path, e)
        raise ValueError(f"study list '{csv_path}' is not UTF-8 text ({'' if line is None else f'line {line}: '}"
                         f"{what}): expected a CSV file saved as UTF-8 (a spreadsheet's 'CSV UTF-8').") from None
    if len(outside) == 1:
        line, image, path = outside[0]
        raise ValueError(f"study list '{csv_path}' line {line}: image {image!r} resolves to '{path}', outside the "
                         f"dataset folder '{root}'; {inside_rule(images, 'study list')}")
    if outside:
        shown = ", ".join(f"line {line} {image!r}" for line, image, _ in outside[:_LABELS_SHOWN])
        more = f" and {len(outside) - _LABELS_SHOWN} more" if len(outside) > _LABELS_SHOWN else ""
        raise ValueError(f"study list '{csv_path}': {len(outside)} images lie outside the dataset folder '{root}': "
                         f"{shown}{more}; {inside_rule(images, 'study list')}")
    if len(bad_labels) == 1:
        raise ValueError(bad_labels[0][2])
    if bad_labels:
        shown = ", ".join(f"line {line} {value!r}" for line, value, _ in bad_labels[:_LABELS_SHOWN])
        more = f" and {len(bad_labels) - _LABELS_SHOWN} more" if len(bad_labels) > _LABELS_SHOWN else ""
        known = "" if label_names else " (no class names are known here)"
        raise ValueError(f"study list '{csv_path}': {len(bad_labels)} labels are not classes of the model: {shown}"
                         f"{more}. Expected {_valid_labels(label_names)}{known}; a blank label or -1 is an unknown "
                         "one. Correct these lines' labels, or leave them blank.")
    return [_study_at(study_id, path, label, headers) for study_id, path, label in rows]


def _is_datalist_csv(path: Path) -> bool:
    """
    Whether the CSV is a training datalist (``image,label[,group][,evidence],split``: ``image``, ``label`` and
    ``split`` columns, no ``id`` column, every ``split`` cell a datalist split name), not a study list: its rows of
    one split are the studies, as a datalist JSON's list is. A study list that happens to have a ``split`` column
    otherwise (an ``id`` column, other split values) stays a study list, every row a study, with a warning that the
    column is not read.
    """
    from monai_das.data.datalist import CSV_COLUMNS, CSV_SPLIT_VALUES, csv_header

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            # "ID" is the id column here too, as the study-list reader reads it
            columns = csv_header(reader.fieldnames, (*CSV_COLUMNS, "id"), str(path))
            if "split" not in columns:
                return False
            reader.fieldnames = columns
            values = {(row.get("split") or "").strip().lower() for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error, ValueError):  # the study-list reader says what is wrong with it
        return False
    if {"image", "label"} <= set(columns) and "id" not in columns and values <= set(CSV_SPLIT_VALUES):
        return True
    logger.warning(f"'{path}' has a 'split' column but is read as a study list (it has an 'id' column, no 'label' "
                   f"column, or split values other than {sorted(v for v in CSV_SPLIT_VALUES if v)}): every row is "
                   "a study; the 'split' column is not read.")
    return False


def _read_datalist(path: Path, dataset_dir, split: str, label_names: list[str] | None,
                   headers: dict[Path, Any] | None = None) -> list[StudySource]:
    """A MONAI datalist's ``split`` list (a JSON, or a CSV with a ``split`` column), read by
    :func:`monai_das.data.load_datalist`."""
    from monai_das.data.datalist import dataset_root, load_datalist

    root = dataset_root(path, dataset_dir)
    studies = []
    items = load_datalist(path, dataset_dir, split=split, label_names=label_names, missing_ok=True,
                          warn_missing=True)
    if _suffix(path) == ".csv":  # said, since the same file without the column would give every row
        logger.warning(f"'{path}' has a 'split' column: read as a datalist, its {len(items)} {split!r} row(s) are the "
                       f"studies (the other splits' rows are left out); a CSV without that column lists studies.")
    for item in items:
        label = int(item.get("label", -1))
        study_id = Path(os.path.relpath(item["image"], root)).as_posix()
        if not os.path.exists(item["image"]):  # one study that cannot be read, as in a CSV study list
            studies.append(StudySource(study_id, "invalid", Path(item["image"]), label=None if label < 0 else label,
                                       error=f"{item['source_line']}: image '{item['image']}' does not exist."))
            continue
        studies.append(_study_at(study_id, Path(item["image"]), None if label < 0 else label, headers))
    return studies


def discover_studies(
    source: str | os.PathLike,
    label_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    dataset_dir: str | os.PathLike | None = None,
    datalist_split: str = "test",
) -> list[StudySource]:
    """
    The studies of ``source``, sorted by id. Never raises for a bad study: it becomes a ``kind="invalid"``
    :class:`StudySource` carrying the problem, so one bad study never stops the others.

    Args:
        source: one of

            - a folder, searched recursively (hidden files and folders skipped): every volume file
              (:data:`VOLUME_EXTENSIONS`; an ``.mhd`` or ``.nhdr`` with its data file) and every video file is a
              study, every
              multi-frame DICOM file is a clip, and the single-frame DICOM files of each folder form one study per
              ``SeriesInstanceUID``. Ids are paths relative to the folder (``sub/b.nii.gz``; a series: its folder,
              ``<folder>#series_<SeriesNumber>`` when a folder holds several, the folder's own name for the loose
              files of ``source`` itself; a series of one image beside other studies' files in its folder, a still
              beside an exam's cines: its file). Sidecar files (:data:`SIDECAR_EXTENSIONS`, a ``DICOMDIR``) are
              skipped, and so are text files without an extension (a PACS export's ``VERSION``), files that are
              not DICOM in a folder of a DICOM series and of no volume or clip file (a ``thumb.jpg``; training's
              reader reads DICOM files only; a DICOM file without the ``DICM`` preamble, which it stacks, stays an
              invalid study), the non-image DICOM objects stored under an image series' ``SeriesInstanceUID`` (no
              slices, nor a patient of the series) and the DICOM series of no study image (reports, key objects,
              presentation states: :data:`NON_IMAGE_MODALITIES`; localizer images) beside an image series in their
              folder, or in a folder of their own beside an image series of their ``StudyInstanceUID`` (logged at
              INFO; without one they stay studies, whose loading says what they are); other files, empty folders
              and unreadable DICOM become invalid studies.
            - one study file (id: its name; a single-frame DICOM file is a one-slice series).
            - a CSV study list (``.csv``): an ``image`` column (paths relative to the CSV, a file or a folder
              holding one study; each inside ``dataset_dir``, default the CSV's folder) and optional ``label``
              (class index or name; blank or ``-1`` = unknown) and ``id`` (default: the ``image`` cell) columns.
              A CSV with a ``split`` column is a training datalist
              (``image,label[,group][,evidence],split``): read as the datalist JSON below, its ``datalist_split``
              rows only, with a warning saying so.
            - a MONAI datalist JSON (``.json``), read by :func:`monai_das.data.load_datalist` (its
              ``datalist_split`` list; ids are the image paths relative to ``dataset_dir``; an image that does not
              exist is an invalid study naming the datalist's item, as in a CSV study list).
        label_names, num_classes: the model's classes; study-list labels outside them are refused (either is
            enough).
        dataset_dir: root of a datalist's relative paths (default: the datalist's folder); for a datalist and a CSV
            study list alike, the folder every image must lie in (a CSV's relative paths stay relative to the CSV).
        datalist_split: which list of a datalist JSON (``"test"``, ``"validation"`` or ``"training"``).

    Raises:
        FileNotFoundError: ``source`` or ``dataset_dir`` does not exist. ValueError: a file that is no study and
        no study list, a folder without any file, a bad study-list line (naming the file and line, header = line 1;
        an image outside ``dataset_dir`` too, every such line named), or no study found.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"study source '{path}' does not exist (expected a folder of studies, a study file, "
                                "a CSV study list or a datalist JSON).")
    path = Path(os.path.abspath(path))
    names = _label_names(label_names, optional(num_classes))
    if path.is_dir():
        studies = _walk(path)
    elif _suffix(path) in (".csv", ".json"):
        headers: dict[Path, Any] = {}  # read once by the rows' discovery, then for the copies across them
        studies = (_read_csv(path, names, headers=headers, dataset_dir=optional(dataset_dir))
                   if _suffix(path) == ".csv" and not _is_datalist_csv(path)
                   else _read_datalist(path, optional(dataset_dir), datalist_split, names, headers))
        _warn_copies(studies, headers)  # across its rows, as across a folder's studies
    else:
        src = _classify_file(path.parent, path, {})
        if (src is not None and src.kind == "invalid" and path.is_file() and not is_dicom(path)
                and not _empty_file(path)):
            raise ValueError(f"input '{path}' is not supported: expected a folder of studies, a CSV study list (.csv), "
                             f"a datalist (.json) or one study file (a volume {VOLUME_EXTENSIONS}, a DICOM file or a "
                             f"video {VIDEO_EXTENSIONS}).")
        studies = [src or StudySource(path.name, "dicom_series", path, [path])]
    if not studies:
        raise ValueError(f"no studies found in '{path}'.")
    return sorted(studies, key=lambda s: s.study_id)


def _dataset_files(dataset: Any) -> list[tuple[str, int | None]] | None:
    """``(absolute image path, label or None)`` of each item of a dataset built on a datalist's file items (its
    ``data`` holds ``{"image": path, "label": ...}`` dicts); ``None`` for any other dataset (arrays, synthetic)."""
    data = getattr(dataset, "data", None)
    if not isinstance(data, Sequence) or not data or len(data) != len(dataset):
        return None
    if not all(isinstance(d, Mapping) and isinstance(d.get("image"), (str, os.PathLike)) for d in data):
        return None
    return [(os.path.abspath(str(d["image"])), item_label(d)) for d in data]


def item_label(item: Any) -> int | None:
    """The class index of a raw dataset item (``item["label"]``: an index or a one-element array), ``None`` when the
    item has none, an unknown one (negative) or one that is no number."""
    label = item.get("label") if isinstance(item, Mapping) else None
    try:
        label = int(torch.as_tensor(label).reshape(-1)[0]) if label is not None else None
    except (TypeError, ValueError, IndexError, RuntimeError):
        return None
    return None if label is None or label < 0 else label


def _dataset_studies(dataset: Sequence, id_prefix: str = "", dataset_tag: str | None = None,
                     dataset_dir: str | os.PathLike | None = None) -> list[dict]:
    """The items of :func:`list_studies` for ``dataset``, in the dataset's order."""
    files = _dataset_files(dataset)
    if files is not None:  # a datalist's split: its studies, read by the study layer as any study file
        root = (os.path.abspath(dataset_dir) if optional(dataset_dir) is not None
                else os.path.commonpath([os.path.dirname(p) for p, _ in files]))
        studies = [_study_at(Path(os.path.relpath(p, root)).as_posix(), Path(p), label) for p, label in files]
        if all(s.kind != "invalid" for s in studies):  # else a format only the dataset's LoadImage reads (.tif)
            return [s.item() for s in studies]
    tag = dataset_tag if dataset_tag is not None else id_prefix.rstrip("_") or "dataset"
    return [{"id": f"{id_prefix}{i:06d}", "index": i, "fingerprint": f"{tag}/{i}"} for i in range(len(dataset))]


def dataset_item_ids(dataset: Sequence, id_prefix: str = "", dataset_dir: str | os.PathLike | None = None) -> list[str]:
    """
    The id of each item of ``dataset``, in the dataset's order, as :func:`list_studies` names them (so the rows of
    an evaluation's ``predictions.csv`` and of bundle inference on the same split carry the same ids): a datalist
    file's path relative to ``dataset_dir`` (default: the images' common folder), else ``<id_prefix><index>``.
    """
    return [str(item["id"]) for item in _dataset_studies(dataset, id_prefix, None, dataset_dir)]


def list_studies(
    source: str | os.PathLike | None = None,
    dataset: Sequence | None = None,
    id_prefix: str = "",
    label_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    dataset_tag: str | None = None,
    dataset_dir: str | os.PathLike | None = None,
    datalist_split: str = "test",
) -> list[dict]:
    """
    The studies to run, as plain items sorted by id: ``{"id", "image": absolute path, "fingerprint", "study":
    StudySource}`` (plus ``"label"`` when a study list gives one) for :func:`discover_studies` of ``source``, or
    ``{"id": "<id_prefix><index>", "index", "fingerprint": "<dataset_tag>/<index>"}`` for every item of ``dataset``
    when ``source`` is ``None`` — but a dataset of a datalist's files (its ``data`` items hold ``"image"`` paths)
    gives its studies as files, with ids relative to ``dataset_dir`` (default: the images' common folder), so
    predictions name each study and its ``source_frames`` (unless one of them is a file the study layer does not read,
    e.g. a ``.tif`` volume that the dataset's ``LoadImage`` reads: then the dataset's items, as before).
    :func:`monai_das.engines.select_studies` compares ``image`` and ``fingerprint`` to decide whether an earlier
    prediction still holds; :class:`monai_das.engines.StudyDataset` loads the items.

    Args:
        source: see :func:`discover_studies`; ``None``: use ``dataset``.
        dataset: a ready-made dataset (e.g. a MedMNIST test split), used when ``source`` is ``None``.
        id_prefix: prefix of the ids of dataset items.
        label_names, num_classes, dataset_dir, datalist_split: see :func:`discover_studies`.
        dataset_tag: names the dataset items' content in their fingerprint (default ``id_prefix``).
    """
    if optional(source) is None:
        if dataset is None:
            raise ValueError("list_studies needs a source (folder, study file, CSV or datalist) or a dataset.")
        items = _dataset_studies(dataset, id_prefix, dataset_tag, dataset_dir)
        return sorted(items, key=lambda s: s["id"]) if items and "study" in items[0] else items
    studies = discover_studies(source, label_names=label_names, num_classes=num_classes, dataset_dir=dataset_dir,
                               datalist_split=datalist_split)
    return [s.item() for s in studies]


# ---------------------------------------------------------------------------------------------------- loading
def itk_series_files(folder: str | os.PathLike) -> list[str]:
    """
    The files of the DICOM series in ``folder`` in the order MONAI's ``ITKReader`` stacks them (the reader training's
    ``LoadImage`` uses for a folder): GDCM's lookup with the reader's own settings, first series. ``[]`` when there
    is none.
    """
    import itk

    lookup = itk.GDCMSeriesFileNames.New()
    lookup.SetUseSeriesDetails(True)
    lookup.AddSeriesRestriction("0008|0021")
    lookup.SetDirectory(str(folder))
    uids = lookup.GetSeriesUIDs()
    return [str(p) for p in lookup.GetFileNames(uids[0])] if uids else []


def series_slice_ranks(folder: str | os.PathLike, affine: Any, num_slices: int) -> list[int]:
    """
    For each slice ``k`` along the third voxel axis of the DICOM series folder ``folder`` as a reader read it
    (``affine``: that read's voxel-to-world matrix, RAS as MONAI's readers give it; ``num_slices`` slices), the rank in
    ``InstanceNumber`` order of the file lying there: the numbering of a datalist's ``evidence`` and of the reports'
    source indices for a series (:class:`LoadStudy`), whichever reader (ITK by position, pydicom by number) read it.
    Found from each image file's ``ImagePositionPatient`` through the inverse affine (the files' order along the
    voxel axis), so it holds for any reader.

    Raises:
        ValueError: naming the folder, when its image files do not lie one on each of the ``num_slices`` slices (a
        file without position or number, a series the reader split, ...).
    """
    files = sorted(f for f in Path(folder).iterdir() if f.is_file() and not is_hidden(f.name) and is_dicom(f))
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    numbers, depth = [], []
    for f in files:
        h = read_dicom_header(f, ("InstanceNumber", "ImagePositionPatient", "Rows", "Columns", "Modality"))
        if _holds_no_image(h):
            continue
        position, number = _numbers(h.get("ImagePositionPatient"), 3), h.get("InstanceNumber")
        if position is None or number is None or str(number).strip() == "":
            raise ValueError(f"DICOM series '{folder}': file '{f}' has no InstanceNumber or ImagePositionPatient, so "
                             "its evidence slices cannot be numbered.")
        x, y, z = position
        depth.append(float((inv @ np.array([-x, -y, z, 1.0]))[2]))  # DICOM's LPS to the affine's RAS
        numbers.append(int(number))
    if len(depth) != num_slices or len(set(np.round(depth, 3).tolist())) != num_slices:
        raise ValueError(f"DICOM series '{folder}': its {len(depth)} image files do not lie one on each of the "
                         f"{num_slices} slices read, so its evidence slices cannot be numbered (InstanceNumber order).")
    # slice k of the read volume is the file k-th along the voxel axis (also across a gap, where the affine's uniform
    # spacing puts the later files off the integer grid)
    k = np.empty(num_slices, dtype=int)
    k[np.argsort(depth, kind="stable")] = np.arange(num_slices)
    order = np.argsort(numbers, kind="stable")
    ranks = [0] * num_slices
    for rank, i in enumerate(order):
        ranks[int(k[i])] = rank
    return ranks


#: how far (× the median slice spacing) two neighbouring slices of a series may lie apart before it is called a gap
SLICE_GAP_FACTOR = 1.5


def _numbers(value: Any, count: int) -> list[float] | None:
    """A DICOM multi-valued number element (``PixelSpacing``, ``ImagePositionPatient``, ...) as ``count`` floats;
    ``None`` when it is absent or malformed (one value where two are due, text that is no number)."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if len(out) == count else None


def check_no_localizers(files: Sequence[Path], headers: Sequence, where: str) -> None:
    """Refuse a series whose images include localizer (scout) images (``ImageType`` ``LOCALIZER``) stored under its
    ``SeriesInstanceUID``, naming them (it said "slices of different planes (a localizer?)" or "of different sizes"),
    or that is one localizer image alone (not "a lower min_frames accepts it": a planning view is no volume)."""
    scouts = [Path(f).name for f, h in zip(files, headers) if _is_localizer(h)]
    if scouts and len(scouts) == len(headers) == 1:
        raise ValueError(f"{where}: '{scouts[0]}' is a localizer (scout) image (ImageType LOCALIZER): a planning "
                         "view, no volume to classify.")
    if scouts and len(scouts) < len(headers):
        named = ", ".join(scouts[:3]) + (", ..." if len(scouts) > 3 else "")
        uids = {str(h.get("SeriesInstanceUID", "")) for h in headers if not _is_localizer(h)}
        own = all(str(h.get("SeriesInstanceUID", "")) not in uids for h in headers if _is_localizer(h))
        # a scout of its own series beside the stack was said to be "stored under the series' SeriesInstanceUID"
        # (trial T58b); inference skips it, a training folder is read as one series
        where_stored = ("are a series of their own beside the series" if own else
                        "are stored under the series' SeriesInstanceUID")
        raise ValueError(f"{where}: {len(scouts)} localizer (scout) image(s) (ImageType LOCALIZER) {where_stored} "
                         f"({named}): move them out of the series folder (a reader would take them for slices).")


def check_series_stack(files: Sequence[Path], headers: Sequence, where: str, warnings: list[str] | None = None
                       ) -> tuple[list, bool]:
    """
    The slice headers of a DICOM series in ``InstanceNumber`` order (the order MONAI's ``PydicomReader`` stacks
    them in) and whether the series must be read by position, after checking that they make one stack: every slice
    numbered, no number twice (two echoes or phases, or re-sent slices, under one series UID), every slice placed
    (``ImageOrientationPatient`` and ``ImagePositionPatient`` on all slices or on none), one orientation (no
    localizer planes), one pixel spacing, and no position twice along the slice normal. Otherwise the reader would
    interleave or drop slices, and a study would be trained on or classified from a scrambled volume without any
    error. The second value is ``True`` when the positions do not strictly rise or fall in number order (numbers that
    do not follow the anatomy): such a series is read by position (ITK), as training reads a folder.

    A gap (two neighbouring slices more than :data:`SLICE_GAP_FACTOR` × the median spacing apart: a missing slice?)
    and a gantry tilt (slices shifted along the plane from one to the next: the stack is sheared) are warned about,
    naming the series, the files and the size; the series is still read as a plain stack.

    The same check runs when a training datalist is read (:func:`monai_das.data.check_study_shapes`) and when
    :class:`LoadStudy` reads a study, so training and inference accept the same series.

    Args:
        files: the series' files, in the order of ``headers``.
        headers: their DICOM headers (at least ``InstanceNumber``, ``ImageOrientationPatient``,
            ``ImagePositionPatient``, ``PixelSpacing``).
        where: how to name the series in messages.
        warnings: a list the warnings are appended to (they are logged either way).

    Raises:
        ValueError: naming the file(s) and the problem.
    """
    if len(headers) < 2:
        return list(headers), False
    check_no_localizers(files, headers, where)
    numbers = {}
    for f, h in zip(files, headers):
        value = h.get("InstanceNumber")
        if value is None or str(value).strip() == "":
            raise ValueError(f"{where}: DICOM file '{f}' has no InstanceNumber, so the order of the "
                             f"{len(headers)} slices of its series is unknown.")
        n = int(value)
        if n in numbers:
            raise ValueError(f"{where}: DICOM files '{numbers[n][0]}' and '{f}' have the same InstanceNumber {n}: "
                             "more than one stack in one series (echoes, phases, re-sent slices?). Give each "
                             "stack a series of its own.")
        numbers[n] = (f, h)
    ordered = [numbers[n] for n in sorted(numbers)]
    by_number = [h for _, h in ordered]
    spacings = [_numbers(h.get("PixelSpacing"), 2) for _, h in ordered]
    if all(sp is not None for sp in spacings):
        sp = np.asarray(spacings)
        off = np.flatnonzero(np.abs(sp - sp[0]).max(axis=1) > 1e-4 * np.abs(sp[0]).max())
        if off.size:
            i = int(off[0])
            raise ValueError(f"{where}: DICOM file '{ordered[i][0]}' has PixelSpacing {sp[i].round(4).tolist()}, "
                             f"'{ordered[0][0]}' {sp[0].round(4).tolist()}: slices of different pixel sizes in one "
                             "series (a reformat or another acquisition?). Give each stack a series of its own.")
    orientations = [_numbers(h.get("ImageOrientationPatient"), 6) for _, h in ordered]
    positions = [_numbers(h.get("ImagePositionPatient"), 3) for _, h in ordered]
    for keyword, values in (("ImageOrientationPatient", orientations), ("ImagePositionPatient", positions)):
        # some slices placed, some not: the slice cannot be placed in the stack nor checked (position twice, gap),
        # ITK warned "Non uniform sampling" on stderr only, and the series passed (trial T72c)
        missing = [i for i, v in enumerate(values) if v is None]
        if 0 < len(missing) < len(values):
            i = missing[0]
            others = f", nor have {len(missing) - 1} other file(s)" if len(missing) > 1 else ""
            raise ValueError(f"{where}: DICOM file '{ordered[i][0]}' has no {keyword} (absent or malformed){others}, "
                             f"where the series' other {len(values) - len(missing)} slice(s) have one: it cannot be "
                             "placed in the stack (a damaged or edited file?). Repair or remove it.")
    if any(o is None for o in orientations):  # none has one: nothing to compare (the reader makes no affine)
        return by_number, False
    cosines = np.asarray(orientations)
    off = np.flatnonzero(np.abs(cosines - cosines[0]).max(axis=1) > 1e-3)
    if off.size:
        i = int(off[0])
        raise ValueError(f"{where}: DICOM file '{ordered[i][0]}' has ImageOrientationPatient "
                         f"{cosines[i].round(4).tolist()}, '{ordered[0][0]}' {cosines[0].round(4).tolist()}: "
                         "slices of different planes (a localizer?) in one series.")
    if any(p is None for p in positions):
        return by_number, False
    normal = np.cross(cosines[0][:3], cosines[0][3:])
    points = np.asarray(positions)
    depth = points @ normal
    rank = np.argsort(depth, kind="stable")
    same = np.flatnonzero(np.diff(depth[rank]) <= 1e-3)  # two slices within 1 µm: one place, two images
    if same.size:
        i, j = int(rank[same[0]]), int(rank[same[0] + 1])
        raise ValueError(f"{where}: DICOM files '{ordered[i][0]}' and '{ordered[j][0]}' lie at the same position "
                         f"along the slice normal ({depth[i]:.3f} and {depth[j]:.3f} mm): more than one stack in "
                         "one series (echoes, phases, re-sent slices?). Give each stack a series of its own.")
    said: list[str] = []
    gaps = np.diff(depth[rank])
    typical = float(np.median(gaps))
    wide = np.flatnonzero(gaps > SLICE_GAP_FACTOR * typical)
    if wide.size:
        i, j = int(rank[wide[0]]), int(rank[wide[0] + 1])
        said.append(f"{where}: a gap of {gaps[wide[0]]:.3g} mm between DICOM files '{ordered[i][0]}' and "
                    f"'{ordered[j][0]}' ({wide.size} such gap(s); the median slice spacing is {typical:.3g} mm): "
                    "missing slices? The series is read as a plain stack, the gap closed.")
    # net movement within the slice plane from the first slice to the last, against the depth covered (per-step
    # shifts would measure the rounding of the stored positions on thin slices)
    shift = points[rank[-1]] - points[rank[0]]
    along = float(np.linalg.norm(shift - (shift @ normal) * normal))
    tilt = float(np.degrees(np.arctan2(along, depth[rank[-1]] - depth[rank[0]])))
    if tilt > 1.0:
        said.append(f"{where}: the slices shift {along / (len(rank) - 1):.3g} mm along their plane from one to the "
                    f"next (gantry tilt of about {tilt:.1f} degrees): the series is read as a plain stack, sheared.")
    for message in said:
        logger.warning(message)
    if warnings is not None:
        warnings.extend(said)
    steps = np.diff(depth)
    if (steps * np.sign(steps[0]) > 0).all():  # numbers follow the positions, one way or the other
        return by_number, False
    logger.info("%s: InstanceNumbers do not follow the slice positions; reading the series by position (ITK)", where)
    return by_number, True


class LoadStudy(Transform):
    """
    Read one study and turn it into the network input described by a recipe (see
    :func:`monai_das.transforms.check_recipe`), recording for each of the network's ``T`` frames its slice/frame
    number in the file.

    - Volumes (volume files, DICOM series read with MONAI's ``PydicomReader`` — exactly the series' files, in
      ``InstanceNumber`` order; with ITK, by position, as training reads a folder, when the numbers do not follow
      the positions) go through :func:`monai_das.transforms.recipe_transforms` without its loading step
      (reorientation, spacing, intensity scaling, resize). A ``video`` recipe takes clips only, as its training
      does: a single-frame DICOM image is a still (a clip of one frame, see ``min_frames``), a volume or a series of
      several images is refused.
    - Clips (video files, multi-frame DICOM) are read by :class:`monai_das.transforms.LoadVideo` (uniform temporal
      resampling to ``T``, frame resize, grayscale or RGB). A ``volume`` recipe refuses a video file, as its training
      does (:data:`monai_das.data.datalist.VOLUMES_ONLY`), and reads a multi-frame DICOM as a volume whose slices
      along ``slice_axis`` are the frames; a multi-frame DICOM of a :data:`VOLUME_MODALITIES` modality
      (Enhanced CT/MR) is a volume: loaded as the training recipe loads it (``LoadImage``'s reader, its HU and
      geometry), not min-max scaled as a clip.

    ``source_indices``: volumes: through the image affines, the index along the file's own voxel axis (before
    reorientation) that the network's frame axis runs along (``info["source_axis"]``; for a DICOM series axis 2 is
    the ``InstanceNumber`` order, or the position order of a series numbered out of it, ``info["instance_numbers"]``);
    clips: the frame numbers LoadVideo kept; ``-1`` for a padding slice (``resize="pad"``: zeros around the
    study), which :func:`kept_source_indices` reports as ``"padding"``. A study with fewer than the recipe's
    ``min_frames`` slices (along any axis; a 2D image counts as one) or frames is refused: stretching it to ``T``
    would give an input that is constant along the frame axis and a prediction that looks valid.

    Args:
        recipe: the preprocessing recipe (a plain dict).
        in_channels: channels the network takes, for ``volume`` recipes (``None``: those of the file); RGB(A) clips and
            colour DICOM become luminance for ``1``; other channels (a 4D NIfTI's, a ``C×D×H×W`` array's) must
            match. A ``video`` recipe's channels come from its ``grayscale``.
        allowed_modalities: DICOM modalities accepted (e.g. ``("CT", "MR")``); ``None`` accepts every image
            modality. Non-image modalities (:data:`NON_IMAGE_MODALITIES`) are always refused; non-DICOM files have no
            modality and are not filtered.

    ``__call__(study)`` (a :class:`StudySource` or the path of a study file / of a folder holding exactly one study)
    returns the input as a float32 ``MetaTensor`` with ``meta["source_indices"]`` (a ``T`` long tensor),
    ``meta["study_id"]`` and ``meta["filename_or_obj"]``; :meth:`load` returns the whole :class:`Study`. Both raise
    ``FileNotFoundError``, ``ValueError`` (invalid, empty, wrong modality, too few slices/frames, channels) or
    ``RuntimeError`` (unreadable) with a message naming the study and its path.
    """

    def __init__(
        self,
        recipe: Mapping,
        in_channels: int | None = None,
        allowed_modalities: Sequence[str] | None = None,
    ) -> None:
        from monai_das.transforms.preprocessing import check_recipe

        self.recipe = check_recipe(recipe)
        self.layout = self.recipe["layout"]
        in_channels = optional(in_channels)
        if in_channels is not None and int(in_channels) < 1:
            raise ValueError(f"in_channels must be >= 1 or None, got {in_channels}.")
        if self.layout == "video":
            channels = 1 if self.recipe["grayscale"] else 3
            if in_channels is not None and int(in_channels) != channels:
                raise ValueError(f"in_channels={in_channels} disagrees with the video recipe's grayscale="
                                 f"{self.recipe['grayscale']} ({channels} channel(s)).")
            in_channels = channels
        self.in_channels = None if in_channels is None else int(in_channels)
        modalities = optional(allowed_modalities)
        self.allowed_modalities = None if modalities is None else {str(m).upper() for m in modalities}
        self.min_frames = self.recipe["min_frames"]
        self._default_loader: Any = None  # one LoadImage with MONAI's reader choice (made once: it builds every reader)
        self._volume_xform: Any = None  # the recipe's transforms after loading, built once (the recipe is fixed)

    def __getstate__(self) -> dict:  # data-loader workers started by spawn make their own loader
        return {**self.__dict__, "_default_loader": None}

    @property
    def num_frames(self) -> int:
        """``T``: the frames of the network input."""
        return int(self.recipe["num_frames"])

    def __call__(self, study: StudySource | str | os.PathLike) -> MetaTensor:
        return self.load(study).image

    # ------------------------------------------------------------------ public
    @staticmethod
    def source(study: StudySource | str | os.PathLike) -> StudySource:
        """``study`` itself, or the one study at a path (an invalid source when the path holds none or several)."""
        if isinstance(study, StudySource):
            return study
        if not isinstance(study, (str, os.PathLike)):
            raise ValueError(f"LoadStudy expects a StudySource or a path, got {type(study).__name__}.")
        path = Path(study).expanduser()
        return _study_at(path.name, Path(os.path.abspath(path)))

    def load(self, study: StudySource | str | os.PathLike) -> Study:
        """Read and preprocess one study (see the class docstring for the errors raised)."""
        source = self.source(study)
        if not source.path.exists():
            raise FileNotFoundError(f"study '{source.study_id}': '{source.path}' does not exist.")
        if source.error is not None or source.kind == "invalid":
            raise ValueError(source.error or f"study '{source.study_id}' is invalid.")
        if self.layout == "video" and source.kind != "video":
            return self._load_still(source)
        if self.layout == "volume" and source.kind == "video" and not is_dicom(source.path):
            from monai_das.data.datalist import VOLUMES_ONLY

            raise ValueError(f"{self._where(source)} is a video file, not a volume: {VOLUMES_ONLY.split(';')[0]}, as "
                             "it was trained (its training refuses video files too); classify it with a video model.")
        if source.kind == "dicom_series":
            return self._load_dicom_series(source)
        if source.kind == "volume":
            return self._load_volume(source, source.path, reader=self._volume_reader(source), info={"modality": None})
        return self._load_clip(source)

    # ------------------------------------------------------------------ checks
    def _where(self, source: StudySource) -> str:
        return f"study '{source.study_id}' ({source.path})"

    def _check_memory(self, source: StudySource, declared: tuple[list[int], int, list[float]]) -> None:
        """:func:`check_declared_memory` of a DICOM volume's headers with the recipe's ``pixdim``, as the
        ``RuntimeError`` a study that cannot be read raises (a clip is priced by its reader: :func:`clip_frame_limit`).
        """
        try:
            check_declared_memory(self._where(source), declared, self.recipe.get("pixdim"))
        except MemoryError as e:
            raise RuntimeError(str(e)) from None

    def _check_pixel_data(self, source: StudySource, headers: Sequence) -> None:
        """:func:`~monai_das.data.video_io.check_dicom_pixel_data` of each of a DICOM volume's files (``headers``:
        theirs, as :meth:`_dicom_headers` read them), before a reader reads one (ITK fills the frames a header
        declares beyond the data with zeros; security review T69b)."""
        for f, h in zip(source.files or [source.path], headers, strict=True):
            try:
                check_dicom_pixel_data(f, h)
            except RuntimeError as e:
                raise RuntimeError(f"study '{source.study_id}': {e}") from None

    def _check_modality(self, source: StudySource, modality: str | None) -> None:
        mod = (modality or "").upper()
        if mod in NON_IMAGE_MODALITIES:
            raise ValueError(f"{self._where(source)}: modality {mod} holds no image to classify.")
        if self.allowed_modalities is not None and mod not in self.allowed_modalities:
            raise ValueError(f"{self._where(source)}: modality {mod or 'unknown'} is not one of the accepted "
                             f"modalities {sorted(self.allowed_modalities)}.")

    def _too_few(self, source: StudySource, what: str, count: int = 1) -> ValueError:
        """``what``: how many frames or slices the study has (``count``); one is a still image / a single slice."""
        if count > 1:
            why = "too short"
        else:
            why = "a still image is not a clip" if "frame" in what else "a single slice is not a volume"
        return ValueError(f"{self._where(source)} {what}, fewer than min_frames={self.min_frames}: {why} (a lower "
                          "min_frames accepts it: --min_frames in a bundle, --min-frames in the Deploy app).")

    def _dicom_headers(self, source: StudySource) -> list:
        """The headers of a DICOM study's files, with the length of their pixel data (:meth:`_check_pixel_data`)."""
        headers = []
        for f in source.files or [source.path]:
            try:
                headers.append(read_dicom_header(f, pixel_length=True))
            except Exception as e:
                raise RuntimeError(f"study '{source.study_id}': cannot read DICOM file '{f}': {e}") from e
        return headers

    def _fit_channels(self, source: StudySource, img: torch.Tensor, channel_dim: int, colour: bool = True
                      ) -> torch.Tensor:
        """``img`` with the network's channel count: RGB(A) to luminance for a 1-channel network (only when the
        channels are ``colour``: a 4D volume's 3 or 4 timepoints are not colours), grey repeated for an RGB one."""
        c, want = int(img.shape[channel_dim]), self.in_channels
        if want is None or c == want:
            return img
        if want == 1 and c in (3, 4) and colour:  # RGB(A) → luminance (ITU-R 601)
            w = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype, device=img.device)
            shape = [1] * img.ndim
            shape[channel_dim] = 3
            return (img.narrow(channel_dim, 0, 3) * w.reshape(shape)).sum(dim=channel_dim, keepdim=True)
        if want == 3 and c == 1:  # grayscale study, RGB network
            return torch.cat([img] * 3, dim=channel_dim)
        what = "" if colour else f" ({FOURTH_AXIS_NOTE})"
        raise ValueError(f"{self._where(source)} has {c} channel(s){what}; the network expects {want}.")

    # ------------------------------------------------------------------ volumes
    @staticmethod
    def _volume_reader(source: StudySource):
        """The reader of a single-file volume: ``.npy`` with or without a channel axis (as in training's recipe),
        else ``None`` (``LoadImage`` chooses by suffix)."""
        from monai_das.data.readers import VolumeNumpyReader

        return VolumeNumpyReader() if _suffix(source.path) == ".npy" else None

    def _load_dicom_series(self, source: StudySource) -> Study:
        if not source.files:
            raise ValueError(f"{self._where(source)} has no DICOM files.")
        headers = self._dicom_headers(source)
        modality = modality_of(headers)
        self._check_modality(source, modality)
        # a file without an image (no Rows/Columns, or a report's modality beside the images' one)
        no_image = [(f, h) for f, h in zip(source.files, headers) if _holds_no_image(h)]
        if no_image:
            f, h = no_image[0]
            raise ValueError(f"study '{source.study_id}': DICOM file '{f}' has no image (modality "
                             f"{h.get('Modality', '') or 'unknown'}, Rows/Columns "
                             f"{'given' if 'Rows' in h and 'Columns' in h else 'absent'}).")
        check_no_localizers(source.files or [source.path], headers, f"study '{source.study_id}'")
        shapes = {(int(h.Rows), int(h.Columns)) for h in headers}
        if len(shapes) > 1:
            named = sizes_named(((int(h.Rows), int(h.Columns)), f) for f, h in zip(source.files, headers))
            raise ValueError(f"study '{source.study_id}': slices of different sizes (rows × columns) in one series: "
                             f"{named}; a localizer or another reconstruction stored with the series' UID? Remove the "
                             "files that do not belong to it.")
        if len(headers) < self.min_frames:
            if len(headers) == 1 and _is_secondary_capture(headers[0]):
                raise ValueError(f"{self._where(source)}: '{source.files[0].name}' is a secondary capture image "
                                 "(SOP class Secondary Capture: a screen save such as a dose screen, a scanned "
                                 "document): one picture, no volume to classify.")
            raise self._too_few(source, f"has {len(headers)} slice(s)", len(headers))
        file_headers = headers  # in the order of source.files
        said: list[str] = []
        headers, by_position = self._slice_order(source, headers, said)
        if any(str(h.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1" for h in headers):
            # not inverted by the series readers (the clip reader inverts it); said, not silently other (trial T63c)
            said.append(f"study '{source.study_id}': its images are MONOCHROME1 (stored inverted: the lowest value "
                        "is white); a series is read as stored, not inverted, so a model that learnt from MONOCHROME2 "
                        "images sees this one with inverted intensities. Convert it to MONOCHROME2 if so.")
            logger.warning(said[-1])
        from monai.data import PydicomReader

        info = {
            **({"warnings": said} if said else {}),
            "modality": modality,
            "study_instance_uid": str(headers[0].get("StudyInstanceUID", "")) or None,
            "series_instance_uid": str(headers[0].get("SeriesInstanceUID", "")) or None,
            "instance_numbers": [int(h.get("InstanceNumber", 0) or 0) for h in headers],
        }
        colour = int(headers[0].get("SamplesPerPixel", 1) or 1) > 1
        self._check_memory(source, declared_dicom(file_headers))
        self._check_pixel_data(source, file_headers)
        if by_position or _geometry_lost_by_pydicom_reader(file_headers):  # ITK reads them as training does
            study = self._load_series_by_position(source, file_headers, info, colour)
        elif not source.path.is_dir():
            study = self._load_volume(source, source.files[0], reader=PydicomReader(), info=info, colour=colour)
        elif not any(c in str(source.path) for c in "*?["):  # read exactly this series' files, whatever else is there
            names = "|".join(re.escape(os.path.join(str(source.path), f.name)) for f in source.files)
            reader = PydicomReader(fname_regex=f"^(?:{names})$")
            study = self._load_volume(source, source.path, reader=reader, info=info, colour=colour)
        else:  # MONAI globs '<folder>/*' unescaped: a folder named 'CT [2mm]' would match nothing; read links to them
            with _series_links(source.files) as (tmp, _):
                study = self._load_volume(source, Path(tmp), reader=PydicomReader(), info=info, colour=colour)
        study.dicom_headers = _without_pixel_data(headers)
        return study

    def _load_series_by_position(self, source: StudySource, file_headers: list, info: dict, colour: bool) -> Study:
        """
        A series whose InstanceNumbers do not follow its slice positions (e.g. numbered in interleaved acquisition
        order), read as the training recipe reads a DICOM folder: with ITK, which stacks the slices by position.
        MONAI's ``PydicomReader`` would stack them by number, a scrambled volume. The series' files are linked into
        a temporary folder (only them, whatever else the study folder holds). As for every series, the source indices
        count slices in ``InstanceNumber`` order (``info["instance_numbers"]``, sorted; ``file_headers``: the
        headers in the order of ``source.files``): ITK's slice ``i`` is renumbered to its rank by number.
        """
        from monai.data import ITKReader

        with _series_links(source.files) as (tmp, links):
            order = [os.path.basename(p) for p in itk_series_files(tmp)]
            if len(order) != len(links):
                left = [f for link, f in zip(links, source.files) if link not in order]
                raise RuntimeError(f"{self._where(source)}: ITK reads {len(order)} of its {len(links)} slices "
                                   f"as one series, without '{left[0] if left else '?'}' (it splits a series "
                                   "whose slices differ in SeriesDate or other details): convert the series to NIfTI "
                                   "(e.g. dcm2niix) and give that file.")
            try:
                study = self._load_volume(source, Path(tmp), reader=ITKReader(), info=info, colour=colour)
            except RuntimeError as e:  # it names the temporary folder: name the series' folder
                raise RuntimeError(str(e).replace(tmp, f"<links to the {len(order)} files of '{source.path}'>")) from e
        if study.info["source_axis"] != 2:  # the frames run along a pixel axis: its indices are ITK's as Pydicom's
            return study
        rank = {n: r for r, n in enumerate(info["instance_numbers"])}  # sorted numbers → rank
        number = {link: int(h.InstanceNumber) for link, h in zip(links, file_headers)}  # checked by _slice_order
        itk_rank = [rank[number[link]] for link in order]
        src = [itk_rank[i] if i >= 0 else i for i in study.source_indices]
        return self._study(source, study.image.as_tensor(), dict(study.image.meta), src, study.info)

    def _slice_order(self, source: StudySource, headers: list, warnings: list[str] | None = None
                     ) -> tuple[list, bool]:
        """:func:`check_series_stack` of the series' headers (in the order of its files)."""
        return check_series_stack(source.files or [source.path], headers, f"study '{source.study_id}'", warnings)

    def _load_volume(self, source: StudySource, path: Path, reader, info: dict, colour: bool = False) -> Study:
        """
        One volume study. ``colour``: its channels are colours (a DICOM series of ``SamplesPerPixel`` 3), converted to
        grey for a 1-channel network; the channels of other files (a 4D NIfTI's timepoints, a ``C×D×H×W`` array) are
        refused when they are not the network's count, as training refuses them.
        """
        from monai.transforms import LoadImage

        from monai_das.transforms.preprocessing import (
            append_axis, intensity_warning, recipe_volume_kwargs, volume_preprocessing
        )

        if reader is None:  # a NIfTI/ITK file: MONAI chooses the reader, as the training recipe's LoadImaged does
            if self._default_loader is None:
                self._default_loader = LoadImage(image_only=True, ensure_channel_first=True)
            loader = self._default_loader
        else:  # a DICOM series or a .npy: a reader made for this study
            loader = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)
        try:  # before a header that declares gigabytes is decompressed in full (DICOM: checked by the callers)
            check_study_memory(path, pixdim=self.recipe.get("pixdim"))  # .npy: an object array or a cut copy named
        except ValueError as e:
            raise ValueError(f"study '{source.study_id}': {e}") from None
        except MemoryError as e:
            raise RuntimeError(f"study '{source.study_id}': {e}") from None
        try:
            img = loader(str(path))
        except Exception as e:
            bad = _undecodable_dicom(source.files) if source.kind == "dicom_series" else None
            where = f" (its file '{bad[0]}' cannot be decoded: {bad[1]})" if bad else ""
            raise RuntimeError(f"study '{source.study_id}': cannot read '{path}'{where}: {error_text(e)}") from e
        if not isinstance(img, MetaTensor):
            img = MetaTensor(img)
        original_shape = [int(s) for s in img.shape]
        if img.ndim == 3:  # a 2D image: one slice
            img = append_axis(img)
        if img.ndim != 4:
            raise ValueError(f"{self._where(source)}: expected a 2D or 3D image, got shape {original_shape} "
                             "(channel first).")
        if img.numel() == 0 or min(img.shape[1:]) < 1:
            raise ValueError(f"{self._where(source)} is empty (shape {original_shape}).")
        spatial = [int(s) for s in img.shape[1:]]
        if sorted(spatial)[-2] < 2:
            raise ValueError(f"{self._where(source)}: image of shape {original_shape} is not a 2D/3D image (at most "
                             "one axis longer than 1).")
        img = self._fit_channels(source, img, channel_dim=0, colour=colour)
        if not torch.isfinite(img.as_tensor()).all():
            raise ValueError(f"{self._where(source)} contains NaN or infinite values (or values beyond float32's "
                             "range, ±3.4e38, which become infinite when read).")
        if len(original_shape) == 3 and self.min_frames > 1:
            raise self._too_few(source, f"is a 2D image (channel-first shape {tuple(original_shape)}): it has 1 slice")
        thin = [a for a, s in enumerate(spatial) if s < self.min_frames]
        if thin:
            raise self._too_few(source, f"has {spatial[thin[0]]} slice(s) along spatial axis {thin[0]} (channel-first "
                                        f"shape {tuple(original_shape)})", spatial[thin[0]])
        original_affine = torch.as_tensor(img.affine, dtype=torch.float64).clone()
        r = self.recipe
        if self.layout == "volume":
            size, frame_axis = r["spatial_size"], r["slice_axis"]
        else:
            size, frame_axis = [r["num_frames"], *r["spatial_size"]], 0
        try:
            if self._volume_xform is None:  # min_slices=1: the slice count was checked above against min_frames
                self._volume_xform = volume_preprocessing(load=False, spatial_size=size, min_slices=1,
                                                          check_window=False, **recipe_volume_kwargs(r))
            out = self._volume_xform({"image": img})["image"]
        except Exception as e:
            raise RuntimeError(f"{self._where(source)}: preprocessing failed: {error_text(e)}") from e
        from monai_das.transforms.temporal import NO_SOURCE, affine_source_indices

        # resize "pad": the zeros around the study are no slice of it (-1, "padding" in the reports)
        src_idx, src_axis = affine_source_indices(original_affine, torch.as_tensor(out.affine, dtype=torch.float64),
                                                  [int(s) for s in out.shape[1:]], spatial, frame_axis,
                                                  outside=NO_SOURCE if r["resize"] == "pad" else None)
        image = out.as_tensor().float()
        meta = dict(out.meta)
        if self.layout == "video":
            image, meta = image.movedim(1, 0), {}  # C×T×H×W → T×C×H×W (channels were fitted before)
        info = {**info, "original_shape": original_shape, "num_source_frames": int(spatial[src_axis]),
                "source_axis": int(src_axis)}
        unoriented = (nifti_without_orientation(path) if self.layout == "volume"
                      and (self.recipe.get("axcodes") or self.recipe.get("pixdim")) else None)  # only when used
        # a study of another modality than a HU window's: said as such, not also as values above the window
        modal = _modality_warning(info.get("modality"), r, str(path))
        flattened = intensity_warning(img, None if modal else r.get("intensity_range"), str(path))
        # only a format that records its voxels' size (a .npy array or an image is read as 1 mm voxels)
        physical = source.kind == "dicom_series" or is_dicom(path) or str(path).lower().endswith(GEOMETRY_SUFFIXES)
        scale = (geometry_warning(*oriented_geometry(spatial, original_affine.numpy(), r.get("axcodes")),
                                  r.get("geometry"), str(path), r.get("axcodes"))
                 if self.layout == "volume" and len(spatial) == 3 and physical else None)
        for message in (unoriented, modal, flattened, scale):
            if message:
                logger.warning(message)
                info = {**info, "warnings": [*info.get("warnings", []), message]}
        return self._study(source, image, meta, src_idx, info)

    # ------------------------------------------------------------------ clips
    def _load_still(self, source: StudySource) -> Study:
        """
        A video model's input from what is no clip file: one single-frame DICOM image is a still, read as a clip of
        one frame (refused below ``min_frames``, else repeated to ``T`` frames, as a one-frame GIF); a series of
        several images or a volume file is refused, as training refuses it (its frames would be whichever axis comes
        first, e.g. the rows of the images).
        """
        if source.kind == "dicom_series" and len(source.files) == 1:
            return self._load_clip(replace(source, path=source.files[0]))
        what = (f"a series of {len(source.files)} single-frame DICOM images" if source.kind == "dicom_series"
                else "an image or volume file")
        raise ValueError(f"{self._where(source)} is {what}, not a clip: a video model classifies clips (video files, "
                         "multi-frame DICOM), as it was trained (its training refuses such inputs too); classify it "
                         "with a volume model.")

    def _load_clip(self, source: StudySource) -> Study:
        from monai_das.transforms.io import LoadVideo

        info: dict[str, Any] = {"modality": None}
        headers = []
        if is_dicom(source.path):  # multi-frame DICOM
            headers = self._dicom_headers(source)
            h = headers[0]
            self._check_modality(source, str(h.get("Modality", "")))
            if "Rows" not in h or "Columns" not in h:
                raise ValueError(f"study '{source.study_id}': DICOM file '{source.path}' has no image.")
            volume = self.layout == "volume" and str(h.get("Modality", "")).upper() in VOLUME_MODALITIES
            if volume:  # a cine is priced once, by the clip reader (clip_frame_limit: at the grid, before decoding)
                self._check_memory(source, declared_dicom(headers))
                self._check_pixel_data(source, headers)  # a cine's by the clip reader too
            info.update(
                modality=modality_of([h]),
                study_instance_uid=str(h.get("StudyInstanceUID", "")) or None,
                series_instance_uid=str(h.get("SeriesInstanceUID", "")) or None,
            )
            if volume:  # an Enhanced CT/MR (one multi-frame file): a volume, reported as one, with its header (SR)
                colour = int(h.get("SamplesPerPixel", 1) or 1) > 1
                study = self._load_volume(replace(source, kind="volume"), source.path, reader=None, info=info,
                                          colour=colour)
                study.dicom_headers = _without_pixel_data(headers)
                return study
        r = self.recipe
        if self.layout == "video":
            t, frame_size = r["num_frames"], r["spatial_size"]
        else:
            t = r["spatial_size"][r["slice_axis"]]
            frame_size = [s for a, s in enumerate(r["spatial_size"]) if a != r["slice_axis"]]
        loader = LoadVideo(num_frames=t, spatial_size=frame_size, grayscale=self.in_channels in (None, 1),
                           temporal_mode=r["temporal_mode"], min_frames=1)  # min_frames is checked below
        try:
            clip = loader(str(source.path))
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"study '{source.study_id}': {e}") from e
        except Exception as e:
            raise RuntimeError(f"study '{source.study_id}': cannot read clip '{source.path}': {error_text(e)}") from e
        n = int(clip.meta.get("original_num_frames", clip.shape[0]))
        if n < self.min_frames:
            raise self._too_few(source, f"has {n} frame(s)", n)
        image = self._fit_channels(source, clip.as_tensor().float(), channel_dim=1)  # T×C×H×W
        b_min, b_max = r["output_range"]
        if (b_min, b_max) != (0.0, 1.0):
            image = image * (b_max - b_min) + b_min
        if self.layout == "volume":
            image = image.movedim(0, 1).movedim(1, 1 + r["slice_axis"])  # C×T×H×W → T at slice_axis
        src = clip.meta.get("source_indices")
        src_list = [int(i) for i in (src.tolist() if src is not None else range(t))]
        info.update(
            original_shape=[n, *[int(s) for s in (clip.meta.get("original_size") or ())]],
            num_source_frames=n,
            source_axis=0,
            fps=float(clip.meta.get("fps") or 0.0),
            reader=clip.meta.get("reader"),
        )
        modal = _modality_warning(info.get("modality"), r, str(source.path))  # a cine of another modality
        size = [int(v) for v in clip.meta.get("original_size") or ()]
        stretched = (aspect_warning(size, frame_size, r.get("geometry"), str(source.path))
                     if self.layout == "video" and len(size) == 2 else None)
        timed = (duration_warning(n, info["fps"], r.get("geometry"), str(source.path))
                 if self.layout == "video" and not headers else None)  # a video file's declared rate
        for message in (modal, stretched, timed):
            if message:
                logger.warning(message)
                info["warnings"] = [*info.get("warnings", []), message]
        study = self._study(source, image, {}, src_list, info)
        study.dicom_headers = _without_pixel_data(headers)
        return study

    def _study(self, source: StudySource, image: torch.Tensor, meta: dict, src: list[int], info: dict) -> Study:
        from monai_das.transforms.temporal import SOURCE_INDICES

        meta = {**meta, "filename_or_obj": str(source.path), "study_id": source.study_id,
                SOURCE_INDICES: torch.as_tensor(src, dtype=torch.long), "source_axis": int(info["source_axis"]),
                "original_num_frames": int(info["num_source_frames"])}
        if source.warnings:  # discovery's first, then the reading's
            info = {**info, "warnings": [*source.warnings, *info.get("warnings", [])]}
        return Study(source, MetaTensor(image.float().contiguous(), meta=meta), list(src), info)


#: how far outside the training studies' range a study's extent (or above it, its voxel size) may lie, as a factor,
#: before :func:`geometry_warning` speaks
GEOMETRY_FACTOR = 1.5
#: how far outside the training clips' range of frame aspect (height / width) a clip's may lie, as a factor, before
#: :func:`aspect_warning` speaks (4:3 frames beside 16:9 ones differ by 1.33)
ASPECT_FACTOR = 1.25
#: how far outside the training clips' range of duration (seconds) a clip's may lie, as a factor, before
#: :func:`duration_warning` speaks
DURATION_FACTOR = 2.0
#: file formats whose header gives the voxels' physical size (besides DICOM): the ones a study's size is compared for
GEOMETRY_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")


def oriented_geometry(spatial_shape: Sequence[int], affine: Any, axcodes: str | None = None
                      ) -> tuple[list[float], list[float]]:
    """
    ``(extent, voxel size)`` in mm of a volume of ``spatial_shape`` (its 3 axes as stored) with ``affine`` (4×4), per
    axis of the array ``Orientation(axcodes)`` makes of it (as stored when ``axcodes`` is ``None``): a voxel's size
    along an axis is the length of the affine's column, the extent that size times the voxels.
    """
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    extent = spacing * np.asarray([float(s) for s in spatial_shape[:3]])
    if axcodes is None:
        return [float(v) for v in extent], [float(v) for v in spacing]
    return ([float(v) for v in oriented_axes(extent, affine, axcodes)],
            [float(v) for v in oriented_axes(spacing, affine, axcodes)])


def oriented_axes(values: Sequence, affine: Any, axcodes: str) -> list:
    """``values``, one per stored spatial axis of a volume with ``affine``, in the order of the axes
    ``Orientation(axcodes)`` makes of them (a file stored z, x, y: its ``[20, 41, 41]`` is ``[41, 41, 20]`` in RAS)."""
    import nibabel as nib

    moved = nib.orientations.ornt_transform(nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64)),
                                            nib.orientations.axcodes2ornt(tuple(str(axcodes).upper())))
    out = list(values)
    for i, value in enumerate(values):
        out[int(moved[i, 0])] = value
    return out


def geometry_warning(extent: Sequence[float], spacing: Sequence[float], trained: Mapping | None, name: str,
                     axcodes: str | None = None) -> str | None:
    """
    A warning when a volume's physical extent (mm, per axis as :func:`oriented_geometry` gives it) lies outside the
    training studies' range by more than :data:`GEOMETRY_FACTOR` (``trained``: a recipe's ``geometry``,
    ``{"extent_mm": {"min", "max"}, "spacing_mm": {"min", "max"}}``), or its voxels are that much coarser than theirs:
    resized to the network's grid, its anatomy appears at another scale (a crop, another field of view) or blurrier
    than in any training study, and the prediction may mean nothing. ``None`` without ``trained`` or within range.
    """
    if not isinstance(trained, Mapping) or "extent_mm" not in trained:  # (a clips' recipe: frame_aspect)
        return None
    lo, hi = trained["extent_mm"]["min"], trained["extent_mm"]["max"]
    coarse = trained["spacing_mm"]["max"]
    codes = str(axcodes).upper() if axcodes else None
    axis = [f"axis {a}" + (f" ({codes[a]})" if codes else "") for a in range(3)]
    said = [f"{extent[a]:.0f} mm along {axis[a]} (training studies {lo[a]:.0f}-{hi[a]:.0f} mm)" for a in range(3)
            if extent[a] < lo[a] / GEOMETRY_FACTOR or extent[a] > hi[a] * GEOMETRY_FACTOR]
    blur = [f"{spacing[a]:.2g} mm voxels along {axis[a]} (training studies at most {coarse[a]:.2g} mm)"
            for a in range(3) if spacing[a] > coarse[a] * GEOMETRY_FACTOR]
    if not said and not blur:
        return None
    parts = ([f"it covers {', '.join(said)}"] if said else []) + ([f"it has {', '.join(blur)}"] if blur else [])
    return (f"'{name}' is unlike the training studies in size: {'; '.join(parts)}. Resized to the network's grid, "
            "its anatomy appears at another scale or coarser than in any study the model learnt from (another field "
            "of view, a crop, another protocol), so the prediction may mean nothing.")


def aspect_warning(frame_hw: Sequence[int], grid: Sequence[int], trained: Mapping | None, name: str) -> str | None:
    """
    A warning when a clip's frames (``frame_hw``, ``[H, W]`` as decoded) have an aspect ratio (height / width) outside
    the training clips' range by more than :data:`ASPECT_FACTOR` (``trained``: a clips' recipe ``geometry``,
    ``{"frame_aspect": {"min", "max"}}``): resized to the network's ``grid`` (``[H, W]``), its anatomy is stretched
    unlike in any clip the model learnt from (another probe, a portrait screen capture), and the prediction may mean
    nothing; training warned of such clips, inference did not (trial T63a). ``None`` without ``trained`` or within.
    """
    if not isinstance(trained, Mapping) or "frame_aspect" not in trained or min(frame_hw) < 1:
        return None
    lo, hi = trained["frame_aspect"]["min"], trained["frame_aspect"]["max"]
    aspect = int(frame_hw[0]) / int(frame_hw[1])
    if lo / ASPECT_FACTOR <= aspect <= hi * ASPECT_FACTOR:
        return None
    trained_range = f"{lo:.2f}" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}-{hi:.2f}"
    return (f"'{name}' has frames of {int(frame_hw[0])}×{int(frame_hw[1])} (H×W, height/width {aspect:.2f}), the "
            f"training clips' {trained_range}: resized to the network's {int(grid[0])}×{int(grid[1])} they are "
            "stretched unlike any clip the model learnt from (another probe or screen layout?), so the prediction "
            "may mean nothing.")


def duration_warning(num_frames: int, fps: float | None, trained: Mapping | None, name: str) -> str | None:
    """
    A warning when a clip of ``num_frames`` frames at ``fps`` (its file's declared frame rate) lasts more than
    :data:`DURATION_FACTOR` times less or more than any training clip (``trained``: a clips' recipe ``geometry``,
    ``{"clip_seconds": {"min", "max"}}``): its ``T`` frames, taken evenly over the clip, then span another stretch of
    time than in any clip the model learnt from (a 2 fps or a 240 fps capture of the same exam; trial T68b), and the
    prediction may mean nothing. ``None`` without ``trained``, a frame rate, or within.
    """
    if (not isinstance(trained, Mapping) or "clip_seconds" not in trained or fps is None
            or not math.isfinite(float(fps)) or float(fps) <= 0 or num_frames < 1):
        return None
    lo, hi = trained["clip_seconds"]["min"], trained["clip_seconds"]["max"]
    seconds = int(num_frames) / float(fps)
    if lo / DURATION_FACTOR <= seconds <= hi * DURATION_FACTOR:
        return None
    trained_range = f"{lo:.3g} s" if f"{lo:.3g}" == f"{hi:.3g}" else f"{lo:.3g}-{hi:.3g} s"
    return (f"'{name}' lasts {seconds:.3g} s ({int(num_frames)} frames at {float(fps):.3g} fps), the training clips "
            f"{trained_range}: its frames span {'a far shorter' if seconds < lo else 'a far longer'} stretch of time "
            "than in any clip the model learnt from (another frame rate or acquisition?), so the prediction may mean "
            "nothing.")


def nifti_without_orientation(path: str | os.PathLike) -> str | None:
    """A warning when ``path`` is a NIfTI file whose header gives no orientation (``qform_code`` and ``sform_code``
    0: an array saved without its affine), else ``None``: its axes are read as stored, so orientation, spacing and
    the slice direction may not be the anatomy's, and the prediction may be wrong without another sign."""
    name = str(path).lower()
    if not name.endswith((".nii", ".nii.gz")) or not os.path.isfile(path):
        return None
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        codes = int(header["qform_code"]), int(header["sform_code"])
    except Exception:  # not readable as NIfTI here: the reader reports it
        return None
    if codes != (0, 0):
        return None
    return (f"'{path}' has no orientation in its NIfTI header (qform_code and sform_code 0, e.g. an array saved "
            "without its affine): its axes are taken as stored, so its orientation, spacing and slice direction may "
            "not be the anatomy's. Save it with its affine.")


class LoadStudyd(MapTransform):
    """
    Dictionary twin of :class:`LoadStudy`: replace the study under each key (a :class:`StudySource`, or the path of a
    study file or of a folder holding exactly one study) by its network input (a ``MetaTensor`` with
    ``meta["source_indices"]``), and store the :class:`Study` under ``f"{key}_{study_suffix}"``.

    Args:
        keys: keys of the studies.
        recipe: the preprocessing recipe (see :func:`monai_das.transforms.check_recipe`).
        in_channels, allowed_modalities: see :class:`LoadStudy`.
        loader: an existing :class:`LoadStudy` (e.g. :class:`monai_das.deploy.studies.StudyLoader`) instead of
            ``recipe``/``in_channels``/``allowed_modalities``.
        study_suffix: suffix of the key the :class:`Study` is stored under (``None``: not stored). A :class:`Study`
            does not collate: in a ``DataLoader`` that batches items, pass ``None`` (the image's meta keeps
            ``source_indices``, ``filename_or_obj`` and ``study_id``) or drop the key before collation.
        allow_missing_keys: don't raise for a missing key.
    """

    def __init__(
        self,
        keys: KeysCollection,
        recipe: Mapping | None = None,
        in_channels: int | None = None,
        allowed_modalities: Sequence[str] | None = None,
        loader: LoadStudy | None = None,
        study_suffix: str | None = "study",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if (loader is None) == (recipe is None):
            raise ValueError("LoadStudyd needs either a recipe or a loader (a LoadStudy), not both.")
        self.loader = loader if loader is not None else LoadStudy(recipe, in_channels, allowed_modalities)
        self.study_suffix = study_suffix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            study = self.loader.load(d[key])
            d[key] = study.image
            if self.study_suffix:
                d[f"{key}_{self.study_suffix}"] = study
        return d


LoadStudyD = LoadStudyDict = LoadStudyd
