"""Building a dataset cache from small subsets of the real datasets: folds, masks, duplicate groups, class
filters, incremental reruns, and bad inputs that must each become one line in the report."""
import csv
import json
import re
import os
import shutil
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuralscan_cli.data import BuildError, DatasetCache, SourceError, SplitConfig, build_cache
from neuralscan_cli.data.cache import FORMAT_VERSION, MANIFEST_COLUMNS
from neuralscan_cli.io import read_scan
from neuralscan_cli.preprocess import PreprocessConfig, preprocess_image

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
FIG = SHARED / "figshare"
BR = SHARED / "br35h"

pytestmark = pytest.mark.skipif(not (FIG / "labels.csv").is_file() or not (BR / "labels.csv").is_file(),
                                reason=f"shared datasets not found at {SHARED}")

CFG = PreprocessConfig(size=128)  # smaller than the default: same code paths, a quarter of the pixels
FOUR = ["glioma", "meningioma", "pituitary", "no_tumor"]
# Br35H duplicate groups whose members were checked to be real near-duplicates after preprocessing (every
# pair of members correlates >= 0.97 on the 32x32 thumbnails, mirror included), so dedup alone links them.
BR_DUP_GROUPS = ["no/no1033.jpg", "no/no1043.jpg", "yes/y101.jpg", "yes/y1004.jpg"]
BR_SINGLETONS = ["no/no1000.jpg", "no/no1322.jpg", "no/no357.jpg", "no/no359.jpg",
                 "yes/y1076.jpg", "yes/y1095.jpg", "yes/y115.jpg", "yes/y123.jpg"]


