"""The FastGAN networks and losses (Liu, Zhu, Song and Elgammal, ICLR 2021), for 2D slices.

Written from the paper ("Towards Faster and Stabilized GAN Training for High-fidelity
Few-shot Image Synthesis"); the ``fastgan`` generator plugin documents how it trains.

- Generator: z (plus a class embedding when conditional) -> a transposed conv to 4x4,
  then one up-sampling block per resolution (nearest x2, 3x3 conv, BatchNorm, GLU) up to
  the image size, a 3x3 conv and tanh. **Skip-layer excitation** (SLE): the features at
  resolution ``r`` (64 px and up) are gated channel-wise by the features at ``r / 16``:
  ``x_high * sigmoid(conv1x1(lrelu(conv4x4(avgpool_4x4(x_low)))))``. At 32 px, where no
  16x pair exists, the 4x4 features gate the 32x32 ones.
- Discriminator: a strided 4x4 conv to half the size, then residual down-sampling
  blocks (4x4 stride-2 conv, BN, LeakyReLU, 3x3 conv, BN, LeakyReLU; beside it 2x2
  average pooling and a 1x1 conv, BN, LeakyReLU; the mean of the two) down to 8x8; a
  1x1 conv, BN, LeakyReLU and a 4x4 conv give a 5x5 map of logits. Spectral norm on its
  convs (optional). Conditional: the projection term of ``synthmri.nn.dcgan.Projection``
  on the 8x8 features, added to every logit.
- **Self-supervised decoders**: D is also an encoder. A decoder (per resolution: nearest
  x2, 3x3 conv, BN, GLU; then a 3x3 conv and tanh) turns the 8x8 features into the whole
  input image (at ``min(size, 128)`` px), and a second one turns a random quarter of the
  16x16 features into the same quarter of the image (at ``min(size / 2, 128)`` px). On
  real images only; the loss is L1 or MSE (the paper uses a perceptual loss, which would
  need downloaded weights).

Channel widths are given per resolution (``G_CHANNELS``, ``D_CHANNELS``,
``DECODER_CHANNELS``: the GPU defaults, on the paper's scale); a GLU halves its input, so
a block that outputs ``c`` channels convolves to ``2c``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from synthmri.nn.dcgan import CondInput, Projection, dcgan_init

__all__ = [
    "DECODER_CHANNELS",
    "D_CHANNELS",
    "G_CHANNELS",
    "SIZES",
    "FastGANDiscriminator",
    "FastGANGenerator",
    "SkipLayerExcitation",
    "build_fastgan",
    "quarter",
    "reconstruction_loss",
    "sle_pairs",
    "widths_for",
]

SIZES: tuple[int, ...] = (32, 64, 128, 256)
G_CHANNELS: dict[int, int] = {4: 1024, 8: 512, 16: 256, 32: 128, 64: 128, 128: 64, 256: 32}
"""Generator channels at each resolution (GPU default)."""
D_CHANNELS: dict[int, int] = {8: 512, 16: 512, 32: 256, 64: 128, 128: 64}
"""Discriminator channels at each feature resolution, from half the image size down to 8."""
DECODER_CHANNELS: dict[int, int] = {16: 256, 32: 128, 64: 64, 128: 32}
"""Channels of the reconstruction decoders' blocks at each resolution they reach."""
RECON_MAX = 128
"""The decoders reconstruct at most this many pixels per side (as in the paper)."""


def _log2(n: int) -> int:
    return n.bit_length() - 1


def resolutions(lo: int, hi: int) -> list[int]:
    """Powers of two from ``lo`` to ``hi``, both included."""
    return [2**k for k in range(_log2(lo), _log2(hi) + 1)]


