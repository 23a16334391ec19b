"""The torchvision classifiers: depth, and initial weights from the local hub cache or a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from synthmri.core.errors import ConfigError, PluginError
from synthmri.core.interfaces import ImageSet
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.classifiers.torchvision_models import MobileNetV2, ResNet

RESNET18_FILE = "resnet18-f37072fd.pth"


@pytest.fixture(scope="module")
def phantoms() -> ImageSet:
    return make_phantoms(64, 32, seed=0)


def test_resnet_depth_from_params() -> None:
    assert ResNet({"depth": 50}).arch() == "resnet50"
    with pytest.raises(PluginError, match="depth"):
        ResNet({"depth": 19})


def _hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the torch hub cache at ``tmp_path/torch/hub``; returns its checkpoints folder."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # no earlier set_dir in the way
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert Path(torch.hub.get_dir()) / "checkpoints" == folder
    return folder


def test_imagenet_weights_from_local_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision

    folder = _hub(tmp_path, monkeypatch)
    folder.mkdir(parents=True)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(reference, folder / RESNET18_FILE)

    model = ResNet({"weights": "imagenet"})
    assert model.weights_file() == folder / RESNET18_FILE
    net = model.build_network(2, 1, pretrained=True).net
    expected_stem = reference["conv1.weight"].sum(1, keepdim=True)  # RGB kernels summed
    assert torch.allclose(net.conv1.weight, expected_stem)
    assert torch.equal(net.layer3[1].conv2.weight, reference["layer3.1.conv2.weight"])
    assert net.fc.weight.shape == (2, 512)  # a new head for the data set's classes


def test_imagenet_weights_absent_names_file_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phantoms: ImageSet
) -> None:
    folder = _hub(tmp_path, monkeypatch)
    model = ResNet({"weights": "imagenet", "epochs": 1})
    with pytest.raises(ConfigError, match=re.escape(RESNET18_FILE)) as info:
        model.fit(phantoms.subset(range(8)), None, RunContext(device="cpu"))
    assert str(folder) in info.value.message + (info.value.hint or "")
    assert not folder.exists()  # nothing was downloaded


def test_weights_path(tmp_path: Path, phantoms: ImageSet) -> None:
    import torchvision

    good = tmp_path / "mobilenet.pth"
    reference = torchvision.models.mobilenet_v2(weights=None).state_dict()
    torch.save(reference, good)
    net = MobileNetV2({"weights": str(good)}).build_network(3, 1, pretrained=True).net
    assert torch.allclose(net.features[0][0].weight, reference["features.0.0.weight"].sum(1, True))

    run = RunContext(device="cpu")
    train = phantoms.subset(range(8))
    missing = tmp_path / "absent.pth"
    with pytest.raises(ConfigError, match=r"absent\.pth"):
        ResNet({"weights": str(missing)}).fit(train, None, run)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"garbage\.pth"):
        ResNet({"weights": str(garbage)}).fit(train, None, run)
    # a resnet18 state dict does not fit resnet34
    resnet18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet18)
    with pytest.raises(ConfigError, match=r"resnet18\.pth does not fit resnet34"):
        ResNet({"weights": str(resnet18), "depth": 34}).fit(train, None, run)
