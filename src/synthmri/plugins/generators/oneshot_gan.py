"""One-Shot GAN (Sushko, Gall and Khoreva, CVPRW 2021), written from the paper.

A GAN meant for very little data: one image, one video, or one small class.

- **Generator**: a latent code (``latent_dim``) is mapped by a bias-free linear layer to
  a small ``base`` x ``base`` map (3 to 7 px, so that repeated 2x upsampling reaches the
  image size: 4 px for 32/64/128), then one residual block at that size and ``n_up``
  residual blocks that upsample x2 (bilinear + 3x3 conv, spectral norm, batch norm,
  LeakyReLU; bilinear because nearest gave hatched textures in short runs). Every block
  has an image output (3x3 conv to the image channels); the outputs are summed across
  scales (each upsampled bilinearly to the next) and ``tanh`` gives the image at every
  scale; the last scale is the sample. 32 px: 4 blocks, 64 px: 5, 128 px: 6.
- **Discriminator**: a shared low-level trunk of residual downsampling blocks (spectral
  norm), then two branches: *content* (global average pooling, then 1x1-conv residual
  blocks: judges what is there, not where) and *layout* (a 1x1 conv collapses the
  channels to one map, then 3x3-conv residual blocks: judges where things are, not what
  they look like). Every block of the trunk and of both branches has its own 1x1-conv
  decision head producing logits (low-level and layout: one per position; content: one
  per image). 64 px: 6 blocks deep, 2 of them low-level; 128 px: 7 (3 low-level); 32 px:
  4 (1 low-level). Every discriminator conv, heads included, has spectral norm; weights
  start from N(0, 0.02) and the heads' logits are scaled by ``HEAD_GAIN`` (both make
  the per-pixel heads leave chance level much sooner). The content branch is
  ``max_channels`` wide (1x1 convs on a pooled vector cost almost nothing).
- **Loss**: BCE with logits (non-saturating for G); each group's heads averaged;
  ``L_adv = L_content + L_layout + 2 L_low``; the generator minimises
  ``L_adv - dr_lambda * L_DR``, where the diversity regularisation ``L_DR`` is the mean
  L1 distance between the generator's block outputs for two latent codes, averaged over
  blocks. Not divided by the latents' distance by default (as we read the paper's
  equation; ``dr_normalize: true`` divides each pair's distance by the mean L1 distance
  of its two latents, mode-seeking style), but each block's distance is taken relative
  to that block's mean absolute activation: the generator's batch norm would otherwise
  let it inflate L_DR without end by scaling features.
- **Feature augmentation** of the *real* discriminator features at the branch inputs,
  each sample with probability ``feature_aug_p``: channel mixing with another real
  sample and channel dropout for the content branch, a rectangle taken from another
  real sample's feature map for the layout branch. DiffAugment on the images
  (``diffaugment``) on top; keep it on: with translation only, the discriminator's
  layout branch wins within ~100 steps at 64 px and the generator collapses to one
  image.
- **Modes**: ``images_per_model: null`` trains one model on all images given (the
  pipeline gives one class); ``images_per_model: 1`` trains one model per training
  image as in the paper (at most ``max_models``; the rest are skipped with a note) and
  ``sample`` draws evenly across the models.
- **Global branch** (``global_weight`` > 0; not in the paper, off by default): the
  DCGAN discriminator (strided convs with batch norm down to a 4 to 7 px map, one logit
  per image; width ``4 * channels``) added beside the two branches as a judge of the
  whole image, its BCE weighted by ``global_weight`` in ``L_adv``. See below for why.
- **Mode-seeking term** (``mode_seeking`` > 0; not in the paper, off by default): MSGAN's
  term on the final images, as the ``dcgan`` plugin has it, added to G's loss beside L_DR.
  L_DR rewards distance linearly, so it pushes as little on a collapsed generator as on a
  varied one; this term grows as the images of two latents approach each other.

Slow start of the paper's discriminator (measured on CPU, 64 px phantoms, one class of
200, batch 16, about 0.45 s per step on one core): in 300 to 600 steps its samples are
rectangular frames with vertical stripes, not head shapes; they collapse towards one shape
around step 500 and become head-shaped ovals with a skull ring and a midline only by step
2000 (about 17 minutes). Swapping the networks locates the cause in the discriminator:
this generator against a plain DCGAN discriminator makes head shapes with a skull ring in
300 steps, while a DCGAN generator against this discriminator makes checkerboard squares.
No variant of the two-branch discriminator alone fixed it within 300 steps: without
spectral norm (blobs, then boxes and stripes), with batch norm (white or dark frames),
one branch alone (content: blotches; layout: vertical stripes; low-level: diagonal
strokes), only the deepest head of each group, a 32-channel layout branch, lr 1e-3,
lr_d 4x lr_g, without feature augmentation or L_DR, or DiffAugment without cutout. Its
heads judge local texture, pooled statistics or a one-channel map, and none of them sees
the whole image with all its channels; they give the generator little to go on until
many steps have passed. With ``global_weight: 1`` the samples are head-shaped ovals with
a skull ring and midline by step 300 (2.5 minutes), at about 20 % more time per step
(benchmarks/README.md); later they swing between interior shapes (a zigzag shared by the
batch at step 450) and stay low in within-class diversity. The ``gan-zoo`` recipe uses
it; the ``oneshot-gan`` recipe (the published study) keeps the paper's discriminator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from synthmri import hookimpl
from synthmri.core.errors import DataError, PluginError
from synthmri.core.interfaces import Generator, ImageSet
from synthmri.nn.params import ModeSeekingWeight
from synthmri.plugins.generators._gan import GANParams

if TYPE_CHECKING:
    from torch import Tensor, nn

    from synthmri.core.training import RunContext
    from synthmri.nn.oneshot import OneShotDiscriminator, OneShotGenerator

__all__ = ["OneShotGAN", "parameter_counts"]

COLLAPSE_THRESHOLD = 0.01
"""Mean pairwise per-pixel L1 distance (images in [0, 1]) below which a note warns of collapse."""

_STATE_VERSION = 1


class OneShotGAN(Generator):
    """One-Shot GAN: two-branch (content/layout) discriminator, feature augmentation, L_DR."""

    name: ClassVar[str] = "oneshot_gan"
    description: ClassVar[str] = (
        "One-Shot GAN (Sushko et al. 2021): content/layout two-branch discriminator, "
        "feature augmentation and diversity regularisation; per class or one model per image"
    )
    quick_params: ClassVar[dict[str, Any]] = {
        "iterations": 4,
        "batch_size": 4,
        "channels": 8,
        "max_channels": 32,
        "log_every": 2,
    }

    class Params(GANParams):
        """One-Shot GAN params (on top of the shared GAN training params)."""

        iterations: int = Field(3000, ge=1, description="generator steps per model")
        batch_size: int = Field(16, ge=2, description="images per step (per process under DDP)")
        latent_dim: int = Field(64, ge=1, description="size of the latent code")
        channels: int = Field(
            8, ge=1, description="width at full resolution; doubles per halving of the size"
        )
        max_channels: int = Field(256, ge=1, description="cap on any block's width")
        lr_g: float = Field(2e-4, gt=0.0, description="Adam learning rate of the generator")
        lr_d: float = Field(2e-4, gt=0.0, description="Adam learning rate of the discriminator")
        beta1: float = Field(0.5, ge=0.0, lt=1.0, description="Adam beta1 (beta2 is 0.999)")
        dr_lambda: float = Field(
            0.15, ge=0.0, description="weight of the diversity regularisation L_DR in G's loss"
        )
        dr_normalize: bool = Field(
            False, description="divide L_DR per pair by the L1 distance of the two latents"
        )
        mode_seeking: ModeSeekingWeight = 0.0  # not in the paper
        low_level_weight: float = Field(
            2.0, ge=0.0, description="weight of the low-level heads' loss in L_adv"
        )
        feature_aug_p: float = Field(
            0.3, ge=0.0, le=1.0, description="probability of feature augmentation per real sample"
        )
        global_weight: float = Field(
            0.0,
            ge=0.0,
            description="weight of an extra global branch in the discriminator (a DCGAN-style "
            "judge of the whole image; not in the paper). 0: the paper's discriminator; 1: "
            "head-shaped slices in ~300 steps at 64 px instead of ~2000 (a CPU budget)",
        )
        images_per_model: int | None = Field(
            None,
            ge=1,
            description="null: one model on all images given; 1: one model per image (the "
            "paper's setting); k: one model per group of k images",
        )
        max_models: int = Field(
            8, ge=1, description="at most this many models (the rest are skipped with a note)"
        )

        @model_validator(mode="after")
        def _no_ada(self) -> OneShotGAN.Params:
            if self.ada_target is not None:
                raise ValueError("ada_target is not supported by oneshot_gan (own training loop)")
            return self

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._config: dict[str, Any] | None = None
        self._generators: list[nn.Module] = []  # sampling nets (EMA when on), eval mode
        self._states: list[dict[str, Any]] = []  # per model: g, g_ema, d state dicts

    # -- building
    def _build(self, cfg: Mapping[str, Any]) -> tuple[OneShotGenerator, OneShotDiscriminator]:
        from synthmri.nn.oneshot import OneShotDiscriminator, OneShotGenerator

        g = OneShotGenerator(
            cfg["size"],
            cfg["image_channels"],
            cfg["latent_dim"],
            cfg["channels"],
            cfg["max_channels"],
        )
        d = OneShotDiscriminator(
            cfg["size"],
            cfg["image_channels"],
            cfg["channels"],
            cfg["max_channels"],
            cfg["feature_aug_p"],
            cfg.get("global_weight", 0.0) > 0,
        )
        return g, d

    # -- training
    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Train one model on ``train``, or one per group of ``images_per_model`` images."""
        from synthmri.core.artifacts import save_sample_grid
        from synthmri.nn.oneshot import block_plan

        p = self.params
        if len(train) == 0:
            raise DataError("oneshot_gan: no training images", hint="check the data and classes")
        block_plan(train.size)  # fail early on a size the architecture cannot reach
        if train.images.shape[-2] != train.images.shape[-1]:
            raise DataError(f"oneshot_gan needs square images, got {tuple(train.images.shape)}")
        cfg = {
            "size": train.size,
            "image_channels": train.channels,
            "latent_dim": p.latent_dim,
            "channels": p.channels,
            "max_channels": p.max_channels,
            "feature_aug_p": p.feature_aug_p,
            "global_weight": p.global_weight,
        }
        groups = self._groups(len(train), run)
        self._config = {**cfg, "n_models": len(groups), "groups": [g.tolist() for g in groups]}
        self._generators, self._states = [], []
        with run.progress(p.iterations * len(groups), f"{run.stage or self.name}") as bar:
            for m, idx in enumerate(groups):
                g_net, state = self._fit_one(train.images[idx], m, len(groups), run, bar)
                self._generators.append(g_net)
                self._states.append(state)
        if run.out_dir is not None and run.is_main:
            grid = self.sample(min(32, max(8, 4 * len(groups))), seed=run.seed)
            save_sample_grid(run, grid.images, "samples")

    def _groups(self, n: int, run: RunContext) -> list[Tensor]:
        import torch

        p = self.params
        if p.images_per_model is None:
            return [torch.arange(n)]
        perm = torch.randperm(n, generator=run.generator(17))
        groups = list(perm.split(p.images_per_model))
        if len(groups) > p.max_models:
            run.note(
                f"oneshot_gan: {len(groups)} models of {p.images_per_model} image(s) asked for; "
                f"training {p.max_models} (max_models), the other {len(groups) - p.max_models} "
                f"are skipped"
            )
            groups = groups[: p.max_models]
        return [g.sort().values for g in groups]

    def _fit_one(
        self, images: Tensor, m: int, n_models: int, run: RunContext, bar: Any
    ) -> tuple[nn.Module, dict[str, Any]]:
        import torch

        from synthmri.core.training import check_finite, minibatches, unwrap
        from synthmri.nn.diffaugment import diff_augment, resolve_policy
        from synthmri.nn.ema import EMA
        from synthmri.nn.gan_training import mode_seeking_loss
        from synthmri.nn.oneshot import adversarial_loss, diversity_loss
        from synthmri.nn.tensors import batch_diversity, from_unit, latent_seeded, to_unit

        p = self.params
        cfg = self._config
        assert cfg is not None
        device = run.device
        torch.manual_seed(run.seed * 1009 + m)
        g_mod, d_mod = self._build(cfg)
        g, d = run.prepare(g_mod), run.prepare(d_mod)
        ema = EMA(g_mod, p.ema) if p.ema is not None else None
        betas = (p.beta1, 0.999)
        fused = device.type == "cuda" or None
        opt_g = torch.optim.Adam(g.parameters(), lr=p.lr_g, betas=betas, fused=fused)
        opt_d = torch.optim.Adam(d.parameters(), lr=p.lr_d, betas=betas, fused=fused)
        d_params = list(d_mod.parameters())
        policy = resolve_policy(p.diffaugment, len(images))
        fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        real_all = from_unit(images.float()).to(device).contiguous(memory_format=fmt)
        n_img = real_all.shape[0]
        bs = p.batch_size
        shard = run.world_size > 1 and n_img >= run.world_size  # tiny sets: every rank sees all
        batches = minibatches(
            n_img,
            bs,
            run.generator(1000 + m),
            drop_last=True,
            rank=run.rank if shard else 0,
            world=run.world_size if shard else 1,
        )
        step0 = m * p.iterations
        weights = {"low": p.low_level_weight, "content": 1.0, "layout": 1.0}
        if p.global_weight > 0:
            weights["global"] = p.global_weight
        names = [f"d_{k}" for k in weights] + ["d_loss", "g_adv", "l_dr"]
        if p.mode_seeking > 0:
            names.append("mode_seeking")
        sums = torch.zeros(len(names), device=device)
        count = 0
        collapse_noted = False
        grid_z = latent_seeded(16, p.latent_dim, run.seed + 7, device)
        g.train()
        d.train()
        for it in range(p.iterations):
            idx = next(batches).to(device)
            if idx.numel() < bs:  # fewer images than a batch (e.g. one image): repeat them
                idx = idx.repeat(math.ceil(bs / idx.numel()))[:bs]
            real = real_all[idx]
            z = torch.randn(bs, p.latent_dim, device=device)
            with run.autocast():
                fake, feats = g(z)
            # -- discriminator step (one forward over real + fake)
            for q in d_params:
                q.requires_grad_(True)
            with run.autocast():
                both = torch.cat([real, fake.detach().to(real.dtype)])
                both = diff_augment(both, policy, cfg["image_channels"])
                out = d(both, n_real=bs)
            real_out = {k: [lg[:bs] for lg in v] for k, v in out.items()}
            fake_out = {k: [lg[bs:] for lg in v] for k, v in out.items()}
            real_loss = adversarial_loss(real_out, real=True)
            fake_loss = adversarial_loss(fake_out, real=False)
            d_groups = [real_loss[k] + fake_loss[k] for k in weights]
            loss_d = sum(w * v for w, v in zip(weights.values(), d_groups, strict=True))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # -- generator step (reuses the forward above; D frozen, no DDP sync on D)
            for q in d_params:
                q.requires_grad_(False)
            with run.autocast():
                out_g = d_mod(diff_augment(fake, policy, cfg["image_channels"]))
            g_loss = adversarial_loss(out_g, real=True)
            g_adv = sum(w * g_loss[k] for k, w in weights.items())
            dr = diversity_loss(feats, z, p.dr_normalize)
            loss_g = g_adv - p.dr_lambda * dr
            terms = [*d_groups, loss_d, g_adv, dr]
            if p.mode_seeking > 0:
                ms = mode_seeking_loss(fake, z)
                loss_g = loss_g + p.mode_seeking * ms
                terms.append(ms)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            if ema is not None:
                ema.update(g)
            sums += torch.stack(terms).detach()
            count += 1
            step = it + 1
            if step % p.log_every == 0 or step == p.iterations:
                vals = (sums / count).tolist()  # the one host sync every log_every steps
                div = float(batch_diversity(to_unit(fake.detach())))
                for k, v in zip(names, vals, strict=True):
                    check_finite(v, f"oneshot_gan {k}")
                logged = dict(zip(names, vals, strict=True))
                run.log(step=step0 + step, model=m, diversity=div, **logged)
                if div < COLLAPSE_THRESHOLD and not collapse_noted:
                    collapse_noted = True
                    run.note(
                        f"oneshot_gan model {m}: samples at step {step} are nearly identical "
                        f"(batch diversity {div:.4f}): mode collapse",
                    )
                bar.advance(1, d=logged["d_loss"], g=logged["g_adv"], dr=logged["l_dr"])
                sums.zero_()
                count = 0
            else:
                bar.advance(1)
            if p.sample_every and step % p.sample_every == 0 and step < p.iterations:
                net = ema.module if ema is not None else unwrap(g)
                self._save_grid(
                    net,
                    grid_z,
                    run,
                    f"samples-model{m}-step{step}" if n_models > 1 else f"samples-step{step}",
                )
        g_raw = unwrap(g)
        sampler = ema.module if ema is not None else g_raw
        sampler.eval()
        state = {
            "g": _cpu_state(g_raw),
            "g_ema": _cpu_state(ema.module) if ema is not None else None,
            "d": _cpu_state(unwrap(d)),
        }
        return sampler, state

    def _save_grid(self, net: nn.Module, z: Tensor, run: RunContext, name: str) -> None:
        import torch

        from synthmri.core.artifacts import save_sample_grid
        from synthmri.nn.tensors import to_unit

        was = net.training
        net.eval()
        with torch.no_grad():
            img, _ = net(z)
        net.train(was)
        save_sample_grid(run, to_unit(img.float()).clamp(0, 1), name)

    # -- sampling
    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        """``n`` images in [0, 1]; sample ``i`` comes from model ``i % n_models``."""
        import torch

        from synthmri.nn.tensors import latent_seeded, to_unit

        if self._config is None or not self._generators:
            raise PluginError(
                "oneshot_gan: sample() before fit()",
                hint="train it with fit() or restore it with load_state_dict()",
            )
        cfg = self._config
        size, ch = cfg["size"], cfg["image_channels"]
        n_models = len(self._generators)
        first = next(self._generators[0].parameters())
        device = first.device
        z = latent_seeded(n, cfg["latent_dim"], seed, device)
        images = torch.empty(n, ch, size, size)
        owner = torch.arange(n) % n_models
        with torch.no_grad():
            for m, net in enumerate(self._generators):
                sel = (owner == m).nonzero().reshape(-1)
                if sel.numel() == 0:
                    continue
                net.eval()
                for chunk in sel.split(256):
                    img, _ = net(z[chunk.to(device)])
                    images[chunk] = to_unit(img.float()).clamp(0, 1).cpu()
        labels = None if label is None else torch.full((n,), int(label), dtype=torch.long)
        return ImageSet(
            images=images,
            labels=labels,
            sources=[f"{self.name}:seed={seed}:{i}" for i in range(n)],
            groups=[f"synthetic:{self.name}"] * n,
        )

    # -- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Config (size, channels, widths, groups) and every model's G, EMA G and D weights."""
        if self._config is None:
            return {}
        return {
            "version": _STATE_VERSION,
            "config": dict(self._config),
            "models": [dict(s) for s in self._states],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild every sub-model from ``state`` and restore its weights."""
        if not state:
            return
        if int(state.get("version", 0)) != _STATE_VERSION or "config" not in state:
            raise PluginError(
                "oneshot_gan: unrecognised checkpoint",
                hint="retrain the generator with this synthmri version",
            )
        cfg = dict(state["config"])
        self._config = cfg
        self._generators, self._states = [], []
        for s in state["models"]:
            g, d = self._build(cfg)
            g.load_state_dict(s["g"])
            d.load_state_dict(s["d"])
            sampler = g
            if s.get("g_ema") is not None:
                sampler, _ = self._build(cfg)
                sampler.load_state_dict(s["g_ema"])
            for q in sampler.parameters():
                q.requires_grad_(False)
            sampler.eval()
            self._generators.append(sampler)
            self._states.append(dict(s))

    def networks(self, model: int = 0) -> tuple[OneShotGenerator, OneShotDiscriminator]:
        """Fresh copies of model ``model``'s raw generator and discriminator (for inspection)."""
        if self._config is None:
            raise PluginError("oneshot_gan: not trained")
        g, d = self._build(self._config)
        g.load_state_dict(self._states[model]["g"])
        d.load_state_dict(self._states[model]["d"])
        return g, d


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    from synthmri.core.training import unwrap

    return {k: v.detach().cpu().clone() for k, v in unwrap(module).state_dict().items()}


def parameter_counts(size: int, params: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Parameter counts of G and D for an image size under ``params`` (defaults if None)."""
    from synthmri.nn.oneshot import OneShotDiscriminator, OneShotGenerator

    p = OneShotGAN.Params(**dict(params or {}))
    g = OneShotGenerator(size, 1, p.latent_dim, p.channels, p.max_channels)
    d = OneShotDiscriminator(
        size, 1, p.channels, p.max_channels, p.feature_aug_p, p.global_weight > 0
    )
    return {
        "generator": sum(q.numel() for q in g.parameters()),
        "discriminator": sum(q.numel() for q in d.parameters()),
    }


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the One-Shot GAN."""
    register(OneShotGAN)
