"""Feature extractors shared by the ``image_quality`` and ``privacy`` evaluators.

Three extractors, none of which downloads anything:

- ``domain``: a classifier plugin (default ``resnet``, depth 18) trained by the evaluator on
  the REAL TRAIN part only, a few seeded epochs, then frozen; its penultimate features (the
  input of its last ``nn.Linear`` layer: for a torchvision ResNet the global-pool output).
  Trained on the classes, it also gives its class calls in the same pass
  (``FeatureExtractor.features_and_classes``), which ``image_quality`` uses for its
  ``class_agreement`` (GAN-test) figure.
  When the training part has fewer than two classes the classifier learns a rotation
  pretext task instead (which of 0/90/180/270 degrees an image was turned by), so an
  unlabelled folder still gets domain features.
- ``inception``: torchvision Inception-v3 (pool features, 2048-d) when its weights file sits
  in the local torch hub cache (``torch.hub.get_dir()/checkpoints/`` + ``INCEPTION_FILE``);
  images are resized to 299 px and repeated to 3 channels.
- ``random``: a fixed-seed random CNN, a sanity baseline.

``build_extractor`` returns a callable ``images [N, C, H, W] in [0, 1] -> features [N, D]``
(float64, CPU). Extractors are cached per (kind, settings, training data), so the two
evaluators of one run train the domain classifier once. Importing this module loads no torch.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from synthmri.core.errors import ConfigError, DataError
from synthmri.core.interfaces import ImageSet, StrictParams

if TYPE_CHECKING:
    import torch
    from torch import nn

    from synthmri.core.training import RunContext

__all__ = [
    "FEATURE_KINDS",
    "INCEPTION_FILE",
    "FeatureExtractor",
    "FeatureParams",
    "build_extractor",
    "inception_weights_path",
]

FEATURE_KINDS = ("domain", "inception", "random")
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CACHE: OrderedDict[str, FeatureExtractor] = OrderedDict()
_CACHE_SIZE = 2


class FeatureParams(StrictParams):
    """Params of the feature extractor (shared by image_quality and privacy)."""

    features: Literal["domain", "inception", "random"] = Field(
        "domain",
        description="domain: a classifier trained on the real train part; inception: "
        "Inception-v3 from the local torch hub cache; random: a fixed-seed random CNN",
    )
    domain_classifier: str = Field(
        "resnet", description="classifier plugin trained for the domain features"
    )
    domain_epochs: int = Field(5, ge=1, description="epochs of the domain classifier")
    domain_params: dict[str, Any] = Field(
        default_factory=dict,
        description="extra params of the domain classifier (resnet gets depth 18 by default)",
    )


@dataclass
class FeatureExtractor:
    """Images ``[N, C, H, W]`` in [0, 1] -> features ``[N, D]`` (float64, CPU)."""

    name: str  # "domain-resnet", "inception", "random"
    fn: Callable[[torch.Tensor], torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    #: images -> (features, class indices of ``classes``) in one pass, for a domain
    #: classifier trained on the classes
    classify: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    classes: list[str] = field(default_factory=list)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features of ``images`` (an empty ``[0, D]`` tensor for no images)."""
        import torch

        if images.shape[0] == 0:
            return torch.empty(0, 0, dtype=torch.float64)
        return self.fn(images.float()).double().cpu()

    def features_and_classes(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features and the classifier's class indices (None without ``classify``)."""
        if self.classify is None or images.shape[0] == 0:
            return self(images), None
        features, called = self.classify(images.float())
        return features.double().cpu(), called.cpu()


def inception_weights_path() -> Path:
    """Where the Inception-v3 weights file must be: the local torch hub cache."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def build_extractor(
    params: FeatureParams, train: ImageSet, run: RunContext, seed: int = 0
) -> FeatureExtractor | None:
    """The extractor ``params.features`` names, fitted on ``train`` when it needs fitting.

    Returns None (after a ``run.note`` saying which file to put where) when the inception
    weights are not in the local torch hub cache. Never downloads anything.
    """
    kind = params.features
    if kind == "inception":
        path = inception_weights_path()
        key = _key("inception", str(path))
    elif kind == "random":
        key = _key("random", seed, train.channels)
    elif kind == "domain":
        from synthmri.core.stages import fingerprint

        key = _key(
            "domain",
            params.domain_classifier,
            params.domain_epochs,
            params.domain_params,
            seed,
            str(run.device),
            fingerprint(train),
        )
    else:  # pragma: no cover - Params validation rejects other values
        raise ConfigError(f"unknown features {kind!r}; use one of {', '.join(FEATURE_KINDS)}")
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    if kind == "inception":
        extractor = _inception(run)
        if extractor is None:
            return None
    elif kind == "random":
        extractor = _random_cnn(train.channels, seed, run.device)
    else:
        extractor = _domain(params, train, run, seed)
    _CACHE[key] = extractor
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return extractor


# ----------------------------------------------------------------------------- helpers


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


# ----------------------------------------------------------------------------- random


def _random_cnn(channels: int, seed: int, device: torch.device) -> FeatureExtractor:
    from synthmri.core.training import predict_batched
    from synthmri.nn.features import RandomCNN

    net = RandomCNN(channels).reseed(10_007 + seed).to(device).eval()

    def fn(images: torch.Tensor) -> torch.Tensor:
        return predict_batched(net, images, device, batch_size=128)

    return FeatureExtractor("random", fn, {"seed": seed})


# ----------------------------------------------------------------------------- inception


def _inception(run: RunContext) -> FeatureExtractor | None:
    path = inception_weights_path()
    if not path.is_file():
        run.note(
            f"inception features skipped: weights file {INCEPTION_FILE} not found; put it in "
            f"{path.parent} (torchvision's Inception_V3_Weights.IMAGENET1K_V1 file; nothing "
            "is downloaded), or use features: domain"
        )
        return None
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torchvision.models import inception_v3

    from synthmri.core.training import predict_batched

    net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as exc:
        raise DataError(
            f"{path}: cannot load the Inception-v3 weights ({type(exc).__name__})",
            hint=f"replace it with torchvision's {INCEPTION_FILE}",
        ) from None
    net.fc = nn.Identity()  # type: ignore[assignment]
    device = run.device
    net = net.to(device).eval()
    mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = x[:, :1] if x.shape[1] != 3 else x
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return net((x - mean.to(x.device)) / std.to(x.device))

    def fn(images: torch.Tensor) -> torch.Tensor:
        return predict_batched(net, images, device, batch_size=32, fn=prepare)

    return FeatureExtractor("inception", fn, {"weights": str(path)})


# ----------------------------------------------------------------------------- domain


def _rotation_pretext(train: ImageSet) -> ImageSet:
    """Four copies of every image, turned by 0/90/180/270 degrees, labelled by the turn."""
    import torch

    x = train.images
    images = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4).repeat_interleave(len(train))
    return ImageSet(
        images=images,
        labels=labels,
        class_names=["rot0", "rot90", "rot180", "rot270"],
        groups=[g for _ in range(4) for g in train.groups],
    )


def _last_linear(model: Any) -> nn.Linear:
    from torch import nn

    nets = [v for v in vars(model).values() if isinstance(v, nn.Module)]
    for net in nets:
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        if linears:
            return linears[-1]
    raise ConfigError(
        f"domain features: classifier {getattr(model, 'name', model)!r} has no nn.Linear "
        "output layer to take penultimate features from",
        hint="use domain_classifier: resnet, or features: random",
    )


def _domain(params: FeatureParams, train: ImageSet, run: RunContext, seed: int) -> FeatureExtractor:
    import torch

    from synthmri.core.plugins import get_plugin
    from synthmri.core.training import seed_everything

    if len(train) < 2:
        raise DataError(f"domain features need at least 2 real training images, got {len(train)}")
    cls = get_plugin("classifier", params.domain_classifier)
    fields = getattr(cls.Params, "model_fields", {})
    config: dict[str, Any] = {}
    if "depth" in fields and params.domain_classifier == "resnet":
        config["depth"] = 18
    if "epochs" in fields:
        config["epochs"] = params.domain_epochs
    config.update(params.domain_params)
    clf = cls(config)
    labelled = train.labels is not None and len(torch.unique(train.labels)) >= 2
    data = train if labelled else _rotation_pretext(train)
    task = "classes" if labelled else "rotation pretext"
    child = run.child(f"{run.stage}/domain-features" if run.stage else "domain-features")
    child.seed = seed
    seed_everything(seed)
    clf.fit(data, None, child)
    layer = _last_linear(clf)
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0].detach().float().flatten(1).cpu())

    def classify(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured.clear()
        handle = layer.register_forward_pre_hook(hook)
        try:
            with torch.no_grad():
                called = clf.predict_proba(images).argmax(dim=1)
        finally:
            handle.remove()
        out = torch.cat(captured) if captured else torch.empty(0)
        captured.clear()
        if out.shape[0] != images.shape[0]:
            raise ConfigError(
                f"domain features: {params.domain_classifier!r} gave {out.shape[0]} feature "
                f"rows for {images.shape[0]} images"
            )
        return out, called

    return FeatureExtractor(
        f"domain-{params.domain_classifier}",
        lambda images: classify(images)[0],
        {"classifier": params.domain_classifier, "task": task, "n_train": len(train)},
        classify=classify if labelled else None,
        classes=list(train.class_names) if labelled else [],
    )
