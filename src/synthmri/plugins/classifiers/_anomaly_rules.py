"""The decision rules of the reconstruction-based anomaly classifiers (``_anomaly.py``).

What turns an error map into a tumour score, whatever reconstructs the slices: the params
of the rules and of calibration (``AnomalyParams``), the four methods' clustering
(``dbscan_clusters``, ``kmeans_clusters``, ``fit_global_centroids``, ``global_distances``)
and small helpers; the score threshold of a calibration mode is
``synthmri.core.operating_point``'s. The
methods themselves are described in ``synthmri.plugins.classifiers.vae_anomaly``.

Importing this module loads no torch (numpy and pydantic only).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from pydantic import Field

from synthmri.core.interfaces import StrictParams
from synthmri.core.operating_point import (
    Calibration,
    HealthyClass,
    TargetSensitivity,
    TargetSpecificity,
    threshold_for,
)

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "METHODS",
    "AnomalyParams",
    "AnomalyScores",
    "calibrated_threshold",
    "class_probabilities",
    "crossfit_folds",
    "dbscan_clusters",
    "fit_global_centroids",
    "gaussian_smooth",
    "global_distances",
    "kmeans_clusters",
    "largest_component",
    "pooled",
    "tumour_probability",
]

METHODS: tuple[str, ...] = ("giaem", "dbscan", "kmeans", "global_kmeans")

TIE = 1e-6  # weight of the tie-breaker: below one pixel's share of a 256 x 256 image
_KMEANS_STEPS = 12
_DBSCAN_SEED = 12345


class AnomalyParams(StrictParams):
    """Params of the decision (error map, method, calibration) that every
    reconstruction-based anomaly classifier shares."""

    normal_class: HealthyClass = "normal"
    method: Literal["giaem", "dbscan", "kmeans", "global_kmeans"] = Field(
        "giaem", description="decision method: giaem, dbscan, kmeans or global_kmeans"
    )
    anomaly_threshold: float = Field(
        99.0,
        gt=0,
        lt=100,
        description="a pixel is anomalous above this percentile of the healthy validation errors",
    )
    tumor_index: float = Field(
        0.005,
        ge=0,
        description="score threshold (for giaem/dbscan/kmeans: a share of the image area); "
        "used as given with calibration none, else replaced by the calibrated value",
    )
    calibration: Calibration = Field(
        "sensitivity",
        description="how the score threshold is set on the validation part: at least a "
        "target sensitivity on its tumour slices at the best specificity (falls back to "
        "specificity without them), a target specificity on its normal slices, max Youden "
        "J or F1, or none",
    )
    target_sensitivity: TargetSensitivity = 0.9
    target_specificity: TargetSpecificity = 0.9
    error_measure: Literal["auto", "absolute", "ssim"] = Field(
        "auto",
        description="the error map: absolute |x - x_hat| (the study's), ssim = structural "
        "(1 - local SSIM) / 2, or auto: the one with the higher validation AUC",
    )
    normalise: Literal["auto", "zmap", "none"] = Field(
        "auto",
        description="zmap: each pixel's error in units of the healthy validation slices' "
        "errors at that pixel ((err - mean) / std, std floored); none: raw error (the "
        "study's); auto: the one with the higher validation AUC",
    )
    head_mask: Literal["loader", "intensity"] = Field(
        "loader",
        description="with foreground_only, the head: the loader's mask (half-Otsu, opening, "
        "holes filled) or a fixed intensity threshold (foreground_threshold)",
    )
    match_intensity: bool = Field(
        False,
        description="fit each reconstruction's intensities to its slice (a * x_hat + b, "
        "least squares over the head) before the error, so a global brightness or contrast "
        "miss is not an anomaly (off by default: on the phantoms' validation part it did "
        "not help)",
    )
    ssim_window: int = Field(7, ge=3, description="ssim: Gaussian window size in pixels")
    zmap_sigma: float = Field(
        2.0, ge=0, description="zmap: smoothing (pixels) of the healthy mean and spread maps"
    )
    zmap_floor: float = Field(
        0.5,
        gt=0,
        description="zmap: the spread is at least this share of its median over the head",
    )
    clean_radius: int = Field(
        1,
        ge=0,
        description="morphological opening of the anomalous pixels before clustering: disk "
        "radius in pixels (0 = off, the study's)",
    )
    clean_min_area: float = Field(
        0.001,
        ge=0,
        lt=1,
        description="anomalous components smaller than this share of the image area are "
        "dropped before clustering (0 = off, the study's)",
    )
    smooth_sigma: float = Field(
        1.0, ge=0, description="Gaussian smoothing of the error map, in pixels (0 = off)"
    )
    foreground_only: bool = Field(
        True, description="count errors inside the head only (smoothed image > threshold)"
    )
    foreground_threshold: float = Field(
        0.05, ge=0, lt=1, description="intensity above which a (smoothed) pixel is head"
    )
    foreground_erode: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="shrink the head mask by this share of the image side (a crude skull "
        "strip: the scalp and skull rim is where a healthy VAE errs most)",
    )
    max_points: int = Field(
        1000, ge=10, description="dbscan: at most this many anomalous pixels per image"
    )
    dbscan_eps: float = Field(
        1.5, gt=0, description="dbscan: neighbourhood radius in pixels (1.5 ~ 8-neighbours)"
    )
    dbscan_min_samples: int = Field(4, ge=1, description="dbscan: points to form a core")
    dbscan_error_weight: float = Field(
        0.5,
        ge=0,
        description="dbscan: weight of the error (log2 of error / pixel threshold) beside "
        "the pixel coordinates (0 = coordinates only)",
    )
    kmeans_position_weight: float = Field(
        1.0,
        ge=0,
        description="kmeans: weight of the (0..1) pixel position beside the error "
        "(in pixel-threshold units)",
    )
    global_clusters: int = Field(8, ge=1, description="global_kmeans: number of clusters")
    global_grid: int = Field(
        16, ge=2, description="global_kmeans: maps are pooled to this many cells per side"
    )
    alpha: float = Field(
        0.1,
        gt=0,
        le=1,
        description="global_kmeans: a cluster with more than this share of the images is "
        "too large to be a tumour pattern and counts as normal",
    )
    figures: bool = Field(
        True, description="save TP/FP/TN/FN example figures of the validation part"
    )


@dataclass
class AnomalyScores:
    """Per-image decision details: ``scores`` [N] (float64) and the anomalous pixels."""

    scores: np.ndarray
    anomalous: Tensor  # bool [N, 1, H, W]: error above the pixel threshold (inside the head)
    candidates: Tensor  # bool [N, 1, H, W]: the pixels the method's cluster may come from


# ------------------------------------------------------------------ calibration


class CalibrationParams(Protocol):
    """The params a score threshold is calibrated by (``AnomalyParams`` has them)."""

    calibration: str
    target_sensitivity: float
    target_specificity: float
    tumor_index: float


def calibrated_threshold(
    p: CalibrationParams, scores: np.ndarray, is_normal: np.ndarray
) -> tuple[str, float]:
    """``(mode used, score threshold)`` of ``p.calibration`` on calibration ``scores``
    (``is_normal`` marks the healthy slices): youden, f1 and sensitivity need both classes
    and fall back to specificity without them; ``none`` (or specificity without healthy
    slices) keeps ``p.tumor_index``."""
    mode = p.calibration
    if mode in ("youden", "f1", "sensitivity") and (is_normal.all() or not is_normal.any()):
        mode = "specificity"
    if mode == "none" or (mode == "specificity" and not is_normal.any()):
        return mode, float(p.tumor_index)
    threshold = threshold_for(
        mode,
        scores,
        ~is_normal,
        target_sensitivity=p.target_sensitivity,
        target_specificity=p.target_specificity,
    )
    return mode, threshold


def tumour_probability(scores: np.ndarray, threshold: float, scale: float) -> np.ndarray:
    """``sigmoid((score - threshold) / scale)``: 0.5 at the threshold."""
    z = (np.asarray(scores, np.float64) - threshold) / scale
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def class_probabilities(tumour: np.ndarray, n_classes: int, normal_index: int) -> Tensor:
    """Class probabilities ``[N, n_classes]`` from tumour probabilities: the non-normal
    classes share them."""
    import torch

    p = torch.from_numpy(np.asarray(tumour, np.float64))
    out = (p / (n_classes - 1))[:, None].repeat(1, n_classes)
    out[:, normal_index] = 1.0 - p
    return out.float()


# ------------------------------------------------------------------ helpers


def gaussian_smooth(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[N, C, H, W]`` with ``sigma`` pixels (reflect padding).

    Shifted adds rather than a convolution: with one channel and a few taps this is
    ~10x faster on a CPU than ``conv2d`` / ``conv1d``.
    """
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return x
    h, w = x.shape[-2:]
    radius = min(max(1, math.ceil(3 * sigma)), h - 1, w - 1)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    taps = (k / k.sum()).tolist()
    y = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = torch.zeros_like(y[..., :, :w])
    for i, weight in enumerate(taps):
        rows.add_(y[..., :, i : i + w], alpha=weight)
    out = torch.zeros_like(x)
    for i, weight in enumerate(taps):
        out.add_(rows[..., i : i + h, :], alpha=weight)
    return out


