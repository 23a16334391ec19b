"""``diffusion_anomaly``: tumour detection without tumour labels, from a diffusion model's
"repair" of each slice (AnoDDPM-style: Wyatt et al., CVPRW 2022).

A denoising diffusion model (MONAI ``DiffusionModelUNet``, trained by
``synthmri.nn.diffusion.train_diffusion``, the ``diffusion`` generator's loop) learns the
normal-class training slices only. Each slice to score is noised part of the way
(``noise_level``: a fraction of the schedule) and denoised back by the deterministic
sampler (``synthmri.nn.diffusion.noise_and_denoise``); a model that has only seen healthy
anatomy denoises a tumour into healthy tissue, so ``|x - repaired|`` shows where the tumour
is. The repaired slice is the reconstruction that the ``vae_anomaly`` decision then uses
unchanged (base ``ReconstructionAnomaly``, ``_anomaly.py``): the same error maps (absolute
or SSIM, z-maps, inside the head, cleaned), the same four decision methods (giaem, dbscan,
kmeans, global_kmeans) and the same calibration on the validation part only.

Where it deviates from AnoDDPM:

- Gaussian noise (DDPM), not AnoDDPM's multi-scale simplex noise; the partial noising and
  the full denoising chain from that step are AnoDDPM's, but the chain is DDIM's
  (``denoise_steps`` over the whole schedule, eta 0) rather than every DDPM step, so a slice
  is always repaired alike; the noise is seeded (``noise_seed``) and the same noise image
  is used for every slice (a slice's score does not depend on its batch);
- ``latent: true`` (the default, CPU-sized): a small ``AutoencoderKL`` is trained on the
  same healthy slices first and the model diffuses its latents (LDM-style); the repair is
  decoded, so the error also holds the autoencoder's own reconstruction error (the
  autoencoder, too, has seen healthy slices only). ``latent: false`` diffuses pixels, as
  AnoDDPM does;
- one noise level per model, chosen on the validation part (``benchmarks/anomaly_methods.py
  --model diffusion_anomaly``), not AnoDDPM's per-dataset choice on test images;
- ``noise_level: 0`` skips the diffusion: the reconstruction is the slice itself (pixel
  mode: a zero error map) or the autoencoder's reconstruction (latent mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field, model_validator

from synthmri import hookimpl
from synthmri.core.errors import DataError, PluginError
from synthmri.nn.params import DiffusionTrainingParams
from synthmri.plugins.classifiers._anomaly import AnomalyParams, ReconstructionAnomaly

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from synthmri.core.interfaces import ImageSet
    from synthmri.core.training import RunContext

__all__ = ["DiffusionAnomaly", "DiffusionAnomalyParams"]


class DiffusionAnomalyParams(AnomalyParams, DiffusionTrainingParams):
    """Params of ``diffusion_anomaly``: the diffusion model's, its noise level, and the
    decision's (shared with ``vae_anomaly``)."""

    iterations: int = Field(1500, ge=1, description="UNet training steps (minibatches)")
    channels: list[int] = Field([32, 64, 64], min_length=2, description="UNet channels per level")
    attention_levels: list[bool] | None = Field(
        None, description="self-attention per level (default: the lowest level only)"
    )
    num_res_blocks: int = Field(1, ge=1, description="UNet res blocks per level")
    latent: bool = Field(
        True, description="diffuse the latents of an autoencoder trained on the same slices"
    )
    noise_level: float = Field(
        0.3,
        ge=0,
        le=1,
        description="how far each slice is noised before it is denoised back: a fraction of "
        "the schedule (AnoDDPM: 0.25-0.5; 0 = no diffusion)",
    )
    denoise_steps: int = Field(
        50, ge=1, description="sampler steps over the whole schedule; those below the level run"
    )
    noise_seed: int = Field(0, description="seed of the noise (the same for every slice)")

    @model_validator(mode="after")
    def _consistent(self) -> DiffusionAnomalyParams:
        attention = self.unet_attention()
        if len(attention) != len(self.channels):
            raise ValueError("attention_levels needs one entry per level of channels")
        ae = self.ae_channels if self.latent else []
        bad = [c for c in [*self.channels, *ae] if c % self.norm_groups]
        if bad:
            raise ValueError(f"norm_groups {self.norm_groups} does not divide channels {bad}")
        attn = [c for c, a in zip(self.channels, attention, strict=True) if a]
        if any(c % self.head_channels for c in attn):
            raise ValueError(f"head_channels {self.head_channels} must divide channels {attn}")
        return self

    def unet_attention(self) -> list[bool]:
        """Attention per UNet level: as given, else at the lowest level only."""
        if self.attention_levels is not None:
            return list(self.attention_levels)
        return [False] * (len(self.channels) - 1) + [True]


