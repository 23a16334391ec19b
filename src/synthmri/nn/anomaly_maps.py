"""Anomaly maps from a model's reconstruction of healthy anatomy: the absolute and the
structural (SSIM) error, per-pixel normalisation by the errors of healthy slices (z-maps),
and morphological clean-up of binary anomaly maps.

All functions are pure (no state, no plugin): ``[N, 1, H, W]`` tensors in, tensors out.
The ``vae_anomaly`` classifier uses them; so can any reconstruction-based detector (a
diffusion model's denoised slice works the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PixelStats",
    "absolute_error",
    "clean_binary",
    "head_masks",
    "match_intensity",
    "pixel_stats",
    "ssim_error",
    "z_map",
]


def absolute_error(x: Tensor, recon: Tensor) -> Tensor:
    """``|x - recon|`` averaged over channels: ``[N, 1, H, W]``."""
    return (x.float() - recon.float()).abs().mean(1, keepdim=True)


def match_intensity(x: Tensor, recon: Tensor, mask: Tensor) -> Tensor:
    """``recon`` brought to the intensity scale of ``x`` per image and channel: ``a * recon
    + b`` with ``a``, ``b`` the least-squares fit of ``x`` on ``recon`` over ``mask`` (bool
    ``[N, 1, H, W]``; ``a`` kept in [0.25, 4]). A reconstruction that is right in shape but
    globally too dark or too flat then no longer errs over the whole head; a local lesion,
    a small share of the pixels, barely moves the fit."""
    m = mask.float().expand_as(x)
    n = m.flatten(2).sum(2).clamp(min=1.0)  # [N, C]
    xf, rf = x.float(), recon.float()
    mx = (xf * m).flatten(2).sum(2) / n
    mr = (rf * m).flatten(2).sum(2) / n
    dr = (rf - mr[..., None, None]) * m
    dx = (xf - mx[..., None, None]) * m
    var = dr.square().flatten(2).sum(2)
    a = torch.where(var > 1e-12, (dr * dx).flatten(2).sum(2) / var.clamp(min=1e-12), 1.0)
    a = a.clamp(0.25, 4.0)
    b = mx - a * mr
    return (a[..., None, None] * rf + b[..., None, None]).clamp(0.0, 1.0)


def ssim_error(
    x: Tensor, recon: Tensor, kernel_size: int = 7, sigma: float = 1.5, data_range: float = 1.0
) -> Tensor:
    """Structural error ``(1 - SSIM) / 2`` per pixel (MONAI's local SSIM with a Gaussian
    window, inputs reflect-padded so the map keeps the image size), averaged over channels:
    ``[N, 1, H, W]`` in [0, 1]. High where the local mean, contrast or structure of the
    reconstruction differs from the slice."""
    from monai.metrics.regression import compute_ssim_and_cs

    k = int(kernel_size) | 1  # odd
    pad = k // 2
    h, w = x.shape[-2:]
    if min(h, w) <= pad:
        raise ValueError(f"ssim_error: images of {h} x {w} px are too small for a {k} px window")
    xp = F.pad(x.float(), (pad, pad, pad, pad), mode="reflect")
    rp = F.pad(recon.float(), (pad, pad, pad, pad), mode="reflect")
    ssim, _ = compute_ssim_and_cs(
        rp, xp, spatial_dims=2, kernel_size=[k, k], kernel_sigma=[sigma, sigma],
        data_range=data_range,
    )  # fmt: skip
    return ((1.0 - ssim) / 2).clamp(0.0, 1.0).mean(1, keepdim=True)


def head_masks(images: Tensor) -> Tensor:
    """The loader's head mask (``core.data.preprocessing.head_mask``) of each slice of
    ``images`` ``[N, C, H, W]`` in [0, 1] (channel mean): bool ``[N, 1, H, W]``."""
    from synthmri.core.data.preprocessing import head_mask

    x = images.float().mean(1).cpu().numpy()
    out = np.stack([head_mask(img) for img in x]) if len(x) else np.zeros(x.shape, bool)
    return torch.from_numpy(out)[:, None]


@dataclass
class PixelStats:
    """Per-pixel mean and spread of healthy error maps, ``[1, 1, H, W]`` each (float32)."""

    mean: Tensor
    std: Tensor

    def state_dict(self) -> dict[str, Tensor]:
        """The two maps (CPU tensors), for a checkpoint."""
        return {"mean": self.mean.detach().cpu().clone(), "std": self.std.detach().cpu().clone()}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> PixelStats:
        """Rebuild from ``state_dict()``."""
        return cls(torch.as_tensor(state["mean"]).float(), torch.as_tensor(state["std"]).float())


def pixel_stats(
    errors: Tensor,
    masks: Tensor,
    sigma: float = 2.0,
    floor: float = 0.5,
    min_count: float = 3.0,
    min_std: float = 1e-3,
) -> PixelStats:
    """Per-pixel mean and standard deviation of healthy error maps ``[N, 1, H, W]``, each
    pixel counted only in the slices whose ``masks`` (bool, same shape) cover it.

    The sums are smoothed with a Gaussian of ``sigma`` pixels before dividing (a normalised
    convolution: few healthy slices give noisy per-pixel estimates); where fewer than
    ``min_count`` slices (after smoothing) cover a pixel, the head-wide mean and spread are
    used. The spread is floored at ``floor`` x its median over the covered pixels (and at
    ``min_std``), so a pixel where healthy slices happened to agree does not turn small
    errors into large z.
    """
    from scipy import ndimage

    if errors.shape != masks.shape or errors.ndim != 4 or errors.shape[1] != 1:
        raise ValueError(
            f"pixel_stats: errors {tuple(errors.shape)} and masks {tuple(masks.shape)} "
            "must both be [N, 1, H, W]"
        )
    e = errors[:, 0].double().cpu().numpy()
    m = masks[:, 0].bool().cpu().numpy().astype(np.float64)

    def smooth(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma, mode="nearest") if sigma > 0 else a

    count = smooth(m.sum(0))
    s1 = smooth((e * m).sum(0))
    s2 = smooth((e * e * m).sum(0))
    covered = count >= min_count
    total = float(m.sum())
    if total > 0:
        g_mean = float((e * m).sum() / total)
        g_var = float((e * e * m).sum() / total) - g_mean**2
    else:
        g_mean, g_var = float(e.mean()), float(e.var())
    safe = np.maximum(count, 1e-12)
    mean = np.where(covered, s1 / safe, g_mean)
    var = np.where(covered, s2 / safe - mean**2, g_var)
    std = np.sqrt(np.maximum(var, 0.0))
    ref = float(np.median(std[covered])) if covered.any() else float(np.sqrt(max(g_var, 0.0)))
    std = np.maximum(std, max(floor * ref, min_std, 1e-12))
    as_map = lambda a: torch.from_numpy(a.astype(np.float32))[None, None]  # noqa: E731
    return PixelStats(as_map(mean), as_map(std))


def z_map(errors: Tensor, stats: PixelStats) -> Tensor:
    """``max(0, (errors - mean) / std)`` per pixel: how unusual each error is for a healthy
    slice at that place (errors below the healthy mean are not anomalies)."""
    return ((errors.float() - stats.mean) / stats.std).clamp(min=0.0)


def clean_binary(binary: Tensor, radius: int = 1, min_pixels: int = 0) -> Tensor:
    """Morphological clean-up of bool maps ``[N, 1, H, W]``: an opening with a disk of
    ``radius`` pixels (0 = none) removes isolated pixels and thin rims, then connected
    components (8-neighbours) smaller than ``min_pixels`` are dropped."""
    from scipy import ndimage

    if radius <= 0 and min_pixels <= 1:
        return binary.bool()
    b = binary[:, 0].bool().cpu().numpy()
    out = np.zeros_like(b)
    disk = None
    if radius > 0:
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        disk = yy**2 + xx**2 <= radius**2 + radius  # radius 1: the 3 x 3 square
    eight = np.ones((3, 3), bool)
    for i in range(b.shape[0]):
        img = b[i]
        if not img.any():
            continue
        if disk is not None:
            img = ndimage.binary_opening(img, structure=disk)
        if min_pixels > 1 and img.any():
            labels, n = ndimage.label(img, structure=eight)
            if n:
                sizes = np.bincount(labels.ravel())
                sizes[0] = 0
                img = sizes[labels] >= min_pixels
        out[i] = img
    return torch.from_numpy(out)[:, None]
