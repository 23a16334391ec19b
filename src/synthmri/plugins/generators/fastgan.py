"""``fastgan``: FastGAN (Liu, Zhu, Song and Elgammal, ICLR 2021), written from the paper.

"Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image Synthesis":
a light generator with **skip-layer excitation** (low-resolution features gate
high-resolution ones channel-wise) and a discriminator that is also an **encoder**: small
decoders on its 8x8 and 16x16 features reconstruct the whole real image and a random
quarter of it, which keeps D learning features that describe the image rather than
memorising the few training slices. The networks are in ``synthmri.nn.fastgan``.

Training (one step): D's hinge loss on DiffAugment-ed real and fake slices plus
``recon_weight`` times the reconstruction loss (L1 or MSE per pixel, on the real slices
D saw: the paper's perceptual LPIPS loss needs downloaded weights), then G's hinge loss
``-E[D(G(z))]`` through the frozen D; Adam (2e-4, betas 0.5/0.999) as in the paper. The
GAN base (``_gan``) adds the EMA of G used for sampling, the loop, sampling and
checkpoints, and adaptive augmentation (``ada_target``), which D's logits on the real
slices drive. ``conditional`` learns all classes in one model (a class embedding
concatenated to z in G, a projection term in D); ``emits_masks`` learns (slice, mask)
pairs as two channels (the decoders reconstruct both).

Differences from the paper: L1/MSE instead of LPIPS; one output resolution (the paper's
1024 px model also feeds D a 128 px copy); one 3x3 conv per generator block; SLE pairs
``r / 16 -> r`` for every resolution ``r`` from 64 px (at 32 px: 4 -> 32).

Widths are per resolution (``g_channels``, ``d_channels``, ``decoder_channels``): the
defaults are the GPU sizes, on the paper's scale; a recipe gives smaller ones for a CPU
(a dict given in a recipe replaces the defaults at the resolutions it names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from synthmri import hookimpl
from synthmri.plugins.generators._gan import GAN, GANParams, GANStep, GANTraining

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = ["FastGAN"]

# Mirrors synthmri.nn.fastgan (which imports torch); tests check that they agree.
_SIZES = (32, 64, 128, 256)
_G_CHANNELS = {4: 1024, 8: 512, 16: 256, 32: 128, 64: 128, 128: 64, 256: 32}
_D_CHANNELS = {8: 512, 16: 512, 32: 256, 64: 128, 128: 64}
_DECODER_CHANNELS = {16: 256, 32: 128, 64: 64, 128: 32}


_DEFAULT_WIDTHS = {
    "g_channels": _G_CHANNELS,
    "d_channels": _D_CHANNELS,
    "decoder_channels": _DECODER_CHANNELS,
}


def _widths(given: dict[int, int], field: str) -> dict[int, int]:
    """The default widths of ``field`` with those ``given`` in their place."""
    default = _DEFAULT_WIDTHS[field]
    bad = sorted(k for k in given if k not in default)
    if bad:
        raise ValueError(
            f"no resolution {', '.join(map(str, bad))} (use {', '.join(map(str, default))})"
        )
    small = sorted(k for k, c in given.items() if c < 1)
    if small:
        raise ValueError(f"widths must be >= 1 (at {', '.join(map(str, small))})")
    return {**default, **given}


class FastGAN(GAN):
    """FastGAN: SLE generator, self-supervised hinge discriminator; per class,
    conditional, or (slice, mask) pairs."""

    name: ClassVar[str] = "fastgan"
    description: ClassVar[str] = (
        "FastGAN (Liu et al. 2021): skip-layer excitation G, self-supervised D with "
        "reconstruction decoders, hinge loss, DiffAugment, EMA"
    )
    quick_params: ClassVar[dict[str, Any]] = {
        "iterations": 3,
        "batch_size": 8,
        "latent_dim": 16,
        "g_channels": {4: 16, 8: 16, 16: 8, 32: 8},
        "d_channels": {8: 16, 16: 8},
        "decoder_channels": {16: 8, 32: 4},
    }

    class Params(GANParams):
        """FastGAN params (plus the shared GAN training params)."""

        iterations: int = Field(
            10000,
            ge=1,
            description="generator steps (the paper trains tens of thousands on a GPU; see "
            "the fastgan recipe for a CPU budget)",
        )
        batch_size: int = Field(8, ge=1, description="images per step (the paper: 8)")
        latent_dim: int = Field(256, ge=1, description="size of the latent vector z")
        g_channels: dict[int, int] = Field(
            default_factory=lambda: dict(_G_CHANNELS),
            description="generator channels per resolution (4 .. image size)",
        )
        d_channels: dict[int, int] = Field(
            default_factory=lambda: dict(_D_CHANNELS),
            description="discriminator channels per feature resolution (8 .. half the size)",
        )
        decoder_channels: dict[int, int] = Field(
            default_factory=lambda: dict(_DECODER_CHANNELS),
            description="channels of D's reconstruction decoders per resolution (16 .. 128)",
        )
        lr: float = Field(2e-4, gt=0, description="Adam learning rate of G and D")
        beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1")
        beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
        recon_loss: Literal["l1", "mse"] = Field(
            "l1", description="D's reconstruction loss on real images: l1 or mse (per pixel)"
        )
        recon_weight: float = Field(
            1.0, ge=0, description="weight of the reconstruction loss in D's loss (0 = off)"
        )
        spectral_norm: bool = Field(True, description="spectral norm on D's convolutions")
        conditional: bool = Field(
            False, description="one model for all classes; sample(n, label=k) gives class k"
        )
        emits_masks: bool = Field(
            False, description="learn (slice, tumour mask) pairs; sample() returns masks too"
        )

        @field_validator("g_channels", "d_channels", "decoder_channels")
        @classmethod
        def _merge_widths(cls, v: dict[int, int], info: ValidationInfo) -> dict[int, int]:
            return _widths(v, info.field_name or "")

    def image_sizes(self) -> tuple[int, ...]:
        """32, 64, 128 and 256 px."""
        return _SIZES

    def network_config(self, size: int, channels: int, n_classes: int) -> dict[str, Any]:
        """The base config plus the widths at the resolutions this size uses."""
        from synthmri.nn.fastgan import widths_for

        p = self.params
        given = {
            "g_channels": p.g_channels,
            "d_channels": p.d_channels,
            "decoder_channels": p.decoder_channels,
        }
        widths = {key: [given[key][r] for r in res] for key, res in widths_for(size).items()}
        return {
            **super().network_config(size, channels, n_classes),
            **widths,
            "spectral_norm": p.spectral_norm,
        }

    def build_networks(self, config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
        """The SLE generator and the self-supervised discriminator."""
        from synthmri.nn.fastgan import build_fastgan

        return build_fastgan(config)

    def start_training(self, t: GANTraining) -> dict[str, Tensor]:
        """A buffer for the quarter each real image's crop is taken from."""
        import torch

        return {"part": torch.empty(t.z.shape[0], dtype=torch.long, device=t.z.device)}

    def train_step(self, t: GANTraining) -> GANStep:
        """D: hinge on real and fake plus the reconstruction of the real slices it saw;
        then G's hinge step through the updated, frozen D."""
        from synthmri.nn.fastgan import reconstruction_loss
        from synthmri.nn.gan_training import d_loss, g_loss

        p = self.params
        real, y = t.batch()
        t.z.normal_()
        part = t.buffers["part"].random_(0, 4)
        with t.autocast():
            fake = t.G(t.z, y)
            real_a = t.augment(real)
            d_real, rec_whole, rec_part = t.D(real_a, y, part)
            t.observe_real(d_real)  # drives adaptive augmentation (ada_target)
            d_fake = t.D(t.augment(t.fakes_for_d(fake.detach())), y)
            loss_adv = d_loss(d_real, d_fake, "hinge")
            loss_rec = reconstruction_loss(
                (rec_whole, rec_part), t.d.targets(real_a, part), p.recon_loss
            )
            loss_d = loss_adv + p.recon_weight * loss_rec
        t.update(t.opt_d, loss_d)
        with t.frozen_d():
            with t.autocast():
                loss_g = g_loss(t.d(t.augment(fake), y), "hinge")
            t.update(t.opt_g, loss_g)
        losses = {
            "loss_d": loss_d,
            "loss_g": loss_g,
            "loss_adv_d": loss_adv,
            "loss_recon": loss_rec,
            "d_real": d_real.detach().float().mean(),
            "d_fake": d_fake.detach().float().mean(),
        }
        return GANStep(losses, real, fake)


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the FastGAN generator."""
    register(FastGAN)
