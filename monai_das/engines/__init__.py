"""Engine-side helpers of monai_das used by the bundles: data, optimizer, batch inference, seeds, export."""

from monai_das.engines.checks import (
    bundle_cli_overrides,
    check_overrides,
    check_resume,
    check_writable,
    train_drop_last,
)
from monai_das.engines.datasets import (
    DATA_ENV,
    SLICE_AXES,
    VIDEO_DATASETS,
    BundleData,
    resolve_data_dir,
    slice_axis_index,
)
from monai_das.engines.inference import (
    VOLUME_EXTENSIONS,
    StudyDataset,
    list_studies,
    merge_predictions,
    predictions_path,
    read_done_ids,
    select_studies,
    study_transform,
)
from monai_das.engines.optim import build_optimizer, sampler_param_groups
from monai_das.engines.utils import PRECISE_BN_AUTO_BATCHES, flag, optional, precise_bn_batches

__all__ = [
    "bundle_cli_overrides",
    "check_overrides",
    "check_resume",
    "check_writable",
    "train_drop_last",
    "DATA_ENV",
    "VIDEO_DATASETS",
    "SLICE_AXES",
    "BundleData",
    "slice_axis_index",
    "resolve_data_dir",
    "VOLUME_EXTENSIONS",
    "StudyDataset",
    "list_studies",
    "merge_predictions",
    "predictions_path",
    "read_done_ids",
    "select_studies",
    "study_transform",
    "build_optimizer",
    "sampler_param_groups",
    "flag",
    "precise_bn_batches",
    "PRECISE_BN_AUTO_BATCHES",
    "optional",
]
