"""Tests of the synthmri-pca plugin: the synthmri conformance kit plus direct checks."""

from __future__ import annotations

import pytest
import torch
from synthmri import EvalInputs, PluginError, RunContext
from synthmri.testing import check_evaluator, phantom_set

import synthmri_pca
from synthmri_pca import PCACoverageEvaluator, manifold_precision, synthmri_register_evaluators


def test_manifold_precision() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(200, 3, generator=g, dtype=torch.float64)
    near = torch.randn(100, 3, generator=g, dtype=torch.float64)
    assert manifold_precision(ref, near, 5) > 0.8
    assert manifold_precision(ref, near + 50.0, 5) == 0.0


def _inputs(synthetic: dict) -> EvalInputs:
    data = phantom_set(48, 32, seed=0)
    train, test = data.subset(range(32)), data.subset(range(32, 48))
    return EvalInputs(train=train, val=test, test=test, synthetic=synthetic)


def test_evaluator_rows_tell_copies_from_noise() -> None:
    inputs = _inputs({})
    noise = inputs.train.subset(range(32))
    noise.images = torch.rand(noise.images.shape, generator=torch.Generator().manual_seed(1))
    inputs.synthetic = {"copies": inputs.train, "noise": noise}
    rows = PCACoverageEvaluator({"n_components": 8, "k": 3}).evaluate(inputs, RunContext())
    rows = rows["pca_coverage"]
    assert {(r["generator"], r["class"]) for r in rows} == {
        (g, c) for g in ("copies", "noise") for c in ("normal", "tumor")
    }
    for r in rows:
        assert 0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0
        assert r["precision_real_floor"] is not None
        if r["generator"] == "copies":  # exact copies: on the manifold, no novelty at all
            assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["nn_ratio"] == 0.0
        else:  # uniform noise: off the manifold
            assert r["precision"] < 0.2 and r["nn_ratio"] > 1.0


def test_evaluator_honours_the_contract() -> None:
    check_evaluator(PCACoverageEvaluator, {"n_components": 4, "k": 3})


def test_bad_params_are_clear_errors() -> None:
    with pytest.raises(PluginError, match="n_components"):
        PCACoverageEvaluator({"n_components": 0})


def test_the_hook_registers_the_evaluator_only() -> None:
    found: list[type] = []
    synthmri_register_evaluators(found.append)
    assert found == [PCACoverageEvaluator]
    # pca_gmm moved into synthmri's built-ins: registering it here too would be a clash
    assert not hasattr(synthmri_pca, "synthmri_register_generators")
