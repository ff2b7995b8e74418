"""The fit loop glue: config -> data -> model -> fit with checkpoints -> a run folder that is a model bundle.

A run folder holds: config.yaml (resolved), history.csv and history.png, model.keras (best epoch, or the
average of the last epochs' weights when train.average_last is set), model.json (the bundle metadata every
other command reads), provenance.json, and checkpoints/ (last epoch with optimizer state, for --resume).
"""
from __future__ import annotations

import csv
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.labels import LabelError, check_partial_labels, in_set, label_sets, resolve_targets
from ..errors import NeuralScanError
from .accel import acceleration_info, configure_threads, import_tensorflow, set_precision
from .config import save_config


class TrainError(NeuralScanError):
    pass


MONITOR = {"classify": "val_macro_f1", "segment": "val_dice_all"}  # early stopping and best checkpoint


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_score: float
    monitor: str
    epochs_run: int
    seconds: float
    train_images_per_second: float
    weight_average: dict | None = None  # set when the bundle holds the average of the last epochs' weights


def _select(cache, split: str, task: str) -> np.ndarray:
    idx = cache.indices(split)
    if task == "classify":
        return idx[cache.labels[idx] >= 0]
    # segmentation: annotated images, plus no-tumour images whose truth is an empty mask
    labels = np.array(cache.column("label"))
    keep = cache.has_mask[idx] | (labels[idx] == "no_tumor")
    return idx[keep]


def _load_split(cache, idx: np.ndarray, task: str):
    images = np.asarray(cache.images[idx])
    if task == "classify":
        return images, cache.labels[idx]
    masks = cache.masks
    if masks is None:
        raise TrainError(f"{cache.root}: the cache holds no masks; a segmenter needs annotated images")
    m = np.asarray(masks[idx]).copy()
    m[~cache.has_mask[idx]] = 0  # no-tumour images: empty truth
    return images, m


class _EpochEnd:
    """Validation score, best/last checkpoints, history, early stopping: one Keras callback."""

    def __init__(self, keras, *, run_dir: Path, val_ds, val_targets, task: str, monitor_patience: int,
                 state: dict, n_train: int, on_epoch: Callable[[dict], None] | None, average_from: int = 0):
        self.keras = keras
        self.run_dir = run_dir
        self.val_ds = val_ds
        self.val_targets = val_targets
        self.task = task
        self.patience = monitor_patience
        self.state = state
        self.n_train = n_train
        self.on_epoch = on_epoch
        self.average_from = average_from  # 1-based first epoch whose weights join the average; 0 = none

    def callback(self):
        outer = self

        class Callback(self.keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer._t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer._epoch_end(self.model, epoch, dict(logs or {}))

            def set_model(self, model):
                super().set_model(model)
                from ..models.heads import classifier_of

                # with a mask head, the classifier (shared layers) is what is scored, checkpointed and shipped
                outer.net = classifier_of(model)

        return Callback()

    def _score(self, model) -> dict:
        probs = model.predict(self.val_ds, verbose=0)
        if self.task == "classify":
            from sklearn.metrics import f1_score

            # val_targets are sets of allowed classes; a partial label's truth is its likeliest member
            pred = probs.argmax(axis=1)
            truth = resolve_targets(self.val_targets, probs)
            return {"val_accuracy": float(in_set(self.val_targets, pred).mean()),
                    "val_macro_f1": float(f1_score(truth, pred, average="macro"))}
        from .losses import dice_scores

        d = dice_scores(self.val_targets, probs)
        tumour = self.val_targets.reshape(len(d), -1).any(axis=1)
        # the monitored score is Dice over every image, where a no-tumour image scores 1 only when predicted
        # empty: a checkpoint that outlines tumours well but paints specks on healthy scans does not win
        return {"val_dice_all": float(d.mean()),
                "val_dice": float(d[tumour].mean()) if tumour.any() else float("nan"),
                "val_empty_correct": float(d[~tumour].mean()) if (~tumour).any() else float("nan")}

    def _epoch_end(self, training_model, epoch: int, logs: dict):
        train_seconds = time.perf_counter() - self._t0
        model = self.net
        scores = self._score(model)
        monitor = MONITOR[self.task]
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}, **scores,
               "lr": float(_current_lr(training_model)), "train_seconds": round(train_seconds, 2),
               "train_images_per_second": round(self.n_train / max(train_seconds, 1e-9), 2)}
        st = self.state
        st["history"].append(row)
        improved = scores[monitor] > st["best_score"]
        if improved:
            st["best_score"], st["best_epoch"] = scores[monitor], epoch + 1
            model.save_weights(str(self.run_dir / "checkpoints" / "best.weights.h5"))
        st["epoch"] = epoch + 1
        if self.average_from and epoch + 1 >= self.average_from:
            _accumulate_average(self.run_dir / "checkpoints" / "average.npz", model.get_weights(), epoch + 1)
        training_model.save(str(self.run_dir / "checkpoints" / "last.keras"))
        (self.run_dir / "checkpoints" / "state.json").write_text(json.dumps(st, indent=1))
        _write_history(self.run_dir, st["history"])
        if self.on_epoch:
            self.on_epoch(row | {"best": improved, "monitor": monitor})
        if epoch + 1 - st["best_epoch"] >= self.patience and not (self.average_from and epoch + 1 >= self.average_from):
            # no early stop inside the averaging window: its epochs are the ones the averaged model is made of
            training_model.stop_training = True


