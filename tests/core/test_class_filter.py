"""The class filter: a classifier of the real train part keeps the samples it puts in their
class; its rounds, its counts, its place in a run and in a recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from synthmri.core.class_filter import ClassFilter, filter_class
from synthmri.core.errors import RecipeError
from synthmri.core.interfaces import Classifier, ImageSet
from synthmri.core.pipeline import run_recipe
from synthmri.core.recipe import GeneratorEntry, load_recipe, parse_recipe


class Brightness(Classifier):
    """P(class 1) is the image's mean intensity."""

    name = "brightness"

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        p = images.flatten(1).mean(1)
        return torch.stack([1 - p, p], 1)


def test_filter_draws_the_shortfall_until_the_class_has_its_count() -> None:
    rounds: list[tuple[int, int]] = []

    def draw(r: int, count: int) -> ImageSet:  # every fourth image dark (0.2), the rest 0.8
        rounds.append((r, count))
        means = torch.tensor([0.2 if i % 4 == 0 else 0.8 for i in range(count)])
        return ImageSet(
            images=means.view(count, 1, 1, 1).expand(count, 1, 8, 8).clone(),
            labels=torch.ones(count, dtype=torch.long),
            sources=[f"r{r}:{i}" for i in range(count)],
        )

    setting = ClassFilter(plugin="brightness", min_probability=0.5, max_rounds=3)
    filtered, counts = filter_class(draw, 10, 1, Brightness(), setting)
    kept = filtered(0)
    # 7 of the first 10 kept; the shortfall of 3 at 70 % acceptance (+10 %) asks for 5
    assert rounds == [(0, 10), (1, 5)]
    assert kept.sources == [f"r0:{i}" for i in (1, 2, 3, 5, 6, 7, 9)] + ["r1:1", "r1:2", "r1:3"]
    assert counts == {"n_drawn": 15, "n_accepted": 10}
    # the guard's second round starts at filter round max_rounds (fresh seeds)
    filtered(1)
    assert [r for r, _ in rounds] == [0, 1, 3, 4]
    # a class the classifier never gives: max_rounds full draws, an empty set
    none, counts = filter_class(draw, 3, 0, Brightness(), ClassFilter(min_probability=0.9))
    assert len(none(0)) == 0 and counts == {"n_drawn": 12, "n_accepted": 0}


def test_a_run_filters_records_and_keeps_the_training_stage(
    tmp_path: Path, toy_plugins: str
) -> None:
    text = """\
name: toy
seed: 2
data: {n: 60, size: 32}
generators:
  - plugin: toy_mean
    params: {noise: 0.2}
experiments:
  - name: cls
    models: [toy_intensity]
    train_on: [synthetic]
    synthetic_per_class: 10
"""
    first = run_recipe(parse_recipe(text), out=tmp_path / "a")
    assert first.metrics["generators"][0]["class_filter"] is None
    assert first.run_dir is not None
    recipe = parse_recipe(text, overrides=["generators.0.class_filter.plugin=toy_intensity"])
    result = run_recipe(recipe, out=tmp_path / "b", resume=first.run_dir)
    assert result.run_dir is not None
    log = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    reused = {e.get("stage_reused") for e in log}
    # the filter acts on sampling: the generators are not trained again
    assert {"generate/toy_mean/normal", "generate/toy_mean/tumor"} <= reused
    rows = result.metrics["generators"][0]["class_filter"]
    assert set(rows) == {"normal", "tumor"}
    for cname, row in rows.items():
        # 10, then the shortfall (at most 10 a draw), 4 draws at most
        assert 10 <= row["n_drawn"] <= 40 and 0 <= row["n_accepted"] <= row["n_drawn"]
        assert row["n_accepted"] >= 10 or row["n_drawn"] == 40
        assert row["acceptance"] == pytest.approx(row["n_accepted"] / row["n_drawn"], abs=1e-4)
        assert 0.0 <= row["real_acceptance"] <= 1.0
        assert any(f"class filter: toy_mean {cname}: " in n for n in result.notes)
    # every sample written is one the filter kept
    n_written = len(list((result.run_dir / "synthetic" / "toy_mean").rglob("*.png")))
    assert n_written == sum(min(10, r["n_accepted"]) for r in rows.values())


def test_the_setting_is_validated_and_kept_out_of_default_dumps() -> None:
    assert "class_filter" not in GeneratorEntry(plugin="dcgan").model_dump()
    with pytest.raises(RecipeError, match=r"generators\.0\.class_filter\.plugin"):
        load_recipe("quickstart", ["generators.0.class_filter.plugin=no_such_classifier"])
    with pytest.raises(RecipeError, match="min_probability"):
        load_recipe("quickstart", ["generators.0.class_filter.min_probability=1.5"])
    with pytest.raises(RecipeError, match=r"class_filter\.params"):
        load_recipe("quickstart", ["generators.0.class_filter.params.steps=0"])
    recipe = load_recipe("quickstart", ["generators.0.class_filter.params.steps=5"])
    setting = recipe.generators[0].class_filter
    assert setting is not None and setting.params["steps"] == 5
    assert setting.params["dropout"] is not None  # filled with the plugin's defaults
