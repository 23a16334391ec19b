"""Decision speed of ``vae_anomaly``'s four methods on 1000 slices of 128 px.

The study found DBSCAN promising but "unfeasible" (too slow). Here a VAE is trained
briefly on healthy phantoms (speed does not depend on how good it is), the test slices
are reconstructed once, and each method then scores all of them from the same error
maps. Printed, in seconds (wall clock; process CPU time beside it):

- ``reconstruction``: the VAE's forward pass over the test slices (``VAE.reconstruct``);
- ``error maps``: ``|x - x_hat|``, smoothing and the head mask (shared by all methods);
- per method: ``calibrate`` (on the validation slices; done once in ``fit``), ``score``
  (the tumour score of every test slice: what ``predict_proba`` adds to the two above),
  ``masks`` (the largest anomalous cluster per slice: what ``predict_masks`` adds) and
  ``decision`` = score + masks; accuracy and ROC AUC on the phantoms are printed for
  information only (the VAE is trained for seconds).

Usage::

    python benchmarks/anomaly_methods.py                    # 1000 x 128 px, 2 threads
    python benchmarks/anomaly_methods.py --n 1000 --size 128 --threads 2 --iterations 60
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.classifiers.vae_anomaly import METHODS, VAEAnomaly


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, wall seconds, process CPU seconds)`` of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="test slices to score")
    ap.add_argument("--size", type=int, default=128, help="image side in pixels")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--iterations", type=int, default=40, help="VAE training steps")
    ap.add_argument("--n-train", type=int, default=200, help="training phantoms (half healthy)")
    ap.add_argument("--n-val", type=int, default=200, help="validation phantoms")
    ap.add_argument("--max-points", type=int, default=1000, help="dbscan: max_points")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    train = make_phantoms(args.n_train, args.size, seed=0)
    val = make_phantoms(args.n_val, args.size, seed=1)
    test = make_phantoms(args.n, args.size, seed=2)
    params = {
        "iterations": args.iterations,
        "batch_size": 16,
        "base_channels": 8,
        "latent_dim": 64,
        "max_points": args.max_points,
        "figures": False,
    }
    model = VAEAnomaly(params)
    _, fit_s, _ = timed(lambda: model.fit(train, val, RunContext(seed=0, device="cpu")))
    print(
        f"{args.n} slices of {args.size} px, {args.threads} threads; VAE trained "
        f"{args.iterations} steps on {int((train.labels == 0).sum())} healthy slices "
        f"in {fit_s:.1f} s"
    )
    healthy = train.of_class("normal").images
    recon, rec_s, rec_cpu = timed(lambda: model.reconstruct(test.images))
    (err, fg), map_s, map_cpu = timed(lambda: model.error_maps(test.images, recon))
    val_err, val_fg = model.error_maps(val.images)
    tr_err, tr_fg = model.error_maps(healthy)
    is_normal = (val.labels == 0).numpy()
    print(f"{'reconstruction':<16}{rec_s:8.2f} s  (cpu {rec_cpu:.2f} s)")
    print(f"{'error maps':<16}{map_s:8.2f} s  (cpu {map_cpu:.2f} s)")
    header = f"{'method':<16}{'calibrate':>10}{'score':>8}{'masks':>8}{'decision':>10}"
    print(header + f"{'cpu':>8}{'total':>8}{'acc':>7}{'auc':>7}")
    from sklearn.metrics import roc_auc_score

    y = test.labels.numpy()
    for method in args.methods:
        m = copy.deepcopy(model)
        m.params.method = method
        _, cal_s, _ = timed(
            lambda m=m: m.calibrate(val_err, val_fg, is_normal, train_err=tr_err, train_fg=tr_fg)
        )
        result, score_s, score_cpu = timed(lambda m=m: m.score_errors(err, fg))
        _, mask_s, mask_cpu = timed(lambda m=m, r=result: m._masks(r))
        decision = score_s + mask_s
        acc = float(((result.scores > m.score_threshold) == y).mean())
        auc = float(roc_auc_score(y, result.scores)) if len(np.unique(y)) == 2 else float("nan")
        print(
            f"{method:<16}{cal_s:10.2f}{score_s:8.2f}{mask_s:8.2f}{decision:10.2f}"
            f"{score_cpu + mask_cpu:8.2f}{rec_s + map_s + decision:8.2f}{acc:7.3f}{auc:7.3f}"
        )


if __name__ == "__main__":
    main()
