"""``synthmri.testing.check_evaluator``: passes good evaluators, catches broken ones.

The built-in evaluators go through it in ``test_contract.py``; here the toy evaluator of a
third-party package, and evaluators broken on purpose.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import Field

from synthmri import Evaluator, StrictParams
from synthmri.core.errors import PluginError
from synthmri.core.plugins import get_plugin
from synthmri.testing import EVAL_INPUTS, check_evaluator, check_generator, eval_inputs


def test_the_toy_evaluator_passes(toy_plugins: str) -> None:
    check_evaluator(get_plugin("evaluator", "toy_count"))


def test_eval_inputs_hold_what_is_required() -> None:
    inputs = eval_inputs(("segmentation",), n=12)
    assert inputs.synthetic == {} and {p.task for p in inputs.predictions} == {"segment"}
    everything = eval_inputs(EVAL_INPUTS, n=12)
    assert set(everything.synthetic) == {"fake"}
    assert {p.task for p in everything.predictions} == {"classify", "segment"}
    for p in everything.predictions:
        assert len(p.output) == len(p.target) == len(everything.test)
    with pytest.raises(AssertionError, match="unknown evaluator inputs"):
        eval_inputs(("pictures",))


class _Good(Evaluator):
    """Counts synthetic images; subclasses break one rule each."""

    name = "good"
    description = "Counts synthetic images."
    requires = ("synthetic",)

    class Params(StrictParams):
        scale: float = Field(1.0, ge=0, description="multiplies the count")

    def evaluate(self, inputs: Any, run: Any) -> dict[str, list[dict[str, Any]]]:
        rows = [
            {"generator": g, "n": len(s) * self.params.scale} for g, s in inputs.synthetic.items()
        ]
        return {"counts": rows}


class _NaN(_Good):
    def evaluate(self, inputs: Any, run: Any) -> dict[str, list[dict[str, Any]]]:
        return {"counts": [{"value": math.nan}]}


class _Tensor(_Good):
    def evaluate(self, inputs: Any, run: Any) -> dict[str, list[dict[str, Any]]]:
        return {"counts": [{"value": torch.tensor(1.0)}]}


class _NotRows(_Good):
    def evaluate(self, inputs: Any, run: Any) -> dict[str, list[dict[str, Any]]]:
        return {"counts": {"n": 1}}  # type: ignore[dict-item]


class _CoreKey(_Good):
    def evaluate(self, inputs: Any, run: Any) -> dict[str, list[dict[str, Any]]]:
        return {"timings": []}


class _Random(_Good):
    def evaluate(self, inputs: Any, run: Any) -> dict[str, list[dict[str, Any]]]:
        return {"counts": [{"value": float(torch.rand(1))}]}


class _Greedy(_Good):
    """Declares synthetic only, but needs classification results."""

    def evaluate(self, inputs: Any, run: Any) -> dict[str, list[dict[str, Any]]]:
        return {"counts": [{"model": inputs.predictions[0].model}]}


class _UnknownInput(_Good):
    requires = ("pictures",)


class _Litter(_Good):
    """Saves a file where it was started, not in the run directory."""

    def evaluate(self, inputs: Any, run: Any) -> dict[str, list[dict[str, Any]]]:
        Path("litter.txt").write_text("x")
        return super().evaluate(inputs, run)


class _Forgiving(_Good):
    """Ignores bad params instead of raising PluginError."""

    def __init__(self, params: Any = None) -> None:
        try:
            super().__init__(params)
        except PluginError:
            super().__init__({})


class _Unchecked(_Good):
    class Params(StrictParams):
        scale: Any = Field(1.0, description="anything goes, so nothing is checked")


def test_a_good_evaluator_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check_evaluator(_Good)
    check_evaluator(_Unchecked)
    check_evaluator(_Good, {"scale": 2.0})


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (_NaN, "plain JSON"),
        (_Tensor, "plain JSON"),
        (_NotRows, "list of row dicts"),
        (_CoreKey, "core key"),
        (_Random, "same rows"),
        (_Greedy, "failed on the inputs it requires"),
        (_UnknownInput, "requires"),
        (_Litter, "working directory"),
        (_Forgiving, "PluginError"),
    ],
)
def test_a_broken_evaluator_fails(
    cls: type[Evaluator], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # _Litter litters here
    with pytest.raises(AssertionError, match=message):
        check_evaluator(cls)


def test_a_generator_naming_an_unknown_sampling_param_fails(toy_plugins: str) -> None:
    base = get_plugin("generator", "toy_mean")
    check_generator(base)  # its sampling param, noise, is one of its params
    broken = type("Broken", (base,), {"sampling_params": frozenset({"temperature"})})
    with pytest.raises(AssertionError, match="temperature"):
        check_generator(broken)
