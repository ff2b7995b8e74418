"""Training glue: configs, input pipelines, precision and threading, the fit loop, run folders."""
from .config import ConfigError, load_config
from .loop import TrainError, TrainResult, train

__all__ = ["ConfigError", "load_config", "TrainError", "TrainResult", "train"]
