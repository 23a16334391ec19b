"""EfficientNet-Lite0: shapes, TensorFlow "SAME" padding, and the same outputs as the
reference package the ImageNet weights were made for."""

from __future__ import annotations

import pytest
import torch

from synthmri.nn.efficientnet_lite import EfficientNetLite, SameConv2d


def test_same_padding_matches_tensorflow() -> None:
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 4, 4)
    # TensorFlow SAME, stride 2, even size: no padding top/left, one row/column bottom/right
    assert conv(x)[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]
    assert SameConv2d(1, 1, 5)(torch.ones(1, 1, 7, 9)).shape == (1, 1, 7, 9)


@pytest.mark.parametrize(("size", "channels"), [(32, 1), (64, 1), (48, 3)])
def test_shapes(size: int, channels: int) -> None:
    net = EfficientNetLite(num_classes=2, in_channels=channels).eval()
    x = torch.rand(2, channels, size, size)
    assert net(x).shape == (2, 2)
    assert net.features(x).shape == (
        2,
        1280,
        size // 32 + (size % 32 > 0),
        size // 32 + (size % 32 > 0),
    )
    assert sum(p.numel() for p in EfficientNetLite().parameters()) == 4_652_008


def test_same_outputs_as_the_reference_package() -> None:
    reference = pytest.importorskip(
        "efficientnet_lite_pytorch",
        reason="the reference package efficientnet-lite-pytorch is not installed (CI has it)",
    )
    torch.manual_seed(0)
    ours = EfficientNetLite(num_classes=5).eval()
    for size in (64, 224):
        theirs = reference.EfficientNet.from_name(
            "efficientnet-lite0", num_classes=5, image_size=size
        ).eval()
        theirs.load_state_dict(ours.state_dict())  # the same names: loads unchanged
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x))
