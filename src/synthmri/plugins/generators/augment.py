"""``augment``: the real train part under classical augmentation, as a generator.

The baseline that answers "is a GAN better than augmenting?": ``fit`` keeps the training
images of its class (and their masks), ``sample(n, seed=s)`` returns ``n`` of them, each
used about equally often, each under a fresh random draw of the classical augmentations
(MONAI ``Rand*`` transforms, image and mask warped together, masks kept binary):

- a left-right flip (``flip_prob``);
- an affine warp (``affine_prob``): rotation up to ``rotate_deg``, zoom by ``1 ± scale``,
  shift up to ``translate`` of the side, zero padding (the background of a slice);
- an elastic deformation (``elastic_prob``): a smooth random displacement field on a
  control grid ``elastic_spacing`` of the side apart, up to ``elastic_magnitude`` of the
  side;
- a multiplicative bias field (``bias_prob``, coefficients up to ``bias_coeff``);
- a gamma curve (``gamma_prob``, gamma in [``gamma_min``, ``gamma_max``]);
- Gaussian noise (``noise_prob``, standard deviation up to ``noise_std``).

The same seed gives the same images. Trained per class (not conditional). With masks
(``emits_masks``; by default when the training data has them) a sample is an image+mask
pair, so it also serves segmentation studies.

By construction every sample is a transformed copy of a real training image, and the
``state_dict`` holds the training images themselves: the ``privacy`` evaluator flags the
samples that stayed closest to their source as memorised (4-7 % on 64 px phantoms and on
navoneel), which is the honest outcome: augmented data cannot be shared as anonymous data.
A learned generator is worth its cost when it beats this baseline on TSTR and on the mixed
gain.
"""

from __future__ import annotations

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
    sample_seed,
    spatial_transforms,
)

if TYPE_CHECKING:
    from torch import Tensor

    from synthmri.core.training import RunContext

__all__ = ["Augment"]


class Augment(Generator):
    """Classical augmentation of the real training images (MONAI ``Rand*`` transforms)."""

    name: ClassVar[str] = "augment"
    baseline: ClassVar[bool] = True
    description: ClassVar[str] = (
        "baseline: real training images under flips, affine, elastic, bias field, gamma, noise"
    )
    quick_params: ClassVar[dict[str, Any]] = {}  # fit only keeps the images: already fast

    class Params(AugmentParams):
        """Params of the ``augment`` baseline (probabilities are per sample and transform)."""

        emits_masks: bool | None = Field(
            None,
            description="sample image+mask pairs; unset: when the training data has masks",
        )

    def __init__(self, params: StrictParams | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        # unset: it may emit masks (known after fit, from the training data)
        self.emits_masks = self.params.emits_masks is not False
        self.images: Tensor | None = None
        self.masks: Tensor | None = None

    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Keep the training images (and masks when it emits them): a copy of real data."""
        if len(train) == 0:
            raise DataError("augment: no training images")
        wanted = self.params.emits_masks
        if wanted and train.masks is None:
            raise DataError(
                "augment: emits_masks is true, but the training data has no masks",
                hint="leave emits_masks unset (masks when the data has them), or use image+mask "
                "data",
            )
        self.emits_masks = train.masks is not None and wanted is not False
        self.images = train.images.detach().float().cpu().clone()
        self.masks = train.masks.detach().float().cpu().clone() if self.emits_masks else None
        run.log(augment_sources=len(train), emits_masks=self.emits_masks)
        run.note(
            f"augment: {len(train)} real training images kept; its samples are augmented copies "
            "of them, so privacy may flag some as memorised (by construction)"
        )

    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        """``n`` augmented training images (each source about equally often); the same for a
        seed; masks warped with their images when it emits them."""
        import torch

        from synthmri.core.data.preprocessing import fast_loading

        images = self._require_images()
        seed = sample_seed(seed)
        which = balanced_draw(n, len(images), seed)
        transform = self._transform(images.shape[-1], self.masks is not None)
        transform.set_random_state(seed=seed)
        out_images, out_masks = [], []
        with fast_loading():  # plain tensors (no MetaTensor bookkeeping), one torch thread
            for i in which.tolist():
                item = {"image": images[i]}
                if self.masks is not None:
                    item["mask"] = self.masks[i]
                done = transform(item)
                out_images.append(torch.as_tensor(done["image"]).float().clamp(0.0, 1.0))
                if self.masks is not None:
                    out_masks.append((torch.as_tensor(done["mask"]) > 0.5).float())
        shape = (0, *images.shape[1:])
        return ImageSet(
            images=torch.stack(out_images) if n else torch.zeros(shape),
            labels=None if label is None else torch.full((n,), int(label), dtype=torch.long),
            masks=None
            if self.masks is None
            else (torch.stack(out_masks) if n else torch.zeros(0, 1, *shape[2:])),
            sources=[f"augment:seed={seed}:{k}:of={i}" for k, i in enumerate(which.tolist())],
        )

    def _transform(self, size: int, with_mask: bool) -> Any:
        """The MONAI pipeline: spatial transforms on image (and mask), then intensity ones."""
        from monai.transforms import Compose

        keys = ["image", "mask"] if with_mask else ["image"]
        return Compose(
            spatial_transforms(self.params, size, keys) + intensity_transforms(self.params)
        )

    def _require_images(self) -> Tensor:
        if self.images is None:
            raise ConfigError(
                "augment: no training images yet", hint="call fit() or load a checkpoint"
            )
        return self.images

    def state_dict(self) -> dict[str, Any]:
        """The training images (and masks) themselves: a copy of real data, by construction."""
        return {
            "images": self._require_images(),
            "masks": self.masks,
            "emits_masks": self.emits_masks,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.images = state["images"]
        self.masks = state["masks"]
        self.emits_masks = bool(state["emits_masks"])


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the ``augment`` baseline."""
    register(Augment)
