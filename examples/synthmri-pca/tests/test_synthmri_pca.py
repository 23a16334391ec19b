"""Tests of the synthmri-pca plugins: the synthmri conformance kit plus direct checks."""

from __future__ import annotations

import io

import pytest
import torch
from synthmri import EvalInputs, PluginError, RunContext
from synthmri.testing import check_generator, phantom_set

from synthmri_pca import (
    PCACoverageEvaluator,
    PCAGMMGenerator,
    manifold_precision,
    synthmri_register_evaluators,
    synthmri_register_generators,
)


def test_generator_honours_the_contract() -> None:
    check_generator(PCAGMMGenerator)


@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
def test_generator_every_covariance_type(covariance_type: str) -> None:
    check_generator(PCAGMMGenerator, {"n_components": 4, "covariance_type": covariance_type})


def test_generator_with_masks_honours_the_contract() -> None:
    check_generator(PCAGMMGenerator, {"n_components": 4, "n_mixture": 1, "emits_masks": True})


def test_masks_follow_the_training_masks() -> None:
    train = phantom_set(24, 32).of_class("tumor")
    model = PCAGMMGenerator({"n_components": 6, "n_mixture": 1, "emits_masks": True})
    model.fit(train, RunContext())
    out = model.sample(16, seed=0)
    assert out.masks is not None and out.masks.sum() > 0, "tumour slices must get tumour masks"
    # sampled masks sit where the training tumours are, not anywhere in the image
    train_area = (train.masks.mean(0) > 0).float()
    inside = (out.masks * train_area).sum() / out.masks.sum()
    assert inside > 0.9


def test_samples_resemble_the_training_class() -> None:
    data = phantom_set(32, 32)
    model = PCAGMMGenerator({"n_components": 8, "n_mixture": 2})
    model.fit(data.of_class("normal"), RunContext())
    out = model.sample(32, seed=1)
    real_mean = data.of_class("normal").images.mean(0)
    other = torch.rand_like(real_mean)
    # the sample mean is close to the real mean, far closer than a random image
    assert (out.images.mean(0) - real_mean).abs().mean() < 0.25 * (other - real_mean).abs().mean()
    # and the samples differ from each other
    assert out.images.std(0).mean() > 1e-3
    assert not torch.equal(out.images, model.sample(32, seed=2).images)


def test_temperature_narrows_the_samples() -> None:
    train = phantom_set(32, 32).of_class("tumor")
    spread = {}
    for t in (0.2, 1.0):
        model = PCAGMMGenerator({"n_components": 8, "n_mixture": 1, "temperature": t})
        model.fit(train, RunContext())
        spread[t] = float(model.sample(64, seed=0).images.std(0).mean())
    assert spread[0.2] < spread[1.0]


def test_state_dict_is_plain_and_loads_with_weights_only() -> None:
    model = PCAGMMGenerator(PCAGMMGenerator.quick_params)
    model.fit(phantom_set(16, 32).of_class("tumor"), RunContext())
    state = model.state_dict()
    allowed = (torch.Tensor, int, float, str, bool, list)
    kinds = {k: type(v).__name__ for k, v in state.items()}
    assert all(isinstance(v, allowed) for v in state.values()), kinds
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    assert set(torch.load(buf, weights_only=True)) == set(state)


def test_too_few_images_and_bad_params_are_clear_errors() -> None:
    from synthmri import DataError

    with pytest.raises(DataError, match="at least 2"):
        PCAGMMGenerator().fit(phantom_set(8, 32).subset([0]), RunContext())
    with pytest.raises(PluginError, match="covariance_type"):
        PCAGMMGenerator({"covariance_type": "banana"})
    with pytest.raises(RuntimeError, match="fit"):
        PCAGMMGenerator().sample(2, seed=0)


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


def test_hooks_register_the_classes() -> None:
    found: list[type] = []
    synthmri_register_generators(found.append)
    synthmri_register_evaluators(found.append)
    assert found == [PCAGMMGenerator, PCACoverageEvaluator]