def _accumulate_average(path: Path, weights: list, epoch: int) -> None:
    """Running mean of the weights over epochs (stochastic weight averaging on the schedule's low-LR tail),
    kept on disk so that --resume continues it. An epoch already counted (a resumed run) is not added twice."""
    if path.is_file():
        with np.load(path) as z:
            count, last = int(z["count"]), int(z["epoch"])
            mean = [z[f"w{i}"] for i in range(len(weights))]
        if epoch <= last:
            return
        mean = [m + (np.asarray(w, np.float64) - m) / (count + 1) for m, w in zip(mean, weights)]
        count += 1
    else:
        mean, count = [np.asarray(w, np.float64) for w in weights], 1
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, count=count, epoch=epoch, **{f"w{i}": m for i, m in enumerate(mean)})
    tmp.replace(path)


def _load_average(path: Path) -> tuple[list, int]:
    with np.load(path) as z:
        n = sum(1 for k in z.files if k.startswith("w"))
        return [z[f"w{i}"] for i in range(n)], int(z["count"])


def _current_lr(model) -> float:
    opt = model.optimizer
    lr = opt.learning_rate
    try:
        if callable(lr) and not hasattr(lr, "numpy"):
            return float(lr(opt.iterations))
        return float(np.asarray(lr))
    except Exception:  # schedules differ across Keras versions; the LR column is informative only
        return float("nan")


