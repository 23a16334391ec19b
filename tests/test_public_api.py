"""The public API of ``import synthmri``: every name resolves, and the import loads no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import synthmri


def test_every_public_name_resolves() -> None:
    for name in synthmri.__all__:
        assert getattr(synthmri, name) is not None, name
    assert set(synthmri.__all__) <= set(dir(synthmri))
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = synthmri.no_such_name


def test_the_gan_base_is_public() -> None:
    assert issubclass(synthmri.GAN, synthmri.Generator)
    assert issubclass(synthmri.GANParams, synthmri.StrictParams)
    assert synthmri.GAN.Params is synthmri.GANParams


def test_import_synthmri_loads_no_torch() -> None:
    code = (
        "import sys, synthmri\n"
        "for name in synthmri.__all__: getattr(synthmri, name)\n"
        "import synthmri.core.plugins, synthmri.core.registry\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", "importing synthmri or one of its names loaded torch"
