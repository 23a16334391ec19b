"""The WGAN-GP critic and gradient penalty (Gulrajani et al. 2017).

The critic mirrors the DCGAN discriminator without BatchNorm, which the gradient penalty
forbids: strided 4x4 convs with layer normalisation (``GroupNorm(1, C)``, per sample) or
none, LeakyReLU 0.2, a 4x4 conv to one unbounded score, plus a projection term when
conditional. The generator is the DCGAN generator (``synthmri.nn.dcgan``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from synthmri.nn.dcgan import DCGANGenerator, Projection, ProjectionDiscriminator

__all__ = ["WGANCritic", "build_wgan_networks", "gradient_penalty", "penalty"]


class WGANCritic(ProjectionDiscriminator):
    """Images ``[N, C, S, S]`` -> scores ``[N]``: strided convs to 4x4, no BatchNorm.

    ``norm="layer"`` puts ``GroupNorm(1, C)`` (layer norm over C, H, W, per sample)
    after every conv but the first; ``"none"`` uses no normalisation. With
    ``n_classes > 0`` a projection term ``<embed(y), sum of features>`` is added.
    """

    def __init__(
        self,
        size: int,
        channels: int,
        ndf: int,
        n_classes: int = 0,
        norm: Literal["layer", "none"] = "layer",
    ) -> None:
        super().__init__()
        steps = (size // 4).bit_length() - 1  # stride-2 convs from size to 4x4
        width = [ndf * min(2**i, 8) for i in range(steps)]
        layers: list[nn.Module] = [nn.Conv2d(channels, width[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for i in range(1, steps):
            layers.append(nn.Conv2d(width[i - 1], width[i], 4, 2, 1))
            if norm == "layer":
                layers.append(nn.GroupNorm(1, width[i]))
            layers.append(nn.LeakyReLU(0.2, True))
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width[-1], 1, 4, 1, 0)
        self.proj = Projection(n_classes, width[-1]) if n_classes > 0 else None


def build_wgan_networks(config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
    """(G, critic) for a network config: size, channels, latent_dim, ngf, ndf, n_classes,
    critic_norm."""
    size, ch, k = int(config["size"]), int(config["channels"]), int(config["n_classes"])
    G = DCGANGenerator(size, ch, int(config["latent_dim"]), int(config["ngf"]), k)
    D = WGANCritic(size, ch, int(config["ndf"]), k, config.get("critic_norm", "layer"))
    return G, D


def penalty(scores: Tensor, x_hat: Tensor) -> Tensor:
    """Mean of ``(||d scores / d x_hat|| - 1)^2`` over the batch (graph kept for backward)."""
    (grad,) = torch.autograd.grad(scores.float().sum(), x_hat, create_graph=True)
    norm = torch.sqrt(grad.float().flatten(1).square().sum(1) + 1e-12)
    return (norm - 1.0).square().mean()


def gradient_penalty(
    critic: Callable[..., Tensor],
    real: Tensor,
    fake: Tensor,
    labels: Tensor | None = None,
    eps: Tensor | None = None,
) -> Tensor:
    """The WGAN-GP penalty ``E[(||grad critic(x_hat)||_2 - 1)^2]`` (without lambda).

    ``x_hat = eps * real + (1 - eps) * fake`` with ``eps`` ``[N, 1, 1, 1]`` uniform in
    [0, 1] per sample (drawn when not given). Zero for a critic that is exactly
    1-Lipschitz with unit gradient everywhere (e.g. ``x -> <w, x>`` with ``||w|| = 1``).
    """
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    return penalty(critic(x_hat, labels), x_hat)
