"""Real data in: loaders, preprocessing, duplicate detection, leak-free splits.

``load_images(path)`` turns a folder of slices (or NIfTI volumes) into an :class:`ImageSet`
of ``[N, 1, size, size]`` float32 images in [0, 1]. Layouts (``layout="auto"`` picks one):

- ``class_folders``: one sub-folder per class (``yes/`` ``no/``), or split/class folders
  (``Train/Tumor``, ``Validation/Normal``: the class is the inner folder, the item's
  ``splits`` entry the outer one, lower-cased). ``<stem>_mask.<ext>`` files beside images
  are loaded as their masks. Images directly in the root with no class folders load
  unlabelled (``labels=None``).
- ``image_mask``: ``<stem>_mask.<ext>`` beside every image, one folder per patient (the LGG
  kaggle_3m layout: the folder is the group), or parallel ``images/`` and ``masks/``
  folders; labels are ``tumor`` when the mask has any foreground, else ``normal``.
  Auto-detection picks it when every image has a mask and every image's name starts with
  its folder's name (``TCGA_x/TCGA_x_10.png``), or all images lie in the root.
- ``nifti``: ``.nii``/``.nii.gz`` volumes cut into axial slices (see :func:`load_images`);
  the volume is the group. Auto-detection picks it as soon as the folder holds a volume.

Every image: decoded with PIL (JPEG DCT-downscaled while decoding), one channel or the
luminance, cropped to the head, padded to a centred square, resized, scaled to [0, 1]; the
mask gets the same crop/pad and a nearest resize (:func:`preprocess`). A mask-derived label
reads the full-resolution mask, so a tumour of a few pixels keeps its label even where it
vanishes from the resized mask.

Groups (what a split keeps on one side) are the patient folder / volume when the layout
gives one, merged with duplicate groups (byte-identical or near-identical images) so that
two copies of one image never end up on two sides; without patient information the
duplicate group alone (``"dup:17"``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from synthmri.core.errors import ConfigError, DataError
from synthmri.core.interfaces import ImageSet

__all__ = [
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "LoadResult",
    "find_duplicate_groups",
    "load_images",
    "preprocess",
    "split_dataset",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".bmp"})
LAYOUTS = ("auto", "class_folders", "image_mask", "nifti")
MASK_CLASS_NAMES = ["normal", "tumor"]
TEST_SPLIT_NAMES = frozenset({"validation", "val", "test"})
THUMBNAIL_SIZE = 32
MIN_CROP_FRACTION = 0.5  # the head crop is at least this fraction of the frame's longer side

_IGNORED_DIRS = frozenset({"__macosx", "__pycache__"})
# Folder names that are classes, never patients (guards image_mask auto-detection).
_CLASS_WORDS = frozenset(
    {
        "yes", "no", "normal", "tumor", "tumour", "tumors", "tumours", "healthy", "abnormal",
        "positive", "negative", "glioma", "meningioma", "pituitary", "notumor", "no_tumor",
        "benign", "malignant", "0", "1", "images", "masks", "train", "test", "val",
        "validation",
    }
)  # fmt: skip
_BAD_FILE_EXCEPTIONS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError)


@dataclass
class LoadResult:
    """What :func:`load_images` returns: the data and what happened while loading it."""

    data: ImageSet
    skipped: list[tuple[str, str]]  # (file, reason) for files skipped with on_bad_file="skip"
    duplicate_groups: int  # groups with >= 2 members found by duplicate detection
    layout: str  # the layout detected / used


class _BadFile(Exception):
    """A file that cannot be used; ``path`` is the culprit (the image or its mask).

    ``unreadable``: the file cannot be decoded ("cannot read image (reason)"); otherwise the
    reason is a whole sentence about an inconsistency (a mask of the wrong size, no mask).
    """

    def __init__(self, path: Path, reason: str, unreadable: bool = True) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.unreadable = unreadable

    def message(self) -> str:
        if self.unreadable:
            return f"{self.path}: cannot read image ({self.reason})"
        return f"{self.path}: {self.reason}"


@dataclass
class _Item:
    """One image file (or volume) to load, with what the layout says about it."""

    path: Path
    mask: Path | None = None
    class_name: str | None = None
    group: str | None = None
    split: str | None = None


@dataclass
class _Slice:
    """One preprocessed slice and what duplicate detection and labelling need."""

    image: np.ndarray  # [size, size] float32 in [0, 1]
    mask: np.ndarray | None  # [size, size] float32 0/1
    has_tumor: bool | None  # mask foreground at full resolution (None: no mask file)
    thumbnail: np.ndarray  # [2, THUMBNAIL_SIZE**2] float32: whole frame, preprocessed
    digest: str
    source: str
    item: _Item


# --------------------------------------------------------------------------- scanning


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "~$")) or name.lower() in _IGNORED_DIRS


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".nii", ".nii.gz"))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _stem(path: Path) -> str:
    name = path.name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    return path.stem


def _walk(root: Path) -> list[Path]:
    """All non-hidden files under ``root``, sorted, hidden folders pruned."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not _is_hidden(f))
    return out


