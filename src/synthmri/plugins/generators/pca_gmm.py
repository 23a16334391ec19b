"""``pca_gmm``: PCA ("eigenbrains") plus a Gaussian mixture in PCA space.

The slices of one class are flattened to vectors and reduced by PCA to their
``n_components`` leading directions (the eigenbrains), each direction scaled to
unit variance. A Gaussian mixture of ``n_mixture`` components is fitted to these
coordinates by EM. A new slice is drawn from the mixture and mapped back through
the PCA basis to pixels. Fitting takes well under a second on a few hundred
64 px slices, and the samples are smooth, plausible heads: a baseline every
GAN should beat. A GAN that does not beat it on TSTR has not learned more than
a linear model of the training set.

With ``emits_masks`` the tumour mask is appended to each image vector (scaled by
``mask_weight``), so image and mask are modelled jointly and a sampled mask is the
mask part thresholded at 0.5.

A built-in since it became one of the baselines every generator is compared with (the
``baselines`` recipe); it started in the example package ``examples/synthmri-pca``, which
now keeps only its ``pca_coverage`` evaluator. Same name, params and numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from synthmri import hookimpl
from synthmri.core.errors import ConfigError, DataError
from synthmri.core.interfaces import Generator, ImageSet, StrictParams

if TYPE_CHECKING:
    import numpy as np

    from synthmri.core.training import RunContext

__all__ = ["PCAGMMGenerator"]


class PCAGMMGenerator(Generator):
    """PCA + Gaussian mixture baseline generator (trained per class)."""

    name: ClassVar[str] = "pca_gmm"
    baseline: ClassVar[bool] = True
    description: ClassVar[str] = (
        "PCA eigenbrains + Gaussian mixture in PCA space: a cheap baseline every GAN should beat"
    )
    quick_params: ClassVar[dict[str, Any]] = {"n_components": 4, "n_mixture": 2}

    class Params(StrictParams):
        """Params of the ``pca_gmm`` generator."""

        n_components: int = Field(
            32,
            ge=1,
            le=1024,
            description="principal components kept (capped at n_train - 1, with a note)",
        )
        n_mixture: int = Field(
            4,
            ge=1,
            le=64,
            description="Gaussian components of the mixture in PCA space (capped at n_train)",
        )
        covariance_type: Literal["full", "tied", "diag", "spherical"] = Field(
            "full",
            description="covariance of each mixture component: full (own full matrix), "
            "tied (one shared full matrix), diag or spherical",
        )
        reg_covar: float = Field(
            1e-2,
            gt=0,
            description="added to the covariance diagonals; PCA coordinates have unit "
            "variance, so 0.01 is 1 % of a component's variance (keeps small sets stable)",
        )
        temperature: float = Field(
            1.0,
            gt=0,
            le=3,
            description="scales each sample's deviation from its mixture mean: < 1 gives "
            "sharper, less diverse images; 1 samples the fitted mixture",
        )
        max_iter: int = Field(200, ge=1, description="EM iterations of the mixture fit")
        n_init: int = Field(1, ge=1, le=20, description="EM restarts; the best fit is kept")
        emits_masks: bool = Field(
            False, description="model (image, tumour mask) pairs jointly; sample() returns masks"
        )
        mask_weight: float = Field(
            1.0,
            gt=0,
            description="weight of the mask pixels against the image pixels in the joint PCA "
            "(emits_masks only)",
        )

    def __init__(self, params: StrictParams | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.emits_masks = bool(self.params.emits_masks)
        self._state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ training

    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Fit PCA on the flattened slices, then a Gaussian mixture on the PCA coordinates."""
        import numpy as np
        import torch
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        p = self.params
        n = len(train)
        if n < 2:
            raise DataError(
                f"pca_gmm needs at least 2 training images, got {n}",
                hint="add images of this class, or leave the class out of the generator",
            )
        x = train.images.reshape(n, -1).double().numpy()
        if self.emits_masks:
            masks = train.masks
            if masks is None:
                masks = torch.zeros_like(train.images[:, :1])
                run.note("pca_gmm: emits_masks, but the training set has no masks: empty masks")
            m = (masks > 0.5).reshape(n, -1).double().numpy() * p.mask_weight
            x = np.concatenate([x, m], axis=1)
        k = min(p.n_components, n - 1, x.shape[1])
        if k < p.n_components:
            run.note(f"pca_gmm: n_components lowered from {p.n_components} to {k} ({n} images)")
        pca = PCA(n_components=k, random_state=run.seed).fit(x)
        scale = np.sqrt(np.maximum(pca.explained_variance_, 1e-12))
        z = pca.transform(x) / scale
        m_mix = min(p.n_mixture, n)
        if m_mix < p.n_mixture:
            run.note(f"pca_gmm: n_mixture lowered from {p.n_mixture} to {m_mix} ({n} images)")
        gmm = GaussianMixture(
            n_components=m_mix,
            covariance_type=p.covariance_type,
            reg_covar=p.reg_covar,
            max_iter=p.max_iter,
            n_init=p.n_init,
            random_state=run.seed,
        ).fit(z)
        cumulative = np.cumsum(pca.explained_variance_ratio_)
        for i, value in enumerate(cumulative):
            run.log(step=i + 1, explained_variance=float(value))
        run.log(
            pca_components=k,
            mixture_components=m_mix,
            mixture_converged=bool(gmm.converged_),
            mixture_log_likelihood=float(gmm.score(z)),
        )
        self._state = {
            "shape": [int(s) for s in train.images.shape[1:]],
            "emits_masks": self.emits_masks,
            "mask_weight": float(p.mask_weight),
            "mean": torch.from_numpy(pca.mean_).float(),
            "components": torch.from_numpy(pca.components_).float(),
            "scale": torch.from_numpy(scale).float(),
            "weights": torch.from_numpy(gmm.weights_).float(),
            "means": torch.from_numpy(gmm.means_).float(),
            "scale_tril": torch.from_numpy(_scale_tril(gmm, k)).float(),
        }
        self._save_eigenbrains(run)

    # ------------------------------------------------------------------ sampling

    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        """``n`` slices drawn from the mixture and mapped back to pixels (masks if asked)."""
        import torch

        st = self._require_state()
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        g = torch.Generator().manual_seed(int(seed))
        weights = st["weights"].double()
        which = torch.multinomial(weights, n, replacement=True, generator=g)
        eps = torch.randn(n, st["means"].shape[1], generator=g, dtype=torch.float64)
        tril = st["scale_tril"].double()[which]
        z = st["means"].double()[which] + self.params.temperature * torch.einsum(
            "nij,nj->ni", tril, eps
        )
        x = st["mean"].double() + (z * st["scale"].double()) @ st["components"].double()
        c, h, w = st["shape"]
        d = c * h * w
        images = x[:, :d].reshape(n, c, h, w).clamp(0, 1).float()
        masks = None
        if st["emits_masks"]:
            raw = x[:, d:].reshape(n, 1, h, w) / st["mask_weight"]
            masks = (raw > 0.5).float()
        labels = None if label is None else torch.full((n,), int(label), dtype=torch.long)
        return ImageSet(
            images=images,
            labels=labels,
            masks=masks,
            sources=[f"{self.name}:seed={seed}:{i}" for i in range(n)],
        )

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """PCA basis and mixture as tensors, plus the image shape (plain values only)."""
        return dict(self._require_state())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self._state = dict(state)
        self.emits_masks = bool(state["emits_masks"])

    def _require_state(self) -> dict[str, Any]:
        if self._state is None:
            raise ConfigError(
                "pca_gmm: not fitted", hint="call fit() or load a checkpoint before sample()"
            )
        return self._state

    def _save_eigenbrains(self, run: RunContext) -> None:
        """The mean slice and the leading eigenbrains as a figure (only with a run directory)."""
        if run.out_dir is None:
            return
        import numpy as np

        from synthmri.core.artifacts import pyplot

        plt = pyplot()
        st = self._require_state()
        c, h, w = st["shape"]
        d = c * h * w
        shown = [st["mean"][:d]] + [v[:d] for v in st["components"][:7]]
        fig, axes = plt.subplots(1, len(shown), figsize=(1.6 * len(shown), 1.9))
        for i, (ax, v) in enumerate(zip(np.atleast_1d(axes), shown, strict=True)):
            ax.imshow(v.reshape(c, h, w)[0].numpy(), cmap="gray" if i == 0 else "coolwarm")
            ax.set_title("mean" if i == 0 else f"PC {i}", fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        run.save_figure(fig, "eigenbrains")


def _scale_tril(gmm: Any, k: int) -> np.ndarray:
    """Lower Cholesky factors ``[n_mixture, k, k]`` of every mixture component's covariance."""
    import numpy as np

    cov = gmm.covariances_
    m = gmm.weights_.shape[0]
    if gmm.covariance_type == "full":
        full = cov
    elif gmm.covariance_type == "tied":
        full = np.broadcast_to(cov, (m, k, k))
    elif gmm.covariance_type == "diag":
        full = np.stack([np.diag(c) for c in cov])
    else:  # spherical
        full = np.stack([np.eye(k) * c for c in cov])
    return np.linalg.cholesky(np.asarray(full, dtype=np.float64))


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the ``pca_gmm`` generator."""
    register(PCAGMMGenerator)
