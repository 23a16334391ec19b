"""Procedural axial brain-slice phantoms with optional tumours and exact tumour masks.

The embedded default data set. ``make_phantoms`` draws slices that look like axial
brain MRI: scalp, skull (with marrow), a CSF rim, a folded grey-matter cortex with
sulci, textured white matter, butterfly-shaped lateral ventricles, deep grey matter
and the interhemispheric fissure, in T1, T2 or FLAIR contrast, under a smooth
multiplicative bias field and Rician noise. About ``tumor_fraction`` of the slices
carry a tumour (irregular core, optional necrotic centre, oedema rim, mass effect)
and its exact mask.

All randomness comes from numpy Generators seeded by ``(seed, slice index)``; torch's
global RNG is never used. The same arguments give bit-identical output, and the
random parameters of slice ``i`` (anatomy, pose, contrast, tumour, noise) depend only on
``seed`` and ``i``, not on ``n`` nor on the label: ``tumor_fraction=1.0`` and ``0.0`` give
the same heads with and without tumours.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from synthmri.core.data.preprocessing import one_torch_thread
from synthmri.core.errors import ConfigError
from synthmri.core.interfaces import ImageSet

__all__ = [
    "CONTRASTS",
    "MASKS",
    "MAX_PIXELS",
    "MAX_SIZE",
    "PHANTOM_CLASSES",
    "PHANTOM_SOURCE",
    "check_phantom_args",
    "make_phantoms",
    "write_phantoms",
]

#: the largest side length of a phantom
MAX_SIZE = 1024
#: the most pixels (n x size x size) one call draws: 1 GiB of float32 images
MAX_PIXELS = 2**28

PHANTOM_CLASSES: list[str] = ["normal", "tumor"]
"""Class names of the phantom set: label 0 = normal, 1 = tumor."""

PHANTOM_SOURCE = "phantom:"
"""How the source of a phantom made in memory begins (``phantom:seed=<seed>:<i>``)."""

CONTRASTS: tuple[str, ...] = ("t1", "t2", "flair")
"""The MRI contrasts a phantom can have (``contrast="mixed"`` draws one per slice)."""

MASKS: tuple[str, ...] = ("core", "whole")
"""What a phantom's mask covers: the tumour core, or the whole tumour (core and oedema)."""

_T = 720  # resolution of the per-slice angular lookup tables
_BATCH_PIXELS = 1 << 18  # pixels rendered at once (small enough to stay in cache)
_TWO_PI = 2.0 * math.pi

# Tissue intensities per contrast, before a per-slice jitter of a few percent:
# scalp, skull, marrow, csf, gm, wm, deep gm, oedema, necrosis.
_TISSUES = ("scalp", "skull", "marrow", "csf", "gm", "wm", "deep", "oedema", "necrosis")
_BASE = {
    "t1": (0.85, 0.06, 0.55, 0.12, 0.50, 0.73, 0.60, 0.50, 0.12),
    "t2": (0.62, 0.05, 0.33, 0.95, 0.56, 0.37, 0.47, 0.88, 0.93),
    "flair": (0.55, 0.05, 0.33, 0.07, 0.56, 0.41, 0.50, 0.90, 0.26),
}
# Tumour core intensity per contrast: (hypo range, hyper range, P(hyper)). Each range keeps
# the core >= ~0.1 away from every normal tissue and from the oedema, so the lesion shows.
_CORE = {
    "t1": ((0.24, 0.33), (0.88, 0.95), 0.2),  # mostly hypointense, sometimes haemorrhagic
    "t2": ((0.68, 0.76), (0.68, 0.76), 1.0),  # hyperintense to brain, darker than the oedema
    "flair": ((0.68, 0.76), (0.68, 0.76), 1.0),  # hyperintense to brain, darker than the oedema
}


# ----------------------------------------------------------------------------- public API


