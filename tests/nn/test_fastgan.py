"""The FastGAN networks: shapes per size, skip-layer excitation, D's decoders, the losses."""

from __future__ import annotations

import pytest
import torch

from synthmri.core.phantoms import make_phantoms
from synthmri.nn.fastgan import (
    D_CHANNELS,
    DECODER_CHANNELS,
    G_CHANNELS,
    SIZES,
    FastGANDiscriminator,
    SkipLayerExcitation,
    build_fastgan,
    quarter,
    reconstruction_loss,
    sle_pairs,
    widths_for,
)
from synthmri.nn.tensors import from_unit


def tiny_config(size: int, channels: int = 1, n_classes: int = 0) -> dict:
    """A narrow network config for ``size`` (widths 8 everywhere)."""
    res = widths_for(size)
    return {
        "size": size,
        "channels": channels,
        "latent_dim": 8,
        "n_classes": n_classes,
        **{key: [8] * len(r) for key, r in res.items()},
    }


@pytest.mark.parametrize("size", SIZES)
def test_shapes_per_size(size: int) -> None:
    torch.manual_seed(0)
    G, D = build_fastgan(tiny_config(size, channels=2))
    with torch.no_grad():
        fake = G(torch.randn(3, 8))
    assert tuple(fake.shape) == (3, 2, size, size)
    assert float(fake.abs().max()) <= 1.0
    logits = D(fake)
    assert tuple(logits.shape) == (3, 25)  # a 5x5 map per image
    part = torch.tensor([0, 1, 3])
    logits, whole, piece = D(fake, None, part)
    rec = min(size, 128)
    assert tuple(whole.shape) == (3, 2, rec, rec)
    assert tuple(piece.shape) == (3, 2, min(size // 2, 128), min(size // 2, 128))
    t_whole, t_piece = D.targets(fake, part)
    assert t_whole.shape == whole.shape and t_piece.shape == piece.shape


def test_default_widths_cover_every_size() -> None:
    for size in SIZES:
        for key, res in widths_for(size).items():
            table = {"g_channels": G_CHANNELS, "d_channels": D_CHANNELS}.get(key, DECODER_CHANNELS)
            assert set(res) <= set(table), (size, key)


def test_sle_pairs_follow_the_paper() -> None:
    assert sle_pairs(256) == [(4, 64), (8, 128), (16, 256)]
    assert sle_pairs(128) == [(4, 64), (8, 128)]
    assert sle_pairs(64) == [(4, 64)]
    assert sle_pairs(32) == [(4, 32)]  # no 16x pair at 32 px


def test_skip_layer_excitation_gates_channels_by_the_low_features() -> None:
    torch.manual_seed(0)
    sle = SkipLayerExcitation(16, 8)
    low, high = torch.randn(2, 16, 4, 4), torch.randn(2, 8, 32, 32)
    out = sle(low, high)
    assert out.shape == high.shape
    gate = out / high  # one factor per (image, channel), in (0, 1)
    flat = gate.reshape(2, 8, -1)
    assert torch.allclose(flat, flat[..., :1].expand_as(flat), atol=1e-5)
    assert bool(((flat > 0) & (flat < 1)).all())
    assert not torch.allclose(sle(torch.randn(2, 16, 4, 4), high), out)  # low features matter
    low.requires_grad_(True)
    sle(low, high).sum().backward()
    assert low.grad is not None and float(low.grad.abs().sum()) > 0


def test_generator_uses_its_skip_connections() -> None:
    torch.manual_seed(0)
    G, _ = build_fastgan(tiny_config(64))
    assert set(G.sle) == {"64"}
    z = torch.randn(4, 8)
    before = G(z)
    torch.nn.init.zeros_(G.sle["64"].gate[3].weight)  # gate = sigmoid(0) = 1/2 everywhere
    assert not torch.allclose(G(z), before)


def test_quarter_takes_the_right_quarter() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    q = quarter(x, torch.tensor([0, 3]))
    assert torch.equal(q[0], x[0, :, :2, :2])
    assert torch.equal(q[1], x[1, :, 2:, 2:])
    q = quarter(x, torch.tensor([1, 2]))
    assert torch.equal(q[0], x[0, :, :2, 2:])
    assert torch.equal(q[1], x[1, :, 2:, :2])


def test_targets_are_the_image_and_its_quarter() -> None:
    x = from_unit(make_phantoms(4, 64, seed=0).images)
    D = FastGANDiscriminator(64, 1, dict.fromkeys((8, 16, 32), 8), dict.fromkeys((16, 32, 64), 8))
    part = torch.tensor([0, 1, 2, 3])
    whole, piece = D.targets(x, part)
    assert torch.equal(whole, x)  # up to 128 px the whole image itself
    assert torch.equal(piece, quarter(x, part))
    D256 = FastGANDiscriminator(
        256, 1, dict.fromkeys((8, 16, 32, 64, 128), 4), dict.fromkeys((16, 32, 64, 128), 4)
    )
    big = torch.nn.functional.interpolate(x, size=256)
    whole, piece = D256.targets(big, part)
    assert tuple(whole.shape[-2:]) == (128, 128) and tuple(piece.shape[-2:]) == (128, 128)
    assert torch.allclose(whole, torch.nn.functional.avg_pool2d(big, 2))


def test_decoders_learn_to_reconstruct_real_slices() -> None:
    torch.manual_seed(0)
    x = from_unit(make_phantoms(8, 32, seed=1).images)
    _, D = build_fastgan(tiny_config(32))
    opt = torch.optim.Adam(D.parameters(), lr=2e-3)
    part = torch.tensor([0, 1, 2, 3] * 2)
    losses = []
    for _ in range(40):
        _, whole, piece = D(x, None, part)
        loss = reconstruction_loss((whole, piece), D.targets(x, part), "l1")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0], (losses[0], losses[-1])


def test_conditional_discriminator_has_a_projection_term() -> None:
    torch.manual_seed(0)
    G, D = build_fastgan(tiny_config(32, n_classes=3))
    torch.nn.init.normal_(D.proj.embed.weight, 0.0, 1.0)
    z = torch.randn(2, 8)
    y0, y1 = torch.tensor([0, 0]), torch.tensor([1, 1])
    D.eval()
    assert not torch.allclose(G(z, y0), G(z, y1))
    x = G(z, y0).detach()
    assert not torch.allclose(D(x, y0), D(x, y1))


def test_spectral_norm_is_optional() -> None:
    cfg = tiny_config(32)
    _, with_sn = build_fastgan(cfg)
    _, without = build_fastgan({**cfg, "spectral_norm": False})
    assert any("parametrizations" in k for k in with_sn.state_dict())
    assert not any("parametrizations" in k for k in without.state_dict())


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="px"):
        build_fastgan(tiny_config(48))
    cfg = tiny_config(64)
    with pytest.raises(ValueError, match="g_channels"):
        build_fastgan({**cfg, "g_channels": [8, 8]})


def test_reconstruction_loss() -> None:
    a, b = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    c, d = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    assert float(reconstruction_loss((a, c), (b, d), "l1")) == pytest.approx(3.0)
    assert float(reconstruction_loss((a, c), (b, d), "mse")) == pytest.approx(5.0)
