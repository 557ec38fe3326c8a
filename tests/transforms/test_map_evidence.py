"""MapEvidenced: a datalist's evidence (file numbering) follows orientation, resizing and temporal resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged, Orientationd, Resized

from monai_das.transforms import SOURCE_INDICES, MapEvidenced, map_evidence


def _volume(tmp_path, depth=31, flip_z=True):
    import nibabel as nib

    affine = np.diag([0.8, 0.8, -2.5 if flip_z else 2.5, 1.0])
    path = tmp_path / "case.nii.gz"
    nib.Nifti1Image(np.zeros((12, 14, depth), np.float32), affine).to_filename(str(path))
    return str(path)


def test_volume_evidence_follows_a_flip_and_a_resize(tmp_path):
    load = Compose([LoadImaged("image", image_only=True, ensure_channel_first=True), Orientationd("image", "RAS"),
                    Resized("image", (8, 8, 28), mode="area"),
                    MapEvidenced("evidence", image_key="image", frame_axis=3)])
    out = load({"image": _volume(tmp_path), "evidence": [0, 1, 30]})
    # the file's z runs inferior-wards (negative z step): RAS reverses it; 31 slices become 28
    assert out["evidence"][:3] == [0, 26, 27] and out["evidence"][3:] == [-1] * 25
    assert len(out["evidence"]) == 28  # padded to T: every item batches alike
    same = Compose([LoadImaged("image", image_only=True, ensure_channel_first=True),
                    MapEvidenced(frame_axis=3)])({"image": _volume(tmp_path, 20, flip_z=False), "evidence": [4, 5]})
    assert same["evidence"] == [4, 5] + [-1] * 18  # nothing resampled: the file's own numbering
    empty = load({"image": _volume(tmp_path), "evidence": []})
    assert empty["evidence"] == [-1] * 28


@pytest.mark.parametrize("depth,size,flip", [(31, 24, True), (31, 24, False), (57, 16, True), (10, 16, False),
                                             (20, 28, True), (40, 28, False)])
def test_volume_evidence_is_every_slice_that_shows_it_most(tmp_path, depth, size, flip):
    """A slice resized from 31 to 24 slices is shared half and half between two input slices; the nearest one alone
    was evidence, so a kept slice showing the whole finding counted as a miss (trial W). Checked on the content: each
    evidence slice's mapping is exactly the input slices where it shows most (area resizing, up and down, flipped)."""
    import nibabel as nib

    rng = np.random.default_rng(depth * size)
    load = Compose([LoadImaged("image", image_only=True, ensure_channel_first=True), Orientationd("image", "RAS"),
                    Resized("image", (4, 4, size), mode="area"),
                    MapEvidenced("evidence", image_key="image", frame_axis=3)])
    affine = np.diag([1.0, 1.0, -2.5 if flip else 2.5, 1.0])
    for i in sorted(rng.choice(depth, 4, replace=False).tolist()) + [0, depth - 1]:
        vol = np.zeros((4, 4, depth), np.float32)
        vol[:, :, i] = 1.0  # the evidence slice alone: the content says which input slices show it
        path = tmp_path / f"e{i}.nii.gz"
        nib.Nifti1Image(vol, affine).to_filename(str(path))
        out = load({"image": str(path), "evidence": [i]})
        profile = out["image"][0, 2, 2].numpy()
        shows_most = np.flatnonzero(profile >= profile.max() - 1e-6).tolist()
        assert [e for e in out["evidence"] if e >= 0] == shows_most, (i, profile.round(2).tolist())


def _resampled_finding(tmp_path, i: int, depth: int, slice_mm: float, size: int) -> tuple[np.ndarray, list[int]]:
    """A volume of ``depth`` slices of ``slice_mm`` whose slice ``i`` alone holds a finding, resampled to 3 mm slices
    and area-resized to ``size``: the profile of the network input along the slices, and its mapped evidence."""
    import nibabel as nib
    from monai.transforms import Spacingd

    load = Compose([LoadImaged("image", image_only=True, ensure_channel_first=True), Orientationd("image", "RAS"),
                    Spacingd("image", pixdim=(1.0, 1.0, 3.0)), Resized("image", (4, 4, size), mode="area"),
                    MapEvidenced("evidence", image_key="image", frame_axis=3)])
    vol = np.zeros((4, 4, depth), np.float32)
    vol[:, :, i] = 1.0
    path = tmp_path / f"s{i}.nii.gz"
    nib.Nifti1Image(vol, np.diag([1.0, 1.0, slice_mm, 1.0])).to_filename(str(path))
    out = load({"image": str(path), "evidence": [i]})
    return out["image"][0, 2, 2].numpy(), [e for e in out["evidence"] if e >= 0]


