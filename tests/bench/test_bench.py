"""`neuralscan bench`: statistics helpers, the FLOPs counter, the training worker's no-ITEX process, an honest
row for a missing accelerator, and `bench --quick` end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from neuralscan_cli.bench import suites
from neuralscan_cli.bench.harness import rotated, run_worker, time_interleaved
from neuralscan_cli.bench.stats import bootstrap_ci, ratio_ci, summarize

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ statistics
def test_summarize_known_inputs():
    s = summarize(range(1, 10))
    assert s["n"] == 9 and s["median"] == 5 and s["mean"] == 5
    assert (s["p25"], s["p75"], s["iqr"]) == (3, 7, 4)
    assert s["p99"] == pytest.approx(8.92)  # linear interpolation: 8 + 0.92 * (9 - 8)
    assert s["outliers"] == 0 and (s["min"], s["max"]) == (1, 9)
    assert summarize([1, 2, 3, 4, 5, 6, 7, 8, 9, 100])["outliers"] == 1  # 100 is far beyond p75 + 1.5 IQR
    assert summarize([])["median"] is None and summarize([])["n"] == 0


def test_bootstrap_ci_contains_the_median_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.normal(10.0, 1.0, 40), rng.normal(10.0, 1.0, 2000)
    lo_s, hi_s = bootstrap_ci(small, n=1000, seed=0)
    lo_l, hi_l = bootstrap_ci(large, n=1000, seed=0)
    assert lo_s < 10.0 < hi_s and lo_l < 10.0 < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3
    assert bootstrap_ci([4.0]) == (4.0, 4.0) and bootstrap_ci([]) == (None, None)
    assert bootstrap_ci([1, 2, 3], seed=7) == bootstrap_ci([1, 2, 3], seed=7)  # seeded: reproducible


def test_ratio_of_medians_with_interval():
    rng = np.random.default_rng(2)
    stock, fast = 2.0 + rng.normal(0, 0.05, 30), 1.0 + rng.normal(0, 0.025, 30)
    r = ratio_ci(stock, fast)
    assert r["ratio"] == pytest.approx(np.median(stock) / np.median(fast))
    assert r["lo"] < 2.0 < r["hi"] and r["hi"] - r["lo"] < 0.2
    assert ratio_ci([], [1.0])["ratio"] is None


def test_time_interleaved_alternates_after_warmup():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "AB"}
    times = time_interleaved(fns, repeats=3, warmup=1)
    assert calls == list("AB" + "ABABAB")
    assert {k: len(v) for k, v in times.items()} == {"A": 3, "B": 3}
    calls.clear()
    time_interleaved(fns, repeats=2, warmup=0, rotate=True)
    assert calls == list("ABBA")
    assert rotated([1, 2, 3], 1) == [2, 3, 1]


# ------------------------------------------------------------------------------------------ FLOPs
def test_flops_of_a_hand_computed_model():
    import keras

    from neuralscan_cli.bench.flops import count_flops

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)  # 8*8 outputs x 4 filters x 3*3*3 = 6912 MACs
    x = keras.layers.BatchNormalization()(x)  # not counted
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 8*8 x 4 channels x 3*3 = 2304
    x = keras.layers.Conv2D(6, 1, strides=2)(x)  # 4*4 x 6 x 1*1*4 = 384
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)  # every input 4*4*6 scatters 2*2*2: 768
    y = keras.layers.Dense(3)(x)  # per pixel: 8*8 x 2 x 3 = 384
    z = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(y))  # 3 x 5 = 15
    inner = keras.Model(inp, z)
    outer_in = keras.Input((8, 8, 3))
    model = keras.Model(outer_in, keras.layers.Dense(2)(inner(outer_in)))  # nested model + 5 x 2 = 10
    res = count_flops(model)
    macs = 6912 + 2304 + 384 + 768 + 384 + 15 + 10
    assert res["macs"] == macs and res["flops"] == 2 * macs and not res["skipped"]
    assert res["by_type"]["Conv2DTranspose"] == 768 and res["by_type"]["DepthwiseConv2D"] == 2304


def test_int8_peak_from_machine_description():
    m = {"isa": {"avx512_vnni": True}, "cpus_usable": 2, "cpu_mhz": 2000.0}
    p = suites.int8_peak(m)
    assert p["ops_per_second"] == pytest.approx(2 * 2.0e9 * 256) and "cpu MHz" in p["clock_source"]
    p = suites.int8_peak({"isa": {"avx512_vnni": True}, "cores": 4}, clock_ghz=None)
    assert p["ghz"] == suites.DEFAULT_GHZ and p["ops_per_second"] == pytest.approx(4 * 2.3e9 * 256)
    assert suites.int8_peak(m, clock_ghz=3.0)["ghz"] == 3.0
    none = suites.int8_peak({"isa": {"avx2": True}, "cores": 2})
    assert none["ops_per_second"] is None and "VNNI" in none["reason"]


# ------------------------------------------------------------------------------------------ training
def test_training_worker_without_itex_is_a_real_no_itex_process():
    """The no-ITEX variant runs in a fresh interpreter in which the ITEX plugin is not loaded."""
    res = run_worker("neuralscan_cli.bench.train_worker",
                     ["--variant", "onednn_on", "--model", "small_cnn", "--size", "32", "--batch", "4",
                      "--steps", "2", "--warmup", "1"], timeout=180)
    assert res["available"], res
    assert res["accel"]["itex_loaded"] is False and res["accel"]["onednn"] is True
    assert len(res["step_seconds"]) == 2 and res["images_per_second"] > 0
    assert len(res["losses"]) == 3 and all(np.isfinite(res["losses"]))


def test_worker_reports_missing_itex_instead_of_failing(monkeypatch):
    from neuralscan_cli.bench import train_worker
    from neuralscan_cli.training import accel

    monkeypatch.setattr(accel, "itex_installed", lambda: False)
    args = Namespace(variant="itex", seed=0)
    res = train_worker.run(args)  # returns before TensorFlow is imported
    assert res == {"variant": "itex", "available": False, "reason": "intel-extension-for-tensorflow not installed"}


def _fake_worker(module, args, **kw):
    v = args[args.index("--variant") + 1]
    spec = suites.VARIANTS[v]
    assert not spec["itex"], "an ITEX variant must not be launched when ITEX is missing"
    step = {"onednn_off": 0.2, "onednn_on": 0.1, "onednn_bf16": 0.08}[v]
    return {"variant": v, "available": True, "step_seconds": [step, step * 1.1, step * 0.9], "losses": [1.0, 0.9],
            "images_per_second": 8 / step, "bf16_mode": "x" if spec["precision"] == "bf16" else None,
            "params": 10, "data": "synthetic",
            "accel": {"itex_loaded": False, "onednn": spec["onednn"], "itex_installed": False}}


def test_missing_itex_gives_not_available_rows(monkeypatch):
    monkeypatch.setattr(suites, "itex_installed", lambda: False)
    monkeypatch.setattr(suites, "run_worker", _fake_worker)
    settings = suites.Settings.make(True, repeats=2, steps=3)
    spec = suites.training_spec(suites.TINY, quick=True)
    sec = suites.training_suite(settings=settings, spec=spec)
    rows = {r["variant"]: r for r in sec["rows"]}
    assert set(rows) == set(suites.TRAIN_ORDER)
    for v in ("itex", "itex_bf16", "itex_keras_bf16"):
        assert rows[v]["available"] is False and rows[v]["reason"] == "intel-extension-for-tensorflow not installed"
    assert rows["onednn_on"]["available"] and rows["onednn_on"]["runs"] == 2
    assert rows["onednn_on"]["speedup_vs_onednn_off"]["ratio"] == pytest.approx(2.0)
    assert rows["onednn_off"]["speedup_vs_onednn_off"] is None  # the baseline itself
    head, body = suites.table_rows({"training": sec})["training"]
    assert any("not available: intel-extension-for-tensorflow not installed" in c for row in body for c in row)


# ------------------------------------------------------------------------------------------ end to end
def test_bench_quick_end_to_end(tmp_path):
    """`neuralscan bench --quick` in a fresh process (as a user runs it): every section, a PNG, tables."""
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "neuralscan_cli", "bench", "--quick", "--out", str(out),
                           "--repeats", "1", "--steps", "2"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**__import__("os").environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "bench.json").read_text())
    for key in ("machine", *suites.SECTIONS):
        assert key in res
    assert res["machine"]["cpu"] and "isa" in res["machine"] and res["machine"]["versions"]["openvino"]
    for name in suites.SECTIONS:
        sec = res[name]
        assert sec["rows"], f"{name}: no rows ({sec.get('reason')})"
        for row in sec["rows"]:
            assert row["available"] is True or row.get("reason"), (name, row)
    classical = {r["estimator"]: r for r in res["classical"]["rows"]}
    assert set(classical) == set(suites.CLASSICAL)
    # the exact estimators must agree; random forest and k-means grow different trees / centroids in oneDAL
    assert all(classical[k]["agreement"] >= 0.9 for k in ("svc", "knn", "logreg") if classical[k]["available"])
    assert all(0 <= r["agreement"] <= 1 for r in classical.values() if r["available"])
    train = {r["variant"]: r for r in res["training"]["rows"]}
    assert set(train) == set(suites.TRAIN_ORDER)
    assert train["onednn_off"]["available"] and train["onednn_off"]["itex_loaded"] is False
    assert train["onednn_off"]["onednn"] is False and train["onednn_on"]["itex_loaded"] is False
    if res["machine"]["versions"]["intel-extension-for-tensorflow"]:
        assert train["itex"]["itex_loaded"] is True
    inf = {(r["model"], r["engine"]): r for r in res["inference"]["rows"]}
    assert set(inf) == {(m, e) for m in ("classifier", "segmenter") for e in ("tf_fp32", "ov_fp32", "ov_int8")}
    assert all(r["available"] for r in inf.values()), [r.get("reason") for r in inf.values()]
    assert 0 <= inf[("classifier", "ov_int8")]["agreement"]["top1_with_tf"] <= 1
    assert inf[("classifier", "ov_int8")]["latency_ms"]["median"] > 0
    assert inf[("classifier", "ov_int8")]["share_of_int8_peak"] is not None or \
        res["inference"]["int8_peak"]["ops_per_second"] is None
    assert "dice_with_tf_mean" in inf[("segmenter", "ov_int8")]["agreement"]
    cls = {r["engine"]: r for r in res["classify"]["rows"]}
    assert set(cls) == {"keras", "openvino-fp32", "openvino-int8"} and all(r["available"] for r in cls.values())
    decode = res["classify"]["decode_only"]  # the same scans decoded without a model: the pipeline's ceiling
    assert decode["images"] == cls["openvino-int8"]["images"] and decode["images_per_second"] > 0
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| variant |" in (out / "bench.md").read_text()
    assert "Training" in proc.stdout and "Inference" in proc.stdout
    # how long --quick takes is a figure the bench records, not something a test on a shared CI core asserts


@pytest.mark.parametrize("args, fragment", [(["--model", "no-such-model"], "no such model"),
                                            (["--model", "bundled-segmenter"], "needs a classification model"),
                                            (["--segmenter", "bundled"], "needs a segmentation model"),
                                            (["--arch", "nosuch"], "--arch nosuch: not a classifier"),
                                            (["--arch", "unet"], "--arch unet: not a classifier")])
def test_a_named_model_that_is_missing_or_of_the_wrong_task_stops_the_bench(tmp_path, args, fragment):
    from typer.testing import CliRunner

    from neuralscan_cli.cli.app import app

    r = CliRunner().invoke(app, ["bench", "--quick", "--suite", "inference", "--out", str(tmp_path / "b"), *args])
    assert r.exit_code == 2, r.output
    assert not isinstance(r.exception, Exception)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], r.output
    assert not (tmp_path / "b" / "bench.json").exists()
