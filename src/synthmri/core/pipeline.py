"""Runs a recipe: data -> generators -> synthetic sets -> experiments -> evaluators -> report.

Every run gets a fresh directory ``<out>/<recipe>-<timestamp>/`` (never
overwritten). A stage whose config and inputs hash the same as in an earlier
run (``resume=RUN_DIR``) is reused from that run's files instead of retrained,
so changing a classifier does not retrain a GAN.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from synthmri._version import __version__
from synthmri.core.data import LoadResult, load_images, split_dataset
from synthmri.core.errors import ConfigError, DataError, SynthMRIError
from synthmri.core.interfaces import (
    Classifier,
    EvalInputs,
    Generator,
    ImageSet,
    Predictions,
    Segmenter,
)
from synthmri.core.plugins import get_plugin
from synthmri.core.recipe import Experiment, GeneratorEntry, Recipe, load_recipe
from synthmri.core.stages import content_hash, fingerprint, stage_seed
from synthmri.core.training import RunContext, load_checkpoint, seed_everything

__all__ = ["RunResult", "load_generator", "run_recipe", "sample_generator", "write_image_set"]


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path | None
    metrics: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def report(self) -> Path | None:
        """Path of ``report.html``."""
        return None if self.run_dir is None else self.run_dir / "report.html"


# ------------------------------------------------------------------ helpers


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


class _StageCache:
    """``stages.json``: stage key -> config hash and the file holding its result."""

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

    def store(self, key: str, digest: str, run: RunContext, name: str, payload: dict) -> None:
        """Save a stage result as a checkpoint and index it."""
        path = run.save_checkpoint(name, payload)
        if path is not None and self.run_dir is not None:
            self._record(key, digest, str(path.relative_to(self.run_dir)))

    def _record(self, key: str, digest: str, file: str) -> None:
        self.entries[key] = {"hash": digest, "file": file}
        assert self.run_dir is not None
        tmp = self.run_dir / ".stages.json.tmp"
        tmp.write_text(json.dumps(self.entries, indent=1))
        tmp.replace(self.run_dir / "stages.json")


# ------------------------------------------------------------------ data


def load_data(recipe: Recipe, run: RunContext) -> tuple[LoadResult, ImageSet, ImageSet, ImageSet]:
    """Load the real data and split it leak-free into train / val / test."""
    cfg = recipe.data
    if cfg.uses_folder:
        with run.progress(1, "load images") as bar:
            result = load_images(
                cfg.path or "",
                size=cfg.size,
                layout=cfg.layout,
                channel=cfg.channel,
                crop_foreground=cfg.crop_foreground,
                on_bad_file=cfg.on_bad_file,
                classes=cfg.classes,
                min_brain_fraction=cfg.min_brain_fraction,
            )
            bar.advance()
    else:
        from synthmri.core.phantoms import make_phantoms

        data = make_phantoms(
            cfg.n,
            cfg.size,
            seed=recipe.seed,
            contrast=cfg.contrast,
            tumor_fraction=cfg.tumor_fraction,
        )
        result = LoadResult(data=data, skipped=[], duplicate_groups=0, layout="phantoms")
    if result.skipped:
        run.note(f"skipped {len(result.skipped)} unreadable files (on_bad_file: skip)")
    train, val, test = split_dataset(
        result.data,
        val=cfg.split.val,
        test=cfg.split.test,
        seed=recipe.seed,
        use_layout_split=cfg.split.use_layout_split,
    )
    run.log(
        n_train=len(train),
        n_val=len(val),
        n_test=len(test),
        duplicate_groups=result.duplicate_groups,
        layout=result.layout,
        classes=train.class_names,
        skipped=len(result.skipped),
    )
    return result, train, val, test


# ------------------------------------------------------------------ generators


@dataclass
class TrainedGenerator:
    """One recipe generator entry after training: a model per class, or one conditional."""

    entry: GeneratorEntry
    models: dict[str | None, Generator]  # class name -> model; None -> conditional
    class_names: list[str]
    train_seconds: float = 0.0
    n_train: int = 0


def _generator_classes(entry: GeneratorEntry, train: ImageSet) -> list[str]:
    names = train.class_names
    if entry.classes is None:
        return list(names)
    lowered = {n.lower(): n for n in names}
    chosen = []
    for c in entry.classes:
        if c.lower() not in lowered:
            raise ConfigError(
                f"generator {entry.label!r}: class {c!r} not in the data "
                f"(classes: {', '.join(names)})"
            )
        chosen.append(lowered[c.lower()])
    return chosen


def _limit(data: ImageSet, n: int | None, seed: int) -> ImageSet:
    if n is None or len(data) <= n:
        return data
    g = torch.Generator().manual_seed(seed)
    return data.subset(torch.randperm(len(data), generator=g)[:n].sort().values)


def train_generators(
    recipe: Recipe, train: ImageSet, run: RunContext, cache: _StageCache, timings: dict[str, float]
) -> dict[str, TrainedGenerator]:
    """Fit every generator entry (per class or conditional), reusing cached stages."""
    trained: dict[str, TrainedGenerator] = {}
    train_fp = fingerprint(train)
    for entry in recipe.generators:
        cls = get_plugin("generator", entry.plugin)
        classes = _generator_classes(entry, train)
        targets: list[str | None] = list(classes) if entry.per_class else [None]
        tg = TrainedGenerator(entry, {}, list(train.class_names))
        for cname in targets:
            key = f"generate/{entry.label}" + (f"/{cname}" if cname else "")
            if cname is None:
                keep = (
                    torch.isin(train.labels, torch.tensor([train.label_index(c) for c in classes]))
                    if train.labels is not None
                    else torch.ones(len(train), dtype=torch.bool)
                )
                part = train.subset(keep)
            else:
                part = train.of_class(cname)
            seed = stage_seed(recipe.seed, key)
            part = _limit(part, entry.max_train_images, seed)
            if len(part) == 0:
                raise DataError(
                    f"generator {entry.label!r}: no training images for class {cname!r}"
                )
            model = cls(entry.params)
            digest = content_hash(
                entry.model_dump(mode="json"),
                cname,
                train_fp,
                recipe.seed,
                entry.max_train_images,
            )
            cached = cache.lookup(key, digest)
            start = time.perf_counter()
            if cached is not None:
                model.load_state_dict(cached["state"])
                run.log(stage_reused=key)
                elapsed = float(cached.get("train_seconds", 0.0))
            else:
                seed_everything(seed)
                stage_run = run.child(key)
                stage_run.seed = seed
                model.fit(part, stage_run)
                elapsed = time.perf_counter() - start
                cache.store(
                    key,
                    digest,
                    run,
                    key.replace("/", "-"),
                    {
                        "kind": "generator",
                        "plugin": entry.plugin,
                        "name": entry.label,
                        "params": entry.params,
                        "class_name": cname,
                        "class_names": list(train.class_names),
                        "state": model.state_dict(),
                        "train_seconds": elapsed,
                        "n_train": len(part),
                    },
                )
            timings[key] = round(elapsed, 3)
            tg.train_seconds += elapsed
            tg.n_train += len(part)
            tg.models[cname] = model
        trained[entry.label] = tg
    return trained


def sample_generator(
    tg: TrainedGenerator, per_class: int, seed: int, classes: list[str] | None = None
) -> ImageSet:
    """``per_class`` synthetic images for each class the generator knows, labelled."""
    sets = []
    names = tg.class_names
    wanted = classes or [c for c in names if c in tg.models or None in tg.models]
    for cname in wanted:
        label = names.index(cname)
        model = tg.models.get(cname) or tg.models.get(None)
        if model is None:
            continue
        s = model.sample(
            per_class,
            label=label if None in tg.models else None,
            seed=stage_seed(seed, f"sample/{tg.entry.label}/{cname}"),
        )
        imgs = s.images.clamp(0, 1)
        masks = s.masks
        if masks is None and any(m.emits_masks for m in tg.models.values()):
            masks = torch.zeros(imgs.shape[0], 1, *imgs.shape[2:])
        sets.append(
            ImageSet(
                images=imgs,
                labels=torch.full((imgs.shape[0],), label, dtype=torch.long),
                class_names=list(names),
                masks=masks,
                sources=[f"{tg.entry.label}:{cname}:seed={seed}:{i}" for i in range(imgs.shape[0])],
                groups=[f"synthetic:{tg.entry.label}"] * imgs.shape[0],
            )
        )
    return ImageSet.concat(sets)


def write_image_set(data: ImageSet, folder: Path, prefix: str = "img") -> list[Path]:
    """Write images as 8-bit PNG under ``folder/<class>/`` with ``<stem>_mask.png`` beside."""
    from PIL import Image

    paths = []
    counters: dict[str, int] = {}
    for i in range(len(data)):
        cname = data.class_names[int(data.labels[i])] if data.labels is not None else "unlabelled"
        k = counters.get(cname, 0)
        counters[cname] = k + 1
        target = folder / cname / f"{prefix}_{cname}_{k:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        arr = (data.images[i, 0].clamp(0, 1) * 255).round().byte().numpy()
        Image.fromarray(arr, mode="L").save(target)
        if data.masks is not None:
            m = (data.masks[i, 0] > 0.5).byte().numpy() * 255
            Image.fromarray(m, mode="L").save(target.with_name(target.stem + "_mask.png"))
        paths.append(target)
    return paths


def load_generator(path: str | Path) -> tuple[Generator, dict[str, Any]]:
    """A trained generator from a checkpoint written by a run, and the checkpoint's metadata."""
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "generator":
        raise DataError(f"{path}: not a generator checkpoint")
    cls = get_plugin("generator", ckpt["plugin"])
    model = cls(ckpt["params"])
    model.load_state_dict(ckpt["state"])
    return model, ckpt


