"""Evaluator ``privacy``: is a synthetic image a copy of a real training image?

For every synthetic image the evaluator finds its nearest real TRAINING image three times:
by SSIM (pixels), by feature distance (the extractor of ``_features``) and by the loader's
aligned duplicate comparison (shifts, turns, zooms, mirror; correlation inside the head).
A genuinely new real image is the yardstick: the real TEST images' nearest-neighbour
distances to the training set say how close a new image of the same population typically
comes.

The rule (``find_memorized``, shared with ``image_quality`` in ``_common``): a synthetic
image is a memorised copy when

- its SSIM to the nearest training image is >= ``ssim_threshold`` (0.95), OR
- its feature distance to the nearest training image is below ``ratio_threshold`` (0.5)
  times the ``reference_percentile``-th (5th) percentile of the real test images'
  nearest-training distances, i.e. it is far closer to a training image than almost any
  new real image ever is, OR
- aligned, it correlates at least ``aligned_threshold`` (0.93) inside the head with a
  training image: the loader would call the two one duplicate group
  (``aligned_copy_fraction`` is the share flagged so).

``nn_distance_ratio`` is the feature distance divided by the MEDIAN real-test distance
(1 = as close as a typical new real image; near 0 = a copy). A generator whose memorised
fraction exceeds ``warn_fraction`` gets a loud warning note. With ``include_test`` the
nearest real image is searched among the test images too (for a synthetic set made
outside the run, as ``synthmri compare`` does), the yardstick staying the test images'
distances to the training images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from synthmri import hookimpl
from synthmri.core.artifacts import pyplot
from synthmri.core.interfaces import EvalInputs, Evaluator
from synthmri.plugins.evaluators._common import (
    MemorizationParams,
    MemorizationResult,
    by_class,
    find_memorized,
    match_size,
    metric_value,
    nearest_distance,
    nearest_ssim,
    ssim_window,
)
from synthmri.plugins.evaluators._features import FeatureParams, build_extractor

if TYPE_CHECKING:
    import torch

    from synthmri.core.training import RunContext

__all__ = [
    "MemorizationResult",
    "PrivacyEvaluator",
    "closest_pairs_figure",
    "find_memorized",
    "memorization_inputs",
    "nearest_ssim",
    "ssim_window",
]


def memorization_inputs(
    inputs: EvalInputs, params: FeatureParams, run: RunContext
) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]:
    """The extractor (or None), and the features of the real train and test parts."""
    extractor = build_extractor(params, inputs.train, run, seed=inputs.seed)
    if extractor is None:
        return None, None, None
    return extractor, extractor(inputs.train.images), extractor(inputs.test.images)


class PrivacyEvaluator(Evaluator):
    """Nearest real training image of every synthetic image; memorised copies flagged."""

    name: ClassVar[str] = "privacy"
    description: ClassVar[str] = (
        "nearest real training image per synthetic image (SSIM, features); copies flagged"
    )
    requires: ClassVar[tuple[str, ...]] = ("synthetic",)

    class Params(MemorizationParams, FeatureParams):
        """Params of the privacy evaluator."""

        warn_fraction: float = Field(
            0.05,
            ge=0,
            le=1,
            description="warn when more than this share of a generator's images are copies",
        )
        figure_pairs: int = Field(8, ge=0, description="closest pairs shown per generator")
        include_test: bool = Field(
            False,
            description="search the nearest real image among the test images too (for a "
            "synthetic set made outside the run); the yardstick stays the test images' "
            "distances to the training images",
        )

    def evaluate(self, inputs: EvalInputs, run: RunContext) -> dict[str, list[dict[str, Any]]]:
        """One row per generator and class; a figure of the closest pairs per generator."""
        p = self.params
        extractor, train_f, test_f = memorization_inputs(inputs, p, run)
        if extractor is None:
            run.note("privacy: no features, so only the SSIM rule flags copies")
        train = inputs.train
        pool, pool_f, reference_f, reference_d = train.images, train_f, test_f, None
        if p.include_test and len(inputs.test):
            import torch

            pool = torch.cat([train.images, inputs.test.images])
            if train_f is not None and test_f is not None:
                pool_f, reference_f = torch.cat([train_f, test_f]), None
                reference_d = nearest_distance(test_f, train_f)
        rows: list[dict[str, Any]] = []
        for gen, syn in inputs.synthetic.items():
            if len(syn) == 0:
                continue
            syn_images = match_size(syn.images, train.size)
            res = find_memorized(
                syn_images,
                pool,
                synthetic_features=None if extractor is None else extractor(syn_images),
                train_features=pool_f,
                reference_features=reference_f,
                reference_distance=reference_d,
                **p.rule(),
                device=run.device,
            )
            for cname, idx in by_class(syn):
                sel = res.memorized[idx]
                ratio = None if res.ratio is None else metric_value(res.ratio[idx].median())
                aligned = None
                if res.nn_aligned is not None:
                    aligned = (res.nn_aligned[idx] >= p.aligned_threshold - 1e-9).double().mean()
                rows.append(
                    {
                        "generator": gen,
                        "class": cname,
                        "memorized_fraction": metric_value(sel.float().mean()),
                        "nn_ssim_mean": metric_value(res.nn_ssim[idx].mean()),
                        "nn_ssim_max": metric_value(res.nn_ssim[idx].max()),
                        "nn_distance_ratio_median": ratio,
                        "aligned_copy_fraction": metric_value(aligned),
                        "n_synthetic": len(idx),
                        "features": extractor.name if extractor is not None else "none",
                    }
                )
            frac = res.fraction
            run.log(generator=gen, memorized_fraction=frac)
            if frac > p.warn_fraction:
                run.note(
                    f"WARNING: generator {gen!r} memorises its training data: {frac:.0%} of its "
                    f"{len(syn)} synthetic images are near-copies of real training images "
                    f"(SSIM >= {p.ssim_threshold:g}, feature distance < {p.ratio_threshold:g}"
                    f" x the {p.reference_percentile:g}th percentile of real test images, or "
                    "a shifted, turned or mirrored copy); do not share this set as anonymous "
                    "data"
                )
            if p.figure_pairs:
                closest_pairs_figure(syn_images, pool, res, gen, run, p.figure_pairs)
        return {"privacy": rows}


def closest_pairs_figure(
    synthetic: torch.Tensor,
    train: torch.Tensor,
    res: MemorizationResult,
    label: str,
    run: RunContext,
    n: int = 8,
) -> None:
    """Save the ``n`` synthetic images closest to a training image beside it: those flagged
    as copies first, then by the higher of SSIM and the aligned similarity (a mirrored or
    shifted copy is close by the second only), each beside its nearest by that measure."""
    if run.out_dir is None or len(res.nn_ssim) == 0:
        return
    import torch

    plt = pyplot()
    aligned = res.nn_aligned if res.nn_aligned is not None else torch.full_like(res.nn_ssim, -1)
    by_aligned = aligned > res.nn_ssim
    score = torch.maximum(res.nn_ssim.double(), aligned.double()) + res.memorized.double()
    order = score.argsort(descending=True)[:n].tolist()
    fig, axes = plt.subplots(2, len(order), figsize=(1.6 * len(order), 3.6), squeeze=False)
    for j, i in enumerate(order):
        aligned_index = res.nn_aligned_index
        near = aligned_index if by_aligned[i] and aligned_index is not None else res.nn_ssim_index
        t = int(near[i])
        for r, img in enumerate((synthetic[i], train[t])):
            ax = axes[r, j]
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        flag = " COPY" if bool(res.memorized[i]) else ""
        what = (
            f"aligned {float(aligned[i]):.3f}"
            if by_aligned[i]
            else f"SSIM {float(res.nn_ssim[i]):.3f}"
        )
        axes[0, j].set_title(f"{what}{flag}", fontsize=7, color="red" if flag else "black")
    axes[0, 0].set_ylabel(label, fontsize=8)
    axes[1, 0].set_ylabel("nearest real train", fontsize=8)
    fig.suptitle(f"privacy: {label} images closest to a real training image", fontsize=9)
    run.save_figure(
        fig,
        f"privacy_closest_pairs_{label}",
        caption=f"The {label} images most similar to a real training image (top) and that "
        "training image (bottom): flagged copies first, then by SSIM or, where higher, the "
        "correlation inside the head once shifted, turned or mirrored (aligned). Look for: "
        "pairs that are the same slice (marked COPY): the generator memorised and would "
        "leak that training image.",
    )


@hookimpl
def synthmri_register_evaluators(register: Any) -> None:
    """Register the privacy evaluator."""
    register(PrivacyEvaluator)
