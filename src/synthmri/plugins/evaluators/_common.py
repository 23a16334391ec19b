"""What the evaluator plugins share: class splits, size matching, metric numbers, result
labels, matplotlib, and the memorisation rule of ``privacy`` and ``image_quality``.

The memorisation rule (``find_memorized``): a synthetic image is a memorised copy when

- its SSIM to the nearest training image is >= ``ssim_threshold`` (0.95), OR
- its feature distance to the nearest training image is below ``ratio_threshold`` (0.5)
  times the ``reference_percentile``-th (5th) percentile of the real test images'
  nearest-training distances, i.e. it is far closer to a training image than almost any
  new real image ever is.

Importing this module loads no torch (nor matplotlib): they are imported inside the
functions that use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from synthmri.core.interfaces import Predictions, StrictParams

if TYPE_CHECKING:
    import torch

    from synthmri.core.interfaces import ImageSet

__all__ = [
    "BootstrapParams",
    "MemorizationParams",
    "MemorizationResult",
    "by_class",
    "find_memorized",
    "match_size",
    "metric_value",
    "nearest_distance",
    "nearest_ssim",
    "result_head",
    "result_label",
    "ssim_window",
]

EXACT_DISTANCES = "donot_use_mm_for_euclid_dist"  # torch.cdist mode: exact zeros for copies


# ----------------------------------------------------------------------------- rows


def metric_value(x: Any, digits: int | None = 6) -> float | None:
    """``x`` as a plain float for a metric row, rounded to ``digits`` (None: unrounded);
    None when ``x`` is None, NaN or infinite (JSON has no NaN)."""
    if x is None:
        return None
    v = float(x)
    if not math.isfinite(v):
        return None
    return v if digits is None else round(v, digits)


def result_head(pred: Predictions, model_key: str) -> dict[str, Any]:
    """The columns that say which training a result row is: the model (under
    ``model_key``), generator, train_on, real_fraction, the experiment seed when the
    experiment lists seeds, and n_train."""
    head: dict[str, Any] = {
        model_key: pred.model,
        "generator": pred.generator,
        "train_on": pred.train_on,
        "real_fraction": pred.real_fraction,
    }
    if pred.seed is not None:
        head["seed"] = pred.seed
    head["n_train"] = pred.n_train
    return head


def result_label(row: dict[str, Any], model_key: str) -> str:
    """A figure label of a result row: ``<model> · <train_on> <generator> (<f> real)``;
    ``model_key`` names the model column (``classifier``, ``segmenter``)."""
    text = f"{row[model_key]} · {row['train_on']}"
    if row["generator"]:
        text += f" {row['generator']}"
    if row["train_on"] != "synthetic" and row["real_fraction"] < 1:
        text += f" ({row['real_fraction']:g} real)"
    return text


class BootstrapParams(StrictParams):
    """Params of the percentile bootstrap intervals of result metrics."""

    bootstrap: int = Field(
        1000, ge=0, description="bootstrap resamples for the intervals (0: no intervals)"
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="coverage of the intervals")


# ----------------------------------------------------------------------------- image sets


def match_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` resized (bilinear, antialiased) to ``size`` px when they differ."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.float()
    import torch.nn.functional as F

    return F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)


def by_class(data: ImageSet) -> list[tuple[str, torch.Tensor]]:
    """(class name, indices) per class present; ("all", everything) when unlabelled."""
    import torch

    if data.labels is None:
        return [("all", torch.arange(len(data)))]
    out = []
    for k in torch.unique(data.labels).tolist():
        name = data.class_names[k] if k < len(data.class_names) else str(k)
        out.append((name, (data.labels == k).nonzero().reshape(-1)))
    return out


# ----------------------------------------------------------------------------- memorisation


class MemorizationParams(StrictParams):
    """The thresholds of the memorisation rule (module docstring)."""

    ssim_threshold: float = Field(
        0.95,
        gt=0,
        le=1,
        description="SSIM to the nearest training image at or above which "
        "a synthetic image is a copy",
    )
    ratio_threshold: float = Field(
        0.5,
        ge=0,
        description="a copy also when its feature distance is below this times the "
        "reference percentile of the real test images' nearest-training distances",
    )
    reference_percentile: float = Field(
        5.0, ge=0, le=100, description="percentile of the real test distances (see above)"
    )
    max_pairs: int = Field(
        2_000_000,
        ge=1,
        description="most (synthetic, training) pairs compared by SSIM; above "
        "it, each synthetic image is compared with its nearest training images by pixel L2",
    )

    def rule(self) -> dict[str, Any]:
        """The thresholds as keyword arguments of ``find_memorized``."""
        return {name: getattr(self, name) for name in MemorizationParams.model_fields}


def ssim_window(size: int) -> int:
    """The Gaussian SSIM window for images of ``size`` px (11 from 128 px, else 7; odd)."""
    if size >= 128:
        return 11
    return max(3, min(7, (size // 4) | 1))


def _gauss1d(win: int, sigma: float = 1.5) -> torch.Tensor:
    import torch

    d = torch.arange(win, dtype=torch.float32) - (win - 1) / 2
    g = torch.exp(-(d**2) / (2 * sigma**2))
    return g / g.sum()


def _band(n: int, g: torch.Tensor) -> torch.Tensor:
    """``[n, n - w + 1]`` matrix whose columns are the window ``g`` slid along ``n`` pixels."""
    import torch

    w = g.shape[0]
    m = torch.zeros(n, n - w + 1, dtype=g.dtype, device=g.device)
    for j in range(n - w + 1):
        m[j : j + w, j] = g
    return m


def _filt(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, 'valid' like MONAI's SSIM, as two matrix products
    (an order of magnitude faster than a depthwise conv on the CPU)."""
    bh, bw = _band(x.shape[-2], g), _band(x.shape[-1], g)
    return bh.T @ (x @ bw)


