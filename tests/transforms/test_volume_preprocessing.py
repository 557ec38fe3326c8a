"""LoadImaged on real NIfTI / DICOM files shipped by nibabel and pydicom, and the volume_preprocessing recipe."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import pytest
import torch

from monai.transforms import LoadImaged

from monai_das.transforms import VolumeToFramesd, volume_preprocessing

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory) -> Path:
    """nibabel's two-slice MR series (0.dcm, 1.dcm: same SeriesInstanceUID) in a folder of its own."""
    folder = tmp_path_factory.mktemp("series")
    for name in ("0.dcm", "1.dcm"):
        shutil.copy(NIB_DATA / name, folder / name)
    return folder


def test_load_imaged_real_files(dicom_series):
    from pydicom.data import get_testdata_file

    nifti = LoadImaged("image", reader="NibabelReader", ensure_channel_first=True)
    anat = nifti({"image": NIB_DATA / "anatomical.nii"})
    assert tuple(anat["image"].shape) == (1, 33, 41, 25)
    ex4d = nifti({"image": NIB_DATA / "example4d.nii.gz"})
    assert tuple(ex4d["image"].shape) == (2, 128, 96, 24)  # the 4th axis becomes channels
    itk = LoadImaged("image", reader="ITKReader", ensure_channel_first=True)
    ct = itk({"image": get_testdata_file("CT_small.dcm")})
    assert tuple(ct["image"].shape) == (1, 128, 128, 1)
    series = itk({"image": str(dicom_series)})
    assert tuple(series["image"].shape) == (1, 256, 256, 2)
    assert float(series["image"].pixdim[2]) == pytest.approx(3.0, abs=0.01)  # slice spacing from the positions


@pytest.mark.parametrize(
    "source,channels",
    [("anatomical.nii", 1), ("example4d.nii.gz", 2), ("series", 1), ("CT_small.dcm", 1)],
)
def test_recipe_gives_network_input(source, channels, dicom_series):
    from pydicom.data import get_testdata_file

    path = {"series": str(dicom_series), "CT_small.dcm": get_testdata_file("CT_small.dcm")}.get(
        source, NIB_DATA / source
    )
    reader = "ITKReader" if source in ("series", "CT_small.dcm") else None
    min_slices = 1 if source == "CT_small.dcm" else 2  # one CT slice: only when asked for
    xf = volume_preprocessing("image", spatial_size=(28, 28, 28), reader=reader, min_slices=min_slices)
    img = xf({"image": path})["image"]
    assert tuple(img.shape) == (channels, 28, 28, 28) and img.dtype == torch.float32
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0 and float(img.max()) > 0.5
    assert nib.aff2axcodes(img.affine.numpy()) == ("R", "A", "S")


def test_npy_volumes_with_and_without_a_channel_axis(tmp_path):
    """The recipe reads a 4D .npy as C×D×H×W and a 3D one as D×H×W, as the study check and the study layer do
    (MONAI's NumpyReader alone made the 4D array 1×C×D×H×W); object arrays stay refused."""
    import numpy as np

    from monai_das.data import check_study_shapes
    from monai_das.data.studies import LoadStudy

    rng = np.random.default_rng(0)
    np.save(tmp_path / "c.npy", rng.random((2, 5, 6, 7)).astype(np.float32))
    np.save(tmp_path / "v.npy", rng.random((5, 6, 7)).astype(np.float32))
    xform = volume_preprocessing(spatial_size=8, axcodes=None, percentiles=None)
    multi = xform({"image": str(tmp_path / "c.npy")})["image"]
    single = xform({"image": str(tmp_path / "v.npy")})["image"]
    assert multi.shape == (2, 8, 8, 8) and single.shape == (1, 8, 8, 8)
    assert check_study_shapes([str(tmp_path / "c.npy")], "volume")["shapes"][str(tmp_path / "c.npy")] == (2, 5, 6, 7)
    recipe = {"layout": "volume", "spatial_size": [8, 8, 8], "slice_axis": 0, "axcodes": None, "percentiles": None}
    assert torch.allclose(LoadStudy(recipe, in_channels=2)(tmp_path / "c.npy").as_tensor(), multi.as_tensor())
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(Exception) as refused:
        xform({"image": str(tmp_path / "o.npy")})
    assert "allow_pickle" in str(refused.getrepr(chain=True))


