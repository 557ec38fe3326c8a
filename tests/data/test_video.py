"""Clip decoding (real POCUS videos of every container, multi-frame DICOM), bad files and VideoDataset caching."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from monai.data import CacheDataset, DataLoader, PersistentDataset, ThreadDataLoader

import monai_das.transforms.io as video_io_transforms
from monai_das.data import VideoDataset, read_video, video_transform
from monai_das.data.video_io import _read_gif_pillow
from monai_das.transforms import LoadVideo

EXTENSIONS = ("mp4", "avi", "mpeg", "mov", "gif")


@pytest.fixture(scope="module")
def pocus(shared_data) -> tuple[Path, list[dict]]:
    root = shared_data / "video" / "covid19_lus_pocus"
    if not (root / "MANIFEST.csv").is_file():
        pytest.skip(f"POCUS videos not found in {root}")
    with open(root / "MANIFEST.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return root, rows


def _short_clips(rows: list[dict], ext: str, n: int = 2) -> list[dict]:
    """The ``n`` cheapest clips (frames × pixels) with extension ``ext``."""
    cands = [r for r in rows if r["file"].lower().endswith("." + ext)]
    return sorted(cands, key=lambda r: int(r["frames"]) * int(r["width"]) * int(r["height"]))[:n]


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_real_containers_decode(pocus, ext):
    root, rows = pocus
    clips = _short_clips(rows, ext)
    assert len(clips) == 2
    for r in clips:
        path = root / r["file"]
        frames, info = read_video(path, spatial_size=(24, 32))
        assert frames.shape == (int(r["frames"]), 24, 32, 1) and frames.dtype == np.float32
        assert info["original_size"] == (int(r["height"]), int(r["width"]))
        assert 0.0 <= frames.min() and frames.max() <= 1.0 and frames.std() > 0.01
        clip = LoadVideo(num_frames=16, spatial_size=32, grayscale=False)(str(path))
        assert tuple(clip.shape) == (16, 3, 32, 32) and clip.dtype == torch.float32
        assert clip.meta["original_num_frames"] == int(r["frames"]) and clip.meta["fps"] > 0
        assert clip.meta["filename_or_obj"] == str(path)
        kept = clip.meta["kept_indices"]
        assert len(kept) == 16 and bool((kept[1:] >= kept[:-1]).all()) and int(kept[-1]) < int(r["frames"])


def test_upper_case_extension(pocus):
    root, rows = pocus
    r = next(r for r in rows if r["file"].endswith(".MP4"))
    clip = LoadVideo(num_frames=8, spatial_size=16)(root / r["file"])
    assert tuple(clip.shape) == (8, 1, 16, 16)


def test_gif_pillow_fallback_agrees_with_opencv(pocus):
    root, rows = pocus
    path = root / _short_clips(rows, "gif", 1)[0]["file"]
    cv_frames, _ = read_video(path, spatial_size=32, grayscale=False)
    pil_frames, info = _read_gif_pillow(path, (32, 32), grayscale=False)
    pil = np.stack(pil_frames).astype(np.float32) / 255.0
    assert info["reader"] == "pillow" and pil.shape == cv_frames.shape
    assert np.abs(pil - cv_frames).mean() < 0.02


def test_multiframe_ultrasound_dicom():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("examples_ybr_color.dcm")  # 30-frame US cine, YBR_FULL_422, JPEG baseline
    rgb, info = read_video(path, spatial_size=(24, 32), grayscale=False)
    gray, _ = read_video(path, spatial_size=(24, 32), grayscale=True)
    assert rgb.shape == (30, 24, 32, 3) and gray.shape == (30, 24, 32, 1) and info["reader"] == "pydicom"
    assert info["original_size"] == (240, 320)
    lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.abs(lum - gray[..., 0]).max() < 0.01
    clip = LoadVideo(num_frames=8, spatial_size=(24, 32), grayscale=False)(path)
    assert tuple(clip.shape) == (8, 3, 24, 32)
    assert torch.allclose(clip, torch.from_numpy(rgb).permute(0, 3, 1, 2)[clip.meta["kept_indices"]])


def test_single_frame_ct_dicom_is_minmax_scaled():
    from pydicom.data import get_testdata_file

    frames, _ = read_video(get_testdata_file("CT_small.dcm"))  # int16 CT slice
    assert frames.shape == (1, 128, 128, 1)
    assert frames.min() == 0.0 and frames.max() == 1.0


def _write_avi(path: Path, n: int, size: int = 32) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (size, size))
    for i in range(n):
        writer.write(np.full((size, size, 3), 20 * i % 255, np.uint8))
    writer.release()


def test_clips_without_a_frame(tmp_path):
    """T68b: an mp4 written without a frame holds no video stream: OpenCV cannot open it (RuntimeError, as the
    README says), and the message says how small it is; an avi that opens but decodes no frame is a ValueError."""
    import cv2

    mp4 = tmp_path / "none.mp4"
    cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32)).release()
    with pytest.raises(RuntimeError, match=r"cannot open video file '.*none\.mp4'.* It holds only \d+ bytes: written "
                                           r"without a frame, or cut short\?"):
        read_video(mp4)
    avi = tmp_path / "zero.avi"
    _write_avi(avi, 0)
    with pytest.raises(ValueError, match=r"zero\.avi' has zero decodable frames"):
        read_video(avi)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"x" * 5000)  # not small: no size hint
    with pytest.raises(RuntimeError, match=r"unsupported container\)\.$"):
        read_video(junk)


def test_bad_files_give_clear_errors(pocus, tmp_path):
    root, rows = pocus
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(RuntimeError, match="junk.mp4"):
        read_video(junk)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises((RuntimeError, ValueError), match="empty.avi"):
        read_video(empty)
    zero = tmp_path / "zero.avi"
    _write_avi(zero, 0)
    with pytest.raises((RuntimeError, ValueError), match="zero.avi"):
        read_video(zero)
    # truncated real files: mp4 (index at the end: unreadable) and avi (header declares more frames)
    for ext in ("mp4", "avi"):
        data = (root / _short_clips(rows, ext, 1)[0]["file"]).read_bytes()
        cut = tmp_path / f"truncated.{ext}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(RuntimeError, match=f"truncated.{ext}"):
            read_video(cut)
    from pydicom.data import get_testdata_file

    dcm = Path(get_testdata_file("examples_ybr_color.dcm")).read_bytes()
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(dcm[: len(dcm) // 3])
    with pytest.raises(RuntimeError, match="cut.dcm"):
        read_video(bad)


def test_written_clip_roundtrip(tmp_path):
    path = tmp_path / "ramp.avi"
    _write_avi(path, 12)
    frames, info = read_video(path)
    assert frames.shape == (12, 32, 32, 1) and info["fps"] == pytest.approx(10.0)
    assert np.allclose(frames[:, 16, 16, 0] * 255, np.arange(12) * 20, atol=3)


def test_a_clip_that_does_not_fit_in_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    """A 260 KB mp4 of 20 000 small frames took 2.3 GB and a clip declaring more ended the process, with no check
    before decoding (trial T64b): the declared frames at the grid are priced first (video, GIF, DICOM cine), and a
    file decoding more frames than its header declares is stopped once they would not fit."""
    import cv2
    from PIL import Image

    import monai_das.data.studies as studies
    import monai_das.data.video_io as video_io

    path = tmp_path / "long.avi"
    _write_avi(path, 40)
    Image.new("L", (20, 10)).save(tmp_path / "long.gif", save_all=True,
                                  append_images=[Image.new("L", (20, 10), 9 * i) for i in range(1, 40)], duration=50)
    per_frame = 64 * 64 * studies.BYTES_PER_CLIP_VALUE
    monkeypatch.setattr(studies, "available_memory", lambda: 20 * per_frame)  # room for 20 frames at 64×64
    for name, hw in (("long.avi", "32×32"), ("long.gif", "10×20")):
        with pytest.raises(MemoryError, match=rf"{name}' declares \d\d frames of {hw}; decoding them \(kept at 64×64\) "
                                              r"needs about .*, more than the .* of memory available; not read"):
            read_video(tmp_path / name, spatial_size=64)
        assert read_video(tmp_path / name, spatial_size=16)[0].shape[0] >= 30  # at a smaller grid they fit
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    ds = Dataset()  # a cine declaring 400 frames of 64×64: priced before its pixel data is decoded
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.NumberOfFrames, ds.Rows, ds.Columns = "US", 400, 64, 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation, ds.PixelData = 0, np.zeros(400 * 64 * 64, np.uint8).tobytes()
    ds.save_as(tmp_path / "cine.dcm", enforce_file_format=True)
    with pytest.raises(MemoryError, match=r"cine\.dcm' declares 400 frames of 64×64; decoding them \(kept at 16×16\)"):
        read_video(tmp_path / "cine.dcm", spatial_size=16)
    # a header over-declaring its frames (a cut file): check_frame_count=False, which the truncation error advises,
    # reads the frames there are; their count, not the header's, is priced (review)
    real_get = cv2.VideoCapture.get
    monkeypatch.setattr(cv2.VideoCapture, "get", lambda self, prop: 2000.0 if prop == cv2.CAP_PROP_FRAME_COUNT
                        else real_get(self, prop))
    with pytest.raises(MemoryError, match=r"long\.avi' declares 2000 frames"):
        read_video(path, spatial_size=16)
    assert read_video(path, spatial_size=16, check_frame_count=False)[0].shape[0] == 40
    monkeypatch.setattr(cv2.VideoCapture, "get", lambda self, prop: 0.0)  # a header that declares nothing
    with pytest.raises(MemoryError, match=r"long\.avi' decodes more than 20 frames, more than its header declares"):
        read_video(path, spatial_size=64)
    monkeypatch.undo()
    monkeypatch.setattr(studies, "available_memory", lambda: None)  # unknown (another system): nothing refused
    assert read_video(path, spatial_size=64)[0].shape == (40, 64, 64, 1)
    assert video_io._clip_frame_limit(path, (32, 32), (64, 64), True, 10**9) is None


def _pocus_items(root: Path, rows: list[dict]) -> list[dict]:
    picks = [r for ext in ("mp4", "gif", "avi") for r in _short_clips(rows, ext, 1)]
    return [{"image": str(root / r["file"]), "label": i % 3, "group": r["patient_id"]} for i, r in enumerate(picks)]


def test_video_dataset_loaders(pocus):
    items = _pocus_items(*pocus)
    ds = VideoDataset(items, num_frames=8, spatial_size=16)
    assert len(ds) == 3 and ds.in_channels == 1
    batch = next(iter(DataLoader(ds, batch_size=3, num_workers=0)))
    assert batch["image"].shape == (3, 8, 1, 16, 16) and batch["label"].tolist() == [0, 1, 2]
    assert batch["image"].meta["kept_indices"].shape == (3, 8)
    batch = next(iter(ThreadDataLoader(VideoDataset(items, num_frames=8, spatial_size=16, grayscale=False),
                                       batch_size=2)))
    assert batch["image"].shape == (2, 8, 3, 16, 16)


def test_cache_dataset_decodes_once(pocus, monkeypatch):
    calls = []
    real = video_io_transforms.read_video

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(video_io_transforms, "read_video", counting)
    items = _pocus_items(*pocus)
    ds = VideoDataset(items, num_frames=8, spatial_size=16, cache_rate=1.0)
    assert len(calls) == 3
    first = [ds[i]["image"].clone() for i in range(3)]
    second = [ds[i]["image"] for i in range(3)]
    assert len(calls) == 3 and all(torch.equal(a, b) for a, b in zip(first, second))
    plain = CacheDataset(items, video_transform(8, 16), cache_rate=1.0, progress=False)
    assert torch.equal(plain[1]["image"], first[1])


def test_persistent_dataset_decodes_once(pocus, tmp_path):
    root, rows = pocus
    src = root / _short_clips(rows, "mp4", 1)[0]["file"]
    local = tmp_path / "clip.mp4"
    shutil.copy(src, local)
    data = [{"image": str(local), "label": 1}]
    cache = tmp_path / "cache"
    first = PersistentDataset(data, video_transform(8, 16), cache_dir=cache)[0]["image"]
    assert any(cache.iterdir())
    local.unlink()  # decoding again would fail now
    again = PersistentDataset(data, video_transform(8, 16), cache_dir=cache)[0]["image"]
    assert torch.equal(first, again) and again.shape == (8, 1, 16, 16)


def test_bad_items_raise_with_file_name_or_are_skipped(pocus, tmp_path, caplog):
    items = _pocus_items(*pocus)[:1]
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00" * 4096)
    missing = {"image": str(tmp_path / "missing.mp4"), "label": 0, "group": "p"}
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        VideoDataset(items + [missing], num_frames=4, spatial_size=8)
    with caplog.at_level(logging.WARNING):
        ds = VideoDataset(items + [missing, {"image": str(junk), "label": 0}], num_frames=4, spatial_size=8,
                          on_error="skip")
    assert len(ds) == 1 and len(ds.skipped) == 2 and "skipped 2 of 3 clips" in caplog.text
    # a corrupt clip that is only found when loading: the error names the file, in a worker too
    ds = VideoDataset(items + [{"image": str(junk), "label": 0}], num_frames=4, spatial_size=8)
    with pytest.raises(RuntimeError) as e:
        ds[1]
    assert "junk.avi" in str(e.value)  # in the message itself, not only under MONAI's "applying transform" (trial U)
    chain, err = [], e.value
    while err is not None:
        chain.append(str(err))
        err = err.__cause__
    assert any("junk.avi" in msg for msg in chain)
    with pytest.raises(RuntimeError, match="junk.avi"):
        list(DataLoader(ds, batch_size=1, num_workers=1))


def test_pocus_through_the_factory(pocus, monkeypatch):
    from monai_das.data import dataset_info, get_dataset, pocus_root

    root, _ = pocus
    monkeypatch.delenv("POCUS_ROOT", raising=False)
    monkeypatch.setenv("MONAI_DAS_DATA", str(root.parent.parent))
    assert pocus_root() == root
    splits = {s: get_dataset("pocus", s, size=16, fold=1, num_frames=4) for s in ("train", "val", "test")}
    groups = {s: {it["group"] for it in ds.data} for s, ds in splits.items()}
    assert not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert sum(len(ds) for ds in splits.values()) == 121
    assert {it["fold"] for it in splits["test"].data} == {1}
    small = get_dataset("pocus", "test", size=16, data_dir=root, fold=1, num_frames=4, num_samples=2)
    assert len(small) == 2 and tuple(small[1]["image"].shape) == (4, 1, 16, 16)
    info = dataset_info("pocus", size=16, num_frames=4)
    assert info["num_classes"] == 3 and info["num_frames"] == 4 and info["layout"] == "video"
    assert info["in_channels"] == small.in_channels


def _us_cine(frames: int, rows: int, cols: int, data: np.ndarray, syntax: str = "1.2.840.10008.1.2.1"):
    """An 8-bit ultrasound multi-frame DICOM dataset declaring ``frames`` of ``rows``×``cols`` over ``data``'s bytes
    (``syntax``: its transfer syntax, Explicit VR Little Endian by default)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UltrasoundMultiFrameImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Modality, ds.NumberOfFrames, ds.Rows, ds.Columns = "US", frames, rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, "MONOCHROME2", 8, 8, 7
    ds.PixelRepresentation, ds.PixelData = 0, data.tobytes()
    return ds


