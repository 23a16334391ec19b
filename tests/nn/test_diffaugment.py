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
