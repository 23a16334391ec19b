"""Lesions on normal-class samples of the conditional ``diffusion`` generator, by guidance.

Trains the generator once (pixel space, conditional, tumour masks as a second channel) on
phantoms in memory, then samples each class from the same weights at several classifier-free
guidance scales and prints, per class, the share of samples whose mask channel holds a blob
of ``--min-blob`` or more pixels and the median mask area. No real normal slice has a lesion;
training data only, no test part. docs/results.md (scarcity) gives the figures of

    OMP_NUM_THREADS=1 python benchmarks/guidance_lesions.py

(32 px, 400 phantoms, ``unet: cpu``, 1500 steps: about 1300 CPU-s for the fit). With
``--count DIR ...`` it only counts, in class folders of images with ``*_mask.png`` beside
(the sets ``synthmri generate`` writes, or ``synthmri phantoms``), masks resized to ``--size``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.generators.diffusion import Diffusion


def largest_blob(mask: np.ndarray) -> int:
    """Pixels in the largest connected component of a binary mask (0 when empty)."""
    labels, n = ndimage.label(mask)
    return int(np.bincount(labels.ravel())[1:].max()) if n else 0


def lesion_row(masks_by_class: dict[str, np.ndarray], min_blob: int) -> str:
    """Per class: the share of masks ``[N, H, W]`` with a blob of ``min_blob`` px or more,
    and the median mask area."""
    row = []
    for name, masks in masks_by_class.items():
        blobs = np.array([largest_blob(m) for m in masks])
        area = masks.reshape(len(masks), -1).sum(1)
        row.append(f"{name} {np.mean(blobs >= min_blob):.2f} (median area "
                   f"{np.median(area):.0f} px, n={len(masks)})")  # fmt: skip
    return ", ".join(row)


def folder_masks(root: Path, size: int) -> dict[str, np.ndarray]:
    """The ``*_mask.png`` of each class folder under ``root``, resized to ``size`` (nearest)."""
    from PIL import Image

    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*_mask.png"))
        out[folder.name] = np.stack([
            np.asarray(Image.open(f).convert("L").resize((size, size), Image.NEAREST)) > 127
            for f in files
        ])  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--n", type=int, default=400, help="phantoms to train on")
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--samples", type=int, default=100, help="per class and guidance")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 4.0])
    ap.add_argument("--min-blob", type=int, default=4)
    ap.add_argument("--count", type=Path, nargs="+", metavar="DIR",
                    help="only count: class folders with *_mask.png (a synthmri generate "
                    "--out, or synthmri phantoms), masks resized to --size")  # fmt: skip
    args = ap.parse_args()
    if args.count:
        for root in args.count:
            row = lesion_row(folder_masks(root, args.size), args.min_blob)
            print(f"{root}: with a lesion: {row}")
        return

    data = make_phantoms(args.n, args.size, seed=0)
    real = data.masks[data.labels == 1].flatten(1).sum(1)
    print(f"real tumour masks: median area {float(real.median()):.0f} px")
    params = {"unet": "cpu", "conditional": True, "emits_masks": True, "batch_size": 32,
              "iterations": args.iterations, "schedule": "cosine", "prediction": "v",
              "lr": 5e-4, "ema": 0.995, "sample_steps": 25}  # fmt: skip
    t0 = time.process_time()
    model = Diffusion(params)
    model.fit(data, RunContext(device="cpu", seed=0))
    print(f"fit {args.iterations} steps: {time.process_time() - t0:.0f} CPU-s")
    state = model.state_dict()
    for g in args.guidance:
        sampler = Diffusion({**params, "guidance": g})
        sampler.load_state_dict(state)
        masks = {
            name: (sampler.sample(args.samples, label=k, seed=1).masks > 0.5).numpy()[:, 0]
            for k, name in enumerate(data.class_names)
        }
        print(f"guidance {g}: with a lesion: {lesion_row(masks, args.min_blob)}", flush=True)


if __name__ == "__main__":
    main()
