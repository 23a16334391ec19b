"""The base of synthmri's GANs: data checks, the training loop, sampling and checkpoints.

A GAN plugin subclasses ``GAN`` and writes only what is its own:

- ``Params``: extends ``GANParams`` (iterations, batch size, DiffAugment, EMA, logging)
  with ``latent_dim``, ``lr`` and ``beta1`` (Adam; ``beta2`` too if it is not 0.999), its
  network widths, and ``conditional`` / ``emits_masks`` / ``mask_conditioned`` if it
  supports them (a mask-conditioned G is called ``G(z, y, mask)``: ``t.generate`` does);
- ``build_networks(config)``: the generator ``G(z, y)`` (images in [-1, 1]) and the
  discriminator ``D(x, y)`` (one score per image) for a network config, the dict
  ``network_config`` makes and checkpoints keep (``synthmri.nn.dcgan.build_networks``
  builds the DCGAN pair);
- ``train_step(t)``: one generator step and its discriminator step(s) on the
  ``GANTraining`` ``t`` (networks, optimisers, batches, DiffAugment), returning a
  ``GANStep``: the losses to log and the last real and generated batches. Its D step
  passes the fake batch through ``t.fakes_for_d``, which mixes in the negatives
  (``use_negatives``, NDA) when the fit has them.

The base does the rest. ``fit`` checks the data (square images of a supported size,
finite values, labels when conditional), maps images (and masks, as a second channel)
to [-1, 1] on the run's device, seeds, builds and prepares the networks (device,
DistributedDataParallel under torchrun), keeps an EMA of G, makes the optimisers, feeds
minibatches, logs the losses' means and the batch diversity every ``log_every`` steps
(the only host sync), stops on NaN, notes a mode collapse, saves sample grids, and
recomputes the EMA generator's BatchNorm statistics at the end; after ``start_from`` it
fine-tunes another trained model's G and D instead of new ones. ``sample`` draws per
class or conditionally (with masks when ``emits_masks``; mask-conditioned, from the
training masks it keeps), reproducibly for a seed, and
``state_dict`` / ``load_state_dict`` round-trip config, class names and weights. The
params every GAN shares and ``GANTraining`` live in ``_gan_training.py``.

Importing this module loads no torch: plugin modules import it at module level.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from synthmri.core.errors import ConfigError, DataError, PluginError, TrainingError
from synthmri.core.interfaces import Generator, ImageSet, StrictParams
from synthmri.nn.diffaugment import resolve_policy
from synthmri.plugins.generators._gan_log import BlockLog
from synthmri.plugins.generators._gan_training import GANParams, GANStep, GANTraining

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from synthmri.core.training import RunContext

__all__ = ["GAN", "GANParams", "GANStep", "GANTraining"]

NDA = "pass D's fake batch through t.fakes_for_d in every D step"


# ------------------------------------------------------------------ the base


class GAN(Generator):
    """A GAN: per class, conditional (``conditional``), or on (slice, mask) pairs
    (``emits_masks``). Subclasses write ``build_networks`` and ``train_step``."""

    Params: ClassVar[type[StrictParams]] = GANParams  # type: ignore[assignment]
    batch_seed: ClassVar[int] = 17
    """Offset of the run seed for the order of the minibatches."""
    collapse_ratio: ClassVar[float] = 0.1
    """Note a possible mode collapse when the generated batch's diversity falls under this
    share of the real batch's (from 1/5 of the steps on; 0 = never)."""
    grid_n: ClassVar[int] = 64
    sample_batch: ClassVar[int] = 256
    warm_starts: ClassVar[bool] = True
    takes_negatives: ClassVar[bool] = True

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.start_state: Mapping[str, Any] | None = None  # start_from
        self.negatives: ImageSet | None = None  # use_negatives
        self.conditional = bool(getattr(self.params, "conditional", False))
        self.mask_input = bool(getattr(self.params, "mask_conditioned", False))
        self.emits_masks = self.mask_input or bool(getattr(self.params, "emits_masks", False))
        self.mask_bank: Tensor | None = None  # mask_input: the training masks, uint8
        self.mask_bank_labels: Tensor | None = None  # and their classes (conditional)
        self.G: nn.Module | None = None  # raw generator (unwrapped)
        self.D: nn.Module | None = None
        self.G_ema: nn.Module | None = None
        self.config: dict[str, Any] = {}
        self.class_names: list[str] = []
        self.device: torch.device | None = None

    # ------------------------------------------------------------ what a GAN writes

    def build_networks(self, config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
        """(G, D) for a network config (from ``network_config`` or a checkpoint)."""
        raise NotImplementedError

    def train_step(self, t: GANTraining) -> GANStep:
        """One generator step and its discriminator step(s)."""
        raise NotImplementedError

    def network_config(self, size: int, channels: int, n_classes: int) -> dict[str, Any]:
        """What ``build_networks`` needs: size, channels (a mask is one more),
        image_channels, latent_dim, n_classes (0 = unconditional), and ``mask_input: true``
        when mask-conditioned (G draws the image channels only). Extend it with widths."""
        return {
            "size": size,
            "channels": channels,
            "image_channels": channels - (1 if self.emits_masks else 0),
            "latent_dim": self.params.latent_dim,
            "n_classes": n_classes,
            **({"mask_input": True} if self.mask_input else {}),
        }

    def start_training(self, t: GANTraining) -> dict[str, Tensor]:
        """Tensors to make once before the first step (``t.buffers``); none by default."""
        return {}

    def optimizers(
        self, G: nn.Module, D: nn.Module, cuda: bool
    ) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """Adam for G and D: ``lr``, betas ``(beta1, beta2)`` of the params (beta2 0.999
        when the params have none); fused on CUDA, foreach on the CPU."""
        import torch

        p = self.params
        kwargs: dict[str, Any] = {"lr": p.lr, "betas": (p.beta1, getattr(p, "beta2", 0.999))}
        kwargs.update({"fused": True} if cuda else {"foreach": True})
        return torch.optim.Adam(G.parameters(), **kwargs), torch.optim.Adam(
            D.parameters(), **kwargs
        )

    def seed_steps(self, run: RunContext) -> None:
        """Seed the global RNG for the steps (latents, DiffAugment): per rank under DDP."""
        import torch

        torch.manual_seed(run.seed + 7919 * run.rank + 1)

    @property
    def batches_per_step(self) -> int:
        """Real batches one ``train_step`` takes (index batches move to the device
        ``log_every`` steps at a time)."""
        return 1

    # ------------------------------------------------------------ data

    def image_sizes(self) -> tuple[int, ...]:
        """The square image sizes the networks support (default: the DCGAN networks')."""
        from synthmri.nn.dcgan import SIZES

        return SIZES

    def check_data(self, train: ImageSet) -> int:
        """Validate ``train``; the number of classes (0 when unconditional)."""
        from synthmri.nn.tensors import check_training_set

        n_classes = check_training_set(train, self.name, self.conditional)
        if self.mask_input and train.masks is None:
            raise DataError(
                f"{self.name}: mask_conditioned needs tumour masks, and the training set has none",
                hint="use an image+mask layout or phantoms, or set mask_conditioned: false",
            )
        sizes = self.image_sizes()
        if train.size not in sizes or train.images.shape[-2] != train.size:
            raise DataError(
                f"{self.name}: images are {tuple(train.images.shape[-2:])}, but {self.name} "
                f"needs square images of {', '.join(map(str, sizes))} px",
                hint="set data.size in the recipe to one of these sizes",
            )
        return n_classes

    def training_tensor(self, train: ImageSet) -> Tensor:
        """Images (plus the binary mask channel when ``emits_masks``) in [-1, 1]."""
        from synthmri.nn.tensors import join_image_mask

        return join_image_mask(train.images, train.masks, self.emits_masks)

    # ------------------------------------------------------------ training

    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Train G and D on ``train`` (all of it kept on ``run.device``)."""
        import torch

        from synthmri.core.training import minibatches, unwrap
        from synthmri.nn.batchnorm import latent_batches, recalibrate_bn
        from synthmri.nn.ema import EMA
        from synthmri.nn.gan_training import AdaptiveAugment, freeze_first_layers
        from synthmri.nn.tensors import IndexBlocks, latent_seeded

        p = self.params
        n_classes = self.check_data(train)
        device = run.device
        self.device = device
        cuda = device.type == "cuda"
        fmt = torch.channels_last  # as the networks (_networks)
        self.class_names = list(train.class_names)
        data = self.training_tensor(train).to(device).contiguous(memory_format=fmt)
        labels = train.labels.to(device) if self.conditional else None  # type: ignore[union-attr]
        self.config = self.network_config(train.size, data.shape[1], n_classes)
        if self.mask_input:
            self.mask_bank = (data[:, -1:] > 0).to("cpu", torch.uint8).contiguous()
            self.mask_bank_labels = train.labels.clone() if self.conditional else None  # type: ignore[union-attr]
        negatives = self._negatives(train, fmt)
        latent_dim = int(self.config["latent_dim"])

        torch.manual_seed(run.seed)
        g_raw, d_raw = self._networks(self.config)
        start, self.start_state = self.start_state, None  # start_from: for this fit only
        if start is not None:  # optimisers, EMA and augmentation start afresh
            self._load_nets(g_raw, d_raw, start, "the model to start from")
            freeze_first_layers(d_raw, p.freeze_d, f"{self.name}: freeze_d")
        G, D = run.prepare(g_raw), run.prepare(d_raw)
        if run.world_size > 1:  # G and D run more than once per step: keep BN buffers local
            G.broadcast_buffers = D.broadcast_buffers = False  # type: ignore[assignment]
        g_raw, d_raw = unwrap(G), unwrap(D)
        self.seed_steps(run)
        self.G, self.D = g_raw, d_raw
        ema = EMA(g_raw, p.ema) if p.ema is not None else None
        self.G_ema = ema.module if ema is not None else None
        opt_g, opt_d = self.optimizers(G, D, cuda)

        batches = minibatches(
            len(train),
            p.batch_size,
            run.generator(self.batch_seed),
            drop_last=True,
            rank=run.rank,
            world=run.world_size,
        )
        first = next(batches)
        b = int(first.shape[0])
        fixed_z = latent_seeded(self.grid_n, latent_dim, run.seed + 1, device)
        fixed_y = (
            (torch.arange(self.grid_n, device=device) % max(1, n_classes))
            if self.conditional
            else None
        )
        t = GANTraining(
            G=G,
            D=D,
            g=g_raw,
            d=d_raw,
            opt_g=opt_g,
            opt_d=opt_d,
            z=torch.empty(b, latent_dim, device=device),
            policy=resolve_policy(p.diffaugment, 0 if p.ada_target else len(train)),
            image_channels=int(self.config["image_channels"]),
            autocast=run.autocast if cuda else contextlib.nullcontext,
            data=data,
            labels=labels,
            blocks=IndexBlocks(batches, first, p.log_every * self.batches_per_step, device),
            negatives=negatives,
            negative_share=p.negative_share,
            mask_input=self.mask_input,
            mismatch_share=float(getattr(p, "mask_mismatch", 0.0)),
        )
        if p.ada_target is not None:  # p from 0; "auto" = every op, whatever the data size
            t.ada = AdaptiveAugment(p.ada_target, batch=b, speed=p.ada_speed, device=device)
        t.buffers = self.start_training(t)

        with run.progress(p.iterations, run.stage or self.name) as bar:
            log = BlockLog(self.name, p.iterations, self.collapse_ratio, run, bar)
            for step in range(p.iterations):
                out = self.train_step(t)
                if negatives is not None and not t.negatives_mixed:
                    raise PluginError(f"{self.name}: train_step ignores the negatives", hint=NDA)
                if t.ada is not None:
                    out.losses["aug_p"] = t.ada.p
                if ema is not None:
                    ema.update(g_raw)
                log.add(out.losses)
                last = step == p.iterations - 1
                if (step + 1) % p.log_every == 0 or last:
                    ch = t.image_channels
                    log.write(step + 1, out.fake[:, :ch], out.real[:, :ch])
                if p.sample_every and (step + 1) % p.sample_every == 0 and not last:
                    self._save_grid(run, fixed_z, fixed_y, f"samples-{step + 1:06d}")

        if ema is not None:
            batches_z = latent_batches(8, max(b, 64), latent_dim, n_classes, device)
            if self.mask_input:  # masks drawn reproducibly, as the latents
                batches_z = (
                    (z, y, self._draw_masks(len(z), y, run.seed + 3 + i))
                    for i, (z, y) in enumerate(batches_z)
                )
            recalibrate_bn(ema.module, batches_z, t.autocast)
        for net in (g_raw, d_raw):
            net.eval()
        self._save_grid(run, fixed_z, fixed_y, "samples")

    def _negatives(self, train: ImageSet, fmt: torch.memory_format) -> Tensor | None:
        """The negatives of this fit (``use_negatives``; then forgotten) as ``train`` is
        prepared, on its device; a DataError if they do not fit ``train``."""
        negatives, self.negatives = self.negatives, None
        if negatives is None:
            return None
        from synthmri.nn.tensors import check_training_set

        check_training_set(negatives, f"{self.name} (negatives)", False)
        if negatives.images.shape[1:] != train.images.shape[1:]:
            raise DataError(
                f"{self.name}: the negatives are {tuple(negatives.images.shape[1:])}, "
                f"the training images {tuple(train.images.shape[1:])}"
            )
        x = self.training_tensor(negatives).to(self.device)
        return x.contiguous(memory_format=fmt)

    def _save_grid(self, run: RunContext, z: Tensor, y: Tensor | None, name: str) -> None:
        if run.out_dir is None or not run.is_main:
            return
        from synthmri.core.artifacts import save_sample_grid

        images, masks = self._draw(z, y, run.seed + 2)
        save_sample_grid(run, images, name, masks=masks)

    # ------------------------------------------------------------ sampling

    @property
    def size(self) -> int:
        """Side length of the images this model makes (0 before fit)."""
        return int(self.config.get("size", 0))

    def _sampler(self) -> nn.Module:
        net = self.G_ema if self.G_ema is not None else self.G
        if net is None:
            raise TrainingError(
                f"{self.name}: sample() before fit() or load_state_dict()",
                hint="train the generator first, or load a checkpoint",
            )
        return net

    def _generate(self, z: Tensor, y: Tensor | None, masks: Tensor | None = None) -> Tensor:
        """G(z, y) (mask-conditioned: G(z, y, masks)) in eval mode, mapped to [0, 1], on
        the CPU."""
        import torch

        from synthmri.nn.tensors import to_unit

        net = self._sampler()
        was_training = net.training
        net.eval()
        outs = []
        step = self.sample_batch
        with torch.no_grad():
            for i in range(0, z.shape[0], step):
                yb = None if y is None else y[i : i + step]
                mb = () if masks is None else (masks[i : i + step],)
                out = to_unit(net(z[i : i + step], yb, *mb).float()).clamp_(0, 1)
                outs.append(out.cpu().contiguous())  # the nets run channels_last
        net.train(was_training)
        if not outs:
            return torch.empty(0, int(self.config.get("channels", 1)), self.size, self.size)
        return torch.cat(outs)

    def _draw_masks(self, n: int, y: Tensor | None, seed: int | None) -> Tensor:
        """``n`` masks in [-1, 1] on the sampling device for a mask-conditioned G: training
        masks (of class ``y[i]`` when conditional; an empty one for a class without any),
        drawn with replacement and mirrored left-right at random, reproducibly for ``seed``."""
        import torch

        bank, bank_labels = self.mask_bank, self.mask_bank_labels
        if bank is None:
            raise TrainingError(f"{self.name}: no training masks to condition on")
        g = torch.Generator()
        if seed is None:
            g.seed()
        else:
            g.manual_seed(int(seed))
        masks = torch.zeros(n, *bank.shape[1:])
        classes = [None] if y is None or bank_labels is None else y.cpu().unique().tolist()
        for k in classes:
            rows = torch.arange(n) if k is None else (y.cpu() == k).nonzero().flatten()  # type: ignore[union-attr]
            pool = bank if k is None else bank[bank_labels == k]
            if len(pool):
                masks[rows] = pool[torch.randint(len(pool), (len(rows),), generator=g)].float()
        flip = torch.rand(n, generator=g) < 0.5
        masks[flip] = masks[flip].flip(-1)
        return (masks * 2 - 1).to(self.device or "cpu")

    def _draw(self, z: Tensor, y: Tensor | None, seed: int | None) -> tuple[Tensor, Tensor | None]:
        """Images in [0, 1] and binary masks (None unless ``emits_masks``) for latents
        ``z`` and classes ``y``, on the CPU; a mask-conditioned G gets masks drawn with
        ``seed``, and they are the masks returned."""
        if not self.mask_input:
            return self._split(self._generate(z, y))
        masks = self._draw_masks(len(z), y, seed)
        return self._generate(z, y, masks), (masks > 0).float().cpu()

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        """Images and binary masks (None unless ``emits_masks``)."""
        if not self.emits_masks:
            return out, None
        import torch

        from synthmri.nn.tensors import split_image_mask

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
        import torch

        from synthmri.nn.tensors import latent_seeded

        if n < 0:
            raise ConfigError(f"{self.name}: cannot sample {n} images")
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
                    raise ConfigError(f"{self.name}: label {label} out of range 0..{n_classes - 1}")
                y = torch.full((n,), int(label), dtype=torch.long)
            y = y.to(self.device)
        z = latent_seeded(n, int(self.config["latent_dim"]), seed, self.device or "cpu")
        images, masks = self._draw(z, y, None if seed is None else int(seed) + 2)
        if y is not None:
            out_labels: Tensor | None = y.cpu()
        elif label is not None:
            out_labels = torch.full((n,), int(label), dtype=torch.long)
        else:
            out_labels = None
        names = list(self.class_names)
        if out_labels is not None and n and int(out_labels.max()) >= len(names):
            names = []
        tag = f"{self.name}:seed={seed}" if seed is not None else self.name
        sources = [f"{tag}:{i}" for i in range(n)]
        return ImageSet(
            images=images,
            labels=out_labels,
            class_names=names,
            masks=masks,
            sources=sources,
            groups=list(sources),
        )

    # ------------------------------------------------------------ checkpoints

    def start_from(self, state: Mapping[str, Any]) -> None:
        """Begin the next ``fit`` from the G and D weights of ``state`` (fine-tuning)."""
        self.start_state = state

    def use_negatives(self, negatives: ImageSet) -> None:
        """Mix ``negatives`` into D's fakes in the next ``fit`` (``negative_share``)."""
        self.negatives = negatives

    def _load_nets(self, G: nn.Module, D: nn.Module, state: Mapping[str, Any], what: str) -> None:
        try:
            G.load_state_dict(state["G"])
            D.load_state_dict(state["D"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"{self.name}: {what} does not fit this plugin ({exc})") from None

    def state_dict(self) -> dict[str, Any]:
        """Network config, class names, params, and the G (raw and EMA) and D weights."""
        from synthmri.nn.tensors import cpu_state as cpu

        if self.G is None or self.D is None:
            raise TrainingError(f"{self.name}: nothing to save before fit()")
        return {
            "format": 1,
            "config": dict(self.config),
            "params": self.params.model_dump(mode="json"),
            "class_names": list(self.class_names),
            "conditional": self.conditional,
            "emits_masks": self.emits_masks,
            **({"mask_bank": self.mask_bank} if self.mask_bank is not None else {}),
            **(
                {"mask_bank_labels": self.mask_bank_labels}
                if self.mask_bank_labels is not None
                else {}
            ),
            "G": cpu(self.G),
            "G_ema": cpu(self.G_ema) if self.G_ema is not None else None,
            "D": cpu(self.D),
        }

    def _networks(self, config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
        """``build_networks`` in channels_last, on every device: 5-10 % fewer CPU seconds
        for these convolution stacks on a CPU too (docs/results.md, quickstart); trained and
        restored networks alike, so a checkpoint samples exactly as the trained model."""
        import torch

        G, D = self.build_networks(config)
        return G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the networks from ``state`` and restore their weights (on the CPU)."""
        import torch

        try:
            config = dict(state["config"])
            conditional, emits_masks = bool(state["conditional"]), bool(state["emits_masks"])
            G, D = self._networks(config)
            self._load_nets(G, D, state, "checkpoint")
            G_ema = None
            if state.get("G_ema") is not None:
                G_ema, _ = self._networks(config)
                G_ema.load_state_dict(state["G_ema"])
                G_ema.requires_grad_(False)
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"{self.name}: checkpoint does not fit this plugin ({exc})") from None
        mask_input = bool(config.get("mask_input", False))
        if mask_input and state.get("mask_bank") is None:
            raise DataError(f"{self.name}: checkpoint of a mask-conditioned model without masks")
        self.config, self.conditional, self.emits_masks = config, conditional, emits_masks
        self.mask_input = mask_input
        self.mask_bank, self.mask_bank_labels = (
            state.get("mask_bank"),
            state.get("mask_bank_labels"),
        )
        self.class_names = list(state.get("class_names", []))
        self.G, self.D, self.G_ema = G.eval(), D.eval(), None if G_ema is None else G_ema.eval()
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> None:
        """Sample on ``device`` (the generators move there; D stays)."""
        for net in (self.G, self.G_ema):
            if net is not None:
                net.to(device)
        self.device = device
