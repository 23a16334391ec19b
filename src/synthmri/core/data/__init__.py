"""Real data in: scan layouts, read files, preprocess, duplicate groups, load, split.

``load_images(path)`` turns a folder of slices (or NIfTI volumes) into an
:class:`~synthmri.core.interfaces.ImageSet` of ``[N, 1, size, size]`` float32 images in
[0, 1]; ``split_dataset`` splits it leak-free by group. One module per job:

- :mod:`.options`: ``LoadOptions``, the loader's options (the recipe's ``data`` section
  extends it);
- :mod:`.scan`: the layouts (``class_folders``, ``image_mask``, ``nifti``; documented
  there) and the items they give;
- :mod:`.read`: decoding pictures, masks and NIfTI volumes;
- :mod:`.preprocessing`: crop to the head, pad, resize, scale; thumbnails;
- :mod:`.duplicates`: byte-identical and near-identical images, merged with the layout's
  groups (patients, volumes);
- :mod:`.load`: ``load_images`` and ``LoadResult``;
- :mod:`.split`: ``split_dataset`` and ``real_fraction`` (a group-respecting share of the
  train part).

Names are imported on first use, so ``import synthmri.core.data.options`` (the recipe
schema) loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synthmri.core.data.duplicates import find_duplicate_groups
    from synthmri.core.data.load import LoadResult, load_images
    from synthmri.core.data.options import LAYOUTS, LoadOptions
    from synthmri.core.data.preprocessing import preprocess
    from synthmri.core.data.scan import IMAGE_EXTENSIONS
    from synthmri.core.data.split import real_fraction, split_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "LoadOptions",
    "LoadResult",
    "find_duplicate_groups",
    "load_images",
    "preprocess",
    "real_fraction",
    "split_dataset",
]

_HOME = {
    "IMAGE_EXTENSIONS": "scan",
    "LAYOUTS": "options",
    "LoadOptions": "options",
    "LoadResult": "load",
    "find_duplicate_groups": "duplicates",
    "load_images": "load",
    "preprocess": "preprocessing",
    "real_fraction": "split",
    "split_dataset": "split",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