class DiffusionAnomaly(ReconstructionAnomaly):
    """A diffusion model of healthy slices; tumours are found from what its partial
    noise-and-denoise changes."""

    name: ClassVar[str] = "diffusion_anomaly"
    description: ClassVar[str] = (
        "Diffusion model on healthy slices only (AnoDDPM-style, latent or pixel); "
        "noise-and-denoise error -> tumour (4 methods)"
    )
    Params = DiffusionAnomalyParams
    model_keys: ClassVar[tuple[str, ...]] = ("diffusion",)
    quick_params: ClassVar[dict[str, Any]] = {
        "iterations": 3,
        "batch_size": 8,
        "channels": [8, 16],
        "norm_groups": 4,
        "head_channels": 8,
        "ae_iterations": 3,
        "ae_channels": [8, 8, 8],
        "denoise_steps": 4,
        "log_every": 2,
        "figures": False,
    }
    batch_seed: ClassVar[int] = 17
    recon_batch: ClassVar[int] = 64

    def __init__(self, params: BaseModel | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.unet: nn.Module | None = None
        self.ae: nn.Module | None = None
        self.config: dict[str, Any] = {}
        self.device: torch.device | None = None

    # ------------------------------------------------------------ the diffusion model

    def _train(self, healthy: ImageSet, run: RunContext) -> None:
        """Train the diffusion model (the autoencoder first in latent mode) on ``healthy``."""
        import time

        from synthmri.nn.diffusion import train_diffusion
        from synthmri.nn.tensors import from_unit

        p = self.params
        down = 2 ** (len(p.channels) - 1) * (2 ** (len(p.ae_channels) - 1) if p.latent else 1)
        if self.size % down:
            raise DataError(
                f"{self.name}: {self.size} px does not fit the UNet's (and autoencoder's) levels",
                hint=f"use a data.size divisible by {down}",
            )
        self.config = {
            "channels": list(p.channels),
            "attention_levels": p.unet_attention(),
            "num_res_blocks": p.num_res_blocks,
            "size": self.size,
            "image_channels": self.channels,
            "data_channels": self.channels,
            "in_channels": self.channels,
            "norm_groups": p.norm_groups,
            "head_channels": p.head_channels,
            "n_classes": 0,
            "scheduler": p.scheduler,
            "prediction": p.prediction,
            "timesteps": p.timesteps,
            "schedule": p.schedule,
            "latent": p.latent,
            "latent_scale": 1.0,
        }
        run.log(
            diffusion_latent=p.latent,
            diffusion_channels=list(p.channels),
            diffusion_iterations=p.iterations,
            diffusion_healthy_slices=len(healthy),
            diffusion_device=run.device.type,
        )
        start = time.process_time()
        data = from_unit(healthy.images.float())
        self.unet, self.ae = train_diffusion(
            data, self.config, p, run, batch_seed=self.batch_seed, name=self.name
        )
        self.device = run.device
        self.history = {"train_cpu_seconds": time.process_time() - start}

    def _is_trained(self) -> bool:
        return self.unet is not None

    def _reconstruct(self, x: Tensor) -> Tensor:
        """Each slice noised to ``noise_level`` and denoised back (through the latents in
        latent mode), in [0, 1] on the CPU."""
        import torch

        from synthmri.nn.diffusion import NoiseSchedule, decode, encode, noise_and_denoise
        from synthmri.nn.tensors import from_unit, to_unit

        if self.unet is None:
            raise PluginError(f"{self.name}: the classifier is not trained")
        p, c = self.params, self.config
        if p.noise_level == 0 and self.ae is None:
            return x.float().clone()  # nothing to repair: exactly the input
        device = self.device or torch.device("cpu")
        schedule = NoiseSchedule(
            c["scheduler"], c["prediction"], c["timesteps"], c["schedule"], clip=not c["latent"]
        )
        step = round(p.noise_level * (int(c["timesteps"]) - 1))
        scale = float(c["latent_scale"])
        outs = []
        self.unet.eval()
        with torch.no_grad():
            for i in range(0, x.shape[0], self.recon_batch):
                z = from_unit(x[i : i + self.recon_batch].float()).to(device)
                if self.ae is not None:
                    z = encode(self.ae, z, scale)
                if p.noise_level > 0:
                    z = noise_and_denoise(self.unet, schedule, z, step, steps=p.denoise_steps,
                                          seed=p.noise_seed, shared_noise=True)  # fmt: skip
                if self.ae is not None:
                    z = decode(self.ae, z, scale)
                outs.append(to_unit(z.float()).clamp(0, 1).cpu())
        return torch.cat(outs)

    def _model_state(self) -> dict[str, Any]:
        from synthmri.nn.diffusion import model_state

        assert self.unet is not None
        return {"diffusion": {"config": dict(self.config), **model_state(self.unet, self.ae)}}

    def _load_model_state(self, state: Mapping[str, Any]) -> None:
        import torch

        from synthmri.nn.diffusion import restore_models

        try:
            model = state["diffusion"]
            config = dict(model["config"])
            unet, ae = restore_models(config, model)
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"{self.name}: state does not fit this plugin ({exc})") from None
        self.config = config
        self.unet, self.ae = unet, ae
        self.device = torch.device("cpu")


@hookimpl
def synthmri_register_classifiers(register: Any) -> None:
    """Register ``diffusion_anomaly``."""
    register(DiffusionAnomaly)
