"""Loading a folder (synthmri.core.data.load_images): formats, bad files, layouts, NIfTI,
duplicate groups through the loader, the options, and the real data sets.

Every test writes its own files into ``tmp_path``; the tests on the real data sets in
``../shared/data`` skip when that folder is absent.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from synthmri.core.data import LoadOptions, LoadResult, load_images, preprocess, split_dataset
from synthmri.core.errors import ConfigError, DataError
from synthmri.core.interfaces import ImageSet

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"


# ------------------------------------------------------------------------- helpers


def head(seed: int, size: int = 96, width: int | None = None, tumor: bool = False) -> np.ndarray:
    """A distinct uint8 'head': a textured ellipse on black, unique per seed."""
    rng = np.random.default_rng(seed)
    h, w = size, width or size
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h / 2 + rng.uniform(-4, 4), w / 2 + rng.uniform(-4, 4)
    ry, rx = h * rng.uniform(0.3, 0.42), w * rng.uniform(0.28, 0.4)
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    texture = ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma=size / 24)
    texture = (texture - texture.min()) / (np.ptp(texture) + 1e-9)
    img = np.where(inside, 60 + 170 * texture, 0)
    if tumor:
        img[int(cy) - 6 : int(cy) + 6, int(cx) - 6 : int(cx) + 6] = 255
    return img.clip(0, 255).astype(np.uint8)


def save(img: np.ndarray | Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img) if isinstance(img, np.ndarray) else img
    im.save(path, format=fmt, **kw)
    return path


def class_set(root: Path, per_class: int = 6, classes=("no", "yes"), seed0: int = 0) -> Path:
    for k, cls in enumerate(classes):
        for i in range(per_class):
            save(head(seed0 + 100 * k + i), root / cls / f"{cls}_{i}.png")
    return root


def check_images(data: ImageSet, n: int, size: int) -> None:
    assert data.images.shape == (n, 1, size, size)
    assert data.images.dtype == torch.float32
    assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0
    assert len(data.sources) == n and len(data.groups) == n


# ------------------------------------------------------------------------- formats


def test_all_formats_and_modes_load(tmp_path: Path) -> None:
    root = tmp_path / "data"
    g = head(1)
    save(np.stack([g, g // 2, g // 3], -1), root / "yes" / "rgb.jpg", quality=90)
    save(head(2), root / "yes" / "gray L.png")  # space in name
    save(Image.fromarray(head(3).astype(np.uint16) * 200), root / "yes" / "sixteen.png")
    rgba = np.dstack([np.stack([head(4)] * 3, -1), np.full((96, 96), 255, np.uint8)])
    save(rgba, root / "yes" / "rgba.png")
    save(Image.fromarray(head(5)).convert("P"), root / "no" / "palette.png")
    save(head(6), root / "no" / "scan.tiff")
    save(head(7), root / "no" / "scan.bmp")
    save(head(8), root / "no" / "UPPER.PNG")
    save(head(9), root / "no" / "lying.jpg", fmt="PNG")  # PNG bytes, .jpg name
    save(head(10), root / "no" / "q.JPEG", fmt="JPEG")
    save(Image.fromarray(head(11).astype(np.float32) / 7.0), root / "no" / "float.tif")
    (root / "no" / "notes.txt").write_text("not an image")
    (root / "no" / "meta.csv").write_text("a,b\n")
    (root / "no" / "README.md").write_text("# hi")
    (root / "no" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "no" / "._hidden.jpg").write_bytes(b"junk")
    (root / ".hidden_dir").mkdir()
    save(head(12), root / ".hidden_dir" / "x.png")

    result = load_images(root, size=32)
    assert isinstance(result, LoadResult)
    assert result.layout == "class_folders"
    assert result.skipped == []
    data = result.data
    check_images(data, 11, 32)
    assert data.class_names == ["no", "yes"]
    assert data.class_counts() == {"no": 7, "yes": 4}
    assert data.masks is None and data.splits is None
    names = sorted(Path(s).name for s in data.sources)
    assert "gray L.png" in names and "lying.jpg" in names and "UPPER.PNG" in names
    assert result.duplicate_groups == 0  # distinct images are not taken for duplicates
    assert all(g.startswith("dup:") for g in data.groups)
    assert len(set(data.groups)) == 11
    # every image kept its contrast: min 0, max 1 after per-image scaling
    assert torch.allclose(data.images.amax(dim=(1, 2, 3)), torch.ones(11))


def test_sixteen_bit_is_scaled_by_its_own_range(tmp_path: Path) -> None:
    arr = (1000 + head(3).astype(np.uint16) * 10).astype(np.uint16)  # 1000..3550 of 65535
    save(Image.fromarray(arr), tmp_path / "d" / "a" / "x.png")
    save(head(4), tmp_path / "d" / "b" / "y.png")
    data = load_images(tmp_path / "d", size=32, crop_foreground=False).data
    x = data.images[data.sources.index(str(tmp_path / "d" / "a" / "x.png"))]
    assert float(x.max()) == pytest.approx(1.0) and float(x.min()) == pytest.approx(0.0)
    assert float(x.mean()) > 0.1  # not squashed into a corner of the 16-bit range


def test_channel_selection_picks_the_channel(tmp_path: Path) -> None:
    r, g = head(1), head(2)
    rgb = np.stack([r, g, np.zeros_like(r)], -1)
    save(rgb, tmp_path / "d" / "p1" / "p1_1.png")
    save(np.zeros((96, 96), np.uint8), tmp_path / "d" / "p1" / "p1_1_mask.png")

    def load(channel: int | None) -> torch.Tensor:
        res = load_images(tmp_path / "d", size=48, channel=channel, crop_foreground=False)
        assert res.layout == "image_mask"
        return res.data.images[0, 0]

    def expected(arr: np.ndarray) -> torch.Tensor:
        out, _ = preprocess(arr.astype(np.float32), size=48, crop_foreground=False)
        return torch.from_numpy(out)

    assert torch.allclose(load(1), expected(g), atol=1e-5)
    assert torch.allclose(load(0), expected(r), atol=1e-5)
    lum = 0.299 * r.astype(np.float32) + 0.587 * g.astype(np.float32)
    assert torch.allclose(load(None), expected(lum), atol=1e-4)
    with pytest.raises(DataError, match="channel=5"):
        load(5)


# ------------------------------------------------------------------------- bad input


def _bad_files(root: Path) -> None:
    class_set(root, per_class=3)
    (root / "yes" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "yes" / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(head(50, size=256)).save(buf, format="JPEG", quality=95)
    (root / "no" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_bad_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    _bad_files(tmp_path)
    with pytest.raises(DataError, match="cannot read image") as err:
        load_images(tmp_path, size=32)
    msg = str(err.value)
    assert any(n in msg for n in ("corrupt.jpg", "empty.png", "truncated.jpg"))
    assert "\n" not in msg and err.value.hint


def test_zero_byte_file_message(tmp_path: Path) -> None:
    class_set(tmp_path, per_class=2)
    (tmp_path / "no" / "zero.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"zero\.png: cannot read image \(empty file"):
        load_images(tmp_path, size=32)


def test_skip_counts_bad_files(tmp_path: Path) -> None:
    _bad_files(tmp_path)
    res = load_images(tmp_path, size=32, on_bad_file="skip")
    assert len(res.data) == 6
    assert sorted(Path(f).name for f, _ in res.skipped) == [
        "corrupt.jpg",
        "empty.png",
        "truncated.jpg",
    ]
    assert all(reason for _, reason in res.skipped)


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        load_images(empty)
    (empty / "notes.txt").write_text("x")
    (empty / "no").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_images(empty)
    with pytest.raises(DataError, match="nowhere"):
        load_images(tmp_path / "nowhere")
    only_bad = tmp_path / "bad"
    (only_bad / "yes").mkdir(parents=True)
    (only_bad / "yes" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="no readable images"):
        load_images(only_bad, on_bad_file="skip")


def test_progress_is_reported(tmp_path: Path) -> None:
    class_set(tmp_path, per_class=3)
    calls: list[tuple[int, int]] = []
    load_images(tmp_path, size=16, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (6, 6) and [c[0] for c in calls] == list(range(1, 7))


# ------------------------------------------------------------------------- layouts


def test_nested_split_folders_keep_splits_and_layout_split(tmp_path: Path) -> None:
    root = tmp_path / "mh"
    seed = 0
    for split, n in (("Train", 8), ("Validation", 3)):
        for cls in ("Normal", "Tumor"):
            for i in range(n):
                seed += 1
                save(head(seed, tumor=cls == "Tumor"), root / split / cls / f"{cls} ({i}).jpg")
    res = load_images(root, size=32)
    data = res.data
    assert res.layout == "class_folders"
    assert data.class_names == ["Normal", "Tumor"]
    assert Counter(data.splits or []) == {"train": 16, "validation": 6}
    for src, split in zip(data.sources, data.splits or [], strict=True):
        assert Path(src).parts[-3].lower() == split

    train, val, test = split_dataset(data, val=0.2, seed=3, use_layout_split=True)
    assert sorted(test.sources) == sorted(
        s for s, sp in zip(data.sources, data.splits or [], strict=True) if sp == "validation"
    )
    assert len(train) + len(val) == 16 and len(val) > 0
    assert set(train.splits or []) == {"train"} and set(val.splits or []) == {"train"}

    # classes: restrict / rename case-insensitively
    only = load_images(root, size=16, classes=["tumor"]).data
    assert only.class_names == ["tumor"] and len(only) == 11
    with pytest.raises(DataError, match="glioma"):
        load_images(root, size=16, classes=["glioma"])


def test_layout_split_drops_train_duplicates_of_test_items(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i in range(6):
        for cls in ("a", "b"):
            save(head(10 * i + (cls == "b")), root / "train" / cls / f"{cls}{i}.png")
    save(head(1), root / "test" / "b" / "copy.png")  # byte-identical to train/b/b0.png
    save(head(999), root / "test" / "a" / "t.png")
    data = load_images(root, size=16).data
    train, val, test = split_dataset(data, val=0.2, use_layout_split=True)
    assert len(test) == 2
    kept = train.sources + val.sources
    assert str(root / "train" / "b" / "b0.png") not in kept
    assert len(kept) == 11


def _lgg_like(root: Path, patients: int = 4, slices: int = 5, rgb: bool = True) -> Path:
    seed = 0
    for p in range(patients):
        name = f"TCGA_XX_{p:04d}_2000"
        for s in range(1, slices + 1):
            seed += 1
            tumor = s % 2 == 0
            img = head(seed, tumor=tumor)
            if rgb:
                img = np.stack([head(seed + 1000), img, head(seed + 2000)], -1)
            save(img, root / name / f"{name}_{s}.png")
            mask = np.zeros((96, 96), np.uint8)
            if tumor:
                mask[40:52, 40:52] = 255
            save(mask, root / name / f"{name}_{s}_mask.png")
    (root / "data.csv").write_text("Patient,x\n")
    return root


def test_image_mask_patient_folders(tmp_path: Path) -> None:
    root = _lgg_like(tmp_path / "lgg")
    res = load_images(root, size=32, channel=1)
    data = res.data
    assert res.layout == "image_mask"
    check_images(data, 20, 32)
    assert data.class_names == ["normal", "tumor"]
    assert data.class_counts() == {"normal": 12, "tumor": 8}
    assert data.masks is not None
    assert set(data.masks.unique().tolist()) <= {0.0, 1.0}
    has_fg = data.masks.amax(dim=(1, 2, 3)) > 0
    assert torch.equal(has_fg, data.labels == 1)
    assert len(set(data.groups)) == 4
    assert all(g.startswith("TCGA_XX_") for g in data.groups)
    assert not any("_mask" in Path(s).name for s in data.sources)
    # tumour square in the mask lines up with the bright square in the image
    i = int(torch.nonzero(data.labels == 1)[0])
    m = data.masks[i, 0] > 0
    assert float(data.images[i, 0][m].mean()) > float(data.images[i, 0][~m].mean()) + 0.2


def test_mask_size_mismatch_names_both_files(tmp_path: Path) -> None:
    root = _lgg_like(tmp_path / "lgg", patients=2, slices=2)
    bad_mask = root / "TCGA_XX_0001_2000" / "TCGA_XX_0001_2000_2_mask.png"
    save(np.zeros((50, 60), np.uint8), bad_mask)
    with pytest.raises(DataError) as err:
        load_images(root, size=32)
    msg = str(err.value)
    assert str(bad_mask) in msg
    assert str(root / "TCGA_XX_0001_2000" / "TCGA_XX_0001_2000_2.png") in msg
    assert "60x50" in msg and "96x96" in msg
    res = load_images(root, size=32, on_bad_file="skip")
    assert len(res.data) == 3 and len(res.skipped) == 1


def test_parallel_images_and_masks_folders(tmp_path: Path) -> None:
    root = tmp_path / "seg"
    for i in range(4):
        save(head(i, tumor=i < 2), root / "images" / f"case{i}.png")
        mask = np.zeros((96, 96), np.uint8)
        if i < 2:
            mask[40:50, 40:50] = 1  # 0/1 masks
        save(mask, root / "masks" / f"case{i}.png")
    res = load_images(root, size=32)
    assert res.layout == "image_mask"
    assert res.data.labels.tolist() == [1, 1, 0, 0]
    assert res.data.masks is not None and float(res.data.masks[0].sum()) > 0


def test_class_folders_with_masks_beside(tmp_path: Path) -> None:
    root = tmp_path / "phantoms"
    for i in range(3):
        save(head(i, tumor=True), root / "tumor" / f"{i:04d}.png")
        mask = np.zeros((96, 96), np.uint8)
        mask[40:52, 40:52] = 255
        save(mask, root / "tumor" / f"{i:04d}_mask.png")
        save(head(10 + i), root / "normal" / f"{i:04d}.png")  # no mask files
    res = load_images(root, size=32)
    data = res.data
    assert res.layout == "class_folders"
    assert data.class_names == ["normal", "tumor"] and len(data) == 6
    assert data.masks is not None
    sums = data.masks.sum(dim=(1, 2, 3))
    assert torch.equal(sums > 0, data.labels == 1)


def _volume(seed: int, shape=(48, 40, 14), lesion: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A textured ellipsoid 'head' with (``lesion``) a bright cube 'tumour' in the middle
    slices."""
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[: shape[0], : shape[1], : shape[2]]
    c = np.array(shape) / 2 + rng.uniform(-3, 3, 3) * (1, 1, 0)
    radii = (rng.uniform(14, 20), rng.uniform(11, 17), 5.5)
    r = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip((x, y, z), c, radii, strict=True))
    texture = ndimage.gaussian_filter(rng.normal(size=shape), sigma=(3, 3, 0.5))
    texture = (texture - texture.min()) / np.ptp(texture)
    vol = np.where(r <= 1, 100 + 150 * texture, 0).astype(np.float32)
    mask = ((x - c[0]) ** 2 + (y - c[1]) ** 2 < 16) & (np.abs(z - c[2]) < 2)
    if lesion:
        vol[mask] = 300
    return vol, (mask & lesion).astype(np.uint8)


