"""synthmri: synthetic brain MRI data sets, and proof of what they are worth.

The public API::

    import synthmri
    synthmri.list_plugins("generator")
    cls = synthmri.get_plugin("generator", "dcgan")
    recipe = synthmri.load_recipe("quickstart")
    result = synthmri.run_recipe(recipe, out="runs")

Importing ``synthmri`` loads no torch: every public name is imported from its module on
first use (PEP 562), so ``synthmri --help`` and ``synthmri plugins list`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from synthmri._version import __version__

if TYPE_CHECKING:
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
    from synthmri.plugins.generators._gan import GAN, GANParams, GANStep, GANTraining

__all__ = [
    "GAN",
    "Classifier",
    "ConfigError",
    "DataError",
    "EvalInputs",
    "Evaluator",
    "GANParams",
    "GANStep",
    "GANTraining",
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

#: module -> the public names it defines (imported on first access)
_LAZY_MODULES: dict[str, tuple[str, ...]] = {
    "synthmri.core.errors": (
        "ConfigError",
        "DataError",
        "PluginError",
        "RecipeError",
        "SynthMRIError",
        "TrainingError",
    ),
    "synthmri.core.hookspecs": ("hookimpl",),
    "synthmri.core.interfaces": (
        "Classifier",
        "EvalInputs",
        "Evaluator",
        "Generator",
        "ImageSet",
        "Predictions",
        "Segmenter",
        "StrictParams",
    ),
    "synthmri.core.plugins": ("get_plugin", "list_plugins"),
    "synthmri.core.recipe": ("Recipe", "load_recipe"),
    "synthmri.core.training": ("RunContext",),
    "synthmri.plugins.generators._gan": ("GAN", "GANParams", "GANStep", "GANTraining"),
}
_LAZY = {name: module for module, names in _LAZY_MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access, then keep it here.

    A subpackage (``synthmri.core``, ``synthmri.testing``, ...) is imported on access too.
    """
    module = _LAZY.get(name)
    if module is None:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def run_recipe(recipe: Recipe | str, out: str | None = "runs", **kwargs: Any) -> Any:
    """Run a recipe (object, path or shipped name); returns a ``RunResult``."""
    from synthmri.core.pipeline import run_recipe as _run

    return _run(recipe, out=out, **kwargs)
