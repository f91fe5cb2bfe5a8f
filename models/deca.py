"""DECA encoders and detail decoder (Feng et al. 2021), state-dict compatible with ``deca_model.tar``.

``deca_model.tar`` is a torch file holding three state dicts: ``E_flame`` (coarse encoder: ResNet-50 +
Linear(2048,1024)-ReLU-Linear(1024,236)), ``E_detail`` (the same with 128 outputs) and ``D_detail`` (a
DCGAN-style generator from 128 detail + 50 expression + 3 jaw values to a 256² UV displacement map, scaled
by max_z = 0.01). Key names follow DECA's modules: ``encoder.<resnet>``, ``layers.{0,2}``, ``l1.0``,
``conv_blocks.<i>``. Note DECA's ``BatchNorm2d(c, 0.8)``: the 0.8 is ``eps`` (a DCGAN quirk kept as is).

Input images: RGB, B×3×224×224, float in [0, 1], the crop of :func:`crop_transform`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

CROP_SIZE = 224
CROP_SCALE = 1.25
PARAM_SIZES = {"shape": 100, "tex": 50, "exp": 50, "pose": 6, "cam": 3, "light": 27}
N_PARAMS = sum(PARAM_SIZES.values())  # 236
N_DETAIL = 128
MAX_Z = 0.01


class Bottleneck(nn.Module):
    """torchvision-style ResNet bottleneck (expansion 4), the key layout DECA's ResNet uses."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """ResNet-50 without the classifier; returns the 2048-d globally pooled feature.

    DECA pools with ``AvgPool2d(7)`` which equals global pooling at its 224² input; global pooling here
    keeps small test inputs usable.
    """

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


class ResnetEncoder(nn.Module):
    """DECA's ``ResnetEncoder``: ResNet-50 feature → Linear(2048,1024)-ReLU-Linear(1024,outsize)."""

    def __init__(self, outsize: int) -> None:
        super().__init__()
        self.encoder = ResNet50()
        self.layers = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, outsize))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encoder(images))


class DetailGenerator(nn.Module):
    """DECA's detail decoder ``D_detail``: latent (detail 128 + exp 50 + jaw 3) → B×1×256×256 displacement."""

    def __init__(self, latent_dim: int = N_DETAIL + PARAM_SIZES["exp"] + 3, out_scale: float = MAX_Z) -> None:
        super().__init__()
        self.out_scale = out_scale
        self.l1 = nn.Sequential(nn.Linear(latent_dim, 128 * 8 * 8))

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(cin, cout, 3, padding=1),
                    nn.BatchNorm2d(cout, 0.8), nn.LeakyReLU(0.2, inplace=True)]

        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(128), *up(128, 128), *up(128, 64), *up(64, 64), *up(64, 32), *up(32, 16),
            nn.Conv2d(16, 1, 3, padding=1), nn.Tanh())

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.l1(latent).view(latent.shape[0], 128, 8, 8)
        return self.conv_blocks(x) * self.out_scale


@dataclass
class DecaCodes:
    """Per-image DECA codes. pose: global 3 + jaw 3 axis-angle; cam: orthographic (s, tx, ty); light: B×9×3 SH."""

    shape: torch.Tensor
    tex: torch.Tensor
    exp: torch.Tensor
    pose: torch.Tensor
    cam: torch.Tensor
    light: torch.Tensor
    detail: torch.Tensor

    def flat(self) -> torch.Tensor:
        """B×(236+128) in DECA's parameter order followed by the detail code (for caching)."""
        return torch.cat([self.shape, self.tex, self.exp, self.pose, self.cam,
                          self.light.reshape(self.light.shape[0], -1), self.detail], dim=1)

    @classmethod
    def from_flat(cls, flat: torch.Tensor) -> DecaCodes:
        parts = dict(zip([*PARAM_SIZES, "detail"], torch.split(flat, [*PARAM_SIZES.values(), N_DETAIL], dim=1),
                         strict=True))
        parts["light"] = parts["light"].reshape(-1, 9, 3)
        return cls(**parts)


class DECA(nn.Module):
    """The three trained parts of DECA; FLAME and rendering live in :mod:`models.flame` / :mod:`models.raster`."""

    def __init__(self) -> None:
        super().__init__()
        self.E_flame = ResnetEncoder(N_PARAMS)
        self.E_detail = ResnetEncoder(N_DETAIL)
        self.D_detail = DetailGenerator()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> DecaCodes:
        """images: B×3×224×224 RGB in [0, 1] (DECA crops)."""
        params = self.E_flame(images)
        parts = dict(zip(PARAM_SIZES, torch.split(params, list(PARAM_SIZES.values()), dim=1), strict=True))
        parts["light"] = parts["light"].reshape(-1, 9, 3)
        return DecaCodes(**parts, detail=self.E_detail(images))

    @torch.no_grad()
    def displacement(self, codes: DecaCodes) -> torch.Tensor:
        """UV displacement map B×1×256×256 from (jaw pose, expression, detail code), as DECA orders them."""
        return self.D_detail(torch.cat([codes.pose[:, 3:], codes.exp, codes.detail], dim=1))

    def load_checkpoint(self, path: Path | str) -> DECA:
        """Load ``deca_model.tar`` (torch file with E_flame / E_detail / D_detail) strictly."""
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        for part in ("E_flame", "E_detail", "D_detail"):
            if part not in ckpt:
                raise KeyError(f"{path}: no '{part}' state dict (keys: {sorted(ckpt)[:8]})")
            module = getattr(self, part)
            state = dict(ckpt[part])
            for key, value in module.state_dict().items():  # files saved before torch 0.4.1 lack these
                if key.endswith("num_batches_tracked") and key not in state:
                    state[key] = value
            module.load_state_dict(state, strict=True)
        return self.eval()

    @classmethod
    def from_registry(cls) -> DECA:
        from spfem_cli.weights import resolve

        return cls().load_checkpoint(resolve("deca_model"))


def crop_transform(landmarks: np.ndarray, *, size: int = CROP_SIZE, scale: float = CROP_SCALE) -> np.ndarray:
    """DECA's crop from 68 landmarks as a 2×3 image → crop similarity.

    DECA (``TestData.bbox2point``, type 'kpt68' — what its FAN detector returns): box of the landmarks,
    old_size = (w + h) / 2 · 1.1, centre = box centre (no vertical shift; the +0.12·size shift is only for
    detector boxes), side = int(old_size · 1.25), mapped onto [0, size−1]².
    """
    lm = np.asarray(landmarks, np.float64)
    left, top = lm.min(0)
    right, bottom = lm.max(0)
    old_size = (right - left + bottom - top) / 2 * 1.1
    cx, cy = right - (right - left) / 2.0, bottom - (bottom - top) / 2.0
    side = int(old_size * scale)
    s = (size - 1) / side
    return np.array([[s, 0.0, -s * (cx - side / 2)], [0.0, s, -s * (cy - side / 2)]])
