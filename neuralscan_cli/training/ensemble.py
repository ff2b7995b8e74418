"""Average trained classifiers into one bundle (`neuralscan ensemble RUN RUN ... --out DIR`).

The members are trained separately (different recipes or seeds make them disagree on different images,
which is what averaging buys); here their weights are copied into one `ensemble` network (models/ensemble.py)
and written as an ordinary bundle. Every member must have been trained for the same classes, image size and
preprocessing, since the ensemble applies one preprocessing and reads one set of outputs.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import NeuralScanError


class EnsembleError(NeuralScanError):
    pass


def _check_same(bundles, what: str, get) -> None:
    first = get(bundles[0])
    for b in bundles[1:]:
        if get(b) != first:
            raise EnsembleError(f"{b.root}: its {what} ({get(b)}) differ from {bundles[0].root}'s ({first}); "
                                "ensemble members must share them")


def build_ensemble(members: list[str | Path], out: str | Path, name: str | None = None) -> Path:
    """Write the bundle of the mean of `members` (run folders or bundles of classifiers) to `out`."""
    from ..inference.bundle import load_bundle, new_bundle_meta
    from ..inference.runners import load_keras_model
    from ..models import create_model
    from ..models.ensemble import member_models

    if len(members) < 2:
        raise EnsembleError(f"an ensemble needs at least two models, got {len(members)}")
    out = Path(out)
    bundles = [load_bundle(m) for m in members]
    for b in bundles:
        if b.task != "classify":
            raise EnsembleError(f"{b.root}: a {b.task} model; only classifiers can be averaged")
        if b.meta.get("architecture") in (None, "ensemble"):
            raise EnsembleError(f"{b.root}: {'an ensemble already' if b.meta.get('architecture') else 'no architecture recorded'}; "
                                "give the trained member runs")
    _check_same(bundles, "classes", lambda b: b.classes)
    _check_same(bundles, "input size", lambda b: b.size)
    _check_same(bundles, "preprocessing", lambda b: b.meta.get("preprocessing"))
    _check_same(bundles, "partial labels", lambda b: b.meta.get("partial_labels"))
    resolved = [b.root.resolve() for b in bundles]
    repeated = sorted({str(r) for r in resolved if resolved.count(r) > 1})
    if repeated:  # the mean would silently weigh that model twice
        raise EnsembleError(f"{repeated[0]}: named more than once; give each member once")
    if out.resolve() in resolved:
        raise EnsembleError(f"{out}: is one of the members; write the ensemble to a new folder")
    if out.exists() and any(out.iterdir()):
        raise EnsembleError(f"{out}: folder exists and is not empty; choose another --out")

    specs = [{"name": b.meta["architecture"], "options": dict(b.meta.get("architecture_options") or {})}
             for b in bundles]
    model = create_model("ensemble", members=specs, num_classes=len(bundles[0].classes), input_size=bundles[0].size)
    for sub, b in zip(member_models(model), bundles):
        sub.set_weights(load_keras_model(b).get_weights())

    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out / "model.keras"))
    record = []
    for i, (sub, b) in enumerate(zip(member_models(model), bundles), start=1):
        # each member's own record travels with the ensemble: weights, config, history, provenance, metrics
        folder = out / "members" / f"member{i}"
        folder.mkdir(parents=True)
        sub.save_weights(str(folder / "model.weights.h5"))
        for f in ("config.yaml", "history.csv", "provenance.json"):
            if (b.root / f).is_file():
                shutil.copy2(b.root / f, folder / f)
        training = b.meta.get("training") or {}
        record.append({"member": f"member{i}", "source": str(b.root.resolve()), "name": b.name,
                       "architecture": specs[i - 1]["name"], "params": training.get("params"),
                       "seed": training.get("seed"), "data": training.get("data"),
                       "wall_seconds": training.get("wall_seconds"), "best_epoch": training.get("best_epoch"),
                       "val": (b.meta.get("metrics") or {}).get("val"),
                       "temperature": b.temperature if b.temperature != 1.0 else None})
    # the first member's training data stands for the ensemble's (export's calibration default reads it)
    first = bundles[0].meta.get("training") or {}
    meta = new_bundle_meta(task="classify", classes=bundles[0].classes, size=bundles[0].size,
                           preprocessing=bundles[0].meta["preprocessing"], name=name or out.name,
                           architecture="ensemble", architecture_options={"members": specs},
                           training={"data": first.get("data"), "config": first.get("config"),
                                     "members": record, "params": int(model.count_params())})
    # the portable weights are the members' own files (one per member; `runners` loads each into its
    # sub-model), so no single file holds them all
    meta["files"] = {"keras": "model.keras",
                     "keras_members": [f"members/member{i}/model.weights.h5" for i in range(1, len(bundles) + 1)]}
    if bundles[0].meta.get("partial_labels"):
        meta["partial_labels"] = bundles[0].meta["partial_labels"]
    (out / "model.json").write_text(json.dumps(meta, indent=2, default=str))
    (out / "provenance.json").write_text(json.dumps({"ensemble_of": record, "params": int(model.count_params()),
                                                     "combination": "mean of the members' softmax outputs"},
                                                    indent=2, default=str))
    return out