def test_nifti_volumes_with_and_without_masks(tmp_path: Path) -> None:
    root = tmp_path / "nii"
    root.mkdir()
    for k in range(2):
        vol, mask = _volume(k)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), root / f"sub{k}.nii.gz")
        nib.save(nib.Nifti1Image(mask, np.eye(4)), root / f"sub{k}_seg.nii.gz")
    res = load_images(root, size=32, min_brain_fraction=0.05)
    data = res.data
    assert res.layout == "nifti"
    n = len(data)
    check_images(data, n, 32)
    assert 12 <= n <= 2 * 14 - 4  # empty end slices dropped
    assert data.class_names == ["normal", "tumor"] and data.masks is not None
    assert set(data.groups) == {"sub0.nii.gz", "sub1.nii.gz"}
    assert 0 < int(data.labels.sum()) < n
    assert all("#z=" in s for s in data.sources)

    plain = tmp_path / "plain"
    for k, cls in enumerate(("healthy", "sick")):
        # no lesion: the same bright square in the middle of two smooth heads makes their
        # middle slices alike enough for the duplicate search to join the volumes
        vol, _ = _volume(10 + k, lesion=False)
        (plain / cls).mkdir(parents=True)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), plain / cls / "vol.nii")
    res = load_images(plain, size=32)
    assert res.data.masks is None
    assert res.data.class_names == ["healthy", "sick"]
    assert len(set(res.data.groups)) == 2
    # volumes directly in the root give no class
    flat = tmp_path / "flat"
    flat.mkdir()
    nib.save(nib.Nifti1Image(_volume(20)[0], np.eye(4)), flat / "a.nii.gz")
    assert load_images(flat, size=16).data.labels is None