def _pair_masks(files: list[Path], suffixes: Sequence[str]) -> tuple[list[Path], dict[Path, Path]]:
    """Split ``files`` into images and their ``<stem><suffix>.*`` masks in the same folder."""
    by_key: dict[tuple[Path, str], list[Path]] = {}
    for f in files:
        by_key.setdefault((f.parent, _stem(f).lower()), []).append(f)
    masks: dict[Path, Path] = {}
    mask_files: set[Path] = set()
    for f in files:
        stem = _stem(f).lower()
        for suffix in suffixes:
            if stem.endswith(suffix) and len(stem) > len(suffix):
                partners = by_key.get((f.parent, stem[: -len(suffix)]), [])
                if partners:
                    mask_files.add(f)
                    for p in partners:
                        # prefer a mask with the image's own extension
                        if p not in masks or f.suffix.lower() == p.suffix.lower():
                            masks[p] = f
                else:
                    log.warning("%s: a mask file with no image beside it; ignored", f)
                    mask_files.add(f)
                break
    images = [f for f in files if f not in mask_files]
    return images, masks


def _folder_roles(rel_parent: tuple[str, ...], depth: int) -> tuple[str | None, str | None]:
    """(class, split) for an item whose folder (relative to the root) is ``rel_parent``."""
    if depth == 0:
        return None, None
    if depth == 1:
        return rel_parent[0], None
    return rel_parent[-1], rel_parent[-2].lower()


def _class_items(root: Path, images: list[Path], masks: dict[Path, Path]) -> list[_Item]:
    """Items of the class-folder layout (flat, class/ or split/class/)."""
    depths = {len(p.relative_to(root).parts) - 1 for p in images}
    nonzero = sorted(d for d in depths if d > 0)
    depth = nonzero[0] if nonzero else 0
    items = []
    ignored = 0
    for p in images:
        rel = p.relative_to(root).parts[:-1]
        if len(rel) != depth:
            ignored += 1
            continue
        cls, split = _folder_roles(rel, depth)
        items.append(_Item(p, masks.get(p), cls, None, split))
    if ignored:
        log.warning(
            "%s: %d image(s) outside the %s folder level ignored",
            root,
            ignored,
            "class" if depth == 1 else "split/class",
        )
    return items


def _patient_like(root: Path, images: list[Path]) -> bool:
    """True when every image's name starts with its folder's name (LGG kaggle_3m style)."""
    for p in images:
        if p.parent == root:
            continue
        folder = p.parent.name.lower()
        if folder in _CLASS_WORDS or not _stem(p).lower().startswith(folder):
            return False
    return True


def _find_subdir(root: Path, name: str) -> Path | None:
    for d in sorted(root.iterdir()):
        if d.is_dir() and d.name.lower() == name:
            return d
    return None


