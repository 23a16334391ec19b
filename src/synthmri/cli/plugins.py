"""``synthmri plugins list|show|new``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from synthmri.cli._common import console, print_table
from synthmri.core.hookspecs import PluginKind
from synthmri.scaffold import Template

app = typer.Typer(help="Installed plugins.", no_args_is_help=True)


@app.command("list")
def list_(
    kind: Annotated[PluginKind | None, typer.Option("--kind", help="Only this kind.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List plugins: name, kind, description, providing package and version."""
    from synthmri.core.plugins import get_registry

    registry = get_registry()
    infos = registry.list(kind.value if kind else None)
    if as_json:
        rows = [
            {
                "name": i.name,
                "kind": i.kind,
                "description": i.description,
                "package": i.package,
                "version": i.version,
                "status": "ok",
            }
            for i in infos
        ]
        rows += [
            {
                "name": b.name,
                "kind": b.kind,
                "description": b.error,
                "package": b.package,
                "version": b.version,
                "status": "broken",
            }
            for b in registry.broken
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table("kind", "name", "description", "package")
    for i in infos:  # plugin-provided text is shown as text, never as markup
        table.add_row(i.kind, escape(i.name), escape(i.description), escape(i.provider))
    for b in registry.broken:
        table.add_row(
            f"[red]broken[/] {b.kind or ''}".strip(),
            escape(b.name),
            f"[red]{escape(b.error)}[/]",
            escape(f"{b.package} {b.version}"),
        )
    print_table(table)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Plugin name.")],
    kind: Annotated[
        PluginKind | None, typer.Option("--kind", help="Kind, when a name is ambiguous.")
    ] = None,
) -> None:
    """Show a plugin's description and its params with types and defaults."""
    from rich.table import Table

    from synthmri.core.errors import PluginError
    from synthmri.core.plugins import get_registry

    registry = get_registry()
    kinds = [kind.value] if kind else [k.value for k in PluginKind]
    matches = [i for i in registry.list(kind.value if kind else None) if i.name == name]
    if not matches:
        for k in kinds:
            blocked = registry.blocked(k, name)
            if blocked is not None:
                raise blocked
        what = f"{kind.value} " if kind else "plugin "
        raise PluginError(
            f"unknown {what}{name!r}",
            hint=registry.hint(name, kind.value if kind else None)
            or "`synthmri plugins list` shows the installed plugins",
        )
    for info in matches:
        console.print(
            f"[bold]{escape(info.name)}[/] ({info.kind}, {escape(info.provider)}): "
            f"{escape(info.description)}"
        )
        table = Table("param", "type", "default", "description")
        for field, spec in info.cls.Params.model_fields.items():
            ann = getattr(spec.annotation, "__name__", None) or str(spec.annotation)
            table.add_row(
                field,
                ann.replace("typing.", ""),
                repr(spec.get_default(call_default_factory=True)),
                spec.description or "",
            )
        print_table(table)
        sampling = sorted(getattr(info.cls, "sampling_params", ()))
        if sampling:
            console.print(
                f"sampling params (change them on a trained model: --resume, generate --set): "
                f"{', '.join(sampling)}",
                markup=False,
            )


@app.command("new")
def new(
    template: Annotated[
        Template,
        typer.Argument(
            metavar="KIND", help="The plugin kind; gan: a generator on synthmri's GAN base."
        ),
    ],
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Plugin name: a lower-case Python identifier.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Package folder to create (default ./synthmri-<name>); must be empty."
        ),
    ] = None,
) -> None:
    """Write a ready-to-install package for a new plugin (class, Params, hook, test, README)."""
    from synthmri.scaffold import names, scaffold_plugin

    target = scaffold_plugin(template, name, out)
    dist = names(template, name)["__DIST__"]
    kind = template.kind.value
    console.print(f"created [bold]{dist}[/] ({kind} {name!r}) in {escape(str(target))}")
    console.print("next:", highlight=False)
    console.print(f"  pip install -e {target}", highlight=False, markup=False)
    console.print(f"  python -m pytest {target}", highlight=False, markup=False)
    console.print(f"  synthmri plugins list --kind {kind}", highlight=False)
