"""Radiomics feature maths on synthetic images with known answers, and group-aware cross-validation."""
import numpy as np
import pytest

from neuralscan_cli.features.baselines import (GroupLeakError, check_group_disjoint, classification_metrics,
                                               group_cv_splits, load_config, parse_engines, parse_models,
                                               BaselineError)
from neuralscan_cli.features.engines import EngineError, make_estimator
from neuralscan_cli.features.radiomics import FeatureConfig, FeatureError, extract_features, head_region

S = 128


def _disc(radius=20, value=0.6):
    yy, xx = np.mgrid[:S, :S]
    disc = (yy - S // 2) ** 2 + (xx - S // 2) ** 2 <= radius ** 2
    return np.where(disc, value, 0.0).astype(np.float32), disc.astype(np.uint8)


def _features(img, mask=None, **cfg):
    v, names = extract_features(img, mask, FeatureConfig(**cfg))
    assert len(v) == len(names) and len(set(names)) == len(names)
    assert v.dtype == np.float32 and np.isfinite(v).all()
    return dict(zip(names, v.tolist()))


def test_uniform_disc_known_answers():
    img, mask = _disc(20, 0.6)
    f = _features(img, mask)
    # first order: one grey value
    assert f["fo_mean"] == pytest.approx(0.6, abs=1e-6)
    assert f["fo_std"] == pytest.approx(0.0, abs=1e-6)
    assert f["fo_iqr"] == pytest.approx(0.0, abs=1e-6)
    assert f["fo_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert f["fo_uniformity"] == pytest.approx(1.0)
    # GLCM of a uniform region: no contrast, all pairs identical
    for d in (1, 2, 4):
        assert f[f"glcm_d{d}_contrast_mean"] == pytest.approx(0.0, abs=1e-9)
        assert f[f"glcm_d{d}_dissimilarity_mean"] == pytest.approx(0.0, abs=1e-9)
        assert f[f"glcm_d{d}_homogeneity_mean"] == pytest.approx(1.0)
        assert f[f"glcm_d{d}_energy_mean"] == pytest.approx(1.0)
        assert f[f"glcm_d{d}_entropy_mean"] == pytest.approx(0.0, abs=1e-9)
    # shape: the pixel count, close to pi r^2; a circle is not elongated and is convex
    assert f["shape_area_px"] == mask.sum()
    assert f["shape_area_px"] == pytest.approx(np.pi * 20 ** 2, rel=0.01)
    assert f["shape_area_frac"] == pytest.approx(mask.sum() / S ** 2)
    assert f["shape_eccentricity"] == pytest.approx(0.0, abs=0.02)
    assert f["shape_solidity"] > 0.95
    assert f["shape_perimeter_px"] == pytest.approx(2 * np.pi * 20, rel=0.06)
    assert f["shape_centroid_row"] == pytest.approx(0.0, abs=0.01)
    assert f["shape_major_axis"] == pytest.approx(40 / S, rel=0.03)


def test_stripes_glcm_contrast_by_direction():
    # vertical stripes one pixel wide: horizontal and diagonal neighbours differ, vertical ones do not
    img = np.full((S, S), 0.2, np.float32)
    img[:, ::2] = 0.8
    L = 32
    lo, hi = int(0.2 * L), int(0.8 * L)  # quantised levels 6 and 25
    mask = np.ones((S, S), np.uint8)
    f = _features(img, mask, glcm_levels=L, glcm_distances=(1,), glcm_angles=(0.0, 45.0, 90.0, 135.0))
    c = (hi - lo) ** 2  # 361 for angles 0, 45, 135; 0 for 90
    assert f["glcm_d1_contrast_mean"] == pytest.approx(3 * c / 4)
    assert f["glcm_d1_contrast_range"] == pytest.approx(c)
    assert f["fo_mean"] == pytest.approx(0.5, abs=1e-6)


def test_lbp_of_a_flat_image_is_the_flat_pattern():
    img = np.full((S, S), 0.5, np.float32)
    f = _features(img)  # no mask: the head region, here the whole image
    # every neighbour equals the centre: the all-ones uniform code P, except at the image border
    assert f["lbp_p8r1_08"] > 0.95
    assert f["lbp_p16r2_16"] > 0.9
    assert "shape_area_px" not in f  # shape features only with a tumour mask


def test_regions_and_config():
    img, mask = _disc()
    n_mask = len(_features(img, mask))
    n_head = len(_features(img, None))
    assert n_mask > n_head
    assert len(_features(img, mask, region="head")) == n_head  # the mask is ignored
    with pytest.raises(FeatureError):
        extract_features(img, None, FeatureConfig(region="mask"))
    with pytest.raises(FeatureError):
        FeatureConfig(region="tumour")
    with pytest.raises(FeatureError):
        extract_features(img * 255, mask)  # not in [0, 1]
    cfg = FeatureConfig(glcm_distances=(1, 3), lbp=((8, 1.0),))
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.digest() == FeatureConfig.from_dict(cfg.to_dict()).digest() != FeatureConfig().digest()
    # head region: the disc, holes filled; a blank image: everything
    ring = img.copy()
    ring[S // 2 - 3:S // 2 + 3, S // 2 - 3:S // 2 + 3] = 0
    assert head_region(ring).sum() == mask.sum()
    assert head_region(np.zeros((S, S), np.float32)).all()
    assert np.isfinite(extract_features(np.zeros((S, S), np.float32))[0]).all()


def test_given_folds_keep_groups_together():
    rng = np.random.default_rng(0)
    n = 200
    groups = rng.integers(0, 50, n)
    y = groups % 3
    folds = np.array([str(1 + g % 4) for g in groups])
    folds[0] = "1" if folds[0] != "1" else "2"  # one group now spans two folds
    splits, info = group_cv_splits(y, groups, folds)
    assert info["kind"] == "given folds" and info["n_splits"] == 4
    assert info["groups_moved_to_one_fold"] == 1
    check_group_disjoint(splits, groups)
    for tr, te in splits:
        assert not set(groups[tr]) & set(groups[te])
        assert len(tr) + len(te) == n
    tested = np.concatenate([te for _, te in splits])
    assert sorted(tested.tolist()) == list(range(n))  # every image is tested exactly once


def test_stratified_group_kfold_without_folds():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 60, 300)
    y = rng.integers(0, 3, 300)
    splits, info = group_cv_splits(y, groups, np.array([""] * 300), n_splits=5)
    assert info["kind"] == "StratifiedGroupKFold" and info["n_splits"] == 5
    for tr, te in splits:
        assert not set(groups[tr]) & set(groups[te])


def test_a_fold_missing_on_some_items_still_keeps_each_fold_on_one_side():
    """figshare (folds, no patient ids) beside Br35H (no folds): each fold is one patient boundary, so no fold
    may be split between training and test (the folds were dropped and near-per-image groups used)."""
    rng = np.random.default_rng(2)
    n = 400
    groups = np.arange(n)  # near-duplicate groups of one image each, as figshare's PNGs mostly give
    y = rng.integers(0, 3, n)
    folds = np.array([str(1 + k % 4) if k < 300 else "" for k in range(n)])
    groups[350] = groups[0]  # a near-duplicate across datasets: a fold-1 image and an unfolded one
    groups[1] = groups[2]  # a cache group spanning folds 2 and 3
    splits, info = group_cv_splits(y, groups, folds, n_splits=5)
    assert info["kind"] == "StratifiedGroupKFold" and info["folds_as_groups"] == ["1", "2", "3", "4"]
    for tr, te in splits:
        assert not set(folds[tr][folds[tr] != ""]) & set(folds[te][folds[te] != ""])
        assert not set(groups[tr]) & set(groups[te])  # the cache's own groups stay whole as well
    # one fold only: nothing to keep apart, an ordinary group CV (not one giant group)
    one = np.where(folds != "", "1", "")
    assert group_cv_splits(y, groups, one, n_splits=5)[1]["kind"] == "StratifiedGroupKFold"


def test_leak_is_caught():
    groups = np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(GroupLeakError):
        check_group_disjoint([(np.array([0, 2, 3]), np.array([1, 4, 5]))], groups)


def test_metrics_known_values():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 1, 0])
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class"]["a"]["sensitivity"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["specificity"] == pytest.approx(2 / 3)  # tn 2 (b,b), fp 1 (c->a)
    assert m["per_class"]["b"]["specificity"] == pytest.approx(3 / 4)
    assert m["per_class"]["c"]["sensitivity"] == 0.0


def test_names_and_config_parsing(tmp_path):
    assert parse_models("all") == ["svc", "rf", "knn", "logreg"]
    assert parse_models("svc, knn") == ["svc", "knn"]
    with pytest.raises(BaselineError):
        parse_models("xgboost")
    assert parse_engines("both") == ["stock", "intel"]
    with pytest.raises(BaselineError):
        parse_engines("gpu")
    with pytest.raises(EngineError):
        make_estimator("xgboost", "intel")
    assert type(make_estimator("svc", "intel")).__module__.startswith("sklearnex")
    assert type(make_estimator("svc", "stock")).__module__.startswith("sklearn.")
    cfg = tmp_path / "b.yaml"
    cfg.write_text("models:\n  svc:\n    params: {C: 7}\nfeatures:\n  region: head\n")
    c = load_config(cfg)
    assert c.models["svc"]["params"] == {"C": 7} and c.features.region == "head"
    cfg.write_text("models:\n  boost: {}\n")
    with pytest.raises(BaselineError):
        load_config(cfg)