def test_recipe_options():
    path = NIB_DATA / "anatomical.nii"
    raw = LoadImaged("image", ensure_channel_first=True)({"image": path})["image"]
    # fixed intensity window
    win = volume_preprocessing(spatial_size=16, intensity_range=(0, 50), output_range=(-1, 1))({"image": path})["image"]
    assert tuple(win.shape) == (1, 16, 16, 16) and float(win.min()) >= -1 and float(win.max()) <= 1
    # resample to a spacing first, keep the aspect ratio (pad) instead of stretching
    pad = volume_preprocessing(spatial_size=32, pixdim=(2.0, 2.0, 2.0), resize="pad")({"image": path})["image"]
    assert tuple(pad.shape) == (1, 32, 32, 32)
    faces = [pad[0, 0], pad[0, -1], pad[0, :, 0], pad[0, :, -1], pad[0, :, :, 0], pad[0, :, :, -1]]
    assert any(float(f.abs().sum()) == 0.0 for f in faces)  # zero padding on the short axes
    stretched = volume_preprocessing(spatial_size=(32, 32, 32), pixdim=(2.0, 2.0, 2.0))({"image": path})["image"]
    assert all(float(f.abs().sum()) > 0.0 for f in [stretched[0, 0], stretched[0, -1], stretched[0, :, :, 0]])
    # on an already loaded MetaTensor, then to frames for a 2D encoder
    xf = volume_preprocessing(spatial_size=28, load=False)
    frames = VolumeToFramesd("image", axis=2)(xf({"image": raw}))["image"]
    assert tuple(frames.shape) == (28, 1, 28, 28)
    with pytest.raises(ValueError, match="resize"):
        volume_preprocessing(resize="crop")
    with pytest.raises(ValueError, match="spatial_size"):
        volume_preprocessing(spatial_size=(28, 28))


def test_2d_images_and_single_slices_are_refused(tmp_path):
    """A 2D image or one slice is not stretched into a 28³ volume that is constant along an axis, unless asked."""
    import numpy as np
    from pydicom.data import get_testdata_file

    from monai_das.transforms.preprocessing import RequireVolumed

    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(40, 50).astype(np.float32), np.eye(4)), flat)
    ct = get_testdata_file("CT_small.dcm")
    xf = volume_preprocessing(spatial_size=28)
    with pytest.raises(RuntimeError) as err:  # MONAI's Compose wraps the transform's ValueError
        xf({"image": flat})
    assert isinstance(err.value.__cause__, ValueError)
    assert "flat.nii.gz' is a 2D image (channel-first shape (1, 40, 50))" in str(err.value.__cause__)
    with pytest.raises(RuntimeError) as err:
        volume_preprocessing(spatial_size=28, reader="ITKReader")({"image": ct})
    cause = str(err.value.__cause__)
    assert "has 1 slice(s) along spatial axis 2" in cause and "CT_small.dcm" in cause
    one = volume_preprocessing(spatial_size=28, min_slices=1)({"image": flat})["image"]  # asked for: one slice
    assert tuple(one.shape) == (1, 28, 28, 28)
    with pytest.raises(ValueError, match="min_slices"):
        RequireVolumed("image", min_slices=0)
    with pytest.raises(ValueError, match=r"expected a volume C×D×H×W"):
        RequireVolumed("image")({"image": torch.zeros(1, 4, 4, 4, 4)})
    assert tuple(RequireVolumed("image", min_slices=1)({"image": torch.zeros(1, 4, 5)})["image"].shape) == (1, 4, 5, 1)
    # NaN outside a registered field of view: refused naming the file (the percentile scaling would be all NaN)
    holes = np.random.rand(20, 24, 16).astype(np.float32)
    holes[:3] = np.nan
    nan_file = tmp_path / "registered.nii.gz"
    nib.save(nib.Nifti1Image(holes, np.eye(4)), nan_file)
    with pytest.raises(RuntimeError) as err:
        xf({"image": nan_file})
    assert "registered.nii.gz' contains NaN or infinite values (channel-first shape (1, 20, 24, 16); values beyond float32" in str(
        err.value.__cause__)
    with pytest.raises(ValueError, match="contains NaN or infinite values"):
        RequireVolumed("image")({"image": np.full((1, 4, 4, 4), np.inf, np.float32)})


