"""
MONAI Label sample app serving a DAS bundle as a classification model.

    monailabel start_server --app apps/monailabel_das --studies <folder> --conf bundle <bundle folder>

Config (``--conf KEY VALUE``): ``bundle`` (default: ``bundles/das_volume_classification`` of this repository), ``prefer``
(``torchscript`` | ``checkpoint``), ``modalities`` (comma-separated accepted DICOM modalities), ``preload``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask

from lib.infers import DASClassification

logger = logging.getLogger(__name__)

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "das_volume_classification"


class MyApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.bundle = conf.get("bundle", str(DEFAULT_BUNDLE))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MONAI Label - DAS",
            description="Deep Attention-guided Adaptive Subsampling (DAS) classification",
            version="0.1.0",
        )

    def init_infers(self) -> dict[str, InferTask]:
        modalities = self.conf.get("modalities")
        options = {"allowed_modalities": [m.strip() for m in modalities.split(",")]} if modalities else {}
        if not os.path.exists(self.bundle):
            logger.warning("DAS bundle %s not found: no infer task", self.bundle)
            return {}
        return {
            "das_classification": DASClassification(
                self.bundle, prefer=self.conf.get("prefer", "torchscript"), loader_options=options,
                preload=self.conf.get("preload", "false").lower() == "true",
            )
        }

    def init_trainers(self):
        return {}

    def init_strategies(self):
        return {}

    def init_scoring_methods(self):
        return {}
