"""Importing the built-in model plugins loads no torch (``synthmri plugins list`` stays fast):
they import torch, and ``synthmri.nn``, inside the methods that train and predict."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "synthmri.plugins.generators.gan_base",
    "synthmri.plugins.generators.dcgan",
    "synthmri.plugins.generators.wgan_gp",
    "synthmri.plugins.generators.oneshot_gan",
    "synthmri.plugins.generators.vae",
    "synthmri.plugins.classifiers.torchvision_models",
    "synthmri.plugins.classifiers.brain_cnn",
    "synthmri.plugins.classifiers.vae_anomaly",
    "synthmri.plugins.segmenters.unet",
]


def test_model_plugin_modules_import_no_torch() -> None:
    code = (
        f"import importlib, sys; [importlib.import_module(m) for m in {MODULES!r}]; "
        "print(sorted(m for m in ('torch', 'torchvision', 'monai', 'scipy', 'sklearn', "
        "'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
