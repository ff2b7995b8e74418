"""Group-level splits (stratified, seeded, given folds) and near-duplicate detection, on constructed data."""
import numpy as np
import pytest
from scipy import ndimage

from neuralscan_cli.data.dedup import THUMB, merge_groups, near_duplicate_pairs, thumbnail
from neuralscan_cli.data.splits import SplitConfig, assign_splits, naive_split_leaks, stratified_group_split

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
CLASSES = np.array(["glioma", "meningioma", "pituitary", "no_tumor"])


def _random_dataset(seed: int, n_groups: int = 200):
    """Groups of 1-6 items; mostly one class per group, ~10 % of items with another class."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, n_groups)
    groups = np.repeat(rng.permutation(n_groups * 7)[:n_groups], sizes)  # non-contiguous group ids
    labels = rng.choice(CLASSES, n_groups, p=[0.4, 0.25, 0.2, 0.15])[np.repeat(np.arange(n_groups), sizes)]
    mixed = rng.random(len(labels)) < 0.1
    labels = np.where(mixed, rng.choice(CLASSES, len(labels)), labels)
    order = rng.permutation(len(labels))  # members of a group are not next to each other
    return groups[order], labels[order]


def _sides_per_group(groups, split):
    return {g: set(split[groups == g]) for g in np.unique(groups)}


# --- stratified group split

@pytest.mark.parametrize("seed", range(6))
def test_no_group_on_two_sides(seed):
    groups, labels = _random_dataset(seed)
    split = stratified_group_split(groups, labels, FRACTIONS, seed=seed)
    assert len(split) == len(groups)
    assert set(split) == {"train", "val", "test"}
    assert all(len(s) == 1 for s in _sides_per_group(groups, split).values())


@pytest.mark.parametrize("seed", range(4))
def test_class_balance_and_split_sizes(seed):
    groups, labels = _random_dataset(seed)
    split = stratified_group_split(groups, labels, FRACTIONS, seed=seed)
    overall = {c: np.mean(labels == c) for c in CLASSES}
    for name, frac in FRACTIONS.items():
        sel = labels[split == name]
        assert abs(len(sel) / len(labels) - frac) < 0.03, name
        for c in CLASSES:
            assert abs(np.mean(sel == c) - overall[c]) < 0.05, (name, c)


def test_seeded_same_result_different_seed_differs():
    groups, labels = _random_dataset(7)
    a = stratified_group_split(groups, labels, FRACTIONS, seed=1)
    b = stratified_group_split(groups, labels, FRACTIONS, seed=1)
    c = stratified_group_split(groups, labels, FRACTIONS, seed=2)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_zero_fraction_split_is_left_empty():
    groups, labels = _random_dataset(3)
    split = stratified_group_split(groups, labels, {"train": 0.8, "val": 0.2, "test": 0.0}, seed=0)
    assert set(split) == {"train", "val"}


def test_split_config_validation():
    with pytest.raises(ValueError):
        SplitConfig(val_fraction=0.6, test_fraction=0.4)
    with pytest.raises(ValueError):
        SplitConfig(val_fraction=-0.1)
    with pytest.raises(ValueError, match="4"):
        SplitConfig(val_folds=("4",), test_folds=("4",))
    d = SplitConfig(val_folds=("4",), seed=3).to_dict()
    assert d["val_folds"] == ["4"] and d["test_folds"] == [] and d["seed"] == 3


# --- given folds

def test_assign_splits_without_folds_is_group_split():
    groups, labels = _random_dataset(11)
    split, moved = assign_splits(groups, list(labels), [None] * len(groups), SplitConfig(seed=5))
    assert moved == 0
    np.testing.assert_array_equal(split, stratified_group_split(groups, labels, FRACTIONS, seed=5))


def test_assign_splits_given_folds():
    n = 120
    groups = np.arange(n)  # every item its own group
    folds = [str(1 + i % 4) for i in range(n)]
    labels = [str(CLASSES[i % 3]) for i in range(n)]
    split, moved = assign_splits(groups, labels, folds, SplitConfig(val_folds=("4",), test_folds=("3",)))
    folds = np.array(folds)
    assert moved == 0
    assert np.all(split[folds == "4"] == "val")
    assert np.all(split[folds == "3"] == "test")
    assert np.all(split[np.isin(folds, ["1", "2"])] == "train")


def test_group_straddling_folds_moved_wholly():
    n = 40
    groups = np.arange(n)
    folds = [str(1 + i % 4) for i in range(n)]
    labels = ["glioma"] * n
    # one patient/duplicate set: two items in fold 3 and one in fold 4
    groups[[2, 6, 3]] = 1000
    assert [folds[i] for i in (2, 6, 3)] == ["3", "3", "4"]
    split, moved = assign_splits(groups, labels, folds, SplitConfig(val_folds=("4",)))
    assert moved == 1
    assert len(set(split[[2, 6, 3]])) == 1
    assert split[3] == "train"  # the majority of the group is in fold 3 (train)
    others4 = [i for i in range(n) if folds[i] == "4" and i != 3]
    assert all(split[i] == "val" for i in others4)
    assert all(len(s) == 1 for s in _sides_per_group(groups, split).values())


def test_fold_group_pulls_unfolded_members_along():
    # a group with one fold-4 item and two items without a fold: all three go to val, not counted as moved
    groups = np.array([0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
    folds = ["4", "", "", "", "", "", "", "", "", ""]
    labels = ["a"] * 10
    split, moved = assign_splits(groups, labels, folds, SplitConfig(val_folds=("4",)))
    assert list(split[:3]) == ["val"] * 3
    assert moved == 0


def test_assign_splits_unlabelled_items():
    groups = np.arange(50)
    split, moved = assign_splits(groups, [None] * 50, [None] * 50, SplitConfig())
    assert moved == 0 and len(split) == 50 and set(split) <= {"train", "val", "test"}


# --- near-duplicates

def _field(seed: int, side: int = 128) -> np.ndarray:
    """A smooth, asymmetric random image in [0, 1]."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.normal(size=(side, side)), 6)
    f = (f - f.min()) / (f.max() - f.min())
    return f.astype(np.float32)


