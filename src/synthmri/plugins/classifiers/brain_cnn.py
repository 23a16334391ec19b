"""The small CNN of the published VAE/GAN brain-tumour study.

Three convolution blocks (3x3 conv with 32, 64, 128 filters, BatchNorm, ReLU, 2x2
max-pool), then fully connected layers of 1024, 512 and 128 units with dropout 0.5,
then the output layer. An adaptive average pool before the FC layers (``pooled_size``)
makes it work at any image size from 32 to 256 px with the same number of weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from synthmri import hookimpl
from synthmri.plugins.classifiers._base import ClassifierParams, NeuralClassifier

if TYPE_CHECKING:
    from torch import nn

__all__ = ["BrainCNN"]

CONV_WIDTHS = (32, 64, 128)
FC_WIDTHS = (1024, 512, 128)


class BrainCNN(NeuralClassifier):
    """3 conv blocks (32/64/128) and FC 1024/512/128 with dropout: a light tumour classifier."""

    name = "brain_cnn"
    description = "small CNN from the VAE/GAN study: conv 32/64/128, FC 1024/512/128, dropout"
    arch_fields = ("dropout", "pooled_size")

    class Params(ClassifierParams):
        """brain_cnn params."""

        dropout: float = Field(0.5, ge=0, lt=1, description="dropout after each hidden FC layer")
        pooled_size: int = Field(
            4,
            ge=1,
            le=32,
            description="side of the adaptive average pool before the FC layers "
            "(4: 128 x 4 x 4 = 2048 features, whatever the image size)",
        )

    def build_network(self, n_classes: int, channels: int, *, pretrained: bool) -> nn.Module:
        """The network; ``pretrained`` is ignored (brain_cnn always starts from scratch)."""
        from torch import nn

        layers: list[nn.Module] = []
        width_in = channels
        for width in CONV_WIDTHS:
            layers += [
                nn.Conv2d(width_in, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            width_in = width
        side = self.params.pooled_size
        layers += [nn.AdaptiveAvgPool2d(side), nn.Flatten()]
        features = width_in * side * side
        for width in FC_WIDTHS:
            layers += [nn.Linear(features, width), nn.ReLU(True), nn.Dropout(self.params.dropout)]
            features = width
        layers.append(nn.Linear(features, n_classes))
        return nn.Sequential(*layers)


@hookimpl
def synthmri_register_classifiers(register: Any) -> None:
    """Register brain_cnn."""
    register(BrainCNN)
