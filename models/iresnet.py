"""ArcFace IResNet (insightface ``arcface_torch``) as a multi-scale feature extractor for the STCCL metric.

State-dict compatible with insightface's ``backbone.pth`` (e.g. ``ms1mv3_arcface_r50_fp16``): the
same module names and shapes (stem ``conv1/bn1/prelu``; ``layer1..4`` of ``IBasicBlock`` =
BN-conv3-BN-PReLU-conv3(stride)-BN with a ``downsample`` 1×1 conv + BN on each stage's first block;
``bn2``, ``dropout``, ``fc``, ``features``). The metric only needs the four stage outputs, so the
embedding head (``bn2``/``fc``/``features``) exists only with ``head=True`` and
:func:`load_arcface_backbone` drops those keys otherwise (no unused, never-trained parameters).

Input: ``B×3×H×W`` RGB in [-1, 1] (insightface normalises ``(x/255 − 0.5)/0.5`` on RGB images).
Each stage halves the resolution: a 224² input gives 112²×64, 56²×128, 28²×256, 14²×512.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

ARCH_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
}
WIDTHS = (64, 128, 256, 512)
HEAD_PREFIXES = ("bn2.", "fc.", "features.")   # top-level keys of the embedding head


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block of ArcFace: BN → conv3 → BN → PReLU → conv3(stride) → BN."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """IResNet-18/34/50/100; ``forward`` returns the four stage feature maps (the metric's φ¹…φ⁴)."""

    def __init__(self, arch: str = "r50", *, head: bool = False, num_features: int = 512, fc_scale: int = 7 * 7,
                 dropout: float = 0.0):
        super().__init__()
        if arch not in ARCH_LAYERS:
            raise ValueError(f"unknown IResNet arch {arch!r}; choose from {sorted(ARCH_LAYERS)}")
        self.arch = arch
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (blocks, width) in enumerate(zip(ARCH_LAYERS[arch], WIDTHS, strict=True), start=1):
            downsample = nn.Sequential(nn.Conv2d(cin, width, 1, 2, bias=False), nn.BatchNorm2d(width, eps=1e-5))
            layer = [IBasicBlock(cin, width, 2, downsample)] + [IBasicBlock(width, width) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*layer))
            cin = width
        self.head = head
        if head:   # only the identity embedding uses bn2/dropout/fc/features; the metric never does
            self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
            self.dropout = nn.Dropout(p=dropout)
            self.fc = nn.Linear(512 * fc_scale, num_features)
            self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        self._init_weights()

    @property
    def channels(self) -> tuple[int, int, int, int]:
        return WIDTHS

    def _init_weights(self) -> None:
        # insightface's initialisation, used when no pretrained backbone is loaded.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """φ¹…φ⁴: outputs of layer1..layer4 for ``x`` (B×3×H×W, RGB, [-1, 1])."""
        x = self.prelu(self.bn1(self.conv1(x)))
        feats = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            feats.append(x)
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The ArcFace identity embedding (needs ``head=True`` and a 112² input)."""
        if not self.head:
            raise RuntimeError("IResNet built without the embedding head (head=False)")
        x = self.bn2(self.stages(x)[-1])
        return self.features(self.fc(self.dropout(torch.flatten(x, 1))))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.stages(x)


def clean_backbone_state(state: Mapping[str, torch.Tensor], model: IResNet) -> dict[str, torch.Tensor]:
    """Map an insightface state dict onto ``model``: strip ``module.``, drop the head when unused,
    and fill ``num_batches_tracked`` counters that some exports omit (they do not affect inference)."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if not model.head and key.startswith(HEAD_PREFIXES):
            continue
        out[key] = value
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.zeros_like(value)
    return out


def load_arcface_backbone(model: IResNet, path: Path | str) -> IResNet:
    """Load insightface ``backbone.pth`` into ``model`` with strict key/shape checking (fp16 → fp32)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    cleaned = {k: v.float() if v.is_floating_point() else v for k, v in clean_backbone_state(state, model).items()}
    model.load_state_dict(cleaned, strict=True)
    return model
