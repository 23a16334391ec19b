"""DCGAN (Radford et al. 2016) for 2D slices, optionally conditional and/or with tumour masks.

Two architectures:

- ``dcgan``: the paper's all-convolutional networks. G is a transposed-conv stack from
  4x4 to the image size (BatchNorm + ReLU, tanh out); D mirrors it (strided convs,
  BatchNorm + LeakyReLU 0.2). Weights start from N(0, 0.02).
- ``reference-keras``: the generator and discriminator of the published Keras DCGAN
  brain-MRI studies, for like-for-like comparison: G = Dense(latent -> (s/4)^2 x 256),
  LeakyReLU, two Conv2DTranspose(128, 4, stride 2), Conv2D(channels, 7, tanh); D =
  Conv2D 64 (3x3) then Conv2D 128/128/256 (3x3, stride 2), LeakyReLU 0.2, Flatten,
  Dropout 0.4, Dense 1 (the sigmoid is folded into the loss). At 128 px: 27.3 M / 0.58 M
  parameters.

Training: non-saturating BCE loss (with optional one-sided label smoothing), Adam
(2e-4, beta1 0.5), DiffAugment on real and fake before D, an EMA of G for sampling.
``conditional`` learns all classes in one model (label embedding concatenated to z in G,
projection discriminator); ``emits_masks`` learns (slice, mask) pairs as two channels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from synthmri import hookimpl
from synthmri.core.errors import ConfigError, DataError, TrainingError
from synthmri.core.interfaces import Generator, ImageSet
from synthmri.core.training import RunContext, check_finite, minibatches, unwrap
from synthmri.plugins.generators._common import (
    EMA,
    GANParams,
    IndexBlocks,
    Projection,
    batch_diversity,
    diff_augment,
    from_unit,
    latent_seeded,
    recalibrate_bn,
    resolve_policy,
    save_sample_grid,
    split_image_mask,
    to_unit,
)

SIZES: tuple[int, ...] = (32, 64, 128, 256)
EMBED_DIM = 50  # label embedding concatenated to z in conditional generators
SAMPLE_BATCH = 256
GRID_N = 64


# ------------------------------------------------------------------ networks


def _dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) conv/linear weights, N(1, 0.02) BatchNorm scales, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _keras_init(module: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class _CondInput(nn.Module):
    """Concatenates a label embedding to z (or passes z through when unconditional)."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_classes, EMBED_DIM) if n_classes > 0 else None

    @property
    def extra(self) -> int:
        return EMBED_DIM if self.embed is not None else 0

    def forward(self, z: Tensor, y: Tensor | None) -> Tensor:
        if self.embed is None:
            return z
        if y is None:
            raise ValueError("a conditional generator needs labels")
        return torch.cat([z, self.embed(y).to(z.dtype)], dim=1)


