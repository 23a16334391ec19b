"""Training throughput of the ``dcgan`` plugin against a plain PyTorch DCGAN loop.

Both train the same networks (the DCGAN architecture, written out again below), at the
same image size and batch, on the same phantom images, in the same process. Each
contender trains from scratch for ``--iters`` steps (networks and optimisers built
inside the timed region for both); the contenders are interleaved and repeated, and the
best (least disturbed) time of each is reported, plus the median.

Contenders:

- ``plain``: the loop of the PyTorch DCGAN example: default Adam, BCE on logits, labels
  made with ``torch.full`` every step, separate backward passes for real and fake, and a
  ``.item()`` per step to record the losses;
- ``plugin``: ``DCGAN.fit`` with DiffAugment and EMA off: the same algorithm;
- ``plugin+defaults``: ``DCGAN.fit`` with its defaults (DiffAugment on, EMA on): shown for
  information, it does more work per step;
- ``plugin+mask`` (``--mask``): as ``plugin``, with ``mask_conditioned`` (G takes the
  tumour mask, D the (slice, mask) pair): what giving G the masks costs;
- ``plugin+mask+lesion`` (``--lesion-d``): as ``plugin+mask``, with ``lesion_d: 1`` (a
  second discriminator on the window around each lesion): what that discriminator costs;
- ``plugin+mask+pose`` (``--pose``): as ``plugin+mask``, with ``pose: 30`` (z turns,
  scales and shifts each slice, and its mask the other way): what the pose head costs.

    python benchmarks/dcgan_throughput.py --size 64 --batch 32 --iters 10 --device cpu
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from synthmri import RunContext
from synthmri.core.phantoms import make_phantoms
from synthmri.plugins.generators.dcgan import DCGAN

# ------------------------------------------------------------------ the plain loop


def plain_generator(size: int, nz: int = 100, ngf: int = 64) -> nn.Sequential:
    """The DCGAN generator, written out: ConvTranspose + BN + ReLU from 4x4 to ``size``."""
    steps = int(math.log2(size // 4))
    width = [ngf * min(2 ** (steps - 1 - i), 8) for i in range(steps)]
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(nz, width[0], 4, 1, 0, bias=False),
        nn.BatchNorm2d(width[0]),
        nn.ReLU(True),
    ]
    for i in range(steps - 1):
        layers += [
            nn.ConvTranspose2d(width[i], width[i + 1], 4, 2, 1, bias=False),
            nn.BatchNorm2d(width[i + 1]),
            nn.ReLU(True),
        ]
    layers += [nn.ConvTranspose2d(width[-1], 1, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def plain_discriminator(size: int, ndf: int = 64) -> nn.Sequential:
    """The DCGAN discriminator, written out: strided conv + BN + LeakyReLU, then a 4x4 conv."""
    steps = int(math.log2(size // 4))
    width = [ndf * min(2**i, 8) for i in range(steps)]
    layers: list[nn.Module] = [nn.Conv2d(1, width[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    for i in range(1, steps):
        layers += [
            nn.Conv2d(width[i - 1], width[i], 4, 2, 1, bias=False),
            nn.BatchNorm2d(width[i]),
            nn.LeakyReLU(0.2, True),
        ]
    layers += [nn.Conv2d(width[-1], 1, 4, 1, 0, bias=False), nn.Flatten(0)]
    return nn.Sequential(*layers)


def weights_init(m: nn.Module) -> None:
    """N(0, 0.02) init of the DCGAN paper."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def train_plain(images: torch.Tensor, iters: int, batch: int, device: torch.device) -> None:
    """The plain loop: ``images`` in [0, 1], ``[N, 1, S, S]``."""
    data = (images * 2 - 1).to(device)
    size, nz = images.shape[-1], 100
    netG = plain_generator(size, nz).to(device)
    netD = plain_discriminator(size).to(device)
    netG.apply(weights_init)
    netD.apply(weights_init)
    criterion = nn.BCEWithLogitsLoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    losses = []
    for _ in range(iters):
        idx = torch.randint(0, data.shape[0], (batch,), device=device)
        real = data[idx]
        netD.zero_grad()
        label = torch.full((batch,), 1.0, device=device)
        err_real = criterion(netD(real), label)
        err_real.backward()
        noise = torch.randn(batch, nz, 1, 1, device=device)
        fake = netG(noise)
        label.fill_(0.0)
        err_fake = criterion(netD(fake.detach()), label)
        err_fake.backward()
        optD.step()
        netG.zero_grad()
        label.fill_(1.0)
        err_g = criterion(netD(fake), label)
        err_g.backward()
        optG.step()
        losses.append((err_real.item() + err_fake.item(), err_g.item()))


