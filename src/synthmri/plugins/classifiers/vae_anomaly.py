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
  the one with the highest validation ROC AUC (``selection``; logged). The validation
  slices' own z-maps are cross-fitted (two folds, whole patients per fold where the part
  has two or more: ``crossfit_folds``): a slice is never normalised by statistics it
  shaped, so the choice and the thresholds see z-values as a test slice gets them (the
  statistics kept for new slices use every healthy validation slice);
- ``clean_radius`` / ``clean_min_area``: the anomalous pixels are cleaned by a
  morphological opening and small components are dropped before any clustering;
- ``match_intensity`` (off by default): the reconstruction's intensities are fitted to
  the slice before the error.

The study's maps are ``error_measure: absolute, normalise: none, head_mask: intensity,
clean_radius: 0, clean_min_area: 0`` (``benchmarks/anomaly_methods.py`` compares both).

Calibration uses the validation part only (never the test part): the pixel threshold is the
``anomaly_threshold`` percentile of the errors of the validation part's normal slices
(inside the head when ``foreground_only``); the score threshold (``tumor_index``) is set, by
default, for recall: of the thresholds that call at least ``target_sensitivity`` of the
validation tumour slices tumour, those with the highest specificity, and of these the lowest
(``calibration: sensitivity``); ``calibration: specificity`` keeps ``target_specificity`` of
the normal slices at or below it; ``youden`` or ``f1`` picks the threshold that maximises
Youden's J (sensitivity + specificity - 1) or F1 (ties go to the higher threshold;
``synthmri.core.operating_point``). Modes that need tumour slices fall back to
``specificity`` with a note when the validation part has none. ``calibration: none`` uses
``tumor_index`` as given. Without a validation part both thresholds come from the training
normals (with a note: they are optimistic there). The operating point reached (mode,
thresholds, validation sensitivity, specificity and AUC, the error map) is kept in
``operating_point``, saved with the state and logged.

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

Everything but the VAE (the decision, calibration, masks, figures, the saved decision) is
the base ``ReconstructionAnomaly`` (``_anomaly.py``), which ``diffusion_anomaly`` and
``dae_anomaly`` share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field

from synthmri import hookimpl
from synthmri.core.errors import PluginError
from synthmri.nn.params import VAEParams
from synthmri.plugins.classifiers._anomaly import (
    METHODS,
    NORMAL_FALLBACKS,
    AnomalyParams,
    AnomalyScores,
    ReconstructionAnomaly,
    crossfit_folds,
    gaussian_smooth,
    largest_component,
)

if TYPE_CHECKING:
    from torch import Tensor

    from synthmri.core.interfaces import ImageSet
    from synthmri.core.training import RunContext
    from synthmri.nn.vae import TrainedVAE

__all__ = [
    "METHODS",
    "NORMAL_FALLBACKS",
    "AnomalyScores",
    "VAEAnomaly",
    "VAEAnomalyParams",
    "crossfit_folds",
    "gaussian_smooth",
    "largest_component",
]


class VAEAnomalyParams(AnomalyParams, VAEParams):
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


class VAEAnomaly(ReconstructionAnomaly):
    """A VAE trained on healthy slices; tumours are found from its reconstruction error."""

    name = "vae_anomaly"
    description = "VAE on healthy slices only; reconstruction error -> tumour (4 methods)"
    Params = VAEAnomalyParams
    model_keys = ("vae",)
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

    # ------------------------------------------------------------ the VAE

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

    def _train(self, healthy: ImageSet, run: RunContext) -> None:
        """Train the VAE on the healthy training slices."""
        from synthmri.nn.vae import TrainedVAE, VAENet, train_vae

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

    def _vae(self) -> TrainedVAE:
        if self.vae is None:
            raise PluginError(
                "vae_anomaly: the classifier is not trained",
                hint="call fit() or load_state_dict() first",
            )
        return self.vae

    def _is_trained(self) -> bool:
        return self.vae is not None

    def _reconstruct(self, x: Tensor) -> Tensor:
        return self._vae().reconstruct(x)

    def _model_state(self) -> dict[str, Any]:
        return {"vae": self._vae().state_dict()}

    def _load_model_state(self, state: Mapping[str, Any]) -> None:
        from synthmri.nn.vae import TrainedVAE

        self.vae = TrainedVAE.from_state(state["vae"])


@hookimpl
def synthmri_register_classifiers(register: Any) -> None:
    """Register ``vae_anomaly``."""
    register(VAEAnomaly)
