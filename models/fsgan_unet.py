"""FSGAN's face/hair segmentation U-Net (``fsgan.models.simple_unet.UNet(n_classes=3, feature_scale=1)``).

State-dict compatible with ``lfw_figaro_unet_256_2_0_segmentation_v1.pth`` (registry name
``fsgan_segmentation``), the network NED's ``preprocessing/segment_face.py`` builds as
``UNet(n_classes=3, feature_scale=1)``. The published file is an FSGAN training checkpoint: a dict with
``state_dict`` and ``arch`` (a string naming the class and its arguments; FSGAN rebuilds the model by
evaluating it, we never do) and possibly ``resolution``/``epoch``/``optimizer``/``best_loss_256``.

Layout (pytorch-semseg U-Net as FSGAN copies it): widths 64-128-256-512-1024; each block is
Conv3×3-BN-ReLU twice (``convN.conv{1,2}.{0,1}``); each decoder step upsamples ×2 bilinearly
(``align_corners=True``), maps channels with a 1×1 convolution (``up_concatN.conv1d``: FSGAN declares it as
``nn.Conv1d(in, out, kernel_size=(1, 1))``, whose weight is ``out×in×1×1`` — a 1×1 Conv2d here), concatenates
with the skip and applies Conv3×3-ReLU twice without BatchNorm (``up_concatN.conv.conv{1,2}.0``); ``final``
is a 1×1 convolution to the 3 classes.

Input: ``B×3×H×W`` float, **RGB**, normalised as FSGAN trained it: ``(x/255 − 0.5)/0.5`` ∈ [−1, 1]
(``fsgan/train_segmentation.py``: ``ToTensor`` + ``Normalize(mean=[0.5]*3, std=[0.5]*3)``, images loaded
BGR→RGB). NED feeds ``x/255`` ∈ [0, 1] without the normalisation (see ``spfem_cli.face.mask``). H and W
must be multiples of 16 (four 2×2 max-pools); the weights were trained at 256².
Output: ``B×3×H×W`` logits, classes :data:`CLASSES` = (background, face, hair); NED's face mask is
``argmax == 1``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CLASSES = ("background", "face", "hair")
FACE = CLASSES.index("face")
WIDTHS = (64, 128, 256, 512, 1024)
TRAIN_SIZE = 256


def _conv_bn_relu(cin: int, cout: int, batchnorm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, 1, 1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DoubleConv(nn.Module):
    """Two 3×3 convolutions (``conv1``, ``conv2``), each with optional BatchNorm, then ReLU."""

    def __init__(self, cin: int, cout: int, batchnorm: bool) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, cout, batchnorm)
        self.conv2 = _conv_bn_relu(cout, cout, batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UpStep(nn.Module):
    """×2 bilinear upsampling, 1×1 channel map (``conv1d``), concat with the skip, DoubleConv without BN."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = DoubleConv(cin, cout, batchnorm=False)
        self.conv1d = nn.Conv2d(cin, cout, 1)

    def forward(self, skip: torch.Tensor, below: torch.Tensor) -> torch.Tensor:
        up = self.conv1d(F.interpolate(below, scale_factor=2, mode="bilinear", align_corners=True))
        return self.conv(torch.cat([skip, up], 1))


class FSGANUNet(nn.Module):
    """FSGAN segmentation U-Net: ``B×3×H×W`` RGB in [−1, 1] → ``B×3×H×W`` logits (background, face, hair)."""

    def __init__(self, n_classes: int = len(CLASSES), in_channels: int = 3) -> None:
        super().__init__()
        w = WIDTHS
        self.conv1 = DoubleConv(in_channels, w[0], batchnorm=True)
        self.conv2 = DoubleConv(w[0], w[1], batchnorm=True)
        self.conv3 = DoubleConv(w[1], w[2], batchnorm=True)
        self.conv4 = DoubleConv(w[2], w[3], batchnorm=True)
        self.center = DoubleConv(w[3], w[4], batchnorm=True)
        self.up_concat4 = UpStep(w[4], w[3])
        self.up_concat3 = UpStep(w[3], w[2])
        self.up_concat2 = UpStep(w[2], w[1])
        self.up_concat1 = UpStep(w[1], w[0])
        self.final = nn.Conv2d(w[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"FSGANUNet needs H and W divisible by 16, got {tuple(x.shape[-2:])}")
        s1 = self.conv1(x)
        s2 = self.conv2(F.max_pool2d(s1, 2))
        s3 = self.conv3(F.max_pool2d(s2, 2))
        s4 = self.conv4(F.max_pool2d(s3, 2))
        y = self.center(F.max_pool2d(s4, 2))
        y = self.up_concat4(s4, y)
        y = self.up_concat3(s3, y)
        y = self.up_concat2(s2, y)
        y = self.up_concat1(s1, y)
        return self.final(y)

    @classmethod
    def from_registry(cls) -> FSGANUNet:
        """The gated ``fsgan_segmentation`` weight; :class:`spfem_cli.weights.WeightsError` when absent."""
        from spfem_cli.weights import resolve

        return load_fsgan_unet(resolve("fsgan_segmentation"))


def _numpy_scalar_globals() -> list:
    """Numpy scalar/dtype classes a checkpoint may hold in bookkeeping (e.g. a ``best_loss`` float64)."""
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32)]
    return [np.core.multiarray.scalar, np.dtype, *dtype_classes]


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Mapping:
    """``torch.load(weights_only=True)``; a file whose bookkeeping holds numpy scalars is retried with only
    those numpy classes allow-listed (still the restricted unpickler, never arbitrary code)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)


def load_fsgan_unet(path: Path, map_location: str | torch.device = "cpu") -> FSGANUNet:
    """Load FSGAN's checkpoint (``{'state_dict', 'arch', ...}``) or a bare state dict, strictly, in eval mode.

    Only BatchNorm ``num_batches_tracked`` counters may be absent (they do not affect inference); every other
    key and shape must match. The ``arch`` string (``…simple_unet.UNet(…)``) is checked by class name, never evaluated.
    """
    ckpt = read_checkpoint(Path(path), map_location)
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{path}: not an FSGAN checkpoint (expected a dict with 'state_dict')")
    arch = ckpt.get("arch")
    if isinstance(arch, str) and arch.split("(")[0].split(".")[-1].lower() != "unet":
        raise ValueError(f"{path}: checkpoint arch {arch!r} is not FSGAN's simple segmentation U-Net")
    state = dict(ckpt["state_dict"] if "state_dict" in ckpt else ckpt)
    model = FSGANUNet()
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    model.load_state_dict(state, strict=True)
    return model.eval()