def test_volume_evidence_after_an_interpolating_resampling_is_the_nearest_slice(tmp_path):
    """Spacing (bilinear) before the area resize blends neighbouring slices, so whole-slice shares no longer tell
    which input slice shows an evidence slice most (review H6: 9 of 12 against the content): the nearest input slice
    then, as before; never a slice that shows less of it than a neighbour by more than the blending."""
    for i in range(1, 11):
        profile, kept = _resampled_finding(tmp_path, i, 12, 2.5, 12)
        assert len(kept) == 1 and profile[kept[0]] >= profile.max() - 0.15, (i, kept, profile.round(2).tolist())


@pytest.mark.parametrize("size", [16, 20])
def test_resampled_evidence_is_nearest_by_the_slices_true_positions(tmp_path, size):
    """2 mm slices resampled to 3 mm (16 slices), then resized to ``size`` (trial 60a: 20): the rounded file positions
    of the input slices tied two of them around a finding (slices 9 and 10, at file slices 13.5 and 15.0, rounded 13
    and 15, for a finding at 14), so a slice that shows none of it was evidence too (7 of 22 findings at size 16).
    Nearest by the continuous positions: at size 16 every finding maps to the one slice that shows it most; at 20
    (an area *up*-sampling, whose bins are not centred where the affine says) finding 14 maps to a slice that
    shows it most."""
    for i in range(1, 23) if size == 16 else [14]:
        profile, kept = _resampled_finding(tmp_path, i, 24, 2.0, size)
        shows_most = np.flatnonzero(profile >= profile.max() - 1e-3).tolist()
        assert kept == shows_most if size == 16 else kept and set(kept) <= set(shows_most), (i, kept, shows_most)


def test_volume_evidence_after_load_study_and_frames(tmp_path):
    """LoadStudyd records source_indices on a volume too: its evidence is mapped to the nearest slices, as for
    MONAI's loaders (it took the clips' exact-frame rule and dropped evidence of a resized volume); on a volume turned
    into frames (VolumeToFramesd) the mapping is refused (it read the wrong axis and answered wrongly)."""
    from monai_das.data import LoadStudyd
    from monai_das.transforms import VolumeToFramesd

    path = _volume(tmp_path, depth=20, flip_z=False)  # 12×14×20: 20 slices along the last axis
    recipe = {"layout": "volume", "spatial_size": [8, 8, 16], "slice_axis": 2}
    out = Compose([LoadStudyd("image", recipe=recipe, study_suffix=None),
                   MapEvidenced(frame_axis=3)])({"image": path, "evidence": [17]})
    by_monai = Compose([LoadImaged("image", image_only=True, ensure_channel_first=True), Orientationd("image", "RAS"),
                        Resized("image", (8, 8, 16), mode="area"),
                        MapEvidenced(frame_axis=3)])({"image": path, "evidence": [17]})
    assert out["evidence"] == by_monai["evidence"] and out["evidence"][0] >= 0
    frames = VolumeToFramesd("image", axis=2)(dict(by_monai, evidence=[17]))
    with pytest.raises(ValueError, match=r"put MapEvidenced before VolumeToFramesd"):
        MapEvidenced(frame_axis=0)(frames)
    # the same after LoadStudyd (its volumes carry source_indices), and a frame_axis that is not the slices' axis
    loaded = LoadStudyd("image", recipe=recipe, study_suffix=None)({"image": path, "evidence": [17]})
    with pytest.raises(ValueError, match=r"put MapEvidenced before VolumeToFramesd"):
        MapEvidenced(frame_axis=0)(VolumeToFramesd("image", axis=2)(dict(loaded)))
    with pytest.raises(ValueError, match=r"frame_axis 1 \(length 8\) is not the axis of the study's 16 slices"):
        MapEvidenced(frame_axis=1)(dict(loaded))
    # frames with frame_axis 1 (the channel-first volume's habit) gave [-1]; SourceIndicesd on frames gave all -1 (or
    # one number, frame_axis 1) without a word: both refused (trial T63b)
    from monai_das.transforms import SourceIndicesd

    with pytest.raises(ValueError, match=r"put MapEvidenced before VolumeToFramesd"):
        MapEvidenced(frame_axis=1)(frames)
    for axis in (0, 1):
        with pytest.raises(ValueError, match=r"a volume's slice numbering is mapped on the channel-first volume .*put "
                                             r"SourceIndicesd before VolumeToFramesd"):
            SourceIndicesd("image", frame_axis=axis)(frames)
    assert SourceIndicesd("image", frame_axis=3)(by_monai)[SOURCE_INDICES].shape == (16,)  # before: as it was


