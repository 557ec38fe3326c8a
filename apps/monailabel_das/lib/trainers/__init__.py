from .das_train import DASTrain, bundle_command, bundle_overrides, datastore_datalist, prepare_model_dir

__all__ = ["DASTrain", "bundle_command", "bundle_overrides", "datastore_datalist", "prepare_model_dir"]