def test_nifti_orientation_follows_the_affine(tmp_path: Path) -> None:
    vol, _ = _volume(3)
    (tmp_path / "ras").mkdir()
    (tmp_path / "las").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "ras" / "v.nii.gz")
    flipped = np.ascontiguousarray(vol[::-1])  # x stored right-to-left, said so by the affine
    nib.save(nib.Nifti1Image(flipped, np.diag([-1.0, 1, 1, 1])), tmp_path / "las" / "v.nii.gz")
    a = load_images(tmp_path / "ras", size=32).data.images
    b = load_images(tmp_path / "las", size=32).data.images
    assert torch.allclose(a, b, atol=1e-5)


def test_nifti_mask_shape_mismatch(tmp_path: Path) -> None:
    vol, _ = _volume(0)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), tmp_path / "a_mask.nii")
    with pytest.raises(DataError, match=r"a_mask\.nii.*a\.nii\.gz|a\.nii\.gz.*a_mask\.nii"):
        load_images(tmp_path)


# ------------------------------------------------------------------------- duplicates


def test_duplicates_share_a_group(tmp_path: Path) -> None:
    root = class_set(tmp_path / "d", per_class=5)
    src = root / "yes" / "yes_0.png"
    shutil.copy(src, root / "no" / "copy of yes_0.png")  # byte-identical, other class
    big = Image.fromarray(head(100)).resize((150, 150), Image.Resampling.BICUBIC)
    save(big, root / "yes" / "bigger.jpg", quality=70)  # yes_0 at another size and format
    res = load_images(root, size=32)
    data = res.data
    group = {Path(s).name: g for s, g in zip(data.sources, data.groups, strict=True)}
    assert group["yes_0.png"] == group["copy of yes_0.png"] == group["bigger.jpg"]
    assert res.duplicate_groups == 1
    assert len(set(data.groups)) == 10
    # near-duplicate detection off: only the byte-identical copy is found
    res = load_images(root, size=32, near_duplicate_threshold=1.01, near_duplicate_aligned=1.01)
    group = {Path(s).name: g for s, g in zip(res.data.sources, res.data.groups, strict=True)}
    assert group["yes_0.png"] == group["copy of yes_0.png"] != group["bigger.jpg"]


