"""Scanning a folder: which layout it has, and the items (files or volumes) to load.

Layouts (``layout="auto"`` picks one):

- ``class_folders``: one sub-folder per class (``yes/`` ``no/``), or split/class folders
  (``Train/Tumor``, ``Validation/Normal``: the class is the inner folder, the item's
  ``splits`` entry the outer one, lower-cased). ``<stem>_mask.<ext>`` files beside images
  are loaded as their masks. Images directly in the root with no class folders load
  unlabelled (``labels=None``).
- ``image_mask``: ``<stem>_mask.<ext>`` beside every image, one folder per patient (the LGG
  kaggle_3m layout: the folder is the group), or parallel ``images/`` and ``masks/``
  folders; labels are ``tumor`` when the mask has any foreground, else ``normal``.
  Auto-detection picks it when masks lie beside the images and every image's name starts
  with its folder's name (``TCGA_x/TCGA_x_10.png``), or all images lie in the root. An image
  whose mask is missing does not change the layout: it is an error naming the image (or
  skipped with ``on_bad_file: skip``), never a reason to read patient folders as classes.
- ``nifti``: ``.nii``/``.nii.gz`` volumes cut into axial slices (see
  :func:`~synthmri.core.data.load_images`); the volume is the group. Auto-detection picks
  it as soon as the folder holds a volume.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from synthmri.core.data.options import LAYOUTS
from synthmri.core.errors import ConfigError, DataError

__all__ = ["IMAGE_EXTENSIONS", "Item", "scan"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".bmp"})

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


@dataclass
class Item:
    """One image file (or volume) to load, with what the layout says about it."""

    path: Path
    mask: Path | None = None
    class_name: str | None = None
    group: str | None = None
    split: str | None = None


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "~$")) or name.lower() in _IGNORED_DIRS


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".nii", ".nii.gz"))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _stem(path: Path) -> str:
    """The file name without its extension (``.nii.gz`` counts as one)."""
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
        name = _stem(f).lower()
        for suffix in suffixes:
            if name.endswith(suffix) and len(name) > len(suffix):
                partners = by_key.get((f.parent, name[: -len(suffix)]), [])
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


def _class_items(root: Path, images: list[Path], masks: dict[Path, Path]) -> list[Item]:
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
        items.append(Item(p, masks.get(p), cls, None, split))
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


def _parallel_items(img_dir: Path, mask_dir: Path) -> list[Item]:
    """Items of parallel ``images/`` and ``masks/`` folders, matched by relative stem."""
    masks: dict[tuple[str, ...], Path] = {}
    for m in _walk(mask_dir):
        if _is_image(m):
            rel = m.relative_to(mask_dir)
            name = _stem(m).lower()
            if name.endswith("_mask"):
                name = name[: -len("_mask")]
            masks.setdefault((*(s.lower() for s in rel.parts[:-1]), name), m)
    items = []
    for p in _walk(img_dir):
        if _is_image(p):
            rel = p.relative_to(img_dir)
            key = (*(s.lower() for s in rel.parts[:-1]), _stem(p).lower())
            items.append(Item(p, masks.get(key), None, None, None))
    return items


def _detect(root: Path, niftis: list[Path], pictures: list[Path]) -> str:
    """The layout ``auto`` stands for in ``root``."""
    if niftis:
        return "nifti"
    if not pictures:
        return "class_folders"  # reported by scan() as "no images"
    if _find_subdir(root, "images") and _find_subdir(root, "masks"):
        return "image_mask"
    images, masks = _pair_masks(pictures, ("_mask",))
    # any mask beside patient-like images: image+mask pairs (a missing mask is reported by
    # the loader as that image's error, never turned into patient folders read as classes)
    masked = bool(images) and any(p in masks for p in images)
    return "image_mask" if masked and _patient_like(root, images) else "class_folders"


def scan(root: Path, layout: str) -> tuple[str, list[Item]]:
    """Detect (``layout="auto"``) or apply the layout and list the items to load."""
    files = _walk(root)
    niftis = [f for f in files if _is_nifti(f)]
    pictures = [f for f in files if _is_image(f)]
    if layout == "auto":
        layout = _detect(root, niftis, pictures)

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
            return layout, _parallel_items(img_dir, mask_dir)
        images, masks = _pair_masks(pictures, ("_mask",))
        items = []
        for p in images:
            group = None if p.parent == root else p.parent.relative_to(root).as_posix()
            items.append(Item(p, masks.get(p), None, group, None))
        return layout, items
    if layout == "class_folders":
        images, masks = _pair_masks(pictures, ("_mask",))
        return layout, _class_items(root, images, masks)
    raise ConfigError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
