"""The One-Shot GAN networks and losses (Sushko, Gall and Khoreva, CVPRW 2021).

A multi-scale residual generator whose blocks all emit images; a discriminator with a
shared low-level trunk and two branches (content: what is there; layout: where), a
decision head on every block; feature augmentation of the real features at the branch
inputs; the adversarial loss per head group and the diversity regularisation L_DR. The
``oneshot_gan`` generator plugin documents the design choices and how it trains.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from synthmri.core.errors import ConfigError
from synthmri.nn.dcgan import DCGANDiscriminator

__all__ = [
    "HEAD_GAIN",
    "INIT_STD",
    "OneShotDiscriminator",
    "OneShotGenerator",
    "adversarial_loss",
    "augment_content",
    "augment_layout",
    "block_plan",
    "diversity_loss",
]


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
