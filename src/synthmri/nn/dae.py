"""A denoising autoencoder of healthy slices: a MONAI UNet trained to remove coarse noise.

Kascenas, Pugeault & O'Neil, "Denoising autoencoders for unsupervised anomaly detection in
brain MRI" (MIDL 2022), written from the paper: Gaussian noise drawn on a coarse grid
(``noise_resolution`` x ``noise_resolution``), upsampled bilinearly to the slice and added
inside the head only; the UNet learns to return the clean slice (mean squared error). What
it learns to remove is a smooth, blob-sized deviation from healthy anatomy, which is what a
tumour looks like to it, so its output on a tumour slice is a healthy-looking "repair".

Beside the paper's noise, ``foreign_patches`` (after foreign patch interpolation, Tan et al.,
"Detecting outliers with foreign patch interpolation", MELBA 2022): an elliptical patch of
another healthy slice blended into the head. It teaches the UNet to remove sharp-edged,
textured deviations too, which coarse noise does not show it. With ``objective: localise``
the UNet learns the paper's own task instead: to predict, per pixel, the weight with which
the patch was blended in (``patch_weights``); its prediction on a new slice is the anomaly
map.

And ``cell_sets`` for inpainting (after RIAD, Zavrtanik, Kristan & Skočaj, "Reconstruction
by inpainting for visual anomaly detection", Pattern Recognition 2021): the slice is cut
into square cells, the cells are dealt at random into disjoint sets, and the UNet learns to
fill one set's cells (set to 0) from the rest. At test time each set is removed in turn and
every pixel is taken from the pass whose hole held it (``inpaint``), so no pixel is
"repaired" from itself: a tumour inside a hole is filled from the anatomy around it.

``build_dae`` makes the network from a plain config dict (kept in checkpoints), optionally
``Residual`` (the UNet learns the correction);
``train_dae`` trains it; ``coarse_noise``, ``foreign_patches`` and ``cell_sets`` are the
corruptions; ``inpaint`` is the inpainting model's repair of a slice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from synthmri.core.errors import DataError
from synthmri.core.training import check_finite, minibatches, unwrap

if TYPE_CHECKING:
    from torch import Tensor, nn

    from synthmri.core.training import RunContext

__all__ = [
    "Residual",
    "build_dae",
    "cell_sets",
    "coarse_noise",
    "foreign_patches",
    "inpaint",
    "patch_weights",
    "train_dae",
]


class Residual(torch.nn.Module):
    """``x + net(x)``: the wrapped network learns the correction, not the slice (residual
    learning, as DnCNN: Zhang et al., IEEE TIP 2017)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


def build_dae(config: Mapping[str, Any]) -> nn.Module:
    """The DAE's network: MONAI ``UNet`` (2D, ``channels`` per level, stride 2 between
    levels, ``res_units`` residual units per block, instance norm) from ``image_channels``
    to ``out_channels`` (absent: ``image_channels``). MONAI's UNet instance-normalises its
    last transposed convolution, so with one output channel each slice's output is built
    from one normalised map: ``out_conv`` (absent: false) ends the UNet at ``channels[0]``
    maps instead and adds a 1 x 1 convolution to ``out_channels``, which can set any level
    and scale. With ``residual`` (absent: false) it is wrapped in ``Residual``, so the
    slice's own intensities reach the output past the UNet's instance norms."""
    from monai.networks.nets import UNet

    channels = [int(c) for c in config["channels"]]
    out = int(config.get("out_channels", config["image_channels"]))
    out_conv = bool(config.get("out_conv", False))
    net: nn.Module = UNet(
        spatial_dims=2,
        in_channels=int(config["image_channels"]),
        out_channels=channels[0] if out_conv else out,
        channels=channels,
        strides=[2] * (len(channels) - 1),
        num_res_units=int(config["res_units"]),
    )
    if out_conv:
        net = torch.nn.Sequential(net, torch.nn.Conv2d(channels[0], out, 1))
    return Residual(net) if config.get("residual", False) else net


def coarse_noise(
    shape: tuple[int, ...], resolution: int, std: float, generator: torch.Generator
) -> Tensor:
    """Gaussian noise of standard deviation ``std`` drawn on a ``resolution`` x
    ``resolution`` grid per slice and channel, upsampled bilinearly to ``shape``
    ``[N, C, H, W]`` (on the CPU)."""
    n, c, h, w = shape
    grid = torch.randn(n, c, resolution, resolution, generator=generator) * std
    return F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)


