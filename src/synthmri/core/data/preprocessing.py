"""Preprocessing one slice: scale to [0, 1], crop to the head, pad to a centred square,
resize (MONAI transforms); thumbnails for duplicate detection; the one-thread context
the loader decodes and preprocesses under."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MIN_CROP_FRACTION",
    "THUMBNAIL_SIZE",
    "brain_fractions",
    "fast_loading",
    "head_mask",
    "minmax",
    "one_torch_thread",
    "preprocess",
    "thumbnail",
]

THUMBNAIL_SIZE = 32
MIN_CROP_FRACTION = 0.5  # the head crop is at least this fraction of the frame's longer side


def minmax(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to [0, 1] as float32; a constant (or non-finite) image becomes zeros."""
    lo, hi = float(x.min()), float(x.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return np.zeros_like(x, dtype=np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def brain_fractions(volume: np.ndarray) -> np.ndarray:
    """Per slice of ``volume`` ``[H, W, Z]``, the fraction of its pixels above
    ``min + 10 % of (99.5th percentile - min)`` of the whole volume (``min_brain_fraction``
    compares with this); all zeros for a constant volume."""
    lo = float(volume.min())
    hi = float(np.percentile(volume, 99.5))
    fg = volume > lo + 0.1 * (hi - lo) if hi > lo else np.zeros(volume.shape, bool)
    return fg.reshape(-1, volume.shape[-1]).mean(axis=0)


def _otsu(x: np.ndarray, bins: int = 64) -> float:
    hist, edges = np.histogram(x, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _head_components(image: np.ndarray) -> np.ndarray:
    """The head at reduced resolution (at most ~128 px a side): a smoothed copy above half
    its Otsu threshold, thin structures (scanner text, frame lines) removed by opening, the
    components of at least a quarter of the largest one kept."""
    from scipy import ndimage

    h, w = image.shape
    factor = max(1, round(max(h, w) / 128))
    small = image
    if factor > 1:
        t = torch.from_numpy(np.ascontiguousarray(image))[None, None]
        small = F.adaptive_avg_pool2d(t, (max(1, h // factor), max(1, w // factor)))[0, 0]
        small = small.numpy()
    sh, sw = small.shape
    smooth = ndimage.gaussian_filter(small, sigma=1.0)
    fg = smooth > 0.5 * _otsu(smooth)
    if min(sh, sw) >= 16:
        fg = ndimage.binary_opening(fg, structure=np.ones((5, 5), bool))
    lab, n = ndimage.label(fg)
    if not n:
        return np.zeros((sh, sw), bool)
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= 0.25 * sizes.max()) + 1
    return np.isin(lab, keep)


def head_mask(image: np.ndarray) -> np.ndarray:
    """The head (bool ``[H, W]``) of one slice in [0, 1], as the loader finds it to crop
    (``_foreground_box``), with holes filled (dark ventricles or a dark lesion inside the
    head belong to it) and brought back to the slice's resolution. All False when the
    slice has no foreground."""
    from scipy import ndimage

    fg = ndimage.binary_fill_holes(_head_components(np.asarray(image, dtype=np.float32)))
    h, w = image.shape
    if fg.shape != (h, w):
        t = torch.from_numpy(fg.astype(np.float32))[None, None]
        fg = F.interpolate(t, size=(h, w), mode="nearest")[0, 0].numpy() > 0.5
    return np.asarray(fg, dtype=bool)


def _foreground_box(image: np.ndarray, mask: np.ndarray | None) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the head: the box of ``_head_components`` (when it covers at
    least 1 % of the reduced frame), a 2 % margin and the mask's box added; at least
    ``MIN_CROP_FRACTION`` of the frame. No foreground found: the whole image."""
    h, w = image.shape
    fg = _head_components(image)
    sh, sw = fg.shape
    box = (0, h, 0, w)
    ys, xs = np.nonzero(fg)
    if ys.size and ys.size >= 0.01 * sh * sw:
        sy, sx = h / sh, w / sw
        margin = 0.02 * max(h, w)
        box = (
            max(0, int(ys.min() * sy - margin)),
            min(h, int(np.ceil((ys.max() + 1) * sy + margin))),
            max(0, int(xs.min() * sx - margin)),
            min(w, int(np.ceil((xs.max() + 1) * sx + margin))),
        )
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        box = (
            min(box[0], int(ys.min())),
            max(box[1], int(ys.max()) + 1),
            min(box[2], int(xs.min())),
            max(box[3], int(xs.max()) + 1),
        )
    # never zoom in beyond half the frame: a sliver at the top of a head stays small
    floor = int(np.ceil(MIN_CROP_FRACTION * max(h, w)))
    y0, y1 = _widen(box[0], box[1], min(floor, h), h)
    x0, x1 = _widen(box[2], box[3], min(floor, w), w)
    return y0, y1, x0, x1


def _widen(lo: int, hi: int, length: int, limit: int) -> tuple[int, int]:
    """Grow [lo, hi) around its centre to at least ``length``, inside [0, limit)."""
    if hi - lo >= length:
        return lo, hi
    lo = max(0, (lo + hi - length) // 2)
    hi = min(limit, lo + length)
    return hi - length, hi


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block, then restore the thread count."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def fast_loading() -> Iterator[None]:
    """MONAI without MetaTensor bookkeeping (3x faster per image) and one torch thread per
    op (files are decoded in parallel instead: small ops with intra-op threads on a busy
    machine are 10-100x slower); both restored afterwards."""
    from monai.data import get_track_meta, set_track_meta

    before = get_track_meta()
    set_track_meta(False)
    try:
        with one_torch_thread():
            yield
    finally:
        set_track_meta(before)


def preprocess(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    size: int = 64,
    crop_foreground: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One [H, W] slice (and its mask) to ``size x size``: crop to the head, pad to a centred
    square, resize (area when shrinking, bilinear when growing; nearest for the mask) and
    scale to [0, 1] (min-max; a constant image becomes zeros). MONAI transforms throughout."""
    from monai.transforms import Resize, ScaleIntensity, SpatialCrop, SpatialPad

    img = minmax(np.asarray(image, dtype=np.float32))
    if img.ndim != 2 or (mask is not None and np.shape(mask) != img.shape):
        raise ValueError(
            f"preprocess needs a 2D image and a mask of its shape, got {img.shape} and "
            f"{None if mask is None else np.shape(mask)}"
        )
    h, w = img.shape
    y0, y1, x0, x1 = _foreground_box(img, mask) if crop_foreground else (0, h, 0, w)
    crop = SpatialCrop(roi_start=(y0, x0), roi_end=(y1, x1))
    side = max(y1 - y0, x1 - x0)
    pad = SpatialPad(spatial_size=(side, side), method="symmetric", mode="constant")
    resize = Resize((size, size), mode="area" if side >= size else "bilinear")
    t = torch.from_numpy(np.ascontiguousarray(img))[None]
    # .contiguous(): torch pads a strided view very slowly (55 ms at 2 threads)
    t = ScaleIntensity(minv=0.0, maxv=1.0)(resize(pad(crop(t).contiguous())))
    out = torch.as_tensor(t).clamp(0.0, 1.0).numpy()[0].astype(np.float32)
    out_mask = None
    if mask is not None:
        m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        m = Resize((size, size), mode="nearest-exact")(pad(crop(m).contiguous()))
        out_mask = (torch.as_tensor(m).numpy()[0] > 0.5).astype(np.float32)
    return out, out_mask


def thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIZE) -> np.ndarray:
    """``image`` average-pooled to ``side`` squared, flattened (duplicate search)."""
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool2d(t, (side, side)).reshape(-1).numpy()
