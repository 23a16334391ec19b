"""``vae_anomaly``: tumour detection without tumour labels, from a VAE's reconstruction error.

The published VAE/GAN study trained a VAE on healthy slices only: it reconstructs
healthy anatomy well and a tumour badly, so ``|x - x_hat|`` shows where a tumour is.
This classifier trains the ``vae`` generator's network (``synthmri.nn.vae``) on
the training slices of the normal class only (the other class is never looked at), and
turns each error map into a tumour score with one of the study's four decision methods:

- ``giaem`` (global image absolute error magnitude): a pixel is anomalous when its error
  exceeds the ``anomaly_threshold`` percentile of the healthy validation errors; the
  score is the anomalous fraction of the image area;
- ``dbscan``: scikit-learn DBSCAN on the coordinates (and, weighted, log2 of the error
  in pixel-threshold units) of the anomalous pixels only, subsampled with a fixed seed
  to at most ``max_points`` per image (``eps`` grows by sqrt(n / max_points) so the
  density it asks for stays the same); the score is the largest cluster's share of the
  image area;
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

What the four methods score (deviations from the study, each an option; nothing is ever
chosen on a test part):

- ``head_mask: loader``: the error counts inside the head only, the head being the mask
  the data loader crops by (``core.data.preprocessing.head_mask``: half-Otsu, opening,
  large components, holes filled); ``intensity`` is the earlier fixed threshold;
- ``error_measure``: ``absolute`` ``|x - x_hat|`` (the study's) or ``ssim``, the structural
  error ``(1 - SSIM) / 2`` of a local Gaussian-window SSIM (MONAI); ``normalise: zmap``
  turns each pixel's error into ``(err - mean) / std`` of the healthy validation slices'
  errors at that pixel (smoothed, std floored: ``synthmri.nn.anomaly_maps``), so the skull
  rim where every healthy slice errs stops looking like a tumour. With ``auto`` (the
  default for both) ``fit`` scores the validation part with each candidate map and keeps
  the one with the highest validation ROC AUC (``selection``; logged);
- ``clean_radius`` / ``clean_min_area``: the anomalous pixels are cleaned by a
  morphological opening and small components are dropped before any clustering;
- ``match_intensity`` (off by default): the reconstruction's intensities are fitted to
  the slice before the error.

The study's maps are ``error_measure: absolute, normalise: none, head_mask: intensity,
clean_radius: 0, clean_min_area: 0`` (``benchmarks/anomaly_methods.py`` compares both).

Calibration uses the validation part only (never the test part): the pixel threshold is
the ``anomaly_threshold`` percentile of the errors of the validation part's normal slices
(inside the head when ``foreground_only``); the score threshold (``tumor_index``) is set,
by default, for recall: the highest threshold that still calls ``target_sensitivity`` of
the validation tumour slices tumour (``calibration: sensitivity``);
``calibration: specificity`` keeps ``target_specificity`` of the normal slices at or below
it; ``youden`` or ``f1`` picks the threshold that maximises Youden's J (sensitivity +
specificity - 1) or F1 (ties go to the higher threshold). Modes that need tumour slices
fall back to ``specificity`` with a note when the validation part has none.
``calibration: none`` uses ``tumor_index`` as given. Without a validation part both
thresholds come from the training normals (with a note: they are optimistic there). The
operating point reached (mode, thresholds, validation sensitivity, specificity and AUC,
the error map) is kept in ``operating_point``, saved with the state and logged.

The VAE's size (``base_channels`` / ``latent_dim``: ``auto``) follows the device and the
number of healthy training slices (``synthmri.nn.vae.auto_vae_size``: the study's 32 / 512
on a GPU; 8 / 64 on a CPU below 1000 slices, 16 / 128 above); the size used is logged.

``predict_proba`` maps the score monotonically to probabilities: the non-normal
column(s) share ``sigmoid((score - threshold) / scale)``, with ``scale`` the spread of the
validation scores, so 0.5 sits at the calibrated threshold and ROC AUC is meaningful.
Each score carries a tie-breaker below one pixel's worth (1e-6 x the mean error in units
of the pixel threshold, capped at 1) so that images with no anomalous pixel still rank.
``predict_masks`` returns each image's largest anomalous cluster (empty when the image is
judged normal), for scoring unsupervised localisation against real masks. ``case_figure``
draws the best and worst cases of a labelled set (slice, error map, detected region, true
mask); the pipeline cannot call it (``predict`` sees no labels), the benchmark does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from synthmri import hookimpl
from synthmri.core.errors import DataError, PluginError
from synthmri.core.interfaces import Classifier, ImageSet
from synthmri.nn.params import VAEParams
from synthmri.plugins.classifiers._base import check_val_matches

if TYPE_CHECKING:
    from pathlib import Path

    from torch import Tensor

    from synthmri.core.training import RunContext
    from synthmri.nn.anomaly_maps import PixelStats
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
    latent_dim: Annotated[int, Field(ge=2)] | Literal["auto"] = Field(
        "auto",
        description="size of the VAE's latent code; auto: 512 on a GPU (the study's), on a "
        "CPU 64 below 1000 healthy training slices, else 128",
    )
    base_channels: Annotated[int, Field(ge=4, le=32)] | Literal["auto"] = Field(
        "auto",
        description="VAE width (channels of the first encoder block); auto: 32 on a GPU "
        "(the study's), on a CPU 8 below 1000 healthy training slices, else 16",
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
    calibration: Literal["sensitivity", "specificity", "youden", "f1", "none"] = Field(
        "sensitivity",
        description="how the score threshold is set on the validation part: a target "
        "sensitivity on its tumour slices (falls back to specificity without them), a "
        "target specificity on its normal slices, max Youden J or F1, or none",
    )
    target_sensitivity: float = Field(
        0.9,
        gt=0,
        le=1,
        description="calibration sensitivity: share of val tumour slices called tumour",
    )
    target_specificity: float = Field(
        0.9, gt=0, le=1, description="calibration specificity: share of val normals kept normal"
    )
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
        #: the error map in use (``error_measure`` / ``normalise`` resolved in ``fit``)
        measure = self.params.error_measure
        self.measure = "absolute" if measure == "auto" else measure
        self.pixel_stats: PixelStats | None = None  # healthy per-pixel error stats (zmap)
        #: the calibrated operating point on the validation part (threshold, sensitivity, ...)
        self.operating_point: dict[str, Any] = {}
        #: validation AUC of each error map tried when error_measure / normalise is auto
        self.selection: dict[str, float] = {}

    # ------------------------------------------------------------ training

    def vae_params(self, n_healthy: int = 0, device: Any = "cpu") -> VAEParams:
        """The params of the underlying ``vae`` network and its training, with ``auto``
        sizes resolved for ``n_healthy`` training slices on ``device``
        (``synthmri.nn.vae.auto_vae_size``)."""
        from synthmri.nn.vae import auto_vae_size

        values = {k: getattr(self.params, k) for k in VAEParams.model_fields}
        width, latent = auto_vae_size(n_healthy, device)
        if values["base_channels"] == "auto":
            values["base_channels"] = width
        if values["latent_dim"] == "auto":
            values["latent_dim"] = latent
        return VAEParams(**values)

    def fit(self, train: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """Train the VAE on the normal training slices; choose the error map and calibrate
        the thresholds on ``val``."""
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
        vp = self.vae_params(len(healthy), run.device)
        run.log(
            vae_base_channels=vp.base_channels,
            vae_latent_dim=vp.latent_dim,
            vae_iterations=vp.iterations,
            vae_sized_by="auto" if "auto" in (self.params.base_channels, self.params.latent_dim)
            else "params",
            vae_healthy_slices=len(healthy),
            vae_device=run.device.type,
        )  # fmt: skip
        net = VAENet(self.size, self.channels, vp.latent_dim, vp.base_channels)
        self.history = train_vae(net, healthy.images, vp, run, description="vae_anomaly")
        self.history["vae_size"] = {"base_channels": vp.base_channels, "latent_dim": vp.latent_dim}
        self.vae = TrainedVAE(net, run.device)
        self.recalibrate(healthy, val, run)

    def recalibrate(self, healthy: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """Everything ``fit`` does after training the VAE, with the current params: choose
        the error map (``auto``) and set the thresholds on ``val`` (its healthy slices, and
        its tumour slices when it has them); ``healthy`` are the normal training slices.
        Public so that a benchmark can compare methods and options on one trained VAE."""
        self._vae()
        normal = self.normal_index
        has_val = (
            val is not None and len(val) > 0 and val.labels is not None
            and bool((val.labels == normal).any())
        )  # fmt: skip
        train_rec = None
        if self.params.method == "global_kmeans" or not has_val:
            train_rec = self.reconstruct(healthy.images)
        if has_val:
            assert val is not None and val.labels is not None
            cal_x, cal_rec = val.images, self.reconstruct(val.images)
            is_normal = (val.labels == normal).numpy()
            self.calibrated_on = "validation"
        else:
            assert train_rec is not None
            run.note(
                "vae_anomaly: no healthy validation slices; thresholds come from the "
                "training slices (optimistic: expect more false positives on the test part)"
            )
            cal_x, cal_rec, is_normal = healthy.images, train_rec, np.ones(len(healthy), bool)
            self.calibrated_on = "train"
        both = bool(is_normal.any() and (~is_normal).any())
        p = self.params
        self.global_centroids = None
        measures = ["absolute", "ssim"] if p.error_measure == "auto" else [p.error_measure]
        norms = ["zmap", "none"] if p.normalise == "auto" else [p.normalise]
        if not both:  # nothing to choose by: the default deviations
            measures, norms = measures[:1], norms[:1]
        candidates = [(m, z) for m in measures for z in norms]
        self.selection = {}
        for measure, norm in candidates:
            self._prepare_maps(measure, norm, cal_x, cal_rec, is_normal)
            if len(candidates) == 1:
                break
            err, fg = self.error_maps(cal_x, cal_rec)
            tr_err = tr_fg = None
            if train_rec is not None:
                tr_err, tr_fg = self.error_maps(healthy.images, train_rec)
            self.calibrate(err, fg, is_normal, train_err=tr_err, train_fg=tr_fg)
            self.selection[f"{measure}/{norm}"] = float(self.operating_point["val_auc"])
        if len(candidates) > 1:
            best = max(self.selection, key=self.selection.get)  # type: ignore[arg-type]
            measure, norm = best.split("/")
            self._prepare_maps(measure, norm, cal_x, cal_rec, is_normal)
            run.log(error_map_selection=self.selection, error_map=best)
        val_err, val_fg = self.error_maps(cal_x, cal_rec)
        train_err = train_fg = None
        if train_rec is not None:
            train_err, train_fg = self.error_maps(healthy.images, train_rec)
        self.calibrate(val_err, val_fg, is_normal, train_err=train_err, train_fg=train_fg, run=run)
        if run.out_dir is not None and self.params.figures and self.calibrated_on == "validation":
            self._figures(val, val_err, val_fg, run)  # type: ignore[arg-type]

    def _prepare_maps(
        self, measure: str, norm: str, x: Tensor, recon: Tensor, is_normal: np.ndarray
    ) -> None:
        """Use error map ``measure``; with ``norm == "zmap"`` fit the healthy per-pixel
        statistics on the ``is_normal`` slices of ``x`` (the calibration part)."""
        import torch

        from synthmri.nn.anomaly_maps import pixel_stats

        self.measure, self.pixel_stats = measure, None
        if norm == "zmap":
            keep = torch.as_tensor(is_normal)
            raw, fg = self.error_maps(x[keep], recon[keep])
            self.pixel_stats = pixel_stats(
                raw, fg, sigma=self.params.zmap_sigma, floor=self.params.zmap_floor
            )

    @property
    def normalisation(self) -> str:
        """``zmap`` when errors are normalised by healthy per-pixel statistics, else ``none``."""
        return "zmap" if self.pixel_stats is not None else "none"

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
        switch methods without retraining the VAE. The operating point reached on these
        maps is kept in ``operating_point`` (and logged with ``run``).
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
        mode, self.score_threshold = self._calibrated(scores, is_normal, run)
        spread = float(np.std(scores))
        self.score_scale = spread / 2 if spread > 0 else max(abs(self.score_threshold), 1.0) * 1e-3
        spec = float((scores[is_normal] <= self.score_threshold).mean())
        tumour = ~is_normal
        sens = float((scores[tumour] > self.score_threshold).mean()) if tumour.any() else None
        auc = None
        if tumour.any() and is_normal.any():
            from sklearn.metrics import roc_auc_score

            auc = float(roc_auc_score(tumour, scores))
        self.operating_point = {
            "calibration": mode,
            "calibrated_on": self.calibrated_on or "given",
            "error_map": f"{self.measure}/{self.normalisation}",
            "pixel_threshold": self.pixel_threshold,
            "score_threshold": self.score_threshold,
            "val_sensitivity": sens,
            "val_specificity": spec,
            "val_auc": auc,
            "n_val_normal": int(is_normal.sum()),
            "n_val_tumour": int(tumour.sum()),
        }
        if run is not None:
            run.log(score_scale=self.score_scale, **self.operating_point)

    def _calibrated(
        self, scores: np.ndarray, is_normal: np.ndarray, run: RunContext | None
    ) -> tuple[str, float]:
        """``(mode used, score threshold)``: the calibration mode after any fallback."""
        p = self.params
        mode = p.calibration
        if mode in ("youden", "f1", "sensitivity") and (is_normal.all() or not is_normal.any()):
            if run is not None:
                run.note(
                    f"vae_anomaly: calibration {mode} needs normal and tumour validation "
                    "slices; using target_specificity instead"
                )
            mode = "specificity"
        return mode, self._threshold_for(mode, scores, is_normal)

    def _pick_threshold(
        self, scores: np.ndarray, is_normal: np.ndarray, run: RunContext | None
    ) -> float:
        return self._calibrated(scores, is_normal, run)[1]

    def _threshold_for(self, mode: str, scores: np.ndarray, is_normal: np.ndarray) -> float:
        p = self.params
        if mode == "none":
            return float(p.tumor_index)
        if mode == "specificity":
            normal_scores = scores[is_normal]
            if normal_scores.size == 0:
                return float(p.tumor_index)
            # the lowest threshold that keeps target_specificity of the normals at or below it
            k = max(0, math.ceil(p.target_specificity * normal_scores.size - 1e-9) - 1)
            return float(np.sort(normal_scores)[k])
        if mode == "sensitivity":
            # the highest threshold with at least target_sensitivity of the tumour slices
            # above it: just below the k-th highest tumour score (the next lower val score)
            tumour = np.sort(scores[~is_normal])[::-1]
            need = max(1, math.ceil(p.target_sensitivity * tumour.size - 1e-9))
            kth = float(tumour[need - 1])
            below = scores[scores < kth]
            return float(below.max()) if below.size else kth - max(abs(kth), 1.0) * 1e-9
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
        """``(errors, foreground)`` ``[N, 1, H, W]``: the error map in use (absolute
        ``|x - x_hat|`` or structural ``(1 - SSIM) / 2``, channel mean, smoothed), zero
        outside the head when ``foreground_only``, and with ``zmap`` normalisation in units
        of the healthy validation errors at each pixel; and the head mask (bool)."""
        import torch
        import torch.nn.functional as F

        from synthmri.nn.anomaly_maps import (
            absolute_error,
            head_masks,
            match_intensity,
            ssim_error,
            z_map,
        )

        x = self._images(images)
        if recon is None:
            recon = self.reconstruct(x)
        p = self.params
        if p.foreground_only:
            if p.head_mask == "loader":
                fg = head_masks(x)
            else:
                fg = gaussian_smooth(x.mean(1, keepdim=True), 1.0) > p.foreground_threshold
            r = round(p.foreground_erode * self.size)
            if r > 0:  # erosion: a pixel stays head when its whole neighbourhood is head
                fg = ~(F.max_pool2d((~fg).float(), 2 * r + 1, stride=1, padding=r) > 0)
        else:
            fg = torch.ones(x.shape[0], 1, *x.shape[-2:], dtype=torch.bool)
        recon = recon.float()
        if p.match_intensity:
            recon = match_intensity(x, recon, fg)
        if self.measure == "ssim":
            raw = ssim_error(x, recon, kernel_size=p.ssim_window)
        else:
            raw = absolute_error(x, recon)
        err = gaussian_smooth(raw, p.smooth_sigma) * fg
        if self.pixel_stats is not None:
            err = z_map(err, self.pixel_stats) * fg
        return err, fg

    def _anomalous(self, errors: Tensor, foreground: Tensor) -> Tensor:
        """Pixels above the pixel threshold inside the head, morphologically cleaned."""
        from synthmri.nn.anomaly_maps import clean_binary

        p = self.params
        binary = (errors > self.pixel_threshold) & foreground
        min_pixels = round(p.clean_min_area * errors.shape[-1] * errors.shape[-2])
        return clean_binary(binary, p.clean_radius, min_pixels)

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
        # the error in octaves above the pixel threshold: scale-free, so that a z-map's
        # large values do not pull one blob apart along the error axis
        err_np = np.log2((errors[:, 0] / self.pixel_threshold).clamp(min=1.0).numpy())
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

    def case_figure(self, test: ImageSet, run: RunContext, name: str = "") -> Path | None:
        """Save, for a labelled (test) set, the best and worst cases by anomaly score against
        the label: the tumour slice with the highest and the lowest score, the normal slice
        with the lowest and the highest; per case the slice, the error map (a z-map with
        ``zmap``), the detected region and the true mask. Returns the figure's path (None
        without a run directory).

        Evaluator-free: ``predict_proba`` never sees labels or masks and has no run
        context, so the pipeline cannot draw this; ``benchmarks/anomaly_methods.py`` calls
        it on the test part after ``fit`` (which saw only train and val)."""
        from synthmri.core.artifacts import pyplot

        if test.labels is None or len(test) == 0:
            raise DataError("vae_anomaly: case_figure needs a non-empty labelled image set")
        plt = pyplot()
        x = self._images(test.images)
        errors, fg = self.error_maps(x)
        result = self.score_errors(errors, fg)
        detected = self._masks(result)
        scores = result.scores
        tumour = (test.labels != self.normal_index).numpy()
        rows: list[tuple[str, int]] = []
        for label, pool, order in (
            ("best tumour", tumour, -1),
            ("worst tumour", tumour, 1),
            ("best normal", ~tumour, 1),
            ("worst normal", ~tumour, -1),
        ):
            idx = np.flatnonzero(pool)
            if idx.size:
                rows.append((label, int(idx[np.argmin(order * scores[idx])])))
        vmax = max(float(errors.max()), 1e-6)
        unit = "z" if self.pixel_stats is not None else "error"
        fig, axes = plt.subplots(len(rows), 4, figsize=(8.4, 2.2 * len(rows)), squeeze=False)
        for r, (label, i) in enumerate(rows):
            img = x[i].mean(0).numpy()
            truth = (
                test.masks[i, 0].numpy() > 0.5
                if test.masks is not None
                else np.zeros(img.shape, bool)
            )
            pred = detected[i, 0].numpy() > 0.5
            call = "tumour" if scores[i] > self.score_threshold else "normal"
            panels = (
                (f"slice (score {scores[i]:.3g}: {call})", None),
                (f"error map ({unit})", errors[i, 0].numpy()),
                ("detected region", pred),
                ("true mask", truth),
            )
            for c, (title, overlay) in enumerate(panels):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(title, fontsize=7)
                if c == 1:
                    im = ax.imshow(overlay, cmap="magma", vmin=0, vmax=vmax)
                    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
                    continue
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                if c >= 2 and overlay is not None and overlay.any():
                    rgba = np.zeros((*img.shape, 4))
                    rgba[overlay] = (1.0, 0.0, 0.0, 0.55) if c == 2 else (0.0, 1.0, 0.0, 0.55)
                    ax.imshow(rgba)
            axes[r, 0].set_ylabel(label, fontsize=8)
            if truth.any() and (pred.any() or truth.any()):
                dice = 2 * float((pred & truth).sum()) / float(pred.sum() + truth.sum())
                axes[r, 2].set_xlabel(f"Dice {dice:.2f}", fontsize=7)
        fig.suptitle(
            f"vae_anomaly ({self.params.method}, {self.measure}/{self.normalisation}): best and "
            f"worst test cases; score threshold {self.score_threshold:.3g}",
            fontsize=9,
        )
        return run.save_figure(
            fig,
            name or f"cases-{self.params.method}",
            caption="Best and worst test slices by anomaly score against the label: per slice "
            "the image, the error map, the detected region (red) and the true mask (green). "
            "Look for: a detected region on the tumour, not on the skull rim; a missed tumour "
            "whose error map is flat means the VAE reconstructs it (too wide a network).",
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
            "measure": self.measure,
            "operating_point": dict(self.operating_point),
        }
        if self.global_centroids is not None:
            state["global_centroids"] = self.global_centroids.clone()
        if self.pixel_stats is not None:
            state["pixel_stats"] = self.pixel_stats.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the VAE and restore the calibrated decision (on the CPU)."""
        import torch

        from synthmri.nn.anomaly_maps import PixelStats
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
        self.measure = str(state.get("measure", "absolute"))
        if self.measure not in ("absolute", "ssim"):
            raise DataError(f"vae_anomaly: unknown error map {self.measure!r} in the state")
        stats = state.get("pixel_stats")
        self.pixel_stats = None if stats is None else PixelStats.from_state(dict(stats))
        self.operating_point = dict(state.get("operating_point", {}))


@hookimpl
def synthmri_register_classifiers(register: Any) -> None:
    """Register ``vae_anomaly``."""
    register(VAEAnomaly)
