"""The convolutional VAE of the published VAE/GAN brain-MRI study: network, losses,
training loop, and a trained-model wrapper.

Encoder: six conv blocks (stride 2 while the feature map is larger than 2 x 2, else
stride 1; BatchNorm; LeakyReLU) to ``mu`` and ``logvar`` of a ``latent_dim``-dimensional
Gaussian. Decoder: a fully connected layer to 2 x 2 x 1024 (at the default width;
``base_channels`` scales every layer), stride-2 transposed-conv blocks (BatchNorm, ReLU)
up to the image size, a 3 x 3 conv and a sigmoid. Sizes 32 to 256 px work: the number of
stride-2 blocks is computed from the size (4 at 32 px, 5 at 64, 6 from 128 on), and a
size that is not a power of two is reached by one bilinear resize before the last conv.

``train_vae`` trains a ``VAENet`` on the (beta-)ELBO; ``TrainedVAE`` holds a trained
network and encodes, decodes and reconstructs in batches. The ``vae`` generator samples
from the prior with it; the ``vae_anomaly`` classifier scores reconstruction errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthmri.core.artifacts import save_sample_grid
from synthmri.core.augment import Augment
from synthmri.core.errors import ConfigError, DataError
from synthmri.core.training import check_finite, minibatches, predict_batched, unwrap
from synthmri.nn.batchnorm import recalibrate_bn
from synthmri.nn.tensors import IndexBlocks, latent_seeded

if TYPE_CHECKING:
    from synthmri.core.training import RunContext
    from synthmri.nn.params import VAEParams

__all__ = [
    "MAX_SIZE",
    "MIN_SIZE",
    "TrainedVAE",
    "VAENet",
    "auto_vae_size",
    "check_size",
    "decoder_steps",
    "encoder_strides",
    "kl_divergence",
    "kl_weight",
    "reconstruction_loss",
    "train_vae",
]

MIN_SIZE, MAX_SIZE = 32, 256
ENCODER_BLOCKS = 6
MAX_CHANNELS = 1024  # at the default width the decoder starts from 2 x 2 x 1024
_LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite


# ------------------------------------------------------------------ network


def check_size(size: int, height: int | None = None) -> None:
    if height is not None and height != size:
        raise ConfigError(
            f"vae: images must be square, got {height} x {size}",
            hint="set data.size so the loader resizes to a square",
        )
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(
            f"vae: image size {size} px is outside {MIN_SIZE}..{MAX_SIZE} px",
            hint=f"set data.size between {MIN_SIZE} and {MAX_SIZE}",
        )


def encoder_strides(size: int) -> list[int]:
    """The stride of each of the six encoder blocks: 2 while the map stays >= 2 x 2."""
    n_down = min(ENCODER_BLOCKS, math.floor(math.log2(size / 2)))
    return [2] * n_down + [1] * (ENCODER_BLOCKS - n_down)


def decoder_steps(size: int) -> int:
    """Number of stride-2 decoder blocks from 2 x 2 to (at least) ``size``."""
    return math.ceil(math.log2(size / 2))


class VAENet(nn.Module):
    """Convolutional VAE for square images of ``size`` px (32..256) with ``channels`` channels.

    ``forward(x)`` returns ``(logits, mu, logvar)`` with a reparameterised sample in
    training mode and ``z = mu`` in eval mode; ``decode`` returns images in [0, 1].
    """

    def __init__(
        self, size: int, channels: int = 1, latent_dim: int = 512, base_channels: int = 32
    ) -> None:
        super().__init__()
        check_size(size)
        self.size, self.channels = int(size), int(channels)
        self.latent_dim, self.base_channels = int(latent_dim), int(base_channels)

        top = self.top_channels = min(base_channels * 2 ** (ENCODER_BLOCKS - 1), MAX_CHANNELS)
        layers: list[nn.Module] = []
        cin, hw = channels, size
        for i, stride in enumerate(encoder_strides(size)):
            cout = min(base_channels * 2**i, top)
            conv = (
                nn.Conv2d(cin, cout, 4, 2, 1, bias=False)
                if stride == 2
                else nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
            )
            layers += [conv, nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
            cin, hw = cout, hw // stride
        self.encoder = nn.Sequential(*layers)
        feat = cin * hw * hw
        self.fc_mu = nn.Linear(feat, latent_dim)
        self.fc_logvar = nn.Linear(feat, latent_dim)

        self.fc_dec = nn.Linear(latent_dim, top * 4, bias=False)
        self.dec_in = nn.Sequential(nn.BatchNorm2d(top), nn.ReLU(inplace=True))
        ups: list[nn.Module] = []
        cin = top
        for i in range(decoder_steps(size)):
            cout = max(base_channels, top >> (i + 1))
            ups += [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        self.decoder = nn.Sequential(*ups)
        self.resize = 2 * 2 ** decoder_steps(size) != size
        self.out = nn.Conv2d(cin, channels, 3, 1, 1)

    def config(self) -> dict[str, int]:
        """The constructor arguments (plain ints), to rebuild the network from a checkpoint."""
        return {
            "size": self.size,
            "channels": self.channels,
            "latent_dim": self.latent_dim,
            "base_channels": self.base_channels,
        }

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` ``[N, latent_dim]`` of images ``x`` in [0, 1]."""
        h = self.encoder(x).flatten(1)
        return self.fc_mu(h), self.fc_logvar(h).clamp(*_LOGVAR_RANGE)

    def decode_logits(self, z: Tensor) -> Tensor:
        """Pre-sigmoid outputs ``[N, C, size, size]`` for latents ``z``."""
        h = self.dec_in(self.fc_dec(z).view(-1, self.top_channels, 2, 2))
        h = self.decoder(h)
        if self.resize:
            h = F.interpolate(h, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.out(h)

    def decode(self, z: Tensor) -> Tensor:
        """Images in [0, 1] for latents ``z``."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits, mu, logvar)``; samples ``z`` in training mode, uses ``mu`` in eval mode."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode_logits(z), mu, logvar


def auto_vae_size(n_train: int, device: torch.device | str = "cpu") -> tuple[int, int]:
    """``(base_channels, latent_dim)`` for ``n_train`` training slices on ``device``.

    On a GPU: the published study's network (width 32, latent 512), whatever the data
    size. On a CPU (where a run must stay short): width 8 and latent 64 below 1000
    training slices (the ``vae-anomaly`` recipe's sizes), width 16 and latent 128 from 1000
    (a larger set carries more variation to reconstruct and pays for the cost).
    """
    kind = torch.device(device).type if isinstance(device, str) else device.type
    if kind == "cuda":
        return 32, 512
    return (8, 64) if n_train < 1000 else (16, 128)


# ------------------------------------------------------------------ losses and training


def reconstruction_loss(logits: Tensor, target: Tensor, kind: str) -> Tensor:
    """Per-image reconstruction loss summed over pixels, averaged over the batch."""
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif kind == "l1":
        per_pixel = (torch.sigmoid(logits) - target).abs()
    elif kind == "mse":
        per_pixel = (torch.sigmoid(logits) - target).square()
    else:
        raise ConfigError(f"unknown recon_loss {kind!r}", hint="use bce, l1 or mse")
    return per_pixel.flatten(1).sum(1).mean()


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) summed over the latent, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.square() - logvar.exp())).sum(1).mean()


def kl_weight(step: int, beta: float, warmup: int) -> float:
    """KL weight at 0-based ``step``: ``beta * min(1, (step + 1) / warmup)`` (``beta`` if 0)."""
    if warmup <= 0:
        return float(beta)
    return float(beta) * min(1.0, (step + 1) / warmup)


def train_vae(
    net: VAENet,
    images: Tensor,
    params: VAEParams,
    run: RunContext,
    *,
    description: str = "vae",
) -> dict[str, Any]:
    """Train ``net`` on ``images`` ``[N, C, H, W]`` in [0, 1] with Adam on the (beta-)ELBO.

    ``params`` is a ``VAEParams`` (or any object with its fields, e.g. a subclass that a
    classifier extends). Logs ``recon``, ``kl``, ``loss`` and ``kl_weight`` every
    ``log_every`` steps (the only host syncs), saves sample and reconstruction grids,
    and stops with a TrainingError on NaN. Returns the logged history; ``net`` is left in
    eval mode on ``run.device``.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise DataError(f"{description}: need a non-empty [N, C, H, W] image batch")
    if tuple(images.shape[1:]) != (net.channels, net.size, net.size):
        raise DataError(
            f"{description}: images {tuple(images.shape[1:])} do not fit the network "
            f"({net.channels}, {net.size}, {net.size})"
        )
    device = run.device
    model = run.prepare(net)
    opt = torch.optim.Adam(
        model.parameters(),
        lr=params.lr,
        foreach=device.type != "cuda",
        fused=device.type == "cuda" or None,
    )
    on_device = images.numel() * 4 <= 2**30  # keep the set on the device when it fits in 1 GiB
    data = images.float().to(device) if on_device else images.float()
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    batches = minibatches(
        len(images),
        params.batch_size,
        run.generator(211),
        drop_last=True,
        rank=run.rank,
        world=run.world_size,
    )
    first = next(batches)
    # indices reach the device a block of steps at a time (no per-step host->device copy)
    block = IndexBlocks(batches, first, params.log_every, data.device) if on_device else None
    augment = Augment(seed=run.seed + 17) if params.augment else None
    sums = torch.zeros(3, device=device)  # recon, kl, loss since the last log line
    since = 0
    history: dict[str, list[float]] = {"step": [], "recon": [], "kl": [], "loss": []}
    iterations = params.iterations
    model.train()
    with run.progress(iterations, description) as bar:
        for step in range(iterations):
            if block is not None:
                x = data[block.next()]
            else:
                x = data[first if step == 0 else next(batches)]
            if augment is not None:
                x = augment(x)
            x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
            weight = kl_weight(step, params.beta, params.kl_warmup)
            with run.autocast():
                logits, mu, logvar = model(x)
            recon = reconstruction_loss(logits.float(), x, params.recon_loss)
            kl = kl_divergence(mu.float(), logvar.float())
            loss = recon + weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums[0] += recon.detach()
            sums[1] += kl.detach()
            sums[2] += loss.detach()
            since += 1
            last = step == iterations - 1
            if since == params.log_every or last:
                recon_v, kl_v, loss_v = (sums / since).tolist()  # the one host sync
                check_finite(loss_v, f"{description} loss")
                run.log(step=step + 1, recon=recon_v, kl=kl_v, loss=loss_v, kl_weight=weight)
                for key, value in (("recon", recon_v), ("kl", kl_v), ("loss", loss_v)):
                    history[key].append(value)
                history["step"].append(step + 1)
                bar.advance(since, recon=recon_v, kl=kl_v)
                sums.zero_()
                since = 0
            if params.sample_every and (step + 1) % params.sample_every == 0 and not last:
                _save_grids(unwrap(model), data, run, f"samples-{step + 1:06d}", reals=False)
                model.train()
    net = unwrap(model)  # type: ignore[assignment]
    # BN running averages lag behind weights that still move (they mix the last ~10
    # steps): one pass over the training set with a cumulative average gives eval-mode
    # reconstruct / sample the statistics of the trained network
    recalibrate_bn(net, _full_batches(data, params.batch_size, device, fmt), run.autocast)
    _save_grids(net, data, run, "samples", reals=True)
    return history


def _full_batches(
    data: Tensor, batch_size: int, device: torch.device, fmt: torch.memory_format
) -> Iterator[tuple[Tensor]]:
    """Consecutive full batches ``(x,)`` of ``data`` on ``device`` (the whole set if smaller)."""
    n, bs = data.shape[0], max(1, batch_size)
    for i in range(0, max(1, n - bs + 1), bs):
        yield (data[i : i + bs].to(device, non_blocking=True).contiguous(memory_format=fmt),)


@torch.no_grad()
def _save_grids(net: nn.Module, data: Tensor, run: RunContext, name: str, reals: bool) -> None:
    """Prior samples (and real / reconstruction pairs) as grids in figures/."""
    if run.out_dir is None or not run.is_main:
        return
    was = net.training
    net.eval()
    device = next(net.parameters()).device
    z = latent_seeded(32, net.latent_dim, run.seed, device)  # type: ignore[arg-type]
    save_sample_grid(run, net.decode(z).float().cpu(), name)  # type: ignore[operator]
    if reals:
        real = data[:16].to(device)
        mu, _ = net.encode(real)  # type: ignore[operator]
        pairs = torch.stack([real, net.decode(mu)], 1).flatten(0, 1)  # type: ignore[operator]
        save_sample_grid(
            run,
            pairs.float().cpu(),
            "reconstructions",
            caption="Real training slices, each followed by its reconstruction. Look for: "
            "the anatomy kept (a VAE blurs); a reconstruction that loses the head outline "
            "means the VAE is under-trained.",
        )
    net.train(was)


class TrainedVAE:
    """A trained ``VAENet`` and the device it runs on: batched encode, decode and
    reconstruct (eval mode, results on the CPU), and its state."""

    def __init__(self, net: VAENet, device: torch.device) -> None:
        self.net, self.device = net, device

    def check_images(self, images: Tensor) -> Tensor:
        """``images`` as float32, or a DataError when they do not fit the network."""
        net = self.net
        if images.ndim != 4 or tuple(images.shape[1:]) != (net.channels, net.size, net.size):
            raise DataError(
                f"vae: expected images [N, {net.channels}, {net.size}, {net.size}], "
                f"got {tuple(images.shape)}"
            )
        return images.float()

    def encode(self, images: Tensor, batch_size: int = 128) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` ``[N, latent_dim]`` for images in [0, 1]."""
        net = self.net
        x = self.check_images(images)
        out = predict_batched(
            net, x, self.device, batch_size, fn=lambda b: torch.cat(net.encode(b), 1)
        )
        if out.numel() == 0:
            empty = torch.zeros(0, net.latent_dim)
            return empty, empty.clone()
        return out[:, : net.latent_dim].contiguous(), out[:, net.latent_dim :].contiguous()

    def decode(self, z: Tensor, batch_size: int = 128) -> Tensor:
        """Images ``[N, C, H, W]`` in [0, 1] for latents ``z`` ``[N, latent_dim]``."""
        net = self.net
        if z.ndim != 2 or z.shape[1] != net.latent_dim:
            raise DataError(f"vae: expected latents [N, {net.latent_dim}], got {tuple(z.shape)}")
        was = net.training
        net.eval()
        with torch.no_grad():
            outs = [
                net.decode(z[i : i + batch_size].float().to(self.device)).float().cpu()
                for i in range(0, z.shape[0], batch_size)
            ]
        net.train(was)
        if not outs:
            return torch.zeros(0, net.channels, net.size, net.size)
        return torch.cat(outs)

    def reconstruct(self, images: Tensor, batch_size: int = 128) -> Tensor:
        """Reconstructions (decoded ``mu``) of images in [0, 1]."""
        net = self.net
        x = self.check_images(images)
        return predict_batched(
            net, x, self.device, batch_size, fn=lambda b: net.decode(net.encode(b)[0])
        )

    def state_dict(self) -> dict[str, Any]:
        """Network config (plain ints) and weights (CPU tensors)."""
        weights = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        return {"config": self.net.config(), "net": weights}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TrainedVAE:
        """Rebuild the network from ``state["config"]`` and load its weights (on the CPU)."""
        try:
            cfg = {k: int(v) for k, v in dict(state["config"]).items()}
            net = VAENet(**cfg)
            net.load_state_dict(state["net"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise DataError(f"vae: checkpoint does not fit this model ({exc})") from None
        return cls(net.eval(), torch.device("cpu"))
