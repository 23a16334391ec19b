"""The types that flow between stages and the base classes every plugin derives from.

This module is the truth for the plugin contract (see DESIGN.md): four kinds
(Generator, Classifier, Segmenter, Evaluator), each a class with a ``name``, a
one-line ``description`` and a pydantic ``Params`` model of typed, documented
defaults; and ``ImageSet``, the one data type that flows between stages.

Importing this module loads no torch (``import synthmri`` and ``synthmri --help`` stay
fast): torch is imported inside the methods that compute with tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from synthmri.core.errors import PluginError
from synthmri.core.hookspecs import PluginKind

if TYPE_CHECKING:
    import torch

    from synthmri.core.training import RunContext

KINDS: tuple[str, ...] = tuple(kind.value for kind in PluginKind)
TRAIN_ON: tuple[str, ...] = ("real", "synthetic", "mixed")


# --------------------------------------------------------------------------- data


@dataclass
class ImageSet:
    """A set of 2D slices with optional labels and masks.

    - ``images``: float32 ``[N, C, H, W]`` in [0, 1];
    - ``labels``: int64 ``[N]`` indexing ``class_names`` (or None);
    - ``masks``: float32 ``[N, 1, H, W]`` of 0/1 (or None);
    - ``sources``: per item, a file path or ``"<generator>:seed=<s>:<i>"``;
    - ``groups``: per item, the patient / volume / duplicate group; splits keep a
      group on one side;
    - ``splits``: per item, the split the data layout gave (e.g. ``"train"``,
      ``"validation"``), or None when the layout gives none.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    class_names: list[str] = field(default_factory=list)
    masks: torch.Tensor | None = None
    sources: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    splits: list[str] | None = None

    def __post_init__(self) -> None:
        import torch

        if self.images.ndim != 4:
            raise ValueError(
                f"ImageSet.images must be [N, C, H, W], got {tuple(self.images.shape)}"
            )
        if self.images.dtype != torch.float32:
            self.images = self.images.float()
        n = self.images.shape[0]
        if self.labels is not None:
            self.labels = self.labels.long().reshape(-1)
            if self.labels.shape[0] != n:
                raise ValueError(f"{self.labels.shape[0]} labels for {n} images")
            if self.class_names and n and int(self.labels.max()) >= len(self.class_names):
                raise ValueError("a label is out of range of class_names")
        if self.masks is not None:
            if self.masks.shape != (n, 1, *self.images.shape[2:]):
                raise ValueError(
                    f"masks {tuple(self.masks.shape)} do not match "
                    f"images {tuple(self.images.shape)}"
                )
            self.masks = self.masks.float()
        if not self.sources:
            self.sources = [f"item:{i}" for i in range(n)]
        if not self.groups:
            self.groups = list(self.sources)
        if len(self.sources) != n or len(self.groups) != n:
            raise ValueError("sources and groups need one entry per image")
        if self.splits is not None and len(self.splits) != n:
            raise ValueError("splits need one entry per image")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        """Side length in pixels (images are square after preprocessing)."""
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        """Number of image channels."""
        return int(self.images.shape[1])

    def subset(self, index: Sequence[int] | torch.Tensor) -> ImageSet:
        """The items at ``index`` (a list of positions or a boolean mask), in that order."""
        import torch

        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().reshape(-1)
        idx = idx.long().reshape(-1)
        pos = idx.tolist()
        return ImageSet(
            images=self.images[idx],
            labels=None if self.labels is None else self.labels[idx],
            class_names=list(self.class_names),
            masks=None if self.masks is None else self.masks[idx],
            sources=[self.sources[i] for i in pos],
            groups=[self.groups[i] for i in pos],
            splits=None if self.splits is None else [self.splits[i] for i in pos],
        )

    def label_index(self, name_or_index: str | int) -> int:
        """The label index of a class given by name or index."""
        if isinstance(name_or_index, int):
            return name_or_index
        if name_or_index not in self.class_names:
            raise KeyError(f"unknown class {name_or_index!r}; classes: {self.class_names}")
        return self.class_names.index(name_or_index)

    def of_class(self, name_or_index: str | int) -> ImageSet:
        """The items of one class."""
        if self.labels is None:
            raise ValueError("this ImageSet has no labels")
        return self.subset(self.labels == self.label_index(name_or_index))

    def class_counts(self) -> dict[str, int]:
        """Number of items per class name."""
        if self.labels is None:
            return {}
        import torch

        counts = torch.bincount(self.labels, minlength=len(self.class_names)).tolist()
        return dict(zip(self.class_names, counts, strict=True))

    @staticmethod
    def concat(sets: Sequence[ImageSet]) -> ImageSet:
        """Join sets with the same class names, size and channels (masks kept if all have them)."""
        import torch

        sets = [s for s in sets if len(s)] or list(sets[:1])
        if not sets:
            raise ValueError("nothing to concatenate")
        first = sets[0]
        for s in sets[1:]:
            if s.class_names != first.class_names:
                raise ValueError(f"class names differ: {first.class_names} vs {s.class_names}")
        labelled = all(s.labels is not None for s in sets)
        masked = all(s.masks is not None for s in sets)
        split_given = all(s.splits is not None for s in sets)
        return ImageSet(
            images=torch.cat([s.images for s in sets]),
            labels=torch.cat([s.labels for s in sets]) if labelled else None,  # type: ignore[misc]
            class_names=list(first.class_names),
            masks=torch.cat([s.masks for s in sets]) if masked else None,  # type: ignore[misc]
            sources=[x for s in sets for x in s.sources],
            groups=[x for s in sets for x in s.groups],
            splits=[x for s in sets for x in s.splits] if split_given else None,  # type: ignore[union-attr]
        )