def _parallel_items(root: Path, img_dir: Path, mask_dir: Path) -> list[_Item]:
    """Items of parallel ``images/`` and ``masks/`` folders, matched by relative stem."""
    masks: dict[tuple[str, ...], Path] = {}
    for m in _walk(mask_dir):
        if _is_image(m):
            rel = m.relative_to(mask_dir)
            stem = _stem(m).lower()
            if stem.endswith("_mask"):
                stem = stem[: -len("_mask")]
            masks.setdefault((*(s.lower() for s in rel.parts[:-1]), stem), m)
    items = []
    for p in _walk(img_dir):
        if _is_image(p):
            rel = p.relative_to(img_dir)
            key = (*(s.lower() for s in rel.parts[:-1]), _stem(p).lower())
            items.append(_Item(p, masks.get(key), None, None, None))
    return items


def _scan(root: Path, layout: str) -> tuple[str, list[_Item]]:
    """Detect (or apply) the layout and list the items to load."""
    files = _walk(root)
    niftis = [f for f in files if _is_nifti(f)]
    pictures = [f for f in files if _is_image(f)]
    if layout == "auto":
        if niftis:
            layout = "nifti"
        elif not pictures:
            layout = "class_folders"  # reported below as "no images"
        elif _find_subdir(root, "images") and _find_subdir(root, "masks"):
            layout = "image_mask"
        else:
            images, masks = _pair_masks(pictures, ("_mask",))
            all_masked = bool(images) and all(p in masks for p in images)
            layout = "image_mask" if all_masked and _patient_like(root, images) else "class_folders"

    if layout == "nifti":
        if not niftis:
            raise DataError(
                f"{root}: no NIfTI volumes (.nii, .nii.gz) found",
                hint="point to the folder that holds the volumes, or pick another layout",
            )
        vols, masks = _pair_masks(niftis, ("_mask", "_seg"))
        items = _class_items(root, vols, masks)
        for it in items:
            it.group = it.path.relative_to(root).as_posix()
        return layout, items

    if not pictures:
        raise DataError(
            f"{root}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})",
            hint="point to the folder that holds the class folders or the images",
        )
    if layout == "image_mask":
        img_dir, mask_dir = _find_subdir(root, "images"), _find_subdir(root, "masks")
        if img_dir and mask_dir:
            return layout, _parallel_items(root, img_dir, mask_dir)
        images, masks = _pair_masks(pictures, ("_mask",))
        items = []
        for p in images:
            group = None if p.parent == root else p.parent.relative_to(root).as_posix()
            items.append(_Item(p, masks.get(p), None, group, None))
        return layout, items
    if layout == "class_folders":
        images, masks = _pair_masks(pictures, ("_mask",))
        return layout, _class_items(root, images, masks)
    raise ConfigError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")


# ---------------------------------------------------------------------------- reading


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _to_gray(im: Image.Image, channel: int | None, path: Path) -> np.ndarray:
    """One float32 channel of a PIL image: ``channel`` of a colour image, else luminance."""
    mode = im.mode
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        im = im.convert("RGB")
    elif mode == "La":
        im = im.convert("LA")
    arr = np.asarray(im)
    if arr.ndim == 2:
        out = arr.astype(np.float32)
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0) if out.dtype.kind == "f" else out
    arr = arr.astype(np.float32)
    if arr.shape[2] in (2, 4):  # alpha: composite over black (the MRI background)
        arr = arr[..., :-1] * (arr[..., -1:] / 255.0)
    if arr.shape[2] == 1:
        return arr[..., 0]
    if channel is not None:
        if channel >= arr.shape[2]:
            raise DataError(
                f"{path}: has {arr.shape[2]} colour channels, channel={channel} was asked",
                hint=f"use a channel from 0 to {arr.shape[2] - 1}, or none for luminance",
            )
        return arr[..., channel]
    return arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114


