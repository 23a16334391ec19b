"""Importing the built-in plugin modules loads no heavy library (``synthmri plugins list``
stays fast): they import torch, MONAI, scipy, scikit-learn and matplotlib, and
``synthmri.nn``, inside the methods that train, predict and evaluate."""

from __future__ import annotations

import subprocess
import sys

from synthmri.core.plugins import BUILTIN_MODULES

HEAVY = ("torch", "torchvision", "monai", "scipy", "sklearn", "matplotlib")


def test_builtin_plugin_modules_import_no_heavy_library() -> None:
    code = (
        f"import importlib, sys; [importlib.import_module(m) for m in {list(BUILTIN_MODULES)!r}]; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
