"""The GAN base's params and the state of one training: what ``train_step`` works with.

Importing this module loads no torch (the GAN base imports it at module level).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import Field, field_validator

from synthmri.nn.diffaugment import AUTO_POLICY, AUTO_THRESHOLD, check_policy
from synthmri.nn.params import AdaptiveAugmentParams

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from synthmri.nn.gan_training import AdaptiveAugment
    from synthmri.nn.tensors import IndexBlocks

__all__ = ["GANParams", "GANStep", "GANTraining"]


# ------------------------------------------------------------------ params


class GANParams(AdaptiveAugmentParams):
    """Training params every GAN here shares (``ada_*``: adaptive augmentation)."""

    iterations: int = Field(2000, ge=1, description="generator steps")
    batch_size: int = Field(32, ge=1, description="images per step (per process under DDP)")
    diffaugment: str | None = Field(
        "auto",
        description="DiffAugment policy on real and fake images before the discriminator: "
        f"'auto' ('{AUTO_POLICY}' below {AUTO_THRESHOLD} training images, else off), a comma "
        "list of color/gain/translation/cutout (gain: colour's brightness as a factor, so the "
        "background stays black), or null/'' for off",
    )
    ema: float | None = Field(
        0.999, gt=0.0, lt=1.0, description="EMA decay of the G weights sampled; null = the raw G"
    )
    log_every: int = Field(50, ge=1, description="steps between log.jsonl lines (host syncs)")
    sample_every: int = Field(
        0, ge=0, description="steps between sample grids in figures/ (0 = only at the end)"
    )
    freeze_d: int = Field(
        0,
        ge=0,
        description="FreezeD (Mo et al. 2020): a model fine-tuned from another (warm_start) "
        "keeps the first N weight layers of D (and the norms between them) as they start; "
        "no effect on a model trained from scratch",
    )
    negative_share: float = Field(
        0.25,
        ge=0.0,
        lt=1.0,
        description="negative data augmentation (NDA, Sinha et al. 2021): with negatives (a "
        "recipe entry's `negatives` class), this share of each D step's fake batch is real "
        "negatives instead, so D learns that they are not this class; no effect without them",
    )

    @field_validator("diffaugment")
    @classmethod
    def _valid_policy(cls, v: str | None) -> str | None:
        if v is None or v == "auto":
            return v
        if v.strip().lower() in ("", "none", "off"):
            return ""
        return check_policy(v.lower())


# ------------------------------------------------------------------ one training run


class GANStep(NamedTuple):
    """What ``GAN.train_step`` returns."""

    losses: dict[str, Tensor]
    """Scalar tensors, logged as their means over ``log_every`` steps; ``loss_d`` and
    ``loss_g`` are required (a NaN in either stops training)."""
    real: Tensor
    """The last real batch the step used (for the logged batch diversity)."""
    fake: Tensor
    """The last generated batch."""


@dataclass
class GANTraining:
    """The state of one ``GAN.fit``: what ``train_step`` works with."""

    G: nn.Module
    """The generator being trained (DDP-wrapped under torchrun)."""
    D: nn.Module
    """The discriminator being trained (DDP-wrapped under torchrun)."""
    g: nn.Module
    """The generator itself (unwrapped)."""
    d: nn.Module
    """The discriminator itself: call it for G's loss inside ``frozen_d`` (no DDP sync)."""
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    z: Tensor
    """A latent buffer ``[batch, latent_dim]`` on the device: refill it with ``z.normal_()``."""
    policy: str
    """The DiffAugment policy ('' = off)."""
    image_channels: int
    """Image channels (the mask channel, when ``emits_masks``, comes after them)."""
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]
    """bf16 autocast on CUDA, nothing on the CPU: ``with t.autocast(): ...``."""
    data: Tensor
    """The whole training set on the device, in [-1, 1] (``batch`` indexes it)."""
    labels: Tensor | None
    """Its labels on the device (None unless conditional)."""
    blocks: IndexBlocks
    """The minibatch order, moved to the device ``log_every`` steps at a time."""
    buffers: dict[str, Tensor] = field(default_factory=dict)
    """Tensors the GAN made once in ``start_training`` (e.g. loss targets)."""
    ada: AdaptiveAugment | None = None
    """The adaptive augmentation controller (``ada_target``), or None (plain DiffAugment)."""
    negatives: Tensor | None = None
    """Real negatives on the device, in [-1, 1] (``use_negatives``), or None."""
    negative_share: float = 0.0
    """The share of D's fake batch that ``fakes_for_d`` replaces by negatives."""
    negatives_mixed: bool = False
    """Set by ``fakes_for_d``: ``fit`` checks that a GAN given negatives mixes them in."""
    mask_input: bool = False
    """Mask-conditioned (``mask_conditioned``): G is given masks, D judges (slice, mask)."""
    mismatch_share: float = 0.0
    """Mask-conditioned: the share of D's fake batch that ``fakes_for_d`` replaces by real
    slices paired with another sample's mask (``mask_mismatch``)."""

    def batch(self) -> tuple[Tensor, Tensor | None]:
        """The next real minibatch in [-1, 1] and its labels (None unless conditional)."""
        idx = self.blocks.next()
        return self.data[idx], self.labels[idx] if self.labels is not None else None

    def generate(self, y: Tensor | None, real: Tensor) -> Tensor:
        """G's batch for the latents ``z``: ``G(z, y)``. Mask-conditioned, ``G(z, y, m)``
        for the masks ``m`` of the real batch ``real``, with ``m`` appended as the channel
        D judges beside the slice."""
        if not self.mask_input:
            return self.G(self.z, y)
        import torch

        m = real[:, self.image_channels :]
        return torch.cat([self.G(self.z, y, m), m], dim=1)

    def augment(self, x: Tensor) -> Tensor:
        """DiffAugment of ``x`` with the run's policy (use it on real and fake alike); under
        ``ada_target`` each op on each sample with the adaptive probability."""
        from synthmri.nn.diffaugment import diff_augment

        if self.ada is not None:
            return self.ada.augment(x, self.policy, self.image_channels)
        return diff_augment(x, self.policy, self.image_channels)

    def fakes_for_d(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        """D's fake batch: ``fake``, its first ``round(negative_share * batch)`` images
        (at least one generated image left) replaced by random negatives when the fit has
        them (NDA); then, mask-conditioned with ``mismatch_share`` and the real batch
        ``real`` given, its last images replaced by ``mismatched(real)``. Every D step
        calls it."""
        import torch

        self.negatives_mixed = True
        neg, b = self.negatives, fake.shape[0]
        k = 0 if neg is None else min(round(self.negative_share * b), b - 1)
        if neg is not None and k > 0:
            idx = torch.randint(len(neg), (k,), device=neg.device)
            fake = torch.cat([neg[idx].to(fake.dtype), fake[k:]])
        j = 0 if real is None or not self.mask_input else round(self.mismatch_share * b)
        j = min(j, b - k - 1)
        if j > 0:
            fake = torch.cat([fake[: b - j], self.mismatched(real[b - j :], fake[b - j :])])
        return fake

    def mismatched(self, real: Tensor, fallback: Tensor) -> Tensor:
        """The matching-aware discriminator's negatives (Reed et al. 2016): each real
        slice of ``real`` with the mask of the sample before it (a lesion without its mask, a
        mask without its lesion); where the two masks are the same (e.g. both empty), the
        pair would be real, so ``fallback`` (generated pairs) is kept there instead."""
        import torch

        c = self.image_channels
        m = real[:, c:]
        other = torch.roll(m, 1, dims=0)
        pair = torch.cat([real[:, :c], other], dim=1).to(fallback.dtype)
        differs = (m != other).flatten(1).any(1).view(-1, 1, 1, 1)
        return torch.where(differs, pair, fallback)

    def observe_real(self, d_real: Tensor) -> None:
        """D's logits on the augmented real batch, once per D step: they drive ``ada``."""
        if self.ada is not None:
            self.ada.observe(d_real)

    @staticmethod
    def update(opt: torch.optim.Optimizer, loss: Tensor) -> None:
        """One optimiser step on ``loss``: zero the gradients, backward, step."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @contextlib.contextmanager
    def frozen_d(self) -> Iterator[None]:
        """D's weights need no gradient in G's step: inside this block they have none,
        which saves the weight-gradient half of D's backward pass (call ``t.d``). Layers
        frozen for the whole fit (``freeze_d``) stay frozen after it."""
        for q in self._trainable_d:
            q.requires_grad_(False)
        try:
            yield
        finally:
            for q in self._trainable_d:
                q.requires_grad_(True)

    @cached_property
    def _trainable_d(self) -> list[nn.Parameter]:
        """D's parameters that train (all but ``freeze_d``'s), listed once per fit."""
        return [q for q in self.d.parameters() if q.requires_grad]