def _read_image(
    path: Path, channel: int | None, draft: int | None
) -> tuple[np.ndarray, str, tuple[int, int], str]:
    """Decode ``path`` to a float32 [H, W] array; also the sha256, original (W, H), format."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _BadFile(path, _reason(exc)) from None
    if not data:
        raise _BadFile(path, "empty file (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            fmt = im.format or ""
            if draft and fmt == "JPEG":
                gray = channel is None and im.mode in ("L", "RGB")
                im.draft("L" if gray else im.mode, (draft, draft))
            im.load()
            arr = _to_gray(im, channel, path)
    except DataError:
        raise
    except (*_BAD_FILE_EXCEPTIONS, Image.DecompressionBombError) as exc:
        raise _BadFile(path, _reason(exc)) from None
    if arr.size == 0:
        raise _BadFile(path, "image has no pixels")
    return arr, digest, size, fmt


def _binarise(arr: np.ndarray, fmt: str) -> np.ndarray:
    """A mask as bool: 0/1 and small label maps use > 0, 8-bit masks > 127 (JPEG-safe)."""
    top = float(arr.max()) if arr.size else 0.0
    if fmt == "JPEG" or top > 255:
        return arr > (127.0 if top <= 255 else top / 2)
    return arr > 0 if top <= 10 else arr > 127


def _read_mask(path: Path, image_path: Path, image_size: tuple[int, int]) -> np.ndarray:
    arr, _, size, fmt = _read_image(path, None, None)
    if size != image_size:
        raise _BadFile(
            image_path,
            f"its mask {path} is {size[0]}x{size[1]} pixels but the image is "
            f"{image_size[0]}x{image_size[1]}",
            unreadable=False,
        )
    return _binarise(arr, fmt)


# ------------------------------------------------------------------------- preprocessing


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return np.zeros_like(x, dtype=np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


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


def _foreground_box(image: np.ndarray, mask: np.ndarray | None) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the head: threshold a smoothed, downsampled copy (half Otsu), drop
    thin structures (scanner text, frame lines) by morphological opening, keep the large
    components, add a 2 % margin and the mask's box; at least ``MIN_CROP_FRACTION`` of the
    frame. No foreground found: the whole image."""
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
    box = (0, h, 0, w)
    lab, n = ndimage.label(fg)
    if n:
        sizes = np.bincount(lab.ravel())[1:]
        keep = np.flatnonzero(sizes >= 0.25 * sizes.max()) + 1
        ys, xs = np.nonzero(np.isin(lab, keep))
        if ys.size >= 0.01 * sh * sw:
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
def _fast_loading() -> Iterator[None]:
    """MONAI without MetaTensor bookkeeping (3x faster per image) and one torch thread per
    op (files are decoded in parallel instead: small ops with intra-op threads on a busy
    machine are 10-100x slower); both restored afterwards."""
    from monai.data import get_track_meta, set_track_meta

    before = get_track_meta(), torch.get_num_threads()
    set_track_meta(False)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        set_track_meta(before[0])
        torch.set_num_threads(before[1])


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

    img = _minmax(np.asarray(image, dtype=np.float32))
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


