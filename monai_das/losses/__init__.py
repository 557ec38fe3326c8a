"""Losses of monai_das."""

from monai_das.losses.frame_relevance import FrameRelevanceLoss

__all__ = ["FrameRelevanceLoss"]
