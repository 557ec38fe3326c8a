"""
MONAI Label train task: train the DAS bundle on the classification labels of the app's datastore.

How a study's class is stored in the datastore (MONAI Label has no classification label type of its own):

- the image's label of tag ``label_tag`` (default ``"final"``, what a client's "submit label" saves) holds the class
  in its **label info** under ``"label"`` (:data:`LABEL_KEY`): a class name (``"abnormal"``) or a class index
  (``1`` or ``"1"``), e.g. ``PUT /datastore/label?image=<id>&tag=final`` with ``params={"label": "abnormal"}``
  (``datastore.save_label(image_id, file, "final", {"label": "abnormal"})``);
- otherwise the label file itself, when it is a ``.json`` file: ``{"label": "abnormal"}`` (or just ``"abnormal"``).

A final label without a class is an error (it names the images), as is a class that is not one of the app's
``labels`` (when the app is given them) and a datastore without labelled images. The patient (``group`` of the
datalist, which the bundle splits training/validation by) is the image info's ``group``, ``patient_id`` or
``PatientID`` (DICOMweb datastores record it), or another of :data:`monai_das.data.datalist.GROUP_KEYS`, else the
image id.

The task writes a MONAI datalist JSON (``{"labels": {"0": name, ...}, "training": [{"image", "label", "group"}]}``,
image paths relative to ``dataset_dir``, the folder that holds the datastore's images) into the staging folder
(published as ``<model_dir>/monailabel/datalist.json``), checks it with the bundle's own reader
(:func:`monai_das.data.load_datalist`), prepares the run's staging folder as a bundle folder the infer task can load
once published (``configs/metadata.json`` with the classes and grid, ``configs/inference.json`` with the data
settings), and runs the bundle's train config in a subprocess::

    python -m monai.bundle run --config_file <bundle>/configs/train.json --meta_file <bundle>/configs/metadata.json
        --logging_file <bundle>/configs/logging.conf --bundle_root <staging> --datalist <staging>/datalist.json
        --dataset_dir <images folder> --max_epochs N --spatial_size "[D, H, W]" --mlflow false --progress_bar false

with ``<bundle_root>`` a staging folder, ``<model_dir>/monailabel/training`` (:data:`STAGING_SUBDIR`), never the
served model folder. Only a run that exits with 0 and has written ``models/model.pt`` there is **published**: its
files are moved into ``<model_dir>`` (``configs/``, ``eval/``, ``monailabel/datalist.json``, then ``models/``'s files,
``model.pt`` last, each with one ``os.replace``), and the app's infer task reloads the new model when ``model.pt``
changes. A run that fails, is killed (exit code -9) or keeps no best model leaves the served model, its configs and
datalist as they were; its files stay in the staging folder (for its log and a look), cleared by the next run. A
completed run whose publishing stopped half-way (disk full, a kill; :data:`COMPLETED_MARKER`) is published by the next
train request before it runs; a published ``model.pt`` is stamped with the time of publishing, so that it is newer
than an export of the former model written meanwhile (the infer task serves a checkpoint newer than the export). The
lock files a killed run leaves there (``models/.monai_das_training.lock`` and ``.owner``) are removed by the next
run with a warning naming the dead owner; a lock still held (a run of another process) refuses the new run, naming
it. ``train_overrides`` ``{"resume": true}`` continues the staging folder's run when it has a ``models/last.pt``
(e.g. a killed one), else the served model's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import device_list, device_map

from monai_das.data.datalist import GROUP_KEYS, check_class_names, classes_of_labels
from monai_das.engines.utils import flag
from monai_das.handlers.checkpoint import LOCK_NAME, OWNER_NAME, lock_owner
from monai_das.utils.io import lock_folder, unlock_folder, write_json_atomic
from monai_das.utils.logs import bounded_repr

from ..keys import misspelling_of

logger = logging.getLogger(__name__)

__all__ = [
    "LABEL_KEY",
    "GROUP_KEYS",
    "DATA_KEYS",
    "DASTrain",
    "bundle_overrides",
    "bundle_command",
    "datastore_datalist",
    "prepare_model_dir",
]

#: the label-info key (or key of a JSON label file) holding a study's class name or index
LABEL_KEY = "label"
#: the bundle overrides that describe the data, its preprocessing and the network: baked into the model folder's copy
#: of ``configs/inference.json`` (for the keys that config defines) so that a bundle run of it builds and feeds the
#: network the training built (e.g. ``train_overrides`` ``{"slice_axis": "axial"}``); run-time keys (``device``,
#: ``batch_size``, ``num_workers``, ...) are not
DATA_KEYS = ("datalist", "dataset_dir", "size", "spatial_size", "num_frames", "in_channels", "slice_axis", "axcodes",
             "pixdim", "intensity_range", "percentiles", "min_frames", "method", "keep_ratio", "temporal_head",
             "encoder", "encoder_kwargs", "sampler_kwargs", "context_frames")
#: where the task's files go inside the model folder (datalist, command, log, stats)
RUN_SUBDIR = "monailabel"
#: the staging folder of a training run, inside :data:`RUN_SUBDIR`: the run's ``--bundle_root``
STAGING_SUBDIR = "training"
#: written into the staging folder when its run completed, before publishing: a publish that failed half-way (disk
#: full, a kill) is completed by the next train request instead of the completed model being cleared
COMPLETED_MARKER = ".completed"
#: the most warnings of a training run's log given in a train request's result (``training_warnings``)
MAX_RUN_WARNINGS = 20
#: the keys of a train request this task reads (its ``config()``)
TRAIN_REQUEST_KEYS = ("max_epochs", "device")
#: keys MONAI Label itself puts in a train request (``BundleTrainTask``'s config, the client's bookkeeping): not named
MONAILABEL_REQUEST_KEYS = ("name", "model", "pretrained", "multi_gpu", "gpus", "dataset", "dataloader", "tracking",
                           "tracking_uri", "tracking_experiment_name", "client_id", "local_rank")
#: lock (and its owner's pid, host, start) of the train request running for a model folder, in :data:`RUN_SUBDIR`
REQUEST_LOCK, REQUEST_OWNER = ".train_request.lock", ".train_request.owner"

_INT_RE = re.compile(r"^[+-]?\d+$")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_MAX_LABEL_FILE = 1 << 20  # a JSON label file holds one class: refuse anything large
_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\b.*:")  # "ValueError: ...", "torch.OutOfMemoryError: ..."


# ====================================================================================================================
# The DAS bundle's command-line keys. THE ONE PLACE to change when the bundle's train config names them differently.
# ====================================================================================================================
def bundle_overrides(
    *,
    datalist: str,
    dataset_dir: str,
    bundle_root: str,
    max_epochs: int,
    spatial_size: Sequence[int] | None = None,
    device: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """
    The ``--key value`` overrides of the bundle's train config for one training run (``extra`` last, so the app's
    ``overrides`` win). Values are Python values; :func:`bundle_command` turns them into command-line strings.
    """
    overrides: dict[str, Any] = {
        "bundle_root": str(bundle_root),  # models/ (model.pt, last.pt) and eval/ go here
        "datalist": str(datalist),  # MONAI datalist JSON, read by monai_das.data.load_datalist
        "dataset_dir": str(dataset_dir),  # root of its relative image paths
        "max_epochs": int(max_epochs),
        "mlflow": False,
        "progress_bar": False,
    }
    if spatial_size is not None:
        overrides["spatial_size"] = [int(s) for s in spatial_size]
    if device is not None:
        # checked against _DEVICE_RE first; the train config must import torch (the DAS bundle does)
        overrides["device"] = f"$torch.device('{device}')"
    overrides.update(dict(extra or {}))
    return overrides


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def bundle_command(
    bundle_path: str | os.PathLike, overrides: Mapping[str, Any], python: str | None = None
) -> list[str]:
    """``python -m monai.bundle run`` with the bundle's train config, its metadata, logging config and ``overrides``."""
    configs = Path(bundle_path) / "configs"
    cmd = [python or sys.executable, "-m", "monai.bundle", "run",
           "--config_file", str(configs / "train.json"), "--meta_file", str(configs / "metadata.json")]
    if (configs / "logging.conf").is_file():
        cmd += ["--logging_file", str(configs / "logging.conf")]
    for key, value in overrides.items():
        cmd += [f"--{key}", _cli_value(value)]
    return cmd


