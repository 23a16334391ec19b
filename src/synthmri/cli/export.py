"""``synthmri export``: send a finished run directory to TensorBoard or MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthmri.cli._common import console

app = typer.Typer(
    help="Send a finished run directory to an experiment tracker (TensorBoard, MLflow).",
    no_args_is_help=True,
)

RunDir = Annotated[
    Path, typer.Argument(help="A run directory written by synthmri run (runs/<recipe>-<time>).")
]


def _recipe_name(run_dir: Path) -> str:
    from synthmri.core.tracking import read_run_recipe

    return str(read_run_recipe(run_dir).get("name") or run_dir.name)


@app.command("tensorboard")
def tensorboard(
    run_dir: RunDir,
    out: Annotated[
        Path,
        typer.Argument(help="TensorBoard log folder; the run's events go to OUT/<run name>/."),
    ],
) -> None:
    """Write a run as TensorBoard events (needs: pip install tensorboard).

    Params, metric curves, results, figures with their captions, and report.md as text.
    """
    from synthmri.core.tracking import make_tracker, replay_run

    name = _recipe_name(run_dir)
    tracker = make_tracker("tensorboard", run_dir, name, uri=str(out))
    lines = replay_run(run_dir, tracker)
    _report(tracker.error, f"{lines} log lines; {tracker.describe()}")


@app.command("mlflow")
def mlflow(
    run_dir: RunDir,
    uri: Annotated[
        str | None,
        typer.Option(
            "--uri", help="Tracking URI (default: MLFLOW_TRACKING_URI or MLflow's default)."
        ),
    ] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="Experiment name (default: the recipe).")
    ] = None,
    artifacts: Annotated[
        bool, typer.Option("--artifacts/--no-artifacts", help="Upload the run directory.")
    ] = True,
) -> None:
    """Log a run to MLflow as a new MLflow run (needs: pip install mlflow).

    Params, metric curves, results, figures with their captions, and the run directory as
    artifacts.
    """
    from synthmri.core.tracking import make_tracker, replay_run

    name = _recipe_name(run_dir)
    tracker = make_tracker(
        "mlflow", run_dir, name, uri=uri, experiment=experiment, artifacts=artifacts
    )
    lines = replay_run(run_dir, tracker)
    _report(tracker.error, f"{lines} log lines; {tracker.describe()}")


def _report(error: str | None, done: str) -> None:
    from synthmri.core.errors import ConfigError

    if error:
        raise ConfigError(error)
    console.print(f"[green]exported[/] {done}")
