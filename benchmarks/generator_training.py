"""Training speed and peak memory of every generator plugin, each in its own process.

For each generator (``dcgan``, ``wgan_gp``, ``oneshot_gan``, ``vae``; ``oneshot_gan+global``
is ``oneshot_gan`` with ``global_weight: 1``) a child process
builds ``--n`` phantoms of one class at ``--size`` px, warms up with a 1-iteration
``fit`` (imports, allocator, optimiser set-up), then times ``fit`` for ``--iters``
iterations with the plugin's default params except ``batch_size`` (``--batch``) and
``iterations``. An "iteration" is what the plugin's ``iterations`` param counts: one
generator step for the GANs (``wgan_gp``: after ``n_critic`` = 5 critic steps), one
minibatch for the VAE. The timed ``fit`` includes the plugin's end-of-training work
(BatchNorm recalibration of the EMA generator / of the VAE).

``vae-plain`` is a reference: the same ``VAENet`` trained by a bare PyTorch loop (Adam,
random batches, BCE-sum + KL, a ``.item()`` per step as in the PyTorch VAE example), to
show what the plugin's loop costs on top of the network.

``fastgan`` runs with its default (GPU) widths; ``fastgan-cpu`` with the widths of the
``fastgan`` recipe (``FASTGAN_CPU``), and ``fastgan-plain`` is its reference: the same
networks at those widths trained by a bare PyTorch loop (Adam, random batches,
DiffAugment, hinge + L1 reconstruction, G's loss backpropagated through all of D, an EMA of
G by hand, a ``.item()`` per step).

The baselines (``augment``, ``lesion_paste``, ``pca_gmm``) do not iterate: for them an
iteration is one sampled image, and the timed call is ``fit`` (on the tumour class; on both
classes for the conditional ``lesion_paste``) plus ``sample`` of ``--iters`` tumour images
(default 300, what the shipped recipes sample per class), default params.

Peak RSS is the child's own high-water mark (``VmHWM`` of ``/proc/self/status``), so each
row is independent of the others; ``base RSS`` is the RSS after imports and data,
before any training. ``it/CPU-s`` divides by the child's CPU time rather than wall time:
on a busy shared machine it is close to what an idle core would do.

    .venv/bin/python benchmarks/generator_training.py --size 64 --batch 32 --threads 1
    .venv/bin/python benchmarks/generator_training.py --generators vae vae-plain --iters 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

ALL = ("dcgan", "wgan_gp", "oneshot_gan", "oneshot_gan+global", "vae", "vae-plain",
       "fastgan", "fastgan-cpu", "fastgan-plain",
       "augment", "lesion_paste", "pca_gmm")  # fmt: skip
BASELINES = ("augment", "lesion_paste", "pca_gmm")
"""Generators without iterations: fit, then sample ``iters`` images (one image = one it)."""
DEFAULT_ITERS = {
    "dcgan": 10,
    "wgan_gp": 2,
    "oneshot_gan": 10,
    "oneshot_gan+global": 10,
    "vae": 10,
    "vae-plain": 10,
    "fastgan": 3,
    "fastgan-cpu": 30,
    "fastgan-plain": 30,
    "augment": 300,
    "lesion_paste": 300,
    "pca_gmm": 300,
}
FASTGAN_CPU: dict[str, Any] = {
    "g_channels": {4: 128, 8: 128, 16: 64, 32: 32, 64: 16, 128: 8},
    "d_channels": {8: 64, 16: 32, 32: 16, 64: 8},
    "decoder_channels": {16: 32, 32: 16, 64: 8, 128: 8},
}
"""The widths of the ``fastgan`` recipe (``fastgan-cpu``, ``fastgan-plain``)."""
VARIANTS = {
    "oneshot_gan+global": ("oneshot_gan", {"global_weight": 1.0}),
    "fastgan-cpu": ("fastgan", FASTGAN_CPU),
}
"""Rows that are a plugin with non-default params: name -> (plugin, params)."""


def _rss_mib(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux), else ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def plain_vae(images: Any, iters: int, batch: int, device: Any) -> None:
    """A bare PyTorch VAE loop on ``VAENet`` (the default width and latent of ``vae``)."""
    import torch
    import torch.nn.functional as F

    from synthmri.nn.vae import VAENet

    net = VAENet(images.shape[-1], images.shape[1], 512, 32).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    data = images.to(device)
    net.train()
    total = 0.0
    for _ in range(iters):
        x = data[torch.randint(0, data.shape[0], (batch,), device=device)]
        logits, mu, logvar = net(x)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / batch
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / batch
        loss = recon + kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()
    net.eval()


def plain_fastgan(images: Any, iters: int, batch: int, device: Any) -> None:
    """A bare PyTorch loop on the FastGAN networks at the ``FASTGAN_CPU`` widths (the
    plugin's other defaults: latent 256, Adam 2e-4 / (0.5, 0.999), DiffAugment on, L1)."""
    import copy

    import torch

    from synthmri.nn.diffaugment import AUTO_POLICY, diff_augment
    from synthmri.nn.fastgan import build_fastgan, reconstruction_loss, widths_for
    from synthmri.nn.gan_training import d_loss, g_loss

    size, latent = images.shape[-1], 256
    widths = {k: [FASTGAN_CPU[k][r] for r in res] for k, res in widths_for(size).items()}
    config = {"size": size, "channels": images.shape[1], "latent_dim": latent, "n_classes": 0}
    G, D = build_fastgan({**config, **widths})
    G, D = G.to(device), D.to(device)
    G_ema = copy.deepcopy(G).eval()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    data = images.to(device) * 2 - 1
    total = 0.0
    for _ in range(iters):
        idx = torch.randint(0, data.shape[0], (batch,), device=device)
        real = diff_augment(data[idx], AUTO_POLICY)
        fake = G(torch.randn(batch, latent, device=device))
        part = torch.randint(0, 4, (batch,), device=device)
        d_real, whole, piece = D(real, None, part)
        d_fake = D(diff_augment(fake.detach(), AUTO_POLICY))
        rec = reconstruction_loss((whole, piece), D.targets(real, part), "l1")
        loss_d = d_loss(d_real, d_fake, "hinge") + rec
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = g_loss(D(diff_augment(fake, AUTO_POLICY)), "hinge")
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        with torch.no_grad():
            for pe, p in zip(G_ema.parameters(), G.parameters(), strict=True):
                pe.lerp_(p, 0.001)
        total += loss_d.item() + loss_g.item()


def child(args: argparse.Namespace) -> None:
    """Run one generator and print one JSON line with its numbers."""
    import torch

    torch.set_num_threads(args.threads)
    from synthmri import get_plugin
    from synthmri.core.phantoms import make_phantoms
    from synthmri.core.training import RunContext

    name = args.child
    both = make_phantoms(args.n, args.size, seed=0)
    data = both if name == "lesion_paste" else both.of_class("tumor")
    run = RunContext(device=args.device, seed=0)
    iters = args.iters or DEFAULT_ITERS[name]
    base_rss = _rss_mib("VmRSS")

    def sync() -> None:
        if run.device.type == "cuda":
            torch.cuda.synchronize()

    if name == "vae-plain":
        plain_vae(data.images, 1, args.batch, run.device)  # warm-up

        def train() -> None:
            plain_vae(data.images, iters, args.batch, run.device)
    elif name == "fastgan-plain":
        plain_fastgan(data.images, 1, args.batch, run.device)  # warm-up

        def train() -> None:
            plain_fastgan(data.images, iters, args.batch, run.device)
    elif name in BASELINES:
        cls = get_plugin("generator", name)
        warm = cls()
        warm.fit(data, run)  # warm-up: imports (sklearn, scipy, MONAI) and first calls
        warm.sample(2, label=1, seed=1)

        def train() -> None:
            model = cls()
            model.fit(data, run)
            model.sample(iters, label=1, seed=0)
    else:
        plugin, extra = VARIANTS.get(name, (name, {}))
        cls = get_plugin("generator", plugin)
        cls({**extra, "iterations": 1, "batch_size": args.batch}).fit(data, run)  # warm-up

        def train() -> None:
            cls({**extra, "iterations": iters, "batch_size": args.batch}).fit(data, run)

    sync()
    cpu0, t0 = _cpu_s(), time.perf_counter()
    train()
    sync()
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    row = {
        "generator": name,
        "iters": iters,
        "it_per_s": iters / wall,
        "s_per_it": wall / iters,
        "it_per_cpu_s": iters / max(cpu, 1e-9),
        "peak_rss_mib": _rss_mib("VmHWM"),
        "base_rss_mib": base_rss,
        "device": str(run.device),
    }
    if run.device.type == "cuda":
        row["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(row), flush=True)


def main() -> None:
    """Run every asked generator in a child process and print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--generators", nargs="+", default=list(ALL), choices=ALL)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n", type=int, default=128, help="phantoms drawn (half are tumours)")
    ap.add_argument("--iters", type=int, default=0, help="timed iterations (0: per generator)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    rows = []
    for name in args.generators:
        cmd = [sys.executable, __file__, "--child", name, "--size", str(args.size),
               "--batch", str(args.batch), "--n", str(args.n), "--iters", str(args.iters),
               "--threads", str(args.threads), "--device", args.device]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(
                f"{name}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr
            )
            continue
        row = json.loads(lines[-1].removeprefix("RESULT "))
        rows.append(row)
        print(f"{name}: {row['it_per_s']:.3f} it/s, peak RSS {row['peak_rss_mib']:.0f} MiB",
              file=sys.stderr, flush=True)  # fmt: skip
    print(f"\n{args.size} px, batch {args.batch}, device {args.device}, {args.threads} thread(s)\n")
    cuda = any("peak_cuda_mib" in r for r in rows)
    head = "| generator | iters | it/s | s/it | it/CPU-s | peak RSS MiB | base RSS MiB |"
    print(head + (" peak CUDA MiB |" if cuda else ""))
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if cuda else ""))
    for r in rows:
        line = (
            f"| {r['generator']} | {r['iters']} | {r['it_per_s']:.3f} | {r['s_per_it']:.2f} | "
            f"{r['it_per_cpu_s']:.3f} | {r['peak_rss_mib']:.0f} | {r['base_rss_mib']:.0f} |"
        )
        if cuda:
            line += f" {r.get('peak_cuda_mib', 0):.0f} |"
        print(line)


if __name__ == "__main__":
    main()
