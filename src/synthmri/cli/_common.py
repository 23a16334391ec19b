"""What every command shares: the consoles and the global flags (on ``ctx.obj``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from rich.table import Table

console = Console()
#: the widest a table is printed when stdout is not a terminal
PIPED_WIDTH = 200
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


def print_table(table: Table) -> None:
    """Print a table on stdout whole. On a terminal rich fits it to the window; piped or
    redirected to a log file it is printed at its natural width up to ``PIPED_WIDTH``
    columns (longer prose wraps inside its cell), so no cell is cut to fit 80 columns."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update_width(10_000), table).maximum
    Console(file=console.file, width=max(min(need, PIPED_WIDTH), console.width)).print(table)


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
