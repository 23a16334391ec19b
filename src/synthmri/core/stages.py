"""Stages: content hashes, data fingerprints, per-stage seeds, safe file names, the stage
cache and the run directory.

A stage's key hashes its config and inputs, so an unchanged stage can be reused from an
earlier run (``--resume``, through :class:`StageCache`); its seed is derived from the run
seed and its key, so a stage gives the same result whatever runs before it. Every run gets
a fresh directory (:func:`new_run_dir`), never overwritten. File names and every write go
through :mod:`synthmri.core.files` (``safe_name``, ``OutputDir``).

``--resume`` never trusts the earlier run: a malformed ``stages.json`` or an entry whose
file lies outside that run is ignored (the stages are redone) with a warning; a checkpoint
is loaded before it is copied, so a corrupt one is redone, never copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthmri.core.errors import ConfigError, DataError
from synthmri.core.files import OutputDir, read_limited, resolve_inside

if TYPE_CHECKING:
    from synthmri.core.interfaces import ImageSet
    from synthmri.core.training import RunContext

__all__ = [
    "StageCache",
    "check_resume_dir",
    "content_hash",
    "fingerprint",
    "mark_failed",
    "new_run_dir",
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


def new_run_dir(out: str | Path, name: str) -> Path:
    """A directory that did not exist before: ``<out>/<safe name>-<timestamp>[-k]``."""
    return OutputDir.new_run(out, name).root


def mark_failed(run: RunContext, exc: BaseException) -> None:
    """Mark ``run``'s directory failed (best effort: the disk may be what failed): a
    ``FAILED`` file holding the one-line error, and a ``failed`` event in ``log.jsonl``."""
    if isinstance(exc, KeyboardInterrupt):
        line = "interrupted"
    else:
        text = str(exc).strip().splitlines()
        line = f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
    if run.files is None:
        return
    with contextlib.suppress(Exception):
        run.files.write_text(line + "\n", "FAILED")
    with contextlib.suppress(Exception):
        run.log(event="failed", error=line)


def check_resume_dir(resume: Path) -> Path:
    """The ``stages.json`` of the run directory ``resume``; a ConfigError if there is none."""
    if not resume.is_dir():
        raise ConfigError(f"{resume}: no such run directory", hint="--resume takes a run's folder")
    index = resume / "stages.json"
    if not index.exists():
        raise ConfigError(
            f"{resume}: not a run directory (no stages.json)",
            hint="give --resume the directory of an earlier run",
        )
    return index


#: the largest stages.json read on --resume
MAX_INDEX_BYTES = 64 * 1024 * 1024

log = logging.getLogger(__name__)


class StageCache:
    """``stages.json`` of a run: stage key -> config hash and the file holding its result.

    ``lookup`` finds a stage of the run given as ``resume`` whose hash matches, loads its
    file and copies it into this run; ``store`` saves a new result as a checkpoint. With
    ``run_dir=None`` nothing is written; with ``resume=None`` nothing is reused. What
    cannot be reused (a malformed index, an entry pointing outside the earlier run, a
    corrupt checkpoint) is passed to ``warn`` and the stage is redone.
    """

    def __init__(
        self,
        run_dir: Path | None,
        resume: Path | None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.run_dir, self.resume = run_dir, resume
        self.out = OutputDir(run_dir) if run_dir is not None else None
        self.warn = warn or log.warning
        self.entries: dict[str, dict[str, str]] = {}
        self.previous: dict[str, dict[str, str]] = {}
        if resume is not None:
            self.previous = self._read_index(resume)

    def _read_index(self, resume: Path) -> dict[str, dict[str, str]]:
        index = check_resume_dir(resume)
        try:
            raw = json.loads(read_limited(index, MAX_INDEX_BYTES).decode("utf-8"))
        except DataError as exc:
            self.warn(f"{exc.message}; every stage is redone")
            return {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.warn(f"{index}: malformed ({str(exc).splitlines()[0]}); every stage is redone")
            return {}
        if not isinstance(raw, dict):
            self.warn(f"{index}: malformed (not a mapping of stages); every stage is redone")
            return {}
        good = {
            k: v
            for k, v in raw.items()
            if isinstance(v, dict)
            and isinstance(v.get("hash"), str)
            and isinstance(v.get("file"), str)
        }
        if len(good) < len(raw):
            self.warn(f"{index}: {len(raw) - len(good)} malformed entries ignored; redone")
        return good

    def lookup(self, key: str, digest: str) -> dict[str, Any] | None:
        """The earlier result of this stage if its hash matches (loaded, then copied into
        this run); None when there is none or it cannot be used."""
        from synthmri.core.training import load_checkpoint

        old = self.previous.get(key)
        if self.resume is None or old is None or old["hash"] != digest:
            return None
        src = resolve_inside(self.resume, old["file"])
        if src is None:
            self.warn(
                f"{self.resume / 'stages.json'}: stage {key!r} points outside the run "
                f"({old['file']!r}); redoing it"
            )
            return None
        if not src.exists():
            return None
        try:
            checkpoint = load_checkpoint(src)
        except DataError as exc:
            self.warn(f"{exc.message}; redoing stage {key!r}")
            return None
        if self.out is not None:
            dst = self.out.copy_to(src, old["file"])
            self._record(key, digest, dst.relative_to(self.out.root).as_posix())
        return checkpoint

    def store(
        self, key: str, digest: str, run: RunContext, name: str, payload: dict[str, Any]
    ) -> None:
        """Save a stage result as the checkpoint ``name`` and index it."""
        path = run.save_checkpoint(name, payload)
        if path is not None and self.out is not None:
            self._record(key, digest, path.relative_to(self.out.root).as_posix())

    def _record(self, key: str, digest: str, file: str) -> None:
        self.entries[key] = {"hash": digest, "file": file}
        assert self.out is not None
        self.out.write_text(json.dumps(self.entries, indent=1), "stages.json")