def patch_weights(
    heads: Tensor, radius: tuple[float, float], generator: torch.Generator
) -> Tensor:
    """Where and how strongly a foreign patch is blended in: ``[N, 1, H, W]`` in [0, 1], per
    slice an ellipse with semi-axes drawn from ``radius`` (shares of the side), centred on a
    pixel of its head (``heads`` bool ``[N, 1, H, W]``), cut to the head, with one weight
    drawn from U(0, 1)."""
    n, _, h, w = heads.shape
    rnd = torch.rand(n, 5, generator=generator)
    lo, hi = radius
    axes = (lo + (hi - lo) * rnd[:, :2]) * torch.tensor([h, w])  # [N, 2] semi-axes in px
    flat = heads.reshape(n, -1).float() + 1e-6  # a slice without a head: anywhere
    centre = torch.multinomial(flat, 1, generator=generator).squeeze(1)
    cy, cx = (centre // w).float(), (centre % w).float()
    yy = torch.arange(h).view(1, h, 1).float()
    xx = torch.arange(w).view(1, 1, w).float()
    inside = ((yy - cy.view(n, 1, 1)) / axes[:, 0].view(n, 1, 1)) ** 2 + (
        (xx - cx.view(n, 1, 1)) / axes[:, 1].view(n, 1, 1)
    ) ** 2 <= 1.0
    return (inside.unsqueeze(1) & heads.bool()).float() * rnd[:, 2].view(n, 1, 1, 1)


def foreign_patches(
    x: Tensor,
    heads: Tensor,
    donors: Tensor,
    radius: tuple[float, float],
    generator: torch.Generator,
) -> Tensor:
    """``x`` ``[N, C, H, W]`` with an elliptical patch of the same place in its donor slice
    (``donors``, shaped as ``x``) blended in with the weights of ``patch_weights``."""
    weight = patch_weights(heads, radius, generator)
    return x * (1 - weight) + donors * weight


def cell_sets(shape: tuple[int, ...], grid: int, sets: int, generator: torch.Generator) -> Tensor:
    """Holes for inpainting: bool ``[sets, N, 1, H, W]``, each slice's ``grid`` x ``grid``
    cells dealt at random into ``sets`` disjoint sets that together cover the slice."""
    n, _, h, w = shape
    deal = torch.randint(sets, (n, 1, grid, grid), generator=generator)
    holes = torch.stack([deal == k for k in range(sets)]).float()
    return (
        F.interpolate(holes.flatten(0, 1), size=(h, w), mode="nearest")
        .view(sets, n, 1, h, w)
        .bool()
    )


def inpaint(
    net: Callable[[Tensor], Tensor], x: Tensor, grids: list[int], sets: int, seed: int = 0
) -> Tensor:
    """``net``'s repair of ``x`` ``[N, C, H, W]`` (on ``net``'s device): for each grid in
    ``grids``, each of ``sets`` disjoint cell sets is removed in turn and filled by the
    net, every pixel taken from the pass that filled it; the mean over ``grids``. One deal
    of the cells (from ``seed``) for every slice, so a slice's repair does not depend on the
    slices beside it."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.zeros_like(x)
    for grid in grids:
        for hole in cell_sets((1, *x.shape[1:]), grid, sets, generator).to(x.device):
            out += torch.where(hole, net(x.masked_fill(hole, 0.0)).float(), 0.0)
    return out / len(grids)


def train_dae(
    net: nn.Module,
    images: Tensor,
    heads: Tensor,
    params: Any,
    run: RunContext,
    *,
    description: str = "dae",
) -> dict[str, Any]:
    """Train ``net`` to return ``images`` ``[N, C, H, W]`` (in [0, 1]) from
    ``images + coarse_noise * heads`` (``heads``: bool ``[N, 1, H, W]``, where the noise
    goes). ``params`` has ``iterations``, ``batch_size``, ``lr`` (Adam, cosine decay to 0),
    ``noise_resolution`` (grid sides; each step draws one), ``noise_std``, ``corruption``
    (``noise``; ``patch``: ``foreign_patches`` from the previous slice of the batch, semi-axes
    ``patch_radius``; ``both``: patches in the first half of each batch, noise in the rest;
    ``inpaint``: one of ``inpaint_sets`` cell sets of a grid drawn from ``inpaint_grids`` set
    to 0, the loss on those cells only), ``objective`` (absent: ``repair``; ``localise``:
    every slice gets a foreign patch and ``net`` learns its ``patch_weights``, one output
    channel of logits, binary cross-entropy) and ``log_every``. Logs the loss every
    ``log_every`` steps (the only host syncs), stops with a TrainingError on NaN. Returns the
    logged history; ``net`` is left in eval mode on ``run.device``."""
    if images.ndim != 4 or images.shape[0] == 0 or heads.shape[0] != images.shape[0]:
        raise DataError(f"{description}: need a non-empty [N, C, H, W] batch and one head each")
    device = run.device
    model = run.prepare(net)
    opt = torch.optim.Adam(model.parameters(), lr=params.lr, foreach=device.type != "cuda")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=params.iterations)
    data, fg = images.float(), heads.float()
    batches = minibatches(
        len(data), params.batch_size, run.generator(311), rank=run.rank, world=run.world_size
    )
    noise_gen = run.generator(313)
    grids = [int(r) for r in params.noise_resolution]
    radius = (float(params.patch_radius[0]), float(params.patch_radius[1]))
    localise = getattr(params, "objective", "repair") == "localise"
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    history: dict[str, list[float]] = {"step": [], "loss": []}
    total, since = torch.zeros((), device=device), 0
    model.train()
    with run.progress(params.iterations, description) as bar:
        for step in range(params.iterations):
            idx = next(batches)
            x = data[idx]
            weight = None  # where the loss is taken: everywhere, or the cells to fill
            target = x  # what the net returns: the clean slice, or the patch weights
            if localise:
                target = patch_weights(fg[idx], radius, noise_gen)
                noisy = x * (1 - target) + x.roll(1, dims=0) * target
            elif params.corruption == "inpaint":
                cells = params.inpaint_grids[int(torch.randint(len(params.inpaint_grids), (1,),
                                                               generator=noise_gen))]  # fmt: skip
                holes = cell_sets(tuple(x.shape), cells, params.inpaint_sets, noise_gen)[0]
                noisy = x.masked_fill(holes, 0.0)
                weight = holes.expand_as(x).float().to(device, non_blocking=True)
            else:  # slices [0, k) get a foreign patch, the rest coarse noise (drawn first)
                k = {"noise": 0, "patch": len(idx), "both": len(idx) // 2}[params.corruption]
                heads, parts = fg[idx], []
                if k < len(idx):
                    res = grids[int(torch.randint(len(grids), (1,), generator=noise_gen))]
                    rest = x[k:]
                    noise = coarse_noise(tuple(rest.shape), res, params.noise_std, noise_gen)
                    parts.append(rest + noise * heads[k:])
                if k:
                    donors = x.roll(1, dims=0)[:k]
                    parts.insert(0, foreign_patches(x[:k], heads[:k], donors, radius, noise_gen))
                noisy = parts[0] if len(parts) == 1 else torch.cat(parts)
            target = target.to(device, non_blocking=True)
            noisy = noisy.to(device, non_blocking=True).contiguous(memory_format=fmt)
            with run.autocast():
                out = model(noisy)
            if localise:  # FPI's: cross-entropy against the soft patch weights
                loss = F.binary_cross_entropy_with_logits(out.float(), target)
            elif weight is None:
                loss = F.mse_loss(out.float(), target)
            else:  # RIAD's: the loss of the filled cells only
                loss = ((out.float() - target) ** 2 * weight).sum() / weight.sum().clamp_min(1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
            since += 1
            if since == params.log_every or step == params.iterations - 1:
                value = float(total) / since  # the one host sync
                check_finite(value, f"{description} loss")
                run.log(step=step + 1, loss=value, lr=sched.get_last_lr()[0])
                history["step"].append(step + 1)
                history["loss"].append(value)
                bar.advance(since, loss=value)
                total.zero_()
                since = 0
    net = unwrap(model)
    net.eval()
    return history
