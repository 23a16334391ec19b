"""The plugin contract, checked on every built-in plugin found in the registry.

A new built-in plugin is tested here with no new test code: each kind's conformance check
from ``synthmri.testing`` runs on it with its ``quick_params``, and a generator whose params
offer ``conditional`` / ``emits_masks`` is checked with them switched on too, and one that
offers ``mask_conditioned`` with that switched on (with ``conditional``). Third-party
plugins run the same checks in their own test suites.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from synthmri.core.plugins import list_plugins
from synthmri.testing import check_classifier, check_evaluator, check_generator, check_segmenter

CHECKS: dict[str, Callable[..., None]] = {
    "generator": check_generator,
    "classifier": check_classifier,
    "segmenter": check_segmenter,
    "evaluator": check_evaluator,
}
GENERATOR_FLAGS = ("conditional", "emits_masks")
MASK_INPUT = "mask_conditioned"  # excludes emits_masks: a case of its own


def _cases() -> list[Any]:
    cases = []
    for info in list_plugins():
        if info.package != "synthmri":
            continue
        cases.append(pytest.param(info.kind, info.cls, None, id=f"{info.kind}-{info.name}"))
        flags = [f for f in GENERATOR_FLAGS if f in info.cls.Params.model_fields]
        if info.kind == "generator" and flags:
            params = {**info.cls.quick_params, **dict.fromkeys(flags, True)}
            label = "+".join(flags)
            cases.append(pytest.param(info.kind, info.cls, params, id=f"{info.name}-{label}"))
        if info.kind == "generator" and MASK_INPUT in info.cls.Params.model_fields:
            params = {**info.cls.quick_params, MASK_INPUT: True}
            cases.append(pytest.param(info.kind, info.cls, params, id=f"{info.name}-{MASK_INPUT}"))
            params = {**params, "conditional": True}
            if "mask_mismatch" in info.cls.Params.model_fields:  # with its mismatched pairs
                params["mask_mismatch"] = 0.25
            if "lesion_d" in info.cls.Params.model_fields:  # and its lesion discriminator
                params["lesion_d"] = 1.0
            label = f"conditional+{MASK_INPUT}"
            cases.append(pytest.param(info.kind, info.cls, params, id=f"{info.name}-{label}"))
    return cases


CASES = _cases()


def test_every_kind_has_built_in_plugins() -> None:
    kinds = {case.values[0] for case in CASES}
    assert kinds == set(CHECKS)


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Class folders of 32 px phantoms with masks beside: the synthetic set a generator that
    reads one from disk (a ``path`` param, as ``folder``) is checked with."""
    from synthmri.core.phantoms import write_phantoms

    root = tmp_path_factory.mktemp("synthetic-folder")
    write_phantoms(root, 24, 32, seed=5)
    return str(root)


@pytest.mark.parametrize(("kind", "cls", "params"), CASES)
def test_plugin_contract(
    kind: str, cls: type, params: dict[str, Any] | None, phantom_folder: str
) -> None:
    if kind == "generator" and "path" in cls.Params.model_fields:
        params = {**(cls.quick_params if params is None else params), "path": phantom_folder}
    CHECKS[kind](cls, params)
