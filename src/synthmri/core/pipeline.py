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

import functools
import itertools
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from synthmri._version import __version__
from synthmri.core.data.load import load_images
from synthmri.core.data.split import random_subset, real_fraction, split_dataset
from synthmri.core.errors import ConfigError, DataError, PluginError
from synthmri.core.executors import (
    Executor,
    SerialExecutor,
    StageJob,
    StageResult,
    check_executor,
    executor_for,
)
from synthmri.core.interfaces import EvalInputs, Generator, ImageSet, Predictions
from synthmri.core.metrics import DataSummary, GeneratorSummary, Metrics, Timings
from synthmri.core.plugins import get_plugin
from synthmri.core.preflight import check_run
from synthmri.core.recipe import GeneratorEntry, Recipe, load_recipe
from synthmri.core.sampling import make_synthetic_sets, sample_generator
from synthmri.core.stages import (
    StageCache,
    class_part,
    content_hash,
    entry_class,
    fingerprint,
    fit_generator_stage,
    fit_model_stage,
    generator_stage_args,
    generator_stage_config,
    mark_failed,
    new_run_dir,
    stage_seed,
    training_set,
)
from synthmri.core.tracking import open_tracker
from synthmri.core.training import RunContext, load_checkpoint

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
    executor: str | Executor | None = None,
    workers: int | None = None,
    share: Sequence[Path] = (),
) -> RunResult:
    """Run a whole study and write its run directory (``out=None``: write nothing).

    ``executor`` (``serial``, ``local``, ``ray`` or an :class:`Executor`) and ``workers``
    override the recipe's ``executor:`` section; ``share`` names earlier runs whose stages
    are reused like ``resume``'s (a sweep's finished runs)."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    t0 = time.perf_counter()
    resume_dir = Path(resume) if resume else None
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes
    # every check `synthmri validate` makes, before a run directory exists
    check_run(recipe, out=out if main_rank else None, resume=resume_dir, device=device)
    check_executor(executor, recipe.executor)
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
    cache = StageCache(run_dir, resume_dir, warn=run.child("resume").note, share=share)
    timings: dict[str, float] = {}  # stage -> seconds, in the order the stages ran

    try:
        # the pool starts before this process runs torch code (its workers are forked)
        with executor_for(recipe.executor, executor, workers, str(run.device)) as pool:
            run.log(executor=pool.describe())
            start = time.perf_counter()
            data, train, val, test = load_data(recipe, run.child("data"))
            timings["data"] = _seconds_since(start)
            trained = train_generators(recipe, train, run, cache, timings, pool)
            start = time.perf_counter()
            guard_rows: list[dict[str, Any]] = []  # the memorisation guard's rows
            synthetic = make_synthetic_sets(recipe, trained, train, run, val, guard_rows)
            timings["synthesize"] = _seconds_since(start)
            predictions = run_experiments(
                recipe, train, val, test, synthetic, run, cache, timings, pool
            )
        metrics = Metrics(
            recipe=recipe.name,
            synthmri_version=__version__,
            seed=recipe.seed,
            device=str(run.device),
            data=data,
            generators=[tg.summary() for tg in trained.values()],
            memorisation=guard_rows,
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
    skipped, duplicate_groups, dropped = 0, 0, 0
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
            mask=cfg.tumor_mask,
        )
        layout = f"phantoms, {cfg.tumor_mask} tumour masks"
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
    if cfg.split.train_fraction < 1.0:
        whole = len(train)
        train = real_fraction(
            train, cfg.split.train_fraction, stage_seed(recipe.seed, "split/train_fraction")
        )
        run.note(
            f"kept {len(train)} of the train part's {whole} images (split.train_fraction "
            f"{cfg.split.train_fraction:g}); generators and models train on these only"
        )
    summary = DataSummary(
        n_train=len(train),
        n_val=len(val),
        n_test=len(test),
        duplicate_groups=duplicate_groups,
        layout=layout,
        classes=train.class_names,
        skipped_files=skipped,
        train_fraction=cfg.split.train_fraction,
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
    class_filter: dict[str, dict[str, int | float]] | None = None  # set when sampled with one

    def summary(self) -> GeneratorSummary:
        """Its row of the ``generators`` section of ``metrics.json``."""
        return GeneratorSummary(
            generator=self.entry.label,
            plugin=self.entry.plugin,
            n_train=self.n_train,
            train_seconds=round(self.train_seconds, 2),
            baseline=all(m.baseline for m in self.models.values()),
            class_filter=self.class_filter,
        )


def train_generators(
    recipe: Recipe,
    train: ImageSet,
    run: RunContext,
    cache: StageCache,
    timings: dict[str, float],
    executor: Executor | None = None,
) -> dict[str, TrainedGenerator]:
    """Fit every generator entry (per class or conditional), reusing cached stages; the
    stages to train run on ``executor`` (default: serial), those that start from another
    class's model (``warm_start``) after the others."""
    trained: dict[str, TrainedGenerator] = {}
    train_fp = fingerprint(train)
    jobs: list[StageJob] = []
    later: list[StageJob] = []  # warm-started: they need their start class's model
    todo: dict[str, tuple[TrainedGenerator, str | None, str]] = {}
    seconds: dict[str, float] = {}
    owner: dict[str, TrainedGenerator] = {}
    for entry in recipe.generators:
        cls = get_plugin("generator", entry.plugin)
        classes = entry.resolve_classes(train.class_names)
        targets: list[str | None] = list(classes) if entry.per_class else [None]
        first = entry_class(entry, "warm_start", classes)  # the others start from its model
        negative = entry_class(entry, "negatives", train.class_names)
        tg = trained[entry.label] = TrainedGenerator(entry, {}, list(train.class_names))
        for cname in targets:
            key = f"generate/{entry.label}" + (f"/{cname}" if cname else "")
            part = class_part(train, cname, classes)
            seed = stage_seed(recipe.seed, key)
            part = random_subset(part, entry.max_train_images, seed)
            if len(part) == 0:
                raise DataError(
                    f"generator {entry.label!r}: no training images for class {cname!r}"
                )
            model = cls(entry.params)
            digest = content_hash(
                generator_stage_config(entry, cls.sampling_params),
                cname,
                train_fp,
                recipe.seed,
                entry.max_train_images,
                *filter(None, [model.cache_key()]),  # e.g. a hash of files read (none: as before)
            )
            tg.models[cname] = model  # keeps the class order; replaced once trained
            tg.n_train += len(part)
            seconds[key], owner[key] = 0.0, tg
            cached = cache.lookup(key, digest)
            if cached is not None:
                model.load_state_dict(cached["state"])
                model.to(run.device)  # a restored model is on the CPU
                run.log(stage_reused=key)
                seconds[key] = float(cached.get("train_seconds", 0.0))
                continue
            meta = {
                "kind": "generator",
                "plugin": entry.plugin,
                "name": entry.label,
                "params": entry.params,
                "class_name": cname,
                "class_names": list(train.class_names),
                "n_train": len(part),
            }
            negatives = None
            if negative not in (None, cname):  # NDA: the negatives class's real train slices
                negatives = random_subset(train.of_class(negative), entry.max_train_images, seed)
            args = (entry.plugin, entry.params, part, negatives, seed, meta)
            start = first if first != cname else None
            make = functools.partial(generator_stage_args, args, tg.models, start)
            (jobs if start is None else later).append(
                StageJob(key, fit_generator_stage, make, len(part))
            )
            todo[key] = (tg, cname, digest)

    def done(job: StageJob, result: StageResult) -> None:
        tg, cname, digest = todo[job.key]
        cache.store(job.key, digest, run, job.key.replace("/", "-"), result.payload)
        model = result.live
        if model is None:  # trained in a worker: rebuilt from its state
            model = get_plugin("generator", tg.entry.plugin)(tg.entry.params)
            model.load_state_dict(result.payload["state"])
            model.to(run.device)
        tg.models[cname] = model
        seconds[job.key] = float(result.payload["train_seconds"])

    for stages in (jobs, later):
        (executor or SerialExecutor()).run(stages, run, done, "generators")
    for key, elapsed in seconds.items():  # in recipe order, whatever order they ended in
        timings[key] = round(elapsed, 3)
    for key, tg in owner.items():
        tg.train_seconds += seconds[key]
    return trained


