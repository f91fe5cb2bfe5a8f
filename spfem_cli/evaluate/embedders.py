"""The three evaluator networks behind one small interface: face images in, feature rows out.

Preprocessing lives here, next to the network it belongs to, as CDRL's ``metrics/models.py``
``get_transforms`` does it with torchvision on PIL images (reference facts §3), reproduced with
Pillow alone:
- FAD (ArcFace ResNet-Face-18): PIL ``convert('L')``, ``Resize(164)``, ``CenterCrop(128)``,
  ``(x/255 − 0.5)/0.5``; 512-d.
- CSIM (EfficientFace AffectNet-7): RGB, ``Resize(256)``, ``CenterCrop(224)``, EfficientFace's
  mean/std (:data:`models.efficientface.MEAN`/``STD``, all 8 digits); 1024-d pooled features.
- LSE (SyncNet v2): see :mod:`spfem_cli.evaluate.lse`.
``Resize(n)`` on a PIL image: the shorter side becomes n, the other ``int(n·long/short)`` (aspect
kept), PIL bilinear (antialiased when shrinking), untouched when the shorter side already is n;
``CenterCrop`` offsets are ``int(round((size − crop)/2))``.
Missing weights raise one line that names the command to get them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spfem_cli.errors import SpfemError

FAD_WEIGHT = "arcface_resnet18_fad"
CSIM_WEIGHT = "efficientface_affectnet7"
SYNC_WEIGHT = "syncnet_v2"


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """torchvision ``Resize(size)`` (bilinear) on a PIL image."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return img
    new_long = int(size * long / short)
    return img.resize((size, new_long) if w <= h else (new_long, size), Image.BILINEAR)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``CenterCrop(size)`` of an image at least ``size`` on each side."""
    h, w = img.shape[:2]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img[top:top + size, left:left + size]


def resize_crop(face: np.ndarray, resize: int, crop: int, *, gray: bool = False) -> np.ndarray:
    """One RGB uint8 image → ``Resize(resize)`` then ``CenterCrop(crop)`` of its PIL image
    (after PIL ``convert('L')`` when ``gray``), as uint8."""
    img = Image.fromarray(np.ascontiguousarray(face))
    if gray:
        img = img.convert("L")
    return center_crop(np.asarray(resize_shorter(img, resize)), crop)


def _unit(crops: list[np.ndarray]) -> np.ndarray:
    """torchvision ``ToTensor`` scale: float32 ``x / 255``."""
    return np.stack(crops).astype(np.float32) / np.float32(255)


def fad_input(faces: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` RGB uint8 → ``N×1×128×128`` in [-1, 1]."""
    x = _unit([resize_crop(f, 164, 128, gray=True) for f in faces])
    return torch.from_numpy((x - np.float32(0.5)) / np.float32(0.5))[:, None]


def csim_input(faces: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` RGB uint8 → ``N×3×224×224`` normalised with EfficientFace's mean/std."""
    from models.efficientface import MEAN, STD

    x = (_unit([resize_crop(f, 256, 224) for f in faces]) - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@dataclass
class Embedder:
    """A network plus its preprocessing: ``embed(faces)`` → ``(N, D)`` float32."""

    model: torch.nn.Module
    kind: str                 # "fad" | "csim"
    device: torch.device = torch.device("cpu")
    batch: int = 32

    def embed(self, faces: np.ndarray) -> np.ndarray:
        prep = fad_input if self.kind == "fad" else csim_input
        fn = self.model if self.kind == "fad" else self.model.features
        out = []
        for s in range(0, len(faces), self.batch):
            x = prep(faces[s:s + self.batch]).to(self.device)
            with torch.inference_mode():
                out.append(fn(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 512 if self.kind == "fad" else 1024), np.float32)


@dataclass
class EvalModels:
    fad: Embedder
    csim: Embedder
    sync: torch.nn.Module
    device: torch.device
    identity: str = ""        # which weight files (name, size, mtime): part of the per-video cache key


def resolve_weight(name: str) -> Path:
    """Registry path, or a one-line SpfemError naming `spfem weights fetch NAME`."""
    from spfem_cli.weights import WeightsError, resolve

    try:
        return resolve(name)
    except WeightsError as exc:
        raise SpfemError(f"{exc} (or: `spfem weights fetch {name} --from FILE` for a copy you downloaded)") from None


def load_eval_models(device: torch.device | str = "cpu", *, need: tuple[str, ...] = ("fad", "csim", "sync")) -> EvalModels:
    """Load the evaluator networks from the registry (all names are checked before any is loaded)."""
    from models.efficientface import load_efficientface
    from models.resnet_face import load_resnet_face18
    from models.syncnet import load_syncnet

    device = torch.device(device)
    names = {"fad": FAD_WEIGHT, "csim": CSIM_WEIGHT, "sync": SYNC_WEIGHT}
    paths, problems = {}, []
    for key in need:
        try:
            paths[key] = resolve_weight(names[key])
        except SpfemError as exc:
            problems.append(str(exc))
    if problems:
        raise SpfemError("; ".join(problems))
    fad = load_resnet_face18(paths["fad"]).to(device) if "fad" in paths else None
    csim = load_efficientface(paths["csim"]).to(device) if "csim" in paths else None
    sync = load_syncnet(paths["sync"]).to(device) if "sync" in paths else None
    identity = ";".join(f"{k}:{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for k, p in sorted(paths.items()))
    return EvalModels(Embedder(fad, "fad", device), Embedder(csim, "csim", device), sync, device, identity)
