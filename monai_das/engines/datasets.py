"""
What the bundle configs call to get their data: :class:`BundleData` turns either a user datalist (``datalist``,
``dataset_dir``) or a ready-made dataset (``dataset``: the embedded synthetic data, a MedMNIST3D set, POCUS) into the
``data`` of each split's MONAI dataset and the facts the network needs (classes, channels, ``T``, grid), so that
the configs never hard-code them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_das.data.factory import DATA_ENV, VIDEO_DATASETS, resolve_data_dir
from monai_das.data.synthetic import SYNTHETIC_OPTIONS
from monai_das.engines.utils import optional
from monai_das.transforms.preprocessing import check_axcodes, check_pixdim
from monai_das.utils.io import file_digest
from monai_das.utils.logs import bounded_repr

__all__ = ["VIDEO_DATASETS", "DATA_ENV", "SLICE_AXES", "BundleData", "resolve_data_dir", "slice_axis_index"]

logger = logging.getLogger(__name__)

#: slice directions of a volume after ``Orientationd(axcodes="RAS")``: axis 0 runs left→right (its slices are
#: sagittal), axis 1 posterior→anterior (coronal), axis 2 inferior→superior (axial)
SLICE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
#: the splits of a bundle and the datalist lists they come from
_SPLITS = {"train": "training", "val": "validation", "test": "test"}


#: training clips whose declared frame rates differ by more than this factor are warned about
FRAME_RATE_SPREAD = 4.0
#: the axis codes of each anatomical slice direction's normal (an axial slice is a plane of one S/I position)
_NORMALS = {"sagittal": "LR", "coronal": "AP", "axial": "SI"}


def slice_axis_index(slice_axis: int | str, axcodes: str | None = "RAS") -> int:
    """
    ``slice_axis`` as the spatial axis index (0, 1, 2) of the loaded, oriented image: an index, or a name of
    :data:`SLICE_AXES`, resolved against ``axcodes``, the orientation the volumes are turned to (``"axial"`` is the
    axis coded ``S`` or ``I``: 2 for ``RAS``, 0 for ``SLP``). A name needs ``axcodes``: without reorientation
    (``None``) the file's own axes are used and no name is known, so an index is asked for.
    """
    if isinstance(slice_axis, str) and not slice_axis.strip().lstrip("-").isdigit():
        key = slice_axis.strip().lower()
        if key not in SLICE_AXES:
            raise ValueError(f"slice_axis must be 0, 1, 2 or one of {sorted(SLICE_AXES)}, got {slice_axis!r}.")
        codes = check_axcodes(optional(axcodes))  # a value that is no orientation is named as such
        if codes is not None:
            return next(i for i, c in enumerate(codes) if c in _NORMALS[key])
        raise ValueError(
            f"slice_axis {slice_axis!r} names an anatomical direction, which needs axcodes (the orientation the "
            f"volumes are turned to, e.g. 'RAS'); with axcodes {axcodes!r} give the axis index 0, 1 or 2 instead."
        )
    axis = int(slice_axis)
    if axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1, 2 or one of {sorted(SLICE_AXES)}, got {slice_axis!r}.")
    return axis


def _labels(items: Sequence) -> np.ndarray:
    """The class index of each item (``item["label"]``, an index or a one-element array) as int64."""
    return np.asarray([int(np.asarray(item["label"]).reshape(-1)[0]) for item in items], dtype=np.int64)


def _geometry_range(geometry: Mapping[str, tuple], count: int) -> dict | None:
    """The training images' range of physical extent and voxel size (mm, per axis after ``axcodes``: ``{"extent_mm":
    {"min", "max"}, "spacing_mm": {"min", "max"}}``, 0.01 mm), what :func:`monai_das.data.studies.geometry_warning`
    compares a study with at inference; ``None`` unless every one of the ``count`` training images gave its own
    (NIfTI files and DICOM series folders read with ``axcodes``: an ``.npy`` array or a multi-frame file gives none
    here)."""
    if not geometry or len(geometry) != count:
        return None
    extent, spacing = (np.array([g[i] for g in geometry.values()], dtype=np.float64) for i in (0, 1))
    span = {"min": extent.min(0), "max": extent.max(0)}, {"min": spacing.min(0), "max": spacing.max(0)}
    return {name: {k: [round(float(v), 2) for v in values] for k, values in part.items()}
            for name, part in zip(("extent_mm", "spacing_mm"), span)}


def _clip_geometry(shapes: Mapping[str, Sequence[int]], rates: Mapping[str, float]) -> dict | None:
    """The training clips' range of frame aspect (height / width of ``shape[-2:]``, 0.001) and, when every clip is a
    video file that declares its frame rate (``rates``), of duration (``shape[0]`` frames / rate, 0.001 s): a clips'
    recipe ``geometry`` (``{"frame_aspect": {"min", "max"}, "clip_seconds": {"min", "max"}}``), what
    :func:`monai_das.data.studies.aspect_warning` and :func:`~monai_das.data.studies.duration_warning` compare a clip
    with at inference; ``None`` without clips."""
    aspects = [int(shape[-2]) / int(shape[-1]) for shape in shapes.values() if min(int(v) for v in shape[-2:]) > 0]
    if not aspects:
        return None
    out = {"frame_aspect": {"min": round(min(aspects), 3), "max": round(max(aspects), 3)}}
    seconds = [int(shape[0]) / float(rates[image]) for image, shape in shapes.items()
               if float(rates.get(image) or 0) > 0 and int(shape[0]) > 0]
    if seconds and len(seconds) == len(shapes):
        out["clip_seconds"] = {"min": round(min(seconds), 3), "max": round(max(seconds), 3)}
    return out


def _modalities_named(modalities: Mapping[str, Sequence[str]]) -> str:
    """``"30 CT ('a', ...), 2 MR ('b', ...)"``: DICOM modalities with their image counts and first image, most first."""
    return ", ".join(f"{len(v)} {m} ('{v[0]}'{', ...' if len(v) > 1 else ''})"
                     for m, v in sorted(modalities.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def _size_list(value: Any, n: int, name: str) -> list[int] | None:
    value = optional(value)
    if value is None:
        return None
    sizes = [int(value)] * n if isinstance(value, (int, np.integer, str)) else [int(v) for v in value]
    if len(sizes) != n or min(sizes) < 1:
        raise ValueError(f"{name} must be one positive int or {n} of them, got {value!r}.")
    return sizes


def _orientation(hw: Sequence[int]) -> str:
    """``"portrait"``, ``"landscape"`` or ``"square"`` (sides within 10 %) of a frame size ``[H, W]``."""
    h, w = int(hw[0]), int(hw[1])
    return "portrait" if h > 1.1 * w else "landscape" if w > 1.1 * h else "square"


def _stretch(hw: Sequence[int], grid: Sequence[int]) -> float:
    """How much resizing a frame ``hw`` to ``grid`` (both ``[H, W]``) changes its aspect ratio (1: not at all)."""
    r = (int(hw[0]) / int(hw[1])) / (int(grid[0]) / int(grid[1]))
    return max(r, 1 / r)


def _hw(hw: Sequence[int]) -> str:
    return f"{int(hw[0])}×{int(hw[1])} (H×W)"


def _source_lines(items: Sequence[Mapping[str, Any]], classes: Any) -> str:
    """Where the items of ``classes`` (label names) are, for errors: their first 5 ``source_line``s, else ''."""
    rows = [it["source_line"] for it in items if it.get("label_name") in classes and it.get("source_line")]
    return f"{', '.join(rows[:5])}{' ...' if len(rows) > 5 else ''}"


class BundleData:
    """
    The data of one bundle run and its facts.

    Two sources:

    - a **datalist** (``datalist`` not ``None``): a MONAI datalist JSON or a CSV, read by
      :func:`monai_das.data.load_datalist` (paths relative to ``dataset_dir``, default the datalist's folder). Its
      ``training`` list is split by ``group`` (patient) into train/val with :func:`monai_das.data.split_training`
      (``val_fraction`` of the groups, seeded by ``seed``) when it has no ``validation`` list. Items are file paths:
      the config's recipe loads them. Classes come from the datalist (sorted string labels unless named), channels
      and the grid from the image headers (:func:`monai_das.data.check_study_shapes`).
    - a **ready-made dataset** (``dataset``): ``"synthetic"`` (volumes, or clips for ``layout="video"``; no
      download), a MedMNIST3D name, or ``"pocus"`` (clip files listed from ``MANIFEST.csv``, patient-level folds).

    Args:
        dataset: ready-made dataset name (ignored when ``datalist`` is given); ``"datalist"`` without a datalist:
            the model card ``card`` of a model trained on one stands in for it (classes, channels, grid; no lists:
            batch inference of studies given otherwise, the bundles' ``--input``).
        datalist: datalist file, or ``None``.
        dataset_dir: root of the datalist's relative paths (``None``: the datalist's folder). Paths that leave it are
            refused.
        layout: ``"volume"`` (``C×D×H×W`` items) or ``"video"`` (``T×C×H×W``).
        size: ready-made volumes: side ``D = H = W`` (MedMNIST: 28 or 64); clips: frame side when
            ``spatial_size`` is ``None``.
        data_dir: folder of a ready-made dataset (see :func:`resolve_data_dir`).
        spatial_size: the network's grid: volumes ``[D, H, W]`` (files are resized to it; ``None``: the shape the
            training files share, or the median shape per axis when they differ); clips ``[H, W]`` of a frame
            (``None``: ``size × size``).
        num_frames: clips: ``T`` frames per clip (clips are resampled to it).
        slice_axis: volumes: index or name (:func:`slice_axis_index`) of the axis whose slices are the frames.
        seed: seed of the synthetic data, MedMNIST subsets, POCUS folds and the datalist's train/val split.
        val_fraction: share of the groups that go to validation when a datalist has no ``validation`` list.
        fold, num_folds, probe: POCUS folds (test fold ``fold``, validation the next one) and probe.
        num_samples: ``{"train": n, "val": n, "test": n}`` caps (``None``: all); the first ``n`` items of a datalist
            split, a seeded subset of MedMNIST, the size of the synthetic splits.
        num_classes: synthetic data only.
        in_channels: clips only: 1 (grayscale) or 3 (RGB) as decoded.
        min_frames: a datalist's images with fewer frames (clips) or slices along an axis (volumes; a 2D image has
            one) are refused before training (:func:`~monai_das.data.check_study_shapes`); 1 accepts them, as the
            recipe's ``min_frames`` does.
        axcodes: the orientation the recipe turns volumes to (the bundle's ``axcodes``): what a named
            ``slice_axis`` (``"axial"``, ...) is resolved against; three capital letters, one of L/R, A/P, S/I each
            (:func:`~monai_das.transforms.check_axcodes`).
        pixdim: the voxel size the recipe resamples a datalist's volumes to (the bundle's ``pixdim``; one number or
            three, :func:`~monai_das.transforms.check_pixdim`): the automatic grid is the median of the NIfTI shapes
            after it (and after ``axcodes``).
        synthetic_options: synthetic data only: options of :func:`monai_das.data.make_synthetic_sequence`
            (:data:`SYNTHETIC_OPTIONS`: ``num_informative``, ``noise``, ``contrast``, ``distractor_prob``,
            ``distractor``), e.g. ``{"distractor": "texture", "distractor_prob": 0.7}`` for frames whose statistics
            mislead; ``None``: the defaults.
        label_names: a datalist's class names in order (index = position), e.g. ``["normal", "abnormal"]`` for a
            CSV, which cannot name its classes (:func:`~monai_das.data.datalist_classes`); ``None``: the datalist's
            own (a JSON's ``"labels"``, else its integer labels, else its names sorted). Refused without a datalist.
        card: a model card (``metadata.json``, plain JSON) that stands in for the datalist's images when they are not
            here (or for the datalist itself, ``dataset="datalist"`` without one; its classes then too, unless
            ``label_names`` are given), if it was written for this datalist's bytes and the model file beside it: its
            channels and grid are
            the data facts (batch inference of new studies on another machine needs the training's classes and grid,
            not its images). The bundles' inference.json passes the checkpoint's; training and evaluation read the
            images.
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        datalist: str | os.PathLike | None = None,
        dataset_dir: str | os.PathLike | None = None,
        layout: str = "volume",
        size: int = 28,
        data_dir: str | os.PathLike | None = None,
        spatial_size: Sequence[int] | int | None = None,
        num_frames: int = 32,
        slice_axis: int | str = 0,
        seed: int = 0,
        val_fraction: float = 0.2,
        fold: int = 0,
        num_folds: int = 5,
        probe: str | None = "convex",
        num_samples: dict | None = None,
        num_classes: int = 2,
        in_channels: int = 1,
        synthetic_options: Mapping[str, Any] | None = None,
        min_frames: int = 2,
        axcodes: str | None = "RAS",
        pixdim: Sequence[float] | float | None = None,
        label_names: Sequence[str] | None = None,
        card: str | os.PathLike | None = None,
    ) -> None:
        if layout not in ("volume", "video"):
            raise ValueError(f"layout must be 'volume' or 'video', got {layout!r}.")
        self.layout = layout
        self.datalist = optional(datalist)
        self.dataset = "datalist" if self.datalist is not None else str(dataset).lower()
        self.dataset_dir = optional(dataset_dir)
        self.label_names_arg = optional(label_names)
        self._told_intensity = False  # the warning about an intensity_range a ready-made dataset does not apply
        # dataset "datalist" without a datalist: a trained model's card stands in for it (classes, grid; see `card`)
        files = self.datalist is not None or self.dataset == "datalist"
        if self.label_names_arg is not None and not files:
            raise ValueError(f"label_names {bounded_repr(self.label_names_arg)} names the classes of a datalist "
                             f"(--datalist); the ready-made dataset '{self.dataset}' has its own classes: leave "
                             "label_names null.")
        self.size, self.seed = int(size), int(seed)
        self.data_dir = resolve_data_dir(self.dataset, data_dir) if not files else None
        # a ready-made dataset's arrays are not reoriented: their axes are RAS-like (MedMNIST: 0 = D) whatever axcodes
        self.slice_axis = slice_axis_index(slice_axis, axcodes if files else "RAS")
        # header shapes in the recipe's orientation
        # checked whatever the source: the model card records them as the recipe that inference applies to files
        checked_axcodes = check_axcodes(optional(axcodes)) if layout == "volume" else None
        self.axcodes = checked_axcodes if files else None
        # the recipe resamples before the grid is taken (check_study_shapes gives the shapes after Spacing(pixdim))
        pixdim = optional(pixdim) if layout == "volume" else None
        check_pixdim(pixdim)
        self.pixdim = pixdim if files else None
        if pixdim is not None and not files:
            logger.warning(f"--pixdim {pixdim} does not resample the ready-made dataset '{self.dataset}' (its arrays "
                           "carry no voxel size), yet the model card records it and inference on files resamples "
                           "them to it: the files would then differ from what the network was trained on. Leave "
                           "pixdim null with a ready-made dataset unless its voxels are that size.")
        self.num_frames = int(num_frames)
        self.val_fraction = float(val_fraction)
        self.fold, self.num_folds, self.probe = int(fold), int(num_folds), optional(probe)
        self.num_samples = {k: optional(v) for k, v in (num_samples or {}).items()}
        self.num_classes_arg, self.in_channels_arg = int(num_classes), int(in_channels)
        self.min_frames = int(min_frames)
        self._spatial_arg = spatial_size
        self.synthetic_options = dict(synthetic_options or {})
        unknown = sorted(set(self.synthetic_options) - set(SYNTHETIC_OPTIONS))
        if unknown:
            raise ValueError(f"synthetic_options {unknown} unknown; the synthetic data takes {list(SYNTHETIC_OPTIONS)}.")
        if self.synthetic_options and (self.dataset != "synthetic"):
            raise ValueError(f"synthetic_options apply to dataset 'synthetic' only, not to {self.dataset!r}.")
        self._splits: dict[str, Any] = {}
        self._every_class = False  # split_training's every-class rule changed the validation list
        self._by_name = False  # split_training's class order by name changed it (see _read_datalist)
        self._test_only = False  # a datalist of a test list alone (an external test set)
        self._derived_val = False  # a datalist without a validation list: val_fraction and seed choose it
        self._info: dict | None = None
        self._checked: set[str] = set()  # datalist splits whose files were checked like the training ones
        self._list_shapes: dict[str, dict] = {}  # each checked split's header shapes (image → shape)
        # SOPInstanceUID of the checked lists' DICOM images, content key of their other files → item (no copies)
        self._content_ids: dict[str, str] = {}
        self._patients: dict[str, list[str]] = {}  # the training list's DICOM PatientIDs → their items
        self._content_paths: dict[str, str] = {}  # content key → file
        self._short_clips: dict[str, int] = {}  # training clips of fewer frames than num_frames (video datalist)
        self._short_clips_of = 0
        self._grid_notes: list[str] = []  # what the training images' shapes say of the grid (said before training)
        self.card = optional(card)
        self._card: dict | None = None  # the card's facts when it was written for this datalist's bytes
        self._card_refused: str | None = None  # why the card could not stand in (said in the error)
        if self.datalist is not None:
            try:
                self._read_datalist()
            except FileNotFoundError:  # images not here: the card written for this datalist, if any, stands in
                self._card = self._card_for_datalist() if Path(self.datalist).is_file() else None
                if self._card is None:
                    raise
                self._read_datalist()
        elif files:  # no datalist at all: the card of a model trained on one (batch inference on --input)
            self._card = self._card_for_datalist()
            if self._card is None:
                why = f" (the card '{self.card}' is not one: {self._card_refused or 'not found'})" if self.card else ""
                raise ValueError(
                    "dataset 'datalist' needs --datalist (a JSON or CSV of the studies), or, for batch inference on "
                    f"--input, the model card of a model trained on a datalist beside its checkpoint{why}.")
            from monai_das.data.datalist import check_class_names

            # plain class names (the card is data: a '$...' name would be evaluated by the bundle tools reading it)
            self.label_names = check_class_names(self.label_names_arg or self._card["label_names"],
                                                 f"the model card '{self.card}' das_model#label_names")

    # ---------------------------------------------------------------- sources
    @property
    def facts(self) -> dict:
        """
        What decides which items the splits hold and their label indices: the dataset, the datalist's bytes
        (SHA-256), folders, size, seed, validation fraction, fold, folds, probe, subsampling (``num_samples``),
        synthetic options, slice axis, frames, grid and the class order given (``label_names``, only when given), as
        plain values. The training's ``resume_recipe`` records them (without the test cap, which does not change
        training), so a resume on another split is refused naming the fact that changed.
        """
        return {
            "dataset": self.dataset, "datalist": self.info["datalist_sha256"],  # cached with the facts
            "dataset_dir": self.dataset_dir, "data_dir": self.data_dir, "size": self.size, "seed": self.seed,
            "val_fraction": self.val_fraction, "fold": self.fold, "num_folds": self.num_folds, "probe": self.probe,
            "num_samples": dict(self.num_samples), "synthetic_options": self.synthetic_options,
            "slice_axis": self.slice_axis, "num_frames": self.num_frames, "spatial_size": self._spatial_arg,
            # only when given: the facts (and the content tag of earlier predictions) stay as they were without it
            **({} if self.label_names_arg is None else {"label_names": [str(n) for n in self.label_names_arg]}),
            # only when split_training's every-class rule changed the validation list an older version drew
            **({"every_class_validated": True} if self._every_class else {}),
            **({"validation_classes_by_name": True} if self._by_name else {}),
            **self._synthetic_turned,
        }

    @property
    def _synthetic_turned(self) -> dict:
        """``{"synthetic_evidence_axis": slice_axis}`` for synthetic volumes whose evidence lies along an axis other
        than 0 (volume bundle 0.6.27 on; they lay along axis 0 before, the same seed giving other volumes), so that a
        resume of a checkpoint trained on the former data is refused, an evaluation of one is scored as on other data
        (a warning, its own output folder, the card left alone) and earlier predictions are not reused; nothing
        otherwise (the facts and split identities of every other run stay as they were)."""
        turned = self.dataset == "synthetic" and self.layout == "volume" and self.slice_axis != 0
        return {"synthetic_evidence_axis": self.slice_axis} if turned else {}

    @property
    def image_root(self) -> str | None:
        """The folder a datalist's relative image paths start from (``dataset_dir``, else the datalist's folder), so
        that its studies are named by the paths the datalist gives, in evaluation, bundle inference on a split and
        with ``--input <the datalist>`` alike; ``None`` without a datalist."""
        if self.datalist is None:
            return None
        return os.path.abspath(self.dataset_dir) if self.dataset_dir is not None else str(Path(self.datalist).parent)

    def split_identity(self, datalist_sha256: str | None = None) -> dict:
        """
        What decides which items are training, validation and test items (not how many of them a run reads): the
        dataset; a datalist's bytes (and ``seed``/``val_fraction`` when it has no validation list); POCUS's fold,
        number of folds, probe and seed; the synthetic data's seed and options (MedMNIST3D's splits are official).
        The model card records it, and an evaluation on another split identity is refused
        (:class:`monai_das.handlers.ModelCardSaver`): the test fold of another ``--fold`` holds patients the checkpoint
        was trained on.
        """
        ident: dict[str, Any] = {"dataset": self.dataset}
        if self.datalist is None and self._card is not None:  # the card's datalist, which stands in (no lists here)
            ident["datalist_sha256"] = self._card.get("datalist_sha256")
        elif self.datalist is not None:
            ident["datalist_sha256"] = datalist_sha256 or file_digest(self.datalist)
            if self._derived_val:
                ident.update(seed=self.seed, val_fraction=self.val_fraction)
                if self._every_class:
                    ident["every_class_validated"] = True
                if self._by_name:
                    ident["validation_classes_by_name"] = True
        elif self.dataset in VIDEO_DATASETS:
            ident.update(fold=self.fold, num_folds=self.num_folds, probe=self.probe, seed=self.seed)
        elif self.dataset == "synthetic":
            ident.update(seed=self.seed, synthetic_options=dict(self.synthetic_options), **self._synthetic_turned)
        return json.loads(json.dumps(ident, default=str))

    @property
    def training_facts(self) -> dict:
        """
        :attr:`facts` without the test split's cap (``num_samples["test"]``), which training never reads. For a
        datalist, refuses a class without training items (capped as the run caps them: the model would never learn
        it, and still give it a probability) and warns about a class without validation items (the validation AUC
        averages the classes present, or, with two classes, is undefined (NaN) in every epoch, which training met
        only at its end). A datalist's test list is checked
        now (:meth:`_check_files`), so that a copy of a training study in it stops training before it starts.

        Raises:
            ValueError: a class of the datalist has no training item, naming the classes and the datalist; a
                datalist without a training list (a test set); a datalist of one class.
        """
        if self._test_only:
            from monai_das.data.datalist import missing_list_hint

            hint = missing_list_hint(Path(self.datalist), "training")
            raise ValueError(f"datalist '{self.datalist}' has no 'training' list ({hint}): a test set can be evaluated "
                             "(evaluate.json) or predicted, not trained on.")
        if self.datalist is not None and len(self.label_names) < 2:
            raise ValueError(
                f"datalist '{self.datalist}' has one class {bounded_repr(list(self.label_names))}: a classifier "
                "learns at least two (its softmax gives one class a probability of 1 whatever the input). A binary "
                "task is two classes here, e.g. 0 = negative and 1 = positive: give the negative studies too, or name "
                "both classes (the JSON's 'labels', --label_names for a CSV)."
            )
        for split, name in (("train", "training"), ("val", "validation")):
            if self.datalist is None or not self._splits.get(split):
                continue
            items, n = self._splits[split], self.num_samples.get(split)
            labels = set(_labels(items if n is None else items[: int(n)]).tolist())
            missing = [c for i, c in enumerate(self.label_names) if i not in labels]
            if missing and split == "train":
                derived = (f" (the validation list was drawn from the training list by patient: val_fraction "
                           f"{self.val_fraction}, seed {self.seed})" if self._derived_val else "")
                capped = f" (the first {n}, --num_train)" if n is not None else ""
                # where they come from: a misspelt label in another list makes a class of its own (a CSV's classes are
                # its labels), so name its rows
                rows = _source_lines([it for part in ("val", "test") for it in self._splits.get(part) or []], missing)
                named = f" Items with them: {rows}." if rows else ""
                from monai_das.data.datalist import _kind

                drop = ("give --label_names with the training's classes (a CSV's classes are its labels)"
                        if _kind(Path(self.datalist)) == "csv" else "leave the class out of the datalist's 'labels'")
                raise ValueError(
                    f"datalist '{self.datalist}': no training item{capped} has the class(es) {missing}{derived}: the "
                    f"model would never learn them, yet give them probabilities.{named} Give every class training "
                    f"items (from at least two patients when the validation list is drawn from the training list), "
                    f"correct a misspelt label, or {drop}."
                )
            train_items = self._splits.get("train") or []
            single = [c for c in missing  # classes whose items are all of one patient (group, else the image)
                      if len({it.get("group") or it["image"] for it in train_items if it.get("label_name") == c}) == 1]
            if single and self._derived_val and n is None:
                # a validation list we drew ourselves cannot hold a class of one patient: mostly a misspelt label (a
                # class of several patients can still miss it, when they count as another class's: a warning below)
                missing = single
                rows = _source_lines(train_items, missing)
                named = f" (items: {rows})" if rows else ""
                raise ValueError(
                    f"datalist '{self.datalist}': the class(es) {missing} have items of a single patient{named}, so "
                    f"the validation list drawn from the training list by patient (val_fraction {self.val_fraction}, "
                    f"seed {self.seed}) cannot hold them as well: the model file would be chosen without them "
                    "(with two classes the validation AUC is undefined, NaN, in every epoch). Correct a misspelt "
                    "label, give every class items of at least two patients, or give a 'validation' list."
                )
            from monai_das.data.datalist import classes_declared, misspelt_class

            # with a validation list of its own, a class of one patient absent from it, one typo from another class's
            # name ('bb' on one row beside 'b'), in a file whose labels are its classes: most likely misspelt, said
            # so (it was only "no validation item has the class"). A warning: 'T1a' beside 'T1' can be a class
            typos = {c: near for c in single if (near := misspelt_class(c, self.label_names))}
            if (typos and not self._derived_val and n is None and self.label_names_arg is None
                    and not classes_declared(self.datalist)):
                rows = _source_lines(train_items, typos)
                named = f" (items: {rows})" if rows else ""
                shown = ", ".join(f"{c!r} (one typo from {near!r})" for c, near in typos.items())
                logger.warning(
                    f"datalist '{self.datalist}': the class(es) {shown} have training items of a single patient"
                    f"{named} and no validation item: a misspelt label? It trains a class of its own that the best "
                    "model is never chosen for. Correct the label; if it is a class, give it validation items."
                )
            if missing and len(self.label_names) - len(missing) >= 2:  # (so 3 classes or more)
                logger.warning(f"datalist '{self.datalist}': no validation item has the class(es) {missing}: the "
                               "validation AUC that chooses the best model and the validation balanced accuracy "
                               "average the classes present only, so the model file is not chosen for those. Give "
                               "every class validation items.")
            elif missing:
                logger.warning(f"datalist '{self.datalist}': no validation item has the class(es) {missing}: the "
                               "validation AUC is undefined (NaN) in every epoch, so the best-model file is the first "
                               "epoch's, not chosen by it, and the validation balanced accuracy averages the recall of "
                               "the classes present only. Give every class validation items.")
        layout = self.info["layout"]  # info reads the training files' headers, noting what they say
        for note in self._grid_notes:  # volumes: of the grid; clips: of their frame sizes
            logger.warning(note)
        short = self._short_clips if layout == "video" else {}
        if short:
            eg = ", ".join(f"'{image}' ({n} frames)" for image, n in list(short.items())[:3])
            logger.warning(f"{len(short)} of {self._short_clips_of} training clips of '{self.datalist}' have fewer "
                           f"frames than num_frames={self.num_frames}, e.g. {eg}: their frames are repeated to "
                           f"{self.num_frames}, so the sampler chooses among copies (a kept set may hold fewer "
                           "distinct frames). Lower num_frames if many clips are that short.")
        if self.datalist is not None and self._splits.get("test"):
            # a copy of a training study in the test list (another folder or name) is refused before training, not
            # by the evaluation after it; its unusable files too
            self._check_files("test", self._splits["test"])
            self._check_test_clips(self._splits["test"])
        facts = self.facts
        facts["num_samples"] = {k: v for k, v in facts["num_samples"].items() if k != "test"}
        return json.loads(json.dumps(facts, default=str))  # plain values: stored in last.pt, loaded weights_only

    @property
    def content_tag(self) -> str:
        """
        16 hex digits of :attr:`facts`, naming which items the splits hold. Part of the fingerprint of dataset items
        in batch inference, so that predictions of another test set (another fold, datalist, seed) are never taken
        for this one's.
        """
        return hashlib.sha256(json.dumps(self.facts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def from_files(self) -> bool:
        """``True`` when the items are file paths that the config's recipe loads (datalist, POCUS)."""
        return self.datalist is not None or self.dataset in ("datalist", *VIDEO_DATASETS)

    def intensity_recipe(self, intensity_range: Any = None, percentiles: Any = None) -> dict:
        """
        The recipe's intensity steps (``{"intensity_range", "percentiles"}``) for this source. Files (a datalist):
        the run's options, which the training's transforms apply. A ready-made volume dataset: what its items already
        are (the options are not applied to them), so that the model card, and inference on files through it, map a
        file to the intensities the network was trained on: the synthetic volumes hold absolute values in
        ``[0, 1]`` (``intensity_range [0, 1]``: clipped, not rescaled); MedMNIST3D volumes are ``uint8`` read as
        ``/ 255`` (``intensity_range [0, 255]``: the same division for a file of such values; min–max scaling, recorded
        before, equals it only for a volume that spans 0..255, as every VesselMNIST3D volume does but nothing promises
        of the other sets). Percentile scaling there would change the inputs: a sparse VesselMNIST3D volume's 99.5th
        percentile is often 0.
        """
        from monai_das.transforms import check_intensity

        try:  # also for a ready-made dataset: a swapped pair is a mistake, refused before training either way
            check_intensity(intensity_range, percentiles)
        except ValueError as e:  # named as the bundle option the user gives
            raise ValueError(f"--{e}") from None
        if self.from_files:
            return {"intensity_range": intensity_range, "percentiles": percentiles}
        if intensity_range is not None and not self._told_intensity:
            self._told_intensity = True
            logger.warning(f"--intensity_range {intensity_range} is not applied: the model's data is the ready-made "
                           f"dataset '{self.dataset}', whose items are scaled already, and the model card records the "
                           "scaling they had, which is what inference applies to files too (--input): another window "
                           "would feed the model intensities it never learnt from. Leave intensity_range null with it.")
        if self.dataset == "synthetic":
            return {"intensity_range": [0.0, 1.0], "percentiles": None}
        return {"intensity_range": [0.0, 255.0], "percentiles": None}

    def _read_datalist(self) -> None:
        from monai_das.data import datalist_classes, datalist_splits, load_datalist, split_training
        from monai_das.data.datalist import class_name_order

        path = Path(self.datalist).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"datalist '{path}' does not exist.")
        self.datalist = str(path.resolve())
        self.label_names = datalist_classes(path, self.dataset_dir, self.label_names_arg)
        lists = set(datalist_splits(path))
        if "training" not in lists and "test" in lists:
            # an external test set (a test list alone): evaluated or predicted, its facts (grid, channels) from its
            # own files; training on it is refused by data("train")/training_facts
            test = load_datalist(path, self.dataset_dir, "test", self.label_names)
            logger.info(f"datalist '{path}' has no training list: a test set; the data facts (grid, channels) are its "
                        "test files', which an evaluation checks against the model card.")
            self._splits, self._test_only = {"train": [], "val": [], "test": test}, True
            return
        absent = self._card is not None  # inference with the training's card: its images need not be here
        train = load_datalist(path, self.dataset_dir, "training", self.label_names, missing_ok=absent)
        if "validation" in lists:
            val = load_datalist(path, self.dataset_dir, "validation", self.label_names, missing_ok=absent)
        else:
            train, val, added = split_training(train, self.val_fraction, self.seed, return_added=True)
            # a split the every-class rule changed is another split than an older version drew from the same options:
            # said in the split identity, so that resuming or evaluating a checkpoint of the older split is refused
            self._every_class = bool(added)
            # classes now taken by name, not index (the same studies as JSON or CSV got other validation patients):
            # another split than an older version drew where the two orders differ, said the same way
            self._by_name = class_name_order(self.label_names) != [str(n) for n in self.label_names]
            logger.info(f"datalist '{path}' has no validation list: {len(val)} of its training items "
                        f"(val_fraction={self.val_fraction} of the groups, seed {self.seed}) validate.")
        test = load_datalist(path, self.dataset_dir, "test", self.label_names, missing_ok=absent) if "test" in lists \
            else []
        self._splits = {"train": train, "val": val, "test": test}
        self._derived_val = "validation" not in lists

    def data(self, split: str) -> Sequence:
        """
        The ``data`` of ``split``'s MONAI dataset (``"train"``, ``"val"`` or ``"test"``): datalist/POCUS items
        ``{"image": path, "label", "group", ...}`` for the recipe to load, or the untransformed items of a ready-made
        dataset (arrays already at the network's grid).
        """
        if split not in _SPLITS:
            alias = {v: k for k, v in _SPLITS.items()}.get(str(split).strip().lower())
            hint = f": {split!r} is the datalist's name of the list, the split is {alias!r}" if alias else ""
            raise ValueError(f"split must be one of {tuple(_SPLITS)}, got {split!r}{hint}.")
        n = self.num_samples.get(split)
        if self.datalist is None and self._card is not None:
            raise ValueError(
                f"no datalist: the model card '{self.card}' gives this run the classes and grid of the training's "
                f"datalist '{self._card.get('datalist')}', not its lists; give --input (a folder, file or list of "
                f"studies to predict), or --datalist for its {_SPLITS[split]!r} list.")
        if self.datalist is not None:
            items = self._splits[split]
            if not items:
                from monai_das.data.datalist import missing_list_hint

                raise ValueError(f"datalist '{self.datalist}' has no {_SPLITS[split]!r} items for the {split} split; "
                                 f"{missing_list_hint(Path(self.datalist), _SPLITS[split])}.")
            items = items if n is None else items[: int(n)]
            self._check_files(split, items)
            return items
        if self.dataset in VIDEO_DATASETS:
            items = self._fold_items(split)
            return items if n is None else items[: int(n)]
        if self.dataset == "synthetic" and self.layout == "video":
            from monai_das.data import SyntheticVideoDataset
            from monai_das.data.factory import SYNTHETIC_DEFAULT_SAMPLES
            from monai_das.data.synthetic import SPLIT_SEED_OFFSETS

            count = SYNTHETIC_DEFAULT_SAMPLES[split] if n is None else int(n)
            return SyntheticVideoDataset(count, num_classes=self.num_classes_arg, size=self.size,
                                         num_frames=self.num_frames, in_channels=self.in_channels_arg,
                                         seed=self.seed + SPLIT_SEED_OFFSETS[split], **self.synthetic_options)
        from monai_das.data import get_dataset

        # synthetic volumes hold their evidence in slices along the run's slice_axis (val_evidence_kept counts those)
        kwargs = ({"num_classes": self.num_classes_arg, "slice_axis": self.slice_axis, **self.synthetic_options}
                  if self.dataset == "synthetic" else {})
        return get_dataset(self.dataset, split, size=self.size, data_dir=self.data_dir, seed=self.seed,
                           num_samples=None if n is None else int(n), **kwargs)

    def _fold_items(self, split: str) -> list[dict]:
        """The whole ``split`` of the POCUS listing at this run's fold, folds, probe and seed."""
        from monai_das.data import pocus_listing, pocus_root, split_by_fold

        listing = pocus_listing(pocus_root(self.data_dir), probe=self.probe, num_folds=self.num_folds, seed=self.seed)
        return split_by_fold(listing, self.fold)[split]

    def capped(self, split: str) -> int | None:
        """
        The cap ``num_samples[split]`` when it leaves out items of the split (a smoke run's ``--num_test 15`` of a
        test list of 610), else ``None``: the synthetic data's count is its set, not a cap of one. An evaluation
        that reads a capped split writes its reports beside the whole split's (:func:`monai_das.handlers.
        output_dir_capped`) and leaves the model card's test metrics.
        """
        n = self.num_samples.get(split)
        if n is None or (self.datalist is None and self.dataset == "synthetic"):
            return None
        if self.datalist is not None:
            full = len(self._splits.get(split) or [])
        elif self.dataset in VIDEO_DATASETS:
            if self.data_dir is None:
                return None
            full = len(self._fold_items(split))
        else:
            from monai_das.data.medmnist3d import medmnist_info

            full = int(medmnist_info(self.dataset)["n_samples"][split])
        return int(n) if int(n) < full else None

    def class_counts(self, split: str = "train") -> list[int]:
        """Items of each class in ``split`` (``num_classes`` counts), e.g. for ``class_weights="balanced"``."""
        data = self.data(split)
        labels = getattr(data, "labels", None)  # MedMNIST, synthetic: one label per item, no image is built
        if labels is not None and len(labels) == len(data):
            values = np.asarray(labels).reshape(len(labels), -1)[:, 0].astype(np.int64)
        else:
            values = _labels(data)
        counts = np.bincount(values, minlength=int(self.info["num_classes"]))
        return [int(c) for c in counts]

    # ---------------------------------------------------------------- facts
    @property
    def info(self) -> dict:
        """
        ``{"num_classes", "label_names", "in_channels", "num_frames", "layout", "slice_axis", "spatial_size",
        "image_shape", "source", "datalist", "datalist_sha256"}``: ``spatial_size`` is the network's grid
        (``[D, H, W]`` or a frame's ``[H, W]``), ``image_shape`` one item without batch dimension (``C×D×H×W`` or
        ``T×C×H×W``), ``num_frames`` the ``T`` the sampler chooses from.
        """
        if self._info is None:
            if self.datalist is not None:
                self._info = self._datalist_info()
            else:
                self._info = self._card_info() if self._card is not None else self._preset_info()
            self._info.update(source=self.dataset, datalist=self.datalist,
                              datalist_sha256=file_digest(self.datalist) if self.datalist is not None else None)
            self._info["splits"] = self.split_identity(self._info["datalist_sha256"])
            self._info.setdefault("modalities", None)  # a ready-made dataset's: not known
            self._info.setdefault("geometry", None)  # its arrays have no physical size
            logger.info(f"data facts: {self._info}")
        return dict(self._info)

    def _preset_info(self) -> dict:
        from monai_das.data import dataset_info

        if self.layout == "video":
            if self.dataset not in ("synthetic", *VIDEO_DATASETS):
                raise ValueError(f"dataset {self.dataset!r} holds volumes; the video bundle takes 'synthetic', "
                                 f"{VIDEO_DATASETS} or a datalist of clips.")
            if self.dataset == "synthetic":
                from monai_das.data.synthetic import SYNTHETIC_CLASS_NAMES

                names = list(SYNTHETIC_CLASS_NAMES[: self.num_classes_arg])
                channels = self.in_channels_arg
            else:
                names, channels = list(dataset_info(self.dataset)["label_names"]), self.in_channels_arg
            return self._video_facts(names, channels)
        if self.dataset in VIDEO_DATASETS:
            raise ValueError(f"dataset {self.dataset!r} holds clips: use the video bundle (das_video_classification).")
        info = dataset_info(self.dataset, size=self.size, num_classes=self.num_classes_arg)
        grid = [self.size] * 3
        return self._volume_facts(info["label_names"], int(info["in_channels"]), grid)

    def _warn_shared_patients(self, split: str, patients: Mapping[str, list[str]]) -> None:
        """
        Warn about DICOM studies of this list whose ``PatientID`` is that of a training study, when the datalist's
        patients (``group``) did not say so (a blank patient cell: the image is its own patient; trial T58b: a series
        moved to the test list with a blank cell was tested on its patient's other, trained series). A PatientID held
        by most studies (a de-identified export writing one value) names no patient and is passed over.
        """
        known = self._patients
        total = sum(map(len, known.values())) + sum(map(len, patients.values()))
        shared = []
        for pid, where in patients.items():
            # the same items are no other studies (a test list alone is its own "training" list for its facts)
            mine = [w for w in where if w not in known.get(pid, [])]
            theirs = [t for t in known.get(pid, []) if t not in where]
            if mine and theirs and len(theirs) + len(mine) <= max(2, total // 2):
                shared.append((pid, mine[0], theirs[0]))
        if shared:
            named = "; ".join(f"{w} and {t} (PatientID {pid!r})" for pid, w, t in shared[:3])
            logger.warning(
                f"datalist '{self.datalist}': {len(shared)} DICOM stud(ies) of the {_SPLITS[split]!r} list have the "
                f"PatientID of a training study, though the datalist names other patients (group) for them: {named}"
                f"{' ...' if len(shared) > 3 else ''}. If they are one patient, its studies are trained on and "
                f"{'validated' if split == 'val' else 'tested'} on: give them one patient (group) in the datalist."
            )

    def _check_files(self, split: str, items: Sequence[Mapping]) -> None:
        """
        Read the headers of a validation or test list's files as the training list's were (:func:`check_study_shapes`:
        one DICOM series per folder, a volume or clip per file) and refuse a channel count other than the training
        files', naming the datalist; once per split. Without it a DICOM folder holding a localizer beside its series
        would be read as whichever series the reader takes, and validation metrics would be silently off. An item holding a
        DICOM image of another checked list's item (a copy in another folder, :func:`check_no_copies`) is refused.
        """
        if split == "train" or split in self._checked:
            return
        from monai_das.data import check_no_copies

        trained = self.info["in_channels"]  # the training files' (for volumes as check_study_shapes read them)
        facts = self._list_facts(items)
        # the same series, clip or volume copied into another list: leakage
        check_no_copies(self._content_ids, facts["content_ids"], self._content_paths, facts["content_paths"])
        self._content_ids.update(facts["content_ids"])
        self._content_paths.update(facts["content_paths"])
        self._warn_shared_patients(split, facts.get("patients") or {})
        trained_modalities = self.info.get("modalities")
        other = {m: v for m, v in facts["modalities"].items() if m not in (trained_modalities or [])}
        if other and trained_modalities:  # (a training list without DICOM files records none: nothing to compare)
            logger.warning(f"datalist '{self.datalist}': the {_SPLITS[split]!r} images include DICOM modalities the "
                           f"training images lack: {_modalities_named(other)} (training: {trained_modalities}). The "
                           "model never saw such studies, so their predictions and metrics may mean nothing; give "
                           "every list studies of the training's modalities.")
        self._warn_unlike_training(split, len(items), facts)
        channels = int(facts["in_channels"])
        # a video recipe makes every clip the network's channels (grey or RGB) itself: only volumes must match
        if self.layout == "volume" and channels != trained:
            raise ValueError(f"datalist '{self.datalist}': the {_SPLITS[split]!r} images have {channels} channel(s), "
                             f"the training images {trained}; give every list images of one kind.")
        self._list_shapes[split] = dict(facts["shapes"])
        self._checked.add(split)

    def _warn_unlike_training(self, split: str, count: int, facts: Mapping) -> None:
        """
        Warn, naming them, about the images of a validation or test list whose physical extent or voxel size lies
        outside the training images' range (:func:`~monai_das.data.studies.geometry_warning`, what inference says of
        a study): resized to the grid, a crop of a few mm was stretched and scored in the metrics without a word,
        where bundle inference on the same file warned (trial T61a). Clips: a frame aspect outside the training
        clips' (:func:`~monai_das.data.studies.aspect_warning`) or a duration (:func:`~monai_das.data.studies.
        duration_warning`).
        """
        trained = self.info.get("geometry")
        if not trained:
            return
        from monai_das.data.studies import aspect_warning, duration_warning, geometry_warning

        grid = self.info["spatial_size"]
        if self.layout == "video":
            rates = facts.get("frame_rates") or {}
            unlike = [(image, why) for image, shape in sorted(facts["shapes"].items())
                      if (why := aspect_warning(shape[-2:], grid, trained, Path(image).name)
                          or duration_warning(shape[0], rates.get(image), trained, Path(image).name))]
        else:
            unlike = [(image, why) for image, (extent, spacing) in sorted((facts.get("geometry") or {}).items())
                      if (why := geometry_warning(extent, spacing, trained, Path(image).name, self.axcodes))]
        if unlike:
            more = f" Also: {', '.join(Path(i).name for i, _ in unlike[1:4])}{' ...' if len(unlike) > 4 else ''}."
            are = "is" if len(unlike) == 1 else "are"
            what = "frame aspect or duration" if self.layout == "video" else "size"
            logger.warning(f"datalist '{self.datalist}': {len(unlike)} of the {count} {_SPLITS[split]!r} images {are} "
                           f"unlike the training images in {what}, and scored in its metrics as they are: "
                           f"{unlike[0][1]}{more if len(unlike) > 1 else ''}")

    def _check_test_clips(self, items: Sequence[Mapping]) -> None:
        """
        Before training, what loading the test list's clips would refuse in the evaluation after it, as filling the
        training cache refuses a training clip (:class:`~monai_das.transforms.LoadVideod`,
        :class:`~monai_das.transforms.MapEvidenced`): a video file that decodes far fewer frames than its header
        declares (truncated; its frames are stepped through, not converted or kept) and an evidence index outside
        the clip's frames; every such item is named (datalist line and file) in one error. Video layout only.

        Raises:
            ValueError: naming each unusable test clip and what to do.
        """
        if self.layout != "video":
            return
        from monai_das.data.datalist import _where
        from monai_das.data.video_io import VIDEO_EXTENSIONS, decoded_frame_count

        shapes = self._list_shapes.get("test", {})
        errors = []
        for item in items:
            image = str(item["image"] if isinstance(item, Mapping) else item)
            item = item if isinstance(item, Mapping) else {}
            try:
                # the decoded count, which LoadVideod's clip has and MapEvidenced checks (a DICOM cine: its header's)
                n = decoded_frame_count(image) if image.lower().endswith(VIDEO_EXTENSIONS) else None
            except RuntimeError as e:
                errors.append(f"{_where(item, image)}: {e}")
                continue
            n = int(shapes[image][0]) if n is None and image in shapes else n
            bad = [int(i) for i in item.get("evidence") or [] if n is not None and int(i) >= n]
            if bad:
                errors.append(f"{_where(item, image)}: evidence index {bad[0]} is outside its {n} frames "
                              f"(0..{n - 1}); correct the item's evidence (frame numbers of the file, from 0).")
        if errors:
            more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
            raise ValueError(f"datalist '{self.datalist}': {len(errors)} of the {len(items)} 'test' clips cannot be "
                             "evaluated after training (the evaluation would stop on them), so training stops before "
                             "it starts:\n  " + "\n  ".join(errors[:10]) + more
                             + "\nReplace or re-encode these files, correct their evidence, or leave them out of the "
                             "test list.")

    def _other_lists_unusable(self, checked: str) -> str:
        """What :func:`check_study_shapes` finds unusable in the datalist's lists other than ``checked`` (their
        errors, one line per list; ``""`` when none): said with the checked list's own error."""
        found = []
        for split in ("train", "val", "test"):
            items = self._splits.get(split) or []
            if split == checked or not items:
                continue
            try:
                self._list_facts(items)
            except (FileNotFoundError, ValueError, RuntimeError) as e:
                drawn = " (drawn from the training list)" if split == "val" and self._derived_val else ""
                found.append(f"The {_SPLITS[split]!r} list{drawn} too: {e}")
        return "\n".join(found)

    def _card_for_datalist(self) -> dict | None:
        """
        The ``das_model`` section of :attr:`card` (a model card, plain JSON) when it was written for this datalist's
        bytes (its ``datalist_sha256``), layout and the model file beside it (``checkpoint_sha256``), else ``None``
        (why said at INFO; an unreadable card too: the missing images' own error is then raised).
        """
        if self.card is None or not Path(self.card).is_file():
            return None
        from monai_das.engines.export import CARD_KEY, read_model_card
        from monai_das.handlers.model_card import card_describes

        what = "the datalist's images" if self.datalist is not None else "a datalist"
        try:
            card = read_model_card(self.card)
        except (OSError, ValueError) as e:  # the missing images' own error is the one to see
            why = str(e).rstrip(".")
        else:
            facts = card[CARD_KEY]
            model = Path(self.card).with_name(str(facts.get("checkpoint") or "model.pt"))
            if self.datalist is not None and facts.get("datalist_sha256") != file_digest(self.datalist):
                why = f"it was written for another datalist than '{self.datalist}'"
            elif facts.get("layout") != self.layout or facts.get("source") != "datalist":
                why = f"it describes a {facts.get('layout')} model trained on {facts.get('source')!r}, not on a " \
                      f"datalist of {self.layout}s"
            elif not model.is_file() or not card_describes(card, file_digest(model)):
                why = f"it describes another file than '{model}' (its checkpoint_sha256)"
            else:
                return facts
        logger.info(f"model card '{self.card}' cannot stand in for {what}: {why}.")
        self._card_refused = why
        return None

    def _list_facts(self, items: Sequence[Mapping]) -> dict:
        """:func:`~monai_das.data.check_study_shapes` of a list's items as this run's recipe reads them."""
        from monai_das.data import check_study_shapes

        # clips_only: the video recipe decodes clips (LoadVideod), a volume is refused naming it before training; the
        # volume recipe's readers cannot decode a video file, refused alike
        # a video recipe decodes every clip grey (in_channels 1) or RGB (3): grey and colour clips mix
        return check_study_shapes(items, self.layout, slice_axis=self.slice_axis, clips_only=True,
                                  axcodes=self.axcodes, mixed_channels=self.layout == "video",
                                  min_frames=self.min_frames, pixdim=self.pixdim)

    def _datalist_info(self) -> dict:
        listed = self._splits["test" if self._test_only else "train"]
        if self._card is not None and not all(os.path.exists(item["image"]) for item in listed):
            return self._card_info()
        try:
            facts = self._list_facts(listed)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            # the other lists' unusable files in the same error: one run per list found them one list at a time
            # (a drawn validation list held the 4D file the training list's 2D one hid; trial T56)
            others = self._other_lists_unusable("test" if self._test_only else "train")
            if not others:
                raise
            raise type(e)(f"{e}\n{others}") from None
        self._content_ids.update(facts["content_ids"])
        self._content_paths.update(facts["content_paths"])
        self._patients = {k: list(v) for k, v in (facts.get("patients") or {}).items()}
        modalities = facts["modalities"]
        if len(modalities) > 1:
            which = "test" if self._test_only else "training"
            logger.warning(f"the {which} images of '{self.datalist}' are of {len(modalities)} DICOM modalities: "
                           f"{_modalities_named(modalities)}. One network and one intensity recipe learn them all, "
                           "and a model card says it was trained on each: train one model per modality unless they "
                           "are meant to mix (a study of another modality is warned about at inference).")
        info = self._files_info(facts)
        # recorded in the recipe, checked at inference (LoadStudy); only when every training image is DICOM: CT
        # converted to NIfTI beside MR series would record MR alone, and a CT series be warned about
        every = sum(len(v) for v in modalities.values()) == len(facts["shapes"])
        info["modalities"] = sorted(modalities) if modalities and every else None
        # the training files' range (a test list alone is no training data: none)
        info["geometry"] = (None if self._test_only else _clip_geometry(facts["shapes"], facts.get("frame_rates") or {})
                            if self.layout == "video"
                            else _geometry_range(facts.get("geometry") or {}, len(facts["shapes"])))
        return info

    def _card_info(self) -> dict:
        """
        The data facts of a datalist whose images are not here (batch inference on another machine than the
        training's) from :attr:`card`, written for this datalist: the channels and the grid its training files gave
        (the median shape, unless ``spatial_size`` is given); the classes stay the datalist's, and the run's other
        options are checked against the card as always (:func:`monai_das.handlers.check_model_card`).
        """
        card = self._card
        if self.datalist is not None:
            logger.info(f"the images of datalist '{self.datalist}' are not all here: the data facts its training "
                        f"files gave (channels, grid) are taken from the model card '{self.card}', written for this "
                        "datalist.")
        else:
            logger.info(f"no datalist: the classes {bounded_repr(self.label_names)} and the data facts (channels, "
                        f"grid) of the training's datalist '{card.get('datalist')}' are taken from the model card "
                        f"'{self.card}'.")
        if self.layout == "video":
            info = self._video_facts(self.label_names, self.in_channels_arg)
        else:
            grid = _size_list(self._spatial_arg, 3, "spatial_size") or [int(v) for v in card["spatial_size"]]
            info = self._volume_facts(self.label_names, int(card["in_channels"]), grid)
        info["modalities"] = (card.get("recipe") or {}).get("modalities")
        info["geometry"] = (card.get("recipe") or {}).get("geometry")
        return info

    def _files_info(self, facts: Mapping) -> dict:
        """The data facts of a datalist from its training files' :func:`~monai_das.data.check_study_shapes`."""
        if self.layout == "video":
            if self.in_channels_arg not in (1, 3):
                raise ValueError(f"in_channels of a video model is 1 (grey frames) or 3 (RGB), got "
                                 f"{self.in_channels_arg}: every clip is decoded to it.")
            facts_out = self._video_facts(self.label_names, self.in_channels_arg)
            sizes = Counter(tuple(shape[-2:]) for shape in facts["shapes"].values())
            self._grid_notes = []
            grid = [int(v) for v in facts_out["spatial_size"]]
            stretch = {image: _stretch(shape[-2:], grid) for image, shape in facts["shapes"].items()}
            turned = [image for image, shape in facts["shapes"].items() if _orientation(shape[-2:]) not in
                      (_orientation(grid), "square") and _orientation(grid) != "square"]
            if 2 * len(turned) > len(facts["shapes"]):  # [W, H] given for [H, W]: stretched without a word (T63a)
                eg = ", ".join(f"'{i}' {_hw(facts['shapes'][i][-2:])}" for i in turned[:2])
                self._grid_notes.append(
                    f"spatial_size {grid} (height, width) is {_orientation(grid)}, but {len(turned)} of "
                    f"{len(facts['shapes'])} training clips of '{self.datalist}' are "
                    f"{_orientation(facts['shapes'][turned[0]][-2:])}, e.g. {eg}: their frames are stretched up to "
                    f"{max(stretch[i] for i in turned):.2g}× to fit. spatial_size is [height, width] (OpenCV gives a "
                    f"frame size as width × height): did you mean {grid[::-1]}?")
            elif len(sizes) > 1:  # as the volume grid's warning: the frames are resized, a different aspect stretched
                common = sizes.most_common(1)[0][0]
                odd = [image for image, shape in facts["shapes"].items() if tuple(shape[-2:]) != common]
                # named among those that differ: all clips ranked by stretch named clips of the common size (t72h)
                most = sorted(odd, key=lambda i: -stretch[i])[:3]
                # said by training_facts, before training (every evaluation and export repeated it; trial T58)
                self._grid_notes.append(
                    f"the training clips of '{self.datalist}' differ in frame size; every frame is resized to "
                    f"{grid} (size or spatial_size, height × width), so frames of another aspect ratio are "
                    f"stretched. {len(odd)} of {len(facts['shapes'])} differ from the most common size "
                    f"{list(common)}; the most stretched: "
                    + ", ".join(f"'{i}' {_hw(facts['shapes'][i][-2:])} ({stretch[i]:.2g}×)" for i in most) + ".")
            rates = facts.get("frame_rates") or {}
            if len(rates) > 1 and max(rates.values()) > FRAME_RATE_SPREAD * min(rates.values()):
                slow, fast = min(rates, key=rates.get), max(rates, key=rates.get)
                self._grid_notes.append(
                    f"the training clips of '{self.datalist}' declare frame rates from {rates[slow]:.3g} fps "
                    f"('{slow}') to {rates[fast]:.3g} fps ('{fast}'): a clip becomes num_frames={self.num_frames} "
                    "frames by its frame count, not by time, so one frame spans very different times across clips "
                    "(the same motion over many frames in one, a few in another). Resample the clips to one frame "
                    "rate (e.g. ffmpeg -r), or check that the rate carries no label.")
            # said by training_facts (inference warns per clip; training repeated their frames without a word)
            self._short_clips = {image: int(shape[0]) for image, shape in facts["shapes"].items()
                                 if int(shape[0]) < self.num_frames}
            self._short_clips_of = len(facts["shapes"])
            return facts_out
        grid = _size_list(self._spatial_arg, 3, "spatial_size")
        shapes = np.array([s[-3:] for s in facts["shapes"].values()])
        median = [int(v) for v in np.median(shapes, axis=0).round()]
        # said by training_facts: inference and evaluation take the grid from the card, and said it in every run
        self._grid_notes = []
        if grid is None:
            grid = median
            if (shapes != shapes[0]).any():
                odd = [f"'{image}' {list(shape[-3:])}" for image, shape in facts["shapes"].items()
                       if list(shape[-3:]) != grid]
                self._grid_notes.append(
                    f"the training images of '{self.datalist}' differ in shape; every image is resized to the median "
                    f"shape {grid} (set spatial_size to choose the grid). {len(odd)} of {len(shapes)} differ from it, "
                    f"e.g. {', '.join(odd[:3])}.")
        elif grid != median and sorted(grid) == sorted(median):
            # [36, 48, 48] for files of 48×48×36: the axes are in array order after axcodes (RAS: x, y, z), not
            # slices first; every volume would be resized across its axes (trial T56)
            order = (f"after axcodes {self.axcodes}: axes {', '.join(self.axcodes)}" if self.axcodes
                     else "the files' own axes")
            self._grid_notes.append(
                f"spatial_size {grid} holds the training images' shape {median} in another order: the grid is in the "
                f"array order of the loaded images ({order}), not slices first, so every volume is resized across "
                f"its axes ({median[0]} voxels along the first to {grid[0]}). Give --spatial_size {json.dumps(median)} "
                f"for the files' own grid (slice_axis {self.slice_axis}: {median[self.slice_axis]} slices).")
        coarse = self._coarse_axis_note(facts.get("geometry") or {})
        if coarse:
            self._grid_notes.append(coarse)
        return self._volume_facts(self.label_names, int(facts["in_channels"]), grid)

    def _coarse_axis_note(self, geometry: Mapping[str, tuple]) -> str | None:
        """
        A note when the training images' voxels (medians, mm, after ``axcodes``) are at least twice as coarse along
        one axis as along the others (thick acquired slices) and ``slice_axis`` is another axis: every frame is then
        a reformat across the thick slices, not an acquired slice (trial T61a: 0.8×0.8×2.5 mm volumes taken along
        the default axis 0, sagittal, without a word). ``None`` otherwise, or without the images' voxel sizes.
        """
        if not geometry:
            return None
        spacing = np.median(np.array([g[1] for g in geometry.values()], dtype=np.float64), axis=0)
        axis = int(np.argmax(spacing))
        finer = max(float(spacing[a]) for a in range(3) if a != axis)
        if axis == self.slice_axis or spacing[axis] < 2 * finer:
            return None
        name = next((n for n, codes in _NORMALS.items() if self.axcodes and self.axcodes[axis] in codes), None)
        return (f"the training images of '{self.datalist}' have voxels of {spacing[axis]:.2g} mm along axis {axis}"
                f"{f' ({name})' if name else ''} and at most {finer:.2g} mm along the others (medians): their "
                f"acquired slices lie across axis {axis}, but slice_axis {self.slice_axis} takes its frames along "
                f"another axis, each a reformat across the thick slices. If DAS should choose among the acquired "
                f"slices, give --slice_axis {name or axis}.")

    def _volume_facts(self, names: Sequence[str], channels: int, grid: list[int]) -> dict:
        return {"num_classes": len(names), "label_names": list(names), "in_channels": channels,
                "num_frames": int(grid[self.slice_axis]), "layout": "volume", "slice_axis": self.slice_axis,
                "spatial_size": list(grid), "image_shape": [channels, *grid]}

    def _video_facts(self, names: Sequence[str], channels: int) -> dict:
        frame = _size_list(self._spatial_arg, 2, "spatial_size") or [self.size, self.size]
        return {"num_classes": len(names), "label_names": list(names), "in_channels": int(channels),
                "num_frames": self.num_frames, "layout": "video", "slice_axis": 0, "spatial_size": frame,
                "image_shape": [self.num_frames, int(channels), *frame]}