def test_thumbnail_zero_mean_unit_norm():
    for shape in [(256, 256), (100, 150), (33, 31)]:
        rng = np.random.default_rng(0)
        t = thumbnail(rng.random(shape).astype(np.float32))
        assert t.shape == (THUMB * THUMB,) and t.dtype == np.float32
        assert abs(t.mean()) < 1e-5 and abs(np.linalg.norm(t) - 1) < 1e-4
    t = thumbnail(np.full((64, 64), 0.3, np.float32))  # constant: zeros, no NaN
    assert np.all(t == 0)


def test_near_duplicate_pairs_finds_noisy_copy_and_mirror():
    img = _field(1)
    noisy = np.clip(img + np.random.default_rng(9).normal(0, 0.03, img.shape), 0, 1).astype(np.float32)
    mirror = img[:, ::-1].copy()
    unrelated = _field(2)
    rescaled = (0.5 * img + 0.2).astype(np.float32)  # re-windowed copy: correlation ignores gain and offset
    thumbs = np.stack([thumbnail(x) for x in (img, unrelated, noisy, mirror, rescaled)])
    pairs = {tuple(p) for p in near_duplicate_pairs(thumbs, 0.95).tolist()}
    assert {(0, 2), (0, 3), (0, 4)} <= pairs
    assert not any(1 in p for p in pairs)
    assert all(i < j for i, j in pairs)
    # without flips the mirror is not a duplicate (the field is not symmetric)
    no_flip = {tuple(p) for p in near_duplicate_pairs(thumbs, 0.95, flips=False).tolist()}
    assert (0, 2) in no_flip and (0, 3) not in no_flip


def test_near_duplicate_pairs_finds_up_down_flips_and_half_turns():
    """Br35H holds copies flipped up-down and turned 180 degrees, not only mirrored left-right."""
    img = _field(1)
    thumbs = np.stack([thumbnail(x) for x in (img, img[::-1, :].copy(), img[::-1, ::-1].copy(), _field(2))])
    pairs = {tuple(p) for p in near_duplicate_pairs(thumbs, 0.95).tolist()}
    assert {(0, 1), (0, 2), (1, 2)} <= pairs and not any(3 in p for p in pairs)
    assert not {(0, 1), (0, 2)} & {tuple(p) for p in near_duplicate_pairs(thumbs, 0.95, flips=False).tolist()}


