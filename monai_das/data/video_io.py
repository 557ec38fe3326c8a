"""
Readers for ultrasound clips: video containers through OpenCV (FFmpeg backend; Pillow fallback for GIF) and
multi-frame DICOM through pydicom. Both return ``T×H×W×C`` float32 frames in ``[0, 1]``, already resized, plus an
info dict; temporal resampling to a fixed length is done by ``monai_das.transforms.LoadVideo``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_das.utils.io import UnreadableFileError

__all__ = ["VIDEO_EXTENSIONS", "DICOM_EXTENSIONS", "check_dicom_pixel_data", "decoded_frame_count", "is_dicom",
           "read_dicom_header", "read_video", "undecodable_syntax"]

#: container extensions read with OpenCV (case-insensitive)
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".avi", ".mpeg", ".mpg", ".mov", ".gif", ".mkv", ".webm", ".wmv")
#: extensions read with pydicom (files without extension are also read as DICOM when they carry the DICM preamble)
DICOM_EXTENSIONS = (".dcm", ".dicom")


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a ``.dcm``/``.dicom`` file or a file with the DICOM preamble (``DICM`` at byte 128)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def read_dicom_header(path: str | os.PathLike, tags: Sequence[str] | None = None, pixel_length: bool = False):
    """
    The header of the DICOM file ``path`` without its pixel data (pydicom, ``stop_before_pixels=True``); with
    ``tags`` (keywords) only those elements are kept, which spares parsing the rest (discovery needs three). With
    ``pixel_length`` an uncompressed file's ``PixelData`` element is kept too, its value not read (deferred: its
    length and where it starts, what :func:`check_dicom_pixel_data` checks), so one read serves both.
    """
    import pydicom

    specific = None if tags is None else list(tags)
    if pixel_length and not _encapsulated(path):  # a compressed file's data would be scanned for its end: not kept
        specific = None if specific is None else [*specific, *_PIXEL_TAGS]
        return pydicom.dcmread(str(path), defer_size=1024, specific_tags=specific)
    return pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=specific)


def _encapsulated(path: str | os.PathLike) -> bool:
    """Whether the transfer syntax of the DICOM file ``path`` (its file meta information alone) is a compressed one."""
    from pydicom.filereader import read_file_meta_info

    try:
        syntax = read_file_meta_info(str(path)).get("TransferSyntaxUID")
    except Exception:  # noqa: BLE001 - no file meta information to read: the header read says what is wrong
        return False
    try:
        return syntax is not None and syntax.is_encapsulated
    except ValueError:  # a transfer syntax pydicom does not know (JPEG XL in pydicom 3.0): its data is not scanned;
        return True  # check_dicom_pixel_data names it (the header read failed with "UID is not a transfer syntax")


#: DICOM transfer syntaxes newer than pydicom's registry (pydicom 3.0 names them by their UID only)
_SYNTAX_NAMES = {"1.2.840.10008.1.2.4.110": "JPEG XL Lossless", "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
                 "1.2.840.10008.1.2.4.112": "JPEG XL"}


def undecodable_syntax(path: str | os.PathLike, syntax: Any) -> RuntimeError | None:
    """
    The error of a DICOM image whose pixel data's transfer syntax (``syntax``, its file meta information's
    ``TransferSyntaxUID``) pydicom has no decoder for at all (JPEG XL in pydicom 3.0, MPEG video, a private syntax),
    naming the syntax (name and UID); ``None`` when it has one (whether its plugin is installed is left to the
    decoder, whose own error says what to install) or no syntax is given. One message for training's datalist check,
    inference and the clip reader: training said "cannot read the DICOM header of ...: UID is not a transfer
    syntax" of a header that reads fine (trial T72c).
    """
    if syntax is None or not str(syntax).strip():
        return None
    import pydicom
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    uid = UID(str(syntax).strip())
    try:
        get_decoder(uid)
        return None
    except NotImplementedError:
        pass
    except Exception:  # noqa: BLE001 - pydicom cannot tell: the decoder's own error says what is wrong
        return None
    name = _SYNTAX_NAMES.get(str(uid)) or (uid.name if uid.name != str(uid) else None)
    named = f"{name} ({uid})" if name else f"{uid} (unknown to pydicom: a private or newer one)"
    return RuntimeError(f"cannot decode the pixel data of DICOM file '{path}': its transfer syntax {named} has "
                        f"no decoder in pydicom {pydicom.__version__}, which reads DICOM images here (the header reads "
                        "fine). Convert the files to a transfer syntax it decodes (e.g. Explicit VR Little Endian, "
                        "JPEG 2000) and give those.")


#: the elements :func:`check_dicom_pixel_data` reads: what the header declares, and the pixel data (its length only)
_PIXEL_TAGS = ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "PhotometricInterpretation",
               "PixelData")


def _header_data_disagree(path: str | os.PathLike, frames: int, rows: int, cols: int, spp: int, held: str,
                          declared: str = "", tail: str = "") -> RuntimeError:
    """The error of a DICOM file whose pixel data holds ``held`` (words) where its header declares ``frames`` frames
    of ``rows``×``cols`` (``declared``: what else it declares, e.g. the bytes; ``tail``: what follows, if anything)."""
    return RuntimeError(f"DICOM file '{path}' says NumberOfFrames {frames} ({rows}×{cols}, {spp} sample(s) per "
                        f"pixel{declared}) but its pixel data holds {held}: the header and the data disagree: damaged "
                        f"or cut short (an interrupted copy) or an edited header.{tail}")


def check_dicom_pixel_data(path: str | os.PathLike, header: Any = None) -> None:
    """
    Refuse an uncompressed DICOM file whose header declares more pixel data than the file holds: Rows × Columns ×
    NumberOfFrames × SamplesPerPixel × BitsAllocated/8 (bit-packed for 1 bit, two thirds for ``YBR_FULL_422``) over
    the length of its ``PixelData`` element, or over the bytes the file holds after the element's start when it was
    cut inside it. Only the header is read (the pixel data's length, not its value), so
    the check costs no memory, and it runs before any reader (a transfer syntax pydicom cannot decode at all is
    refused first, :func:`undecodable_syntax`): MONAI's ``ITKReader`` fills the missing frames with
    zeros (a 6-frame CT file saying 12 frames was classified with 6 zero frames) and allocates what the header
    declares (a 2.6 KB file saying 2,000,000 frames took 3.6 GB); security review T69b. A file holding more than its
    header declares is accepted; compressed (encapsulated) pixel data is left to its decoder, and a header this cannot
    read or price (no Rows, Columns or BitsAllocated, no pixel data) to the reader, which says what is wrong.

    Args:
        path: the DICOM file.
        header: its header as ``read_dicom_header(path, pixel_length=True)`` read it, when the caller has it (not
            read again); one without a ``PixelData`` element is read again from ``path``.

    Raises:
        RuntimeError: naming the file, the bytes its header declares and those its pixel data holds (or its transfer
        syntax).
    """
    try:
        ds = header if header is not None else read_dicom_header(path, _PIXEL_TAGS, True)
        syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        undecodable = undecodable_syntax(path, syntax) if "Rows" in ds else None  # an image's (not a report's)
    except Exception:  # noqa: BLE001 - a header that cannot be read: the reader says why
        return
    if undecodable is not None:
        raise undecodable
    try:
        if header is not None and "PixelData" not in header and getattr(syntax, "is_encapsulated", False):
            return  # a compressed file's header, read without its data: left to its decoder, not read again
        if header is not None and "PixelData" not in ds:  # the caller's, read without it: read with its length
            ds = read_dicom_header(path, _PIXEL_TAGS, True)
        if "PixelData" not in ds:  # a compressed file (its data not kept), or none
            return
        element = ds.get_item("PixelData", keep_deferred=True)
        if element is None or "Rows" not in ds or "Columns" not in ds or "BitsAllocated" not in ds:
            return
        length = element.length if hasattr(element, "length") else len(element.value or b"")
        tell = getattr(element, "value_tell", None)  # where the value starts: a file cut inside it holds less (R69)
        # (not in a deflated file: its value_tell counts in the inflated data, which the file's size does not; R70g)
        syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        if isinstance(tell, int) and length != 0xFFFFFFFF and not getattr(syntax, "is_deflated", False):
            length = min(length, max(os.path.getsize(path) - tell, 0))
        rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
        spp = max(int(ds.get("SamplesPerPixel", 1) or 1), 1)
    except Exception:  # noqa: BLE001 - a header that cannot be read: the reader says why
        return
    if length == 0xFFFFFFFF:  # undefined length: encapsulated whatever the transfer syntax says
        return
    values = rows * cols * frames * spp
    need = (values + 7) // 8 if bits == 1 else values * ((bits + 7) // 8)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "YBR_FULL_422":
        need = need // 3 * 2
    if length >= need:
        return
    per_frame = max(need / frames, 1)
    raise _header_data_disagree(path, frames, rows, cols, spp, f"{length:,} bytes ({length / per_frame:.4g} "
                                f"frame(s))", f", {bits} bits allocated: {need:,} bytes", " Not read: a reader would "
                                "fill the missing frames with zeros, or allocate all the header declares.")


def _size_hw(spatial_size: Sequence[int] | int | None) -> tuple[int, int] | None:
    if spatial_size is None:
        return None
    if isinstance(spatial_size, (int, np.integer)):
        size = (int(spatial_size),) * 2
    else:
        size = tuple(int(s) for s in spatial_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"spatial_size must be a positive int or (H, W), got {spatial_size}.")
    return size  # type: ignore[return-value]


def _frame(frame: np.ndarray, size: tuple[int, int] | None, grayscale: bool, bgr: bool) -> np.ndarray:
    """One ``H×W×C`` frame (uint8 or float32) → grayscale/RGB, resized with area interpolation, ``h×w×C``."""
    import cv2

    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.shape[-1] == 4:
        frame = frame[..., :3]
    if grayscale and frame.shape[-1] == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)[..., None]
    elif not grayscale and frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    elif not grayscale and bgr:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if size is not None and frame.shape[:2] != size:
        interp = cv2.INTER_AREA if size[0] <= frame.shape[0] and size[1] <= frame.shape[1] else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=interp)
        if frame.ndim == 2:
            frame = frame[..., None]
    return frame


def _clip_frame_limit(path: Path, frame_hw: Sequence[int], size, grayscale: bool, declared: int = 0,
                      native_bytes: int = 0) -> int | None:
    """:func:`~monai_das.data.studies.clip_frame_limit` (the clip pricing) of the video file ``path``: the most frames
    of it this process has memory to decode and keep, refusing a clip whose ``declared`` frames do not fit."""
    from monai_das.data.studies import clip_frame_limit

    return clip_frame_limit(f"video file '{path}'", frame_hw, size, grayscale, declared, native_bytes)


def _too_many_frames(path: Path, limit: int) -> MemoryError:
    return MemoryError(f"video file '{path}' decodes more than {limit} frames, more than its header declares and than "
                       "this process has memory to keep; stopped. A damaged or hostile file? Otherwise cut the clip "
                       "or lower its frame rate.")


def _cannot_open(path: Path) -> UnreadableFileError:
    """The error for a file OpenCV cannot open; a file of a few bytes is said to be one (an mp4 written without a
    frame holds no video stream, so it cannot be opened rather than decode zero frames)."""
    size = path.stat().st_size
    small = (f" It holds only {size} bytes: written without a frame, or cut short?" if size < 4096 else "")
    return UnreadableFileError(f"cannot open video file '{path}': OpenCV/FFmpeg could not read it (corrupt, "
                               f"truncated or unsupported container).{small}")


def _read_opencv(path: Path, size, grayscale: bool, check_frame_count: bool) -> tuple[list[np.ndarray], dict]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            if path.suffix.lower() == ".gif":
                return _read_gif_pillow(path, size, grayscale)
            raise _cannot_open(path)
        declared = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        hw = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
        # (check_frame_count=False reads what a header over-declares: its count is not priced, the frames are)
        limit = (_clip_frame_limit(path, hw, size, grayscale, declared if check_frame_count else 0)
                 if min(hw) > 0 else None)
        frames, orig = [], None
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            orig = frame.shape[:2]
            frames.append(_frame(frame, size, grayscale, bgr=True))
            if limit is None and min(hw) <= 0 and len(frames) == 1:  # a header without the frame size
                limit = _clip_frame_limit(path, orig, size, grayscale)
            if limit is not None and len(frames) > limit:  # more than declared: its header lied
                raise _too_many_frames(path, limit)
    finally:
        cap.release()
    if check_frame_count and _truncated(len(frames), declared):
        raise _truncated_error(path, len(frames), declared)
    return frames, {"fps": fps, "original_size": orig, "reader": "opencv"}


def _truncated(decoded: int, declared: int) -> bool:
    """Whether ``decoded`` frames are far fewer than the ``declared`` ones of a container header (a truncated file)."""
    return declared > 0 and decoded < 0.9 * declared - 1


def _truncated_error(path: str | os.PathLike, decoded: int, declared: int) -> UnreadableFileError:
    return UnreadableFileError(
        f"video file '{path}' looks truncated or corrupt: decoded {decoded} of the {declared} frames its "
        f"header declares; re-encode or replace the file (in Python, read_video(..., check_frame_count=False) or "
        "LoadVideo(d)(..., check_frame_count=False) accepts the partial clip; VideoDataset(on_error='skip') "
        "drops it)."
    )


def decoded_frame_count(path: str | os.PathLike, check_frame_count: bool = True) -> int:
    """
    The number of frames :func:`read_video` decodes from the video container ``path`` (OpenCV; Pillow for a GIF
    OpenCV cannot open), stepping through them with ``grab`` without converting, resizing or keeping them: a clip
    checked before it is loaded (the test list before training) fails as :func:`read_video` would.

    Raises:
        RuntimeError: OpenCV cannot open the file; with ``check_frame_count``, far fewer frames decode than the
            header declares (the message of :func:`read_video`).
    """
    import cv2

    path = Path(path)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            if path.suffix.lower() == ".gif":
                from PIL import Image

                with Image.open(path) as im:
                    return int(getattr(im, "n_frames", 1))
            raise _cannot_open(path)
        declared, decoded = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0
        while cap.grab():
            decoded += 1
    finally:
        cap.release()
    if check_frame_count and _truncated(decoded, declared):
        raise _truncated_error(path, decoded, declared)
    return decoded


def _read_gif_pillow(path: Path, size, grayscale: bool) -> tuple[list[np.ndarray], dict]:
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as im:
            duration = im.info.get("duration") or 0
            orig = (int(im.height), int(im.width))
            limit = _clip_frame_limit(path, orig, size, grayscale, int(getattr(im, "n_frames", 1)))
            frames = []  # each frame resized as it is read (every native RGB frame was kept first)
            for f in ImageSequence.Iterator(im):
                frames.append(_frame(np.asarray(f.convert("RGB")), size, grayscale, bgr=False))
                if limit is not None and len(frames) > limit:
                    raise _too_many_frames(path, limit)
    except MemoryError:
        raise
    except Exception as e:  # PIL raises several exception types for bad files
        raise RuntimeError(f"cannot read GIF file '{path}': {e}") from e
    return frames, {"fps": 1000.0 / duration if duration else 0.0, "original_size": orig if frames else None,
                    "reader": "pillow"}


def _fragment_count(ds) -> int | None:
    """The number of fragments of an encapsulated (compressed) ``PixelData``, ``None`` when it cannot be parsed."""
    from pydicom.encaps import generate_fragments

    try:  # the first item is the Basic Offset Table (empty or not), the fragments follow
        return max(0, sum(1 for _ in generate_fragments(ds.PixelData)) - 1)
    except Exception:  # not encapsulated, or damaged beyond parsing: the decoder's message stands
        return None


def _read_dicom(path: Path, size, grayscale: bool) -> tuple[list[np.ndarray], dict]:
    import pydicom

    try:  # priced from the header before the pixel data is read (an uncompressed cine can exceed the memory)
        header = read_dicom_header(path)
        rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
        declared = int(header.get("NumberOfFrames", 1) or 1)
        per_value = max(int(header.get("BitsAllocated", 8) or 8), 8) // 8
        # the stored pixel data, its decoded array, then float32
        native = rows * cols * int(header.get("SamplesPerPixel", 1) or 1) * (2 * per_value + 4)
    except (TypeError, ValueError):  # the decoder's message below says what is wrong
        rows = cols = 0
    except Exception as e:
        raise RuntimeError(f"cannot read DICOM file '{path}': {e}") from e
    if rows > 0 and cols > 0:
        _clip_frame_limit(path, (rows, cols), size, grayscale, declared, native)
    check_dicom_pixel_data(path)  # a header declaring more than the data holds, before the data is read
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:
        raise RuntimeError(f"cannot read DICOM file '{path}': {e}") from e
    if "PixelData" not in ds:
        raise RuntimeError(f"DICOM file '{path}' has no pixel data (not an image, or truncated).")
    try:
        arr = ds.pixel_array  # pydicom >= 3 converts YBR to RGB
    except Exception as e:
        tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        try:
            compressed = bool(tsuid.is_compressed) if tsuid is not None else None
        except (AttributeError, ValueError):  # a private or unknown transfer syntax
            compressed = None
        decoder = "Compressed DICOM needs a decoder plugin: Pillow (JPEG baseline) or pylibjpeg/gdcm."
        damaged = "The pixel data is not compressed, so the file is damaged or cut short (an interrupted copy?)."
        hint = (decoder if compressed else damaged if compressed is False else
                f"{decoder} Or the file is damaged or cut short (an interrupted copy?).")
        fragments = _fragment_count(ds) if compressed else None
        declared = int(ds.get("NumberOfFrames", 1) or 1)
        if fragments is not None and fragments < declared:  # each frame is at least one fragment: frames are missing
            hint = (f"Its compressed pixel data holds {fragments} fragment(s) for NumberOfFrames {declared}: frames "
                    "are missing (the file was cut short or damaged, e.g. an interrupted copy), not a missing decoder.")
        raise RuntimeError(
            f"cannot decode the pixel data of DICOM file '{path}' (transfer syntax {tsuid or 'unknown'}): "
            f"{str(e) or type(e).__name__}. {hint}"
        ) from e
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1) if photometric != "PALETTE COLOR" else 3
    arr = np.asarray(arr)
    plane = int(ds.Rows) * int(ds.Columns) * spp
    if arr.size != nframes * plane:  # pydicom decodes what the pixel data holds, whatever NumberOfFrames says
        held = f"{arr.size / plane:g} frame(s)" if plane else f"{arr.size} values"
        raise _header_data_disagree(path, nframes, int(ds.Rows), int(ds.Columns), spp, held)
    arr = arr.reshape(nframes, int(ds.Rows), int(ds.Columns), spp)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    else:
        arr = arr.astype(np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if photometric == "MONOCHROME1":
        arr = 1.0 - arr
    frames = [_frame(f, size, grayscale, bgr=False) for f in arr]
    fps = 0.0
    if ds.get("FrameTime"):
        fps = 1000.0 / float(ds.FrameTime)
    elif ds.get("CineRate"):
        fps = float(ds.CineRate)
    elif ds.get("RecommendedDisplayFrameRate"):
        fps = float(ds.RecommendedDisplayFrameRate)
    return frames, {"fps": fps, "original_size": tuple(arr.shape[1:3]), "reader": "pydicom"}


def read_video(
    path: str | os.PathLike,
    spatial_size: Sequence[int] | int | None = None,
    grayscale: bool = True,
    check_frame_count: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """
    Decode every frame of a clip.

    Args:
        path: a video file (``VIDEO_EXTENSIONS``, read with OpenCV; GIF falls back to Pillow if OpenCV fails) or a
            single- or multi-frame DICOM file (pydicom; JPEG-compressed needs Pillow).
        spatial_size: ``(H, W)`` (or one int for square) each frame is resized to (area interpolation when
            shrinking, bilinear when enlarging; the aspect ratio is not preserved); ``None`` keeps the native size.
        grayscale: one luminance channel (ITU-R 601 weights) instead of RGB.
        check_frame_count: raise when far fewer frames decode than the container header declares (truncated file).

    Returns:
        ``frames``: float32 ``T×H×W×C`` in ``[0, 1]`` (uint8 sources divided by 255, other DICOM dtypes min–max
        scaled over the clip; MONOCHROME1 inverted), and ``info``: ``{"filename", "num_frames", "fps",
        "original_size", "reader"}``.

    Raises:
        FileNotFoundError: missing file. IsADirectoryError: a folder. RuntimeError: unreadable, corrupt or truncated
        file. ValueError: zero frames.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"'{path}' is a directory, expected a video file (or a DICOM file).")
    if not path.is_file():
        raise FileNotFoundError(f"video file '{path}' does not exist.")
    size = _size_hw(spatial_size)
    if is_dicom(path):
        frames, info = _read_dicom(path, size, grayscale)
    else:
        frames, info = _read_opencv(path, size, grayscale, check_frame_count)
    if not frames:
        raise ValueError(f"video file '{path}' has zero decodable frames (empty or corrupt).")
    arr = np.stack(frames)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    info.update(filename=str(path), num_frames=int(arr.shape[0]))
    return np.ascontiguousarray(arr, dtype=np.float32), info
