"""synthmri-pca: a PCA + Gaussian-mixture baseline generator for synthmri, and an evaluator.

Installing this package makes two plugins available to synthmri through the entry
point ``pca = "synthmri_pca"`` (group ``synthmri``):

- generator ``pca_gmm`` (:class:`PCAGMMGenerator`): eigenbrains + Gaussian mixture;
- evaluator ``pca_coverage`` (:class:`PCACoverageEvaluator`): precision, recall and
  novelty of synthetic images in a PCA space of the real data.
"""

from __future__ import annotations

from typing import Any

from synthmri import hookimpl

from synthmri_pca.evaluator import PCACoverageEvaluator, manifold_precision
from synthmri_pca.generator import PCAGMMGenerator

__version__ = "0.1.0"
__all__ = ["PCACoverageEvaluator", "PCAGMMGenerator", "__version__", "manifold_precision"]


@hookimpl
def synthmri_register_generators(register: Any) -> None:
    """Register the ``pca_gmm`` generator."""
    register(PCAGMMGenerator)


@hookimpl
def synthmri_register_evaluators(register: Any) -> None:
    """Register the ``pca_coverage`` evaluator."""
    register(PCACoverageEvaluator)
