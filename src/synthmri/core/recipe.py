"""Recipes: a whole study as data.

A recipe is YAML read with ``yaml.safe_load``: names the registry resolves, no
code. ``load_recipe`` parses it, applies ``--set key.path=value`` overrides,
validates it against the schema below and every plugin's ``Params`` model, and
reports errors with the YAML path and line. ``Recipe.to_yaml()`` gives the
resolved recipe (every default and plugin param spelled out) that the run
directory keeps, so a run can be repeated exactly.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from synthmri.core.class_filter import ClassFilter
from synthmri.core.data.options import LoadOptions
from synthmri.core.errors import ConfigError, PluginError, RecipeError
from synthmri.core.interfaces import TRAIN_ON, format_validation_error
from synthmri.core.memorisation import MemorisationGuard
from synthmri.core.recipe_yaml import RecipeLoader, apply_override, yaml_load

#: the largest recipe file read
MAX_RECIPE_BYTES = 4 * 1024 * 1024
#: what ``device`` may say (``--device`` too)
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?|mps)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Strict):
    """How the real data is split; groups (patients, duplicates) never cross sides."""

    val: float = Field(0.15, ge=0.0, lt=1.0, description="fraction of groups for validation")
    test: float = Field(
        0.2, gt=0.0, lt=1.0, description="fraction of groups for the real test part"
    )
    use_layout_split: bool = Field(
        False, description="take the test part from the layout's Validation/Test folders"
    )
    train_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="keep this share of the train part's groups (by "
        "class, seeded) for everything the run trains, generators included; val and test "
        "stay whole: scarcity where the generators see only the classifier's real share",
    )

    @model_validator(mode="after")
    def _leaves_a_train_part(self) -> SplitConfig:
        if self.val + self.test >= 1.0:
            raise ValueError(
                f"val + test = {self.val + self.test:g} leaves no training data; "
                "their sum must be below 1"
            )
        return self


class DataConfig(LoadOptions):
    """The real data: built-in phantoms, or a folder of images / volumes read with the
    loader options this extends (``layout``, ``size``, ``channel``, ...)."""

    source: Literal["auto", "phantoms", "folder"] = Field(
        "auto", description="auto: a folder when `path` is set, else phantoms"
    )
    path: str | None = Field(None, description="folder of class folders, image+mask pairs or NIfTI")
    size: int = Field(64, ge=16, le=1024, description="side length in pixels after preprocessing")
    n: int = Field(600, ge=8, le=1_000_000, description="phantoms: number of slices")
    contrast: Literal["t1", "t2", "flair", "mixed"] = Field(
        "mixed", description="phantoms: t1, t2, flair or mixed"
    )
    tumor_fraction: float = Field(0.5, ge=0.0, le=1.0, description="phantoms: share with tumour")
    tumor_mask: Literal["core", "whole"] = Field(
        "core", description="phantoms: mask the tumour core, or the whole tumour (core and oedema)"
    )
    split: SplitConfig = Field(default_factory=SplitConfig)

    @model_serializer(mode="wrap")
    def _source_first(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # where the data comes from first in the resolved recipe, then the loader options
        out = handler(self)
        return {k: out[k] for k in ("source", "path") if k in out} | out

    @property
    def uses_folder(self) -> bool:
        """True when the data comes from ``path``."""
        return self.source == "folder" or (self.source == "auto" and self.path is not None)

    @model_validator(mode="after")
    def _folder_needs_path(self) -> DataConfig:
        if self.source == "folder" and not self.path:
            raise ValueError("source 'folder' needs `path` (e.g. --set data.path=/my/images)")
        if self.source == "phantoms" and self.path:
            raise ValueError(
                f"`path` ({self.path}) is set but source is 'phantoms', which would ignore it; "
                "use --set data.source=folder (or auto) to load the folder, or drop the path"
            )
        return self


class PluginEntry(_Strict):
    """A plugin by name with its params (validated through the plugin's Params)."""

    plugin: str
    name: str | None = Field(None, description="label in results; defaults to the plugin name")
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"plugin": value} if isinstance(value, str) else value

    @property
    def label(self) -> str:
        """The name used in results, file names and stage keys."""
        return self.name or self.plugin


