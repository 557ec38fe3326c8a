"""Networks of monai_das: samplers (DAS and baselines), MobileNetV3-Small, the subsampled classifier and the
frame-encoder contract (any 2D network ``N×C×H×W → N×E``)."""

from .blocks import FrameEncoder, FrameFeatures, TemporalHead, sample_without_replacement, select_frames
from .factory import SAMPLERS, build_classifier, get_encoder, get_sampler, kept_frames, num_kept
from .nets import *  # noqa: F401,F403
from .utils import to_frames, uniform_indices, unwrap_network

__all__ = [
    "FrameEncoder", "FrameFeatures", "TemporalHead", "sample_without_replacement", "select_frames",
    "SAMPLERS", "build_classifier", "get_encoder", "get_sampler", "kept_frames", "num_kept",
    "to_frames", "uniform_indices", "unwrap_network",
    "ADPSSampler", "SmallFrameEncoder", "DASampler", "DPSSampler", "MOBILENET_V3_SMALL_URL", "MobileNetV3Small",
    "OnnxClassifier", "BaseSampler", "SamplerOutput", "is_exporting", "FullSequenceSampler", "RandomSampler",
    "UniformSampler", "LAYOUTS", "SubsampledClassifier",
]
