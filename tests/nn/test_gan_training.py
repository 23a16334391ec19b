"""``synthmri.nn.gan_training``: GAN losses, R1, minibatch std, the ADA controller."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from synthmri.core.errors import ConfigError
from synthmri.nn.gan_training import (
    AdaptiveAugment,
    MinibatchStd,
    PixelNorm,
    d_loss,
    freeze_first_layers,
    g_loss,
    mode_seeking_loss,
    r1_penalty,
)


def test_bce_and_hinge_losses_have_their_textbook_values() -> None:
    zeros = torch.zeros(4)
    assert float(d_loss(zeros, zeros, "bce")) == pytest.approx(2 * math.log(2))
    assert float(g_loss(zeros, "bce")) == pytest.approx(math.log(2))
    # smoothing: the real target is 1 - s, so a confident real logit costs more
    big = torch.full((4,), 10.0)
    assert float(d_loss(big, -big, "bce", smoothing=0.1)) > float(d_loss(big, -big, "bce"))
    # hinge: zero once real logits are >= 1 and fake ones <= -1; linear inside the margin
    assert float(d_loss(torch.ones(3), -torch.ones(3), "hinge")) == 0.0
    assert float(d_loss(zeros, zeros, "hinge")) == pytest.approx(2.0)
    assert float(g_loss(torch.tensor([1.0, 3.0]), "hinge")) == pytest.approx(-2.0)


def test_weighted_losses_average_the_weighted_logits_only() -> None:
    logits = torch.tensor([0.0, 5.0, -3.0])
    keep = torch.tensor([1.0, 0.0, 1.0])  # the middle logit must not count
    for kind in ("bce", "hinge"):
        kept = logits[keep > 0]
        assert float(g_loss(logits, kind, keep)) == pytest.approx(float(g_loss(kept, kind)))
        got = d_loss(logits, -logits, kind, weights=(keep, keep))
        assert float(got) == pytest.approx(float(d_loss(kept, -kept, kind)))
    # all weights 0: no loss and no gradient, not a division by zero
    x = logits.clone().requires_grad_(True)
    loss = g_loss(x, "bce", torch.zeros(3))
    loss.backward()
    assert float(loss) == 0.0 and float(x.grad.abs().sum()) == 0.0  # type: ignore[union-attr]


def test_losses_reject_unknown_kinds_and_smoothed_hinge() -> None:
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="wasserstein"):
        d_loss(x, x, "wasserstein")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wasserstein"):
        g_loss(x, "wasserstein")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bce"):
        d_loss(x, x, "hinge", smoothing=0.1)


def test_r1_penalty_of_a_linear_discriminator_is_its_squared_weight_norm() -> None:
    torch.manual_seed(0)
    w = torch.randn(1, 2, 4, 4)
    real = torch.randn(6, 2, 4, 4, requires_grad=True)
    logits = (real * w).sum(dim=(1, 2, 3))
    assert float(r1_penalty(logits, real)) == pytest.approx(float(w.square().sum()), rel=1e-5)
    # differentiable: the penalty trains the weights of D
    lin = nn.Linear(8, 1)
    x = torch.randn(5, 8, requires_grad=True)
    r1_penalty(lin(x).reshape(-1), x).backward()
    assert lin.weight.grad is not None and float(lin.weight.grad.abs().sum()) > 0


def test_minibatch_std_adds_the_spread_of_each_group() -> None:
    layer = MinibatchStd(group=4)
    same = torch.ones(8, 3, 2, 2)
    out = layer(same)
    assert out.shape == (8, 4, 2, 2)
    assert torch.equal(out[:, :3], same)
    assert float(out[:, 3].max()) < 1e-3  # a collapsed batch: no spread
    varied = torch.randn(8, 3, 2, 2) * 2
    spread = layer(varied)[:, 3]
    assert float(spread.min()) > 0.5
    # constant within a sample's map; each group's members share one value
    assert torch.equal(spread[:, 0, 0], spread[:, 1, 1])
    assert len(set(spread[:, 0, 0].tolist())) <= 2  # 8 samples, groups of 4: two groups
    # a batch of 6 uses groups of 3; a batch of 1 gets zeros
    assert layer(torch.randn(6, 3, 2, 2)).shape == (6, 4, 2, 2)
    assert torch.equal(layer(torch.randn(1, 3, 2, 2))[:, 3], torch.zeros(1, 2, 2))
    # differentiable through the spread
    x = torch.randn(4, 2, 2, 2, requires_grad=True)
    layer(x)[:, 2].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_mode_seeking_loss_is_small_when_latents_spread_the_images() -> None:
    z = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])  # pairs (0, 2), (1, 3)
    same = torch.zeros(4, 1, 2, 2)
    spread = torch.cat([torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 2.0)])
    # |G(z1) - G(z2)| / |z1 - z2| = 2 for the spread batch: loss 1 / 2
    assert float(mode_seeking_loss(spread, z)) == pytest.approx(0.5, rel=1e-4)
    assert float(mode_seeking_loss(same, z)) > 1e4  # a collapsed batch is penalised hard
    assert float(mode_seeking_loss(same[:1], z[:1])) == 0.0
    fake = spread.clone().requires_grad_(True)
    mode_seeking_loss(fake, z).backward()
    assert fake.grad is not None and float(fake.grad.abs().sum()) > 0


def test_pixel_norm_gives_unit_mean_square_per_position() -> None:
    x = torch.randn(3, 5, 4, 4) * 7
    out = PixelNorm()(x)
    assert torch.allclose(out.square().mean(dim=1), torch.ones(3, 4, 4), atol=1e-4)
    assert torch.allclose(PixelNorm()(x[:1]), out[:1])  # no batch statistics


def test_adaptive_augment_raises_p_when_d_overfits_and_lowers_it_otherwise() -> None:
    ada = AdaptiveAugment(0.6, batch=8, speed=320, interval=4)  # 0.1 per adjustment
    assert float(ada.p) == 0.0
    for _ in range(3):
        ada.observe(torch.ones(8))  # every real logit positive: r_t = 1 > 0.6
    assert float(ada.p) == 0.0  # adjusted only every 4 observations
    ada.observe(torch.ones(8))
    assert float(ada.p) == pytest.approx(0.1)
    for _ in range(40):
        ada.observe(torch.ones(8))
    assert float(ada.p) == pytest.approx(1.0)  # clamped
    for _ in range(8):
        ada.observe(-torch.ones(8))  # D unsure of the reals: r_t = -1 < 0.6
    assert float(ada.p) == pytest.approx(0.8)


def test_adaptive_augment_applies_ops_with_probability_p() -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    ada = AdaptiveAugment(0.6, batch=64)
    ada.observe(torch.ones(64))
    assert torch.equal(ada.augment(x, "color,translation,cutout"), x)  # p = 0: untouched
    assert torch.equal(ada.augment(x, ""), x)
    ada.p.fill_(1.0)
    out = ada.augment(x, "cutout")
    changed = (out != x).flatten(1).any(dim=1)
    assert bool(changed.all())  # p = 1: every sample cut
    ada.p.fill_(0.5)
    changed = (ada.augment(x, "cutout") != x).flatten(1).any(dim=1).float().mean()
    assert 0.25 < float(changed) < 0.75
    leaf = x.clone().requires_grad_(True)
    ada.augment(leaf, "color,translation").sum().backward()
    assert leaf.grad is not None


def test_adaptive_augment_needs_the_discriminator_logits() -> None:
    ada = AdaptiveAugment(0.6, batch=4)
    x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ConfigError, match="observe_real"):
        for _ in range(20):
            ada.augment(x, "color")
    with pytest.raises(ValueError, match="target"):
        AdaptiveAugment(1.5, batch=4)


def test_freeze_first_layers_stops_the_first_weights_and_their_norms() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.LeakyReLU(0.2),
        nn.Conv2d(4, 4, 3),
        nn.Linear(4, 1),
    )
    freeze_first_layers(net, 1)
    assert [p.requires_grad for p in net.parameters()] == [False] * 4 + [True] * 4
    freeze_first_layers(net, 0)  # nothing
    with pytest.raises(ConfigError, match="x: 3 layers, but the network has 3 weight layers"):
        freeze_first_layers(net, 3, "x")
