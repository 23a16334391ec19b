"""``synthmri.nn.ema`` and ``synthmri.nn.batchnorm``: the EMA of weights and BN recalibration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synthmri.nn.batchnorm import latent_batches, recalibrate_bn
from synthmri.nn.dcgan import DCGANGenerator
from synthmri.nn.ema import EMA


def test_ema_tracks_weights_and_buffers() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
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


def test_ema_warms_up_its_decay() -> None:
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
    ema = EMA(net, decay=0.999)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)  # k = 1: decay min(0.999, 2 / 11)
    assert float(ema.module.weight) == pytest.approx(1 - 2 / 11)
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)


def test_recalibrate_bn_averages_over_all_batches_and_leaves_eval_mode() -> None:
    net = nn.Sequential(nn.BatchNorm1d(3))
    batches = [torch.randn(16, 3) + i for i in range(4)]
    recalibrate_bn(net, [(x,) for x in batches])
    assert not net.training
    assert torch.allclose(net[0].running_mean, torch.cat(batches).mean(0), atol=1e-5)
    assert net[0].momentum == 0.1  # restored


def test_recalibrate_bn_of_a_conditional_generator() -> None:
    torch.manual_seed(0)
    g = DCGANGenerator(32, 1, latent_dim=8, ngf=4, n_classes=2).eval()
    before = g.net[1].running_mean.clone()
    recalibrate_bn(g, latent_batches(2, 16, 8, 2, torch.device("cpu")))
    assert not g.training and not torch.equal(g.net[1].running_mean, before)
    assert int(g.net[1].num_batches_tracked) == 2
    # without BatchNorm nothing is drawn from the global RNG
    linear = nn.Linear(2, 2)
    state = torch.get_rng_state()
    recalibrate_bn(linear, latent_batches(2, 16, 8, 0, torch.device("cpu")))
    assert torch.equal(torch.get_rng_state(), state)
