"""``vae``: the convolutional VAE of the published VAE/GAN brain-MRI study.

The network (``VAENet``), its losses and its training loop (``train_vae``) live in
``synthmri.nn.vae``, where the ``vae_anomaly`` classifier trains the same model on healthy
slices. This generator trains it on the given slices and samples from the N(0, I) prior;
``encode`` / ``decode`` / ``reconstruct`` expose the trained model. Samples are blurry,
as VAE samples are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from synthmri import hookimpl
from synthmri.core.errors import ConfigError, DataError
from synthmri.core.interfaces import Generator, ImageSet
from synthmri.nn.params import VAEParams

if TYPE_CHECKING:
    from torch import Tensor

    from synthmri.core.training import RunContext
    from synthmri.nn.vae import TrainedVAE

__all__ = ["VAE", "VAEParams"]


class VAE(Generator):
    """Convolutional VAE; samples decode latents drawn from the N(0, I) prior."""

    name = "vae"
    description = "Convolutional VAE (6-block encoder, 2x2x1024 decoder); blurry but stable."
    quick_params: dict[str, Any] = {"iterations": 6, "base_channels": 8, "latent_dim": 16}
    Params = VAEParams

    def __init__(self, params: VAEParams | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.model: TrainedVAE | None = None
        self.history: dict[str, Any] = {}

    # -- training
    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Train on ``train.images`` (labels and masks are not used)."""
        from synthmri.nn.vae import TrainedVAE, VAENet, check_size, train_vae

        if len(train) == 0:
            raise DataError("vae: no training images")
        check_size(train.size, int(train.images.shape[-2]))
        p = self.params
        net = VAENet(train.size, train.channels, p.latent_dim, p.base_channels)
        self.history = train_vae(net, train.images, p, run)
        self.model = TrainedVAE(net, run.device)

    def _model(self) -> TrainedVAE:
        if self.model is None:
            raise ConfigError(
                "vae: the model is not trained", hint="call fit() or load a checkpoint"
            )
        return self.model

    # -- sampling and the anomaly-detection API
    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        """``n`` images decoded from prior latents (the same for a seed); on the CPU."""
        import torch

        from synthmri.nn.tensors import latent_seeded

        net = self._model().net
        z = latent_seeded(n, net.latent_dim, seed, "cpu")
        images = self.decode(z) if n else torch.zeros(0, net.channels, net.size, net.size)
        labels = None if label is None else torch.full((n,), int(label), dtype=torch.long)
        return ImageSet(
            images=images.clamp(0.0, 1.0),
            labels=labels,
            sources=[f"vae:seed={seed}:{i}" for i in range(n)],
        )

    def encode(self, images: Tensor, batch_size: int = 128) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` ``[N, latent_dim]`` on the CPU for images in [0, 1]."""
        return self._model().encode(images, batch_size)

    def decode(self, z: Tensor, batch_size: int = 128) -> Tensor:
        """Images ``[N, C, H, W]`` in [0, 1] on the CPU for latents ``z`` ``[N, latent_dim]``."""
        return self._model().decode(z, batch_size)

    def reconstruct(self, images: Tensor, batch_size: int = 128) -> Tensor:
        """Reconstructions (decoded ``mu``, eval mode) of images in [0, 1]; on the CPU."""
        return self._model().reconstruct(images, batch_size)

    # -- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Network config (plain ints) and weights (CPU tensors)."""
        return self._model().state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the network from ``state["config"]`` and load its weights (on the CPU)."""
        from synthmri.nn.vae import TrainedVAE

        self.model = TrainedVAE.from_state(state)


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the ``vae`` generator."""
    register(VAE)
