"""``wgan_gp``: Wasserstein GAN with gradient penalty (Gulrajani et al. 2017).

The generator is the DCGAN generator (transposed convs from 4x4, BatchNorm, ReLU, tanh;
label embedding concatenated to z when conditional); the critic (``synthmri.nn.wgan``)
mirrors the DCGAN discriminator without BatchNorm, which the gradient penalty forbids.
Training follows the paper: ``n_critic`` critic steps per generator step, penalty
``gp_lambda * (||grad critic(x_hat)|| - 1)^2`` at random interpolates of real and fake,
Adam 1e-4 with betas (0, 0.9). DiffAugment (on real, fake and so the interpolates), an
EMA of G for sampling and (slice, mask) pairs (``emits_masks``) come from the GAN base
(``_gan``), as in ``dcgan``. The Wasserstein estimate
``E[critic(real)] - E[critic(fake)]`` is logged as a training curve; it falls as the
generator gets closer to the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from synthmri import hookimpl
from synthmri.plugins.generators._gan import GAN, GANParams, GANStep, GANTraining

if TYPE_CHECKING:
    from torch import Tensor, nn

    from synthmri.core.training import RunContext

__all__ = ["WGANGP"]


class WGANGP(GAN):
    """WGAN-GP on the DCGAN generator; per class, conditional, or (slice, mask) pairs."""

    name: ClassVar[str] = "wgan_gp"
    description: ClassVar[str] = (
        "WGAN-GP (Gulrajani et al. 2017): DCGAN generator, layer-norm critic, gradient penalty"
    )
    quick_params: ClassVar[dict[str, Any]] = {
        "iterations": 3,
        "n_critic": 2,
        "batch_size": 8,
        "ngf": 8,
        "ndf": 8,
    }

    class Params(GANParams):
        """WGAN-GP params (plus the shared GAN training params)."""

        iterations: int = Field(
            2000, ge=1, description="generator steps (each after n_critic critic steps)"
        )
        latent_dim: int = Field(128, ge=1, description="size of the latent vector z")
        ngf: int = Field(64, ge=1, description="generator width (channels of its last layer)")
        ndf: int = Field(64, ge=1, description="critic width (channels of its first layer)")
        lr: float = Field(1e-4, gt=0, description="Adam learning rate (G and critic)")
        beta1: float = Field(0.0, ge=0, lt=1, description="Adam beta1")
        beta2: float = Field(0.9, ge=0, lt=1, description="Adam beta2")
        n_critic: int = Field(5, ge=1, description="critic steps per generator step")
        gp_lambda: float = Field(10.0, ge=0, description="weight of the gradient penalty")
        critic_norm: Literal["layer", "none"] = Field(
            "layer", description="critic normalisation: 'layer' (GroupNorm(1, C)) or 'none'"
        )
        conditional: bool = Field(
            False, description="one model for all classes; sample(n, label=k) gives class k"
        )
        emits_masks: bool = Field(
            False, description="learn (slice, tumour mask) pairs; sample() returns masks too"
        )

        @model_validator(mode="after")
        def _no_ada(self) -> WGANGP.Params:
            if self.ada_target is not None:
                raise ValueError(
                    "ada_target is not supported: its overfitting signal E[sign(D(real))] "
                    "needs logits centred between real and fake, which a critic's are not"
                )
            return self

    batch_seed: ClassVar[int] = 23
    collapse_ratio: ClassVar[float] = 0.0  # no collapse note: watch the Wasserstein estimate

    @property
    def batches_per_step(self) -> int:
        """``n_critic`` real batches per generator step."""
        return int(self.params.n_critic)

    def seed_steps(self, run: RunContext) -> None:
        """No reseeding: the steps continue the global RNG after the networks' init."""

    def network_config(self, size: int, channels: int, n_classes: int) -> dict[str, Any]:
        """The base config plus widths and the critic's normalisation."""
        p = self.params
        return {
            **super().network_config(size, channels, n_classes),
            "ngf": p.ngf,
            "ndf": p.ndf,
            "critic_norm": p.critic_norm,
        }

    def build_networks(self, config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
        """The DCGAN generator and the critic."""
        from synthmri.nn.wgan import build_wgan_networks

        return build_wgan_networks(config)

    def start_training(self, t: GANTraining) -> dict[str, Tensor]:
        """A buffer for the interpolation weights."""
        import torch

        return {"eps": torch.empty(t.z.shape[0], 1, 1, 1, device=t.z.device)}

    def train_step(self, t: GANTraining) -> GANStep:
        """``n_critic`` critic steps (one forward over real, fake and interpolates), then a
        generator step through the frozen critic."""
        import torch

        from synthmri.nn.wgan import penalty

        p = self.params
        eps = t.buffers["eps"]
        b = eps.shape[0]
        critic: list[Tensor] = []  # per critic step: wasserstein, loss_d, gp
        for _ in range(p.n_critic):
            real, y = t.batch()
            t.z.normal_()
            eps.uniform_()
            with torch.no_grad(), t.autocast():
                fake = t.g(t.z, y)
            with t.autocast():
                real_a = t.augment(real)
                fake_a = t.augment(t.fakes_for_d(fake)).to(real_a.dtype)
                x_hat = torch.lerp(fake_a, real_a, eps).requires_grad_(True)
                yy = None if y is None else torch.cat([y, y, y])
                scores = t.D(torch.cat([real_a, fake_a, x_hat]), yy).float()
                d_real, d_fake, d_hat = scores.split(b)
                gp = penalty(d_hat, x_hat)
                w_est = d_real.mean() - d_fake.mean()
                loss_d = p.gp_lambda * gp - w_est
            t.update(t.opt_d, loss_d)
            critic.append(torch.stack([w_est, loss_d, gp]).detach())
        # -- G step through the frozen critic (outside DDP: no gradient sync for D)
        with t.frozen_d():
            t.z.normal_()
            with t.autocast():
                fake = t.G(t.z, y)
                loss_g = -t.d(t.augment(fake), y).float().mean()
            t.update(t.opt_g, loss_g)
        w, ld, gpv = torch.stack(critic).mean(0)
        return GANStep({"wasserstein": w, "loss_d": ld, "loss_g": loss_g, "gp": gpv}, real, fake)


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the WGAN-GP generator."""
    register(WGANGP)
