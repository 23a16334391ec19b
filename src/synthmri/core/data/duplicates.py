"""Duplicate groups: byte-identical or near-identical images, merged with the layout's
groups (patients, volumes) so that two copies of one image never end up on two sides of
a split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["find_duplicate_groups", "merge_groups"]


def _components(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """The connected component of each of ``n`` nodes joined by the edges ``rows - cols``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1]


def find_duplicate_groups(
    digests: Sequence[str],
    thumbnails: torch.Tensor | Sequence[torch.Tensor],
    threshold: float = 0.98,
) -> list[int]:
    """A group index per item: byte-identical items (same digest) share a group, and so do
    near-identical ones (Pearson correlation of their thumbnails ``>= threshold``: the same
    picture at another size, JPEG quality or framing); transitive (connected components).

    ``thumbnails``: one tensor ``[N, ...]`` (flattened per item), or several such views
    (e.g. the whole frame and the head crop): two items match when any view does. A constant
    thumbnail matches only by digest; ``threshold > 1`` turns near-duplicate detection off.
    Group indices count from 0 in order of first appearance. Vectorised: an ``N x N``
    product per view, in row blocks (3000 items: well under a second).
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
    if threshold <= 1.0:
        for view in views:
            t = view.reshape(n, -1).double()
            t = t - t.mean(dim=1, keepdim=True)
            norms = t.norm(dim=1, keepdim=True)
            valid = (norms[:, 0] > 1e-8 * max(1.0, float(norms.max()))).numpy()
            t = t / norms.clamp_min(1e-12)
            block = 1024
            for start in range(0, n, block):
                sim = (t[start : start + block] @ t.T).numpy()
                a, b = np.nonzero(sim >= threshold - 1e-9)
                a += start
                keep = (a < b) & valid[a] & valid[b]
                rows.append(a[keep])
                cols.append(b[keep])
    labels = _components(np.concatenate(rows), np.concatenate(cols), n)
    renumber: dict[int, int] = {}
    return [renumber.setdefault(int(lab), len(renumber)) for lab in labels]


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
