"""``vae_anomaly``: tumour detection without tumour labels, from a VAE's reconstruction error.

The published VAE/GAN study trained a VAE on healthy slices only: it reconstructs
healthy anatomy well and a tumour badly, so ``|x - x_hat|`` shows where a tumour is.
This classifier trains the ``vae`` generator's network (``synthmri.nn.vae``) on
the training slices of the normal class only (the other class is never looked at), and
turns each error map into a tumour score with one of the study's four decision methods:

- ``giaem`` (global image absolute error magnitude): a pixel is anomalous when its error
  exceeds the ``anomaly_threshold`` percentile of the healthy validation errors; the
  score is the anomalous fraction of the image area;
- ``dbscan``: scikit-learn DBSCAN on the coordinates (and, weighted, the error) of the
  anomalous pixels only, subsampled with a fixed seed to at most ``max_points`` per image
  (``eps`` grows by sqrt(n / max_points) so the density it asks for stays the same); the
  score is the largest cluster's share of the image area;
- ``kmeans``: per image, 2-means (batched in torch, deterministic initialisation: the
  mean pixel and the highest-error pixel) on error and position features of the head's
  pixels; the score is the anomalous share of the image area in the high-error cluster
  times its compactness (rms radius of a disk of that area / the cluster's rms radius,
  at most 1), so a large *and* compact cluster is needed;
- ``global_kmeans``: our reading of the study's "KMeans over all binarised error maps":
  the binarised maps of the training (healthy) images, average-pooled to
  ``global_grid`` x ``global_grid`` cells, are the rows of one N x cells matrix, clustered
  by KMeans into ``global_clusters`` groups. A cluster holding more than ``alpha`` of the
  images is too large to be a tumour pattern, so it is a *normal* pattern (systematic
  healthy error, e.g. along the skull); smaller clusters are outliers and are not normal
  (at least the largest cluster is always normal). An image's score is the mean squared
  distance of its pooled binarised map to the nearest normal centroid: an image whose
  anomalous pixels fall outside every normal pattern is a tumour. The clustering is fitted
  once in ``fit`` (inductive), so a prediction never depends on the other test images.

Calibration uses the validation part only (never the test part): the pixel threshold is
the ``anomaly_threshold`` percentile of the errors of the validation part's normal slices
(inside the head when ``foreground_only``); the score threshold (``tumor_index``) is set,
by default, so that ``target_specificity`` of those normal slices score at or below it
(``calibration: specificity``); with tumour slices in the validation part too,
``calibration: youden`` or ``f1`` picks the threshold that maximises Youden's J
(sensitivity + specificity - 1) or F1 on it (ties go to the higher threshold), and falls
back to ``specificity`` with a note when a class is missing. ``calibration: none`` uses
``tumor_index`` as given. Without a validation part both thresholds come from the
training normals (with a note: they are optimistic there).

``predict_proba`` maps the score monotonically to probabilities: the non-normal
column(s) share ``sigmoid((score - threshold) / scale)``, with ``scale`` the spread of the
validation scores, so 0.5 sits at the calibrated threshold and ROC AUC is meaningful.
Each score carries a tie-breaker below one pixel's worth (1e-6 x the mean error in units
of the pixel threshold, capped at 1) so that images with no anomalous pixel still rank.
``predict_masks`` returns each image's largest anomalous cluster (empty when the image is
judged normal), for scoring unsupervised localisation against real masks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from synthmri import hookimpl
from synthmri.core.errors import DataError, PluginError
from synthmri.core.interfaces import Classifier, ImageSet
from synthmri.nn.params import VAEParams
from synthmri.plugins.classifiers._base import check_val_matches

if TYPE_CHECKING:
    from torch import Tensor

    from synthmri.core.training import RunContext
    from synthmri.nn.vae import TrainedVAE

__all__ = [
    "METHODS",
    "NORMAL_FALLBACKS",
    "AnomalyScores",
    "VAEAnomaly",
    "VAEAnomalyParams",
    "gaussian_smooth",
    "largest_component",
]

METHODS: tuple[str, ...] = ("giaem", "dbscan", "kmeans", "global_kmeans")
NORMAL_FALLBACKS: tuple[str, ...] = ("no", "healthy", "normal")
"""Class names taken as the healthy class when ``normal_class`` matches none."""

_TIE = 1e-6  # weight of the tie-breaker: below one pixel's share of a 256 x 256 image
_KMEANS_STEPS = 12
_DBSCAN_SEED = 12345


class VAEAnomalyParams(VAEParams):
    """Params of ``vae_anomaly``: the VAE's training params plus the decision's."""

    iterations: int = Field(
        800, ge=1, description="VAE training steps (minibatches of healthy slices)"
    )
    latent_dim: int = Field(128, ge=2, description="size of the VAE's latent code")
    base_channels: int = Field(
        16, ge=4, le=32, description="VAE width: channels of the first encoder block"
    )
    recon_loss: Literal["bce", "l1", "mse"] = Field(
        "l1", description="reconstruction term of the VAE loss: bce, l1 or mse"
    )
    kl_warmup: int = Field(
        200, ge=0, description="steps over which the KL weight rises from 0 to beta"
    )
    normal_class: str = Field(
        "normal",
        description="the healthy class (case-insensitive); if absent, a class named "
        "no / healthy / normal is used",
    )
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
    calibration: Literal["specificity", "youden", "f1", "none"] = Field(
        "specificity",
        description="how the score threshold is set on the validation part: a target "
        "specificity on its normal slices, max Youden J or F1 (needs tumour slices), or none",
    )
    target_specificity: float = Field(
        0.9, gt=0, le=1, description="calibration specificity: share of val normals kept normal"
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
        description="dbscan: weight of the error (in pixel-threshold units) beside the "
        "pixel coordinates (0 = coordinates only)",
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


def _match_normal(class_names: list[str], wanted: str) -> int:
    lowered = [c.lower() for c in class_names]
    for name in (wanted.lower(), *NORMAL_FALLBACKS):
        if name in lowered:
            return lowered.index(name)
    raise DataError(
        f"vae_anomaly: no healthy class {wanted!r} among the classes {class_names}",
        hint="set params.normal_class to the name of the class without tumours",
    )


# ------------------------------------------------------------------ the plugin


class VAEAnomaly(Classifier):
    """A VAE trained on healthy slices; tumours are found from its reconstruction error."""

    name = "vae_anomaly"
    description = "VAE on healthy slices only; reconstruction error -> tumour (4 methods)"
    Params = VAEAnomalyParams
    localises = True
    quick_params: dict[str, Any] = {
        "iterations": 6,
        "batch_size": 8,
        "base_channels": 8,
        "latent_dim": 16,
        "figures": False,
    }

    def __init__(self, params: BaseModel | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.vae: TrainedVAE | None = None
        self.class_names: list[str] = []
        self.normal_index = 0
        self.size = 0
        self.channels = 1
        self.pixel_threshold = 0.0
        self.score_threshold = 0.0
        self.score_scale = 1.0
        self.global_centroids: Tensor | None = None  # [K, cells] normal centroids only
        self.calibrated_on = ""
        self.history: dict[str, Any] = {}

    # ------------------------------------------------------------ training

    def vae_params(self) -> VAEParams:
        """The params of the underlying ``vae`` network and its training."""
        return VAEParams(**{k: getattr(self.params, k) for k in VAEParams.model_fields})

    def fit(self, train: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """Train the VAE on the normal training slices; calibrate thresholds on ``val``."""
        from synthmri.nn.vae import TrainedVAE, VAENet, train_vae

        if train.labels is None:
            raise DataError(
                "vae_anomaly: the training images have no labels",
                hint="it needs to know which training slices are healthy",
            )
        names = list(train.class_names) or [str(i) for i in range(int(train.labels.max()) + 1)]
        if len(names) < 2:
            raise DataError(f"vae_anomaly: need at least 2 classes, got {names}")
        normal = _match_normal(names, self.params.normal_class)
        healthy = train.subset(train.labels == normal)
        if len(healthy) < 2:
            raise DataError(
                f"vae_anomaly: need at least 2 training slices of class {names[normal]!r}, "
                f"got {len(healthy)}"
            )
        if val is not None and len(val):
            check_val_matches(self.name, train, val, names)
        self.class_names, self.normal_index = names, normal
        self.size, self.channels = train.size, train.channels
        vp = self.vae_params()
        net = VAENet(self.size, self.channels, vp.latent_dim, vp.base_channels)
        self.history = train_vae(net, healthy.images, vp, run, description="vae_anomaly")
        self.vae = TrainedVAE(net, run.device)

        val_normal = (
            val.subset(val.labels == normal)
            if val is not None and len(val) and val.labels is not None
            else None
        )
        has_val = val_normal is not None and len(val_normal) > 0
        train_err = train_fg = None
        if self.params.method == "global_kmeans" or not has_val:
            train_err, train_fg = self.error_maps(healthy.images)
        if has_val:
            val_err, val_fg = self.error_maps(val.images)  # type: ignore[union-attr]
            is_normal = (val.labels == normal).numpy()  # type: ignore[union-attr]
            self.calibrated_on = "validation"
        else:
            assert train_err is not None and train_fg is not None
            run.note(
                "vae_anomaly: no healthy validation slices; thresholds come from the "
                "training slices (optimistic: expect more false positives on the test part)"
            )
            val_err, val_fg, is_normal = train_err, train_fg, np.ones(len(healthy), bool)
            self.calibrated_on = "train"
        self.calibrate(val_err, val_fg, is_normal, train_err=train_err, train_fg=train_fg, run=run)
        if run.out_dir is not None and self.params.figures and self.calibrated_on == "validation":
            self._figures(val, val_err, val_fg, run)  # type: ignore[arg-type]

    def calibrate(
        self,
        errors: Tensor,
        foreground: Tensor,
        is_normal: np.ndarray,
        *,
        train_err: Tensor | None = None,
        train_fg: Tensor | None = None,
        run: RunContext | None = None,
    ) -> None:
        """Set the pixel and score thresholds from calibration error maps (validation part).

        ``is_normal`` marks the healthy slices; ``train_err`` / ``train_fg`` (healthy
        training maps) are what ``global_kmeans`` clusters. Public so that benchmarks can
        switch methods without retraining the VAE.
        """
        import torch

        p = self.params
        healthy = errors[torch.as_tensor(is_normal)]
        inside = healthy[foreground[torch.as_tensor(is_normal)]]
        if inside.numel() == 0:
            inside = healthy.reshape(-1)
        self.pixel_threshold = max(
            float(np.percentile(inside.numpy().astype(np.float64), p.anomaly_threshold)), 1e-6
        )
        if p.method == "global_kmeans":
            ref_err = train_err if train_err is not None else healthy
            ref_fg = train_fg if train_fg is not None else foreground[torch.as_tensor(is_normal)]
            self._fit_global(ref_err, ref_fg)
        scores = self.score_errors(errors, foreground).scores
        self.score_threshold = self._pick_threshold(scores, is_normal, run)
        spread = float(np.std(scores))
        self.score_scale = spread / 2 if spread > 0 else max(abs(self.score_threshold), 1.0) * 1e-3
        spec = float((scores[is_normal] <= self.score_threshold).mean())
        sens = (
            float((scores[~is_normal] > self.score_threshold).mean())
            if (~is_normal).any()
            else None
        )
        if run is not None:
            run.log(
                calibration=p.calibration,
                calibrated_on=self.calibrated_on or "given",
                pixel_threshold=self.pixel_threshold,
                score_threshold=self.score_threshold,
                score_scale=self.score_scale,
                val_specificity=spec,
                val_sensitivity=sens,
            )

    def _pick_threshold(
        self, scores: np.ndarray, is_normal: np.ndarray, run: RunContext | None
    ) -> float:
        p = self.params
        mode = p.calibration
        if mode == "none":
            return float(p.tumor_index)
        if mode in ("youden", "f1") and (is_normal.all() or not is_normal.any()):
            if run is not None:
                run.note(
                    f"vae_anomaly: calibration {mode} needs normal and tumour validation "
                    "slices; using target_specificity instead"
                )
            mode = "specificity"
        if mode == "specificity":
            normal_scores = scores[is_normal]
            if normal_scores.size == 0:
                return float(p.tumor_index)
            # the lowest threshold that keeps target_specificity of the normals at or below it
            k = max(0, math.ceil(p.target_specificity * normal_scores.size - 1e-9) - 1)
            return float(np.sort(normal_scores)[k])
        candidates = np.unique(scores)
        pred = scores[None, :] > candidates[:, None]  # [T, N]: tumour above each threshold
        pos = ~is_normal
        tp = (pred & pos).sum(1)
        fp = (pred & ~pos).sum(1)
        fn = pos.sum() - tp
        if mode == "youden":
            value = tp / max(pos.sum(), 1) - fp / max((~pos).sum(), 1)
        else:
            value = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        best = np.flatnonzero(value >= value.max() - 1e-12)[-1]  # ties: the higher threshold
        return float(candidates[best])

    def _fit_global(self, errors: Tensor, foreground: Tensor) -> None:
        import torch
        from sklearn.cluster import KMeans

        maps = self._pooled(self._anomalous(errors, foreground)).numpy().astype(np.float64)
        k = max(1, min(self.params.global_clusters, len(maps)))
        km = KMeans(n_clusters=k, n_init=4, random_state=0).fit(maps)
        counts = np.bincount(km.labels_, minlength=k)
        normal = counts > self.params.alpha * len(maps)
        normal[int(counts.argmax())] = True  # the largest cluster is always normal
        self.global_centroids = torch.from_numpy(km.cluster_centers_[normal]).float()

    # ------------------------------------------------------------ error maps and scores

    def _vae(self) -> TrainedVAE:
        if self.vae is None:
            raise PluginError(
                "vae_anomaly: the classifier is not trained",
                hint="call fit() or load_state_dict() first",
            )
        return self.vae

    def _images(self, images: Tensor) -> Tensor:
        import torch.nn.functional as F

        self._vae()
        if images.ndim != 4 or images.shape[1] != self.channels:
            raise DataError(
                f"vae_anomaly: expected images [N, {self.channels}, H, W], "
                f"got {tuple(images.shape)}"
            )
        images = images.float()
        if images.shape[-2:] != (self.size, self.size):
            images = F.interpolate(
                images, size=(self.size, self.size), mode="bilinear", antialias=True
            )
        return images

    def reconstruct(self, images: Tensor) -> Tensor:
        """The VAE's reconstructions of ``images`` (on the CPU)."""
        x = self._images(images)
        if x.shape[0] == 0:
            return x.clone()
        return self._vae().reconstruct(x)

    def error_maps(self, images: Tensor, recon: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(errors, foreground)``: ``|x - x_hat|`` (channel mean, smoothed, zero outside
        the head when ``foreground_only``) ``[N, 1, H, W]`` and the head mask (bool)."""
        import torch
        import torch.nn.functional as F

        x = self._images(images)
        if recon is None:
            recon = self.reconstruct(x)
        p = self.params
        err = gaussian_smooth((x - recon.float()).abs().mean(1, keepdim=True), p.smooth_sigma)
        if p.foreground_only:
            fg = gaussian_smooth(x.mean(1, keepdim=True), 1.0) > p.foreground_threshold
            r = round(p.foreground_erode * self.size)
            if r > 0:  # erosion: a pixel stays head when its whole neighbourhood is head
                fg = ~(F.max_pool2d((~fg).float(), 2 * r + 1, stride=1, padding=r) > 0)
            err = err * fg
        else:
            fg = torch.ones_like(err, dtype=torch.bool)
        return err, fg

    def _anomalous(self, errors: Tensor, foreground: Tensor) -> Tensor:
        return (errors > self.pixel_threshold) & foreground

    def _pooled(self, anomalous: Tensor) -> Tensor:
        import torch.nn.functional as F

        g = min(self.params.global_grid, anomalous.shape[-1])
        return F.adaptive_avg_pool2d(anomalous.float(), g).flatten(1)

    def score_errors(self, errors: Tensor, foreground: Tensor) -> AnomalyScores:
        """Tumour scores (higher = more anomalous) of error maps, by the chosen method."""
        errors = errors.float()
        anomalous = self._anomalous(errors, foreground)
        n, area = errors.shape[0], float(errors.shape[-1] * errors.shape[-2])
        tie = _TIE * (errors / self.pixel_threshold).clamp(max=1.0).flatten(1).mean(1)
        tie = tie.double().numpy()
        method = self.params.method
        candidates = anomalous
        if n == 0:
            return AnomalyScores(np.zeros(0), anomalous, candidates)
        if method == "giaem":
            base = anomalous.flatten(1).sum(1).double().numpy() / area
        elif method == "dbscan":
            sizes, candidates = self._dbscan(errors, anomalous)
            base = sizes / area
        elif method == "kmeans":
            base, candidates = self._kmeans(errors, foreground, anomalous)
        else:
            base, candidates = self._global(anomalous)
        return AnomalyScores(base + tie, anomalous, candidates)

    def _dbscan(self, errors: Tensor, anomalous: Tensor) -> tuple[np.ndarray, Tensor]:
        import torch
        from sklearn.cluster import DBSCAN

        p = self.params
        n = errors.shape[0]
        sizes = np.zeros(n)
        clusters = torch.zeros_like(anomalous)
        err_np = (errors[:, 0] / self.pixel_threshold).numpy()
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

    def _kmeans(
        self, errors: Tensor, foreground: Tensor, anomalous: Tensor
    ) -> tuple[np.ndarray, Tensor]:
        """Batched 2-means per image on (error, weighted position) of head pixels."""
        import torch

        n, _, h, w = errors.shape
        wp = self.params.kmeans_position_weight
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
            e = (errors[s : s + chunk, 0] / self.pixel_threshold).reshape(-1, h * w)  # [B, P]
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

    def _global(self, anomalous: Tensor) -> tuple[np.ndarray, Tensor]:
        import torch
        import torch.nn.functional as F

        if self.global_centroids is None:
            raise PluginError("vae_anomaly: global_kmeans has no clusters (fit first)")
        maps = self._pooled(anomalous).double()
        cent = self.global_centroids.double()
        d = torch.cdist(maps, cent) ** 2 / maps.shape[1]  # mean squared distance per cell
        dist, nearest = d.min(1)
        g = round(math.sqrt(maps.shape[1]))
        pattern = cent[nearest].reshape(-1, 1, g, g).float()
        pattern = F.interpolate(pattern, size=anomalous.shape[-2:], mode="nearest")
        outside = anomalous & (pattern < 0.5)  # anomalous pixels no normal pattern explains
        return dist.numpy(), outside

    # ------------------------------------------------------------ prediction

    def tumor_probability(self, scores: np.ndarray) -> np.ndarray:
        """``sigmoid((score - threshold) / scale)``: 0.5 at the calibrated threshold."""
        z = (scores - self.score_threshold) / self.score_scale
        return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))

    def _proba(self, scores: np.ndarray) -> Tensor:
        import torch

        p = torch.from_numpy(self.tumor_probability(scores))
        k = len(self.class_names)
        out = (p / (k - 1))[:, None].repeat(1, k)
        out[:, self.normal_index] = 1.0 - p
        return out.float()

    def predict_proba(self, images: Tensor) -> Tensor:
        """Class probabilities ``[N, n_classes]``: the non-normal classes share the tumour
        probability (a monotone map of the anomaly score, 0.5 at the threshold)."""
        import torch

        self._vae()
        if images.shape[0] == 0:
            self._images(images)
            return torch.empty(0, len(self.class_names))
        return self._proba(self.score_errors(*self.error_maps(images)).scores)

    def anomaly_scores(self, images: Tensor) -> np.ndarray:
        """The raw anomaly scores (higher = more anomalous) of ``images``."""
        return self.score_errors(*self.error_maps(images)).scores

    def predict_masks(self, images: Tensor) -> Tensor:
        """Each image's largest anomalous cluster ``[N, 1, H, W]`` (0/1; empty when the
        image is judged normal)."""
        import torch

        x = self._images(images)
        if x.shape[0] == 0:
            return torch.zeros(0, 1, self.size, self.size)
        result = self.score_errors(*self.error_maps(x))
        return self._masks(result)

    def _masks(self, result: AnomalyScores) -> Tensor:
        import torch

        masks = torch.zeros(result.candidates.shape, dtype=torch.float32)
        tumour = result.scores > self.score_threshold
        cand = result.candidates[:, 0].numpy()
        for i in np.flatnonzero(tumour):
            masks[i, 0] = torch.from_numpy(largest_component(cand[i]).astype(np.float32))
        return masks

    # ------------------------------------------------------------ figures

    def _figures(self, val: ImageSet, errors: Tensor, fg: Tensor, run: RunContext) -> None:
        """TP / FP / TN / FN examples of the validation part, and the score histogram."""
        from synthmri.core.artifacts import pyplot

        plt = pyplot()
        assert val.labels is not None
        result = self.score_errors(errors, fg)
        masks = self._masks(result)
        truth = (val.labels != self.normal_index).numpy()
        pred = result.scores > self.score_threshold
        cases = {
            "true positive": np.flatnonzero(truth & pred),
            "false positive": np.flatnonzero(~truth & pred),
            "true negative": np.flatnonzero(~truth & ~pred),
            "false negative": np.flatnonzero(truth & ~pred),
        }
        picks = {k: int(v[np.argmax(result.scores[v])]) if k.startswith("true p") or
                 k.startswith("false p") else int(v[np.argmin(result.scores[v])])
                 for k, v in cases.items() if v.size}  # fmt: skip
        index = list(picks.values())
        recon = self.reconstruct(val.images[index]) if index else None
        vmax = float(errors.max()) or 1.0
        fig, axes = plt.subplots(4, 4, figsize=(8.4, 8.8), squeeze=False)
        for r, case in enumerate(cases):
            for c, title in enumerate(("slice", "reconstruction", "error", "clusters")):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(title, fontsize=9)
                if c == 0:
                    ax.set_ylabel(case, fontsize=9)
            if case not in picks:
                axes[r, 0].text(0.5, 0.5, "none", ha="center", va="center", fontsize=9)
                continue
            i = picks[case]
            j = index.index(i)
            img = val.images[i].mean(0).numpy()
            axes[r, 0].imshow(img, cmap="gray", vmin=0, vmax=1)
            if val.masks is not None and val.masks[i].sum() > 0:
                axes[r, 0].contour(val.masks[i, 0].numpy(), [0.5], colors="lime", linewidths=0.7)
            axes[r, 1].imshow(recon[j].mean(0).numpy(), cmap="gray", vmin=0, vmax=1)  # type: ignore[index]
            axes[r, 2].imshow(errors[i, 0].numpy(), cmap="magma", vmin=0, vmax=vmax)
            axes[r, 3].imshow(img, cmap="gray", vmin=0, vmax=1)
            overlay = np.zeros((*img.shape, 4))
            overlay[result.anomalous[i, 0].numpy()] = (1.0, 0.8, 0.0, 0.6)
            overlay[masks[i, 0].numpy() > 0] = (1.0, 0.0, 0.0, 0.8)
            axes[r, 3].imshow(overlay)
            axes[r, 3].set_xlabel(f"score {result.scores[i]:.4g}", fontsize=8)
        fig.suptitle(
            f"vae_anomaly ({self.params.method}) on the validation part: threshold "
            f"{self.score_threshold:.4g}; yellow = anomalous pixels, red = largest cluster",
            fontsize=9,
        )
        run.save_figure(
            fig,
            "anomaly-examples",
            caption="Validation slices, their reconstruction, the reconstruction error and the "
            "pixels called anomalous. Look for: error concentrated on the tumour (red) rather "
            "than on the skull edge or everywhere.",
        )

        fig, ax = plt.subplots(figsize=(5, 3))
        bins = np.linspace(result.scores.min(), result.scores.max() + 1e-12, 40)
        ax.hist(result.scores[~truth], bins=bins, alpha=0.6, label="normal (val)")
        if truth.any():
            ax.hist(result.scores[truth], bins=bins, alpha=0.6, label="tumour (val)")
        ax.axvline(self.score_threshold, color="k", linestyle="--", label="threshold")
        ax.set_xlabel(f"anomaly score ({self.params.method})")
        ax.legend(fontsize=8)
        run.save_figure(
            fig,
            "anomaly-scores",
            caption="Anomaly scores of normal and tumour validation slices, with the threshold. "
            "Look for: two separated humps; overlap is where the detector will err.",
        )

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """VAE config and weights, thresholds, method, classes (empty before ``fit``)."""
        if self.vae is None:
            return {}
        state: dict[str, Any] = {
            "plugin": self.name,
            "params": self.params.model_dump(mode="json"),
            "vae": self.vae.state_dict(),
            "class_names": list(self.class_names),
            "normal_index": self.normal_index,
            "size": self.size,
            "channels": self.channels,
            "method": self.params.method,
            "pixel_threshold": self.pixel_threshold,
            "score_threshold": self.score_threshold,
            "score_scale": self.score_scale,
            "calibrated_on": self.calibrated_on,
        }
        if self.global_centroids is not None:
            state["global_centroids"] = self.global_centroids.clone()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the VAE and restore the calibrated decision (on the CPU)."""
        import torch

        from synthmri.nn.vae import TrainedVAE

        need = ("vae", "class_names", "size", "channels", "pixel_threshold", "score_threshold")
        missing = [k for k in need if k not in state]
        if missing:
            raise DataError(
                f"vae_anomaly: not a trained vae_anomaly state (missing {', '.join(missing)})"
            )
        if state.get("plugin", self.name) != self.name:
            raise DataError(f"vae_anomaly: the state belongs to {state['plugin']!r}")
        if "params" in state:
            self.params = self.parse_params(dict(state["params"]))
        self.vae = TrainedVAE.from_state(state["vae"])
        self.class_names = list(state["class_names"])
        self.normal_index = int(state.get("normal_index", 0))
        self.size, self.channels = int(state["size"]), int(state["channels"])
        self.pixel_threshold = float(state["pixel_threshold"])
        self.score_threshold = float(state["score_threshold"])
        self.score_scale = float(state.get("score_scale", 1.0))
        self.calibrated_on = str(state.get("calibrated_on", ""))
        cent = state.get("global_centroids")
        self.global_centroids = None if cent is None else torch.as_tensor(cent).float()


@hookimpl
def synthmri_register_classifiers(register: Any) -> None:
    """Register ``vae_anomaly``."""
    register(VAEAnomaly)
