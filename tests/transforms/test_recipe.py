"""
recipe_transforms(recipe) equals the bundles' own transform lists built from the same settings (configs/inference.json
through monai.bundle.ConfigParser), and so does the study layer's LoadStudyd (the bundles' ``preprocessing``).
"""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_das.transforms import check_recipe, recipe_transforms

REPO = Path(__file__).resolve().parents[2]
VOLUME_CONFIG = REPO / "bundles" / "das_volume_classification" / "configs" / "inference.json"
VIDEO_CONFIG = REPO / "bundles" / "das_video_classification" / "configs" / "inference.json"


def _parser(config: Path, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    parser.update({"device": "$torch.device('cpu')", **overrides})
    return parser


def _plain(x) -> torch.Tensor:
    return (x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)).float()


@pytest.fixture(scope="module")
def volume_list(tmp_path_factory):
    """A datalist CSV of NIfTI volumes (oblique spacing, one axis flipped) so that the configs' file transforms run."""
    root = tmp_path_factory.mktemp("recipe_volumes")
    rng = np.random.default_rng(0)
    affine = np.diag([-1.5, 0.8, 2.0, 1.0])
    rows = ["image,label,group"]
    for i in range(6):
        data = (rng.random((20, 18, 12)) * 300 - 100).astype(np.float32)
        data[5:9, 4:10, 3:7] += 400 * (i % 2)
        nib.save(nib.Nifti1Image(data, affine), root / f"v{i}.nii.gz")
        rows.append(f"v{i}.nii.gz,{'ab'[i % 2]},p{i}")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize(
    "overrides",
    [{}, {"intensity_range": [-50.0, 250.0]}, {"axcodes": None, "percentiles": [2.0, 98.0], "slice_axis": 2}],
    ids=["defaults", "ct_window", "native_orientation"],
)
def test_volume_recipe_equals_config_lists(volume_list, tmp_path, overrides):
    parser = _parser(VOLUME_CONFIG, bundle_root=str(tmp_path), datalist=str(volume_list / "list.csv"),
                     spatial_size=[14, 12, 10], split="val", **overrides)
    recipe = parser.get_parsed_content("recipe")
    assert check_recipe(recipe)["spatial_size"] == [14, 12, 10]
    config_list = parser.get_parsed_content("source_dataset#transform")  # the config's own LoadImaged ... list
    preprocessing = parser.get_parsed_content("preprocessing")  # the study layer: LoadStudyd(recipe)
    path = str(volume_list / "v1.nii.gz")
    expected = _plain(config_list({"image": path})["image"])
    assert tuple(expected.shape) == (1, 14, 12, 10)
    by_recipe = recipe_transforms(recipe)({"image": path})["image"]
    torch.testing.assert_close(_plain(by_recipe), expected, rtol=0, atol=0)
    loaded = preprocessing({"image": path})
    torch.testing.assert_close(_plain(loaded["image"]), expected, rtol=0, atol=0)
    src = loaded["image"].meta["source_indices"].tolist()  # frames along slice_axis → slices of the file
    axis = recipe["slice_axis"]
    assert len(src) == [14, 12, 10][axis] and src in (sorted(src), sorted(src, reverse=True))
    assert loaded["image_study"].info["source_axis"] == axis  # the affine has no rotation: same file axis
    if overrides.get("axcodes", "RAS") == "RAS" and axis == 0:
        assert src[0] > src[-1]  # the file's x axis is flipped (-1.5 mm): RAS runs backwards through it


def test_video_recipe_equals_config_lists(tmp_path):
    from PIL import Image

    clips = tmp_path / "clips"
    clips.mkdir()
    rows = ["image,label,group"]
    for i in range(4):
        frames = [Image.fromarray(np.full((20, 26, 3), 20 * t + 30 * (i % 2), np.uint8)) for t in range(10)]
        frames[0].save(clips / f"c{i}.gif", save_all=True, append_images=frames[1:], duration=100)
        rows.append(f"clips/c{i}.gif,{'ab'[i % 2]},p{i}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    parser = _parser(VIDEO_CONFIG, bundle_root=str(tmp_path / "bundle"), datalist=str(tmp_path / "list.csv"),
                     num_frames=8, size=16, split="val")
    recipe = parser.get_parsed_content("recipe")
    path = str(clips / "c1.gif")
    expected = _plain(parser.get_parsed_content("source_dataset#transform")({"image": path})["image"])
    assert tuple(expected.shape) == (8, 1, 16, 16)
    torch.testing.assert_close(_plain(recipe_transforms(recipe)({"image": path})["image"]), expected, rtol=0, atol=0)
    loaded = parser.get_parsed_content("preprocessing")({"image": path})
    torch.testing.assert_close(_plain(loaded["image"]), expected, rtol=0, atol=0)
    from monai_das.transforms import uniform_indices

    assert loaded["image"].meta["source_indices"].tolist() == uniform_indices(10, 8).tolist()  # the GIF's frames


