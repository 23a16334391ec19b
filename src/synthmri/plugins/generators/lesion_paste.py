"""``lesion_paste``: real tumours cut with their masks and pasted into healthy slices.

A copy-paste baseline in the style of TumorCP (Yang et al., MICCAI 2021) and CarveMix
(Zhang et al., MICCAI 2021): new (image, exact mask) pairs of the tumour class, made from
the real train part of an image+mask data set, that any learned mask-emitting generator
should beat. It is conditional (one model for both classes: ``per_class: false`` in a
recipe).

``fit`` splits the training slices into lesion donors (slices of the tumour class whose mask
has at least ``min_lesion_pixels`` pixels) and healthy targets (slices of the healthy class
with an empty mask). For every slice it computes a head mask (smoothed image above half an
isodata threshold, holes filled, largest component) and the brain inside it (the head mask
eroded by ``brain_margin`` of the head's radius, so lesions keep off the scalp and skull).
A donor's lesion is its mask's bounding box with a margin, cut from the image with its
mask, with the donor's brain-intensity median, interquartile range and quantiles.

``sample(n, label=tumour, seed=s)``, for each image: a healthy slice (each used about
equally often) and its brain mask, warped together by ``augment``'s default spatial
transforms (flip, affine, elastic; ``augment_base``); a donor among ``donor_candidates``
random ones, the one whose brain-intensity quantiles are closest to the target's (so a
FLAIR lesion goes into a FLAIR-like slice); the lesion flipped, rotated and zoomed by
``1 ± scale`` at random; its intensities mapped from the donor's brain statistics to the
target's (``match_intensity``: median and interquartile range); the region carved out with
it (CarveMix): the mask grown by a margin drawn in [0, ``context``] pixels at 64 px, which
carries the lesion's oedema along (the masks of many data sets, the phantoms' included,
cover the core only); a position drawn uniformly among those where the whole carved region
lies inside the target's brain; blended opaque over the carved region with a soft edge (one
pixel more, smoothed by a Gaussian of ``blend_sigma`` pixels at 64 px); then ``augment``'s
default intensity transforms (bias field, gamma, noise) on the whole slice. The mask of the
sample is the pasted lesion mask, exactly. When no position fits after ``max_tries`` draws
(a lesion too large for the slice), the lesion is pasted where it was in its donor slice
and the sample's source says so.

``sample(n, label=healthy)`` returns the healthy training slices under the same base
augmentation, with empty masks: the two classes share one base distribution and differ only
by the lesions, so a classifier trained on them must learn the lesion, not the slice. The
base augmentation is on by default: without it (``augment_base: false``) every healthy
sample is an exact copy of a training slice, and ``privacy`` flagged half of them on
phantoms (``docs/results.md``, which also shows that on phantoms neither version taught
brain_cnn the lesions within the ``baselines`` recipe's budget). ``label=None`` gives
tumour samples. Every sample is built from real training slices, so ``privacy`` flags some
of them as near-copies: the honest outcome for a copy-paste baseline. Not modelled: mass
effect (the lesion does not push the tissue around it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from synthmri import hookimpl
from synthmri.core.errors import ConfigError, DataError
from synthmri.core.interfaces import Generator, ImageSet, StrictParams
from synthmri.plugins.generators._baselines import (
    AugmentParams,
    balanced_draw,
    intensity_transforms,
    match_class,
    sample_seed,
    spatial_transforms,
)

if TYPE_CHECKING:
    import numpy as np

    from synthmri.core.training import RunContext

__all__ = ["LesionPaste", "brain_mask"]

log = logging.getLogger(__name__)

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)  # brain-intensity profile used to choose a donor
NO_MASKS_HINT = (
    "lesion_paste needs image+mask data (layout image_mask, or <name>_mask files beside the "
    "images); leave it out for class folders without masks (the baselines recipe: "
    "--set 'generators=[augment, pca_gmm]')"
)


def brain_mask(image: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(head, brain) boolean masks of one ``[H, W]`` slice in [0, 1].

    Head: the slice smoothed (sigma = side / 64 pixels) above half its isodata threshold,
    holes filled, largest connected component. Brain: the head eroded by ``margin`` times
    the head's equivalent radius (the scalp and skull left out)."""
    import numpy as np
    from scipy import ndimage

    side = image.shape[-1]
    smooth = ndimage.gaussian_filter(image.astype(np.float64), sigma=max(0.5, side / 64))
    threshold = float(smooth.mean())
    for _ in range(50):  # isodata (Ridler-Calvard): mean of the two class means
        low, high = smooth[smooth <= threshold], smooth[smooth > threshold]
        if low.size == 0 or high.size == 0:
            break
        new = 0.5 * (float(low.mean()) + float(high.mean()))
        if abs(new - threshold) < 1e-4:
            break
        threshold = new
    head = ndimage.binary_fill_holes(smooth > 0.5 * threshold)
    labels, count = ndimage.label(head)
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        head = labels == int(np.argmax(sizes)) + 1
    radius = math.sqrt(float(head.sum()) / math.pi)
    steps = round(margin * radius)
    brain = ndimage.binary_erosion(head, iterations=steps) if steps > 0 else head.copy()
    return head.astype(bool), brain.astype(bool)