def load_generator(
    path: str | Path, params: Mapping[str, Any] | None = None
) -> tuple[Generator, dict[str, Any]]:
    """A trained generator from a checkpoint written by a run, and the checkpoint's metadata.

    ``params`` replace the checkpoint's values of the plugin's ``sampling_params`` (such as
    diffusion's ``guidance``); any other name is a ConfigError. The checkpoint may come
    from someone else: its keys and their types are checked, and anything wrong (a missing
    key, params the plugin refuses, a state that does not fit) is a one-line DataError
    naming the file. Names it holds are used in file names only through ``safe_name``."""
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
    other = sorted(set(params or {}) - cls.sampling_params)
    if other:
        raise ConfigError(
            f"{', '.join(other)}: not a sampling param of generator {ckpt['plugin']!r}",
            hint=f"its sampling params: {', '.join(sorted(cls.sampling_params)) or 'none'}",
        )
    try:
        model = cls({**ckpt["params"], **(params or {})})
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
# make_synthetic_sets and sample_generator (with the memorisation guard) live in
# synthmri.core.sampling and are re-exported here.


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
    executor: Executor | None = None,
) -> list[Predictions]:
    """Train every model of every experiment and predict on the real test part; the stages
    to train are independent and run on ``executor`` (default: serial)."""
    test_fp = fingerprint(test)
    rows: list[tuple[str, dict[str, Any]]] = []  # stage key, its row but the output
    payloads: dict[str, dict[str, Any]] = {}
    jobs: list[StageJob] = []
    digests: dict[str, str] = {}
    for e_idx, exp in enumerate(recipe.experiments):
        kind = "classifier" if exp.task == "classify" else "segmenter"
        name = exp.name or f"exp{e_idx}"
        target = test.labels if exp.task == "classify" else test.masks
        if target is None:
            raise DataError(
                f"the test part has no {'labels' if kind == 'classifier' else 'masks'}"
                f" for experiment {name!r}"
            )
        runs = exp.runs(exp.generators or list(synthetic))
        for rep, (train_on, gen, fraction) in itertools.product(exp.seeds or [None], runs):
            tag = "" if rep is None else f"/seed{rep}"  # one training per seed when seeds given
            setting = (exp, train, synthetic, train_on, gen, fraction, recipe.seed, tag)
            data = training_set(*setting)
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
                row = {
                    "task": exp.task,
                    "model": model_entry.label,
                    "plugin": model_entry.plugin,
                    "generator": gen,
                    "train_on": train_on,
                    "real_fraction": fraction,
                    "n_train": len(data),
                    "target": target,
                    "class_names": list(test.class_names),
                    "seed": rep,
                }
                rows.append((key, row))
                cached = cache.lookup(key, digest)
                if cached is not None:
                    payloads[key] = cached
                    run.log(stage_reused=key)
                    continue
                seed = stage_seed(recipe.seed, key)
                entry = (kind, model_entry.plugin, model_entry.params)
                jobs.append(
                    StageJob(
                        key,
                        fit_model_stage,
                        # the training set is built again when the stage starts (cheap),
                        # so only running stages hold theirs
                        lambda e=entry, st=setting, s=seed: (
                            *e, training_set(*st), val, test, s
                        ),
                        cost=len(data),
                    )
                )
                digests[key] = digest

    def done(job: StageJob, result: StageResult) -> None:
        payloads[job.key] = result.payload
        name = "pred-" + job.key.replace("/", "-")
        cache.store(job.key, digests[job.key], run, name, result.payload)

    (executor or SerialExecutor()).run(jobs, run, done, "experiments")
    predictions: list[Predictions] = []
    for key, spec in rows:  # in recipe order, whatever order the stages ended in
        payload = payloads[key]
        timings[key] = round(float(payload.get("seconds", 0.0)), 3)
        extra = {"val_score": payload.get("val_score")}  # None: none (or an older cache)
        predictions.append(row := Predictions(**spec, output=payload["output"], extra=extra))
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
