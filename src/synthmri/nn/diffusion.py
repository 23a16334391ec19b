"""Diffusion models on MONAI: the networks, the noise schedules, and the steps that use them.

Everything here is MONAI's (``DiffusionModelUNet``, ``AutoencoderKL``, ``DDPMScheduler``,
``DDIMScheduler``, ``RFlowScheduler``); this module only builds them from a plain config
dict (what checkpoints keep) and writes the few lines around them:

- ``build_unet`` / ``build_autoencoder``: the denoiser (a class embedding with one extra
  "no label" class for classifier-free guidance when ``n_classes`` > 0) and the small
  KL autoencoder of latent mode;
- ``NoiseSchedule``: training targets (DDPM with epsilon or v prediction, or rectified
  flow), ``sample`` (DDIM, deterministic for a noise tensor, or RFlow Euler steps) with
  classifier-free guidance, and ``noise_to`` / ``denoise_from``: noise clean data to step
  ``t`` and denoise it back, which is what anomaly detection with a healthy-only model does
  (``noise_and_denoise``);
- ``train_autoencoder``: L1 reconstruction plus a small KL term (no perceptual or
  adversarial loss: they need downloaded weights or a discriminator), with an L1 and a
  soft Dice term of their own for mask channels (``mask_dice`` checks them afterwards), and
  ``latent_scale``: the LDM scale factor (1 / std of the training latents);
- ``train_diffusion``: the whole training of one model on a run (the autoencoder first in
  latent mode, then the UNet with AdamW, gradient clipping, an EMA, seeded minibatches,
  logging and progress), shared by the ``diffusion`` generator and the
  ``diffusion_anomaly`` classifier; ``encode`` / ``decode`` map images to the scaled
  latents and back.

Images live in [-1, 1] here (``synthmri.nn.tensors.from_unit``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from synthmri.core.training import RunContext
    from synthmri.nn.params import DiffusionTrainingParams

__all__ = [
    "NoiseSchedule",
    "build_autoencoder",
    "build_unet",
    "decode",
    "encode",
    "encode_mean",
    "guided_output",
    "latent_scale",
    "mask_dice",
    "model_state",
    "noise_and_denoise",
    "restore_models",
    "train_autoencoder",
    "train_diffusion",
]


def build_unet(config: Mapping[str, Any]) -> nn.Module:
    """MONAI ``DiffusionModelUNet`` (2D) from ``config``: ``in_channels``, ``channels``,
    ``attention_levels``, ``num_res_blocks``, ``norm_groups``, ``head_channels`` and
    ``n_classes`` (0: unconditional; else ``n_classes + 1`` embeddings, the last one the
    "no label" of classifier-free guidance)."""
    from monai.networks.nets import DiffusionModelUNet

    n_classes = int(config.get("n_classes", 0))
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=int(config["in_channels"]),
        out_channels=int(config["in_channels"]),
        channels=tuple(int(c) for c in config["channels"]),
        attention_levels=tuple(bool(a) for a in config["attention_levels"]),
        num_res_blocks=int(config["num_res_blocks"]),
        norm_num_groups=int(config["norm_groups"]),
        num_head_channels=int(config["head_channels"]),
        num_class_embeds=n_classes + 1 if n_classes else None,
    )


def build_autoencoder(config: Mapping[str, Any]) -> nn.Module:
    """MONAI ``AutoencoderKL`` (2D, no attention) from ``config``: ``in_channels``,
    ``ae_channels`` (one level per entry; each level after the first halves the size),
    ``latent_channels``, ``norm_groups``."""
    from monai.networks.nets import AutoencoderKL

    channels = tuple(int(c) for c in config["ae_channels"])
    return AutoencoderKL(
        spatial_dims=2,
        in_channels=int(config["in_channels"]),
        out_channels=int(config["in_channels"]),
        channels=channels,
        attention_levels=(False,) * len(channels),
        latent_channels=int(config["latent_channels"]),
        num_res_blocks=1,
        norm_num_groups=int(config["norm_groups"]),
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    )


def guided_output(
    model: nn.Module, x: Tensor, t: Tensor, y: Tensor | None, guidance: float, null: int
) -> Tensor:
    """The denoiser's output at ``(x, t)``: unconditional when ``y`` is None; with
    classifier-free guidance ``u + guidance * (c - u)`` (``u``: the "no label" output,
    label ``null``) when ``guidance != 1``; plainly conditional otherwise."""
    if y is None:
        return model(x, t)
    if guidance == 1.0:
        return model(x, t, class_labels=y)
    both = model(
        torch.cat([x, x]), torch.cat([t, t]), class_labels=torch.cat([y, torch.full_like(y, null)])
    )
    cond, uncond = both.chunk(2)
    return uncond + guidance * (cond - uncond)


class NoiseSchedule:
    """The noise schedule of one model: training targets, sampling, noising and denoising.

    ``kind``: ``"ddpm"`` (DDPM training, DDIM sampling; ``prediction`` ``"epsilon"`` or
    ``"v"``) or ``"rflow"`` (rectified flow: velocity ``x0 - noise``, Euler sampling).
    ``clip``: clip the predicted clean sample to [-1, 1] while sampling (pixel space; off in
    latent space).
    """

    def __init__(
        self,
        kind: str = "ddpm",
        prediction: str = "epsilon",
        timesteps: int = 1000,
        schedule: str = "linear_beta",
        clip: bool = True,
    ) -> None:
        from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler

        if kind not in ("ddpm", "rflow"):
            raise ValueError(f"unknown scheduler {kind!r} (ddpm or rflow)")
        if prediction not in ("epsilon", "v"):
            raise ValueError(f"unknown prediction {prediction!r} (epsilon or v)")
        self.kind, self.prediction, self.timesteps = kind, prediction, int(timesteps)
        monai_prediction = "epsilon" if prediction == "epsilon" else "v_prediction"
        self.rflow: Any = None
        self.train: Any = None
        self.ddim: Any = None
        if kind == "rflow":
            self.rflow = RFlowScheduler(
                num_train_timesteps=self.timesteps, use_discrete_timesteps=True, spatial_dim=2
            )
        else:
            self.train = DDPMScheduler(
                num_train_timesteps=self.timesteps,
                schedule=schedule,
                prediction_type=monai_prediction,
                clip_sample=clip,
            )
            self.ddim = DDIMScheduler(
                num_train_timesteps=self.timesteps,
                schedule=schedule,
                prediction_type=monai_prediction,
                clip_sample=clip,
            )

    # -- training
    def loss(self, model: nn.Module, x0: Tensor, y: Tensor | None = None) -> Tensor:
        """The MSE between the model's output at a random step and its target, for a batch
        ``x0`` (the global RNG draws steps and noise)."""
        noise = torch.randn_like(x0)
        if self.rflow is not None:
            t = self.rflow.sample_timesteps(x0)
            xt = self.rflow.add_noise(x0, noise, t)
            target = x0 - noise
        else:
            t = torch.randint(0, self.timesteps, (x0.shape[0],), device=x0.device)
            xt = self.train.add_noise(x0, noise, t)
            target = noise
            if self.prediction == "v":
                target = self.train.get_velocity(x0, noise, t)
        out = model(xt, t) if y is None else model(xt, t, class_labels=y)
        return F.mse_loss(out.float(), target.float())

    # -- sampling
    def _plan(self, steps: int, start: int | None, device: torch.device) -> list[int]:
        """The steps a sampler visits, from ``start`` (the first step <= it; default: the
        noisiest) down."""
        sched = self.rflow if self.rflow is not None else self.ddim
        sched.set_timesteps(steps, device=device)
        plan = [int(t) for t in sched.timesteps.tolist()]
        if start is not None:
            plan = [t for t in plan if t <= start]
        return plan

    @torch.no_grad()
    def denoise_from(
        self,
        model: nn.Module,
        xt: Tensor,
        plan: list[int],
        y: Tensor | None = None,
        guidance: float = 1.0,
        null: int = 0,
    ) -> Tensor:
        """Run the sampler over ``plan`` (from ``_plan``) from ``xt`` at ``plan[0]``;
        deterministic (DDIM with eta 0, or RFlow Euler steps)."""
        x = xt
        for i, step in enumerate(plan):
            t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
            out = guided_output(model, x, t, y, guidance, null).float()
            if self.rflow is not None:
                nxt = plan[i + 1] if i + 1 < len(plan) else 0
                x, _ = self.rflow.step(out, step, x, nxt)
            else:
                x, _ = self.ddim.step(out, step, x)
        return x

    def sample(
        self,
        model: nn.Module,
        noise: Tensor,
        steps: int,
        y: Tensor | None = None,
        guidance: float = 1.0,
        null: int = 0,
    ) -> Tensor:
        """Clean samples from pure ``noise`` in ``steps`` sampler steps (with classifier-free
        guidance when ``y`` is given and ``guidance != 1``)."""
        plan = self._plan(steps, None, noise.device)
        return self.denoise_from(model, noise, plan, y, guidance, null)

    def noise_to(self, x0: Tensor, step: int, noise: Tensor) -> Tensor:
        """``x0`` noised to ``step`` (0 .. timesteps - 1) with ``noise``."""
        t = torch.full((x0.shape[0],), int(step), device=x0.device, dtype=torch.long)
        sched = self.rflow if self.rflow is not None else self.train
        return sched.add_noise(x0, noise, t)


def noise_and_denoise(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: Tensor,
    step: int,
    steps: int = 50,
    y: Tensor | None = None,
    seed: int | None = 0,
    shared_noise: bool = False,
) -> Tensor:
    """Noise ``x0`` to about ``step`` and denoise it back (a healthy-only model "repairs"
    what it never saw: the residual ``x0 - result`` marks anomalies).

    The sampler's grid of ``steps`` over the whole schedule is cut to the steps at or below
    ``step``; ``x0`` is noised to the first of them (seeded noise) and denoised from there.
    ``shared_noise``: one noise image for every item (the first item's noise without it),
    so that an item's result does not depend on the batch it is in.
    """
    plan = schedule._plan(steps, int(step), x0.device)
    if not plan:
        return x0.clone()
    g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    shape = (1, *x0.shape[1:]) if shared_noise else x0.shape
    noise = torch.randn(shape, generator=g).to(x0.device, x0.dtype).expand_as(x0)
    return schedule.denoise_from(model, schedule.noise_to(x0, plan[0], noise), plan, y)


# ----------------------------------------------------------------------- latent mode


def _kl(mu: Tensor, sigma: Tensor) -> Tensor:
    """KL(N(mu, sigma) || N(0, 1)), summed over the latent, averaged over the batch."""
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-8) - 1)
    return kl.flatten(1).sum(1).mean()


def train_autoencoder(
    ae: nn.Module,
    batches: Iterator[Tensor],
    iterations: int,
    lr: float,
    kl_weight: float,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    on_step: Callable[[int, Tensor], None] | None = None,
    grad_clip: float | None = 1.0,
    mask_channels: int = 0,
    adversarial_weight: float = 0.0,
) -> None:
    """Train ``ae`` (``AutoencoderKL``) for ``iterations`` steps on batches in [-1, 1]:
    L1 reconstruction plus ``kl_weight`` times the KL term; Adam. ``on_step(step, loss)``
    sees each step's loss (a tensor: reading it is the caller's host sync).

    ``adversarial_weight`` > 0 adds, after the first quarter of the steps, a least-squares
    patch adversarial term on the image channels (MONAI ``PatchDiscriminator`` and
    ``PatchAdversarialLoss``, the discriminator trained alongside; as in latent diffusion's
    autoencoders, without their perceptual term, whose network would need a download): L1
    alone gives back blurred slices.

    The last ``mask_channels`` channels are tumour masks: they get their own L1 and a soft
    Dice term (MONAI ``DiceLoss`` over the batch). Under plain L1 over all channels an
    empty mask is nearly optimal (a tumour is a few % of a slice's pixels), and the
    autoencoder learned to drop every mask."""
    from monai.losses import DiceLoss

    dice = DiceLoss(batch=True)
    m = int(mask_channels)
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    critic: _PatchCritic | None = None
    ae.train()
    for step in range(iterations):
        x = next(batches)
        images = x.shape[1] - m
        adversarial = adversarial_weight > 0 and step >= iterations // 4
        if adversarial and critic is None:
            critic = _PatchCritic(images, x.device, lr)
        with autocast():
            recon, mu, sigma = ae(x)
            recon, x = recon.float(), x.float()
            if m:
                loss = F.l1_loss(recon[:, :-m], x[:, :-m]) + F.l1_loss(recon[:, -m:], x[:, -m:])
                loss = loss + dice(_unit(recon[:, -m:]), _unit(x[:, -m:]))
            else:
                loss = F.l1_loss(recon, x)
            loss = loss + kl_weight * _kl(mu.float(), sigma.float())
            if adversarial:
                loss = loss + adversarial_weight * critic.fool(recon[:, :images])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(ae.parameters(), grad_clip)
        opt.step()
        if critic is not None:
            with autocast():
                critic.step(x[:, :images], recon[:, :images].detach())
        if on_step is not None:
            on_step(step, loss.detach())
    ae.eval()


class _PatchCritic:
    """The autoencoder's patch discriminator (MONAI's, 3 layers, 16 channels at 64 px) and
    its least-squares loss; it lives only while the autoencoder trains (under torchrun each
    rank keeps its own, trained on its share of the batch)."""

    def __init__(self, channels: int, device: torch.device, lr: float) -> None:
        from monai.losses import PatchAdversarialLoss
        from monai.networks.nets import PatchDiscriminator

        self.net = PatchDiscriminator(
            spatial_dims=2, num_layers_d=3, channels=16, in_channels=channels
        ).to(device)
        self.loss = PatchAdversarialLoss(criterion="least_squares")
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr, betas=(0.5, 0.999))

    def fool(self, fake: Tensor) -> Tensor:
        """The autoencoder's term: its reconstructions taken for real."""
        return self.loss(self.net(fake)[-1].float(), target_is_real=True, for_discriminator=False)

    def step(self, real: Tensor, fake: Tensor) -> None:
        """One discriminator step on real slices against detached reconstructions."""
        loss = self.loss(self.net(real)[-1].float(), target_is_real=True, for_discriminator=True)
        loss = loss + self.loss(
            self.net(fake)[-1].float(), target_is_real=False, for_discriminator=True
        )
        self.opt.zero_grad(set_to_none=True)
        (0.5 * loss).backward()
        self.opt.step()