# ------------------------------------------------------------------ experiments


def _real_fraction(train: ImageSet, fraction: float, seed: int) -> ImageSet:
    """A stratified, group-respecting share of the real train part."""
    if fraction >= 1.0:
        return train
    g = torch.Generator().manual_seed(seed)
    groups = sorted(set(train.groups))
    order = [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]
    keep: set[str] = set()
    if train.labels is not None:
        by_class: dict[int, list[str]] = {}
        first_label = {}
        for grp, lab in zip(train.groups, train.labels.tolist(), strict=True):
            first_label.setdefault(grp, lab)
        for grp in order:
            by_class.setdefault(first_label[grp], []).append(grp)
        for members in by_class.values():
            keep.update(members[: max(1, round(len(members) * fraction))])
    else:
        keep.update(order[: max(1, round(len(order) * fraction))])
    return train.subset([i for i, grp in enumerate(train.groups) if grp in keep])


def _plan(exp: Experiment, generators: list[str]) -> list[tuple[str, str | None, float]]:
    """(train_on, generator, real_fraction) for every run of an experiment."""
    runs: list[tuple[str, str | None, float]] = []
    for train_on in exp.train_on:
        if train_on == "real":
            runs += [("real", None, f) for f in exp.real_fraction]
        elif train_on == "synthetic":
            runs += [("synthetic", g, 0.0) for g in generators]
        else:
            runs += [("mixed", g, f) for g in generators for f in exp.real_fraction]
    return runs