# ------------------------------------------------------------------------ plugins


class StrictParams(BaseModel):
    """Base for every plugin's ``Params``: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Plugin:
    """Common base of the four plugin kinds."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: params that make ``fit`` finish in seconds on 32 px (used by ``synthmri.testing``)
    quick_params: ClassVar[dict[str, Any]] = {}

    class Params(StrictParams):
        """No parameters."""

    def __init__(self, params: BaseModel | Mapping[str, Any] | None = None) -> None:
        self.params = self.parse_params(params)

    @classmethod
    def parse_params(cls, params: BaseModel | Mapping[str, Any] | None) -> Any:
        """Validate ``params`` through ``cls.Params``; a bad key or value is a PluginError."""
        if isinstance(params, cls.Params):
            return params
        if isinstance(params, BaseModel):
            params = params.model_dump()
        try:
            return cls.Params(**dict(params or {}))
        except ValidationError as exc:
            raise PluginError(
                f"bad params for {cls.kind} {cls.name!r}: {format_validation_error(exc)}",
                hint=f"see `synthmri plugins show {cls.name}` for the accepted params",
            ) from None

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the trained model (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def cache_key(self) -> str:
        """What the stage's result depends on beyond its params and input data (e.g. a hash
        of files the plugin reads); ``""`` when nothing. The pipeline mixes a non-empty key
        into the stage key, so ``--resume`` redoes the stage when it changes."""
        return ""


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per pydantic error: ``field.path: message``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "<root>")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


