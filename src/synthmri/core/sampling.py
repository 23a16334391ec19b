"""Synthetic sets: sample every trained generator, guard them against memorisation, write them.

``make_synthetic_sets`` samples each generator entry as many images per class as the
recipe's experiments need, through the entry's class filter when it has one
(``synthmri.core.class_filter``), puts every class through its memorisation guard
(``synthmri.core.memorisation``: report, or reject and draw again), writes the PNG sets and
the real-vs-synthetic grids. ``synthmri.core.pipeline`` re-exports both functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from synthmri.core.artifacts import real_vs_synthetic_grid, write_image_set
from synthmri.core.class_filter import ClassFilter, filter_class, fit_class_filter
from synthmri.core.interfaces import Classifier, Generator, ImageSet
from synthmri.core.memorisation import (
    MemorisationCheck,
    MemorisationGuard,
    baseline_distances,
    guard_class,
    memorisation_figure,
)
from synthmri.core.recipe import Recipe
from synthmri.core.stages import stage_seed
from synthmri.core.training import RunContext

if TYPE_CHECKING:
    from synthmri.core.pipeline import TrainedGenerator

__all__ = ["make_synthetic_sets", "sample_generator"]


def make_synthetic_sets(
    recipe: Recipe,
    trained: dict[str, TrainedGenerator],
    train: ImageSet,
    run: RunContext,
    val: ImageSet | None = None,
    guard_rows: list[dict[str, Any]] | None = None,
) -> dict[str, ImageSet]:
    """Sample each generator as many images per class as any experiment needs; write PNGs.

    Each generator entry's memorisation guard (``memorisation:``, see
    ``synthmri.core.memorisation``) checks its samples against the real ``train`` images
    with the real ``val`` images as the baseline (without ``val``: leave-one-out within the
    training set), rejects samples when asked, draws a histogram and appends one row per
    generator and class to ``guard_rows``. A class filter's classifier is trained once per
    distinct filter setting."""
    need = recipe.synthetic_per_class()
    synthetic: dict[str, ImageSet] = {}
    baselines: dict[int, torch.Tensor] = {}  # max_pairs -> the validation baseline
    filters: dict[str, tuple[Classifier, dict[str, float]]] = {}  # setting (json) -> fitted
    for label, tg in trained.items():
        n = need.get(label, 64)  # evaluators still get a sample of unused generators
        setting = tg.entry.class_filter
        if setting is not None and (fkey := setting.model_dump_json()) not in filters:
            with run.progress(1, f"class filter {setting.plugin}") as bar:
                filters[fkey] = fit_class_filter(
                    setting, train, val, stage_seed(recipe.seed, f"class_filter/{fkey}"),
                    run.child(f"class_filter/{setting.plugin}"),
                )  # fmt: skip
                bar.advance()
        class_filter = (setting, *filters[fkey]) if setting is not None else None
        guard = tg.entry.memorisation
        if guard.action != "off" and guard.max_pairs not in baselines:
            val_images = val.images if val is not None else train.images[:0]
            baselines[guard.max_pairs] = baseline_distances(
                train.images, val_images, max_pairs=guard.max_pairs, device=run.device
            )
        gen_run = run.child(f"generate/{label}")
        with run.progress(1, f"sample {label}") as bar:
            syn = sample_generator(
                tg, n, recipe.seed, guard=(guard, train, baselines.get(guard.max_pairs)),
                run=gen_run, guard_rows=guard_rows, class_filter=class_filter,
            )  # fmt: skip
            bar.advance()
        synthetic[label] = syn
        folder = run.path("synthetic", label)
        if folder is not None:
            write_image_set(syn, folder, prefix=label)
        if len(syn):  # a rejecting guard may leave none
            real_vs_synthetic_grid({"real": train, label: syn}, gen_run, "samples")
    shown = {k: v for k, v in synthetic.items() if len(v)}
    if len(shown) > 1:
        real_vs_synthetic_grid({"real": train, **shown}, run.child("generate"), "side-by-side")
    return synthetic


def sample_generator(
    tg: TrainedGenerator,
    per_class: int,
    seed: int,
    classes: list[str] | None = None,
    guard: tuple[MemorisationGuard, ImageSet, torch.Tensor | None] | None = None,
    run: RunContext | None = None,
    guard_rows: list[dict[str, Any]] | None = None,
    class_filter: tuple[ClassFilter, Classifier, dict[str, float]] | None = None,
) -> ImageSet:
    """``per_class`` synthetic images for each class the generator knows, labelled.

    With ``class_filter`` (the setting, its fitted classifier, its acceptance of the real
    validation images per class) only samples the classifier puts in their class are kept
    (``filter_class``); the counts go to ``tg.class_filter``. With ``guard`` (the setting,
    the real train part, the validation baseline) the samples of each class then go through
    ``guard_samples`` (a rejecting guard draws again with derived seeds); its rows go to
    ``guard_rows`` and its histogram through ``run``."""
    sets = []
    names = tg.class_names
    wanted = classes or [c for c in names if c in tg.models or None in tg.models]
    checks: dict[str, MemorisationCheck] = {}
    for cname in wanted:
        label = names.index(cname)
        model = tg.models.get(cname) or tg.models.get(None)
        if model is None:
            continue
        key = f"sample/{tg.entry.label}/{cname}"

        def draw(
            r: int,
            count: int = per_class,
            model: Generator = model,
            key: str = key,
            label: int = label,
            cname: str = cname,
        ) -> ImageSet:
            s = model.sample(
                count,
                label=label if None in tg.models else None,
                seed=stage_seed(seed, key if r == 0 else f"{key}/round{r}"),
            )
            imgs = s.images.clamp(0, 1)
            masks = s.masks
            if masks is None and any(m.emits_masks for m in tg.models.values()):
                masks = torch.zeros(imgs.shape[0], 1, *imgs.shape[2:])
            tag = f"{tg.entry.label}:{cname}:seed={seed}" + (f":round={r}" if r else "")
            return ImageSet(
                images=imgs,
                labels=torch.full((imgs.shape[0],), label, dtype=torch.long),
                class_names=list(names),
                masks=masks,
                sources=[f"{tag}:{i}" for i in range(imgs.shape[0])],
                groups=[f"synthetic:{tg.entry.label}"] * imgs.shape[0],
            )

        take: Callable[[int], ImageSet] = draw
        if class_filter is not None:
            setting, classifier, real = class_filter
            take, counts = filter_class(draw, per_class, label, classifier, setting)
        if guard is None or guard[0].action == "off" or guard[2] is None:
            sets.append(take(0))
        else:
            kept, checks[cname] = guard_class(
                take, per_class, tg.entry.label, cname, guard, run, guard_rows
            )
            sets.append(kept)
        if class_filter is not None:
            _record_filter(tg, cname, counts, real.get(cname), len(sets[-1]), run)
    if run is not None and checks:
        memorisation_figure(checks, tg.entry.label, run)
    return ImageSet.concat(sets)


def _record_filter(
    tg: TrainedGenerator,
    cname: str,
    counts: dict[str, int],
    real: float | None,
    n_kept: int,
    run: RunContext | None,
) -> None:
    """One class's class-filter figures on ``tg`` (for ``metrics.json``) and a run note."""
    drawn, accepted = counts["n_drawn"], counts["n_accepted"]
    row: dict[str, int | float] = {
        "n_drawn": drawn,
        "n_accepted": accepted,
        "acceptance": round(accepted / drawn, 4),
    }
    if real is not None:
        row["real_acceptance"] = real
    tg.class_filter = {**(tg.class_filter or {}), cname: row}
    if run is not None:
        run.note(
            f"class filter: {tg.entry.label} {cname}: the classifier kept {accepted} of "
            f"{drawn} samples ({accepted / drawn:.0%}"
            + (f"; {real:.0%} of the real validation images" if real is not None else "")
            + f"); {n_kept} in the set"
        )
