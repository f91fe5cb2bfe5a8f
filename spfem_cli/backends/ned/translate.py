"""Expression translation with the NED manipulator: whole sequences in, whole sequences out.

NED's generator sees 10-frame windows; a sequence is cut into all windows (hop 1), each window is
translated, and the outputs are overlap-added with a 10-tap Gaussian (σ = 1.85, OpenCV's default for
ksize 10), as NED's ``manipulator/test.py`` does. Deliberate deviation: the per-frame sum of weights
is divided out, so the first/last 9 frames get a proper weighted average instead of NED's copy of the
first/last window; interior frames are identical to NED (the taps sum to 1).

Targets: an emotion label (style F(z, y) with one seeded z ~ N(0, I)), a reference clip (style =
geometric median of E over the reference's windows), or an :class:`EmotionTimeline` of segments
with ramps. Intensity interpolates between the source's own style (geometric median of E over the
source) and the target style (``mode="style"``, NED's latent space), or between the source and the
translated coefficients (``mode="output"``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from spfem_cli.emotions import EMOTIONS, canonical
from spfem_cli.errors import SpfemError

SEQ_LEN = 10
NUM_COEFFS = 51
IntensityMode = Literal["style", "output"]
RampShape = Literal["linear", "smooth"]


class TranslateError(SpfemError):
    """Bad translation request (unknown emotion, empty sequence, wrong coefficient layout)."""


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ExpressionSeq:
    """Per-frame NED expression parameters.

    ``coeffs``: ``T×51`` float32; column 0 = jaw opening (FLAME jaw pose axis-angle x, radians),
    columns 1..50 = FLAME expression coefficients. ``valid``: ``T`` bool (frames without a face
    carry interpolated values and ``False``). ``fps``: the video's exact frame rate.
    """

    coeffs: np.ndarray
    fps: float = 30.0
    valid: np.ndarray = field(default=None)  # type: ignore[assignment]  # filled in __post_init__

    def __post_init__(self) -> None:
        c = np.asarray(self.coeffs, dtype=np.float32)
        if c.ndim != 2 or c.shape[1] != NUM_COEFFS:
            raise TranslateError(f"expression coefficients must be T×{NUM_COEFFS} (jaw + 50 FLAME), got {c.shape}")
        if len(c) == 0:
            raise TranslateError("empty expression sequence")
        v = np.ones(len(c), bool) if self.valid is None else np.asarray(self.valid, bool)
        if v.shape != (len(c),):
            raise TranslateError(f"valid mask must have {len(c)} entries, got {v.shape}")
        object.__setattr__(self, "coeffs", c)
        object.__setattr__(self, "valid", v)

    def __len__(self) -> int:
        return len(self.coeffs)

    @property
    def jaw(self) -> np.ndarray:
        return self.coeffs[:, 0]

    @property
    def expression(self) -> np.ndarray:
        return self.coeffs[:, 1:]

    @classmethod
    def from_deca(cls, pose: np.ndarray, exp: np.ndarray, fps: float = 30.0,
                  valid: np.ndarray | None = None) -> ExpressionSeq:
        """From DECA codes: ``pose`` T×6 (global 3 + jaw 3), ``exp`` T×50 (NED keeps pose[:, 3])."""
        return cls(np.concatenate([np.asarray(pose)[:, 3:4], np.asarray(exp)], axis=1), fps, valid)

    @classmethod
    def from_reconstruction(cls, recon) -> ExpressionSeq:
        """From the ``reconstruct`` stage's :class:`~spfem_cli.backends.ned.reconstruct.Reconstruction` (NaN where no face)."""
        return cls(recon.expression_sequence(), float(recon.fps), np.asarray(recon.valid, bool))

    def to_deca(self) -> tuple[np.ndarray, np.ndarray]:
        """Back to DECA ``pose`` (T×6, only the jaw opening set, as NED writes it) and ``exp`` (T×50)."""
        pose = np.zeros((len(self), 6), np.float32)
        pose[:, 3] = self.jaw
        return pose, self.expression.copy()


@dataclass(frozen=True)
class Segment:
    """One emotion over frames ``[start, end)``; the edit fades in/out over ``ramp`` frames."""

    start: int
    end: int
    target: str | ExpressionSeq
    intensity: float = 1.0
    ramp: int = 10
    shape: RampShape = "smooth"


