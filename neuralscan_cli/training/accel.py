"""Which CPU acceleration TensorFlow runs with: oneDNN, Intel Extension for TensorFlow (ITEX), precision, threads.

ITEX is a TensorFlow plugin that loads itself on `import tensorflow` from `site-packages/tensorflow-plugins`
and has no off switch. `import_tensorflow(itex=False)` hides that folder from TensorFlow's plugin scan for the
duration of the import only, in this process only, so a "without ITEX" measurement is real without editing
the installation. oneDNN is switched by TF_ENABLE_ONEDNN_OPTS, which TensorFlow reads at import: both must be
chosen before TensorFlow is first imported, so benchmarks run each variant in its own process.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager


def _loaded_shared_objects() -> str:
    try:
        with open("/proc/self/maps") as fh:
            return fh.read()
    except OSError:
        return ""


def itex_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("intel_extension_for_tensorflow") is not None


def itex_loaded() -> bool:
    """True when the ITEX CPU plugin library is mapped into this process."""
    return "libitex_cpu" in _loaded_shared_objects()


@contextmanager
def _plugin_scan_hidden():
    real_exists = os.path.exists

    def exists(path):
        if str(path).rstrip("/").endswith("tensorflow-plugins"):
            return False
        return real_exists(path)

    os.path.exists = exists
    try:
        yield
    finally:
        os.path.exists = real_exists


def import_tensorflow(*, itex: bool = True, onednn: bool | None = None):
    """Import TensorFlow with ITEX loaded or not (first import in the process decides) and oneDNN on/off."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if onednn is not None:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if itex:
        import tensorflow as tf
    else:
        with _plugin_scan_hidden():
            import tensorflow as tf
    return tf


def configure_threads(intra_op: int = 0, inter_op: int = 0) -> None:
    """0 keeps TensorFlow's default (one intra-op thread per core)."""
    import tensorflow as tf

    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:  # already initialised in this process: keep what is set
        pass


def set_precision(precision: str) -> None:
    """'fp32' or 'bf16' (Keras mixed precision: bf16 compute, fp32 weights; outputs are kept fp32 by the models)."""
    import keras

    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")


def acceleration_info(precision: str = "fp32") -> dict:
    """What is active now, for run provenance and benchmark rows."""
    import keras
    import tensorflow as tf

    flag = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    info = {
        "tensorflow": tf.__version__, "keras": keras.__version__,
        # TF >= 2.9 on x86 enables oneDNN unless TF_ENABLE_ONEDNN_OPTS=0
        "onednn": flag != "0",
        "itex_installed": itex_installed(), "itex_loaded": itex_loaded(),
        "precision": precision,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "cpu_count": os.cpu_count(),
    }
    if info["itex_loaded"]:
        try:
            import intel_extension_for_tensorflow as itex

            info["itex"] = itex.__version__
        except Exception:  # the plugin is loaded even when its Python wrapper fails to import
            info["itex"] = "loaded"
    return info