def _write_history(run_dir: Path, history: list[dict]) -> None:
    cols = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    with open(run_dir / "history.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(history)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ep = [r["epoch"] for r in history]
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
        a.plot(ep, [r.get("loss") for r in history], label="train loss")
        a.set_xlabel("epoch")
        a.legend()
        for k in ("val_macro_f1", "val_accuracy", "val_dice_all", "val_dice", "val_empty_correct"):
            if k in history[0]:
                b.plot(ep, [r.get(k) for r in history], label=k)
        b.set_xlabel("epoch")
        b.legend()
        fig.tight_layout()
        try:
            fig.savefig(run_dir / "history.png", dpi=90)
        finally:
            plt.close(fig)
    except Exception as exc:  # noqa: BLE001 - a plot must never fail a training run, but say it is missing
        warnings.warn(f"history.png not written: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)


def _build_model(cfg: dict, num_classes: int):
    from ..models import create_model, model_options, model_task

    name = cfg["model"]["name"]
    try:
        if model_task(name) != cfg["task"]:
            raise TrainError(f"model '{name}' is a {model_task(name)} model but the config's task is {cfg['task']}")
        valid = model_options(name)
        opts = dict(cfg["model"].get("options") or {})
        opts["input_size"] = cfg["model"]["input_size"]
        if "num_classes" in valid:
            opts["num_classes"] = num_classes
        if "weights" in valid:
            opts["weights"] = cfg["model"].get("weights", "none")
        return create_model(name, **opts)
    except (ValueError, TypeError) as exc:  # e.g. model.options.width=abc: a user's value, said in one line
        raise TrainError(f"model {name} with options {cfg['model'].get('options') or {}}: {exc}") from None


# what a resumed run may change: how long it runs and how the machine runs it; anything else (model, data,
# optimiser, schedule, loss, augmentation, precision) would make one run out of two and record only the second
RESUME_MAY_CHANGE = {"out", "train.epochs", "train.patience", "runtime.intra_op_threads",
                     "runtime.inter_op_threads", "runtime.itex"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key not in ("model.options", "data.partial_labels"):
            out |= _flat(v, key + ".")
        else:
            out[key] = v
    return out


def _check_resume_settings(cfg: dict, saved_path: Path) -> None:
    """TrainError naming every setting a resume would change that the run's checkpoint depends on."""
    from .config import load_config

    if not saved_path.is_file():
        return
    saved = _flat(load_config(saved_path))
    now = _flat(cfg)
    if now.get("data.cache") and saved.get("data.cache"):  # the same cache named by another path is the same
        if Path(saved["data.cache"]).is_dir():
            now["data.cache"] = str(Path(now["data.cache"]).resolve())
            saved["data.cache"] = str(Path(saved["data.cache"]).resolve())
        else:  # a relative path saved from another folder cannot be compared from here
            saved["data.cache"] = now["data.cache"]
    if saved.get("model.input_size") is not None and now.get("model.input_size") is None:
        now["model.input_size"] = saved["model.input_size"]  # resolved from the cache when the run began
    changed = [f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now))
               if k not in RESUME_MAY_CHANGE and saved.get(k) != now.get(k)]
    if changed:
        raise TrainError(f"--resume continues the run as it was set up; it would change {'; '.join(changed[:4])}"
                         f"{' ...' if len(changed) > 4 else ''}: start a new --out with these settings instead")


def _failed_start(run_dir: Path) -> bool:
    """A run folder that holds nothing a run leaves after its first epoch (at most config.yaml and an empty
    checkpoints/): a start that failed, which the corrected command may reuse."""
    for item in run_dir.iterdir():
        if item.name == "checkpoints" and item.is_dir() and not any(item.iterdir()):
            continue
        if item.name != "config.yaml":
            return False
    return True


def train(cfg: dict, *, resume: bool = False, on_epoch: Callable[[dict], None] | None = None,
          on_start: Callable[[dict], None] | None = None) -> TrainResult:
    """Run one training described by a resolved config (see `training.config`)."""
    try:
        return _train(cfg, resume=resume, on_epoch=on_epoch, on_start=on_start)
    finally:
        import sys

        if "keras" in sys.modules:  # a bf16 run that failed must not leave every later model in mixed precision
            set_precision("fp32")


def _train(cfg: dict, *, resume: bool, on_epoch: Callable[[dict], None] | None,
           on_start: Callable[[dict], None] | None) -> TrainResult:
    from ..data import DatasetCache
    from ..inference.bundle import new_bundle_meta

    t_start = time.perf_counter()
    run_dir = Path(cfg["out"])
    ckpt = run_dir / "checkpoints"
    if resume:
        if not (ckpt / "last.keras").is_file():
            raise TrainError(f"{run_dir}: nothing to resume (no checkpoints/last.keras)")
        _check_resume_settings(cfg, run_dir / "config.yaml")
    elif run_dir.exists() and not _failed_start(run_dir):
        raise TrainError(f"{run_dir}: run folder exists and is not empty; use --resume or another --out")
    task = cfg["task"]
    rt = cfg["runtime"]
    tf = import_tensorflow(itex=bool(rt.get("itex", True)))
    import keras

    from . import losses, schedules  # noqa: F401  (registers the classes a checkpoint refers to, for --resume)

    configure_threads(int(rt.get("intra_op_threads") or 0), int(rt.get("inter_op_threads") or 0))
    set_precision(rt["precision"])
    seed = int(rt["seed"])
    keras.utils.set_random_seed(seed)

    cache = DatasetCache.open(cfg["data"]["cache"])
    partial, partial_unused = {}, []
    if task == "classify":
        # a cache label named in data.partial_labels is a set of the model's classes, not a class of its own
        given = cfg["data"].get("partial_labels") or {}
        classes = [c for c in cache.classes if c not in given]
        # the shipped recipe names Br35H's `tumor`, which a figshare-only cache lacks; said, not fatal
        partial_unused = [k for k in given if k not in cache.classes]
        try:
            partial = check_partial_labels({k: v for k, v in given.items() if k in cache.classes}, classes)
        except LabelError as exc:
            raise TrainError(f"{cache.root}: {exc}") from None
    else:
        classes = ["tumor"]
    if task == "classify" and len(classes) < 2:
        raise TrainError(f"{cache.root}: a classifier needs at least two classes (found {len(classes)})")
    tr_idx = _select(cache, cfg["data"]["train_split"], task)
    va_idx = _select(cache, cfg["data"]["val_split"], task)
    if len(tr_idx) == 0 or len(va_idx) == 0:
        raise TrainError(f"{cache.root}: the '{cfg['data']['train_split']}' and '{cfg['data']['val_split']}' splits "
                         f"must both hold {'labelled' if task == 'classify' else 'annotated'} images "
                         f"(found {len(tr_idx)} and {len(va_idx)})")
    # the group split is the cache's; assert it here too, since a leak would silently inflate every figure
    if set(cache.groups[tr_idx]) & set(cache.groups[va_idx]):
        raise TrainError(f"{cache.root}: a group lies in both train and val; rebuild the cache")
    if cfg["model"]["input_size"] is None:  # not given: the cache's size, recorded in the saved config
        if cache.size < 32 or cache.size % 32:
            raise TrainError(f"{cache.root}: the cache holds {cache.size} px images; the networks need a multiple "
                             f"of 32 px: rebuild the cache with another --size (160 for the shipped recipes)")
        cfg["model"]["input_size"] = cache.size
    if cache.size != int(cfg["model"]["input_size"]):
        # one size end to end: the bundle's preprocessing then reproduces exactly what the network saw
        raise TrainError(f"{cache.root}: the cache holds {cache.size} px images but model.input_size is "
                         f"{cfg['model']['input_size']}; rebuild the cache with --size {cfg['model']['input_size']} "
                         f"or set model.input_size={cache.size}")
    x_tr, y_tr = _load_split(cache, tr_idx, task)
    x_va, y_va = _load_split(cache, va_idx, task)
    if task == "classify":  # cache label indices -> (N, K) sets of allowed classes
        label_tr, label_va = y_tr, y_va
        y_tr = label_sets([cache.classes[i] for i in label_tr], classes, partial)
        y_va = label_sets([cache.classes[i] for i in label_va], classes, partial)

    from .pipeline import class_weights, make_dataset, steps_per_epoch

    t = cfg["train"]
    size = int(cfg["model"]["input_size"])
    weights = None
    if task == "classify" and t.get("class_weights", True):
        # inverse frequency of the cache's labels: a partial label weighs as one more class
        weights = class_weights(label_tr, len(cache.classes))[label_tr]
    bs = int(t["batch_size"])
    mask_weight = float(t.get("mask_weight") or 0.0)
    mask_args = _mask_targets(cache, tr_idx) if mask_weight else {}
    train_ds = make_dataset(x_tr, y_tr, task=task, num_classes=len(classes), batch_size=bs, input_size=size,
                            training=True, augment=cfg["augment"], sample_weights=weights, seed=seed, **mask_args)
    val_ds = make_dataset(x_va, y_va, task=task, num_classes=len(classes), batch_size=64, input_size=size,
                          training=False)
    val_targets = y_va if task == "classify" else _resize_masks(y_va, size)
    steps = steps_per_epoch(len(x_tr), bs)
    max_steps = int(t.get("max_steps_per_epoch") or 0)
    if max_steps:
        train_ds = train_ds.take(max_steps)
        steps = min(steps, max_steps)
    epochs = int(t["epochs"])

    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "history": []}
    if resume:
        state = json.loads((ckpt / "state.json").read_text())
        model = keras.models.load_model(str(ckpt / "last.keras"))
        # state["epoch"] >= epochs: nothing left to fit; the bundle is (re)written from the best checkpoint,
        # which is how a run stopped by hand is finished
    else:
        model = _build_model(cfg, len(classes))
        init_from = cfg["model"].get("init_from")
        if init_from and task == "segment":
            _init_encoder(model, init_from, cfg["model"].get("init_member"))
        if mask_weight:
            from ..models.heads import with_mask_head

            try:
                model = with_mask_head(model)
            except ValueError as exc:
                raise TrainError(str(exc)) from None
        _compile(model, cfg, steps * epochs, steps, task)
    if task == "classify" and (len(model.outputs) == 2) != bool(mask_weight):
        raise TrainError(f"{run_dir}: the checkpoint {'has' if len(model.outputs) == 2 else 'has no'} mask head; "
                         "resume with the run's own train.mask_weight")
    ckpt.mkdir(parents=True, exist_ok=True)  # only now: a run that failed to start leaves no folder behind
    save_config(cfg, run_dir / "config.yaml")
    accel = acceleration_info(rt["precision"])
    if on_start:
        from ..models.heads import classifier_of

        on_start({"accel": accel, "n_train": len(x_tr), "n_val": len(x_va), "classes": classes,
                  "params": int(classifier_of(model).count_params()), "steps_per_epoch": steps,
                  "partial_labels_unused": partial_unused, "cache_labels": list(cache.classes)})

    average_last = int(t.get("average_last") or 0)
    epoch_end = _EpochEnd(keras, run_dir=run_dir, val_ds=val_ds, val_targets=val_targets, task=task,
                          monitor_patience=int(t["patience"]), state=state,
                          n_train=min(len(x_tr), steps * bs), on_epoch=on_epoch,
                          average_from=epochs - average_last + 1 if average_last else 0)
    freeze = int(t.get("freeze_epochs") or 0) if _has_backbone(model) else 0
    start = int(state["epoch"])
    if freeze and start < freeze:
        from ..models import set_backbone_trainable

        set_backbone_trainable(model, False)
        _compile(model, cfg, steps * freeze, steps, task)
        model.fit(train_ds, epochs=freeze, initial_epoch=start, callbacks=[epoch_end.callback()], verbose=0)
        start = int(state["epoch"])
        set_backbone_trainable(model, True, float(t.get("fine_tune_from") or 0.0))
        _compile(model, cfg, steps * (epochs - freeze), steps, task, lr_factor=float(t["fine_tune_lr_factor"]))
    if start < epochs and not getattr(model, "stop_training", False):
        model.fit(train_ds, epochs=epochs, initial_epoch=start, callbacks=[epoch_end.callback()], verbose=0)

    # the bundle: best weights into an optimizer-free float32 build of the network. Mixed bf16 keeps float32
    # weights, so they load as they are; the shipped graph then holds no bf16 casts (OpenVINO picks precision)
    set_precision("fp32")
    best = _build_model(cfg, len(classes))
    best.load_weights(str(ckpt / "best.weights.h5"))
    best_row = next(r for r in state["history"] if r["epoch"] == state["best_epoch"])
    averaged = None
    if average_last and (ckpt / "average.npz").is_file():
        # the averaged weights replace the best epoch's: chosen by the config, not by peeking at validation.
        # Batch-norm statistics are averaged with the rest (the epochs share the low-LR basin, so they agree)
        weights, count = _load_average(ckpt / "average.npz")
        best.set_weights([w.astype(v.dtype) for w, v in zip(weights, best.get_weights())])
        averaged = {"epochs_averaged": count, "first_epoch": epochs - average_last + 1,
                    "val": epoch_end._score(best),
                    "best_epoch_val": {k: v for k, v in best_row.items() if k.startswith("val_")}}
    best.save(str(run_dir / "model.keras"))
    # weights + the registry architecture load in Keras 2 and 3 alike; a .keras file does not cross versions
    best.save_weights(str(run_dir / "model.weights.h5"))
    wall = time.perf_counter() - t_start
    hist = state["history"]
    ips = [r["train_images_per_second"] for r in hist[1:]] or [r["train_images_per_second"] for r in hist]
    monitor = MONITOR[task]
    metrics = _final_metrics(best, val_ds, val_targets, classes, task,
                             [cache.classes[i] for i in label_va] if task == "classify" else None)
    provenance = {
        "data": {"cache": str(Path(cfg["data"]["cache"]).resolve()), "fingerprint": cache.info.get("fingerprint"),
                 "sources": cache.info.get("sources"), "split": cache.info.get("split"),
                 "train_split": cfg["data"]["train_split"], "val_split": cfg["data"]["val_split"],
                 "n_train": int(len(x_tr)), "n_val": int(len(x_va)),
                 "split_counts": cache.info.get("split_counts")},
        "seed": seed, "acceleration": accel, "machine": _machine(),
        "wall_seconds": round(wall, 1), "epochs_run": int(state["epoch"]), "best_epoch": int(state["best_epoch"]),
        "train_images_per_second_median": float(np.median(ips)) if ips else None,
        "params": int(best.count_params()), "best_epoch_row": best_row,
        "weights": "average of the last epochs" if averaged else "best epoch",
    }
    if averaged:
        provenance["weight_average"] = averaged
    (run_dir / "provenance.json").write_text(json.dumps(provenance, indent=2))
    meta = new_bundle_meta(task=task, classes=classes, size=size, preprocessing={**cache.info["preprocessing"],
                           "size": size}, name=run_dir.name, architecture=cfg["model"]["name"],
                           architecture_options=cfg["model"].get("options") or {},
                           training={"config": cfg, **provenance})
    meta["files"] = {"keras": "model.keras", "keras_weights": "model.weights.h5"}
    if partial:
        meta["partial_labels"] = partial
    meta["metrics"] = {"val": metrics}
    (run_dir / "model.json").write_text(json.dumps(meta, indent=2, default=str))
    return TrainResult(run_dir, int(state["best_epoch"]), float(state["best_score"]), monitor, int(state["epoch"]),
                       wall, provenance["train_images_per_second_median"] or 0.0, averaged)