class DCGANGenerator(nn.Module):
    """z ``[N, latent]`` -> images ``[N, C, S, S]`` in [-1, 1] by transposed convs from 4x4."""

    def __init__(
        self, size: int, channels: int, latent_dim: int, ngf: int, n_classes: int = 0
    ) -> None:
        super().__init__()
        self.cond = _CondInput(n_classes)
        steps = int(math.log2(size // 4))  # stride-2 upsamplings after the 4x4 start
        width = [ngf * min(2 ** (steps - 1 - i), 8) for i in range(steps)]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim + self.cond.extra, width[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(width[0]),
            nn.ReLU(True),
        ]
        for i in range(steps - 1):
            layers += [
                nn.ConvTranspose2d(width[i], width[i + 1], 4, 2, 1, bias=False),
                nn.BatchNorm2d(width[i + 1]),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(width[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.cond(z, y)
        return self.net(h.reshape(h.shape[0], h.shape[1], 1, 1))


class DCGANDiscriminator(nn.Module):
    """Images ``[N, C, S, S]`` -> logits ``[N]``: strided convs down to 4x4, then a 4x4 conv.

    Sizes that are not 4 times a power of two end on a 4 to 7 px map, and the last conv
    covers all of it (one logit per image either way).
    """

    def __init__(self, size: int, channels: int, ndf: int, n_classes: int = 0) -> None:
        super().__init__()
        steps = int(math.log2(size // 4))
        width = [ndf * min(2**i, 8) for i in range(steps)]
        layers: list[nn.Module] = [
            nn.Conv2d(channels, width[0], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, True),
        ]
        for i in range(1, steps):
            layers += [
                nn.Conv2d(width[i - 1], width[i], 4, 2, 1, bias=False),
                nn.BatchNorm2d(width[i]),
                nn.LeakyReLU(0.2, True),
            ]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width[-1], 1, size // 2**steps, 1, 0, bias=False)
        self.proj = Projection(n_classes, width[-1]) if n_classes > 0 else None
        self.apply(_dcgan_init)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.body(x)
        out = self.head(h).reshape(-1)
        if self.proj is not None and y is not None:
            out = out + self.proj(h, y)
        return out


class KerasGenerator(nn.Module):
    """The reference Keras DCGAN generator (Dense -> two 2x upsamplings -> 7x7 conv, tanh)."""

    def __init__(self, size: int, channels: int, latent_dim: int, n_classes: int = 0) -> None:
        super().__init__()
        self.cond = _CondInput(n_classes)
        self.start = size // 4
        self.dense = nn.Linear(latent_dim + self.cond.extra, self.start * self.start * 256)
        self.net = nn.Sequential(
            nn.LeakyReLU(0.2, True),
            nn.ConvTranspose2d(256, 128, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.ConvTranspose2d(128, 128, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(128, channels, 7, 1, 3),
            nn.Tanh(),
        )
        self.apply(_keras_init)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.dense(self.cond(z, y))
        return self.net(h.reshape(h.shape[0], 256, self.start, self.start))


class KerasDiscriminator(nn.Module):
    """The reference Keras DCGAN discriminator (four 3x3 convs, Dropout 0.4, Dense 1)."""

    def __init__(self, size: int, channels: int, n_classes: int = 0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 64, 3, 1, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(64, 128, 3, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(128, 128, 3, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(128, 256, 3, 2, 1),
            nn.LeakyReLU(0.2, True),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.4), nn.Linear(256 * (size // 8) ** 2, 1)
        )
        self.proj = Projection(n_classes, 256) if n_classes > 0 else None
        self.apply(_keras_init)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.body(x)
        out = self.head(h).reshape(-1)
        if self.proj is not None and y is not None:
            out = out + self.proj(h, y)
        return out


def build_networks(config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
    """(G, D) for a network config: size, channels, latent_dim, ngf, ndf, architecture,
    n_classes (0 = unconditional)."""
    size, ch, k = int(config["size"]), int(config["channels"]), int(config["n_classes"])
    if config["architecture"] == "reference-keras":
        return (
            KerasGenerator(size, ch, int(config["latent_dim"]), k),
            KerasDiscriminator(size, ch, k),
        )
    return (
        DCGANGenerator(size, ch, int(config["latent_dim"]), int(config["ngf"]), k),
        DCGANDiscriminator(size, ch, int(config["ndf"]), k),
    )


# ------------------------------------------------------------------ the plugin


class DCGAN(Generator):
    """Deep convolutional GAN; per class, conditional, or emitting (slice, mask) pairs."""

    name: ClassVar[str] = "dcgan"
    description: ClassVar[str] = (
        "DCGAN (Radford et al. 2016) with DiffAugment and EMA; optional conditional and masks"
    )
    quick_params: ClassVar[dict[str, Any]] = {"iterations": 5, "batch_size": 8, "ngf": 8, "ndf": 8}

    class Params(GANParams):
        """DCGAN params (plus the shared GAN training params)."""

        iterations: int = Field(
            200,
            ge=1,
            description="generator steps (200: recognisable 64 px phantom slices in ~2 min "
            "of a 2-core CPU; raise it for real data, larger images and a GPU)",
        )
        latent_dim: int = Field(100, ge=1, description="size of the latent vector z")
        ngf: int = Field(64, ge=1, description="generator width (channels of its last layer)")
        ndf: int = Field(64, ge=1, description="discriminator width (channels of its first layer)")
        lr: float = Field(
            5e-4,
            gt=0,
            description="Adam learning rate of G and D (5e-4 converges in a short CPU budget "
            "with DiffAugment and EMA; the paper's 2e-4 needs ~2x the steps)",
        )
        beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1")
        label_smoothing: float = Field(
            0.0, ge=0, lt=0.5, description="one-sided label smoothing: real targets are 1 - s"
        )
        conditional: bool = Field(
            False, description="one model for all classes; sample(n, label=k) gives class k"
        )
        emits_masks: bool = Field(
            False, description="learn (slice, tumour mask) pairs; sample() returns masks too"
        )
        architecture: Literal["dcgan", "reference-keras"] = Field(
            "dcgan",
            description="'dcgan' (Radford et al.) or 'reference-keras' (the networks of the "
            "published Keras brain-MRI DCGAN studies, for like-for-like comparison)",
        )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.conditional = bool(self.params.conditional)
        self.emits_masks = bool(self.params.emits_masks)
        self.G: nn.Module | None = None  # raw generator (unwrapped)
        self.D: nn.Module | None = None
        self.G_ema: nn.Module | None = None
        self.config: dict[str, Any] = {}
        self.class_names: list[str] = []
        self.device = torch.device("cpu")

    # -- helpers
    def _net_config(self, size: int, channels: int, n_classes: int) -> dict[str, Any]:
        p = self.params
        return {
            "size": size,
            "channels": channels,
            "image_channels": channels - (1 if self.emits_masks else 0),
            "latent_dim": p.latent_dim,
            "ngf": p.ngf,
            "ndf": p.ndf,
            "architecture": p.architecture,
            "n_classes": n_classes,
        }

    def _training_tensor(self, train: ImageSet) -> Tensor:
        x = train.images
        if self.emits_masks:
            masks = train.masks if train.masks is not None else torch.zeros_like(x[:, :1])
            x = torch.cat([x, (masks > 0.5).float()], dim=1)
        return from_unit(x)

    def _check_data(self, train: ImageSet) -> int:
        if len(train) == 0:
            raise DataError("dcgan: the training set is empty")
        if train.size not in SIZES or train.images.shape[-2] != train.size:
            raise DataError(
                f"dcgan: images are {tuple(train.images.shape[-2:])}, but DCGAN needs square "
                f"images of {', '.join(map(str, SIZES))} px",
                hint="set data.size in the recipe to one of these sizes",
            )
        if not torch.isfinite(train.images).all():
            raise DataError("dcgan: the training images contain NaN or inf")
        if not self.conditional:
            return 0
        if train.labels is None:
            raise DataError(
                "dcgan: conditional training needs labelled images",
                hint="set conditional: false, or load labelled data",
            )
        return max(len(train.class_names), int(train.labels.max()) + 1)

    # -- training
    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Train G and D on ``train`` (all of it kept on ``run.device``)."""
        p = self.params
        n_classes = self._check_data(train)
        device = run.device
        self.device = device
        cuda = device.type == "cuda"
        fmt = torch.channels_last if cuda else torch.contiguous_format
        self.class_names = list(train.class_names)
        data = self._training_tensor(train).to(device).contiguous(memory_format=fmt)
        channels = data.shape[1]
        image_channels = channels - (1 if self.emits_masks else 0)
        labels = train.labels.to(device) if self.conditional else None  # type: ignore[union-attr]
        self.config = self._net_config(train.size, channels, n_classes)
        policy = resolve_policy(p.diffaugment, len(train))

        torch.manual_seed(run.seed)
        g_raw, d_raw = build_networks(self.config)
        G, D = run.prepare(g_raw), run.prepare(d_raw)
        for net in (G, D):
            if run.world_size > 1:  # two D forwards per step: BN buffers must not be re-sent
                net.broadcast_buffers = False  # type: ignore[assignment]
        g_raw, d_raw = unwrap(G), unwrap(D)
        torch.manual_seed(run.seed + 7919 * run.rank + 1)  # own latents/augmentation per rank
        self.G, self.D = g_raw, d_raw
        ema = EMA(g_raw, p.ema) if p.ema is not None else None
        self.G_ema = ema.module if ema is not None else None
        adam = {"lr": p.lr, "betas": (p.beta1, 0.999)}
        adam.update({"fused": True} if cuda else {"foreach": True})
        opt_g = torch.optim.Adam(G.parameters(), **adam)  # type: ignore[arg-type]
        opt_d = torch.optim.Adam(D.parameters(), **adam)  # type: ignore[arg-type]

        batches = minibatches(
            len(train),
            p.batch_size,
            run.generator(17),
            drop_last=True,
            rank=run.rank,
            world=run.world_size,
        )
        first = next(batches)
        b = int(first.shape[0])
        real_target = torch.full((b,), 1.0 - p.label_smoothing, device=device)
        fake_target = torch.zeros(b, device=device)
        gen_target = torch.ones(b, device=device)
        z = torch.empty(b, p.latent_dim, device=device)
        fixed_z = latent_seeded(GRID_N, p.latent_dim, run.seed + 1, device)
        fixed_y = (
            (torch.arange(GRID_N, device=device) % max(1, n_classes)) if self.conditional else None
        )
        autocast = run.autocast if cuda else contextlib.nullcontext
        log_every = p.log_every
        collapse_from = max(1, p.iterations // 5)
        warned = False
        block = IndexBlocks(batches, first, log_every, device)

        with run.progress(p.iterations, f"{run.stage or 'dcgan'}") as bar:
            done = 0
            for step in range(p.iterations):
                idx = block.next()
                real = data[idx]
                y = labels[idx] if labels is not None else None
                z.normal_()
                # -- D step: real up, fake down (the same DiffAugment policy on both)
                with autocast():
                    fake = G(z, y)
                    d_real = D(diff_augment(real, policy, image_channels), y)
                    d_fake = D(diff_augment(fake.detach(), policy, image_channels), y)
                    loss_d = F.binary_cross_entropy_with_logits(
                        d_real.float(), real_target
                    ) + F.binary_cross_entropy_with_logits(d_fake.float(), fake_target)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                # -- G step: non-saturating loss through the updated D. D's weights need no
                # gradient here: freeze them and call the unwrapped D (no DDP hooks), which
                # saves the weight-gradient half of D's backward pass.
                d_raw.requires_grad_(False)
                with autocast():
                    d_gen = d_raw(diff_augment(fake, policy, image_channels), y)
                    loss_g = F.binary_cross_entropy_with_logits(d_gen.float(), gen_target)
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                d_raw.requires_grad_(True)
                opt_g.step()
                if ema is not None:
                    ema.update(g_raw)

                last = step == p.iterations - 1
                if (step + 1) % log_every == 0 or last:
                    with torch.no_grad():
                        stats = torch.stack(
                            [
                                loss_d.detach().float(),
                                loss_g.detach().float(),
                                torch.sigmoid(d_real.detach().float()).mean(),
                                torch.sigmoid(d_fake.detach().float()).mean(),
                                batch_diversity(fake[:, :image_channels]),
                                batch_diversity(real[:, :image_channels]),
                            ]
                        ).tolist()  # the one host sync of this block of steps
                    ld, lg, dr, df, div, div_real = stats
                    check_finite(ld, "dcgan discriminator loss")
                    check_finite(lg, "dcgan generator loss")
                    run.log(
                        step=step + 1,
                        loss_d=ld,
                        loss_g=lg,
                        d_real=dr,
                        d_fake=df,
                        diversity=div,
                        diversity_real=div_real,
                    )
                    if not warned and step + 1 >= collapse_from and div < 0.1 * div_real:
                        warned = True
                        run.note(
                            f"dcgan: possible mode collapse at step {step + 1}: sample "
                            f"diversity {div:.3g} is under 10 % of the real {div_real:.3g}"
                        )
                    bar.advance(step + 1 - done, loss_d=ld, loss_g=lg)
                    done = step + 1
                if p.sample_every and (step + 1) % p.sample_every == 0 and not last:
                    self._save_grid(run, fixed_z, fixed_y, f"samples-{step + 1:06d}")

        if ema is not None:
            recalibrate_bn(ema.module, p.latent_dim, n_classes, b, device, autocast)
        for net in (g_raw, d_raw):
            net.eval()
        self._save_grid(run, fixed_z, fixed_y, "samples")

    def _save_grid(self, run: RunContext, z: Tensor, y: Tensor | None, name: str) -> None:
        if run.out_dir is None or not run.is_main:
            return
        with torch.no_grad():
            out = self._generate(z, y)
        images, masks = self._split(out)
        save_sample_grid(run, images, name, masks=masks)

    # -- sampling
    def _sampler(self) -> nn.Module:
        net = self.G_ema if self.G_ema is not None else self.G
        if net is None:
            raise TrainingError(
                "dcgan: sample() before fit() or load_state_dict()",
                hint="train the generator first, or load a checkpoint",
            )
        return net

    @torch.no_grad()
    def _generate(self, z: Tensor, y: Tensor | None) -> Tensor:
        """G(z, y) in eval mode, mapped to [0, 1], on the CPU."""
        net = self._sampler()
        was_training = net.training
        net.eval()
        outs = []
        for i in range(0, z.shape[0], SAMPLE_BATCH):
            yb = None if y is None else y[i : i + SAMPLE_BATCH]
            outs.append(to_unit(net(z[i : i + SAMPLE_BATCH], yb).float()).clamp_(0, 1).cpu())
        net.train(was_training)
        if not outs:
            return torch.empty(0, int(self.config.get("channels", 1)), *(2 * [self.size]))
        return torch.cat(outs)

    @property
    def size(self) -> int:
        """Side length of the images this model makes (0 before fit)."""
        return int(self.config.get("size", 0))

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.emits_masks:
            return out, None
        ic = int(self.config.get("image_channels", 1))
        if ic == 1:
            return split_image_mask(out)
        _, masks = split_image_mask(torch.cat([out[:, :1], out[:, ic:]], dim=1))
        return out[:, :ic].contiguous(), masks

    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        """``n`` images in [0, 1] from the EMA generator (masks when ``emits_masks``).

        A conditional model makes class ``label`` (random classes when None); the same
        ``seed`` gives the same images.
        """
        if n < 0:
            raise ConfigError(f"dcgan: cannot sample {n} images")
        self._sampler()
        n_classes = int(self.config.get("n_classes", 0))
        y = None
        if self.conditional:
            if label is None:
                g = torch.Generator().manual_seed(int(seed) + 1 if seed is not None else 0)
                if seed is None:
                    g.seed()
                y = torch.randint(0, n_classes, (n,), generator=g)
            else:
                if not 0 <= int(label) < n_classes:
                    raise ConfigError(f"dcgan: label {label} out of range 0..{n_classes - 1}")
                y = torch.full((n,), int(label), dtype=torch.long)
            y = y.to(self.device)
        z = latent_seeded(n, int(self.config["latent_dim"]), seed, self.device)
        images, masks = self._split(self._generate(z, y))
        if y is not None:
            out_labels: Tensor | None = y.cpu()
        elif label is not None:
            out_labels = torch.full((n,), int(label), dtype=torch.long)
        else:
            out_labels = None
        names = list(self.class_names)
        if out_labels is not None and n and int(out_labels.max()) >= len(names):
            names = []
        tag = f"dcgan:seed={seed}" if seed is not None else "dcgan"
        sources = [f"{tag}:{i}" for i in range(n)]
        return ImageSet(
            images=images,
            labels=out_labels,
            class_names=names,
            masks=masks,
            sources=sources,
            groups=list(sources),
        )

    # -- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Network config, class names, params, and the G (raw and EMA) and D weights."""
        if self.G is None or self.D is None:
            raise TrainingError("dcgan: nothing to save before fit()")

        def cpu(module: nn.Module) -> dict[str, Tensor]:
            return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}

        return {
            "format": 1,
            "config": dict(self.config),
            "params": self.params.model_dump(mode="json"),
            "class_names": list(self.class_names),
            "conditional": self.conditional,
            "emits_masks": self.emits_masks,
            "G": cpu(self.G),
            "G_ema": cpu(self.G_ema) if self.G_ema is not None else None,
            "D": cpu(self.D),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the networks from ``state`` and restore their weights (on the CPU)."""
        try:
            config = dict(state["config"])
            self.conditional = bool(state["conditional"])
            self.emits_masks = bool(state["emits_masks"])
            G, D = build_networks(config)
            G.load_state_dict(state["G"])
            D.load_state_dict(state["D"])
            G_ema = None
            if state.get("G_ema") is not None:
                G_ema, _ = build_networks(config)
                G_ema.load_state_dict(state["G_ema"])
                G_ema.requires_grad_(False)
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"dcgan: checkpoint does not fit this plugin ({exc})") from None
        self.config = config
        self.class_names = list(state.get("class_names", []))
        self.G, self.D, self.G_ema = G.eval(), D.eval(), None if G_ema is None else G_ema.eval()
        self.device = torch.device("cpu")


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the DCGAN generator."""
    register(DCGAN)
