"""Runs a recipe: data -> generators -> synthetic sets -> experiments -> evaluators -> report.

Every run gets a fresh directory ``<out>/<recipe>-<timestamp>/`` (never
overwritten). A stage whose config and inputs hash the same as in an earlier
run (``resume=RUN_DIR``) is reused from that run's files instead of retrained,
so changing a classifier does not retrain a GAN. This module only orchestrates:
stage keys, seeds and the cache live in :mod:`.stages`, the data in :mod:`.data`,
the written artifacts in :mod:`.artifacts`, the layout of ``metrics.json`` in
:mod:`.metrics` and the report in :mod:`.report`.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from synthmri._version import __version__
from synthmri.core.artifacts import real_vs_synthetic_grid, write_image_set
from synthmri.core.data.load import load_images
from synthmri.core.data.split import random_subset, real_fraction, split_dataset
from synthmri.core.errors import DataError, PluginError
from synthmri.core.interfaces import (
    Classifier,
    EvalInputs,
    Generator,
    ImageSet,
    Predictions,
    Segmenter,
)
from synthmri.core.metrics import DataSummary, GeneratorSummary, Metrics, Timings
from synthmri.core.plugins import get_plugin
from synthmri.core.preflight import check_run
from synthmri.core.recipe import Experiment, GeneratorEntry, Recipe, load_recipe
from synthmri.core.stages import (
    StageCache,
    content_hash,
    fingerprint,
    mark_failed,
    new_run_dir,
    stage_seed,
)
from synthmri.core.tracking import open_tracker
from synthmri.core.training import RunContext, load_checkpoint, seed_everything

__all__ = [
    "RunResult",
    "TrainedGenerator",
    "load_data",
    "load_generator",
    "make_synthetic_sets",
    "run_evaluators",
    "run_experiments",
    "run_recipe",
    "sample_generator",
    "train_generators",
]


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
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes
    # every check `synthmri validate` makes, before a run directory exists
    check_run(recipe, out=out if main_rank else None, resume=resume_dir, device=device)
    run_dir = new_run_dir(out, recipe.name) if out is not None and main_rank else None
    tracker = open_tracker(recipe.tracking, run_dir, recipe)  # None unless tracking is on
    run = RunContext(
        run_dir,
        device=device or recipe.device,
        seed=recipe.seed,
        quiet=quiet,
        console=console,
        tracker=tracker,
    )
    if run.files is not None:
        run.files.write_text(recipe.to_yaml(), "recipe.yaml")
    cache = StageCache(run_dir, resume_dir, warn=run.child("resume").note)
    timings: dict[str, float] = {}  # stage -> seconds, in the order the stages ran

    try:
        start = time.perf_counter()
        data, train, val, test = load_data(recipe, run.child("data"))
        timings["data"] = _seconds_since(start)
        trained = train_generators(recipe, train, run, cache, timings)
        start = time.perf_counter()
        synthetic = make_synthetic_sets(recipe, trained, train, run)
        timings["synthesize"] = _seconds_since(start)
        predictions = run_experiments(recipe, train, val, test, synthetic, run, cache, timings)
        metrics = Metrics(
            recipe=recipe.name,
            synthmri_version=__version__,
            seed=recipe.seed,
            device=str(run.device),
            data=data,
            generators=[tg.summary() for tg in trained.values()],
        )
        inputs = EvalInputs(
            train=train,
            val=val,
            test=test,
            synthetic=synthetic,
            predictions=predictions,
            seed=recipe.seed,
        )
        run_evaluators(recipe, inputs, metrics, run, timings)
        metrics.add_seed_summaries()
    except BaseException as exc:
        if run_dir is not None:
            mark_failed(run, exc)  # FAILED (the one-line error) and a log event
        if tracker is not None:
            stopped = isinstance(exc, KeyboardInterrupt)
            tracker.finish(run_dir, None, "KILLED" if stopped else "FAILED")
        raise
    metrics.timings = Timings(total_s=_seconds_since(t0), stages=timings)
    if tracker is not None and tracker.error:
        run.note(tracker.error)
    metrics.notes = run.notes
    if run_dir is not None:
        from synthmri.core.report import write_report

        try:
            write_report(run_dir, recipe, metrics, run.figures)
        except BaseException as exc:
            mark_failed(run, exc)
            if tracker is not None:
                tracker.finish(run_dir, None, "FAILED")
            raise
    result = RunResult(run_dir, metrics.model_dump(), run.notes)
    if tracker is not None:  # the results, the run directory as written, the status
        tracker.finish(run_dir, result.metrics)
        run.note(tracker.error or f"tracked: {tracker.describe()}")
    return result


def _seconds_since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


# ------------------------------------------------------------------ data


def load_data(recipe: Recipe, run: RunContext) -> tuple[DataSummary, ImageSet, ImageSet, ImageSet]:
    """Load the real data (a folder, or phantoms) and split it leak-free into train / val /
    test; also the data section of ``metrics.json``."""
    cfg = recipe.data
    skipped, duplicate_groups, layout, dropped = 0, 0, "phantoms", 0
    if cfg.uses_folder:
        with run.progress(1, "load images") as bar:
            result = load_images(cfg.path or "", cfg)
            bar.advance()
        data, skipped, dropped = result.data, len(result.skipped), result.dropped
        duplicate_groups, layout = result.duplicate_groups, result.layout
    else:
        from synthmri.core.phantoms import make_phantoms

        data = make_phantoms(
            cfg.n,
            cfg.size,
            seed=recipe.seed,
            contrast=cfg.contrast,
            tumor_fraction=cfg.tumor_fraction,
        )
    if skipped:
        run.note(f"skipped {skipped} unreadable files (on_bad_file: skip)")
    if dropped:
        run.note(
            f"left out {dropped} near-empty slices (less brain than min_brain_fraction "
            f"{cfg.min_brain_fraction:g})"
        )
    run.log(dropped_slices=dropped)
    train, val, test = split_dataset(
        data,
        val=cfg.split.val,
        test=cfg.split.test,
        seed=recipe.seed,
        use_layout_split=cfg.split.use_layout_split,
    )
    summary = DataSummary(
        n_train=len(train),
        n_val=len(val),
        n_test=len(test),
        duplicate_groups=duplicate_groups,
        layout=layout,
        classes=train.class_names,
        skipped_files=skipped,
        class_counts={
            "train": train.class_counts(),
            "val": val.class_counts(),
            "test": test.class_counts(),
        },
    )
    run.log(**summary.model_dump(exclude={"class_counts"}))
    return summary, train, val, test


# ------------------------------------------------------------------ generators


@dataclass
class TrainedGenerator:
    """One recipe generator entry after training: a model per class, or one conditional."""

    entry: GeneratorEntry
    models: dict[str | None, Generator]  # class name -> model; None -> conditional
    class_names: list[str]
    train_seconds: float = 0.0
    n_train: int = 0

    def summary(self) -> GeneratorSummary:
        """Its row of the ``generators`` section of ``metrics.json``."""
        return GeneratorSummary(
            generator=self.entry.label,
            plugin=self.entry.plugin,
            n_train=self.n_train,
            train_seconds=round(self.train_seconds, 2),
        )


def train_generators(
    recipe: Recipe, train: ImageSet, run: RunContext, cache: StageCache, timings: dict[str, float]
) -> dict[str, TrainedGenerator]:
    """Fit every generator entry (per class or conditional), reusing cached stages."""
    trained: dict[str, TrainedGenerator] = {}
    train_fp = fingerprint(train)
    for entry in recipe.generators:
        cls = get_plugin("generator", entry.plugin)
        classes = entry.resolve_classes(train.class_names)
        targets: list[str | None] = list(classes) if entry.per_class else [None]
        tg = TrainedGenerator(entry, {}, list(train.class_names))
        for cname in targets:
            key = f"generate/{entry.label}" + (f"/{cname}" if cname else "")
            part = train.of_class(cname) if cname is not None else _of_classes(train, classes)
            seed = stage_seed(recipe.seed, key)
            part = random_subset(part, entry.max_train_images, seed)
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
                *filter(None, [model.cache_key()]),  # e.g. a hash of files read (none: as before)
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


def _of_classes(data: ImageSet, classes: list[str]) -> ImageSet:
    """The items of ``data`` in any of ``classes`` (all of an unlabelled set)."""
    if data.labels is None:
        return data.subset(torch.ones(len(data), dtype=torch.bool))
    wanted = torch.tensor([data.label_index(c) for c in classes])
    return data.subset(torch.isin(data.labels, wanted))


def load_generator(path: str | Path) -> tuple[Generator, dict[str, Any]]:
    """A trained generator from a checkpoint written by a run, and the checkpoint's metadata.

    The checkpoint may come from someone else: its keys and their types are checked, and
    anything wrong (a missing key, params the plugin refuses, a state that does not fit)
    is a one-line DataError naming the file. Names it holds are used in file names only
    through ``safe_name``."""
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "generator":
        raise DataError(f"{path}: not a generator checkpoint (kind {ckpt.get('kind')!r})")
    expected = {"plugin": str, "params": dict, "state": dict}
    missing = [k for k, t in expected.items() if not isinstance(ckpt.get(k), t)]
    names = ckpt.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        missing.append("class_names")
    for key in ("class_name", "name"):
        if ckpt.get(key) is not None and not isinstance(ckpt.get(key), str):
            missing.append(key)
    if missing:
        raise DataError(
            f"{path}: not a usable generator checkpoint (missing or malformed: "
            f"{', '.join(missing)})"
        )
    try:
        cls = get_plugin("generator", ckpt["plugin"])
    except PluginError as exc:
        raise DataError(f"{path}: {exc.message}", hint=exc.hint) from None
    try:
        model = cls(ckpt["params"])
    except PluginError as exc:
        raise DataError(f"{path}: {exc.message}") from None
    try:
        model.load_state_dict(ckpt["state"])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DataError(
            f"{path}: its state does not fit generator {ckpt['plugin']!r} ({first})"
        ) from None
    return model, ckpt


# ------------------------------------------------------------------ synthetic sets


def make_synthetic_sets(
    recipe: Recipe, trained: dict[str, TrainedGenerator], train: ImageSet, run: RunContext
) -> dict[str, ImageSet]:
    """Sample each generator as many images per class as any experiment needs; write PNGs."""
    need = recipe.synthetic_per_class()
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
        real_vs_synthetic_grid(
            {"real": train, label: syn}, run.child(f"generate/{label}"), "samples"
        )
    if len(synthetic) > 1:
        real_vs_synthetic_grid({"real": train, **synthetic}, run.child("generate"), "side-by-side")
    return synthetic


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


# ------------------------------------------------------------------ experiments


def run_experiments(
    recipe: Recipe,
    train: ImageSet,
    val: ImageSet,
    test: ImageSet,
    synthetic: dict[str, ImageSet],
    run: RunContext,
    cache: StageCache,
    timings: dict[str, float],
) -> list[Predictions]:
    """Train every model of every experiment and predict on the real test part."""
    predictions: list[Predictions] = []
    test_fp = fingerprint(test)
    for e_idx, exp in enumerate(recipe.experiments):
        kind = "classifier" if exp.task == "classify" else "segmenter"
        name = exp.name or f"exp{e_idx}"
        target = test.labels if exp.task == "classify" else test.masks
        runs = exp.runs(exp.generators or list(synthetic))
        for rep, (train_on, gen, fraction) in itertools.product(exp.seeds or [None], runs):
            tag = "" if rep is None else f"/seed{rep}"  # one training per seed when seeds given
            data = _training_set(exp, train, synthetic, train_on, gen, fraction, recipe.seed, tag)
            for model_entry in exp.models:
                key = (
                    f"{exp.task}/{name}/{model_entry.label}/{train_on}/{gen or 'real'}/{fraction:g}"
                    + tag
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
                    model = get_plugin(kind, model_entry.plugin)(model_entry.params)
                    stage_run = run.child(key)
                    stage_run.seed = seed
                    model.fit(data, val, stage_run)
                    payload = _predict(model, test)
                    payload["seconds"] = time.perf_counter() - start
                    cache.store(key, digest, run, "pred-" + key.replace("/", "-"), payload)
                timings[key] = round(float(payload.get("seconds", 0.0)), 3)
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
                    seed=rep,
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


def _training_set(
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
    generator ``gen``."""
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
    if exp.task == "segment" and any(p.masks is None for p in parts):
        raise DataError(
            "segmentation needs masks, but the training data has none",
            hint="use an image+mask layout or a generator with emits_masks: true",
        )
    return ImageSet.concat(parts)


