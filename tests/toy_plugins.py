"""Tiny plugins the core tests register through a fake distribution (no model code)."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from synthmri import Classifier, Evaluator, Generator, ImageSet, Segmenter, StrictParams, hookimpl


class MeanGenerator(Generator):
    """Samples the training mean plus noise; a deliberately simple generator."""

    name = "toy_mean"
    description = "Training mean plus Gaussian noise."
    quick_params = {"noise": 0.05}
    sampling_params = frozenset({"noise"})

    class Params(StrictParams):
        noise: float = Field(0.1, ge=0, description="noise standard deviation")
        emits_masks: bool = Field(False, description="return the mean mask, thresholded")
        conditional: bool = Field(False, description="one model for all classes")

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.emits_masks = self.params.emits_masks
        self.conditional = self.params.conditional
        self.means: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None

    def fit(self, train: ImageSet, run: Any) -> None:
        if self.conditional and train.labels is not None:
            self.means = torch.stack(
                [train.of_class(c).images.mean(0) for c in range(len(train.class_names))]
            )
        else:
            self.means = train.images.mean(0, keepdim=True)
        masks = train.masks if train.masks is not None else torch.zeros_like(train.images)
        self.mask = (masks.mean(0) > 0.2).float()
        for step in range(3):
            run.log(step=step, loss=1.0 / (step + 1))

    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        assert self.means is not None and self.mask is not None
        g = torch.Generator().manual_seed(seed or 0)
        mean = self.means[label if (self.conditional and label is not None) else 0]
        noise = torch.randn((n, *mean.shape), generator=g) * self.params.noise
        imgs = (mean + noise).clamp(0, 1)
        labels = None if label is None else torch.full((n,), label)
        masks = self.mask.expand(n, *self.mask.shape).clone() if self.emits_masks else None
        return ImageSet(images=imgs, labels=labels, masks=masks)

    def state_dict(self) -> dict[str, Any]:
        return {"means": self.means, "mask": self.mask}

    def load_state_dict(self, state: Any) -> None:
        self.means, self.mask = state["means"], state["mask"]


class MeanIntensityClassifier(Classifier):
    """Logistic regression on the mean intensity inside the brightest pixels."""

    name = "toy_intensity"
    description = "Logistic regression on two intensity features."

    class Params(StrictParams):
        steps: int = Field(60, ge=1, description="gradient steps")

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(1)
        top = flat.topk(max(1, flat.shape[1] // 50), dim=1).values.mean(1)
        return torch.stack([flat.mean(1), top], 1)

    def fit(self, train: ImageSet, val: ImageSet | None, run: Any) -> None:
        x, y = self._features(train.images), train.labels
        assert y is not None
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        self.k = len(train.class_names)
        self.lin = torch.nn.Linear(2, self.k)
        opt = torch.optim.Adam(self.lin.parameters(), lr=0.1)
        for step in range(self.params.steps):
            loss = torch.nn.functional.cross_entropy(self.lin((x - self.mu) / self.sd), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 20 == 0:
                run.log(epoch=step, loss=loss.item())

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return self.lin((self._features(images) - self.mu) / self.sd).softmax(1)

    def state_dict(self) -> dict[str, Any]:
        return {"mu": self.mu, "sd": self.sd, "k": self.k, "lin": self.lin.state_dict()}

    def load_state_dict(self, state: Any) -> None:
        self.mu, self.sd, self.k = state["mu"], state["sd"], state["k"]
        self.lin = torch.nn.Linear(2, self.k)
        self.lin.load_state_dict(state["lin"])


class ThresholdSegmenter(Segmenter):
    """Marks pixels brighter than a learned quantile."""

    name = "toy_threshold"
    description = "Intensity threshold learned from the masks."

    def fit(self, train: ImageSet, val: ImageSet | None, run: Any) -> None:
        assert train.masks is not None
        inside = train.images[train.masks > 0.5]
        self.t = inside.quantile(0.2) if inside.numel() else torch.tensor(1.0)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return (images > self.t).float()

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t}

    def load_state_dict(self, state: Any) -> None:
        self.t = state["t"]


class CountEvaluator(Evaluator):
    """Counts predictions and synthetic images."""

    name = "toy_count"
    description = "Counts what it was given."
    requires = ("synthetic",)

    def evaluate(self, inputs: Any, run: Any) -> dict[str, list[dict[str, Any]]]:
        rows = [{"generator": g, "n": len(s)} for g, s in inputs.synthetic.items()]
        rows += [
            {
                "model": p.model,
                "train_on": p.train_on,
                "accuracy": float((p.output.argmax(1) == p.target).float().mean()),
            }
            for p in inputs.predictions
            if p.task == "classify"
        ]
        return {
            "classification": [
                {
                    "classifier": p.model,
                    "generator": p.generator,
                    "train_on": p.train_on,
                    "real_fraction": p.real_fraction,
                    **({} if p.seed is None else {"seed": p.seed}),
                    "n_train": p.n_train,
                    "n_test": len(p.target),
                    "accuracy": float((p.output.argmax(1) == p.target).float().mean()),
                }
                for p in inputs.predictions
                if p.task == "classify"
            ],
            "toy_counts": rows,
        }


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    register(MeanGenerator)


@hookimpl
def synthmri_register_classifiers(register: Any) -> None:
    register(MeanIntensityClassifier)


@hookimpl
def synthmri_register_segmenters(register: Any) -> None:
    register(ThresholdSegmenter)


@hookimpl
def synthmri_register_evaluators(register: Any) -> None:
    register(CountEvaluator)
