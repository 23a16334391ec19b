"""Sampling throughput of a (briefly) trained ``dcgan``: images/s of ``sample()``.

python benchmarks/sampling_throughput.py --size 64 --n 512 --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from synthmri import RunContext
from synthmri.core.phantoms import make_phantoms
from synthmri.plugins.generators.dcgan import DCGAN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=512, help="images per sample() call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-iters", type=int, default=5)
    ap.add_argument("--emits-masks", action="store_true", help="2-channel model + mask cleanup")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = make_phantoms(64, args.size, seed=0)
    model = DCGAN(
        {"iterations": args.train_iters, "batch_size": 16, "emits_masks": args.emits_masks}
    )
    model.fit(data, RunContext(device=args.device, seed=0))
    model.sample(16, seed=0)  # warm-up
    times, cpu = [], []
    for r in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        out = model.sample(args.n, seed=r)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        assert out.images.shape[0] == args.n
    print(
        f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"{args.size} px, n={args.n}, masks={args.emits_masks}"
    )
    runs = ", ".join(f"{t:.2f}" for t in times)
    print(
        f"sample(): best {args.n / min(times):.1f} img/s, median "
        f"{args.n / statistics.median(times):.1f} img/s, {args.n / min(cpu):.1f} img/CPU-s "
        f"({runs} s)"
    )


if __name__ == "__main__":
    main()
