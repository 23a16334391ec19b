"""Tests for the procedural brain phantoms (synthmri.core.phantoms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from synthmri.core.errors import ConfigError
from synthmri.core.interfaces import ImageSet
from synthmri.core.phantoms import CONTRASTS, PHANTOM_CLASSES, make_phantoms, write_phantoms

CLEAN = {"noise": 0.0, "bias_field": 0.0}


@pytest.fixture(scope="module")
def small() -> ImageSet:
    return make_phantoms(24, 32, seed=3)


@pytest.fixture(scope="module")
def tumours() -> ImageSet:
    """Noise-free tumour slices: 60 at 32 px."""
    return make_phantoms(60, 32, seed=11, tumor_fraction=1.0, **CLEAN)


def test_constants() -> None:
    assert PHANTOM_CLASSES == ["normal", "tumor"]
    assert CONTRASTS == ("t1", "t2", "flair")


def test_shape_dtype_range(small: ImageSet) -> None:
    assert isinstance(small, ImageSet)
    assert small.images.shape == (24, 1, 32, 32)
    assert small.images.dtype == torch.float32
    assert float(small.images.min()) >= 0.0
    assert float(small.images.max()) <= 1.0
    assert small.masks is not None and small.masks.shape == (24, 1, 32, 32)
    assert small.labels is not None and small.labels.dtype == torch.int64
    assert small.class_names == PHANTOM_CLASSES
    assert torch.isfinite(small.images).all()


def test_sources_and_groups(small: ImageSet) -> None:
    assert small.sources == [f"phantom:seed=3:{i}" for i in range(24)]
    assert small.groups == small.sources


@pytest.mark.parametrize(
    ("n", "fraction"), [(24, 0.5), (7, 0.3), (9, 0.5), (5, 0.0), (5, 1.0), (1, 0.5), (10, 0.25)]
)
def test_label_balance(n: int, fraction: float) -> None:
    data = make_phantoms(n, 16, seed=1, tumor_fraction=fraction)
    assert data.labels is not None
    assert int(data.labels.sum()) == round(n * fraction)
    assert set(data.labels.tolist()) <= {0, 1}


def test_labels_are_shuffled() -> None:
    labels = make_phantoms(40, 16, seed=2).labels
    assert labels is not None
    assert labels.tolist() != sorted(labels.tolist())
    assert labels.tolist() != sorted(labels.tolist(), reverse=True)


def test_deterministic_and_independent_of_torch_rng() -> None:
    torch.manual_seed(123)
    a = make_phantoms(6, 32, seed=5)
    torch.rand(1000)
    torch.manual_seed(999)
    b = make_phantoms(6, 32, seed=5)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.masks, b.masks)
    assert torch.equal(a.labels, b.labels)


def test_different_seeds_differ() -> None:
    a = make_phantoms(4, 32, seed=0)
    b = make_phantoms(4, 32, seed=1)
    assert not torch.equal(a.images, b.images)
    for i in range(4):  # every slice differs, not just one
        assert not torch.equal(a.images[i], b.images[i])


def test_anatomy_depends_on_seed_and_index_only() -> None:
    a = make_phantoms(3, 32, seed=4, tumor_fraction=0.0, **CLEAN)
    b = make_phantoms(8, 32, seed=4, tumor_fraction=0.0, **CLEAN)
    assert torch.allclose(a.images, b.images[:3], atol=1e-5)


def test_masks_binary_and_match_labels(small: ImageSet) -> None:
    assert small.masks is not None and small.labels is not None
    assert set(small.masks.unique().tolist()) <= {0.0, 1.0}
    area = small.masks.sum(dim=(1, 2, 3))
    assert (area[small.labels == 1] > 0).all()
    assert (area[small.labels == 0] == 0).all()


def test_every_tumour_mask_nonempty_at_small_sizes() -> None:
    for size in (16, 32):
        data = make_phantoms(100, size, seed=21, tumor_fraction=1.0)
        assert data.masks is not None
        assert int(data.masks.sum(dim=(1, 2, 3)).min()) >= 4


def test_tumour_mask_inside_head(tumours: ImageSet) -> None:
    assert tumours.masks is not None
    head = (tumours.images > 0.01).float()  # noise-free: air is exactly 0
    inner = 1.0 - F.max_pool2d(1.0 - head, kernel_size=3, stride=1, padding=1)  # erode 1 px
    outside = tumours.masks * (1.0 - inner)
    assert float(outside.sum()) == 0.0
    # and not on the image border
    border = tumours.masks.clone()
    border[..., 2:-2, 2:-2] = 0
    assert float(border.sum()) == 0.0


def test_tumour_masks_vary_in_size_and_place() -> None:
    data = make_phantoms(30, 64, seed=8, tumor_fraction=1.0)
    assert data.masks is not None
    area = data.masks.sum(dim=(1, 2, 3))
    assert float(area.max()) > 4 * float(area.min())
    ys, xs = torch.arange(64.0).view(1, 64, 1), torch.arange(64.0).view(1, 1, 64)
    m = data.masks[:, 0]
    cy = (m * ys).sum(dim=(1, 2)) / m.sum(dim=(1, 2))
    cx = (m * xs).sum(dim=(1, 2)) / m.sum(dim=(1, 2))
    assert float(cy.std()) > 2.5 and float(cx.std()) > 2.5


@pytest.mark.parametrize("contrast", CONTRASTS)
def test_lesion_visible(contrast: str) -> None:
    """The same heads with and without tumours: pixels under the mask change clearly."""
    with_t = make_phantoms(20, 32, seed=6, tumor_fraction=1.0, contrast=contrast, **CLEAN)
    without = make_phantoms(20, 32, seed=6, tumor_fraction=0.0, contrast=contrast, **CLEAN)
    m = with_t.masks
    assert m is not None
    change = ((with_t.images - without.images).abs() * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3))
    assert float(change.min()) > 0.08


def test_whole_tumour_mask_adds_the_visible_oedema() -> None:
    """mask="whole": the same images, the core's mask plus the oedema, which shows."""
    kw = {"tumor_fraction": 1.0, "contrast": "flair", **CLEAN}
    core = make_phantoms(20, 32, seed=6, **kw)
    whole = make_phantoms(20, 32, seed=6, mask="whole", **kw)
    healthy = make_phantoms(20, 32, seed=6, **{**kw, "tumor_fraction": 0.0})
    assert core.masks is not None and whole.masks is not None
    assert torch.equal(core.images, whole.images)
    assert bool((whole.masks >= core.masks).all())
    oedema = (whole.masks - core.masks)[:, 0].bool()
    assert int(oedema.sum()) > 0.3 * int(core.masks.sum())
    change = (whole.images - healthy.images)[:, 0].abs()
    assert float(change[oedema].median()) > 0.2  # FLAIR oedema 0.90 against white matter 0.41
    assert make_phantoms(10, 32, seed=6, tumor_fraction=0.0, mask="whole").masks.sum() == 0


