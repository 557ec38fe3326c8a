from .cost import count_macs, count_parameters, model_cost
from .io import atomic_file, write_json_atomic, write_text_atomic
