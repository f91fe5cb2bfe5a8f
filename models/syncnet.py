"""SyncNet v2 (joonson/syncnet_python ``SyncNetModel.S``): lip and audio towers for LSE-D / LSE-C.

Own definition with the reference's module names, so ``syncnet_v2.model`` loads by key. That file is
a whole pickled state dict (``SyncNetInstance.loadParameters`` iterates ``torch.load(path).items()``
and copies each tensor into ``net.state_dict()[name]``), written by an old PyTorch: it has no
``num_batches_tracked`` buffers, which :func:`load_syncnet` fills in; every other key must match.
The installed ``syncnet_python`` package is not imported: its ``__init__`` pulls OpenCV-contrib,
scenedetect and torchvision.

Inputs (as the reference feeds them): lip tower ``B×3×5×224×224`` BGR in 0–255 (five consecutive
frames); audio tower ``B×1×13×20`` MFCCs (13 coefficients × 20 columns at 100 Hz = 0.2 s).
Outputs: ``B×1024`` each; the sync distance is the Euclidean distance between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn


def _bn_relu(module: nn.Module, channels: int, dims: int = 2) -> list[nn.Module]:
    norm = nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)
    return [module, norm, nn.ReLU(inplace=True)]


class SyncNetV2(nn.Module):
    """Two towers; indices inside the Sequentials follow the reference so keys match."""

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_bn_relu(nn.Conv2d(1, 64, 3, 1, 1), 64),
            nn.MaxPool2d(kernel_size=1, stride=1),
            *_bn_relu(nn.Conv2d(64, 192, 3, 1, 1), 192),
            nn.MaxPool2d(kernel_size=3, stride=(1, 2)),
            *_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384),
            *_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256),
            *_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *_bn_relu(nn.Conv2d(256, 512, (5, 4), padding=0), 512),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        self.netcnnlip = nn.Sequential(
            *_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2), padding=0), 96, 3),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), 256, 3),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            *_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            *_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_bn_relu(nn.Conv3d(256, 512, (1, 6, 6), padding=0), 512, 3),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: B×1×13×20 MFCC windows → B×1024."""
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: B×3×5×224×224 BGR 0–255 → B×1024."""
        return self.netfclip(self.netcnnlip(x).flatten(1))


def load_syncnet(path: Path, map_location: str | torch.device = "cpu") -> SyncNetV2:
    """Load ``syncnet_v2.model``: every weight key must match; only BN step counters may be absent."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    from models.resnet_face import load_checked, strip_prefix

    state = strip_prefix(strip_prefix(state, "module."), "__S__.")
    return load_checked(SyncNetV2(), state).eval()
