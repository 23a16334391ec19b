"""``pca_anomaly``: tumour detection without tumour labels from a linear model of healthy
slices, the baseline every learned healthy model must beat.

The normal-class training slices span a subspace (their mean and first ``components``
principal axes; scikit-learn's PCA). A slice is "reconstructed" as its projection onto that
subspace: a tumour is not in it, so the residual shows where the tumour is. A least-squares
projection lets the tumour pull the whole slice's coefficients; with ``robust_iterations``
(the default 3) the projection is refitted by iteratively reweighted least squares with
Tukey's biweight on each pixel's residual (``synthmri.nn.pca.robust_projection``), so the
pixels that do not fit the healthy subspace stop steering it and keep their error. The
reconstruction goes through the ``vae_anomaly`` decision unchanged (base
``ReconstructionAnomaly``, ``_anomaly.py``): the same error maps, the four decision methods
and the calibration on the validation part only.

It trains in seconds on a CPU and has no training to fail; ``docs/results.md`` ("vae-anomaly",
the PCA baseline) compares it with the VAE and the denoising autoencoder on the same splits.
Where this is not the VAE/GAN study: the study had no linear baseline.

Importing this module loads no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, Field

from synthmri import hookimpl
from synthmri.core.errors import DataError
from synthmri.plugins.classifiers._anomaly import AnomalyParams, ReconstructionAnomaly

if TYPE_CHECKING:
    from torch import Tensor

    from synthmri.core.interfaces import ImageSet
    from synthmri.core.training import RunContext

__all__ = ["PCAAnomaly", "PCAAnomalyParams"]


class PCAAnomalyParams(AnomalyParams):
    """Params of ``pca_anomaly``: the healthy subspace's and the decision's (shared with
    ``vae_anomaly``)."""

    components: (
        Annotated[int, Field(ge=1)]
        | Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    ) = Field(
        20,
        description="principal axes of the healthy subspace (at most slices - 1); a list: "
        "each is fitted and calibrated, and the one with the highest validation AUC is kept",
    )
    robust_iterations: int = Field(
        3,
        ge=0,
        description="reweighted refits of each slice's projection (Tukey's biweight on its "
        "residuals); 0: the least-squares projection",
    )


class PCAAnomaly(ReconstructionAnomaly):
    """A linear (PCA) model of healthy slices; tumours are found from what it cannot fit."""

    name: ClassVar[str] = "pca_anomaly"
    description: ClassVar[str] = (
        "PCA of healthy slices, robust projection (a linear baseline); "
        "residual -> tumour (4 methods)"
    )
    Params = PCAAnomalyParams
    model_keys: ClassVar[tuple[str, ...]] = ("pca",)
    quick_params: ClassVar[dict[str, Any]] = {"components": 4, "figures": False}
    #: elements of the reweighted fit's largest intermediate (slices x axes x pixels)
    recon_elements: ClassVar[int] = 2**25

    def __init__(self, params: BaseModel | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.mean: Tensor | None = None  # [D]
        self.axes: Tensor | None = None  # [K, D], orthonormal rows

    def fit(self, train: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """As the base's; with a list of ``components`` each (smallest first, up to the
        first that the healthy slices cap) is fitted and calibrated on ``val``, and the one
        with the highest validation AUC is kept (the smaller on ties; the smallest without a
        validation AUC to choose by)."""
        params = self.params
        tried: dict[int, float | None] = {}
        best: tuple[float, dict[str, Any], dict[str, Any]] | None = None
        ks = params.components
        candidates = [ks] if isinstance(ks, int) else sorted(set(ks))
        for k in candidates:
            self.params = params.model_copy(update={"components": k})
            super().fit(train, val, run)
            auc = tried[k] = self.operating_point.get("val_auc")
            if len(candidates) == 1:
                break
            if auc is None:
                run.note(f"{self.name}: no validation AUC to choose components by; kept {k}")
                best = None
                break
            run.log(pca_components_tried=k, pca_val_auc=auc)
            if best is None or auc > best[0]:
                best = (auc, self.state_dict(), self.history)
            if self.history["components"] < k:  # capped: larger ones would repeat this fit
                break
        if best is not None:
            self.load_state_dict(best[1])
            self.history = best[2]
        self.params = params
        self.history = {**self.history, "components_val_auc": tried}

    def _train(self, healthy: ImageSet, run: RunContext) -> None:
        """The mean and principal axes of the flattened healthy training slices."""
        import time

        import torch
        from sklearn.decomposition import PCA

        start = time.process_time()
        flat = healthy.images.flatten(1).double().numpy()
        assert isinstance(self.params.components, int)  # a list is unrolled by ``fit``
        k = min(self.params.components, flat.shape[0] - 1, flat.shape[1])
        pca = PCA(n_components=k, random_state=run.seed).fit(flat)
        self.mean = torch.from_numpy(pca.mean_).float()
        self.axes = torch.from_numpy(pca.components_).float()
        explained = float(pca.explained_variance_ratio_.sum())
        run.log(pca_components=k, pca_explained=explained, pca_healthy_slices=len(healthy))
        self.history = {
            "components": k,
            "explained_variance": explained,
            "train_cpu_seconds": time.process_time() - start,
        }

    def _is_trained(self) -> bool:
        return self.axes is not None

    def _reconstruct(self, x: Tensor) -> Tensor:
        """Each slice's (robust) projection onto the healthy subspace, in [0, 1]."""
        import torch

        from synthmri.nn.pca import robust_projection

        assert self.mean is not None and self.axes is not None
        mean, axes = self.mean.double(), self.axes.double()
        batch = max(1, self.recon_elements // axes.numel())
        outs = []
        for i in range(0, x.shape[0], batch):
            flat = x[i : i + batch].flatten(1).double()
            coef = robust_projection(flat, mean, axes, self.params.robust_iterations)
            outs.append((coef @ axes + mean).float().reshape(flat.shape[0], *x.shape[1:]))
        return torch.cat(outs).clamp(0, 1)

    def _model_state(self) -> dict[str, Any]:
        assert self.mean is not None and self.axes is not None
        return {"pca": {"mean": self.mean.clone(), "axes": self.axes.clone()}}

    def _load_model_state(self, state: Mapping[str, Any]) -> None:
        import torch

        try:
            mean = torch.as_tensor(state["pca"]["mean"]).float()
            axes = torch.as_tensor(state["pca"]["axes"]).float()
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{self.name}: state does not fit this plugin ({exc})") from None
        if mean.ndim != 1 or axes.ndim != 2 or axes.shape[1] != mean.shape[0]:
            raise DataError(
                f"{self.name}: state does not fit this plugin (mean {list(mean.shape)}, "
                f"axes {list(axes.shape)})"
            )
        self.mean, self.axes = mean, axes


@hookimpl
def synthmri_register_classifiers(register: Any) -> None:
    """Register ``pca_anomaly``."""
    register(PCAAnomaly)
