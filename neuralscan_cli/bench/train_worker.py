"""One training-speed variant in a fresh interpreter: `python -m neuralscan_cli.bench.train_worker --variant V`.

Whether ITEX is loaded and whether TensorFlow uses oneDNN are fixed when TensorFlow is first imported, so every
variant runs in its own process. The worker sets the environment, imports TensorFlow through
`training.accel.import_tensorflow` (which hides the ITEX plugin folder when the variant asks for no ITEX),
sets the precision, builds the classifier, and times `steps` training steps (`train_on_batch`, which returns
the loss and so waits for the step to finish) after `warmup` untimed ones, on batches made by
`training.pipeline.make_dataset` ahead of time (the input pipeline is not part of the timing). It prints one
JSON line: per-step seconds, losses, images/s and `acceleration_info()`, which proves what was active.

Same seed, same batches, same initial weights in every variant: the losses can be compared across variants.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

# name -> how the process is set up. "stock" is the plain-Eigen TensorFlow path (oneDNN off, no ITEX).
# bf16 two ways: the Keras mixed_bfloat16 policy (what `neuralscan train --set runtime.precision=bf16` does) and,
# with ITEX, ITEX's auto mixed precision (a graph rewrite of an fp32 model to bf16, ITEX's recommended path).
VARIANTS = {
    "onednn_off": {"itex": False, "onednn": False, "precision": "fp32", "label": "TF, oneDNN off, fp32"},
    "onednn_on": {"itex": False, "onednn": True, "precision": "fp32", "label": "TF + oneDNN, fp32"},
    "itex": {"itex": True, "onednn": True, "precision": "fp32", "label": "TF + ITEX, fp32"},
    "onednn_bf16": {"itex": False, "onednn": True, "precision": "bf16", "label": "TF + oneDNN, bf16 (Keras policy)"},
    "itex_bf16": {"itex": True, "onednn": True, "precision": "bf16", "amp": True,
                  "label": "TF + ITEX, bf16 (ITEX AMP)"},
    "itex_keras_bf16": {"itex": True, "onednn": True, "precision": "bf16",
                        "label": "TF + ITEX, bf16 (Keras policy)"},
}
BF16_KERAS = "Keras mixed_bfloat16 policy (bf16 compute, fp32 weights)"
BF16_AMP = ("ITEX auto mixed precision (ITEX_AUTO_MIXED_PRECISION=1, BFLOAT16: the fp32 graph rewritten to bf16; "
            "Keras policy float32)")
AMP_ENV = ("ITEX_AUTO_MIXED_PRECISION", "ITEX_AUTO_MIXED_PRECISION_DATA_TYPE")

def _emit(result: dict) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown: unloading TensorFlow (and ITEX) takes seconds and is not part of the figure
    os._exit(0)


def _data(args, num_classes: int):
    import numpy as np

    rng = np.random.default_rng(args.seed)
    n = args.batch * max(1, min(args.batches, args.steps + args.warmup))
    source = "synthetic (uniform noise images, random labels)"
    if args.cache:
        from ..data import DatasetCache

        cache = DatasetCache.open(args.cache)
        idx = cache.indices(None, labelled=True)
        if len(idx):
            pick = np.sort(rng.choice(idx, size=n, replace=len(idx) < n))
            images = np.asarray(cache.images[pick])
            labels = np.clip(cache.labels[pick], 0, num_classes - 1)
            return images, labels, f"cache {cache.root} ({len(idx)} labelled images, {n} used)"
    images = rng.integers(0, 256, size=(n, args.size, args.size), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=n)
    return images, labels, source


def run(args) -> dict:
    spec = VARIANTS[args.variant]
    t0 = time.perf_counter()
    from ..training.accel import acceleration_info, import_tensorflow, itex_installed, set_precision

    if spec["itex"] and not itex_installed():
        return {"variant": args.variant, "available": False, "reason": "intel-extension-for-tensorflow not installed"}
    for k in AMP_ENV:  # only the AMP variant rewrites the graph, whatever the parent's environment says
        os.environ.pop(k, None)
    if spec.get("amp"):
        os.environ["ITEX_AUTO_MIXED_PRECISION"] = "1"
        os.environ["ITEX_AUTO_MIXED_PRECISION_DATA_TYPE"] = "BFLOAT16"
    tf = import_tensorflow(itex=spec["itex"], onednn=spec["onednn"])
    import keras

    t_import = time.perf_counter() - t0
    keras_precision = "fp32" if spec.get("amp") else spec["precision"]
    info = acceleration_info(spec["precision"])
    if spec.get("amp"):
        info["itex_amp"] = {k: os.environ.get(k) for k in AMP_ENV}
    if spec["itex"] and not info["itex_loaded"]:
        return {"variant": args.variant, "available": False, "accel": info,
                "reason": "intel-extension-for-tensorflow is installed but its plugin did not load"}
    if not spec["itex"] and info["itex_loaded"]:  # the hiding did not work: the figure would be a lie
        return {"variant": args.variant, "available": False, "accel": info,
                "reason": "ITEX loaded although this variant must run without it"}
    set_precision(keras_precision)
    keras.utils.set_random_seed(args.seed)

    from ..models import create_model, model_options
    from ..training.pipeline import make_dataset

    options = json.loads(args.options or "{}")
    valid = model_options(args.model)
    options["input_size"] = args.size
    if "num_classes" in valid:
        options.setdefault("num_classes", args.classes)
    if "weights" in valid:
        options.setdefault("weights", "none")
    num_classes = int(options.get("num_classes", args.classes))
    model = create_model(args.model, **options)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-4),
                  loss=keras.losses.CategoricalCrossentropy())

    images, labels, source = _data(args, num_classes)
    ds = make_dataset(images, labels, task="classify", num_classes=num_classes, batch_size=args.batch,
                      input_size=args.size, training=False)
    batches = [(x, y) for x, y in ds]  # made before timing: only the model's step is measured
    warm, steps, losses = [], [], []
    for i in range(args.warmup + args.steps):
        x, y = batches[i % len(batches)]
        t = time.perf_counter()
        loss = model.train_on_batch(x, y)
        dt = time.perf_counter() - t
        loss = float(loss[0] if isinstance(loss, (list, tuple)) else loss)
        (warm if i < args.warmup else steps).append(dt)
        losses.append(loss)
    steps_sorted = sorted(steps)
    median = steps_sorted[len(steps) // 2] if len(steps) % 2 else sum(steps_sorted[len(steps) // 2 - 1:
                                                                                   len(steps) // 2 + 1]) / 2
    return {
        "variant": args.variant, "available": True, "label": spec["label"], "precision": spec["precision"],
        "bf16_mode": (BF16_AMP if spec.get("amp") else BF16_KERAS) if spec["precision"] == "bf16" else None,
        "model": args.model, "options": {k: v for k, v in options.items() if k != "input_size"},
        "size": args.size, "batch": args.batch, "params": int(model.count_params()), "data": source,
        "import_seconds": round(t_import, 3), "warmup_seconds": warm, "step_seconds": steps, "losses": losses,
        "images_per_second": args.batch / median if median > 0 else None,
        "accel": info, "tf_version": tf.__version__,
    }


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", required=True, choices=list(VARIANTS))
    ap.add_argument("--model", default="attention_cnn")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--options", default="{}", help="JSON: the model's architecture options")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    ap.add_argument("--cache", default=None, help="take the batches from this dataset cache (else synthetic)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    try:
        result = run(args)
    except Exception as exc:  # noqa: BLE001 - reported as the variant's row, never a crash of the benchmark
        result = {"variant": args.variant, "available": False,
                  "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
    _emit(result)


if __name__ == "__main__":
    main()