def test_lesion_differs_from_surrounding_brain(tumours: ImageSet) -> None:
    assert tumours.masks is not None
    diffs = []
    for img, mask in zip(tumours.images, tumours.masks.bool(), strict=True):
        ring = F.max_pool2d(mask.float(), 5, stride=1, padding=2).bool() & ~mask
        diffs.append(abs(float(img[mask].mean()) - float(img[ring].mean())))
    assert float(np.median(diffs)) > 0.08


@pytest.mark.parametrize("contrast", [*CONTRASTS, "mixed"])
def test_each_contrast(contrast: str) -> None:
    data = make_phantoms(4, 32, seed=2, contrast=contrast)
    assert data.images.shape == (4, 1, 32, 32)
    assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0
    assert float(data.images.mean()) > 0.05


def test_contrasts_differ() -> None:
    imgs = [make_phantoms(2, 32, seed=2, contrast=c, **CLEAN).images for c in CONTRASTS]
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert float((imgs[i] - imgs[j]).abs().mean()) > 0.02


def test_t2_csf_bright_t1_csf_dark() -> None:
    """Ventricles at the image centre: dark on T1 and FLAIR, bright on T2 (relative to brain)."""
    centre = slice(12, 20)
    means = {}
    for c in CONTRASTS:
        img = make_phantoms(30, 32, seed=4, contrast=c, tumor_fraction=0.0, **CLEAN).images
        means[c] = float(img[..., centre, centre].mean() / img[..., 8:24, 8:24].mean())
    assert means["t2"] > means["t1"]
    assert means["t2"] > means["flair"]


