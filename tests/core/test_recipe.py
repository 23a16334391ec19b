"""Recipe schema, YAML errors with lines, overrides, plugin params validated up front."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from synthmri.core.errors import ConfigError, RecipeError
from synthmri.core.recipe import load_recipe, parse_recipe, shipped_recipes
from synthmri.core.recipe_yaml import apply_override

GOOD = """\
name: toy
seed: 3
data:
  n: 40
  size: 32
generators:
  - plugin: toy_mean
    params:
      noise: 0.05
experiments:
  - task: classify
    models:
      - plugin: toy_intensity
    train_on: [real, synthetic, mixed]
    synthetic_per_class: 10
evaluate:
  - toy_count
"""


def test_good_recipe_resolves_defaults_and_params(toy_plugins: str) -> None:
    r = parse_recipe(GOOD)
    assert r.name == "toy" and r.seed == 3 and r.data.size == 32
    assert r.generators[0].params == {"noise": 0.05, "emits_masks": False, "conditional": False}
    assert r.experiments[0].models[0].params == {"steps": 60}
    assert r.evaluate[0].plugin == "toy_count"
    again = parse_recipe(r.to_yaml())
    assert again == r


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        (
            GOOD.replace("  size: 32", "  size: 32\n  colour: red"),
            ":6:",
            "data.colour: unknown key",
        ),
        (GOOD.replace("  size: 32", "  size: big"), ":5:", "data.size"),
        (GOOD.replace("plugin: toy_intensity", "plugin: toy_intensit"), ":13:", "toy_intensity"),
        (GOOD.replace("      noise: 0.05", "      nosie: 0.05"), ":9:", "params.nosie: unknown"),
        (GOOD.replace("seed: 3", "seed: [3"), ":", "invalid YAML"),
        (GOOD.replace("real, synthetic, mixed", "real, fake"), ":14:", "train_on"),
    ],
)
def test_errors_name_path_and_line(toy_plugins: str, text: str, where: str, what: str) -> None:
    with pytest.raises(RecipeError) as exc:
        parse_recipe(text, source="r.yaml")
    msg = exc.value.message
    assert msg.startswith("r.yaml" + where), msg
    assert what in msg, msg


def test_unknown_plugin_error_suggests_closest(toy_plugins: str) -> None:
    with pytest.raises(RecipeError) as exc:
        parse_recipe(GOOD.replace("toy_count", "toy_cuont"))
    assert exc.value.hint is not None and "toy_count" in exc.value.hint


def test_synthetic_training_needs_a_generator(toy_plugins: str) -> None:
    text = GOOD.split("generators:")[0] + "experiments:\n  - models: [toy_intensity]\n"
    with pytest.raises(RecipeError, match="needs a generator"):
        parse_recipe(text)


def test_segmentation_needs_mask_generators(toy_plugins: str) -> None:
    text = GOOD.replace("task: classify", "task: segment").replace(
        "plugin: toy_intensity", "plugin: toy_threshold"
    )
    with pytest.raises(RecipeError, match="emit masks"):
        parse_recipe(text)
    ok = text.replace("noise: 0.05", "noise: 0.05\n      emits_masks: true")
    assert parse_recipe(ok).experiments[0].task == "segment"


def test_overrides_are_typed_through_the_schema(toy_plugins: str) -> None:
    r = parse_recipe(
        GOOD,
        overrides=[
            "data.size=64",
            "generators.0.params.noise=0.2",
            "experiments.0.train_on=[real]",
            "data.path=/x y",
        ],
    )
    assert r.data.size == 64 and r.generators[0].params["noise"] == 0.2
    assert r.experiments[0].train_on == ["real"] and r.data.path == "/x y"
    assert r.data.uses_folder
    with pytest.raises(RecipeError, match=r"data\.size"):
        parse_recipe(GOOD, overrides=["data.size=huge"])
    with pytest.raises(RecipeError, match="position"):
        parse_recipe(GOOD, overrides=["generators.5.plugin=x"])
    with pytest.raises(RecipeError, match=r"key\.path=value"):
        apply_override({}, "novalue")


def test_load_by_path_and_unknown_name(tmp_path: Path, toy_plugins: str) -> None:
    p = tmp_path / "toy.yaml"
    p.write_text(GOOD)
    assert load_recipe(p).name == "toy"
    with pytest.raises(RecipeError, match="unknown recipe"):
        load_recipe("no-such-recipe")
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_shipped_recipes_validate() -> None:
    shipped = shipped_recipes()
    assert "quickstart" in shipped
    for name, path in shipped.items():
        raw = yaml.safe_load(path.read_text())
        folder = raw.get("data", {}).get("source") == "folder"
        recipe = load_recipe(name, ["data.path=/data"] if folder else [])
        assert recipe.name == name, f"{path}: `name` must match the file name"
        assert recipe.description, f"{path}: needs a description"


def test_non_mapping_recipe_is_an_error() -> None:
    with pytest.raises(RecipeError, match="mapping"):
        parse_recipe(textwrap.dedent("- a\n- b\n"))


def test_generator_classes_and_experiment_runs(toy_plugins: str) -> None:
    r = parse_recipe(
        GOOD.replace("    params:\n      noise: 0.05\n", "    classes: [TUMOR]\n").replace(
            "    synthetic_per_class: 10\n",
            "    synthetic_per_class: 10\n    real_fraction: [0.5, 1.0]\n"
            "  - models: [toy_intensity]\n    train_on: [real]\n    synthetic_per_class: 99\n"
            "  - models: [toy_intensity]\n    train_on: [mixed]\n    synthetic_per_class: 30\n",
        )
    )
    entry = r.generators[0]
    assert entry.resolve_classes(["normal", "tumor"]) == ["tumor"]
    with pytest.raises(ConfigError, match="'TUMOR' not in the data"):
        entry.resolve_classes(["yes", "no"])
    assert r.experiments[0].runs(["g"]) == [
        ("real", None, 0.5),
        ("real", None, 1.0),
        ("synthetic", "g", 0.0),
        ("mixed", "g", 0.5),
        ("mixed", "g", 1.0),
    ]
    # real-only experiments need no synthetic images
    assert r.synthetic_per_class() == {"toy_mean": 30}


def test_data_section_takes_the_loader_options() -> None:
    r = parse_recipe("name: x\ndata: {near_duplicate_threshold: 1.01, layout: nifti}\n")
    assert r.data.near_duplicate_threshold == 1.01 and r.data.layout == "nifti"
    with pytest.raises(RecipeError, match=r"did you mean .near_duplicate_threshold"):
        parse_recipe("name: x\ndata: {near_duplicat_threshold: 1}\n")


@pytest.mark.parametrize("key", ["warm_start", "negatives"])
@pytest.mark.parametrize(
    ("entry", "what"),
    [
        ("{plugin: augment, KEY: normal}", "'augment' cannot do it"),
        (
            "{plugin: dcgan, per_class: false, KEY: normal, params: {conditional: true}}",
            "needs per_class: true",
        ),
    ],
)
def test_warm_start_and_negatives_need_a_per_class_plugin_that_can(
    key: str, entry: str, what: str
) -> None:
    entry = entry.replace("KEY", key)
    with pytest.raises(RecipeError) as exc:
        parse_recipe(f"name: w\ngenerators:\n  - {entry}\n", source="w.yaml")
    assert exc.value.message.startswith("w.yaml:3:"), exc.value.message
    assert f"generators.0.{key}: {what}" in exc.value.message
