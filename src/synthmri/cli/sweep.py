"""``synthmri sweep RECIPE --seeds 0,1,2 [--grid key=v1,v2 ...]``: a study over seeds and
settings (the engine is :mod:`synthmri.core.sweep`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from synthmri.cli._common import console, state_of

__all__ = ["register", "sweep"]


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("sweep")(sweep)


def sweep(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Argument(help="A recipe file or a shipped recipe's name.")],
    seeds: Annotated[
        str, typer.Option("--seeds", help="Comma-separated run seeds, e.g. 0,1,2.")
    ] = "0",
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            "-g",
            help="key.path=v1,v2: run every value (repeat for a grid of every combination).",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override for every run: key.path=value (repeat)."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Parent folder of the sweep folder.")
    ] = Path("runs"),
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="An earlier sweep folder: its runs' stages are reused."),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option("--executor", help="serial, local or ray (see `synthmri run --help`)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="local: processes.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
) -> None:
    """Run a recipe for every seed and grid combination; summarise over seeds."""
    from synthmri.core.sweep import run_sweep

    quiet = state_of(ctx).quiet

    def announce(i: int, n: int, label: str, seed: int) -> None:
        if not quiet:
            console.print(
                f"[bold]sweep[/] run {i}/{n}: {escape(label)}, seed {seed}", soft_wrap=True
            )

    folder = run_sweep(
        recipe,
        _seeds(seeds),
        [_axis(item) for item in grid or []],
        overrides=set_,
        out=out,
        resume=resume,
        executor=executor,
        workers=workers,
        device=device,
        quiet=quiet,
        console=console,
        announce=announce,
    )
    n = len(list((folder / "runs").iterdir()))
    console.print(f"sweep: [bold]{escape(str(folder))}[/] ({n} runs)", soft_wrap=True)


def _seeds(text: str) -> list[int]:
    from synthmri.core.errors import ConfigError

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected integers like 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: give one or more different seeds, like 0,1,2")
    return seeds


def _axis(item: str) -> tuple[str, list[str]]:
    """``key=v1,v2`` -> (key, [v1, v2]); commas inside brackets do not split."""
    from synthmri.core.errors import ConfigError

    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--grid {item!r}: expected key.path=value1,value2")
    values, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    if not all(values):
        raise ConfigError(f"--grid {item!r}: an empty value")
    return key.strip(), values
