"""Engine-side helpers of monai_das used by the bundles: data, optimizer, batch inference, seeds, export."""

import warnings

# `python -m monai_das.engines.export` (the export command): runpy warns that this package imported the module before
# it ran as __main__ ("may result in unpredictable behaviour"); the command runs the package's module itself
warnings.filterwarnings("ignore", message=r"'monai_das\.engines\.export' found in sys\.modules",
                        category=RuntimeWarning)

from monai_das.engines.checks import (
    bundle_cli_overrides,
    bundle_meta_file,
    check_launch,
    check_overrides,
    check_resume,
    check_resumable,
    check_tracking_uri,
    check_writable,
    train_drop_last,
    warn_open_run,
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
    StudyDataset,
    merge_predictions,
    exit_status,
    merge_shards,
    predictions_path,
    inference_output_dir,
    prediction_key,
    resume_predictions,
    launcher_shard,
    select_studies,
    shard_of,
)
from monai_das.engines.export import export_onnx, export_torchscript, read_model_card, read_onnx_card, save_onnx
from monai_das.engines.runtime import ENGINES, IndicesRecorder, inference_network
from monai_das.engines.optim import build_optimizer, sampler_param_groups
from monai_das.engines.utils import (
    PRECISE_BN_AUTO_BATCHES,
    class_weights,
    distributed_sampler,
    flag,
    optional,
    precise_bn_batches,
    sampler_warmup_epochs,
)

__all__ = [
    "bundle_cli_overrides",
    "bundle_meta_file",
    "check_launch",
    "check_overrides",
    "check_resume",
    "check_resumable",
    "check_tracking_uri",
    "check_writable",
    "train_drop_last",
    "warn_open_run",
    "DATA_ENV",
    "VIDEO_DATASETS",
    "SLICE_AXES",
    "BundleData",
    "slice_axis_index",
    "resolve_data_dir",
    "StudyDataset",
    "merge_predictions",
    "exit_status",
    "merge_shards",
    "shard_of",
    "launcher_shard",
    "predictions_path",
    "inference_output_dir",
    "prediction_key",
    "resume_predictions",
    "select_studies",
    "export_onnx",
    "export_torchscript",
    "read_model_card",
    "read_onnx_card",
    "save_onnx",
    "ENGINES",
    "IndicesRecorder",
    "inference_network",
    "build_optimizer",
    "sampler_param_groups",
    "flag",
    "distributed_sampler",
    "precise_bn_batches",
    "PRECISE_BN_AUTO_BATCHES",
    "optional",
    "sampler_warmup_epochs",
    "class_weights",
]