def _mask_targets(cache, idx: np.ndarray) -> dict:
    """Masks and mask-loss weights for mask-supervised classification: a figshare/Br35H mask where one exists,
    an empty mask for a no-tumour image, and weight 0 (no mask loss) for a tumour image nobody outlined."""
    if cache.masks is None:
        raise TrainError(f"{cache.root}: train.mask_weight needs a cache with tumour masks (this one has none)")
    masks = np.asarray(cache.masks[idx]).copy()
    known = cache.has_mask[idx] | (np.array(cache.column("label"))[idx] == "no_tumor")
    masks[~cache.has_mask[idx]] = 0
    if not known.any():
        raise TrainError(f"{cache.root}: train.mask_weight is set but no training image has a mask")
    return {"masks": masks, "mask_weights": known.astype(np.float32)}


def _resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    if masks.shape[1] == size:
        return masks
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(m).resize((size, size), Image.NEAREST)) for m in masks])


def _has_backbone(model) -> bool:
    return any(layer.name == "backbone" for layer in model.layers)


def _init_encoder(model, spec, member: int | None = None) -> None:
    from ..inference.bundle import load_bundle
    from ..inference.runners import load_keras_model
    from ..models import init_encoder_from_classifier
    from ..models.ensemble import member_models

    bundle = load_bundle(spec)
    if bundle.task != "classify":
        raise TrainError(f"{spec} is a {bundle.task} model; model.init_from takes a trained classifier, whose "
                         "encoder starts the U-Net")
    classifier = load_keras_model(bundle)
    members = member_models(classifier)
    if members:  # an ensemble: its members share layer names, so one of them is the encoder's source
        if member is None or member > len(members):
            raise TrainError(f"{spec} is an ensemble of {len(members)} classifiers: choose the one to initialise "
                             f"from with model.init_member=1..{len(members)}")
        classifier = members[member - 1]
    elif member is not None:
        raise TrainError(f"{spec} is a single classifier: model.init_member is for ensembles")
    # the first conv decides: other widths still share the width-free CBAM spatial convs, a silent partial copy
    if init_encoder_from_classifier(model, classifier) == 0 or not _same_weights(model, classifier, "stem_conv"):
        raise TrainError(f"{spec}: that classifier's encoder does not match this segmenter "
                         "(init_from needs the same trunk: attention_cnn_unet with the classifier's widths)")