def widths_for(size: int) -> dict[str, list[int]]:
    """The resolutions whose widths an image ``size`` needs, per network part."""
    return {
        "g_channels": resolutions(4, size),
        "d_channels": resolutions(8, size // 2),
        "decoder_channels": resolutions(16, min(size, RECON_MAX)),
    }


def sle_pairs(size: int) -> list[tuple[int, int]]:
    """``(low, high)`` resolutions joined by skip-layer excitation in a generator of
    ``size`` px: every ``high`` from 64 up gated by ``high / 16``; at 32 px, 4 -> 32."""
    pairs = [(r // 16, r) for r in resolutions(64, size)]
    return pairs or [(4, min(size, 32))]


def _up_block(cin: int, cout: int) -> nn.Sequential:
    """Nearest x2, 3x3 conv to ``2 cout``, BatchNorm, GLU (-> ``cout`` channels)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(cin, 2 * cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(2 * cout),
        nn.GLU(dim=1),
    )


class SkipLayerExcitation(nn.Module):
    """``x_high * sigmoid(conv1x1(lrelu(conv4x4(avgpool_4x4(x_low)))))``: the low-resolution
    features gate the high-resolution ones channel by channel."""

    def __init__(self, low_channels: int, high_channels: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(low_channels, high_channels, 4, 1, 0, bias=False),
            nn.LeakyReLU(0.1),
            nn.Conv2d(high_channels, high_channels, 1, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        return high * self.gate(low)


class FastGANGenerator(nn.Module):
    """z ``[N, latent]`` (+ labels) -> images ``[N, C, S, S]`` in [-1, 1], with SLE."""

    def __init__(
        self,
        size: int,
        channels: int,
        latent_dim: int,
        widths: Mapping[int, int],
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        self.size = size
        self.cond = CondInput(n_classes)
        c4 = widths[4]
        self.init = nn.Sequential(
            nn.ConvTranspose2d(latent_dim + self.cond.extra, 2 * c4, 4, 1, 0, bias=False),
            nn.BatchNorm2d(2 * c4),
            nn.GLU(dim=1),
        )
        self.ups = nn.ModuleDict(
            {str(r): _up_block(widths[r // 2], widths[r]) for r in resolutions(8, size)}
        )
        self.pairs = sle_pairs(size)
        self.sle = nn.ModuleDict(
            {str(hi): SkipLayerExcitation(widths[lo], widths[hi]) for lo, hi in self.pairs}
        )
        self.to_image = nn.Sequential(nn.Conv2d(widths[size], channels, 3, 1, 1), nn.Tanh())
        self._sources = {lo for lo, _ in self.pairs}
        self._targets = {hi: lo for lo, hi in self.pairs}
        self.apply(dcgan_init)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.cond(z, y)
        x = self.init(h.reshape(h.shape[0], h.shape[1], 1, 1))
        kept = {4: x} if 4 in self._sources else {}
        for r in resolutions(8, self.size):
            x = self.ups[str(r)](x)
            if r in self._targets:
                x = self.sle[str(r)](kept[self._targets[r]], x)
            if r in self._sources:
                kept[r] = x
        return self.to_image(x)


def _sn(module: nn.Module, on: bool) -> nn.Module:
    return spectral_norm(module) if on else module


class _DownBlock(nn.Module):
    """Residual down-sampling: (4x4 s2 conv, BN, LReLU, 3x3 conv, BN, LReLU) and
    (avg-pool 2, 1x1 conv, BN, LReLU), averaged."""

    def __init__(self, cin: int, cout: int, sn: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(
            _sn(nn.Conv2d(cin, cout, 4, 2, 1, bias=False), sn),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.2, True),
            _sn(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), sn),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.2, True),
        )
        self.skip = nn.Sequential(
            nn.AvgPool2d(2),
            _sn(nn.Conv2d(cin, cout, 1, 1, 0, bias=False), sn),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.2, True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return (self.main(x) + self.skip(x)) * 0.5


class _Decoder(nn.Sequential):
    """8x8 features -> an image of ``out_size`` px in [-1, 1]."""

    def __init__(self, cin: int, channels: int, out_size: int, widths: Mapping[int, int]) -> None:
        layers: list[nn.Module] = []
        c = cin
        for r in resolutions(16, out_size):
            layers.append(_up_block(c, widths[r]))
            c = widths[r]
        layers += [nn.Conv2d(c, channels, 3, 1, 1), nn.Tanh()]
        super().__init__(*layers)


def quarter(x: Tensor, part: Tensor) -> Tensor:
    """Quarter ``part[i]`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of
    each ``x[i]`` ``[N, C, H, W]`` -> ``[N, C, H/2, W/2]`` (batched, no host sync)."""
    n, c, h, w = x.shape
    q = x.reshape(n, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5)
    q = q.reshape(n, 4, c, h // 2, w // 2)
    return q[torch.arange(n, device=x.device), part]


class FastGANDiscriminator(nn.Module):
    """Images ``[N, C, S, S]`` -> a 5x5 logit map per image, flattened ``[N, 25]``; with
    ``part`` (one quarter index per image) also the decoders' reconstructions."""

    def __init__(
        self,
        size: int,
        channels: int,
        widths: Mapping[int, int],
        decoder_widths: Mapping[int, int],
        n_classes: int = 0,
        sn: bool = True,
    ) -> None:
        super().__init__()
        self.size = size
        self.stem = nn.Sequential(
            _sn(nn.Conv2d(channels, widths[size // 2], 4, 2, 1, bias=False), sn),
            nn.LeakyReLU(0.2, True),
        )
        self.downs = nn.ModuleList(
            _DownBlock(widths[r * 2], widths[r], sn) for r in reversed(resolutions(8, size // 4))
        )
        c8 = widths[8]
        self.head = nn.Sequential(
            _sn(nn.Conv2d(c8, c8, 1, 1, 0, bias=False), sn),
            nn.BatchNorm2d(c8),
            nn.LeakyReLU(0.2, True),
            _sn(nn.Conv2d(c8, 1, 4, 1, 0, bias=False), sn),
        )
        self.proj = Projection(n_classes, c8) if n_classes > 0 else None
        self.whole_size = min(size, RECON_MAX)
        self.part_size = min(size // 2, RECON_MAX)
        self.decode_whole = _Decoder(c8, channels, self.whole_size, decoder_widths)
        self.decode_part = _Decoder(widths[16], channels, self.part_size, decoder_widths)
        self.apply(dcgan_init)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """D's 16x16 and 8x8 feature maps."""
        h = self.stem(x)
        f16 = h
        for block in self.downs:
            h = block(h)
            if h.shape[-1] == 16:
                f16 = h
        return f16, h

    def forward(
        self, x: Tensor, y: Tensor | None = None, part: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        f16, f8 = self.features(x)
        logits = self.head(f8).flatten(1)
        if self.proj is not None and y is not None:
            logits = logits + self.proj(f8, y)[:, None]
        if part is None:
            return logits
        return logits, self.decode_whole(f8), self.decode_part(quarter(f16, part))

    def targets(self, x: Tensor, part: Tensor) -> tuple[Tensor, Tensor]:
        """What the decoders should give for input ``x``: the whole image and quarter
        ``part`` of it, each area-resized to the decoder's size (a no-op up to 128 px)."""
        whole = _resize(x, self.whole_size)
        return whole, _resize(quarter(x, part), self.part_size)


def _resize(x: Tensor, size: int) -> Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


# ------------------------------------------------------------------ losses


def reconstruction_loss(
    recon: tuple[Tensor, Tensor], target: tuple[Tensor, Tensor], kind: Literal["l1", "mse"]
) -> Tensor:
    """Sum of the whole-image and quarter losses (each a per-pixel mean, L1 or MSE)."""
    fn = F.l1_loss if kind == "l1" else F.mse_loss
    (rw, rp), (tw, tp) = recon, target
    return fn(rw.float(), tw.float()) + fn(rp.float(), tp.float())


# ------------------------------------------------------------------ build


def build_fastgan(config: Mapping[str, Any]) -> tuple[FastGANGenerator, FastGANDiscriminator]:
    """(G, D) for a network config: size, channels, latent_dim, n_classes (0 =
    unconditional), ``g_channels`` / ``d_channels`` / ``decoder_channels`` (lists, one
    width per resolution of ``widths_for(size)``, low to high) and ``spectral_norm``."""
    size, ch, k = int(config["size"]), int(config["channels"]), int(config["n_classes"])
    if size not in SIZES:
        raise ValueError(f"FastGAN builds {', '.join(map(str, SIZES))} px images, not {size}")
    need = widths_for(size)
    widths: dict[str, dict[int, int]] = {}
    for key, res in need.items():
        values = [int(v) for v in config[key]]
        if len(values) != len(res):
            raise ValueError(f"{key}: {len(values)} widths for {len(res)} resolutions {res}")
        widths[key] = dict(zip(res, values, strict=True))
    G = FastGANGenerator(size, ch, int(config["latent_dim"]), widths["g_channels"], k)
    D = FastGANDiscriminator(
        size,
        ch,
        widths["d_channels"],
        widths["decoder_channels"],
        k,
        sn=bool(config.get("spectral_norm", True)),
    )
    return G, D