def _rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_csv(path: Path, rows: list[dict], base: Path, columns: list[str]) -> Path:
    """A manifest with absolute image/mask paths (the subset lives in tmp, the files stay in the shared set)."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            r = dict(r)
            for col in ("image", "mask"):
                if r.get(col):
                    r[col] = str(base / r[col])
            w.writerow(r)
    return path


def _fig_image(k: int) -> Path:
    """The k-th figshare image listed in labels.csv (ids have gaps, so never guess a file name)."""
    return FIG / _rows(FIG / "labels.csv")[k]["image"]


def _figshare_subset(folds=("2", "3", "4"), per_class=4) -> list[dict]:
    picked = defaultdict(list)
    for r in _rows(FIG / "labels.csv"):
        key = (r["fold"], r["label"])
        if r["fold"] in folds and len(picked[key]) < per_class:
            picked[key].append(r)
    return [r for key in sorted(picked) for r in picked[key]]


def _br35h_subset() -> list[dict]:
    want = set(BR_DUP_GROUPS)
    singles = set(BR_SINGLETONS)
    return [r for r in _rows(BR / "labels.csv") if r["duplicate_group"] in want or r["image"] in singles]


def _split_of_groups(cache: DatasetCache) -> dict[int, set[str]]:
    out = defaultdict(set)
    for g, s in zip(cache.groups, cache.splits):
        out[int(g)].add(str(s))
    return out


# --- figshare: given folds, masks, the cache layout

@pytest.fixture(scope="module")
def figshare_build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("figshare")
    rows = _figshare_subset()
    # one "patient" straddling folds 3 and 4 (two slices in fold 3, one in fold 4): it must move wholly
    f3 = [r for r in rows if r["fold"] == "3"][:2]
    f4 = [r for r in rows if r["fold"] == "4"][:1]
    rows = [dict(r, group="straddle" if r in f3 + f4 else f"p{r['id']}") for r in rows]
    manifest = _write_csv(tmp / "figshare_subset.csv", rows, FIG, ["id", "image", "mask", "label", "fold", "group"])
    out = tmp / "cache"
    # workers=2 with > 8 files: the process-pool path (serial if another test module already loaded
    # TensorFlow: forking a process that holds it is unsafe)
    workers = 1 if "tensorflow" in sys.modules else 2
    report = build_cache([manifest], out, config=CFG, split=SplitConfig(val_folds=("4",)), workers=workers)
    return rows, out, report


def test_figshare_fold4_in_val(figshare_build):
    rows, out, report = figshare_build
    cache = DatasetCache.open(out)
    assert len(cache) == len(rows) == 36 and report.n_files == 36 and report.n_processed == 36
    assert report.errors == []
    folds, splits, groups = cache.folds, cache.splits, cache.groups
    assert set(folds) == {"2", "3", "4"}
    group_folds = defaultdict(set)
    for g, f in zip(groups, folds):
        group_folds[int(g)].add(str(f))
    # groups with fold-4 (val) and other-fold (train) members are the ones that had to move
    moved_groups = {g for g, fs in group_folds.items() if "4" in fs and len(fs) > 1}
    assert report.duplicates["groups_moved_to_one_split"] == len(moved_groups) >= 1
    straddle = [i for i, r in enumerate(cache.records) if r["path"] in
                {str((FIG / x["image"]).resolve()) for x in rows if x["group"] == "straddle"}]
    assert len(straddle) == 3 and len({int(groups[i]) for i in straddle}) == 1
    assert {splits[i] for i in straddle} == {"train"}  # the majority (fold 3) wins
    for i in range(len(cache)):
        if int(groups[i]) in moved_groups:
            continue
        assert splits[i] == ("val" if folds[i] == "4" else "train"), (i, folds[i], splits[i])
    assert all(len(s) == 1 for s in _split_of_groups(cache).values())
    assert (splits == "val").sum() >= 12 - sum(1 for i in range(len(cache)) if int(groups[i]) in moved_groups)


def test_folds_without_patient_keys_go_whole_to_one_split(tmp_path):
    """No fold named for val/test: a fold is the only patient boundary figshare's PNG release gives, so a split
    by fraction sends each fold whole to one split (adjacent slices of a patient are not near-duplicates)."""
    rows = _figshare_subset(folds=("1", "2", "3", "4"), per_class=3)
    manifest = _write_csv(tmp_path / "fig.csv", rows, FIG, ["id", "image", "mask", "label", "fold"])
    report = build_cache([manifest], tmp_path / "cache", config=CFG, workers=1,
                         split=SplitConfig(val_fraction=0.25, test_fraction=0.25))
    cache = DatasetCache.open(tmp_path / "cache")
    split_of_fold = defaultdict(set)
    for f, s in zip(cache.folds, cache.splits):
        split_of_fold[str(f)].add(str(s))
    assert all(len(s) == 1 for s in split_of_fold.values()), split_of_fold
    kept = report.duplicates["folds_kept_whole"]
    assert set(kept) == {f"fig fold {f}" for f in "1234"}  # named with their source
    assert {f: next(iter(s)) for f, s in split_of_fold.items()} == {k.split(" fold ")[1]: v for k, v in kept.items()}
    # four folds at 50/25/25: two train, one val, one test
    assert sorted(report.duplicates["folds_kept_whole"].values()) == ["test", "train", "train", "val"]
    # the cache's groups stay per slice / duplicate set, finer than the folds
    assert len(set(cache.groups.tolist())) > 4


def test_folds_with_patient_groups_split_by_patient(tmp_path):
    """A manifest that names each row's patient (a patient column) beside its fold: split by patient as
    before. A duplicate-set column is no patient boundary: the folds are still kept whole."""
    rows = [dict(r, patient=f"p{r['id']}") for r in _figshare_subset(folds=("1", "2", "3", "4"), per_class=3)]
    manifest = _write_csv(tmp_path / "fig.csv", rows, FIG, ["id", "image", "mask", "label", "fold", "patient"])
    report = build_cache([manifest], tmp_path / "cache", config=CFG, workers=1,
                         split=SplitConfig(val_fraction=0.25, test_fraction=0.25))
    cache = DatasetCache.open(tmp_path / "cache")
    assert report.duplicates["folds_kept_whole"] == {}
    assert len({(str(f), str(s)) for f, s in zip(cache.folds, cache.splits)}) > 4  # folds span splits
    assert all(len(s) == 1 for s in _split_of_groups(cache).values())

    dup_rows = [{k: v for k, v in r.items() if k != "patient"} | {"duplicate_group": f"d{r['id']}"} for r in rows]
    manifest = _write_csv(tmp_path / "dup.csv", dup_rows, FIG, ["id", "image", "mask", "label", "fold",
                                                                 "duplicate_group"])
    report = build_cache([manifest], tmp_path / "cache-dup", config=CFG, workers=1,
                         split=SplitConfig(val_fraction=0.25, test_fraction=0.25))
    cache = DatasetCache.open(tmp_path / "cache-dup")
    assert report.duplicates["folds_kept_whole"]
    assert len({(str(f), str(s)) for f, s in zip(cache.folds, cache.splits)}) == 4  # each fold in one split


def test_every_group_column_joins_rows(tmp_path):
    """A patient column and a duplicate-set column together: rows sharing either are one group (only the
    first column was used, so a patient's slices in different duplicate sets could land in different splits)."""
    from neuralscan_cli.data.sources import discover

    rows = _figshare_subset(folds=("1",), per_class=2)[:4]
    table = [dict(r, patient=p, duplicate_group=d) for r, p, d in zip(rows, ["A", "A", "B", "C"], ["x", "y", "y", "z"])]
    manifest = _write_csv(tmp_path / "m.csv", table, FIG, ["id", "image", "mask", "label", "fold", "patient",
                                                            "duplicate_group"])
    items, _ = discover(manifest)
    groups = [it.group for it in items]
    assert groups[0] == groups[1] == groups[2] != groups[3]  # A-x, A-y, B-y joined; C-z alone
    assert all(it.patient_given for it in items)


def test_whole_fold_splits_keep_unfolded_items_out():
    from neuralscan_cli.data.splits import whole_fold_splits

    folds = ["1"] * 10 + ["2"] * 10 + [""] * 5
    labels = ["a", "b"] * 10 + ["c"] * 5
    mapping = whole_fold_splits(folds, labels, SplitConfig(val_fraction=0.3, test_fraction=0.0))
    assert mapping == {"1": "train", "2": "val"} or mapping == {"1": "val", "2": "train"}
    # a fraction too small for any whole fold leaves every fold in train
    assert set(whole_fold_splits(folds, labels, SplitConfig(val_fraction=0.05, test_fraction=0.0)).values()) == \
        {"train"}


def test_figshare_masks_present_and_aligned(figshare_build):
    rows, out, _ = figshare_build
    cache = DatasetCache.open(out)
    assert cache.has_mask.all()
    assert all(r["has_mask"] == "1" for r in cache.records)
    masks = np.load(out / "masks.npy")
    images = np.load(out / "images.npy")
    assert masks.shape == images.shape == (36, 128, 128)
    assert masks.dtype == images.dtype == np.uint8
    assert set(np.unique(masks).tolist()) == {0, 1}
    assert (masks.reshape(36, -1).sum(axis=1) > 0).all()  # every slice has its tumour
    # alignment: the cached pair equals an independent preprocess of the source image and mask
    by_path = {str((FIG / r["image"]).resolve()): r for r in rows}
    for k in (0, 17, 35):
        rec = cache.records[k]
        src = by_path[rec["path"]]
        img = read_scan(FIG / src["image"])[0].pixels
        mask = read_scan(FIG / src["mask"])[0].pixels > 127
        img01, m, geom = preprocess_image(img, CFG, mask)
        np.testing.assert_array_equal(images[k], np.rint(img01 * 255).astype(np.uint8))
        np.testing.assert_array_equal(masks[k], m)
        assert rec["box"] == " ".join(map(str, geom.box)) and int(rec["side"]) == geom.side
        # the tumour is inside the head, not on the padding
        assert images[k][masks[k] > 0].mean() > 30


def test_figshare_dataset_json_and_manifest(figshare_build):
    rows, out, report = figshare_build
    info = json.loads((out / "dataset.json").read_text())
    for key in ("classes", "size", "n", "preprocessing", "split_counts", "fingerprint", "duplicates",
                "format_version"):
        assert key in info, key
    assert info["format_version"] == FORMAT_VERSION
    assert info["classes"] == ["glioma", "meningioma", "pituitary"]
    assert info["size"] == 128 and info["n"] == 36 and info["n_masks"] == 36
    assert info["preprocessing"] == CFG.to_dict()
    assert info["split"]["val_folds"] == ["4"]
    assert re.fullmatch(r"[0-9a-f]{16}", info["fingerprint"]), info["fingerprint"]
    assert info["duplicates"] == json.loads(json.dumps(report.duplicates))
    assert {"pairs", "groups", "naive_image_split", "groups_moved_to_one_split"} <= set(info["duplicates"])
    cache = DatasetCache.open(out)
    assert list(cache.records[0].keys()) == MANIFEST_COLUMNS
    assert cache.size == 128 and cache.preprocessing == CFG
    # split counts agree with the manifest
    counts = Counter(zip(cache.splits.tolist(), cache.column("label").tolist()))
    for split, per_class in info["split_counts"].items():
        for c, n in per_class.items():
            assert counts[(split, c)] == n, (split, c)
    assert sum(sum(v.values()) for v in info["split_counts"].values()) == 36
    # labels: the index into classes
    for r in cache.records:
        assert info["classes"][int(r["label_index"])] == r["label"]
    x, y = cache.load("val")
    assert x.dtype == np.float32 and x.shape[1:] == (128, 128) and 0 <= x.min() and x.max() <= 1
    assert len(x) == len(y) == (cache.splits == "val").sum()
    assert (out / "errors.csv").read_text().strip() == "problem"
    assert (out / "thumbs.npy").is_file() and np.load(out / "thumbs.npy").shape == (36, 1024)


# --- Br35H: given duplicate groups and near-duplicates found

@pytest.fixture(scope="module")
def br35h_rows():
    rows = _br35h_subset()
    sizes = Counter(r["duplicate_group"] for r in rows)
    assert all(sizes[g] >= 4 for g in BR_DUP_GROUPS) and len(rows) == sum(sizes[g] for g in BR_DUP_GROUPS) + 8
    return rows


def test_br35h_duplicate_groups_kept_together(tmp_path, br35h_rows):
    manifest = _write_csv(tmp_path / "br35h_subset.csv", br35h_rows, BR, ["image", "label", "duplicate_group", "mask"])
    report = build_cache([manifest], tmp_path / "cache", config=CFG, workers=1)
    cache = DatasetCache.open(tmp_path / "cache")
    assert len(cache) == len(br35h_rows) and report.errors == []
    by_path = {str((BR / r["image"]).resolve()): r["duplicate_group"] for r in br35h_rows}
    cache_groups = defaultdict(set)
    for rec in cache.records:
        cache_groups[by_path[rec["path"]]].add(int(rec["group"]))
    for g in BR_DUP_GROUPS:
        assert len(cache_groups[g]) == 1, g
    assert all(len(s) == 1 for s in _split_of_groups(cache).values())
    # the near-duplicates are found: at least every pair inside the checked groups
    sizes = Counter(r["duplicate_group"] for r in br35h_rows)
    within = sum(n * (n - 1) // 2 for g, n in sizes.items() if g in BR_DUP_GROUPS)
    assert report.duplicates["pairs"] >= within > 0
    assert report.duplicates["images_in_duplicate_sets"] >= sum(sizes[g] for g in BR_DUP_GROUPS)
    assert report.duplicates["largest_group"] >= max(sizes.values())
    # masks come with the yes/ rows that have one
    with_mask = {str((BR / r["image"]).resolve()) for r in br35h_rows if r["mask"]}
    assert {rec["path"] for rec in cache.records if rec["has_mask"] == "1"} == with_mask


def test_br35h_dedup_alone_links_the_groups(tmp_path, br35h_rows):
    # without the duplicate_group column, thumbnail correlation alone must put each set in one group
    manifest = _write_csv(tmp_path / "br35h_nogroups.csv", br35h_rows, BR, ["image", "label", "mask"])
    report = build_cache([manifest], tmp_path / "cache", config=CFG, workers=1)
    cache = DatasetCache.open(tmp_path / "cache")
    by_path = {str((BR / r["image"]).resolve()): r["duplicate_group"] for r in br35h_rows}
    cache_groups = defaultdict(set)
    for rec in cache.records:
        cache_groups[by_path[rec["path"]]].add(int(rec["group"]))
    for g in BR_DUP_GROUPS:
        assert len(cache_groups[g]) == 1, g
    # and different sets stay apart
    assert len({next(iter(cache_groups[g])) for g in BR_DUP_GROUPS}) == len(BR_DUP_GROUPS)
    assert all(len(s) == 1 for s in _split_of_groups(cache).values())
    assert report.duplicates["pairs"] > 0
    assert 0 <= report.duplicates["naive_image_split"]["duplicate_pairs_split"] <= report.duplicates["pairs"]


# --- four classes from two sources

def test_four_class_merge_excludes_tumor_rows(tmp_path, br35h_rows):
    fig_rows = _figshare_subset(folds=("1",), per_class=3)
    fig = _write_csv(tmp_path / "fig.csv", fig_rows, FIG, ["image", "mask", "label", "fold"])
    br = _write_csv(tmp_path / "br.csv", br35h_rows, BR, ["image", "label", "duplicate_group", "mask"])
    report = build_cache([fig, br], tmp_path / "cache", config=CFG, classes=FOUR, workers=1)
    n_tumor = sum(r["label"] == "tumor" for r in br35h_rows)
    n_no = sum(r["label"] == "no_tumor" for r in br35h_rows)
    assert n_tumor > 0 and n_no > 0
    assert report.n_excluded == n_tumor
    assert report.classes == FOUR
    cache = DatasetCache.open(tmp_path / "cache")
    assert cache.classes == FOUR
    assert len(cache) == len(fig_rows) + n_no
    labels = cache.column("label").tolist()
    assert "tumor" not in labels
    assert Counter(labels) == {"glioma": 3, "meningioma": 3, "pituitary": 3, "no_tumor": n_no}
    for r in cache.records:
        assert int(r["label_index"]) == FOUR.index(r["label"])
    assert set(cache.column("source")) == {"fig", "br"}
    # figshare rows carry masks, Br35H no_tumor rows none (and zeros in masks.npy)
    no = cache.column("label") == "no_tumor"
    assert cache.has_mask[~no].all() and not cache.has_mask[no].any()
    assert int(np.asarray(cache.masks)[no].sum()) == 0
    assert set(report.split_counts["train"]) == set(FOUR)


def test_class_listed_but_absent_is_reported(tmp_path):
    rows = _figshare_subset(folds=("1",), per_class=2)
    rows = [r for r in rows if r["label"] != "pituitary"]
    manifest = _write_csv(tmp_path / "fig.csv", rows, FIG, ["image", "label"])
    report = build_cache([manifest], tmp_path / "cache", config=CFG, classes=["meningioma", "glioma", "pituitary"],
                         workers=1)
    assert report.classes == ["meningioma", "glioma", "pituitary"]
    assert any("pituitary" in e for e in report.errors)
    cache = DatasetCache.open(tmp_path / "cache")
    assert cache.masks is None and not cache.has_mask.any()
    assert {int(r["label_index"]) for r in cache.records} == {0, 1}


# --- incremental reruns

def _class_tree(root: Path, per_class: int = 5) -> Path:
    src = root / "src"
    for label in ("glioma", "meningioma"):
        (src / label).mkdir(parents=True)
        picked = [r for r in _rows(FIG / "labels.csv") if r["label"] == label][: per_class * 40: 40]
        for r in picked:
            shutil.copyfile(FIG / r["image"], src / label / Path(r["image"]).name)
    return src


def _snapshot(out: Path) -> dict:
    return {name: (out / name).read_bytes() for name in
            ("images.npy", "thumbs.npy", "manifest.csv", "dataset.json", "errors.csv")}


def test_incremental_reruns(tmp_path):
    src = _class_tree(tmp_path)
    out = tmp_path / "cache"
    first = build_cache([src], out, config=CFG, workers=1)
    assert first.n_processed == 10 and first.n_reused == 0 and first.errors == []
    snap = _snapshot(out)

    # idempotence: nothing read again, the same bytes
    again = build_cache([src], out, config=CFG, workers=1)
    assert again.n_processed == 0 and again.n_reused == 10
    assert _snapshot(out) == snap
    assert again.duplicates == first.duplicates and again.split_counts == first.split_counts

    # a changed file: only it is read again, and its row changes
    before = DatasetCache.open(out)
    old_images = np.array(before.images)
    changed = sorted((src / "glioma").iterdir())[2]
    k_changed = before.paths.index(str(changed.resolve()))
    st = changed.stat()
    Image.open(changed).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    rep = build_cache([src], out, config=CFG, workers=1)
    assert rep.n_processed == 1 and rep.n_reused == 9
    after = DatasetCache.open(out)
    assert after.paths == before.paths
    new_images = np.array(after.images)
    assert not np.array_equal(new_images[k_changed], old_images[k_changed])
    others = [k for k in range(10) if k != k_changed]
    np.testing.assert_array_equal(new_images[others], old_images[others])
    assert after.records[k_changed]["digest"] != before.records[k_changed]["digest"]
    assert after.info["fingerprint"] != before.info["fingerprint"]

    # an added file: only it is read
    added = src / "meningioma" / "added.png"
    shutil.copyfile(_fig_image(2000), added)
    rep = build_cache([src], out, config=CFG, workers=1)
    assert rep.n_processed == 1 and rep.n_reused == 10
    cache = DatasetCache.open(out)
    assert len(cache) == 11 and str(added.resolve()) in cache.paths

    # a removed file: gone from the cache, nothing read
    gone = sorted((src / "meningioma").iterdir())[0]
    gone.unlink()
    rep = build_cache([src], out, config=CFG, workers=1)
    assert rep.n_processed == 0 and rep.n_reused == 10
    cache = DatasetCache.open(out)
    assert len(cache) == 10 and str(gone.resolve()) not in cache.paths
    assert np.load(out / "images.npy").shape[0] == 10

    # another preprocessing config: refused (models trained on the cache would stop matching it) unless
    # asked for, and then everything is read again
    with pytest.raises(BuildError, match="size 128 -> 64"):
        build_cache([src], out, config=PreprocessConfig(size=64), workers=1)
    assert DatasetCache.open(out).size == CFG.size
    rep = build_cache([src], out, config=PreprocessConfig(size=64), workers=1, overwrite=True)
    assert rep.n_processed == 10 and rep.n_reused == 0
    assert DatasetCache.open(out).size == 64


# --- bad inputs

def _truncated_jpeg(path: Path):
    data = (BR / "no" / "no1000.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_bad_inputs_each_one_line_and_run_goes_on(tmp_path):
    src = tmp_path / "tree"
    for d in ("glioma", "meningioma", "pituitary", "masks"):
        (src / d).mkdir(parents=True)
    good = {}
    for i, r in enumerate(_figshare_subset(folds=("1",), per_class=2)):
        if r["label"] == "pituitary":
            continue  # pituitary stays an empty class folder
        dst = src / r["label"] / f"good{i}.png"
        shutil.copyfile(FIG / r["image"], dst)
        good[dst.name] = dst
    (src / "glioma" / "empty.png").write_bytes(b"")
    (src / "glioma" / "notes.png").write_text("this is not an image\n")
    _truncated_jpeg(src / "meningioma" / "trunc.jpg")
    shutil.copyfile(_fig_image(100), src / "meningioma" / "wrongmask.png")
    Image.fromarray(np.zeros((100, 120), np.uint8)).save(src / "masks" / "wrongmask.png")
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(src / "masks" / "orphan.png")
    # a second source: a CSV with one row whose image is missing
    listed = tmp_path / "listed"
    listed.mkdir()
    shutil.copyfile(_fig_image(200), listed / "a.png")
    (listed / "labels.csv").write_text("image,label\na.png,glioma\nmissing.png,glioma\n")

    report = build_cache([src, listed], tmp_path / "cache", config=CFG, workers=1)
    bad = {"empty.png": 1, "notes.png": 1, "trunc.jpg": 1, "wrongmask.png": 1, "orphan.png": 1,
           "missing.png": 1, "pituitary": 1}
    assert all("\n" not in e for e in report.errors)
    for name, n in bad.items():
        hits = [e for e in report.errors if name in e]
        assert len(hits) == n, (name, report.errors)
    assert len(report.errors) == len(bad), report.errors
    wrong = next(e for e in report.errors if "wrongmask" in e)
    assert "120x100" in wrong and "256x256" in wrong
    # the run went on: every good file is in the cache
    cache = DatasetCache.open(tmp_path / "cache")
    paths = set(cache.paths)
    assert {str(p.resolve()) for p in good.values()} | {str((listed / "a.png").resolve())} == paths
    assert report.n_files == len(good) + 1
    with open(tmp_path / "cache" / "errors.csv", newline="") as fh:
        assert [row[0] for row in csv.reader(fh)][1:] == report.errors
    assert cache.info["n_errors"] == len(report.errors)


def test_all_bad_input_raises(tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    (src / "empty.png").write_bytes(b"")
    (src / "notes.png").write_text("not an image")
    _truncated_jpeg(src / "trunc.jpg")
    # the message says why (nothing is written, so there is no errors.csv to read)
    with pytest.raises(BuildError, match=r"3 of 3 file\(s\) could not be read; the first: .*(empty|notes|trunc)"):
        build_cache([src], tmp_path / "cache", config=CFG, workers=1)
    assert not (tmp_path / "cache" / "dataset.json").exists()
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(BuildError):
        build_cache([empty], tmp_path / "cache2", config=CFG, workers=1)
    with pytest.raises(SourceError):
        build_cache([tmp_path / "does-not-exist"], tmp_path / "cache3", config=CFG, workers=1)


def test_everything_filtered_out_raises(tmp_path):
    rows = [r for r in _br35h_subset() if r["label"] == "tumor"][:3]
    manifest = _write_csv(tmp_path / "br.csv", rows, BR, ["image", "label"])
    with pytest.raises(BuildError, match="left out by --classes"):
        build_cache([manifest], tmp_path / "cache", config=CFG, classes=["no_tumor"], workers=1)


def test_unlabelled_folder(tmp_path):
    src = tmp_path / "scans"
    src.mkdir()
    for k in (1, 500, 1000, 1500):
        shutil.copyfile(_fig_image(k), src / f"{k:04d}.png")
    shutil.copyfile(BR / "no" / "no1000.jpg", src / "x.jpg")
    report = build_cache([src], tmp_path / "cache", config=CFG, workers=1)
    cache = DatasetCache.open(tmp_path / "cache")
    assert len(cache) == 5 and report.errors == []
    assert (cache.labels == -1).all()
    assert cache.classes == [] and report.classes == []
    assert all(r["label"] == "" for r in cache.records)
    assert sum(c.get("unlabelled", 0) for c in report.split_counts.values()) == 5
    x, y = cache.load(labelled=True)
    assert len(x) == len(y) == 0
    assert len(cache.indices(labelled=False)) == 5


def test_rerun_same_duplicates_at_any_threshold(tmp_path):
    # thumbnails are stored as float16: a rerun that takes them from the cache must find exactly the pairs the
    # first run found, even for a pair whose correlation lies between its float32 and float16 values
    from neuralscan_cli.data.dedup import thumbnail

    src = tmp_path / "scans"
    src.mkdir()
    imgs = [_fig_image(k) for k in range(12)]
    t32 = []
    for p in imgs:
        img01, _, _ = preprocess_image(read_scan(p)[0].pixels, CFG)
        t32.append(thumbnail(img01))
    t32 = np.stack(t32)
    t16 = t32.astype(np.float16).astype(np.float32)

    def sim(t):
        m = t.reshape(len(t), 32, 32)[:, :, ::-1].reshape(len(t), -1)
        return np.maximum(t @ t.T, t @ m.T)

    s32, s16 = sim(t32), sim(t16)
    iu = np.triu_indices(len(imgs), 1)
    k = int(np.argmax(np.abs(s32 - s16)[iu]))
    i, j = iu[0][k], iu[1][k]
    assert abs(s32[i, j] - s16[i, j]) > 5e-6
    threshold = float((s32[i, j] + s16[i, j]) / 2)
    for n, p in ((i, imgs[i]), (j, imgs[j])):
        shutil.copyfile(p, src / f"{n:02d}.png")
    out = tmp_path / "cache"
    first = build_cache([src], out, config=CFG, workers=1, dedup_threshold=threshold)
    snap = _snapshot(out)
    again = build_cache([src], out, config=CFG, workers=1, dedup_threshold=threshold)
    assert again.n_processed == 0
    assert again.duplicates == first.duplicates
    assert _snapshot(out) == snap
