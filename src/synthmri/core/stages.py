"""Stages: content hashes, data fingerprints, per-stage seeds, safe file names, the stage
cache and the run directory.

A stage's key hashes its config and inputs, so an unchanged stage can be reused from an
earlier run (``--resume``, through :class:`StageCache`); its seed is derived from the run
seed and its key, so a stage gives the same result whatever runs before it. Every run gets
a fresh directory (:func:`new_run_dir`), never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthmri.core.errors import ConfigError

if TYPE_CHECKING:
    from synthmri.core.interfaces import ImageSet
    from synthmri.core.training import RunContext

__all__ = [
    "StageCache",
    "content_hash",
    "fingerprint",
    "new_run_dir",
    "safe_name",
    "stage_seed",
]


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


def new_run_dir(out: str | Path, name: str) -> Path:
    """A directory that did not exist before: ``<out>/<name>-<timestamp>[-k]``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{name}-{stamp}"
    candidate, k = base, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            k += 1
            candidate = base.with_name(f"{base.name}-{k}")


class StageCache:
    """``stages.json`` of a run: stage key -> config hash and the file holding its result.

    ``lookup`` finds a stage of the run given as ``resume`` whose hash matches and copies
    its file into this run; ``store`` saves a new result as a checkpoint. With
    ``run_dir=None`` nothing is written; with ``resume=None`` nothing is reused.
    """

    def __init__(self, run_dir: Path | None, resume: Path | None) -> None:
        self.run_dir, self.resume = run_dir, resume
        self.entries: dict[str, dict[str, str]] = {}
        self.previous: dict[str, dict[str, str]] = {}
        if resume is not None:
            index = resume / "stages.json"
            if not index.is_file():
                raise ConfigError(
                    f"{resume}: not a run directory (no stages.json)",
                    hint="give --resume the directory of an earlier run",
                )
            self.previous = json.loads(index.read_text())

    def lookup(self, key: str, digest: str) -> dict[str, Any] | None:
        """The earlier result of this stage if its hash matches, copied into this run."""
        from synthmri.core.training import load_checkpoint

        old = self.previous.get(key)
        if self.resume is None or old is None or old["hash"] != digest:
            return None
        src = self.resume / old["file"]
        if not src.is_file():
            return None
        if self.run_dir is not None:
            dst = self.run_dir / old["file"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            self._record(key, digest, old["file"])
        return load_checkpoint(src)

    def store(
        self, key: str, digest: str, run: RunContext, name: str, payload: dict[str, Any]
    ) -> None:
        """Save a stage result as the checkpoint ``name`` and index it."""
        path = run.save_checkpoint(name, payload)
        if path is not None and self.run_dir is not None:
            self._record(key, digest, str(path.relative_to(self.run_dir)))

    def _record(self, key: str, digest: str, file: str) -> None:
        self.entries[key] = {"hash": digest, "file": file}
        assert self.run_dir is not None
        tmp = self.run_dir / ".stages.json.tmp"
        tmp.write_text(json.dumps(self.entries, indent=1))
        tmp.replace(self.run_dir / "stages.json")