@dataclass(frozen=True)
class EmotionTimeline:
    """Segments of target emotions; frames covered by no segment keep the source coefficients."""

    segments: tuple[Segment, ...]


Target = str | ExpressionSeq | EmotionTimeline


def parse_timeline(text: str, fps: float, *, ramp_s: float = 0.3, shape: RampShape = "smooth") -> EmotionTimeline:
    """Parse ``"happy@0-2.5,sad:0.6@3-6"`` (label[:intensity]@start-end, seconds) into a timeline."""
    pat = re.compile(r"^\s*([A-Za-z]+)(?::([0-9.]+))?\s*@\s*([0-9.]+)\s*-\s*([0-9.]+)\s*$")
    segments = []
    for part in text.split(","):
        m = pat.match(part)
        if not m:
            raise TranslateError(f"cannot read timeline segment '{part}'; write label[:intensity]@start-end in seconds")
        label, inten, a, b = m.groups()
        start, end = round(float(a) * fps), round(float(b) * fps)
        if end <= start:
            raise TranslateError(f"timeline segment '{part}' ends before it starts")
        segments.append(Segment(start, end, _label(label), float(inten) if inten else 1.0,
                                round(ramp_s * fps), shape))
    return EmotionTimeline(tuple(segments))



def target_from_edit(target, fps: float, reference: ExpressionSeq | None = None) -> Target:
    """Adapter for the edit pipeline's ``EditTarget`` (duck-typed: ``emotion``, ``reference``,
    ``timeline`` of segments with ``emotion``/``start``/``end`` in seconds, ``ramp`` seconds).

    A reference target needs the reference clip's coefficients (``reference``), which the NED backend
    reconstructs like the source. Intensity is not folded in: pass ``target.intensity`` to :func:`translate`.
    """
    if getattr(target, "emotion", None):
        return _label(target.emotion)
    if getattr(target, "reference", None) is not None:
        if reference is None:
            raise TranslateError("a reference target needs the reference clip's expression coefficients")
        return reference
    ramp = round(float(getattr(target, "ramp", 0.3)) * fps)
    return EmotionTimeline(tuple(Segment(round(s.start * fps), round(s.end * fps), _label(s.emotion), 1.0, ramp, "smooth")
                                 for s in target.timeline))

def _label(label: str) -> str:
    try:
        lab = canonical(label)
    except ValueError as exc:
        raise TranslateError(str(exc)) from None
    if lab not in EMOTIONS:
        raise TranslateError(f"the NED translator has no '{lab}' class; choose one of: {', '.join(EMOTIONS)}")
    return lab


# --------------------------------------------------------------------------- windows
def gaussian_taps(n: int = SEQ_LEN) -> Tensor:
    """NED's weights: OpenCV ``getGaussianKernel(n, -1)`` (nominal σ = 0.3·((n−1)/2 − 1) + 0.8 = 1.85 for
    n = 10; OpenCV's own rounding makes the taps slightly narrower, so we call it rather than re-derive)."""
    import cv2

    return torch.from_numpy(cv2.getGaussianKernel(n, -1).ravel()).float()


def sliding_windows(x: Tensor, n: int = SEQ_LEN) -> Tensor:
    """``T×C`` -> all hop-1 windows ``(T−n+1)×n×C``; shorter inputs are edge-padded to ``n`` first."""
    if len(x) < n:
        x = torch.cat([x, x[-1:].expand(n - len(x), -1)], dim=0)
    return x.unfold(0, n, 1).permute(0, 2, 1)


def overlap_add(windows: Tensor, taps: Tensor | None = None, length: int | None = None) -> Tensor:
    """Inverse of :func:`sliding_windows`: Gaussian-weighted average of every window covering a frame."""
    nwin, n, c = windows.shape
    taps = (gaussian_taps(n) if taps is None else taps).to(windows)
    total = nwin + n - 1
    acc = windows.new_zeros(total, c)
    wsum = windows.new_zeros(total, 1)
    for k in range(n):  # n strided adds instead of nwin slice adds
        acc[k:k + nwin] += windows[:, k] * taps[k]
        wsum[k:k + nwin] += taps[k]
    out = acc / wsum
    return out[:length] if length is not None else out