def test_recropped_rotated_and_mirrored_copies_share_a_group(tmp_path: Path) -> None:
    root = class_set(tmp_path / "d", per_class=6)
    original = Image.fromarray(head(3, size=128))
    # as augmented public sets hold them: mirrored and turned a little, zoomed in, shifted
    copy = original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(6, Image.Resampling.BILINEAR)
    copy = copy.crop((4, 10, 122, 128)).resize((140, 140), Image.Resampling.BICUBIC)
    save(copy, root / "yes" / "augmented.jpg", quality=80)
    save(original, root / "no" / "original.png")
    res = load_images(root, size=32)
    group = {Path(s).name: g for s, g in zip(res.data.sources, res.data.groups, strict=True)}
    assert group["original.png"] == group["augmented.jpg"]
    assert len(set(res.data.groups)) == 13  # the 12 distinct heads are not joined
    off = load_images(root, size=32, near_duplicate_aligned=1.01).data
    group = {Path(s).name: g for s, g in zip(off.sources, off.groups, strict=True)}
    assert group["original.png"] != group["augmented.jpg"]


def test_patient_groups_merge_with_duplicates(tmp_path: Path) -> None:
    root = _lgg_like(tmp_path / "lgg", patients=3, slices=3, rgb=False)
    a = root / "TCGA_XX_0000_2000"
    c = root / "TCGA_XX_0002_2000"
    shutil.copy(a / "TCGA_XX_0000_2000_1.png", c / "TCGA_XX_0002_2000_9.png")
    shutil.copy(a / "TCGA_XX_0000_2000_1_mask.png", c / "TCGA_XX_0002_2000_9_mask.png")
    data = load_images(root, size=16).data
    assert len(set(data.groups)) == 2
    assert "TCGA_XX_0000_2000+TCGA_XX_0002_2000" in data.groups