def _unit(x: Tensor) -> Tensor:
    """[-1, 1] to [0, 1], clamped."""
    return ((x + 1) / 2).clamp(0, 1)


def mask_dice(ae: nn.Module, data: Tensor, mask_channels: int, batch: int = 128) -> float:
    """Dice of the masks (the last ``mask_channels`` channels of ``data``, in [-1, 1],
    thresholded at 0) after a trip through ``ae``, over all of ``data``; 1.0 when ``data``
    holds no tumour pixel and none comes back."""
    with torch.no_grad():
        m = int(mask_channels)
        inter = total = 0.0
        for i in range(0, data.shape[0], batch):
            x = data[i : i + batch]
            back = decode(ae, encode_mean(ae, x), 1.0)[:, -m:] > 0
            true = x[:, -m:] > 0
            inter += float((back & true).sum())
            total += float(back.sum() + true.sum())
        return 1.0 if total == 0 else 2 * inter / total


@torch.no_grad()
def encode_mean(ae: nn.Module, x: Tensor, batch: int = 128) -> Tensor:
    """The latent means ``z_mu`` of ``x`` in [-1, 1], in batches (eval mode)."""
    unwrapped = getattr(ae, "module", ae)
    return torch.cat([unwrapped.encode(x[i : i + batch])[0] for i in range(0, x.shape[0], batch)])


