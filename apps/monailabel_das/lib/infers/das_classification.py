"""MONAI Label infer task serving a DAS bundle as a classifier (label, probabilities and the kept slices/frames)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from monai_das.deploy.predictor import DASPredictor
from monai_das.deploy.report import study_report
from monai_das.deploy.studies import LoadStudyd, StudyLoader

logger = logging.getLogger(__name__)


class DASClassification(BasicInferTask):
    """
    Classification infer task for a DAS bundle (``InferType.CLASSIFICATION``).

    The request's ``image`` (a volume file, a DICOM series folder, a multi-frame DICOM or a video file, as the
    datastore hands it over) is read and preprocessed by :class:`monai_das.deploy.studies.StudyLoader`, classified by
    :class:`monai_das.deploy.predictor.DASPredictor` (TorchScript ``models/model.ts``, falling back to
    ``models/model.pt`` + ``configs/inference.json``), and the result JSON holds MONAI Label's usual
    ``prediction`` list (``[{"idx", "label", "score"}]``) plus ``das``: the predicted label, the probabilities, the
    kept slice/frame indices (network and source positions) and the fraction of compute saved.

    Args:
        bundle_path: DAS bundle folder (or a TorchScript/checkpoint file, see ``DASPredictor.from_path``).
        prefer: ``"torchscript"`` (default) or ``"checkpoint"``.
        loader_options: :class:`StudyLoader` options (``allowed_modalities``, ``min_frames``, ``intensity_range``...).
        description: shown by MONAI Label's ``/info``.
        kwargs: passed to ``BasicInferTask`` (``preload``, ``skip_writer``, ...).
    """

    def __init__(
        self,
        bundle_path: str,
        prefer: str = "torchscript",
        loader_options: Mapping[str, Any] | None = None,
        description: str = "DAS: classify a volume/video from the slices/frames chosen by a learned sampler",
        **kwargs: Any,
    ) -> None:
        self.predictor = DASPredictor.from_path(bundle_path, prefer=prefer, device="cpu")
        self.loader_options = dict(loader_options or {})
        spec = self.predictor.spec
        labels = {spec.label_name(i): i for i in range(max(len(spec.labels), 1))} if spec.labels else None
        super().__init__(
            path=self.predictor.source,
            network=None,
            type=InferType.CLASSIFICATION,
            labels=labels,
            dimension=3,
            description=description,
            config={"prefer": prefer},
            load_strict=False,
            **kwargs,
        )

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return [LoadStudyd(keys=self.input_key, loader=StudyLoader(self.predictor.spec, **self.loader_options))]

    def post_transforms(self, data=None) -> Sequence[Callable]:
        return []

    def _get_network(self, device, data):
        """The predictor's network (loaded once, TorchScript or checkpoint), moved to ``device``."""
        device = torch.device(device)
        if self.predictor.device != device:
            self.predictor.network.to(device)
            self.predictor.device = device
        return self.predictor.network

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu"):
        """Classify ``data[input_key]``; ``data[output_label_key]`` = probabilities, ``data["das"]`` = the report."""
        self._get_network(device, data)
        prediction = self.predictor.predict(data[self.input_key])
        data[self.output_label_key] = MetaTensor(torch.tensor(prediction.probabilities))
        report = study_report(data[f"{self.input_key}_study"], prediction, self.predictor.describe())
        data["das"] = {
            k: report[k]
            for k in ("predicted_label", "predicted_name", "probabilities", "kept_indices", "kept_source_indices",
                      "kept_instance_numbers", "num_frames", "num_kept", "compute_saved", "macs_saved")
        }
        return data

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[Any, Any]:
        """MONAI Label's ``ClassificationWriter`` result plus the ``das`` block; no label file."""
        _, result = super().writer(data, extension=extension, dtype=dtype)
        result = dict(result or {})
        result["das"] = data["das"]
        return None, result