# ====================================================================================================================
# datastore → datalist
# ====================================================================================================================
def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _class_value(datastore: Datastore, image_id: str, label_id: str, tag: str) -> Any:
    """The raw class of an image's label: its label info ``"label"``, else a JSON label file's; ``None`` if neither."""
    info = datastore.get_label_info(label_id, tag) or {}
    if not _blank(info.get(LABEL_KEY)):
        return info[LABEL_KEY]
    uri = datastore.get_label_uri(label_id, tag)
    if uri and str(uri).lower().endswith(".json") and os.path.isfile(uri):
        if os.path.getsize(uri) > _MAX_LABEL_FILE:
            raise ValueError(f"image '{image_id}': the JSON label file '{uri}' is larger than 1 MiB.")
        try:
            with open(uri, encoding="utf-8") as fh:
                data = json.load(fh)
        except json.JSONDecodeError as e:
            raise ValueError(f"image '{image_id}': the label file '{uri}' is not valid JSON: {e.msg}.") from e
        value = data.get(LABEL_KEY) if isinstance(data, Mapping) else data
        return None if _blank(value) else value
    return None


def _group(datastore: Datastore, image_id: str, label_info: Mapping) -> str:
    image_info = datastore.get_image_info(image_id) or {}
    for info in (image_info, label_info):
        for key in GROUP_KEYS:
            if not _blank(info.get(key)):
                return str(info[key]).strip()
    return image_id


