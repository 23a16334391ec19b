"""The ``brain_cnn`` classifier: it learns a simple two-class problem."""

from __future__ import annotations

import torch

from synthmri.core.interfaces import ImageSet
from synthmri.core.training import RunContext
from synthmri.plugins.classifiers.brain_cnn import BrainCNN


def test_brain_cnn_learns_bright_vs_dark() -> None:
    g = torch.Generator().manual_seed(0)
    n = 96
    labels = torch.arange(n) % 2
    level = torch.where(labels == 1, 0.7, 0.3).view(-1, 1, 1, 1)
    images = (level + 0.1 * torch.randn(n, 1, 32, 32, generator=g)).clamp(0, 1)
    data = ImageSet(images=images, labels=labels, class_names=["dark", "bright"])
    train, test = data.subset(range(64)), data.subset(range(64, n))
    model = BrainCNN({"epochs": 6, "batch_size": 16, "augment": False})
    model.fit(train, test, RunContext(device="cpu", seed=1))
    accuracy = float((model.predict(test.images) == test.labels).float().mean())
    assert accuracy > 0.8, accuracy
