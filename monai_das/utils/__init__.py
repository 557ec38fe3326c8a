from .config import parser_rewrites
from .cost import count_macs, count_parameters, macs_breakdown, model_cost
from .io import atomic_file, file_digest, input_folder_name, write_json_atomic, write_text_atomic
from .logs import quiet_loggers
from .process import run_child

__all__ = ["count_macs", "count_parameters", "macs_breakdown", "model_cost", "atomic_file", "file_digest",
           "input_folder_name", "write_json_atomic", "write_text_atomic", "quiet_loggers", "parser_rewrites",
           "run_child"]
