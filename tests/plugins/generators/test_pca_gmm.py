"""The ``pca_gmm`` baseline: PCA eigenbrains plus a Gaussian mixture (moved from the example
package ``synthmri-pca`` into the built-ins; same params and numbers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from synthmri import get_plugin
from synthmri.core.errors import ConfigError, DataError, PluginError
from synthmri.core.training import RunContext
from synthmri.plugins.generators.pca_gmm import PCAGMMGenerator
from synthmri.testing import check_generator, phantom_set, read_log, round_trip


def test_registered_as_a_built_in() -> None:
    assert get_plugin("generator", "pca_gmm") is PCAGMMGenerator
    assert not PCAGMMGenerator.conditional


@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
def test_every_covariance_type_honours_the_contract(covariance_type: str) -> None:
    check_generator(PCAGMMGenerator, {"n_components": 4, "covariance_type": covariance_type})


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


def test_state_is_plain_and_the_run_gets_a_curve_and_a_figure(tmp_path: Path) -> None:
    model = PCAGMMGenerator({"n_components": 6, "n_mixture": 2})
    model.fit(phantom_set(16, 32).of_class("tumor"), RunContext(tmp_path, seed=0))
    state = round_trip(model.state_dict())
    allowed = (torch.Tensor, int, float, str, bool, list)
    assert all(isinstance(v, allowed) for v in state.values())
    restored = PCAGMMGenerator({"n_components": 6, "n_mixture": 2})
    restored.load_state_dict(state)
    assert torch.equal(restored.sample(4, seed=9).images, model.sample(4, seed=9).images)
    curve = [r["explained_variance"] for r in read_log(tmp_path) if "explained_variance" in r]
    assert len(curve) == 6 and curve == sorted(curve) and curve[-1] <= 1.0 + 1e-9
    assert (tmp_path / "figures" / "eigenbrains.png").is_file()


def test_small_sets_lower_the_sizes_with_a_note() -> None:
    run = RunContext()
    model = PCAGMMGenerator({"n_components": 32, "n_mixture": 8})
    model.fit(phantom_set(12, 32).of_class("normal"), run)
    assert any("n_components lowered" in n for n in run.notes)
    assert model.sample(3, seed=0).images.shape == (3, 1, 32, 32)


def test_too_few_images_and_bad_params_are_clear_errors() -> None:
    with pytest.raises(DataError, match="at least 2"):
        PCAGMMGenerator().fit(phantom_set(8, 32).subset([0]), RunContext())
    with pytest.raises(PluginError, match="covariance_type"):
        PCAGMMGenerator({"covariance_type": "banana"})
    with pytest.raises(ConfigError, match="not fitted"):
        PCAGMMGenerator().sample(2, seed=0)
