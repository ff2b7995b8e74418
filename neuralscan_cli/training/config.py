"""Training configs: YAML files under configs/, every field overridable with `section.key=value`."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from ..errors import NeuralScanError
from ..yamlfile import read_yaml_mapping

DEFAULTS: dict = {
    "task": "classify",
    "data": {"cache": None, "train_split": "train", "val_split": "val", "partial_labels": {}},
    "model": {"name": "attention_cnn", "input_size": None, "weights": "none", "init_from": None, "init_member": None,
              "options": {}},
    "train": {"epochs": 30, "batch_size": 32, "optimizer": "adamw", "learning_rate": 0.002, "weight_decay": 1e-4,
              "schedule": "cosine", "warmup_epochs": 1, "label_smoothing": 0.1, "class_weights": True,
              "patience": 8, "freeze_epochs": 0, "fine_tune_lr_factor": 0.1, "fine_tune_from": 0.0,
              "loss": "dice_bce", "max_steps_per_epoch": 0, "average_last": 0, "mask_weight": 0.0},
    "augment": {"flip_lr": True, "flip_ud": False, "rotation_deg": 15.0, "zoom": 0.1, "shift": 0.08,
                "brightness": 0.1, "contrast": 0.15, "gamma": 0.2, "noise_std": 0.02},
    "runtime": {"seed": 42, "precision": "fp32", "intra_op_threads": 0, "inter_op_threads": 0, "itex": True},
    "out": "runs/run",
}
CHOICES = {
    ("task",): ("classify", "segment"),
    ("train", "optimizer"): ("adamw", "adam", "sgd"),
    ("train", "schedule"): ("cosine", "onecycle", "constant"),
    ("train", "loss"): ("dice_bce", "focal_tversky"),
    ("runtime", "precision"): ("fp32", "bf16"),
}


FREE_MAPPINGS = ("options", "partial_labels")  # sections whose keys are the user's, not fixed fields


class ConfigError(NeuralScanError):
    pass


def _merge(base: dict, new: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in (new or {}).items():
        if k not in out:
            raise ConfigError(f"unknown config field '{where}{k}'")
        if isinstance(out[k], dict) and k not in FREE_MAPPINGS:
            if not isinstance(v, dict):
                raise ConfigError(f"config field '{where}{k}' must be a section")
            out[k] = _merge(out[k], v, f"{where}{k}.")
        else:
            out[k] = v
    return out


def _parse_value(text: str):
    """YAML scalar parsing: '5' -> 5, 'true' -> True, '[1,2]' -> [1, 2], 'null' -> None."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """`section.key=value` overrides. Switching model.name drops the config's model.options (they were written
    for the other model, e.g. attention_cnn widths); options given in the overrides still apply."""
    cfg = copy.deepcopy(cfg)
    names = [item.split("=", 1)[1] for item in overrides
             if "=" in item and item.split("=", 1)[0].strip() == "model.name"]
    if names and _parse_value(names[-1]) != cfg["model"].get("name"):
        cfg["model"]["options"] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = cfg
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"unknown config field '{key}'")
            node = node[p]
        leaf = parts[-1]
        if leaf not in node and not (len(parts) >= 2 and parts[-2] in FREE_MAPPINGS):
            raise ConfigError(f"unknown config field '{key}'")
        node[leaf] = _parse_value(value)
    return cfg


def _check_types(cfg: dict, defaults: dict = DEFAULTS, where: str = "") -> None:
    """A field whose default is a bool or a number takes only that kind of value ('maybe' is not true)."""
    for k, default in defaults.items():
        v = cfg.get(k)
        if isinstance(default, dict) and k not in FREE_MAPPINGS and isinstance(v, dict):
            _check_types(v, default, f"{where}{k}.")
        elif isinstance(default, bool):
            if not isinstance(v, bool):
                raise ConfigError(f"{where}{k} must be true or false, got {v!r}")
        elif isinstance(default, (int, float)):
            if isinstance(v, str):  # PyYAML reads 1e-4 (no dot) as a string
                try:
                    v = cfg[k] = float(v)
                except ValueError:
                    pass
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}{k} must be a number, got {v!r}")


def validate(cfg: dict) -> dict:
    _check_types(cfg)
    for path, allowed in CHOICES.items():
        node = cfg
        for p in path:
            node = node[p]
        if node not in allowed:
            raise ConfigError(f"{'.'.join(path)} must be one of {', '.join(allowed)}, got {node!r}")
    t = cfg["train"]
    for k in ("epochs", "batch_size"):
        if not isinstance(t[k], int) or t[k] < 1:
            raise ConfigError(f"train.{k} must be a positive whole number, got {t[k]!r}")
    if not isinstance(t["average_last"], int) or not 0 <= t["average_last"] <= t["epochs"]:
        raise ConfigError(f"train.average_last must be a whole number from 0 to train.epochs, got {t['average_last']!r}")
    if not isinstance(t["mask_weight"], (int, float)) or isinstance(t["mask_weight"], bool) or t["mask_weight"] < 0:
        raise ConfigError(f"train.mask_weight must be a number >= 0, got {t['mask_weight']!r}")
    if t["mask_weight"] and cfg["task"] != "classify":
        raise ConfigError("train.mask_weight is for classifiers (a segmenter's loss is all mask already)")
    if not float(t["learning_rate"]) > 0:
        raise ConfigError("train.learning_rate must be > 0")
    for key in ("max_steps_per_epoch", "patience", "freeze_epochs", "warmup_epochs"):
        if not isinstance(t[key], int) or isinstance(t[key], bool) or t[key] < 0:
            raise ConfigError(f"train.{key} must be a whole number >= 0, got {t[key]!r}")
    if not 0 <= float(t["label_smoothing"]) < 1:
        raise ConfigError(f"train.label_smoothing must be from 0 to below 1, got {t['label_smoothing']!r}")
    for key in ("intra_op_threads", "inter_op_threads"):
        v = cfg["runtime"][key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"runtime.{key} must be a whole number >= 0 (0 = all cores), got {v!r}")
    if cfg["data"]["train_split"] == cfg["data"]["val_split"]:
        raise ConfigError(f"data.train_split and data.val_split are both '{cfg['data']['train_split']}'; "
                          "validation must be on other images")
    if not isinstance(cfg["model"].get("options") or {}, dict):
        raise ConfigError(f"model.options must be a mapping such as {{dropout: 0.3}}, got "
                          f"{cfg['model']['options']!r}")
    if cfg["model"]["name"] == "ensemble":
        raise ConfigError("an ensemble is not trained but built from trained classifiers: neuralscan ensemble RUN "
                          "RUN... --out DIR")
    if cfg["model"].get("init_from") and cfg["task"] != "segment":
        raise ConfigError("model.init_from is for segmenters (a classifier's encoder starts a U-Net); a classifier "
                          "trains from model.weights")
    member = cfg["model"].get("init_member")
    if member is not None and (not isinstance(member, int) or isinstance(member, bool) or member < 1):
        raise ConfigError(f"model.init_member must be a member number >= 1 (or null), got {member!r}")
    size = cfg["model"]["input_size"]  # null: the cache's size (set when the cache is opened)
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 32 or size % 32):
        raise ConfigError(f"model.input_size must be a multiple of 32 (>= 32), got {size!r}")
    partial = cfg["data"].get("partial_labels") or {}
    if not isinstance(partial, dict) or not all(
            isinstance(v, list) and v and all(isinstance(c, str) for c in v) for v in partial.values()):
        raise ConfigError("data.partial_labels must map a label to a list of class names, "
                          "e.g. {tumor: [glioma, meningioma, pituitary]}")
    if not cfg["data"]["cache"]:
        raise ConfigError("no dataset cache given (data.cache in the config, or --cache)")
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    cfg = DEFAULTS
    if path is not None:
        cfg = _merge(DEFAULTS, read_yaml_mapping(path, ConfigError))
    return validate(apply_overrides(cfg, list(overrides)))


def save_config(cfg: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
