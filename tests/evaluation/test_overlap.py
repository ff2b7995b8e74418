"""evaluate's warning when the scored data may hold the model's own training images (from model.json)."""
from neuralscan_cli.evaluation.overlap import training_overlap

SPLIT_95 = {"val_fraction": 0.05, "test_fraction": 0.0, "val_folds": [], "test_folds": [], "seed": 42}
SPLIT_F4 = {"val_fraction": 0.2, "test_fraction": 0.0, "val_folds": ["4"], "test_folds": [], "seed": 42}


def _training(tmp_path):
    return {"data": {"fingerprint": "abc", "sources": [str(tmp_path / "figshare" / "labels.csv")],
                     "split": SPLIT_95, "split_counts": COUNTS, "train_split": "train", "val_split": "val"}}


COUNTS = {"train": {"glioma": 9}, "val": {"glioma": 1}}


def _cache(tmp_path, fingerprint="abc", split=SPLIT_95, sources=None, counts=COUNTS):
    return {"fingerprint": fingerprint, "split": split, "split_counts": counts,
            "sources": sources if sources is not None else [str(tmp_path / "figshare" / "labels.csv")]}


def test_own_cache(tmp_path):
    t = _training(tmp_path)
    assert training_overlap(t, data=tmp_path / "c", data_kind="cache", split="val", cache_info=_cache(tmp_path)) is None
    for split in ("train", "all"):
        msg = training_overlap(t, data=tmp_path / "c", data_kind="cache", split=split, cache_info=_cache(tmp_path))
        assert msg is not None and "measure fit" in msg


def test_same_images_split_another_way_or_shared_sources(tmp_path):
    t = _training(tmp_path)
    rebuilt = _cache(tmp_path, counts={"train": {"glioma": 10}})  # same options, another preprocess version
    for info in (_cache(tmp_path, split=SPLIT_F4), _cache(tmp_path, fingerprint="other"), rebuilt):
        msg = training_overlap(t, data=tmp_path / "c", data_kind="cache", split="val", cache_info=info)
        assert msg is not None and "not a held-out estimate" in msg and "figshare" in msg
    unrelated = _cache(tmp_path, fingerprint="other", sources=[str(tmp_path / "hospital" / "scans.csv")])
    assert training_overlap(t, data=tmp_path / "c", data_kind="cache", split="val", cache_info=unrelated) is None


def test_raw_data(tmp_path):
    t = _training(tmp_path)
    for data in (tmp_path / "figshare" / "labels.csv", tmp_path / "figshare" / "images", tmp_path):
        assert training_overlap(t, data=data, data_kind="manifest", split="all") is not None, data
    assert training_overlap(t, data=tmp_path / "hospital", data_kind="folder", split="all") is None
    # a folder source stands for itself, not for its parent's other folders
    (tmp_path / "br35h").mkdir()
    folder_source = {"data": {"fingerprint": "f", "sources": [str(tmp_path / "br35h")]}}
    assert training_overlap(folder_source, data=tmp_path / "br35h" / "yes", data_kind="folder", split="all")
    assert training_overlap(folder_source, data=tmp_path / "hospital", data_kind="folder", split="all") is None
    assert training_overlap(None, data=tmp_path / "figshare" / "labels.csv", data_kind="manifest", split="all") is None


def test_a_manifest_kept_elsewhere_is_judged_by_the_images_it_lists(tmp_path):
    t = _training(tmp_path)
    elsewhere = tmp_path / "mine" / "picked.csv"
    listed = [tmp_path / "figshare" / "images" / "1.png"]
    assert training_overlap(t, data=elsewhere, data_kind="manifest", split="all", image_paths=listed) is not None
    hospital = [tmp_path / "hospital" / "a.png"]
    assert training_overlap(t, data=elsewhere, data_kind="manifest", split="all", image_paths=hospital) is None


def test_every_member_of_an_ensemble_is_checked(tmp_path):
    from types import SimpleNamespace

    from neuralscan_cli.evaluation.overlap import bundle_data_overlap

    other = {"fingerprint": "x", "sources": [str(tmp_path / "hospital" / "scans.csv")]}
    figshare = _training(tmp_path)["data"]
    # the ensemble's own data block is member 1's; member 2 trained on figshare
    ensemble = SimpleNamespace(meta={"training": {"data": other, "members": [{"data": other}, {"data": figshare}]}})
    msg = bundle_data_overlap(ensemble, tmp_path / "figshare" / "labels.csv", "manifest", "all")
    assert msg is not None and msg.startswith("member 2: ")
    ensemble.meta["training"]["members"][1]["data"] = other
    assert bundle_data_overlap(ensemble, tmp_path / "figshare" / "labels.csv", "manifest", "all") is None