class GeneratorEntry(PluginEntry):
    """A generator to train on the real train part."""

    per_class: bool = Field(
        True, description="one model per class; false needs a conditional generator"
    )
    classes: list[str] | None = Field(None, description="train for these classes only")
    max_train_images: int | None = Field(
        None, ge=1, description="train on a random subset of this many images per model"
    )
    # core.memorisation; a default guard is left out of dumps (generator stage keys hash them)
    memorisation: MemorisationGuard = Field(
        default_factory=MemorisationGuard, exclude_if=lambda g: g == MemorisationGuard()
    )
    class_filter: ClassFilter | None = Field(None, exclude_if=lambda f: f is None)  # sampling
    warm_start: str | None = Field(
        None,
        description="per class: train this class first and start the other classes' models "
        "from it (fine-tuning) instead of from scratch; the plugin must support it",
        exclude_if=lambda v: v is None,
    )
    negatives: str | None = Field(
        None,
        description="per class: the other classes' models also learn from this class's real "
        "train slices as negatives, images they must not make (e.g. normal for the tumour "
        "model); the plugin must support it",
        exclude_if=lambda v: v is None,
    )

    def resolve_classes(self, available: list[str]) -> list[str]:
        """The data's class names this entry trains for (``classes`` matched ignoring case;
        all of ``available`` when it gives none); an unknown class is a ConfigError."""
        if self.classes is None:
            return list(available)
        lowered = {n.lower(): n for n in available}
        chosen = []
        for c in self.classes:
            if c.lower() not in lowered:
                raise ConfigError(
                    f"generator {self.label!r}: class {c!r} not in the data "
                    f"(classes: {', '.join(available)})"
                )
            chosen.append(lowered[c.lower()])
        return chosen


class Experiment(_Strict):
    """Train models on real, synthetic or mixed data; test each on the real test part."""

    name: str | None = None
    task: Literal["classify", "segment"] = "classify"
    models: list[PluginEntry]
    train_on: list[Literal["real", "synthetic", "mixed"]] = Field(
        default_factory=lambda: list(TRAIN_ON)
    )
    real_fraction: list[float] = Field(default_factory=lambda: [1.0])
    synthetic_per_class: int = Field(200, ge=1)
    mixed_real_share: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="mixed training: repeat the real share (whole copies) until it is about "
        "this share of the set, so a small real share is not swamped by the synthetic images "
        "(0.5: about half the images drawn are real); null: the two concatenated as drawn",
        exclude_if=lambda v: v is None,
    )
    generators: list[str] | None = Field(None, description="generator names (default: all)")
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="train every model once per seed (its initialisation and, below a real "
        "fraction of 1, the share of the real train part drawn); results get a `seed` column "
        "and a `<section>_summary` section with the mean and spread over seeds",
    )

    @field_validator("real_fraction")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if not value or any(not 0.0 < f <= 1.0 for f in value):
            raise ValueError("each real_fraction must be in (0, 1]")
        return value

    def runs(self, generators: list[str]) -> list[tuple[str, str | None, float]]:
        """(train_on, generator, real_fraction) of every training run, in order: real per
        fraction, synthetic per generator, mixed per generator and fraction."""
        out: list[tuple[str, str | None, float]] = []
        for train_on in self.train_on:
            if train_on == "real":
                out += [("real", None, f) for f in self.real_fraction]
            elif train_on == "synthetic":
                out += [("synthetic", g, 0.0) for g in generators]
            else:
                out += [("mixed", g, f) for g in generators for f in self.real_fraction]
        return out


class TrackingConfig(_Strict):
    """Experiment tracking (``synthmri run --track BACKEND`` sets ``backend``); off by default.
    The run directory is written either way."""

    backend: Literal["none", "mlflow", "tensorboard"] = Field(
        "none", description="none, mlflow (extra synthmri[mlflow]) or tensorboard"
    )
    uri: str | None = Field(
        None,
        description="mlflow: the tracking URI (http://127.0.0.1:5000, sqlite:///mlflow.db, ...; "
        "default: MLFLOW_TRACKING_URI or MLflow's default); tensorboard: a log folder that "
        "gets one sub-folder per run (default: the run directory's tensorboard/)",
    )
    experiment: str | None = Field(None, description="mlflow: experiment (default: recipe name)")
    artifacts: bool = Field(True, description="mlflow: upload the run directory at the end")

    @field_validator("uri", "experiment")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (leave it out for the default)")
        return value.strip() if value is not None else None


class ExecutorConfig(_Strict):
    """How a run's independent stages are run (``synthmri run --executor/--workers`` override
    it). The results do not depend on it."""

    kind: Literal["serial", "local", "ray"] = Field(
        "serial",
        description="serial (one stage after another), local (a process pool; serial on "
        "CUDA) or ray (Ray tasks; extra synthmri[ray], RAY_ADDRESS joins a cluster)",
    )
    workers: int | None = Field(
        None, ge=1, description="local: processes (default: cores, capped by memory); "
        "ray: CPUs of a Ray started here"
    )
    cpus_per_stage: float = Field(1.0, gt=0, description="ray: CPUs each stage asks for")
    gpus_per_stage: float = Field(1.0, ge=0, description="ray on CUDA: GPUs per stage (0.5 shares)")
    max_retries: int = Field(2, ge=0, description="ray: retries of a stage whose worker died")