def test_volume_evidence_is_never_a_padding_slice(tmp_path):
    """resize "pad": padding slices took the edge slice's number, so evidence on the first/last slice was mapped onto
    the zeros around the study as well."""
    from monai_das.transforms import volume_preprocessing

    load = Compose([volume_preprocessing(keys="image", spatial_size=(16, 16, 16), resize="pad"),
                    MapEvidenced("evidence", image_key="image", frame_axis=3)])
    # 12×14×10 voxels: the longest side 14 → 16 scales the 10 slices to 11, padded (2, 3) to 16
    out = load({"image": _volume(tmp_path, depth=10, flip_z=False), "evidence": [0, 9]})
    assert out["evidence"] == [2, 12] + [-1] * 14  # the first and last real slices, not the padding beside them


def test_evidence_outside_the_file_is_refused(tmp_path):
    loaded = LoadImaged("image", image_only=True, ensure_channel_first=True)({"image": _volume(tmp_path)})
    with pytest.raises(ValueError, match=r"case\.nii\.gz'.*evidence index 31 is outside its 31 slices"):
        MapEvidenced(frame_axis=3)({**loaded, "evidence": [3, 31]})
    with pytest.raises(KeyError, match=r"evidence under 'evidence' but no image under image_key 'img'"):
        MapEvidenced(image_key="img", frame_axis=3)({**loaded, "evidence": [3]})
    with pytest.raises(ValueError, match=r"case\.nii\.gz'.*evidence index 2\.7 is not a whole number"):
        MapEvidenced(frame_axis=3)({**loaded, "evidence": [3, 2.7]})  # it was taken as 2 (trial T63b)
    assert MapEvidenced(frame_axis=3)({**loaded, "evidence": [3.0, -1]})["evidence"][0] >= 0  # 3.0 and padding: fine


def test_clip_evidence_follows_temporal_resampling(caplog):
    clip = MetaTensor(torch.zeros(4, 1, 8, 8), meta={SOURCE_INDICES: torch.tensor([0, 2, 4, 6]), "original_num_frames": 8})
    assert map_evidence([2, 3, 6], clip, frame_axis=0) == [1, 3, -1, -1]  # frame 3 was dropped by the resampling
    assert "none of its evidence frames" not in caplog.text
    # every evidence frame dropped: the item would count as one without evidence, said so
    with caplog.at_level("WARNING"):
        assert map_evidence([3, 5], clip, frame_axis=0) == [-1] * 4
    assert "none of its evidence frames [3, 5] is among the 4 frames the network sees" in caplog.text
    with pytest.raises(ValueError, match="outside its 8 frames"):
        map_evidence([8], clip, frame_axis=0)
    with pytest.raises(ValueError, match=r"frame_axis 5 is not a dimension of the image of shape \(4, 1, 8, 8\)"):
        map_evidence([1], clip, frame_axis=5)
    missing = MapEvidenced(frame_axis=0)({"image": clip})  # evidence is optional
    assert "evidence" not in missing
    # MapEvidenced's default frame_axis 1 on a clip: said what a clip needs, not only the volume's rule (trial U)
    with pytest.raises(ValueError, match=r"give frame_axis = 1 \+ the recipe's slice_axis for a channel-first volume, "
                                         r"0 for a T×C×H×W clip"):
        MapEvidenced()({"image": clip, "evidence": [2]})


def test_a_volume_without_its_record_is_warned_about(caplog, monkeypatch):
    """After EnsureTyped(track_meta=False), or on a plain tensor, file-numbered evidence was taken as the input's own
    slices without a word (wrong after any flip or resize; trial W): warned, once a process."""
    import logging

    import monai_das.transforms.preprocessing as pre

    monkeypatch.setattr(pre, "_WARNED_NO_RECORD", [])
    with caplog.at_level(logging.WARNING, logger=pre.__name__):
        for _ in range(2):
            assert map_evidence([3], torch.zeros(1, 8, 4, 4), frame_axis=1) == [3] + [-1] * 7
        # a clip after EnsureTyped(track_meta=False): its frames resampled, the evidence taken as the input's (trial U)
        for _ in range(2):
            assert map_evidence([3], torch.zeros(8, 1, 4, 4), frame_axis=0)[0] == 3
    assert caplog.text.count("a volume without the record of how its slices were produced") == 1  # once each kind
    assert caplog.text.count("a clip without the record of how its frames were produced") == 1
    assert "right after LoadVideod" in caplog.text and "right after the resize" in caplog.text


