"""``synthmri phantoms``: write a phantom data set as class folders with masks."""

from __future__ import annotations

from pathlib import Path

import typer

from synthmri.cli._common import console, state


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("phantoms")(phantoms)


def phantoms(
    out: Path = typer.Option(..., "--out", "-o", help="New folder to write (class folders)."),
    n: int = typer.Option(200, "--n", help="Number of slices."),
    size: int = typer.Option(128, "--size", help="Side length in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    contrast: str = typer.Option("mixed", "--contrast", help="t1, t2, flair or mixed."),
) -> None:
    """Write procedural brain phantoms (normal/ and tumor/, masks beside as *_mask.png)."""
    from synthmri.core.phantoms import write_phantoms

    paths = write_phantoms(out, n, size, seed=seed, contrast=contrast)
    if not state.quiet:
        console.print(f"wrote {len(paths)} slices ({size} px) with masks to {out}")
