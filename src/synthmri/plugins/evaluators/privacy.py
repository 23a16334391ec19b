"""Evaluator ``privacy``: is a synthetic image a copy of a real training image?

For every synthetic image the evaluator finds its nearest real TRAINING image twice: by
SSIM (pixels) and by feature distance (the extractor of ``_features``). A genuinely new
real image is the yardstick: the real TEST images' nearest-neighbour distances to the
training set say how close a new image of the same population typically comes.

The rule (``find_memorized``): a synthetic image is a memorised copy when

- its SSIM to the nearest training image is >= ``ssim_threshold`` (0.95), OR
- its feature distance to the nearest training image is below ``ratio_threshold`` (0.5)
  times the ``reference_percentile``-th (5th) percentile of the real test images'
  nearest-training distances, i.e. it is far closer to a training image than almost any
  new real image ever is.

``nn_distance_ratio`` is the feature distance divided by the MEDIAN real-test distance
(1 = as close as a typical new real image; near 0 = a copy). A generator whose memorised
fraction exceeds ``warn_fraction`` gets a loud warning note. ``image_quality`` reports the
same ``memorized_fraction`` by calling ``find_memorized``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from synthmri import hookimpl
from synthmri.core.interfaces import EvalInputs, Evaluator, ImageSet
from synthmri.core.training import RunContext
from synthmri.plugins.evaluators._features import FeatureParams, build_extractor

__all__ = [
    "MemorizationResult",
    "PrivacyEvaluator",
    "find_memorized",
    "nearest_ssim",
    "ssim_window",
]

_EXACT = "donot_use_mm_for_euclid_dist"  # exact zeros for exact copies


def ssim_window(size: int) -> int:
    """The Gaussian SSIM window for images of ``size`` px (11 from 128 px, else 7; odd)."""
    if size >= 128:
        return 11
    return max(3, min(7, (size // 4) | 1))


def _gauss1d(win: int, sigma: float = 1.5) -> torch.Tensor:
    d = torch.arange(win, dtype=torch.float32) - (win - 1) / 2
    g = torch.exp(-(d**2) / (2 * sigma**2))
    return g / g.sum()


def _band(n: int, g: torch.Tensor) -> torch.Tensor:
    """``[n, n - w + 1]`` matrix whose columns are the window ``g`` slid along ``n`` pixels."""
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


@torch.no_grad()
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
    """Flag synthetic images that copy a training image (the rule is in the module docstring).

    ``reference_features`` are features of genuinely new real images (the real test part);
    without them (or with fewer than two) the leave-one-out nearest-neighbour distances
    within the training set stand in. ``reference_distance`` gives those nearest-neighbour
    distances of new real images directly instead. Without features only the SSIM rule
    applies.
    """
    nn_ssim, nn_idx = nearest_ssim(synthetic, train, max_pairs=max_pairs, device=device)
    memorized = nn_ssim >= ssim_threshold
    dist = dist_idx = ref = ratio = None
    threshold = None
    if synthetic_features is not None and train_features is not None and len(train_features):
        sf, tf = synthetic_features.double(), train_features.double()
        d = torch.cdist(sf, tf, compute_mode=_EXACT)
        dist, dist_idx = d.min(dim=1)
        if reference_distance is not None and reference_distance.numel() >= 1:
            ref = reference_distance.double()
        elif reference_features is not None and reference_features.shape[0] >= 2:
            ref = (
                torch.cdist(reference_features.double(), tf, compute_mode=_EXACT).min(dim=1).values
            )
        elif tf.shape[0] >= 2:
            dd = torch.cdist(tf, tf, compute_mode=_EXACT)
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


def memorization_inputs(
    inputs: EvalInputs, params: FeatureParams, run: RunContext
) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]:
    """The extractor (or None), and the features of the real train and test parts."""
    extractor = build_extractor(params, inputs.train, run, seed=inputs.seed)
    if extractor is None:
        return None, None, None
    return extractor, extractor(inputs.train.images), extractor(inputs.test.images)


class PrivacyEvaluator(Evaluator):
    """Nearest real training image of every synthetic image; memorised copies flagged."""

    name: ClassVar[str] = "privacy"
    description: ClassVar[str] = (
        "nearest real training image per synthetic image (SSIM, features); copies flagged"
    )
    requires: ClassVar[tuple[str, ...]] = ("synthetic",)

    class Params(FeatureParams):
        """Params of the privacy evaluator."""

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
        warn_fraction: float = Field(
            0.05,
            ge=0,
            le=1,
            description="warn when more than this share of a generator's images are copies",
        )
        max_pairs: int = Field(
            2_000_000,
            ge=1,
            description="most (synthetic, training) pairs compared by SSIM; above "
            "it, each synthetic image is compared with its nearest training images by pixel L2",
        )
        figure_pairs: int = Field(8, ge=0, description="closest pairs shown per generator")

    def evaluate(self, inputs: EvalInputs, run: RunContext) -> dict[str, list[dict[str, Any]]]:
        """One row per generator and class; a figure of the closest pairs per generator."""
        p = self.params
        extractor, train_f, test_f = memorization_inputs(inputs, p, run)
        if extractor is None:
            run.note("privacy: no features, so only the SSIM rule flags copies")
        train = inputs.train
        rows: list[dict[str, Any]] = []
        for gen, syn in inputs.synthetic.items():
            if len(syn) == 0:
                continue
            syn_images = match_size(syn.images, train.size)
            res = find_memorized(
                syn_images,
                train.images,
                synthetic_features=None if extractor is None else extractor(syn_images),
                train_features=train_f,
                reference_features=test_f,
                ssim_threshold=p.ssim_threshold,
                ratio_threshold=p.ratio_threshold,
                reference_percentile=p.reference_percentile,
                max_pairs=p.max_pairs,
                device=run.device,
            )
            for cname, idx in by_class(syn):
                sel = res.memorized[idx]
                ratio = None if res.ratio is None else _num(res.ratio[idx].median())
                rows.append(
                    {
                        "generator": gen,
                        "class": cname,
                        "memorized_fraction": _num(sel.float().mean()),
                        "nn_ssim_mean": _num(res.nn_ssim[idx].mean()),
                        "nn_ssim_max": _num(res.nn_ssim[idx].max()),
                        "nn_distance_ratio_median": ratio,
                        "n_synthetic": len(idx),
                        "features": extractor.name if extractor is not None else "none",
                    }
                )
            frac = res.fraction
            run.log(generator=gen, memorized_fraction=frac)
            if frac > p.warn_fraction:
                run.note(
                    f"WARNING: generator {gen!r} memorises its training data: {frac:.0%} of its "
                    f"{len(syn)} synthetic images are near-copies of real training images "
                    f"(SSIM >= {p.ssim_threshold:g} or feature distance < {p.ratio_threshold:g}"
                    f" x the {p.reference_percentile:g}th percentile of real test images); do "
                    "not share this set as anonymous data"
                )
            if p.figure_pairs:
                closest_pairs_figure(syn_images, train.images, res, gen, run, p.figure_pairs)
        return {"privacy": rows}


def match_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` resized (bilinear, antialiased) to ``size`` px when they differ."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.float()
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)


def by_class(data: ImageSet) -> list[tuple[str, torch.Tensor]]:
    """(class name, indices) per class present; ("all", everything) when unlabelled."""
    if data.labels is None:
        return [("all", torch.arange(len(data)))]
    out = []
    for k in torch.unique(data.labels).tolist():
        name = data.class_names[k] if k < len(data.class_names) else str(k)
        out.append((name, (data.labels == k).nonzero().reshape(-1)))
    return out


def _num(x: torch.Tensor | float) -> float | None:
    v = float(x)
    return round(v, 6) if math.isfinite(v) else None


def closest_pairs_figure(
    synthetic: torch.Tensor,
    train: torch.Tensor,
    res: MemorizationResult,
    label: str,
    run: RunContext,
    n: int = 8,
) -> None:
    """Save the ``n`` synthetic images closest to a training image (by SSIM) beside it."""
    if run.out_dir is None or len(res.nn_ssim) == 0:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = res.nn_ssim.argsort(descending=True)[:n].tolist()
    fig, axes = plt.subplots(2, len(order), figsize=(1.6 * len(order), 3.6), squeeze=False)
    for j, i in enumerate(order):
        t = int(res.nn_ssim_index[i])
        for r, img in enumerate((synthetic[i], train[t])):
            ax = axes[r, j]
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        flag = " COPY" if bool(res.memorized[i]) else ""
        axes[0, j].set_title(
            f"SSIM {float(res.nn_ssim[i]):.3f}{flag}", fontsize=7, color="red" if flag else "black"
        )
    axes[0, 0].set_ylabel(label, fontsize=8)
    axes[1, 0].set_ylabel("nearest real train", fontsize=8)
    fig.suptitle(f"privacy: {label} images closest to a real training image", fontsize=9)
    run.save_figure(fig, f"privacy_closest_pairs_{label}")


@hookimpl
def synthmri_register_evaluators(register: Any) -> None:
    """Register the privacy evaluator."""
    register(PrivacyEvaluator)
