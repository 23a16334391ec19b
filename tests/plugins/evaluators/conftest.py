"""Fixtures of the image_quality and privacy tests: real parts of 32 px phantoms."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from synthmri.core.interfaces import EvalInputs, ImageSet
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.evaluators.image_quality import (
    FeatureExtractor,
    FeatureParams,
    build_extractor,
)


@pytest.fixture(scope="session")
def parts() -> dict[str, ImageSet]:
    """Real train / test phantoms, and fresh phantoms drawn with another seed."""
    real = make_phantoms(150, 32, seed=0)
    return {
        "train": real.subset(range(100)),
        "test": real.subset(range(100, 150)),
        "fresh": make_phantoms(40, 32, seed=123),
    }


@pytest.fixture(scope="session")
def random_features(parts: dict[str, ImageSet]) -> FeatureExtractor:
    """The fixed-seed random CNN extractor, fitted on the real train part."""
    ex = build_extractor(FeatureParams(features="random"), parts["train"], RunContext())
    assert ex is not None
    return ex


@pytest.fixture
def make_inputs(parts: dict[str, ImageSet]) -> Callable[[dict[str, ImageSet]], EvalInputs]:
    """``make_inputs(synthetic)``: evaluator inputs with the real parts and these sets."""

    def make(synthetic: dict[str, ImageSet]) -> EvalInputs:
        empty = parts["train"].subset([])
        return EvalInputs(train=parts["train"], val=empty, test=parts["test"], synthetic=synthetic)

    return make
