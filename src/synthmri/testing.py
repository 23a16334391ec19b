"""Conformance checks plugin authors run on their plugins.

::

    from synthmri.testing import check_generator
    def test_my_generator():
        check_generator(MyGenerator)

``check_generator``, ``check_classifier`` and ``check_segmenter`` train the plugin
briefly on 32 px phantoms and assert the contract of DESIGN.md: shapes, dtype,
range, determinism for a seed, a ``state_dict`` that survives ``torch.save`` /
``torch.load(weights_only=True)``, labels honoured when conditional, masks when
the plugin says it emits them, and a clear error for bad params.

``check_evaluator`` runs an evaluator on small phantom inputs (``eval_inputs``:
real train / val / test parts, and fake synthetic sets, classification and
segmentation results for what it ``requires``), once with a run directory and
once without, and asserts that it returns ``{section: [row, ...]}`` with
JSON-serialisable rows, saves its figures inside the run directory, gives the
same rows for the same inputs and seed, copes with inputs it does not require,
and rejects bad params with a PluginError.

A plugin makes its check fast through the class attribute ``quick_params``
(e.g. ``{"iterations": 5}``), which the checks use unless ``params`` is given.
``phantom_set``, ``eval_inputs``, ``round_trip`` (a state through ``torch.save`` /
``torch.load(weights_only=True)``) and ``read_log`` (a run's ``log.jsonl``) help with a
plugin's own tests.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from synthmri.core.errors import PluginError
from synthmri.core.interfaces import (
    Classifier,
    EvalInputs,
    Evaluator,
    Generator,
    ImageSet,
    Plugin,
    Predictions,
    Segmenter,
    StrictParams,
)
from synthmri.core.training import RunContext

__all__ = [
    "EVAL_INPUTS",
    "check_classifier",
    "check_evaluator",
    "check_generator",
    "check_segmenter",
    "eval_inputs",
    "phantom_set",
    "read_log",
    "round_trip",
]

#: what an evaluator may require (``Evaluator.requires``)
EVAL_INPUTS: tuple[str, ...] = ("classification", "segmentation", "synthetic")
#: (train_on, generator, real_fraction) of the fake results of ``eval_inputs``
_FAKE_RESULTS = (("real", None, 1.0), ("real", None, 0.5), ("synthetic", "fake", 0.0),
                 ("mixed", "fake", 0.5))  # fmt: skip


def phantom_set(n: int = 16, size: int = 32, seed: int = 0) -> ImageSet:
    """A small labelled phantom set with masks (half with tumours)."""
    from synthmri.core.phantoms import make_phantoms

    return make_phantoms(n, size, seed=seed)


def _check_declaration(cls: type[Plugin], base: type[Plugin]) -> None:
    assert isinstance(cls, type) and issubclass(cls, base), f"{cls!r} must subclass {base.__name__}"
    assert isinstance(cls.name, str) and cls.name, f"{cls.__name__} needs a `name`"
    assert cls.name == cls.name.strip() and " " not in cls.name, "`name` must have no spaces"
    assert isinstance(cls.description, str) and cls.description.strip(), (
        f"{cls.__name__} needs a one-line `description`"
    )
    assert "\n" not in cls.description.strip(), "`description` must be one line"
    assert issubclass(cls.Params, BaseModel), "`Params` must be a pydantic model"
    assert (
        issubclass(cls.Params, StrictParams) or cls.Params.model_config.get("extra") == "forbid"
    ), "`Params` must forbid unknown keys (derive from synthmri.StrictParams)"
    cls.Params()  # every param has a default
    for field, spec in cls.Params.model_fields.items():
        assert spec.description or field in _documented(cls.Params), (
            f"{cls.__name__}.Params.{field} needs a description (Field(..., description=...))"
        )
    try:
        cls({"no_such_param_xyz": 1})
    except PluginError as exc:
        assert "no_such_param_xyz" in str(exc), "the error must name the bad key"
    else:
        raise AssertionError("an unknown param must raise PluginError")


def _documented(model: type[BaseModel]) -> set[str]:
    """Fields documented in the class docstring instead of Field descriptions."""
    doc = model.__doc__ or ""
    return {f for f in model.model_fields if f"{f}:" in doc or f"``{f}``" in doc}


def _params(cls: type[Plugin], params: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(params if params is not None else getattr(cls, "quick_params", {}))


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of a run directory's ``log.jsonl``, parsed (what ``RunContext.log`` wrote)."""
    text = (Path(run_dir) / "log.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def round_trip(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` after ``torch.save`` and ``torch.load(weights_only=True)``, as a checkpoint
    goes (a state with anything but tensors and plain values fails here)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _check_images(images: torch.Tensor, n: int, channels: int, size: int, what: str) -> None:
    assert isinstance(images, torch.Tensor), f"{what} must be a tensor"
    assert tuple(images.shape) == (n, channels, size, size), (
        f"{what} has shape {tuple(images.shape)}, expected {(n, channels, size, size)}"
    )
    assert images.dtype == torch.float32, f"{what} must be float32, is {images.dtype}"
    assert torch.isfinite(images).all(), f"{what} has NaN or inf"
    assert images.min() >= 0.0 and images.max() <= 1.0, f"{what} must lie in [0, 1]"


def check_generator(
    cls: type[Generator],
    params: Mapping[str, Any] | None = None,
    *,
    size: int = 32,
    n_train: int = 16,
) -> None:
    """Assert that ``cls`` honours the Generator contract (raises AssertionError if not)."""
    _check_declaration(cls, Generator)
    unknown = set(cls.sampling_params) - set(cls.Params.model_fields)
    assert not unknown, f"sampling_params names no param of {cls.__name__}: {sorted(unknown)}"
    p = _params(cls, params)
    data = phantom_set(n_train, size)
    model = cls(p)
    train = data if model.conditional else data.of_class("tumor")
    model.fit(train, RunContext(seed=0))
    n = 5
    label = 1 if model.conditional else None
    out = model.sample(n, label=label, seed=3)
    assert isinstance(out, ImageSet), "sample() must return an ImageSet"
    _check_images(out.images, n, 1, size, "sample().images")
    again = model.sample(n, label=label, seed=3)
    assert torch.equal(out.images, again.images), "sample() must be deterministic for a seed"
    if model.conditional:
        assert out.labels is not None and bool((out.labels == 1).all()), (
            "a conditional generator must return labels equal to the asked label"
        )
        other = model.sample(n, label=0, seed=3)
        assert other.labels is not None and bool((other.labels == 0).all())
    if model.emits_masks:
        assert out.masks is not None, "emits_masks generators must return masks"
        assert tuple(out.masks.shape) == (n, 1, size, size), "masks must be [N, 1, H, W]"
        assert bool(((out.masks == 0) | (out.masks == 1)).all()), "masks must be binary"
    restored = cls(p)
    restored.load_state_dict(round_trip(model.state_dict()))
    restored.to(torch.device("cpu"))  # what the pipeline does after loading a state
    same = restored.sample(n, label=label, seed=3)
    assert torch.allclose(same.images, out.images, atol=1e-5), (
        "a generator restored from state_dict (and put on the CPU) must sample the same images"
    )
    if cls.warm_starts and not model.conditional:  # another class, from this model
        warm = cls(p)
        warm.start_from(round_trip(model.state_dict()))
        warm.fit(data.of_class("normal"), RunContext(seed=1))
        _check_images(warm.sample(n, seed=3).images, n, 1, size, "a warm-started sample()")
    if cls.takes_negatives and not model.conditional:  # learns from the other class
        nda = cls(p)
        nda.use_negatives(data.of_class("normal"))
        nda.fit(train, RunContext(seed=1))
        _check_images(nda.sample(n, seed=3).images, n, 1, size, "sample() after negatives")


def _fit_supervised(
    cls: type[Plugin], base: type[Plugin], params: Mapping[str, Any] | None, size: int, n: int
) -> tuple[Any, ImageSet, ImageSet]:
    _check_declaration(cls, base)
    p = _params(cls, params)
    train = phantom_set(n, size, seed=0)
    val = phantom_set(max(8, n // 4), size, seed=1)
    model = cls(p)
    model.fit(train, val, RunContext(seed=0))
    score = model.validation_score()
    assert score is None or (isinstance(score, float) and math.isfinite(score)), (
        f"validation_score() must be None or a finite float, got {score!r}"
    )
    return model, val, p  # type: ignore[return-value]


def check_classifier(
    cls: type[Classifier],
    params: Mapping[str, Any] | None = None,
    *,
    size: int = 32,
    n_train: int = 24,
) -> None:
    """Assert that ``cls`` honours the Classifier contract (raises AssertionError if not)."""
    model, val, p = _fit_supervised(cls, Classifier, params, size, n_train)
    proba = model.predict_proba(val.images)
    n = len(val)
    assert isinstance(proba, torch.Tensor) and tuple(proba.shape) == (n, 2), (
        f"predict_proba must be [N, n_classes], got {tuple(getattr(proba, 'shape', ()))}"
    )
    assert torch.isfinite(proba).all() and proba.min() >= 0 and proba.max() <= 1
    assert torch.allclose(proba.sum(1), torch.ones(n), atol=1e-4), "probabilities must sum to 1"
    assert torch.equal(model.predict(val.images), proba.argmax(1))
    restored = cls(p)
    restored.load_state_dict(round_trip(model.state_dict()))
    assert torch.allclose(restored.predict_proba(val.images), proba, atol=1e-5), (
        "a classifier restored from state_dict must predict the same"
    )
    if cls.localises:
        masks = model.predict_masks(val.images)
        _check_images(masks, n, 1, size, "predict_masks()")
        assert torch.equal(restored.predict_masks(val.images), masks), (
            "a classifier restored from state_dict must localise the same"
        )


def check_segmenter(
    cls: type[Segmenter],
    params: Mapping[str, Any] | None = None,
    *,
    size: int = 32,
    n_train: int = 24,
) -> None:
    """Assert that ``cls`` honours the Segmenter contract (raises AssertionError if not)."""
    model, val, p = _fit_supervised(cls, Segmenter, params, size, n_train)
    pred = model.predict(val.images)
    _check_images(pred, len(val), 1, size, "predict()")
    restored = cls(p)
    restored.load_state_dict(round_trip(model.state_dict()))
    assert torch.allclose(restored.predict(val.images), pred, atol=1e-5), (
        "a segmenter restored from state_dict must predict the same"
    )


# ----------------------------------------------------------------------------- evaluators


def eval_inputs(
    requires: Iterable[str] = EVAL_INPUTS, *, size: int = 32, n: int = 24, seed: int = 0
) -> EvalInputs:
    """Small evaluator inputs: labelled phantom train (``n`` items), val and test parts with
    masks, and for each input in ``requires`` (see ``EVAL_INPUTS``) fake results:
    ``synthetic``: one synthetic set ``"fake"`` (phantoms of another seed);
    ``classification`` / ``segmentation``: results of a model ``"fake"`` trained on real
    (all and half of it), synthetic and mixed data, whose outputs are the true labels or
    masks plus seeded noise. Everything is drawn from ``seed``."""
    wanted = set(requires)
    unknown = wanted - set(EVAL_INPUTS)
    assert not unknown, f"unknown evaluator inputs {sorted(unknown)}; use {EVAL_INPUTS}"
    train = phantom_set(n, size, seed=seed)
    val = phantom_set(max(8, n // 3), size, seed=seed + 1)
    test = phantom_set(max(8, n // 2), size, seed=seed + 2)
    synthetic = {"fake": phantom_set(n, size, seed=seed + 3)} if "synthetic" in wanted else {}
    g = torch.Generator().manual_seed(seed)
    assert test.labels is not None and test.masks is not None
    predictions = []
    for task in ("classification", "segmentation"):
        if task not in wanted:
            continue
        for train_on, generator, fraction in _FAKE_RESULTS:
            if task == "classification":
                logits = torch.randn(len(test), len(test.class_names), generator=g)
                logits[torch.arange(len(test)), test.labels] += 1.5
                target, output = test.labels, logits.softmax(1)
            else:
                noise = torch.rand(test.masks.shape, generator=g)
                target, output = test.masks, (0.7 * test.masks + 0.4 * noise).clamp(0, 1)
            predictions.append(
                Predictions(
                    task="classify" if task == "classification" else "segment",
                    model="fake",
                    plugin="fake",
                    generator=generator,
                    train_on=train_on,
                    real_fraction=fraction,
                    n_train=len(train),
                    target=target,
                    output=output,
                    class_names=list(test.class_names),
                )
            )
    return EvalInputs(
        train=train, val=val, test=test, synthetic=synthetic, predictions=predictions, seed=seed
    )


def _check_sections(out: Any, name: str) -> dict[str, list[dict[str, Any]]]:
    from synthmri.core.metrics import RESULT_SECTIONS, Metrics

    assert isinstance(out, dict), f"{name}.evaluate() must return a dict, not {type(out)}"
    for section, rows in out.items():
        assert isinstance(section, str) and section, "section names must be non-empty strings"
        assert section in RESULT_SECTIONS or section not in Metrics.model_fields, (
            f"section {section!r} is a core key of metrics.json"
        )
        assert isinstance(rows, list), f"section {section!r} must be a list of row dicts"
        for row in rows:
            assert isinstance(row, dict) and all(isinstance(k, str) for k in row), (
                f"section {section!r}: every row must be a dict with string keys, got {row!r}"
            )
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AssertionError(
            f"{name}.evaluate() rows must be plain JSON values (None for NaN): {exc}"
        ) from None
    return out


def _check_bad_params(cls: type[Plugin]) -> None:
    """A value of the wrong type for any typed param must raise PluginError."""
    for field, spec in cls.Params.model_fields.items():
        if spec.annotation in (Any, object):
            continue
        try:
            cls({field: object()})
        except PluginError:
            continue
        raise AssertionError(
            f"{cls.__name__}: a bad value of param {field!r} must raise PluginError"
        )


def _evaluate(cls: type[Evaluator], params: dict[str, Any], inputs: EvalInputs, run: RunContext,
              what: str) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """``cls(params).evaluate(inputs, run)``, its output checked; nothing new in the cwd."""
    before = set(Path.cwd().iterdir())
    try:
        out = cls(params).evaluate(inputs, run)
    except Exception as exc:
        raise AssertionError(
            f"{cls.__name__}.evaluate() failed on {what}: {type(exc).__name__}: {exc}"
        ) from exc
    new = sorted(str(f) for f in set(Path.cwd().iterdir()) - before)
    assert not new, f"{cls.__name__}.evaluate() wrote into the working directory: {new}"
    return _check_sections(out, cls.__name__)


def check_evaluator(
    cls: type[Evaluator],
    params: Mapping[str, Any] | None = None,
    *,
    size: int = 32,
    n: int = 24,
) -> None:
    """Assert that ``cls`` honours the Evaluator contract (raises AssertionError if not)."""
    _check_declaration(cls, Evaluator)
    assert isinstance(cls.requires, tuple) and set(cls.requires) <= set(EVAL_INPUTS), (
        f"{cls.__name__}.requires must be a tuple of {EVAL_INPUTS}, not {cls.requires!r}"
    )
    _check_bad_params(cls)
    p = _params(cls, params)
    inputs = eval_inputs(cls.requires, size=size, n=n)
    what = f"the inputs it requires {cls.requires}"
    with tempfile.TemporaryDirectory() as tmp:
        run = RunContext(tmp, seed=0)
        out = _evaluate(cls, p, inputs, run, what + " (with a run directory)")
        root = Path(tmp).resolve()
        for figure in run.figures:
            assert Path(figure).resolve().is_relative_to(root) and Path(figure).is_file(), (
                f"figure {figure} must be saved in the run directory (run.save_figure)"
            )
    again = _evaluate(cls, p, inputs, RunContext(seed=0), what + " (without a run directory)")
    assert again == out, (
        f"{cls.__name__}.evaluate() must give the same rows for the same inputs and seed, "
        "with or without a run directory"
    )
    everything = eval_inputs(EVAL_INPUTS, size=size, n=n)
    _evaluate(cls, p, everything, RunContext(seed=0), f"all inputs {EVAL_INPUTS}")
