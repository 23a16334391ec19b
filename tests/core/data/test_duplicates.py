"""Duplicate groups (synthmri.core.data.duplicates): the vectorised search, and the merge of
duplicate groups with the layout's groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthmri.core.data import find_duplicate_groups
from synthmri.core.data.duplicates import aligned_similarity, merge_groups, nearest_aligned
from synthmri.core.phantoms import make_phantoms


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


def discs(n: int, seed: int) -> torch.Tensor:
    """``[n, 1, 32, 32]`` distinct textured discs on black (as heads on their background)."""
    rng = torch.Generator().manual_seed(seed)
    texture = torch.nn.functional.avg_pool2d(torch.rand(n, 1, 48, 48, generator=rng), 9, 1)
    texture = 0.5 + 0.25 * (texture - texture.mean()) / texture.std()
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    return (texture * (((yy - 17) ** 2 + (xx - 17) ** 2) <= 11**2))[:, :, 2:34, 2:34]


def warp(
    image: torch.Tensor, degrees: float, zoom: float = 1.0, shift: float = 0.0
) -> torch.Tensor:
    """``image`` (``[1, 1, 32, 32]``) turned, zoomed and shifted (``affine_grid`` units)."""
    cos, sin = (f(math.radians(degrees)) / zoom for f in (math.cos, math.sin))
    theta = torch.tensor([[[cos, -sin, shift], [sin, cos, -shift]]])
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 32, 32], align_corners=False)
    return torch.nn.functional.grid_sample(image, grid, align_corners=False)


def test_aligned_search_finds_rotated_and_mirrored_copies() -> None:
    thumbs = discs(4, seed=1)
    views = torch.cat([thumbs, warp(thumbs[:1], 10), thumbs[1:2].flip(3)]).reshape(6, -1)
    digests = list("abcdef")
    plain = find_duplicate_groups(digests, views, 0.98)
    assert len(set(plain)) == 6  # a 10 degree turn and a mirror defeat plain correlation
    aligned = find_duplicate_groups(digests, views, 0.98, aligned_threshold=0.97)
    assert aligned[0] == aligned[4] and aligned[1] == aligned[5]
    assert len(set(aligned)) == 4
    assert find_duplicate_groups(digests, views, 0.98, aligned_threshold=1.01) == plain
    with pytest.raises(ValueError, match="square"):
        find_duplicate_groups(list("ab"), torch.rand(2, 12), 0.98, aligned_threshold=0.97)


def test_aligned_search_refines_between_the_grid_points() -> None:
    # a turn of 7.5 degrees, a zoom of 1.04 and half a pixel's shift fall between the grid's
    # transforms: the grid alone reaches ~0.88 here, the refinement finds the copy
    thumbs = discs(3, seed=2)
    views = torch.cat([thumbs, warp(thumbs[:1], 7.5, 1.04, 0.03)]).reshape(4, -1)
    similarity = aligned_similarity(views, np.array([[0, 3], [1, 3], [1, 2], [2, 1]]))
    assert similarity[0] >= 0.975 and similarity[1:].max() < 0.9
    groups = find_duplicate_groups(list("abcd"), views, 0.98, aligned_threshold=0.97)
    assert groups == [0, 1, 2, 0]


def test_aligned_search_reaches_strongly_transformed_copies() -> None:
    # a 10 degree turn with a 15 % zoom lowers the half-size correlation to ~0.8: still a
    # candidate for the aligned comparison, which joins the copy
    thumbs = discs(6, seed=3)
    copy = warp(thumbs[:1], 10, 0.85, 0.06)
    half = torch.nn.functional.avg_pool2d(torch.cat([thumbs[:1], copy]), 2).reshape(2, -1)
    assert float(torch.corrcoef(half)[0, 1]) < 0.85
    views = torch.cat([thumbs, copy]).reshape(7, -1)
    groups = find_duplicate_groups(list("abcdefg"), views, 0.98, aligned_threshold=0.93)
    assert groups == [0, 1, 2, 3, 4, 5, 0]


def test_aligned_similarity_needs_an_inside_to_compare() -> None:
    # a speck of head (the end of a volume) correlates perfectly over its few inside pixels
    # with part of anything; such a pair is not compared, and the score is symmetric
    thumbs = discs(2, seed=4)
    speck = torch.zeros(1, 1, 32, 32)
    speck[..., 15:20, 15:20] = thumbs[:1, :, 15:20, 15:20]
    views = torch.cat([thumbs, speck]).reshape(3, -1)
    similarity = aligned_similarity(views, np.array([[0, 2], [2, 0], [0, 1], [1, 0]]))
    assert similarity[0] == similarity[1] == 0.0
    assert similarity[2] == pytest.approx(similarity[3])


def test_merge_groups_unions_patients_and_duplicates() -> None:
    # no layout groups: the duplicate groups alone
    assert merge_groups([None, None, None], [0, 1, 0]) == ["dup:0", "dup:1", "dup:0"]
    # a duplicate across two patients joins them; an item with no patient keeps its
    # duplicate group, or takes the patient group of its duplicate
    groups = merge_groups(["p1", "p1", "p2", "p3", None, None], [0, 1, 2, 1, 3, 2])
    assert groups == ["p1+p3", "p1+p3", "p2", "p1+p3", "dup:3", "p2"]


def test_nearest_aligned_finds_copies_shifted_by_a_pixel_of_the_image() -> None:
    # one pixel diagonally at 64 px is half a pixel of the 32 px thumbnail: warping the
    # thumbnail blurs it below the threshold, warping the 64 px image and pooling does not
    pool = make_phantoms(16, 64, seed=5).images
    shifted = torch.zeros(8, 1, 64, 64)
    shifted[..., 1:, 1:] = pool[:8, :, :-1, :-1]
    best, index = nearest_aligned(shifted, pool)
    assert best.min() >= 0.93 and index.tolist() == list(range(8))
    views = torch.nn.functional.avg_pool2d(torch.cat([pool[:8], shifted]), 2).reshape(16, -1)
    pairs = np.stack([np.arange(8), np.arange(8) + 8], axis=1)
    assert np.median(aligned_similarity(views, pairs)) < 0.93  # the thumbnails alone
    sources = torch.cat([pool[:8], shifted])
    assert aligned_similarity(views, pairs, sources).min() >= 0.93
    # the loader's search takes the same sources, one tensor per view
    digests = [str(i) for i in range(16)]
    groups = find_duplicate_groups(digests, views, 0.98, 0.93, [sources])
    assert groups[:8] == groups[8:] and len(set(groups)) == 8
    assert len(set(find_duplicate_groups(digests, views, 0.98, 0.93))) > 8
    with pytest.raises(ValueError, match="2 sources for 1 views"):
        find_duplicate_groups(digests, views, 0.98, 0.93, [sources, sources])
    fresh, _ = nearest_aligned(make_phantoms(8, 64, seed=6).images, pool)
    assert fresh.max() < 0.93
    with pytest.raises(ValueError, match="sources"):
        aligned_similarity(views, pairs, sources[:, :, :48, :48])
