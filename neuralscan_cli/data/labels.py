"""Partial labels: a dataset label that names a set of a model's classes rather than one class.

Br35H says only `tumor` (no type); to a glioma / meningioma / pituitary / no_tumor classifier that means "one
of the three tumour types". Training on such images with the loss -log(sum of the probabilities of the set)
teaches tumour against no tumour on Br35H scans too, instead of learning "figshare-looking = tumour" (every
typed tumour comes from figshare, every healthy scan from Br35H). Evaluation scores a partial label as right
when the predicted class is in its set.

A mapping {label: [classes...]} travels in the training config (`data.partial_labels`) and in model.json.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import NeuralScanError


class LabelError(NeuralScanError):
    pass


def check_partial_labels(partial: Mapping[str, Sequence[str]] | None, classes: Sequence[str]) -> dict[str, list[str]]:
    """The mapping as {label: [classes]}, validated: each set non-empty and made of `classes`; a label
    that is itself a class cannot also be partial."""
    out: dict[str, list[str]] = {}
    if not partial:
        return out
    if not isinstance(partial, Mapping):
        raise LabelError(f"partial labels must map a label to a list of classes, got {partial!r}")
    for label, members in partial.items():
        members = [members] if isinstance(members, str) else list(members or [])
        if not members:
            raise LabelError(f"partial label '{label}' names no classes")
        unknown = [m for m in members if m not in classes]
        if unknown:
            raise LabelError(f"partial label '{label}': {', '.join(map(str, unknown))} not among the classes "
                             f"({', '.join(classes)})")
        if label in classes:
            raise LabelError(f"'{label}' is a class and cannot also be a partial label")
        out[str(label)] = [str(m) for m in members]
    return out


def label_sets(label_names: Sequence[str], classes: Sequence[str],
               partial: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
    """(N, K) float32: row i is 1 on the classes label i allows (one-hot for a class, several for a partial
    label). A label that is neither raises LabelError."""
    index = {c: k for k, c in enumerate(classes)}
    partial = partial or {}
    out = np.zeros((len(label_names), len(classes)), np.float32)
    for i, name in enumerate(label_names):
        if name in index:
            out[i, index[name]] = 1.0
        elif name in partial:
            out[i, [index[m] for m in partial[name]]] = 1.0
        else:
            raise LabelError(f"label '{name}' is neither a class ({', '.join(classes)}) nor a partial label")
    return out


def resolve_targets(sets: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One class per row for scoring: the class itself for a one-hot row; for a partial label, the most
    probable class of its set (a call inside the set is right; a call outside it is an error against
    the set's likeliest member)."""
    return np.argmax(np.where(np.asarray(sets) > 0, np.asarray(probs, np.float64) + 1.0, 0.0), axis=1)


def in_set(sets: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Whether each predicted class index lies in its row's set."""
    return np.asarray(sets)[np.arange(len(pred)), np.asarray(pred)] > 0
