"""
DICOM files the tests make themselves (shared by tests/data, tests/deploy and tests/apps; ``tests/`` is on the path
as the folder of the root ``conftest.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_enhanced(path: Path, pixels: np.ndarray, modality: str = "CT",
                   sop_class_uid: str = "1.2.840.10008.5.1.4.1.1.2.1",
                   orientation: Sequence[float] = (1, 0, 0, 0, 1, 0), step: float = 2.0,
                   pixel_spacing: Sequence[float] = (1.0, 1.0), origin: Sequence[float] = (0.0, 0.0, 0.0),
                   rescale: tuple[float, float] | None = None) -> Path:
    """
    An Enhanced (multi-frame) DICOM file of ``pixels`` (``frames × rows × columns``, int16 or uint16) whose geometry
    lies in its functional groups only: orientation and pixel spacing shared, a plane position per frame, ``step`` mm
    apart along the normal from ``origin``; ``rescale``: (intercept, slope). Default SOP class: Enhanced CT.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    frames, rows, cols = pixels.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class_uid, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.NumberOfFrames = modality, frames
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    if rescale is not None:
        ds.RescaleIntercept, ds.RescaleSlope = rescale
    measures, plane, shared = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [float(v) for v in pixel_spacing], abs(float(step))
    plane.ImageOrientationPatient = [float(v) for v in orientation]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = DicomSequence([measures]), DicomSequence([plane])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    groups = []
    for i in range(frames):
        position, group = Dataset(), Dataset()
        position.ImagePositionPatient = [float(v) for v in np.asarray(origin, float) + normal * step * i]
        group.PlanePositionSequence = DicomSequence([position])
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(groups)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def declare_frames(path: Path, frames: int) -> Path:
    """The DICOM file ``path`` saved again with ``NumberOfFrames`` ``frames`` in its header, its pixel data as it was
    (a header that says more, or fewer, frames than the file holds)."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    ds.NumberOfFrames = frames
    ds.save_as(str(path))
    return path
