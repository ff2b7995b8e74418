"""Group-level train/val/test splits, stratified by class and seeded; given folds kept when asked."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    val_folds: tuple[str, ...] = ()  # items whose given fold is listed go to val (their groups with them)
    test_folds: tuple[str, ...] = ()
    seed: int = 42

    def __post_init__(self):
        if self.val_fraction < 0 or self.test_fraction < 0 or self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val and test fractions must be >= 0 and sum to less than 1")
        overlap = set(self.val_folds) & set(self.test_folds)
        if overlap:
            raise ValueError(f"fold(s) {', '.join(sorted(overlap))} named for both val and test")

    def to_dict(self) -> dict:
        return {"val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                "val_folds": list(self.val_folds), "test_folds": list(self.test_folds), "seed": self.seed}


def stratified_group_split(groups: np.ndarray, labels: np.ndarray, fractions: dict[str, float],
                           seed: int = 42) -> np.ndarray:
    """Assign whole groups to splits so each split gets about its fraction of every class.

    Greedy: groups in a seeded random order, largest first; each goes to the split with the largest
    remaining need for the classes it holds. Returns the split name per item.
    """
    groups = np.asarray(groups)
    labels = np.asarray(labels)
    names = [s for s, f in fractions.items() if f > 0]
    frac = np.array([fractions[s] for s in names], dtype=np.float64)
    frac /= frac.sum()
    uniq_groups, g_idx = np.unique(groups, return_inverse=True)
    uniq_labels, l_idx = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(uniq_groups), len(uniq_labels)))
    np.add.at(counts, (g_idx, l_idx), 1)
    target = frac[:, None] * counts.sum(axis=0)[None, :]
    have = np.zeros_like(target)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq_groups))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    assigned = np.empty(len(uniq_groups), dtype=np.int64)
    for g in order:
        need = ((target - have) * counts[g][None, :]).sum(axis=1) / max(counts[g].sum(), 1)
        s = int(np.argmax(need))
        assigned[g] = s
        have[s] += counts[g]
    return np.array(names, dtype=object)[assigned[g_idx]]


def whole_fold_splits(folds: list[str], labels: list, config: SplitConfig) -> dict[str, str]:
    """A split for each fold (items with '' have none), stratified by class over whole folds as
    `stratified_group_split` does over groups; a fold too big for the val/test fractions stays in train."""
    idx = [i for i, f in enumerate(folds) if f]
    fractions = {"train": 1 - config.val_fraction - config.test_fraction,
                 "val": config.val_fraction, "test": config.test_fraction}
    per_item = stratified_group_split(np.array([folds[i] for i in idx], dtype=object),
                                      np.array([labels[i] or "" for i in idx], dtype=object), fractions, config.seed)
    return {str(folds[i]): str(s) for i, s in zip(idx, per_item)}


def assign_splits(groups: np.ndarray, labels: list, folds: list, config: SplitConfig,
                  fold_split: dict[str, str] | None = None) -> tuple[np.ndarray, int]:
    """Split per item. Items with a fold named in val/test folds go there (or, with `fold_split`, wherever it
    sends their fold); the rest split by group.

    A group that straddles folds sent to different splits goes wholly to the split most of it is in
    (returned count: how many such groups were moved), so no group is ever on two sides.
    """
    n = len(groups)
    split = np.full(n, "", dtype=object)
    if fold_split is None:
        fold_split = {f: "val" for f in config.val_folds} | {f: "test" for f in config.test_folds}
    use_folds = bool(fold_split)
    labels_arr = np.array([lab if lab is not None else "" for lab in labels], dtype=object)
    by_fold = np.array([bool(use_folds and f is not None and f != "") for f in folds])
    for i in np.nonzero(by_fold)[0]:
        split[i] = fold_split.get(str(folds[i]), "train")
    moved = 0
    # groups that hold fold-assigned items: all members follow the majority split
    for g in np.unique(groups[by_fold]) if by_fold.any() else []:
        members = np.nonzero(groups == g)[0]
        fixed = [split[i] for i in members if split[i]]
        values, counts = np.unique(np.array(fixed, dtype=object), return_counts=True)
        choice = values[np.argmax(counts)]
        if len(values) > 1 or any(not split[i] for i in members):
            moved += int(len(values) > 1)
        split[members] = choice
    rest = np.nonzero(split == "")[0]
    if len(rest):
        fractions = {"train": 1 - config.val_fraction - config.test_fraction,
                     "val": config.val_fraction, "test": config.test_fraction}
        split[rest] = stratified_group_split(groups[rest], labels_arr[rest], fractions, config.seed)
    return split.astype(str), moved


def naive_split_leaks(pairs: np.ndarray, groups: np.ndarray, n: int, config: SplitConfig) -> dict:
    """What an image-level random split would have leaked: duplicate pairs and same-group pairs it separates."""
    rng = np.random.default_rng(config.seed)
    u = rng.random(n)
    naive = np.where(u < config.test_fraction, 2, np.where(u < config.test_fraction + config.val_fraction, 1, 0))
    if config.val_fraction + config.test_fraction == 0:
        naive[:] = 0
    pairs = np.asarray(pairs).reshape(-1, 2)
    dup_leaks = int((naive[pairs[:, 0]] != naive[pairs[:, 1]]).sum()) if len(pairs) else 0
    # groups (patients, duplicate sets) with members on more than one side of the naive split
    order = np.argsort(groups, kind="stable")
    g_sorted, s_sorted = groups[order], naive[order]
    starts = np.r_[0, np.nonzero(np.diff(g_sorted))[0] + 1]
    mins = np.minimum.reduceat(s_sorted, starts) if n else np.array([])
    maxs = np.maximum.reduceat(s_sorted, starts) if n else np.array([])
    return {"duplicate_pairs_split": dup_leaks, "groups_split": int((mins != maxs).sum())}
