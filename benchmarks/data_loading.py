"""Loading a folder of images: the loader (``load_images``) with its duplicate search off,
with the plain thumbnail correlation only, and as shipped (plus the aligned search), against
a plain reading of the same files (PIL decode + a torch resize, nothing else).

python benchmarks/data_loading.py --n 1000 --threads 1            # phantoms written here
python benchmarks/data_loading.py --path ../shared/data/mhantor --threads 1
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from synthmri.core.data import load_images
from synthmri.core.phantoms import write_phantoms


def plain_read(root: Path, size: int) -> int:
    """Every image file under ``root`` (not ``*_mask``) decoded to grey and resized."""
    count = 0
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in {".png", ".jpg", ".jpeg"} or "_mask" in path.stem:
            continue
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
        F.interpolate(torch.from_numpy(image)[None, None], size=(size, size), mode="area")
        count += 1
    return count


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """``fn()``, its wall seconds and its CPU seconds (this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", type=Path, help="a folder to load (default: phantoms written)")
    ap.add_argument("--n", type=int, default=1000, help="phantoms to write (without --path)")
    ap.add_argument("--write-size", type=int, default=128)
    ap.add_argument("--size", type=int, default=64, help="the loader's image size")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.path
        if root is None:
            root = Path(tmp) / "phantoms"
            write_phantoms(root, args.n, args.write_size, seed=0, contrast="t1")
        off = {"near_duplicate_threshold": 2.0, "near_duplicate_aligned": 2.0}
        load_images(root, size=args.size, **off)  # warm-up: imports, file cache
        n, wall0, cpu0 = timed(lambda: plain_read(root, args.size))
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {root}: {n} images")
        print(f"{'reading':<36} {'wall s':>8} {'CPU-s':>8} {'CPU ratio':>9}  groups of 2+ (images)")
        print(f"{'plain (PIL + torch resize)':<36} {wall0:8.1f} {cpu0:8.1f} {1.0:9.2f}")
        for label, opts in [
            ("load_images, no duplicate search", off),
            ("load_images, plain correlation", {"near_duplicate_aligned": 2.0}),
            ("load_images as shipped", {}),
        ]:
            res, wall, cpu = timed(lambda o=opts: load_images(root, size=args.size, **o))
            sizes = collections.Counter(res.data.groups)  # type: ignore[attr-defined]
            multi = [k for k, c in sizes.items() if c > 1]
            print(
                f"{label:<36} {wall:8.1f} {cpu:8.1f} {cpu / cpu0:9.2f}  "
                f"{len(multi)} ({sum(sizes[k] for k in multi)})"
            )


if __name__ == "__main__":
    main()
