"""``synthmri.nn.tensors``: value ranges, seeded latents, image/mask split, diversity, batches."""

from __future__ import annotations

import pytest
import torch

from synthmri.core.training import minibatches
from synthmri.nn.tensors import (
    IndexBlocks,
    batch_diversity,
    from_unit,
    latent_seeded,
    remove_specks,
    split_image_mask,
    to_unit,
)


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


def test_remove_specks_connects_within_a_slice_only() -> None:
    binary = torch.zeros(2, 6, 6, dtype=torch.bool)
    binary[0, 0:2, 0:2] = True  # 4 pixels in slice 0 ...
    binary[1, 0:2, 0:2] = True  # ... and the same 4 in slice 1: two components, not one of 8
    assert not bool(remove_specks(binary, 5).any())
    assert torch.equal(remove_specks(binary, 4), binary)


def test_index_blocks_give_the_minibatch_order() -> None:
    expected = minibatches(10, 3, torch.Generator().manual_seed(0))
    batches = minibatches(10, 3, torch.Generator().manual_seed(0))
    blocks = IndexBlocks(batches, next(batches), block=4, device=torch.device("cpu"))
    for _ in range(9):
        assert torch.equal(blocks.next(), next(expected))
