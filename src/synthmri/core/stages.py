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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthmri.core.errors import ConfigError, DataError
from synthmri.core.files import OutputDir, read_limited, resolve_inside

if TYPE_CHECKING:
    from synthmri.core.executors import StageResult
    from synthmri.core.interfaces import Classifier, Generator, ImageSet, Segmenter
    from synthmri.core.recipe import Experiment, GeneratorEntry
    from synthmri.core.training import RunContext

__all__ = [
    "StageCache",
    "check_resume_dir",
    "class_part",
    "content_hash",
    "entry_class",
    "fingerprint",
    "fit_generator_stage",
    "fit_model_stage",
    "generator_stage_args",
    "generator_stage_config",
    "mark_failed",
    "new_run_dir",
    "stage_seed",
    "training_set",
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


def entry_class(entry: GeneratorEntry, key: str, classes: Sequence[str]) -> str | None:
    """The class that the entry's ``key`` (``warm_start``, ``negatives``) names among
    ``classes`` (matched ignoring case), or None when it names none."""
    name = getattr(entry, key)
    if name is None:
        return None
    chosen = {c.lower(): c for c in classes}.get(name.lower())
    if chosen is None:
        raise ConfigError(
            f"generator {entry.label!r}: {key} class {name!r} is not one of its classes "
            f"({', '.join(classes)})"
        )
    return chosen


def generator_stage_config(entry: GeneratorEntry, sampling: frozenset[str]) -> dict[str, Any]:
    """The entry as its training stage's key sees it: without the plugin's sampling params
    and the class filter, which act on sampling (a plugin without them keeps the keys of
    earlier runs)."""
    config = entry.model_dump(mode="json", exclude={"class_filter"})
    config["params"] = {k: v for k, v in config["params"].items() if k not in sampling}
    return config


def generator_stage_args(
    args: tuple[Any, ...], models: Mapping[str | None, Generator], start: str | None
) -> tuple[Any, ...]:
    """A generator stage's arguments, with the state of class ``start``'s model to begin
    from (``warm_start``: trained, or loaded, before this stage starts) or None."""
    return (*args, None if start is None else models[start].state_dict())


def fit_generator_stage(
    plugin: str,
    params: dict[str, Any],
    part: ImageSet,
    negatives: ImageSet | None,
    seed: int,
    meta: dict[str, Any],
    start_from: Mapping[str, Any] | None,
    run: RunContext,
) -> StageResult:
    """The work of a generator stage (in this process or a worker): fit ``plugin`` on
    ``part`` seeded with the stage's ``seed``, from the trained model ``start_from`` when given
    (``warm_start``), learning from ``negatives`` when given; the checkpoint payload
    (``meta`` plus the state and the seconds) and the fitted model."""
    import time

    from synthmri.core.executors import StageResult
    from synthmri.core.plugins import get_plugin
    from synthmri.core.training import seed_everything

    start = time.perf_counter()
    model = get_plugin("generator", plugin)(params)
    if start_from is not None:
        model.start_from(start_from)
    if negatives is not None:
        model.use_negatives(negatives)
    seed_everything(seed)
    run.seed = seed
    model.fit(part, run)
    elapsed = time.perf_counter() - start
    payload = {**meta, "state": model.state_dict(), "train_seconds": elapsed}
    return StageResult(payload, live=model)


def fit_model_stage(
    kind: str,
    plugin: str,
    params: dict[str, Any],
    data: ImageSet,
    val: ImageSet,
    test: ImageSet,
    seed: int,
    run: RunContext,
) -> StageResult:
    """The work of an experiment stage: fit a classifier or segmenter seeded with ``seed``
    and predict the real test part; the payload holds its outputs and the seconds."""
    import time

    import torch

    from synthmri.core.executors import StageResult
    from synthmri.core.interfaces import Segmenter
    from synthmri.core.plugins import get_plugin
    from synthmri.core.training import seed_everything

    start = time.perf_counter()
    seed_everything(seed)
    model: Classifier | Segmenter = get_plugin(kind, plugin)(params)
    run.seed = seed
    model.fit(data, val, run)
    with torch.no_grad():
        if isinstance(model, Segmenter):
            payload: dict[str, Any] = {"output": model.predict(test.images).detach().float().cpu()}
        else:
            payload = {"output": model.predict_proba(test.images).detach().float().cpu()}
            if model.localises and test.masks is not None:
                payload["masks"] = model.predict_masks(test.images).detach().float().cpu()
    payload["val_score"] = model.validation_score()
    payload["seconds"] = time.perf_counter() - start
    return StageResult(payload)


def class_part(data: ImageSet, cname: str | None, classes: list[str]) -> ImageSet:
    """The training images of a generator stage: class ``cname``, or (a conditional
    generator, ``cname=None``) the items of any of ``classes`` (all of an unlabelled set)."""
    import torch

    if cname is not None:
        return data.of_class(cname)
    if data.labels is None:
        return data.subset(torch.ones(len(data), dtype=torch.bool))
    wanted = torch.tensor([data.label_index(c) for c in classes])
    return data.subset(torch.isin(data.labels, wanted))


def training_set(
    exp: Experiment,
    train: ImageSet,
    synthetic: dict[str, ImageSet],
    train_on: str,
    gen: str | None,
    fraction: float,
    seed: int,
    tag: str = "",
) -> ImageSet:
    """The training data of one run: a share of the real train part (drawn anew per
    experiment seed ``tag``) and/or the first ``synthetic_per_class`` images per class of
    generator ``gen``; in a mixed set the real share is repeated as
    ``exp.mixed_real_share`` asks (whole copies, at least one)."""
    import torch

    from synthmri.core.data.split import real_fraction
    from synthmri.core.interfaces import ImageSet

    parts = []
    if train_on != "synthetic":
        share_seed = stage_seed(seed, f"fraction/{fraction}{tag}")
        parts.append(real_fraction(train, fraction, share_seed))
    if gen is not None:
        syn = synthetic[gen]
        per = [
            (syn.labels == c).nonzero().reshape(-1)[: exp.synthetic_per_class]
            for c in range(len(syn.class_names))
        ]
        parts.append(syn.subset(torch.cat(per)))
        share = exp.mixed_real_share
        if train_on == "mixed" and share is not None and len(parts[0]):
            copies = round(share * len(parts[1]) / ((1 - share) * len(parts[0])))
            parts[0] = ImageSet.concat([parts[0]] * max(1, copies))
    if exp.task == "segment" and any(p.masks is None for p in parts):
        raise DataError(
            "segmentation needs masks, but the training data has none",
            hint="use an image+mask layout or a generator with emits_masks: true",
        )
    return ImageSet.concat(parts)


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
    ``run_dir=None`` nothing is written; with ``resume=None`` nothing is reused. ``share``
    names more earlier runs searched after ``resume`` (a sweep passes its finished runs,
    so stages with the same hash run once). What cannot be reused (a malformed index, an
    entry pointing outside the earlier run, a corrupt checkpoint) is passed to ``warn``
    and the stage is redone.
    """

    def __init__(
        self,
        run_dir: Path | None,
        resume: Path | None,
        warn: Callable[[str], None] | None = None,
        share: Sequence[Path] = (),
    ) -> None:
        self.run_dir, self.resume = run_dir, resume
        self.out = OutputDir(run_dir) if run_dir is not None else None
        self.warn = warn or log.warning
        self.entries: dict[str, dict[str, str]] = {}
        self.previous: dict[str, dict[str, str]] = {}
        if resume is not None:
            self.previous = self._read_index(resume)
        self.sources: list[tuple[Path, dict[str, dict[str, str]]]] = []
        if resume is not None:
            self.sources.append((resume, self.previous))
        for other in share:
            if (Path(other) / "stages.json").is_file():
                self.sources.append((Path(other), self._read_index(Path(other))))

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
        for source, index in self.sources:
            old = index.get(key)
            if old is None or old["hash"] != digest:
                continue
            checkpoint = self._load(source, key, old["file"])
            if checkpoint is not None:
                break
        else:
            return None
        if self.out is not None:
            src = resolve_inside(source, old["file"])
            assert src is not None  # checked by _load
            dst = self.out.copy_to(src, old["file"])
            self._record(key, digest, dst.relative_to(self.out.root).as_posix())
        return checkpoint

    def _load(self, source: Path, key: str, file: str) -> dict[str, Any] | None:
        """The checkpoint ``file`` of the earlier run ``source`` (None, maybe with a
        warning, when it cannot be used)."""
        from synthmri.core.training import load_checkpoint

        src = resolve_inside(source, file)
        if src is None:
            self.warn(
                f"{source / 'stages.json'}: stage {key!r} points outside the run "
                f"({file!r}); redoing it"
            )
            return None
        if not src.exists():
            return None
        try:
            return load_checkpoint(src)
        except DataError as exc:
            self.warn(f"{exc.message}; redoing stage {key!r}")
            return None

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
