"""The layout of ``metrics.json``, defined once: a typed model of its core keys, the result
sections, and the columns shown in short tables.

The core keys are stable (scripts read them); evaluator plugins add sections of rows
(``image_quality``, ``privacy``, ...), kept in the order they were added, between
``generators`` and ``timings``::

    recipe, synthmri_version, seed, device, data, classification, segmentation,
    generators, <plugin sections>, timings, notes
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

__all__ = [
    "BRIEF_COLUMNS",
    "MODEL_KEYS",
    "RESULT_SECTIONS",
    "DataSummary",
    "GeneratorSummary",
    "Metrics",
    "Timings",
    "brief_rows",
    "seed_summary",
]

RESULT_SECTIONS: tuple[str, ...] = ("classification", "segmentation")
MODEL_KEYS: dict[str, str] = {"classification": "classifier", "segmentation": "segmenter"}
"""The column that names the model, per result section."""
_SETTING = ("generator", "train_on", "real_fraction", "unsupervised")
_NOT_METRICS = frozenset({"seed", "n_train", "n_test", "real_fraction", "n_seeds"})
_LAST = ("timings", "notes")

BRIEF_COLUMNS: tuple[str, ...] = (
    "classifier",
    "segmenter",
    "generator",
    "train_on",
    "real_fraction",
    "n_train",
    "accuracy",
    "accuracy_ci",
    "accuracy_gain",
    "accuracy_gain_ci",
    "precision",
    "recall",
    "specificity",
    "f1",
    "f1_ci",
    "auc",
    "dice",
    "dice_ci",
    "dice_gain",
    "dice_gain_ci",
    "iou",
    "hd95",
    "correct_at_0.5",
    "n_test",
)

Rows = list[dict[str, Any]]


class DataSummary(BaseModel):
    """The real data of a run: the sizes of the three parts, what loading found."""

    n_train: int
    n_val: int
    n_test: int
    duplicate_groups: int
    layout: str
    classes: list[str]
    skipped_files: int
    class_counts: dict[str, dict[str, int]]  # part -> class -> items
    train_fraction: float = 1.0  # the share of the train part kept (data.split.train_fraction)


class GeneratorSummary(BaseModel):
    """One recipe generator entry after training (summed over its per-class models)."""

    generator: str
    plugin: str
    n_train: int
    train_seconds: float
    baseline: bool = False  # the plugin says it is a baseline (``Generator.baseline``)
    # the entry's class filter (core.class_filter), per class: n_drawn, n_accepted, acceptance
    # and real_acceptance (the share of the class's real validation images it keeps)
    class_filter: dict[str, dict[str, int | float]] | None = None


class Timings(BaseModel):
    """Wall-clock seconds: the whole run, and per stage key."""

    total_s: float
    stages: dict[str, float]


class Metrics(BaseModel):
    """``metrics.json``: the core keys typed; sections added by plugins are extra keys."""

    model_config = ConfigDict(extra="allow")

    recipe: str
    synthmri_version: str
    seed: int
    device: str
    data: DataSummary
    classification: Rows = Field(default_factory=list)
    segmentation: Rows = Field(default_factory=list)
    generators: list[GeneratorSummary] = Field(default_factory=list)
    #: the memorisation guard (``core.memorisation``): per generator and class, how close
    #: samples sit to the training images against the real validation images
    memorisation: Rows = Field(default_factory=list)
    timings: Timings | None = None  # set when the run ends
    notes: list[str] = Field(default_factory=list)

    def add_rows(self, section: str, rows: Rows) -> None:
        """Append result rows to ``section`` (a result section or a plugin's own)."""
        if section in RESULT_SECTIONS:
            getattr(self, section).extend(rows)
        elif section in type(self).model_fields:
            raise ValueError(f"{section!r} is a core key of metrics.json, not a section of rows")
        else:
            extra = self.__pydantic_extra__
            assert extra is not None
            extra.setdefault(section, []).extend(rows)

    def add_seed_summaries(self) -> None:
        """For each result section whose rows carry a ``seed`` (an experiment with several
        seeds), add ``<section>_summary``: one row per training setting over its seeds."""
        for section, model_key in MODEL_KEYS.items():
            rows = getattr(self, section)
            if any("seed" in r for r in rows):
                self.add_rows(f"{section}_summary", seed_summary(rows, model_key))

    def row_sections(self) -> list[tuple[str, Rows]]:
        """Every non-empty section of rows: the result sections, then the others in order."""
        dumped = self.model_dump()
        names = [s for s in RESULT_SECTIONS if dumped.get(s)]
        names += [
            k
            for k, v in dumped.items()
            if k not in names and isinstance(v, list) and v and all(isinstance(r, dict) for r in v)
        ]
        return [(s, dumped[s]) for s in names]

    @model_serializer(mode="wrap")
    def _ordered(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # plugin sections (extra keys) before timings and notes, as the module docstring says
        out = handler(self)
        if out.get("timings") is None:
            out.pop("timings", None)
        last = {k: out.pop(k) for k in _LAST if k in out}
        return out | last


def seed_summary(rows: Rows, model_key: str) -> Rows:
    """Rows of the same training setting (model, generator, train_on, real_fraction) over
    their seeds: ``n_seeds``; per metric the mean (``<m>``), the standard deviation
    (``<m>_sd``) and ``[min, max]`` (``<m>_range``) over seeds, and the mean of the seeds'
    intervals (``<m>_ci``: the test part's uncertainty, beside the spread over training)."""
    import numpy as np

    groups: dict[tuple[Any, ...], Rows] = {}
    for r in rows:
        key = tuple(r.get(k) for k in (model_key, *_SETTING))
        groups.setdefault(key, []).append(r)
    out = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip((model_key, *_SETTING), key, strict=True))
        if not row.get("unsupervised"):
            row.pop("unsupervised")
        row["n_seeds"] = len(members)
        row["n_train"] = round(float(np.mean([m.get("n_train", 0) for m in members])))
        row["n_test"] = members[0].get("n_test")
        for name, value in members[0].items():
            if name in _NOT_METRICS or name.endswith("_ci") or not _is_number(value):
                continue
            values = [m.get(name) for m in members]
            if not all(_is_number(v) for v in values):
                continue
            row[name] = float(np.mean(values))
            row[f"{name}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            row[f"{name}_range"] = [float(min(values)), float(max(values))]
            cis = [m.get(f"{name}_ci") for m in members]
            if all(isinstance(c, list) and None not in c for c in cis):
                row[f"{name}_ci"] = [float(np.mean([c[i] for c in cis])) for i in (0, 1)]
        out.append(row)
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def brief_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Result rows cut to the columns a terminal summary shows (``BRIEF_COLUMNS``)."""
    return [{k: r[k] for k in BRIEF_COLUMNS if k in r} for r in rows]
