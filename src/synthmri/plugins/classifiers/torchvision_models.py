"""torchvision ResNet (18-152) and MobileNetV2 for 1-channel slices.

Both share :class:`TorchvisionClassifier`: the first convolution takes the image's
channels (ImageNet RGB kernels are summed into one), the output layer is new for the
data set's classes, and the input is scaled by the grey-level ImageNet mean and std.
``weights: imagenet`` reads torchvision's weights file from the LOCAL torch hub cache
(``torch.hub.get_dir()/checkpoints``) and never downloads; ``weights: <path>`` reads a
state-dict file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

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

__all__ = ["MobileNetV2", "ResNet", "TorchvisionClassifier", "TorchvisionParams"]

GRAY_MEAN = 0.449  # mean of the ImageNet RGB means: a grey image seen by summed RGB kernels
GRAY_STD = 0.226


class TorchvisionParams(PretrainedParams):
    """Params of the torchvision classifiers."""

    weights: str = Field(
        "none",
        description="initial weights: none (random), imagenet (torchvision's file from the "
        "local torch hub cache; never downloaded) or the path of a state-dict file of the "
        "same torchvision architecture",
    )


class TorchvisionClassifier(PretrainedClassifier):
    """A torchvision classification network with a ``channels``-input stem and a new head.

    Subclasses name the state-dict prefix of the first convolution (``stem``) and of
    the output layer (``head``) and return the torchvision model name from ``arch``.
    """

    Params: ClassVar[type[TorchvisionParams]] = TorchvisionParams  # type: ignore[assignment]

    def build_network(self, n_classes: int, channels: int, *, pretrained: bool) -> nn.Module:
        """The torchvision model with the stem adapted and the head sized for ``n_classes``;
        [0, 1] input is scaled to the ImageNet grey-level statistics first."""
        import torchvision

        from synthmri.nn.layers import Normalized

        arch = self.arch()
        net = torchvision.models.get_model(arch, weights=None, num_classes=n_classes)
        _replace_stem(net, self.stem, channels)
        if pretrained:
            self.load_initial(net, channels)
        return Normalized(net, GRAY_MEAN, GRAY_STD)

    def weights_file(self) -> Path:
        """The file ``weights`` points to; a ConfigError that says where to put it if absent."""
        import torch

        spec = self.params.weights
        if spec == "imagenet":
            import torchvision

            enum = torchvision.models.get_model_weights(self.arch())
            default = enum.DEFAULT
            names = [default.url.rsplit("/", 1)[-1]]
            names += [w.url.rsplit("/", 1)[-1] for w in enum if w is not default]
            folder = Path(torch.hub.get_dir()) / "checkpoints"
            for file_name in names:
                if (folder / file_name).is_file():
                    return folder / file_name
            raise ConfigError(
                f"{self.name}: ImageNet weights for {self.arch()} not found: "
                f"{folder / names[0]} does not exist (nothing is downloaded at run time)",
                hint=f"put {names[0]} (from {default.url}) into {folder}, or use weights: none",
            )
        return weights_path(spec, self.name, f"torchvision's {self.arch()}")


def _replace_stem(net: nn.Module, path: str, channels: int) -> None:
    """Swap the first convolution at ``path`` for one taking ``channels`` inputs."""
    from torch import nn

    parent_path, _, attr = path.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    old = getattr(parent, attr)
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"{path} is not a Conv2d")
    new = nn.Conv2d(
        channels,
        old.out_channels,
        kernel_size=old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        dilation=old.dilation,  # type: ignore[arg-type]
        groups=old.groups,
        bias=old.bias is not None,
    )
    setattr(parent, attr, new)


class ResNet(TorchvisionClassifier):
    """torchvision ResNet with a 1-channel stem and a new output layer."""

    name = "resnet"
    description = "torchvision ResNet (18/34/50/101/152 layers); ImageNet init from local cache"
    stem = "conv1"
    head = "fc"
    arch_fields = ("depth",)

    class Params(TorchvisionParams):
        """ResNet params."""

        depth: Literal[18, 34, 50, 101, 152] = Field(
            18, description="number of layers: 18, 34, 50, 101 or 152"
        )

    def arch(self) -> str:
        """``resnet<depth>``."""
        return f"resnet{self.params.depth}"


class MobileNetV2(TorchvisionClassifier):
    """torchvision MobileNetV2 with a 1-channel stem and a new output layer."""

    name = "mobilenet_v2"
    description = "torchvision MobileNetV2; ImageNet init from the local torch hub cache"
    stem = "features.0.0"
    head = "classifier"

    class Params(TorchvisionParams):
        """MobileNetV2 params."""

    def arch(self) -> str:
        """``mobilenet_v2``."""
        return "mobilenet_v2"


@hookimpl
def synthmri_register_classifiers(register: Any) -> None:
    """Register ResNet and MobileNetV2."""
    register(ResNet)
    register(MobileNetV2)