def _same_weights(a, b, layer: str) -> bool:
    try:
        wa, wb = a.get_layer(layer).get_weights(), b.get_layer(layer).get_weights()
    except ValueError:  # a network without that layer
        return False
    return len(wa) == len(wb) and all(x.shape == y.shape and (x == y).all() for x, y in zip(wa, wb))


def _compile(model, cfg: dict, total_steps: int, warmup_unit: int, task: str, lr_factor: float = 1.0) -> None:
    import keras

    from .schedules import make_schedule

    t = cfg["train"]
    peak = float(t["learning_rate"]) * lr_factor
    lr = make_schedule(t["schedule"], peak, total_steps, int(t.get("warmup_epochs") or 0) * warmup_unit)
    wd = float(t.get("weight_decay") or 0.0)
    if t["optimizer"] == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=lr, weight_decay=wd)
    elif t["optimizer"] == "adam":
        opt = keras.optimizers.Adam(learning_rate=lr)
    else:
        opt = keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True)
    if task == "classify":
        from .losses import SetCrossEntropy, set_accuracy, tumour_fraction_loss

        # = categorical cross-entropy with label smoothing on one-class targets; also takes partial labels
        loss = SetCrossEntropy(label_smoothing=float(t.get("label_smoothing") or 0.0))
        if len(model.outputs) == 2:  # with the auxiliary mask head (train.mask_weight)
            model.compile(optimizer=opt, loss=[loss, tumour_fraction_loss],
                          loss_weights=[1.0, float(t["mask_weight"])], metrics=[[set_accuracy], []])
        else:
            model.compile(optimizer=opt, loss=loss, metrics=[set_accuracy])
    else:
        from .losses import LOSSES

        model.compile(optimizer=opt, loss=LOSSES[t.get("loss", "dice_bce")])


def _final_metrics(model, val_ds, val_targets, classes, task, val_names=None) -> dict:
    probs = model.predict(val_ds, verbose=0)
    if task == "classify":
        from ..evaluation import classification_metrics, partial_label_metrics

        single = val_targets.sum(1) == 1  # images of one class; partial labels are reported apart
        metrics = classification_metrics(val_targets[single].argmax(1), probs[single], classes)
        if (~single).any():
            metrics["partial_labels"] = partial_label_metrics(np.asarray(val_names)[~single], val_targets[~single],
                                                              probs[~single], classes)
        return metrics
    from .losses import dice_scores

    d = dice_scores(val_targets, probs)
    tumour = val_targets.reshape(len(d), -1).any(axis=1)
    return {"n": int(len(d)), "dice_mean_tumor": float(d[tumour].mean()) if tumour.any() else None,
            "dice_median_tumor": float(np.median(d[tumour])) if tumour.any() else None,
            "empty_mask_rate_no_tumor": float(d[~tumour].mean()) if (~tumour).any() else None}


def _machine() -> dict:
    from ..bench.machine import describe_machine

    return describe_machine()
