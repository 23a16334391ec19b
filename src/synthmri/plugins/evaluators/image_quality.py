"""Evaluator ``image_quality``: FID, KID, precision/recall, MS-SSIM diversity, intensities.

Per generator and class, against the REAL TRAIN part of that class:

- FID (Frechet distance of Gaussian fits to the features) and KID (unbiased MMD^2 with the
  cubic polynomial kernel ``(x.y / d + 1)^3``, averaged over random subsets, with its
  standard deviation), each beside its real floor: the same metric between the real train
  and the real TEST part of that class (``fid_real_floor``, ``kid_real_floor``). A
  synthetic FID of 1.4x the floor reads "1.4x as far as new real images are". FID is
  biased upwards for small sets, so by default (``match_floor_size``) the synthetic FID is
  the mean over subsets as large as the real test part (``n_real_floor``): both numbers
  then carry the same bias. KID is unbiased and uses all images.
- Improved precision and recall (Kynkaenniemi et al. 2019; k-NN radii, k = 3) on the same
  features.
- Diversity: mean MS-SSIM of random pairs within the synthetic and within the real images
  (higher = less diverse; a collapsed generator approaches 1).
- ``intensity_wasserstein``: 1-D Wasserstein distance of the pixel values, real train vs
  synthetic.
- ``memorized_fraction``: the ``privacy`` evaluator's rule with its default thresholds
  (``_common.find_memorized``).
- ``class_agreement`` (GAN-test; Shmelkov, Schmid & Alahari, ECCV 2018): the share of the
  class's synthetic images that the domain classifier, trained on the real train part, calls
  that class: do the tumour samples show a tumour the real data taught it to see? Beside it,
  ``class_agreement_real``: the same for the class's real test images (the ceiling). None
  for features that carry no classes (inception, random, an unlabelled train part).
- ``mask_contrast`` (synthetic sets with masks): does an image show a lesion where its mask
  says? Per image with a mask of ``MIN_MASK_PIXELS`` or more, the absolute difference of the
  mean intensity inside the mask and in a 3 px ring around it; the median over the class's
  images, beside the same for the class's real test images (``mask_contrast_real``). A
  mask drawn at a place the image shows nothing scores about what the image's own texture
  gives (about 0.05 on phantoms). None without masks.
- ``tilt_spread``, ``size_spread``, ``brightness_spread``: does the class's synthetic set
  vary in pose, head size and contrast as much as the real train part of the class? Per
  image, ``head_geometry`` finds the head (the largest bright region, holes filled) and
  measures its tilt, area and mean intensity; each spread is the interquartile range over
  the synthetic images divided by that over the real ones (1: the real variety; a generator
  that draws every head alike approaches 0). A faint haze round a generated head that is
  brighter than ``head_geometry``'s level joins the head and widens the tilt and size
  spreads (docs/results.md, quickstart, "The heads' spreads above the generator's haze").

Features come from ``_features`` (``domain`` by default: a classifier trained on the real
train part only). Nothing is fitted on the real test part. When the features are
unavailable (inception weights absent) there are no rows, unless ``require_features`` is
off: then the rows carry the pixel metrics and None for the feature metrics.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from synthmri import hookimpl
from synthmri.core.interfaces import EvalInputs, Evaluator, ImageSet
from synthmri.plugins.evaluators._common import (
    MemorizationParams,
    by_class,
    find_memorized,
    match_size,
    metric_value,
)
from synthmri.plugins.evaluators._features import (
    FeatureExtractor,
    FeatureParams,
    build_extractor,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    from synthmri.core.training import RunContext

__all__ = [
    "FeatureExtractor",
    "FeatureParams",
    "ImageQualityEvaluator",
    "build_extractor",
    "candidate_metrics",
    "floor_metrics",
    "frechet_distance",
    "geometry_spread",
    "head_geometry",
    "intensity_wasserstein",
    "kernel_inception_distance",
    "ms_ssim_diversity",
    "ms_ssim_settings",
    "precision_recall",
    "quality_metrics",
    "trace_term_cov",
    "trace_term_gram",
]

_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


# ----------------------------------------------------------------------------- metrics


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID between two feature sets ``[N, D]``: ``|mu_a - mu_b|^2 + Tr(Sa + Sb - 2 (Sa Sb)^1/2)``.

    Float64 and robust for rank-deficient covariances (fewer images than dimensions). With
    ``A``, ``B`` the centred features over ``sqrt(n - 1)``, ``Tr (Sa Sb)^1/2`` is the nuclear
    norm of ``A B^T`` (an ``Na x Nb`` matrix: cheap when there are fewer images than
    dimensions); otherwise it comes from the eigenvalues of the symmetric PSD matrix
    ``Sa^1/2 Sb Sa^1/2`` (rounding noise below 0 clipped). Both are exact.
    """
    a, b = a.double(), b.double()
    if a.shape[0] < 2 or b.shape[0] < 2:
        return math.nan
    mean_term = float((a.mean(0) - b.mean(0)).pow(2).sum())
    if a.shape[0] * b.shape[0] <= a.shape[1] ** 2:
        value = mean_term + trace_term_gram(a, b)
    else:
        value = mean_term + trace_term_cov(a, b)
    return max(value, 0.0)


