"""What the built-in neural classifiers share: Params, ``fit`` through ``train_supervised``,
``predict_proba`` through ``predict_batched``, and a ``state_dict`` that rebuilds the network.

A subclass only says how to build its network (``build_network``), which of its params
shape that network (``arch_fields``) and how to name it (``arch``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field

from synthmri.core.errors import DataError, PluginError
from synthmri.core.interfaces import Classifier, ImageSet, StrictParams
from synthmri.core.operating_point import (
    Calibration,
    HealthyClass,
    TargetSensitivity,
    TargetSpecificity,
)
from synthmri.core.supervised import BatchSize, SupervisedParams

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from synthmri.core.training import RunContext

__all__ = ["ClassifierParams", "NeuralClassifier", "check_val_matches", "input_images"]


class ClassifierParams(SupervisedParams):
    """Training params every built-in classifier accepts."""

    batch_size: Annotated[BatchSize, Field(ge=2)] = 32  # BatchNorm needs 2 images a batch
    monitor: Literal["accuracy", "auc"] = Field(
        "accuracy",
        description="validation score for early stopping and picking the best epoch, ties "
        "broken by the lower validation loss (auc falls back to accuracy when a class is "
        "missing from the validation part)",
    )
    class_weights: bool = Field(
        False, description="weight the loss by inverse class frequency of the training set"
    )
    calibration: Calibration = Field(
        "none",
        description="two classes only: after training, set the tumour threshold on the "
        "validation part for at least target_sensitivity at the best specificity (or "
        "target_specificity, max Youden J or F1) instead of calling the likelier class (none)",
    )
    target_sensitivity: TargetSensitivity = 0.9
    target_specificity: TargetSpecificity = 0.9
    normal_class: HealthyClass = "normal"


class NeuralClassifier(Classifier):
    """A torch classifier trained with the shared supervised loop.

    Subclasses set ``name``, ``description``, a nested ``Params``, ``arch_fields``
    (the params that define the network; stored in ``state_dict``) and implement
    ``build_network``.
    """

    Params: ClassVar[type[StrictParams]] = ClassifierParams  # type: ignore[assignment]
    arch_fields: ClassVar[tuple[str, ...]] = ()
    quick_params: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 8}

    def __init__(self, params: BaseModel | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self._net: nn.Module | None = None
        self._device: torch.device | None = None
        self.class_names: list[str] = []
        self.size = 0
        self.channels = 1
        self.history: dict[str, Any] = {}
        #: with ``calibration``: the threshold on the tumour-vs-normal logit margin and the
        #: operating point it reached on the validation part (empty: the likelier class)
        self.decision: dict[str, Any] = {}

    # ------------------------------------------------------------ subclass hooks

    def arch(self) -> str:
        """A readable name of the network (e.g. ``resnet50``)."""
        return self.name

    def build_network(self, n_classes: int, channels: int, *, pretrained: bool) -> nn.Module:
        """A fresh network taking ``[N, channels, H, W]`` in [0, 1] to ``n_classes`` logits.

        ``pretrained`` is True in ``fit`` (load initial weights if the params ask for
        them) and False when ``load_state_dict`` rebuilds a trained model.
        """
        raise NotImplementedError

    # ------------------------------------------------------------ training

    def fit(self, train: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """Train on ``train``; ``val`` (may be None) drives early stopping and the best epoch."""
        import torch
        from torch import nn

        from synthmri.core.augment import Augment
        from synthmri.core.supervised import train_supervised

        x, y, names = self._training_data(train)
        k = len(names)
        p = self.params
        if p.calibration != "none" and k != 2:
            raise DataError(
                f"{self.name}: calibration {p.calibration} needs two classes, got {names}"
            )
        self.class_names, self.size, self.channels = names, train.size, train.channels
        self.decision = {}
        net = self.build_network(k, self.channels, pretrained=True)
        weight = None
        if p.class_weights:
            counts = torch.bincount(y, minlength=k).float()
            weight = torch.where(counts > 0, len(y) / (k * counts.clamp(min=1)), 0.0)
            weight = weight.to(run.device)
        loss_fn = nn.CrossEntropyLoss(weight=weight)
        augment = Augment(seed=run.seed + 7) if p.augment else None
        val_x, val_y = self._validation_data(val, names, train)
        if run.device.type == "cuda":  # keep the set on the GPU: no copy per step
            x, y = x.to(run.device), y.to(run.device)
        self.history = train_supervised(
            net,
            run,
            train_x=x,
            train_y=y,
            loss_fn=loss_fn,
            score_fn=self._score if val_x is not None else None,
            val_x=val_x,
            val_y=val_y,
            augment=augment,
            description="train",
            **p.loop_settings(),
        )
        self._net = net.eval()
        self._device = run.device
        if p.calibration != "none":
            self._calibrate(val_x, val_y, run)

    def validation_score(self) -> float | None:
        """The best validation score of the training (``monitor``), or None."""
        return self.history.get("best_score")

    def _calibrate(
        self, val_x: torch.Tensor | None, val_y: torch.Tensor | None, run: RunContext
    ) -> None:
        """Set ``decision``: the threshold of ``calibration`` on the validation part's
        tumour-vs-normal logit margins (skipped, with a note, without the classes it needs)."""
        import numpy as np

        from synthmri.core.operating_point import healthy_index, rates, threshold_for

        p = self.params
        normal = healthy_index(self.class_names, p.normal_class, self.name)
        positive = (val_y.numpy() != normal) if val_y is not None else np.zeros(0, bool)
        mode = p.calibration
        if val_x is None or positive.all():
            run.note(
                f"{self.name}: calibration {mode} needs healthy validation images; the "
                "likelier class decides"
            )
            return
        if mode != "specificity" and not positive.any():
            run.note(
                f"{self.name}: calibration {mode} needs tumour validation images; using "
                "target_specificity instead"
            )
            mode = "specificity"
        margins = self._margins(self._logits(val_x), normal)
        threshold = threshold_for(
            mode,
            margins,
            positive,
            target_sensitivity=p.target_sensitivity,
            target_specificity=p.target_specificity,
        )
        reached = rates(margins, positive, threshold)
        self.decision = {
            "calibration": mode,
            "normal_index": normal,
            "threshold": threshold,
            "val_sensitivity": reached["sensitivity"],
            "val_specificity": reached["specificity"],
            "val_auc": reached["auc"],
        }
        self.history["decision"] = dict(self.decision)
        run.log(**{f"decision/{k}": v for k, v in self.decision.items()})

    @staticmethod
    def _margins(logits: torch.Tensor, normal: int) -> np.ndarray:
        """Tumour-vs-normal log-odds of two-class ``logits``."""
        return (logits[:, 1 - normal] - logits[:, normal]).double().numpy()

    def _training_data(self, train: ImageSet) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        if len(train) < 2:
            raise DataError(f"{self.name}: need at least 2 training images, got {len(train)}")
        if train.labels is None:
            raise DataError(
                f"{self.name}: the training images have no labels",
                hint="classifiers need class folders (or masks to derive tumor/normal from)",
            )
        names = list(train.class_names) or [str(i) for i in range(int(train.labels.max()) + 1)]
        if len(names) < 2:
            raise DataError(
                f"{self.name}: need at least 2 classes to train a classifier, got {names}"
            )
        return train.images, train.labels, names

    def _validation_data(
        self, val: ImageSet | None, names: list[str], train: ImageSet
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if val is None or len(val) == 0 or val.labels is None:
            return None, None
        check_val_matches(self.name, train, val, names)
        return val.images, val.labels

    def _score(self, logits: torch.Tensor, target: torch.Tensor) -> float:
        """Validation score: accuracy or ROC AUC (one-vs-rest macro), ties broken by the
        lower validation cross-entropy (a term too small to outweigh one more right image)."""
        import torch
        import torch.nn.functional as F

        logits, target = logits.float().cpu(), target.cpu()
        tie_break = -1e-7 * min(float(F.cross_entropy(logits, target)), 10.0)
        accuracy = float((logits.argmax(1) == target).float().mean())
        k = logits.shape[1]
        if self.params.monitor == "accuracy" or len(torch.unique(target)) < k:
            return accuracy + tie_break  # AUC needs every class in the validation part
        from sklearn.metrics import roc_auc_score

        proba = torch.softmax(logits, 1).numpy()
        y = target.numpy()
        if k == 2:
            return float(roc_auc_score(y, proba[:, 1])) + tie_break
        return float(roc_auc_score(y, proba, multi_class="ovr", labels=list(range(k)))) + tie_break

    # ------------------------------------------------------------ prediction

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, n_classes]`` (on the CPU): the softmax, or with a
        calibrated ``decision`` a monotone map of the tumour margin that is 0.5 at its
        threshold (so the likelier class is the calibrated call)."""
        import torch

        if self._net is None:
            raise PluginError(
                f"{self.name}: the classifier is not trained",
                hint="call fit() or load_state_dict() first",
            )
        images = input_images(self.name, images, self.channels, self.size)
        if images.shape[0] == 0:
            return torch.empty(0, len(self.class_names))
        logits = self._logits(images).float()
        if not self.decision:
            return torch.softmax(logits, dim=1)
        # the calibrated decision: 0.5 at the threshold, a margin exactly on it stays normal
        normal = int(self.decision["normal_index"])
        shifted = torch.from_numpy(self._margins(logits, normal) - self.decision["threshold"])
        tumour = torch.sigmoid(shifted).float()
        tumour = torch.where(shifted > 0, tumour, tumour.clamp(max=0.5 - 1e-7))
        out = torch.empty(len(tumour), 2)
        out[:, 1 - normal], out[:, normal] = tumour, 1.0 - tumour
        return out

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        """The network's logits of ``images`` (on the CPU)."""
        from synthmri.core.training import predict_batched

        batch = max(64, 2 * self.params.batch_size)
        return predict_batched(self._net, images, self._device, batch_size=batch).cpu()

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Architecture, classes, image size and network weights (empty before ``fit``)."""
        if self._net is None:
            return {}
        return {
            "plugin": self.name,
            "arch": self.arch(),
            "config": {f: getattr(self.params, f) for f in self.arch_fields},
            "n_classes": len(self.class_names),
            "class_names": list(self.class_names),
            "size": self.size,
            "channels": self.channels,
            "weights": {k: v.detach().cpu().clone() for k, v in self._net.state_dict().items()},
            "decision": dict(self.decision),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the network from ``state`` and load its weights (on the CPU)."""
        import torch

        missing = [
            key
            for key in ("config", "class_names", "size", "channels", "weights")
            if key not in state
        ]
        if missing:
            raise DataError(
                f"{self.name}: not a trained classifier state (missing {', '.join(missing)})"
            )
        if state.get("plugin", self.name) != self.name:
            raise DataError(f"{self.name}: the state belongs to {state['plugin']!r}")
        config = dict(state["config"])
        if config:
            self.params = type(self.params)(**{**self.params.model_dump(), **config})
        self.class_names = list(state["class_names"])
        self.size, self.channels = int(state["size"]), int(state["channels"])
        net = self.build_network(len(self.class_names), self.channels, pretrained=False)
        try:
            net.load_state_dict(dict(state["weights"]))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise DataError(
                f"{self.name}: the saved weights do not fit {self.arch()}: {first}"
            ) from None
        self._net = net.eval()
        self._device = torch.device("cpu")
        self.decision = dict(state.get("decision", {}))


def check_val_matches(plugin: str, train: ImageSet, val: ImageSet, names: list[str]) -> None:
    """A DataError when the validation part's classes or image shape differ from training."""
    if val.class_names and val.class_names != names:
        raise DataError(
            f"{plugin}: validation classes {val.class_names} differ from training classes {names}"
        )
    if val.images.shape[1:] != train.images.shape[1:]:
        raise DataError(
            f"{plugin}: validation images {tuple(val.images.shape[1:])} differ from "
            f"training images {tuple(train.images.shape[1:])}"
        )


def input_images(plugin: str, images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """``images`` as the trained model takes them: ``[N, channels, size, size]`` float,
    resized (bilinear, antialiased) when their size differs; a one-line ``DataError``
    naming ``plugin`` when their shape does not fit."""
    import torch.nn.functional as F

    if images.ndim != 4 or images.shape[1] != channels:
        raise DataError(
            f"{plugin}: expected images [N, {channels}, H, W], got {tuple(images.shape)}"
        )
    images = images.float()
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    return images
