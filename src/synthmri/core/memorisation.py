"""Memorisation: how close synthetic images sit to the real training images.

Two things live here, both pure computation on tensors (no plugin code):

- the nearest-neighbour search and the copy rule the ``privacy`` and ``image_quality``
  evaluators use (``nearest_ssim``, ``find_memorized``, ``nearest_distance``; the evaluators'
  ``_common`` re-exports them);
- the **memorisation guard** every generator entry of a recipe gets (``memorisation:
  {action: report | reject, quantile: 0.05}``): for each synthetic image its nearest real
  TRAINING image by SSIM (the privacy evaluator's pixel similarity; distance = 1 - SSIM),
  against the same distance of each real VALIDATION image (the baseline: how close a new
  image of the same population comes to the training set). A sample closer to a training
  image than the validation images' ``quantile``-th percentile is "closer than real"; for a
  generator that makes new images about ``quantile`` of its samples are, and a much larger
  share means it copies. ``reject`` drops those samples (the pipeline draws more, a few
  rounds at most, and says how many it dropped). ``check_memorisation`` computes it,
  ``memorisation_row`` gives the ``metrics.json`` row and ``memorisation_figure`` the
  histogram.

Importing this module loads no torch: it is imported inside the functions that use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

    from synthmri.core.interfaces import ImageSet
    from synthmri.core.training import RunContext

__all__ = [
    "EXACT_DISTANCES",
    "MemorisationCheck",
    "MemorisationGuard",
    "MemorizationResult",
    "baseline_distances",
    "check_memorisation",
    "find_memorized",
    "guard_class",
    "guard_samples",
    "memorisation_figure",
    "memorisation_row",
    "nearest_distance",
    "nearest_ssim",
    "ssim_window",
]

EXACT_DISTANCES = "donot_use_mm_for_euclid_dist"  # torch.cdist mode: exact zeros for copies


# ----------------------------------------------------------------------------- nearest images


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
    chunk_elements: int = 1 << 19,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image, the highest SSIM to any pool image and that image's index.

    Images ``[N, C, H, W]`` in [0, 1] of one size; SSIM as MONAI's ``SSIMMetric`` (Gaussian
    window ``win``, sigma 1.5, data range 1, valid filtering, mean over the map and
    channels). Vectorised over pairs in chunks of about ``chunk_elements`` pixels (small
    chunks stay in the CPU's caches: 2^19 was both faster and ~400 MB lighter than 2^23 at
    64 and 128 px). When ``len(query) * len(pool)`` exceeds
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
    nn_aligned: torch.Tensor | None = None  # [N] aligned similarity to the nearest by it
    nn_aligned_index: torch.Tensor | None = None  # [N]

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
    aligned_threshold: float = 2.0,
    device: torch.device | str = "cpu",
) -> MemorizationResult:
    """Flag synthetic images that copy a training image (the rule is in the module docstring;
    the default thresholds are those of ``MemorizationParams``).

    ``reference_features`` are features of genuinely new real images (the real test part);
    without them (or with fewer than two) the leave-one-out nearest-neighbour distances
    within the training set stand in. ``reference_distance`` gives those nearest-neighbour
    distances of new real images directly instead. Without features only the SSIM rule
    applies. ``aligned_threshold`` (``<= 1``; default off): also a copy when the loader's
    duplicate search would join the image with a training image (``nearest_aligned``:
    shifted, turned, zoomed or mirrored, correlated inside the head).
    """
    import torch

    nn_ssim, nn_idx = nearest_ssim(synthetic, train, max_pairs=max_pairs, device=device)
    memorized = nn_ssim >= ssim_threshold
    aligned = aligned_idx = None
    if aligned_threshold <= 1.0:
        from synthmri.core.data.duplicates import nearest_aligned

        aligned, aligned_idx = nearest_aligned(synthetic.cpu(), train.cpu())
        memorized = memorized | (aligned >= aligned_threshold - 1e-9)
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
        nn_aligned=aligned,
        nn_aligned_index=aligned_idx,
    )


def nearest_distance(features: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Each row of ``features``' exact Euclidean distance to its nearest row of ``pool``."""
    import torch

    return torch.cdist(features, pool, compute_mode=EXACT_DISTANCES).min(dim=1).values


# ----------------------------------------------------------------------------- the guard