def make_phantoms(
    n: int,
    size: int = 128,
    seed: int = 0,
    *,
    tumor_fraction: float = 0.5,
    contrast: str = "mixed",
    noise: float = 0.03,
    bias_field: float = 0.2,
    mask: str = "core",
) -> ImageSet:
    """Draw ``n`` procedural axial brain slices, about ``tumor_fraction`` of them with a tumour.

    Returns an ``ImageSet`` with images ``[n, 1, size, size]`` float32 in [0, 1], labels
    (0 normal / 1 tumor, exactly ``round(n * tumor_fraction)`` tumours, shuffled by the
    seed), ``class_names=PHANTOM_CLASSES``, masks ``[n, 1, size, size]`` of 0/1, sources
    ``"phantom:seed=<seed>:<i>"`` and groups equal to the sources (each slice is its own
    patient). With ``mask="core"`` the mask is the tumour itself (solid core plus necrotic
    centre), without the oedema around it; with ``mask="whole"`` it is the whole tumour of
    BraTS and of FLAIR abnormality masks such as LGG's: the core and the oedema where it
    shows at half its intensity or more (white matter; the cortex, which shows it at 0.45,
    is left out). It lies inside the brain; normal slices have an all-zero mask.

    ``contrast`` is ``"t1"``, ``"t2"``, ``"flair"`` or ``"mixed"`` (one drawn per slice);
    ``noise`` is the Rician noise sigma (each slice draws within +-25 % of it) and
    ``bias_field`` the strength of the smooth multiplicative bias (0 turns it off).

    Renders on one CPU thread (torch's thread count is restored afterwards): the work is
    many small element-wise operations, which extra threads slow down on a busy machine.
    """
    check_phantom_args(n, size, seed, tumor_fraction, contrast, noise, bias_field, mask)
    n, size, seed = int(n), int(size), int(seed)
    n_tumor = round(float(n) * float(tumor_fraction))
    labels = np.zeros(n, dtype=np.int64)
    labels[:n_tumor] = 1
    np.random.default_rng([seed, n, 0x7E]).shuffle(labels)

    per_batch = max(1, _BATCH_PIXELS // (size * size))
    images, masks = [], []
    with one_torch_thread():
        for start in range(0, n, per_batch):
            idx = range(start, min(n, start + per_batch))
            draws = [_draw_slice(seed, i, size, contrast, bool(labels[i]), noise) for i in idx]
            img, msk = _render(_stack(draws), size, bias_field, whole=mask == "whole")
            images.append(img)
            masks.append(msk)
    sources = [f"{PHANTOM_SOURCE}seed={seed}:{i}" for i in range(n)]
    return ImageSet(
        images=torch.cat(images).unsqueeze(1),
        labels=torch.from_numpy(labels),
        class_names=list(PHANTOM_CLASSES),
        masks=torch.cat(masks).unsqueeze(1),
        sources=sources,
        groups=list(sources),
    )


def write_phantoms(
    out_dir: Path | str, n: int, size: int = 128, seed: int = 0, **kw: Any
) -> list[Path]:
    """Write ``make_phantoms(n, size, seed, **kw)`` as a class-folder data set of 8-bit PNGs.

    Layout: ``out_dir/normal/phantom_0007.png``, ``out_dir/tumor/phantom_0003.png`` (both
    class folders are always created) and, beside every image, its mask
    ``<stem>_mask.png`` (mode L, 0/255; all zero for normal slices). Refuses, with a
    ``ConfigError``, to write into an existing folder that is not empty. Returns the
    image paths in slice order.
    """
    from synthmri.core.files import OutputDir, output_guard

    check_phantom_args(n, size, seed, **kw)
    out = Path(out_dir)
    with output_guard(out):
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(
                f"refusing to write phantoms into {out}: it exists and is not an empty folder",
                hint="give a new or empty folder",
            )
    files = OutputDir(out, empty=True)
    data = make_phantoms(n, size, seed, **kw)
    for name in PHANTOM_CLASSES:
        files.mkdir(name)
    width = max(4, len(str(n - 1)))
    imgs = (data.images[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    msks = (data.masks[:, 0] > 0.5).to(torch.uint8).numpy() * 255  # type: ignore[union-attr]
    labels = data.labels.tolist()  # type: ignore[union-attr]
    paths = []
    for i in range(n):
        folder = PHANTOM_CLASSES[labels[i]]
        stem = f"phantom_{i:0{width}d}"
        paths.append(files.save_png(imgs[i], folder, f"{stem}.png"))
        files.save_png(msks[i], folder, f"{stem}_mask.png")
    return paths


# ------------------------------------------------------------------------------ internals


def check_phantom_args(
    n: Any,
    size: Any,
    seed: Any = 0,
    tumor_fraction: Any = 0.5,
    contrast: Any = "mixed",
    noise: Any = 0.03,
    bias_field: Any = 0.2,
    mask: Any = "core",
) -> None:
    """Raise ConfigError (one line) for arguments make_phantoms cannot use (a size over
    ``MAX_SIZE``, more than ``MAX_PIXELS`` pixels in all)."""
    for name, value, least in (("n", n, 1), ("size", size, 16), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ConfigError(f"phantoms: {name} must be an integer >= {least}, got {value!r}")
    if size > MAX_SIZE:
        raise ConfigError(f"phantoms: size must be at most {MAX_SIZE}, got {size}")
    if n * size * size > MAX_PIXELS:
        raise ConfigError(
            f"phantoms: {n} slices of {size}x{size} px are {n * size * size / 1e6:.0f} M pixels, "
            f"over the limit of {MAX_PIXELS / 1e6:.0f} M (1 GiB); use fewer or smaller slices"
        )
    for name, value, top in (
        ("tumor_fraction", tumor_fraction, 1.0),
        ("noise", noise, 0.5),
        ("bias_field", bias_field, 1.0),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= top:
            raise ConfigError(f"phantoms: {name} must be a number in [0, {top:g}], got {value!r}")
    if contrast not in (*CONTRASTS, "mixed"):
        raise ConfigError(
            f"phantoms: unknown contrast {contrast!r}; choose one of {[*CONTRASTS, 'mixed']}"
        )
    if mask not in MASKS:
        raise ConfigError(f"phantoms: unknown mask {mask!r}; choose one of {list(MASKS)}")


_PHI = np.linspace(-math.pi, math.pi, _T, endpoint=False)  # angle of table column j
_PHI_POS = _PHI % _TWO_PI
_K = np.arange(1, 11)[:, None]
_BASIS = np.concatenate([np.cos(_K * _PHI), np.sin(_K * _PHI)])  # [20, T]: cos k.phi, sin k.phi


def _harmonics(rng: np.random.Generator, amps: np.ndarray, first: int = 1) -> np.ndarray:
    """A smooth periodic function on the angle table: sum of cosines with random phases."""
    phase = rng.uniform(0.0, _TWO_PI, len(amps))
    coef = np.zeros(20)
    k = np.arange(first, first + len(amps)) - 1
    coef[k] = amps * np.cos(phase)  # cos(k phi + p) = cos k phi cos p - sin k phi sin p
    coef[k + 10] = -amps * np.sin(phase)
    return coef @ _BASIS


def _nearest(ang: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every table angle: the index of the nearest of ``ang`` and the angular distance."""
    a = ang % _TWO_PI
    order = np.argsort(a)
    a = a[order]
    n = len(a)
    j = np.searchsorted(a, _PHI_POS)
    left, right = (j - 1) % n, j % n
    d_left = (_PHI_POS - a[left]) % _TWO_PI
    d_right = (a[right] - _PHI_POS) % _TWO_PI
    use_left = d_left < d_right
    near = np.where(use_left, left, right)
    return order[near], np.where(use_left, d_left, d_right)


def _draw_slice(
    seed: int, i: int, size: int, contrast: str, tumor: bool, noise: float
) -> dict[str, Any]:
    """All random parameters, lookup tables and low-resolution fields of slice ``i``."""
    ss = np.random.SeedSequence([seed, i])
    ra, rt, rn = (np.random.default_rng(s) for s in ss.spawn(3))
    d: dict[str, Any] = {}

    # --- contrast and intensities
    c_idx = int(ra.integers(len(CONTRASTS)))
    name = contrast if contrast != "mixed" else CONTRASTS[c_idx]
    d["tissue"] = np.asarray(_BASE[name]) * ra.uniform(0.95, 1.05, len(_TISSUES))

    # --- pose and head shape (image coordinates in [-1, 1])
    d["theta"] = ra.uniform(-0.3, 0.3)
    d["tx"], d["ty"] = ra.uniform(-0.06, 0.06, 2)
    hy = ra.uniform(0.8, 0.93)
    d["hy"], d["hx"] = hy, hy * ra.uniform(0.76, 0.88)
    amps = ra.normal(0.0, 1.0, 6) * np.array([0.02, 0.03, 0.015, 0.01, 0.006, 0.004])
    r_head = 1.0 + _harmonics(ra, amps)
    r_head += 0.03 * np.clip(np.sin(_PHI), 0, None)  # occiput a little broader than the brow

    t_scalp, t_skull = ra.uniform(0.045, 0.075), ra.uniform(0.04, 0.06)
    t_csf, t_gm = ra.uniform(0.012, 0.035), ra.uniform(0.045, 0.065)
    e1 = 1.0 - t_scalp
    e2 = e1 - t_skull
    eb = e2 - t_csf
    d["e1"], d["e2"], d["eb"] = e1, e2, eb
    d["marrow"] = float(ra.random() < 0.8)

    # --- cortex folding: sulci at angular positions (primary, secondary and the two sylvian
    # fissures), each with a depth and a width; they bend with depth (``twist``)
    n_p = int(ra.integers(18, 28))
    ang_p = (np.arange(n_p) + ra.uniform(-0.35, 0.35, n_p)) * _TWO_PI / n_p
    n_q = int(ra.integers(6, 16))
    sylvian = np.array([-0.3, math.pi + 0.3]) + ra.uniform(-0.2, 0.2, 2)
    ang = np.concatenate([ang_p + ra.uniform(0, _TWO_PI), ra.uniform(0, _TWO_PI, n_q), sylvian])
    depth = np.concatenate(
        [ra.uniform(0.07, 0.17, n_p), ra.uniform(0.02, 0.06, n_q), ra.uniform(0.18, 0.28, 2)]
    )
    wide = np.concatenate([ra.uniform(0.8, 1.3, n_p), np.full(n_q, 0.8), ra.uniform(1.2, 2.0, 2)])
    near, dist = _nearest(ang)
    gm_thick = t_gm * (1.0 + _harmonics(ra, ra.uniform(0, 0.12, 4), first=2))
    twist = _harmonics(ra, ra.uniform(0.0, 0.6, 8), first=3)  # sulcus bend (rad per unit depth)
    d["tables"] = np.stack([r_head, twist, gm_thick])
    d["cortex"] = np.stack([dist * eb, depth[near], wide[near]])

    # --- ventricles, deep grey matter, fissure (brain coordinates: brain edge ~ radius 1)
    # Two levels: the ventricle bodies ")(" (upper), or frontal horns, atria and the deep grey
    # nuclei (lower). Per pair: present, centre (AP), half gap, curvature, tilt, half width,
    # half length, front flare. Deep nuclei per side: centre x, centre y, semi-axes x, y.
    vs = ra.uniform(0.7, 1.5)
    hw = ra.uniform(0.04, 0.06) * vs
    if ra.random() < 0.5:
        vc = ra.uniform(-0.1, 0.04)
        hl = ra.uniform(0.22, 0.32) * (0.8 + 0.2 * vs)
        pairs = [
            [1.0, vc, ra.uniform(0.025, 0.06), ra.uniform(0.8, 2.2), 0.0, hw, hl, 0.2],
            [0.0, 0.0, 0.1, 0.0, 0.0, 0.05, 0.1, 0.0],
        ]
        nuclei = np.zeros((3, 4))
        fissure = [vc - hl - ra.uniform(0.0, 0.06), vc + hl + ra.uniform(0.0, 0.06)]
    else:
        vc = ra.uniform(-0.3, -0.2)
        hl = ra.uniform(0.1, 0.15) * (0.8 + 0.2 * vs)
        gap = ra.uniform(0.02, 0.04)
        pairs = [
            [1.0, vc, gap, ra.uniform(0.0, 1.0), ra.uniform(-0.35, -0.15), hw, hl, 0.6],
            [
                float(ra.random() < 0.8),
                ra.uniform(0.3, 0.42),
                ra.uniform(0.1, 0.16),
                ra.uniform(0.0, 1.0),
                ra.uniform(-0.4, -0.1),
                ra.uniform(0.6, 0.9) * hw,
                ra.uniform(0.06, 0.12) * vs,
                -0.3,
            ],
        ]
        nuclei = np.array(
            [
                [gap + 2 * hw + 0.04, vc + 0.02, 0.05, 0.09],  # caudate heads
                [ra.uniform(0.24, 0.3), vc + ra.uniform(0.18, 0.25), 0.06, 0.15],  # lentiform
                [ra.uniform(0.09, 0.12), ra.uniform(0.1, 0.16), 0.085, 0.12],  # thalami
            ]
        )
        fissure = [vc - hl - ra.uniform(0.05, 0.15), ra.uniform(0.38, 0.5)]
    d["v"] = np.asarray(pairs)
    d["nuclei"] = nuclei
    d["deep"] = float(nuclei[0, 2] > 0)
    d["fissure"] = np.asarray(fissure)
    d["gain"] = ra.uniform(0.85, 0.95)
    d["sigma"] = noise * ra.uniform(0.75, 1.25)

    # --- low-resolution random fields: bias (4x4), texture (8x8, g x g)
    g = max(4, min(24, size // 5))
    d["f4"] = ra.standard_normal((1, 4, 4), dtype=np.float32)
    d["f8"] = ra.standard_normal((2, 8, 8), dtype=np.float32)
    d["fg"] = ra.standard_normal((3, g, g), dtype=np.float32)

    # --- tumour (always drawn, so slice anatomy does not depend on the label)
    brain_px = eb * min(d["hx"], d["hy"]) * size / 2.0
    r_t = math.exp(rt.uniform(math.log(0.07), math.log(0.32)))
    r_t = max(r_t, 2.2 / brain_px)  # at least ~2 px radius, so the mask is never empty
    elong = rt.uniform(0.75, 1.3)
    reach = 0.78 - 1.35 * max(elong, 1.0 / elong) * r_t
    cr = math.sqrt(rt.random()) * max(0.0, reach)
    ca = rt.uniform(0.0, _TWO_PI)
    lobes = rt.uniform(0.0, 1.0, 6) / np.arange(2, 8) ** 0.7
    lobes *= min(1.0, 0.3 / lobes.sum())
    core_tab = 1.0 + _harmonics(rt, lobes, first=2)
    oedema_tab = 1.0 + _harmonics(rt, rt.uniform(0, 0.12, 5), first=2)
    lo, hi, p_hyper = _CORE[name]
    core_value = rt.uniform(*(hi if rt.random() < p_hyper else lo))
    oedema = rt.uniform(1.2, 2.1) if rt.random() < 0.85 else rt.uniform(1.02, 1.15)
    necrosis = rt.uniform(0.35, 0.6) if (rt.random() < 0.5 and r_t * brain_px > 5) else 0.0
    d["ref"] = max(float(d["tissue"].max()), core_value)
    d["tumor"] = np.array(
        [
            float(tumor),
            cr * math.cos(ca),
            cr * math.sin(ca),
            r_t,
            elong,
            rt.uniform(0.0, math.pi),  # orientation
            oedema,
            necrosis,
            core_value,
            rt.uniform(0.1, 0.5) * r_t,  # mass effect
            rt.uniform(0.05, 0.15),  # core heterogeneity
        ]
    )
    d["ttables"] = np.stack([core_tab, oedema_tab])

    # --- image noise: independent stream
    d["noise"] = rn.standard_normal((2, size, size), dtype=np.float32)
    return d


def _stack(draws: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack per-slice draws into float32 tensors with a leading batch dimension."""
    return {
        k: torch.from_numpy(np.stack([np.asarray(dr[k], dtype=np.float32) for dr in draws]))
        for k in draws[0]
    }


def _ramp(z: torch.Tensor) -> torch.Tensor:
    """Partial-volume membership from a signed distance in pixels (positive inside)."""
    return (z + 0.5).clamp_(0.0, 1.0)


def _paint(img: torch.Tensor, value: torch.Tensor | float, m: torch.Tensor) -> None:
    """Blend ``value`` into ``img`` in place with membership ``m``."""
    img.add_(m * (value - img))


def _lookup(tables: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Interpolate periodic tables ``[B, K, T]`` at angles ``[B, H, W]``: ``[B, K, H, W]``."""
    b, k, t = tables.shape
    wrapped = torch.cat([tables, tables[:, :, :1]], dim=2)  # column T repeats column 0
    f = (angle.reshape(b, 1, -1) + math.pi).mul_(t / _TWO_PI).clamp_(0.0, t - 1e-3)
    i0 = f.long()
    w = f - i0
    v0 = wrapped.gather(2, i0.expand(b, k, -1))
    v1 = wrapped.gather(2, (i0 + 1).expand(b, k, -1))
    return v0.add_(w * (v1 - v0)).reshape(b, k, *angle.shape[1:])


def _fields(p: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """The smooth random fields of a batch at full resolution: [B, 6, size, size].

    Channels: bias (from 4x4), two textures (from 8x8), three fine textures (from g x g).
    Bicubic up to a quarter of the size, then bilinear, which is much cheaper and as smooth.
    """
    mid = max(8, size // 4)
    up = [
        F.interpolate(p[k], size=(mid, mid), mode="bicubic", align_corners=True)
        for k in ("f4", "f8", "fg")
    ]
    return F.interpolate(torch.cat(up, 1), size=(size, size), mode="bilinear", align_corners=True)


def _render(
    p: dict[str, torch.Tensor], size: int, bias_field: float, whole: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a batch of slices from their stacked parameters: (images, masks) [B, H, W];
    the masks are the core, or with ``whole`` the core and the oedema."""
    b = p["theta"].shape[0]

    def col(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(b, 1, 1)

    tis = {name: col(p["tissue"][:, j]) for j, name in enumerate(_TISSUES)}
    xs = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    dx = xs.view(1, 1, size) - col(p["tx"])
    dy = xs.view(1, size, 1) - col(p["ty"])
    cos, sin = col(torch.cos(p["theta"])), col(torch.sin(p["theta"]))
    px = cos * dx + sin * dy  # head frame, image units (x: left-right, y: anterior-posterior)
    py = cos * dy - sin * dx
    hx, hy = col(p["hx"]), col(p["hy"])
    u, v = px / hx, py / hy
    r = torch.sqrt(u * u + v * v)
    phi = torch.atan2(v, u)
    r_head, twist, gm_thick = _lookup(p["tables"], phi).unbind(1)
    rho = r / r_head
    scale = (hx + hy) * (size / 4.0)  # pixels per unit of rho
    unit = scale * 0.0185  # thin structures keep their anatomical width: ~1 px at 128 px
    e1, e2, eb = col(p["e1"]), col(p["e2"]), col(p["eb"])
    fields = _fields(p, size)
    tex_a, tex_b, fine_a, fine_b, fine_c = fields[:, 1:].unbind(1)

    # --- head: scalp, skull with marrow, CSF rim, cortex with sulci, white matter
    img = torch.zeros(b, size, size)
    _paint(img, tis["scalp"] * (1 + 0.05 * tex_a), _ramp((1.0 - rho) * scale))
    _paint(img, tis["skull"], _ramp((e1 - rho) * scale))
    mid, half = (e1 + e2) / 2, (e1 - e2) * 0.22
    _paint(img, tis["marrow"], _ramp((half - (rho - mid).abs()) * scale) * col(p["marrow"]))
    _paint(img, tis["csf"], _ramp((e2 - rho) * scale))
    brain = _ramp((eb - rho) * scale)
    gm_val = tis["gm"] * (1 + 0.04 * tex_b + 0.03 * fine_a)
    _paint(img, gm_val, brain)
    phi_s = phi + twist * (eb - rho).clamp(0.0, 0.3)
    sul_lat, sul_depth, sul_wide = _lookup(p["cortex"], phi_s).unbind(1)
    floor = eb - sul_depth
    lat = sul_lat * (rho / eb)  # distance to the nearest sulcus line, in units of rho
    below = (floor - rho).clamp_min(0.0)
    to_sulcus = torch.sqrt(lat * lat + below * below)
    opening = ((rho - floor) / sul_depth).clamp(0.0, 1.0)  # 0 at the sulcus floor, 1 at surface
    half_w = (0.3 + 0.6 * opening) * sul_wide * unit  # pixels
    sulcus = _ramp(half_w - to_sulcus * scale) * brain
    _paint(img, tis["csf"], sulcus)
    # white matter: farther than the cortical thickness from the surface and from every sulcus
    wm = _ramp((torch.minimum(eb - rho, to_sulcus) - gm_thick) * scale)
    _paint(img, tis["wm"] * (1 + 0.03 * tex_a + 0.025 * fine_b), wm)
    # weight of "parenchyma where oedema shows": 1 in WM, 0.45 in GM, 0 elsewhere
    paren = (brain - sulcus).clamp_min(0.0) * 0.45
    _paint(paren, 1.0, wm)

    # brain coordinates (brain edge at radius ~1)
    bu, bv = u / eb, v / eb
    bscale = eb * scale  # pixels per brain unit
    mid_px = px.abs() * (size / 2.0)  # distance to the midline in pixels
    tp = p["tumor"]
    ti = (tp[:, 0] > 0).nonzero().reshape(-1)
    n_t = len(ti)

    def tcol(x: torch.Tensor) -> torch.Tensor:
        return x[ti].reshape(n_t, 1, 1)

    # --- deep structures, computed on the central window where they can be
    c0 = int(size * 0.14)
    win = (slice(None), slice(c0, size - c0), slice(c0, size - c0))
    wu, wv = bu[win].clone(), bv[win].clone()
    if n_t:  # mass effect: structures pushed away from the tumour centre
        du, dv = wu[ti] - tcol(tp[:, 1]), wv[ti] - tcol(tp[:, 2])
        dist = torch.sqrt(du * du + dv * dv).clamp_min(1e-6)
        fall = ((dist / (2.5 * tcol(tp[:, 3]))) ** 2).clamp_max(30.0)
        push = tcol(tp[:, 9]) * torch.exp(-fall) / dist
        wu[ti] -= push * du
        wv[ti] -= push * dv
    img_w, paren_w, brain_w, mid_w = img[win], paren[win], brain[win], mid_px[win]  # views

    # deep grey nuclei (caudate heads, lentiform nuclei, thalami), painted soft
    deep = col(p["deep"])
    nuc = p["nuclei"]
    for j in range(nuc.shape[1]):
        cx0, cy0, ax0, ay0 = (col(nuc[:, j, k]).clamp_min(1e-3) for k in range(4))
        for side in (-1.0, 1.0):
            e = ((side * wu - cx0) / ax0) ** 2 + ((wv - cy0) / ay0) ** 2
            m = _ramp((1 - torch.sqrt(e)) * ax0 * bscale * 0.6) * (deep * brain_w)
            _paint(img_w, tis["deep"], m * 0.85)
            _paint(paren_w, 0.45, m)

    # lateral ventricles: pairs of curved, widening bananas around the septum
    vent = torch.zeros_like(img_w)
    for j in range(p["v"].shape[1]):
        on, vc, gap, curv, tilt, half_v, half_l, flare = (col(p["v"][:, j, k]) for k in range(8))
        t = (wv - vc) / half_l
        width = half_v * (1 + 0.5 * t * t - flare * t).clamp_min(0.4)
        centre = gap + width + half_l * (0.5 * curv * half_l * t * t + tilt * t)
        reach = torch.minimum(width, half_l) * bscale
        for side in (-1.0, 1.0):
            e = torch.sqrt(((side * wu - centre) / width) ** 2 + t * t)
            vent = torch.maximum(vent, _ramp((1 - e) * reach) * on)
    # third ventricle: a thin slit between the thalami
    slit = _ramp(0.5 * unit - mid_w) * _ramp((0.1 - (wv - col(nuc[:, 2, 1])).abs()) * bscale)
    vent = torch.maximum(vent, slit * deep) * brain_w
    _paint(img_w, tis["csf"], vent)
    _paint(paren_w, 0.0, vent)

    # --- midline: medial cortex and the interhemispheric fissure (anterior and posterior)
    fis = p["fissure"]
    along = torch.maximum((col(fis[:, 0]) - bv), (bv - col(fis[:, 1]))) * bscale
    on_mid = _ramp(along) * brain
    medial = _ramp((0.6 + gm_thick * 35.0) * unit - mid_px) * on_mid
    _paint(img, gm_val, medial)
    _paint(paren, 0.45, medial)
    fissure = _ramp(0.55 * unit - mid_px) * on_mid
    _paint(img, tis["csf"], fissure)
    _paint(paren, 0.0, fissure)

    # --- tumour (tumour slices only): oedema in parenchyma, heterogeneous core, necrosis
    masks = torch.zeros(b, size, size)
    if n_t:
        r_t = tcol(tp[:, 3])
        du, dv = bu[ti] - tcol(tp[:, 1]), bv[ti] - tcol(tp[:, 2])
        ca, sa = tcol(torch.cos(tp[:, 5])), tcol(torch.sin(tp[:, 5]))
        elong = tcol(tp[:, 4])
        lu = (ca * du + sa * dv) / elong
        lv = (ca * dv - sa * du) * elong
        ld = torch.sqrt(lu * lu + lv * lv)
        ttab = _lookup(p["ttables"][ti], torch.atan2(lv, lu))
        core_r, oed_r = ttab[:, 0] * r_t, ttab[:, 1] * r_t * tcol(tp[:, 6])
        oedema = ((oed_r - ld) / (0.35 * (oed_r - r_t).clamp_min(1e-3))).clamp_(0.0, 1.0)
        oedema = oedema * oedema * (3 - 2 * oedema) * paren[ti]  # smoothstep fade-out
        brain_t, bst = brain[ti], bscale[ti]
        core = _ramp((core_r - ld) * bst) * brain_t
        img_t, fine_t = img[ti], fine_c[ti]
        _paint(img_t, tis["oedema"][ti] * (1 + 0.04 * fine_t), oedema)
        _paint(img_t, tcol(tp[:, 8]) * (1 + tcol(tp[:, 10]) * fine_t), core)
        nec = tcol(tp[:, 7])
        necrosis = _ramp((core_r * nec - ld) * bst) * (nec > 0) * core
        _paint(img_t, tis["necrosis"][ti], necrosis)
        img[ti] = img_t
        lesion = (core >= 0.5) | (oedema >= 0.5) if whole else core >= 0.5
        masks[ti] = (lesion & (brain_t >= 0.5)).float()

    # --- acquisition: bias field, then a gain that does not depend on the tumour (the
    # brightest tissue the slice could show, lesion included, under the bias inside the head)
    if bias_field > 0:
        f = fields[:, 0]
        f = f / f.flatten(1).abs().amax(1).clamp_min(1e-6).view(b, 1, 1)
        bias = torch.exp(bias_field * f)
        img = img * bias
        peak = (bias * (rho < 1.0)).flatten(1).amax(1).clamp_min(1e-6).view(b, 1, 1)
    else:
        peak = torch.ones(b, 1, 1)
    img = img * (col(p["gain"]) / (peak * col(p["ref"])))
    sigma = col(p["sigma"])
    n1, n2 = p["noise"][:, 0], p["noise"][:, 1]
    img = torch.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
    return img.clamp_(0.0, 1.0), masks