def _predict(model: Classifier | Segmenter, test: ImageSet) -> dict[str, Any]:
    """The trained model's outputs on the real test part (plus masks when it localises)."""
    with torch.no_grad():
        if isinstance(model, Segmenter):
            return {"output": model.predict(test.images).detach().float().cpu()}
        out: dict[str, Any] = {"output": model.predict_proba(test.images).detach().float().cpu()}
        if model.localises and test.masks is not None:
            out["masks"] = model.predict_masks(test.images).detach().float().cpu()
    return out


# ------------------------------------------------------------------ evaluators


def run_evaluators(
    recipe: Recipe,
    inputs: EvalInputs,
    metrics: Metrics,
    run: RunContext,
    timings: dict[str, float],
) -> None:
    """Run every evaluator whose inputs this run has; add its rows to ``metrics``."""
    start = time.perf_counter()
    for entry in recipe.evaluate:
        ev_run = run.child(f"evaluate/{entry.label}")
        evaluator = get_plugin("evaluator", entry.plugin)(entry.params)
        missing = _missing_inputs(evaluator.requires, inputs)
        if missing:
            ev_run.note(f"skipped: no {missing} in this run")
            continue
        ev_start = time.perf_counter()
        for section, rows in evaluator.evaluate(inputs, ev_run).items():
            try:
                metrics.add_rows(section, rows)
            except ValueError as exc:
                raise PluginError(f"evaluator {entry.label!r}: {exc}") from None
        timings[f"evaluate/{entry.label}"] = _seconds_since(ev_start)
    timings["evaluate"] = _seconds_since(start)


def _missing_inputs(requires: tuple[str, ...], inputs: EvalInputs) -> str | None:
    for need in requires:
        if need == "synthetic" and not inputs.synthetic:
            return "synthetic data"
        if need == "classification" and not any(p.task == "classify" for p in inputs.predictions):
            return "classification results"
        if need == "segmentation" and not any(p.task == "segment" for p in inputs.predictions):
            return "segmentation results"
    return None
