"""synthmri-pca: a PCA-space coverage evaluator for synthmri, packaged as a third-party plugin.

Installing this package makes one plugin available to synthmri through the entry point
``pca = "synthmri_pca"`` (group ``synthmri``):

- evaluator ``pca_coverage`` (:class:`PCACoverageEvaluator`): precision, recall and
  novelty of synthetic images in a PCA space of the real data.

The ``pca_gmm`` generator this package used to provide is a synthmri built-in now (the
shipped ``baselines`` recipe compares every generator with it, and recipes cannot install
packages); same name, params and numbers.
"""

from __future__ import annotations

from typing import Any

from synthmri import hookimpl

from synthmri_pca.evaluator import PCACoverageEvaluator, manifold_precision

__version__ = "0.1.0"
__all__ = ["PCACoverageEvaluator", "__version__", "manifold_precision"]


@hookimpl
def synthmri_register_evaluators(register: Any) -> None:
    """Register the ``pca_coverage`` evaluator."""
    register(PCACoverageEvaluator)
