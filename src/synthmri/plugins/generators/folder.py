"""``folder``: bring your own synthetic set, scored by the same protocol as the built-ins.

A synthetic set made by any tool (a MONAI bundle, medigan, StyleGAN2-ADA, a diffusion model,
another synthmri run's ``synthetic/<generator>/`` folder) is read from disk as a generator:
class folders (``tumor/``, ``normal/``, matched to the real data's class names ignoring
case) with optional ``<stem>_mask.<ext>`` files beside the images. It is read with the same
loader as the real data (``synthmri.core.data.load_images``), at the run's image size, so
it gets the same crop, pad, resize and [0, 1] scaling; then TSTR, mixed training, image
quality and privacy treat it like any generator's samples. Built-in phantoms made in memory
(no ``data.path``) never pass through the loader, so against them a folder's images are
scaled differently: ``fit`` then notes so (write the phantoms with ``synthmri phantoms`` and
give their folder as ``data.path`` to compare like with like).

``fit`` reads the folder (the training data is used only for its size and class names) and
records the folder's absolute path and a sha256 of the files read (relative names and
bytes, images and masks) in the ``state_dict``, in a note and in ``log.jsonl``.
``cache_key`` is that sha256, so ``--resume`` reads the folder again when its content has
changed. ``sample(n, label=k, seed=s)`` draws ``n`` images of class ``k`` with the seed:
distinct images when the class has at least ``n``, else every image about equally often
(the fit note gives the counts; a warning is logged when images repeat). Conditional (one
model for all classes, ``per_class: false``); per class it reads only that class. A class
of the real data that the folder lacks is an error naming both.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from synthmri import hookimpl
from synthmri.core.data.options import Layout
from synthmri.core.errors import ConfigError, DataError
from synthmri.core.interfaces import Generator, ImageSet, StrictParams
from synthmri.plugins.generators._baselines import balanced_draw, match_class, sample_seed

if TYPE_CHECKING:
    from synthmri.core.training import RunContext

__all__ = ["Folder", "folder_digest"]

log = logging.getLogger(__name__)


def folder_digest(path: str | Path, layout: str = "class_folders") -> tuple[str, int]:
    """(sha256, number of files) of the files the loader reads in ``path`` for ``layout``:
    each image and mask file's path relative to ``path`` and its bytes, in sorted order."""
    from synthmri.core.data.scan import scan
    from synthmri.core.files import check_regular

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(
            f"{root}: no such folder (folder generator)",
            hint="give the folder of the synthetic set as params.path",
        )
    _, items = scan(root, layout)
    files = sorted({f for it in items for f in (it.path, it.mask) if f is not None})
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        check_regular(f)  # a FIFO or device is refused, never opened
        with open(f, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest(), len(files)


class Folder(Generator):
    """A synthetic set read from class folders on disk (masks beside), made by any tool."""

    name: ClassVar[str] = "folder"
    description: ClassVar[str] = (
        "a synthetic set read from class folders on disk (masks beside), made by any tool"
    )
    conditional: ClassVar[bool] = True

    class Params(StrictParams):
        """Params of the ``folder`` generator."""

        path: str | None = Field(
            None,
            description="folder of class folders (tumor/, normal/, ...) with <stem>_mask files "
            "beside the images when there are masks; required",
        )
        layout: Layout = Field(
            "class_folders",
            description="the loader's layout (class_folders; image_mask: labels from the masks)",
        )
        channel: int | None = Field(None, ge=0, description="take this channel (else luminance)")
        crop_foreground: bool = Field(
            True, description="crop to the head first (as the real data's crop_foreground)"
        )
        emits_masks: bool | None = Field(
            None, description="sample the masks too; unset: when the folder has masks"
        )

    def __init__(self, params: StrictParams | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.emits_masks = self.params.emits_masks is not False  # unset: known after fit
        self.state: dict[str, Any] | None = None

    def _root(self) -> Path:
        if not self.params.path:
            raise ConfigError(
                "folder: params.path is not set",
                hint="give the folder of the synthetic set: params: {path: /my/synthetic}",
            )
        return Path(self.params.path).expanduser().resolve()

    def cache_key(self) -> str:
        """The sha256 of the folder's files: a changed folder redoes the stage on --resume."""
        return folder_digest(self._root(), self.params.layout)[0]

    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Read the folder at the training data's size; keep the classes the training data has."""
        import torch

        from synthmri.core.data.load import load_images
        from synthmri.core.phantoms import PHANTOM_SOURCE

        p = self.params
        root = self._root()
        digest, n_files = folder_digest(root, p.layout)
        loaded = load_images(
            root,
            layout=p.layout,
            size=train.size,
            channel=p.channel,
            crop_foreground=p.crop_foreground,
            near_duplicate_threshold=2.0,  # groups are not used: skip the near-duplicate search
            near_duplicate_aligned=2.0,
        ).data
        if loaded.labels is None:
            raise DataError(
                f"{root}: no class folders (the folder generator needs tumor/, normal/, ...)",
                hint="put the images of each class in a folder named after the class",
            )
        if p.emits_masks and loaded.masks is None:
            raise DataError(
                f"{root}: emits_masks is true, but the folder has no <stem>_mask files",
                hint="leave emits_masks unset, or add the masks beside the images",
            )
        present = [c for c, count in train.class_counts().items() if count > 0]
        if not present:
            raise DataError("folder: the training data has no class labels to match")
        keep, labels = [], []
        for cname in present:
            found = match_class(cname, loaded.class_names, f"{root} (folder generator)")
            idx = (loaded.labels == found).nonzero().reshape(-1)
            if len(idx) == 0:
                raise DataError(f"{root}: the folder for class {cname!r} holds no images")
            keep.append(idx)
            labels.append(torch.full((len(idx),), train.class_names.index(cname)))
        index = torch.cat(keep)
        data = loaded.subset(index)
        self.emits_masks = data.masks is not None and p.emits_masks is not False
        extra = sorted({c.lower() for c in loaded.class_names} - {c.lower() for c in present})
        self.state = {
            "path": str(root),
            "sha256": digest,
            "n_files": n_files,
            "class_names": list(train.class_names),
            "images": data.images.float(),
            "labels": torch.cat(labels).long(),
            "masks": data.masks.float() if self.emits_masks and data.masks is not None else None,
            "sources": [_relative(s, root) for s in data.sources],
            "emits_masks": self.emits_masks,
        }
        counts = ", ".join(f"{c} {len(i)}" for c, i in zip(present, keep, strict=True))
        run.log(folder=str(root), folder_sha256=digest, folder_files=n_files)
        run.note(
            f"folder: {len(data)} images ({counts}) read from {root}, sha256 {digest}"
            + (f"; classes not in the real data ignored: {', '.join(extra)}" if extra else "")
            + "; a sample larger than a class repeats its images"
        )
        if train.sources and all(s.startswith(PHANTOM_SOURCE) for s in train.sources):
            run.note(
                "folder: the real data are built-in phantoms made in memory, which the loader "
                "never crops or rescales, while this folder's images are (each to [0, 1]): "
                "compare like with like by writing the phantoms with `synthmri phantoms --out "
                "DIR` and running with data.path=DIR"
            )

    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        """``n`` images of class ``label`` (all classes when None) drawn with the seed."""
        import torch

        st = self._require_state()
        seed = sample_seed(seed)
        pool = torch.arange(len(st["labels"]))
        if label is not None:
            pool = (st["labels"] == int(label)).nonzero().reshape(-1)
            if len(pool) == 0:
                names = st["class_names"]
                cname = names[int(label)] if 0 <= int(label) < len(names) else str(label)
                raise DataError(f"{st['path']}: the folder generator has no images of {cname!r}")
        if n > len(pool):
            log.warning(
                "folder %s: %d images asked, %d available: images repeat", st["path"], n, len(pool)
            )
        chosen = pool[balanced_draw(n, len(pool), seed)]
        masks = st["masks"]
        return ImageSet(
            images=st["images"][chosen].clone(),
            labels=st["labels"][chosen].clone(),
            masks=None if masks is None else masks[chosen].clone(),
            sources=[f"folder:{st['sources'][i]}" for i in chosen.tolist()],
        )

    def _require_state(self) -> dict[str, Any]:
        if self.state is None:
            raise ConfigError("folder: not read yet", hint="call fit() or load a checkpoint")
        return self.state

    def state_dict(self) -> dict[str, Any]:
        """The images read, their labels and masks, the folder's path and sha256."""
        return dict(self._require_state())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.state = dict(state)
        self.emits_masks = bool(state["emits_masks"])


def _relative(source: str, root: Path) -> str:
    """``source`` (a file path) relative to ``root`` when it lies inside it."""
    try:
        return Path(source).resolve().relative_to(root).as_posix()
    except ValueError:
        return source


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the ``folder`` generator."""
    register(Folder)
