"""A robust projection onto a linear subspace: the healthy model of ``pca_anomaly``.

Iteratively reweighted least squares with Tukey's biweight (an M-estimator of the
coefficients; Huber & Ronchetti, "Robust Statistics", 2009): the pixels that do not fit
the subspace (a tumour, to a subspace of healthy slices) get weight 0 and stop steering the
fit, so they keep their residual. scikit-learn's PCA finds the subspace; it has no robust
projection onto one, hence this function.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["TUKEY_C", "robust_projection"]

#: Tukey's biweight constant (95 % efficiency under Gaussian residuals)
TUKEY_C = 4.685


def robust_projection(
    x: Tensor, mean: Tensor, axes: Tensor, iterations: int, c: float = TUKEY_C
) -> Tensor:
    """Coefficients ``[N, K]`` of flattened slices ``x [N, D]`` on the orthonormal ``axes
    [K, D]`` around ``mean [D]``: least squares, then ``iterations`` refits weighting each
    pixel by Tukey's biweight of its residual over ``c`` times the slice's robust scale
    (1.4826 x the median absolute residual)."""
    centred = x - mean
    coef = centred @ axes.T
    for _ in range(iterations):
        resid = centred - coef @ axes
        scale = 1.4826 * resid.abs().median(dim=1, keepdim=True).values
        u = (resid / (c * scale.clamp_min(1e-6))).clamp(-1, 1)
        w = (1 - u * u) ** 2
        gram = torch.einsum("kd,nd,ld->nkl", axes, w, axes)
        rhs = (w * centred) @ axes.T
        # a small ridge keeps the system solvable where most weights vanish
        eye = 1e-6 * torch.eye(axes.shape[0], dtype=x.dtype)
        coef = torch.linalg.solve(gram + eye, rhs.unsqueeze(-1)).squeeze(-1)
    return coef
