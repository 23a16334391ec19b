"""Helpers the built-in GANs share: training params, DiffAugment, EMA, masks, grids, latents.

- ``GANParams``: the params every GAN here extends (iterations, batch, DiffAugment, EMA,
  logging);
- ``resolve_policy`` / ``diff_augment``: DiffAugment (Zhao et al. 2020), batched and
  differentiable, applied to real and fake images before the discriminator;
- ``EMA``: exponential moving average of a generator's weights, used for sampling;
- ``to_unit`` / ``from_unit``: [-1, 1] <-> [0, 1];
- ``split_image_mask``: a 2-channel (slice, mask) output -> images and clean binary masks;
- ``batch_diversity``: mean pairwise L1 distance in a batch (a mode-collapse signal);
- ``save_sample_grid``: a grid of samples (mask contours in red) into ``figures/``;
- ``latent_seeded``: reproducible latents for ``sample(seed=...)``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from synthmri.core.interfaces import StrictParams

if TYPE_CHECKING:
    from synthmri.core.training import RunContext

__all__ = [
    "AUTO_POLICY",
    "DIFFAUGMENT_OPS",
    "EMA",
    "GANParams",
    "IndexBlocks",
    "Projection",
    "batch_diversity",
    "diff_augment",
    "from_unit",
    "latent_seeded",
    "recalibrate_bn",
    "resolve_policy",
    "save_sample_grid",
    "split_image_mask",
    "to_unit",
]

DIFFAUGMENT_OPS: tuple[str, ...] = ("color", "translation", "cutout")
AUTO_POLICY = "color,translation,cutout"
AUTO_THRESHOLD = 1000  # "auto" turns DiffAugment on below this many training images


# ------------------------------------------------------------------ params


def _check_policy(policy: str) -> str:
    ops = [p.strip() for p in policy.split(",") if p.strip()]
    bad = [p for p in ops if p not in DIFFAUGMENT_OPS]
    if bad:
        raise ValueError(
            f"unknown DiffAugment op(s) {', '.join(map(repr, bad))}; use 'auto', none, "
            f"or a comma list of {', '.join(DIFFAUGMENT_OPS)}"
        )
    return ",".join(ops)


class GANParams(StrictParams):
    """Training params every GAN here shares."""

    iterations: int = Field(2000, ge=1, description="generator steps")
    batch_size: int = Field(32, ge=1, description="images per step (per process under DDP)")
    diffaugment: str | None = Field(
        "auto",
        description=(
            "DiffAugment policy on real and fake images before the discriminator: 'auto' "
            f"('{AUTO_POLICY}' below {AUTO_THRESHOLD} training images, else off), a comma "
            "list of color/translation/cutout, or null/'' for off"
        ),
    )
    ema: float | None = Field(
        0.999,
        gt=0.0,
        lt=1.0,
        description="EMA decay of the generator weights used for "
        "sampling; null = sample from the raw generator",
    )
    log_every: int = Field(50, ge=1, description="steps between log.jsonl lines (host syncs)")
    sample_every: int = Field(
        0, ge=0, description="steps between sample grids in figures/ (0 = only at the end)"
    )

    @field_validator("diffaugment")
    @classmethod
    def _valid_policy(cls, v: str | None) -> str | None:
        if v is None or v == "auto":
            return v
        if v.strip().lower() in ("", "none", "off"):
            return ""
        return _check_policy(v.lower())


# ------------------------------------------------------------------ DiffAugment


def resolve_policy(policy: str | None, n_train: int) -> str:
    """The DiffAugment policy to use: ``"auto"`` -> all ops below 1000 images, else ``""``."""
    if policy is None:
        return ""
    if policy == "auto":
        return AUTO_POLICY if n_train < AUTO_THRESHOLD else ""
    if policy.strip().lower() in ("", "none", "off"):
        return ""
    try:
        return _check_policy(policy.lower())
    except ValueError as exc:
        from synthmri.core.errors import ConfigError

        raise ConfigError(str(exc)) from None


def diff_augment(x: Tensor, policy: str, image_channels: int = 1) -> Tensor:
    """DiffAugment (Zhao et al. 2020) of a batch ``x`` ``[N, C, H, W]`` in [-1, 1].

    ``policy`` is a comma list of ``color`` (random brightness, saturation and contrast;
    saturation only with 3 image channels), ``translation`` (up to 1/8 of the size,
    background (-1) padded) and ``cutout`` (a square of half the size set to -1). Every
    op draws per sample, is differentiable and runs batched on ``x``'s device. Colour
    only touches the first ``image_channels`` channels, so a mask channel is moved and
    cut with its image but keeps its values.
    """
    if not policy:
        return x
    for op in policy.split(","):
        op = op.strip()
        if op == "color":
            x = _rand_color(x, image_channels)
        elif op == "translation":
            x = _rand_translation(x)
        elif op == "cutout":
            x = _rand_cutout(x)
        elif op:
            raise ValueError(f"unknown DiffAugment op {op!r}")
    return x


def _rand_color(x: Tensor, image_channels: int) -> Tensor:
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


def _rand_translation(x: Tensor, ratio: float = 0.125) -> Tensor:
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


# ------------------------------------------------------------------ EMA


class EMA:
    """Exponential moving average of a module's parameters (buffers are copied).

    The average starts as a copy of ``model``; early on the decay is warmed up
    (``min(decay, (1 + k) / (10 + k))`` after ``k`` updates) so the random initial
    weights do not linger. ``module`` is the averaged copy, in eval mode, without grads.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module: nn.Module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._ema_params = list(self.module.parameters())
        self._ema_float_bufs, self._ema_other_bufs = _split_buffers(self.module)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (and copy its buffers)."""
        src = _unwrap(model)
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        params = [p.detach() for p in src.parameters()]
        torch._foreach_lerp_(self._ema_params, params, 1.0 - decay)
        float_bufs, other_bufs = _split_buffers(src)
        if float_bufs:
            torch._foreach_copy_(self._ema_float_bufs, float_bufs)
        for dst, s in zip(self._ema_other_bufs, other_bufs, strict=True):
            dst.copy_(s)

    def state_dict(self) -> dict[str, object]:
        """The averaged weights and the update count."""
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what ``state_dict`` returned."""
        self.module.load_state_dict(state["module"])  # type: ignore[arg-type]
        self.updates = int(state.get("updates", 0))  # type: ignore[arg-type]


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _split_buffers(module: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    floats, others = [], []
    for b in module.buffers():
        (floats if b.is_floating_point() else others).append(b)
    return floats, others


# ------------------------------------------------------------------ batches


class IndexBlocks:
    """Index batches from ``minibatches`` (``first`` already drawn), moved to the device a
    block at a time: one host->device copy per ``block`` steps instead of one per step.
    ``next()`` returns the next index batch on ``device``."""

    def __init__(self, batches: Any, first: Tensor, block: int, device: torch.device) -> None:
        self.batches, self.block, self.device = batches, max(1, block), device
        self.buf = [first]
        self.rows: Tensor | None = None
        self.i = 0

    def next(self) -> Tensor:
        """The next index batch, on the device."""
        if self.rows is None or self.i >= self.rows.shape[0]:
            while len(self.buf) < self.block:
                self.buf.append(next(self.batches))
            self.rows = torch.stack(self.buf).to(self.device, non_blocking=True)
            self.buf, self.i = [], 0
        row = self.rows[self.i]
        self.i += 1
        return row


# ------------------------------------------------------------------ shared modules


class Projection(nn.Module):
    """The class term of a projection discriminator: <embed(y), sum of features>."""

    def __init__(self, n_classes: int, features: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_classes, features)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, h: Tensor, y: Tensor) -> Tensor:
        return (self.embed(y).to(h.dtype) * h.sum(dim=(2, 3))).sum(dim=1)


