"""Initial weights for the classifiers that accept them (``weights: none | imagenet | PATH``):
params, reading a state-dict file, and loading it into a network with a one-channel stem and a
new output layer. Shared by the torchvision classifiers and ``efficientnet_lite0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from synthmri.core.errors import ConfigError
from synthmri.plugins.classifiers._base import ClassifierParams, NeuralClassifier

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "PretrainedClassifier",
    "PretrainedParams",
    "load_initial_weights",
    "read_state_dict",
    "weights_path",
]


class PretrainedParams(ClassifierParams):
    """Classifier params with ``weights``: where the initial weights come from."""

    weights: str = Field(
        "none",
        description="initial weights: none (random), imagenet, or the path of a state-dict file",
    )

    @field_validator("weights")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("give none, imagenet or the path of a state-dict file")
        return value


class PretrainedClassifier(NeuralClassifier):
    """A neural classifier whose ``weights`` param names its initial weights.

    Subclasses name the state-dict prefix of the first convolution (``stem``) and of the
    output layer (``head``), and say where ``weights: imagenet`` is (``weights_file``).
    """

    Params: ClassVar[type[PretrainedParams]] = PretrainedParams  # type: ignore[assignment]
    stem: ClassVar[str] = ""
    head: ClassVar[str] = ""

    def weights_file(self) -> Path:
        """The state-dict file the ``weights`` param names."""
        return weights_path(self.params.weights, self.name, self.arch())

    def load_initial(self, net: nn.Module, channels: int) -> None:
        """Load the initial weights into ``net`` (nothing for ``weights: none``)."""
        if self.params.weights == "none":
            return
        path = self.weights_file()
        load_initial_weights(
            net,
            read_state_dict(path),
            path=path,
            plugin=self.name,
            arch=self.arch(),
            stem=self.stem,
            head=self.head,
            channels=channels,
        )


def weights_path(spec: str, plugin: str, arch: str) -> Path:
    """The state-dict file ``weights: PATH`` names; a ConfigError naming it when absent."""
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"{plugin}: weights file {path} not found (expected a state dict of {arch})",
            hint="weights is none, imagenet, or the path of a state-dict file",
        )
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (``torch.load(weights_only=True)``); errors name the file.

    Also accepts a checkpoint that holds one under ``state_dict`` or ``model``, and a
    synthmri classifier's ``state_dict()`` (its network under ``weights``); a ``module.``
    prefix (DataParallel) is dropped.
    """
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


def load_initial_weights(
    net: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    path: Path,
    plugin: str,
    arch: str,
    stem: str,
    head: str,
    channels: int,
) -> None:
    """Load ``state`` into ``net``: the RGB kernels of the first convolution (``stem``) are
    summed into ``channels`` inputs, an output layer (``head``) of another size is left new;
    anything else that does not fit is a ConfigError naming the file and the architecture."""
    import torch

    own = net.state_dict()
    stem_key = f"{stem}.weight"
    w = state.get(stem_key)
    if isinstance(w, torch.Tensor) and w.ndim == 4 and w.shape[1] == 3 and channels != 3:
        # a grey image seen by the summed RGB kernels gives the same response as the RGB image
        state[stem_key] = w.sum(1, keepdim=True).repeat(1, channels, 1, 1) / channels
    head_prefix = f"{head}."
    for key in [k for k in state if k.startswith(head_prefix)]:
        if key in own and state[key].shape != own[key].shape:
            del state[key]  # a new output layer for this data set's classes
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    missing = [
        k
        for k in own
        if k not in state
        and not k.startswith(head_prefix)
        and not k.endswith("num_batches_tracked")
    ]
    if unexpected or wrong or missing:
        parts = []
        for what, keys in (("unexpected", unexpected), ("wrong shape", wrong),
                           ("missing", missing)):  # fmt: skip
            if keys:
                parts.append(f"{len(keys)} {what} (e.g. {keys[0]})")
        raise ConfigError(
            f"{plugin}: {path} does not fit {arch}: {', '.join(parts)}",
            hint=f"give a state dict of {arch}, or weights: none",
        )
    net.load_state_dict(state, strict=False)
