"""The DCGAN networks (Radford et al. 2016) and the reference Keras pair, for 2D slices.

- ``dcgan``: the paper's all-convolutional networks. G is a transposed-conv stack from
  4x4 to the image size (BatchNorm + ReLU, tanh out); D mirrors it (strided convs,
  BatchNorm + LeakyReLU 0.2). Weights start from N(0, 0.02).
- ``reference-keras``: the generator and discriminator of the published Keras DCGAN
  brain-MRI studies, for like-for-like comparison: G = Dense(latent -> (s/4)^2 x 256),
  LeakyReLU, two Conv2DTranspose(128, 4, stride 2), Conv2D(channels, 7, tanh); D =
  Conv2D 64 (3x3) then Conv2D 128/128/256 (3x3, stride 2), LeakyReLU 0.2, Flatten,
  Dropout 0.4, Dense 1 (the sigmoid is folded into the loss). At 128 px: 27.3 M / 0.58 M
  parameters.

Conditional networks take class labels: ``CondInput`` concatenates a label embedding to
z in G, and ``Projection`` adds the class term of a projection discriminator to D. A
mask-conditioned ``dcgan`` generator (``mask_input``) is given a tumour mask and sees it,
average-pooled to each layer's size, as one more input channel of every transposed conv
after the first (a concatenation in the manner of label-map-to-image generators). A
``dcgan`` discriminator with a ``lesion_window`` carries a second, small discriminator that
judges the window around each sample's lesion (``lesion_windows``), as the global and local
discriminators of image completion (Iizuka et al. 2017): a lesion covers about 1 % of a
slice, too little of the whole image's score to teach G what one looks like.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from synthmri.nn.gan_training import MinibatchStd, PixelNorm

__all__ = [
    "DISCRIMINATOR_NORMS",
    "EMBED_DIM",
    "GENERATOR_NORMS",
    "SIZES",
    "CondInput",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "KerasDiscriminator",
    "KerasGenerator",
    "PoseHead",
    "Projection",
    "ProjectionDiscriminator",
    "build_networks",
    "dcgan_init",
    "invert_affine",
    "lesion_windows",
    "warp_affine",
]

SIZES: tuple[int, ...] = (32, 64, 128, 256)
EMBED_DIM = 50  # label embedding concatenated to z in conditional generators
DISCRIMINATOR_NORMS: tuple[str, ...] = ("batch", "spectral", "none")
DiscriminatorNorm = Literal["batch", "spectral", "none"]
GENERATOR_NORMS: tuple[str, ...] = ("batch", "pixel", "none")
GeneratorNorm = Literal["batch", "pixel", "none"]


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) conv/linear weights, N(1, 0.02) BatchNorm scales, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _keras_init(module: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class CondInput(nn.Module):
    """Concatenates a label embedding to z (or passes z through when unconditional)."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_classes, EMBED_DIM) if n_classes > 0 else None

    @property
    def extra(self) -> int:
        return EMBED_DIM if self.embed is not None else 0

    def forward(self, z: Tensor, y: Tensor | None) -> Tensor:
        if self.embed is None:
            return z
        if y is None:
            raise ValueError("a conditional generator needs labels")
        return torch.cat([z, self.embed(y).to(z.dtype)], dim=1)


class Projection(nn.Module):
    """The class term of a projection discriminator: <embed(y), sum of features>."""

    def __init__(self, n_classes: int, features: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_classes, features)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, h: Tensor, y: Tensor) -> Tensor:
        return (self.embed(y).to(h.dtype) * h.sum(dim=(2, 3))).sum(dim=1)


class ProjectionDiscriminator(nn.Module):
    """A discriminator ``body`` (features) -> ``head`` (one score per image), plus the
    projection term ``proj`` of conditional discriminators (None when unconditional).
    Subclasses build the three; ``forward(x, y)`` is shared."""

    body: nn.Module
    head: nn.Module
    proj: Projection | None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.body(x)
        out = self.head(h).reshape(-1)
        if self.proj is not None and y is not None:
            out = out + self.proj(h, y)
        return out


