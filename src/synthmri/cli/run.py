"""``synthmri run`` and ``synthmri validate``."""

from __future__ import annotations

from pathlib import Path

import typer

from synthmri.cli._common import console, rich_table, state


def register(app: typer.Typer) -> None:
    """Add the commands to the app."""
    app.command("run")(run)
    app.command("validate")(validate)


def run(
    recipe: str = typer.Argument(..., help="A recipe file or the name of a shipped recipe."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Parent folder of run directories."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override: key.path=value (repeat)."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Reuse unchanged stages of this earlier run."
    ),
) -> None:
    """Run a study: data, generators, experiments, evaluation, report."""
    from synthmri.core.metrics import brief_rows
    from synthmri.core.pipeline import run_recipe
    from synthmri.core.recipe import load_recipe

    rec = load_recipe(recipe, set_)
    if device:
        rec.device = device
    if not state.quiet:
        console.print(f"[bold]synthmri[/] running [cyan]{rec.name}[/] (seed {rec.seed})")
    result = run_recipe(rec, out=out, resume=resume, quiet=state.quiet, console=console)
    for section in ("classification", "segmentation"):
        rows = result.metrics.get(section)
        if rows:
            console.print(rich_table(section, brief_rows(rows)))
    console.print(f"report: [bold]{result.report}[/]")


def validate(
    recipe: str = typer.Argument(..., help="A recipe file or the name of a shipped recipe."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override: key.path=value (repeat)."),
) -> None:
    """Check a recipe (schema, plugin names and params) without running it."""
    from synthmri.core.recipe import load_recipe

    rec = load_recipe(recipe, set_)
    n_models = sum(len(e.models) for e in rec.experiments)
    console.print(
        f"[green]ok[/] {rec.name}: {len(rec.generators)} generators, "
        f"{len(rec.experiments)} experiments ({n_models} models), "
        f"{len(rec.evaluate)} evaluators"
    )
