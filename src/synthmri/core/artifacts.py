"""What a run writes besides numbers: synthetic sets as PNG files and figures.

- :func:`write_image_set`: an :class:`ImageSet` as 8-bit PNGs in class folders, masks beside;
- :func:`real_vs_synthetic_grid`: examples per class of the real set and each synthetic set;
- :func:`save_sample_grid`: a grid of one set's samples (masks outlined), e.g. during training;
- :func:`pyplot`: matplotlib's pyplot on the non-interactive Agg backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from synthmri.core.files import OutputDir
    from synthmri.core.interfaces import ImageSet
    from synthmri.core.training import RunContext

__all__ = ["pyplot", "real_vs_synthetic_grid", "save_sample_grid", "write_image_set"]

GRID_CAPTION = (
    "Examples per class: the real training slices first, then each generator's samples "
    "(tumour masks outlined in red). Look for: synthetic rows as varied as the real row "
    "(position, head size, contrast, tumour shape and place); near-identical images in a row "
    "mean mode collapse; an image that repeats a real one is memorisation (see privacy)."
)
SAMPLES_CAPTION = (
    "Samples of the generator (masks outlined in red). Look for: brain-like slices that differ "
    "from each other; many near-identical images mean mode collapse."
)


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the Agg backend (figures are files, never windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_image_set(data: ImageSet, folder: Path | OutputDir, prefix: str = "img") -> list[Path]:
    """Write images as 8-bit PNG under ``folder/<class>/`` with ``<stem>_mask.png`` beside.

    Everything goes through an :class:`~synthmri.core.files.OutputDir` bound to ``folder``:
    class names and ``prefix`` (which may come from a checkpoint) are made safe file names,
    each file is written atomically, and an OS error is one OutputError line.
    """
    from synthmri.core.files import OutputDir, safe_name

    out = folder if isinstance(folder, OutputDir) else OutputDir(folder)
    paths = []
    counters: dict[str, int] = {}
    for i in range(len(data)):
        cname = data.class_names[int(data.labels[i])] if data.labels is not None else "unlabelled"
        k = counters.get(cname, 0)
        counters[cname] = k + 1
        # short enough that "<stem>_mask.png" stays one untruncated safe name
        stem = f"{safe_name(prefix, 50)}_{safe_name(cname, 40)}_{k:05d}"
        arr = (data.images[i, 0].clamp(0, 1) * 255).round().byte().numpy()
        target = out.save_png(arr, cname, f"{stem}.png")
        if data.masks is not None:
            m = (data.masks[i, 0] > 0.5).byte().numpy() * 255
            out.save_png(m, cname, target.stem + "_mask.png")
        paths.append(target)
    return paths


def real_vs_synthetic_grid(
    sets: dict[str, ImageSet], run: RunContext, name: str, per_row: int = 8
) -> None:
    """Figure ``name``: a row of examples per class and set (``sets["real"]`` first, then
    each synthetic set), masks outlined in red; classes no synthetic set has are left out.

    The rows are one mosaic drawn once (a subplot per image made this figure the slowest
    step of a quick run); each row's set and class are written to its left.
    """
    if run.out_dir is None:
        return
    import torch
    import torch.nn.functional as F

    synthetic = list(sets.values())[1:]
    classes = [c for c in sets["real"].class_names if any(len(s.of_class(c)) for s in synthetic)]
    height, width = sets["real"].images.shape[-2:]
    images = torch.ones(len(classes) * len(sets), per_row, 1, height, width)
    masks = torch.zeros_like(images)
    labels = []
    for ri, (cname, kind, data) in enumerate(
        (c, kind, data) for c in classes for kind, data in sets.items()
    ):
        part = data.of_class(cname) if cname in data.class_names else data
        k = min(per_row, len(part))
        # a set drawn at another size is shown at the real set's
        images[ri, :k] = F.interpolate(part.images[:k, :1].float(), size=(height, width))
        if part.masks is not None:
            masks[ri, :k] = F.interpolate(part.masks[:k, :1].float(), size=(height, width))
        labels.append(f"{kind} / {cname}")
    save_sample_grid(run, images.flatten(0, 1), name, masks.flatten(0, 1), per_row, GRID_CAPTION,
                     row_labels=labels, title=" vs ".join(sets))  # fmt: skip


def save_sample_grid(
    run: RunContext,
    images: Tensor,
    name: str,
    masks: Tensor | None = None,
    nrow: int = 8,
    caption: str | None = None,
    *,
    row_labels: list[str] | None = None,
    title: str | None = None,
) -> Path | None:
    """Save ``images`` ``[N, 1, H, W]`` in [0, 1] as a grid via ``run.save_figure``.

    ``masks`` (``[N, 1, H, W]``, 0/1) are drawn as red contours. Without a run directory
    (or off rank 0) nothing is drawn and None is returned. ``caption`` (default: what to
    look for in a generator's samples) goes under the figure in the report; ``row_labels``
    are written left of the rows, ``title`` above the grid.
    """
    if run.out_dir is None or not run.is_main:
        return None
    from torchvision.utils import make_grid

    plt = pyplot()
    imgs = images.detach().float().cpu().clamp(0, 1)
    n = imgs.shape[0]
    nrow = max(1, min(nrow, n))
    grid = make_grid(imgs[:, :1], nrow=nrow, padding=2, pad_value=1.0)[0].numpy()
    rows = math.ceil(n / nrow)
    fig, ax = plt.subplots(figsize=(1.2 * nrow, 1.2 * rows))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if masks is not None and masks.numel() and bool((masks > 0.5).any()):
        binary = (masks.detach().float().cpu() > 0.5).float()[:, :1]
        mgrid = make_grid(binary, nrow=nrow, padding=2, pad_value=0.0)[0].numpy()
        ax.contour(mgrid, levels=[0.5], colors="red", linewidths=0.8)
    pitch = imgs.shape[-2] + 2
    for r, label in enumerate(row_labels or []):
        ax.text(-4, 2 + r * pitch + pitch / 2, label, ha="right", va="center", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    return run.save_figure(fig, name, caption=caption or SAMPLES_CAPTION)