class Recipe(_Strict):
    """A whole study."""

    name: str
    description: str = ""
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda[:N] or mps")
    data: DataConfig = Field(default_factory=DataConfig)
    generators: list[GeneratorEntry] = Field(default_factory=list)
    experiments: list[Experiment] = Field(default_factory=list)
    evaluate: list[PluginEntry] = Field(default_factory=list)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, value):
            raise ValueError(f"unknown device {value!r}; use auto, cpu, cuda, cuda:N or mps")
        return value

    def synthetic_per_class(self) -> dict[str, int]:
        """Generator name -> the most synthetic images per class any experiment trains on
        (generators no experiment trains on are absent)."""
        need: dict[str, int] = {}
        for exp in self.experiments:
            if all(t == "real" for t in exp.train_on):
                continue
            for g in exp.generators or [entry.label for entry in self.generators]:
                need[g] = max(need.get(g, 0), exp.synthetic_per_class)
        return need

    def to_yaml(self) -> str:
        """The resolved recipe as YAML (defaults included)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ------------------------------------------------------------------ loading


def recipes_dir() -> Path:
    """The shipped recipes: ``synthmri/recipes`` inside the installed package."""
    return Path(__file__).resolve().parent.parent / "recipes"


def shipped_recipes() -> dict[str, Path]:
    """Name -> path of every shipped recipe."""
    return {p.stem: p for p in sorted(recipes_dir().glob("*.yaml"))}


def resolve_recipe_path(path_or_name: str | Path) -> Path:
    """A recipe file path, or the path of the shipped recipe of that name."""
    p = Path(path_or_name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise RecipeError(f"{p}: recipe file not found")
        return p
    shipped = shipped_recipes()
    if str(path_or_name) in shipped:
        return shipped[str(path_or_name)]
    close = difflib.get_close_matches(str(path_or_name), list(shipped), n=1)
    raise RecipeError(
        f"unknown recipe {str(path_or_name)!r}; shipped: {', '.join(shipped) or 'none'}",
        hint=f"did you mean {close[0]!r}?" if close else "give a path to a .yaml file",
    )


def load_recipe(
    path_or_name: str | Path, overrides: list[str] | None = None, *, check_plugins: bool = True
) -> Recipe:
    """Read, override, validate. Errors name the YAML path and line; exit code 2 in the CLI."""
    from synthmri.core.files import UnusableFile, read_limited

    path = resolve_recipe_path(path_or_name)
    try:
        text = read_limited(path, MAX_RECIPE_BYTES).decode("utf-8")
    except UnusableFile as exc:
        raise RecipeError(exc.message) from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: cannot read (not UTF-8 text)") from None
    return parse_recipe(text, source=str(path), overrides=overrides, check_plugins=check_plugins)


def parse_recipe(
    text: str,
    source: str = "<recipe>",
    overrides: list[str] | None = None,
    *,
    check_plugins: bool = True,
) -> Recipe:
    """Parse recipe YAML text (see ``load_recipe``)."""
    try:
        raw = yaml_load(text)
        node = yaml.compose(text, Loader=RecipeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{where}: invalid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of keys (name, data, ...)")
    overridden: dict[tuple[str, ...], str] = {}
    for item in overrides or []:
        overridden[apply_override(raw, item)] = item
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(_located(exc, node, source, overridden), hint=_hint(exc)) from None
    if check_plugins:
        check_recipe_plugins(recipe, node, source, overridden)
    return recipe


def _hint(exc: ValidationError) -> str | None:
    """A hint for YAML's booleans where a string was expected (``classes: [true]``)."""
    if any(e["type"] == "string_type" and isinstance(e.get("input"), bool) for e in exc.errors()):
        return "YAML reads true/false as booleans: quote a name that is spelled so ('true')"
    return None


