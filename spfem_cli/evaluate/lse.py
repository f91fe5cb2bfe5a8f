"""LSE-D / LSE-C (lip-sync error distance and confidence) with SyncNet, in-process.

Procedure of ``SyncNetInstance.evaluate`` (joonson/syncnet_python): 5-frame video windows against
20-column MFCC windows (4 MFCC columns per video frame), embeddings from the lip and audio towers,
Euclidean distances between video window *i* and audio windows *i−vshift … i+vshift* (audio features
zero-padded at both ends, as the reference does), ``mdist`` = mean over windows per offset,
**LSE-D = min(mdist)**, **LSE-C = median(mdist) − min(mdist)**, **AV offset = vshift − argmin**.
The window count is each reference's own (:meth:`LsePreset.window_count`), last full window unused:
joonson/Wav2Lip ``min(frames, floor(samples/640)) − 5``; CDRL ``min(frames − 5, floor(cols/4) − 5)``.

Sign of the offset (SyncNet convention): a clip whose sound comes *k* frames after the matching lip
motion reports ``−k``.

Two presets (reference facts §3):

- ``spfem-ned`` = CDRL's ``metrics/lse_*.py --skip_frame 2`` (the published SPFEM LSE-D): 30 fps,
  MFCC step 1/120 s, vshift 10, the first 2 frames skipped and ``(16000//30)·2 = 1066`` audio
  samples cut before the MFCC, float audio in [−1, 1] as ``librosa.load`` gives it (no int16 scale),
  256² aligned faces trimmed 35 px per side and resized to 224;
- ``wav2lip`` = joonson/syncnet_python ``SyncNetInstance.evaluate`` as Wav2Lip's ``scores_LSE`` run
  it: 25 fps, 10 ms step, vshift 15, 16-bit WAV sample scale, 224² crops of 1.4× the face box.

Audio is the mean of the channels (ffmpeg ``-ac 1`` to s16 and ``librosa.load(mono=True)`` both give
0.5·(L+R)); :func:`spfem_cli.video.read_audio` reads it so. Frames are BGR 0–255 for the lip
tower, as the reference reads them with OpenCV. No ffmpeg subprocess, no frames on disk: a video at
another rate is resampled by frame selection (source frame ``floor(j·src/dst)`` for output frame j).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, Protocol

import cv2
import numpy as np
import torch

from spfem_cli.evaluate.mfcc import int16_scale, mfcc

VIDEO_WINDOW = 5
MFCC_WINDOW = 20
COLS_PER_FRAME = 4
AUDIO_RATE = 16000
LIP_SIZE = 224


@dataclass(frozen=True)
class LsePreset:
    name: str
    fps: Fraction
    mfcc_step: float          # seconds between MFCC columns
    vshift: int               # offsets searched: −vshift … +vshift frames
    skip_frames: int          # leading frames (and their audio) ignored
    crop: Literal["aligned", "box"]
    trim: int = 0             # px per side removed from a 256² aligned face before resizing to 224
    int16_audio: bool = False  # MFCC of 16-bit WAV samples (joonson) or of float audio in [-1, 1] (CDRL)
    windows: Literal["joonson", "cdrl"] = "joonson"   # whose window-count formula

    @property
    def n_offsets(self) -> int:
        return 2 * self.vshift + 1

    @property
    def audio_skip(self) -> int:
        """Samples cut before the MFCC: CDRL's ``(16000 // fps) · skip_frame``."""
        return AUDIO_RATE // int(self.fps) * self.skip_frames

    def window_count(self, n_frames: int, n_samples: int, n_cols: int) -> int:
        """Windows the reference scores, from the frames after the skip and the audio after the cut.

        joonson: ``min(frames, floor(samples · fps / 16000)) − 5`` (``floor(len/640)`` at 25 fps);
        CDRL: ``min(frames − 5, floor(cols / 4) − 5)``. Never negative.
        """
        if self.windows == "cdrl":
            n = min(n_frames - VIDEO_WINDOW, n_cols // COLS_PER_FRAME - VIDEO_WINDOW)
        else:
            by_audio = n_samples * self.fps.numerator // (AUDIO_RATE * self.fps.denominator)
            n = min(n_frames, by_audio) - VIDEO_WINDOW
        return max(0, n)


PRESETS: dict[str, LsePreset] = {
    "spfem-ned": LsePreset("spfem-ned", Fraction(30), 1 / 120, 10, 2, "aligned", 35, False, "cdrl"),
    "wav2lip": LsePreset("wav2lip", Fraction(25), 0.01, 15, 0, "box", 0, True, "joonson"),
}


class SyncModel(Protocol):
    """What LSE needs from SyncNet: the two towers (see :class:`models.syncnet.SyncNetV2`)."""

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class LseResult:
    lse_d: float
    lse_c: float
    offset: int
    n_windows: int
    mdist: list[float] = field(default_factory=list)   # mean distance per offset, index 0 = −vshift side

    def as_dict(self) -> dict[str, float | int]:
        return {"lse_d": self.lse_d, "lse_c": self.lse_c, "av_offset": self.offset, "n_windows": self.n_windows}


def get_preset(name: str) -> LsePreset:
    if name not in PRESETS:
        raise ValueError(f"unknown LSE preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def audio_features(audio: np.ndarray, preset: LsePreset, rate: int = AUDIO_RATE) -> np.ndarray:
    """``(13, C)`` MFCC columns of mono float audio in [-1, 1] at ``rate``: the preset's first
    :attr:`~LsePreset.audio_skip` samples cut, the rest as 16-bit samples or as floats (preset)."""
    if rate != AUDIO_RATE:
        raise ValueError(f"LSE expects {AUDIO_RATE} Hz audio, got {rate}")
    kept = np.asarray(audio, np.float64)[preset.audio_skip:]
    if len(kept) == 0:
        return np.zeros((13, 0))
    return mfcc(int16_scale(kept) if preset.int16_audio else kept, rate, winstep=preset.mfcc_step).T


def lip_crop(face: np.ndarray, preset: LsePreset) -> np.ndarray:
    """One RGB face image → 224² BGR uint8 input of the lip tower.

    ``aligned``: the aligned face (256², or any size, trimmed in proportion) minus ``trim`` px per
    side; ``box``: an already cut 1.4×-box crop (see :func:`box_crop`), only resized.
    """
    if preset.crop == "aligned" and preset.trim:
        size = face.shape[0]
        t = int(round(preset.trim * size / 256))
        face = face[t:size - t, t:face.shape[1] - t]
    if face.shape[:2] != (LIP_SIZE, LIP_SIZE):
        face = cv2.resize(face, (LIP_SIZE, LIP_SIZE), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(face[..., ::-1])


def box_crop(frame: np.ndarray, box: np.ndarray, scale: float = 0.4, pad_value: int = 110) -> np.ndarray:
    """syncnet_python's face crop: half-size ``bs`` = max box side / 2, width 2·bs·(1+scale) around the
    centre, height from ``cy − bs`` to ``cy + bs·(1+2·scale)``, padded with grey 110 at the borders."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    bs = max(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    pad = int(bs * (1 + 2 * scale)) + 1
    padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    cx, cy = cx + pad, cy + pad
    top, bottom = int(cy - bs), int(cy + bs * (1 + 2 * scale))
    left, right = int(cx - bs * (1 + scale)), int(cx + bs * (1 + scale))
    return padded[max(top, 0):bottom, max(left, 0):right]


def resample_counts(start: int, n: int, src_fps: Fraction, dst_fps: Fraction) -> np.ndarray:
    """How often each source frame ``start … start+n−1`` appears at ``dst_fps`` (0 = dropped)."""
    if src_fps == dst_fps:
        return np.ones(n, int)
    ratio = Fraction(dst_fps) / Fraction(src_fps)
    idx = np.arange(start, start + n + 1)
    firsts = np.array([-(-(int(i) * ratio.numerator) // ratio.denominator) for i in idx])   # ceil(i·dst/src)
    return np.diff(firsts)


class LipEmbedder:
    """Streams 224² BGR crops through the lip tower, window by window, keeping only 4 frames of carry."""

    def __init__(self, model: SyncModel, *, device: torch.device | str = "cpu", batch: int = 16):
        self.model, self.device, self.batch = model, torch.device(device), batch
        self._carry = np.zeros((0, LIP_SIZE, LIP_SIZE, 3), np.uint8)
        self._out: list[np.ndarray] = []
        self.frames = 0

    def add(self, crops: np.ndarray) -> None:
        """Append ``(N, 224, 224, 3)`` uint8 BGR crops (at the preset's frame rate)."""
        if len(crops) == 0:
            return
        self.frames += len(crops)
        buf = np.concatenate([self._carry, crops])
        n_win = len(buf) - VIDEO_WINDOW + 1
        for s in range(0, max(n_win, 0), self.batch):
            idx = np.arange(s, min(s + self.batch, n_win))[:, None] + np.arange(VIDEO_WINDOW)[None]
            x = torch.from_numpy(buf[idx]).to(self.device, torch.float32)      # B,5,H,W,3
            with torch.inference_mode():
                emb = self.model.forward_lip(x.permute(0, 4, 1, 2, 3).contiguous())
            self._out.append(emb.float().cpu().numpy())
        self._carry = buf[-(VIDEO_WINDOW - 1):] if len(buf) >= VIDEO_WINDOW - 1 else buf

    def result(self) -> np.ndarray:
        """``(frames − 4, D)`` embeddings, one per 5-frame window."""
        return np.concatenate(self._out) if self._out else np.zeros((0, 1), np.float32)


def audio_embeddings(model: SyncModel, cols: np.ndarray, n_windows: int, *, device: torch.device | str = "cpu",
                     batch: int = 64) -> np.ndarray:
    """``(n_windows, D)``: window *i* = MFCC columns ``4i … 4i+19``."""
    out = []
    for s in range(0, n_windows, batch):
        idx = COLS_PER_FRAME * np.arange(s, min(s + batch, n_windows))[:, None] + np.arange(MFCC_WINDOW)[None]
        x = torch.from_numpy(cols[:, idx].transpose(1, 0, 2)[:, None].astype(np.float32)).to(device)  # B,1,13,20
        with torch.inference_mode():
            out.append(model.forward_aud(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def sync_distances(lip: np.ndarray, aud: np.ndarray, vshift: int) -> np.ndarray:
    """``(n, 2·vshift+1)`` distances of video window i to audio windows i−vshift … i+vshift (zero-padded)."""
    n = len(lip)
    padded = np.concatenate([np.zeros((vshift, aud.shape[1])), aud[:n], np.zeros((vshift, aud.shape[1]))])
    idx = np.arange(n)[:, None] + np.arange(2 * vshift + 1)[None]
    # torch.pairwise_distance adds eps=1e-6 to the difference; kept for parity with the reference.
    return np.linalg.norm(lip[:, None, :] - padded[idx] + 1e-6, axis=-1)


def lse_from_embeddings(lip: np.ndarray, aud: np.ndarray, vshift: int) -> LseResult:
    """LSE-D, LSE-C and the AV offset from per-window embeddings of equal count."""
    n = min(len(lip), len(aud))
    if n == 0:
        raise ValueError("no complete 5-frame window: the clip is too short for LSE")
    mdist = sync_distances(lip[:n], aud[:n], vshift).mean(axis=0)
    arg = int(np.argmin(mdist))
    return LseResult(float(mdist[arg]), float(np.median(mdist) - mdist[arg]), vshift - arg, n, mdist.tolist())


def score(model: SyncModel, lips: LipEmbedder, audio: np.ndarray, preset: LsePreset, *, rate: int = AUDIO_RATE,
          device: torch.device | str = "cpu") -> LseResult | None:
    """LSE from streamed lip windows (frames after the skip) and the clip's whole mono audio;
    ``None`` when the reference would score no window."""
    cols = audio_features(audio, preset, rate)
    n = preset.window_count(lips.frames, max(0, len(audio) - preset.audio_skip), cols.shape[1])
    if n <= 0:
        return None
    aud = audio_embeddings(model, cols, n, device=device)
    return lse_from_embeddings(lips.result()[:n], aud, preset.vshift)


def lse(model: SyncModel, crops: Iterable[np.ndarray], audio: np.ndarray, preset: LsePreset | str, *,
        rate: int = AUDIO_RATE, device: torch.device | str = "cpu", batch: int = 16) -> LseResult:
    """LSE of a clip: ``crops`` yields chunks of 224² BGR lip-tower inputs at the preset frame rate,
    starting at frame 0 (the preset's skip is applied here); ``audio`` is mono float in [-1, 1]."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    lips = LipEmbedder(model, device=device, batch=batch)
    for chunk in _skip(crops, preset.skip_frames):
        lips.add(chunk)
    result = score(model, lips, audio, preset, rate=rate, device=device)
    if result is None:
        raise ValueError(f"clip too short for LSE: {lips.frames} frames after the skip, {len(audio)} audio samples")
    return result


def _skip(chunks: Iterable[np.ndarray], n: int) -> Iterator[np.ndarray]:
    for chunk in chunks:
        if n > 0:
            drop = min(n, len(chunk))
            chunk, n = chunk[drop:], n - drop
        if len(chunk):
            yield chunk
