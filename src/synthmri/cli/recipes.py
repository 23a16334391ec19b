"""``synthmri recipes list|show``."""

from __future__ import annotations

from typing import Annotated

import typer

from synthmri.cli._common import console

app = typer.Typer(help="The shipped recipes.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """List the shipped recipes with their descriptions."""
    import yaml
    from rich.table import Table

    from synthmri.core.recipe import shipped_recipes

    table = Table("name", "description")
    for name, path in shipped_recipes().items():
        try:
            desc = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        except yaml.YAMLError:
            desc = "(invalid YAML)"
        table.add_row(name, str(desc).strip().splitlines()[0] if desc else "")
    console.print(table)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="Recipe name.")]) -> None:
    """Print a shipped recipe's YAML."""
    from synthmri.core.recipe import resolve_recipe_path

    typer.echo(resolve_recipe_path(name).read_text())
