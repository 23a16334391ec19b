"""Leak-free splits: train / val / test by group (patient, volume or duplicate group),
stratified by label; a group-respecting share of the train part (the real fraction of the
scarcity protocol); a seeded random subset."""

from __future__ import annotations

import logging

import numpy as np
import torch

from synthmri.core.errors import ConfigError, DataError
from synthmri.core.interfaces import ImageSet

__all__ = ["TEST_SPLIT_NAMES", "random_subset", "real_fraction", "split_dataset"]

log = logging.getLogger(__name__)

TEST_SPLIT_NAMES = frozenset({"validation", "val", "test"})


def _group_split(
    data: ImageSet, index: list[int], fractions: list[float], names: list[str], seed: int
) -> list[list[int]]:
    """Split ``index`` by group into ``[rest, *fractions]`` parts, stratified by the groups'
    majority label; every part with a positive fraction (and the rest) gets >= 1 group."""
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for i in index:
        members.setdefault(data.groups[i], []).append(i)
    labels = data.labels
    strata: dict[int, list[str]] = {}
    for g in sorted(members):
        key = 0 if labels is None else int(torch.bincount(labels[members[g]]).argmax())
        strata.setdefault(key, []).append(g)
    bounds = np.cumsum(fractions)
    part_of: dict[str, int] = {}
    for key in sorted(strata):
        gs = strata[key]
        order = [gs[i] for i in rng.permutation(len(gs))]
        total = sum(len(members[g]) for g in gs)
        cum = 0
        for g in order:
            mid = (cum + len(members[g]) / 2) / total
            part_of[g] = next((k + 1 for k, b in enumerate(bounds) if mid < b), 0)
            cum += len(members[g])

    needed = [0] + [k + 1 for k, f in enumerate(fractions) if f > 0]
    for part in needed:
        if any(p == part for p in part_of.values()):
            continue
        counts = {q: sum(1 for p in part_of.values() if p == q) for q in needed}
        donor = max(counts, key=lambda q: (counts[q], q == 0))
        if counts[donor] < 2:
            raise DataError(
                f"cannot split {len(members)} group(s) into {'/'.join(names)}: the "
                f"{names[part]} part would be empty (the items of one patient, volume or "
                "duplicate group stay together)",
                hint="use more data, or set the empty part's fraction to 0",
            )
        pool = sorted((g for g, p in part_of.items() if p == donor), key=lambda g: len(members[g]))
        smallest = [g for g in pool if len(members[g]) == len(members[pool[0]])]
        part_of[smallest[int(rng.integers(len(smallest)))]] = part
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for g, p in part_of.items():
        parts[p].extend(members[g])
    return [sorted(p) for p in parts]


def split_dataset(
    data: ImageSet,
    *,
    val: float = 0.15,
    test: float = 0.2,
    seed: int = 0,
    use_layout_split: bool = False,
) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Train / val / test by group (no group on two sides), stratified by label.

    ``val`` and ``test`` are fractions of the items (reached as closely as whole groups
    allow). With ``use_layout_split`` the test part is exactly the items whose ``splits``
    value is validation/val/test (any case); ``val`` is then a fraction of the rest, and
    items of the rest that share a group with a test item are dropped (logged), so that no
    duplicate leaks. A part that would be empty is a DataError; ``val=0`` gives an empty val.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ConfigError(f"val={val} and test={test} must be >= 0 and sum to less than 1")
    if len(data) == 0:
        raise DataError("cannot split an empty data set")
    if use_layout_split:
        if data.splits is None:
            raise DataError(
                "use_layout_split: the data layout gives no splits",
                hint="use split folders (e.g. Train/ and Validation/), or a random split",
            )
        is_test = [s.lower() in TEST_SPLIT_NAMES for s in data.splits]
        test_idx = [i for i, t in enumerate(is_test) if t]
        if not test_idx:
            found = ", ".join(sorted(set(data.splits)))
            raise DataError(
                f"use_layout_split: no item is in a validation/val/test split (found: {found})",
                hint="name the held-out folder Validation, val or test",
            )
        test_groups = {data.groups[i] for i in test_idx}
        rest = [i for i, t in enumerate(is_test) if not t]
        kept = [i for i in rest if data.groups[i] not in test_groups]
        if len(kept) < len(rest):
            log.warning(
                "use_layout_split: %d item(s) dropped from train/val: duplicates of test items",
                len(rest) - len(kept),
            )
        if not kept:
            raise DataError("use_layout_split: no training items left outside the test split")
        train_idx, val_idx = _group_split(data, kept, [val], ["train", "val"], seed)
    else:
        train_idx, test_idx, val_idx = _group_split(
            data, list(range(len(data))), [test, val], ["train", "test", "val"], seed
        )
    return data.subset(train_idx), data.subset(val_idx), data.subset(test_idx)


def real_fraction(train: ImageSet, fraction: float, seed: int) -> ImageSet:
    """A stratified, group-respecting share ``fraction`` of ``train``: whole groups, drawn
    in a seeded order, about ``fraction`` of the groups of each class (at least one)."""
    if fraction >= 1.0:
        return train
    g = torch.Generator().manual_seed(seed)
    groups = sorted(set(train.groups))
    order = [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]
    keep: set[str] = set()
    if train.labels is not None:
        by_class: dict[int, list[str]] = {}
        first_label = {}
        for grp, lab in zip(train.groups, train.labels.tolist(), strict=True):
            first_label.setdefault(grp, lab)
        for grp in order:
            by_class.setdefault(first_label[grp], []).append(grp)
        for members in by_class.values():
            keep.update(members[: max(1, round(len(members) * fraction))])
    else:
        keep.update(order[: max(1, round(len(order) * fraction))])
    return train.subset([i for i, grp in enumerate(train.groups) if grp in keep])


def random_subset(data: ImageSet, n: int | None, seed: int) -> ImageSet:
    """At most ``n`` items of ``data`` drawn without replacement (seeded), in their order;
    ``data`` itself when it has no more than ``n`` (or ``n`` is None)."""
    if n is None or len(data) <= n:
        return data
    g = torch.Generator().manual_seed(seed)
    return data.subset(torch.randperm(len(data), generator=g)[:n].sort().values)
