"""Segmenters (unet, attention_unet)."""

from __future__ import annotations

import json

import pytest
import torch

from synthmri.core.errors import ConfigError, PluginError
from synthmri.core.interfaces import ImageSet
from synthmri.core.phantoms import make_phantoms
from synthmri.core.plugins import get_plugin
from synthmri.core.training import RunContext
from synthmri.plugins.segmenters.unet import (
    AttentionUNetSegmenter,
    UNetSegmenter,
    batch_dice,
    init_output_bias,
    val_dice,
)

SMALL = {"channels": [8, 16, 32], "strides": [2, 2], "batch_size": 8}


# ------------------------------------------------------------------ segmenters


@pytest.fixture(scope="module")
def phantoms() -> ImageSet:
    return make_phantoms(48, 32, seed=0)


@pytest.mark.parametrize("cls", [UNetSegmenter, AttentionUNetSegmenter])
def test_segmenter_fits_and_predicts_probabilities(cls, phantoms: ImageSet) -> None:
    model = cls({**SMALL, "epochs": 1})
    val = phantoms.subset(range(40, 48))
    model.fit(phantoms.subset(range(40)), val, RunContext(seed=0))
    assert model.history["epochs_run"] >= 1 and len(model.history["val_score"]) >= 1
    # the validation Dice of the weights kept (pooled over the validation pixels)
    kept = val_dice(model.predict(val.images) > 0.5, val.masks > 0.5)
    assert model.validation_score() == pytest.approx(kept, abs=1e-6)
    prob = model.predict(phantoms.images)
    assert prob.shape == (48, 1, 32, 32) and prob.dtype == torch.float32
    assert torch.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
    state = model.state_dict()
    assert state["config"]["arch"] == cls.name and state["config"]["size"] == 32
    restored = cls()  # architecture comes from the checkpoint, not the params
    restored.load_state_dict(state)
    assert torch.allclose(restored.predict(phantoms.images[:4]), prob[:4], atol=1e-5)


def test_default_architecture_builds_at_32px() -> None:
    net = UNetSegmenter._build(1, UNetSegmenter()._network_config())
    with torch.no_grad():
        assert net(torch.rand(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_params_extend_the_supervised_settings_with_their_own_defaults() -> None:
    p = UNetSegmenter.Params()
    assert (p.epochs, p.batch_size, p.lr, p.weight_decay, p.patience, p.augment) == (
        30,
        16,
        3e-3,
        1e-4,
        8,
        True,
    )
    assert AttentionUNetSegmenter.Params().epochs == 30
    assert UNetSegmenter({"batch_size": 1}).params.batch_size == 1  # no BatchNorm in the way


def test_registered() -> None:
    assert get_plugin("segmenter", "unet") is UNetSegmenter
    assert get_plugin("segmenter", "attention_unet") is AttentionUNetSegmenter


def test_size_not_divisible_by_strides_is_a_clear_error() -> None:
    data = make_phantoms(8, 40, seed=0)
    with pytest.raises(ConfigError, match="not divisible by 16"):
        UNetSegmenter({"epochs": 1}).fit(data, None, RunContext())


def test_bad_params_and_misuse() -> None:
    with pytest.raises(PluginError, match="strides"):
        UNetSegmenter({"channels": [8, 16, 32], "strides": [2]})
    with pytest.raises(PluginError, match="before fit"):
        UNetSegmenter().predict(torch.rand(1, 1, 32, 32))
    with pytest.raises(PluginError, match="checkpoint is for"):
        AttentionUNetSegmenter().load_state_dict({"config": {"arch": "unet"}})


def test_batch_dice_convention() -> None:
    a = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    b = torch.zeros_like(a)
    a[1, 0, 0, 0] = True
    b[2, 0, 0, 0] = True
    assert batch_dice(a, b).tolist() == [1.0, 0.0, 0.0]


def test_val_dice_pooled_and_mean() -> None:
    pred = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    truth = torch.zeros_like(pred)
    truth[0, 0, 0, 0:2] = pred[0, 0, 0, 0:2] = True  # 2 px right
    pred[1, 0, 3, 3] = True  # 1 false-positive pixel on an empty slice
    assert val_dice(pred, truth, "pooled") == pytest.approx(2 * 2 / (3 + 2))
    assert val_dice(pred, truth, "mean") == pytest.approx((1.0 + 0.0) / 2)
    assert val_dice(torch.zeros_like(pred), truth & False) == 1.0


@pytest.mark.parametrize("cls", [UNetSegmenter, AttentionUNetSegmenter])
def test_output_bias_prior(cls) -> None:
    net = cls._build(1, cls(SMALL)._network_config())
    init_output_bias(net, 0.01)
    with torch.no_grad():
        logits = net(torch.rand(2, 1, 32, 32))
    # the output starts near logit(0.01) = -4.6, so BCE need not learn the background first
    assert float(torch.sigmoid(logits).mean()) < 0.1


# ------------------------------------------------------------------ the whole path


TINY_RECIPE = """
name: tiny-seg
seed: 0
device: cpu
data: {n: 48, size: 32}
generators:
  - plugin: dcgan
    params: {emits_masks: true, iterations: 3, batch_size: 8, ngf: 8, ndf: 8}
experiments:
  - name: seg
    task: segment
    models:
      - plugin: unet
        params: {epochs: 1, batch_size: 8, channels: [8, 16, 32], strides: [2, 2]}
    train_on: [real, synthetic, mixed]
    synthetic_per_class: 8
evaluate: [segmentation]
"""


def test_recipe_runs_the_segmentation_path(tmp_path) -> None:
    import synthmri
    from synthmri.core.recipe import parse_recipe

    result = synthmri.run_recipe(parse_recipe(TINY_RECIPE), out=str(tmp_path))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    rows = metrics["segmentation"]
    assert sorted(r["train_on"] for r in rows) == ["mixed", "real", "synthetic"]
    for r in rows:
        assert r["n_test"] == metrics["data"]["n_test"]
        assert r["dice_all"] is not None and 0.0 <= r["dice_all"] <= 1.0
        assert 0.0 <= r["val_score"] <= 1.0  # the UNet's validation Dice, beside the test's
    assert any("overlay" in p.name for p in (result.run_dir / "figures").iterdir())
