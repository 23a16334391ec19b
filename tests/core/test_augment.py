"""Batch augmentation on the device (synthmri.core.augment.Augment)."""

from __future__ import annotations

import pytest
import torch

from synthmri.core.augment import Augment


def _blob_batch(n: int = 16, size: int = 64) -> torch.Tensor:
    """Smooth off-centre blobs in [0, 1] (max 1), one per image."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    params = torch.rand(n, 4, generator=g)
    cy, cx = params[:, 0] * 0.4 - 0.2, params[:, 1] * 0.4 - 0.2
    ry, rx = 0.35 + 0.25 * params[:, 2], 0.35 + 0.25 * params[:, 3]
    d2 = ((yy - cy[:, None, None]) / ry[:, None, None]) ** 2 + (
        (xx - cx[:, None, None]) / rx[:, None, None]
    ) ** 2
    x = torch.exp(-2 * d2)[:, None]
    return x / x.amax(dim=(1, 2, 3), keepdim=True)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
        ),
    ],
)
def test_augment_keeps_shape_range_and_mask_alignment(device: str) -> None:
    x = _blob_batch().to(device)
    mask = (x > 0.5).float()
    aug = Augment(rotate_degrees=15, scale=0.15, intensity=0.0, seed=0)
    y, m = aug(x, mask)
    assert y.shape == x.shape and m.shape == mask.shape and y.device.type == device
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(y, x)
    disagree = ((y > 0.5).float() != m).float().mean()
    assert float(disagree) < 0.02  # only at edges, from interpolation

    y2 = Augment(intensity=0.2, seed=1)(x)
    assert isinstance(y2, torch.Tensor) and float(y2.min()) >= 0 and float(y2.max()) <= 1


def test_augment_is_seeded_and_can_be_identity() -> None:
    x = _blob_batch(4)
    a = Augment(seed=3)(x)
    b = Augment(seed=3)(x)
    c = Augment(seed=4)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    ident = Augment(flip=False, rotate_degrees=0, scale=0, intensity=0)(x)
    assert torch.equal(ident, x)


# ------------------------------------------------------------------------- real data
