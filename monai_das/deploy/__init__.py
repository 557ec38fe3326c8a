"""
Deployment of DAS classifiers.

- :mod:`.spec` (what the model expects: :class:`ModelSpec`, the model card and metadata read as plain data),
  :mod:`.model_files` (finding and loading model files; configs the user points at), :mod:`.predictor` (prediction
  and kept indices), :mod:`.studies`, :mod:`.report` (study reading/preprocessing and JSON reports): plain torch +
  MONAI, importable in the base install.
- :mod:`.operators`, :mod:`.app`: the MONAI Deploy App SDK application (optional extra: ``monai-deploy-app-sdk``,
  see ``scripts/setup_deploy_env.sh``); imported lazily, so ``import monai_das.deploy`` works without the SDK.
"""

from __future__ import annotations

from typing import Any

from .model_files import find_bundle_files, load_checkpoint, load_torchscript
from .predictor import DASPredictor, Prediction
from .spec import MissingMetadataError, ModelSpec
from .report import error_report, report_text, study_report, write_json, write_summary
from .studies import Study, StudyLoader, StudySource, discover_studies

__all__ = [
    "DASPredictor",
    "MissingMetadataError",
    "ModelSpec",
    "Prediction",
    "find_bundle_files",
    "load_checkpoint",
    "load_torchscript",
    "Study",
    "StudyLoader",
    "StudySource",
    "discover_studies",
    "error_report",
    "report_text",
    "study_report",
    "write_json",
    "write_summary",
    "DASClassifierApp",
    "sdk_available",
]


def sdk_available() -> bool:
    """True when the MONAI Deploy App SDK (``monai.deploy``) can be imported."""
    try:
        import monai.deploy.core  # noqa: F401
    except Exception:
        return False
    return True


def __getattr__(name: str) -> Any:
    if name == "DASClassifierApp":
        from .app import DASClassifierApp

        return DASClassifierApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
