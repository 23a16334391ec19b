"""The plugin contract: one hook per kind.

Each hook receives a ``register`` callback; a plugin module calls it once per
class it provides::

    from synthmri import hookimpl

    @hookimpl
    def synthmri_register_generators(register):
        register(MyGenerator)      # MyGenerator.name == "mine"
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import pluggy

PROJECT = "synthmri"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type], None]


class PluginKind(StrEnum):
    """The four plugin kinds; the values are what recipes, the registry and the CLI use."""

    GENERATOR = "generator"
    CLASSIFIER = "classifier"
    SEGMENTER = "segmenter"
    EVALUATOR = "evaluator"


@hookspec
def synthmri_register_generators(register: Register) -> None:
    """Register Generator subclasses: call ``register(cls)`` for each."""


@hookspec
def synthmri_register_classifiers(register: Register) -> None:
    """Register Classifier subclasses: call ``register(cls)`` for each."""


@hookspec
def synthmri_register_segmenters(register: Register) -> None:
    """Register Segmenter subclasses: call ``register(cls)`` for each."""


@hookspec
def synthmri_register_evaluators(register: Register) -> None:
    """Register Evaluator subclasses: call ``register(cls)`` for each."""


#: hook name -> the kind of the classes it registers
HOOK_KINDS: dict[str, str] = {f"synthmri_register_{kind}s": kind.value for kind in PluginKind}
