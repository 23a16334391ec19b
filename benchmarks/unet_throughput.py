"""UNet throughput: the plugin's training loop vs a plain PyTorch loop, and inference.

Training images/s of the ``unet`` segmenter (``core.supervised.train_supervised``:
AdamW, cosine schedule, DiceCE) against a bare loop with the same network, batch
size, optimiser and loss, and the ratio (plugin / plain; 1.0 = no overhead). Both
run without augmentation and without validation so that they do the same work;
a third line gives the plugin with its default paired augmentation on. Then
inference images/s of ``UNetSegmenter.predict``. Besides wall time it reports this
process's CPU time: on a shared machine images per CPU-second stays comparable when
other jobs steal the cores (uncontended wall images/s ~ images/CPU-s x threads x
parallel efficiency). ``--threads 1`` gives the cleanest CPU-time figures on a busy
machine (no OpenMP threads spinning while they wait for a core).

    .venv/bin/python benchmarks/unet_throughput.py                # 128 px, CPU
    .venv/bin/python benchmarks/unet_throughput.py --size 64 --n 128
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def _plain_loop(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int,
                batch_size: int, device: torch.device) -> tuple[float, float]:  # fmt: skip
    """A bare PyTorch loop doing what train_supervised does; (wall, CPU) seconds."""
    from monai.losses import DiceCELoss

    net = net.to(device).train()
    loss_fn = DiceCELoss(sigmoid=True)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    steps = max(1, len(x) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    g = torch.Generator().manual_seed(0)
    start = _clock()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(steps):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            loss = loss_fn(net(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        float(loss.detach())  # one sync per epoch, like the plugin
    if device.type == "cuda":
        torch.cuda.synchronize()
    return _since(start)


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) since ``start``."""
    return time.perf_counter() - start[0], time.process_time() - start[1]


def main() -> None:
    """Run the benchmark and print a small table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n", type=int, default=64, help="training images (phantoms)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from synthmri.core.phantoms import make_phantoms
    from synthmri.core.training import RunContext, seed_everything
    from synthmri.plugins.segmenters.unet import UNetSegmenter

    run = RunContext(device=args.device, seed=0)
    data = make_phantoms(args.n, args.size, seed=0)
    params = {"epochs": args.epochs, "batch_size": args.batch_size, "augment": False}
    images = args.n // args.batch_size * args.batch_size * args.epochs

    # warm-up (allocator, oneDNN kernels) so neither measurement pays for it
    seed_everything(0)
    warm = UNetSegmenter({**params, "epochs": 1})
    warm.fit(data.subset(range(args.batch_size)), None, run)

    seed_everything(0)
    model = UNetSegmenter(params)
    t0 = _clock()
    model.fit(data, None, run)
    plugin_s = _since(t0)

    seed_everything(0)
    aug = UNetSegmenter({**params, "augment": True})
    t0 = _clock()
    aug.fit(data, None, run)
    aug_s = _since(t0)

    seed_everything(0)
    net = UNetSegmenter._build(1, UNetSegmenter(params)._network_config())
    plain_s = _plain_loop(net, data.images, data.masks, args.epochs, args.batch_size, run.device)

    model.predict(data.images[:8])  # warm-up
    t0 = _clock()
    model.predict(data.images)
    infer_s = _since(t0)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"UNet {args.size} px, {args.n} images x {args.epochs} epochs, batch "
          f"{args.batch_size}, device {run.device}, torch threads {torch.get_num_threads()}, "
          f"cpu count {os.cpu_count()}, load average {load:.1f}")  # fmt: skip
    print(f"{'loop':<32}{'wall s':>8}{'images/s':>10}{'CPU s':>8}{'images/CPU-s':>14}")
    for what, (wall, cpu), count in [
        ("plain PyTorch", plain_s, images),
        ("plugin (train_supervised)", plugin_s, images),
        ("plugin + paired augmentation", aug_s, images),
        ("inference (predict)", infer_s, args.n),
    ]:
        print(f"{what:<32}{wall:8.2f}{count / wall:10.2f}{cpu:8.2f}{count / cpu:14.2f}")
    print(
        f"ratio plugin / plain, images/s: {plain_s[0] / plugin_s[0]:.3f} (wall), "
        f"{plain_s[1] / plugin_s[1]:.3f} (CPU time; robust to other load on the machine)"
    )


if __name__ == "__main__":
    main()