def train_plugin(
    images: torch.Tensor,
    iters: int,
    batch: int,
    device: torch.device,
    defaults: bool,
    masks: torch.Tensor | None = None,
    lesion_d: float = 0.0,
    pose: float = 0.0,
) -> None:
    """``DCGAN.fit`` for ``iters`` steps (DiffAugment and EMA off unless ``defaults``;
    ``mask_conditioned`` on ``masks`` when given, with ``lesion_d`` and ``pose``)."""
    from synthmri import ImageSet

    params = {"iterations": iters, "batch_size": batch, "log_every": iters}
    if not defaults:
        params.update({"diffaugment": None, "ema": None})
    if masks is not None:
        params.update({"mask_conditioned": True, "lesion_d": lesion_d, "pose": pose})
    data = ImageSet(images=images, masks=masks)
    DCGAN(params).fit(data, RunContext(device=device, seed=0))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10, help="timed steps per contender and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=256, help="phantom training images")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--no-defaults", action="store_true", help="skip the plugin+defaults run")
    ap.add_argument("--mask", action="store_true", help="add the plugin+mask run")
    ap.add_argument("--lesion-d", action="store_true", help="add the plugin+mask+lesion run")
    ap.add_argument("--pose", action="store_true", help="add the plugin+mask+pose run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    phantoms = make_phantoms(args.images, args.size, seed=0)
    images = phantoms.images
    contenders = {
        "plain": lambda n: train_plain(images, n, args.batch, device),
        "plugin": lambda n: train_plugin(images, n, args.batch, device, defaults=False),
    }
    if not args.no_defaults:
        contenders["plugin+defaults"] = lambda n: train_plugin(
            images, n, args.batch, device, defaults=True
        )
    if args.mask:
        contenders["plugin+mask"] = lambda n: train_plugin(
            images, n, args.batch, device, defaults=False, masks=phantoms.masks
        )
    if args.lesion_d:
        contenders["plugin+mask+lesion"] = lambda n: train_plugin(
            images, n, args.batch, device, defaults=False, masks=phantoms.masks, lesion_d=1.0
        )
    if args.pose:
        contenders["plugin+mask+pose"] = lambda n: train_plugin(
            images, n, args.batch, device, defaults=False, masks=phantoms.masks, pose=30.0
        )
    for fn in contenders.values():  # warm-up: allocator, oneDNN/cuDNN kernels
        fn(2)
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    cpu: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(args.repeats):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            _sync(device)
            t, c = time.perf_counter(), time.process_time()
            contenders[name](args.iters)
            _sync(device)
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    n_img = args.iters * args.batch
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"{args.size} px, batch {args.batch}, {args.iters} steps x {args.repeats} repeats"
    )
    rate = {}
    for name, ts in times.items():
        rate[name] = n_img / min(ts)
        med = n_img / statistics.median(ts)
        runs = ", ".join(f"{t:.2f}" for t in ts)
        per_cpu = n_img / min(cpu[name])
        print(
            f"{name:16s} best {rate[name]:7.1f} img/s   median {med:7.1f} img/s   "
            f"{per_cpu:7.1f} img/CPU-s   ({runs} s)"
        )
    print(f"ratio plugin / plain (best): {rate['plugin'] / rate['plain']:.3f}")
    cpu_ratio = min(cpu["plain"]) / min(cpu["plugin"])
    print(f"ratio plugin / plain (per CPU-second, robust on a busy machine): {cpu_ratio:.3f}")
    for name in ("plugin+defaults", "plugin+mask", "plugin+mask+lesion", "plugin+mask+pose"):
        if name in rate:
            print(f"ratio {name} / plain (best): {rate[name] / rate['plain']:.3f}")


if __name__ == "__main__":
    main()
