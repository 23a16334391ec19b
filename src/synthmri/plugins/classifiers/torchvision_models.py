"""torchvision ResNet (18-152) and MobileNetV2 for 1-channel slices.

Both share :class:`TorchvisionClassifier`: the first convolution takes the image's
channels (ImageNet RGB kernels are summed into one), the output layer is new for the
data set's classes, and the input is scaled by the grey-level ImageNet mean and std.
``weights: imagenet`` reads torchvision's weights file from the LOCAL torch hub cache
(``torch.hub.get_dir()/checkpoints``) and never downloads; ``weights: <path>`` reads a
state-dict file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from synthmri import hookimpl
from synthmri.core.errors import ConfigError
from synthmri.plugins.classifiers._base import ClassifierParams, NeuralClassifier

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["MobileNetV2", "ResNet", "TorchvisionClassifier", "TorchvisionParams"]

GRAY_MEAN = 0.449  # mean of the ImageNet RGB means: a grey image seen by summed RGB kernels
GRAY_STD = 0.226


class TorchvisionParams(ClassifierParams):
    """Params of the torchvision classifiers."""

    weights: str = Field(
        "none",
        description="initial weights: none (random), imagenet (torchvision's file from the "
        "local torch hub cache; never downloaded) or the path of a state-dict file",
    )

    @field_validator("weights")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("give none, imagenet or the path of a state-dict file")
        return value


class TorchvisionClassifier(NeuralClassifier):
    """A torchvision classification network with a ``channels``-input stem and a new head.

    Subclasses name the state-dict prefix of the first convolution (``stem``) and of
    the output layer (``head``) and return the torchvision model name from ``arch``.
    """

    Params: ClassVar[type[TorchvisionParams]] = TorchvisionParams  # type: ignore[assignment]
    stem: ClassVar[str] = ""
    head: ClassVar[str] = ""

    def build_network(self, n_classes: int, channels: int, *, pretrained: bool) -> nn.Module:
        """The torchvision model with the stem adapted and the head sized for ``n_classes``;
        [0, 1] input is scaled to the ImageNet grey-level statistics first."""
        import torchvision

        from synthmri.nn.layers import Normalized

        arch = self.arch()
        net = torchvision.models.get_model(arch, weights=None, num_classes=n_classes)
        _replace_stem(net, self.stem, channels)
        if pretrained and self.params.weights != "none":
            path = self.weights_file()
            self._load_initial(net, _read_state_dict(path), path, channels)
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
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{self.name}: weights file {path} not found",
                hint="weights is none, imagenet, or the path of a state-dict file",
            )
        return path

    def _load_initial(
        self, net: nn.Module, state: dict[str, torch.Tensor], path: Path, channels: int
    ) -> None:
        """Load a torchvision-layout state dict: RGB stem summed, a different head skipped."""
        import torch

        own = net.state_dict()
        stem_key = f"{self.stem}.weight"
        w = state.get(stem_key)
        if isinstance(w, torch.Tensor) and w.ndim == 4 and w.shape[1] == 3 and channels != 3:
            state[stem_key] = w.sum(1, keepdim=True).repeat(1, channels, 1, 1) / channels
        head = f"{self.head}."
        for key in [k for k in state if k.startswith(head)]:
            if key in own and state[key].shape != own[key].shape:
                del state[key]  # a new output layer for this data set's classes
        unexpected = [k for k in state if k not in own]
        wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
        missing = [
            k
            for k in own
            if k not in state and not k.startswith(head) and not k.endswith("num_batches_tracked")
        ]
        if unexpected or wrong or missing:
            parts = []
            for what, keys in (("unexpected", unexpected), ("wrong shape", wrong),
                               ("missing", missing)):  # fmt: skip
                if keys:
                    parts.append(f"{len(keys)} {what} (e.g. {keys[0]})")
            raise ConfigError(
                f"{self.name}: {path} does not fit {self.arch()}: {', '.join(parts)}",
                hint=f"give a state dict of torchvision's {self.arch()}, or weights: none",
            )
        net.load_state_dict(state, strict=False)


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


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (``torch.load(weights_only=True)``); errors name the file."""
    import torch

    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(
            f"cannot read weights file {path}: {type(exc).__name__}: {first}",
            hint="give a state dict saved with torch.save(model.state_dict(), path)",
        ) from None
    if isinstance(obj, Mapping):
        if "weights" in obj and "arch" in obj and isinstance(obj["weights"], Mapping):
            obj = {  # a synthmri classifier's state_dict: its network under "net."
                k.removeprefix("net."): v for k, v in obj["weights"].items()
            }
        else:
            for key in ("state_dict", "model"):
                if isinstance(obj.get(key), Mapping):
                    obj = obj[key]
                    break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(
            f"weights file {path} does not hold a state dict (a mapping of names to tensors)",
            hint="give a state dict saved with torch.save(model.state_dict(), path)",
        )
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


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
