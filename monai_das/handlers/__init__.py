"""Ignite handlers of monai_das: atomic/resumable checkpoints, precise BN, sampling pictures, reports, predictions,
tracking, model cards."""

from monai_das.handlers.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    CheckedCheckpointLoader,
    ResumeCheckpointLoader,
    hold_checkpoint_folder,
    hold_on_saving_rank,
    release_checkpoint_folder,
    remove_stale_temp_files,
)
from monai_das.handlers.diagnostics import SelectionDiagnosticsHandler, jaccard_distance
from monai_das.handlers.metrics import (
    BalancedAccuracy,
    EpochLoss,
    PresentClassesROCAUC,
    balanced_accuracy_from_confusion,
    bootstrap_intervals,
    label_indices,
    per_class_metrics,
)
from monai_das.handlers.model_card import (
    CARD_KEY,
    ModelCardSaver,
    build_model_card,
    card_input_shape,
    check_model_card,
    model_facts,
    output_dir_at_k,
    output_dir_capped,
    evaluation_output_dir,
    other_data,
    trained_options,
)
from monai_das.handlers.precise_bn import PreciseBNHandler
from monai_das.handlers.predictions import PredictionWriter
from monai_das.handlers.report import ClassificationReportSaver, write_json_atomic
from monai_das.handlers.resume import (
    EngineStateAttributes,
    RandomStates,
    ResumableEarlyStopHandler,
    RunSettings,
    val_loss_score,
)
from monai_das.handlers.sampling import SampledIndicesHandler, SamplingFiguresHandler, unwrap_network
from monai_das.handlers.summary import TrainingSummaryHandler
from monai_das.handlers.tracking import ResumableMLFlowHandler, unique_trackers
from monai_das.handlers.temperature import TemperatureScheduleHandler
from monai_das.handlers.warmup import SamplerWarmupHandler

__all__ = [
    "AtomicCheckpointSaver",
    "CheckedCheckpointLoader",
    "AtomicDiskSaver",
    "ResumeCheckpointLoader",
    "remove_stale_temp_files",
    "hold_checkpoint_folder",
    "hold_on_saving_rank",
    "release_checkpoint_folder",
    "BalancedAccuracy",
    "EpochLoss",
    "PresentClassesROCAUC",
    "per_class_metrics",
    "bootstrap_intervals",
    "label_indices",
    "SelectionDiagnosticsHandler",
    "SamplerWarmupHandler",
    "TemperatureScheduleHandler",
    "jaccard_distance",
    "balanced_accuracy_from_confusion",
    "CARD_KEY",
    "ModelCardSaver",
    "check_model_card",
    "model_facts",
    "output_dir_at_k",
    "output_dir_capped",
    "evaluation_output_dir",
    "other_data",
    "trained_options",
    "build_model_card",
    "card_input_shape",
    "PreciseBNHandler",
    "PredictionWriter",
    "ClassificationReportSaver",
    "write_json_atomic",
    "EngineStateAttributes",
    "RandomStates",
    "RunSettings",
    "ResumableEarlyStopHandler",
    "val_loss_score",
    "SampledIndicesHandler",
    "SamplingFiguresHandler",
    "unwrap_network",
    "TrainingSummaryHandler",
    "ResumableMLFlowHandler",
    "unique_trackers",
]
