"""Run NED's neural renderer over a sequence of conditioning images (inference, streamed in chunks).

What is batched and what cannot be: frame t needs the generated frames t-2 and t-1, so the image
branch of the generator (``model_down_img`` → residual blocks → decoder, ~60 % of its FLOPs) is
strictly sequential. The conditioning branch (``model_down_seg``: NMFC + gaze + shape of frames
t-2..t, ~40 %) does not depend on earlier outputs, so it runs for a whole chunk of frames in one
batched call; instance norm is per sample, so batching changes no value (tested).

Conventions: conditioning per frame is NMFC, eye gaze, detailed shape (RGB, [0, 1]) and the face
mask ({0, 1}) → ``T×10×H×W`` float; outputs are RGB in [-1, 1] (``to_uint8`` for video). The first
two frames of a sequence use frame 0's conditioning as their missing past and black (zero) previous
outputs, as NED does (``no_first_img``); NED itself skips those two frames, we keep every frame.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from models.ned_renderer import N_FRAMES_G, NedGenerator, find_ned_file, load_ned_generator
from spfem_cli.errors import SpfemError


def pack_conditioning(nmfc: np.ndarray, gaze: np.ndarray, shape: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """uint8 ``T×H×W×3`` NMFC / gaze / shape images and ``T×H×W`` mask (0/1 or 0/255) → ``T×10×H×W`` float in [0, 1]."""
    imgs = [torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).float() / 255.0 for a in (nmfc, gaze, shape)]
    m = torch.from_numpy(np.array(mask)).float()
    m = (m > (127 if m.max() > 1 else 0.5)).float().unsqueeze(1)
    return torch.cat(imgs + [m], 1)


def temporal_windows(cond: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
    """``n×10×H×W`` (+ up to 2 earlier frames ``past``) → ``n×30×H×W`` windows [t-2, t-1, t], missing past = first frame."""
    k = N_FRAMES_G - 1
    if past is None or past.shape[0] == 0:
        past = cond[:1].expand(k, *cond.shape[1:])
    elif past.shape[0] < k:
        past = torch.cat([past[:1].expand(k - past.shape[0], *past.shape[1:]), past])
    full = torch.cat([past[-k:], cond])
    return torch.cat([full[i:i + cond.shape[0]] for i in range(N_FRAMES_G)], 1)


@torch.no_grad()
def generate(generator: NedGenerator, windows: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """Sequential generation with a batched conditioning encoder.

    ``windows``: n×30×H×W; ``prev``: 2×3×H×W generated frames before the first one (zeros at a start).
    Returns n×3×H×W in [-1, 1] on the generator's device.
    """
    cond9, mask = generator.split_conditioning(windows)
    feats = generator.encode_conditioning(cond9)
    hist = list(prev)
    outs = []
    for i in range(windows.shape[0]):
        p = torch.cat(hist[-2:], 0).unsqueeze(0).to(feats.dtype)
        out = generator.decode(feats[i:i + 1], p, mask[i:i + 1].to(feats.dtype))
        outs.append(out)
        hist.append(out[0])
    return torch.cat(outs)


class NeuralRenderer:
    """Stateful streaming wrapper: feed conditioning chunk by chunk, get generated frames back.

    ``batch_frames`` bounds how many frames' conditioning is encoded in one batched call (GPU memory).
    """

    def __init__(self, generator: NedGenerator, device: torch.device | str = "cpu", *, amp: bool = True,
                 batch_frames: int = 16) -> None:
        from spfem_cli.device import autocast_dtype

        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval()
        self.amp_dtype = autocast_dtype(self.device) if amp else None
        self.batch_frames = max(1, batch_frames)
        self.reset()

    @classmethod
    def from_dir(cls, folder: Path | str, device: torch.device | str = "cpu", **kwargs) -> NeuralRenderer:
        """Load the generator of an actor renderer folder (ours or NED's: ``latest_net_G.pth`` or ``<epoch>_net_G.pth``)."""
        path = find_ned_file(folder, "G")
        if path is None:
            raise SpfemError(f"no renderer generator at {folder}: train one with `spfem train-renderer VIDEO --out DIR` "
                             "or point --renderer at a NED actor checkpoint folder")
        try:
            generator = load_ned_generator(path)
        except Exception as exc:  # a truncated download, a D file renamed G, a foreign checkpoint
            raise SpfemError(f"{path} is not a NED renderer generator ({type(exc).__name__}: {str(exc)[:120]})") from exc
        return cls(generator, device, **kwargs)

    def reset(self) -> None:
        """Start a new sequence (a new shot): no past conditioning, black previous outputs."""
        self._past: torch.Tensor | None = None
        self._prev: torch.Tensor | None = None

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def render(self, cond: torch.Tensor) -> torch.Tensor:
        """``n×10×H×W`` conditioning ([0, 1], mask last) → ``n×3×H×W`` float32 RGB in [-1, 1] on the CPU."""
        outs = []
        for s in range(0, cond.shape[0], self.batch_frames):
            chunk = cond[s:s + self.batch_frames]
            windows = temporal_windows(chunk, self._past).to(self.device)
            if self._prev is None:
                self._prev = torch.zeros(N_FRAMES_G - 1, 3, *chunk.shape[-2:], device=self.device)
            with self._autocast():
                out = generate(self.generator, windows, self._prev)
            self._prev = torch.cat([self._prev, out.float()])[-(N_FRAMES_G - 1):]
            past = chunk if self._past is None else torch.cat([self._past, chunk])
            self._past = past[-(N_FRAMES_G - 1):]
            outs.append(out.float().cpu())
        return torch.cat(outs)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``n×3×H×W`` in [-1, 1] → ``n×H×W×3`` uint8 RGB."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()