def datastore_datalist(
    datastore: Datastore,
    label_tag: str = DefaultLabelTag.FINAL,
    label_names: Sequence[str] | None = None,
) -> tuple[dict, str]:
    """
    The MONAI datalist of the datastore's classified images.

    Args:
        datastore: a MONAI Label datastore.
        label_tag: the label tag whose label info holds the class (default ``"final"``).
        label_names: the classes (index = position); a study's class must be one of these names or an index into
            them. ``None``: the classes found in the datastore: sorted names, or ``"0".."max"`` when every class is
            given as an index.

    Returns:
        ``(datalist, dataset_dir)``: ``{"labels": {"0": name, ...}, "training": [{"image": path relative to
        dataset_dir, "label": index, "group": patient}, ...]}`` (images in datastore order) and the folder that holds
        every image.

    Raises:
        ValueError: no image with a ``label_tag`` label; labels without a class (naming the images); an unknown
            class or index; names mixed with indices without ``label_names``; fewer than 2 classes or 2 patients.
        FileNotFoundError: an image file of the datastore is missing.
    """
    tag = str(getattr(label_tag, "value", label_tag))
    image_ids = list(datastore.list_images())
    rows: list[tuple[str, Any, Mapping]] = []
    missing: list[str] = []
    for image_id in image_ids:
        label_id = datastore.get_label_by_image_id(image_id, tag)
        if not label_id:
            continue
        value = _class_value(datastore, image_id, label_id, tag)
        if value is None:
            missing.append(image_id)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"image '{image_id}': class {value!r} must be a class name or an integer class index.")
        rows.append((image_id, value.strip() if isinstance(value, str) else value,
                     datastore.get_label_info(label_id, tag) or {}))
    if missing:
        shown = ", ".join(repr(m) for m in missing[:10])
        shown += f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise ValueError(
            f"{len(missing)} image(s) with a '{tag}' label have no class: {shown}. Give each the class as the label "
            f"info '{LABEL_KEY}' (a class name or index) or save a JSON label file {{\"{LABEL_KEY}\": <class>}}."
        )
    if not rows:
        raise ValueError(
            f"the datastore has no image with a '{tag}' label ({len(image_ids)} image(s), none labelled): label some "
            f"studies with their class (label info '{LABEL_KEY}') before training."
        )

    def is_index(v: Any) -> bool:
        return isinstance(v, int) or bool(_INT_RE.match(v))

    if label_names is not None:
        classes = check_class_names(label_names, "labels", strip=True, spelling=True)
    else:  # one pass over the rows: the indices, and each class name's first image and count
        first: dict[str, str] = {}
        counts: Counter = Counter()
        found: set[int] = set()
        for image_id, v, _ in rows:
            if is_index(v):
                found.add(int(v))
            else:
                first.setdefault(v, f"image '{image_id}'")
                counts[v] += 1
        names, indices = sorted(first), sorted(found)
        if names and indices:
            raise ValueError(
                f"the datastore's classes mix names {bounded_repr(names, 5)} and indices {bounded_repr(indices, 5)}: "
                "give the app the class names (--conf labels name0,name1,...) so that indices can be read, or use "
                "names only."
            )
        if names:
            # as a datalist's labels are read: names differing only in case or spaces refused, a rare one a typo
            # from a frequent one warned (Aneurysm, aneurysm and 'aneurism ' became 3 classes of 4; trial T65a)
            classes = classes_of_labels({n: first[n] for n in names}, f"the datastore's '{tag}' labels", counts)
        else:
            if indices[0] < 0:
                raise ValueError(f"class index {indices[0]} is negative.")
            classes = [str(i) for i in range(indices[-1] + 1)]

    training, groups, used = [], set(), set()
    class_groups: dict[int, set] = {}
    images = [(image_id, datastore.get_image_uri(image_id)) for image_id, _, _ in rows]
    for (image_id, value, label_info), (_, image) in zip(rows, images):
        if value in classes:  # a name (also a name that looks like an index, e.g. classes "0", "1")
            index = classes.index(value)
        elif is_index(value):
            index = int(value)
            if not 0 <= index < len(classes):
                raise ValueError(
                    f"image '{image_id}': class index {index} is outside 0..{len(classes) - 1} ({classes})."
                )
        else:
            raise ValueError(f"image '{image_id}': unknown class {bounded_repr(value)}; the classes are "
                             f"{bounded_repr(classes)}.")
        if not image or not os.path.exists(image):
            raise FileNotFoundError(f"image '{image_id}': its file '{image}' does not exist.")
        group = _group(datastore, image_id, label_info)
        groups.add(group)
        used.add(index)
        class_groups.setdefault(index, set()).add(group)
        training.append({"image": os.path.realpath(image), "label": index, "group": group})
    if len(used) < 2:
        raise ValueError(
            f"all {len(training)} labelled image(s) are of class {classes[used.pop()]!r}: training a classifier "
            "needs images of at least 2 classes."
        )
    if len(groups) < 2:
        raise ValueError(
            f"the {len(training)} labelled image(s) belong to {len(groups)} patient(s): at least 2 are needed to "
            "split them into training and validation."
        )
    unused = [c for i, c in enumerate(classes) if i not in used]
    if unused:  # a class the model would never learn, yet give probabilities
        where = ("--conf labels" if label_names is not None else
                 f"class indices read as 0..{len(classes) - 1}: label with 0-based indices or give --conf labels")
        raise ValueError(f"no labelled image has the class(es) {unused} ({where}): the model would never learn "
                         f"them. Label images of every class, or leave the class out.")
    few = {classes[i]: sorted(map(str, g)) for i, g in sorted(class_groups.items()) if len(g) < 2}
    if few:  # split by patient, such a class lands in training or validation only
        raise ValueError(
            "the labelled images of class(es) " + "; ".join(f"{c!r} all belong to patient {g[0]!r}"
                                                            for c, g in few.items())
            + ": the training/validation split keeps a patient's images together, so such a class would be missing "
            "from training or from validation. Label images of at least 2 patients per class."
        )
    root = os.path.commonpath([os.path.dirname(item["image"]) for item in training])
    for item in training:
        item["image"] = os.path.relpath(item["image"], root)
    return {"labels": {str(i): n for i, n in enumerate(classes)}, "training": training}, root


