"""``synthmri.core.training`` and ``synthmri.core.supervised``: the run's helpers, the
supervised settings model and the supervised loop's budgets."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from synthmri.core.supervised import Epochs, SupervisedParams, train_supervised
from synthmri.core.training import RunContext, minibatches, predict_batched


def test_supervised_params_defaults_bounds_and_loop_settings() -> None:
    p = SupervisedParams()
    assert p.loop_settings() == {
        "epochs": 20,
        "batch_size": 32,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "patience": 5,
        "steps": None,
        "check_every": None,
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


def _fit(n: int, **budget: int) -> dict:
    torch.manual_seed(0)
    x, y = torch.randn(n, 3), torch.randint(0, 2, (n,))
    net = torch.nn.Linear(3, 2)
    return train_supervised(
        net,
        RunContext(seed=0),
        train_x=x,
        train_y=y,
        loss_fn=torch.nn.functional.cross_entropy,
        score_fn=lambda out, target: float((out.argmax(1) == target).float().mean()),
        val_x=x[:8],
        val_y=y[:8],
        batch_size=4,
        patience=1000,
        **budget,
    )


def test_an_epoch_budget_grows_with_the_training_set() -> None:
    assert _fit(16, epochs=3)["steps_run"] == 3 * 4
    assert _fit(160, epochs=3)["steps_run"] == 3 * 40


def test_a_step_budget_gives_every_training_set_the_same_updates() -> None:
    small, large = _fit(8, steps=30, check_every=7), _fit(160, steps=30, check_every=7)
    assert small["steps_run"] == large["steps_run"] == 30
    # validation after every 7 steps and at the end: 7, 14, 21, 28, 30
    assert len(small["val_score"]) == len(large["val_score"]) == 5
    assert _fit(8, steps=40)["epochs_run"] == 20  # default: 20 checks


def test_progress_on_a_console_that_is_not_a_terminal_prints_plain_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Piped output: a start line, count lines at most every ``every`` seconds, a done line
    with the elapsed time; a stage that raises ends with "stopped"."""
    import io
    import re

    from rich.console import Console

    from synthmri.core import training

    buffer = io.StringIO()
    run = RunContext(quiet=False, console=Console(file=buffer), stage="generate/x")
    monkeypatch.setattr(training._PlainProgress, "every", 0.0)
    with run.progress(2, "fit") as bar:
        bar.advance(loss=0.25)
        bar.advance()
    with pytest.raises(RuntimeError), run.progress(1) as bar:
        raise RuntimeError("boom")
    lines = [line[9:] for line in buffer.getvalue().splitlines()]  # without the HH:MM:SS
    assert lines[:3] == [
        "start generate/x: fit",
        "  generate/x: fit 1/2 loss=0.25",
        "  generate/x: fit 2/2",
    ]
    assert re.fullmatch(r"done generate/x: fit in \d+\.\d s", lines[3])
    assert lines[4] == "start generate/x" and lines[5].startswith("stopped generate/x in ")