def trace_term_gram(a: torch.Tensor, b: torch.Tensor) -> float:
    """``Tr(Sa + Sb - 2 (Sa Sb)^1/2)`` through the nuclear norm of ``A B^T`` (few images)."""
    import torch

    ca = (a - a.mean(0)) / math.sqrt(a.shape[0] - 1)
    cb = (b - b.mean(0)) / math.sqrt(b.shape[0] - 1)
    nuclear = torch.linalg.svdvals(ca @ cb.T).sum()
    return float(ca.pow(2).sum() + cb.pow(2).sum() - 2 * nuclear)


def trace_term_cov(a: torch.Tensor, b: torch.Tensor) -> float:
    """``Tr(Sa + Sb - 2 (Sa Sb)^1/2)`` through the eigenvalues of ``Sa^1/2 Sb Sa^1/2``."""
    import torch

    d = a.shape[1]
    sa, sb = torch.cov(a.T).reshape(d, d), torch.cov(b.T).reshape(d, d)
    w, v = torch.linalg.eigh(sa)
    root_a = (v * w.clamp(min=0).sqrt()) @ v.T
    m = root_a @ sb @ root_a
    ev = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0)
    return float(sa.trace() + sb.trace() - 2 * ev.sqrt().sum())


def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1) ** 3


def _mmd2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _mmd2_unbiased(_poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y))


def _mmd2_unbiased(kxx: torch.Tensor, kyy: torch.Tensor, kxy: torch.Tensor) -> torch.Tensor:
    m, n = kxx.shape[0], kyy.shape[0]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return sxx + syy - 2 * kxy.mean()


