"""Duplicate groups: byte-identical or near-identical images, merged with the layout's
groups (patients, volumes) so that two copies of one image never end up on two sides of
a split. Near-identical: the same picture at another size, JPEG quality or contrast
(thumbnail correlation), and, with ``aligned_threshold``, re-cropped, zoomed, slightly
rotated or mirrored copies (the best correlation over a grid of such transforms, refined
between its points), as public sets built with augmentation hold."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synthmri.core.data.preprocessing import THUMBNAIL_SIZE

__all__ = [
    "ALIGN_NEIGHBOURS",
    "ALIGN_PREFILTER",
    "aligned_similarity",
    "find_duplicate_groups",
    "merge_groups",
    "nearest_aligned",
]

ALIGN_PREFILTER = 0.5
"""Half-size thumbnail correlation a pair needs before the aligned comparison is tried
(copies turned by 10 degrees and zoomed by 15 % fall to about 0.75, and mhantor holds
copies below 0.7; on the shared sets no pair below 0.5 was joined)."""
ALIGN_NEIGHBOURS = 8
"""... and one of the two must be among the other's nearest this many by it."""
_ROTATIONS = (-10.0, -5.0, 0.0, 5.0, 10.0)  # degrees
_SCALES = (0.85, 0.92, 1.0, 1.08, 1.17)
_SHIFTS = (-2, -1, 0, 1, 2)  # pixels of the thumbnail
_REFINE_STEPS = 30
_REFINE_LR = 0.005
_REFINE_BOX = 0.06  # per entry of the affine map: ~3.4 degrees, 6 % zoom, 1 px of 32
_ERODE = 2  # pixels of the thumbnail taken off the head's edge before comparing insides
_MIN_INSIDE = 1 / 16  # of the thumbnail: a pair with a smaller inside is not compared (0)


