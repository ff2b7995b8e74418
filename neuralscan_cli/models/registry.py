"""A timm-style model registry: `create_model(name, **options)`, one module per model family.

A family module decorates each builder with `@register_model("name", task=...)`; the builder's keyword
arguments are the model's options, and `create_model` checks the caller's options against them so a typo is
a clear error rather than a silently ignored setting.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

TASKS = ("classify", "segment")


@dataclass(frozen=True)
class _Entry:
    builder: Callable
    task: str


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, task: str = "classify"):
    """Decorator: register `builder(**options) -> keras.Model` under `name` for `task` ("classify"/"segment")."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorator(builder: Callable) -> Callable:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = _Entry(builder, task)
        return builder

    return decorator


def list_models(task: str | None = None) -> list[str]:
    """Registered model names (sorted), optionally only those for one task."""
    return sorted(n for n, e in _REGISTRY.items() if task is None or e.task == task)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(list_models())}") from None


def model_task(name: str) -> str:
    """'classify' or 'segment'."""
    return _entry(name).task


def model_options(name: str) -> dict:
    """The options a model accepts with their defaults (`inspect.Parameter.empty` when required)."""
    params = inspect.signature(_entry(name).builder).parameters
    return {p.name: p.default for p in params.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def create_model(name: str, /, **options):
    """Build model `name` with `options` (the builder's keyword arguments); unknown options are an error."""
    entry = _entry(name)
    params = inspect.signature(entry.builder).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    if not takes_any:
        valid = model_options(name)
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for model "
                f"{name!r}; valid options: {', '.join(valid)}")
    return entry.builder(**options)
