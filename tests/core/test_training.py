"""``synthmri.core.training``: the supervised settings model and the loop's helpers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from synthmri.core.training import Epochs, SupervisedParams, minibatches, predict_batched


def test_supervised_params_defaults_bounds_and_loop_settings() -> None:
    p = SupervisedParams()
    assert p.loop_settings() == {
        "epochs": 20,
        "batch_size": 32,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "patience": 5,
    }
    assert p.augment is True
    for bad in ({"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"patience": 0}, {"x": 1}):
        with pytest.raises(ValidationError):
            SupervisedParams(**bad)


def test_a_subclass_changes_a_default_and_keeps_bounds_and_description() -> None:
    class Longer(SupervisedParams):
        epochs: Epochs = 50

    assert Longer().epochs == 50
    field = Longer.model_fields["epochs"]
    assert field.description == SupervisedParams.model_fields["epochs"].description
    with pytest.raises(ValidationError):
        Longer(epochs=0)


def test_minibatches_cover_every_item_once_per_epoch() -> None:
    batches = minibatches(10, 3, torch.Generator().manual_seed(0))
    epoch = torch.cat([next(batches) for _ in range(3)])  # drop_last: 9 of 10
    assert epoch.unique().numel() == 9


def test_predict_batched_restores_the_training_mode() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).train()
    out = predict_batched(net, torch.ones(5, 2), torch.device("cpu"), batch_size=2)
    assert out.shape == (5, 2) and not out.requires_grad and net.training


def test_importing_the_module_loads_no_torch() -> None:
    code = "import sys, synthmri.core.training; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