def test_require_volume_array_twin():
    from monai.data import MetaTensor

    from monai_das.transforms import RequireVolume
    from monai_das.transforms.preprocessing import RequireVolumed

    with pytest.raises(ValueError, match=r"'scan.nii' is a 2D image \(channel-first shape \(1, 40, 50\)\)"):
        RequireVolume()(MetaTensor(torch.zeros(1, 40, 50), meta={"filename_or_obj": "scan.nii"}))
    with pytest.raises(ValueError, match="1 slice"):
        RequireVolume()(torch.zeros(1, 8, 8, 1), name="series_a")
    assert RequireVolume(min_slices=1)(torch.zeros(1, 40, 50)).shape == (1, 40, 50, 1)
    assert RequireVolume()(torch.zeros(2, 3, 4, 5)).shape == (2, 3, 4, 5)
    # a volume D×H×W without its channel axis: the hint was min_slices=1, which made its 5 slices 5 channels of a
    # one-slice volume without a word; the dictionary twin named it "'image 'image''" (trial T63b)
    for min_slices in (2, 1):
        with pytest.raises(ValueError, match=r"^'image' has 3 axes \(5, 6, 7\), the first of 5: a volume D×H×W "
                                             r"without its channel axis\? Add it \(MONAI's EnsureChannelFirst"):
            RequireVolumed("image", min_slices=min_slices)({"image": torch.rand(5, 6, 7)})
    with pytest.raises(RuntimeError) as err:
        volume_preprocessing(load=False, spatial_size=8, min_slices=1)({"image": torch.rand(5, 6, 7)})
    assert "without its channel axis" in str(err.value.__cause__)
    assert RequireVolume(min_slices=1)(torch.zeros(4, 40, 50)).shape == (4, 40, 50, 1)  # RGBA: a 2D image still


@pytest.mark.parametrize("relative,channel_wise", [(False, False), (True, False), (False, True)])
def test_percentile_scaling_equals_monai(relative, channel_wise):
    """One NumPy selection for both percentiles gives MONAI's ScaleIntensityRangePercentiles output (float rounding)."""
    import numpy as np
    from monai.data import MetaTensor
    from monai.transforms import ScaleIntensityRangePercentiles, ScaleIntensityRangePercentilesd

    from monai_das.transforms import ScaleIntensityPercentiles, ScaleIntensityPercentilesd

    rng = np.random.default_rng(0)
    img = MetaTensor(torch.as_tensor(rng.gamma(2.0, 50.0, size=(2, 9, 10, 11)), dtype=torch.float32),
                     meta={"filename_or_obj": "x.nii.gz"})
    args = dict(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True, relative=relative, channel_wise=channel_wise)
    ours, theirs = ScaleIntensityPercentiles(**args)(img), ScaleIntensityRangePercentiles(**args)(img)
    assert isinstance(ours, MetaTensor) and ours.meta["filename_or_obj"] == "x.nii.gz"
    assert torch.allclose(ours.as_tensor(), theirs.as_tensor(), atol=1e-6)
    arr = img.numpy()
    assert np.allclose(ScaleIntensityPercentiles(**args)(arr), ScaleIntensityRangePercentiles(**args)(arr), atol=1e-6)
    d_ours = ScaleIntensityPercentilesd("image", **args)({"image": img})["image"]
    d_theirs = ScaleIntensityRangePercentilesd("image", **args)({"image": img})["image"]
    assert torch.allclose(d_ours.as_tensor(), d_theirs.as_tensor(), atol=1e-6)


