"""bundle_info / bundle_dataset: synthetic, VesselMNIST3D (shared data) and POCUS clips (shared data)."""

from __future__ import annotations

import pytest
import torch

from monai_das.engines import bundle_dataset, bundle_info, flag, optional, resolve_data_dir


def test_synthetic():
    info = bundle_info("synthetic", size=16)
    assert info["layout"] == "volume" and info["num_frames"] == 16 and info["image_shape"] == [1, 16, 16, 16]
    ds = bundle_dataset("synthetic", "val", size=16, num_samples="7")
    assert len(ds) == 7
    item = ds[0]
    assert tuple(torch.as_tensor(item["image"]).shape) == (1, 16, 16, 16)
    assert resolve_data_dir("synthetic", None) is None


def test_vessel(medmnist_root):
    info = bundle_info("vesselmnist3d", size=28)
    assert info["num_classes"] == 2 and info["label_names"][1] == "aneurysm"
    ds = bundle_dataset("vesselmnist3d", "test", size=28, data_dir=medmnist_root, num_samples=5)
    assert len(ds) == 5 and tuple(torch.as_tensor(ds[0]["image"]).shape) == (1, 28, 28, 28)


def test_data_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MONAI_DAS_DATA", str(tmp_path))
    assert resolve_data_dir("vesselmnist3d", "null") == str(tmp_path / "medmnist3d")
    assert resolve_data_dir("pocus") == str(tmp_path / "video" / "covid19_lus_pocus")
    assert resolve_data_dir("pocus", "/x") == "/x"
    monkeypatch.delenv("MONAI_DAS_DATA")
    with pytest.raises(FileNotFoundError, match="MONAI_DAS_DATA"):
        bundle_dataset("pocus", "train")


def test_pocus(shared_data):
    root = shared_data / "video" / "covid19_lus_pocus"
    if not (root / "MANIFEST.csv").is_file():
        pytest.skip(f"POCUS clips not found in {root}")
    info = bundle_info("pocus", size=32, num_frames=8)
    assert info["layout"] == "video" and info["num_classes"] == 3 and info["image_shape"] == [8, 1, 32, 32]
    ds = bundle_dataset("pocus", "test", size=32, data_dir=root, num_samples=2, num_frames=8, cache_rate=0.0)
    assert len(ds) == 2
    assert tuple(torch.as_tensor(ds[0]["image"]).shape) == (8, 1, 32, 32)
    assert 0 <= int(ds[0]["label"]) < 3


def test_flags():
    assert flag("True") and flag("yes") and flag(1) and not flag("false") and not flag(None) and not flag("0")
    with pytest.raises(ValueError, match="boolean"):
        flag("maybe")
    assert optional("null") is None and optional("None") is None and optional(3) == 3