def _thumbnail(image: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool2d(t, (THUMBNAIL_SIZE, THUMBNAIL_SIZE)).reshape(-1).numpy()


def _load_picture(
    item: _Item, size: int, channel: int | None, crop_foreground: bool
) -> list[_Slice]:
    # JPEG draft decoding (DCT scaling) for images without masks: decode at >= 2x the target
    # size so that a head filling half of the frame still has `size` pixels after the crop.
    draft = None if item.mask is not None else max(2 * size, THUMBNAIL_SIZE)
    arr, digest, orig, _ = _read_image(item.path, channel, draft)
    mask = None
    if item.mask is not None:
        mask = _read_mask(item.mask, item.path, orig)
    norm = _minmax(arr)
    image, out_mask = preprocess(norm, mask, size=size, crop_foreground=crop_foreground)
    return [
        _Slice(
            image=image,
            mask=out_mask,
            has_tumor=None if mask is None else bool(mask.any()),
            thumbnail=np.stack([_thumbnail(norm), _thumbnail(image)]),
            digest=digest,
            source=str(item.path),
            item=item,
        )
    ]


def _load_volume_array(path: Path, channel: int | None) -> np.ndarray:
    """A NIfTI volume as a float32 [X, Y, Z] array reoriented to RAS (MONAI ``LoadImage``
    with the nibabel reader; the reorientation follows the affine it reports)."""
    import nibabel as nib
    from monai.transforms import LoadImage

    try:
        vol, meta = LoadImage(reader="NibabelReader", image_only=False, ensure_channel_first=True)(
            str(path)
        )
        arr = np.asarray(torch.as_tensor(vol).numpy(), dtype=np.float32)
        if arr.ndim == 3:  # a 2D NIfTI: one slice
            arr = arr[..., None]
        if arr.ndim != 4:
            raise ValueError(f"expected a 3D volume, got shape {tuple(arr.shape)}")
        affine = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
        if affine.shape == (4, 4):
            ornt = nib.orientations.io_orientation(affine)
            arr = np.stack([nib.orientations.apply_orientation(a, ornt) for a in arr])
    except (*_BAD_FILE_EXCEPTIONS, RuntimeError, IndexError) as exc:
        raise _BadFile(path, _reason(exc)) from None
    if channel is not None and channel >= arr.shape[0]:
        raise DataError(
            f"{path}: has {arr.shape[0]} channels, channel={channel} was asked",
            hint=f"use a channel from 0 to {arr.shape[0] - 1}",
        )
    out = np.ascontiguousarray(arr[channel or 0], dtype=np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _axial(volume: np.ndarray, k: int) -> np.ndarray:
    # RAS array [x, y, z]: rows anterior (top) to posterior, columns patient right to left
    return np.ascontiguousarray(np.flipud(volume[:, :, k].T))


def _load_volume(
    item: _Item,
    size: int,
    channel: int | None,
    crop_foreground: bool,
    min_brain_fraction: float,
) -> list[_Slice]:
    vol = _load_volume_array(item.path, channel)
    mvol = None
    if item.mask is not None:
        mvol = _load_volume_array(item.mask, None)
        if mvol.shape != vol.shape:
            raise _BadFile(
                item.path,
                f"its mask {item.mask} has shape {mvol.shape} but the volume has shape {vol.shape}",
                unreadable=False,
            )
        mvol = mvol > 0
    lo = float(vol.min())
    hi = float(np.percentile(vol, 99.5))
    fg = vol > lo + 0.1 * (hi - lo) if hi > lo else np.zeros(vol.shape, bool)
    fractions = fg.reshape(-1, vol.shape[2]).mean(axis=0)
    out = []
    for k in np.flatnonzero(fractions >= min_brain_fraction):
        sl = _axial(vol, int(k))
        msl = None if mvol is None else _axial(mvol, int(k))
        norm = _minmax(sl)
        image, out_mask = preprocess(norm, msl, size=size, crop_foreground=crop_foreground)
        digest = hashlib.sha256(sl.tobytes() + str(sl.shape).encode()).hexdigest()
        out.append(
            _Slice(
                image=image,
                mask=out_mask,
                has_tumor=None if msl is None else bool(msl.any()),
                thumbnail=np.stack([_thumbnail(norm), _thumbnail(image)]),
                digest=digest,
                source=f"{item.path}#z={int(k)}",
                item=item,
            )
        )
    return out


# ------------------------------------------------------------------------- duplicates


def find_duplicate_groups(
    digests: Sequence[str],
    thumbnails: torch.Tensor | Sequence[torch.Tensor],
    threshold: float = 0.98,
) -> list[int]:
    """A group index per item: byte-identical items (same digest) share a group, and so do
    near-identical ones (Pearson correlation of their thumbnails ``>= threshold``: the same
    picture at another size, JPEG quality or framing); transitive (connected components).

    ``thumbnails``: one tensor ``[N, ...]`` (flattened per item), or several such views
    (e.g. the whole frame and the head crop): two items match when any view does. A constant
    thumbnail matches only by digest; ``threshold > 1`` turns near-duplicate detection off.
    Group indices count from 0 in order of first appearance. Vectorised: an ``N x N``
    product per view, in row blocks (3000 items: well under a second).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(digests)
    views = [thumbnails] if isinstance(thumbnails, torch.Tensor) else list(thumbnails)
    for v in views:
        if v.shape[0] != n:
            raise ValueError(f"{v.shape[0]} thumbnails for {n} digests")
    if n == 0:
        return []
    first: dict[str, int] = {}
    same_a, same_b = [], []
    for i, d in enumerate(digests):
        j = first.setdefault(d, i)
        if j != i:
            same_a.append(j)
            same_b.append(i)
    rows = [np.asarray(same_a, dtype=np.int64)]
    cols = [np.asarray(same_b, dtype=np.int64)]
    if threshold <= 1.0:
        for view in views:
            t = view.reshape(n, -1).double()
            t = t - t.mean(dim=1, keepdim=True)
            norms = t.norm(dim=1, keepdim=True)
            valid = (norms[:, 0] > 1e-8 * max(1.0, float(norms.max()))).numpy()
            t = t / norms.clamp_min(1e-12)
            block = 1024
            for start in range(0, n, block):
                sim = (t[start : start + block] @ t.T).numpy()
                a, b = np.nonzero(sim >= threshold - 1e-9)
                a += start
                keep = (a < b) & valid[a] & valid[b]
                rows.append(a[keep])
                cols.append(b[keep])
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, dtype=np.int8), (r, c)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    renumber: dict[int, int] = {}
    return [renumber.setdefault(int(lab), len(renumber)) for lab in labels]


def _merge_groups(layout_groups: list[str | None], dup: list[int]) -> list[str]:
    """Union of the layout's groups (patient, volume) and the duplicate groups."""
    if all(g is None for g in layout_groups):
        return [f"dup:{d}" for d in dup]
    parent = list(range(len(dup)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    seen: dict[tuple[str, object], int] = {}
    for i, (g, d) in enumerate(zip(layout_groups, dup, strict=True)):
        for key in (("g", g), ("d", d)):
            if key[1] is None:
                continue
            union(i, seen.setdefault(key, i))
    names: dict[int, set[str]] = {}
    for i, g in enumerate(layout_groups):
        names.setdefault(find(i), set())
        if g is not None:
            names[find(i)].add(g)
    out = []
    for i in range(len(dup)):
        root = find(i)
        out.append("+".join(sorted(names[root])) if names[root] else f"dup:{dup[root]}")
    return out


# ---------------------------------------------------------------------------- loading


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


def load_images(
    path: str | Path,
    *,
    size: int = 64,
    layout: str = "auto",
    channel: int | None = None,
    crop_foreground: bool = True,
    on_bad_file: str = "error",
    classes: list[str] | None = None,
    min_brain_fraction: float = 0.05,
    near_duplicate_threshold: float = 0.98,
    progress: Callable[[int, int], None] | None = None,
) -> LoadResult:
    """Load a folder of brain MRI slices (or NIfTI volumes) as ``[N, 1, size, size]`` images.

    - ``layout``: ``auto``, ``class_folders``, ``image_mask`` or ``nifti`` (module docstring).
    - ``channel``: for colour images take this channel (LGG RGB: 1 = FLAIR); else luminance.
      A grayscale image is used as it is whatever ``channel`` says.
    - ``crop_foreground``: crop to the head's bounding box before padding to a square.
    - ``on_bad_file``: ``error`` raises DataError for an unreadable file; ``skip`` lists it
      in ``LoadResult.skipped`` and goes on.
    - ``classes``: class folders to use, in this order (matched ignoring case; the names
      given are the class names). With mask-derived labels, a reordering of normal/tumor.
    - ``min_brain_fraction``: NIfTI slices are kept when the fraction of voxels above
      ``min + 10 % of (99.5th percentile - min)`` of their volume reaches this.
    - ``near_duplicate_threshold``: thumbnail correlation above which two images are one
      duplicate group (``> 1``: byte-identical files only).

    NIfTI: slices along the last axis after reorienting to RAS; ``<name>_mask`` or
    ``<name>_seg`` volumes beside are masks (label > 0). Labels: normal/tumor from the masks
    when any volume has one; else the class folder when volumes lie in class folders;
    else ``labels=None`` (volumes directly in the root give no class).
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if on_bad_file not in ("error", "skip"):
        raise ConfigError(f"on_bad_file must be 'error' or 'skip', not {on_bad_file!r}")
    if int(size) < 4:
        raise ConfigError(f"size must be at least 4 pixels, not {size}")
    if channel is not None and channel < 0:
        raise ConfigError(f"channel must be >= 0, not {channel}")
    if not 0.0 <= min_brain_fraction <= 1.0:
        raise ConfigError(f"min_brain_fraction must be in [0, 1], not {min_brain_fraction}")
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such file or folder", hint="check the data path")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder", hint="point to the folder that holds the images")

    layout, items = _scan(root, layout)
    if not items:
        raise DataError(f"{root}: no images found for layout {layout!r}")

    # what the labels come from: the masks, the class folders, or nothing
    mask_labels = layout == "image_mask" or (
        layout == "nifti" and any(it.mask is not None for it in items)
    )
    class_names: list[str] = []
    lookup: dict[str, int] = {}
    if mask_labels:
        class_names = _mask_class_names(classes, root)
    elif any(it.class_name is not None for it in items):
        class_names = _class_index([it.class_name or "" for it in items], classes, root)
        lookup = {c.lower(): i for i, c in enumerate(class_names)}
        kept = [it for it in items if (it.class_name or "").lower() in lookup]
        if len(kept) < len(items):
            log.info("%s: %d item(s) outside `classes` left out", root, len(items) - len(kept))
        items = kept
    elif classes is not None:
        raise DataError(f"{root}: `classes` given but the {layout} layout here has no classes")

    total = len(items)
    skipped: list[tuple[str, str]] = []
    slices: list[_Slice] = []

    def work(item: _Item) -> list[_Slice] | _BadFile:
        try:
            if layout == "nifti":
                return _load_volume(item, size, channel, crop_foreground, min_brain_fraction)
            if layout == "image_mask" and item.mask is None:
                return _BadFile(
                    item.path,
                    "no mask for this image (<stem>_mask.<ext> beside it, or in masks/)",
                    unreadable=False,
                )
            return _load_picture(item, size, channel, crop_foreground)
        except _BadFile as bad:
            return bad

    workers = min(8, os.cpu_count() or 1, total)
    with _fast_loading():
        pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        try:
            results = pool.map(work, items) if pool else map(work, items)
            for done, res in enumerate(results, start=1):
                if isinstance(res, _BadFile):
                    if on_bad_file == "error":
                        raise DataError(
                            res.message(),
                            hint="fix or remove the file, or use on_bad_file='skip'",
                        )
                    skipped.append((str(res.path), res.reason))
                else:
                    slices.extend(res)
                if progress is not None:
                    progress(done, total)
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)
    if skipped:
        log.warning("%s: skipped %d unreadable file(s)", root, len(skipped))
    if not slices:
        raise DataError(
            f"{root}: no readable images"
            + (f" ({len(skipped)} skipped)" if skipped else " (no slice passed the filters)")
        )

    has_masks = mask_labels or any(s.mask is not None for s in slices)
    labels: torch.Tensor | None = None
    if mask_labels:
        tumor = next(i for i, c in enumerate(class_names) if c.lower() == "tumor")
        labels = torch.tensor([tumor if s.has_tumor else 1 - tumor for s in slices])
    elif lookup:
        labels = torch.tensor([lookup[(s.item.class_name or "").lower()] for s in slices])

    # duplicates and groups
    thumbs = torch.from_numpy(np.stack([s.thumbnail for s in slices]))
    dup = find_duplicate_groups(
        [s.digest for s in slices], [thumbs[:, 0], thumbs[:, 1]], near_duplicate_threshold
    )
    n_dup = int((np.bincount(np.asarray(dup)) >= 2).sum())
    groups = _merge_groups([s.item.group for s in slices], dup)

    masks = None
    if has_masks:
        zero = np.zeros((size, size), np.float32)
        masks = torch.from_numpy(np.stack([zero if s.mask is None else s.mask for s in slices]))
        masks = masks[:, None]
    splits = None
    if any(s.item.split is not None for s in slices):
        splits = [s.item.split or "" for s in slices]
    data = ImageSet(
        images=torch.from_numpy(np.stack([s.image for s in slices]))[:, None],
        labels=labels.long() if labels is not None else None,
        class_names=class_names,
        masks=masks,
        sources=[s.source for s in slices],
        groups=groups,
        splits=splits,
    )
    return LoadResult(data=data, skipped=skipped, duplicate_groups=n_dup, layout=layout)


# ----------------------------------------------------------------------------- splits


def _group_split(
    data: ImageSet, index: list[int], fractions: list[float], names: list[str], seed: int
) -> list[list[int]]:
    """Split ``index`` by group into ``[rest, *fractions]`` parts, stratified by the groups'
    majority label; every part with a positive fraction (and the rest) gets >= 1 group."""
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for i in index:
        members.setdefault(data.groups[i], []).append(i)
    labels = data.labels
    strata: dict[int, list[str]] = {}
    for g in sorted(members):
        key = 0 if labels is None else int(torch.bincount(labels[members[g]]).argmax())
        strata.setdefault(key, []).append(g)
    bounds = np.cumsum(fractions)
    part_of: dict[str, int] = {}
    for key in sorted(strata):
        gs = strata[key]
        order = [gs[i] for i in rng.permutation(len(gs))]
        total = sum(len(members[g]) for g in gs)
        cum = 0
        for g in order:
            mid = (cum + len(members[g]) / 2) / total
            part_of[g] = next((k + 1 for k, b in enumerate(bounds) if mid < b), 0)
            cum += len(members[g])

    needed = [0] + [k + 1 for k, f in enumerate(fractions) if f > 0]
    for part in needed:
        if any(p == part for p in part_of.values()):
            continue
        counts = {q: sum(1 for p in part_of.values() if p == q) for q in needed}
        donor = max(counts, key=lambda q: (counts[q], q == 0))
        if counts[donor] < 2:
            raise DataError(
                f"cannot split {len(members)} group(s) into {'/'.join(names)}: the "
                f"{names[part]} part would be empty (the items of one patient, volume or "
                "duplicate group stay together)",
                hint="use more data, or set the empty part's fraction to 0",
            )
        pool = sorted((g for g, p in part_of.items() if p == donor), key=lambda g: len(members[g]))
        smallest = [g for g in pool if len(members[g]) == len(members[pool[0]])]
        part_of[smallest[int(rng.integers(len(smallest)))]] = part
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for g, p in part_of.items():
        parts[p].extend(members[g])
    return [sorted(p) for p in parts]


def split_dataset(
    data: ImageSet,
    *,
    val: float = 0.15,
    test: float = 0.2,
    seed: int = 0,
    use_layout_split: bool = False,
) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Train / val / test by group (no group on two sides), stratified by label.

    ``val`` and ``test`` are fractions of the items (reached as closely as whole groups
    allow). With ``use_layout_split`` the test part is exactly the items whose ``splits``
    value is validation/val/test (any case); ``val`` is then a fraction of the rest, and
    items of the rest that share a group with a test item are dropped (logged), so that no
    duplicate leaks. A part that would be empty is a DataError; ``val=0`` gives an empty val.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ConfigError(f"val={val} and test={test} must be >= 0 and sum to less than 1")
    if len(data) == 0:
        raise DataError("cannot split an empty data set")
    if use_layout_split:
        if data.splits is None:
            raise DataError(
                "use_layout_split: the data layout gives no splits",
                hint="use split folders (e.g. Train/ and Validation/), or a random split",
            )
        is_test = [s.lower() in TEST_SPLIT_NAMES for s in data.splits]
        test_idx = [i for i, t in enumerate(is_test) if t]
        if not test_idx:
            found = ", ".join(sorted(set(data.splits)))
            raise DataError(
                f"use_layout_split: no item is in a validation/val/test split (found: {found})",
                hint="name the held-out folder Validation, val or test",
            )
        test_groups = {data.groups[i] for i in test_idx}
        rest = [i for i, t in enumerate(is_test) if not t]
        kept = [i for i in rest if data.groups[i] not in test_groups]
        if len(kept) < len(rest):
            log.warning(
                "use_layout_split: %d item(s) dropped from train/val: duplicates of test items",
                len(rest) - len(kept),
            )
        if not kept:
            raise DataError("use_layout_split: no training items left outside the test split")
        train_idx, val_idx = _group_split(data, kept, [val], ["train", "val"], seed)
    else:
        train_idx, test_idx, val_idx = _group_split(
            data, list(range(len(data))), [test, val], ["train", "test", "val"], seed
        )
    return data.subset(train_idx), data.subset(val_idx), data.subset(test_idx)
