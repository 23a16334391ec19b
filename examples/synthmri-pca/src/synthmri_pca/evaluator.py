"""``pca_coverage``: precision, recall and novelty of synthetic slices in a PCA space.

For each generator and class, the real train slices of that class define a PCA
space: the coordinates along the ``n_components`` leading directions, plus one more
coordinate, the norm of what those directions leave out (the reconstruction
error), so an image unlike any real one cannot hide by projecting near the mean.
In that space:

- **precision**: the share of synthetic slices that fall inside the real
  manifold, i.e. within the distance from some real slice to its ``k``-th
  nearest real neighbour (Kynkäänniemi et al. 2019). Low: implausible images.
- **recall**: the share of real slices inside the synthetic manifold (the same
  test the other way round). Low: the generator covers only part of the data
  (mode collapse).
- **nn_ratio**: the median distance from a synthetic slice to its nearest real
  train slice, divided by the same median for real *test* slices. Near 1: as
  novel as fresh real data; well below 1: synthetic images sit closer to the
  training images than new real images do (memorisation); well above 1: off the
  data manifold.

The same precision and recall between the real test part and the real train
part give the floor (``*_real_floor``) two samples of the real distribution
reach. k-NN manifolds grow with the number of points, so ``recall_real_floor``
(built from the usually small test part) is lower than a synthetic set of
hundreds of images reaches: compare recall between generators, precision also
with the floor. Cheap: one PCA and a few distance matrices per class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field
from synthmri import EvalInputs, Evaluator, ImageSet, StrictParams

if TYPE_CHECKING:
    from synthmri import RunContext

__all__ = ["PCACoverageEvaluator", "manifold_precision"]


def manifold_precision(reference: torch.Tensor, query: torch.Tensor, k: int) -> float:
    """Share of ``query`` rows within the k-NN radius of some ``reference`` row.

    The radius of a reference row is its distance to its ``k``-th nearest other
    reference row (``k`` is capped at ``len(reference) - 1``).
    """
    k = max(1, min(k, reference.shape[0] - 1))
    ref_d = torch.cdist(reference, reference)
    radius = ref_d.kthvalue(k + 1, dim=1).values  # +1: the row itself is at distance 0
    d = torch.cdist(query, reference)
    inside = (d <= radius.unsqueeze(0)).any(dim=1)
    return float(inside.double().mean())


class PCACoverageEvaluator(Evaluator):
    """Precision / recall / novelty of each synthetic set in the PCA space of the real data."""

    name: ClassVar[str] = "pca_coverage"
    description: ClassVar[str] = (
        "precision, recall and novelty (nearest-neighbour ratio) of synthetic vs real in PCA space"
    )
    requires: ClassVar[tuple[str, ...]] = ("synthetic",)

    class Params(StrictParams):
        """Params of the ``pca_coverage`` evaluator."""

        n_components: int = Field(
            32, ge=1, le=512, description="PCA directions of the real train part (capped at n - 1)"
        )
        k: int = Field(5, ge=1, le=50, description="k of the k-nearest-neighbour manifold radius")
        max_images: int = Field(
            1000,
            ge=10,
            description="at most this many images per set and class (seeded random subset)",
        )

    def evaluate(self, inputs: EvalInputs, run: RunContext) -> dict[str, list[dict[str, Any]]]:
        """One row per (generator, class) in section ``pca_coverage``."""
        p = self.params
        rows: list[dict[str, Any]] = []
        scatter: dict[str, dict[str, torch.Tensor]] = {}
        classes = list(inputs.train.class_names) if inputs.train.labels is not None else [None]
        for cname in classes:
            label = cname or "all"
            real = self._flat(_part(inputs.train, cname), inputs.seed)
            test = self._flat(_part(inputs.test, cname), inputs.seed + 1)
            if real is None or real.shape[0] < 3:
                run.note(f"pca_coverage: fewer than 3 real train images of class {label}; skipped")
                continue
            mean, basis = _pca(real, p.n_components)
            proj_real = _project(real, mean, basis)
            proj_test = None if test is None else _project(test, mean, basis)
            floor_p = floor_r = None
            test_nn = None
            if proj_test is not None and proj_test.shape[0] >= 2:
                floor_p = manifold_precision(proj_real, proj_test, p.k)
                floor_r = manifold_precision(proj_test, proj_real, p.k)
                test_nn = torch.cdist(proj_test, proj_real).min(dim=1).values.median()
            points = {"real train": proj_real[:, :2]}
            if proj_test is not None:
                points["real test"] = proj_test[:, :2]
            for gen, syn in inputs.synthetic.items():
                fake = self._flat(_part(syn, cname), inputs.seed + 2)
                if fake is None or fake.shape[0] < 2:
                    continue
                proj_fake = _project(fake, mean, basis)
                points[gen] = proj_fake[:, :2]
                fake_nn = torch.cdist(proj_fake, proj_real).min(dim=1).values.median()
                ratio = None
                if test_nn is not None and float(test_nn) > 0:
                    ratio = float(fake_nn / test_nn)
                rows.append({
                    "generator": gen,
                    "class": label,
                    "precision": manifold_precision(proj_real, proj_fake, p.k),
                    "recall": manifold_precision(proj_fake, proj_real, p.k),
                    "nn_ratio": ratio,
                    "precision_real_floor": floor_p,
                    "recall_real_floor": floor_r,
                    "n_real": int(real.shape[0]),
                    "n_synthetic": int(fake.shape[0]),
                    "n_components": int(basis.shape[1]),
                    "k": p.k,
                })  # fmt: skip
            scatter[label] = points
        if run.out_dir is not None and any(len(v) > 1 for v in scatter.values()):
            self._figure(scatter, run)
        return {"pca_coverage": rows}

    def _flat(self, data: ImageSet | None, seed: int) -> torch.Tensor | None:
        """Flattened float64 images, at most ``max_images`` (seeded subset)."""
        if data is None or len(data) == 0:
            return None
        x = data.images.reshape(len(data), -1).double()
        if x.shape[0] > self.params.max_images:
            g = torch.Generator().manual_seed(seed)
            x = x[torch.randperm(x.shape[0], generator=g)[: self.params.max_images]]
        return x

    def _figure(self, scatter: dict[str, dict[str, torch.Tensor]], run: RunContext) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(scatter), figsize=(4.2 * len(scatter), 3.6), squeeze=False)
        for ax, (label, points) in zip(axes[0], scatter.items(), strict=True):
            for i, (name, xy) in enumerate(points.items()):
                style = {"real train": dict(color="black", marker="o", s=10),
                         "real test": dict(color="grey", marker="x", s=14)}.get(
                    name, dict(color=f"C{i % 10}", marker=".", s=8, alpha=0.6))  # fmt: skip
                ax.scatter(xy[:, 0].numpy(), xy[:, 1].numpy(), label=name, **style)
            ax.set_title(f"class {label}: PC 1 vs PC 2 of real train", fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        run.save_figure(fig, "pca_scatter")


def _part(data: ImageSet, cname: str | None) -> ImageSet | None:
    if cname is None or data.labels is None:
        return data
    if cname not in data.class_names:
        return None
    return data.of_class(cname)


def _project(x: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """PCA coordinates ``[N, k]`` plus the norm of the residual as a last column."""
    centred = x - mean
    coords = centred @ basis
    residual = (centred - coords @ basis.T).norm(dim=1, keepdim=True)
    return torch.cat([coords, residual], dim=1)


def _pca(x: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[D]`` and orthonormal basis ``[D, k]`` of the ``k`` leading directions of ``x``."""
    mean = x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    k = max(1, min(n_components, x.shape[0] - 1, vh.shape[0]))
    return mean, vh[:k].T.contiguous()
