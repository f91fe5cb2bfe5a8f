"""NED's face mask: FSGAN segmentation → face class → soft erosion → largest connected component.

As NED's ``preprocessing/segment_face.py``: ``argmax(logits) == 1`` (classes background, face, hair), then
``SoftErosion(kernel_size=21, threshold=0.6)`` (one pass: convolve the binary mask with a normalised cone
kernel ``max(dist) − dist`` over a 21×21 window, zero padding, keep ``≥ 0.6``), then the largest 8-connected
component (skimage ``label`` on an H×W×1 array: full connectivity). NED then warps the 0/255 mask into the
aligned frame with nearest-neighbour sampling; spfem segments the aligned frames directly. For pasting a
generated face back NED softens the *source* frame's mask once more: :func:`ned_blend_mask`.

Deliberate deviation (switchable): NED feeds the network ``x/255`` ∈ [0, 1], but FSGAN trained it on
``(x/255 − 0.5)/0.5`` ∈ [−1, 1] (``fsgan/train_segmentation.py``), and NED never calls ``eval()`` on it, so its
BatchNorm layers normalise each image (one per forward) by that image's own statistics instead of the stored
running ones. ``input_range="fsgan"`` (default) feeds what the weights expect in eval mode;
``input_range="ned"`` reproduces NED: [0, 1] input, one image per forward, BatchNorm in training mode
(:func:`ned_batchnorm`: the running statistics NED's forwards would overwrite are restored afterwards, which
changes nothing NED computes, since in training mode they are never read). NED repeats the previous frame's mask
when no face pixel survives; here such a frame gets an all-zero mask and the caller decides (see
:func:`spfem_cli.backends.ned.renderer_data.prepare_actor_data`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.fsgan_unet import FACE, TRAIN_SIZE

ERODE_KERNEL = 21      # NED segment_face.py: SoftErosion(kernel_size=21, threshold=0.6)
ERODE_THRESHOLD = 0.6
InputRange = Literal["fsgan", "ned"]


def erosion_kernel(size: int = ERODE_KERNEL) -> torch.Tensor:
    """FSGAN/NED soft-erosion kernel: ``max(dist) − dist`` from the centre, normalised to sum 1 (1×1×k×k)."""
    r = size // 2
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    dist = torch.sqrt((xx - r) ** 2 + (yy - r) ** 2)
    kernel = dist.max() - dist
    return (kernel / kernel.sum()).view(1, 1, size, size)


def cone_filter(mask: torch.Tensor, size: int) -> torch.Tensor:
    """``B×H×W`` mask convolved with the soft-erosion kernel (zero padding), as NED's ``SoftErosion``."""
    kernel = erosion_kernel(size).to(mask.device)
    return F.conv2d(mask.float().unsqueeze(1), kernel, padding=size // 2)[:, 0]


def soft_erode(mask: torch.Tensor, size: int = ERODE_KERNEL, threshold: float = ERODE_THRESHOLD) -> torch.Tensor:
    """Hard output of NED's ``SoftErosion``: ``conv(mask, cone kernel) ≥ threshold``; ``B×H×W`` bool."""
    return cone_filter(mask, size) >= threshold


def ned_blend_mask(masks: np.ndarray) -> np.ndarray:
    """NED's paste-back alpha (``postprocessing/image_blending/image_blender.py``, pyramid mode) from binary
    ``N×H×W`` face masks: ``SoftErosion(kernel_size=int(33·H/256) made odd, threshold=0.8)``, soft output —
    1 where the cone-filtered mask reaches 0.8, elsewhere the filtered value divided by its maximum there.
    Returns float32 ``N×H×W`` in [0, 1].
    """
    masks = np.asarray(masks)
    size = int(33 * masks.shape[1] / 256)
    size += 1 - size % 2
    x = cone_filter(torch.from_numpy(masks > 0), size)
    hard = x >= 0.8
    rest = torch.where(hard, torch.zeros_like(x), x).amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return torch.where(hard, torch.ones_like(x), x / rest).numpy()


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 8-connected component of a binary H×W mask (all zeros stays all zeros)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask, dtype=np.uint8)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == biggest).astype(np.uint8)


def face_mask_from_logits(logits: torch.Tensor, *, erode: int = ERODE_KERNEL,
                          threshold: float = ERODE_THRESHOLD) -> np.ndarray:
    """``B×3×H×W`` segmentation logits → ``B×H×W`` uint8 {0, 1}: face class, soft-eroded, largest component."""
    face = logits.argmax(1) == FACE
    hard = soft_erode(face, erode, threshold).cpu().numpy()
    return np.stack([largest_component(m) for m in hard]) if len(hard) else np.zeros(hard.shape, np.uint8)


