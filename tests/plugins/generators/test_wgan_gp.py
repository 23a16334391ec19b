"""The ``wgan_gp`` generator: training curves, conditioning, masks, the gradient penalty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from synthmri.core.errors import ConfigError, DataError, PluginError, TrainingError
from synthmri.core.interfaces import ImageSet
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.nn.tensors import latent_seeded, split_image_mask, to_unit
from synthmri.nn.wgan import gradient_penalty
from synthmri.plugins.generators.wgan_gp import WGANGP
from synthmri.testing import read_log, round_trip

TINY_WGAN: dict[str, Any] = {"iterations": 4, "n_critic": 2, "batch_size": 8, "ngf": 8, "ndf": 8}


@pytest.fixture(scope="module")
def phantoms() -> ImageSet:
    return make_phantoms(16, 32, seed=0)


def _bright_dark(n: int = 32, seed: int = 0) -> ImageSet:
    """Two toy classes: dark (0.15) and bright (0.85) noisy squares."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    level = torch.where(labels == 1, 0.85, 0.15).view(-1, 1, 1, 1)
    images = (level + 0.05 * torch.randn(n, 1, 32, 32, generator=g)).clamp(0, 1)
    return ImageSet(images=images, labels=labels, class_names=["dark", "bright"])


def test_registered() -> None:
    from synthmri import get_plugin

    assert get_plugin("generator", "wgan_gp") is WGANGP


def test_wgan_fit_logs_curves_grids_and_samples(phantoms: ImageSet, tmp_path: Path) -> None:
    model = WGANGP({**TINY_WGAN, "log_every": 2})
    assert not model.conditional and not model.emits_masks
    model.fit(phantoms.of_class("normal"), RunContext(out_dir=tmp_path, seed=0))
    steps = [r for r in read_log(tmp_path) if "wasserstein" in r]
    assert [r["step"] for r in steps] == [2, 4]
    for row in steps:
        assert {"loss_d", "loss_g", "gp"} <= row.keys()
        assert all(torch.isfinite(torch.tensor(row[k])) for k in ("wasserstein", "gp"))
    assert (tmp_path / "figures" / "samples.png").is_file()

    a, b = model.sample(6, seed=11), model.sample(6, seed=11)
    assert a.images.shape == (6, 1, 32, 32) and a.images.dtype == torch.float32
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, model.sample(6, seed=12).images)
    assert a.masks is None and a.labels is None
    assert model.sample(0, seed=1).images.shape == (0, 1, 32, 32)

    restored = WGANGP({**TINY_WGAN, "log_every": 2})
    restored.load_state_dict(round_trip(model.state_dict()))
    assert torch.equal(restored.sample(6, seed=11).images, a.images)


def test_wgan_conditional_honours_labels() -> None:
    params = {
        "iterations": 25,
        "n_critic": 2,
        "batch_size": 16,
        "ngf": 8,
        "ndf": 8,
        "lr": 1e-3,
        "conditional": True,
        "diffaugment": None,
        "ema": None,
    }
    model = WGANGP(params)
    assert model.conditional
    model.fit(_bright_dark(), RunContext(seed=1))
    dark, bright = model.sample(16, label=0, seed=1), model.sample(16, label=1, seed=1)
    assert bool((dark.labels == 0).all()) and bool((bright.labels == 1).all())
    assert dark.class_names == ["dark", "bright"]
    assert float(bright.images.mean()) > float(dark.images.mean()) + 0.15
    mixed = model.sample(8, seed=2)  # no label: random classes, still labelled
    assert mixed.labels is not None and set(mixed.labels.tolist()) <= {0, 1}
    with pytest.raises(ConfigError):
        model.sample(2, label=5)


