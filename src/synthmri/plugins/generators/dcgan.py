"""DCGAN (Radford et al. 2016) for 2D slices, optionally conditional and/or with tumour masks.

The networks (``synthmri.nn.dcgan``): ``dcgan``, the paper's all-convolutional pair, or
``reference-keras``, the generator and discriminator of the published Keras DCGAN
brain-MRI studies, for like-for-like comparison. Training: non-saturating BCE loss (with
optional one-sided label smoothing), Adam (2e-4, beta1 0.5), DiffAugment on real and fake
before D, an EMA of G for sampling (the loop, sampling and checkpoints are the GAN base's,
``_gan``). ``conditional`` learns all classes in one model (label embedding
concatenated to z in G, projection discriminator); ``emits_masks`` learns (slice, mask)
pairs as two channels; ``mask_conditioned`` gives G the mask and lets it draw the slice
around it (the GAN base keeps the class's training masks to draw from when sampling).

Remedies against mode collapse, all off by default (``synthmri.nn.gan_training``):
``mode_seeking`` (MSGAN's term: different latents must give different images; the one
that broke the quickstart collapse, docs/results.md "DCGAN collapse"), ``loss: hinge``,
``d_norm: spectral|none``, ``g_norm: pixel|none``, ``minibatch_std``, ``r1_gamma``,
``lr_d`` (two time-scale updates), ``pose`` (z sets each slice's turn, scale and shift
through a pose head) and, from the GAN base, ``ada_target`` (adaptive DiffAugment
probability). For lesions (with a mask channel): ``mask_mismatch`` (real
slices with another sample's mask as fakes) and ``lesion_d`` (a second discriminator on
the window around each lesion).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from synthmri import hookimpl
from synthmri.core.errors import PluginError
from synthmri.nn.params import ModeSeekingWeight
from synthmri.plugins.generators._gan import GAN, GANParams, GANStep, GANTraining

if TYPE_CHECKING:
    import torch
    from torch import nn

    from synthmri.core.interfaces import ImageSet
    from synthmri.core.training import RunContext


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
        beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
        lr_d: float | None = Field(
            None,
            gt=0,
            description="Adam learning rate of D when it differs from G's (two time-scale "
            "updates, e.g. 4x lr with a spectral-norm D); null = lr",
        )
        label_smoothing: float = Field(
            0.0, ge=0, lt=0.5, description="one-sided label smoothing: real targets are 1 - s"
        )
        conditional: bool = Field(
            False, description="one model for all classes; sample(n, label=k) gives class k"
        )
        emits_masks: bool = Field(
            False, description="learn (slice, tumour mask) pairs; sample() returns masks too"
        )
        mask_conditioned: bool = Field(
            False,
            description="G is given a tumour mask (a training mask of the class, mirrored at "
            "random) and draws the slice around it; D judges (slice, mask) pairs; sample() "
            "returns the masks it drew for (architecture: dcgan; not with emits_masks)",
        )
        mask_mismatch: float = Field(
            0.0,
            ge=0.0,
            lt=1.0,
            description="mask_conditioned: this share of each D step's fake batch is real "
            "slices paired with another sample's mask (the matching-aware discriminator of "
            "Reed et al. 2016), so D learns that a lesion belongs inside its mask; 0 = off",
        )
        lesion_d: float = Field(
            0.0,
            ge=0.0,
            description="with a mask channel (mask_conditioned or emits_masks): weight in G's "
            "loss of a second, small discriminator that judges the window (a quarter of the "
            "image side) around each sample's lesion, as the global and local "
            "discriminators of Iizuka et al. 2017; one process only (not under torchrun); "
            "0 = off",
        )
        architecture: Literal["dcgan", "reference-keras"] = Field(
            "dcgan",
            description="'dcgan' (Radford et al.) or 'reference-keras' (the networks of the "
            "published Keras brain-MRI DCGAN studies, for like-for-like comparison)",
        )
        loss: Literal["bce", "hinge"] = Field(
            "bce",
            description="adversarial loss: 'bce' (non-saturating logistic) or 'hinge'",
        )
        g_norm: Literal["batch", "pixel", "none"] = Field(
            "batch",
            description="normalisation of the 'dcgan' generator: 'batch' (the paper's), "
            "'pixel' (PixelNorm: per sample, no batch statistics) or 'none'",
        )
        d_norm: Literal["batch", "spectral", "none"] = Field(
            "batch",
            description="normalisation of the 'dcgan' discriminator: 'batch' (the paper's), "
            "'spectral' (spectral norm on every conv, no BatchNorm) or 'none'",
        )
        minibatch_std: bool = Field(
            False,
            description="a minibatch standard deviation map before the 'dcgan' "
            "discriminator's head (it sees how much the samples of a batch differ)",
        )
        mode_seeking: ModeSeekingWeight = 0.0
        pose: float = Field(
            0.0,
            ge=0,
            le=90,
            description="a pose head in the 'dcgan' generator: z also turns the drawn slice "
            "by up to this many degrees, scales it within exp(+-0.15) and shifts it within "
            "5 % of the frame (a mask-conditioned G is given its mask moved the other way, "
            "so the mask still fits); 0 = off",
        )
        r1_gamma: float = Field(
            0.0,
            ge=0,
            description="weight gamma of the R1 penalty (gamma/2 E||grad D(real)||^2) on "
            "the discriminator; 0 = off",
        )

        @model_validator(mode="after")
        def _compatible(self) -> DCGAN.Params:
            if self.loss == "hinge" and self.label_smoothing:
                raise ValueError("label_smoothing is defined for loss: bce only")
            if self.mask_conditioned and (self.emits_masks or self.architecture != "dcgan"):
                raise ValueError(
                    "mask_conditioned takes the masks as input: not with emits_masks, and "
                    "for architecture: dcgan only"
                )
            if self.mask_mismatch and not self.mask_conditioned:
                raise ValueError("mask_mismatch applies with mask_conditioned: true only")
            if self.lesion_d and not (
                (self.mask_conditioned or self.emits_masks) and self.architecture == "dcgan"
            ):
                raise ValueError(
                    "lesion_d needs a mask channel (mask_conditioned or emits_masks) and "
                    "architecture: dcgan"
                )
            if self.architecture == "reference-keras" and (
                self.g_norm != "batch" or self.d_norm != "batch" or self.minibatch_std or self.pose
            ):
                raise ValueError(
                    "g_norm, d_norm, minibatch_std and pose apply to architecture: dcgan only "
                    "(the reference Keras networks are kept as published)"
                )
            return self

    def network_config(self, size: int, channels: int, n_classes: int) -> dict[str, Any]:
        """The base config plus widths and architecture."""
        p = self.params
        return {
            **super().network_config(size, channels, n_classes),
            "ngf": p.ngf,
            "ndf": p.ndf,
            "architecture": p.architecture,
            "g_norm": p.g_norm,
            "d_norm": p.d_norm,
            "minibatch_std": p.minibatch_std,
            **({"lesion_window": size // 4} if p.lesion_d else {}),
            **({"pose": p.pose} if p.pose else {}),
        }

    def build_networks(self, config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
        """The DCGAN (or reference Keras) generator and discriminator."""
        from synthmri.nn.dcgan import build_networks

        return build_networks(config)

    def optimizers(
        self, G: nn.Module, D: nn.Module, cuda: bool
    ) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """The base's Adam pair; D's learning rate is ``lr_d`` when set."""
        opt_g, opt_d = super().optimizers(G, D, cuda)
        if self.params.lr_d is not None:
            for group in opt_d.param_groups:
                group["lr"] = self.params.lr_d
        return opt_g, opt_d

    def fit(self, train: ImageSet, run: RunContext) -> None:
        """The GAN base's fit; ``lesion_d`` calls D's lesion part outside DDP, so one
        process only."""
        if self.params.lesion_d and run.world_size > 1:
            raise PluginError(
                f"{self.name}: lesion_d trains in one process, not under torchrun",
                hint="run it without torchrun, or set lesion_d: 0",
            )
        super().fit(train, run)

    def train_step(self, t: GANTraining) -> GANStep:
        """D step (real up, fake down, the same DiffAugment on both; plus the R1 penalty
        when ``r1_gamma`` and the lesion windows' loss when ``lesion_d``), then G's step
        through the updated D (non-saturating or hinge)."""
        import torch

        from synthmri.nn.gan_training import d_loss, g_loss, mode_seeking_loss, r1_penalty

        p = self.params
        real, y = t.batch()
        t.z.normal_()
        with t.autocast():
            fake = t.generate(y, real)
            real_a = t.augment(real)
            if p.r1_gamma > 0:
                real_a = real_a.detach().requires_grad_(True)
            d_real = t.D(real_a, y)
            fake_d = t.augment(t.fakes_for_d(fake.detach(), real))
            d_fake = t.D(fake_d, y)
            loss_d = d_loss(d_real, d_fake, p.loss, p.label_smoothing)
            if p.r1_gamma > 0:
                r1 = r1_penalty(d_real, real_a)
                loss_d = loss_d + 0.5 * p.r1_gamma * r1
            if p.lesion_d > 0:
                l_real, w_real = t.d.judge_lesions(real_a)
                l_fake, w_fake = t.d.judge_lesions(fake_d)
                loss_lesion = d_loss(l_real, l_fake, p.loss, p.label_smoothing, (w_real, w_fake))
                loss_d = loss_d + loss_lesion
        t.update(t.opt_d, loss_d)
        t.observe_real(d_real)
        with t.frozen_d():
            with t.autocast():
                fake_a = t.augment(fake)
                loss_g = g_loss(t.d(fake_a, y), p.loss)
                if p.lesion_d > 0:
                    l_gen, w_gen = t.d.judge_lesions(fake_a)
                    loss_g = loss_g + p.lesion_d * g_loss(l_gen, p.loss, w_gen)
                if p.mode_seeking > 0:
                    ms = mode_seeking_loss(
                        fake[:, : t.image_channels] if t.mask_input else fake, t.z
                    )
                    loss_g = loss_g + p.mode_seeking * ms
            t.update(t.opt_g, loss_g)
        losses = {
            "loss_d": loss_d,
            "loss_g": loss_g,
            "d_real": torch.sigmoid(d_real.detach().float()).mean(),
            "d_fake": torch.sigmoid(d_fake.detach().float()).mean(),
        }
        if p.r1_gamma > 0:
            losses["r1"] = r1.detach()
        if p.mode_seeking > 0:
            losses["mode_seeking"] = ms.detach()
        if p.lesion_d > 0:
            losses["loss_lesion_d"] = loss_lesion.detach()
        return GANStep(losses, real, fake)


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the DCGAN generator."""
    register(DCGAN)
