"""Stage identity: content hashes, data fingerprints, per-stage seeds and safe file names.

A stage's key hashes its config and inputs, so an unchanged stage can be reused from an
earlier run (``--resume``); its seed is derived from the run seed and its key, so a stage
gives the same result whatever runs before it.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synthmri.core.interfaces import ImageSet

__all__ = ["content_hash", "fingerprint", "safe_name", "stage_seed"]


def content_hash(*parts: Any) -> str:
    """A short sha256 of ``parts``: tensors by their bytes, everything else as sorted JSON."""
    import torch

    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            h.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def fingerprint(data: ImageSet) -> str:
    """A content hash of a set's images, labels, masks and class names."""
    return content_hash(
        data.images,
        data.labels if data.labels is not None else [],
        data.masks if data.masks is not None else [],
        data.class_names,
    )


def stage_seed(seed: int, key: str) -> int:
    """The seed of stage ``key`` in a run seeded with ``seed``."""
    return (seed * 1_000_003 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)) % 2**31


def safe_name(name: str) -> str:
    """``name`` as one file-name component: ``/`` becomes ``-``, other odd characters ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.replace("/", "-"))