# ====================================================================================================================
# the model folder: a bundle folder the infer task can load
# ====================================================================================================================
def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def bundle_layout(bundle_path: str | os.PathLike) -> str:
    """``"video"`` or ``"volume"``: the layout of the bundle's training recipe (``recipe#layout`` of its
    ``configs/train.json``; ``"volume"`` when it names none)."""
    path = Path(bundle_path) / "configs" / "train.json"
    recipe = _read_json(path).get("recipe") if path.is_file() else None
    layout = recipe.get("layout") if isinstance(recipe, dict) else None
    return layout if layout in ("volume", "video") else "volume"


def check_spatial_size(spatial_size: Sequence[int] | None, layout: str) -> list[int] | None:
    """The network grid of a ``layout`` bundle's training: a volume's ``[D, H, W]``, a clip's frame ``[H, W]`` (its
    frame count is ``num_frames``); an error naming the layout otherwise (a video bundle stopped on the metadata's
    ``[C, H, W]`` given as its grid)."""
    if spatial_size is None:
        return None
    size = [int(s) for s in spatial_size]
    want = 2 if layout == "video" else 3
    if len(size) != want or min(size) < 1:
        what = "a frame's 'H,W' (the clips' frame count is train_overrides num_frames)" if layout == "video" \
            else "a volume's 'D,H,W'"
        raise ValueError(f"spatial_size of this {layout} bundle must be {want} positive integers, {what}; got "
                         f"{list(spatial_size)}.")
    return size


def _write_json(path: Path, data: Any) -> None:
    write_json_atomic(data, path, indent=4)


def prepare_model_dir(
    bundle_path: str | os.PathLike,
    model_dir: str | os.PathLike,
    overrides: Mapping[str, Any],
    classes: Sequence[str],
    bundle_root: str | os.PathLike | None = None,
) -> Path:
    """
    Make ``model_dir`` a bundle folder for the infer task: ``configs/metadata.json`` (the bundle's, with the classes
    as ``channel_def`` and ``spatial_size`` as the input grid), ``configs/inference.json`` (the bundle's, with
    ``bundle_root`` = ``bundle_root`` (default ``model_dir``: the folder the configs will be served from) and the
    :data:`DATA_KEYS` of ``overrides`` it defines) and ``logging.conf``.
    """
    src, dst = Path(bundle_path) / "configs", Path(model_dir) / "configs"
    dst.mkdir(parents=True, exist_ok=True)
    (Path(model_dir) / "models").mkdir(exist_ok=True)
    meta = _read_json(src / "metadata.json")
    fmt = meta.setdefault("network_data_format", {})
    image = fmt.setdefault("inputs", {}).setdefault("image", {})
    size = overrides.get("spatial_size")
    if bundle_layout(bundle_path) == "video":  # num_channels T, spatial_shape a frame's [C, H, W] (bundle docs)
        shape = image.get("spatial_shape") if isinstance(image.get("spatial_shape"), list) else [1]
        if size is None and isinstance(overrides.get("size"), int):
            size = [overrides["size"]] * 2
        channels = overrides.get("in_channels", shape[0] if shape else 1)
        image["spatial_shape"] = [int(channels), *(size if size is not None else shape[1:])]
        if isinstance(overrides.get("num_frames"), int):
            image["num_channels"] = overrides["num_frames"]
            image["channel_def"] = {str(t): f"frame {t}" for t in range(overrides["num_frames"])}
    elif size is not None:
        image["spatial_shape"] = list(size)
    pred = fmt.setdefault("outputs", {}).setdefault("pred", {})
    pred.update({"num_channels": len(classes), "spatial_shape": [len(classes)],
                 "channel_def": {str(i): n for i, n in enumerate(classes)}})
    _write_json(dst / "metadata.json", meta)
    if (src / "inference.json").is_file():
        config = _read_json(src / "inference.json")
        config["bundle_root"] = str(Path(bundle_root if bundle_root is not None else model_dir).resolve())
        for key in DATA_KEYS:
            if key in config and key in overrides:
                config[key] = overrides[key]
        _write_json(dst / "inference.json", config)
    if (src / "logging.conf").is_file():
        shutil.copyfile(src / "logging.conf", dst / "logging.conf")
    return Path(model_dir)


