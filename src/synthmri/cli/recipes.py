"""``synthmri recipes list|show``."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from synthmri.cli._common import print_table

app = typer.Typer(help="The shipped recipes.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """List the shipped recipes, each with the first sentence of its description."""
    import yaml
    from rich.table import Table

    from synthmri.core.recipe import shipped_recipes

    table = Table("name", "description")
    for name, path in shipped_recipes().items():
        try:
            desc = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        except yaml.YAMLError:
            desc = "(invalid YAML)"
        table.add_row(name, _first_sentence(str(desc or "")))
    print_table(table)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="Recipe name.")]) -> None:
    """Print a shipped recipe's YAML."""
    from synthmri.core.recipe import resolve_recipe_path

    typer.echo(resolve_recipe_path(name).read_text())


def _first_sentence(text: str) -> str:
    """The first sentence of a description (not cut at "et al." or "e.g.")."""
    one_line = " ".join(text.split())
    end = r"(?<=\.)(?<!\bal\.)(?<!e\.g\.)(?<!i\.e\.)\s+(?=[A-Z])"  # a full stop, then a capital
    return re.split(end, one_line, maxsplit=1)[0]