def _profile(values: np.ndarray) -> tuple[float, float, list[float]]:
    """Median, interquartile range (at least 1e-3) and the ``QUANTILES`` of ``values``."""
    import numpy as np

    if values.size == 0:
        return 0.5, 0.1, [0.5] * len(QUANTILES)
    q = np.quantile(values, QUANTILES)
    iqr = float(np.quantile(values, 0.75) - np.quantile(values, 0.25))
    return float(np.median(values)), max(iqr, 1e-3), [float(v) for v in q]


def _carve(mask: np.ndarray, margin: float) -> np.ndarray:
    """``mask`` grown by ``margin`` pixels (Euclidean): the region cut out with a lesion."""
    from scipy import ndimage

    if margin < 0.5:
        return mask.astype(bool)
    return ndimage.distance_transform_edt(~mask.astype(bool)) <= margin


class LesionPaste(Generator):
    """Lesions of tumour slices pasted inside the brain of healthy slices, exact masks."""

    name: ClassVar[str] = "lesion_paste"
    baseline: ClassVar[bool] = True
    description: ClassVar[str] = (
        "baseline: real tumours cut with their masks, blended into healthy slices (TumorCP-style)"
    )
    conditional: ClassVar[bool] = True
    emits_masks: ClassVar[bool] = True
    quick_params: ClassVar[dict[str, Any]] = {}  # fit is image statistics: already fast

    class Params(StrictParams):
        """Params of the ``lesion_paste`` baseline."""

        tumor_class: str | None = Field(
            None,
            description="class of the lesion donors (unset: the class whose slices most often "
            "have a mask)",
        )
        healthy_class: str | None = Field(
            None, description="class of the healthy slices (unset: the other of two classes)"
        )
        min_lesion_pixels: int = Field(
            3, ge=1, description="a donor's mask needs at least this many pixels"
        )
        flip: bool = Field(True, description="flip each lesion at random (both axes)")
        rotate: bool = Field(True, description="rotate each lesion by a random angle")
        scale: float = Field(0.2, ge=0, le=0.5, description="lesion zoom drawn from 1 ± scale")
        augment_base: bool = Field(
            True,
            description="the healthy slice (and its brain mask) under augment's default "
            "transforms, spatial before the paste and intensity after it, in both classes' "
            "samples; false: the slices as they are",
        )
        brain_margin: float = Field(
            0.15,
            ge=0,
            lt=1,
            description="lesions lie inside the head mask eroded by this fraction of the "
            "head's radius",
        )
        match_intensity: bool = Field(
            True, description="map lesion intensities from the donor's brain to the target's"
        )
        donor_candidates: int = Field(
            8,
            ge=1,
            description="donors drawn per sample; the one with the closest brain-intensity "
            "quantiles is used (1: a random donor)",
        )
        context: float = Field(
            4.0,
            ge=0,
            le=32,
            description="largest margin of donor tissue carved out with the lesion (its "
            "oedema; CarveMix), pixels at 64 px; each paste draws one in [0, context]",
        )
        blend_sigma: float = Field(
            1.0, ge=0, le=10, description="Gaussian edge of the blend, pixels at 64 px"
        )
        max_tries: int = Field(
            20, ge=1, description="lesion draws before pasting at the donor's own position"
        )

    def __init__(self, params: StrictParams | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ training

    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Find lesion donors and healthy targets; their brain masks and intensity statistics."""
        import numpy as np
        import torch

        if train.masks is None:
            raise DataError("lesion_paste: the training data has no tumour masks", NO_MASKS_HINT)
        if train.labels is None or not train.class_names:
            raise DataError("lesion_paste: the training data has no class labels")
        tumor, healthy = self._classes(train)
        p = self.params
        area = train.masks.sum(dim=(1, 2, 3))
        donors = ((train.labels == tumor) & (area >= p.min_lesion_pixels)).nonzero().reshape(-1)
        targets = ((train.labels == healthy) & (area == 0)).nonzero().reshape(-1)
        names = train.class_names
        if len(donors) == 0:
            raise DataError(
                f"lesion_paste: no {names[tumor]!r} slice has a mask of at least "
                f"{p.min_lesion_pixels} pixels",
                hint="check the masks, or lower min_lesion_pixels",
            )
        if len(targets) == 0:
            raise DataError(
                f"lesion_paste: no {names[healthy]!r} slice with an empty mask to paste into",
                hint="lesion_paste learns both classes at once: per_class: false in the recipe",
            )
        pad = self._pad(train.size)
        patches, patch_masks, corners, donor_stats = [], [], [], []
        for i in donors.tolist():
            image = train.images[i, 0].numpy()
            mask = train.masks[i, 0].numpy() > 0.5
            _, brain = brain_mask(image, p.brain_margin)
            median, iqr, quantiles = _profile(image[brain & ~mask])
            ys, xs = np.nonzero(mask)
            y0, x0 = max(0, ys.min() - pad), max(0, xs.min() - pad)
            y1, x1 = (
                min(image.shape[0], ys.max() + 1 + pad),
                min(image.shape[1], xs.max() + 1 + pad),
            )
            patches.append(torch.from_numpy(image[y0:y1, x0:x1].copy()))
            patch_masks.append(torch.from_numpy(mask[y0:y1, x0:x1].astype(np.uint8)))
            corners.append([int(y0), int(x0)])
            donor_stats.append([median, iqr, *quantiles])
        brains = [
            torch.from_numpy(brain_mask(train.images[i, 0].numpy(), p.brain_margin)[1])
            for i in targets.tolist()
        ]
        self.state = {
            "class_names": list(names),
            "tumor": int(tumor),
            "healthy": int(healthy),
            "size": int(train.size),
            "healthy_images": train.images[targets].float().clone(),
            "healthy_brains": torch.stack(brains).to(torch.uint8),
            "patches": patches,
            "patch_masks": patch_masks,
            "corners": torch.tensor(corners, dtype=torch.long),
            "donor_stats": torch.tensor(donor_stats, dtype=torch.float64),
        }
        run.log(lesion_donors=len(donors), healthy_targets=len(targets))
        run.note(
            f"lesion_paste: {len(donors)} lesion donors ({names[tumor]}), {len(targets)} healthy "
            f"slices ({names[healthy]}); its samples are real training slices with real lesions "
            "pasted in, so privacy may flag some as near-copies (by construction)"
        )

    def _classes(self, train: ImageSet) -> tuple[int, int]:
        """(tumour, healthy) class indices, from the params or from the masks."""
        assert train.masks is not None and train.labels is not None
        names, labels = train.class_names, train.labels
        what = "the training data"
        present = sorted({int(v) for v in labels.tolist()})
        if len(present) < 2:
            raise DataError(
                f"lesion_paste: the training data holds only class {names[present[0]]!r}; it "
                "pastes lesions of the tumour class into slices of the healthy class",
                hint="lesion_paste learns both classes at once: per_class: false in the recipe",
            )
        if self.params.tumor_class is not None:
            tumor = match_class(self.params.tumor_class, names, what)
        else:
            has = (train.masks.sum(dim=(1, 2, 3)) > 0).float()
            tumor = max(present, key=lambda c: float(has[labels == c].mean()))
        if self.params.healthy_class is not None:
            healthy = match_class(self.params.healthy_class, names, what)
        else:
            others = [c for c in present if c != tumor]
            if len(others) != 1:
                raise ConfigError(
                    f"lesion_paste: cannot tell the healthy class among "
                    f"{[names[c] for c in present]}",
                    hint="set healthy_class (and tumor_class)",
                )
            healthy = others[0]
        if tumor == healthy:
            raise ConfigError(
                f"lesion_paste: tumor_class and healthy_class are both {names[tumor]!r}"
            )
        return tumor, healthy

    def _pad(self, size: int) -> int:
        """Margin around a lesion's mask: the carved margin and the blend's reach, doubled
        (lesions are zoomed)."""
        scale = size / 64
        reach = (
            math.ceil(self.params.context * scale)
            + 1
            + math.ceil(3 * self.params.blend_sigma * scale)
        )
        return 2 * reach + 1

    # ------------------------------------------------------------------ sampling

    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        """``n`` slices of class ``label``: healthy slices, or healthy slices with a pasted
        lesion and its exact mask (``label`` tumour or None); both under the base
        augmentation (``augment_base``)."""
        import contextlib

        import numpy as np
        import torch

        from synthmri.core.data.preprocessing import fast_loading

        st = self._require_state()
        seed = sample_seed(seed)
        names = st["class_names"]
        cls = st["tumor"] if label is None else int(label)
        if cls not in (st["tumor"], st["healthy"]):
            raise DataError(
                f"lesion_paste makes classes {names[st['healthy']]!r} and {names[st['tumor']]!r}"
                f", not class {label}"
            )
        base, brains = st["healthy_images"], st["healthy_brains"]
        which = balanced_draw(n, len(base), seed).tolist()
        rng = np.random.default_rng(seed)
        size = int(st["size"])
        spatial, intensity = self._base_transforms(size, seed)
        images = np.zeros((n, 1, size, size), np.float32)
        masks = np.zeros((n, 1, size, size), np.float32)
        sources = []
        with fast_loading() if spatial is not None else contextlib.nullcontext():
            for k, t in enumerate(which):
                image, brain = base[t, 0].numpy(), brains[t].numpy().astype(bool)
                if spatial is not None:
                    warped = spatial({"image": base[t], "brain": brains[t][None].float()})
                    image = torch.as_tensor(warped["image"])[0].numpy()
                    brain = torch.as_tensor(warped["brain"])[0].numpy() > 0.5
                source = f"lesion_paste:seed={seed}:{k}:healthy={t}"
                if cls == st["tumor"]:
                    median, iqr, quantiles = _profile(image[brain])
                    target = np.array([median, iqr, *quantiles])
                    image, masks[k, 0], how = self._paste(image, brain, target, rng)
                    source += how
                if intensity is not None:
                    shaded = intensity(
                        {"image": torch.from_numpy(np.ascontiguousarray(image))[None]}
                    )
                    image = torch.as_tensor(shaded["image"])[0].numpy()
                images[k, 0] = image
                sources.append(source)
        return ImageSet(
            images=torch.from_numpy(images).clamp(0.0, 1.0),
            labels=None if label is None else torch.full((n,), cls, dtype=torch.long),
            masks=torch.from_numpy(masks),
            sources=sources,
        )

    def _base_transforms(self, size: int, seed: int) -> tuple[Any, Any]:
        """(spatial, intensity) MONAI pipelines of the base augmentation, seeded; (None, None)
        without ``augment_base``."""
        if not self.params.augment_base:
            return None, None
        from monai.transforms import Compose

        p = AugmentParams()
        spatial = Compose(spatial_transforms(p, size, ["image", "brain"]))
        intensity = Compose(intensity_transforms(p))
        spatial.set_random_state(seed=seed)
        intensity.set_random_state(seed=seed + 1)
        return spatial, intensity

    def _paste(
        self, image: np.ndarray, brain: np.ndarray, target: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """``image`` with a lesion blended in, the lesion's mask, and how it was placed."""
        import numpy as np
        from scipy.signal import fftconvolve

        st = self._require_state()
        p = self.params
        outside = (~brain).astype(np.float64)
        margin = p.context * int(st["size"]) / 64
        donor, patch, pmask, carved = -1, None, None, None
        for _ in range(p.max_tries):
            donor = self._choose_donor(target, rng)
            patch, pmask = self._transformed(donor, rng)
            carved = _carve(pmask, float(rng.uniform(0.0, margin)))
            if patch.shape[0] > image.shape[0] or patch.shape[1] > image.shape[1]:
                continue
            # carved pixels outside the brain, for every top-left corner that keeps it inside
            spill = fftconvolve(outside, carved[::-1, ::-1].astype(np.float64), mode="valid")
            ys, xs = np.nonzero(spill < 0.5)
            if ys.size:
                j = int(rng.integers(ys.size))
                y, x = int(ys[j]), int(xs[j])
                blended, mask = self._blend(image, patch, pmask, carved, (y, x), donor, target)
                return blended, mask, f":donor={donor}"
        # no position fits: the untransformed lesion where it was in its donor slice
        patch = st["patches"][donor].numpy()
        pmask = st["patch_masks"][donor].numpy().astype(bool)
        corner = tuple(int(v) for v in st["corners"][donor])
        carved = _carve(pmask, float(rng.uniform(0.0, margin)))
        blended, mask = self._blend(image, patch, pmask, carved, corner, donor, target)
        return blended, mask, f":donor={donor}:at_donor_position"

    def _choose_donor(self, target: np.ndarray, rng: np.random.Generator) -> int:
        """Among ``donor_candidates`` random donors, the closest in brain-intensity quantiles."""
        import numpy as np

        stats = self._require_state()["donor_stats"].numpy()
        picks = rng.integers(len(stats), size=self.params.donor_candidates)
        distance = np.abs(stats[picks, 2:] - target[None, 2:]).sum(axis=1)
        return int(picks[int(np.argmin(distance))])

    def _transformed(self, donor: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The donor's lesion patch and mask, flipped, rotated and zoomed at random, cropped
        to the reach of the blend around the mask."""
        import numpy as np
        from scipy import ndimage

        st = self._require_state()
        p = self.params
        patch = st["patches"][donor].numpy().astype(np.float64)
        mask = st["patch_masks"][donor].numpy().astype(np.float64)
        if p.flip:
            for axis in (0, 1):
                if rng.random() < 0.5:
                    patch, mask = np.flip(patch, axis), np.flip(mask, axis)
        if p.rotate:
            angle = float(rng.uniform(0.0, 360.0))
            patch = ndimage.rotate(patch, angle, order=1, reshape=True, mode="nearest")
            mask = ndimage.rotate(mask, angle, order=1, reshape=True, cval=0.0)
        if p.scale > 0:
            zoom = float(rng.uniform(1.0 - p.scale, 1.0 + p.scale))
            patch = ndimage.zoom(patch, zoom, order=1, mode="nearest")
            mask = ndimage.zoom(mask, zoom, order=1)
        binary = mask > 0.5
        if not binary.any():  # a lesion of a few pixels lost by resampling: keep the original
            patch = st["patches"][donor].numpy().astype(np.float64)
            binary = st["patch_masks"][donor].numpy().astype(bool)
        reach = self._pad(int(st["size"])) // 2
        ys, xs = np.nonzero(binary)
        y0, x0 = max(0, ys.min() - reach), max(0, xs.min() - reach)
        y1, x1 = ys.max() + 1 + reach, xs.max() + 1 + reach
        return patch[y0:y1, x0:x1], binary[y0:y1, x0:x1]

    def _blend(
        self,
        image: np.ndarray,
        patch: np.ndarray,
        pmask: np.ndarray,
        carved: np.ndarray,
        corner: tuple[int, int],
        donor: int,
        target: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Blend ``patch`` into ``image`` at top-left ``corner`` (clipped to the image):
        opaque over the ``carved`` region, a soft edge around it; intensities matched to the
        target's brain. The mask returned is ``pmask`` placed there, exactly."""
        import numpy as np
        from scipy import ndimage

        st = self._require_state()
        p = self.params
        lesion = patch.astype(np.float64)
        if p.match_intensity:
            d_median, d_iqr = st["donor_stats"][donor, :2].tolist()
            lesion = target[0] + (lesion - d_median) * (target[1] / d_iqr)
        sigma = p.blend_sigma * int(st["size"]) / 64
        alpha = carved.astype(np.float64)
        if sigma > 0:
            alpha = ndimage.gaussian_filter(ndimage.binary_dilation(carved) * 1.0, sigma)
            alpha = np.maximum(alpha, carved)
        h, w = image.shape
        ph, pw = pmask.shape
        y, x = corner
        y0, x0 = max(0, y), max(0, x)
        y1, x1 = min(h, y + ph), min(w, x + pw)
        window = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
        out = image.astype(np.float64).copy()
        a = alpha[window]
        out[y0:y1, x0:x1] = (1.0 - a) * out[y0:y1, x0:x1] + a * lesion[window]
        mask = np.zeros((h, w), np.float32)
        mask[y0:y1, x0:x1] = pmask[window]
        return np.clip(out, 0.0, 1.0).astype(np.float32), mask

    # ------------------------------------------------------------------ state

    def _require_state(self) -> dict[str, Any]:
        if self.state is None:
            raise ConfigError(
                "lesion_paste: not fitted", hint="call fit() or load a checkpoint first"
            )
        return self.state

    def state_dict(self) -> dict[str, Any]:
        """Healthy slices, their brain masks, the lesion patches and their statistics (real
        data, by construction), as tensors and plain values."""
        return dict(self._require_state())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.state = dict(state)


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the ``lesion_paste`` baseline."""
    register(LesionPaste)
