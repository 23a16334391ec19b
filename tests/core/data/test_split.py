"""Leak-free splits (synthmri.core.data.split): by group, stratified, deterministic per
seed; a share of the train part; a seeded subset."""

from __future__ import annotations

import pytest
import torch

from synthmri.core.data import real_fraction, split_dataset
from synthmri.core.data.split import random_subset
from synthmri.core.errors import DataError
from synthmri.core.interfaces import ImageSet


def _synthetic_set(n_groups: int, per_group: int = 2, pos_every: int = 3) -> ImageSet:
    n = n_groups * per_group
    labels = torch.tensor(
        [int(g % pos_every == 0) for g in range(n_groups) for _ in range(per_group)]
    )
    return ImageSet(
        images=torch.rand(n, 1, 8, 8),
        labels=labels,
        class_names=["normal", "tumor"],
        sources=[f"f{i}" for i in range(n)],
        groups=[f"g{g}" for g in range(n_groups) for _ in range(per_group)],
    )


def test_split_no_group_crosses_and_stratified() -> None:
    data = _synthetic_set(120, per_group=3)
    train, val, test = split_dataset(data, val=0.15, test=0.2, seed=1)
    assert len(train) + len(val) + len(test) == len(data)
    sides = [set(train.groups), set(val.groups), set(test.groups)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert abs(len(test) / len(data) - 0.2) < 0.03 and abs(len(val) / len(data) - 0.15) < 0.03
    ratio = float(data.labels.float().mean())
    for part in (train, val, test):
        assert abs(float(part.labels.float().mean()) - ratio) < 0.05
    assert len(set(train.sources + val.sources + test.sources)) == len(data)


def test_split_is_deterministic_per_seed() -> None:
    data = _synthetic_set(40)
    a = split_dataset(data, seed=7)
    b = split_dataset(data, seed=7)
    c = split_dataset(data, seed=8)
    assert [p.sources for p in a] == [p.sources for p in b]
    assert [p.sources for p in a] != [p.sources for p in c]


def test_split_tiny_and_impossible() -> None:
    train, val, test = split_dataset(_synthetic_set(8, per_group=1, pos_every=2), seed=0)
    assert len(train) and len(val) and len(test)
    assert len(train) + len(val) + len(test) == 8
    train, val, test = split_dataset(_synthetic_set(3, per_group=4), seed=0)
    assert (len(train), len(val), len(test)) == (4, 4, 4)
    with pytest.raises(DataError, match="would be empty"):
        split_dataset(_synthetic_set(2, per_group=5))
    train, val, test = split_dataset(_synthetic_set(2, per_group=5), val=0.0, test=0.5)
    assert len(val) == 0 and len(train) == len(test) == 5
    unlabeled = ImageSet(images=torch.rand(10, 1, 4, 4))
    assert sum(len(p) for p in split_dataset(unlabeled)) == 10
    with pytest.raises(DataError, match="no splits"):
        split_dataset(unlabeled, use_layout_split=True)


def test_real_fraction_keeps_whole_groups_of_each_class() -> None:
    data = _synthetic_set(30, per_group=2)
    assert real_fraction(data, 1.0, seed=0) is data
    half = real_fraction(data, 0.5, seed=3)
    assert half.sources == real_fraction(data, 0.5, seed=3).sources
    assert half.sources != real_fraction(data, 0.5, seed=4).sources
    kept = set(half.groups)
    assert len(half) == sum(g in kept for g in data.groups)  # whole groups only
    # about half of the groups of each class, at least one
    assert half.class_counts() == {"normal": 20, "tumor": 10}
    tiny = real_fraction(data, 0.01, seed=0)
    assert tiny.class_counts() == {"normal": 2, "tumor": 2}
    unlabelled = ImageSet(images=torch.rand(10, 1, 4, 4))
    assert len(real_fraction(unlabelled, 0.3, seed=0)) == 3


def test_random_subset_is_seeded_and_keeps_order() -> None:
    data = _synthetic_set(10)
    assert random_subset(data, None, seed=0) is data and random_subset(data, 20, seed=0) is data
    a, b = random_subset(data, 5, seed=1), random_subset(data, 5, seed=1)
    assert len(a) == 5 and a.sources == b.sources
    assert a.sources == sorted(a.sources, key=data.sources.index)
    assert a.sources != random_subset(data, 5, seed=2).sources