def test_near_duplicate_pairs_blocked_equals_unblocked():
    imgs = [_field(s, 64) for s in range(12)]
    imgs += [np.clip(imgs[k] + 0.01 * _field(100 + k, 64), 0, 1) for k in (0, 5, 11)]
    imgs += [imgs[3][:, ::-1]]
    thumbs = np.stack([thumbnail(x) for x in imgs])
    full = near_duplicate_pairs(thumbs, 0.95)
    blocked = near_duplicate_pairs(thumbs, 0.95, block=4)
    np.testing.assert_array_equal(np.unique(full, axis=0), np.unique(blocked, axis=0))
    assert {tuple(p) for p in full.tolist()} == {(0, 12), (5, 13), (11, 14), (3, 15)}
    assert full.dtype == np.int64


def test_near_duplicate_pairs_small_inputs():
    assert near_duplicate_pairs(np.zeros((0, THUMB * THUMB))).shape == (0, 2)
    assert near_duplicate_pairs(thumbnail(_field(0))[None]).shape == (0, 2)


def test_merge_groups_transitive():
    n = 7
    pairs = np.array([[0, 1]])
    given = ["a", None, "a", "", "", "b", "b"]  # 0-2 and 5-6 share a given group; empty keys link nothing
    patient = [None, None, "p1", "p1", None, None, None]  # 2-3 share a patient
    comp = merge_groups(n, pairs, [given, patient])
    assert comp.dtype == np.int64 and len(comp) == n
    assert comp[0] == comp[1] == comp[2] == comp[3]
    assert comp[5] == comp[6]
    assert len({comp[0], comp[4], comp[5]}) == 3
    assert sorted(set(comp.tolist())) == list(range(3))


def test_merge_groups_no_links():
    comp = merge_groups(4, np.zeros((0, 2)), [[None] * 4])
    assert sorted(comp.tolist()) == [0, 1, 2, 3]
    assert len(merge_groups(3, np.zeros((0, 2)), [])) == 3


# --- what a naive image-level split would leak

def test_naive_split_leaks_constructed():
    n = 400
    cfg = SplitConfig(val_fraction=0.3, test_fraction=0.3, seed=0)
    # every item alone, no pairs: nothing to leak
    assert naive_split_leaks(np.zeros((0, 2)), np.arange(n), n, cfg) == {"duplicate_pairs_split": 0,
                                                                          "groups_split": 0}
    # a pair of an item with itself is never separated
    self_pairs = np.stack([np.arange(n), np.arange(n)], axis=1)
    assert naive_split_leaks(self_pairs, np.arange(n), n, cfg)["duplicate_pairs_split"] == 0
    # a chain of pairs: about 1 - (0.4^2 + 0.3^2 + 0.3^2) = 66 % of them are separated
    chain = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1)
    groups = np.repeat(np.arange(n // 2), 2)  # 200 groups of two
    leaks = naive_split_leaks(chain, groups, n, cfg)
    assert 0.55 * (n - 1) < leaks["duplicate_pairs_split"] < 0.77 * (n - 1)
    assert 0.55 * (n // 2) < leaks["groups_split"] < 0.77 * (n // 2)
    # one big group: certainly split; all in train (no val/test): nothing split
    assert naive_split_leaks(chain, np.zeros(n, int), n, cfg)["groups_split"] == 1
    none = SplitConfig(val_fraction=0.0, test_fraction=0.0)
    assert naive_split_leaks(chain, np.zeros(n, int), n, none) == {"duplicate_pairs_split": 0, "groups_split": 0}
    # seeded: the same answer twice
    assert naive_split_leaks(chain, groups, n, cfg) == leaks


def test_naive_split_leaks_groups_bounded_by_pairs():
    n = 300
    rng = np.random.default_rng(4)
    groups = rng.integers(0, 60, n)
    cfg = SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=8)
    # pairs linking every member of a group to its first member
    first = {}
    pairs = []
    for i, g in enumerate(groups):
        j = first.setdefault(g, i)
        if j != i:
            pairs.append((j, i))
    pairs = np.array(pairs)
    leaks = naive_split_leaks(pairs, groups, n, cfg)
    # a group is split exactly when at least one of its star pairs is split: never more split groups than
    # split pairs, never more than the groups with two or more members
    multi = int((np.bincount(groups) >= 2).sum())
    assert 0 < leaks["groups_split"] <= min(leaks["duplicate_pairs_split"], multi)
