"""``load_images``: a folder of slices (or NIfTI volumes) in, an :class:`ImageSet` out.

The steps, in order: validate the options, scan the folder (:mod:`.scan`), decide where
the labels come from (masks, class folders or nothing), read and preprocess every item in
a thread pool (:mod:`.read`, :mod:`.preprocessing`), find duplicate groups and merge them with
the layout's groups (:mod:`.duplicates`), assemble the set.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmri.core.data.duplicates import find_duplicate_groups, merge_groups
from synthmri.core.data.options import LoadOptions
from synthmri.core.data.preprocessing import (
    THUMBNAIL_SIZE,
    brain_fractions,
    fast_loading,
    minmax,
    preprocess,
    thumbnail,
)
from synthmri.core.data.read import BadFile, axial_slice, read_image, read_mask, read_volume
from synthmri.core.data.scan import Item, scan
from synthmri.core.errors import ConfigError, DataError
from synthmri.core.interfaces import ImageSet

__all__ = ["MASK_CLASS_NAMES", "LoadResult", "load_images", "plan"]

log = logging.getLogger(__name__)

MASK_CLASS_NAMES = ["normal", "tumor"]


@dataclass
class LoadResult:
    """What :func:`load_images` returns: the data and what happened while loading it."""

    data: ImageSet
    skipped: list[tuple[str, str]]  # (file, reason) for files skipped with on_bad_file="skip"
    duplicate_groups: int  # groups with >= 2 members found by duplicate detection
    layout: str  # the layout detected / used
    dropped: int = 0  # slices / images left out for too little brain (min_brain_fraction)


@dataclass
class _Slice:
    """One preprocessed slice and what duplicate detection and labelling need."""

    image: np.ndarray  # [size, size] float32 in [0, 1]
    mask: np.ndarray | None  # [size, size] float32 0/1
    has_tumor: bool | None  # mask foreground at full resolution (None: no mask file)
    thumbnail: np.ndarray  # [2, THUMBNAIL_SIZE**2] float32: whole frame, preprocessed
    fine: np.ndarray  # the same views at twice the side (float16): the aligned warps' sources
    digest: str
    source: str
    item: Item


@dataclass
class _Labelling:
    """Where the labels come from: the masks (``from_masks``), the class folders (``lookup``:
    lower-cased class name -> label) or nothing; ``items`` are those left to load."""

    items: list[Item]
    class_names: list[str] = field(default_factory=list)
    from_masks: bool = False
    lookup: dict[str, int] = field(default_factory=dict)


def load_images(
    path: str | Path,
    options: LoadOptions | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **overrides: Any,
) -> LoadResult:
    """Load a folder of brain MRI slices (or NIfTI volumes) as ``[N, 1, size, size]`` images.

    ``options`` (a :class:`LoadOptions`, e.g. the recipe's ``data`` section) with keyword
    ``overrides`` of its fields (``load_images(path, size=32, layout="nifti")``):

    - ``layout``: ``auto``, ``class_folders``, ``image_mask`` or ``nifti`` (see
      :mod:`synthmri.core.data.scan`).
    - ``channel``: for colour images take this channel (LGG RGB: 1 = FLAIR); else luminance.
      A grayscale image is used as it is whatever ``channel`` says.
    - ``crop_foreground``: crop to the head's bounding box before padding to a square.
    - ``on_bad_file``: ``error`` raises DataError for an unreadable file; ``skip`` lists it
      in ``LoadResult.skipped`` and goes on.
    - ``classes``: class folders to use, in this order (matched ignoring case; the names
      given are the class names). With mask-derived labels, a reordering of normal/tumor.
    - ``min_brain_fraction``: a slice is kept when the fraction of its pixels above
      ``min + 10 % of (99.5th percentile - min)`` reaches this: for NIfTI the minimum and
      percentile are those of the whole volume, for a picture (every 2D layout) those of the
      picture itself. Near-empty edge slices (a sliver of skull) are dropped so; how many is
      ``LoadResult.dropped`` (0 turns the filter off).
    - ``near_duplicate_threshold``: thumbnail correlation above which two images are one
      duplicate group (``> 1``: byte-identical files only).
    - ``near_duplicate_aligned``: the same for the best correlation inside the head over
      small shifts, rotations, zooms and a left-right mirror (``find_duplicate_groups``'s
      ``aligned_threshold``): the re-cropped, rotated or mirrored copies that sets built with
      augmentation hold (``> 1``: off).

    ``progress(done, total)`` is called after each file. A bad option is a ConfigError that
    names it.

    Every image: decoded with PIL (JPEG DCT-downscaled while decoding), one channel or the
    luminance, cropped to the head, padded to a centred square, resized, scaled to [0, 1];
    the mask gets the same crop/pad and a nearest resize (:func:`preprocess`). A
    mask-derived label reads the full-resolution mask, so a tumour of a few pixels keeps its
    label even where it vanishes from the resized mask.

    NIfTI: slices along the last axis after reorienting to RAS; ``<name>_mask`` or
    ``<name>_seg`` volumes beside are masks (label > 0). Labels: normal/tumor from the masks
    when any volume has one; else the class folder when volumes lie in class folders;
    else ``labels=None`` (volumes directly in the root give no class).

    Groups (what a split keeps on one side) are the patient folder / volume when the layout
    gives one, merged with duplicate groups (byte-identical or near-identical images) so
    that two copies of one image never end up on two sides; without patient information
    the duplicate group alone (``"dup:17"``).
    """
    opts = LoadOptions.build(options, **overrides)
    root, layout, labelling = plan(path, opts)
    slices, skipped, dropped = _read_all(root, layout, labelling.items, opts, progress)
    views, sources = _thumbnail_views(slices)
    dup = find_duplicate_groups(
        [s.digest for s in slices],
        views,
        opts.near_duplicate_threshold,
        opts.near_duplicate_aligned,
        sources,
    )
    data = ImageSet(
        images=torch.from_numpy(np.stack([s.image for s in slices]))[:, None],
        labels=_labels(slices, labelling),
        class_names=labelling.class_names,
        masks=_masks(slices, opts.size, labelling.from_masks),
        sources=[s.source for s in slices],
        groups=merge_groups([s.item.group for s in slices], dup),
        splits=_splits(slices),
    )
    n_dup = int((np.bincount(np.asarray(dup)) >= 2).sum())
    if dropped:
        log.info("%s: %d slice(s) with less brain than min_brain_fraction left out", root, dropped)
    return LoadResult(
        data=data, skipped=skipped, duplicate_groups=n_dup, layout=layout, dropped=dropped
    )


def plan(path: str | Path, options: LoadOptions | None = None) -> tuple[Path, str, _Labelling]:
    """What ``load_images`` would read, without reading a pixel: the folder, the layout and
    where the labels come from (with the items to load). Every error a folder can cause
    before decoding (no such folder, no images, a class that is missing, an image without
    its mask when ``on_bad_file`` is ``error``) is raised here; ``synthmri validate`` uses it.
    """
    opts = LoadOptions.build(options)
    root = _folder(path)
    layout, items = scan(root, opts.layout)
    if not items:
        raise DataError(f"{root}: no images found for layout {layout!r}")
    labelling = _labelling(root, layout, items, opts.classes)
    if layout == "image_mask" and opts.on_bad_file == "error":
        for it in labelling.items:
            if it.mask is None:
                bad = _no_mask(it)
                raise DataError(bad.message(), hint=bad.hint)
    return root, layout, labelling


# ------------------------------------------------------------------ the steps


def _folder(path: str | Path) -> Path:
    """``path`` as an existing, readable folder, else a DataError."""
    root = Path(path).expanduser()
    try:
        exists, is_dir = root.exists(), root.is_dir()
    except (OSError, ValueError) as exc:
        raise DataError(f"{str(root)[:300]}: cannot read ({exc})") from None
    if not exists:
        raise DataError(f"{root}: no such file or folder", hint="check the data path")
    if not is_dir:
        raise DataError(f"{root}: not a folder", hint="point to the folder that holds the images")
    if not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"{root}: cannot read the folder (permission denied)")
    return root


def _labelling(root: Path, layout: str, items: list[Item], classes: list[str] | None) -> _Labelling:
    """What the labels come from: the masks, the class folders, or nothing."""
    from_masks = layout == "image_mask" or (
        layout == "nifti" and any(it.mask is not None for it in items)
    )
    if from_masks:
        return _Labelling(items, _mask_class_names(classes, root), from_masks=True)
    if any(it.class_name is not None for it in items):
        class_names = _class_index([it.class_name or "" for it in items], classes, root)
        lookup = {c.lower(): i for i, c in enumerate(class_names)}
        kept = [it for it in items if (it.class_name or "").lower() in lookup]
        if len(kept) < len(items):
            log.info("%s: %d item(s) outside `classes` left out", root, len(items) - len(kept))
        return _Labelling(kept, class_names, lookup=lookup)
    if classes is not None:
        raise DataError(f"{root}: `classes` given but the {layout} layout here has no classes")
    return _Labelling(items)


def _class_index(found: list[str], classes: list[str] | None, where: Path) -> list[str]:
    """The class names, in order: sorted found names, or ``classes`` (matched ignoring case)."""
    canonical: dict[str, str] = {}
    for name in sorted(found):
        canonical.setdefault(name.lower(), name)
    if classes is None:
        return sorted(canonical.values())
    missing = [c for c in classes if c.lower() not in canonical]
    if missing:
        raise DataError(
            f"{where}: no folder for class(es) {', '.join(missing)}; "
            f"found: {', '.join(sorted(canonical.values())) or 'none'}",
            hint="fix `classes`, or the folder names",
        )
    if len({c.lower() for c in classes}) != len(classes):
        raise ConfigError(f"classes {classes} name one class twice")
    return list(classes)


def _mask_class_names(classes: list[str] | None, root: Path) -> list[str]:
    """normal/tumor, in the order (and spelling) ``classes`` gives, when it gives them."""
    if classes is None:
        return list(MASK_CLASS_NAMES)
    if sorted(c.lower() for c in classes) != MASK_CLASS_NAMES:
        raise DataError(
            f"{root}: labels come from the masks (normal/tumor); classes={classes} does not "
            "name those two",
            hint="leave `classes` out, or give ['normal', 'tumor'] in the order wanted",
        )
    return list(classes)


def _read_all(
    root: Path,
    layout: str,
    items: list[Item],
    opts: LoadOptions,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[_Slice], list[tuple[str, str]], int]:
    """Every item read and preprocessed, in order, in a thread pool; the skipped files; the
    number of slices dropped for too little brain."""
    total = len(items)
    skipped: list[tuple[str, str]] = []
    slices: list[_Slice] = []
    dropped = 0
    work = partial(_read_item, layout=layout, opts=opts)
    workers = min(8, os.cpu_count() or 1, total)
    with fast_loading():
        pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        try:
            results = pool.map(work, items) if pool else map(work, items)
            for done, res in enumerate(results, start=1):
                if isinstance(res, BadFile):
                    if opts.on_bad_file == "error":
                        raise DataError(
                            res.message(),
                            hint=res.hint or "fix or remove the file, or use on_bad_file='skip'",
                        )
                    skipped.append((str(res.path), res.reason))
                else:
                    kept, n_dropped = res
                    slices.extend(kept)
                    dropped += n_dropped
                if progress is not None:
                    progress(done, total)
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)
    if skipped:
        log.warning("%s: skipped %d unreadable file(s)", root, len(skipped))
    if not slices:
        reasons = []
        if skipped:
            reasons.append(f"{len(skipped)} skipped")
        if dropped:
            reasons.append(f"{dropped} with less brain than min_brain_fraction")
        raise DataError(
            f"{root}: no readable images ({', '.join(reasons) or 'no slice passed the filters'})"
        )
    return slices, skipped, dropped


def _no_mask(item: Item) -> BadFile:
    return BadFile(
        item.path,
        "no mask for this image (<stem>_mask.<ext> beside it, or in masks/)",
        unreadable=False,
        hint="add the mask, use on_bad_file: skip, or layout: class_folders if the folders "
        "are classes",
    )


def _read_item(item: Item, layout: str, opts: LoadOptions) -> tuple[list[_Slice], int] | BadFile:
    """The slices of one item and how many were dropped for too little brain, or the
    BadFile that stopped it (returned, not raised)."""
    try:
        if layout == "nifti":
            return _read_volume_slices(item, opts)
        if layout == "image_mask" and item.mask is None:
            return _no_mask(item)
        return _read_picture(item, opts)
    except BadFile as bad:
        return bad


def _read_picture(item: Item, opts: LoadOptions) -> tuple[list[_Slice], int]:
    # JPEG draft decoding (DCT scaling) for images without masks: decode at >= 2x the target
    # size so that a head filling half of the frame still has `size` pixels after the crop.
    draft = None if item.mask is not None else max(2 * opts.size, THUMBNAIL_SIZE)
    arr, digest, orig, _ = read_image(item.path, opts.channel, draft)
    mask = None if item.mask is None else read_mask(item.mask, item.path, orig)
    if brain_fractions(arr[..., None])[0] < opts.min_brain_fraction:
        return [], 1
    return [_slice(item, arr, mask, opts, digest, str(item.path))], 0


def _read_volume_slices(item: Item, opts: LoadOptions) -> tuple[list[_Slice], int]:
    vol = read_volume(item.path, opts.channel)
    mvol = None
    if item.mask is not None:
        mvol = read_volume(item.mask, None)
        if mvol.shape != vol.shape:
            raise BadFile(
                item.path,
                f"its mask {item.mask} has shape {mvol.shape} but the volume has shape {vol.shape}",
                unreadable=False,
            )
        mvol = mvol > 0
    fractions = brain_fractions(vol)
    out = []
    kept = np.flatnonzero(fractions >= opts.min_brain_fraction)
    for k in kept:
        sl = axial_slice(vol, int(k))
        msl = None if mvol is None else axial_slice(mvol, int(k))
        digest = hashlib.sha256(sl.tobytes() + str(sl.shape).encode()).hexdigest()
        out.append(_slice(item, sl, msl, opts, digest, f"{item.path}#z={int(k)}"))
    return out, int(len(fractions) - len(kept))


def _slice(
    item: Item,
    raw: np.ndarray,
    mask: np.ndarray | None,
    opts: LoadOptions,
    digest: str,
    source: str,
) -> _Slice:
    """One decoded slice (and its full-resolution bool mask) preprocessed."""
    norm = minmax(raw)
    image, out_mask = preprocess(norm, mask, size=opts.size, crop_foreground=opts.crop_foreground)
    return _Slice(
        image=image,
        mask=out_mask,
        has_tumor=None if mask is None else bool(mask.any()),
        thumbnail=np.stack([thumbnail(norm), thumbnail(image)]),
        fine=np.stack([thumbnail(x, 2 * THUMBNAIL_SIZE) for x in (norm, image)]).astype(np.float16),
        digest=digest,
        source=source,
        item=item,
    )


def _thumbnail_views(slices: list[_Slice]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The two thumbnail views duplicate detection compares (whole frame, preprocessed),
    and the same at twice the side (``[N, 1, 2 * THUMBNAIL_SIZE, 2 * THUMBNAIL_SIZE]``)."""
    thumbs = torch.from_numpy(np.stack([s.thumbnail for s in slices]))
    side = 2 * THUMBNAIL_SIZE
    fine = torch.from_numpy(np.stack([s.fine for s in slices])).float()
    return [thumbs[:, 0], thumbs[:, 1]], [fine[:, k].reshape(-1, 1, side, side) for k in (0, 1)]


def _labels(slices: list[_Slice], labelling: _Labelling) -> torch.Tensor | None:
    if labelling.from_masks:
        tumor = next(i for i, c in enumerate(labelling.class_names) if c.lower() == "tumor")
        return torch.tensor([tumor if s.has_tumor else 1 - tumor for s in slices]).long()
    if labelling.lookup:
        lookup = labelling.lookup
        return torch.tensor([lookup[(s.item.class_name or "").lower()] for s in slices]).long()
    return None


def _masks(slices: list[_Slice], size: int, from_masks: bool) -> torch.Tensor | None:
    """``[N, 1, size, size]`` masks when any slice has one (zeros for those without)."""
    if not from_masks and all(s.mask is None for s in slices):
        return None
    zero = np.zeros((size, size), np.float32)
    return torch.from_numpy(np.stack([zero if s.mask is None else s.mask for s in slices]))[:, None]


def _splits(slices: list[_Slice]) -> list[str] | None:
    if all(s.item.split is None for s in slices):
        return None
    return [s.item.split or "" for s in slices]
