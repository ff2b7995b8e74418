"""`neuralscan baseline` and `neuralscan analyze` on a small real figshare cache (60 slices, 4 patient folds)."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neuralscan_cli.cli.app import app
from neuralscan_cli.data import DatasetCache, build_cache
from neuralscan_cli.features.baselines import BaselineConfig, cross_validate, group_cv_splits
from neuralscan_cli.features.radiomics import FeatureConfig, extract_matrix, feature_path
from neuralscan_cli.preprocess import PreprocessConfig

FIGSHARE = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "figshare"
CLASSES = ["glioma", "meningioma", "pituitary"]
cli = CliRunner()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """60 figshare slices (5 per class per fold) with masks, as a 128-pixel cache."""
    if not (FIGSHARE / "labels.csv").is_file():
        pytest.skip(f"figshare not found at {FIGSHARE}")
    root = tmp_path_factory.mktemp("features")
    with open(FIGSHARE / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked = [r for c in CLASSES for f in "1234" for r in [r for r in rows if r["label"] == c and r["fold"] == f][:5]]
    manifest = root / "small.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in picked:
            w.writerow({**r, "image": str(FIGSHARE / r["image"]), "mask": str(FIGSHARE / r["mask"])})
    build_cache([manifest], root / "cache", config=PreprocessConfig(size=128), classes=CLASSES, workers=2)
    # a few of the same scans with no labels and no masks
    loose = root / "loose"
    loose.mkdir()
    for r in picked[:6]:
        shutil.copy(FIGSHARE / r["image"], loose / Path(r["image"]).name)
    build_cache([loose], root / "unlabelled", config=PreprocessConfig(size=128), workers=1)
    return {"root": root, "cache": root / "cache", "manifest": manifest, "unlabelled": root / "unlabelled",
            "rows": picked}


def _one_line_error(result):
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, Exception)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_feature_matrix_is_cached(small, monkeypatch):
    cache = DatasetCache.open(small["cache"])
    assert cache.folds.tolist().count("1") == 15
    X, names, cfg = extract_matrix(cache, FeatureConfig(), workers=2)
    assert cfg.region == "mask"  # every image has a tumour mask
    assert X.shape == (60, len(names)) and X.dtype == np.float32 and np.isfinite(X).all()
    assert any(n.startswith("shape_") for n in names)
    assert feature_path(cache, cfg).is_file()
    import neuralscan_cli.features.radiomics as radiomics

    def no_extraction(task):
        raise AssertionError("features were recomputed instead of read back")

    with monkeypatch.context() as m:
        m.setattr(radiomics, "_work", no_extraction)
        X2, names2, _ = extract_matrix(cache, FeatureConfig(), workers=1)
    assert np.array_equal(X, X2) and names == names2
    Xh, names_h, cfg_h = extract_matrix(cache, FeatureConfig(region="head"), workers=1)
    assert cfg_h.region == "head" and not any(n.startswith("shape_") for n in names_h)
    # single-process and parallel extraction agree
    X1, _, _ = extract_matrix(cache, FeatureConfig(), workers=1, use_file=False)
    assert np.allclose(X, X1)


def test_intel_and_stock_agree(small):
    cache = DatasetCache.open(small["cache"])
    X, _, _ = extract_matrix(cache, FeatureConfig(), workers=2)
    y, groups = cache.labels, cache.groups
    splits, info = group_cv_splits(y, groups, cache.folds)
    assert info["kind"] == "given folds"
    res = cross_validate(X, y, groups, splits, ["svc", "knn", "logreg", "rf"], ["stock", "intel"], CLASSES,
                         BaselineConfig())
    # kNN is exact arithmetic on the same data: identical predictions
    assert res["knn"]["comparison"]["prediction_agreement"] == 1.0
    # SVC (libsvm vs oneDAL SMO) and logistic regression (two L-BFGS implementations) converge to the same
    # optimum within tolerance; at most a borderline image may flip
    for m in ("svc", "logreg"):
        assert res[m]["comparison"]["prediction_agreement"] >= 0.95, m
        assert abs(res[m]["comparison"]["accuracy_difference"]) <= 0.05, m
    # the oneDAL forest is a different random forest (own RNG for bootstraps and features, histogram splits),
    # so individual trees differ; on 60 images a few borderline slices flip, the metrics stay close
    assert res["rf"]["comparison"]["prediction_agreement"] >= 0.75
    assert abs(res["rf"]["comparison"]["accuracy_difference"]) <= 0.15
    for m in res.values():
        for e in ("stock", "intel"):
            assert len(m["engines"][e]["fit_seconds_per_fold"]) == 4
            assert m["engines"][e]["accuracy"] > 0.45  # well above chance (1/3) on 3 balanced classes


def test_baseline_cli_end_to_end(small, tmp_path):
    out = tmp_path / "run"
    r = cli.invoke(app, ["baseline", str(small["cache"]), "--model", "svc,knn", "--engine", "both", "--grid",
                         "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and "fit" in r.output
    s = json.loads((out / "results.json").read_text())
    assert s["cv"]["kind"] == "given folds" and s["cv"]["n_splits"] == 4 and s["grid_search"]
    assert set(s["models"]) == {"svc", "knn"}
    for m in s["models"].values():
        for e in ("stock", "intel"):
            r_ = m["engines"][e]
            assert set(r_["per_class"]) == set(CLASSES)
            assert np.array(r_["confusion"]).sum() == 60
            assert r_["fit_seconds"] > 0 and r_["predict_seconds"] > 0
        assert "fit_speedup" in m["comparison"]
    for f in ("report.md", "timing.png", "confusion-svc.png", "confusion-knn-intel.json", "model/best.json",
              "model/svc/pipeline.joblib", "model/svc/model.json"):
        assert (out / f).is_file(), f
    meta = json.loads((out / "model" / "svc" / "model.json").read_text())
    assert meta["classes"] == CLASSES and meta["feature_config"]["region"] == "mask"
    assert meta["preprocessing"]["size"] == 128

    # score new scans (a manifest with masks) with the saved best model
    pred_csv = tmp_path / "preds.csv"
    few = tmp_path / "few.csv"
    with open(small["manifest"]) as src, open(few, "w") as dst:
        dst.writelines(src.readlines()[:6])
    r = cli.invoke(app, ["baseline", "--predict", str(out), str(few), "--out", str(pred_csv)])
    assert r.exit_code == 0, r.output
    with open(pred_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and all(row["prediction"] in CLASSES for row in rows)
    assert all(row["label"] == small["rows"][i]["label"] for i, row in enumerate(rows))
    # a scan without a mask cannot be scored by a tumour-mask model: one line, not a traceback
    lone = FIGSHARE / small["rows"][0]["image"]
    _one_line_error(cli.invoke(app, ["baseline", "--predict", str(out / "model" / "svc"), str(lone)]))


def test_analyze_cli_end_to_end(small, tmp_path):
    out = tmp_path / "an"
    r = cli.invoke(app, ["analyze", str(small["cache"]), "--out", str(out), "--engine", "both"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "analysis.json").read_text())
    assert s["n_labelled"] == 60 and s["features"]["region"] == "mask"
    assert 0 < s["pca"]["first_two"] < 1 and s["pca"]["components_for_90pct"] <= s["pca"]["n_components"] == 60
    assert -1 <= s["kmeans"]["adjusted_rand_index"] <= 1 and 0 <= s["kmeans"]["normalized_mutual_info"] <= 1
    assert s["separability"]["top"][0]["anova_f"] >= s["separability"]["top"][1]["anova_f"]
    assert set(s["timings"]["pca"]["seconds"]) == {"stock", "intel"}
    assert set(s["outliers"]["counts"]) == {"far_from_class", "neighbours_disagree", "cross_label_twins"}
    for f in ("pca-scatter.png", "pca-variance.png", "correlation.png", "separability.png", "report.md"):
        assert (out / f).is_file(), f
    assert "pca-scatter.png" in (out / "report.md").read_text()


def test_bad_input_one_line(small, tmp_path):
    line = _one_line_error(cli.invoke(app, ["baseline", str(small["unlabelled"]), "--out", str(tmp_path / "x")]))
    assert "labelled" in line
    line = _one_line_error(cli.invoke(app, ["baseline", str(small["cache"]), "--model", "xgboost",
                                            "--out", str(tmp_path / "y")]))
    assert "unknown model 'xgboost'" in line
    _one_line_error(cli.invoke(app, ["baseline", str(small["cache"]), "--engine", "gpu", "--out", str(tmp_path / "z")]))
    _one_line_error(cli.invoke(app, ["baseline", str(tmp_path), "--out", str(tmp_path / "w")]))  # not a cache
    _one_line_error(cli.invoke(app, ["analyze", str(small["unlabelled"]), "--out", str(tmp_path / "v"),
                                     "--region", "mask"]))  # no masks
    _one_line_error(cli.invoke(app, ["baseline", "--predict", str(tmp_path), "scan.png"]))  # not a model
