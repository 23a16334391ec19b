"""The ``vae`` generator and its network: architecture, KL schedule, the VAE API, state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from synthmri.core.errors import ConfigError, DataError, PluginError
from synthmri.core.interfaces import ImageSet
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.nn.vae import VAENet, decoder_steps, encoder_strides, kl_divergence, kl_weight
from synthmri.plugins.generators.vae import VAE
from synthmri.testing import read_log, round_trip

TINY_VAE: dict[str, Any] = {"iterations": 8, "batch_size": 8, "base_channels": 8, "latent_dim": 16}


@pytest.fixture(scope="module")
def phantoms() -> ImageSet:
    return make_phantoms(16, 32, seed=0)


def test_registered() -> None:
    from synthmri import get_plugin

    assert get_plugin("generator", "vae") is VAE


def test_vae_architecture_adapts_to_the_size() -> None:
    assert encoder_strides(32) == [2, 2, 2, 2, 1, 1]
    assert encoder_strides(64) == [2, 2, 2, 2, 2, 1]
    assert encoder_strides(128) == [2] * 6 and encoder_strides(256) == [2] * 6
    assert [decoder_steps(s) for s in (32, 64, 128, 256)] == [4, 5, 6, 7]
    for size in (32, 48, 100, 256):
        net = VAENet(size, 1, latent_dim=8, base_channels=4).eval()
        logits, mu, logvar = net(torch.rand(2, 1, size, size))
        assert logits.shape == (2, 1, size, size) and mu.shape == logvar.shape == (2, 8)
    full = VAENet(64)  # the published width: FC to 2 x 2 x 1024
    assert full.fc_dec.out_features == 2 * 2 * 1024 and full.latent_dim == 512
    with pytest.raises(ConfigError, match="outside"):
        VAENet(16)


def test_kl_warmup_schedule() -> None:
    assert [kl_weight(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert kl_weight(0, 0.5, 0) == 0.5
    assert kl_weight(9, 2.0, 20) == pytest.approx(1.0)
    mu, logvar = torch.zeros(3, 4), torch.zeros(3, 4)
    assert float(kl_divergence(mu, logvar)) == 0.0  # q = prior
    assert float(kl_divergence(torch.ones(3, 4), logvar)) == pytest.approx(2.0)  # 0.5 * 4


def test_vae_fit_api_logs_andround_trip(phantoms: ImageSet, tmp_path: Path) -> None:
    model = VAE({**TINY_VAE, "log_every": 4, "kl_warmup": 8})
    model.fit(phantoms, RunContext(out_dir=tmp_path, seed=0))
    rows = [r for r in read_log(tmp_path) if "recon" in r]
    assert [r["step"] for r in rows] == [4, 8]
    assert rows[0]["kl_weight"] == pytest.approx(0.5) and rows[1]["kl_weight"] == 1.0
    assert all(r["recon"] > 0 and r["kl"] >= 0 for r in rows)
    for name in ("samples", "reconstructions"):
        assert (tmp_path / "figures" / f"{name}.png").is_file()

    images = phantoms.images[:5]
    mu, logvar = model.encode(images)
    assert mu.shape == logvar.shape == (5, 16) and mu.device.type == "cpu"
    recon = model.reconstruct(images)
    assert recon.shape == images.shape and recon.device.type == "cpu"
    assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0
    assert torch.allclose(recon, model.decode(mu), atol=1e-6)  # reconstruct decodes mu
    assert torch.equal(model.reconstruct(images), recon)  # eval mode: deterministic

    a = model.sample(4, label=1, seed=3)
    assert a.images.shape == (4, 1, 32, 32) and bool((a.labels == 1).all())
    assert torch.equal(a.images, model.sample(4, seed=3).images)
    assert not torch.equal(a.images, model.sample(4, seed=4).images)

    restored = VAE(TINY_VAE)
    restored.load_state_dict(round_trip(model.state_dict()))
    assert torch.equal(restored.sample(4, seed=3).images, a.images)
    assert torch.allclose(restored.reconstruct(images), recon, atol=1e-6)


@pytest.mark.parametrize("loss", ["l1", "mse"])
def test_vae_other_losses_and_augment_train(phantoms: ImageSet, loss: str) -> None:
    model = VAE({**TINY_VAE, "iterations": 2, "recon_loss": loss, "augment": True})
    model.fit(phantoms, RunContext(seed=0))
    assert len(model.history["recon"]) == 1 and model.history["recon"][0] > 0


def test_vae_bad_input(phantoms: ImageSet) -> None:
    with pytest.raises(PluginError, match="recon_loss"):
        VAE({"recon_loss": "huber"})
    with pytest.raises(ConfigError, match="not trained"):
        VAE().sample(2)
    with pytest.raises(ConfigError, match="outside"):
        VAE(TINY_VAE).fit(ImageSet(images=torch.rand(2, 1, 16, 16)), RunContext())
    model = VAE({**TINY_VAE, "iterations": 1})
    model.fit(phantoms, RunContext(seed=0))
    with pytest.raises(DataError, match="expected images"):
        model.reconstruct(torch.rand(2, 1, 64, 64))
    with pytest.raises(DataError, match="latents"):
        model.decode(torch.rand(2, 3))