def test_noise_and_bias_change_the_image() -> None:
    clean = make_phantoms(2, 32, seed=1, **CLEAN).images
    noisy = make_phantoms(2, 32, seed=1, noise=0.05, bias_field=0.0).images
    biased = make_phantoms(2, 32, seed=1, noise=0.0, bias_field=0.3).images
    assert not torch.equal(clean, noisy)
    assert not torch.equal(clean, biased)
    air = noisy[..., :2, :2]  # Rician noise: air is positive, never exactly 0
    assert float(air.mean()) > 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": -3},
        {"size": 8},
        {"size": 15},
        {"contrast": "pd"},
        {"tumor_fraction": -0.1},
        {"tumor_fraction": 1.5},
        {"seed": -1},
        {"noise": -0.1},
        {"bias_field": 2.0},
        {"tumor_fraction": "half"},
        {"tumor_fraction": float("nan")},
        {"size": 32.0},
        {"mask": "oedema"},
    ],
)
def test_bad_args_raise_config_error(kwargs: dict) -> None:
    args = {"n": 2, "size": 32, **kwargs}
    with pytest.raises(ConfigError) as info:
        make_phantoms(**args)
    assert "\n" not in str(info.value)


def test_numpy_integers_accepted() -> None:
    a = make_phantoms(np.int64(2), np.int64(16), seed=np.int64(3), tumor_fraction=np.float64(0.5))
    b = make_phantoms(2, 16, seed=3)
    assert torch.equal(a.images, b.images)
    assert a.sources == b.sources


def test_write_phantoms_layout(tmp_path) -> None:
    out = tmp_path / "ds"
    paths = write_phantoms(out, 6, size=32, seed=1)
    data = make_phantoms(6, 32, seed=1)
    assert data.labels is not None and data.masks is not None
    assert len(paths) == 6
    assert sorted(p.name for p in out.iterdir()) == sorted(PHANTOM_CLASSES)
    assert len(list((out / "tumor").glob("*_mask.png"))) == 3
    assert len(list(out.rglob("*.png"))) == 12
    for i, path in enumerate(paths):
        assert path.name == f"phantom_{i:04d}.png"
        assert path.parent.name == PHANTOM_CLASSES[int(data.labels[i])]
        img = Image.open(path)
        assert img.mode == "L" and img.size == (32, 32)
        expected = (data.images[i, 0] * 255).round().to(torch.uint8).numpy()
        assert np.array_equal(np.asarray(img), expected)
        mask = Image.open(path.with_name(f"{path.stem}_mask.png"))
        assert mask.mode == "L" and mask.size == (32, 32)
        values = np.asarray(mask)
        assert set(np.unique(values).tolist()) <= {0, 255}
        assert np.array_equal(values > 127, data.masks[i, 0].numpy() > 0.5)
        assert (values.max() == 255) == bool(data.labels[i] == 1)


def test_write_phantoms_passes_options(tmp_path) -> None:
    paths = write_phantoms(tmp_path / "ds", 3, size=16, seed=0, tumor_fraction=0.0)
    assert all(p.parent.name == "normal" for p in paths)
    assert (tmp_path / "ds" / "tumor").is_dir()


def test_write_phantoms_into_empty_existing_folder(tmp_path) -> None:
    assert len(write_phantoms(tmp_path, 2, size=16)) == 2


def test_write_phantoms_refuses_non_empty_folder(tmp_path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError):
        write_phantoms(tmp_path, 2, size=16)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_write_phantoms_refuses_a_file(tmp_path) -> None:
    target = tmp_path / "file.png"
    target.write_bytes(b"x")
    with pytest.raises(ConfigError):
        write_phantoms(target, 2, size=16)


@pytest.mark.slow
def test_speed_1000_slices() -> None:
    import time

    start = time.perf_counter()
    make_phantoms(1000, 128, seed=0)
    assert time.perf_counter() - start < 20.0