NAVONEEL = SHARED / "navoneel"
LGG = SHARED / "lgg"
MHANTOR = SHARED / "mhantor"


@pytest.mark.skipif(not NAVONEEL.is_dir(), reason=f"real data not present: {NAVONEEL}")
def test_navoneel_duplicates_never_cross_a_split() -> None:
    res = load_images(NAVONEEL, size=32)
    data = res.data
    assert len(data) == 253 and data.class_counts() == {"no": 98, "yes": 155}
    assert res.duplicate_groups >= 22
    digest = {s: hashlib.sha256(Path(s).read_bytes()).hexdigest() for s in data.sources}
    by_digest: dict[str, set[str]] = {}
    for s in data.sources:
        by_digest.setdefault(digest[s], set()).add(s)
    assert sum(len(v) >= 2 for v in by_digest.values()) == 22
    train, val, test = split_dataset(data, seed=0)
    side = {s: k for k, part in enumerate((train, val, test)) for s in part.sources}
    assert len(side) == 253
    for copies in by_digest.values():
        assert len({side[s] for s in copies}) == 1, copies
    assert not set(train.groups) & set(test.groups)


@pytest.mark.skipif(not MHANTOR.is_dir(), reason=f"real data not present: {MHANTOR}")
def test_mhantor_recropped_copies_share_a_group() -> None:
    data = load_images(MHANTOR, size=64).data
    assert len(data) == 400
    names = [str(Path(s).relative_to(MHANTOR)) for s in data.sources]
    group = dict(zip(names, data.groups, strict=True))
    # copies of one picture, re-cropped, turned or with another contrast (checked by eye),
    # three across the folders
    for a, b in [
        ("Train/Tumor/Tumor (87).jpg", "Validation/Tumor/Tumor (131).jpg"),
        ("Train/Normal/Normal (27).jpg", "Validation/Normal/Normal (23).jpg"),
        ("Train/Normal/Normal (82).jpg", "Train/Normal/Normal (95).jpg"),
        ("Train/Tumor/Tumor (28).jpg", "Validation/Tumor/Tumor (177).jpg"),
    ]:
        assert group[a] == group[b], (a, b)
    # and no group joins a Normal image with a Tumor one
    classes: dict[str, set[str]] = {}
    for name, g in group.items():
        classes.setdefault(g, set()).add(name.split("/")[1])
    assert max(len(c) for c in classes.values()) == 1
    train, _, test = split_dataset(data, seed=0)
    assert not set(train.groups) & set(test.groups)