class PoseHead(nn.Module):
    """z ``[N, F]`` -> a pose per sample as the ``[N, 2, 3]`` matrix of ``F.affine_grid``
    (output to input coordinates): a turn of up to ``degrees``, a scale within
    ``exp(+-0.15)`` and a shift within 5 % of the frame, each bounded by a tanh of a linear
    map of z (near the identity at initialisation).

    The DCGAN generator left alone draws every head in one pose (docs/results.md, "DCGAN
    collapse"); with the pose as an explicit output, a diversity term can move it cheaply,
    as the affine layers of layered GANs do (LR-GAN, Yang et al. 2017)."""

    SCALE = 0.15
    SHIFT = 0.1  # of the half-width: affine_grid's coordinates span [-1, 1]

    def __init__(self, in_features: int, degrees: float) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, 4)
        self.max_turn = math.radians(degrees)

    def forward(self, h: Tensor) -> Tensor:
        with torch.autocast(h.device.type, enabled=False):
            p = torch.tanh(self.fc(h.float()))
        turn, inv_scale = p[:, 0] * self.max_turn, torch.exp(-p[:, 1] * self.SCALE)
        cos, sin = torch.cos(turn) * inv_scale, torch.sin(turn) * inv_scale
        dx, dy = p[:, 2] * self.SHIFT, p[:, 3] * self.SHIFT
        return torch.stack([torch.stack([cos, -sin, dx], 1), torch.stack([sin, cos, dy], 1)], 1)


def invert_affine(theta: Tensor) -> Tensor:
    """The inverse of each ``[2, 3]`` affine map of ``theta`` ``[N, 2, 3]``."""
    a, t = theta[:, :, :2], theta[:, :, 2:]
    inv = torch.linalg.inv(a)
    return torch.cat([inv, -inv @ t], dim=2)


def warp_affine(
    x: Tensor, theta: Tensor, padding: Literal["zeros", "reflection"] = "zeros"
) -> Tensor:
    """``x`` ``[N, C, H, W]`` in [-1, 1] resampled (bilinear) through ``theta`` (as
    ``F.affine_grid``), in float32. What comes in from outside the frame is -1 (``zeros``:
    the background of a mask) or the frame mirrored (``reflection``: a slice's background
    goes on, noise and all, where black corners would show the turned frame)."""
    with torch.autocast(x.device.type, enabled=False):
        grid = F.affine_grid(theta.float(), list(x.shape), align_corners=False)
        return F.grid_sample(x.float() + 1, grid, padding_mode=padding, align_corners=False) - 1


