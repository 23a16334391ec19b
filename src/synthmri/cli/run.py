"""``synthmri run`` and ``synthmri validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthmri.cli._common import console, rich_table, state_of

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
) -> None:
    """Run a study: data, generators, experiments, evaluation, report."""
    from synthmri.core.metrics import brief_rows
    from synthmri.core.pipeline import run_recipe
    from synthmri.core.recipe import load_recipe

    quiet = state_of(ctx).quiet
    rec = load_recipe(recipe, set_)
    if device:
        rec.device = device
    if not quiet:
        console.print(f"[bold]synthmri[/] running [cyan]{rec.name}[/] (seed {rec.seed})")
    result = run_recipe(rec, out=out, resume=resume, quiet=quiet, console=console)
    for section in ("classification", "segmentation"):
        rows = result.metrics.get(section)
        if rows:
            console.print(rich_table(section, brief_rows(rows)))
    console.print(f"report: [bold]{result.report}[/]")


def validate(recipe: Recipe, set_: Overrides = None) -> None:
    """Check a recipe (schema, plugin names and params) without running it."""
    from synthmri.core.recipe import load_recipe

    rec = load_recipe(recipe, set_)
    n_models = sum(len(e.models) for e in rec.experiments)
    console.print(
        f"[green]ok[/] {rec.name}: {len(rec.generators)} generators, "
        f"{len(rec.experiments)} experiments ({n_models} models), "
        f"{len(rec.evaluate)} evaluators"
    )
