"""``synthmri run`` and ``synthmri validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from synthmri.cli._common import console, print_table, rich_table, state_of

Recipe = Annotated[str, typer.Argument(help="A recipe file or the name of a shipped recipe.")]
Overrides = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override: key.path=value (repeat).")
]


def register(app: typer.Typer) -> None:
    """Add the commands to the app."""
    app.command("run")(run)
    app.command("validate")(validate)


def run(
    ctx: typer.Context,
    recipe: Recipe,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Parent folder of run directories.")
    ] = Path("runs"),
    set_: Overrides = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Reuse unchanged stages of this earlier run.")
    ] = None,
    track: Annotated[
        str | None,
        typer.Option(
            "--track",
            help="Track the run in mlflow or tensorboard (or none); the recipe's tracking: "
            "section sets the URI and experiment.",
        ),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="How independent stages run: serial, local (a process pool) or ray (extra "
            "synthmri[ray]; RAY_ADDRESS joins a cluster). Default: the recipe's executor: "
            "section (serial).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, help="local: processes (default: cores, capped by memory)."
        ),
    ] = None,
) -> None:
    """Run a study: data, generators, experiments, evaluation, report."""
    from synthmri.core.metrics import brief_rows
    from synthmri.core.pipeline import run_recipe
    from synthmri.core.recipe import load_recipe

    quiet = state_of(ctx).quiet
    if track is not None:
        from synthmri.core.errors import ConfigError
        from synthmri.core.tracking import BACKENDS

        if track not in (*BACKENDS, "none"):
            raise ConfigError(
                f"--track {track!r}: unknown tracking backend", hint="use mlflow or tensorboard"
            )
        set_ = [*(set_ or []), f"tracking.backend={track}"]
    rec = load_recipe(recipe, set_)
    if device:
        rec.device = device
    if not quiet:
        console.print(f"[bold]synthmri[/] running [cyan]{escape(rec.name)}[/] (seed {rec.seed})")
    result = run_recipe(
        rec,
        out=out,
        resume=resume,
        quiet=quiet,
        console=console,
        executor=executor,
        workers=workers,
    )
    for section in ("classification", "segmentation"):
        rows = result.metrics.get(section)
        if rows:
            print_table(rich_table(section, brief_rows(rows)))
    console.print(f"report: [bold]{escape(str(result.report))}[/]", soft_wrap=True)


def validate(
    recipe: Recipe,
    set_: Overrides = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The parent folder `run` would write to.")
    ] = Path("runs"),
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
) -> None:
    """Check a recipe without running it: schema, plugin names and params, and every check
    `run` makes before training (device, data folder, sizes, output folder)."""
    from synthmri.core.preflight import check_run
    from synthmri.core.recipe import load_recipe

    rec = load_recipe(recipe, set_)
    check_run(rec, out=out, device=device)
    n_models = sum(len(e.models) for e in rec.experiments)
    console.print(
        f"[green]ok[/] {rec.name}: {len(rec.generators)} generators, "
        f"{len(rec.experiments)} experiments ({n_models} models), "
        f"{len(rec.evaluate)} evaluators"
    )