def test_percentile_scaling_of_a_sparse_image_falls_back_to_min_max():
    """Equal percentiles (a sparse image, e.g. a VesselMNIST3D volume that is 0 at its 99.5th percentile): MONAI's
    range scaling divides by zero and returns the image unscaled and unclipped; here min-max scaling; a constant
    image becomes b_min."""
    import warnings

    from monai.transforms import ScaleIntensityRangePercentiles

    from monai_das.transforms import ScaleIntensityPercentiles

    img = torch.zeros(1, 10, 10, 10)
    img[0, 2, 3, 4], img[0, 5, 5, 5] = 255.0, 120.0  # 2 of 1000 voxels: the 99.5th percentile is 0
    args = dict(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert float(ScaleIntensityRangePercentiles(**args)(img).max()) == 255.0  # what MONAI gives
    out = ScaleIntensityPercentiles(**args)(img)
    torch.testing.assert_close(torch.as_tensor(out), img / 255.0)
    flat = ScaleIntensityPercentiles(**args)(torch.full((1, 4, 4, 4), 7.0))
    assert torch.equal(torch.as_tensor(flat), torch.zeros(1, 4, 4, 4))
    # relative: the output range follows the percentiles, and so does a constant image's value
    relative = {**args, "lower": 10, "upper": 90, "relative": True}
    flat = ScaleIntensityPercentiles(**relative)(torch.full((1, 4, 4, 4), 7.0))
    torch.testing.assert_close(torch.as_tensor(flat), torch.full((1, 4, 4, 4), 0.1))


def test_the_constant_image_warning_names_its_own_file_across_threads(caplog, monkeypatch):
    """The file name was kept on the transform, which the threads of a CacheDataset/ThreadDataLoader share: a constant
    image's warning named the file another thread had started on meanwhile (trial T71e)."""
    import threading

    import numpy as np
    from monai.data import MetaTensor

    import monai_das.transforms.preprocessing as prep

    xform = prep.ScaleIntensityPercentiles(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True)
    started, other_done = threading.Event(), threading.Event()
    percentile = np.percentile

    def paused(arr, q):  # the constant image's thread waits inside _normalize until the other file was scaled
        if float(np.ptp(arr)) == 0.0 and not other_done.is_set():
            started.set()
            other_done.wait(10)
        return percentile(arr, q)

    monkeypatch.setattr(prep.np, "percentile", paused)
    flat = MetaTensor(torch.full((1, 4, 4, 4), 7.0), meta={"filename_or_obj": "flat.nii.gz"})
    other = MetaTensor(torch.rand(1, 4, 4, 4), meta={"filename_or_obj": "other.nii.gz"})
    with caplog.at_level("WARNING"):
        first = threading.Thread(target=xform, args=(flat,))
        first.start()
        assert started.wait(10)
        xform(other)
        other_done.set()
        first.join(10)
    assert "flat.nii.gz" in caplog.text and "other.nii.gz" not in caplog.text


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"percentiles": [99.5, 0.5]}, r"percentiles .* lower < upper"),
        ({"percentiles": [5, 5]}, r"percentiles .* lower < upper"),
        ({"percentiles": [0, 101]}, r"percentiles .* <= 100"),
        ({"intensity_range": [400, -1000]}, r"intensity_range .* a_min < a_max, got \[400, -1000\]"),
        ({"intensity_range": [0, 0]}, r"intensity_range .* a_min < a_max"),
        ({"output_range": [1, 0]}, r"output_range .* b_min < b_max"),
    ],
)
def test_intensity_options_that_would_invert_or_flatten_are_refused(bad, match):
    """Swapped or equal percentiles, an inverted or empty window, an inverted output range: MONAI's transforms
    accept them and invert the image, divide by zero or (equal percentiles, here) fall back to min-max; refused in
    a recipe (model card, Deploy options), by :func:`volume_preprocessing` and by ScaleIntensityPercentiles."""
    from monai_das.transforms import ScaleIntensityPercentiles, check_recipe, volume_preprocessing

    with pytest.raises(ValueError, match="recipe " + match):
        check_recipe({"layout": "volume", "spatial_size": 8, **bad})
    with pytest.raises(ValueError, match=match):
        volume_preprocessing("image", 8, **bad)
    if "percentiles" in bad and bad["percentiles"][1] <= 100:
        with pytest.raises(ValueError, match="lower < upper"):
            ScaleIntensityPercentiles(*bad["percentiles"], b_min=0.0, b_max=1.0)


