"""What every command shares: the consoles and the global flags (on ``ctx.obj``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from rich.table import Table

console = Console()
err_console = Console(stderr=True)


@dataclass
class State:
    """Global flags set by the app callback."""

    quiet: bool = False
    debug: bool = False


def state_of(ctx: typer.Context) -> State:
    """The global flags, stored on the root context (``ctx.obj``) by the app callback."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, State) else State()


def rich_table(title: str, rows: list[dict[str, Any]]) -> Table:
    """A rich table from metric rows (intervals folded into their metric)."""
    from rich.markup import escape
    from rich.table import Table

    from synthmri.core.report import table_rows

    cols, cells = table_rows(rows)
    table = Table(title=escape(title), title_justify="left")
    for c in cols:
        table.add_column(escape(c), justify="left" if c in cols[:1] else "right")
    for line in cells:  # names in cells come from recipes: text, never markup
        table.add_row(*(escape(x) for x in line))
    return table
