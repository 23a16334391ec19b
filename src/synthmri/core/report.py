"""metrics.json, results.csv, training curves, report.md and a self-contained report.html."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthmri.core.answer import Answer, answer, key_figure
from synthmri.core.artifacts import pyplot
from synthmri.core.files import OutputDir, safe_name
from synthmri.core.metrics import RESULT_SECTIONS, Metrics, brief_rows
from synthmri.core.ranking import rank_generators
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
    """Write JSON to a temp file, then rename (through the writer bound to its folder)."""
    OutputDir(path.parent).write_text(json.dumps(obj, indent=2, default=str), path.name)


def write_results_csv(metrics: dict[str, Any], path: Path) -> None:
    """Every classification and segmentation row, one line each."""
    rows = [{"task": s, **r} for s in RESULT_SECTIONS for r in metrics.get(s, [])]
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=columns or ["task"])
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()}
        )
    OutputDir(path.parent).write_text(buf.getvalue(), path.name)


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
        try:
            target = OutputDir(run_dir).save_figure(
                fig, "figures", safe_name(stage.replace("/", "-") + "-curves") + ".png", dpi=90
            )
        finally:
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
    result = answer(dumped)
    key = key_figure(dumped, result, run_dir, figs)
    captions = {p: caption_of(p) for p in figs}
    if key is not None:
        captions[key[0]] = key[1] or caption_of(key[0])
        figs = [p for p in figs if p != key[0]]
    data = metrics.data
    summary = (
        f"data ({data.layout}): {data.n_train} train / {data.n_val} val / "
        f"{data.n_test} test (real, leak-free by group); "
        f"{data.duplicate_groups} duplicate groups; classes "
        f"{', '.join(data.classes)}; total time "
        f"{metrics.timings.total_s if metrics.timings else 0:.0f} s on {metrics.device}"
    )
    sections = metrics.row_sections()
    ranking = rank_generators(dumped)
    if len(ranking) > 1:  # right after the answer: which generator is worth using
        sections.insert(0, ("generators ranked", ranking))
    page = _Page(recipe, metrics, summary, result, key, figs, captions, sections)
    OutputDir(run_dir).write_text(_markdown(page), "report.md")
    parts = _html(page)
    OutputDir(run_dir).write_text("\n".join(parts), "report.html")


def caption_of(figure: Path) -> str | None:
    """What to look for in ``figure``: the caption stored beside it by
    ``RunContext.save_figure`` (``<name>.txt``), or the one for training curves."""
    side = figure.with_suffix(".txt")
    if side.is_file():
        return side.read_text(encoding="utf-8").strip() or None
    if figure.stem.endswith("-curves"):
        if figure.stem.startswith("generate-"):
            return (
                "The generator's training values per step. Look for: losses that stay in a "
                "band rather than one network winning (loss_d near 0 with loss_g rising means "
                "the discriminator won and the generator learns nothing), and a batch "
                "diversity close to diversity_real (far below it means mode collapse)."
            )
        return (
            "Training loss and validation score per epoch. Look for: a loss that falls and "
            "settles; a validation score that stops rising is where early stopping kept the "
            "best epoch; a score that never rises means the model learned nothing useful."
        )
    return None


def _md_table(rows: list[dict[str, Any]]) -> list[str]:
    cols, cells = table_rows(rows)
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [
        "| " + " | ".join(c) + " |" for c in cells
    ]


def _html_table(rows: list[dict[str, Any]]) -> str:
    cols, cells = table_rows(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in line) + "</tr>" for line in cells
    )
    return f"<table><tr>{head}</tr>{body}</table>"


@dataclass
class _Page:
    """What both report files show, in their order."""

    recipe: Recipe
    metrics: Metrics
    summary: str
    result: Answer
    key: tuple[Path, str | None] | None
    figs: list[Path]
    captions: dict[Path, str | None]
    sections: list[tuple[str, list[dict[str, Any]]]]


def _markdown(page: _Page) -> str:
    """report.md: the answer, the key figure, the run, the tables, notes, figures."""
    recipe, metrics, result, key = page.recipe, page.metrics, page.result, page.key
    captions = page.captions
    md = [f"# {recipe.name}", ""]
    if result.sentences:
        lead = " ".join([f"**{result.sentences[0]}**", *result.sentences[1:]])
        md += [lead, "", f"*{result.scope}*", ""]
    else:
        md += ["This run has no classification or segmentation results; its tables follow.", ""]
    if key is not None:
        md += [f"![{key[0].stem}](figures/{key[0].name})", ""]
        if captions.get(key[0]):
            md += [f"*{captions[key[0]]}*", ""]
    md += [recipe.description.strip(), "", page.summary, ""]
    for section, rows in page.sections:
        shown = brief_rows(rows) if section in RESULT_SECTIONS else rows
        md += [f"## {section}", "", *_md_table(shown), ""]
    if any(s in RESULT_SECTIONS for s, _ in page.sections):
        md += ["Every column of every result: `results.csv` and `metrics.json`.", ""]
    if metrics.notes:
        md += ["## notes", ""] + [f"- {n}" for n in metrics.notes] + [""]
    md += ["## figures", ""]
    for p in page.figs:
        md += [f"![{p.stem}](figures/{p.name})", ""]
        md += [f"*{p.stem}: {captions[p]}*", ""] if captions.get(p) else []
    return "\n".join(md) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em 2em;max-width:1200px;color:#222}"
    "h1{margin:.2em 0 .4em}"
    ".answer{font-size:17px;line-height:1.45;background:#f2f6fb;border-left:5px solid #2a6ebb;"
    "padding:.6em 1em;margin:0 0 .8em;max-width:1000px}.answer p{margin:.2em 0}"
    ".scope{font-size:12px;color:#555}"
    ".key{display:flex;gap:1.2em;align-items:flex-start;margin:.4em 0 1em;max-width:1150px}"
    ".key img{max-height:430px;max-width:680px}.key figcaption{max-width:420px;font-size:13px}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}"
    "figure{display:inline-block;margin:.5em;vertical-align:top;max-width:560px}"
    "figcaption{font-size:12px;color:#444}img{max-width:100%}details{margin:0 0 1em}"
)


def _figure_html(p: Path, caption: str | None, cls: str = "") -> str:
    b64 = base64.b64encode(p.read_bytes()).decode()
    text = f"<b>{html.escape(p.stem)}</b>" + (f": {html.escape(caption)}" if caption else "")
    attr = f" class='{cls}'" if cls else ""
    return (
        f"<figure{attr}><img src='data:image/png;base64,{b64}' alt='{html.escape(p.stem)}'>"
        f"<figcaption>{text}</figcaption></figure>"
    )


def _html(page: _Page) -> list[str]:
    """report.html (figures inline): the answer and the key figure first, then the run,
    the tables (result tables short, every column folded below), notes, figures, timings."""
    recipe, metrics, result, key = page.recipe, page.metrics, page.result, page.key
    captions = page.captions
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>synthmri: {html.escape(recipe.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(recipe.name)}</h1>",
    ]
    if result.sentences:
        lead = " ".join(html.escape(s) for s in result.sentences)
        parts.append(
            f"<section class='answer' id='answer'><p>{lead}</p>"
            f"<p class='scope'>{html.escape(result.scope)}</p></section>"
        )
    else:
        parts.append(
            "<section class='answer' id='answer'><p>This run has no classification or "
            "segmentation results; its tables follow.</p></section>"
        )
    if key is not None and key[0].is_file():
        parts.append(_figure_html(key[0], captions.get(key[0]), "key"))
    parts += [
        f"<p>{html.escape(recipe.description)}</p>",
        f"<p>{html.escape(page.summary)}</p>",
    ]
    for section, rows in page.sections:
        parts.append(f"<h2>{html.escape(section)}</h2>")
        if section in RESULT_SECTIONS:
            parts.append(_html_table(brief_rows(rows)))
            parts.append(
                f"<details><summary>every column of {html.escape(section)}</summary>"
                f"{_html_table(rows)}</details>"
            )
        else:
            parts.append(_html_table(rows))
    if metrics.notes:
        parts.append(
            "<h2>notes</h2><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in metrics.notes)
            + "</ul>"
        )
    parts.append("<h2>figures</h2>")
    parts += [_figure_html(p, captions.get(p)) for p in page.figs if p.is_file()]
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
    return parts
