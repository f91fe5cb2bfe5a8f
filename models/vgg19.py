"""VGG19 convolutional trunk for the renderer's perceptual loss (no torchvision dependency).

Layer indices follow torchvision's ``vgg19().features`` exactly, so the standard ImageNet file
``vgg19-dcbb9e9d.pth`` (registry name ``vgg19_imagenet``) loads with its ``features.N.weight/bias``
keys; the classifier keys of that file are not needed for a perceptual loss and are skipped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# torchvision's configuration "E": channel counts, "M" = 2x2 max-pool.
VGG19_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                    512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# Exclusive end indices of the five slices used by pix2pixHD/NED: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
SLICE_ENDS: tuple[int, ...] = (2, 7, 12, 21, 30)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _make_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_ch = 3
    for item in VGG19_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = int(item)
    return nn.Sequential(*layers)


class VGG19Features(nn.Module):
    """VGG19 ``features`` trunk returning the five relu{1..5}_1 activations.

    Input: B×3×H×W RGB. ImageNet weights expect [0, 1] normalised by ImageNet mean/std; NED's loss
    feeds [-1, 1] images unnormalised (see :class:`VGGPerceptualLoss`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _make_features()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        start = 0
        for end in SLICE_ENDS:
            for idx in range(start, end):
                x = self.features[idx](x)
            outs.append(x)
            start = end
        return outs

    def load_imagenet(self, path: Path | str | None = None) -> VGG19Features:
        """Load the torchvision ImageNet file (default: the registry's ``vgg19_imagenet``)."""
        if path is None:
            from spfem_cli.weights import resolve

            path = resolve("vgg19_imagenet")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.load_state_dict(features_state(state), strict=True)
        return self


def features_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the ``features.*`` entries of a full torchvision VGG19 state dict (drops the classifier)."""
    return {k: v for k, v in state.items() if k.startswith("features.")}


class VGGPerceptualLoss(nn.Module):
    """pix2pixHD/NED perceptual loss: Σ wᵢ·L1(φᵢ(x), φᵢ(y)) with w = 1/32, 1/16, 1/8, 1/4, 1.

    NED passes the generator's [-1, 1] RGB images to VGG without ImageNet normalisation; the
    meta-renderer was trained that way, so that is the default (``imagenet_norm=False``). The VGG is
    frozen; gradients flow to ``x`` only (``y`` is the real frame).
    """

    weights = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)

    def __init__(self, vgg: VGG19Features, *, imagenet_norm: bool = False) -> None:
        super().__init__()
        self.vgg = vgg.eval().requires_grad_(False)
        self.imagenet_norm = imagenet_norm
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if not self.imagenet_norm:
            return x
        return ((x + 1) / 2 - self.mean) / self.std

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.vgg(self._prep(x))
        with torch.no_grad():
            fy = self.vgg(self._prep(y))
        loss = x.new_zeros(())
        for w, a, b in zip(self.weights, fx, fy, strict=True):
            loss = loss + w * torch.nn.functional.l1_loss(a, b)
        return loss
