"""The memorisation guard: nearest training images against the real validation baseline,
on tiny phantom sets with planted copies; and its place in a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from synthmri.core.errors import RecipeError
from synthmri.core.interfaces import Generator, ImageSet
from synthmri.core.memorisation import (
    MemorisationGuard,
    baseline_distances,
    check_memorisation,
    guard_samples,
    memorisation_row,
)
from synthmri.core.phantoms import make_phantoms
from synthmri.core.pipeline import TrainedGenerator, make_synthetic_sets, run_recipe
from synthmri.core.recipe import GeneratorEntry, load_recipe, parse_recipe
from synthmri.core.training import RunContext

PLANTED = [3, 11]  # training images copied into the synthetic set


@pytest.fixture(scope="module")
def parts() -> tuple[ImageSet, ImageSet, ImageSet]:
    """Train, validation and 'new' images: three phantom sets of different seeds."""
    return tuple(make_phantoms(n, 32, seed=s) for n, s in ((24, 0), (16, 1), (10, 2)))


def with_copies(new: ImageSet, train: ImageSet) -> torch.Tensor:
    return torch.cat([new.images, train.images[PLANTED]])


def test_planted_copies_sit_closer_than_the_baseline(parts: Any) -> None:
    train, val, new = parts
    check = check_memorisation(with_copies(new, train), train.images, val.images, 0.05)
    assert check.distance.shape == (12,) and check.baseline.shape == (16,)
    assert check.distance[-2:].abs().max() < 1e-4  # exact copies: SSIM 1
    assert check.index[-2:].tolist() == PLANTED
    assert bool(check.closer[-2:].all())
    assert check.threshold == pytest.approx(float(torch.quantile(check.baseline.double(), 0.05)))
    # new phantoms come about as close to the training set as the validation images do
    ratio = float(check.distance[:10].median() / check.baseline.median())
    assert 0.5 < ratio < 2.0
    assert float(check.distance[-2:].max()) < float(check.distance[:10].min())
    assert check.closer_fraction == pytest.approx(float(check.closer.float().mean()))
    row = memorisation_row("g", "tumor", check, action="report")
    assert row["n_samples"] == 12 and row["n_val"] == 16 and row["nn_distance_min"] < 1e-4
    assert json.loads(json.dumps(row)) == row


def test_without_validation_images_leave_one_out_stands_in(parts: Any) -> None:
    train, _, _ = parts
    loo = baseline_distances(train.images[:6], train.images[:0])
    assert loo.shape == (6,) and bool((loo > 0).all())


def test_reject_drops_copies_and_draws_again(parts: Any) -> None:
    train, val, new = parts
    # a baseline whose line sits halfway between the copies (0) and the closest new image
    d_new = check_memorisation(new.images, train.images, val.images).distance
    baseline = torch.full((8,), float(d_new.min()) / 2)
    rounds: list[int] = []

    def draw(r: int) -> ImageSet:
        rounds.append(r)
        if r == 0:  # 4 new images and the 2 copies
            images = torch.cat([new.images[:4], train.images[PLANTED]])
        else:
            images = new.images[4 + 3 * (r - 1) : 4 + 3 * r]
        return ImageSet(images=images, sources=[f"r{r}:{i}" for i in range(len(images))])

    guard = MemorisationGuard(action="reject", max_rounds=3)
    kept, check, info = guard_samples(draw, 6, train.images, baseline, guard)
    assert rounds == [0, 1]
    assert len(kept) == 6 and not any(s in kept.sources for s in ("r0:4", "r0:5"))
    assert info == {"n_drawn": 9, "n_rejected": 2, "rounds": 2}
    assert check.distance.shape == (9,)

    report = MemorisationGuard(action="report")
    kept, check, info = guard_samples(draw, 6, train.images, baseline, report)
    assert len(kept) == 6 and info == {"n_drawn": 6, "n_rejected": 0, "rounds": 1}
    assert check.closer.tolist() == [False] * 4 + [True] * 2  # reported, not dropped


class Copycat(Generator):
    """Samples are training images (the ones it was given), the worst generator there is."""

    name = "copycat"
    description = "returns its training images"

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.images = images

    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        g = torch.Generator().manual_seed(seed or 0)
        idx = torch.randint(0, self.images.shape[0], (n,), generator=g)
        return ImageSet(images=self.images[idx])


def test_make_synthetic_sets_guards_every_generator(parts: Any, tmp_path: Path) -> None:
    train, val, _ = parts
    recipe = load_recipe("quickstart")
    rows: list[dict[str, Any]] = []
    trained = {}
    for action in ("report", "reject"):
        guard = {"action": action, "max_rounds": 2}
        entry = GeneratorEntry(plugin="copycat", name=f"copy-{action}", memorisation=guard)
        models = {c: Copycat(train.of_class(c).images) for c in train.class_names}
        trained[entry.label] = TrainedGenerator(entry, models, list(train.class_names))
    run = RunContext(tmp_path, seed=0)
    synthetic = make_synthetic_sets(recipe, trained, train, run, val, rows)
    assert {(r["generator"], r["class"]) for r in rows} == {
        (g, c) for g in trained for c in train.class_names
    }
    for r in rows:
        assert r["closer_fraction"] == 1.0 and r["nn_distance_min"] < 1e-4
    report = [r for r in rows if r["action"] == "report"]
    reject = [r for r in rows if r["action"] == "reject"]
    assert all(r["n_kept"] == 64 and r["n_rejected"] == 0 for r in report)
    assert all(r["n_kept"] == 0 and r["rounds"] == 2 and r["n_rejected"] == 128 for r in reject)
    assert len(synthetic["copy-report"]) == 128 and len(synthetic["copy-reject"]) == 0
    assert any("copies training data" in n for n in run.notes)
    assert any("0 of 64 kept" in n for n in run.notes)
    assert (tmp_path / "figures" / "generate-copy-report-memorisation.png").is_file()


def test_a_run_records_the_guard(tmp_path: Path, toy_plugins: str) -> None:
    recipe = parse_recipe(
        """\
name: toy
seed: 1
data: {n: 48, size: 32}
generators:
  - plugin: toy_mean
  - plugin: toy_mean
    name: unguarded
    memorisation: {action: "off"}
experiments:
  - name: cls
    models: [toy_intensity]
    train_on: [synthetic]
    synthetic_per_class: 12
"""
    )
    result = run_recipe(recipe, out=tmp_path)
    rows = result.metrics["memorisation"]
    assert {r["generator"] for r in rows} == {"toy_mean"}
    assert {r["class"] for r in rows} == {"normal", "tumor"}
    assert all(r["n_samples"] == 12 and r["action"] == "report" for r in rows)
    assert result.run_dir is not None
    assert (result.run_dir / "figures" / "generate-toy_mean-memorisation.png").is_file()


def test_the_setting_is_validated_and_kept_out_of_default_dumps() -> None:
    assert "memorisation" not in GeneratorEntry(plugin="dcgan").model_dump()
    set_ = GeneratorEntry(plugin="dcgan", memorisation={"action": "reject", "quantile": 0.1})
    assert set_.model_dump()["memorisation"]["quantile"] == 0.1
    with pytest.raises(RecipeError, match="memorisation"):
        load_recipe("quickstart", ["generators.0.memorisation.action=delete"])
