"""DiffAugment (Zhao et al. 2020): differentiable, batched augmentation of real and fake
images before a GAN's discriminator; its policy (which ops, and when it is on).

Importing this module loads no torch (``GANParams`` validates policies with it); the ops
import torch when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthmri.core.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "AUTO_POLICY",
    "AUTO_THRESHOLD",
    "DIFFAUGMENT_OPS",
    "check_policy",
    "diff_augment",
    "resolve_policy",
]

DIFFAUGMENT_OPS: tuple[str, ...] = ("color", "gain", "translation", "cutout")
AUTO_POLICY = "color,translation,cutout"
AUTO_THRESHOLD = 1000  # "auto" turns DiffAugment on below this many training images


def check_policy(policy: str) -> str:
    """``policy`` as a clean comma list of known ops; a ValueError names unknown ones."""
    ops = [p.strip() for p in policy.split(",") if p.strip()]
    bad = [p for p in ops if p not in DIFFAUGMENT_OPS]
    if bad:
        raise ValueError(
            f"unknown DiffAugment op(s) {', '.join(map(repr, bad))}; use 'auto', none, "
            f"or a comma list of {', '.join(DIFFAUGMENT_OPS)}"
        )
    return ",".join(ops)


def resolve_policy(policy: str | None, n_train: int) -> str:
    """The DiffAugment policy to use: ``"auto"`` -> all ops below 1000 images, else ``""``."""
    if policy is None:
        return ""
    if policy == "auto":
        return AUTO_POLICY if n_train < AUTO_THRESHOLD else ""
    if policy.strip().lower() in ("", "none", "off"):
        return ""
    try:
        return check_policy(policy.lower())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def diff_augment(x: Tensor, policy: str, image_channels: int = 1) -> Tensor:
    """DiffAugment of a batch ``x`` ``[N, C, H, W]`` in [-1, 1].

    ``policy`` is a comma list of ``color`` (random brightness, saturation and contrast;
    saturation only with 3 image channels), ``gain`` (the intensity above black times a
    random 0.5-1.5: brightness and contrast that keep the background black, so a faint
    background a generator draws stays visible to D), ``translation`` (up to 1/8 of the
    size, background (-1) padded) and ``cutout`` (a square of half the size set to -1).
    Every op draws per sample, is differentiable and runs batched on ``x``'s device.
    Colour and gain only touch the first ``image_channels`` channels, so a mask channel is
    moved and cut with its image but keeps its values.
    """
    if not policy:
        return x
    for op in policy.split(","):
        op = op.strip()
        if op == "color":
            x = _rand_color(x, image_channels)
        elif op == "gain":
            x = _rand_gain(x, image_channels)
        elif op == "translation":
            x = _rand_translation(x)
        elif op == "cutout":
            x = _rand_cutout(x)
        elif op:
            raise ValueError(f"unknown DiffAugment op {op!r}")
    return x


def _rand_color(x: Tensor, image_channels: int) -> Tensor:
    import torch

    c = x.shape[1]
    img = x[:, :image_channels] if image_channels < c else x
    n = x.shape[0]
    rnd = torch.rand(n, 3, 1, 1, 1, dtype=x.dtype, device=x.device)
    img = img + (rnd[:, 0] - 0.5)  # brightness
    if img.shape[1] == 3:  # saturation needs colour channels
        mean = img.mean(dim=1, keepdim=True)
        img = (img - mean) * (rnd[:, 1] * 2) + mean
    mean = img.mean(dim=(1, 2, 3), keepdim=True)
    img = (img - mean) * (rnd[:, 2] + 0.5) + mean  # contrast
    if image_channels < c:
        return torch.cat([img, x[:, image_channels:]], dim=1)
    return img


def _rand_gain(x: Tensor, image_channels: int) -> Tensor:
    import torch

    img = x[:, :image_channels]
    g = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5
    img = (img + 1) * g - 1  # in [0, 1] terms: x * g, black stays black
    return torch.cat([img, x[:, image_channels:]], dim=1)


def _rand_translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if sh == 0 and sw == 0:
        return x
    ty = torch.randint(-sh, sh + 1, (n, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1), device=x.device)
    rows = (torch.arange(h, device=x.device) + ty + 1).clamp_(0, h + 1)  # [N, H]
    cols = (torch.arange(w, device=x.device) + tx + 1).clamp_(0, w + 1)  # [N, W]
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _rand_cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    import torch

    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1), device=x.device) - ch // 2
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1), device=x.device) - cw // 2
    r = torch.arange(h, device=x.device)
    q = torch.arange(w, device=x.device)
    in_r = (r >= oy) & (r < oy + ch)  # [N, H]
    in_c = (q >= ox) & (q < ox + cw)  # [N, W]
    cut = (in_r[:, :, None] & in_c[:, None, :]).unsqueeze(1)  # [N, 1, H, W]
    return torch.where(cut, torch.full((), -1.0, dtype=x.dtype, device=x.device), x)
