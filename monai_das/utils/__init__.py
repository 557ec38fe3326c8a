from .cost import count_macs, count_parameters, model_cost