# ====================================================================================================================
# lock files of a training run (monai_das.handlers.checkpoint.hold_checkpoint_folder)
# ====================================================================================================================
def _owner(folder: Path) -> str:
    return lock_owner(folder) or "owner unknown"


def release_stale_lock(folder: str | os.PathLike) -> str | None:
    """
    Delete the lock files (:data:`LOCK_NAME`, :data:`OWNER_NAME`) that a training run killed or failed in ``folder``
    (a ``models/`` folder) left behind, with a warning naming that run; returns its owner text (``None``: no lock
    files). The OS lock itself dies with its process, so a stale file locks nothing; it is deleted so that nobody
    (the infer task warns about it) takes the folder for one being written.

    Raises:
        RuntimeError: the lock is held: a training run (of another process) is writing into ``folder`` now.
    """
    from filelock import Timeout, UnixFileLock, WindowsFileLock

    folder = Path(folder)
    lock_file = folder / LOCK_NAME
    if not lock_file.exists() and not (folder / OWNER_NAME).exists():
        return None
    owner = _owner(folder)
    if lock_file.exists():
        lock = (WindowsFileLock if os.name == "nt" else UnixFileLock)(str(lock_file), fallback_to_soft=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RuntimeError(
                f"a training run is writing into '{folder}' ({owner}): wait for it to finish (or stop it); a second "
                "run there would overwrite its checkpoints."
            ) from None
        except (NotImplementedError, OSError) as e:  # no OS file locks on this file system: cannot tell
            logger.warning(f"'{lock_file}' ({owner}) cannot be checked ({e}); left in place.")
            return None
        try:
            (folder / OWNER_NAME).unlink(missing_ok=True)
            lock_file.unlink(missing_ok=True)
        finally:
            lock.release(force=True)
    else:
        (folder / OWNER_NAME).unlink(missing_ok=True)
    logger.warning(f"removed the lock files of a training run in '{folder}' that did not complete ({owner}): its "
                   "process has ended (killed, or stopped with an error).")
    return owner


# ====================================================================================================================
# the task
# ====================================================================================================================
class DASTrain(BundleTrainTask):
    """
    Train the DAS bundle on the datastore's classification labels (see the module docstring).

    Reuses ``BundleTrainTask``'s set-up (the bundle's ``configs/train.json`` and ``metadata.json``: ``is_valid``,
    description and version) and replaces its run: the DAS train config reads a datalist file
    (``--datalist``) instead of ``train#dataset#data``, splits training/validation by patient itself, and runs in a
    subprocess (its output goes to ``<model_dir>/monailabel/train.log``).

    Args:
        bundle_path: the DAS bundle (its ``configs/`` are used, never written).
        model_dir: the app's model folder: ``models/model.pt`` and ``eval/`` of the last completed run, the configs
            the infer task loads, and ``monailabel/`` (datalist, command, log, stats, and ``training/``: the
            ``--bundle_root`` of a run, published into ``model_dir`` when it completes; module docstring).
        labels: the class names (index = position); ``None``: the classes found in the datastore.
        spatial_size: the network's ``[D, H, W]`` grid (studies are resized to it), a video bundle's frame
            ``[H, W]``; ``None``: the bundle metadata's input ``spatial_shape`` (a video bundle's ``[C, H, W]``: its
            ``[H, W]``), unless ``overrides`` give ``size`` or ``spatial_size``.
        label_tag: the label tag holding the classes (default ``"final"``).
        max_epochs: default of the request's ``max_epochs`` (``None``: the train config's ``max_epochs``).
        overrides: more bundle overrides for every run (e.g. ``{"batch_size": 4}``), set by the app, never by a
            request.
        python: interpreter of the training subprocess (default: this one).
        timeout: seconds before the training subprocess is killed (``None``: no limit).
    """

    def __init__(
        self,
        bundle_path: str | os.PathLike,
        model_dir: str | os.PathLike,
        labels: Sequence[str] | None = None,
        spatial_size: Sequence[int] | None = None,
        label_tag: str = DefaultLabelTag.FINAL,
        max_epochs: int | None = None,
        overrides: Mapping[str, Any] | None = None,
        python: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.bundle_arg = str(bundle_path)
        super().__init__(str(bundle_path), conf={})
        self.model_dir = Path(model_dir).resolve()
        self.labels = list(labels) if labels is not None else None
        self.label_tag = str(getattr(label_tag, "value", label_tag))
        self.extra_overrides = dict(overrides or {})
        self.python = python
        self.timeout = timeout
        self._lock = threading.Lock()
        if not self.valid:  # BundleTrainTask found no configs/train.json (and logged it)
            self.description = "DAS training (no train config)"
            self.spatial_size, self.max_epochs = spatial_size, max_epochs or 1
            return
        self.layout = bundle_layout(bundle_path)
        if spatial_size is None and not {"size", "spatial_size"} & set(self.extra_overrides):  # theirs win
            shape = (_read_json(Path(bundle_path) / "configs" / "metadata.json").get("network_data_format", {})
                     .get("inputs", {}).get("image", {}).get("spatial_shape"))
            if isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) for s in shape):
                spatial_size = shape[1:] if self.layout == "video" else shape  # a clip's frame: [C, H, W]
        self.spatial_size = check_spatial_size(spatial_size, self.layout)
        default_epochs = self.bundle_config.get("max_epochs")
        self.max_epochs = int(max_epochs if max_epochs is not None else
                              default_epochs if isinstance(default_epochs, int) else 50)

    @property
    def run_dir(self) -> Path:
        return self.model_dir / RUN_SUBDIR

    @property
    def staging_dir(self) -> Path:
        """The training run's ``--bundle_root``; published into ``model_dir`` on success (module docstring)."""
        return self.run_dir / STAGING_SUBDIR

    def _clear_staging(self) -> Path:
        """A staging folder for a new run: emptied (its stale lock files named; a held lock refuses), or, with the
        ``resume`` override, kept when it holds ``models/last.pt`` (a killed run's), else seeded with the served
        model's ``last.pt``, ``model.pt`` and card."""
        staging = self.staging_dir
        release_stale_lock(staging / "models")
        if (staging / COMPLETED_MARKER).is_file():  # a completed run whose publishing was cut short: finish it
            logger.warning(f"'{staging}' holds a completed training run that was not published in full (its publishing "
                           "stopped half-way): publishing it now, before the new run.")
            self._publish(staging)
        try:  # as the bundle reads its --resume (the run is given the same value)
            resume = flag(self.extra_overrides.get("resume"))
        except ValueError as e:
            raise ValueError(f"train_overrides 'resume': {e}") from None
        if resume:
            if (staging / "models" / "last.pt").is_file():
                logger.info(f"resume: continuing the run in '{staging}' (its models/last.pt).")
                return staging
            shutil.rmtree(staging, ignore_errors=True)
            (staging / "models").mkdir(parents=True)
            for name in ("last.pt", "model.pt", "metadata.json"):
                if (self.model_dir / "models" / name).is_file():
                    shutil.copy2(self.model_dir / "models" / name, staging / "models" / name)
            return staging
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def _publish(self, staging: Path) -> None:
        """Move a completed run's files from ``staging`` into ``model_dir`` (module docstring), ``model.pt`` last."""
        served = self.model_dir
        release_stale_lock(served / "models")  # a run into the served folder itself (an older app, a bundle by hand)
        for sub in ("configs", "models"):
            (served / sub).mkdir(parents=True, exist_ok=True)
        for f in sorted((staging / "configs").glob("*")):
            if f.is_file():
                os.replace(f, served / "configs" / f.name)
        if (staging / "datalist.json").is_file():
            os.replace(staging / "datalist.json", self.run_dir / "datalist.json")
        for entry in sorted(staging.iterdir()):  # eval/ (the run's reports), anything else the run wrote
            if entry.name in ("configs", "models", COMPLETED_MARKER):
                continue
            target = served / entry.name
            if entry.is_dir():
                old = self.run_dir / f".{entry.name}.replaced"
                shutil.rmtree(old, ignore_errors=True)
                if target.exists():
                    target.rename(old)
                entry.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(entry, target)
        files = [f for f in (staging / "models").iterdir() if f.is_file() and f.name not in (LOCK_NAME, OWNER_NAME)
                 and not f.name.endswith(".previous")]
        for f in sorted(files, key=lambda f: f.name == "model.pt"):  # model.pt last: the infer task reloads on it
            os.replace(f, served / "models" / f.name)
        if (served / "models" / "model.pt").is_file():  # newer than any export of the former model written meanwhile
            os.utime(served / "models" / "model.pt")  # (the infer task serves a checkpoint newer than model.onnx)
        shutil.rmtree(staging, ignore_errors=True)

    def config(self) -> dict[str, Any]:
        return {"max_epochs": self.max_epochs, "device": device_list()}

    def stats(self) -> dict[str, Any]:
        path = self.run_dir / "train_stats.json"
        try:
            return _read_json(path) if path.is_file() else {}
        except (OSError, ValueError):
            return {}

    def missing_bundle_keys(self, overrides: Mapping[str, Any]) -> list[str]:
        """The override keys (top-level part) that the bundle's train config does not define."""
        config = self.bundle_config.config if self.valid else {}
        return [k for k in overrides if k.split("#")[0] not in config]

    def request_notes(self, request: Mapping[str, Any]) -> list[str]:
        """
        Warnings (also logged) about a train request's keys that this task does not read: a misspelling of its own
        (``max_epoch``, ``epochs``: a typo cost a run of the default epochs without a word; trial T65a), a model
        setting (``keep_ratio``, ``method``, ...: the app's ``train_overrides`` set those, never a request), and a
        request value that the app's ``train_overrides`` replace. They go into the result's ``warnings``.
        """
        notes = []
        for key in request:
            if not isinstance(key, str) or key in TRAIN_REQUEST_KEYS:
                continue
            meant = misspelling_of(key, TRAIN_REQUEST_KEYS)
            if meant is not None:
                notes.append(f"request key {key!r} is not a key of this task and was ignored: did you mean {meant!r}? "
                             f"(its keys: {', '.join(TRAIN_REQUEST_KEYS)})")
            elif key not in MONAILABEL_REQUEST_KEYS:
                notes.append(f"request key {key!r} was ignored: a request sets {', '.join(TRAIN_REQUEST_KEYS)}; the "
                             "app's --conf train_overrides set the bundle's other settings (keep_ratio, method, ...).")
        for key in TRAIN_REQUEST_KEYS:
            if key in request and key in self.extra_overrides and request[key] != self.extra_overrides[key]:
                notes.append(f"request {key} {request[key]!r} was replaced by the app's train_overrides "
                             f"{key} {self.extra_overrides[key]!r}.")
        for note in notes:
            logger.warning(note)
        return notes

    def _request_settings(self, request: Mapping[str, Any]) -> tuple[int, str | None]:
        max_epochs = request.get("max_epochs", self.max_epochs)
        if isinstance(max_epochs, bool) or not (isinstance(max_epochs, int) or _INT_RE.match(str(max_epochs))) \
                or int(max_epochs) < 1:
            raise ValueError(f"max_epochs must be a positive integer, got {max_epochs!r}.")
        device = request.get("device")
        if isinstance(device, (list, tuple)):  # the train dialog's config offers a list (device_list())
            if len(device) > 1:  # MONAI Label takes the first one too (name_to_device); said, not silent
                logger.warning(f"device: this task trains in one process on one device: {device[0]!r} of "
                               f"{list(device)!r} (multi-GPU training: the bundle's multi_gpu_train.json with "
                               "torchrun).")
            device = device[0] if device else None
        if device is not None:
            # the dialog's names (device_list(): "cpu", a GPU's name, "<name>:<i>") as MONAI Label maps them
            device = str(device_map().get(str(device).strip(), device)).strip().lower()
            if not _DEVICE_RE.match(device):
                raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or a device name of the train dialog "
                                 f"({', '.join(device_map()) or 'none here'}), got {request.get('device')!r}.")
            import torch

            if device.startswith("cuda") and not torch.cuda.is_available():  # the run failed 14 s in, deep inside
                raise ValueError(f"device {request.get('device')!r}: this machine has no CUDA GPU (torch "
                                 f"{torch.__version__}); train with device 'cpu'.")
        return int(max_epochs), device

    def build_run(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        """
        Everything up to the training itself: the datalist (written and checked), the overrides, the model folder's
        configs and the command. Returns ``{"datalist", "dataset_dir", "classes", "num_images", "overrides",
        "command"}``.
        """
        if not self.valid:
            raise ValueError(f"'{self.bundle_arg}' is not a bundle with configs/train.json and configs/metadata.json.")
        max_epochs, device = self._request_settings(request or {})
        datalist, dataset_dir = datastore_datalist(datastore, self.label_tag, self.labels)
        classes = list(datalist["labels"].values())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        staging = self._clear_staging()
        datalist_path = staging / "datalist.json"  # published as <run_dir>/datalist.json with the model
        overrides = bundle_overrides(
            datalist=str(datalist_path), dataset_dir=dataset_dir, bundle_root=str(staging),
            max_epochs=max_epochs, spatial_size=self.spatial_size, device=device, extra=self.extra_overrides,
        )
        missing = self.missing_bundle_keys(overrides)
        extra = [k for k in missing if k in self.extra_overrides]
        if extra:  # a misspelt key of the app's train_overrides, e.g. max_epoch
            import difflib

            config = list(self.bundle_config.config) if self.valid else []
            hints = "; ".join(f"{k!r}: did you mean {close[0]!r}?" if close else repr(k) for k in extra
                              for close in [difflib.get_close_matches(k.split("#")[0], config, n=1)])
            raise ValueError(f"train_overrides: the bundle's train config '{self.bundle_config_path}' does not "
                             f"define {hints}")
        if missing:
            raise ValueError(
                f"the bundle's train config '{self.bundle_config_path}' does not define {missing}: this bundle cannot "
                "train on a datalist (the app needs a DAS bundle whose train config reads --datalist)."
            )
        _write_json(datalist_path, datalist)
        from monai_das.data import load_datalist  # the bundle's own reader: refuse a bad datalist before training

        load_datalist(datalist_path, dataset_dir=dataset_dir, split="training")
        # the configs the infer task will load once published: bundle_root and datalist where they will be then
        prepare_model_dir(self.bundle_path, staging, {**overrides, "datalist": str(self.run_dir / "datalist.json")},
                          classes, bundle_root=self.model_dir)
        command = bundle_command(self.bundle_path, overrides, python=self.python)
        _write_json(self.run_dir / "command.json", command)
        return {"datalist": str(datalist_path), "dataset_dir": dataset_dir, "classes": classes,
                "num_images": len(datalist["training"]), "overrides": overrides, "command": command,
                "staging": str(staging)}

    def _run_command(self, cmd: list[str], env: Mapping[str, str]  # type: ignore[override]
                     ) -> tuple[int, list[str], dict[str, Any]]:
        """
        Run ``cmd`` in the staging folder, output to ``train.log`` and stdout; ``(exit code, lines for an error
        message, notes)``: the exception lines (``ValueError: ...``, the root cause of a chained traceback first) and
        the last lines; the run's ``summary`` line and its ``warnings`` (at most :data:`MAX_RUN_WARNINGS`).
        """
        tail: deque[str] = deque(maxlen=15)
        errors: list[str] = []
        # the run's warnings and its "training done: ..." line, for the result (they were in train.log only: a
        # published model at chance said nothing to the client; trial T65a)
        notes: dict[str, Any] = {"warnings": [], "summary": None}
        log_path = self.run_dir / "train.log"
        logger.info("DAS training: %s (log: %s)", " ".join(cmd), log_path)
        with open(log_path, "w", encoding="utf-8") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       cwd=str(self.staging_dir), env=dict(env))
            timer = threading.Timer(self.timeout, process.kill) if self.timeout else None
            if timer:
                timer.start()
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    log.write(line)
                    line = line.rstrip()
                    if line:
                        tail.append(line)
                        if _ERROR_LINE.match(line) and line not in errors and len(errors) < 5:
                            errors.append(line)
                        said = line.partition(" - WARNING - ")[2] or line.partition(" - INFO - ")[2]
                        if said.startswith("training done:"):
                            notes["summary"] = said
                        elif (" - WARNING - " in line and said not in notes["warnings"]
                              and len(notes["warnings"]) < MAX_RUN_WARNINGS):
                            notes["warnings"].append(said)
                        print(line, flush=True)
                rc = process.wait()
            finally:
                if timer:
                    timer.cancel()
        return rc, errors + (["..."] if errors else []) + list(tail), notes

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        """
        Run a train request (module docstring); one at a time per model folder: a request while another runs in
        this process waits for it, one while another process's request runs is refused naming it (MONAI Label runs a
        background train task in a subprocess and ``run_sync`` ones in the server: the second cleared the first's
        staging folder under it, which then failed on a lost working folder; trial T65a).
        """
        with self._lock:
            held = lock_folder(self.run_dir, REQUEST_LOCK, REQUEST_OWNER, lambda owner: (
                f"another train request of '{self.model_dir}' is running ({owner or 'owner unknown'}): wait for it to "
                "finish (its log: " + str(self.run_dir / "train.log") + "), or stop it."), what="train request")
            try:
                return self._train(request, datastore)
            finally:
                unlock_folder(held, self.run_dir, REQUEST_OWNER)

    def _train(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        logger.info("Train request: %s", dict(request or {}))
        notes = self.request_notes(request or {})
        run = self.build_run(request or {}, datastore)
        model = self.model_dir / "models" / "model.pt"
        staging = Path(run["staging"])
        staged = staging / "models" / "model.pt"
        before = staged.stat().st_mtime_ns if staged.is_file() else None  # resume: the model it started from
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        start = time.time()
        rc, tail, run_notes = self._run_command(run["command"], env)
        stats = {
            "start_ts": int(start), "total_time": round(time.time() - start, 3), "returncode": rc,
            "num_images": run["num_images"], "classes": run["classes"], "datalist": run["datalist"],
            "model": str(model), "staging": str(staging), "published": False, "command": run["command"],
            "log": str(self.run_dir / "train.log"), "warnings": notes,
            "summary": run_notes["summary"], "training_warnings": run_notes["warnings"],
        }
        _write_json(self.run_dir / "train_stats.json", stats)
        unchanged = (f"the served model '{model}' is unchanged" if model.is_file() else "no model is published")
        if rc != 0:
            how = f": killed by signal {-rc}" if rc < 0 else ""
            raise RuntimeError(
                f"DAS bundle training failed (exit code {rc}{how}); {unchanged} (this run's files: "
                f"'{staging}'); from {stats['log']}:\n" + "\n".join(tail)
            )
        if not staged.is_file() or staged.stat().st_mtime_ns == before:
            raise RuntimeError(
                f"DAS bundle training finished without writing a new model ('{staged}'): no validation ran, or no "
                f"epoch was kept as the best model (e.g. predictions that ignore the input); {unchanged}; see "
                f"{stats['log']}."
            )
        (staging / COMPLETED_MARKER).write_text(str(int(time.time())), encoding="utf-8")
        self._publish(staging)
        stats["published"] = True
        _write_json(self.run_dir / "train_stats.json", stats)
        logger.info("DAS training finished: %s", model)
        return stats
