"""``synthmri turing make|score``: the visual Turing test of the published studies.

Both commands reach the kit through the registry: the ``turing_kit`` evaluator plugin's
``make_kit`` and ``score_answers``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from synthmri.cli._common import console, print_table

app = typer.Typer(
    help="Visual Turing test: blinded real/synthetic kits and their scores.", no_args_is_help=True
)


def _kit() -> Any:
    from synthmri.core.plugins import get_plugin

    return get_plugin("evaluator", "turing_kit")


@app.command("make")
def make(
    real: Annotated[Path, typer.Option("--real", help="Folder of real images.")],
    synthetic: Annotated[Path, typer.Option("--synthetic", help="Folder of synthetic images.")],
    out: Annotated[Path, typer.Option("--out", help="Kit folder: rater/ and key.json go here.")],
    n: Annotated[
        int, typer.Option("--n", help="Images in the kit: half real, half synthetic.")
    ] = 50,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draw and the order.")] = 0,
    size: Annotated[int, typer.Option("--size", help="Side length of the kit's images.")] = 128,
) -> None:
    """Write a blinded kit: OUT/rater/ (images + index.html) for the rater, OUT/key.json apart."""
    from synthmri.core.data import load_images
    from synthmri.core.errors import ConfigError
    from synthmri.core.preflight import check_output_folder

    limit = _kit().MAX_KIT_SIZE
    if not 8 <= size <= limit:
        raise ConfigError(f"--size must be between 8 and {limit}, not {size}")
    check_output_folder(out)
    real_set = load_images(real, size=size).data
    syn_set = load_images(synthetic, size=size).data
    key = _kit().make_kit(
        real_set.images,
        syn_set.images,
        out,
        n=n,
        seed=seed,
        size=size,
        real_sources=real_set.sources,
        synthetic_sources=syn_set.sources,
    )
    console.print(
        f"[green]kit written[/]: send [bold]{key.parent / 'rater'}[/] to the rater "
        f"(open index.html); keep the key [bold]{key}[/] apart."
    )


@app.command("score")
def score(
    answers: Annotated[
        Path, typer.Argument(help="answers.json (or .csv) downloaded by the rater.")
    ],
    key: Annotated[Path, typer.Argument(help="key.json written by `turing make`.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the scores (.json or .csv).")
    ] = None,
) -> None:
    """Score a rater: the 2x2 table, accuracy, binomial test and 95 % interval vs chance."""
    from rich.table import Table

    s = _kit().score_answers(answers, key)
    table = Table(
        title=f"visual Turing test ({s.n} answered"
        + (f", {s.n_unanswered} unanswered)" if s.n_unanswered else ")"),
        title_justify="left",
    )
    table.add_column("")
    table.add_column("count", justify="right")
    for label, value in (
        ("Real as Real", s.real_as_real),
        ("Real as Synthetic", s.real_as_synthetic),
        ("Synthetic as Real", s.synthetic_as_real),
        ("Synthetic as Synthetic", s.synthetic_as_synthetic),
    ):
        table.add_row(label, str(value))
    lo, hi = s.accuracy_ci
    table.add_row("accuracy", f"{s.accuracy:.1%} (95 % CI {lo:.1%}-{hi:.1%})")
    table.add_row("p (two-sided binomial vs 50 %)", _format_p(s.p_value))
    print_table(table)
    verdict = (
        "raters told real from synthetic better than chance"
        if s.p_value < 0.05
        else "no evidence that raters beat chance"
    )
    console.print(verdict)
    if out is not None:
        from synthmri.core.files import OutputDir

        data = s.as_dict()
        if out.suffix.lower() == ".csv":
            buf = io.StringIO(newline="")
            writer = csv.writer(buf)
            writer.writerow(["metric", "value"])
            for k, v in data.items():
                writer.writerow([k, ";".join(map(str, v)) if isinstance(v, list) else v])
            text = buf.getvalue()
        else:
            text = json.dumps(data, indent=2) + "\n"
        written = OutputDir(out.parent).write_text(text, out.name)
        console.print(f"written: {written}", markup=False)


def _format_p(p: float) -> str:
    """A p-value for people: 3 significant digits, or ``< 1e-4``."""
    if not math.isfinite(p):
        return "-"
    return "< 1e-4" if p < 1e-4 else f"{p:.3g}"
