"""The One-Shot GAN generator: architecture, feature augmentation, L_DR, modes, checkpoints."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

import synthmri
from synthmri.core.errors import ConfigError, PluginError
from synthmri.core.interfaces import ImageSet
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.nn.oneshot import (
    OneShotDiscriminator,
    OneShotGenerator,
    augment_content,
    augment_layout,
    block_plan,
    diversity_loss,
)
from synthmri.nn.tensors import latent_seeded
from synthmri.plugins.generators.oneshot_gan import OneShotGAN

QUICK = dict(OneShotGAN.quick_params)


@pytest.fixture(scope="module")
def tumours() -> ImageSet:
    return make_phantoms(16, 32, seed=0).of_class("tumor")


@pytest.fixture(scope="module")
def trained(tumours: ImageSet) -> OneShotGAN:
    model = OneShotGAN(QUICK)
    model.fit(tumours, RunContext(seed=0))
    return model


def test_registered_under_its_name() -> None:
    assert synthmri.get_plugin("generator", "oneshot_gan") is OneShotGAN


def test_block_plan_follows_the_paper() -> None:
    assert block_plan(64) == {"base": 4, "n_up": 4, "n_low": 2, "n_branch": 4}
    assert block_plan(128) == {"base": 4, "n_up": 5, "n_low": 3, "n_branch": 4}
    assert block_plan(32) == {"base": 4, "n_up": 3, "n_low": 1, "n_branch": 3}
    assert block_plan(48)["base"] == 3
    assert len(OneShotGenerator(64, channels=4).blocks) == 5
    assert len(OneShotGenerator(128, channels=4).blocks) == 6
    d = OneShotDiscriminator(128, channels=4)
    assert (len(d.low), len(d.content), len(d.layout)) == (3, 4, 4)
    with pytest.raises(ConfigError, match="44 px"):
        block_plan(44)


def test_sample_shapes_range_and_determinism(trained: OneShotGAN) -> None:
    a = trained.sample(6, seed=5)
    assert a.images.shape == (6, 1, 32, 32) and a.images.dtype == torch.float32
    assert a.images.min() >= 0.0 and a.images.max() <= 1.0
    assert torch.equal(a.images, trained.sample(6, seed=5).images)
    assert not torch.equal(a.images, trained.sample(6, seed=6).images)
    labelled = trained.sample(3, label=1, seed=0)
    assert labelled.labels is not None and labelled.labels.tolist() == [1, 1, 1]


def test_generator_gives_an_image_at_every_scale() -> None:
    g = OneShotGenerator(32, channels=4).eval()
    scales, feats = g(torch.randn(2, 64), all_scales=True)
    assert [s.shape[-1] for s in scales] == [4, 8, 16, 32]
    assert all(s.shape[:2] == (2, 1) and s.abs().max() <= 1.0 for s in scales)
    assert len(feats) == 4


def test_discriminator_heads_have_the_documented_shapes() -> None:
    d = OneShotDiscriminator(32, channels=4).eval()
    out = d(torch.randn(3, 1, 32, 32))
    assert [tuple(t.shape) for t in out["low"]] == [(3, 1, 16, 16)]
    assert [tuple(t.shape) for t in out["content"]] == [(3, 1, 1, 1)] * 3
    assert [tuple(t.shape) for t in out["layout"]] == [(3, 1, 8, 8), (3, 1, 4, 4), (3, 1, 4, 4)]
    d64 = OneShotDiscriminator(64, channels=4).eval()
    out64 = d64(torch.randn(2, 1, 64, 64))
    assert [t.shape[-1] for t in out64["low"]] == [32, 16]
    assert len(out64["content"]) == len(out64["layout"]) == 4
    assert all(
        t.dtype.is_floating_point and torch.isfinite(t).all() for v in out64.values() for t in v
    )


def test_global_branch_gives_one_logit_per_image_and_keeps_real_and_fake_apart() -> None:
    torch.manual_seed(0)
    assert "global" not in OneShotDiscriminator(32, channels=4).eval()(torch.randn(2, 1, 32, 32))
    d = OneShotDiscriminator(32, channels=4, global_branch=True).train()
    fake = torch.randn(3, 1, 32, 32)
    a = d(torch.cat([torch.randn(2, 1, 32, 32), fake]), n_real=2)["global"]
    b = d(torch.cat([torch.randn(2, 1, 32, 32), fake]), n_real=2)["global"]
    assert [tuple(t.shape) for t in a] == [(5,)]
    # batch norm sees real and fake separately: other real images leave the fakes' logits alone
    assert torch.allclose(a[0][2:], b[0][2:], atol=1e-6)
    assert not torch.allclose(a[0][:2], b[0][:2])


def test_feature_augmentation_keeps_shapes_and_changes_values() -> None:
    torch.manual_seed(0)
    f = torch.randn(4, 8, 6, 6)
    c = augment_content(f, p=1.0)
    lay = augment_layout(f, p=1.0)
    assert c.shape == f.shape and lay.shape == f.shape
    assert not torch.equal(c, f) and not torch.equal(lay, f)
    # layout: every changed value is the partner's value at the same place (a pasted box)
    partner = torch.roll(f, -1, dims=0)
    changed = lay != f
    assert changed.any() and torch.equal(lay[changed], partner[changed])
    assert changed.all(dim=1).eq(changed.any(dim=1)).all()  # a box covers every channel
    # off: identity
    assert torch.equal(augment_content(f, p=0.0), f) and torch.equal(augment_layout(f, p=0.0), f)


def test_feature_augmentation_touches_only_real_samples() -> None:
    torch.manual_seed(0)
    d = OneShotDiscriminator(32, channels=4, feature_aug_p=1.0)
    x = torch.randn(4, 1, 32, 32)
    d.eval()
    with torch.no_grad():
        plain = d(x)
        d.train()  # augmentation on; spectral norm's power iteration kept frozen
        for m in d.modules():
            if type(m).__name__ == "_SpectralNorm":
                m.eval()
        aug = d(x, n_real=2)
    assert torch.allclose(aug["layout"][-1][2:], plain["layout"][-1][2:], atol=1e-6)
    assert torch.allclose(aug["low"][0], plain["low"][0], atol=1e-6)
    assert not torch.allclose(aug["layout"][-1][:2], plain["layout"][-1][:2])


def test_diversity_loss_is_zero_for_identical_latents() -> None:
    torch.manual_seed(0)
    g = OneShotGenerator(32, channels=4)
    a, b = torch.randn(2, 64), torch.randn(2, 64)
    with torch.no_grad():
        _, same = g(torch.cat([a, a]))
        _, diff = g(torch.cat([a, b]))
    assert float(diversity_loss(same)) == pytest.approx(0.0, abs=1e-6)
    assert float(diversity_loss(diff)) > 0.0
    z = torch.cat([a, b])
    normalised = diversity_loss(diff, z, normalize=True)
    # each block's distance relative to its mean absolute activation, then averaged
    per_pair = torch.stack(
        [(f[:2] - f[2:]).abs().flatten(1).mean(1) / f.abs().mean() for f in diff]
    ).mean(0)
    assert float(diversity_loss(diff)) == pytest.approx(float(per_pair.mean()), rel=1e-4)
    # scaling every feature does not change it (batch norm would undo such a scaling)
    assert float(diversity_loss([3.0 * f for f in diff])) == pytest.approx(
        float(diversity_loss(diff)), rel=1e-4
    )
    scale = (a - b).abs().mean(1)
    assert float(normalised) == pytest.approx(float((per_pair / scale).mean()), rel=1e-4)


def test_one_model_per_image_samples_evenly_and_caps(tumours: ImageSet) -> None:
    run = RunContext(seed=0)
    model = OneShotGAN({**QUICK, "images_per_model": 1, "max_models": 3, "iterations": 2})
    model.fit(tumours.subset([0, 1, 2, 3]), run)
    state = model.state_dict()
    assert state["config"]["n_models"] == 3 and len(state["models"]) == 3
    assert sorted(len(g) for g in state["config"]["groups"]) == [1, 1, 1]
    assert any("max_models" in n and "skipped" in n for n in run.notes)
    out = model.sample(7, seed=2)
    # sample i comes from model i % 3: recompute each with its own network
    z = latent_seeded(7, QUICK.get("latent_dim", 64), 2, "cpu")
    for i in range(7):
        net = model._generators[i % 3]
        img, _ = net(z[i : i + 1])
        assert torch.allclose(out.images[i], (img[0] * 0.5 + 0.5).clamp(0, 1), atol=1e-5)
    # the models differ (each learnt its own image from its own init)
    assert not torch.allclose(out.images[0], out.images[1])


def test_state_dict_round_trip_rebuilds_every_sub_model(trained: OneShotGAN) -> None:
    buf = io.BytesIO()
    torch.save(trained.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    restored = OneShotGAN(QUICK)
    restored.load_state_dict(state)
    assert torch.allclose(
        restored.sample(4, seed=9).images, trained.sample(4, seed=9).images, atol=1e-6
    )
    g0, d0 = trained.networks(0)
    g1, d1 = restored.networks(0)
    for a, b in ((g0, g1), (d0, d1)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_global_branch_trains_logs_and_round_trips(tmp_path: Path, tumours: ImageSet) -> None:
    run = RunContext(out_dir=tmp_path, seed=0)
    model = OneShotGAN({**QUICK, "global_weight": 1.0})
    model.fit(tumours, run)
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "step" in x]
    assert steps and all(isinstance(x["d_global"], float) for x in steps)
    _, d = model.networks(0)
    assert d.global_branch is not None
    restored = OneShotGAN(QUICK)  # the branch comes back from the checkpoint's config
    restored.load_state_dict(model.state_dict())
    assert restored.networks(0)[1].global_branch is not None
    assert torch.equal(restored.sample(3, seed=1).images, model.sample(3, seed=1).images)


def test_sample_before_fit_is_a_clear_error() -> None:
    with pytest.raises(PluginError, match="before fit"):
        OneShotGAN().sample(2)


def test_bad_params_and_sizes_are_clear_errors() -> None:
    with pytest.raises(PluginError, match="dr_lambda"):
        OneShotGAN({"dr_lambda": -1})
    with pytest.raises(PluginError, match="ada_target"):  # its own loop has no ADA
        OneShotGAN({"ada_target": 0.6})
    odd = ImageSet(images=torch.rand(2, 1, 44, 44))
    with pytest.raises(ConfigError, match="44 px"):
        OneShotGAN(QUICK).fit(odd, RunContext())


def test_logs_curves_and_saves_grids(tmp_path: Path, tumours: ImageSet) -> None:
    run = RunContext(out_dir=tmp_path, seed=0)
    OneShotGAN({**QUICK, "sample_every": 2}).fit(tumours, run)
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "step" in x]
    assert [x["step"] for x in steps] == [2, 4]
    for key in ("d_low", "d_content", "d_layout", "g_adv", "l_dr", "diversity"):
        assert all(isinstance(x[key], float) for x in steps)
    names = {p.name for p in (tmp_path / "figures").iterdir()}
    assert "samples.png" in names and "samples-step2.png" in names


def test_mode_seeking_term_is_logged_and_changes_the_training(
    tmp_path: Path, tumours: ImageSet, trained: OneShotGAN
) -> None:
    run = RunContext(out_dir=tmp_path, seed=0)
    model = OneShotGAN({**QUICK, "mode_seeking": 0.6})
    model.fit(tumours, run)
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "step" in x]
    assert steps and all(x["mode_seeking"] > 0 for x in steps)
    # the same seed without the term (the module's model) trains other weights
    assert not torch.equal(model.sample(4, seed=1).images, trained.sample(4, seed=1).images)
    with pytest.raises(PluginError, match="mode_seeking"):
        OneShotGAN({"mode_seeking": -0.1})