def largest_component(binary: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D boolean array (all False when empty)."""
    from scipy import ndimage

    if not binary.any():
        return np.zeros_like(binary, dtype=bool)
    labels, n = ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return labels > 0
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(counts.argmax())


def crossfit_folds(groups: Sequence[str], is_normal: np.ndarray) -> np.ndarray | None:
    """Two folds (0 / 1 per slice) of the calibration slices, for healthy statistics fitted
    on one fold and applied to the other: whole groups (patients, duplicate groups) per fold
    when the healthy slices come from two or more groups (the largest first, each to the
    fold with fewer healthy slices), else alternate healthy slices (and alternate the
    others). None when a fold would hold fewer than 2 healthy slices."""
    n = len(is_normal)
    grouped = len(groups) == n
    healthy = Counter(g for g, h in zip(groups, is_normal, strict=True) if h) if grouped else {}
    if len(healthy) >= 2:
        every = Counter(groups)
        fold_of: dict[str, int] = {}
        sizes = [[0, 0], [0, 0]]  # per fold: healthy, all
        for g in sorted(every, key=lambda g: (-healthy[g], -every[g], g)):
            k = min((0, 1), key=lambda f: sizes[f])
            fold_of[g] = k
            sizes[k][0] += healthy[g]
            sizes[k][1] += every[g]
        folds = np.array([fold_of[g] for g in groups])
    else:  # alternate the healthy slices, and the others
        folds = np.zeros(n, int)
        for part in (is_normal, ~is_normal):
            folds[part] = np.arange(int(part.sum())) % 2
    if min(int((is_normal & (folds == k)).sum()) for k in (0, 1)) < 2:
        return None
    return folds


def dbscan_clusters(
    errors: Tensor, anomalous: Tensor, pixel_threshold: float, p: AnomalyParams
) -> tuple[np.ndarray, Tensor]:
    """``dbscan``: per image the size of the largest cluster of anomalous pixels, and its
    pixels."""
    import torch
    from sklearn.cluster import DBSCAN

    n = errors.shape[0]
    sizes = np.zeros(n)
    clusters = torch.zeros_like(anomalous)
    # the error in octaves above the pixel threshold: scale-free, so that a z-map's
    # large values do not pull one blob apart along the error axis
    err_np = np.log2((errors[:, 0] / pixel_threshold).clamp(min=1.0).numpy())
    anom_np = anomalous[:, 0].numpy()
    for i in range(n):
        rows, cols = np.nonzero(anom_np[i])
        total = rows.size
        if total < p.dbscan_min_samples:
            continue
        keep = np.arange(total)
        if total > p.max_points:  # fixed seed: the same image is always sampled alike
            rng = np.random.default_rng(_DBSCAN_SEED)
            keep = np.sort(rng.choice(total, p.max_points, replace=False))
        factor = total / keep.size
        pts = np.stack(
            [rows[keep], cols[keep], p.dbscan_error_weight * err_np[i, rows[keep], cols[keep]]],
            1,
        ).astype(np.float64)
        labels = DBSCAN(
            eps=p.dbscan_eps * math.sqrt(factor), min_samples=p.dbscan_min_samples
        ).fit_predict(pts)
        if (labels >= 0).any():
            counts = np.bincount(labels[labels >= 0])
            best = int(counts.argmax())
            sizes[i] = counts[best] * factor
            member = np.zeros(anom_np[i].shape, bool)
            member[rows[keep][labels == best], cols[keep][labels == best]] = True
            if factor > 1:  # unsampled anomalous pixels join the cluster they touch
                from scipy import ndimage

                grown = ndimage.binary_dilation(member, iterations=math.ceil(factor**0.5))
                member = grown & anom_np[i]
            clusters[i, 0] = torch.from_numpy(member)
    return sizes, clusters


def kmeans_clusters(
    errors: Tensor, foreground: Tensor, anomalous: Tensor, pixel_threshold: float, wp: float
) -> tuple[np.ndarray, Tensor]:
    """``kmeans``: batched 2-means per image on (error, weighted position ``wp``) of head
    pixels; the score and the anomalous pixels of the high-error cluster."""
    import torch

    n, _, h, w = errors.shape
    yy, xx = torch.meshgrid(
        torch.linspace(0, 1, h, dtype=torch.float32),
        torch.linspace(0, 1, w, dtype=torch.float32),
        indexing="ij",
    )
    py, px = (yy.reshape(-1) * wp), (xx.reshape(-1) * wp)  # [P] position features
    gy, gx = (yy.reshape(-1) * (h - 1)).double(), (xx.reshape(-1) * (w - 1)).double()
    scores = np.zeros(n)
    high = torch.zeros_like(anomalous)
    chunk = 64
    area = float(h * w)
    for s in range(0, n, chunk):
        e = (errors[s : s + chunk, 0] / pixel_threshold).reshape(-1, h * w)  # [B, P]
        m = foreground[s : s + chunk, 0].reshape(-1, h * w)
        mf = m.float()
        b = e.shape[0]
        msum = mf.sum(1).clamp(min=1)
        mean = torch.stack([(e * mf).sum(1), mf @ py, mf @ px], 1) / msum[:, None]
        top = (e * mf).argmax(1)
        first = torch.stack([e[torch.arange(b), top], py[top], px[top]], 1)
        centres = torch.stack([mean, first], 1)  # [B, 2, 3]: low, high
        assign = mf
        for _ in range(_KMEANS_STEPS):
            # with two centres the nearer one is a half-space test: f . (c1 - c0) > bias
            diff = centres[:, 1] - centres[:, 0]  # [B, 3]
            bias = 0.5 * (centres[:, 1].square().sum(1) - centres[:, 0].square().sum(1))
            proj = e * diff[:, :1] + py * diff[:, 1:2] + px * diff[:, 2:3]
            assign = ((proj > bias[:, None]) & m).float()
            wgt = torch.stack([mf - assign, assign], 1)  # [B, 2, P]
            cnt = wgt.sum(2)  # [B, 2]
            sums = torch.stack([(wgt * e[:, None]).sum(2), wgt @ py, wgt @ px], -1)
            upd = sums / cnt.clamp(min=1)[..., None]
            centres = torch.where(cnt[..., None] > 0, upd, centres)
        swap = centres[:, 1, 0] < centres[:, 0, 0]  # the high cluster has the larger error
        assign = torch.where(swap[:, None], mf - assign, assign)
        hot = (assign > 0) & anomalous[s : s + chunk, 0].reshape(-1, h * w)
        hf = hot.double()
        cnt = hf.sum(1)
        # rms radius of the hot pixels about their centroid: E|p|^2 - |E p|^2
        first_m = torch.stack([hf @ gy, hf @ gx], 1) / cnt.clamp(min=1)[:, None]
        second = (hf @ (gy.square() + gx.square())) / cnt.clamp(min=1)
        rms = (second - first_m.square().sum(1)).clamp(min=0).sqrt()
        disk = (cnt / (2 * math.pi)).sqrt()
        compact = torch.where(rms > 0, (disk / rms.clamp(min=1e-9)).clamp(max=1.0), 1.0)
        compact = torch.where(cnt > 0, compact, 0.0)
        scores[s : s + b] = (cnt / area * compact).numpy()
        high[s : s + b, 0] = hot.reshape(b, h, w)
    return scores, high


def pooled(anomalous: Tensor, grid: int) -> Tensor:
    """Binary maps average-pooled to ``grid`` x ``grid`` cells, one row per image."""
    import torch.nn.functional as F

    g = min(grid, anomalous.shape[-1])
    return F.adaptive_avg_pool2d(anomalous.float(), g).flatten(1)


def fit_global_centroids(maps: np.ndarray, clusters: int, alpha: float) -> Tensor:
    """``global_kmeans``: KMeans of the pooled healthy maps; the centroids of the normal
    clusters (those holding more than ``alpha`` of the maps, and the largest)."""
    import torch
    from sklearn.cluster import KMeans

    k = max(1, min(clusters, len(np.unique(maps, axis=0))))  # identical maps: fewer clusters
    km = KMeans(n_clusters=k, n_init=4, random_state=0).fit(maps)
    counts = np.bincount(km.labels_, minlength=k)
    normal = counts > alpha * len(maps)
    normal[int(counts.argmax())] = True  # the largest cluster is always normal
    return torch.from_numpy(km.cluster_centers_[normal]).float()


def global_distances(anomalous: Tensor, centroids: Tensor, grid: int) -> tuple[np.ndarray, Tensor]:
    """``global_kmeans``: each map's mean squared distance to the nearest normal centroid,
    and its anomalous pixels that no normal pattern explains."""
    import torch
    import torch.nn.functional as F

    maps = pooled(anomalous, grid).double()
    cent = centroids.double()
    d = torch.cdist(maps, cent) ** 2 / maps.shape[1]  # mean squared distance per cell
    dist, nearest = d.min(1)
    g = round(math.sqrt(maps.shape[1]))
    pattern = cent[nearest].reshape(-1, 1, g, g).float()
    pattern = F.interpolate(pattern, size=anomalous.shape[-2:], mode="nearest")
    outside = anomalous & (pattern < 0.5)  # anomalous pixels no normal pattern explains
    return dist.numpy(), outside