def test_wgan_masks_are_binary_and_come_from_the_same_output(phantoms: ImageSet) -> None:
    model = WGANGP({**TINY_WGAN, "emits_masks": True, "ema": None})
    assert model.emits_masks
    train = model.training_tensor(phantoms.of_class("normal"))
    assert train.shape[1] == 2 and bool((train[:, 1] == -1).all())  # normals: empty masks
    model.fit(phantoms.of_class("tumor"), RunContext(seed=0))
    out = model.sample(8, seed=5)
    assert out.masks is not None and out.masks.shape == (8, 1, 32, 32)
    assert bool(((out.masks == 0) | (out.masks == 1)).all())
    assert model.G is not None
    with torch.no_grad():
        raw = to_unit(model.G.eval()(latent_seeded(8, 128, 5, "cpu"))).clamp(0, 1)
    images, masks = split_image_mask(raw)
    assert torch.equal(out.images, images) and torch.equal(out.masks, masks)


@pytest.mark.slow
def test_wgan_learns_masks_aligned_with_images() -> None:
    """Bright half = mask: after training, mask pixels are brighter than the rest."""
    n = 32
    g = torch.Generator().manual_seed(0)
    images, masks = torch.full((n, 1, 32, 32), 0.1), torch.zeros(n, 1, 32, 32)
    for i in range(n):
        half = slice(0, 16) if i % 2 else slice(16, 32)
        images[i, :, :, half], masks[i, :, :, half] = 0.9, 1.0
    images = (images + 0.03 * torch.randn(images.shape, generator=g)).clamp(0, 1)
    data = ImageSet(
        images=images,
        labels=torch.ones(n, dtype=torch.long),
        class_names=["normal", "tumor"],
        masks=masks,
    )
    model = WGANGP(
        {
            "iterations": 80,
            "n_critic": 2,
            "batch_size": 16,
            "ngf": 8,
            "ndf": 8,
            "emits_masks": True,
            "lr": 1e-3,
            "diffaugment": None,
            "ema": None,
        }
    )
    model.fit(data, RunContext(seed=1))
    out = model.sample(32, seed=0)
    assert out.masks is not None and 0.2 < float(out.masks.mean()) < 0.8
    inside = (out.images * out.masks).sum() / out.masks.sum()
    outside = (out.images * (1 - out.masks)).sum() / (1 - out.masks).sum()
    assert float(inside) > float(outside) + 0.1


class _LinearCritic(nn.Module):
    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return (x * self.weight).flatten(1).sum(1)


def test_gradient_penalty_is_zero_for_a_unit_gradient_linear_critic() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 8, 8, generator=g)
    real, fake = torch.rand(5, 1, 8, 8, generator=g), torch.rand(5, 1, 8, 8, generator=g)
    unit = gradient_penalty(_LinearCritic(w / w.norm()), real, fake)
    assert float(unit.detach()) == pytest.approx(0.0, abs=1e-6)
    doubled = gradient_penalty(_LinearCritic(2 * w / w.norm()), real, fake)
    assert float(doubled.detach()) == pytest.approx(1.0, rel=1e-5)  # (||grad|| - 1)^2 = (2 - 1)^2
    halved = _LinearCritic(0.5 * w / w.norm())
    gp = gradient_penalty(halved, real, fake)
    assert float(gp.detach()) == pytest.approx(0.25, rel=1e-5)
    gp.backward()  # the penalty is differentiable w.r.t. the critic's weights
    assert halved.weight.grad is not None and float(halved.weight.grad.abs().sum()) > 0


def test_wgan_bad_input() -> None:
    with pytest.raises(PluginError, match="n_critic"):
        WGANGP({"n_critic": 0})
    with pytest.raises(PluginError, match="critic_norm"):
        WGANGP({"critic_norm": "batch"})
    with pytest.raises(PluginError, match="critic"):  # ADA's sign heuristic needs logits
        WGANGP({"ada_target": 0.6})
    odd = ImageSet(images=torch.rand(4, 1, 48, 48))
    with pytest.raises(DataError, match="48"):
        WGANGP(TINY_WGAN).fit(odd, RunContext())
    unlabelled = ImageSet(images=torch.rand(4, 1, 32, 32))
    with pytest.raises(DataError, match="labelled"):
        WGANGP({**TINY_WGAN, "conditional": True}).fit(unlabelled, RunContext())
    with pytest.raises(TrainingError, match="before fit"):
        WGANGP().sample(2)
