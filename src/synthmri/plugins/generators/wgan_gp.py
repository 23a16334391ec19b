"""``wgan_gp``: Wasserstein GAN with gradient penalty (Gulrajani et al. 2017).

The generator is the DCGAN generator of ``dcgan.py`` (transposed convs from 4x4,
BatchNorm, ReLU, tanh; label embedding concatenated to z when conditional). The critic
mirrors the DCGAN discriminator without BatchNorm, which the gradient penalty forbids:
strided 4x4 convs with layer normalisation (``GroupNorm(1, C)``, per sample) or none,
LeakyReLU 0.2, a 4x4 conv to one unbounded score, plus a projection term when
conditional. Training follows the paper: ``n_critic`` critic steps per generator step,
penalty ``gp_lambda * (||grad critic(x_hat)|| - 1)^2`` at random interpolates of real
and fake, Adam 1e-4 with betas (0, 0.9). DiffAugment (on real, fake and so the
interpolates), an EMA of G for sampling and (slice, mask) pairs (``emits_masks``) work
as in ``dcgan``. The Wasserstein estimate ``E[critic(real)] - E[critic(fake)]`` is logged
as a training curve; it falls as the generator gets closer to the data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch
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
from synthmri.plugins.generators.dcgan import SIZES, DCGANGenerator

__all__ = ["WGANGP", "WGANCritic", "build_wgan_networks", "gradient_penalty"]

SAMPLE_BATCH = 256
GRID_N = 64


# ------------------------------------------------------------------ networks


class WGANCritic(nn.Module):
    """Images ``[N, C, S, S]`` -> scores ``[N]``: strided convs to 4x4, no BatchNorm.

    ``norm="layer"`` puts ``GroupNorm(1, C)`` (layer norm over C, H, W, per sample)
    after every conv but the first; ``"none"`` uses no normalisation. With
    ``n_classes > 0`` a projection term ``<embed(y), sum of features>`` is added.
    """

    def __init__(
        self,
        size: int,
        channels: int,
        ndf: int,
        n_classes: int = 0,
        norm: Literal["layer", "none"] = "layer",
    ) -> None:
        super().__init__()
        steps = (size // 4).bit_length() - 1  # stride-2 convs from size to 4x4
        width = [ndf * min(2**i, 8) for i in range(steps)]
        layers: list[nn.Module] = [nn.Conv2d(channels, width[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for i in range(1, steps):
            layers.append(nn.Conv2d(width[i - 1], width[i], 4, 2, 1))
            if norm == "layer":
                layers.append(nn.GroupNorm(1, width[i]))
            layers.append(nn.LeakyReLU(0.2, True))
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width[-1], 1, 4, 1, 0)
        self.proj = Projection(n_classes, width[-1]) if n_classes > 0 else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.body(x)
        out = self.head(h).reshape(-1)
        if self.proj is not None and y is not None:
            out = out + self.proj(h, y)
        return out


def build_wgan_networks(config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
    """(G, critic) for a network config: size, channels, latent_dim, ngf, ndf, n_classes,
    critic_norm."""
    size, ch, k = int(config["size"]), int(config["channels"]), int(config["n_classes"])
    G = DCGANGenerator(size, ch, int(config["latent_dim"]), int(config["ngf"]), k)
    D = WGANCritic(size, ch, int(config["ndf"]), k, config.get("critic_norm", "layer"))
    return G, D


# ------------------------------------------------------------------ the penalty


def _penalty(scores: Tensor, x_hat: Tensor) -> Tensor:
    """Mean of ``(||d scores / d x_hat|| - 1)^2`` over the batch (graph kept for backward)."""
    (grad,) = torch.autograd.grad(scores.float().sum(), x_hat, create_graph=True)
    norm = torch.sqrt(grad.float().flatten(1).square().sum(1) + 1e-12)
    return (norm - 1.0).square().mean()


def gradient_penalty(
    critic: Callable[..., Tensor],
    real: Tensor,
    fake: Tensor,
    labels: Tensor | None = None,
    eps: Tensor | None = None,
) -> Tensor:
    """The WGAN-GP penalty ``E[(||grad critic(x_hat)||_2 - 1)^2]`` (without lambda).

    ``x_hat = eps * real + (1 - eps) * fake`` with ``eps`` ``[N, 1, 1, 1]`` uniform in
    [0, 1] per sample (drawn when not given). Zero for a critic that is exactly
    1-Lipschitz with unit gradient everywhere (e.g. ``x -> <w, x>`` with ``||w|| = 1``).
    """
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    return _penalty(critic(x_hat, labels), x_hat)


# ------------------------------------------------------------------ the plugin


class WGANGP(Generator):
    """WGAN-GP on the DCGAN generator; per class, conditional, or (slice, mask) pairs."""

    name: ClassVar[str] = "wgan_gp"
    description: ClassVar[str] = (
        "WGAN-GP (Gulrajani et al. 2017): DCGAN generator, layer-norm critic, gradient penalty"
    )
    quick_params: ClassVar[dict[str, Any]] = {
        "iterations": 3,
        "n_critic": 2,
        "batch_size": 8,
        "ngf": 8,
        "ndf": 8,
    }

    class Params(GANParams):
        """WGAN-GP params (plus the shared GAN training params)."""

        iterations: int = Field(
            2000, ge=1, description="generator steps (each after n_critic critic steps)"
        )
        latent_dim: int = Field(128, ge=1, description="size of the latent vector z")
        ngf: int = Field(64, ge=1, description="generator width (channels of its last layer)")
        ndf: int = Field(64, ge=1, description="critic width (channels of its first layer)")
        lr: float = Field(1e-4, gt=0, description="Adam learning rate (G and critic)")
        beta1: float = Field(0.0, ge=0, lt=1, description="Adam beta1")
        beta2: float = Field(0.9, ge=0, lt=1, description="Adam beta2")
        n_critic: int = Field(5, ge=1, description="critic steps per generator step")
        gp_lambda: float = Field(10.0, ge=0, description="weight of the gradient penalty")
        critic_norm: Literal["layer", "none"] = Field(
            "layer", description="critic normalisation: 'layer' (GroupNorm(1, C)) or 'none'"
        )
        conditional: bool = Field(
            False, description="one model for all classes; sample(n, label=k) gives class k"
        )
        emits_masks: bool = Field(
            False, description="learn (slice, tumour mask) pairs; sample() returns masks too"
        )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.conditional = bool(self.params.conditional)
        self.emits_masks = bool(self.params.emits_masks)
        self.G: nn.Module | None = None
        self.D: nn.Module | None = None
        self.G_ema: nn.Module | None = None
        self.config: dict[str, Any] = {}
        self.class_names: list[str] = []
        self.device = torch.device("cpu")

    # -- data
    def _check_data(self, train: ImageSet) -> int:
        """Validate ``train``; the number of classes (0 when unconditional)."""
        if len(train) == 0:
            raise DataError("wgan_gp: the training set is empty")
        if train.size not in SIZES or train.images.shape[-2] != train.size:
            raise DataError(
                f"wgan_gp: images are {tuple(train.images.shape[-2:])}, but WGAN-GP needs "
                f"square images of {', '.join(map(str, SIZES))} px",
                hint="set data.size in the recipe to one of these sizes",
            )
        if not torch.isfinite(train.images).all():
            raise DataError("wgan_gp: the training images contain NaN or inf")
        if not self.conditional:
            return 0
        if train.labels is None:
            raise DataError(
                "wgan_gp: conditional training needs labelled images",
                hint="set conditional: false, or load labelled data",
            )
        return max(len(train.class_names), int(train.labels.max()) + 1)

    def _training_tensor(self, train: ImageSet) -> Tensor:
        """Images (plus the binary mask channel when ``emits_masks``) in [-1, 1]."""
        x = train.images
        if self.emits_masks:
            masks = train.masks if train.masks is not None else torch.zeros_like(x[:, :1])
            x = torch.cat([x, (masks > 0.5).float()], dim=1)
        return from_unit(x)

    # -- training
    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Train G and the critic on ``train`` (all of it kept on ``run.device``)."""
        p = self.params
        n_classes = self._check_data(train)
        device = run.device
        self.device = device
        cuda = device.type == "cuda"
        fmt = torch.channels_last if cuda else torch.contiguous_format
        self.class_names = list(train.class_names)
        data = self._training_tensor(train).to(device).contiguous(memory_format=fmt)
        channels = data.shape[1]
        ic = channels - (1 if self.emits_masks else 0)
        labels = train.labels.to(device) if self.conditional else None  # type: ignore[union-attr]
        self.config = {
            "size": train.size,
            "channels": channels,
            "image_channels": ic,
            "latent_dim": p.latent_dim,
            "ngf": p.ngf,
            "ndf": p.ndf,
            "n_classes": n_classes,
            "critic_norm": p.critic_norm,
        }
        policy = resolve_policy(p.diffaugment, len(train))

        torch.manual_seed(run.seed)
        g_raw, d_raw = build_wgan_networks(self.config)
        G, D = run.prepare(g_raw), run.prepare(d_raw)
        if run.world_size > 1:  # G runs outside DDP in the critic steps: keep its BN local
            G.broadcast_buffers = False  # type: ignore[assignment]
        g_raw, d_raw = unwrap(G), unwrap(D)
        self.G, self.D = g_raw, d_raw
        ema = EMA(g_raw, p.ema) if p.ema is not None else None
        self.G_ema = ema.module if ema is not None else None
        adam: dict[str, Any] = {"lr": p.lr, "betas": (p.beta1, p.beta2)}
        adam.update({"fused": True} if cuda else {"foreach": True})
        opt_g = torch.optim.Adam(G.parameters(), **adam)
        opt_d = torch.optim.Adam(D.parameters(), **adam)

        batches = minibatches(
            len(train),
            p.batch_size,
            run.generator(23),
            drop_last=True,
            rank=run.rank,
            world=run.world_size,
        )
        first = next(batches)
        b = int(first.shape[0])
        z = torch.empty(b, p.latent_dim, device=device)
        eps = torch.empty(b, 1, 1, 1, device=device)
        fixed_z = latent_seeded(GRID_N, p.latent_dim, run.seed + 1, device)
        fixed_y = (
            (torch.arange(GRID_N, device=device) % max(1, n_classes)) if self.conditional else None
        )
        autocast = run.autocast if cuda else contextlib.nullcontext
        block = IndexBlocks(batches, first, p.log_every * p.n_critic, device)
        # wasserstein, loss_d, gp (summed over critic steps), loss_g (over G steps)
        sums = torch.zeros(4, device=device)
        critic_steps = gen_steps = done = 0

        with run.progress(p.iterations, run.stage or "wgan_gp") as bar:
            for step in range(p.iterations):
                d_raw.requires_grad_(True)
                for _ in range(p.n_critic):
                    idx = block.next()
                    real = data[idx]
                    y = labels[idx] if labels is not None else None
                    z.normal_()
                    eps.uniform_()
                    with torch.no_grad(), autocast():
                        fake = g_raw(z, y)
                    with autocast():
                        real_a = diff_augment(real, policy, ic)
                        fake_a = diff_augment(fake, policy, ic).to(real_a.dtype)
                        x_hat = torch.lerp(fake_a, real_a, eps).requires_grad_(True)
                        yy = None if y is None else torch.cat([y, y, y])
                        scores = D(torch.cat([real_a, fake_a, x_hat]), yy).float()
                        d_real, d_fake, d_hat = scores.split(b)
                        gp = _penalty(d_hat, x_hat)
                        w_est = d_real.mean() - d_fake.mean()
                        loss_d = p.gp_lambda * gp - w_est
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    opt_d.step()
                    sums[0] += w_est.detach()
                    sums[1] += loss_d.detach()
                    sums[2] += gp.detach()
                    critic_steps += 1
                # -- G step through the frozen critic (outside DDP: no gradient sync for D)
                d_raw.requires_grad_(False)
                z.normal_()
                with autocast():
                    fake = G(z, y)
                    loss_g = -d_raw(diff_augment(fake, policy, ic), y).float().mean()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                if ema is not None:
                    ema.update(g_raw)
                sums[3] += loss_g.detach()
                gen_steps += 1

                last = step == p.iterations - 1
                if (step + 1) % p.log_every == 0 or last:
                    with torch.no_grad():
                        div = batch_diversity(fake[:, :ic]).float().reshape(1)
                        stats = torch.cat([sums, div]).tolist()  # the one host sync
                    w, ld, gpv, lg = (
                        stats[0] / critic_steps,
                        stats[1] / critic_steps,
                        stats[2] / critic_steps,
                        stats[3] / gen_steps,
                    )
                    check_finite(ld, "wgan_gp critic loss")
                    check_finite(lg, "wgan_gp generator loss")
                    run.log(
                        step=step + 1,
                        wasserstein=w,
                        loss_d=ld,
                        loss_g=lg,
                        gp=gpv,
                        diversity=stats[4],
                    )
                    bar.advance(step + 1 - done, W=w, gp=gpv)
                    done = step + 1
                    sums.zero_()
                    critic_steps = gen_steps = 0
                if p.sample_every and (step + 1) % p.sample_every == 0 and not last:
                    self._save_grid(run, fixed_z, fixed_y, f"samples-{step + 1:06d}")

        d_raw.requires_grad_(True)
        if ema is not None:
            recalibrate_bn(ema.module, p.latent_dim, n_classes, b, device, autocast)
        for net in (g_raw, d_raw):
            net.eval()
        self._save_grid(run, fixed_z, fixed_y, "samples")

    def _save_grid(self, run: RunContext, z: Tensor, y: Tensor | None, name: str) -> None:
        if run.out_dir is None or not run.is_main:
            return
        images, masks = self._split(self._generate(z, y))
        save_sample_grid(run, images, name, masks=masks)

    # -- sampling
    def _sampler(self) -> nn.Module:
        net = self.G_ema if self.G_ema is not None else self.G
        if net is None:
            raise TrainingError(
                "wgan_gp: sample() before fit() or load_state_dict()",
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
            size = int(self.config.get("size", 0))
            return torch.empty(0, int(self.config.get("channels", 1)), size, size)
        return torch.cat(outs)

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        """Images and binary masks (None unless ``emits_masks``)."""
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
            raise ConfigError(f"wgan_gp: cannot sample {n} images")
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
                    raise ConfigError(f"wgan_gp: label {label} out of range 0..{n_classes - 1}")
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
        tag = f"wgan_gp:seed={seed}" if seed is not None else "wgan_gp"
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
        """Network config, class names, flags, and the G (raw and EMA) and critic weights."""
        if self.G is None or self.D is None:
            raise TrainingError("wgan_gp: nothing to save before fit()")

        def cpu(module: nn.Module) -> dict[str, Tensor]:
            return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}

        return {
            "format": 1,
            "config": dict(self.config),
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
            G, D = build_wgan_networks(config)
            G.load_state_dict(state["G"])
            D.load_state_dict(state["D"])
            G_ema = None
            if state.get("G_ema") is not None:
                G_ema, _ = build_wgan_networks(config)
                G_ema.load_state_dict(state["G_ema"])
                G_ema.requires_grad_(False)
            conditional, emits_masks = bool(state["conditional"]), bool(state["emits_masks"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"wgan_gp: checkpoint does not fit this plugin ({exc})") from None
        self.config, self.conditional, self.emits_masks = config, conditional, emits_masks
        self.class_names = list(state.get("class_names", []))
        self.G, self.D, self.G_ema = G.eval(), D.eval(), None if G_ema is None else G_ema.eval()
        self.device = torch.device("cpu")


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the WGAN-GP generator."""
    register(WGANGP)