def _node_at(node: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """The YAML node at a pydantic error location (the deepest that exists)."""
    best = node
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(part):
                    nxt = k if part == loc[-1] else v
                    break
            if nxt is None:
                return best
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return best
            node = node.value[part]
        else:
            continue  # pydantic adds non-path parts (union tags); skip them
        best = node
    return best


def _line(node: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    found = _node_at(node, loc)
    return f":{found.start_mark.line + 1}" if found is not None else ""


def _where(
    node: yaml.Node | None,
    loc: tuple[Any, ...],
    source: str,
    overridden: dict[tuple[str, ...], str] | None,
) -> str:
    """``file:line`` of ``loc``, or ``--set key=value`` when an override set it."""
    at = tuple(str(p) for p in loc)
    for key, item in (overridden or {}).items():
        n = min(len(key), len(at))
        if key[:n] == at[:n]:
            return f"--set {item}"
    return f"{source}{_line(node, loc)}"


def _located(
    exc: ValidationError,
    node: yaml.Node | None,
    source: str,
    overridden: dict[tuple[str, ...], str] | None = None,
) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "<root>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "extra_forbidden":
            msg += _close_key_hint(loc)
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{_where(node, loc, source, overridden)}: {path}: {msg}")
    return "\n".join(lines[:5])


def _close_key_hint(loc: tuple[Any, ...]) -> str:
    models: dict[str, type[BaseModel]] = {
        "data": DataConfig,
        "split": SplitConfig,
        "tracking": TrackingConfig,
        "generators": GeneratorEntry,
        "experiments": Experiment,
        "models": PluginEntry,
        "evaluate": PluginEntry,
    }
    model: type[BaseModel] = Recipe
    for part in loc[:-1]:
        if isinstance(part, str) and part in models:
            model = models[part]
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_recipe_plugins(
    recipe: Recipe,
    node: yaml.Node | None = None,
    source: str = "",
    overridden: dict[tuple[str, ...], str] | None = None,
) -> None:
    """Resolve every plugin name and validate its params; fill params with their defaults."""
    from synthmri.core.plugins import get_plugin

    where = source or "<recipe>"

    def at(loc: tuple[Any, ...]) -> str:
        """file:line of ``loc``, or the --set that set it."""
        return _where(node, loc, where, overridden)

    def check(kind: str, entry: PluginEntry | ClassFilter, loc: tuple[Any, ...]) -> type:
        try:
            cls = get_plugin(kind, entry.plugin)
        except PluginError as exc:
            raise RecipeError(
                f"{at((*loc, 'plugin'))}: {'.'.join(map(str, loc))}.plugin: {exc.message}",
                hint=exc.hint,
            ) from None
        try:
            params = cls.Params(**entry.params)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise RecipeError(
                f"{at((*loc, 'params', *first['loc']))}: "
                f"{format_validation_error(exc, '.'.join(map(str, (*loc, 'params'))))}",
                hint=f"`synthmri plugins show {entry.plugin}` lists its params",
            ) from None
        entry.params = params.model_dump(mode="json")
        return cls(params) if kind == "generator" else cls

    labels: dict[str, Any] = {}
    for i, gen in enumerate(recipe.generators):
        cls = check("generator", gen, ("generators", i))  # an instance: flags follow params
        if not gen.per_class and not cls.conditional:
            raise RecipeError(
                f"{at(('generators', i, 'per_class'))}: generators.{i}.per_class: "
                f"{gen.plugin!r} is not conditional, so it must be trained per class"
            )
        if gen.label in labels:
            raise RecipeError(
                f"{where}: generators.{i}: duplicate generator name {gen.label!r}",
                hint="give each entry a distinct `name`",
            )
        labels[gen.label] = cls
        for key, able in (("warm_start", cls.warm_starts), ("negatives", cls.takes_negatives)):
            if getattr(gen, key) is not None and not (gen.per_class and able):
                why = "needs per_class: true" if able else f"{gen.plugin!r} cannot do it"
                raise RecipeError(f"{at(('generators', i, key))}: generators.{i}.{key}: {why}")
        if gen.class_filter is not None:
            check("classifier", gen.class_filter, ("generators", i, "class_filter"))
    for i, exp in enumerate(recipe.experiments):
        kind = "classifier" if exp.task == "classify" else "segmenter"
        names = set()
        for j, model in enumerate(exp.models):
            check(kind, model, ("experiments", i, "models", j))
            if model.label in names:
                raise RecipeError(
                    f"{where}: experiments.{i}.models.{j}: duplicate name {model.label!r}"
                )
            names.add(model.label)
        for g in exp.generators or []:
            if g not in labels:
                raise RecipeError(
                    f"{at(('experiments', i, 'generators'))}: "
                    f"experiments.{i}.generators: unknown generator {g!r}; "
                    f"the recipe has: {', '.join(sorted(labels)) or 'none'}"
                )
        if any(t != "real" for t in exp.train_on):
            if not recipe.generators:
                raise RecipeError(
                    f"{at(('experiments', i, 'train_on'))}: "
                    f"experiments.{i}.train_on: synthetic or mixed training needs a generator"
                )
            maskless = [g for g in (exp.generators or labels) if not labels[g].emits_masks]
            if exp.task == "segment" and maskless:
                raise RecipeError(
                    f"{at(('experiments', i, 'generators'))}: "
                    f"experiments.{i}: segmentation needs generators that emit masks; "
                    f"{', '.join(maskless)} do not",
                    hint="set `emits_masks: true` in their params, or list others in `generators`",
                )
    for i, ev in enumerate(recipe.evaluate):
        check("evaluator", ev, ("evaluate", i))
