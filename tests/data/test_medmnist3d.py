"""MedMNIST3D: real VesselMNIST3D files at both sizes, missing / corrupt files, metadata of all six datasets."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, EnsureTyped, RandFlipd

from monai_das.data import (
    MEDMNIST3D_NAMES,
    MedMNIST3DDataset,
    dataset_info,
    ensure_medmnist_file,
    get_dataset,
    medmnist_filename,
    medmnist_root,
)

OFFICIAL = {"train": 1335, "val": 191, "test": 382}
COUNTS = {"train": (1185, 150), "val": (169, 22), "test": (339, 43)}


@pytest.fixture(scope="module")
def vessel_root(shared_data):
    root = shared_data / "medmnist3d"
    for name in ("vesselmnist3d.npz", "vesselmnist3d_64.npz"):
        if not (root / name).is_file():
            pytest.skip(f"{name} not found in {root}")
    return root


@pytest.mark.parametrize("size", [28, 64])
def test_real_vessel_splits(vessel_root, size):
    for split, n in OFFICIAL.items():
        ds = MedMNIST3DDataset("vesselmnist3d", split, size, root=vessel_root)
        assert len(ds) == n
        assert tuple(np.bincount(ds.labels)) == COUNTS[split]
        item = ds[n - 1]
        assert item["image"].shape == (1, size, size, size)
        assert item["image"].dtype == np.float32
        assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
        assert set(np.unique(item["image"])) <= {0.0, 1.0}  # binary masks {0, 255} / 255
        assert item["label"].dtype == np.int64 and int(item["label"]) == int(ds.labels[-1])
    assert ds.num_classes == 2 and ds.label_names == ["vessel", "aneurysm"] and ds.in_channels == 1


def test_env_root_transform_and_loaders(vessel_root, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(vessel_root))
    assert medmnist_root() == vessel_root
    xf = Compose([RandFlipd("image", prob=1.0, spatial_axis=0), EnsureTyped("image")])
    ds = MedMNIST3DDataset(split="val", transform=xf)  # root from $MEDMNIST_ROOT
    raw = MedMNIST3DDataset(split="val", root=vessel_root)
    assert torch.equal(ds[3]["image"], torch.as_tensor(raw[3]["image"]).flip(1))
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 1, 28, 28, 28) and batch["label"].shape == (4,)
    cached = CacheDataset(raw.data[:8], transform=EnsureTyped("image"), progress=False)
    assert torch.equal(cached[5]["image"], torch.as_tensor(raw[5]["image"]))


def test_num_samples_subset(vessel_root):
    full = MedMNIST3DDataset("vesselmnist3d", "test", root=vessel_root)
    sub = get_dataset("vesselmnist3d", "test", data_dir=vessel_root, num_samples=10, seed=3)
    assert len(sub) == 10 and sub.num_classes == 2
    assert any(np.array_equal(sub[0]["image"], full[i]["image"]) for i in range(len(full)))
    again = get_dataset("vesselmnist3d", "test", data_dir=vessel_root, num_samples=10, seed=3)
    assert np.array_equal(sub.labels, again.labels) and np.array_equal(sub[9]["image"], again[9]["image"])


@pytest.mark.parametrize("name", MEDMNIST3D_NAMES)
@pytest.mark.parametrize("size", [28, 64])
def test_missing_file_error_names_file_and_folder(tmp_path, name, size):
    with pytest.raises(FileNotFoundError) as e:
        MedMNIST3DDataset(name, "train", size, root=tmp_path)
    msg = str(e.value)
    assert medmnist_filename(name, size) in msg and str(tmp_path) in msg and "download=True" in msg
    assert "--data_dir, else $MONAI_DAS_DATA/medmnist3d, else $MEDMNIST_ROOT" in msg  # the bundles' ways too
    assert ("_64.npz" in msg) == (size == 64)


def test_missing_file_names_the_later_place_that_holds_it(tmp_path, monkeypatch):
    """$MONAI_DAS_DATA/medmnist3d without the file hid a $MEDMNIST_ROOT holding it, and the error named only the empty
    folder (trial T61a): it names where the file is and the --data_dir that reads it."""
    root = tmp_path / "mm"
    root.mkdir()
    (root / medmnist_filename("organmnist3d", 28)).write_bytes(b"not read")
    monkeypatch.setenv("MEDMNIST_ROOT", str(root))
    with pytest.raises(FileNotFoundError, match=r"The file is in \$MEDMNIST_ROOT \('.*mm'\), which an earlier place "
                                                rf"in that order hid: give --data_dir {root}"):
        MedMNIST3DDataset("organmnist3d", "train", 28, root=tmp_path / "empty")
    monkeypatch.delenv("MEDMNIST_ROOT")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.medmnist holding it either
    with pytest.raises(FileNotFoundError) as e:
        MedMNIST3DDataset("organmnist3d", "train", 28, root=tmp_path / "empty")
    assert "The file is in" not in str(e.value)


def test_metadata_of_all_six():
    expected = {"organmnist3d": 11, "nodulemnist3d": 2, "adrenalmnist3d": 2, "fracturemnist3d": 3,
                "vesselmnist3d": 2, "synapsemnist3d": 2}
    for name, n in expected.items():
        info = dataset_info(name, size=64)
        assert info["num_classes"] == n == len(info["label_names"])
        assert info["in_channels"] == 1 and info["num_frames"] == 64
    with pytest.raises(ValueError, match="unknown"):
        dataset_info("pathmnist")
    with pytest.raises(ValueError, match="size"):
        MedMNIST3DDataset("vesselmnist3d", "train", 32)
    with pytest.raises(ValueError, match="split"):
        MedMNIST3DDataset("vesselmnist3d", "valid")


def test_truncated_file_is_a_clear_error(vessel_root, tmp_path):
    data = (vessel_root / "vesselmnist3d.npz").read_bytes()
    (tmp_path / "vesselmnist3d.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="md5") as e:
        MedMNIST3DDataset("vesselmnist3d", "train", root=tmp_path)
    assert "vesselmnist3d.npz" in str(e.value)
    with pytest.raises(RuntimeError, match="corrupt or truncated") as e:
        MedMNIST3DDataset("vesselmnist3d", "train", root=tmp_path, check_md5=False)
    assert str(tmp_path / "vesselmnist3d.npz") in str(e.value)


def _fake_npz(path, images, labels):
    np.savez_compressed(
        path, **{f"{s}_images": images for s in OFFICIAL}, **{f"{s}_labels": labels for s in OFFICIAL}
    )


def test_bad_contents(tmp_path):
    path = tmp_path / "vesselmnist3d.npz"
    _fake_npz(path, np.zeros((3, 28, 28, 28), np.float32), np.zeros((3, 1), np.uint8))
    with pytest.raises(ValueError, match="dtype float32, expected uint8"):
        MedMNIST3DDataset(root=tmp_path, check_md5=False)
    _fake_npz(path, np.zeros((3, 28, 28, 28), np.uint8), np.array([[0], [2], [1]], np.uint8))
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        MedMNIST3DDataset(root=tmp_path, check_md5=False)
    _fake_npz(path, np.zeros((3, 28, 28), np.uint8), np.zeros((3, 1), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        MedMNIST3DDataset(root=tmp_path, check_md5=False)
    _fake_npz(path, np.zeros((3, 28, 28, 28), np.uint8), np.zeros((3, 1), np.float64))
    with pytest.raises(ValueError, match=r"train_labels has shape \(3, 1\) / dtype float64"):  # as in the file
        MedMNIST3DDataset(root=tmp_path, check_md5=False)
    np.savez_compressed(path, train_images=np.zeros((3, 28, 28, 28), np.uint8), valid_labels=np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"lacks the arrays \['train_labels'\] \(it holds \['train_images', "
                                         r"'valid_labels'\]\)"):
        MedMNIST3DDataset(root=tmp_path, check_md5=False)
    # a valid-looking file that is not the official release fails the checksum
    _fake_npz(path, np.zeros((3, 28, 28, 28), np.uint8), np.zeros((3, 1), np.uint8))
    with pytest.raises(RuntimeError, match="md5"):
        MedMNIST3DDataset(root=tmp_path)
    assert len(MedMNIST3DDataset(root=tmp_path, check_md5=False)) == 3


def test_download_uses_medmnist_url_and_md5(vessel_root, tmp_path, monkeypatch):
    import monai.apps

    calls = []

    def fake_download(url, filepath, hash_val=None, hash_type="md5", **kw):
        calls.append((url, filepath, hash_val, hash_type))
        shutil.copy(vessel_root / "vesselmnist3d_64.npz", filepath)

    monkeypatch.setattr(monai.apps, "download_url", fake_download)
    root = tmp_path / "new"
    path = ensure_medmnist_file("vesselmnist3d", 64, root=root, download=True)
    assert path == root / "vesselmnist3d_64.npz" and path.is_file()
    url, filepath, md5, kind = calls[0]
    assert url.startswith("https://zenodo.org/") and "vesselmnist3d_64.npz" in url
    assert md5 == "6bb274a8846e1097066dcd64e2c4520f" and kind == "md5" and filepath == str(path)
    # present now: no second download
    ds = MedMNIST3DDataset("vesselmnist3d", "val", 64, root=root, download=True)
    assert len(ds) == 191 and len(calls) == 1
    # offline: urllib's bare URLError named the temporary file only (trial T64c); the file, folder and url now
    from urllib.error import URLError

    def offline(url, filepath, **kw):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(monai.apps, "download_url", offline)
    with pytest.raises(FileNotFoundError, match=r"'adrenalmnist3d\.npz' could not be downloaded to '.*new' from "
                                                r"https://zenodo\.org/.* \(URLError: \[Errno -2\] Name or service not "
                                                r"known; no network\?\)\. Put the official file there \(md5 \w+\)"):
        ensure_medmnist_file("adrenalmnist3d", 28, root=root, download=True)


def test_damaged_or_foreign_files_are_named(tmp_path, vessel_root):
    """Bytes damaged inside the compressed stream gave a bare zlib error, an error page saved under the name numpy's
    advice to unpickle it, and the official size-64 file under the size-28 name "corrupt" (trial T59a)."""
    path = tmp_path / "vesselmnist3d.npz"
    rng = np.random.default_rng(0)
    images = (rng.random((8, 28, 28, 28)) * 4).astype(np.uint8)  # compressible, so the middle is a deflate stream
    _fake_npz(path, images, np.zeros((8, 1), np.uint8))
    data = bytearray(path.read_bytes())
    data[len(data) // 6: len(data) // 6 + 64] = bytes(64)  # inside train_images, the first member
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="corrupt or truncated") as e:
        MedMNIST3DDataset(root=tmp_path, check_md5=False)
    assert str(path) in str(e.value)
    path.write_bytes(b"<!DOCTYPE html><html>rate limited</html>")
    with pytest.raises(RuntimeError, match=r"is no \.npz archive \(it starts with b'<!DOCTYPE html><'") as e:
        MedMNIST3DDataset(root=tmp_path, check_md5=False)
    assert "pickle" not in str(e.value)
    path.unlink()
    path.symlink_to(vessel_root / "vesselmnist3d_64.npz")
    with pytest.raises(RuntimeError, match=r"It is the official vesselmnist3d file of size 64: name it "
                                           r"'vesselmnist3d_64\.npz' and give --dataset vesselmnist3d --size 64"):
        MedMNIST3DDataset(root=tmp_path)
