"""Inputs for monai_das: MedMNIST3D, synthetic volumes/videos, ultrasound clips and their listings."""

from monai_das.data.datalist import (
    DATALIST_SPLITS,
    STUDY_LAYOUTS,
    check_study_shapes,
    datalist_classes,
    datalist_splits,
    load_datalist,
    split_training,
)
from monai_das.data.factory import (
    DATASET_NAMES,
    POCUS_ROOT_ENV,
    SYNTHETIC_DEFAULT_SAMPLES,
    dataset_info,
    get_dataset,
    pocus_root,
)
from monai_das.data.listing import (
    POCUS_CLASSES,
    POCUS_LABEL_MAP,
    assign_group_folds,
    pocus_listing,
    read_video_listing,
    split_by_fold,
)
from monai_das.data.medmnist3d import (
    MEDMNIST3D_NAMES,
    MEDMNIST3D_SIZES,
    MedMNIST3DDataset,
    ensure_medmnist_file,
    medmnist_filename,
    medmnist_info,
    medmnist_root,
)
from monai_das.data.synthetic import (
    SPLIT_SEED_OFFSETS,
    SYNTHETIC_CLASS_NAMES,
    SyntheticVideoDataset,
    SyntheticVolumeDataset,
    make_synthetic_sequence,
)
from monai_das.data.video import VideoDataset, video_transform
from monai_das.data.video_io import DICOM_EXTENSIONS, VIDEO_EXTENSIONS, is_dicom, read_video

__all__ = [
    "DATALIST_SPLITS",
    "STUDY_LAYOUTS",
    "check_study_shapes",
    "datalist_classes",
    "datalist_splits",
    "load_datalist",
    "split_training",
    "DATASET_NAMES",
    "POCUS_ROOT_ENV",
    "SYNTHETIC_DEFAULT_SAMPLES",
    "dataset_info",
    "pocus_root",
    "get_dataset",
    "POCUS_CLASSES",
    "POCUS_LABEL_MAP",
    "assign_group_folds",
    "pocus_listing",
    "read_video_listing",
    "split_by_fold",
    "MEDMNIST3D_NAMES",
    "MEDMNIST3D_SIZES",
    "MedMNIST3DDataset",
    "ensure_medmnist_file",
    "medmnist_filename",
    "medmnist_info",
    "medmnist_root",
    "SPLIT_SEED_OFFSETS",
    "SYNTHETIC_CLASS_NAMES",
    "SyntheticVideoDataset",
    "SyntheticVolumeDataset",
    "make_synthetic_sequence",
    "VideoDataset",
    "video_transform",
    "DICOM_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "is_dicom",
    "read_video",
]
