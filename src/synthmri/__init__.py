"""synthmri: synthetic brain MRI data sets, and proof of what they are worth.

The public API::

    import synthmri
    synthmri.list_plugins("generator")
    cls = synthmri.get_plugin("generator", "dcgan")
    recipe = synthmri.load_recipe("quickstart")
    result = synthmri.run_recipe(recipe, out="runs")
"""

from __future__ import annotations

from typing import Any

from synthmri._version import __version__
from synthmri.core.errors import (
    ConfigError,
    DataError,
    PluginError,
    RecipeError,
    SynthMRIError,
    TrainingError,
)
from synthmri.core.hookspecs import hookimpl
from synthmri.core.interfaces import (
    Classifier,
    EvalInputs,
    Evaluator,
    Generator,
    ImageSet,
    Predictions,
    Segmenter,
    StrictParams,
)
from synthmri.core.plugins import get_plugin, list_plugins
from synthmri.core.recipe import Recipe, load_recipe
from synthmri.core.training import RunContext

__all__ = [
    "Classifier",
    "ConfigError",
    "DataError",
    "EvalInputs",
    "Evaluator",
    "Generator",
    "ImageSet",
    "PluginError",
    "Predictions",
    "Recipe",
    "RecipeError",
    "RunContext",
    "Segmenter",
    "StrictParams",
    "SynthMRIError",
    "TrainingError",
    "__version__",
    "get_plugin",
    "hookimpl",
    "list_plugins",
    "load_recipe",
    "run_recipe",
]


def run_recipe(recipe: Recipe | str, out: str | None = "runs", **kwargs: Any) -> Any:
    """Run a recipe (object, path or shipped name); returns a ``RunResult``."""
    from synthmri.core.pipeline import run_recipe as _run

    return _run(recipe, out=out, **kwargs)