class DCGANGenerator(nn.Module):
    """z ``[N, latent]`` -> images ``[N, C, S, S]`` in [-1, 1] by transposed convs from 4x4.

    ``norm`` after every transposed conv but the last: ``batch`` (the paper's BatchNorm),
    ``pixel`` (``PixelNorm``, per sample and position; Karras et al. 2018) or ``none``.
    ``mask_input``: ``forward`` takes a mask ``[N, 1, S, S]`` in [-1, 1] too, and every
    transposed conv after the first gets it, pooled to its input's size, as an extra channel.
    ``pose`` (degrees, 0 = none): a ``PoseHead`` turns, scales and shifts the drawn slice
    as z says (the mask given is moved the other way first, so it fits the result).
    """

    def __init__(
        self,
        size: int,
        channels: int,
        latent_dim: int,
        ngf: int,
        n_classes: int = 0,
        norm: GeneratorNorm = "batch",
        mask_input: bool = False,
        pose: float = 0.0,
    ) -> None:
        super().__init__()
        if norm not in GENERATOR_NORMS:
            raise ValueError(f"unknown norm {norm!r}; use one of {', '.join(GENERATOR_NORMS)}")
        self.cond = CondInput(n_classes)
        self.mask_input = mask_input
        self.pose = PoseHead(latent_dim + self.cond.extra, pose) if pose > 0 else None
        steps = int(math.log2(size // 4))  # stride-2 upsamplings after the 4x4 start
        width = [ngf * min(2 ** (steps - 1 - i), 8) for i in range(steps)]
        extra = int(mask_input)
        cin = [latent_dim + self.cond.extra, *(w + extra for w in width[:-1])]
        layers: list[nn.Module] = []
        for i in range(steps):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers.append(nn.ConvTranspose2d(cin[i], width[i], 4, stride, pad, bias=False))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(width[i]))
            elif norm == "pixel":
                layers.append(PixelNorm())
            layers.append(nn.ReLU(True))
        layers += [
            nn.ConvTranspose2d(width[-1] + extra, channels, 4, 2, 1, bias=False),
            nn.Tanh(),
        ]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: Tensor, y: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        h = self.cond(z, y)
        if self.mask_input and mask is None:
            raise ValueError("a mask-conditioned generator needs masks")
        if self.pose is None:
            return self._draw(h, mask)
        theta = self.pose(h)
        if self.mask_input:  # drawn upright around the mask as it will lie once turned
            mask = warp_affine(mask, invert_affine(theta)).to(mask.dtype)
        out = self._draw(h, mask)
        return warp_affine(out, theta, "reflection").to(out.dtype)

    def _draw(self, h: Tensor, mask: Tensor | None) -> Tensor:
        h = h.reshape(h.shape[0], h.shape[1], 1, 1)
        if not self.mask_input:
            return self.net(h)
        for layer in self.net:
            if isinstance(layer, nn.ConvTranspose2d) and h.shape[-1] > 1:
                pooled = F.adaptive_avg_pool2d(mask.to(h.dtype), h.shape[-1])
                h = torch.cat([h, pooled], dim=1)
            h = layer(h)
        return h


class DCGANDiscriminator(ProjectionDiscriminator):
    """Images ``[N, C, S, S]`` -> logits ``[N]``: strided convs down to 4x4, then a 4x4 conv.

    Sizes that are not 4 times a power of two end on a 4 to 7 px map, and the last conv
    covers all of it (one logit per image either way). ``norm``: ``batch`` (the paper's
    BatchNorm after every conv but the first), ``spectral`` (spectral normalisation of
    every conv, head and projection included, and no BatchNorm; Miyato et al. 2018) or
    ``none``. ``minibatch_std``: a ``MinibatchStd`` feature map (groups of 4) before the
    head, so the head sees how much the samples of a batch differ. ``lesion_window`` > 0:
    ``lesion`` is a second discriminator of this kind for windows of that side (the last
    channel a mask), called through ``judge_lesions``; built after the rest, so the main
    discriminator starts from the same weights with or without it.
    """

    def __init__(
        self,
        size: int,
        channels: int,
        ndf: int,
        n_classes: int = 0,
        norm: DiscriminatorNorm = "batch",
        minibatch_std: bool = False,
        lesion_window: int = 0,
    ) -> None:
        super().__init__()
        if norm not in DISCRIMINATOR_NORMS:
            raise ValueError(f"unknown norm {norm!r}; use one of {', '.join(DISCRIMINATOR_NORMS)}")
        steps = int(math.log2(size // 4))
        width = [ndf * min(2**i, 8) for i in range(steps)]
        layers: list[nn.Module] = [
            nn.Conv2d(channels, width[0], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, True),
        ]
        for i in range(1, steps):
            layers.append(nn.Conv2d(width[i - 1], width[i], 4, 2, 1, bias=False))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(width[i]))
            layers.append(nn.LeakyReLU(0.2, True))
        self.body = nn.Sequential(*layers)
        extra = 1 if minibatch_std else 0
        head = nn.Conv2d(width[-1] + extra, 1, size // 2**steps, 1, 0, bias=False)
        self.head = nn.Sequential(MinibatchStd(), head) if minibatch_std else head
        self.proj = Projection(n_classes, width[-1]) if n_classes > 0 else None
        self.apply(dcgan_init)
        if norm == "spectral":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Embedding)):
                    spectral_norm(m)
        self.lesion_window = lesion_window
        self.lesion = (
            DCGANDiscriminator(lesion_window, channels, ndf, 0, norm) if lesion_window else None
        )

    def judge_lesions(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The lesion discriminator's logits ``[N]`` on ``lesion_windows(x)``, and their
        weights ``[N]`` (0 where a sample's mask is empty)."""
        if self.lesion is None:
            raise ValueError("this discriminator has no lesion_window")
        windows, weight = lesion_windows(x, self.lesion_window)
        return self.lesion(windows), weight


class KerasGenerator(nn.Module):
    """The reference Keras DCGAN generator (Dense -> two 2x upsamplings -> 7x7 conv, tanh)."""

    def __init__(self, size: int, channels: int, latent_dim: int, n_classes: int = 0) -> None:
        super().__init__()
        self.cond = CondInput(n_classes)
        self.start = size // 4
        self.dense = nn.Linear(latent_dim + self.cond.extra, self.start * self.start * 256)
        self.net = nn.Sequential(
            nn.LeakyReLU(0.2, True),
            nn.ConvTranspose2d(256, 128, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.ConvTranspose2d(128, 128, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(128, channels, 7, 1, 3),
            nn.Tanh(),
        )
        self.apply(_keras_init)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.dense(self.cond(z, y))
        return self.net(h.reshape(h.shape[0], 256, self.start, self.start))


class KerasDiscriminator(ProjectionDiscriminator):
    """The reference Keras DCGAN discriminator (four 3x3 convs, Dropout 0.4, Dense 1)."""

    def __init__(self, size: int, channels: int, n_classes: int = 0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 64, 3, 1, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(64, 128, 3, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(128, 128, 3, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(128, 256, 3, 2, 1),
            nn.LeakyReLU(0.2, True),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.4), nn.Linear(256 * (size // 8) ** 2, 1)
        )
        self.proj = Projection(n_classes, 256) if n_classes > 0 else None
        self.apply(_keras_init)


def lesion_windows(x: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Windows ``[N, C, window, window]`` of ``x`` ``[N, C, S, S]`` (last channel a mask in
    [-1, 1], lesion > 0) centred on each sample's mask centroid and kept inside the image,
    and weights ``[N]``: 1 where the mask has a lesion pixel, 0 where it is empty (its
    window is the image's centre). Gradients flow to ``x``; the windows' places do not
    depend on it differentiably."""
    n, _, h, w = x.shape
    m = (x[:, -1] > 0).to(x.dtype)
    mass = m.sum(dim=(1, 2))
    has = mass > 0

    def start(profile: Tensor, side: int) -> Tensor:
        pos = torch.arange(side, device=x.device, dtype=x.dtype)
        centre = (profile * pos).sum(1) / mass.clamp_min(1)
        centre = torch.where(has, centre, torch.full_like(centre, (side - 1) / 2))
        return (centre - (window - 1) / 2).round().long().clamp(0, side - window)

    steps = torch.arange(window, device=x.device)
    rows = start(m.sum(2), h)[:, None] + steps
    cols = start(m.sum(1), w)[:, None] + steps
    batch = torch.arange(n, device=x.device)[:, None, None]
    windows = x[batch, :, rows[:, :, None], cols[:, None, :]]  # [N, window, window, C]
    return windows.permute(0, 3, 1, 2).contiguous(), has.to(x.dtype)


def build_networks(config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
    """(G, D) for a network config: size, channels, latent_dim, ngf, ndf, n_classes
    (0 = unconditional), architecture (``dcgan``, the default, or ``reference-keras``) and,
    for ``dcgan``, the generator's ``g_norm`` and the discriminator's ``d_norm`` (default
    ``batch`` both), ``minibatch_std`` (default off), ``mask_input`` (default off: then G
    draws ``image_channels`` and D judges them with their mask, ``channels`` in all) and
    ``lesion_window`` (default 0: no lesion discriminator) and the generator's ``pose``
    (degrees; default 0: no pose head)."""
    size, ch, k = int(config["size"]), int(config["channels"]), int(config["n_classes"])
    if config.get("architecture", "dcgan") == "reference-keras":
        return (
            KerasGenerator(size, ch, int(config["latent_dim"]), k),
            KerasDiscriminator(size, ch, k),
        )
    mask_input = bool(config.get("mask_input", False))
    return (
        DCGANGenerator(
            size,
            int(config["image_channels"]) if mask_input else ch,
            int(config["latent_dim"]),
            int(config["ngf"]),
            k,
            norm=config.get("g_norm", "batch"),
            mask_input=mask_input,
            pose=float(config.get("pose", 0.0)),
        ),
        DCGANDiscriminator(
            size,
            ch,
            int(config["ndf"]),
            k,
            norm=config.get("d_norm", "batch"),
            minibatch_std=bool(config.get("minibatch_std", False)),
            lesion_window=int(config.get("lesion_window", 0)),
        ),
    )
