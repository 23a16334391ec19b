"""metrics.json, results.csv, training curves, report.md and a self-contained report.html."""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from synthmri.core.artifacts import pyplot
from synthmri.core.metrics import RESULT_SECTIONS, Metrics
from synthmri.core.recipe import Recipe


def fmt(value: Any) -> str:
    """A cell: floats to 3 decimals, intervals as [lo, hi]."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.3g}"
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) for v in value)
    ):
        return f"[{fmt(float(value[0]))}, {fmt(float(value[1]))}]"
    return str(value)


def table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Columns and cells; ``<metric>_ci`` intervals are folded into their metric's cell."""
    columns: list[str] = []
    for row in rows:
        for k, v in row.items():
            if (
                k not in columns
                and not isinstance(v, dict)
                and not (isinstance(v, list) and not k.endswith("_ci"))
            ):
                columns.append(k)
    shown = [c for c in columns if not (c.endswith("_ci") and c[:-3] in columns)]
    cells = []
    for row in rows:
        line = []
        for c in shown:
            text = fmt(row.get(c))
            if f"{c}_ci" in row and row[f"{c}_ci"] is not None:
                text += f" {fmt(row[f'{c}_ci'])}"
            line.append(text)
        cells.append(line)
    return shown, cells


def write_json_atomic(obj: Any, path: Path) -> None:
    """Write JSON to a temp file, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def write_results_csv(metrics: dict[str, Any], path: Path) -> None:
    """Every classification and segmentation row, one line each."""
    rows = [{"task": s, **r} for s in RESULT_SECTIONS for r in metrics.get(s, [])]
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns or ["task"])
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()}
            )


def plot_training_curves(run_dir: Path) -> list[Path]:
    """One figure per stage from the numeric values it logged per step or epoch."""
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return []
    series: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        x = rec.get("step", rec.get("epoch"))
        if x is None:
            continue
        for k, v in rec.items():
            if k in ("time", "stage", "step", "epoch") or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)):
                series[rec.get("stage", "")][k].append((float(x), float(v)))
    plt = pyplot()
    out = []
    for stage, curves in series.items():
        curves = {k: v for k, v in curves.items() if len(v) >= 2}
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(6, 3))
        for k, pts in sorted(curves.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, linewidth=1)
        ax.set_title(f"training curves: {stage}", fontsize=9)
        ax.set_xlabel("step" if "generate" in stage else "epoch / step", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        target = run_dir / "figures" / (stage.replace("/", "-") + "-curves.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, dpi=90, bbox_inches="tight")
        plt.close(fig)
        out.append(target)
    return out


def _figure_order(figures: list[Path]) -> list[Path]:
    def rank(p: Path) -> tuple[int, str]:
        n = p.name
        for i, key in enumerate(("samples", "curves", "histogram", "confusion", "roc")):
            if key in n:
                return i, n
        return 9, n

    seen: dict[str, Path] = {}
    for p in figures:
        seen.setdefault(str(p), p)
    return sorted(seen.values(), key=rank)


def write_report(run_dir: Path, recipe: Recipe, metrics: Metrics, figures: list[Path]) -> None:
    """Write metrics.json, results.csv, report.md and report.html into ``run_dir``."""
    dumped = metrics.model_dump()
    write_json_atomic(dumped, run_dir / "metrics.json")
    write_results_csv(dumped, run_dir / "results.csv")
    figs = _figure_order([*figures, *plot_training_curves(run_dir)])
    data = metrics.data
    summary = (
        f"data: {data.n_train} train / {data.n_val} val / "
        f"{data.n_test} test (real, leak-free by group); "
        f"{data.duplicate_groups} duplicate groups; classes "
        f"{', '.join(data.classes)}; total time "
        f"{metrics.timings.total_s if metrics.timings else 0:.0f} s on {metrics.device}"
    )
    sections = metrics.row_sections()
    # markdown
    md = [f"# {recipe.name}", "", recipe.description.strip(), "", summary, ""]
    for section, rows in sections:
        cols, cells = table_rows(rows)
        md += [f"## {section}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        md += ["| " + " | ".join(c) + " |" for c in cells]
        md.append("")
    if metrics.notes:
        md += ["## notes", ""] + [f"- {n}" for n in metrics.notes] + [""]
    md += ["## figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figs]
    (run_dir / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    # html (figures inline)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>synthmri: {html.escape(recipe.name)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}",
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}",
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}",
        "th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}",
        "figure{display:inline-block;margin:.5em;vertical-align:top}",
        "figcaption{font-size:12px;color:#555}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(recipe.name)}</h1><p>{html.escape(recipe.description)}</p>",
        f"<p>{html.escape(summary)}</p>",
    ]
    for section, rows in sections:
        cols, cells = table_rows(rows)
        parts.append(
            f"<h2>{html.escape(section)}</h2><table><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in cols)
            + "</tr>"
        )
        parts += [
            "<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in c) + "</tr>" for c in cells
        ]
        parts.append("</table>")
    if metrics.notes:
        parts.append(
            "<h2>notes</h2><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in metrics.notes)
            + "</ul>"
        )
    parts.append("<h2>figures</h2>")
    for p in figs:
        if p.is_file():
            b64 = base64.b64encode(p.read_bytes()).decode()
            parts.append(
                f"<figure><img src='data:image/png;base64,{b64}'>"
                f"<figcaption>{html.escape(p.stem)}</figcaption></figure>"
            )
    timings = metrics.timings.stages if metrics.timings else {}
    if timings:
        parts.append(
            "<h2>timings (s)</h2><table>"
            + "".join(
                f"<tr><td>{html.escape(k)}</td><td>{v:.1f}</td></tr>" for k, v in timings.items()
            )
            + "</table>"
        )
    parts.append("</body></html>")
    tmp = run_dir / ".report.html.tmp"
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, run_dir / "report.html")
