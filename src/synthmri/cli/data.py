"""``synthmri phantoms``: write a phantom data set as class folders with masks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthmri.cli._common import console, state_of


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("phantoms")(phantoms)


def phantoms(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder to write (class folders).")],
    n: Annotated[int, typer.Option("--n", help="Number of slices.")] = 200,
    size: Annotated[int, typer.Option("--size", help="Side length in pixels.")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    contrast: Annotated[str, typer.Option("--contrast", help="t1, t2, flair or mixed.")] = "mixed",
    mask: Annotated[
        str, typer.Option("--mask", help="core (the tumour) or whole (core and oedema).")
    ] = "core",
) -> None:
    """Write procedural brain phantoms (normal/ and tumor/, masks beside as *_mask.png)."""
    from synthmri.core.phantoms import write_phantoms

    paths = write_phantoms(out, n, size, seed=seed, contrast=contrast, mask=mask)
    if not state_of(ctx).quiet:
        console.print(f"wrote {len(paths)} slices ({size} px) with masks to {out}", markup=False)
