"""The ``diffusion_anomaly`` classifier: the AnoDDPM-style reconstruction (noise part of the
way, denoise back) under the shared anomaly decision.

The decision methods, calibration and figures are the base's and are tested through
``vae_anomaly`` (``test_vae_anomaly.py``); here: the contract in pixel mode (the contract
test runs latent mode), determinism under a seed, the mechanism (no noise: no error; a
slice's repair does not depend on its batch), the normal-only rule, and bad params / data.
Tiny (32 px, a few steps): whether it finds tumours is measured in ``docs/results.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from synthmri import ImageSet, RunContext, get_plugin
from synthmri.core.errors import DataError, PluginError
from synthmri.core.phantoms import make_phantoms
from synthmri.plugins.classifiers.diffusion_anomaly import DiffusionAnomaly
from synthmri.testing import check_classifier, round_trip

SIZE = 32


def quick(**extra: Any) -> dict[str, Any]:
    return {**DiffusionAnomaly.quick_params, **extra}


@pytest.fixture(scope="module")
def data() -> tuple[ImageSet, ImageSet]:
    return make_phantoms(24, SIZE, seed=0), make_phantoms(16, SIZE, seed=1)


def fitted(data: tuple[ImageSet, ImageSet], **extra: Any) -> DiffusionAnomaly:
    train, val = data
    model = DiffusionAnomaly(quick(**extra))
    model.fit(train, val, RunContext(seed=0, device="cpu"))
    return model


def test_registered_and_conformant_in_pixel_mode() -> None:
    assert get_plugin("classifier", "diffusion_anomaly") is DiffusionAnomaly
    assert DiffusionAnomaly.localises
    check_classifier(DiffusionAnomaly, quick(latent=False, method="global_kmeans"))


def test_scores_are_deterministic_under_a_seed(data: tuple[ImageSet, ImageSet]) -> None:
    a, b = fitted(data), fitted(data)
    images = data[1].images
    scores = a.anomaly_scores(images)
    assert np.array_equal(scores, b.anomaly_scores(images))
    assert np.array_equal(scores, a.anomaly_scores(images)), "scoring twice gives the same"
    assert a.score_threshold == b.score_threshold


def test_repair_of_a_slice_does_not_depend_on_its_batch(data: tuple[ImageSet, ImageSet]) -> None:
    model = fitted(data, latent=False)
    images = data[1].images[:6]
    whole = model.reconstruct(images)
    assert whole.shape == images.shape and 0 <= float(whole.min()) <= float(whole.max()) <= 1
    assert torch.allclose(model.reconstruct(images[3:5]), whole[3:5], atol=1e-5)
    assert not torch.allclose(whole, images, atol=1e-3), "noised and denoised: not the input"


def test_no_noise_means_no_error_in_pixel_mode(data: tuple[ImageSet, ImageSet]) -> None:
    model = fitted(data, latent=False, noise_level=0.0, error_measure="absolute", normalise="none")
    images = data[1].images
    assert torch.equal(model.reconstruct(images), images)
    errors, _ = model.error_maps(images)
    assert float(errors.abs().max()) == 0.0


def test_latent_mode_keeps_the_autoencoder_in_the_state(data: tuple[ImageSet, ImageSet]) -> None:
    model = fitted(data)
    state = round_trip(model.state_dict())
    config = state["diffusion"]["config"]
    # 32 px through three autoencoder levels: 8 px latents
    assert config["latent"] and config["in_channels"] == 4 and state["diffusion"]["ae"] is not None
    restored = DiffusionAnomaly()
    restored.load_state_dict(state)
    images = data[1].images[:4]
    assert torch.allclose(restored.reconstruct(images), model.reconstruct(images), atol=1e-5)
    with pytest.raises(DataError, match="missing diffusion"):
        DiffusionAnomaly().load_state_dict({k: v for k, v in state.items() if k != "diffusion"})


def test_trains_on_normal_slices_only(data: tuple[ImageSet, ImageSet]) -> None:
    train, val = data
    seen: list[torch.Tensor] = []
    model = DiffusionAnomaly(quick(latent=False))
    original = model._train

    def spy(healthy: ImageSet, run: RunContext) -> None:
        seen.append(healthy.images)
        original(healthy, run)

    model._train = spy  # type: ignore[method-assign]
    model.fit(train, val, RunContext(seed=0, device="cpu"))
    normal = train.labels == train.class_names.index("normal")
    assert torch.equal(seen[0], train.images[normal])


def test_bad_params_and_data(data: tuple[ImageSet, ImageSet]) -> None:
    with pytest.raises(PluginError, match="norm_groups"):
        DiffusionAnomaly(quick(channels=[8, 10]))
    with pytest.raises(PluginError, match="noise_level"):
        DiffusionAnomaly(quick(noise_level=1.5))
    with pytest.raises(PluginError, match="not trained"):
        DiffusionAnomaly(quick()).predict_proba(data[1].images)
    odd = make_phantoms(12, 36, seed=0)
    with pytest.raises(DataError, match="does not fit"):
        DiffusionAnomaly(quick()).fit(odd, None, RunContext(seed=0, device="cpu"))
