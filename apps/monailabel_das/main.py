"""
MONAI Label sample app serving (and training) a DAS bundle as a classification model.

    monailabel start_server --app apps/monailabel_das --studies <folder> --conf bundle <bundle folder>

Config (``--conf KEY VALUE``, see ``lib/app_tasks.py``): ``bundle`` (default: ``bundles/das_volume_classification``
of this repository), ``model_dir`` (default ``<app>/model/<bundle name>``: where training writes ``models/model.pt``),
``labels`` (comma-separated class names), ``spatial_size`` (``D,H,W``; a video bundle's frame ``H,W``), ``max_epochs``,
``train_overrides`` (JSON), ``train`` (``false``: no train task), ``engine`` (``onnxruntime`` (default) |
``torchscript`` | ``eager``; ``prefer`` is the former name), ``num_kept`` / ``keep_ratio`` (frames kept at inference;
default: the trained k),
``modalities`` (comma-separated accepted DICOM modalities), ``preload``. A key that looks like a misspelling of one of
these (``spatial_sise``) is refused with a did-you-mean; another unknown key (not one of MONAI Label's own) is named in
a warning.

Tasks, both named ``das_classification``: the infer task (``lib/infers``) and the train task (``lib/trainers``), which
trains the bundle on the datastore's classes (the ``final`` label's label info ``{"label": <class name or index>}``)
in a staging folder (``<model_dir>/monailabel/training``) and, only when the run completes with a model, publishes
it into ``<model_dir>`` (``models/model.pt`` last), which the infer task then reloads. A failed or killed run leaves
the served model as it was (its lock files are removed, naming it, by the next run).

Requests of the infer task: ``engine`` (one of the three, default ``--conf engine``; another value is refused; the
result's ``das.engine`` is the engine that ran, ``das.engine_requested`` the one asked for, a fallback is in
``das.warnings``), ``num_kept`` / ``keep_ratio`` (a request's replaces the ``--conf`` default; ``0`` = the trained k;
a request carrying both, as a client echoing ``/info``'s config does, is read by the one it changed). A request key
that looks like a misspelling of these (``num_kep``) is named in ``das.warnings``.
"""

from __future__ import annotations

import logging
import os

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from lib.app_tasks import app_settings, make_infer_task, make_train_task

logger = logging.getLogger(__name__)


class MyApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.settings = app_settings(conf or {}, app_dir)
        self.bundle = self.settings["bundle"]
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MONAI Label - DAS",
            description="Deep Attention-guided Adaptive Subsampling (DAS) classification",
            version="0.2.0",
        )

    def init_infers(self) -> dict[str, InferTask]:
        if not os.path.exists(self.bundle):
            logger.warning("DAS bundle %s not found: no infer task", self.bundle)
            return {}
        return {"das_classification": make_infer_task(self.settings)}

    def init_trainers(self) -> dict[str, TrainTask]:
        if not os.path.exists(self.bundle):
            logger.warning("DAS bundle %s not found: no train task", self.bundle)
            return {}
        task = make_train_task(self.settings)
        return {"das_classification": task} if task is not None else {}

    def init_strategies(self):
        return {}

    def init_scoring_methods(self):
        return {}
