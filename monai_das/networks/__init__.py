"""Networks of monai_das: samplers (DAS and baselines), MobileNetV3-Small and the subsampled classifier."""

from .blocks import FrameFeatures, TemporalHead, sample_without_replacement, select_frames
from .factory import SAMPLERS, build_classifier, get_sampler, num_kept
from .nets import *  # noqa: F401,F403
