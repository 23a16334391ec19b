"""Param models of the shared model code, importable without torch.

Plugin modules import these at module level (a plugin's ``Params`` extends them), so this
module imports only pydantic.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from synthmri.core.interfaces import StrictParams

__all__ = ["AdaptiveAugmentParams", "DiffusionTrainingParams", "ModeSeekingWeight", "VAEParams"]

ModeSeekingWeight = Annotated[
    float,
    Field(
        ge=0,
        description="weight of MSGAN's mode-seeking term (Mao et al. 2019) in G's loss: "
        "different latents must give different images; 0 = off",
    ),
]
"""A GAN's ``mode_seeking`` param (``synthmri.nn.gan_training.mode_seeking_loss``)."""


class AdaptiveAugmentParams(StrictParams):
    """Adaptive augmentation (StyleGAN2-ADA) of a GAN that uses DiffAugment (``diffaugment``,
    declared by the subclass); ``synthmri.nn.gan_training.AdaptiveAugment`` does the work."""

    ada_target: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="adaptive augmentation (StyleGAN2-ADA; 0.6 in the paper): each "
        "DiffAugment op on each sample with a probability p that rises while "
        "E[sign(D(real))] is above this target (D overfits) and falls while it is below "
        "('auto' then means every op, whatever the data size); null = every op always",
    )
    ada_speed: int = Field(
        5000, ge=1, description="images over which the adaptive p can go from 0 to 1"
    )

    @model_validator(mode="after")
    def _ada_needs_ops(self) -> AdaptiveAugmentParams:
        if self.ada_target is not None and not getattr(self, "diffaugment", "auto"):
            raise ValueError("ada_target needs DiffAugment ops (diffaugment: auto or a list)")
        return self


class VAEParams(StrictParams):
    """Params of the ``vae`` generator (and of anything that trains a ``VAENet``)."""

    iterations: int = Field(
        1500,
        ge=1,
        description="training steps (minibatches); steps rather than epochs so the cost "
        "does not grow with the data set",
    )
    batch_size: int = Field(32, ge=1, description="images per step (per process under DDP)")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    latent_dim: int = Field(512, ge=2, description="size of the latent code")
    base_channels: int = Field(
        32,
        ge=4,
        le=32,
        description="network width: channels of the first encoder block, doubled per block; "
        "the decoder starts from 2 x 2 x (32 * base_channels) = 1024 at the default",
    )
    recon_loss: Literal["bce", "l1", "mse"] = Field(
        "bce", description="reconstruction term, summed over pixels: bce, l1 or mse"
    )
    beta: float = Field(1.0, ge=0, description="weight of the KL term (1 = the plain ELBO)")
    kl_warmup: int = Field(
        300, ge=0, description="steps over which the KL weight rises linearly from 0 to beta"
    )
    augment: bool = Field(
        False, description="random flips, small rotations/scaling and intensity jitter"
    )
    log_every: int = Field(50, ge=1, description="steps between log.jsonl lines (host syncs)")
    sample_every: int = Field(
        0, ge=0, description="steps between sample grids in figures/ (0 = only at the end)"
    )


class DiffusionTrainingParams(StrictParams):
    """What ``synthmri.nn.diffusion.train_diffusion`` reads: the UNet's training, the noise
    schedule and, in latent mode, the autoencoder (the ``diffusion`` generator and the
    ``diffusion_anomaly`` classifier extend it)."""

    iterations: int = Field(3000, ge=1, description="UNet training steps (minibatches)")
    batch_size: int = Field(32, ge=1, description="images per step (per process under DDP)")
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate of the UNet")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    grad_clip: float | None = Field(1.0, gt=0, description="gradient norm clip (null: off)")
    ema: float | None = Field(
        0.999, gt=0, lt=1, description="EMA decay of the UNet weights in use (null: raw)"
    )
    norm_groups: int = Field(
        8, ge=1, description="GroupNorm groups (must divide every channel count, AE included)"
    )
    head_channels: int = Field(32, ge=1, description="channels per attention head")
    scheduler: Literal["ddpm", "rflow"] = Field(
        "ddpm", description="ddpm (DDIM sampling) or rflow (rectified flow, Euler sampling)"
    )
    prediction: Literal["epsilon", "v"] = Field(
        "epsilon", description="what the UNet predicts under ddpm (rflow always predicts velocity)"
    )
    timesteps: int = Field(1000, ge=2, description="training noise steps")
    schedule: Literal["linear_beta", "scaled_linear_beta", "cosine"] = Field(
        "linear_beta", description="beta schedule of ddpm"
    )
    latent: bool = Field(False, description="train an autoencoder first; diffuse its latents")
    ae_channels: list[int] = Field(
        [32, 64, 64],
        min_length=2,
        description="autoencoder channels per level; each level after the first halves "
        "the size (64 px, three levels: 16 px latents)",
    )
    latent_channels: int = Field(4, ge=1, description="latent channels of the autoencoder")
    ae_iterations: int = Field(1500, ge=1, description="autoencoder training steps")
    ae_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the autoencoder")
    ae_kl_weight: float = Field(1e-6, ge=0, description="weight of the autoencoder's KL term")
    ae_adversarial_weight: float = Field(
        0.0,
        ge=0,
        description="weight of a patch adversarial term in the autoencoder's loss (0: L1 "
        "only, blurred); it starts after a quarter of ae_iterations",
    )
    log_every: int = Field(50, ge=1, description="steps between log.jsonl lines (host syncs)")