def test_dicom_whose_frame_count_disagrees_with_its_pixel_data(tmp_path):
    """NumberOfFrames 20 over pixel data of 30 frames: an error naming the file and both counts (it was numpy's
    'cannot reshape array of size ...')."""
    ds = _us_cine(20, 8, 6, np.zeros(30 * 8 * 6, np.uint8))
    path = tmp_path / "nf.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(RuntimeError, match=r"nf\.dcm' says NumberOfFrames 20 \(8×6, 1 sample\(s\) per pixel\) but its "
                                           r"pixel data holds 30 frame\(s\)"):
        read_video(path)
    # an uncompressed cine cut short: named as damaged, not sent looking for a decoder plugin
    ds.NumberOfFrames, ds.PixelData = 30, np.zeros(30 * 8 * 6, np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(RuntimeError, match=r"nf\.dcm' says NumberOfFrames 30 .* but its pixel data holds 1,240 bytes "
                                           r".*damaged or cut short"):  # from its header, before decoding (R69)
        read_video(path)
    # a private transfer syntax pydicom has no decoder for: the file and the syntax are named (no plugin helps; it
    # said "needs a decoder plugin ... Or the file is damaged"; trial T72c)
    ds.file_meta.TransferSyntaxUID = "1.2.840.113619.5.2"
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    with pytest.raises(RuntimeError, match=r"nf\.dcm': its transfer syntax 1\.2\.840\.113619\.5\.2 \(unknown to "
                                           r"pydicom: a private or newer one\) has no decoder in pydicom"):
        read_video(path)


def test_a_deflated_dicom_cine_is_not_called_cut_short(tmp_path):
    """Deflated Explicit VR Little Endian compresses the whole dataset, the pixel data too: the file is smaller than
    the data its header rightly declares, and the pixel data check refused a whole 30-frame cine as 'damaged or cut
    short' (review R70g)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = _us_cine(30, 16, 12, np.zeros(30 * 16 * 12, np.uint8), DeflatedExplicitVRLittleEndian)
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 30 * 16 * 12
    assert read_video(path)[0].shape[:3] == (30, 16, 12)


def test_a_dicom_cine_declaring_more_frames_than_its_data_is_refused_before_decoding(tmp_path, monkeypatch):
    """An uncompressed cine saying NumberOfFrames 3000 over 30 frames was read whole and decoded (pydicom then
    refused it): refused from its header, by the check the volume readers share (security review T69b), the pixel
    data never read."""
    import pydicom
    from pydicom.data import get_testdata_file

    from dicom_files import declare_frames

    path = tmp_path / "cine.dcm"
    ds = pydicom.dcmread(get_testdata_file("examples_ybr_color.dcm"))  # 30 frames of 240×320 RGB, JPEG
    ds.PixelData, ds.PhotometricInterpretation = ds.pixel_array.tobytes(), "RGB"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    declare_frames(path, 3000)
    read = []
    real_dcmread = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: read.append(k) or real_dcmread(*a, **k))
    with pytest.raises(RuntimeError, match=r"cine\.dcm' says NumberOfFrames 3000 \(240×320, 3 sample\(s\) per pixel, 8 "
                                           r"bits allocated: 691,200,000 bytes\) but its pixel data holds 6,912,000 "
                                           r"bytes \(30 frame\(s\)\): the header and the data disagree"):
        read_video(path, spatial_size=16)
    assert read and all(k.get("stop_before_pixels") or k.get("defer_size") for k in read), read


def test_a_compressed_cine_missing_frames_is_said_so(tmp_path):
    """A JPEG cine cut short (25 of 40 frames' fragments) blamed a missing decoder, with an empty cause (pydicom's
    StopIteration; trial V): said as frames missing."""
    import io

    import pydicom
    from PIL import Image
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = pydicom.dcmread(get_testdata_file("examples_ybr_color.dcm"))  # 30-frame ultrasound cine
    frames = []
    for frame in ds.pixel_array[:20]:  # RGB after pydicom's conversion
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG")
        frames.append(buf.getvalue())
    ds.PixelData = encapsulate(frames)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    ds.save_as(tmp_path / "cut.dcm")
    with pytest.raises(RuntimeError, match=r"cut\.dcm.*holds 20 fragment\(s\) for NumberOfFrames 30: frames are "
                                           r"missing"):
        read_video(tmp_path / "cut.dcm", spatial_size=(24, 32))
    ds.NumberOfFrames = 20  # the same 20 frames declared as such: read
    ds.save_as(tmp_path / "whole.dcm")
    assert len(read_video(tmp_path / "whole.dcm", spatial_size=(24, 32))[0]) == 20


def test_a_listings_evidence_is_mapped_onto_the_clip_and_batches(tmp_path):
    """A listing's evidence (file frame numbers, lists of different lengths) passed through VideoDataset unmapped:
    a DataLoader could not batch it (recheck R53b). Mapped onto the decoded frames, padded to T."""
    for name, n in (("a.avi", 20), ("b.avi", 12), ("c.avi", 16)):
        _write_avi(tmp_path / name, n, size=16)
    (tmp_path / "list.csv").write_text("file,label,patient_id,evidence\na.avi,x,1,10;11;12\nb.avi,y,2,4\n"
                                       "c.avi,x,3,\n")
    ds = VideoDataset(tmp_path / "list.csv", num_frames=10, spatial_size=8)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    evidence = torch.stack(batch["evidence"], 1)
    assert evidence.shape == (3, 10)
    # a: 20 frames → 10 (frames 1, 3, ..., 19): file frames 10..12 are input frames 5 (11); b: 12 → 10 keeps frame 4
    assert [[int(e) for e in row if e >= 0] for row in evidence] == [[5], [3], []]


def test_a_compressed_file_s_header_is_not_read_again_for_the_pixel_data_check(monkeypatch):
    """A compressed file's header, read without its data, made the pixel data check read it once more (its pixel data
    is left to its decoder either way): the header given is enough."""
    import pydicom
    from pydicom.data import get_testdata_file

    from monai_das.data.video_io import check_dicom_pixel_data, read_dicom_header

    path = get_testdata_file("MR_small_RLE.dcm")
    header = read_dicom_header(path, pixel_length=True)
    assert "PixelData" not in header and header.file_meta.TransferSyntaxUID.is_encapsulated

    reads = []
    monkeypatch.setattr(pydicom, "dcmread", lambda *args, **kwargs: reads.append(args))  # (errors are swallowed)
    check_dicom_pixel_data(path, header)
    assert reads == []