def test_recipe_checks_and_options():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['spacing'\]"):
        check_recipe({"layout": "volume", "spatial_size": 8, "spacing": 1})
    with pytest.raises(ValueError, match="'layout' must be"):
        check_recipe({"spatial_size": 8})
    with pytest.raises(ValueError, match="needs 'num_frames'"):
        check_recipe({"layout": "video", "spatial_size": 8})
    with pytest.raises(ValueError, match="'slice_axis' must be 0, 1 or 2"):
        check_recipe({"layout": "volume", "spatial_size": 8, "slice_axis": 3})
    # values that are no int named no key ("invalid literal for int() with base 10: 'axial'"), or were cut (1.5 → 1)
    for key, value, rule in (("slice_axis", "axial", "0, 1 or 2"), ("slice_axis", 1.5, "0, 1 or 2"),
                             ("min_frames", "two", ">= 1"), ("spatial_size", [8, "a", 8], "a positive int or")):
        refusal = rf"^recipe '{key}' must be {re.escape(rule)}.*got {re.escape(repr(value))}"
        with pytest.raises(ValueError, match=refusal):
            check_recipe({"layout": "volume", "spatial_size": 8, key: value})
    with pytest.raises(ValueError, match="'temporal_mode' must be one of"):
        check_recipe({"layout": "video", "spatial_size": 8, "num_frames": 4, "temporal_mode": "bounce"})
    # a model card's [0, inf] was taken, then every study failed in a JSON writer naming no card key (trial T71g)
    for key, value in (("intensity_range", [0, float("inf")]), ("percentiles", [float("nan"), 99])):
        with pytest.raises(ValueError, match=rf"recipe '{key}' must be null or two finite numbers"):
            check_recipe({"layout": "volume", "spatial_size": 8, key: value})
    # a hostile card's value of a million items, or a 10 MB string, is refused by a short error
    for key, value in (("spatial_size", [8] * 10**6), ("intensity_range", list(range(10**6))),
                       ("slice_axis", "x" * 10**7)):
        with pytest.raises(ValueError, match=rf"recipe '{key}' must be .*\.\.\. \(1000000(0| in all)") as refused:
            check_recipe({"layout": "volume", "spatial_size": 8, key: value})
        assert len(str(refused.value)) < 600
    r = check_recipe({"layout": "volume", "spatial_size": 8, "slice_axis": 1, "axcodes": None})
    assert r["spatial_size"] == [8, 8, 8] and r["num_frames"] == 8 and r["axcodes"] is None
    assert r["percentiles"] == (0.5, 99.5) and r["min_frames"] == 2 and r["resize"] == "stretch"
    with pytest.raises(ValueError, match="load=True"):
        recipe_transforms({"layout": "video", "spatial_size": 8, "num_frames": 4}, load=False)
    xforms = recipe_transforms({"layout": "volume", "spatial_size": 8}, load=False).transforms
    names = [type(t).__name__ for t in xforms]
    assert names[0] == "RequireVolumed" and "LoadImaged" not in names


@pytest.mark.parametrize("axcodes, why", [("RAX", "none of S/I"), ("RRS", "none of A/P"), ("ras", "give 'RAS'"),
                                          ("RASL", "4 letters"), (["R", "A"], "2 letters")])
def test_invalid_axcodes_are_refused_naming_the_option(axcodes, why):
    """RAX failed every image with MONAI's "Not all axis codes ..."; RRS was accepted by MONAI's Orientation."""
    from monai_das.transforms import check_axcodes, volume_preprocessing

    with pytest.raises(ValueError, match=rf"^axcodes .* is not an orientation \(.*{why}\): give three capital letters"):
        check_axcodes(axcodes)
    with pytest.raises(ValueError, match=r"recipe 'axcodes' .* is not an orientation"):
        check_recipe({"layout": "volume", "spatial_size": 8, "axcodes": axcodes})
    with pytest.raises(ValueError, match="is not an orientation"):
        volume_preprocessing(spatial_size=8, axcodes=axcodes)
    assert check_axcodes("SLP") == "SLP" and check_axcodes(["L", "P", "S"]) == "LPS"
    assert check_axcodes(None) is None and check_axcodes("none") is None


def test_pixdim_is_one_number_or_three(tmp_path):
    """pixdim [0.7, 0.7] was accepted and MONAI repeated the last value: a 5 mm slice axis resampled to 0.7 mm."""
    from monai_das.transforms import check_pixdim, volume_preprocessing

    for bad in ([0.7, 0.7], [1, 1, 1, 1], "x", [1, "a", 2], float("nan")):
        with pytest.raises(ValueError, match=r"must be null, one number .* or three numbers"):
            check_pixdim(bad)
    with pytest.raises(ValueError, match=r"MONAI would repeat the last value: \[0.7, 0.7, 0.7\]; give .* or "
                                         r"\[0.7, 0.7, 0\] to keep the native spacing"):
        check_pixdim([0.7, 0.7])
    with pytest.raises(ValueError, match="three numbers"):
        volume_preprocessing(spatial_size=8, pixdim=(0.7, 0.7))
    for good in (None, 1.5, [1.5], [0.7, 0.7, 0], (1, 1, 2), np.array([1.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0])):
        check_pixdim(good)  # arrays and tensors as Spacingd takes them
    # a model card of a model trained before two values were refused: read as MONAI's Spacing read it then
    assert check_recipe({"layout": "volume", "spatial_size": 8, "pixdim": [0.7, 0.5]})["pixdim"] == [0.7, 0.5, 0.5]
    # a value <= 0 keeps that axis' native spacing (MONAI's Spacing rule, as documented)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 10)).astype(np.float32),
                             np.diag([0.7, 0.7, 5.0, 1.0])), path)
    from monai.transforms import Compose, LoadImaged, Spacingd

    for pixdim, shape, spacing in (([1.4, 1.4, 0], (10, 10, 10), 5.0), ([1.4, 1.4, -1], (10, 10, 10), 5.0),
                                   (1.4, (10, 10, 33), 1.4)):
        check_pixdim(pixdim)
        out = Compose([LoadImaged("image", ensure_channel_first=True), Spacingd("image", pixdim)])({"image": path})
        assert tuple(out["image"].shape[1:]) == shape and float(out["image"].pixdim[2]) == pytest.approx(spacing)
