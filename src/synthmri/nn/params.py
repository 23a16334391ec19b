"""Param models of the shared model code, importable without torch.

Plugin modules import these at module level (a plugin's ``Params`` extends them), so this
module imports only pydantic.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synthmri.core.interfaces import StrictParams

__all__ = ["AdaptiveAugmentParams", "VAEParams"]


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
