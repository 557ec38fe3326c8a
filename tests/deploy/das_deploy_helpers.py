"""
Test helpers for the deployment tests (tests/deploy, tests/apps): tiny DAS bundles and small DICOM/NIfTI studies.

- :func:`make_checkpoint_bundle`: the real ``build_classifier("das", ...)`` on a 16³ grid, saved as a MONAI bundle
  (``configs/inference.json`` + ``configs/metadata.json`` + ``models/model.pt``), i.e. the checkpoint + config path.
- :func:`make_torchscript_standin`: a tiny scripted module with the same in/out contract as the exported DAS network
  (``B×1×D×H×W`` → logits ``B×2``, plus ``sample(x)`` returning ``(frames, matrix, indices)``), saved with the
  bundle metadata and config embedded the way ``monai.bundle ckpt_export`` does.
- :func:`make_onnx_bundle`: the real ``build_classifier("das", ...)`` on an 8×16×16 grid exported to ONNX by
  :func:`monai_das.engines.save_onnx` (the card embedded, ``num_samples`` input), in a bundle folder that also holds
  the checkpoint, the card and the config (every engine can run it).
- :func:`model_card`: a model card (``metadata.json`` with ``das_model``) as ``monai_das.handlers.ModelCardSaver``
  writes it after training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

GRID = (16, 16, 16)
LABELS = ["normal", "abnormal"]


def metadata(spatial=GRID, labels=LABELS) -> dict:
    return {
        "version": "0.0.1",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": list(spatial)}},
            "outputs": {"pred": {"type": "logits", "num_channels": len(labels),
                                 "channel_def": {str(i): n for i, n in enumerate(labels)}}},
        },
    }


def model_card(spatial=GRID, labels=LABELS, layout: str = "volume", in_channels: int = 1, slice_axis: int = 0,
               num_frames: int | None = None, method: str = "das", keep_ratio: float = 0.5, num_kept: int | None = None,
               recipe: dict | None = None) -> dict:
    """A model card as training writes it (``monai_das.handlers.build_model_card``): ``spatial`` is ``[D, H, W]``
    (volume) or a frame's ``[H, W]`` (video, with ``num_frames``)."""
    from monai_das.handlers import build_model_card
    from monai_das.networks import num_kept as default_num_kept

    spatial = list(spatial)
    t = int(num_frames if layout == "video" else spatial[slice_axis])
    image_shape = [in_channels, *spatial] if layout == "volume" else [t, in_channels, *spatial]
    if recipe is None:
        recipe = ({"layout": "volume", "spatial_size": spatial, "slice_axis": slice_axis, "axcodes": "RAS",
                   "pixdim": None, "intensity_range": None, "percentiles": [0.5, 99.5], "output_range": [0.0, 1.0],
                   "resize": "stretch", "min_frames": 2} if layout == "volume" else
                  {"layout": "video", "num_frames": t, "spatial_size": spatial, "grayscale": in_channels == 1,
                   "temporal_mode": "uniform", "min_frames": 2, "output_range": [0.0, 1.0]})
    facts = {
        "layout": layout, "spatial_size": spatial, "image_shape": image_shape,
        "slice_axis": slice_axis if layout == "volume" else None, "num_frames": t,
        "num_kept": num_kept if num_kept is not None else default_num_kept(t, keep_ratio),
        "in_channels": in_channels, "num_classes": len(labels), "label_names": list(labels), "method": method,
        "keep_ratio": keep_ratio, "temporal_head": "mean", "encoder": None, "encoder_kwargs": {}, "recipe": recipe,
        "source": "datalist", "datalist": "/data/list.json", "datalist_sha256": "0" * 64,
    }
    return build_model_card(metadata(), facts, {"val_auc": 0.75})


def inference_config(num_frames: int = GRID[0], method: str = "das", slice_axis: int = 0) -> dict:
    return {
        "bundle_root": ".",
        "num_frames": num_frames,
        "slice_axis": slice_axis,
        "network_def": {
            "_target_": "monai_das.networks.build_classifier",
            "method": method,
            "num_classes": len(LABELS),
            "num_frames": "@num_frames",
            "keep_ratio": 0.5,
            "layout": "volume",
            "slice_axis": "@slice_axis",
        },
    }


def make_checkpoint_bundle(root: Path, seed: int = 0) -> tuple[Path, nn.Module]:
    """A bundle folder with a checkpoint of the real DAS classifier; returns (folder, eager network)."""
    from monai_das.networks import build_classifier

    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    (root / "configs" / "inference.json").write_text(json.dumps(inference_config()))
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata()))
    torch.manual_seed(seed)
    net = build_classifier("das", num_classes=len(LABELS), num_frames=GRID[0], keep_ratio=0.5)
    calibrate_batchnorm(net, torch.rand(4, 1, *GRID))
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root, net


ONNX_GRID = (8, 16, 16)  # D×H×W, frames along D: T = 8, k = 4 trained


def make_onnx_bundle(root: Path, seed: int = 0) -> tuple[Path, nn.Module]:
    """
    A bundle folder ``root`` with ``models/model.onnx`` (:func:`monai_das.engines.save_onnx` of the real DAS
    classifier on :data:`ONNX_GRID`, keep_ratio 0.5, its card embedded), ``models/model.pt``,
    ``models/metadata.json`` (the same card) and ``configs/inference.json`` + ``configs/metadata.json``; returns
    (folder, eager network). About 15-20 s (the export).
    """
    from monai_das.engines.export import save_onnx
    from monai_das.networks import build_classifier

    t = ONNX_GRID[0]
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    (root / "configs" / "inference.json").write_text(json.dumps(inference_config(num_frames=t)))
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata(spatial=ONNX_GRID)))
    card = model_card(spatial=ONNX_GRID, keep_ratio=0.5)
    (root / "models" / "metadata.json").write_text(json.dumps(card))
    torch.manual_seed(seed)
    net = build_classifier("das", len(LABELS), t, in_channels=1, keep_ratio=0.5)
    gen = torch.Generator().manual_seed(seed)
    calibrate_batchnorm(net, torch.rand(4, 1, *ONNX_GRID, generator=gen))
    torch.save(net.state_dict(), root / "models" / "model.pt")
    save_onnx(net, root / "models" / "model.onnx", [1, *ONNX_GRID], metadata=card, check=False)
    return root, net