def to_network_input(images: np.ndarray, device: torch.device | str, input_range: InputRange = "fsgan") -> torch.Tensor:
    """uint8 N×H×W×3 RGB → N×3×H×W float on ``device``: [−1, 1] (``fsgan``) or [0, 1] (``ned``)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
    return x * 2.0 - 1.0 if input_range == "fsgan" else x


@contextmanager
def ned_batchnorm(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in training mode, as NED runs the segmenter (BatchNorm on each forward's own statistics).

    Every module's mode and every BatchNorm buffer (running mean/var, step counter) is restored on exit, so the
    model is left exactly as it was.
    """
    modes = {m: m.training for m in model.modules()}
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None} for m in norms]
    try:
        yield model.train()
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved, strict=True):
                for k, b in buffers.items():
                    getattr(m, k).copy_(b)
        for m, training in modes.items():
            m.training = training


@torch.no_grad()
def segment_faces(images: np.ndarray, model: torch.nn.Module, device: torch.device | str, *, batch_size: int = 16,
                  input_range: InputRange = "fsgan") -> np.ndarray:
    """NED's face mask for uint8 ``N×H×W×3`` RGB images → uint8 ``N×H×W`` in {0, 1}.

    Frames whose size is not 256² are resized to 256² for the network (its training size) and the logits
    resized back (bilinear) before the argmax. A frame with no face pixel left gets an all-zero mask.
    ``input_range="ned"`` runs one frame per forward with BatchNorm in training mode, as NED does
    (``batch_size`` is ignored there: a batch would share its statistics across frames).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"segment_faces expects uint8 N×H×W×3 RGB, got {images.dtype} {images.shape}")
    n, h, w = images.shape[:3]
    out = np.zeros((n, h, w), np.uint8)
    model = model.to(device).eval()
    ned = input_range == "ned"
    step = 1 if ned else batch_size
    with ned_batchnorm(model) if ned else nullcontext(model) as net:
        for start in range(0, n, step):
            x = to_network_input(images[start:start + step], device, input_range)
            if (h, w) != (TRAIN_SIZE, TRAIN_SIZE):
                x = F.interpolate(x, size=(TRAIN_SIZE, TRAIN_SIZE), mode="bilinear", align_corners=False)
            logits = net(x).float()
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            out[start:start + len(x)] = face_mask_from_logits(logits)
    return out


def load_segmenter() -> torch.nn.Module | None:
    """FSGAN's segmentation U-Net when the gated ``fsgan_segmentation`` weight resolves, else None.

    None means "use the fallback mask" (the FLAME mesh coverage); a present but broken file still raises.
    """
    from models.fsgan_unet import FSGANUNet
    from spfem_cli.weights import WeightsError

    try:
        return FSGANUNet.from_registry()
    except WeightsError:
        return None


def resolve_segmenter(segmenter: torch.nn.Module | Literal["auto"] | None,
                      device: torch.device | str) -> torch.nn.Module | None:
    """"auto" → :func:`load_segmenter`; None → None (mesh-coverage masks); a module is used as given; on ``device``."""
    if isinstance(segmenter, str):
        if segmenter != "auto":
            raise ValueError(f"segmenter must be 'auto', None or a module, got {segmenter!r}")
        segmenter = load_segmenter()
    return segmenter.to(device).eval() if segmenter is not None else None


def mesh_or_segmentation(images: np.ndarray, mesh_mask: np.ndarray, model: torch.nn.Module | None,
                         device: torch.device | str, *, input_range: InputRange = "fsgan") -> tuple[np.ndarray, np.ndarray]:
    """The mask NED would use, falling back to ``mesh_mask`` (uint8 N×H×W) where segmentation gives nothing.

    Returns ``(mask, segmented)``: the uint8 {0, 1} masks and a bool per frame that is True where the FSGAN
    mask was used (all False when ``model`` is None).
    """
    mesh_mask = (np.asarray(mesh_mask) > 0).astype(np.uint8)
    if model is None:
        return mesh_mask, np.zeros(len(mesh_mask), bool)
    seg = segment_faces(images, model, device, input_range=input_range)
    segmented = seg.reshape(len(seg), -1).any(axis=1)
    return np.where(segmented[:, None, None], seg, mesh_mask), segmented
