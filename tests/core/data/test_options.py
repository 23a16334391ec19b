"""The loader's options (synthmri.core.data.LoadOptions) and the recipe section built on it."""

from __future__ import annotations

import pytest

from synthmri.core.data import LAYOUTS, LoadOptions
from synthmri.core.errors import ConfigError
from synthmri.core.recipe import DataConfig


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"size": 2}, "size"),
        ({"channel": -1}, "channel"),
        ({"layout": "flat"}, "layout"),
        ({"on_bad_file": "ignore"}, "on_bad_file"),
        ({"min_brain_fraction": 1.5}, "min_brain_fraction"),
        ({"near_duplicate_threshold": -0.5}, "near_duplicate_threshold"),
        ({"near_duplicate_aligned": -1}, "near_duplicate_aligned"),
        ({"sise": 32}, "sise: unknown key"),
    ],
)
def test_a_bad_option_is_a_config_error_naming_it(bad: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        LoadOptions.build(**bad)


def test_build_applies_overrides_and_drops_recipe_only_fields() -> None:
    base = LoadOptions(size=16, classes=["yes"])
    opts = LoadOptions.build(base, size=24)
    assert (opts.size, opts.classes, base.size) == (24, ["yes"], 16)
    assert LoadOptions.build() == LoadOptions()
    cfg = DataConfig(path="/x", size=32, layout="nifti", n=100)
    from_recipe = LoadOptions.build(cfg)
    assert type(from_recipe) is LoadOptions
    assert (from_recipe.size, from_recipe.layout) == (32, "nifti")


def test_the_recipe_data_section_extends_the_options() -> None:
    assert issubclass(DataConfig, LoadOptions)
    assert set(LoadOptions.model_fields) < set(DataConfig.model_fields)
    assert LAYOUTS == ("auto", "class_folders", "image_mask", "nifti")
    # the recipe keeps its own bounds where they are stricter than the loader's
    with pytest.raises(ValueError, match="size"):
        DataConfig(size=8)
    # the resolved recipe lists where the data comes from first
    assert list(DataConfig().model_dump())[:3] == ["source", "path", "layout"]