class MemorisationGuard(BaseModel):
    """A recipe generator entry's memorisation guard (``memorisation:`` in the entry)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["report", "reject", "off"] = Field(
        "report",
        description="report: record the figures; reject: also drop samples closer to a "
        "training image than the validation baseline (and draw more); off: skip the check",
    )
    quantile: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="the baseline: this quantile of the real validation images' "
        "nearest-training distances (1 - SSIM)",
    )
    max_rounds: int = Field(
        4, ge=1, description="reject: sampling rounds at most (the first included)"
    )
    max_pairs: int = Field(
        2_000_000,
        ge=1,
        description="most (sample, training image) pairs compared by SSIM; above it, each "
        "sample is compared with its nearest training images by pixel L2",
    )


@dataclass
class MemorisationCheck:
    """Nearest training images of samples and of the real validation images (the baseline)."""

    distance: torch.Tensor
    """[N] per sample: 1 - SSIM to its nearest training image."""
    index: torch.Tensor
    """[N] that training image's index."""
    baseline: torch.Tensor
    """[M] per real validation image: 1 - SSIM to its nearest training image."""
    quantile: float
    threshold: float
    """``quantile`` of ``baseline``: samples below it are closer than real."""

    @property
    def closer(self) -> torch.Tensor:
        """[N] bool: closer to a training image than the baseline allows."""
        return self.distance < self.threshold

    @property
    def closer_fraction(self) -> float:
        """Share of the samples closer than the baseline (about ``quantile`` when none copy)."""
        n = self.distance.numel()
        return float(self.closer.float().mean()) if n else 0.0


def check_memorisation(
    synthetic: torch.Tensor,
    train: torch.Tensor,
    val: torch.Tensor,
    quantile: float = 0.05,
    *,
    baseline: torch.Tensor | None = None,
    max_pairs: int = 2_000_000,
    device: torch.device | str = "cpu",
) -> MemorisationCheck:
    """Each sample's nearest training image (1 - SSIM, as ``nearest_ssim``) against the real
    validation images' (the baseline; pass ``baseline`` to reuse one already computed).

    Images ``[N, C, H, W]`` in [0, 1] of the training images' size. Without validation
    images the leave-one-out nearest-neighbour distances within the training set stand in.
    """
    import torch

    if train.shape[0] == 0:
        raise ValueError("no training images to compare with")
    ssim, index = nearest_ssim(synthetic, train, max_pairs=max_pairs, device=device)
    if baseline is None:
        baseline = baseline_distances(train, val, max_pairs=max_pairs, device=device)
    threshold = float(torch.quantile(baseline.double(), quantile)) if baseline.numel() else 0.0
    return MemorisationCheck(1.0 - ssim, index, baseline, quantile, threshold)


def baseline_distances(
    train: torch.Tensor,
    val: torch.Tensor,
    *,
    max_pairs: int = 2_000_000,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """1 - SSIM of each real validation image to its nearest training image (leave-one-out
    within the training set when there are no validation images)."""
    import torch

    if val.shape[0]:
        return 1.0 - nearest_ssim(val, train, max_pairs=max_pairs, device=device)[0]
    if train.shape[0] < 2:
        return torch.empty(0)
    out = []
    for i in range(train.shape[0]):  # leave-one-out: a few hundred images at most here
        rest = torch.cat([train[:i], train[i + 1 :]])
        out.append(1.0 - nearest_ssim(train[i : i + 1], rest, max_pairs=max_pairs)[0])
    return torch.cat(out)


def memorisation_row(
    generator: str, cls: str, check: MemorisationCheck, *, action: str, **extra: Any
) -> dict[str, Any]:
    """The ``memorisation`` row of ``metrics.json`` for one generator and class."""
    import torch

    def num(x: Any) -> float | None:
        v = float(x)
        return round(v, 6) if math.isfinite(v) else None

    d, b = check.distance.double(), check.baseline.double()
    empty = torch.tensor([math.nan], dtype=torch.float64)
    return {
        "generator": generator,
        "class": cls,
        "action": action,
        "n_samples": int(d.numel()),
        "n_val": int(b.numel()),
        "quantile": check.quantile,
        "threshold_distance": num(check.threshold),
        "closer_fraction": num(check.closer_fraction),
        "nn_distance_median": num((d if d.numel() else empty).median()),
        "nn_distance_min": num((d if d.numel() else empty).min()),
        "val_nn_distance_median": num((b if b.numel() else empty).median()),
        **extra,
    }


def memorisation_figure(checks: dict[str, MemorisationCheck], label: str, run: RunContext) -> None:
    """A histogram per class of the samples' and the validation images' nearest-training
    distances, the baseline threshold marked; saved through ``run.save_figure``."""
    if run.out_dir is None or not checks:
        return
    from synthmri.core.artifacts import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(checks), figsize=(3.6 * len(checks), 2.8), squeeze=False)
    for ax, (cls, check) in zip(axes[0], checks.items(), strict=True):
        d, b = check.distance.double().numpy(), check.baseline.double().numpy()
        top = max([0.05, *d.tolist(), *b.tolist()])
        bins = [top * i / 30 for i in range(31)]
        if len(d):  # a class filter may have kept none
            ax.hist(d, bins=bins, density=True, alpha=0.6, label=f"{label} ({len(d)})")
        if len(b):
            ax.hist(b, bins=bins, density=True, alpha=0.6, label=f"real val ({len(b)})")
        ax.axvline(check.threshold, color="red", lw=1, ls="--")
        ax.set_title(f"{cls}: {check.closer_fraction:.1%} closer than the val "
                     f"{check.quantile:g} quantile", fontsize=8)  # fmt: skip
        ax.set_xlabel("1 - SSIM to the nearest real training image", fontsize=8)
        ax.legend(fontsize=7)
    run.save_figure(
        fig,
        "memorisation",
        caption=f"Memorisation guard of {label}: per class, how close each synthetic image "
        "comes to its nearest real training image (1 - SSIM), beside the same for the real "
        "validation images; the dashed line is the validation images' quantile. Look for: "
        "synthetic mass left of the line (well over the quantile's share) or at 0: copies.",
    )


