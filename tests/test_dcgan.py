"""DCGAN generator plugin and the shared GAN helpers (32 px phantoms, a few steps, seeded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from synthmri import ImageSet, PluginError, RunContext, TrainingError
from synthmri.core.errors import DataError
from synthmri.core.phantoms import make_phantoms
from synthmri.plugins.generators._common import (
    EMA,
    GANParams,
    batch_diversity,
    diff_augment,
    from_unit,
    latent_seeded,
    resolve_policy,
    split_image_mask,
    to_unit,
)
from synthmri.plugins.generators.dcgan import DCGAN, build_networks

# Small networks keep the whole file fast on a shared 2-core CPU.
TINY = {"iterations": 20, "batch_size": 16, "ngf": 16, "ndf": 16, "log_every": 10}


@pytest.fixture(scope="module")
def phantoms() -> ImageSet:
    return make_phantoms(48, 32, seed=0)


@pytest.fixture(scope="module")
def trained(phantoms: ImageSet) -> DCGAN:
    model = DCGAN(TINY)
    model.fit(phantoms.of_class("tumor"), RunContext(seed=0, device="cpu"))
    return model


# ------------------------------------------------------------------ the plugin


def test_fit_and_sample_shape_range_dtype(trained: DCGAN) -> None:
    out = trained.sample(7, seed=1)
    assert tuple(out.images.shape) == (7, 1, 32, 32)
    assert out.images.dtype == torch.float32
    assert float(out.images.min()) >= 0.0 and float(out.images.max()) <= 1.0
    assert out.masks is None and out.labels is None
    assert len(out.sources) == 7
    # the generator is not constant: samples differ from each other
    assert float(batch_diversity(out.images)) > 0.0
    assert len(trained.sample(0, seed=1)) == 0


def test_sample_is_deterministic_for_a_seed(trained: DCGAN) -> None:
    a = trained.sample(6, seed=3)
    b = trained.sample(6, seed=3)
    c = trained.sample(6, seed=4)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_unconditional_sample_passes_label_through(trained: DCGAN) -> None:
    out = trained.sample(4, label=1, seed=0)
    assert out.labels is not None and out.labels.tolist() == [1, 1, 1, 1]
    assert out.class_names == ["normal", "tumor"]


def test_fit_logs_and_saves_grid(tmp_path: Path, phantoms: ImageSet) -> None:
    run = RunContext(out_dir=tmp_path, seed=0, device="cpu", stage="generate/dcgan")
    model = DCGAN({**TINY, "iterations": 10, "log_every": 5, "sample_every": 5})
    model.fit(phantoms.of_class("normal"), run)
    lines = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [d for d in lines if "step" in d]
    assert [d["step"] for d in steps] == [5, 10]
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "diversity"):
        assert all(isinstance(d[key], float) for d in steps), key
    assert 0.0 <= steps[-1]["d_real"] <= 1.0 and 0.0 <= steps[-1]["d_fake"] <= 1.0
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert any(name.endswith("dcgan-samples.png") for name in figures), figures
    assert any(name.endswith("dcgan-samples-000005.png") for name in figures), figures


def test_conditional_sampling_honours_labels() -> None:
    base = make_phantoms(64, 32, seed=1).images
    dark = base[:32] * 0.25  # class 0: dark slices
    bright = 0.5 + base[32:] * 0.5  # class 1: bright slices
    data = ImageSet(
        images=torch.cat([dark, bright]),
        labels=torch.tensor([0] * 32 + [1] * 32),
        class_names=["dark", "bright"],
    )
    model = DCGAN(
        {
            "iterations": 150,
            "batch_size": 16,
            "ngf": 16,
            "ndf": 8,
            "conditional": True,
            "diffaugment": None,
            "lr": 2e-3,
            "log_every": 50,
        }
    )
    assert model.conditional and not DCGAN.conditional
    model.fit(data, RunContext(seed=0, device="cpu"))
    s0 = model.sample(16, label=0, seed=5)
    s1 = model.sample(16, label=1, seed=5)
    assert s0.labels is not None and s0.labels.tolist() == [0] * 16
    assert s1.labels is not None and s1.labels.tolist() == [1] * 16
    assert s1.class_names == ["dark", "bright"]
    m0, m1 = float(s0.images.mean()), float(s1.images.mean())
    assert m1 > m0 + 0.15, (m0, m1)
    with pytest.raises(Exception, match="out of range"):
        model.sample(2, label=5)
    mixed = model.sample(10, seed=0)  # no label: random classes, labelled
    assert mixed.labels is not None and set(mixed.labels.tolist()) <= {0, 1}


def test_emits_masks_returns_aligned_binary_masks(phantoms: ImageSet) -> None:
    model = DCGAN({**TINY, "emits_masks": True})
    assert model.emits_masks and not DCGAN.emits_masks
    model.fit(phantoms, RunContext(seed=0, device="cpu"))
    out = model.sample(9, seed=2)
    assert out.masks is not None
    assert tuple(out.masks.shape) == (9, 1, 32, 32) == tuple(out.images.shape)
    assert bool(((out.masks == 0) | (out.masks == 1)).all())
    assert model.config["channels"] == 2
    # a set without masks trains too (zeros stand in for the masks)
    no_masks = ImageSet(images=phantoms.images[:16])
    DCGAN({**TINY, "iterations": 2, "emits_masks": True}).fit(no_masks, RunContext(seed=0))


def test_state_dict_round_trip_through_checkpoint(tmp_path: Path, trained: DCGAN) -> None:
    path = tmp_path / "dcgan.pt"
    torch.save(trained.state_dict(), path)
    state = torch.load(path, weights_only=True)
    restored = DCGAN(TINY)
    restored.load_state_dict(state)
    assert torch.equal(restored.sample(5, seed=9).images, trained.sample(5, seed=9).images)
    assert state["config"]["size"] == 32 and state["G_ema"] is not None


def test_conditional_state_keeps_class_names(tmp_path: Path, phantoms: ImageSet) -> None:
    params = {**TINY, "iterations": 2, "conditional": True}
    model = DCGAN(params)
    model.fit(phantoms, RunContext(seed=0))
    torch.save(model.state_dict(), tmp_path / "c.pt")
    restored = DCGAN(params)
    restored.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    assert restored.class_names == ["normal", "tumor"] and restored.conditional
    assert torch.equal(
        restored.sample(3, label=0, seed=1).images, model.sample(3, label=0, seed=1).images
    )


def test_nan_guard_raises_training_error(phantoms: ImageSet) -> None:
    model = DCGAN({**TINY, "iterations": 10, "log_every": 5, "lr": 1e30})
    with pytest.raises(TrainingError, match="diverged"):
        model.fit(phantoms, RunContext(seed=0))


def test_bad_input_gives_clear_errors(phantoms: ImageSet) -> None:
    with pytest.raises(PluginError, match="diffaugment"):
        DCGAN({"diffaugment": "color,zoom"})
    with pytest.raises(PluginError, match="architecture"):
        DCGAN({"architecture": "resnet"})
    with pytest.raises(DataError, match="px"):
        DCGAN(TINY).fit(ImageSet(images=torch.rand(4, 1, 48, 48)), RunContext(seed=0))
    with pytest.raises(DataError, match="labelled"):
        DCGAN({**TINY, "conditional": True}).fit(
            ImageSet(images=torch.rand(4, 1, 32, 32)), RunContext(seed=0)
        )
    with pytest.raises(TrainingError, match="before fit"):
        DCGAN().sample(2)


def test_reference_keras_parameter_counts_at_128px() -> None:
    config = {
        "size": 128,
        "channels": 1,
        "latent_dim": 100,
        "ngf": 64,
        "ndf": 64,
        "architecture": "reference-keras",
        "n_classes": 0,
    }
    g, d = build_networks(config)
    n_g = sum(p.numel() for p in g.parameters())
    n_d = sum(p.numel() for p in d.parameters())
    assert abs(n_g - 27.3e6) < 0.1e6, n_g
    assert abs(n_d - 0.58e6) < 0.1e6, n_d
    z = torch.randn(2, 100)
    assert tuple(g(z).shape) == (2, 1, 128, 128)
    assert tuple(d(g(z)).shape) == (2,)


@pytest.mark.parametrize(
    ("size", "architecture"),
    [(32, "dcgan"), (64, "dcgan"), (128, "dcgan"), (256, "dcgan"), (64, "reference-keras")],
)
def test_networks_cover_every_size(size: int, architecture: str) -> None:
    config = {
        "size": size,
        "channels": 2,
        "latent_dim": 8,
        "ngf": 4,
        "ndf": 4,
        "architecture": architecture,
        "n_classes": 2,
    }
    g, d = build_networks(config)
    y = torch.tensor([0, 1])
    x = g(torch.randn(2, 8), y)
    assert tuple(x.shape) == (2, 2, size, size)
    assert tuple(d(x, y).shape) == (2,)


def test_reference_keras_trains(phantoms: ImageSet) -> None:
    model = DCGAN({**TINY, "iterations": 2, "batch_size": 8, "architecture": "reference-keras"})
    model.fit(phantoms.of_class("tumor"), RunContext(seed=0))
    assert tuple(model.sample(2, seed=0).images.shape) == (2, 1, 32, 32)


def test_conformance_kit() -> None:
    from synthmri.testing import check_generator

    check_generator(DCGAN)
    check_generator(DCGAN, {**DCGAN.quick_params, "conditional": True, "emits_masks": True})


def test_registered_as_builtin() -> None:
    from synthmri import get_plugin

    assert get_plugin("generator", "dcgan") is DCGAN


# ------------------------------------------------------------------ shared helpers


def test_diff_augment_keeps_shape_and_mask_values() -> None:
    torch.manual_seed(0)
    image = torch.rand(8, 1, 32, 32) * 2 - 1
    mask = torch.where(torch.rand(8, 1, 32, 32) > 0.7, 1.0, -1.0)
    x = torch.cat([image, mask], dim=1)
    colour = diff_augment(x, "color", image_channels=1)
    assert colour.shape == x.shape
    assert torch.equal(colour[:, 1], x[:, 1])  # colour never touches the mask channel
    assert not torch.equal(colour[:, 0], x[:, 0])
    full = diff_augment(x, "color,translation,cutout", image_channels=1)
    assert full.shape == x.shape
    assert set(full[:, 1].unique().tolist()) <= {-1.0, 1.0}  # moved and cut, still binary
    assert torch.equal(diff_augment(x, ""), x)
    # differentiable
    leaf = x.clone().requires_grad_(True)
    diff_augment(leaf, "color,translation,cutout").sum().backward()
    assert leaf.grad is not None and float(leaf.grad.abs().sum()) > 0


def test_diff_augment_translation_and_cutout_fill_background() -> None:
    torch.manual_seed(1)
    x = torch.ones(16, 1, 32, 32)
    cut = diff_augment(x, "cutout")
    removed = (cut == -1).float().sum(dim=(1, 2, 3))
    assert bool((removed > 0).all()) and bool((removed <= 16 * 16).all())
    moved = diff_augment(x, "translation")
    assert set(moved.unique().tolist()) <= {-1.0, 1.0}


def test_resolve_policy() -> None:
    assert resolve_policy("auto", 300) == "color,translation,cutout"
    assert resolve_policy("auto", 5000) == ""
    assert resolve_policy(None, 10) == "" and resolve_policy("", 10) == ""
    assert resolve_policy("translation", 5000) == "translation"
    assert GANParams(diffaugment="off").diffaugment == ""
    with pytest.raises(ValueError, match="zoom"):
        GANParams(diffaugment="zoom")


def test_split_image_mask_removes_specks() -> None:
    x = torch.zeros(3, 2, 16, 16)
    x[:, 0] = 0.5
    x[0, 1, 2:6, 2:6] = 0.9  # a 16-pixel blob: kept
    x[0, 1, 12, 12] = 0.9  # a 1-pixel speck: removed
    x[1, 1, 0, 0] = x[1, 1, 1, 1] = 0.8  # a diagonal 2-pixel speck: removed
    x[2, 1, 8:10, 8:10] = 0.4  # under the threshold
    images, masks = split_image_mask(x, min_pixels=4)
    assert tuple(images.shape) == (3, 1, 16, 16) and tuple(masks.shape) == (3, 1, 16, 16)
    assert torch.equal(images, x[:, :1])
    assert masks.sum(dim=(1, 2, 3)).tolist() == [16.0, 0.0, 0.0]
    assert bool(masks[0, 0, 2:6, 2:6].all())
    _, kept = split_image_mask(x, min_pixels=1)
    assert kept.sum(dim=(1, 2, 3)).tolist() == [17.0, 2.0, 0.0]


def test_split_image_mask_torch_fallback_agrees() -> None:
    from synthmri.plugins.generators._common import _remove_specks, _remove_specks_torch

    torch.manual_seed(0)
    binary = torch.rand(6, 24, 24) > 0.6
    assert torch.equal(_remove_specks(binary, 5), _remove_specks_torch(binary, 5))


def test_ema_tracks_weights_and_buffers() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(net, decay=0.5)
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.train()(torch.randn(8, 4))  # moves BN running stats
    ema.update(net)
    moved = ema.module[0].weight - before
    assert bool((moved > 0).all()) and bool((moved < 1.0).all())
    assert torch.equal(ema.module[1].running_mean, net[1].running_mean)
    for _ in range(200):
        ema.update(net)
    assert torch.allclose(ema.module[0].weight, net[0].weight, atol=1e-5)


def test_value_ranges_and_latents_and_diversity() -> None:
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(to_unit(from_unit(x)), x)
    assert float(from_unit(torch.zeros(1))) == -1.0 and float(to_unit(torch.ones(1))) == 1.0
    assert torch.equal(latent_seeded(3, 5, 7, "cpu"), latent_seeded(3, 5, 7, "cpu"))
    assert not torch.equal(latent_seeded(3, 5, 7, "cpu"), latent_seeded(3, 5, 8, "cpu"))
    same = torch.ones(4, 1, 8, 8)
    assert float(batch_diversity(same)) == 0.0
    two = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
    assert float(batch_diversity(two)) == pytest.approx(1.0)
