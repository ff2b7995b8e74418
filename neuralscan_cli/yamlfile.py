"""Reading a YAML config file as a mapping, with one-line errors (shared by every config loader)."""
from __future__ import annotations

from pathlib import Path

import yaml

from .errors import NeuralScanError


def read_yaml_mapping(path: str | Path, error: type[NeuralScanError] = NeuralScanError) -> dict:
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such config file")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise error(f"{path}: a config must be a mapping at the top level")
    return loaded