def latent_scale(latents: Tensor) -> float:
    """The LDM scale factor: 1 / std of the training latents (so they have unit variance)."""
    std = float(latents.float().std())
    return 1.0 / std if std > 0 else 1.0


# ----------------------------------------------------------------------- training on a run


def train_diffusion(
    data: Tensor,
    config: dict[str, Any],
    p: DiffusionTrainingParams,
    run: RunContext,
    *,
    labels: Tensor | None = None,
    label_dropout: float = 0.0,
    batch_seed: int = 17,
    name: str = "diffusion",
) -> tuple[nn.Module, nn.Module | None]:
    """Train a model on ``data`` (``[N, C, S, S]`` in [-1, 1]): in latent mode
    (``p.latent``) an ``AutoencoderKL`` first, then the UNet on its scaled latent means;
    returns ``(unet, autoencoder or None)``, the UNet being the EMA copy when ``p.ema``.

    ``config`` (``build_unet``'s keys plus ``latent``) is completed in place:
    ``ae_channels``, ``latent_channels`` and ``latent_scale`` in latent mode, and
    ``in_channels`` (what the UNet sees). With ``labels``, ``label_dropout`` of them are
    replaced by the "no label" class ``config["n_classes"]`` (classifier-free guidance).
    Seeds come from ``run`` (``run.seed``, minibatch order from ``batch_seed``); on CUDA the
    steps run under bf16 autocast with channels_last tensors; under torchrun the UNet is
    wrapped in DDP (each rank its share of every batch).
    """
    import contextlib

    from synthmri.core.training import check_finite, minibatches, unwrap
    from synthmri.nn.ema import EMA

    device = run.device
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    autocast = run.autocast if cuda else contextlib.nullcontext
    data = data.to(device).contiguous(memory_format=fmt)
    labels = labels.to(device) if labels is not None else None
    torch.manual_seed(run.seed)
    ae = None
    if p.latent:
        ae, data = _fit_autoencoder(data, config, p, run, autocast, fmt, batch_seed, name)
    config["in_channels"] = int(data.shape[1])
    unet = build_unet(config)
    model = run.prepare(unet)
    unet = unwrap(model)
    torch.manual_seed(run.seed + 7919 * run.rank + 1)
    ema = EMA(unet, p.ema) if p.ema is not None else None
    kwargs: dict[str, Any] = {"fused": True} if cuda else {"foreach": True}
    opt = torch.optim.AdamW(unet.parameters(), lr=p.lr, weight_decay=p.weight_decay, **kwargs)
    schedule = NoiseSchedule(
        config["scheduler"],
        config["prediction"],
        config["timesteps"],
        config["schedule"],
        clip=not config["latent"],
    )
    batches = minibatches(len(data), p.batch_size, run.generator(batch_seed),
                          rank=run.rank, world=run.world_size)  # fmt: skip
    null = int(config.get("n_classes", 0))  # the "no label" embedding
    unet.train()
    total = torch.zeros((), device=device)
    with run.progress(p.iterations, run.stage or name) as bar:
        for step in range(p.iterations):
            idx = next(batches).to(device)
            x0 = data[idx]
            y = None
            if labels is not None:
                y = labels[idx]
                drop = torch.rand(y.shape, device=device) < label_dropout
                y = torch.where(drop, torch.full_like(y, null), y)
            with autocast():
                loss = schedule.loss(model, x0, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if p.grad_clip:
                torch.nn.utils.clip_grad_norm_(unet.parameters(), p.grad_clip)
            opt.step()
            if ema is not None:
                ema.update(unet)
            total += loss.detach()
            if (step + 1) % p.log_every == 0 or step == p.iterations - 1:
                n = (step % p.log_every) + 1
                mean = float(total) / n  # the host sync, once per log_every steps
                check_finite(mean, f"{name} loss")
                run.log(step=step + 1, loss=mean)
                bar.advance(n, loss=mean)
                total.zero_()
    unet.eval()
    return (ema.module if ema is not None else unet), ae


def _fit_autoencoder(
    data: Tensor,
    config: dict[str, Any],
    p: DiffusionTrainingParams,
    run: RunContext,
    autocast: Any,
    fmt: Any,
    batch_seed: int,
    name: str,
) -> tuple[nn.Module, Tensor]:
    """Train the autoencoder on ``data``; the autoencoder (eval, frozen) and the scaled
    latent means."""
    from synthmri.core.training import check_finite, minibatches, unwrap

    config.update(ae_channels=list(p.ae_channels), latent_channels=p.latent_channels)
    ae_model = run.prepare(build_autoencoder(config))
    order = minibatches(len(data), p.batch_size, run.generator(batch_seed + 1),
                        rank=run.rank, world=run.world_size)  # fmt: skip
    batches = (data[i.to(data.device)] for i in order)
    stage = f"{run.stage or name}/autoencoder"
    with run.progress(p.ae_iterations, stage) as bar:
        losses: list[Any] = []

        def on_step(step: int, loss: Any) -> None:
            losses.append(loss)
            if (step + 1) % p.log_every == 0 or step == p.ae_iterations - 1:
                mean = float(sum(losses)) / len(losses)
                check_finite(mean, f"{name} autoencoder loss")
                run.log(step=step + 1, ae_loss=mean)
                bar.advance(len(losses), ae_loss=mean)
                losses.clear()

        masks = int(config.get("data_channels", 0)) - int(config.get("image_channels", 0))
        masks = max(0, masks)
        train_autoencoder(ae_model, batches, p.ae_iterations, p.ae_lr, p.ae_kl_weight,
                          autocast, on_step, p.grad_clip, masks,
                          p.ae_adversarial_weight)  # fmt: skip
    ae = unwrap(ae_model).eval()
    ae.requires_grad_(False)
    if masks:  # masks that do not survive the autoencoder cannot be sampled
        dice = mask_dice(ae, data, masks)
        run.log(ae_mask_dice=round(dice, 4))
        if dice < 0.5:
            run.note(
                f"{name}: the autoencoder gives back the training masks with Dice {dice:.2f}; "
                "the sampled masks will be poor (raise ae_iterations)"
            )
    latents = encode_mean(ae, data)
    scale = latent_scale(latents)
    config["latent_scale"] = scale
    return ae, (latents * scale).contiguous(memory_format=fmt)


def model_state(unet: nn.Module, ae: nn.Module | None) -> dict[str, Any]:
    """The weights a checkpoint keeps: the UNet's and, in latent mode, the autoencoder's."""
    from synthmri.nn.tensors import cpu_state

    return {"unet": cpu_state(unet), "ae": cpu_state(ae) if ae is not None else None}


def restore_models(
    config: Mapping[str, Any], state: Mapping[str, Any]
) -> tuple[nn.Module, nn.Module | None]:
    """The UNet and autoencoder (None unless ``config["latent"]``) rebuilt from ``config`` with
    the weights of ``model_state``, frozen, in eval mode, on the CPU. Raises ``KeyError``,
    ``RuntimeError`` (weights that do not fit), ``TypeError`` or ``ValueError``."""
    unet = build_unet(config)
    unet.load_state_dict(state["unet"])
    ae = None
    if config.get("latent"):
        ae = build_autoencoder({**config, "in_channels": config["data_channels"]})
        ae.load_state_dict(state["ae"])
        ae.requires_grad_(False).eval()
    unet.requires_grad_(False)
    return unet.eval(), ae


@torch.no_grad()
def encode(ae: nn.Module, x: Tensor, scale: float, batch: int = 128) -> Tensor:
    """The scaled latent means of images ``x`` in [-1, 1] (what the UNet of latent mode
    sees)."""
    return encode_mean(ae, x, batch) * scale


@torch.no_grad()
def decode(ae: nn.Module, z: Tensor, scale: float) -> Tensor:
    """Images in [-1, 1] (unclamped) from scaled latents ``z``."""
    return ae.decode(z / scale)
