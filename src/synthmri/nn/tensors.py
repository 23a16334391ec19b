"""Small tensor helpers: value ranges, seeded latents, image/mask join and split, the checks
of a generator's training set, diversity, batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from synthmri.core.errors import DataError

if TYPE_CHECKING:
    from synthmri.core.interfaces import ImageSet

__all__ = [
    "IndexBlocks",
    "batch_diversity",
    "check_training_set",
    "cpu_state",
    "from_unit",
    "join_image_mask",
    "latent_seeded",
    "remove_specks",
    "split_image_mask",
    "to_unit",
]


def cpu_state(module: torch.nn.Module) -> dict[str, Tensor]:
    """A module's weights and buffers on the CPU, contiguous (what a checkpoint keeps)."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1]."""
    return x * 0.5 + 0.5


def from_unit(x: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2.0 - 1.0


def latent_seeded(n: int, dim: int, seed: int | None, device: torch.device | str) -> Tensor:
    """``n`` standard normal latents ``[n, dim]``; the same for a seed on every device."""
    if seed is None:
        return torch.randn(n, dim, device=device)
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, dim, generator=g).to(device)


def join_image_mask(images: Tensor, masks: Tensor | None, with_masks: bool) -> Tensor:
    """What a generator trains on, in [-1, 1]: ``images`` ``[N, 1, H, W]`` in [0, 1] and,
    ``with_masks``, their binary masks as a second channel (zeros where there are none)."""
    x = images
    if with_masks:
        m = masks if masks is not None else torch.zeros_like(images[:, :1])
        x = torch.cat([x, (m > 0.5).float()], dim=1)
    return from_unit(x)


def check_training_set(train: ImageSet, who: str, conditional: bool) -> int:
    """A DataError naming ``who`` for an empty set, NaN or inf, or a conditional model
    without labels; else the number of classes (0 when not ``conditional``)."""
    if len(train) == 0:
        raise DataError(f"{who}: the training set is empty")
    if not torch.isfinite(train.images).all():
        raise DataError(f"{who}: the training images contain NaN or inf")
    if not conditional:
        return 0
    if train.labels is None:
        raise DataError(
            f"{who}: conditional training needs labelled images",
            hint="set conditional: false, or load labelled data",
        )
    return max(len(train.class_names), int(train.labels.max()) + 1)


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
        binary = remove_specks(binary, min_pixels)
    return images, binary.unsqueeze(1).float()


def remove_specks(binary: Tensor, min_pixels: int) -> Tensor:
    """Drop 8-connected components smaller than ``min_pixels`` in ``binary`` ``[N, H, W]``."""
    from scipy import ndimage

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


def batch_diversity(x: Tensor) -> Tensor:
    """Mean pairwise L1 distance (per pixel) between the samples of a batch; 0 = collapsed."""
    n = x.shape[0]
    if n < 2:
        return torch.zeros((), device=x.device)
    flat = x.detach().float().reshape(n, -1)
    dist = torch.cdist(flat, flat, p=1.0)
    return dist.sum() / (n * (n - 1) * flat.shape[1])


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