def kernel_inception_distance(
    a: torch.Tensor,
    b: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (mean, std) between feature sets: unbiased MMD^2, cubic polynomial kernel.

    ``subsets`` random subsets of ``min(subset_size, len(a), len(b))`` items from each set
    (drawn without replacement within a subset, seeded); with one subset covering both
    sets the value is the plain unbiased MMD^2 (std 0). The kernel matrices are computed
    once and indexed per subset when they fit in memory.
    """
    import torch

    a, b = a.double(), b.double()
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        return math.nan, math.nan
    if m == a.shape[0] == b.shape[0]:
        return float(
            _mmd2_unbiased(_poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b))
        ), 0.0
    g = torch.Generator().manual_seed(seed)
    whole = (a.shape[0] + b.shape[0]) ** 2 <= 16_000_000
    if whole:
        kaa, kbb, kab = _poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)
    values = []
    for _ in range(subsets):
        ia = torch.randperm(a.shape[0], generator=g)[:m]
        ib = torch.randperm(b.shape[0], generator=g)[:m]
        if whole:
            values.append(_mmd2_unbiased(kaa[ia][:, ia], kbb[ib][:, ib], kab[ia][:, ib]))
        else:
            values.append(_mmd2(a[ia], b[ib]))
    t = torch.stack(values)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019) of ``fake`` against ``real``.

    Each set's manifold is the union of balls around its points with radius the distance to
    the point's k-th nearest neighbour in its own set. Precision = share of fake points inside
    the real manifold; recall = share of real points inside the fake manifold.
    """
    import torch

    real, fake = real.double(), fake.double()
    if real.shape[0] <= k or fake.shape[0] <= k:
        return math.nan, math.nan

    def radii(x: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(x, x)
        return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0

    r_real, r_fake = radii(real), radii(fake)
    d = torch.cdist(fake, real)  # [n_fake, n_real]
    precision = (d <= r_real[None, :]).any(dim=1).double().mean()
    recall = (r_fake[None, :] >= d.T).any(dim=1).double().mean()
    return float(precision), float(recall)


def ms_ssim_settings(size: int) -> tuple[int, tuple[float, ...]]:
    """(kernel size, weights) of MS-SSIM that work for images of ``size`` px.

    The most scales (up to 5) for which MONAI's size check passes and the coarsest scale is
    still at least one window wide; the standard weights of those scales, renormalised.
    """
    kernel = 11 if size >= 128 else 7
    for k in (kernel, 5, 3):
        for scales in range(5, 1, -1):
            div = max(1, scales - 1) ** 2
            if size // div > k - 1 and size // 2 ** (scales - 1) >= k:
                w = _MS_SSIM_WEIGHTS[:scales]
                total = sum(w)
                return k, tuple(x / total for x in w)
    raise ValueError(f"images of {size} px are too small for MS-SSIM")


def ms_ssim_diversity(
    images: torch.Tensor, pairs: int = 200, seed: int = 0, device: torch.device | str = "cpu"
) -> float:
    """Mean MS-SSIM of ``pairs`` random pairs of distinct images (fixed seed); higher = less
    diverse. MONAI's ``MultiScaleSSIMMetric`` with a window and scales sized to the images."""
    import torch
    from monai.metrics import MultiScaleSSIMMetric

    n = images.shape[0]
    if n < 2:
        return math.nan
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (pairs,), generator=g)
    j = (i + torch.randint(1, n, (pairs,), generator=g)) % n  # j != i
    kernel, weights = ms_ssim_settings(images.shape[-1])
    metric = MultiScaleSSIMMetric(
        spatial_dims=2, data_range=1.0, kernel_size=kernel, weights=weights, reduction="none"
    )
    x = images.float().clamp(0, 1).to(device)
    values = []
    for s in range(0, pairs, 256):
        values.append(metric(x[i[s : s + 256]], x[j[s : s + 256]]).reshape(-1).cpu())
    return float(torch.cat(values).mean())


def intensity_wasserstein(
    a: torch.Tensor, b: torch.Tensor, max_pixels: int = 200_000, seed: int = 0
) -> float:
    """1-D Wasserstein distance between the pixel values of two image sets (seeded subsample)."""
    import torch
    from scipy.stats import wasserstein_distance

    g = torch.Generator().manual_seed(seed)

    def sample(x: torch.Tensor) -> np.ndarray:
        flat = x.float().reshape(-1)
        if flat.numel() > max_pixels:
            flat = flat[torch.randint(0, flat.numel(), (max_pixels,), generator=g)]
        return flat.numpy()

    if a.numel() == 0 or b.numel() == 0:
        return math.nan
    return float(wasserstein_distance(sample(a), sample(b)))


def _fid_sized(ref: torch.Tensor, cand: torch.Tensor, size: int | None, seed: int) -> float:
    if size is None or size < 2 or size >= cand.shape[0]:
        return frechet_distance(ref, cand)
    import torch

    g = torch.Generator().manual_seed(seed + 17)
    values = [
        frechet_distance(ref, cand[torch.randperm(cand.shape[0], generator=g)[:size]])
        for _ in range(5)
    ]
    return float(sum(values) / len(values))


def floor_metrics(
    reference: torch.Tensor,
    holdout: torch.Tensor,
    *,
    ref_features: torch.Tensor | None,
    holdout_features: torch.Tensor | None,
    ms_ssim_pairs: int = 200,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """The real floors (reference vs other real images of the class) and real diversity."""
    row: dict[str, Any] = {"fid_real_floor": None, "kid_real_floor": None}
    if ref_features is not None and holdout_features is not None and len(holdout_features):
        row["fid_real_floor"] = metric_value(frechet_distance(ref_features, holdout_features))
        kid = kernel_inception_distance(
            ref_features, holdout_features, kid_subsets, kid_subset_size, seed
        )[0]
        row["kid_real_floor"] = metric_value(kid)
    row["ms_ssim_real"] = metric_value(ms_ssim_diversity(reference, ms_ssim_pairs, seed, device))
    return row


def candidate_metrics(
    reference: torch.Tensor,
    candidate: torch.Tensor,
    *,
    ref_features: torch.Tensor | None,
    cand_features: torch.Tensor | None,
    ms_ssim_pairs: int = 200,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k: int = 3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    fid_size: int | None = None,
    ref_geometry: torch.Tensor | None = None,
) -> dict[str, Any]:
    """FID, KID, precision/recall, diversity, intensity distance and geometry spreads of
    ``candidate`` images against ``reference`` real images (feature numbers None without
    features). ``ref_geometry``: ``head_geometry(reference)`` when already computed.

    ``fid_size``: compute the FID as the mean over 5 random subsets of that many candidates
    (when there are more), so that it carries the same small-sample bias as a real floor
    computed from that many real images.
    """
    row: dict[str, Any] = dict.fromkeys(("fid", "kid", "kid_std", "precision", "recall"))
    if ref_features is not None and cand_features is not None:
        row["fid"] = metric_value(_fid_sized(ref_features, cand_features, fid_size, seed))
        kid, kid_std = kernel_inception_distance(
            ref_features, cand_features, kid_subsets, kid_subset_size, seed
        )
        row["kid"], row["kid_std"] = metric_value(kid), metric_value(kid_std)
        p, r = precision_recall(ref_features, cand_features, k)
        row["precision"], row["recall"] = metric_value(p), metric_value(r)
    row["ms_ssim_synthetic"] = metric_value(
        ms_ssim_diversity(candidate, ms_ssim_pairs, seed, device)
    )
    row["intensity_wasserstein"] = metric_value(
        intensity_wasserstein(reference, candidate, seed=seed)
    )
    if ref_geometry is None:
        ref_geometry = head_geometry(reference)
    row.update(geometry_spread(ref_geometry, head_geometry(candidate)))
    return row


def quality_metrics(
    reference: torch.Tensor,
    candidate: torch.Tensor,
    holdout: torch.Tensor,
    *,
    ref_features: torch.Tensor | None,
    cand_features: torch.Tensor | None,
    holdout_features: torch.Tensor | None,
    ms_ssim_pairs: int = 200,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k: int = 3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    match_floor_size: bool = True,
) -> dict[str, Any]:
    """``candidate_metrics`` and ``floor_metrics`` in one dict.

    ``holdout`` (other real images of the same class) gives the real floors; feature-based
    numbers are None without features (inception weights absent). Undefined values (too
    few images) are None.
    """
    common = {
        "ms_ssim_pairs": ms_ssim_pairs,
        "kid_subsets": kid_subsets,
        "kid_subset_size": kid_subset_size,
        "seed": seed,
        "device": device,
    }
    row = candidate_metrics(
        reference,
        candidate,
        ref_features=ref_features,
        cand_features=cand_features,
        k=k,
        fid_size=len(holdout) if match_floor_size and len(holdout) >= 2 else None,
        **common,
    )
    row.update(
        floor_metrics(
            reference,
            holdout,
            ref_features=ref_features,
            holdout_features=holdout_features,
            **common,
        )
    )
    return row


# ----------------------------------------------------------------------------- evaluator


class ImageQualityEvaluator(Evaluator):
    """FID/KID with real floors, precision/recall, MS-SSIM diversity, memorisation."""

    name: ClassVar[str] = "image_quality"
    description: ClassVar[str] = (
        "FID/KID beside the real floor, precision/recall, MS-SSIM diversity, memorisation"
    )
    requires: ClassVar[tuple[str, ...]] = ("synthetic",)

    class Params(FeatureParams):
        """Params of the image quality evaluator."""

        ms_ssim_pairs: int = Field(200, ge=1, description="random pairs for MS-SSIM diversity")
        kid_subsets: int = Field(100, ge=1, description="random subsets KID is averaged over")
        kid_subset_size: int = Field(1000, ge=2, description="items per KID subset (at most)")
        k: int = Field(3, ge=1, description="k of the k-NN radii of precision and recall")
        match_floor_size: bool = Field(
            True,
            description="FID of the synthetic images on subsets the size of the real test part "
            "of the class (mean of 5), so it has the same small-sample bias as its real floor",
        )
        require_features: bool = Field(
            True,
            description="no rows when the features are unavailable (inception weights absent); "
            "false: rows of the pixel metrics, the feature metrics None",
        )

    def evaluate(self, inputs: EvalInputs, run: RunContext) -> dict[str, list[dict[str, Any]]]:
        """One row per generator and class (section ``image_quality``)."""
        p = self.params
        train, test = inputs.train, inputs.test
        extractor = build_extractor(p, train, run, seed=inputs.seed)
        if extractor is None and p.require_features:
            run.note(f"image_quality: no rows ({p.features} features unavailable)")
            return {"image_quality": []}
        train_f = _features(extractor, train.images)
        test_f, test_pred = _features_and_classes(extractor, test.images)
        _note_one_class(extractor, test, test_pred, run)
        rule = MemorizationParams().rule()
        common = {
            "ms_ssim_pairs": p.ms_ssim_pairs,
            "kid_subsets": p.kid_subsets,
            "kid_subset_size": p.kid_subset_size,
            "seed": inputs.seed,
            "device": run.device,
        }
        floors: dict[str, dict[str, Any]] = {}
        geometry: dict[str, torch.Tensor] = {}  # the real train part's heads, per class
        rows: list[dict[str, Any]] = []
        for gen, syn in inputs.synthetic.items():
            if len(syn) == 0:
                continue
            syn_images = match_size(syn.images, train.size)
            syn_f, syn_pred = _features_and_classes(extractor, syn_images)
            mem = find_memorized(
                syn_images,
                train.images,
                synthetic_features=syn_f,
                train_features=train_f,
                reference_features=test_f,
                **rule,
                device=run.device,
            )
            for cname, sidx in by_class(syn):
                ridx = _same_class(train, cname)
                if cname not in floors:
                    hidx = _same_class(test, cname)
                    floors[cname] = floor_metrics(
                        train.images[ridx],
                        test.images[hidx],
                        ref_features=_take(train_f, ridx),
                        holdout_features=_take(test_f, hidx),
                        **common,
                    )
                    floors[cname]["n_real_floor"] = len(hidx)
                    floors[cname]["class_agreement_real"] = _agreement(
                        extractor, _take(test_pred, hidx), cname
                    )
                    floors[cname]["mask_contrast_real"] = mask_contrast(
                        test.images[hidx], _take(test.masks, hidx)
                    )
                    geometry[cname] = head_geometry(train.images[ridx])
                metrics = candidate_metrics(
                    train.images[ridx],
                    syn_images[sidx],
                    ref_features=_take(train_f, ridx),
                    cand_features=_take(syn_f, sidx),
                    k=p.k,
                    fid_size=floors[cname]["n_real_floor"] if p.match_floor_size else None,
                    ref_geometry=geometry[cname],
                    **common,
                )
                metrics.update(floors[cname])
                metrics["class_agreement"] = _agreement(extractor, _take(syn_pred, sidx), cname)
                metrics["mask_contrast"] = mask_contrast(syn_images[sidx], _take(syn.masks, sidx))
                name = extractor.name if extractor is not None else "none"
                rows.append(
                    _row(gen, cname, name, metrics, mem.memorized[sidx], len(sidx), len(ridx))
                )
        return {"image_quality": rows}


def _features(extractor: FeatureExtractor | None, images: torch.Tensor) -> torch.Tensor | None:
    return None if extractor is None else extractor(images)


def _take(features: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if features is None else features[index]


def _features_and_classes(
    extractor: FeatureExtractor | None, images: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Features and the domain classifier's class indices (None where there are none)."""
    return (None, None) if extractor is None else extractor.features_and_classes(images)


def _note_one_class(
    extractor: FeatureExtractor | None,
    test: ImageSet,
    predicted: torch.Tensor | None,
    run: RunContext,
) -> None:
    """Say so when the domain classifier puts every real test image in one class."""
    if extractor is None or predicted is None or test.labels is None:
        return
    if test.labels.unique().numel() > 1 and predicted.unique().numel() == 1:
        run.note(
            f"image_quality: the domain classifier calls every real test image "
            f"{extractor.classes[int(predicted[0])]!r}: its features, and so FID, precision, "
            "recall and class_agreement, say little here (too few real training images?)"
        )


def _agreement(
    extractor: FeatureExtractor | None, predicted: torch.Tensor | None, cname: str
) -> float | None:
    """Share of ``predicted`` that names class ``cname`` (None when it cannot be told)."""
    if extractor is None or predicted is None or len(predicted) == 0:
        return None
    k = _class_index(extractor.classes, cname)
    return None if k is None else metric_value(float((predicted == k).float().mean()))


def _row(
    gen: str,
    cname: str,
    features: str,
    metrics: dict[str, Any],
    memorized: torch.Tensor,
    n_syn: int,
    n_real: int,
) -> dict[str, Any]:
    keys = ("fid", "kid", "kid_std", "fid_real_floor", "kid_real_floor")
    row: dict[str, Any] = {"generator": gen, "class": cname}
    row.update({k: metrics[k] for k in keys})
    row["features"] = features
    for key in (
        "ms_ssim_synthetic",
        "ms_ssim_real",
        "precision",
        "recall",
        "class_agreement",
        "class_agreement_real",
        "mask_contrast",
        "mask_contrast_real",
        "intensity_wasserstein",
        *GEOMETRY_KEYS,
    ):
        row[key] = metrics.get(key)
    row["memorized_fraction"] = metric_value(float(memorized.float().mean())) if n_syn else None
    row["n_synthetic"], row["n_real"] = n_syn, n_real
    row["n_real_floor"] = metrics.get("n_real_floor")
    return row


MIN_MASK_PIXELS = 4
"""Masks smaller than this (specks) are left out of ``mask_contrast``."""


def mask_contrast(images: torch.Tensor, masks: torch.Tensor | None, ring: int = 3) -> float | None:
    """Median over the images with a mask of ``MIN_MASK_PIXELS`` or more of |mean inside
    the mask - mean in a ``ring`` px band around it| (images in [0, 1]); None when no image
    has such a mask."""
    if masks is None:
        return None
    import torch
    import torch.nn.functional as F

    m = (match_size(masks.float(), images.shape[-1]) > 0.5).float()
    keep = m.sum(dim=(1, 2, 3)) >= MIN_MASK_PIXELS
    if not bool(keep.any()):
        return None
    x, m = images[keep].float(), m[keep]
    band = F.max_pool2d(m, 2 * ring + 1, 1, ring) - m
    inside = (x * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3))
    around = (x * band).sum(dim=(1, 2, 3)) / band.sum(dim=(1, 2, 3)).clamp(min=1)
    return metric_value(float(torch.quantile((inside - around).abs(), 0.5)))


GEOMETRY_KEYS = ("tilt_spread", "size_spread", "brightness_spread")
"""The ``geometry_spread`` keys: the columns of ``head_geometry``, in order."""


def head_geometry(images: torch.Tensor, level: float = 0.15) -> torch.Tensor:
    """Per image, ``[N, 3]``: the head's tilt (degrees of its long axis from the vertical,
    in [-90, 90)), its area (share of the pixels) and its mean intensity.

    The head is the largest connected region brighter than ``level`` x the image's 99th
    percentile, its holes filled (``scipy.ndimage``); the tilt comes from the region's
    second moments. A row of NaN for an image without such a region.
    """
    import numpy as np
    import torch
    from scipy import ndimage

    x = images.float().mean(dim=1).cpu().numpy()
    out = np.full((len(x), 3), np.nan)
    for i, img in enumerate(x):
        top = np.quantile(img, 0.99)
        labels, n = ndimage.label(img > level * top) if top > 0 else (None, 0)
        if n == 0:
            continue
        largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        head = ndimage.binary_fill_holes(labels == largest)
        ys, xs = np.nonzero(head)
        cov = np.cov(np.stack([xs, ys]).astype(float)) if len(xs) > 1 else np.zeros((2, 2))
        axis = 0.5 * math.degrees(math.atan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1]))
        out[i] = (axis % 180.0 - 90.0, head.mean(), img[head].mean())  # tilt from the vertical
    return torch.from_numpy(out)


def geometry_spread(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, Any]:
    """``GEOMETRY_KEYS``: the interquartile range of each column of ``candidate``'s
    ``head_geometry`` divided by that of ``reference``'s (None where either has fewer than
    four heads or the reference does not vary). Quartiles, not standard deviations: a few
    malformed heads would widen a standard deviation and pass for variety."""

    def iqr(v: torch.Tensor) -> float | None:
        v = v[~v.isnan()]
        return float(v.quantile(0.75) - v.quantile(0.25)) if len(v) >= 4 else None

    row: dict[str, Any] = {}
    for j, key in enumerate(GEOMETRY_KEYS):
        r, c = iqr(reference[:, j]), iqr(candidate[:, j])
        row[key] = metric_value(c / r) if r and c is not None else None
    return row


def _same_class(data: ImageSet, cname: str) -> torch.Tensor:
    """Indices of ``data`` in class ``cname`` (all items when unlabelled or class unknown)."""
    import torch

    k = None if data.labels is None or cname == "all" else _class_index(data.class_names, cname)
    if k is None:
        return torch.arange(len(data))
    return (data.labels == k).nonzero().reshape(-1)


def _class_index(names: list[str], cname: str) -> int | None:
    """Index of ``cname`` in ``names``, ignoring case (None when absent)."""
    lowered = [c.lower() for c in names]
    return lowered.index(cname.lower()) if cname.lower() in lowered else None


@hookimpl
def synthmri_register_evaluators(register: Any) -> None:
    """Register the image quality evaluator."""
    register(ImageQualityEvaluator)
