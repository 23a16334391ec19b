"""What the baseline generators share (``augment``, ``lesion_paste``, ``folder``): the
classical augmentation (its params and its MONAI transforms, spatial and intensity), seeded,
balanced draws of source images, sample seeds, and class names matched ignoring case.

Importing this module loads no torch: it is imported inside the functions that use it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from synthmri.core.errors import DataError
from synthmri.core.interfaces import StrictParams

if TYPE_CHECKING:
    import torch

__all__ = [
    "AugmentParams",
    "balanced_draw",
    "intensity_transforms",
    "match_class",
    "sample_seed",
    "spatial_transforms",
]


class AugmentParams(StrictParams):
    """Classical augmentation: probabilities are per sample and transform."""

    flip_prob: float = Field(0.5, ge=0, le=1, description="probability of a left-right flip")
    affine_prob: float = Field(0.8, ge=0, le=1, description="probability of an affine warp")
    rotate_deg: float = Field(10.0, ge=0, le=180, description="largest rotation, degrees")
    scale: float = Field(0.1, ge=0, lt=1, description="zoom factor drawn from 1 ± scale")
    translate: float = Field(
        0.05, ge=0, le=0.5, description="largest shift, as a fraction of the side"
    )
    elastic_prob: float = Field(
        0.3, ge=0, le=1, description="probability of an elastic deformation"
    )
    elastic_spacing: float = Field(
        0.25, gt=0, le=1, description="elastic control-grid spacing, fraction of the side"
    )
    elastic_magnitude: float = Field(
        0.02, ge=0, le=0.2, description="largest elastic displacement, fraction of the side"
    )
    bias_prob: float = Field(0.3, ge=0, le=1, description="probability of a bias field")
    bias_coeff: float = Field(
        0.2, ge=0, le=1, description="largest coefficient of the (degree 3) bias field"
    )
    gamma_prob: float = Field(0.3, ge=0, le=1, description="probability of a gamma curve")
    gamma_min: float = Field(0.7, gt=0, description="smallest gamma")
    gamma_max: float = Field(1.5, gt=0, description="largest gamma")
    noise_prob: float = Field(0.3, ge=0, le=1, description="probability of Gaussian noise")
    noise_std: float = Field(
        0.02, ge=0, le=0.5, description="largest noise standard deviation (images in [0, 1])"
    )

    @model_validator(mode="after")
    def _gamma_order(self) -> AugmentParams:
        if self.gamma_min > self.gamma_max:
            raise ValueError("gamma_min must not exceed gamma_max")
        return self


def spatial_transforms(p: AugmentParams, size: int, keys: list[str]) -> list[Any]:
    """MONAI flip, affine and elastic transforms of ``keys`` (the first an image, bilinear;
    the others masks, nearest), with zero padding (the background of a slice)."""
    from monai.transforms import Rand2DElasticd, RandAffined, RandFlipd

    modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
    return [
        RandFlipd(keys, prob=p.flip_prob, spatial_axis=1),
        RandAffined(
            keys,
            prob=p.affine_prob,
            rotate_range=math.radians(p.rotate_deg),
            scale_range=p.scale,
            translate_range=p.translate * size,
            mode=modes,
            padding_mode="zeros",
        ),
        Rand2DElasticd(
            keys,
            spacing=max(2.0, p.elastic_spacing * size),
            magnitude_range=(0.0, p.elastic_magnitude * size),
            prob=p.elastic_prob,
            mode=modes,
            padding_mode="zeros",
        ),
    ]


def intensity_transforms(p: AugmentParams, key: str = "image") -> list[Any]:
    """MONAI bias field, gamma and Gaussian noise transforms of ``key``."""
    from monai.transforms import RandAdjustContrastd, RandBiasFieldd, RandGaussianNoised

    return [
        RandBiasFieldd([key], coeff_range=(0.0, p.bias_coeff), prob=p.bias_prob),
        RandAdjustContrastd([key], gamma=(p.gamma_min, p.gamma_max), prob=p.gamma_prob),
        RandGaussianNoised([key], std=p.noise_std, prob=p.noise_prob),
    ]


def sample_seed(seed: int | None) -> int:
    """``seed``, or a fresh random one when it is None (so a sample can name its seed)."""
    import torch

    if seed is not None:
        return int(seed)
    return int(torch.randint(0, 2**31 - 1, ()).item())


def balanced_draw(n: int, count: int, seed: int) -> torch.Tensor:
    """``n`` indices into ``range(count)``, shuffled by ``seed``: ``n`` distinct ones when
    ``n <= count``, else every index ``n // count`` or ``n // count + 1`` times (blocks of
    seeded permutations), so no source image is used much more often than another."""
    import torch

    if count < 1:
        raise ValueError("balanced_draw needs at least one source")
    g = torch.Generator().manual_seed(int(seed))
    blocks = -(-n // count)
    if blocks == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([torch.randperm(count, generator=g) for _ in range(blocks)])[:n]


def match_class(name: str, available: list[str], what: str) -> int:
    """The index of ``name`` in ``available`` (ignoring case); else a DataError saying
    ``what`` lacks it and what it has."""
    lowered = [a.lower() for a in available]
    if name.lower() not in lowered:
        raise DataError(
            f"{what} has no class {name!r} (it has: {', '.join(available) or 'none'})",
            hint="class names are matched to the real data's ignoring case",
        )
    return lowered.index(name.lower())
