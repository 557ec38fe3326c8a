"""LoadVideo(d): array and dict forms agree; fixed-length temporal resampling of long and short clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai.data import MetaTensor

from monai_das.transforms import LoadVideo, LoadVideod, temporal_resample_indices


@pytest.fixture(scope="module")
def ramp_clip(tmp_path_factory):
    """An MJPG .avi of 10 frames, 24×32, frame i has grey level 20·i (red-ish on the left half)."""
    import cv2

    path = tmp_path_factory.mktemp("clips") / "ramp.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (32, 24))
    for i in range(10):
        frame = np.full((24, 32, 3), 20 * i, np.uint8)
        frame[:, :16, 2] = 200  # BGR: red channel on the left
        writer.write(frame)
    writer.release()
    return path


def test_array_and_dict_agree(ramp_clip):
    arr = LoadVideo(num_frames=6, spatial_size=(12, 16), grayscale=False)(str(ramp_clip))
    d = LoadVideod("video", num_frames=6, spatial_size=(12, 16), grayscale=False)({"video": ramp_clip, "label": 3})
    assert isinstance(arr, MetaTensor) and tuple(arr.shape) == (6, 3, 12, 16)
    assert torch.equal(arr.as_tensor(), d["video"].as_tensor()) and d["label"] == 3
    assert torch.equal(arr.meta["kept_indices"], d["video"].meta["kept_indices"])
    assert arr.meta["original_num_frames"] == 10 and arr.meta["original_size"] == (24, 32)
    assert arr.meta["fps"] == pytest.approx(12.0) and arr.meta["reader"] == "opencv"
    # RGB order: the left half is red
    assert float(arr[0, 0, :, :4].mean()) > 0.7 and float(arr[0, 2, :, :4].mean()) < 0.1
    # kept frames are the uniform ones: grey level 20·i in the right half
    levels = (arr[:, 1, :, 12:].mean((1, 2)) * 255).round()
    expected = temporal_resample_indices(10, 6).float() * 20
    assert torch.allclose(levels, expected, atol=4)


def test_all_frames_and_grayscale(ramp_clip):
    clip = LoadVideo()(ramp_clip)
    assert tuple(clip.shape) == (10, 1, 24, 32) and clip.meta["kept_indices"].tolist() == list(range(10))


@pytest.mark.parametrize(
    "mode,expected",
    [("uniform", [0, 0, 1, 1, 2, 2, 3, 3]), ("loop", [0, 1, 2, 3, 0, 1, 2, 3]), ("edge", [0, 1, 2, 3, 3, 3, 3, 3])],
)
def test_short_clip_modes(mode, expected):
    assert temporal_resample_indices(4, 8, mode).tolist() == expected
    assert temporal_resample_indices(10, 4, mode).tolist() == [1, 3, 6, 8]  # long clips: uniform in every mode


def test_short_clip_is_lengthened(ramp_clip):
    clip = LoadVideo(num_frames=15, spatial_size=8, temporal_mode="loop")(ramp_clip)
    assert tuple(clip.shape) == (15, 1, 8, 8)
    assert clip.meta["kept_indices"].tolist() == list(range(10)) + list(range(5))
    assert torch.equal(clip[12], clip[2])


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="temporal_mode"):
        LoadVideo(temporal_mode="random")
    with pytest.raises(ValueError, match="num_frames"):
        LoadVideo(num_frames=0)
    with pytest.raises(ValueError, match="file path"):
        LoadVideo()(np.zeros((3, 4)))
    with pytest.raises(FileNotFoundError, match="absent.avi"):
        LoadVideod("image")({"image": str(tmp_path / "absent.avi")})


def test_single_frame_is_refused_unless_asked(tmp_path):
    """A one-frame GIF / single-frame DICOM is a still image: not silently repeated to num_frames frames."""
    from PIL import Image
    from pydicom.data import get_testdata_file

    gif = tmp_path / "still.gif"
    Image.fromarray(np.full((20, 24, 3), 120, np.uint8)).save(gif)
    for path in (gif, get_testdata_file("CT_small.dcm")):
        with pytest.raises(ValueError, match=r"has 1 frame\(s\), fewer than min_frames=2"):
            LoadVideo(num_frames=8, spatial_size=8)(path)
        with pytest.raises(ValueError, match="min_frames=2"):
            LoadVideod("image", num_frames=8)({"image": str(path)})
    clip = LoadVideo(num_frames=8, spatial_size=8, min_frames=1)(gif)
    assert tuple(clip.shape) == (8, 1, 8, 8) and clip.meta["kept_indices"].tolist() == [0] * 8
    with pytest.raises(ValueError, match="min_frames must be >= 1"):
        LoadVideo(min_frames=0)


def test_directory_is_not_called_missing(tmp_path):
    from monai_das.data import read_video

    with pytest.raises(IsADirectoryError, match=r"is a directory, expected a video file"):
        read_video(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        LoadVideo()(tmp_path)


def test_a_clip_shorter_than_min_frames_is_not_called_a_still(tmp_path):
    """A 3-frame clip below min_frames=5 was refused as "a still image is not a clip" (it is a clip, too short)."""
    from PIL import Image

    from monai_das.data.studies import LoadStudy

    gif = tmp_path / "short.gif"
    frames = [Image.fromarray(np.full((20, 24, 3), v, np.uint8)) for v in (40, 120, 200)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(ValueError, match=r"has 3 frame\(s\), fewer than min_frames=5: too short \(pass min_frames=3"):
        LoadVideo(num_frames=8, spatial_size=8, min_frames=5)(gif)
    recipe = {"layout": "video", "num_frames": 8, "spatial_size": [8, 8], "min_frames": 5}
    with pytest.raises(ValueError, match=r"has 3 frame\(s\), fewer than min_frames=5: too short \(a lower min_frames") as e:
        LoadStudy(recipe).load(str(gif))
    assert "still" not in str(e.value)
