"""``vae_anomaly``'s four methods: decision speed, and a study of its anomaly maps.

**Speed** (default): the decision speed of the four methods on 1000 slices of 128 px. The
study found DBSCAN promising but "unfeasible" (too slow). Here a VAE is trained briefly on
healthy phantoms (speed does not depend on how good it is), the test slices are
reconstructed once, and each method then scores all of them from the same error maps.
Printed, in seconds (wall clock; process CPU time beside it):

- ``reconstruction``: the VAE's forward pass over the test slices (``VAE.reconstruct``);
- ``error maps``: the error map, smoothing, the head mask and the z-map (shared by all
  methods);
- per method: ``calibrate`` (on the validation slices; done once in ``fit``), ``score``
  (the tumour score of every test slice: what ``predict_proba`` adds to the two above),
  ``masks`` (the largest anomalous cluster per slice: what ``predict_masks`` adds) and
  ``decision`` = score + masks; accuracy and ROC AUC on the phantoms are printed for
  information only (the VAE is trained for seconds).

**Study** (``--study``): the data and split of the ``vae-anomaly`` recipe (``--set`` as for
``synthmri run``; same seed, so the same split), ONE VAE trained with the recipe's
``vae_anomaly`` params on the healthy training slices, then for each map variant and
method the post-training part of ``fit`` (``recalibrate``: error map choice and thresholds
on the validation part only) and the scores on the test part: accuracy, recall,
specificity and ROC AUC with 95 % bootstrap intervals, unsupervised Dice on the tumour
slices, and the operating point chosen on the validation part. Variants: ``published``
(absolute error, no normalisation, intensity head mask, no clean-up: the study's maps)
and ``default`` (the plugin's defaults: loader head mask, ``auto`` error map and z-map,
morphological clean-up). With ``--out``, each method's best/worst test cases are drawn
(``VAEAnomaly.case_figure``: the figure the pipeline cannot draw, since ``predict``
never sees labels). Nothing is tuned on the test part.

``--model diffusion_anomaly`` (or ``dae_anomaly``, ``pca_anomaly``) runs the same study with
the AnoDDPM-style diffusion model (or the denoising autoencoder, the PCA baseline) instead
of the VAE: the recipe's decision params (threshold percentile, head erosion, calibration)
with the plugin's own defaults for its model, changed by ``--param key=value``;
``--noise-levels`` scores one trained model at several noise levels
and names, per variant and method, the level with the highest *validation* AUC (the test
numbers of every level are printed, but only the validation part chooses);
``--anomaly-thresholds`` adds the pixel percentile to what is compared and chosen that way.

``--model oracle`` (phantoms only) is the ceiling of the decision: a perfect model of
healthy slices, whose "reconstruction" of each slice is its noise-free healthy twin (the
same phantom drawn without its tumour and without noise; a phantom's anatomy, pose,
contrast and bias field do not depend on its label). What it misses, the error maps,
thresholds, decision methods and masks lose, not the model; its Dice is bounded by what a
healthy model can show (the tumour's whole footprint: core, oedema and mass effect) against
the phantom's mask (the recipe's: the whole tumour, core and oedema; ``--set
data.tumor_mask=core``: the core only).

Usage::

    python benchmarks/anomaly_methods.py                    # speed: 1000 x 128 px
    python benchmarks/anomaly_methods.py --n 1000 --size 128 --threads 2 --iterations 60
    python benchmarks/anomaly_methods.py --study --out /tmp/study       # 64 px phantoms
    python benchmarks/anomaly_methods.py --study --set data.path=/data/navoneel --out /tmp/nav
    python benchmarks/anomaly_methods.py --study --model diffusion_anomaly \
        --param iterations=800 --noise-levels 0.2 0.3 0.5
    python benchmarks/anomaly_methods.py --study --model dae_anomaly --param iterations=3000
    python benchmarks/anomaly_methods.py --study --model dae_anomaly --param iterations=3000 \
        --param corruption=inpaint                         # the inpainting repair (RIAD-style)
    python benchmarks/anomaly_methods.py --study --model dae_anomaly --param iterations=3000 \
        --param objective=localise                         # foreign patch interpolation (FPI)
    python benchmarks/anomaly_methods.py --study --model pca_anomaly --param components=20
    python benchmarks/anomaly_methods.py --study --model oracle     # the decision's ceiling
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from synthmri.core.errors import DataError
from synthmri.core.phantoms import make_phantoms
from synthmri.core.plugins import get_plugin
from synthmri.core.training import RunContext
from synthmri.nn.params import VAEParams
from synthmri.plugins.classifiers._anomaly import AnomalyParams, ReconstructionAnomaly
from synthmri.plugins.classifiers.vae_anomaly import METHODS, VAEAnomaly

PUBLISHED: dict[str, Any] = {
    "error_measure": "absolute",
    "normalise": "none",
    "head_mask": "intensity",
    "clean_radius": 0,
    "clean_min_area": 0.0,
    "match_intensity": False,
}
VARIANTS: dict[str, dict[str, Any]] = {
    "published": PUBLISHED,
    "default": {},
    # one deviation at a time switched back to the study's choice
    "match": {"match_intensity": True},
    "no-clean": {"clean_radius": 0, "clean_min_area": 0.0},
    "intensity-head": {"head_mask": "intensity"},
    "absolute": {"error_measure": "absolute"},
}


class OracleAnomaly(ReconstructionAnomaly):
    """The decision's ceiling: each slice "reconstructed" as its noise-free healthy twin."""

    name = "oracle"
    Params = AnomalyParams

    def __init__(self, params: Any, *, data: tuple[Any, int]) -> None:
        """``data``: the recipe's data config and seed (the phantoms to draw twins of)."""
        super().__init__(params)
        cfg, seed = data  # the phantoms as drawn, and the same without tumour and noise
        kw = {"contrast": cfg.contrast, "tumor_fraction": cfg.tumor_fraction}
        self.drawn = make_phantoms(cfg.n, cfg.size, seed=seed, **kw).images.flatten(1)
        kw["tumor_fraction"], kw["noise"] = 0.0, 0.0
        self.twins = make_phantoms(cfg.n, cfg.size, seed=seed, **kw).images

    def _train(self, healthy: Any, run: RunContext) -> None:
        """Nothing to learn."""

    def _reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        dist, idx = torch.cdist(
            x.flatten(1), self.drawn, compute_mode="donot_use_mm_for_euclid_dist"
        ).min(1)
        if float(dist.max()) > 1e-3:
            raise DataError("oracle: a slice is not one of the recipe's phantoms")
        return self.twins[idx]

    def _is_trained(self) -> bool:
        return True

    def _model_state(self) -> dict[str, Any]:
        return {}

    def _load_model_state(self, state: Any) -> None:
        """Nothing to load."""


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, wall seconds, process CPU seconds)`` of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def speed(args: argparse.Namespace) -> None:
    """The decision-speed table (see the module docstring)."""
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
        f"in {fit_s:.1f} s; error map {model.measure}/{model.normalisation}"
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


