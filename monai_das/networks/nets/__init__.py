from ..blocks.frame_encoder import SmallFrameEncoder  # ADPS's default encoder (here before it moved to blocks)
from .adps import ADPSSampler
from .das import DASampler
from .dps import DPSSampler
from .mobilenetv3 import MOBILENET_V3_SMALL_URL, MobileNetV3Small
from .onnx_classifier import OnnxClassifier
from .sampler import BaseSampler, SamplerOutput, is_exporting
from .simple_samplers import FullSequenceSampler, RandomSampler, UniformSampler
from .subsampled_classifier import LAYOUTS, SubsampledClassifier
