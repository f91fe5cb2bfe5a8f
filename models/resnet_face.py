"""ArcFace ResNet-Face-18 (ronghuaiyang/arcface-pytorch ``resnet_face18(use_se=False)``): the FAD embedder.

State-dict compatible with ``resnet18_110.pth``. That file was saved from a ``DataParallel`` model, so
its keys carry a ``module.`` prefix; :func:`load_resnet_face18` strips it. Input: ``B×1×128×128``
grayscale in ``[-1, 1]`` ((x/255 − 0.5)/0.5). Output: ``B×512`` embeddings (after ``bn5``).

The reference block (``IRBlock``) is kept as published, including its quirk that the first 3×3
convolution maps ``inplanes → inplanes`` and the second does the stride and the width change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IRBlock(nn.Module):
    """BN → conv3 → BN → PReLU → conv3(stride) → BN, plus the (projected) input; one shared PReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(inplanes)
        self.conv1 = _conv3x3(inplanes, inplanes)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.prelu = nn.PReLU()
        self.conv2 = _conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + residual)


class ResNetFace18(nn.Module):
    """ResNet-Face-18 without SE blocks; 128×128 input gives an 8×8×512 map flattened into ``fc5``."""

    input_size = 128

    def __init__(self) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(1, 64, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.layer1 = self._make_layer(64, 2, 1)
        self.layer2 = self._make_layer(128, 2, 2)
        self.layer3 = self._make_layer(256, 2, 2)
        self.layer4 = self._make_layer(512, 2, 2)
        self.bn4 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        self.fc5 = nn.Linear(512 * 8 * 8, 512)
        self.bn5 = nn.BatchNorm1d(512)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [IRBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [IRBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: B×1×128×128 grayscale in [-1, 1] → B×512."""
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn4(x))
        return self.bn5(self.fc5(x.flatten(1)))


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Drop a ``DataParallel`` prefix when every key has it (mixed files are left alone and fail loudly)."""
    keys = list(state)
    if keys and all(k.startswith(prefix) for k in keys):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def load_checked(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load every key strictly, except BatchNorm step counters, which files from PyTorch < 0.4.1 lack."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"{type(model).__name__} state dict mismatch: missing {missing[:5]}, "
                           f"unexpected {list(unexpected)[:5]}")
    return model


def load_resnet_face18(path: Path, map_location: str | torch.device = "cpu") -> ResNetFace18:
    """Build the network and load ``resnet18_110.pth`` (plain or ``module.``-prefixed state dict)."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    return load_checked(ResNetFace18(), strip_prefix(state)).eval()