@pytest.mark.parametrize("depth,flip", [(31, True), (20, False), (10, True)])
def test_source_indices_are_those_of_the_study_layer(tmp_path, depth, flip):
    """SourceIndicesd (the evaluation's ``source_frames``) numbers the input slices of MONAI's loading as
    LoadStudyd (bundle inference, the Deploy app) numbers them: flipped, resized up and down."""
    from monai_das.data import LoadStudyd
    from monai_das.transforms import SourceIndicesd

    path = _volume(tmp_path, depth=depth, flip_z=flip)
    recipe = {"layout": "volume", "spatial_size": [8, 8, 16], "slice_axis": 2}
    study = LoadStudyd("image", recipe=recipe, study_suffix=None)({"image": path})
    by_monai = Compose([LoadImaged("image", image_only=True, ensure_channel_first=True), Orientationd("image", "RAS"),
                        Resized("image", (8, 8, 16), mode="area"),
                        SourceIndicesd("image", frame_axis=3)])({"image": path})
    expected = [int(i) for i in study["image"].meta[SOURCE_INDICES]]
    assert by_monai[SOURCE_INDICES].tolist() == expected and by_monai[SOURCE_INDICES].dtype == torch.long
    assert (expected[0] > expected[-1]) == flip  # a flipped file's first input slice is its last


def test_source_indices_of_padding_clips_and_plain_tensors(tmp_path):
    from monai_das.transforms import SourceIndices, SourceIndicesd, volume_preprocessing

    load = Compose([volume_preprocessing(keys="image", spatial_size=(16, 16, 16), resize="pad"),
                    SourceIndicesd("image", frame_axis=3)])
    src = load({"image": _volume(tmp_path, depth=10, flip_z=False)})[SOURCE_INDICES].tolist()
    # 10 slices scaled to 11 and padded (2, 3) to 16: the zeros around the study are no slice of the file
    assert src[:2] == [-1, -1] and src[-3:] == [-1, -1, -1] and src[2] == 0 and src[12] == 9
    clip = MetaTensor(torch.zeros(4, 1, 8, 8), meta={SOURCE_INDICES: [0, 3, 6, 9]})
    assert SourceIndices(frame_axis=0)(clip).tolist() == [0, 3, 6, 9]  # a clip's frames as LoadVideo recorded them
    assert SourceIndices(frame_axis=3)(torch.zeros(1, 8, 8, 5)).tolist() == [-1] * 5  # no record: unknown
    with pytest.raises(ValueError, match="one image key"):
        SourceIndicesd(["image", "label"])


def test_source_indices_of_a_dicom_series_are_its_instance_numbers(tmp_path):
    """A DICOM series folder read by MONAI's loader (by position, ITK): the slices are numbered in InstanceNumber order,
    as LoadStudyd (bundle inference, the Deploy reports) numbers them, whatever order the files are written in."""
    import pydicom
    from pydicom.data import get_testdata_file

    from monai_das.data import LoadStudyd
    from monai_das.transforms import SourceIndicesd

    folder = tmp_path / "series"
    folder.mkdir()
    uid = pydicom.uid.generate_uid()
    for i in range(5):  # InstanceNumber i + 1 at z + 5 i, files named in reverse
        d = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        d.InstanceNumber, d.SeriesInstanceUID = i + 1, uid
        x, y, z = (float(v) for v in d.ImagePositionPatient)
        d.ImagePositionPatient, d.SOPInstanceUID = [x, y, z - 5.0 * i], pydicom.uid.generate_uid()
        d.save_as(folder / f"s{4 - i}.dcm")
    recipe = {"layout": "volume", "spatial_size": [8, 8, 8], "slice_axis": 2}
    study = LoadStudyd("image", recipe=recipe, study_suffix=None)({"image": str(folder)})
    by_monai = Compose([LoadImaged("image", image_only=True, ensure_channel_first=True), Orientationd("image", "RAS"),
                        Resized("image", (8, 8, 8), mode="area"),
                        SourceIndicesd("image", frame_axis=3)])({"image": str(folder)})
    expected = [int(i) for i in study["image"].meta[SOURCE_INDICES]]
    assert by_monai[SOURCE_INDICES].tolist() == expected and sorted(set(expected)) == [0, 1, 2, 3, 4]
    assert expected[0] == 4 and expected[-1] == 0  # the lowest slice (RAS: first) is the last by InstanceNumber


def test_the_array_transform_is_the_dictionary_transforms_step(tmp_path):
    """MapEvidence (array form, called with the evidence and the image) gives what MapEvidenced writes."""
    from monai_das.transforms import MapEvidence

    load = Compose([LoadImaged("image", image_only=True, ensure_channel_first=True), Orientationd("image", "RAS"),
                    Resized("image", (8, 8, 28), mode="area")])
    item = load({"image": _volume(tmp_path), "evidence": [0, 1, 30]})
    mapped = MapEvidenced(frame_axis=3)(item)["evidence"]
    assert MapEvidence(frame_axis=3)([0, 1, 30], item["image"]) == mapped == [0, 26, 27] + [-1] * 25
