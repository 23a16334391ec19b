"""``diffusion``: a denoising diffusion model on MONAI, in pixel space or in a latent space.

The denoiser is MONAI's ``DiffusionModelUNet``; training is DDPM (epsilon or v
prediction) or rectified flow (``scheduler: rflow``); sampling is DDIM (``sample_steps``,
eta 0: the same noise gives the same image) or RFlow Euler steps. An EMA of the UNet's
weights samples; gradients are clipped; on CUDA the steps run under bf16 autocast with
channels_last tensors, and under torchrun the UNet is wrapped in DDP (each rank its share of
every batch). The networks, schedules and steps are in ``synthmri.nn.diffusion``.

- ``conditional``: one model for all classes, a class embedding with one extra "no label"
  class; ``label_dropout`` of the training labels are replaced by it, and sampling mixes the
  conditional and unconditional outputs with ``guidance`` (classifier-free guidance).
- ``emits_masks``: the tumour mask is a second channel learned jointly with the image and
  thresholded at 0.5 when sampling (specks under 4 pixels removed), so images and masks
  are exact pairs.
- ``latent``: a small MONAI ``AutoencoderKL`` is trained first on the training slices (L1 +
  KL, and a patch adversarial term with ``ae_adversarial_weight``), each level of
  ``ae_channels`` after the first halving the size (64 px with three levels: 16 px
  latents); the UNet learns the scaled latent means and samples are decoded.
  With ``emits_masks`` the mask is a second channel of the autoencoder (image and mask are
  encoded together and decoded together, the mask with an L1 and a soft Dice term of its
  own, and the run logs how well the training masks survive: ``ae_mask_dice``), so latent
  samples are pairs too.
- Sizes: ``unet: cpu`` (channels 32-64-64, attention at the lowest level, one res block:
  1.1 M parameters; for 32-64 px, or for latents) and ``unet: gpu128`` (64-128-256-256,
  attention at the two lowest levels, two res blocks: for 128 px pixel-space training on a
  GPU); ``channels`` / ``attention_levels`` / ``num_res_blocks`` given explicitly win.

One plugin with a ``latent`` switch rather than a second ``latent_diffusion`` plugin: the
loop, conditioning, masks, EMA, sampling and checkpoints are the same, latent mode only adds
the autoencoder stage before and a decode after, and a recipe row stays ``diffusion``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from synthmri import hookimpl
from synthmri.core.errors import ConfigError, DataError, TrainingError
from synthmri.core.interfaces import Generator, ImageSet
from synthmri.nn.params import DiffusionTrainingParams

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from synthmri.core.training import RunContext

__all__ = ["Diffusion", "DiffusionParams"]

#: the named UNet sizes: channels per level, attention per level, res blocks per level
UNET_SIZES: dict[str, dict[str, Any]] = {
    "cpu": {"channels": [32, 64, 64], "attention_levels": [False, False, True],
            "num_res_blocks": 1},
    "gpu128": {"channels": [64, 128, 256, 256], "attention_levels": [False, False, True, True],
               "num_res_blocks": 2},
}  # fmt: skip


class DiffusionParams(DiffusionTrainingParams):
    """Params of the ``diffusion`` generator: the shared training params plus the UNet's
    size, sampling, conditioning and masks."""

    unet: Literal["cpu", "gpu128"] = Field(
        "cpu",
        description="named UNet size: cpu (32-64-64, 1.1 M params; 32-64 px or latents) or "
        "gpu128 (64-128-256-256, two res blocks; 128 px on a GPU)",
    )
    channels: list[int] | None = Field(
        None, description="UNet channels per level (overrides the named size)"
    )
    attention_levels: list[bool] | None = Field(
        None, description="self-attention per level (overrides the named size)"
    )
    num_res_blocks: int | None = Field(
        None, ge=1, description="res blocks per level (overrides the named size)"
    )
    sample_steps: int = Field(50, ge=1, description="DDIM / RFlow steps when sampling")
    conditional: bool = Field(
        False, description="one model for all classes; sample(n, label=k) gives class k"
    )
    guidance: float = Field(
        2.0,
        ge=0,
        description="classifier-free guidance scale (1: plain conditional); with "
        "emits_masks, 2 and more put lesions on normal-class samples (docs/results.md), "
        "the diffusion recipe samples at 1",
    )
    label_dropout: float = Field(
        0.1, ge=0, lt=1, description="share of training labels replaced by 'no label'"
    )
    emits_masks: bool = Field(
        False, description="learn (slice, tumour mask) pairs; sample() returns masks too"
    )

    @model_validator(mode="after")
    def _consistent(self) -> DiffusionParams:
        size = self.unet_size()
        if len(size["attention_levels"]) != len(size["channels"]):
            raise ValueError("attention_levels needs one entry per level of channels")
        ae = self.ae_channels if self.latent else []
        bad = [c for c in [*size["channels"], *ae] if c % self.norm_groups]
        if bad:
            raise ValueError(f"norm_groups {self.norm_groups} does not divide channels {bad}")
        attn = [c for c, a in zip(size["channels"], size["attention_levels"], strict=True) if a]
        if any(c % self.head_channels for c in attn):
            raise ValueError(f"head_channels {self.head_channels} must divide channels {attn}")
        return self

    def unet_size(self) -> dict[str, Any]:
        """Channels, attention levels and res blocks: the named size, explicit ones first."""
        base = UNET_SIZES[self.unet]
        channels = self.channels or base["channels"]
        attention = self.attention_levels
        if attention is None:
            attention = (
                base["attention_levels"]
                if self.channels is None
                else ([False] * (len(channels) - 1) + [True])
            )
        return {
            "channels": list(channels),
            "attention_levels": list(attention),
            "num_res_blocks": self.num_res_blocks or base["num_res_blocks"],
        }


class Diffusion(Generator):
    """Denoising diffusion (MONAI): pixel or latent, per class or conditional with
    classifier-free guidance, (slice, mask) pairs."""

    name: ClassVar[str] = "diffusion"
    description: ClassVar[str] = (
        "Denoising diffusion on MONAI (DiffusionModelUNet; DDPM/DDIM or rectified flow); "
        "pixel or latent (AutoencoderKL), classifier-free guidance, masks as a channel"
    )
    quick_params: ClassVar[dict[str, Any]] = {
        "iterations": 3,
        "batch_size": 8,
        "channels": [8, 16],
        "attention_levels": [False, True],
        "norm_groups": 4,
        "head_channels": 8,
        "sample_steps": 3,
        "ae_iterations": 3,
        "ae_channels": [8, 8, 8],
        "log_every": 2,
    }
    Params = DiffusionParams
    sampling_params: ClassVar[frozenset[str]] = frozenset({"guidance", "sample_steps"})
    batch_seed: ClassVar[int] = 17
    grid_n: ClassVar[int] = 32
    sample_batch: ClassVar[int] = 64

    def __init__(self, params: DiffusionParams | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.conditional = bool(self.params.conditional)
        self.emits_masks = bool(self.params.emits_masks)
        self.unet: nn.Module | None = None  # the network that samples (the EMA when on)
        self.ae: nn.Module | None = None
        self.config: dict[str, Any] = {}
        self.class_names: list[str] = []
        self.device: torch.device | None = None

    # ------------------------------------------------------------ data

    def _check(self, train: ImageSet) -> int:
        """Validate ``train``; the number of classes (0 unless conditional)."""
        from synthmri.nn.tensors import check_training_set

        p = self.params
        n_classes = check_training_set(train, self.name, self.conditional)
        if train.images.shape[-2] != train.size:
            raise DataError(f"{self.name}: images must be square, got "
                            f"{tuple(train.images.shape[-2:])}")  # fmt: skip
        down = 2 ** (len(p.unet_size()["channels"]) - 1)
        if p.latent:
            ae_down = 2 ** (len(p.ae_channels) - 1)
            if train.size % ae_down or (train.size // ae_down) % down:
                raise DataError(
                    f"{self.name}: {train.size} px does not fit {len(p.ae_channels)} "
                    f"autoencoder levels and {len(p.unet_size()['channels'])} UNet levels",
                    hint=f"use a data.size divisible by {ae_down * down}",
                )
        elif train.size % down:
            raise DataError(
                f"{self.name}: {train.size} px is not divisible by {down} (the UNet's levels)",
                hint=f"use a data.size divisible by {down}",
            )
        return n_classes

    def _schedule(self) -> Any:
        from synthmri.nn.diffusion import NoiseSchedule

        c = self.config
        return NoiseSchedule(
            c["scheduler"], c["prediction"], c["timesteps"], c["schedule"], clip=not c["latent"]
        )

    # ------------------------------------------------------------ training

    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Train (the autoencoder first in latent mode, then the UNet) on ``train``
        (``synthmri.nn.diffusion.train_diffusion``)."""
        from synthmri.nn.diffusion import train_diffusion
        from synthmri.nn.tensors import join_image_mask

        p = self.params
        n_classes = self._check(train)
        self.device = run.device
        self.class_names = list(train.class_names)
        data = join_image_mask(train.images, train.masks, self.emits_masks)
        self.config = {
            **p.unet_size(),
            "size": train.size,
            "image_channels": train.channels,
            "data_channels": int(data.shape[1]),
            "in_channels": int(data.shape[1]),
            "norm_groups": p.norm_groups,
            "head_channels": p.head_channels,
            "n_classes": n_classes,
            "scheduler": p.scheduler,
            "prediction": p.prediction,
            "timesteps": p.timesteps,
            "schedule": p.schedule,
            "latent": p.latent,
            "latent_scale": 1.0,
        }
        labels = train.labels if self.conditional else None
        self.unet, self.ae = train_diffusion(
            data,
            self.config,
            p,
            run,
            labels=labels,
            label_dropout=p.label_dropout,
            batch_seed=self.batch_seed,
            name=self.name,
        )
        self._save_grid(run, n_classes)

    def _save_grid(self, run: RunContext, n_classes: int) -> None:
        if run.out_dir is None or not run.is_main or self.grid_n <= 0:
            return
        import torch

        from synthmri.core.artifacts import save_sample_grid

        y = None
        if self.conditional:
            y = torch.arange(self.grid_n) % max(1, n_classes)
        images, masks = self._generate(self.grid_n, y, seed=run.seed + 1)
        save_sample_grid(run, images, "samples", masks=masks)

    # ------------------------------------------------------------ sampling

    def _generate(self, n: int, y: Tensor | None, seed: int | None) -> tuple[Tensor, Tensor | None]:
        """``n`` images in [0, 1] on the CPU (and masks when ``emits_masks``)."""
        import torch

        from synthmri.nn.tensors import split_image_mask, to_unit

        if self.unet is None:
            raise TrainingError(
                f"{self.name}: sample() before fit() or load_state_dict()",
                hint="train the generator first, or load a checkpoint",
            )
        c = self.config
        device = self.device or torch.device("cpu")
        side = c["size"] // (2 ** (len(c["ae_channels"]) - 1)) if c["latent"] else c["size"]
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        noise = torch.randn(n, int(c["in_channels"]), side, side, generator=g)
        schedule = self._schedule()
        outs = []
        self.unet.eval()
        with torch.no_grad():
            for i in range(0, n, self.sample_batch):
                xb = noise[i : i + self.sample_batch].to(device)
                yb = None if y is None else y[i : i + self.sample_batch].to(device)
                x = schedule.sample(self.unet, xb, self.params.sample_steps, yb,
                                    self.params.guidance, int(c["n_classes"]))  # fmt: skip
                if c["latent"]:
                    assert self.ae is not None
                    x = self.ae.decode(x / float(c["latent_scale"]))
                outs.append(to_unit(x.float()).clamp(0, 1).cpu())
        out = torch.cat(outs) if outs else torch.zeros(0, int(c["data_channels"]), c["size"],
                                                       c["size"])  # fmt: skip
        if not self.emits_masks:
            return out.contiguous(), None
        return split_image_mask(out)

    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        """``n`` images in [0, 1] (masks when ``emits_masks``); a conditional model makes
        class ``label`` (random classes when None); the same ``seed`` gives the same images."""
        import torch

        if n < 0:
            raise ConfigError(f"{self.name}: cannot sample {n} images")
        n_classes = int(self.config.get("n_classes", 0))
        y = None
        if self.conditional and self.unet is not None:
            if label is None:
                g = torch.Generator().manual_seed(int(seed) + 1 if seed is not None else 0)
                if seed is None:
                    g.seed()
                y = torch.randint(0, n_classes, (n,), generator=g)
            elif not 0 <= int(label) < n_classes:
                raise ConfigError(f"{self.name}: label {label} out of range 0..{n_classes - 1}")
            else:
                y = torch.full((n,), int(label), dtype=torch.long)
        images, masks = self._generate(n, y, seed)
        out_labels = (
            y
            if y is not None
            else (None if label is None else torch.full((n,), int(label), dtype=torch.long))
        )
        names = list(self.class_names)
        if out_labels is not None and n and int(out_labels.max()) >= len(names):
            names = []
        tag = f"{self.name}:seed={seed}" if seed is not None else self.name
        sources = [f"{tag}:{i}" for i in range(n)]
        return ImageSet(images=images, labels=out_labels, class_names=names, masks=masks,
                        sources=sources, groups=list(sources))  # fmt: skip

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Config (plain values), class names, and the sampling UNet's (and AE's) weights."""
        from synthmri.nn.diffusion import model_state

        if self.unet is None:
            raise TrainingError(f"{self.name}: nothing to save before fit()")
        return {
            "format": 1,
            "config": dict(self.config),
            "params": self.params.model_dump(mode="json"),
            "class_names": list(self.class_names),
            "conditional": self.conditional,
            "emits_masks": self.emits_masks,
            **model_state(self.unet, self.ae),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the networks from ``state["config"]`` and load their weights (CPU)."""
        import torch

        from synthmri.nn.diffusion import restore_models

        try:
            config = dict(state["config"])
            unet, ae = restore_models(config, state)
            conditional, emits_masks = bool(state["conditional"]), bool(state["emits_masks"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"{self.name}: checkpoint does not fit this plugin ({exc})") from None
        self.config, self.conditional, self.emits_masks = config, conditional, emits_masks
        self.class_names = list(state.get("class_names", []))
        self.unet, self.ae = unet, ae
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> None:
        """Sample on ``device`` (the UNet, and the autoencoder when latent, move there)."""
        for net in (self.unet, self.ae):
            if net is not None:
                net.to(device)
        self.device = device


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the ``diffusion`` generator."""
    register(Diffusion)