def nearest_ssim(
    query: torch.Tensor,
    pool: torch.Tensor,
    *,
    max_pairs: int = 2_000_000,
    device: torch.device | str = "cpu",
    win: int | None = None,
    chunk_elements: int = 1 << 23,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image, the highest SSIM to any pool image and that image's index.

    Images ``[N, C, H, W]`` in [0, 1] of one size; SSIM as MONAI's ``SSIMMetric`` (Gaussian
    window ``win``, sigma 1.5, data range 1, valid filtering, mean over the map and
    channels). Vectorised over pairs in chunks. When ``len(query) * len(pool)`` exceeds
    ``max_pairs``, SSIM is computed only against each query's ``max_pairs // len(query)``
    nearest pool images by pixel L2 distance (a copy is also near in L2).
    """
    import torch

    with torch.no_grad():
        device = torch.device(device)
        nq, npool = query.shape[0], pool.shape[0]
        if nq == 0 or npool == 0:
            return torch.empty(0), torch.empty(0, dtype=torch.long)
        if query.shape[1:] != pool.shape[1:]:
            raise ValueError(f"image shapes differ: {tuple(query.shape)} vs {tuple(pool.shape)}")
        win = win or ssim_window(query.shape[-1])
        g = _gauss1d(win).to(device)
        c1, c2 = 0.01**2, 0.03**2
        q = query.float().to(device)
        p = pool.float().to(device)
        if nq * npool > max_pairs:
            k = max(1, max_pairs // nq)
            d = torch.cdist(q.flatten(1), p.flatten(1))
            cand = d.topk(min(k, npool), dim=1, largest=False).indices  # [nq, k]
        else:
            cand = torch.arange(npool, device=device).expand(nq, npool)
        k = cand.shape[1]
        mu_q, mu_p = _filt(q, g), _filt(p, g)
        var_q = _filt(q * q, g) - mu_q**2
        var_p = _filt(p * p, g) - mu_p**2
        per_pair = q[0].numel()
        step = max(1, chunk_elements // max(1, per_pair))
        qi_all = torch.arange(nq, device=device).repeat_interleave(k)
        pi_all = cand.reshape(-1)
        out = torch.empty(qi_all.shape[0], device=device)
        for s in range(0, qi_all.shape[0], step):
            qi, pi = qi_all[s : s + step], pi_all[s : s + step]
            mu_xy = _filt(q[qi] * p[pi], g)
            mx, my = mu_q[qi], mu_p[pi]
            cov = mu_xy - mx * my
            ssim = ((2 * mx * my + c1) * (2 * cov + c2)) / (
                (mx**2 + my**2 + c1) * (var_q[qi] + var_p[pi] + c2)
            )
            out[s : s + step] = ssim.flatten(1).mean(1)
        best, where = out.view(nq, k).max(dim=1)
        index = cand.gather(1, where[:, None]).squeeze(1)
        return best.cpu(), index.cpu()


@dataclass
class MemorizationResult:
    """Per synthetic image: nearest training image by SSIM and by features, and the flag."""

    nn_ssim: torch.Tensor  # [N] SSIM to the nearest training image (by SSIM)
    nn_ssim_index: torch.Tensor  # [N] index of that training image
    nn_distance: torch.Tensor | None  # [N] feature distance to the nearest training image
    nn_distance_index: torch.Tensor | None  # [N]
    reference_distance: torch.Tensor | None  # [M] real test images' nearest-training distance
    ratio: torch.Tensor | None  # [N] nn_distance / median(reference_distance)
    distance_threshold: float | None  # below this feature distance: a copy
    memorized: torch.Tensor  # [N] bool

    @property
    def fraction(self) -> float:
        """Share of synthetic images flagged as memorised copies."""
        n = self.memorized.numel()
        return float(self.memorized.float().mean()) if n else 0.0


def find_memorized(
    synthetic: torch.Tensor,
    train: torch.Tensor,
    *,
    synthetic_features: torch.Tensor | None = None,
    train_features: torch.Tensor | None = None,
    reference_features: torch.Tensor | None = None,
    reference_distance: torch.Tensor | None = None,
    ssim_threshold: float = 0.95,
    ratio_threshold: float = 0.5,
    reference_percentile: float = 5.0,
    max_pairs: int = 2_000_000,
    device: torch.device | str = "cpu",
) -> MemorizationResult:
    """Flag synthetic images that copy a training image (the rule is in the module docstring;
    the default thresholds are those of ``MemorizationParams``).

    ``reference_features`` are features of genuinely new real images (the real test part);
    without them (or with fewer than two) the leave-one-out nearest-neighbour distances
    within the training set stand in. ``reference_distance`` gives those nearest-neighbour
    distances of new real images directly instead. Without features only the SSIM rule
    applies.
    """
    import torch

    nn_ssim, nn_idx = nearest_ssim(synthetic, train, max_pairs=max_pairs, device=device)
    memorized = nn_ssim >= ssim_threshold
    dist = dist_idx = ref = ratio = None
    threshold = None
    if synthetic_features is not None and train_features is not None and len(train_features):
        sf, tf = synthetic_features.double(), train_features.double()
        d = torch.cdist(sf, tf, compute_mode=EXACT_DISTANCES)
        dist, dist_idx = d.min(dim=1)
        if reference_distance is not None and reference_distance.numel() >= 1:
            ref = reference_distance.double()
        elif reference_features is not None and reference_features.shape[0] >= 2:
            ref = nearest_distance(reference_features.double(), tf)
        elif tf.shape[0] >= 2:
            dd = torch.cdist(tf, tf, compute_mode=EXACT_DISTANCES)
            dd.fill_diagonal_(math.inf)
            ref = dd.min(dim=1).values
        if ref is not None and len(ref):
            typical = float(ref.median())
            threshold = ratio_threshold * float(torch.quantile(ref, reference_percentile / 100))
            ratio = dist / typical if typical > 0 else torch.full_like(dist, math.inf)
            ratio = torch.where(dist == 0, torch.zeros_like(dist), ratio)
            memorized = memorized | (dist < threshold) | (dist == 0)
    return MemorizationResult(
        nn_ssim=nn_ssim,
        nn_ssim_index=nn_idx,
        nn_distance=dist,
        nn_distance_index=dist_idx,
        reference_distance=ref,
        ratio=ratio,
        distance_threshold=threshold,
        memorized=memorized,
    )


def nearest_distance(features: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Each row of ``features``' exact Euclidean distance to its nearest row of ``pool``."""
    import torch

    return torch.cdist(features, pool, compute_mode=EXACT_DISTANCES).min(dim=1).values
