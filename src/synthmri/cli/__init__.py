"""The ``synthmri`` command line: one Typer app, one module per command group.

Every ``SynthMRIError`` becomes one red line plus a hint and exit code 2;
``--debug`` shows the traceback instead. The global flags live on ``ctx.obj``
(see ``_common.state_of``). Command modules import only Typer at module level, so
``synthmri --help``, ``--version`` and ``plugins list`` load no torch.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from synthmri._version import __version__
from synthmri.cli import compare, data, export, generate, plugins, recipes, run, sweep, turing
from synthmri.cli._common import State, err_console, state_of
from synthmri.core.errors import SynthMRIError


class _ErrorsAsExitCodes(TyperGroup):
    """The root command: turns a ``SynthMRIError`` into a message and exit code 2.

    Handled here, inside the root context, so ``--debug`` is read from ``ctx.obj``.
    """

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except SynthMRIError as exc:
            if state_of(ctx).debug:
                raise
            # user-provided text (paths, names) is printed as text, never as markup
            err_console.print(
                f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True
            )
            if exc.hint:
                err_console.print(
                    f"[dim]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True
                )
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[red]interrupted[/]")
            raise typer.Exit(130) from None
        except (OSError, MemoryError) as exc:
            # a safety net: the file system or memory failed somewhere no check foresaw
            if state_of(ctx).debug:
                raise
            err_console.print(f"[bold red]error:[/] {escape(_describe(exc))}", highlight=False)
            raise typer.Exit(2) from None


def _describe(exc: BaseException) -> str:
    """One line for an OS or memory error: the file it names and the reason."""
    if isinstance(exc, MemoryError):
        return "out of memory; use smaller images, fewer images or smaller models"
    name = getattr(exc, "filename", None)
    lines = str(exc).splitlines()
    reason = getattr(exc, "strerror", None) or (lines[0] if lines else type(exc).__name__)
    return f"{name}: {reason}" if name else reason


app = typer.Typer(
    name="synthmri",
    cls=_ErrorsAsExitCodes,
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
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars or notes.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """synthmri: synthetic brain MRI."""
    ctx.obj = State(quiet=quiet, debug=debug)


run.register(app)
sweep.register(app)
generate.register(app)
data.register(app)
app.add_typer(recipes.app, name="recipes")
app.add_typer(plugins.app, name="plugins")
compare.register(app)
app.add_typer(turing.app, name="turing")
app.add_typer(export.app, name="export")


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``argv`` for tests; default ``sys.argv``)."""
    app(args=argv, prog_name="synthmri", standalone_mode=True)
