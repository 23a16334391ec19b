"""The ``pca_anomaly`` classifier: a linear healthy model under the shared anomaly decision.

The decision methods, calibration, figures and the normal-only rule are the base's and are
tested through ``vae_anomaly``; here: the contract, the robust projection (a sparse
deviation does not steer it), that the residual lies on the tumours of phantoms, the
saved state and bad params / states. Tiny (32 px): whether it finds tumours at the
recipe's size is measured in ``docs/results.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from synthmri import ImageSet, RunContext, get_plugin
from synthmri.core.errors import DataError, PluginError
from synthmri.core.phantoms import make_phantoms
from synthmri.nn.pca import robust_projection
from synthmri.plugins.classifiers.pca_anomaly import PCAAnomaly
from synthmri.testing import check_classifier, round_trip

SIZE = 32


def quick(**extra: Any) -> dict[str, Any]:
    return {**PCAAnomaly.quick_params, **extra}


@pytest.fixture(scope="module")
def data() -> tuple[ImageSet, ImageSet]:
    return make_phantoms(80, SIZE, seed=0), make_phantoms(24, SIZE, seed=1)


def fitted(data: tuple[ImageSet, ImageSet], **extra: Any) -> PCAAnomaly:
    train, val = data
    model = PCAAnomaly(quick(**extra))
    model.fit(train, val, RunContext(seed=0, device="cpu"))
    return model


def test_registered_and_conformant() -> None:
    assert get_plugin("classifier", "pca_anomaly") is PCAAnomaly
    assert PCAAnomaly.localises
    check_classifier(PCAAnomaly, quick(method="dbscan"))


def test_robust_projection_is_not_steered_by_a_sparse_deviation() -> None:
    gen = torch.Generator().manual_seed(0)
    axes = torch.linalg.qr(torch.randn(400, 5, generator=gen, dtype=torch.float64))[0].T
    mean = torch.rand(400, generator=gen, dtype=torch.float64)
    coef = 3 * torch.randn(6, 5, generator=gen, dtype=torch.float64)
    clean = coef @ axes + mean
    noisy = clean + 0.01 * torch.randn(6, 400, generator=gen, dtype=torch.float64)
    blob = noisy.clone()
    blob[:, 40:80] += 2.0  # a tenth of the pixels far off the subspace
    for iterations in (0, 3):  # a slice of the subspace: its own coefficients either way
        assert torch.allclose(robust_projection(clean, mean, axes, iterations), coef)
    plain = robust_projection(blob, mean, axes, 0)
    robust = robust_projection(blob, mean, axes, 3)
    assert float((robust - coef).abs().max()) < 0.05  # the blob stays in the residual
    assert float((plain - coef).abs().max()) > 10 * float((robust - coef).abs().max())


def test_the_residual_lies_on_the_tumours(data: tuple[ImageSet, ImageSet]) -> None:
    model = fitted(data, components=10)
    assert model.history["components"] == 10
    assert 0 < model.history["explained_variance"] < 1
    test = make_phantoms(40, SIZE, seed=2)
    sick = test.labels == 1
    error = (test.images - model.reconstruct(test.images)).abs()[sick, 0]
    masks = test.masks[sick, 0] > 0.5
    inside = error[masks].mean()
    outside = error[~masks].mean()
    assert float(inside) > 3 * float(outside)
    scores = model.anomaly_scores(test.images)
    assert scores[sick.numpy()].mean() > scores[~sick.numpy()].mean()


def test_components_are_capped_by_the_healthy_slices(data: tuple[ImageSet, ImageSet]) -> None:
    few = make_phantoms(12, SIZE, seed=3)  # 6 healthy slices: at most 5 axes
    model = PCAAnomaly(quick(components=50))
    model.fit(few, data[1], RunContext(seed=0, device="cpu"))
    assert model.history["components"] == 5
    assert model.axes is not None and model.axes.shape == (5, SIZE * SIZE)
    listed = PCAAnomaly(quick(components=[100, 2, 50]))
    listed.fit(few, data[1], RunContext(seed=0, device="cpu"))
    assert set(listed.history["components_val_auc"]) == {2, 50}  # 100 would repeat 50's fit


def test_state_round_trip(data: tuple[ImageSet, ImageSet]) -> None:
    model = fitted(data)
    state = round_trip(model.state_dict())
    restored = PCAAnomaly()
    restored.load_state_dict(state)
    images = data[1].images[:6]
    assert torch.allclose(restored.reconstruct(images), model.reconstruct(images), atol=1e-6)
    assert np.allclose(restored.anomaly_scores(images), model.anomaly_scores(images))
    with pytest.raises(DataError, match="missing pca"):
        PCAAnomaly().load_state_dict({k: v for k, v in state.items() if k != "pca"})
    broken = {**state, "pca": {**state["pca"], "axes": torch.zeros(3, 7)}}
    with pytest.raises(DataError, match="does not fit"):
        PCAAnomaly().load_state_dict(broken)


def test_bad_params(data: tuple[ImageSet, ImageSet]) -> None:
    with pytest.raises(PluginError, match="components"):
        PCAAnomaly(quick(components=0))
    with pytest.raises(PluginError, match="robust_iterations"):
        PCAAnomaly(quick(robust_iterations=-1))
    with pytest.raises(PluginError, match="not trained"):
        PCAAnomaly(quick()).predict_proba(data[1].images)


def test_a_list_of_components_keeps_the_best_on_validation(
    data: tuple[ImageSet, ImageSet],
) -> None:
    model = fitted(data, components=[1, 10])
    tried = model.history["components_val_auc"]
    assert set(tried) == {1, 10}
    kept = max(tried, key=lambda k: tried[k])
    assert model.axes is not None and model.axes.shape[0] == kept
    assert model.operating_point["val_auc"] == tried[kept]
    assert model.params.components == [1, 10]  # the choice is the fit's, not the params'
    alone = fitted(data, components=kept)
    images = data[1].images[:6]
    assert np.allclose(model.anomaly_scores(images), alone.anomaly_scores(images))