def guard_samples(
    draw: Callable[[int], ImageSet],
    n: int,
    train: torch.Tensor,
    baseline: torch.Tensor,
    guard: MemorisationGuard,
    device: torch.device | str = "cpu",
) -> tuple[ImageSet, MemorisationCheck, dict[str, int]]:
    """Draw ``n`` samples through ``draw(round)`` and check them against ``train`` (images
    ``[M, C, H, W]``) with the validation ``baseline`` (``baseline_distances``).

    ``report``: one round, every sample kept. ``reject``: samples closer than the baseline
    are dropped and ``draw`` is called again (round 1, 2, ...) until ``n`` are kept or
    ``guard.max_rounds`` rounds are done; the set may then be short. Returns the kept set
    (at most ``n``), the check over every sample drawn, and ``n_drawn``, ``n_rejected``,
    ``rounds``.
    """
    import torch

    kept: list[ImageSet] = []
    checks: list[MemorisationCheck] = []
    n_kept = rounds = 0
    for r in range(guard.max_rounds if guard.action == "reject" else 1):
        rounds = r + 1
        s = draw(r)
        check = check_memorisation(
            _at_size(s.images, train.shape[-1]),
            train,
            train[:0],
            guard.quantile,
            baseline=baseline,
            max_pairs=guard.max_pairs,
            device=device,
        )
        checks.append(check)
        if guard.action != "reject":
            kept.append(s)
            break
        ok = ~check.closer
        kept.append(s.subset(ok))
        n_kept += int(ok.sum())
        if n_kept >= n:
            break
    first = checks[0]
    total = MemorisationCheck(
        torch.cat([c.distance for c in checks]),
        torch.cat([c.index for c in checks]),
        first.baseline,
        first.quantile,
        first.threshold,
    )
    out = kept[0] if len(kept) == 1 else kept[0].concat(kept)
    if len(out) > n:
        out = out.subset(list(range(n)))
    n_drawn = int(total.distance.numel())
    n_rejected = n_drawn - sum(len(k) for k in kept) if guard.action == "reject" else 0
    return out, total, {"n_drawn": n_drawn, "n_rejected": n_rejected, "rounds": rounds}


def _at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` resized (bilinear, antialiased) to ``size`` px when they differ."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.float()
    import torch.nn.functional as F

    return F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)


def guard_class(
    draw: Callable[[int], ImageSet],
    n: int,
    generator: str,
    cls: str,
    guard: tuple[MemorisationGuard, ImageSet, torch.Tensor],
    run: RunContext | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> tuple[ImageSet, MemorisationCheck]:
    """One class of one generator through the guard (``guard``: the setting, the real train
    part and the validation baseline): ``guard_samples``, its row appended to ``rows``, and
    notes through ``run`` when the samples sit much closer to training images than real
    images do (over twice the quantile's share) or a rejecting guard kept fewer than ``n``."""
    setting, train, baseline = guard
    device = run.device if run is not None else "cpu"
    kept, check, info = guard_samples(draw, n, train.images, baseline, setting, device)
    if rows is not None:
        rows.append(
            memorisation_row(generator, cls, check, action=setting.action, n_kept=len(kept), **info)
        )
    if run is None:
        return kept, check
    frac, q = check.closer_fraction, check.quantile
    if frac > 2 * q:
        run.note(
            f"memorisation: {frac:.0%} of {generator}'s {cls} samples sit closer to a real "
            f"training image than {1 - q:.0%} of the real validation images do (about {q:.0%} "
            "expected of new images): it copies training data"
            + (" (those samples were rejected)" if setting.action == "reject" else "")
        )
    if setting.action == "reject" and len(kept) < n:
        run.note(
            f"memorisation: {generator} {cls}: {info['n_rejected']} of {info['n_drawn']} "
            f"samples rejected in {info['rounds']} rounds; {len(kept)} of {n} kept"
        )
    return kept, check