def geometric_median(points: Tensor | np.ndarray, *, eps: float = 1e-5, max_iter: int = 1000) -> Tensor:
    """Weiszfeld's iteration with the Vardi–Zhang step at data points (as NED's ``geometric_median``).

    Minimises Σ‖y − xᵢ‖; robust to outlier windows of the reference clip. ``N×D`` -> ``D`` (float64 inside).
    """
    x = torch.as_tensor(points).double()
    y = x.mean(0)
    for _ in range(max_iter):
        d = torch.linalg.norm(x - y, dim=1)
        nz = d > 0
        if not nz.any():
            break
        inv = 1.0 / d[nz]
        t = (inv[:, None] * x[nz]).sum(0) / inv.sum()
        n_zero = int((~nz).sum())
        if n_zero == 0:
            y1 = t
        else:
            r = torch.linalg.norm((t - y) * inv.sum())
            rinv = 0.0 if r == 0 else float(n_zero / r)
            y1 = max(0.0, 1 - rinv) * t + min(1.0, rinv) * y
        if torch.linalg.norm(y - y1) < eps:
            y = y1
            break
        y = y1
    # Weiszfeld crawls towards a median that sits on a data point; test the nearest point's optimality
    # condition (‖Σ unit vectors from the others‖ ≤ its multiplicity) and snap to it when it holds.
    k = int(torch.argmin(torch.linalg.norm(x - y, dim=1)))
    diff = x[k] - x
    dist = torch.linalg.norm(diff, dim=1)
    others = dist > 0
    if others.any():
        pull = torch.linalg.norm((diff[others] / dist[others, None]).sum(0))
        if pull <= int((~others).sum()):
            y = x[k]
    return y.float()


