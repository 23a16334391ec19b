"""``synthmri.nn.anomaly_maps``: error maps, z-maps, clean-up, the head mask; and the VAE's
automatic size (``synthmri.nn.vae.auto_vae_size``)."""

from __future__ import annotations

import pytest
import torch

from synthmri.nn.anomaly_maps import (
    PixelStats,
    absolute_error,
    clean_binary,
    head_masks,
    match_intensity,
    pixel_stats,
    ssim_error,
    z_map,
)
from synthmri.nn.vae import auto_vae_size


def disk(size: int = 32, radius: float = 11.0, level: float = 0.5) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    c = (size - 1) / 2
    return (((yy - c) ** 2 + (xx - c) ** 2) < radius**2).float() * level


def test_absolute_and_ssim_error_are_local_and_zero_on_a_perfect_reconstruction() -> None:
    g = torch.Generator().manual_seed(0)
    x = (disk()[None, None] + 0.05 * torch.rand(2, 1, 32, 32, generator=g)).clamp(0, 1)
    assert torch.allclose(absolute_error(x, x), torch.zeros(2, 1, 32, 32))
    same = ssim_error(x, x)
    assert same.shape == (2, 1, 32, 32) and float(same.max()) < 1e-4
    recon = x.clone()
    recon[:, :, 6:12, 6:12] = x[:, :, 6:12, 6:12].mean()  # structure lost in one patch
    err = ssim_error(x, recon)
    assert float(err[:, :, 7:11, 7:11].mean()) > 20 * float(err[:, :, 20:28, 20:28].mean() + 1e-6)
    assert float(err.min()) >= 0 and float(err.max()) <= 1
    multi = torch.cat([x, x], 1)  # channels are averaged
    assert absolute_error(multi, multi * 0).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="too small"):
        ssim_error(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3), kernel_size=7)


def test_z_map_normalises_by_the_healthy_spread_at_each_pixel() -> None:
    """A place where every healthy slice errs a lot (a rim) stops standing out; the same
    error where healthy slices are quiet becomes large."""
    g = torch.Generator().manual_seed(1)
    n = 30
    errors = 0.01 * torch.rand(n, 1, 16, 16, generator=g)
    errors[:, :, :, :3] += 0.3 + 0.2 * torch.rand(n, 1, 16, 3, generator=g)  # noisy rim
    masks = torch.ones(n, 1, 16, 16, dtype=torch.bool)
    stats = pixel_stats(errors, masks, sigma=0.0, floor=0.5)
    assert stats.mean.shape == stats.std.shape == (1, 1, 16, 16)
    test = torch.zeros(1, 1, 16, 16)
    test[0, 0, 8, 1] = 0.45  # a typical rim error
    test[0, 0, 8, 10] = 0.45  # the same error inside
    z = z_map(test, stats)
    assert float(z[0, 0, 8, 10]) > 10 * float(z[0, 0, 8, 1])
    assert float(z.min()) == 0.0  # below the healthy mean is not an anomaly
    # the floor: a pixel where healthy slices agreed exactly does not explode
    flat = torch.full((n, 1, 16, 16), 0.1)
    flat[:, 0, 0, 0] = torch.rand(n, generator=g)
    st = pixel_stats(flat, masks, sigma=0.0, floor=0.5, min_std=0.01)
    assert float(st.std.min()) == pytest.approx(0.01)
    assert float(z_map(flat[:1] + 0.005, st).max()) < 1.0
    restored = PixelStats.from_state(stats.state_dict())
    assert torch.equal(restored.mean, stats.mean) and torch.equal(restored.std, stats.std)


def test_pixel_stats_fall_back_where_no_healthy_slice_covers() -> None:
    errors = torch.rand(10, 1, 12, 12)
    masks = torch.zeros(10, 1, 12, 12, dtype=torch.bool)
    masks[:, :, :, :6] = True  # the right half is never head
    stats = pixel_stats(errors, masks, sigma=0.0)
    covered_mean = float(errors[:, :, :, :6].mean())
    assert torch.allclose(stats.mean[..., 9:], torch.tensor(covered_mean), atol=1e-5)
    with pytest.raises(ValueError, match="must both be"):
        pixel_stats(errors, masks[:, :, :6])


def test_clean_binary_removes_specks_and_small_components() -> None:
    b = torch.zeros(2, 1, 20, 20, dtype=torch.bool)
    b[0, 0, 2, 2] = True  # a speck
    b[0, 0, 10:16, 10:16] = True  # a blob
    b[1, 0, 5:8, 5:8] = True  # a small (9 px) blob
    opened = clean_binary(b, radius=1)
    assert not opened[0, 0, 2, 2] and int(opened[0].sum()) == 36
    assert int(opened[1].sum()) == 9  # 3 x 3 survives an opening with the 3 x 3 disk
    small_gone = clean_binary(b, radius=0, min_pixels=10)
    assert int(small_gone[1].sum()) == 0 and int(small_gone[0].sum()) == 36
    assert torch.equal(clean_binary(b, 0, 0), b)


def test_match_intensity_undoes_a_global_brightness_and_contrast_miss() -> None:
    g = torch.Generator().manual_seed(2)
    x = (disk()[None, None] + 0.2 * torch.rand(3, 1, 32, 32, generator=g)) * 0.8
    mask = torch.ones(3, 1, 32, 32, dtype=torch.bool)
    recon = 0.5 * x + 0.1
    assert torch.allclose(match_intensity(x, recon, mask), x, atol=1e-5)
    flat = torch.full_like(x, 0.3)  # no variance: only the offset is fitted
    matched = match_intensity(x, flat, mask)
    assert torch.allclose(matched.mean((2, 3)), x.mean((2, 3)), atol=1e-5)


def test_head_masks_is_the_loaders_head_with_holes_filled() -> None:
    img = disk(32, 12, 0.6)
    img[14:18, 14:18] = 0.0  # a dark hole inside (a ventricle, a dark lesion)
    mask = head_masks(torch.stack([img, torch.zeros(32, 32)])[:, None])
    assert mask.shape == (2, 1, 32, 32) and mask.dtype == torch.bool
    assert bool(mask[0, 0, 15, 15]) and not bool(mask[0, 0, 0, 0])
    # the head and at most a pixel or two of margin (half-Otsu of a smoothed copy)
    assert bool(mask[0, 0][disk(32, 12, 1.0).bool()].all())
    assert not bool(mask[0, 0][~disk(32, 14, 1.0).bool()].any())
    assert not bool(mask[1].any())


@pytest.mark.parametrize(
    ("n", "device", "expected"),
    [
        (50, "cpu", (8, 64)),
        (999, "cpu", (8, 64)),
        (1000, "cpu", (16, 128)),
        (50, "cuda", (32, 512)),
    ],
)
def test_auto_vae_size_follows_device_and_data(
    n: int, device: str, expected: tuple[int, int]
) -> None:
    assert auto_vae_size(n, torch.device(device)) == expected
    assert auto_vae_size(n, device) == expected