def run_experiments(
    recipe: Recipe,
    train: ImageSet,
    val: ImageSet,
    test: ImageSet,
    synthetic: dict[str, ImageSet],
    run: RunContext,
    cache: _StageCache,
    timings: dict[str, float],
) -> list[Predictions]:
    """Train every model of every experiment and predict on the real test part."""
    predictions: list[Predictions] = []
    test_fp = fingerprint(test)
    for e_idx, exp in enumerate(recipe.experiments):
        kind = "classifier" if exp.task == "classify" else "segmenter"
        gens = exp.generators or list(synthetic)
        for train_on, gen, fraction in _plan(exp, gens):
            parts = []
            if train_on != "synthetic":
                parts.append(
                    _real_fraction(train, fraction, stage_seed(recipe.seed, f"fraction/{fraction}"))
                )
            if gen is not None:
                syn = synthetic[gen]
                per = []
                for c in range(len(syn.class_names)):
                    idx = (syn.labels == c).nonzero().reshape(-1)[: exp.synthetic_per_class]
                    per.append(idx)
                parts.append(syn.subset(torch.cat(per)))
            if exp.task == "segment":
                parts = [_with_masks(p) for p in parts]
            data = ImageSet.concat(parts)
            for model_entry in exp.models:
                name = exp.name or f"exp{e_idx}"
                key = (
                    f"{exp.task}/{name}/{model_entry.label}/{train_on}/{gen or 'real'}/{fraction:g}"
                )
                digest = content_hash(
                    model_entry.model_dump(mode="json"),
                    fingerprint(data),
                    fingerprint(val),
                    test_fp,
                    recipe.seed,
                )
                cached = cache.lookup(key, digest)
                start = time.perf_counter()
                if cached is not None:
                    payload = cached
                    run.log(stage_reused=key)
                else:
                    seed = stage_seed(recipe.seed, key)
                    seed_everything(seed)
                    cls = get_plugin(kind, model_entry.plugin)
                    model = cls(model_entry.params)
                    stage_run = run.child(key)
                    stage_run.seed = seed
                    model.fit(data, val, stage_run)
                    payload = _predict(model, test)
                    payload["seconds"] = time.perf_counter() - start
                    cache.store(key, digest, run, "pred-" + key.replace("/", "-"), payload)
                timings[key] = round(float(payload.get("seconds", 0.0)), 3)
                target = test.labels if exp.task == "classify" else test.masks
                if target is None:
                    raise DataError(
                        f"the test part has no {'labels' if kind == 'classifier' else 'masks'}"
                        f" for experiment {name!r}"
                    )
                row = Predictions(
                    task=exp.task,
                    model=model_entry.label,
                    plugin=model_entry.plugin,
                    generator=gen,
                    train_on=train_on,
                    real_fraction=fraction,
                    n_train=len(data),
                    target=target,
                    output=payload["output"],
                    class_names=list(test.class_names),
                )
                predictions.append(row)
                if payload.get("masks") is not None:
                    # a localising classifier: its masks are an unsupervised segmentation
                    predictions.append(
                        replace(
                            row,
                            task="segment",
                            target=test.masks,
                            output=payload["masks"],
                            extra={"unsupervised": True},
                        )
                    )
    return predictions