def test_intensity_window_that_flattens_a_volume_is_warned(tmp_path, caplog):
    """A CT window in HU on a volume in other units trained and predicted on a blank volume without a word."""
    import logging

    import nibabel as nib
    import numpy as np

    from monai_das.data.studies import LoadStudy
    from monai_das.transforms import CheckIntensityWindow, CheckIntensityWindowd, window_warning

    rng = np.random.default_rng(0)
    hu = rng.normal(-300.0, 400.0, (12, 12, 12)).astype(np.float32)  # a CT-like volume in HU
    unit = (hu - hu.min()) / (hu.max() - hu.min())  # the same volume already scaled to [0, 1]
    assert window_warning(hu, (-1000, 400)) is None  # the window fits its units
    assert window_warning(unit, (0, 1)) is None
    assert "maps it to almost one value" in window_warning(unit, (-1000, 400), "u.nii")  # all inside, tiny span
    assert "% of its voxels lie outside" in window_warning(np.round(hu), (0, 1), "h.nii")  # HU on a [0, 1] window
    mask = (rng.random((12, 12, 12)) < 0.035).astype(np.float32) * 255  # a MedMNIST-like 0/255 mask, window [0, 255]
    assert window_warning(mask, (0, 255)) is None
    assert "'h.nii'" in window_warning(np.full((4, 4, 4), 3000.0), (-1000, 400), "h.nii")  # all clipped
    # a CT exported without its rescale intercept (HU + 1024): its air still falls inside the HU window, its soft
    # tissue (and the lesion in it) above: clipped to one value without a word (trial S); in HU, bone alone is above
    body = np.concatenate([np.full(400, -1000.0), rng.uniform(-100, 100, 500), rng.uniform(300, 1500, 100)])
    assert window_warning(body, (-1000, 400)) is None and window_warning(body, (0, 80)) is None
    assert "60% of its voxels lie above the top of the intensity window intensity_range [-1000, 400]" in \
        window_warning(body + 1024, (-1000, 400), "s.dcm")
    check = CheckIntensityWindow((-1000, 400))
    with caplog.at_level(logging.WARNING, logger="monai_das.transforms.preprocessing"):
        assert check(unit, name="u.nii") is unit and check(unit, name="u.nii") is unit  # unchanged, warned once
        CheckIntensityWindowd("image", (-1000, 400))({"image": torch.as_tensor(hu)})
    assert caplog.text.count("'u.nii': the intensity window intensity_range [-1000, 400]") == 1
    assert caplog.text.count("the intensity window") == 1  # the fitting volume is not warned about
    caplog.clear()
    # the recipe checks before scaling; the study layer (inference, Deploy, MONAI Label) puts it in the report too
    path = tmp_path / "unit.nii.gz"
    nib.save(nib.Nifti1Image(unit, np.eye(4)), str(path))
    with caplog.at_level(logging.WARNING):
        out = volume_preprocessing(spatial_size=8, intensity_range=(-1000, 400))({"image": str(path)})["image"]
    assert float(out.max() - out.min()) < 1e-3 and "unit.nii.gz': the intensity window" in caplog.text
    study = LoadStudy({"layout": "volume", "spatial_size": [8, 8, 8], "intensity_range": [-1000, 400]}).load(str(path))
    assert sum("maps it to almost one value" in w for w in study.info["warnings"]) == 1
    assert not LoadStudy({"layout": "volume", "spatial_size": [8, 8, 8]}).load(str(path)).info.get("warnings")


def test_constant_volume_is_warned(tmp_path, caplog):
    """A volume of one value (every voxel 100) got a confident prediction without a word in Deploy and bundle
    inference, and trained silently: warned in the study's warnings and, in training, once per file."""
    import logging

    import nibabel as nib
    import numpy as np

    from monai_das.data.studies import LoadStudy
    from monai_das.transforms import (CheckIntensityWindow, ScaleIntensityPercentilesd, constant_warning,
                                      intensity_warning)

    blank = np.full((12, 12, 10), 100.0, np.float32)
    assert constant_warning(blank + np.arange(10, dtype=np.float32)) is None
    msg = constant_warning(blank, "b.nii.gz")
    assert msg.startswith("'b.nii.gz' holds a single value") and "is 100," in msg
    # the one rule LoadStudy and CheckIntensityWindow share: constant first, then the window, none without a window
    assert intensity_warning(blank, (0, 1), "b.nii.gz") == msg
    assert "intensity window" in intensity_warning(blank + np.arange(10, dtype=np.float32), (-1000, -900))
    assert intensity_warning(blank + np.arange(10, dtype=np.float32), None) is None
    path = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(blank, np.diag([0.7, 0.7, 5.0, 1.0])), str(path))
    for extra in ({}, {"intensity_range": [0, 255]}):  # percentiles (default) and a window: said once, as constant
        study = LoadStudy({"layout": "volume", "spatial_size": [8, 8, 8], **extra}).load(str(path))
        warned = study.info.get("warnings") or []
        assert len(warned) == 1 and f"'{path}' holds a single value" in warned[0] and "is 100," in warned[0], extra
    # training: the percentile scaling and the window check log it once per file
    image = volume_preprocessing(spatial_size=8, load=True, check_window=False).transforms[0]({"image": str(path)})
    scale, window = ScaleIntensityPercentilesd("image", 0.5, 99.5, 0.0, 1.0, clip=True), CheckIntensityWindow((0, 255))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.transforms.preprocessing"):
        for _ in range(2):
            assert float(scale(dict(image))["image"].max()) == 0.0
            window(image["image"])
    assert caplog.text.count(f"'{path}' holds a single value") == 2  # once by each transform
    assert "intensity window" not in caplog.text
