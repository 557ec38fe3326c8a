from .frame_features import FEATURE_NAMES, FrameFeatures
from .gumbel import indices_to_matrix, sample_without_replacement, select_frames
from .temporal_head import TEMPORAL_HEADS, TemporalHead
