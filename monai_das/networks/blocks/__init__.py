from .frame_encoder import (
    PROBE_SIZE,
    FrameEncoder,
    SmallFrameEncoder,
    encoder_in_channels,
    encoder_out_features,
    probe_encoder_features,
)
from .frame_features import FEATURE_NAMES, FrameFeatures
from .gumbel import gumbel_top_k, indices_to_matrix, sample_without_replacement, select_frames
from .mobilenetv3_blocks import (
    SMALL_MAP_PIXELS,
    ConvNormAct,
    InvertedResidual,
    SameConv2d,
    SameConv3d,
    SqueezeExcitation,
    make_divisible,
)
from .temporal_head import TEMPORAL_HEADS, TemporalHead