def _predict(model: Classifier | Segmenter, test: ImageSet) -> dict[str, Any]:
    """The trained model's outputs on the real test part (plus masks when it localises)."""
    with torch.no_grad():
        if isinstance(model, Segmenter):
            return {"output": model.predict(test.images).detach().float().cpu()}
        out: dict[str, Any] = {"output": model.predict_proba(test.images).detach().float().cpu()}
        if model.localises and test.masks is not None:
            out["masks"] = model.predict_masks(test.images).detach().float().cpu()
    return out


def _with_masks(data: ImageSet) -> ImageSet:
    if data.masks is None:
        raise DataError(
            "segmentation needs masks, but the training data has none",
            hint="use an image+mask layout or a generator with emits_masks: true",
        )
    return data


# ------------------------------------------------------------------ the run


def run_recipe(
    recipe: Recipe | str | Path,
    out: str | Path | None = "runs",
    resume: str | Path | None = None,
    quiet: bool = True,
    console: Any = None,
    device: str | None = None,
) -> RunResult:
    """Run a whole study and write its run directory (``out=None``: write nothing)."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    t0 = time.perf_counter()
    resume_dir = Path(resume) if resume else None
    if resume_dir is not None and not resume_dir.is_dir():
        raise ConfigError(f"{resume_dir}: no such run directory")
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes
    run_dir = new_run_dir(out, recipe.name) if out is not None and main_rank else None
    run = RunContext(
        run_dir, device=device or recipe.device, seed=recipe.seed, quiet=quiet, console=console
    )
    if run_dir is not None:
        (run_dir / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
    cache = _StageCache(run_dir, resume_dir)
    timings: dict[str, float] = {}

    def timed(name: str, start: float) -> None:
        timings[name] = round(time.perf_counter() - start, 3)

    try:
        s = time.perf_counter()
        loaded, train, val, test = load_data(recipe, run.child("data"))
        timed("data", s)
        trained = train_generators(recipe, train, run, cache, timings)
        s = time.perf_counter()
        synthetic = make_synthetic_sets(recipe, trained, train, run)
        timed("synthesize", s)
        predictions = run_experiments(recipe, train, val, test, synthetic, run, cache, timings)
        metrics: dict[str, Any] = {
            "recipe": recipe.name,
            "synthmri_version": __version__,
            "seed": recipe.seed,
            "device": str(run.device),
            "data": {
                "n_train": len(train),
                "n_val": len(val),
                "n_test": len(test),
                "duplicate_groups": loaded.duplicate_groups,
                "layout": loaded.layout,
                "classes": train.class_names,
                "skipped_files": len(loaded.skipped),
                "class_counts": {
                    "train": train.class_counts(),
                    "val": val.class_counts(),
                    "test": test.class_counts(),
                },
            },
            "classification": [],
            "segmentation": [],
            "generators": [
                {
                    "generator": k,
                    "plugin": v.entry.plugin,
                    "n_train": v.n_train,
                    "train_seconds": round(v.train_seconds, 2),
                }
                for k, v in trained.items()
            ],
        }
        inputs = EvalInputs(
            train=train,
            val=val,
            test=test,
            synthetic=synthetic,
            predictions=predictions,
            seed=recipe.seed,
        )
        s = time.perf_counter()
        for entry in recipe.evaluate:
            ev_run = run.child(f"evaluate/{entry.label}")
            evaluator = get_plugin("evaluator", entry.plugin)(entry.params)
            missing = _missing_inputs(evaluator.requires, inputs)
            if missing:
                ev_run.note(f"skipped: no {missing} in this run")
                continue
            es = time.perf_counter()
            for section, rows in evaluator.evaluate(inputs, ev_run).items():
                metrics.setdefault(section, []).extend(rows)
            timed(f"evaluate/{entry.label}", es)
        timed("evaluate", s)
    except SynthMRIError:
        if run_dir is not None:
            run.log(event="failed")
        raise
    timings["total_s"] = round(time.perf_counter() - t0, 3)
    metrics["timings"] = {"total_s": timings.pop("total_s"), "stages": timings}
    metrics["notes"] = run.notes
    if run_dir is not None:
        from synthmri.core.report import write_report

        write_report(run_dir, recipe, metrics, run.figures)
    return RunResult(run_dir, metrics, run.notes)


def _missing_inputs(requires: tuple[str, ...], inputs: EvalInputs) -> str | None:
    for need in requires:
        if need == "synthetic" and not inputs.synthetic:
            return "synthetic data"
        if need == "classification" and not any(p.task == "classify" for p in inputs.predictions):
            return "classification results"
        if need == "segmentation" and not any(p.task == "segment" for p in inputs.predictions):
            return "segmentation results"
    return None


def make_synthetic_sets(
    recipe: Recipe, trained: dict[str, TrainedGenerator], train: ImageSet, run: RunContext
) -> dict[str, ImageSet]:
    """Sample each generator as many images per class as any experiment needs; write PNGs."""
    need: dict[str, int] = {}
    for exp in recipe.experiments:
        if all(t == "real" for t in exp.train_on):
            continue
        for g in exp.generators or list(trained):
            need[g] = max(need.get(g, 0), exp.synthetic_per_class)
    synthetic: dict[str, ImageSet] = {}
    for label, tg in trained.items():
        n = need.get(label, 64)  # evaluators still get a sample of unused generators
        with run.progress(1, f"sample {label}") as bar:
            syn = sample_generator(tg, n, recipe.seed)
            bar.advance()
        synthetic[label] = syn
        folder = run.path("synthetic", label)
        if folder is not None:
            write_image_set(syn, folder, prefix=label)
        _sample_grid({"real": train, label: syn}, run.child(f"generate/{label}"), "samples")
    if len(synthetic) > 1:
        _sample_grid({"real": train, **synthetic}, run.child("generate"), "side-by-side")
    return synthetic


def _sample_grid(sets: dict[str, ImageSet], run: RunContext, name: str, per_row: int = 8) -> None:
    """A row of examples per class and set (e.g. real, then each generator), masks outlined."""
    if run.out_dir is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    synthetic = list(sets.values())[1:]
    classes = [c for c in sets["real"].class_names if any(len(s.of_class(c)) for s in synthetic)]
    rows = [(c, kind, data) for c in classes for kind, data in sets.items()]
    fig, axes = plt.subplots(
        len(rows),
        per_row,
        figsize=(per_row * 1.2, 1.3 * len(rows)),
        squeeze=False,
        layout="constrained",
    )
    for ri, (cname, kind, data) in enumerate(rows):
        part = data.of_class(cname) if cname in data.class_names else data
        for j in range(per_row):
            ax = axes[ri, j]
            ax.axis("off")
            if j >= len(part):
                continue
            ax.imshow(part.images[j, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            if part.masks is not None and part.masks[j].sum() > 0:
                ax.contour(part.masks[j, 0].numpy(), levels=[0.5], colors="red", linewidths=0.6)
        axes[ri, 0].set_title(f"{kind} / {cname}", fontsize=8, loc="left")
    fig.suptitle(" vs ".join(sets), fontsize=10)
    run.save_figure(fig, name)