@torch.no_grad()
def recalibrate_bn(
    G: nn.Module,
    latent_dim: int,
    n_classes: int,
    batch: int,
    device: torch.device,
    autocast: Any,
    batches: int = 8,
) -> None:
    """Recompute the BatchNorm statistics of an EMA generator for its own (averaged) weights."""
    bns = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    G.train()
    bs = max(batch, 64)
    for _ in range(batches):
        z = torch.randn(bs, latent_dim, device=device)
        y = torch.randint(0, n_classes, (bs,), device=device) if n_classes else None
        with autocast():
            G(z, y)
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    G.eval()


# ------------------------------------------------------------------ value ranges


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1]."""
    return x * 0.5 + 0.5


def from_unit(x: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2.0 - 1.0


# ------------------------------------------------------------------ masks


def split_image_mask(x: Tensor, min_pixels: int = 4) -> tuple[Tensor, Tensor]:
    """Split ``x`` ``[N, 2, H, W]`` in [0, 1] into images ``[N, 1, H, W]`` and binary masks.

    The mask channel is thresholded at 0.5 and connected specks (8-connectivity) smaller
    than ``min_pixels`` are removed. Images are clamped to [0, 1]; both come back as
    float32 on the CPU.
    """
    if x.ndim != 4 or x.shape[1] != 2:
        raise ValueError(f"expected [N, 2, H, W], got {tuple(x.shape)}")
    x = x.detach().float().cpu()
    images = x[:, :1].clamp(0.0, 1.0).contiguous()
    binary = x[:, 1] > 0.5
    if min_pixels > 1 and bool(binary.any()):
        binary = _remove_specks(binary, min_pixels)
    return images, binary.unsqueeze(1).float()


def _remove_specks(binary: Tensor, min_pixels: int) -> Tensor:
    """Drop 8-connected components smaller than ``min_pixels`` in ``binary`` ``[N, H, W]``."""
    try:
        from scipy import ndimage
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return _remove_specks_torch(binary, min_pixels)
    structure = torch.zeros(3, 3, 3, dtype=torch.bool)
    structure[1] = True  # connect within a slice only, never across the batch
    labels, count = ndimage.label(binary.numpy(), structure=structure.numpy())
    if count == 0:
        return binary
    lab = torch.from_numpy(labels).long()
    sizes = torch.bincount(lab.reshape(-1), minlength=count + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[lab]


def _remove_specks_torch(binary: Tensor, min_pixels: int) -> Tensor:
    n, h, w = binary.shape
    ids = torch.arange(1, n * h * w + 1, dtype=torch.float32).reshape(n, 1, h, w)
    lab = torch.where(binary.unsqueeze(1), ids, torch.zeros(()))
    while True:
        grown = F.max_pool2d(lab, 3, stride=1, padding=1) * binary.unsqueeze(1)
        if torch.equal(grown, lab):
            break
        lab = grown
    lab = lab.long().reshape(-1)
    _, inverse, counts = torch.unique(lab, return_inverse=True, return_counts=True)
    keep = (counts[inverse] >= min_pixels) & (lab > 0)
    return keep.reshape(n, h, w)


# ------------------------------------------------------------------ monitoring


def batch_diversity(x: Tensor) -> Tensor:
    """Mean pairwise L1 distance (per pixel) between the samples of a batch; 0 = collapsed."""
    n = x.shape[0]
    if n < 2:
        return torch.zeros((), device=x.device)
    flat = x.detach().float().reshape(n, -1)
    dist = torch.cdist(flat, flat, p=1.0)
    return dist.sum() / (n * (n - 1) * flat.shape[1])


def save_sample_grid(
    run: RunContext,
    images: Tensor,
    name: str,
    masks: Tensor | None = None,
    nrow: int = 8,
) -> Path | None:
    """Save ``images`` ``[N, 1, H, W]`` in [0, 1] as a grid via ``run.save_figure``.

    ``masks`` (``[N, 1, H, W]``, 0/1) are drawn as red contours. Without a run directory
    (or off rank 0) nothing is drawn and None is returned.
    """
    if run.out_dir is None or not run.is_main:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    imgs = images.detach().float().cpu().clamp(0, 1)
    n = imgs.shape[0]
    nrow = max(1, min(nrow, n))
    grid = make_grid(imgs[:, :1], nrow=nrow, padding=2, pad_value=1.0)[0].numpy()
    rows = math.ceil(n / nrow)
    fig, ax = plt.subplots(figsize=(1.2 * nrow, 1.2 * rows))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if masks is not None and masks.numel() and bool((masks > 0.5).any()):
        mgrid = make_grid(
            (masks.detach().float().cpu() > 0.5).float()[:, :1], nrow=nrow, padding=2, pad_value=0.0
        )[0].numpy()
        ax.contour(mgrid, levels=[0.5], colors="red", linewidths=0.8)
    ax.set_axis_off()
    return run.save_figure(fig, name)


def latent_seeded(n: int, dim: int, seed: int | None, device: torch.device | str) -> Tensor:
    """``n`` standard normal latents ``[n, dim]``; the same for a seed on every device."""
    if seed is None:
        return torch.randn(n, dim, device=device)
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, dim, generator=g).to(device)
