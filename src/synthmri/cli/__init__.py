"""The ``synthmri`` command line: one Typer app, one module per command group.

Every ``SynthMRIError`` becomes one red line plus a hint and exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer

from synthmri._version import __version__
from synthmri.cli import compare, data, generate, plugins, recipes, run, turing
from synthmri.cli._common import State, err_console, state
from synthmri.core.errors import SynthMRIError

app = typer.Typer(
    name="synthmri",
    help="Train generators on brain MRI slices, make synthetic data sets, and test their worth.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"synthmri {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    """synthmri: synthetic brain MRI."""
    state.quiet = quiet
    state.debug = debug
    ctx.obj = State(quiet=quiet, debug=debug)


run.register(app)
generate.register(app)
data.register(app)
app.add_typer(recipes.app, name="recipes")
app.add_typer(plugins.app, name="plugins")
compare.register(app)
app.add_typer(turing.app, name="turing")


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``argv`` for tests; default ``sys.argv``)."""
    try:
        app(args=argv, prog_name="synthmri", standalone_mode=True)
    except SynthMRIError as exc:
        if state.debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        if exc.hint:
            err_console.print(f"[dim]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        sys.exit(130)
