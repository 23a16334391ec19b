"""``synthmri.nn.diffaugment``: shapes, the mask channel, differentiability."""

from __future__ import annotations

import pytest
import torch

from synthmri.nn.diffaugment import diff_augment


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


def test_diff_augment_rejects_an_unknown_op() -> None:
    with pytest.raises(ValueError, match="zoom"):
        diff_augment(torch.zeros(2, 1, 8, 8), "zoom")


def test_diff_augment_gain_keeps_black_and_the_mask() -> None:
    torch.manual_seed(2)
    image = torch.rand(16, 1, 32, 32) * 2 - 1
    image[:, :, :4] = -1.0  # a black background band
    mask = torch.where(torch.rand(16, 1, 32, 32) > 0.7, 1.0, -1.0)
    out = diff_augment(torch.cat([image, mask], dim=1), "gain", image_channels=1)
    assert torch.equal(out[:, 1], mask[:, 0])
    assert bool((out[:, 0, :4] == -1.0).all())  # black stays black
    above = image[:, 0] + 1  # intensity above black
    g = (out[:, 0] + 1).sum(dim=(1, 2)) / above.sum(dim=(1, 2))  # one factor per sample
    assert torch.allclose(out[:, 0] + 1, g[:, None, None] * above, atol=1e-5)
    assert bool((g >= 0.5 - 1e-5).all()) and bool((g <= 1.5 + 1e-5).all())
    assert float(g.std()) > 0.1
