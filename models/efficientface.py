"""EfficientFace (zengqunzhao/EfficientFace, ``efficient_face()``): emotion features for CSIM.

State-dict compatible with ``EfficientFace_Trained_on_AffectNet7.pth.tar`` (a training checkpoint:
``{'epoch', 'state_dict', 'best_acc', 'optimizer'}`` with ``module.``-prefixed keys, saved from
``DataParallel``); :func:`load_efficientface` accepts that or a bare state dict. The 7-way classifier
``fc`` is kept so the file loads strictly, but :meth:`EfficientFace.features` stops before it: CSIM
uses the 1024-d pooled features. Input: ``B×3×224×224`` RGB, ``(x/255 − mean)/std`` with
:data:`MEAN`/:data:`STD`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

MEAN = (0.57535914, 0.44928582, 0.40079932)   # EfficientFace main.py and CDRL metrics/models.py, all digits
STD = (0.20735591, 0.18981615, 0.18132027)


def _dw(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """3×3 depthwise (groups = cin) convolution, no bias."""
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False, groups=cin)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class LocalFeatureExtractor(nn.Module):
    """Four depthwise branches, one per 28×28 quadrant of the 56×56 stem output, stitched back."""

    def __init__(self, inplanes: int = 29, planes: int = 116):
        super().__init__()
        self.relu = nn.ReLU()
        for i in range(1, 5):
            setattr(self, f"conv{i}_1", _dw(inplanes, planes, 2))
            setattr(self, f"bn{i}_1", nn.BatchNorm2d(planes))
            setattr(self, f"conv{i}_2", _dw(planes, planes, 1))
            setattr(self, f"bn{i}_2", nn.BatchNorm2d(planes))

    def _branch(self, i: int, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(x)))
        return self.relu(getattr(self, f"bn{i}_2")(getattr(self, f"conv{i}_2")(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2] // 2, x.shape[3] // 2
        top_left = self._branch(1, x[:, :, :h, :w])
        bottom_left = self._branch(2, x[:, :, h:, :w])
        top_right = self._branch(3, x[:, :, :h, w:])
        bottom_right = self._branch(4, x[:, :, h:, w:])
        left = torch.cat([top_left, bottom_left], dim=2)
        right = torch.cat([top_right, bottom_right], dim=2)
        return torch.cat([left, right], dim=3)


class InvertedResidual(nn.Module):
    """ShuffleNet-v2 unit (stride 2: two branches; stride 1: split, transform half, shuffle)."""

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        self.stride = stride
        half = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(_dw(inp, inp, stride), nn.BatchNorm2d(inp),
                                         nn.Conv2d(inp, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            _dw(half, half, stride), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class _ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = channels // reduction
        self.gate_c = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()),
            ("gate_c_fc_0", nn.Linear(channels, mid)),
            ("gate_c_bn_1", nn.BatchNorm1d(mid)),
            ("gate_c_relu_1", nn.ReLU()),
            ("gate_c_fc_final", nn.Linear(mid, channels)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.avg_pool2d(x, x.size(2), stride=x.size(2))
        return self.gate_c(pooled)[:, :, None, None].expand_as(x)


class _SpatialGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4):
        super().__init__()
        mid = channels // reduction
        layers: list[tuple[str, nn.Module]] = [
            ("gate_s_conv_reduce0", nn.Conv2d(channels, mid, 1)),
            ("gate_s_bn_reduce0", nn.BatchNorm2d(mid)),
            ("gate_s_relu_reduce0", nn.ReLU()),
        ]
        for i in range(2):
            layers += [(f"gate_s_conv_di_{i}", nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation)),
                       (f"gate_s_bn_di_{i}", nn.BatchNorm2d(mid)),
                       (f"gate_s_relu_di_{i}", nn.ReLU())]
        layers.append(("gate_s_conv_final", nn.Conv2d(mid, 1, 1)))
        self.gate_s = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_s(x).expand_as(x)


class Modulator(nn.Module):
    """Channel × spatial attention (sigmoid of the product) applied to the stage-2 features."""

    def __init__(self, channels: int):
        super().__init__()
        self.channel_att = _ChannelGate(channels)
        self.spatial_att = _SpatialGate(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.channel_att(x) * self.spatial_att(x)) * x


class EfficientFace(nn.Module):
    """EfficientFace with stages [4, 8, 4] and widths [29, 116, 232, 464, 1024]."""

    def __init__(self, num_classes: int = 7, repeats: tuple[int, int, int] = (4, 8, 4),
                 widths: tuple[int, ...] = (29, 116, 232, 464, 1024)):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                   nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = widths[0]
        for name, n, cout in zip(("stage2", "stage3", "stage4"), repeats, widths[1:4], strict=True):
            setattr(self, name, nn.Sequential(InvertedResidual(cin, cout, 2),
                                              *[InvertedResidual(cout, cout, 1) for _ in range(n - 1)]))
            cin = cout
        self.local = LocalFeatureExtractor(widths[0], widths[1])
        self.modulator = Modulator(widths[1])
        self.conv5 = nn.Sequential(nn.Conv2d(cin, widths[4], 1, 1, 0, bias=False), nn.BatchNorm2d(widths[4]),
                                   nn.ReLU(inplace=True))
        self.fc = nn.Linear(widths[4], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: B×3×224×224 RGB normalised with MEAN/STD → B×1024 pooled features (no classifier)."""
        x = self.maxpool(self.conv1(x))
        x = self.modulator(self.stage2(x)) + self.local(x)
        x = self.conv5(self.stage4(self.stage3(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (AffectNet-7 order of the checkpoint)."""
        return self.fc(self.features(x))


def load_efficientface(path: Path, map_location: str | torch.device = "cpu") -> EfficientFace:
    """Load the AffectNet-7 checkpoint (dict with 'state_dict', ``module.`` keys) or a bare state dict."""
    from models.resnet_face import load_checked, strip_prefix

    state = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    state = strip_prefix(state)
    num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 7
    return load_checked(EfficientFace(num_classes=num_classes), state).eval()
