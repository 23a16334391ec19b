"""DCGAN (Radford et al. 2016) for 2D slices, optionally conditional and/or with tumour masks.

The networks (``synthmri.nn.dcgan``): ``dcgan``, the paper's all-convolutional pair, or
``reference-keras``, the generator and discriminator of the published Keras DCGAN
brain-MRI studies, for like-for-like comparison. Training: non-saturating BCE loss (with
optional one-sided label smoothing), Adam (2e-4, beta1 0.5), DiffAugment on real and fake
before D, an EMA of G for sampling (the loop, sampling and checkpoints are the GAN base's,
``_gan``). ``conditional`` learns all classes in one model (label embedding
concatenated to z in G, projection discriminator); ``emits_masks`` learns (slice, mask)
pairs as two channels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from synthmri import hookimpl
from synthmri.plugins.generators._gan import GAN, GANParams, GANStep, GANTraining

if TYPE_CHECKING:
    from torch import Tensor, nn


class DCGAN(GAN):
    """Deep convolutional GAN; per class, conditional, or emitting (slice, mask) pairs."""

    name: ClassVar[str] = "dcgan"
    description: ClassVar[str] = (
        "DCGAN (Radford et al. 2016) with DiffAugment and EMA; optional conditional and masks"
    )
    quick_params: ClassVar[dict[str, Any]] = {"iterations": 5, "batch_size": 8, "ngf": 8, "ndf": 8}

    class Params(GANParams):
        """DCGAN params (plus the shared GAN training params)."""

        iterations: int = Field(
            200,
            ge=1,
            description="generator steps (200: recognisable 64 px phantom slices in ~2 min "
            "of a 2-core CPU; raise it for real data, larger images and a GPU)",
        )
        latent_dim: int = Field(100, ge=1, description="size of the latent vector z")
        ngf: int = Field(64, ge=1, description="generator width (channels of its last layer)")
        ndf: int = Field(64, ge=1, description="discriminator width (channels of its first layer)")
        lr: float = Field(
            5e-4,
            gt=0,
            description="Adam learning rate of G and D (5e-4 converges in a short CPU budget "
            "with DiffAugment and EMA; the paper's 2e-4 needs ~2x the steps)",
        )
        beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1")
        label_smoothing: float = Field(
            0.0, ge=0, lt=0.5, description="one-sided label smoothing: real targets are 1 - s"
        )
        conditional: bool = Field(
            False, description="one model for all classes; sample(n, label=k) gives class k"
        )
        emits_masks: bool = Field(
            False, description="learn (slice, tumour mask) pairs; sample() returns masks too"
        )
        architecture: Literal["dcgan", "reference-keras"] = Field(
            "dcgan",
            description="'dcgan' (Radford et al.) or 'reference-keras' (the networks of the "
            "published Keras brain-MRI DCGAN studies, for like-for-like comparison)",
        )

    def network_config(self, size: int, channels: int, n_classes: int) -> dict[str, Any]:
        """The base config plus widths and architecture."""
        p = self.params
        return {
            **super().network_config(size, channels, n_classes),
            "ngf": p.ngf,
            "ndf": p.ndf,
            "architecture": p.architecture,
        }

    def build_networks(self, config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
        """The DCGAN (or reference Keras) generator and discriminator."""
        from synthmri.nn.dcgan import build_networks

        return build_networks(config)

    def start_training(self, t: GANTraining) -> dict[str, Tensor]:
        """BCE targets, made once: real (1 - label smoothing), fake 0, generator 1."""
        import torch

        b, device = t.z.shape[0], t.z.device
        return {
            "real": torch.full((b,), 1.0 - self.params.label_smoothing, device=device),
            "fake": torch.zeros(b, device=device),
            "gen": torch.ones(b, device=device),
        }

    def train_step(self, t: GANTraining) -> GANStep:
        """D step (real up, fake down, the same DiffAugment on both), then G's
        non-saturating step through the updated D."""
        import torch
        import torch.nn.functional as F

        real, y = t.batch()
        t.z.normal_()
        with t.autocast():
            fake = t.G(t.z, y)
            d_real = t.D(t.augment(real), y)
            d_fake = t.D(t.augment(fake.detach()), y)
            loss_d = F.binary_cross_entropy_with_logits(
                d_real.float(), t.buffers["real"]
            ) + F.binary_cross_entropy_with_logits(d_fake.float(), t.buffers["fake"])
        t.update(t.opt_d, loss_d)
        with t.frozen_d():
            with t.autocast():
                d_gen = t.d(t.augment(fake), y)
                loss_g = F.binary_cross_entropy_with_logits(d_gen.float(), t.buffers["gen"])
            t.update(t.opt_g, loss_g)
        losses = {
            "loss_d": loss_d,
            "loss_g": loss_g,
            "d_real": torch.sigmoid(d_real.detach().float()).mean(),
            "d_fake": torch.sigmoid(d_fake.detach().float()).mean(),
        }
        return GANStep(losses, real, fake)


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the DCGAN generator."""
    register(DCGAN)