def envelope(length: int, seg: Segment) -> np.ndarray:
    """Per-frame weight of ``seg`` in [0, 1]: ramps up over ``ramp`` frames, holds, ramps down."""
    t = np.arange(length, dtype=np.float64)
    start, end = max(seg.start, 0), min(seg.end, length)
    w = np.zeros(length)
    if end <= start:
        return w
    ramp = min(seg.ramp, (end - start) // 2)
    if ramp <= 0:
        w[start:end] = 1.0
        return w
    up = np.clip((t - start + 1) / (ramp + 1), 0, 1)
    down = np.clip((end - t) / (ramp + 1), 0, 1)
    w = np.minimum(up, down) * ((t >= start) & (t < end))
    if seg.shape == "smooth":
        w = w * w * (3 - 2 * w)
    return w


# --------------------------------------------------------------------------- model side
_CACHE: dict[tuple[str, str], torch.nn.Module] = {}


def load_model(checkpoint: str | Path | torch.nn.Module, device: torch.device):
    """A translator from a module, a file path, or a registry name (default ``ned_translator``)."""
    from models.ned_translator import NedTranslator, load_translator

    if isinstance(checkpoint, NedTranslator):
        return checkpoint.to(device).eval()
    path = Path(checkpoint)
    if not path.is_file():
        from spfem_cli.weights import resolve

        path = resolve(str(checkpoint))
    key = (f"{path.resolve()}@{path.stat().st_mtime_ns}", str(device))  # a retrained file is reloaded
    if key not in _CACHE:
        try:
            _CACHE[key] = load_translator(path, map_location=device).to(device).eval()
        except (ValueError, KeyError, RuntimeError) as exc:
            raise TranslateError(f"cannot load translator checkpoint {path}: {exc}") from None
    return _CACHE[key]


def _finite_coeffs(seq: ExpressionSeq) -> np.ndarray:
    """Coefficients with non-finite rows (no face) linearly interpolated, so NaN never enters the LSTMs."""
    c = seq.coeffs
    ok = np.isfinite(c).all(1)
    if ok.all():
        return c
    if not ok.any():
        raise TranslateError("no frame of the expression sequence has finite coefficients")
    t = np.arange(len(c))
    return np.stack([np.interp(t, t[ok], c[ok, k]) for k in range(c.shape[1])], 1).astype(np.float32)


def _windows_of(seq: ExpressionSeq, device: torch.device) -> Tensor:
    return sliding_windows(torch.from_numpy(_finite_coeffs(seq)).to(device))


@torch.no_grad()
def encode_windows(model, windows: Tensor, batch: int = 1024) -> Tensor:
    """E over every window: ``N×10×51`` -> ``N×style``."""
    return torch.cat([model.style_encoder(windows[i:i + batch]) for i in range(0, len(windows), batch)])


@torch.no_grad()
def reference_style(model, ref: ExpressionSeq, device: torch.device) -> Tensor:
    """NED's reference-guided style: geometric median of E over all windows of the reference clip."""
    return geometric_median(encode_windows(model, _windows_of(ref, device)).cpu()).to(device)


@torch.no_grad()
def label_style(model, label: str, z: Tensor) -> Tensor:
    """NED's label-guided style F(z, y) for one z."""
    y = torch.tensor([EMOTIONS.index(_label(label))], device=z.device)
    return model.mapping_network(z[None], y)[0]


@torch.no_grad()
def _generate(model, windows: Tensor, styles: Tensor, batch: int) -> Tensor:
    return torch.cat([model.generator(windows[i:i + batch], styles[i:i + batch])
                      for i in range(0, len(windows), batch)])


@torch.no_grad()
def translate(seq: ExpressionSeq, target: Target, intensity: float = 1.0,
              checkpoint: str | Path | torch.nn.Module = "ned_translator", *, seed: int = 0,
              mode: IntensityMode = "style", device: str | torch.device = "cpu", batch: int = 512) -> ExpressionSeq:
    """Translate ``seq`` to a target emotion (label), a reference clip's style, or a timeline.

    ``intensity`` 0 = the source, 1 = the target style, >1 exaggerates (style mode). The jaw channel
    is produced by the generator (NED keeps mouth motion through its correlation loss, not by copying).
    """
    if intensity < 0 or not math.isfinite(intensity):
        raise TranslateError(f"intensity must be a finite number >= 0, got {intensity}")
    dev = torch.device(device)
    model = load_model(checkpoint, dev)
    timeline = target if isinstance(target, EmotionTimeline) else EmotionTimeline((Segment(0, len(seq), target, 1.0, 0),))
    if not timeline.segments:
        return seq
    n_frames = len(seq)
    windows = _windows_of(seq, dev)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(model.cfg.latent_dim, generator=gen).to(dev)
    s_src = geometric_median(encode_windows(model, windows, batch).cpu()).to(dev)

    styles, envs, alphas = [], [], []
    for seg in timeline.segments:
        if seg.intensity < 0:
            raise TranslateError(f"segment intensity must be >= 0, got {seg.intensity}")
        s = label_style(model, seg.target, z) if isinstance(seg.target, str) else reference_style(model, seg.target, dev)
        alpha = seg.intensity * intensity
        styles.append(s_src + alpha * (s - s_src) if mode == "style" else s)
        envs.append(envelope(n_frames, seg))
        alphas.append(alpha)
    env = torch.from_numpy(np.stack(envs)).float().to(dev)                    # K×T
    cover = env.sum(0)                                                        # T
    frame_style = (env.T @ torch.stack(styles)) / cover.clamp_min(1e-8)[:, None]  # T×style
    if mode == "style":
        mix = cover.clamp(max=1.0)
    else:
        mix = (env * torch.tensor(alphas, device=dev)[:, None]).sum(0) / cover.clamp_min(1.0)

    # per-window style: coverage-weighted mean of the frame styles inside the window
    n = SEQ_LEN
    pad = max(0, n - n_frames)
    fs = torch.cat([frame_style, frame_style[-1:].expand(pad, -1)]) if pad else frame_style
    cv = torch.cat([cover, cover.new_zeros(pad)]) if pad else cover
    win_w = cv.unfold(0, n, 1)                                           # N×n
    win_s = fs.unfold(0, n, 1).permute(0, 2, 1)                          # N×n×style
    active = win_w.sum(1) > 0
    out_windows = windows.clone()
    if active.any():
        ws = (win_w[active, :, None] * win_s[active]).sum(1) / win_w[active].sum(1, keepdim=True)
        out_windows[active] = _generate(model, windows[active], ws, batch)
    y = overlap_add(out_windows, length=n_frames)
    x = torch.from_numpy(_finite_coeffs(seq)).to(dev)
    out = x + mix[:, None] * (y - x)
    return ExpressionSeq(out.cpu().numpy(), seq.fps, seq.valid.copy())

