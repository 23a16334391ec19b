"""One-Shot GAN (Sushko, Gall and Khoreva, CVPRW 2021), written from the paper.

A GAN meant for very little data: one image, one video, or one small class.

- **Generator**: a latent code (``latent_dim``) is mapped by a bias-free linear layer to
  a small ``base`` x ``base`` map (3 to 7 px, so that repeated 2x upsampling reaches the
  image size: 4 px for 32/64/128), then one residual block at that size and ``n_up``
  residual blocks that upsample x2 (bilinear + 3x3 conv, spectral norm, batch norm,
  LeakyReLU; bilinear because nearest gave hatched textures in short runs). Every block
  has an image output (3x3 conv to the image channels); the outputs are summed across
  scales (each upsampled bilinearly to the next) and ``tanh`` gives the image at every
  scale; the last scale is the sample. 32 px: 4 blocks, 64 px: 5, 128 px: 6.
- **Discriminator**: a shared low-level trunk of residual downsampling blocks (spectral
  norm), then two branches: *content* (global average pooling, then 1x1-conv residual
  blocks: judges what is there, not where) and *layout* (a 1x1 conv collapses the
  channels to one map, then 3x3-conv residual blocks: judges where things are, not what
  they look like). Every block of the trunk and of both branches has its own 1x1-conv
  decision head producing logits (low-level and layout: one per position; content: one
  per image). 64 px: 6 blocks deep, 2 of them low-level; 128 px: 7 (3 low-level); 32 px:
  4 (1 low-level). Every discriminator conv, heads included, has spectral norm; weights
  start from N(0, 0.02) and the heads' logits are scaled by ``HEAD_GAIN`` (both make
  the per-pixel heads leave chance level much sooner). The content branch is
  ``max_channels`` wide (1x1 convs on a pooled vector cost almost nothing).
- **Loss**: BCE with logits (non-saturating for G); each group's heads averaged;
  ``L_adv = L_content + L_layout + 2 L_low``; the generator minimises
  ``L_adv - dr_lambda * L_DR``, where the diversity regularisation ``L_DR`` is the mean
  L1 distance between the generator's block outputs for two latent codes, averaged over
  blocks. Not divided by the latents' distance by default (as we read the paper's
  equation; ``dr_normalize: true`` divides each pair's distance by the mean L1 distance
  of its two latents, mode-seeking style), but each block's distance is taken relative
  to that block's mean absolute activation: the generator's batch norm would otherwise
  let it inflate L_DR without end by scaling features.
- **Feature augmentation** of the *real* discriminator features at the branch inputs,
  each sample with probability ``feature_aug_p``: channel mixing with another real
  sample and channel dropout for the content branch, a rectangle taken from another
  real sample's feature map for the layout branch. DiffAugment on the images
  (``diffaugment``) on top; keep it on: with translation only, the discriminator's
  layout branch wins within ~100 steps at 64 px and the generator collapses to one
  image.
- **Modes**: ``images_per_model: null`` trains one model on all images given (the
  pipeline gives one class); ``images_per_model: 1`` trains one model per training
  image as in the paper (at most ``max_models``; the rest are skipped with a note) and
  ``sample`` draws evenly across the models.
- **Global branch** (``global_weight`` > 0; not in the paper, off by default): the
  DCGAN discriminator (strided convs with batch norm down to a 4 to 7 px map, one logit
  per image; width ``4 * channels``) added beside the two branches as a judge of the
  whole image, its BCE weighted by ``global_weight`` in ``L_adv``. See below for why.

Slow start of the paper's discriminator (measured on CPU, 64 px phantoms, one class of
200, batch 16, about 0.45 s per step on one core): in 300 to 600 steps its samples are
rectangular frames with vertical stripes, not head shapes; they collapse towards one shape
around step 500 and become head-shaped ovals with a skull ring and a midline only by step
2000 (about 17 minutes). Swapping the networks locates the cause in the discriminator:
this generator against a plain DCGAN discriminator makes head shapes with a skull ring in
300 steps, while a DCGAN generator against this discriminator makes checkerboard squares.
No variant of the two-branch discriminator alone fixed it within 300 steps: without
spectral norm (blobs, then boxes and stripes), with batch norm (white or dark frames),
one branch alone (content: blotches; layout: vertical stripes; low-level: diagonal
strokes), only the deepest head of each group, a 32-channel layout branch, lr 1e-3,
lr_d 4x lr_g, without feature augmentation or L_DR, or DiffAugment without cutout. Its
heads judge local texture, pooled statistics or a one-channel map, and none of them sees
the whole image with all its channels; they give the generator little to go on until
many steps have passed. With ``global_weight: 1`` the samples are head-shaped ovals with
a skull ring and midline by step 300 (2.5 minutes), at about 20 % more time per step
(benchmarks/README.md); later they swing between interior shapes (a zigzag shared by the
batch at step 450) and stay low in within-class diversity. The ``gan-zoo`` recipe uses
it; the ``oneshot-gan`` recipe (the published study) keeps the paper's discriminator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from synthmri import hookimpl
from synthmri.core.errors import ConfigError, DataError, PluginError
from synthmri.core.interfaces import Generator, ImageSet
from synthmri.core.training import RunContext, check_finite, minibatches, unwrap
from synthmri.plugins.generators._common import (
    EMA,
    GANParams,
    batch_diversity,
    diff_augment,
    from_unit,
    latent_seeded,
    resolve_policy,
    save_sample_grid,
    to_unit,
)
from synthmri.plugins.generators.dcgan import DCGANDiscriminator

__all__ = [
    "OneShotDiscriminator",
    "OneShotGAN",
    "OneShotGenerator",
    "augment_content",
    "augment_layout",
    "block_plan",
    "diversity_loss",
]

COLLAPSE_THRESHOLD = 0.01
"""Mean pairwise per-pixel L1 distance (images in [0, 1]) below which a note warns of collapse."""

_STATE_VERSION = 1


# ------------------------------------------------------------------ architecture plan


def block_plan(size: int) -> dict[str, int]:
    """Block counts for an image size: ``base`` px start, ``n_up`` upsamplings, D blocks.

    ``size`` must be ``base * 2**n_up`` with ``base`` in 3..7 and ``n_up >= 2``. The
    generator has ``1 + n_up`` blocks; the discriminator ``n_low = max(1, n_up - 2)``
    low-level blocks and ``n_branch = min(4, n_up)`` blocks in each branch (64 px: 5 G
    blocks, D 2 + 4; 128 px: 6, D 3 + 4; 32 px: 4, D 1 + 3).
    """
    n_up = 0
    while size % (2 ** (n_up + 1)) == 0 and size // 2 ** (n_up + 1) >= 3:
        n_up += 1
    base = size // 2**n_up
    if n_up < 2 or not 3 <= base <= 7:
        raise ConfigError(
            f"oneshot_gan cannot build an image of {size} px",
            hint="use a size that is 3 to 7 times a power of two, at least 12 "
            "(e.g. data.size 32, 64, 96 or 128)",
        )
    return {
        "base": base,
        "n_up": n_up,
        "n_low": max(1, n_up - 2),
        "n_branch": min(4, n_up),
    }


def _width(channels: int, max_channels: int, factor: int) -> int:
    return int(min(max_channels, channels * factor))


INIT_STD = 0.02
"""Weights start from N(0, 0.02) (biases 0). Spectral norm removes their scale from the
forward pass but not from learning: Adam moves weights by about ``lr`` per step, so small
weights change fast relative to their size (with PyTorch's default init, the two-branch
discriminator barely leaves chance level in the first few hundred steps)."""


def _init(layer: nn.Conv2d | nn.Linear) -> nn.Module:
    nn.init.normal_(layer.weight, 0.0, INIT_STD)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _sn_conv(cin: int, cout: int, k: int) -> nn.Module:
    return spectral_norm(_init(nn.Conv2d(cin, cout, k, padding=k // 2)))


# ------------------------------------------------------------------ generator


def _g_conv(cin: int, cout: int, k: int) -> nn.Module:
    """A generator conv: PyTorch's default init, spectral norm."""
    return spectral_norm(nn.Conv2d(cin, cout, k, padding=k // 2))


class _GBlock(nn.Module):
    """Residual block: BN, LReLU, (x2 bilinear), 3x3 SN conv, BN, LReLU, 3x3 SN conv."""

    def __init__(self, cin: int, cout: int, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _g_conv(cin, cout, 3)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _g_conv(cout, cout, 3)
        self.skip = _g_conv(cin, cout, 1) if cin != cout else nn.Identity()

    def _up(self, x: Tensor) -> Tensor:
        return (
            F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            if self.upsample
            else x
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(self._up(F.leaky_relu(self.bn1(x), 0.2)))
        h = self.conv2(F.leaky_relu(self.bn2(h), 0.2))
        return h + self.skip(self._up(x))


class OneShotGenerator(nn.Module):
    """Latent ``[N, latent_dim]`` -> images in [-1, 1] at every scale, plus block features.

    ``forward(z)`` returns ``(image, features)``: the final-scale image
    ``[N, C, size, size]`` and the output of every block (for the diversity
    regularisation). ``forward(z, all_scales=True)`` returns the image at every scale
    instead of only the last as the first element.
    """

    def __init__(
        self,
        size: int,
        image_channels: int = 1,
        latent_dim: int = 64,
        channels: int = 16,
        max_channels: int = 256,
    ) -> None:
        super().__init__()
        plan = block_plan(size)
        self.base, self.n_up = plan["base"], plan["n_up"]
        widths = [
            _width(channels, max_channels, 2 ** (self.n_up - i)) for i in range(self.n_up + 1)
        ]
        self.widths = widths
        # no bias: a free bias would let the map ignore z (the next batch norm scales z away)
        self.fc = spectral_norm(nn.Linear(latent_dim, widths[0] * self.base**2, bias=False))
        self.blocks = nn.ModuleList(
            [_GBlock(widths[0], widths[0], upsample=False)]
            + [_GBlock(widths[i - 1], widths[i], upsample=True) for i in range(1, self.n_up + 1)]
        )
        self.to_image = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(w),
                nn.LeakyReLU(0.2),
                nn.Conv2d(w, image_channels, 3, 1, 1),
            )
            for w in widths
        )

    def forward(self, z: Tensor, all_scales: bool = False) -> tuple[Any, list[Tensor]]:
        """``(image or list of images per scale, block outputs)``."""
        h = self.fc(z).view(z.shape[0], self.widths[0], self.base, self.base)
        feats: list[Tensor] = []
        scales: list[Tensor] = []
        skip: Tensor | None = None
        for block, head in zip(self.blocks, self.to_image, strict=True):
            h = block(h)
            feats.append(h)
            out = head(h)
            if skip is not None:
                if skip.shape[-1] != out.shape[-1]:
                    skip = F.interpolate(
                        skip, scale_factor=2.0, mode="bilinear", align_corners=False
                    )
                out = out + skip
            skip = out
            if all_scales:
                scales.append(torch.tanh(out))
        assert skip is not None
        return (scales if all_scales else torch.tanh(skip)), feats


# ------------------------------------------------------------------ discriminator


class _DBlock(nn.Module):
    """Residual block: (LReLU), SN conv, LReLU, SN conv, (avg-pool x2); SN 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, k: int, downsample: bool, preact: bool = True) -> None:
        super().__init__()
        self.downsample, self.preact = downsample, preact
        self.conv1 = _sn_conv(cin, cout, k)
        self.conv2 = _sn_conv(cout, cout, k)
        self.skip = _sn_conv(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(x, 0.2) if self.preact else x
        h = self.conv2(F.leaky_relu(self.conv1(h), 0.2))
        s = self.skip(x)
        if self.downsample:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


HEAD_GAIN = 4.0
"""Logit scale of the decision heads. A spectral-norm head is 1-Lipschitz, and a per-pixel
head sees only a few channels of a shallow, 1-Lipschitz trunk, so without a gain its
logits stay near 0 and its BCE near chance for hundreds of steps."""


class _Head(nn.Module):
    """A decision head: a 1x1 spectral-norm conv to one logit per position, times a gain."""

    def __init__(self, cin: int, gain: float = HEAD_GAIN) -> None:
        super().__init__()
        self.conv = _sn_conv(cin, 1, 1)
        self.gain = gain

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * self.gain


def _head(cin: int) -> nn.Module:
    return _Head(cin)


def _partner(n: int, device: torch.device) -> Tensor:
    """For each sample the index of another one (the next, cyclically)."""
    return torch.roll(torch.arange(n, device=device), -1)


def augment_content(f: Tensor, p: float, drop: float = 0.3) -> Tensor:
    """Content feature augmentation of real features ``f`` ``[N, C, H, W]``.

    Each sample, with probability ``p``, gets about half of its channels from another
    sample of the batch (channel mixing); independently, with probability ``p``, a
    fraction ``drop`` of its channels is dropped (scaled like dropout). Batched, no host
    syncs; returns a new tensor of the same shape.
    """
    n, c = f.shape[:2]
    if n == 0 or p <= 0.0:
        return f
    dev, dt = f.device, f.dtype
    mix = (torch.rand(n, 1, 1, 1, device=dev) < p) & (torch.rand(n, c, 1, 1, device=dev) < 0.5)
    out = torch.where(mix, f[_partner(n, dev)] if n > 1 else f, f)
    chosen = torch.rand(n, 1, 1, 1, device=dev) < p
    kept = torch.rand(n, c, 1, 1, device=dev) >= drop
    factor = torch.where(kept, 1.0 / (1.0 - drop), 0.0).to(dt)
    return torch.where(chosen, out * factor, out)


def augment_layout(f: Tensor, p: float, min_frac: float = 0.25, max_frac: float = 0.5) -> Tensor:
    """Layout feature augmentation of real features ``f`` ``[N, C, H, W]``.

    Each sample, with probability ``p``, has a random rectangle (each side
    ``min_frac``..``max_frac`` of the map, at least 1 px) replaced by the same rectangle
    of another sample's feature map. Batched, no host syncs.
    """
    n, _, h, w = f.shape
    if n < 2 or p <= 0.0:
        return f
    dev = f.device
    rnd = torch.rand(n, 5, device=dev)
    rh = (h * (min_frac + (max_frac - min_frac) * rnd[:, 0])).clamp(min=1.0)
    rw = (w * (min_frac + (max_frac - min_frac) * rnd[:, 1])).clamp(min=1.0)
    y0 = ((h - rh) * rnd[:, 2]).floor()
    x0 = ((w - rw) * rnd[:, 3]).floor()
    rows = torch.arange(h, device=dev, dtype=rh.dtype)
    cols = torch.arange(w, device=dev, dtype=rw.dtype)
    in_r = (rows[None] >= y0[:, None]) & (rows[None] < (y0 + rh.round())[:, None])
    in_c = (cols[None] >= x0[:, None]) & (cols[None] < (x0 + rw.round())[:, None])
    box = (in_r[:, :, None] & in_c[:, None, :]).unsqueeze(1)  # [N, 1, H, W]
    box = box & (rnd[:, 4] < p)[:, None, None, None]
    return torch.where(box, f[_partner(n, dev)], f)


class OneShotDiscriminator(nn.Module):
    """Low-level trunk + content and layout branches, a decision head on every block.

    ``forward(x, n_real=0)`` returns ``{"low": [...], "content": [...], "layout": [...]}``,
    lists of logits: low-level heads ``[N, 1, h, w]`` at the trunk's resolutions, content
    heads ``[N, 1, 1, 1]``, layout heads ``[N, 1, h', w']``. In training mode the first
    ``n_real`` samples (the real images) get feature augmentation at the branch inputs.
    With ``global_branch`` the output also has ``"global"``: one ``[N]`` logit per image
    from a ``DCGANDiscriminator`` of width ``4 * channels`` on the image (batch norm: real
    and fake parts go through it separately).
    """

    def __init__(
        self,
        size: int,
        image_channels: int = 1,
        channels: int = 16,
        max_channels: int = 256,
        feature_aug_p: float = 0.3,
        global_branch: bool = False,
    ) -> None:
        super().__init__()
        plan = block_plan(size)
        self.n_low, self.n_branch = plan["n_low"], plan["n_branch"]
        self.global_branch = (
            DCGANDiscriminator(size, image_channels, 4 * channels) if global_branch else None
        )
        self.feature_aug_p = float(feature_aug_p)
        low_w = [_width(channels, max_channels, 2 ** (i + 1)) for i in range(self.n_low)]
        cins = [image_channels, *low_w[:-1]]
        self.low = nn.ModuleList(
            _DBlock(ci, co, 3, downsample=True, preact=i > 0)
            for i, (ci, co) in enumerate(zip(cins, low_w, strict=True))
        )
        self.low_heads = nn.ModuleList(_head(w) for w in low_w)
        c = low_w[-1]
        cw = max_channels  # 1x1 convs on a pooled vector: width is almost free
        self.content = nn.ModuleList(
            _DBlock(c if i == 0 else cw, cw, 1, downsample=False) for i in range(self.n_branch)
        )
        self.content_heads = nn.ModuleList(_head(cw) for _ in range(self.n_branch))
        self.collapse = _sn_conv(c, 1, 1)
        lw = _width(c, max_channels, 2)
        res = size // 2**self.n_low
        layout: list[nn.Module] = []
        for i in range(self.n_branch):
            down = res > 4
            cin = 1 if i == 0 else lw
            layout.append(_DBlock(cin, lw, 3, downsample=down, preact=i > 0))
            res = res // 2 if down else res
        self.layout = nn.ModuleList(layout)
        self.layout_heads = nn.ModuleList(_head(lw) for _ in range(self.n_branch))

    def forward(self, x: Tensor, n_real: int = 0) -> dict[str, list[Tensor]]:
        """Logits of every head (see the class docstring)."""
        out: dict[str, list[Tensor]] = {"low": [], "content": [], "layout": []}
        if self.global_branch is not None:
            parts = x.split([n_real, x.shape[0] - n_real]) if 0 < n_real < x.shape[0] else [x]
            out["global"] = [torch.cat([self.global_branch(part) for part in parts])]
        h = x
        for block, head in zip(self.low, self.low_heads, strict=True):
            h = block(h)
            out["low"].append(head(F.leaky_relu(h, 0.2)))
        c = F.adaptive_avg_pool2d(h, 1)
        lay = h
        p = self.feature_aug_p
        if self.training and n_real > 0 and p > 0.0:
            c = torch.cat([augment_content(c[:n_real], p), c[n_real:]])
            lay = torch.cat([augment_layout(h[:n_real], p), h[n_real:]])
        for block, head in zip(self.content, self.content_heads, strict=True):
            c = block(c)
            out["content"].append(head(F.leaky_relu(c, 0.2)))
        lay = self.collapse(F.leaky_relu(lay, 0.2))
        for block, head in zip(self.layout, self.layout_heads, strict=True):
            lay = block(lay)
            out["layout"].append(head(F.leaky_relu(lay, 0.2)))
        return out


# ------------------------------------------------------------------ losses


def _group_loss(logits: list[Tensor], real: bool) -> Tensor:
    """BCE with logits against all-real (or all-fake) targets, averaged over the heads."""
    sign = -1.0 if real else 1.0
    return torch.stack([F.softplus(sign * lg.float()).mean() for lg in logits]).mean()


def adversarial_loss(out: dict[str, list[Tensor]], real: bool) -> dict[str, Tensor]:
    """Each head group's loss (``low``, ``content``, ``layout``, ``global`` if present)."""
    return {group: _group_loss(logits, real) for group, logits in out.items()}


def diversity_loss(feats: list[Tensor], z: Tensor | None = None, normalize: bool = False) -> Tensor:
    """L_DR: mean L1 distance between block features of two latent codes, averaged over blocks.

    The batch is paired in halves: sample ``i`` with sample ``i + N // 2``. Each block's
    distance is measured relative to that block's mean absolute activation over the batch,
    so the generator cannot raise L_DR by merely scaling features that the next batch
    norm scales back. With ``normalize`` each pair's distance is also divided by the mean
    L1 distance of its latents ``z`` (mode-seeking style). Identical latents give 0.
    """
    n = feats[0].shape[0] // 2
    if n == 0:
        return feats[0].new_zeros(())
    per_block = []
    for f in feats:
        f = f.float()
        scale = f[: 2 * n].abs().mean() + 1e-6
        per_block.append((f[:n] - f[n : 2 * n]).abs().flatten(1).mean(1) / scale)
    per_pair = torch.stack(per_block).mean(0)  # [n]
    if normalize:
        if z is None:
            raise ValueError("normalize=True needs the latents z")
        per_pair = per_pair / ((z[:n] - z[n : 2 * n]).abs().mean(1) + 1e-8)
    return per_pair.mean()


# ------------------------------------------------------------------ the plugin


class OneShotGAN(Generator):
    """One-Shot GAN: two-branch (content/layout) discriminator, feature augmentation, L_DR."""

    name: ClassVar[str] = "oneshot_gan"
    description: ClassVar[str] = (
        "One-Shot GAN (Sushko et al. 2021): content/layout two-branch discriminator, "
        "feature augmentation and diversity regularisation; per class or one model per image"
    )
    quick_params: ClassVar[dict[str, Any]] = {
        "iterations": 4,
        "batch_size": 4,
        "channels": 8,
        "max_channels": 32,
        "log_every": 2,
    }

    class Params(GANParams):
        """One-Shot GAN params (on top of the shared GAN training params)."""

        iterations: int = Field(3000, ge=1, description="generator steps per model")
        batch_size: int = Field(16, ge=2, description="images per step (per process under DDP)")
        latent_dim: int = Field(64, ge=1, description="size of the latent code")
        channels: int = Field(
            8, ge=1, description="width at full resolution; doubles per halving of the size"
        )
        max_channels: int = Field(256, ge=1, description="cap on any block's width")
        lr_g: float = Field(2e-4, gt=0.0, description="Adam learning rate of the generator")
        lr_d: float = Field(2e-4, gt=0.0, description="Adam learning rate of the discriminator")
        beta1: float = Field(0.5, ge=0.0, lt=1.0, description="Adam beta1 (beta2 is 0.999)")
        dr_lambda: float = Field(
            0.15, ge=0.0, description="weight of the diversity regularisation L_DR in G's loss"
        )
        dr_normalize: bool = Field(
            False, description="divide L_DR per pair by the L1 distance of the two latents"
        )
        low_level_weight: float = Field(
            2.0, ge=0.0, description="weight of the low-level heads' loss in L_adv"
        )
        feature_aug_p: float = Field(
            0.3, ge=0.0, le=1.0, description="probability of feature augmentation per real sample"
        )
        global_weight: float = Field(
            0.0,
            ge=0.0,
            description="weight of an extra global branch in the discriminator (a DCGAN-style "
            "judge of the whole image; not in the paper). 0: the paper's discriminator; 1: "
            "head-shaped slices in ~300 steps at 64 px instead of ~2000 (a CPU budget)",
        )
        images_per_model: int | None = Field(
            None,
            ge=1,
            description="null: one model on all images given; 1: one model per image (the "
            "paper's setting); k: one model per group of k images",
        )
        max_models: int = Field(
            8, ge=1, description="at most this many models (the rest are skipped with a note)"
        )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._config: dict[str, Any] | None = None
        self._generators: list[nn.Module] = []  # sampling nets (EMA when on), eval mode
        self._states: list[dict[str, Any]] = []  # per model: g, g_ema, d state dicts

    # -- building
    def _build(self, cfg: Mapping[str, Any]) -> tuple[OneShotGenerator, OneShotDiscriminator]:
        g = OneShotGenerator(
            cfg["size"],
            cfg["image_channels"],
            cfg["latent_dim"],
            cfg["channels"],
            cfg["max_channels"],
        )
        d = OneShotDiscriminator(
            cfg["size"],
            cfg["image_channels"],
            cfg["channels"],
            cfg["max_channels"],
            cfg["feature_aug_p"],
            cfg.get("global_weight", 0.0) > 0,
        )
        return g, d

    # -- training
    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Train one model on ``train``, or one per group of ``images_per_model`` images."""
        p = self.params
        if len(train) == 0:
            raise DataError("oneshot_gan: no training images", hint="check the data and classes")
        block_plan(train.size)  # fail early on a size the architecture cannot reach
        if train.images.shape[-2] != train.images.shape[-1]:
            raise DataError(f"oneshot_gan needs square images, got {tuple(train.images.shape)}")
        cfg = {
            "size": train.size,
            "image_channels": train.channels,
            "latent_dim": p.latent_dim,
            "channels": p.channels,
            "max_channels": p.max_channels,
            "feature_aug_p": p.feature_aug_p,
            "global_weight": p.global_weight,
        }
        groups = self._groups(len(train), run)
        self._config = {**cfg, "n_models": len(groups), "groups": [g.tolist() for g in groups]}
        self._generators, self._states = [], []
        with run.progress(p.iterations * len(groups), f"{run.stage or self.name}") as bar:
            for m, idx in enumerate(groups):
                g_net, state = self._fit_one(train.images[idx], m, len(groups), run, bar)
                self._generators.append(g_net)
                self._states.append(state)
        if run.out_dir is not None and run.is_main:
            grid = self.sample(min(32, max(8, 4 * len(groups))), seed=run.seed)
            save_sample_grid(run, grid.images, "samples")

    def _groups(self, n: int, run: RunContext) -> list[Tensor]:
        p = self.params
        if p.images_per_model is None:
            return [torch.arange(n)]
        perm = torch.randperm(n, generator=run.generator(17))
        groups = list(perm.split(p.images_per_model))
        if len(groups) > p.max_models:
            run.note(
                f"oneshot_gan: {len(groups)} models of {p.images_per_model} image(s) asked for; "
                f"training {p.max_models} (max_models), the other {len(groups) - p.max_models} "
                f"are skipped"
            )
            groups = groups[: p.max_models]
        return [g.sort().values for g in groups]

    def _fit_one(
        self, images: Tensor, m: int, n_models: int, run: RunContext, bar: Any
    ) -> tuple[nn.Module, dict[str, Any]]:
        p = self.params
        cfg = self._config
        assert cfg is not None
        device = run.device
        torch.manual_seed(run.seed * 1009 + m)
        g_mod, d_mod = self._build(cfg)
        g, d = run.prepare(g_mod), run.prepare(d_mod)
        ema = EMA(g_mod, p.ema) if p.ema is not None else None
        betas = (p.beta1, 0.999)
        fused = device.type == "cuda" or None
        opt_g = torch.optim.Adam(g.parameters(), lr=p.lr_g, betas=betas, fused=fused)
        opt_d = torch.optim.Adam(d.parameters(), lr=p.lr_d, betas=betas, fused=fused)
        d_params = list(d_mod.parameters())
        policy = resolve_policy(p.diffaugment, len(images))
        fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        real_all = from_unit(images.float()).to(device).contiguous(memory_format=fmt)
        n_img = real_all.shape[0]
        bs = p.batch_size
        shard = run.world_size > 1 and n_img >= run.world_size  # tiny sets: every rank sees all
        batches = minibatches(
            n_img,
            bs,
            run.generator(1000 + m),
            drop_last=True,
            rank=run.rank if shard else 0,
            world=run.world_size if shard else 1,
        )
        step0 = m * p.iterations
        weights = {"low": p.low_level_weight, "content": 1.0, "layout": 1.0}
        if p.global_weight > 0:
            weights["global"] = p.global_weight
        names = [f"d_{k}" for k in weights] + ["d_loss", "g_adv", "l_dr"]
        sums = torch.zeros(len(names), device=device)
        count = 0
        collapse_noted = False
        grid_z = latent_seeded(16, p.latent_dim, run.seed + 7, device)
        g.train()
        d.train()
        for it in range(p.iterations):
            idx = next(batches).to(device)
            if idx.numel() < bs:  # fewer images than a batch (e.g. one image): repeat them
                idx = idx.repeat(math.ceil(bs / idx.numel()))[:bs]
            real = real_all[idx]
            z = torch.randn(bs, p.latent_dim, device=device)
            with run.autocast():
                fake, feats = g(z)
            # -- discriminator step (one forward over real + fake)
            for q in d_params:
                q.requires_grad_(True)
            with run.autocast():
                both = torch.cat([real, fake.detach().to(real.dtype)])
                both = diff_augment(both, policy, cfg["image_channels"])
                out = d(both, n_real=bs)
            real_out = {k: [lg[:bs] for lg in v] for k, v in out.items()}
            fake_out = {k: [lg[bs:] for lg in v] for k, v in out.items()}
            real_loss = adversarial_loss(real_out, real=True)
            fake_loss = adversarial_loss(fake_out, real=False)
            d_groups = [real_loss[k] + fake_loss[k] for k in weights]
            loss_d = sum(w * v for w, v in zip(weights.values(), d_groups, strict=True))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # -- generator step (reuses the forward above; D frozen, no DDP sync on D)
            for q in d_params:
                q.requires_grad_(False)
            with run.autocast():
                out_g = d_mod(diff_augment(fake, policy, cfg["image_channels"]))
            g_loss = adversarial_loss(out_g, real=True)
            g_adv = sum(w * g_loss[k] for k, w in weights.items())
            dr = diversity_loss(feats, z, p.dr_normalize)
            loss_g = g_adv - p.dr_lambda * dr
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            if ema is not None:
                ema.update(g)
            sums += torch.stack([*d_groups, loss_d, g_adv, dr]).detach()
            count += 1
            step = it + 1
            if step % p.log_every == 0 or step == p.iterations:
                vals = (sums / count).tolist()  # the one host sync every log_every steps
                div = float(batch_diversity(to_unit(fake.detach())))
                for k, v in zip(names, vals, strict=True):
                    check_finite(v, f"oneshot_gan {k}")
                logged = dict(zip(names, vals, strict=True))
                run.log(step=step0 + step, model=m, diversity=div, **logged)
                if div < COLLAPSE_THRESHOLD and not collapse_noted:
                    collapse_noted = True
                    run.note(
                        f"oneshot_gan model {m}: samples at step {step} are nearly identical "
                        f"(batch diversity {div:.4f}): mode collapse",
                    )
                bar.advance(1, d=logged["d_loss"], g=logged["g_adv"], dr=logged["l_dr"])
                sums.zero_()
                count = 0
            else:
                bar.advance(1)
            if p.sample_every and step % p.sample_every == 0 and step < p.iterations:
                net = ema.module if ema is not None else unwrap(g)
                self._save_grid(
                    net,
                    grid_z,
                    run,
                    f"samples-model{m}-step{step}" if n_models > 1 else f"samples-step{step}",
                )
        g_raw = unwrap(g)
        sampler = ema.module if ema is not None else g_raw
        sampler.eval()
        state = {
            "g": _cpu_state(g_raw),
            "g_ema": _cpu_state(ema.module) if ema is not None else None,
            "d": _cpu_state(unwrap(d)),
        }
        return sampler, state

    @torch.no_grad()
    def _save_grid(self, net: nn.Module, z: Tensor, run: RunContext, name: str) -> None:
        was = net.training
        net.eval()
        img, _ = net(z)
        net.train(was)
        save_sample_grid(run, to_unit(img.float()).clamp(0, 1), name)

    # -- sampling
    @torch.no_grad()
    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        """``n`` images in [0, 1]; sample ``i`` comes from model ``i % n_models``."""
        if self._config is None or not self._generators:
            raise PluginError(
                "oneshot_gan: sample() before fit()",
                hint="train it with fit() or restore it with load_state_dict()",
            )
        cfg = self._config
        size, ch = cfg["size"], cfg["image_channels"]
        n_models = len(self._generators)
        first = next(self._generators[0].parameters())
        device = first.device
        z = latent_seeded(n, cfg["latent_dim"], seed, device)
        images = torch.empty(n, ch, size, size)
        owner = torch.arange(n) % n_models
        for m, net in enumerate(self._generators):
            sel = (owner == m).nonzero().reshape(-1)
            if sel.numel() == 0:
                continue
            net.eval()
            for chunk in sel.split(256):
                img, _ = net(z[chunk.to(device)])
                images[chunk] = to_unit(img.float()).clamp(0, 1).cpu()
        labels = None if label is None else torch.full((n,), int(label), dtype=torch.long)
        return ImageSet(
            images=images,
            labels=labels,
            sources=[f"{self.name}:seed={seed}:{i}" for i in range(n)],
            groups=[f"synthetic:{self.name}"] * n,
        )

    # -- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Config (size, channels, widths, groups) and every model's G, EMA G and D weights."""
        if self._config is None:
            return {}
        return {
            "version": _STATE_VERSION,
            "config": dict(self._config),
            "models": [dict(s) for s in self._states],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild every sub-model from ``state`` and restore its weights."""
        if not state:
            return
        if int(state.get("version", 0)) != _STATE_VERSION or "config" not in state:
            raise PluginError(
                "oneshot_gan: unrecognised checkpoint",
                hint="retrain the generator with this synthmri version",
            )
        cfg = dict(state["config"])
        self._config = cfg
        self._generators, self._states = [], []
        for s in state["models"]:
            g, d = self._build(cfg)
            g.load_state_dict(s["g"])
            d.load_state_dict(s["d"])
            sampler = g
            if s.get("g_ema") is not None:
                sampler, _ = self._build(cfg)
                sampler.load_state_dict(s["g_ema"])
            for q in sampler.parameters():
                q.requires_grad_(False)
            sampler.eval()
            self._generators.append(sampler)
            self._states.append(dict(s))

    def networks(self, model: int = 0) -> tuple[OneShotGenerator, OneShotDiscriminator]:
        """Fresh copies of model ``model``'s raw generator and discriminator (for inspection)."""
        if self._config is None:
            raise PluginError("oneshot_gan: not trained")
        g, d = self._build(self._config)
        g.load_state_dict(self._states[model]["g"])
        d.load_state_dict(self._states[model]["d"])
        return g, d


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in unwrap(module).state_dict().items()}


def parameter_counts(size: int, params: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Parameter counts of G and D for an image size under ``params`` (defaults if None)."""
    p = OneShotGAN.Params(**dict(params or {}))
    g = OneShotGenerator(size, 1, p.latent_dim, p.channels, p.max_channels)
    d = OneShotDiscriminator(
        size, 1, p.channels, p.max_channels, p.feature_aug_p, p.global_weight > 0
    )
    return {
        "generator": sum(q.numel() for q in g.parameters()),
        "discriminator": sum(q.numel() for q in d.parameters()),
    }


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the One-Shot GAN."""
    register(OneShotGAN)