def calibrate_batchnorm(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """
    Set every BatchNorm's running statistics to those of one batch ``x`` and return ``net`` in eval mode: an
    untrained network with default statistics gives (almost) input-independent outputs in eval mode.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch → its statistics
    net.train()
    with torch.no_grad():
        net(x)
    for m in norms:
        m.momentum = 0.1
    return net.eval()


class TinyDAS(nn.Module):
    """
    Stand-in with the exported DAS network's contract: keeps the ``k`` slices (along D) with the highest mean
    intensity, classifies from their mean. ``sample(x)`` → ``(frames B×k×C×H×W, matrix B×k×T, indices B×k)``.
    """

    def __init__(self, k: int = 4, num_classes: int = 2) -> None:
        super().__init__()
        self.k = k
        self.fc = nn.Linear(1, num_classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.linspace(-4.0, 4.0, num_classes)[:, None])
            self.fc.bias.zero_()

    @torch.jit.export
    def sample(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        frames = x.movedim(2, 1)  # B×T×C×H×W
        score = frames.mean(dim=(2, 3, 4))
        idx = torch.sort(torch.topk(score, self.k, dim=1).indices, dim=1).values
        matrix = torch.nn.functional.one_hot(idx, frames.shape[1]).to(x.dtype)
        s = frames.shape
        kept = torch.gather(frames, 1, idx[:, :, None, None, None].expand(s[0], self.k, s[2], s[3], s[4]))
        return kept, matrix, idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, _, _ = self.sample(x)
        return self.fc(kept.mean(dim=(1, 2, 3, 4))[:, None] - 0.5)


def make_torchscript_standin(path: Path, k: int = 4, meta: dict | None = None,
                             config: dict | None = None) -> tuple[Path, nn.Module]:
    """``TinyDAS`` scripted and saved with ``metadata.json`` (default :func:`metadata`; a card with ``meta``) and
    ``inference.json`` embedded (as ckpt_export does)."""
    from monai.data import save_net_with_metadata

    net = TinyDAS(k).eval()
    scripted = torch.jit.script(net)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_net_with_metadata(scripted, str(path), meta_values=metadata() if meta is None else meta,
                           more_extra_files={"inference.json": json.dumps(config or inference_config()).encode()})
    return path, net


# ---------------------------------------------------------------------------------------------------- real files
def nibabel_anatomical() -> Path:
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    if not path.is_file():
        pytest.skip(f"nibabel test file {path} not installed")
    return path


def pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    if not found:
        pytest.skip(f"pydicom test file {name} not installed")
    return Path(found)


def write_dicom_series(folder: Path, num_slices: int = 6, rows: int = 12, cols: int = 10, modality: str = "MR",
                       series_uid: str | None = None, series_number: int = 1, shuffle: bool = True,
                       prefix: str = "img") -> list[Path]:
    """
    A synthetic axial series; slice ``i`` (InstanceNumber ``i+1``, z = 2·i mm) is filled with ``10·(i+1)`` plus a
    small gradient, so slice order can be read back from intensities. Files are written in a shuffled order.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), series_uid or generate_uid()
    order = np.random.default_rng(0).permutation(num_slices) if shuffle else np.arange(num_slices)
    paths = []
    for n, i in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{prefix}_{n:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = "Synthetic^Series", "SYN001"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "ACC1"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, series_number, int(i) + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * float(i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        img = np.full((rows, cols), 10 * (int(i) + 1), dtype=np.uint16) + np.arange(cols, dtype=np.uint16)[None]
        ds.PixelData = img.tobytes()
        pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
        paths.append(path)
    return paths


def write_multiframe_ct(path: Path, frames: int = 6, rows: int = 12, cols: int = 10) -> Path:
    """
    An Enhanced CT file (one multi-frame DICOM): frame ``i`` holds ``100·i`` HU plus ``10`` HU per column, stored
    with rescale intercept −1024; frames 2 mm apart along z (per-frame plane positions).
    """
    from dicom_files import write_enhanced

    img = np.stack([np.full((rows, cols), 1024 + 100 * i, np.int16) + np.arange(cols, dtype=np.int16)[None] * 10
                    for i in range(frames)])
    return write_enhanced(path, img, "CT", step=2.0, rescale=(-1024, 1))


def write_sr(path: Path) -> Path:
    """A DICOM file of modality SR (no image)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = BasicTextSRStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "SR"
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def write_nifti(path: Path, data: np.ndarray) -> Path:
    import nibabel

    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), str(path))
    return path


class WritesAFile(torch.nn.Module):
    """A TorchScript "model" whose forward writes a file of its choice (torch.from_file with shared=True)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mapped = torch.from_file(self.target, shared=True, size=5, dtype=torch.uint8)
        mapped.copy_(torch.tensor([112, 119, 110, 101, 100], dtype=torch.uint8))
        return x.flatten(1)[:, :2] * 0 + mapped[0].float() * 0  # used: not removed from the program as dead code
