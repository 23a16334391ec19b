"""Remedies against GAN mode collapse and discriminator overfitting on small data sets.

- ``d_loss`` / ``g_loss``: the adversarial losses by name: ``bce`` (the non-saturating
  logistic loss of Goodfellow et al. 2014, with optional one-sided label smoothing) or
  ``hinge`` (Lim and Ye 2017; Miyato et al. 2018);
- ``r1_penalty``: the R1 gradient penalty on real images (Mescheder et al. 2018),
  ``E[||grad_x D(x)||^2]`` (the caller weights it by ``gamma / 2``);
- ``mode_seeking_loss``: MSGAN's term (Mao et al. 2019) that rewards the generator for
  mapping different latents to different images;
- ``MinibatchStd``: the minibatch standard deviation layer (Karras et al. 2018): one
  more feature map carrying the spread of the features across a small group of samples,
  so the discriminator can see a batch that lacks variety;
- ``PixelNorm``: the generator normalisation of the same paper (per sample and position,
  no batch statistics, no learned scale);
- ``AdaptiveAugment``: the adaptive augmentation probability of StyleGAN2-ADA (Karras et
  al. 2020), driven by the overfitting heuristic ``r_t = E[sign(D(real))]`` and applied to
  DiffAugment's ops (each op on each sample with probability ``p``);
- ``freeze_first_layers``: FreezeD (Mo et al. 2020), the fine-tuning remedy that keeps a
  pretrained discriminator's lower layers fixed and trains only the rest.

Everything stays on the device: the controller updates ``p`` with tensor ops, so it adds
no host synchronisation to a training step.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthmri.core.errors import ConfigError
from synthmri.nn.diffaugment import check_policy, diff_augment

__all__ = [
    "GAN_LOSSES",
    "AdaptiveAugment",
    "MinibatchStd",
    "PixelNorm",
    "d_loss",
    "freeze_first_layers",
    "g_loss",
    "mode_seeking_loss",
    "r1_penalty",
]

GAN_LOSSES: tuple[str, ...] = ("bce", "hinge")
Loss = Literal["bce", "hinge"]


def _bce(logits: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
    """Binary cross-entropy on logits, averaged or ``weight``-weighted (unweighted, torch's
    own reduction: its gradient differs in the last bits from a mean of the per-logit
    losses, and the unweighted losses keep their numbers)."""
    if weight is None:
        return F.binary_cross_entropy_with_logits(logits, target)
    return _mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), weight)


def _mean(x: Tensor, weight: Tensor | None) -> Tensor:
    """The mean of ``x``, or its ``weight``-weighted mean (0 when every weight is 0)."""
    if weight is None:
        return x.mean()
    weight = weight.float()
    return (x * weight).sum() / weight.sum().clamp_min(1.0)


def d_loss(
    d_real: Tensor,
    d_fake: Tensor,
    kind: Loss = "bce",
    smoothing: float = 0.0,
    weights: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """The discriminator's loss on real and fake logits (any shape, averaged; with
    ``weights``, one per logit for the real and the fake ones, weighted averages).

    ``bce``: ``BCE(D(x), 1 - smoothing) + BCE(D(G(z)), 0)``; ``hinge``:
    ``E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]`` (``smoothing`` must be 0).
    """
    d_real, d_fake = d_real.float(), d_fake.float()
    w_real, w_fake = weights if weights is not None else (None, None)
    if kind == "bce":
        real_t = torch.full_like(d_real, 1.0 - smoothing)
        return _bce(d_real, real_t, w_real) + _bce(d_fake, torch.zeros_like(d_fake), w_fake)
    if kind == "hinge":
        if smoothing:
            raise ValueError("label smoothing is defined for the bce loss only")
        return _mean(F.relu(1.0 - d_real), w_real) + _mean(F.relu(1.0 + d_fake), w_fake)
    raise ValueError(f"unknown GAN loss {kind!r}; use one of {', '.join(GAN_LOSSES)}")


def g_loss(d_gen: Tensor, kind: Loss = "bce", weight: Tensor | None = None) -> Tensor:
    """The generator's loss on the logits of its samples: non-saturating ``BCE(D(G(z)), 1)``
    (``bce``) or ``-E[D(G(z))]`` (``hinge``); ``weight``-weighted over the logits if given."""
    d_gen = d_gen.float()
    if kind == "bce":
        return _bce(d_gen, torch.ones_like(d_gen), weight)
    if kind == "hinge":
        return -_mean(d_gen, weight)
    raise ValueError(f"unknown GAN loss {kind!r}; use one of {', '.join(GAN_LOSSES)}")


def r1_penalty(d_real: Tensor, real: Tensor) -> Tensor:
    """``E[||grad_x D(x)||^2]`` over the batch, for logits ``d_real`` of the images ``real``
    (which must require grad; the graph is kept for the backward pass)."""
    (grad,) = torch.autograd.grad(d_real.float().sum(), real, create_graph=True)
    return grad.float().square().flatten(1).sum(1).mean()


def mode_seeking_loss(fake: Tensor, z: Tensor, eps: float = 1e-5) -> Tensor:
    """The mode-seeking term of MSGAN (Mao et al. 2019) for a generated batch: pairs the
    first half of ``fake`` (and of its latents ``z``) with the second half and returns
    ``1 / (mean|G(z1) - G(z2)| / mean|z1 - z2| + eps)``, small when different latents give
    different images (add it to G's loss with a weight). Zero for a batch of one."""
    h = fake.shape[0] // 2
    if h == 0:
        return fake.new_zeros(()).float()
    img = (fake[:h].float() - fake[h : 2 * h].float()).abs().flatten(1).mean(1)
    lat = (z[:h].float() - z[h : 2 * h].float()).abs().flatten(1).mean(1)
    return 1.0 / ((img / lat.clamp(min=eps)).mean() + eps)


class MinibatchStd(nn.Module):
    """Appends one feature map: the standard deviation of the features over groups of
    ``group`` samples, averaged over channels and positions (Karras et al. 2018).

    The batch is split into groups of the largest size up to ``group`` that divides it;
    each sample gets its group's value. A batch of one gets zeros.
    """

    def __init__(self, group: int = 4) -> None:
        super().__init__()
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = max(k for k in range(1, min(self.group, n) + 1) if n % k == 0)
        if g == 1:
            return torch.cat([x, x.new_zeros(n, 1, h, w)], dim=1)
        y = x.float().reshape(g, n // g, c, h, w)
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [n/g, c, h, w]
        s = std.mean(dim=(1, 2, 3)).to(x.dtype)  # [n/g]
        s = s.repeat(g).reshape(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, s], dim=1)


class PixelNorm(nn.Module):
    """Scales each sample's feature vector at each position to unit mean square (Karras et
    al. 2018): a generator normalisation without batch statistics or learned scale."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.float().square().mean(dim=1, keepdim=True) + 1e-8).to(x.dtype)


class AdaptiveAugment:
    """The StyleGAN2-ADA controller of the augmentation probability ``p``.

    ``observe(d_real)`` accumulates ``sign(D(real))``; every ``interval`` observations
    ``r_t`` (their mean) is compared with ``target``: ``p`` rises by ``batch * interval /
    speed`` when ``r_t > target`` (D is sure of the real images: it overfits) and falls by
    as much otherwise, clamped to [0, ``p_max``]. ``speed`` is the number of images over
    which ``p`` can cross from 0 to 1. ``augment`` applies each op of a DiffAugment policy
    to each sample with probability ``p``. ``p`` and the sums are device tensors.
    """

    def __init__(
        self,
        target: float,
        *,
        batch: int,
        speed: int = 5000,
        interval: int = 4,
        p_init: float = 0.0,
        p_max: float = 1.0,
        device: torch.device | str = "cpu",
    ) -> None:
        if not 0.0 < target < 1.0:
            raise ValueError(f"ADA target must be in (0, 1), got {target}")
        if speed < 1 or interval < 1 or batch < 1:
            raise ValueError("speed, interval and batch must be >= 1")
        self.target, self.interval, self.p_max = float(target), int(interval), float(p_max)
        self.step_size = batch * interval / speed
        self.p = torch.tensor(float(p_init), device=device)
        self._sum = torch.zeros((), device=device)
        self._count = torch.zeros((), device=device)
        self._seen = self._augmented = 0

    @torch.no_grad()
    def observe(self, d_real: Tensor) -> None:
        """Add the discriminator's logits on (augmented) real images; adjust ``p`` every
        ``interval`` calls."""
        self._sum += torch.sign(d_real.detach().float()).sum()
        self._count += d_real.numel()
        self._seen += 1
        if self._seen % self.interval == 0:
            r_t = self._sum / self._count.clamp(min=1)
            self.p.add_(torch.sign(r_t - self.target) * self.step_size).clamp_(0.0, self.p_max)
            self._sum.zero_()
            self._count.zero_()

    def augment(self, x: Tensor, policy: str, image_channels: int = 1) -> Tensor:
        """Each op of ``policy`` on each sample of ``x`` with probability ``p``.

        A ConfigError when ``observe`` was never called over the first 16 batches: the GAN
        does not report its discriminator's logits, so ``p`` would stay where it started.
        """
        self._augmented += 1
        if self._seen == 0 and self._augmented > 16:
            raise ConfigError(
                "ada_target: the discriminator's logits on real images were never reported "
                "(GANTraining.observe_real), so the augmentation probability cannot adapt",
                hint="set ada_target to null for this GAN",
            )
        if not policy:
            return x
        for op in check_policy(policy).split(","):
            chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
            x = torch.where(chosen, diff_augment(x, op, image_channels), x)
        return x


_WEIGHTS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def freeze_first_layers(net: nn.Module, n: int, field: str = "freeze_d") -> None:
    """Stop the gradients of ``net``'s first ``n`` convolution / linear layers (in the
    order the module registers them) and of the norm layers before the next one.

    Batch norm statistics still update in training mode. ``field`` names the setting in
    the error raised when ``n`` would leave no weight layer to train.
    """
    if n <= 0:
        return
    layers = sum(isinstance(m, _WEIGHTS) for m in net.modules())
    if n >= layers:
        raise ConfigError(
            f"{field}: {n} layers, but the network has {layers} weight layers",
            hint=f"freeze fewer than {layers}",
        )
    seen = 0
    for m in net.modules():
        if isinstance(m, _WEIGHTS):
            if seen == n:
                return
            seen += 1
        if isinstance(m, _WEIGHTS + _NORMS):
            m.requires_grad_(False)