@pytest.mark.skipif(not LGG.is_dir(), reason=f"real data not present: {LGG}")
def test_lgg_image_mask_layout() -> None:
    res = load_images(LGG, size=32, channel=1)
    data = res.data
    assert res.layout == "image_mask"
    assert len({g.split("+")[0] for g in data.groups}) == 8 and len(set(data.groups)) == 8
    # 284 slices; 3 near-empty edge slices (2 black, 1 a sliver of skull) fall under
    # min_brain_fraction and are dropped, as NIfTI slices are
    assert data.masks is not None and len(data) == 281 and res.dropped == 3
    assert data.class_names == ["normal", "tumor"] and 0 < int(data.labels.sum()) < len(data)
    # the image is channel 1 (FLAIR) of the RGB file, preprocessed with its mask
    i = next(k for k, s in enumerate(data.sources) if data.labels[k] == 1)
    src = Path(data.sources[i])
    rgb = np.asarray(Image.open(src).convert("RGB")).astype(np.float32)
    mask = np.asarray(Image.open(src.with_name(src.stem + "_mask.png")).convert("L")) > 127
    flair, m = preprocess(rgb[..., 1], mask, size=32)
    assert torch.allclose(data.images[i, 0], torch.from_numpy(flair), atol=1e-5)
    assert torch.equal(data.masks[i, 0], torch.from_numpy(m))
    other, _ = preprocess(rgb[..., 0], mask, size=32)
    assert not torch.allclose(data.images[i, 0], torch.from_numpy(other), atol=1e-2)


# ------------------------------------------------------------------------- options


def test_options_object_with_overrides(tmp_path: Path) -> None:
    root = class_set(tmp_path / "d", per_class=3)
    opts = LoadOptions(size=16, classes=["yes"])
    res = load_images(root, opts)
    assert res.data.images.shape == (3, 1, 16, 16) and res.data.class_names == ["yes"]
    res = load_images(root, opts, size=24, classes=None)
    assert res.data.images.shape == (6, 1, 24, 24) and opts.size == 16
    with pytest.raises(ConfigError, match="size"):
        load_images(root, size=2)
    with pytest.raises(ConfigError, match="layout"):
        load_images(root, layout="flat")
