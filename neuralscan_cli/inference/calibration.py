"""Setting a classifier bundle's probability temperature (`neuralscan calibrate`).

The temperature is stored in model.json (`calibration`), not in the network: every engine (Keras, OpenVINO
FP32 and INT8) and every command (classify, evaluate, the segmenter's gate) reads it through the runner, and an
export carries it along. Fit it on labelled images the model did not train on: a run's validation split, or
for a model trained on everything, the temperature fitted on its twin trained with a fold held out
(`--temperature T` sets it without refitting; with DATA, it is also checked there).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import NeuralScanError
from ..evaluation.calibration import T_BOUNDS, apply_temperature, fit_temperature, negative_log_likelihood
from ..evaluation.metrics import expected_calibration_error
from .bundle import bundled_path, load_bundle

METHOD = "temperature scaling (Guo et al. 2017): softmax(log p / T), T minimising the NLL"


@dataclass
class CalibrationResult:
    bundle: Path
    temperature: float
    previous: float  # the bundle's temperature before this call
    fitted: bool  # True: fitted on `data`; False: given
    data: str | None = None
    split: str | None = None
    engine: str | None = None
    n: int = 0  # images with one of the model's classes the temperature was fitted or checked on
    accuracy: float | None = None  # unchanged by the temperature; shown so a bad fitting set stands out
    ece_before: float | None = None  # with T = 1 (the network's own probabilities)
    ece_after: float | None = None
    nll_before: float | None = None
    nll_after: float | None = None


def _check_writable(bundle) -> None:
    shipped = bundled_path("bundled").parent
    if bundle.root.resolve() == shipped.resolve() or shipped.resolve() in bundle.root.resolve().parents:
        raise NeuralScanError(f"{bundle.root} is part of the installed package; copy it (cp -r {bundle.root} "
                              f"DIR) and calibrate the copy")


def calibrate_bundle(model: str | Path, data: str | Path | None = None, *, temperature: float | None = None,
                     split: str | None = None, engine: str = "auto", batch_size: int = 32,
                     on_warning: Callable[[str], None] | None = None,
                     on_problem: Callable[[str], None] | None = None) -> CalibrationResult:
    """Fit (or set, with `temperature`) a classifier bundle's temperature and write it to its model.json.

    data: a preprocess cache (its `split`) or labelled raw data; images labelled with one of the model's
    classes are used (partial labels such as Br35H `tumor` are not: their true class is unknown). NeuralScanError
    for a segmenter, the installed bundled model, a temperature outside T_BOUNDS, or no usable image.
    """
    from .runners import load_data_for_bundle, make_runner

    if temperature is None and data is None:
        raise NeuralScanError("give DATA to fit the temperature on, or --temperature T to set it")
    if temperature is not None and not T_BOUNDS[0] <= temperature <= T_BOUNDS[1]:
        raise NeuralScanError(f"the temperature must be between {T_BOUNDS[0]} and {T_BOUNDS[1]}, got {temperature}")
    bundle = load_bundle(model)
    if bundle.task != "classify":
        raise NeuralScanError(f"{bundle.name} is a {bundle.task} model; calibration sets a classifier's "
                              f"probabilities")
    _check_writable(bundle)
    result = CalibrationResult(bundle=bundle.root, temperature=float(temperature or 1.0),
                               previous=bundle.temperature, fitted=temperature is None)
    if data is not None:
        runner = make_runner(bundle, engine)
        images01, labels, _, records, kind = load_data_for_bundle(data, bundle, split, on_warning=on_warning,
                                                            on_problem=on_problem)
        keep = labels >= 0 if labels is not None else np.zeros(len(images01), bool)
        if not keep.any():
            raise NeuralScanError(f"{data}: no image is labelled with one of the model's classes "
                                  f"({', '.join(bundle.classes)}); calibration needs labelled images")
        y = labels[keep]
        raw = runner.predict(images01[keep], batch_size=batch_size, calibrated=False)
        if temperature is None:
            result.temperature = round(fit_temperature(y, raw), 4)
            if on_warning and not T_BOUNDS[0] * 1.01 < result.temperature < T_BOUNDS[1] / 1.01:
                on_warning(f"the fitted temperature {result.temperature:.4g} is at the end of the search range "
                           f"{T_BOUNDS[0]:g}-{T_BOUNDS[1]:g}: the data hardly constrain it (too few or "
                           f"unrepresentative images?)")
        if on_warning:
            from ..evaluation.overlap import bundle_data_overlap

            overlap = bundle_data_overlap(bundle, data, kind, split or "val",
                                          [r["path"] for r in records] if kind != "cache" else [])
            if overlap:  # fitted on training images, the temperature undoes the network's overconfidence too little
                on_warning(overlap)
        scaled = apply_temperature(raw, result.temperature)
        result.data, result.engine, result.n = str(data), runner.engine, int(keep.sum())
        result.split = (split or "val") if kind == "cache" else "all"
        result.accuracy = float((raw.argmax(1) == y).mean())
        result.ece_before, result.ece_after = expected_calibration_error(y, raw), expected_calibration_error(y, scaled)
        result.nll_before, result.nll_after = negative_log_likelihood(y, raw), negative_log_likelihood(y, scaled)
        if result.n < 100 and on_warning and temperature is None:  # a given temperature is not estimated
            on_warning(f"only {result.n} labelled images: the temperature is a rough estimate")

    record = {"temperature": result.temperature, "method": METHOD,
              "source": "fitted" if result.fitted else "given",
              "set_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if result.data is not None:
        record["fitted_on" if result.fitted else "checked_on"] = {
            "data": result.data, "split": result.split, "engine": result.engine, "n": result.n,
            "ece_before": result.ece_before, "ece_after": result.ece_after,
            "nll_before": result.nll_before, "nll_after": result.nll_after}
    if result.temperature == 1.0:
        bundle.meta.pop("calibration", None)  # T = 1: the network's own probabilities
    else:
        bundle.meta["calibration"] = record
    bundle.save_meta()
    return result

