"""Duplicate groups (synthmri.core.data.duplicates): the vectorised search, and the merge of
duplicate groups with the layout's groups."""

from __future__ import annotations

import torch

from synthmri.core.data import find_duplicate_groups
from synthmri.core.data.duplicates import merge_groups


def test_find_duplicate_groups_unit() -> None:
    rng = torch.Generator().manual_seed(0)
    thumbs = torch.rand(6, 16 * 16, generator=rng)
    thumbs[3] = thumbs[1] * 2 + 0.5  # same picture, other contrast
    thumbs[5] = 0.3  # constant: matches nothing by content
    groups = find_duplicate_groups(["a", "b", "c", "d", "a", "e"], thumbs, 0.98)
    assert groups[0] == groups[4] and groups[1] == groups[3]
    assert len(set(groups)) == 4 and groups[0] == 0
    # two views: a match in either is enough
    other = torch.rand(6, 64, generator=rng)
    other[2] = other[5]
    two = find_duplicate_groups(list("abcdef"), [thumbs, other], 0.98)
    assert two[2] == two[5] and two[1] == two[3]
    # 3000 items stay quick (vectorised)
    many = torch.rand(3000, 256, generator=rng)
    assert len(set(find_duplicate_groups([str(i) for i in range(3000)], many, 0.98))) == 3000


def test_merge_groups_unions_patients_and_duplicates() -> None:
    # no layout groups: the duplicate groups alone
    assert merge_groups([None, None, None], [0, 1, 0]) == ["dup:0", "dup:1", "dup:0"]
    # a duplicate across two patients joins them; an item with no patient keeps its
    # duplicate group, or takes the patient group of its duplicate
    groups = merge_groups(["p1", "p1", "p2", "p3", None, None], [0, 1, 2, 1, 3, 2])
    assert groups == ["p1+p3", "p1+p3", "p2", "p1+p3", "dup:3", "p2"]