def _components(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """The connected component of each of ``n`` nodes joined by the edges ``rows - cols``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1]


def _unit(t: torch.Tensor) -> torch.Tensor:
    """Rows centred and scaled to unit norm (float64); a constant row stays zero."""
    t = t.reshape(t.shape[0], -1).double()
    t = t - t.mean(dim=1, keepdim=True)
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _transforms(side: int) -> torch.Tensor:
    """``[T, 2, 3]`` affine maps (``affine_grid`` convention): every rotation x zoom x
    shift of the grid, each also mirrored left-right."""
    out = []
    for flip in (1.0, -1.0):
        for deg in _ROTATIONS:
            c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
            for zoom in _SCALES:
                for dx in _SHIFTS:
                    for dy in _SHIFTS:
                        out.append(
                            [
                                [flip * c / zoom, -s / zoom, 2 * dx / side],
                                [flip * s / zoom, c / zoom, 2 * dy / side],
                            ]
                        )
    return torch.tensor(out, dtype=torch.float32)


def _side(view: torch.Tensor) -> int:
    """The side of the square thumbnails that are the rows of ``view``."""
    side = round(view.shape[1] ** 0.5)
    if side * side != view.shape[1]:
        raise ValueError(f"thumbnails of {view.shape[1]} values are not square")
    return side


def _half_views(flat: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The half-size thumbnails of the rows of ``flat`` (``side`` squared), as unit rows,
    and the same mirrored left-right: the aligned comparison's candidate search."""
    half = _unit(F.avg_pool2d(flat.reshape(len(flat), 1, side, side), 2))
    return half, _unit(half.reshape(len(half), side // 2, side // 2).flip(2))


def _interior(images: torch.Tensor) -> torch.Tensor:
    """``[N, side * side]`` weights: 1 on the pixels of each thumbnail above 10 % of its
    maximum, eroded by ``_ERODE`` pixels (the inside of the head), else 0."""
    inside = (images > 0.1 * images.amax(dim=(2, 3), keepdim=True)).float()
    inside = -F.max_pool2d(-inside, 2 * _ERODE + 1, 1, _ERODE)
    return inside.reshape(len(images), -1)


def _centre_inside(rows: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``rows`` minus their mean over ``masks`` (0/1, one row each), zero outside it."""
    mean = (masks * rows).sum(1, keepdim=True) / masks.sum(1, keepdim=True).clamp_min(1.0)
    return (rows - mean) * masks


def _masked_correlation(
    warped: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    """``[W, R]`` Pearson correlations of the rows of ``warped`` with those of ``targets``,
    each over the pixels its target's row of ``masks`` (0/1) selects."""
    centred = _centre_inside(targets, masks)
    s_w = warped @ masks.T
    energy = (warped * warped) @ masks.T
    # a floor: the variance of a near-flat warp, a difference of two float32 sums, can be
    # rounding noise, which would make a correlation out of nothing
    var_w = (energy - s_w**2 / masks.sum(1).clamp_min(1.0)).clamp_min(1e-5 * energy)
    norm = (var_w * (centred * centred).sum(1)).sqrt().clamp_min(1e-12)
    return (warped @ centred.T) / norm


def _grid(theta: torch.Tensor, side: int) -> torch.Tensor:
    """``F.affine_grid(theta, [P, 1, side, side], align_corners=False)``, written out
    elementwise: ``affine_grid`` is slow on a CPU for thousands of small maps."""
    axis = (torch.arange(side, dtype=torch.float32) * 2 + 1) / side - 1
    x, y = axis[None, None, :], axis[None, :, None]
    t = theta[:, :, :, None, None]
    return torch.stack([t[:, i, 0] * x + t[:, i, 1] * y + t[:, i, 2] for i in (0, 1)], dim=-1)


def aligned_similarity(
    view: torch.Tensor, pairs: np.ndarray, sources: torch.Tensor | None = None
) -> np.ndarray:
    """For each pair ``(i, j)`` of rows of ``view`` (``[N, side * side]`` square
    thumbnails): how well one matches the other once aligned, the mean of the two
    directions. One direction: the highest Pearson correlation, over the inside of head j
    (``_interior``: the silhouette, which every head shares, left out), of thumbnail j
    with thumbnail i shifted, rotated, zoomed and/or mirrored: the best of the grid's
    transforms (``_transforms``), then refined by gradient ascent within about half a grid
    step of it (``_refine``). Both directions count because a copy matches both ways,
    while a near-featureless slice (the end of a volume) can match a part of another image
    one way. A pair where either inside covers less than ``_MIN_INSIDE`` of the thumbnail
    (a correlation over a few pixels says nothing) scores 0.

    ``sources`` (``[N, 1, k * side, k * side]``, the same images at ``k`` times the side):
    the best transform of each direction is also scored on image i warped at that size
    and pooled to the thumbnail, as thumbnail j was made, and the higher counts. A copy
    shifted by a pixel of the larger image is a half-pixel shift of the thumbnail, which
    warping the thumbnail blurs (phantoms shifted one pixel diagonally at 64 px: median
    0.895 without, 0.990 with, at about 4 % more cost)."""
    n, side = view.shape[0], _side(view)
    images = view.reshape(n, 1, side, side).float()
    masks = _interior(images)
    if sources is not None:
        sources = sources.float()
        if sources.shape[0] != n or sources.shape[-1] % side:
            raise ValueError(f"sources {tuple(sources.shape)} for {n} thumbnails of {side}")
    reverse = np.ascontiguousarray(pairs[:, ::-1])
    one, two = (_directed(images, masks, p, sources) for p in (pairs, reverse))
    small = (masks.sum(1) < _MIN_INSIDE * side * side).numpy()
    return np.where(small[pairs[:, 0]] | small[pairs[:, 1]], 0.0, (one + two) / 2)


def _directed(
    images: torch.Tensor, masks: torch.Tensor, pairs: np.ndarray, sources: torch.Tensor | None
) -> np.ndarray:
    """``aligned_similarity`` in one direction: thumbnail i warped onto the inside of j."""
    n, side = images.shape[0], images.shape[-1]
    flat = images.reshape(n, -1)
    theta = _transforms(side)
    grid = _grid(theta, side)
    best = torch.empty(len(pairs))
    start = torch.empty(len(pairs), 2, 3)
    for i in np.unique(pairs[:, 0]):
        rows = np.nonzero(pairs[:, 0] == i)[0]
        j = torch.from_numpy(pairs[rows, 1])
        warped = F.grid_sample(
            images[i : i + 1].expand(len(theta), -1, -1, -1), grid, align_corners=False
        ).reshape(len(theta), -1)
        best[rows], arg = _masked_correlation(warped, flat[j], masks[j]).max(dim=0)
        start[rows] = theta[arg]
    for lo in range(0, len(pairs), 4096):
        block = slice(lo, lo + 4096)
        i, j = (torch.from_numpy(pairs[block, k]) for k in (0, 1))
        targets = _unit_inside(flat[j], masks[j])
        refined, at = _refine(images[i], targets, masks[j], start[block])
        if sources is not None:
            refined = torch.maximum(refined, _fine_score(sources[i], targets, masks[j], at))
        best[block] = torch.maximum(best[block], refined)
    return best.double().numpy()


def _unit_inside(rows: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``_centre_inside`` scaled to unit norm (a zero row stays zero)."""
    t = _centre_inside(rows, masks)
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def _fine_score(
    sources: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor, theta: torch.Tensor
) -> torch.Tensor:
    """The correlation over ``masks[k]`` of ``targets[k]`` (``_unit_inside`` rows) with
    ``sources[k]`` warped by ``theta[k]`` at its own size, then average-pooled to the
    targets' side."""
    side = round(targets.shape[1] ** 0.5)
    warped = F.grid_sample(sources, _grid(theta, sources.shape[-1]), align_corners=False)
    pooled = F.avg_pool2d(warped, sources.shape[-1] // side).reshape(len(sources), -1)
    return (_unit_inside(pooled, masks) * targets).sum(1)


def _refine(
    images: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor, start: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The highest correlation of each warped ``images[k]`` with ``targets[k]``
    (``_unit_inside`` rows) over ``masks[k]`` met while ascending it from the affine map
    ``start[k]``, each entry kept within ``_REFINE_BOX`` of its start (about half a grid
    step: the refinement fills the grid in, it adds no freedom), and the map where it was
    met."""
    theta = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([theta], lr=_REFINE_LR)
    best = torch.full((len(images),), -1.0)
    at = start.clone()
    for _ in range(_REFINE_STEPS):
        grid = _grid(theta, images.shape[-1])
        w = F.grid_sample(images, grid, align_corners=False).reshape(len(images), -1)
        w = _centre_inside(w, masks)
        sims = (w * targets).sum(1) / w.norm(dim=1).clamp_min(1e-12)
        better = sims.detach() > best
        at[better] = theta.detach()[better]
        best = torch.maximum(best, sims.detach())
        optimiser.zero_grad()
        (-sims.sum()).backward()
        optimiser.step()
        with torch.no_grad():
            theta.copy_(start + (theta - start).clamp(-_REFINE_BOX, _REFINE_BOX))
    return best, at


def find_duplicate_groups(
    digests: Sequence[str],
    thumbnails: torch.Tensor | Sequence[torch.Tensor],
    threshold: float = 0.98,
    aligned_threshold: float | None = None,
    sources: Sequence[torch.Tensor] | None = None,
) -> list[int]:
    """A group index per item: byte-identical items (same digest) share a group, and so do
    near-identical ones (Pearson correlation of their thumbnails ``>= threshold``: the same
    picture at another size, JPEG quality or framing); transitive (connected components).

    ``thumbnails``: one tensor ``[N, ...]`` (flattened per item), or several such views
    (e.g. the whole frame and the head crop): two items match when any view does. A constant
    thumbnail matches only by digest; ``threshold > 1`` turns near-duplicate detection off.

    ``aligned_threshold`` (square thumbnails; None or ``> 1``: off): a pair whose
    half-size thumbnails, one of them mirrored or not, correlate at least
    ``ALIGN_PREFILTER`` in a view, one among the other's ``ALIGN_NEIGHBOURS`` nearest
    there, is also joined when its ``aligned_similarity`` in that view (the correlation
    inside the head, once aligned) reaches this. ``sources``: per view, the images at a
    multiple of its side, ``aligned_similarity``'s sources.

    Group indices count from 0 in order of first appearance. Vectorised: an ``N x N``
    product per view, in row blocks (3000 items: well under a second), and the aligned
    comparison for the prefiltered pairs only, both ways (3000 look-alike phantoms: about 5
    CPU-minutes; real sets of a few hundred images: 15 to 40 CPU-seconds).
    """
    n = len(digests)
    views = [thumbnails] if isinstance(thumbnails, torch.Tensor) else list(thumbnails)
    for v in views:
        if v.shape[0] != n:
            raise ValueError(f"{v.shape[0]} thumbnails for {n} digests")
    if n == 0:
        return []
    first: dict[str, int] = {}
    same_a, same_b = [], []
    for i, d in enumerate(digests):
        j = first.setdefault(d, i)
        if j != i:
            same_a.append(j)
            same_b.append(i)
    rows = [np.asarray(same_a, dtype=np.int64)]
    cols = [np.asarray(same_b, dtype=np.int64)]
    aligned = aligned_threshold is not None and aligned_threshold <= 1.0
    fine: list[torch.Tensor | None] = [None] * len(views) if sources is None else list(sources)
    if len(fine) != len(views):
        raise ValueError(f"{len(fine)} sources for {len(views)} views")
    for view, source in zip(views, fine, strict=True) if threshold <= 1.0 or aligned else []:
        flat = view.reshape(n, -1).double()
        norms = (flat - flat.mean(dim=1, keepdim=True)).norm(dim=1)
        valid = (norms > 1e-8 * max(1.0, float(norms.max()))).numpy()
        if threshold <= 1.0:
            t = _unit(flat)
            a, b = _pairs_above(t, t, threshold, valid)
            rows.append(a)
            cols.append(b)
        if aligned:
            side = _side(flat)
            half, mirrored = _half_views(flat, side)
            pairs = np.unique(
                np.concatenate(
                    [
                        np.stack(
                            _pairs_above(half, u, ALIGN_PREFILTER, valid, ALIGN_NEIGHBOURS),
                            axis=1,
                        )
                        for u in (half, mirrored)
                    ]
                ),
                axis=0,
            )
            a, b = pairs[:, 0], pairs[:, 1]
            hit = aligned_similarity(flat, pairs, source) >= aligned_threshold - 1e-9
            rows.append(a[hit])
            cols.append(b[hit])
    labels = _components(np.concatenate(rows), np.concatenate(cols), n)
    renumber: dict[int, int] = {}
    return [renumber.setdefault(int(lab), len(renumber)) for lab in labels]


def nearest_aligned(
    queries: torch.Tensor, pool: torch.Tensor, neighbours: int = ALIGN_NEIGHBOURS
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image of ``queries`` (``[Q, 1, H, W]``, square): its highest
    ``aligned_similarity`` with an image of ``pool`` (``[P, 1, H, W]``), among the
    ``neighbours`` nearest there by half-size thumbnail correlation (one mirrored or not),
    and that image's index. The duplicate search's comparison across two sets (a query at
    least ``data.near_duplicate_aligned`` from a pool image is, for the loader, its copy),
    with the images at twice the thumbnail's side, where they have it, as ``sources``."""
    q = len(queries)
    if q == 0 or len(pool) == 0:
        return torch.full((q,), -1.0, dtype=torch.float64), torch.zeros(q, dtype=torch.long)
    images = torch.cat([queries, pool]).float()
    side = min(THUMBNAIL_SIZE, images.shape[-1])
    flat = F.adaptive_avg_pool2d(images, side).reshape(len(images), -1)
    sources = F.adaptive_avg_pool2d(images, 2 * side) if images.shape[-1] >= 2 * side else None
    half, mirrored = _half_views(flat, side)
    k = min(neighbours, len(pool))
    near = torch.cat([(half[:q] @ u[q:].T).topk(k, dim=1).indices for u in (half, mirrored)], 1)
    pairs = np.unique(
        np.stack([np.repeat(np.arange(q), near.shape[1]), q + near.reshape(-1).numpy()], 1),
        axis=0,
    )
    sims = torch.from_numpy(aligned_similarity(flat, pairs, sources))
    best = torch.full((q,), -1.0, dtype=torch.float64)
    index = torch.zeros(q, dtype=torch.long)
    for row, (i, j) in enumerate(pairs):
        if sims[row] > best[i]:
            best[i], index[i] = sims[row], int(j) - q
    return best, index


def _pairs_above(
    t: torch.Tensor, u: torch.Tensor, threshold: float, valid: np.ndarray, nearest: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``a < b`` whose unit rows ``t[a]``, ``u[b]`` have a dot product of at
    least ``threshold`` (rows not ``valid``, i.e. constant, left out; ``t @ u.T``
    symmetric); with ``nearest``, only pairs where one is among the other's ``nearest``
    highest. Row blocks of 1024."""
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    n = t.shape[0]
    for start in range(0, n, 1024):
        sim = (t[start : start + 1024] @ u.T).numpy()
        hit = sim >= threshold - 1e-9
        if 0 < nearest < n:
            kth = np.partition(sim, n - nearest - 1, axis=1)[:, n - nearest - 1]
            hit &= sim >= kth[:, None]
        a, b = np.nonzero(hit)
        a += start
        keep = (a != b) & valid[a] & valid[b]
        rows.append(np.minimum(a, b)[keep])
        cols.append(np.maximum(a, b)[keep])
    return np.concatenate(rows), np.concatenate(cols)


def merge_groups(layout_groups: list[str | None], dup: list[int]) -> list[str]:
    """The split group of every item: the union of the layout's groups (patient, volume)
    and the duplicate groups ``dup``, named by the layout groups it holds joined by ``+``
    (``"dup:<k>"`` when it holds none)."""
    if all(g is None for g in layout_groups):
        return [f"dup:{d}" for d in dup]
    first: dict[tuple[str, object], int] = {}
    rows, cols = [], []
    for i, (g, d) in enumerate(zip(layout_groups, dup, strict=True)):
        for key in (("g", g), ("d", d)):
            if key[1] is not None:
                rows.append(i)
                cols.append(first.setdefault(key, i))
    component = _components(np.asarray(rows), np.asarray(cols), len(dup))
    names: dict[int, set[str]] = {}
    for c, g in zip(component.tolist(), layout_groups, strict=True):
        names.setdefault(c, set()).update([] if g is None else [g])
    # a component without layout groups is linked by duplicates only: one duplicate group
    return [
        "+".join(sorted(names[c])) if names[c] else f"dup:{d}"
        for c, d in zip(component.tolist(), dup, strict=True)
    ]