class Generator(Plugin):
    """Learns a distribution of slices and samples new ones.

    A generator with ``conditional = False`` is trained once per class by the
    pipeline (``per_class: true``) and ``sample`` ignores ``label``. With
    ``conditional = True`` one model learns all classes and ``sample(n, label=k)``
    returns class ``k``. With ``emits_masks = True`` ``sample`` also returns
    binary ``masks``. Both flags may depend on params: a plugin sets them on the
    instance in ``__init__`` (``self.emits_masks = self.params.emits_masks``).
    Constructing a generator must be cheap: build networks in ``fit``. Params named in
    ``sampling_params`` act only in ``sample`` (``load_state_dict`` must keep them as the
    instance was built): the pipeline leaves them out of the training stage's key, so a
    recipe that changes one reuses the trained model on ``--resume`` and samples again.
    ``baseline = True`` marks a cheap baseline every learned generator must beat (the real
    train part transformed or recombined, or a classical model): the report then also names
    the best learned generator. ``warm_starts = True`` says that ``fit`` can begin from
    another trained model of the same plugin and params (``start_from``): a per-class recipe
    entry may then train one class first and fine-tune the others from it (``warm_start``).
    ``takes_negatives = True`` says that ``fit`` can also learn from negatives
    (``use_negatives``): real slices it must not make, such as another class's; a per-class
    recipe entry names that class (``negatives``).
    """

    kind: ClassVar[str] = "generator"
    conditional: ClassVar[bool] = False
    baseline: ClassVar[bool] = False
    emits_masks: ClassVar[bool] = False
    warm_starts: ClassVar[bool] = False
    takes_negatives: ClassVar[bool] = False
    sampling_params: ClassVar[frozenset[str]] = frozenset()

    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Train on ``train`` (images, and labels/masks when the generator uses them)."""
        raise NotImplementedError

    def start_from(self, state: Mapping[str, Any]) -> None:
        """Make the next ``fit`` begin from ``state`` (the ``state_dict`` of a trained model
        of this plugin with the same params) instead of a fresh initialisation."""
        raise PluginError(f"{self.name}: cannot start from another trained model")

    def use_negatives(self, negatives: ImageSet) -> None:
        """Make the next ``fit`` also learn from ``negatives``: real slices (of the training
        set's size) that its samples must not look like."""
        raise PluginError(f"{self.name}: cannot learn from negatives")

    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        """``n`` new images in [0, 1] (with ``labels`` set to ``label`` when given)."""
        raise NotImplementedError

    def to(self, device: torch.device) -> None:
        """Sample on ``device`` from now on. ``load_state_dict`` restores a model on the CPU;
        the pipeline calls this after loading one (a ``--resume``d or pooled stage), so a
        model that samples on a GPU does so there too. Default: nothing (sampling stays where
        it is)."""


class TrainedModel(Plugin):
    """What an experiment trains and tests: the base of classifiers and segmenters."""

    def validation_score(self) -> float | None:
        """The fitted model's score on the real validation part (the one its early stopping
        or calibration kept: accuracy, AUC or Dice), or None. The report shows it beside
        the test figures, so that trainings can be compared without the test part."""
        return None


class Classifier(TrainedModel):
    """Tells tumour from no tumour (or more classes)."""

    kind: ClassVar[str] = "classifier"
    #: True when the classifier also says where the tumour is (``predict_masks``); the
    #: pipeline then scores those masks as an unsupervised segmentation of the test part.
    localises: ClassVar[bool] = False

    def fit(self, train: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """Train on ``train``; ``val`` (real data) may drive early stopping and calibration."""
        raise NotImplementedError

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, n_classes]`` for images ``[N, C, H, W]``."""
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class indices ``[N]``."""
        return self.predict_proba(images).argmax(dim=1)

    def predict_masks(self, images: torch.Tensor) -> torch.Tensor:
        """Tumour masks ``[N, 1, H, W]`` in [0, 1]; only for classifiers that ``localises``."""
        raise NotImplementedError(f"{self.name} does not localise tumours")


class Segmenter(TrainedModel):
    """Predicts a tumour mask for each slice."""

    kind: ClassVar[str] = "segmenter"

    def fit(self, train: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """Train on image + mask pairs."""
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Tumour probabilities ``[N, 1, H, W]`` in [0, 1]."""
        raise NotImplementedError


@dataclass
class Predictions:
    """What one trained model predicted on the real test part."""

    task: str  # "classify" or "segment"
    model: str  # the experiment's model entry name (e.g. "resnet")
    plugin: str  # plugin name
    generator: str | None  # None when trained on real data only
    train_on: str  # one of TRAIN_ON
    real_fraction: float
    n_train: int
    target: torch.Tensor  # labels [N] or masks [N, 1, H, W]
    output: torch.Tensor  # probabilities [N, K] or [N, 1, H, W]
    class_names: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None  # the experiment seed, when the experiment lists several


@dataclass
class EvalInputs:
    """Everything an evaluator may read; ``Evaluator.requires`` names what it needs."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    synthetic: dict[str, ImageSet] = field(default_factory=dict)
    predictions: list[Predictions] = field(default_factory=list)
    seed: int = 0


class Evaluator(Plugin):
    """Turns results into metric rows (and figures via ``run.save_figure``).

    ``requires`` names the inputs it needs: any of ``"classification"``,
    ``"segmentation"`` (predictions of that task) and ``"synthetic"`` (synthetic
    sets). The pipeline skips an evaluator, with a note, when an input is empty.
    """

    kind: ClassVar[str] = "evaluator"
    requires: ClassVar[tuple[str, ...]] = ()

    def evaluate(self, inputs: EvalInputs, run: RunContext) -> dict[str, list[dict[str, Any]]]:
        """Metric rows per section of ``metrics.json`` (e.g. ``{"classification": [...]}``)."""
        raise NotImplementedError


KIND_BASES: dict[str, type[Plugin]] = {
    "generator": Generator,
    "classifier": Classifier,
    "segmenter": Segmenter,
    "evaluator": Evaluator,
}