def bootstrap(
    stat: Callable[[np.ndarray], float], n: int, rng: np.random.Generator, reps: int = 2000
) -> tuple[float, float]:
    """95 % percentile bootstrap interval of ``stat(index)`` over ``n`` items."""
    values = [stat(rng.integers(0, n, n)) for _ in range(reps)]
    finite = np.array([v for v in values if np.isfinite(v)])
    if finite.size == 0:
        return float("nan"), float("nan")
    return float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))


def study(args: argparse.Namespace) -> None:
    """The map-variant x method table on the recipe's split (see the module docstring)."""
    import yaml
    from sklearn.metrics import roc_auc_score

    from synthmri.core.pipeline import load_data
    from synthmri.core.recipe import load_recipe

    recipe = load_recipe("vae-anomaly", args.set)
    entry = next(m for e in recipe.experiments for m in e.models if m.plugin == VAEAnomaly.name)
    cls: Any = get_plugin("classifier", args.model) if args.model != "oracle" else OracleAnomaly
    params = dict(entry.params)
    if args.model != VAEAnomaly.name:  # the recipe's decision params, the model's defaults
        decision = set(VAEAnomaly.Params.model_fields) - set(VAEParams.model_fields)
        params = {k: v for k, v in params.items() if k in decision}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = yaml.safe_load(value)
    run = RunContext(args.out, device=args.device, seed=recipe.seed, stage="study")
    summary, train, val, test = load_data(recipe, RunContext(seed=recipe.seed))
    print(
        f"data: {summary.n_train} train / {summary.n_val} val / {summary.n_test} test; "
        f"classes {train.class_names}; {args.model} params {params} (decision of "
        f"{entry.label!r})"
    )
    extra = {"data": (recipe.data, recipe.seed)} if args.model == "oracle" else {}
    model = cls({**params, "method": "giaem", "figures": False}, **extra)
    torch.manual_seed(recipe.seed)
    _, fit_s, fit_cpu = timed(lambda: model.fit(train, val, run))
    size = model.history.get("vae_size", {})
    print(f"{args.model} {size} trained in {fit_s:.1f} s (cpu {fit_cpu:.1f} s)", flush=True)
    healthy = train.subset(train.labels == model.normal_index)
    y = (test.labels != model.normal_index).numpy()
    truth = test.masks[:, 0].numpy() > 0.5 if test.masks is not None else None
    print(
        f"{'level':<6}{'pct':<5}{'variant':<10}{'method':<14}{'map':<15}{'val sens/spec/AUC':>18}"
        f"{'accuracy [95% CI]':>24}{'recall':>8}{'spec':>7}{'AUC [95% CI]':>22}{'Dice':>7}"
    )
    levels = args.noise_levels or [None]
    recons: dict[tuple[Any, ...], torch.Tensor] = {}

    def cache(m: Any, level: Any) -> None:
        """Reconstruct each image set once per noise level (the map variants and methods
        only change what follows the reconstruction)."""
        plain = m.reconstruct

        def reconstruct(images: torch.Tensor) -> torch.Tensor:
            key = (level, images.data_ptr(), tuple(images.shape))
            if key not in recons:
                recons[key] = plain(images)
            return recons[key]

        m.reconstruct = reconstruct

    chosen: dict[tuple[str, str], tuple[float, Any]] = {}
    pcts = args.anomaly_thresholds or [None]
    for level, pct, variant, method in (
        (lv, pc, v, me)
        for lv in levels
        for pc in pcts
        for v in args.variants
        for me in args.methods
    ):
        changes = VARIANTS[variant]
        m = copy.deepcopy(model)
        base = {**params, "method": method, "figures": False}
        if level is not None:
            base["noise_level"] = level
        if pct is not None:
            base["anomaly_threshold"] = pct
        m.params = m.parse_params({**base, **changes})
        cache(m, level)
        m.measure = "absolute" if m.params.error_measure == "auto" else m.params.error_measure
        m.recalibrate(healthy, val, RunContext(seed=recipe.seed))
        scores = m.anomaly_scores(test.images)
        pred = scores > m.score_threshold
        rng = np.random.default_rng(0)
        acc = float((pred == y).mean())
        acc_ci = bootstrap(lambda i, p=pred: float((p[i] == y[i]).mean()), len(y), rng)

        def auc_of(i: np.ndarray, s: np.ndarray = scores) -> float:
            return float(roc_auc_score(y[i], s[i])) if len(set(y[i])) == 2 else float("nan")

        auc, auc_ci = auc_of(np.arange(len(y))), bootstrap(auc_of, len(y), rng)
        dice = float("nan")
        if truth is not None and truth[y].any():
            masks = m.predict_masks(test.images)[:, 0].numpy() > 0.5
            t, pm = truth[y], masks[y]
            inter = (t & pm).reshape(len(t), -1).sum(1)
            denom = t.reshape(len(t), -1).sum(1) + pm.reshape(len(t), -1).sum(1)
            dice = float(np.mean(np.where(denom > 0, 2 * inter / np.maximum(denom, 1), 1.0)))
        op = m.operating_point
        val_auc = op["val_auc"] if op["val_auc"] is not None else float("nan")
        if (level, pct) != (None, None) and val_auc > chosen.get((variant, method), (-1, 0))[0]:
            chosen[(variant, method)] = (val_auc, (level, pct))
        print(
            f"{'-' if level is None else level:<6}{'-' if pct is None else pct:<5}"
            f"{variant:<10}{method:<14}"
            f"{op['error_map']:<15}"
            f"{op['val_sensitivity'] or 0:>8.2f}/{op['val_specificity']:.2f}"
            f"/{op['val_auc'] or float('nan'):.2f}"
            f"{acc:>9.3f} [{acc_ci[0]:.3f}, {acc_ci[1]:.3f}]"
            f"{pred[y].mean():>8.3f}{(~pred[~y]).mean():>7.3f}"
            f"{auc:>7.3f} [{auc_ci[0]:.3f}, {auc_ci[1]:.3f}]{dice:>7.3f}"
        )
        if args.out is not None:
            tag = "" if level is None else f"{level}-"
            tag += "" if pct is None else f"{pct}-"
            m.case_figure(test, run, name=f"cases-{tag}{variant}-{method}")
    for (variant, method), (val_auc, (level, pct)) in chosen.items():
        print(
            f"chosen on validation AUC: {variant} {method}: noise_level {level}, "
            f"anomaly_threshold {pct} ({val_auc:.3f})"
        )
    if args.out is not None:
        print(f"figures in {args.out}/figures")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="speed: test slices to score")
    ap.add_argument("--size", type=int, default=128, help="speed: image side in pixels")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--iterations", type=int, default=40, help="speed: VAE training steps")
    ap.add_argument("--n-train", type=int, default=200, help="speed: training phantoms")
    ap.add_argument("--n-val", type=int, default=200, help="speed: validation phantoms")
    ap.add_argument("--max-points", type=int, default=1000, help="speed: dbscan max_points")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--study", action="store_true", help="the map study instead of speed")
    ap.add_argument(
        "--set", action="append", default=[], help="study: recipe override key.path=value"
    )
    ap.add_argument("--out", default=None, help="study: folder for the case figures")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["published", "default"],
        choices=list(VARIANTS),
        help="study: map variants (default: the study's maps and the plugin's defaults)",
    )
    ap.add_argument("--device", default="cpu", help="study: cpu, cuda or auto")
    ap.add_argument(
        "--model",
        default=VAEAnomaly.name,
        choices=[VAEAnomaly.name, "diffusion_anomaly", "dae_anomaly", "pca_anomaly", "oracle"],
        help="study: the anomaly classifier (other than vae_anomaly: the recipe's decision "
        "params); oracle: a perfect healthy model (phantoms only)",
    )
    ap.add_argument(
        "--param", action="append", default=[], help="study: model param key=value (YAML value)"
    )
    ap.add_argument(
        "--noise-levels",
        nargs="+",
        type=float,
        default=None,
        help="study, diffusion_anomaly: noise levels to score (chosen on validation AUC)",
    )
    ap.add_argument(
        "--anomaly-thresholds",
        nargs="+",
        type=float,
        default=None,
        help="study: pixel percentiles to score (chosen on validation AUC)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.study:
        study(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
