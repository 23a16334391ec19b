"""The DCGAN generator plugin and its networks (32 px phantoms, a few steps, seeded)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from synthmri import ImageSet, PluginError, RunContext, TrainingError
from synthmri.core.errors import DataError
from synthmri.core.phantoms import make_phantoms
from synthmri.nn.dcgan import (
    DCGANGenerator,
    PoseHead,
    build_networks,
    invert_affine,
    lesion_windows,
    warp_affine,
)
from synthmri.nn.gan_training import MinibatchStd, PixelNorm
from synthmri.nn.tensors import batch_diversity
from synthmri.plugins.generators.dcgan import DCGAN

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


def test_mask_conditioned_draws_training_masks_and_uses_them(phantoms: ImageSet) -> None:
    model = DCGAN({**TINY, "iterations": 4, "mask_conditioned": True, "conditional": True})
    assert model.emits_masks
    model.fit(phantoms, RunContext(seed=0, device="cpu"))
    assert model.config["channels"] == 2 and model.config["mask_input"]
    tumour = model.sample(12, label=1, seed=2)
    normal = model.sample(12, label=0, seed=2)
    assert tumour.masks is not None and normal.masks is not None
    assert float(normal.masks.sum()) == 0  # the normal class's masks are empty
    # every tumour mask is a tumour-class training mask, as it is or mirrored left-right
    bank = phantoms.masks[phantoms.labels == 1]  # type: ignore[index]
    bank = torch.cat([bank, bank.flip(-1)]).flatten(1)
    for m in tumour.masks.flatten(1):
        assert bool((bank == m).all(dim=1).any())
    assert float(tumour.masks.sum()) > 0
    # the same seed trains the same model (the masks of the BN recalibration included)
    again = DCGAN({**TINY, "iterations": 4, "mask_conditioned": True, "conditional": True})
    again.fit(phantoms, RunContext(seed=0, device="cpu"))
    assert torch.equal(again.sample(12, label=1, seed=2).images, tumour.images)
    # its generator sees the mask: the same latents with another mask give other images
    G, D = build_networks(model.config)
    G.load_state_dict(model.state_dict()["G"])
    z, y = torch.randn(4, model.config["latent_dim"]), torch.ones(4, dtype=torch.long)
    masks = tumour.masks[:4] * 2 - 1
    with torch.no_grad():
        a, b = G.eval()(z, y, masks), G(z, y, masks.flip(-2))
    assert tuple(a.shape) == (4, 1, 32, 32) and not torch.allclose(a, b)
    assert D(torch.cat([a, masks], 1)).shape == (4,)


def test_mask_conditioned_checks(phantoms: ImageSet) -> None:
    with pytest.raises(DataError, match="mask_conditioned needs tumour masks"):
        DCGAN({**TINY, "mask_conditioned": True}).fit(
            ImageSet(images=phantoms.images[:16]), RunContext(seed=0)
        )
    for bad in ({"emits_masks": True}, {"architecture": "reference-keras"}):
        with pytest.raises(Exception, match="mask_conditioned takes the masks as input"):
            DCGAN({**TINY, "mask_conditioned": True, **bad})
    with pytest.raises(Exception, match="mask_mismatch applies with mask_conditioned"):
        DCGAN({**TINY, "mask_mismatch": 0.25})


def test_lesion_windows_follow_each_mask_and_stay_inside() -> None:
    x = -torch.ones(3, 2, 32, 32)
    x[:, 0] = torch.arange(32.0).view(1, 32, 1) * 100 + torch.arange(32.0)  # row*100 + col
    x[0, 1, 10:13, 20:23] = 1  # lesion centred at (11, 21)
    x[1, 1, 0:2, 30:32] = 1  # at the corner: the window is kept inside the image
    # sample 2: no lesion, the window is the image's centre and its weight 0
    windows, weight = lesion_windows(x, 8)
    assert tuple(windows.shape) == (3, 2, 8, 8) and weight.tolist() == [1.0, 1.0, 0.0]
    assert float(windows[0, 0, 0, 0]) == 8 * 100 + 18  # rows 8-15, columns 18-25
    assert float(windows[1, 0, 0, 0]) == 0 * 100 + 24  # rows 0-7, columns 24-31
    assert float(windows[2, 0, 0, 0]) == 12 * 100 + 12  # the centre, (15.5, 15.5)
    assert float(windows[0, 1].sum()) == 9 - (64 - 9)  # the mask travels with the slice
    # gradients reach the slice through the windows
    leaf = x.clone().requires_grad_(True)
    lesion_windows(leaf, 8)[0][:, 0].sum().backward()
    assert float(leaf.grad[:, 0].sum()) == 3 * 64  # type: ignore[index]


@pytest.mark.parametrize("masks", ["mask_conditioned", "emits_masks"])
def test_lesion_d_judges_the_lesion_windows(tmp_path: Path, phantoms: ImageSet, masks: str) -> None:
    base = {**TINY, "iterations": 4, "batch_size": 8, "log_every": 2, masks: True}
    model = DCGAN({**base, "lesion_d": 1.0})
    model.fit(phantoms.of_class("tumor"), RunContext(out_dir=tmp_path, seed=0, device="cpu"))
    assert model.config["lesion_window"] == 8  # a quarter of 32 px
    steps = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(d["loss_lesion_d"] > 0 for d in steps if "step" in d)
    lesion = model.D.lesion  # type: ignore[union-attr]
    assert sum(q.numel() for q in lesion.parameters()) > 0
    # its weights train: they differ from a fresh network's
    _, fresh = build_networks(model.config)
    assert not torch.equal(lesion.head.weight, fresh.lesion.head.weight)  # type: ignore[union-attr]
    # the main discriminator starts from the weights it has without the option
    plain_config = {k: v for k, v in model.config.items() if k != "lesion_window"}
    nets = []
    for config in (plain_config, model.config):
        torch.manual_seed(3)
        nets.append(build_networks(config))
    plain, main = nets[0][1].state_dict(), nets[1][1].state_dict()
    assert plain.keys() == {k for k in main if not k.startswith("lesion.")}
    assert all(torch.equal(v, main[k]) for k, v in plain.items())
    restored = DCGAN({**base, "lesion_d": 1.0})
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.sample(3, seed=2).images, model.sample(3, seed=2).images)
    if masks == "mask_conditioned":
        # the normal class's masks are empty: the lesion term weighs nothing, and G learns
        # as without the option (an emits_masks G draws its own masks, so not there)
        normal = phantoms.of_class("normal")
        with_d, without = DCGAN({**base, "lesion_d": 1.0}), DCGAN(base)
        for m in (with_d, without):
            m.fit(normal, RunContext(seed=0, device="cpu"))
        assert torch.equal(with_d.sample(4, seed=1).images, without.sample(4, seed=1).images)


def test_lesion_d_checks(phantoms: ImageSet) -> None:
    with pytest.raises(PluginError, match="lesion_d needs a mask channel"):
        DCGAN({**TINY, "lesion_d": 1.0})
    with pytest.raises(PluginError, match="lesion_d needs a mask channel"):
        DCGAN({**TINY, "lesion_d": 1.0, "emits_masks": True, "architecture": "reference-keras"})
    run = RunContext(seed=0)
    run.world_size = 2  # as under torchrun
    with pytest.raises(PluginError, match="one process"):
        DCGAN({**TINY, "lesion_d": 1.0, "mask_conditioned": True}).fit(phantoms, run)


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


# ------------------------------------------------------------------ collapse remedies


def test_discriminator_norms_and_minibatch_std() -> None:
    config = {"size": 32, "channels": 1, "latent_dim": 8, "ngf": 4, "ndf": 4, "n_classes": 2}
    _, plain = build_networks(config)
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    _, sn = build_networks({**config, "d_norm": "spectral", "minibatch_std": True})
    assert not any(isinstance(m, nn.BatchNorm2d) for m in sn.modules())
    convs = [m for m in sn.modules() if isinstance(m, (nn.Conv2d, nn.Embedding))]
    assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs)
    assert any(isinstance(m, MinibatchStd) for m in sn.modules())
    x, y = torch.randn(8, 1, 32, 32), torch.tensor([0, 1] * 4)
    assert tuple(sn(x, y).shape) == (8,)
    _, none = build_networks({**config, "d_norm": "none"})
    assert not any(isinstance(m, nn.BatchNorm2d) for m in none.modules())
    for g_norm, layer in (("pixel", PixelNorm), ("none", nn.ReLU)):
        g, _ = build_networks({**config, "g_norm": g_norm})
        assert not any(isinstance(m, nn.BatchNorm2d) for m in g.modules())
        assert any(isinstance(m, layer) for m in g.modules())
        assert tuple(g(torch.randn(2, 8), torch.tensor([0, 1])).shape) == (2, 1, 32, 32)
    # the default discriminator keeps the paper's layout (and its checkpoint keys)
    assert set(plain.state_dict()) == set(build_networks(config)[1].state_dict())
    assert "head.weight" in plain.state_dict()


@pytest.mark.parametrize(
    "remedy",
    [
        {"loss": "hinge", "d_norm": "spectral", "minibatch_std": True},
        {"r1_gamma": 1.0, "d_norm": "none"},
        {"ada_target": 0.6, "ada_speed": 64},
        {"mode_seeking": 0.3, "g_norm": "pixel", "lr_d": 1e-3, "beta2": 0.9},
        {"mode_seeking": 0.6, "pose": 30, "diffaugment": "translation,cutout"},
    ],
)
def test_remedies_train_log_and_round_trip(
    tmp_path: Path, phantoms: ImageSet, remedy: dict[str, object]
) -> None:
    params = {**TINY, "iterations": 8, "batch_size": 8, "log_every": 4, **remedy}
    model = DCGAN(params)
    model.fit(phantoms.of_class("tumor"), RunContext(out_dir=tmp_path, seed=0, device="cpu"))
    lines = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [d for d in lines if "step" in d]
    assert [d["step"] for d in steps] == [4, 8]
    if "r1_gamma" in remedy:
        assert all(d["r1"] >= 0.0 for d in steps)
    if "mode_seeking" in remedy:
        assert all(d["mode_seeking"] > 0.0 for d in steps)
    if "ada_target" in remedy:
        assert all(0.0 <= d["aug_p"] <= 1.0 for d in steps)
        assert steps[-1]["aug_p"] > 0.0  # a tiny set: D is sure of the reals, p rises
    restored = DCGAN(params)
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.sample(3, seed=2).images, model.sample(3, seed=2).images)


def test_remedy_params_are_checked() -> None:
    with pytest.raises(PluginError, match="label_smoothing"):
        DCGAN({"loss": "hinge", "label_smoothing": 0.1})
    with pytest.raises(PluginError, match="architecture: dcgan"):
        DCGAN({"architecture": "reference-keras", "d_norm": "spectral"})
    with pytest.raises(PluginError, match="DiffAugment"):
        DCGAN({"ada_target": 0.6, "diffaugment": None})
    with pytest.raises(PluginError, match="ada_target"):
        DCGAN({"ada_target": 1.5})
    with pytest.raises(PluginError, match="d_norm"):
        DCGAN({"d_norm": "layer"})
    with pytest.raises(PluginError, match="mode_seeking"):
        DCGAN({"mode_seeking": -1})
    with pytest.raises(PluginError, match="pose"):
        DCGAN({"pose": 120})
    with pytest.raises(PluginError, match="pose apply to architecture: dcgan"):
        DCGAN({"architecture": "reference-keras", "pose": 30})


def test_lr_d_sets_the_discriminator_learning_rate() -> None:
    model = DCGAN({**TINY, "iterations": 1, "batch_size": 8, "lr": 1e-4, "lr_d": 4e-4})
    G, D = build_networks(
        {"size": 32, "channels": 1, "latent_dim": 100, "ngf": 4, "ndf": 4, "n_classes": 0}
    )
    opt_g, opt_d = model.optimizers(G, D, cuda=False)
    assert opt_g.param_groups[0]["lr"] == 1e-4 and opt_d.param_groups[0]["lr"] == 4e-4
    assert opt_d.param_groups[0]["betas"] == (0.5, 0.999)


def test_registered_as_builtin() -> None:
    from synthmri import get_plugin

    assert get_plugin("generator", "dcgan") is DCGAN


# ------------------------------------------------------------------ the pose head


def test_pose_head_stays_within_its_bounds() -> None:
    head = PoseHead(8, degrees=20)
    nn.init.normal_(head.fc.weight, 0.0, 10.0)  # saturate the tanh
    theta = head(torch.randn(256, 8)).detach()
    a = theta[:, :, :2]
    turn = torch.rad2deg(torch.atan2(a[:, 1, 0], a[:, 0, 0]))
    scale = torch.linalg.det(a).rsqrt()  # affine_grid maps output to input: 1 / scale^2
    assert float(turn.abs().max()) <= 20 + 1e-4 and float(turn.abs().max()) > 15
    lo, hi = math.exp(-PoseHead.SCALE) - 1e-5, math.exp(PoseHead.SCALE) + 1e-5
    assert lo <= float(scale.min()) <= float(scale.max()) <= hi
    assert float(theta[:, :, 2].abs().max()) <= PoseHead.SHIFT + 1e-6
    assert torch.allclose(invert_affine(invert_affine(theta)), theta, atol=1e-5)


def test_pose_head_at_rest_draws_what_the_generator_draws() -> None:
    torch.manual_seed(0)
    plain = DCGANGenerator(32, 1, 16, 8, mask_input=True)
    posed = DCGANGenerator(32, 1, 16, 8, mask_input=True, pose=30)
    posed.load_state_dict({**posed.state_dict(), **plain.state_dict()})
    assert posed.pose is not None
    nn.init.zeros_(posed.pose.fc.weight)  # the identity pose
    z, mask = torch.randn(3, 16), torch.full((3, 1, 32, 32), -1.0)
    mask[:, :, 10:16, 18:24] = 1.0
    with torch.no_grad():
        assert torch.allclose(posed.eval()(z, None, mask), plain.eval()(z, None, mask), atol=1e-5)


def test_pose_head_moves_the_given_mask_back_to_where_it_was() -> None:
    """G is given its mask turned the other way, so what it draws around it, once turned,
    sits on the mask that comes out with the sample."""
    torch.manual_seed(0)
    G = DCGANGenerator(32, 1, 16, 8, mask_input=True, pose=45)
    assert G.pose is not None
    nn.init.normal_(G.pose.fc.weight, 0.0, 1.0)
    seen: list[torch.Tensor] = []

    def draw(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        assert mask is not None
        seen.append(mask)
        return mask  # a generator that draws exactly the mask it is given

    G._draw = draw  # type: ignore[method-assign]
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = torch.exp(-((yy - 13) ** 2 + (xx - 19) ** 2) / 18) * 2 - 1  # smooth, off-centre
    mask = blob.expand(4, 1, 32, 32).contiguous()
    with torch.no_grad():
        out = G(torch.randn(4, 16), None, mask)
    # inside the central disc every pixel comes from inside the frame (turn, scale and
    # shift bounded); outside it the slice's frame is mirrored in, not the mask
    disc = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2) < 10**2
    assert not torch.allclose(seen[0], mask, atol=0.1)  # it was moved
    assert float((out - mask).abs()[..., disc].max()) < 0.1  # and comes back (bilinear, twice)
    theta = G.pose(torch.randn(4, 16)).detach()
    back = warp_affine(warp_affine(mask, invert_affine(theta)), theta)
    assert torch.allclose(back, mask, atol=0.1)  # both with the mask's black padding
