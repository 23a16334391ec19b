"""Pixel-intensity distributions: real vs synthetic, per class.

For every generator and class: the Wasserstein distance between the pixel values of
the real train part and of the synthetic set, and the intersection of their
normalised histograms (1 = identical). The same two numbers between the real train
and real test parts give the floor that two samples of the real distribution reach,
so a generator's number can be read against it. The figure overlays the density
curves (real train, real test, each generator), one panel per class.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from synthmri import hookimpl
from synthmri.core.artifacts import pyplot
from synthmri.core.interfaces import EvalInputs, Evaluator, ImageSet, StrictParams

if TYPE_CHECKING:
    import torch

    from synthmri.core.training import RunContext

__all__ = ["IntensityEvaluator", "histogram_intersection", "pixel_sample"]


def pixel_sample(
    images: torch.Tensor, max_pixels: int, threshold: float | None, seed: int
) -> np.ndarray:
    """Pixel values of ``images`` (only those > ``threshold`` when given), at most
    ``max_pixels`` of them drawn with a generator seeded by ``seed``."""
    values = images.detach().float().cpu().reshape(-1).numpy()
    if threshold is not None:
        values = values[values > threshold]
    if values.size > max_pixels:
        rng = np.random.default_rng(seed)
        values = values[rng.integers(0, values.size, size=max_pixels)]
    return values.astype(np.float64)


def histogram_intersection(a: np.ndarray, b: np.ndarray, bins: int = 64) -> float:
    """Sum of the bin-wise minimum of two normalised histograms on [0, 1] (1 = identical)."""
    ha, _ = np.histogram(np.clip(a, 0, 1), bins=bins, range=(0.0, 1.0))
    hb, _ = np.histogram(np.clip(b, 0, 1), bins=bins, range=(0.0, 1.0))
    return float(np.minimum(ha / ha.sum(), hb / hb.sum()).sum())


class IntensityEvaluator(Evaluator):
    """Real vs synthetic pixel-intensity histograms: Wasserstein distance and intersection."""

    name = "intensity"
    description = "real vs synthetic pixel-intensity distributions per class (Wasserstein)"
    requires = ("synthetic",)

    class Params(StrictParams):
        """intensity evaluator params."""

        foreground_only: bool = Field(
            True, description="compare only head pixels (value > threshold), not background"
        )
        threshold: float = Field(
            0.05, ge=0, lt=1, description="foreground threshold for foreground_only"
        )
        bins: int = Field(64, ge=2, le=1024, description="histogram bins on [0, 1]")
        max_pixels: int = Field(
            200_000, ge=100, description="pixels drawn (seeded) per set for the distances"
        )

    def evaluate(self, inputs: EvalInputs, run: RunContext) -> dict[str, list[dict[str, Any]]]:
        """One row per (generator, class) in section ``intensity``."""
        from scipy.stats import wasserstein_distance

        p = self.params
        threshold = p.threshold if p.foreground_only else None

        def sample(data: ImageSet | None, key: str) -> np.ndarray | None:
            if data is None or len(data) == 0:
                return None
            values = pixel_sample(data.images, p.max_pixels, threshold,
                                  inputs.seed + zlib.crc32(key.encode()))  # fmt: skip
            return values if values.size else None

        def compare(a: np.ndarray | None, b: np.ndarray | None) -> tuple[Any, Any]:
            if a is None or b is None:
                return None, None
            return float(wasserstein_distance(a, b)), histogram_intersection(a, b, p.bins)

        classes = _classes(inputs.train)
        rows: list[dict[str, Any]] = []
        panels: dict[str, dict[str, np.ndarray]] = {}
        for cname in classes:
            real_part = _part(inputs.train, cname)
            real = sample(real_part, f"train/{cname}")
            test = sample(_part(inputs.test, cname), f"test/{cname}")
            floor_w, floor_i = compare(real, test)
            curves = {"real train": real, "real test": test}
            for gen, syn in inputs.synthetic.items():
                syn_part = _part(syn, cname)
                fake = sample(syn_part, f"{gen}/{cname}")
                if fake is None:
                    continue
                curves[gen] = fake
                w, inter = compare(real, fake)
                rows.append({
                    "generator": gen,
                    "class": cname,
                    "wasserstein": w,
                    "histogram_intersection": inter,
                    "wasserstein_real_floor": floor_w,
                    "intersection_real_floor": floor_i,
                    "n_real": len(real_part) if real_part is not None else 0,
                    "n_synthetic": len(syn_part) if syn_part is not None else 0,
                })  # fmt: skip
            panels[cname] = {k: v for k, v in curves.items() if v is not None}
        if any(len(c) > 1 for c in panels.values()):
            self._figure(panels, run)
        return {"intensity": rows}

    def _figure(self, panels: dict[str, dict[str, np.ndarray]], run: RunContext) -> None:
        plt = pyplot()
        p = self.params
        lo = p.threshold if p.foreground_only else 0.0
        edges = np.linspace(lo, 1.0, p.bins + 1)
        centers = (edges[:-1] + edges[1:]) / 2
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
        for ax, (cname, curves) in zip(axes[0], panels.items(), strict=True):
            for i, (label, values) in enumerate(curves.items()):
                density, _ = np.histogram(values, bins=edges, density=True)
                style = {"real train": dict(color="black", lw=2.0),
                         "real test": dict(color="grey", lw=1.2, ls="--")}.get(
                    label, dict(color=f"C{i % 10}", lw=1.2))  # fmt: skip
                ax.plot(centers, density, label=label, **style)
            ax.set_title(f"class {cname}", fontsize=9)
            ax.set_xlabel("pixel intensity" + (f" (> {lo:g})" if p.foreground_only else ""))
            ax.set_ylabel("density")
            ax.legend(fontsize=7)
        fig.suptitle("pixel-intensity distributions: real vs synthetic", fontsize=10)
        fig.tight_layout()
        run.save_figure(
            fig,
            "intensity_histogram",
            caption="Pixel-intensity distributions of real and synthetic images per class. "
            "Look for: synthetic curves on top of the real one; a shifted or narrower curve "
            "means wrong contrast or too little variety.",
        )


def _classes(data: ImageSet) -> list[str]:
    if data.labels is None or not data.class_names:
        return ["all"]
    return list(data.class_names)


def _part(data: ImageSet, cname: str) -> ImageSet | None:
    """The items of class ``cname`` (all items for ``"all"`` or unlabelled sets)."""
    if cname == "all" or data.labels is None:
        return data
    if cname not in data.class_names:
        return None
    part = data.of_class(cname)
    return part if len(part) else None


@hookimpl
def synthmri_register_evaluators(register: Any) -> None:
    """Register the intensity evaluator."""
    register(IntensityEvaluator)
