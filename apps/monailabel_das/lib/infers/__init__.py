from .das_classification import DASClassification

__all__ = ["DASClassification"]
