"""The bundled real-face sample: a talking clip made from a real photo, driven by a known mouth signal.

``skimage.data.astronaut()`` (a public-domain NASA portrait) installs offline with scikit-image. Its
mouth is opened frame by frame by a known signal in [0, 1]: the lower lip and the jaw are displaced
downwards by a smooth field (the lips keep their texture) and the opening shows a mouth made of the
photo itself: its own upper teeth, a dark oral cavity in the lips' hue with a lighter tongue, and the
lower teeth (the upper ones mirrored, narrower, in shadow) once the mouth opens far enough. The
head moves slightly (rotation, translation, scale) and a voiced, formant-filtered "speech" track
whose loudness follows the same signal is muxed in. Because the driving signal is known, tests and
the demo can measure how well tracking and editing preserve the speech motion.

The lip geometry of the photo is measured once with MediaPipe FaceMesh, not hard-coded.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from spfem_cli.video import VideoWriter, write_audio

AUDIO_RATE = 16000
# FaceMesh indices (canonical 468-point topology) used to find the lip line and jaw of the photo.
_LOWER_INNER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
_MOUTH_CORNERS = (61, 291)
_CHIN = 152
_JAW_SIDES = (172, 397)


@dataclass(frozen=True)
class SampleClip:
    path: Path
    mouth_signal: np.ndarray   # (T,) in [0, 1]: the opening that drove frame t
    fps: Fraction
    size: tuple[int, int]      # (H, W)
    face_visible: np.ndarray   # (T,) bool: False where the face was hidden


@dataclass(frozen=True)
class _FaceGeometry:
    lip_x: np.ndarray          # x of the lower inner lip points, increasing
    lip_y: np.ndarray
    corners: tuple[float, float]
    chin_y: float
    jaw: tuple[float, float]
    centre: tuple[float, float]
    mouth_width: float


@functools.lru_cache(maxsize=1)
def _photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@functools.lru_cache(maxsize=1)
def _geometry() -> _FaceGeometry:
    from mediapipe.python.solutions import face_mesh

    image = _photo()
    h, w = image.shape[:2]
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        result = mesh.process(image)
    if not result.multi_face_landmarks:
        raise RuntimeError("MediaPipe found no face in the sample photo")
    pts = np.array([[p.x * w, p.y * h] for p in result.multi_face_landmarks[0].landmark])
    lip = pts[list(_LOWER_INNER_LIP)]
    order = np.argsort(lip[:, 0])
    corners = tuple(sorted(pts[list(_MOUTH_CORNERS), 0]))
    return _FaceGeometry(lip[order, 0], lip[order, 1], corners, float(pts[_CHIN, 1]),
                         tuple(sorted(pts[list(_JAW_SIDES), 0])), tuple(pts.mean(0)),
                         float(corners[1] - corners[0]))


def speech_like_signal(n_frames: int, fps: float, *, seed: int = 0) -> np.ndarray:
    """Syllable-like mouth opening in [0, 1]: raised-cosine bursts of random height at ~4 Hz with pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / fps
    signal = np.zeros(n_frames)
    start = 0.15
    while start < t[-1] if n_frames else False:
        width = rng.uniform(0.16, 0.3)
        height = rng.uniform(0.35, 1.0)
        inside = (t >= start) & (t <= start + width)
        signal[inside] = np.maximum(signal[inside], height * 0.5 * (1 - np.cos(2 * np.pi * (t[inside] - start) / width)))
        start += width + (rng.uniform(0.4, 0.8) if rng.random() < 0.2 else rng.uniform(0.0, 0.08))
    return np.clip(signal, 0.0, 1.0)


def speech_like_audio(mouth_signal: np.ndarray, fps: float, *, rate: int = AUDIO_RATE, seed: int = 0) -> np.ndarray:
    """A voiced buzz (glottal-like pulses, formant band-pass) whose loudness follows the mouth signal."""
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(seed)
    n = int(round(len(mouth_signal) / fps * rate))
    t = np.arange(n) / rate
    f0 = 160 + 25 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    source = np.sign(np.sin(phase)) * 0.5 + 0.5 * np.sin(phase) + 0.05 * rng.standard_normal(n)
    voiced = sosfilt(butter(4, [250, 3200], btype="band", fs=rate, output="sos"), source)
    envelope = np.interp(t, np.arange(len(mouth_signal)) / fps, mouth_signal)
    audio = voiced * envelope
    return (0.6 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)


def _window(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Raised cosine: 1 in the middle of [lo, hi], 0 at and beyond its ends."""
    u = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return 0.5 * (1 - np.cos(2 * np.pi * u))


def _lens(xs: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Vertical opening profile across the mouth: 0 at the corners, rounded (not a peak) in between."""
    u = np.clip((xs - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return np.clip(np.sin(np.pi * u), 0.0, 1.0) ** 0.85


@functools.lru_cache(maxsize=1)
def _mouth_palette() -> tuple[np.ndarray, np.ndarray, int]:
    """What the open mouth is made of, read off the photo: its upper-teeth strip (the rows just above the
    lower inner lip, row 0 at the biting edge; it textures the lower teeth), the lip colour, and the strip's x0."""
    image, geo = _photo(), _geometry()
    x0, x1 = int(geo.corners[0]), int(np.ceil(geo.corners[1]))
    xs = np.arange(x0, x1 + 1)
    split = np.interp(xs, geo.lip_x, geo.lip_y)
    tooth_h = max(3, int(round(0.16 * geo.mouth_width)))
    strip = np.stack([image[np.clip(np.round(split - 1 - k).astype(int), 0, image.shape[0] - 1), xs]
                      for k in range(tooth_h)])                                  # (tooth_h, W, 3), row 0 nearest the lip
    below = np.stack([image[np.clip(np.round(split + 2 + k).astype(int), 0, image.shape[0] - 1), xs]
                      for k in range(max(2, int(0.12 * geo.mouth_width)))]).reshape(-1, 3).astype(np.float32)
    lip = np.median(below, 0)
    return strip, lip, x0


def _interior(gap_rel: np.ndarray, gap_px: np.ndarray, xx: np.ndarray, geo: _FaceGeometry, open_px: float) -> np.ndarray:
    """Colour of the open mouth at each pixel of the gap: a dark oral cavity in the lips' own hue (darkest
    under the upper teeth, the tongue a little lighter at the bottom) and, once the mouth opens far enough,
    the lower teeth rising from the lower lip, textured by the photo's own upper teeth mirrored and shaded."""
    strip, lip, x0 = _mouth_palette()
    cavity = lip * 0.22 + np.array([6.0, 0.0, 0.0])
    tongue = lip * 0.55
    rel = gap_rel[..., None]
    colour = cavity * (1 - 0.8 * rel ** 2) + tongue * (0.8 * rel ** 2)
    colour *= (0.55 + 0.45 * np.clip(rel / 0.35, 0, 1))                  # shadow under the upper teeth/lip
    tooth_h = strip.shape[0]
    centre = 0.5 * (geo.corners[0] + geo.corners[1])
    middle = np.clip(1 - (np.abs(xx - centre) / (0.32 * geo.mouth_width)) ** 2, 0, 1)   # lower arch is narrower
    lower_h = np.minimum(0.3 * gap_px, 0.45 * tooth_h) * np.clip((open_px - 4.0) / 4.0, 0, 1) * middle
    above_lip = gap_px * (1 - gap_rel)                                    # px above the lower lip
    sx = np.clip(np.round(centre + (xx - centre) / 0.85).astype(int) - x0, 0, strip.shape[1] - 1)
    mirrored = (lower_h - above_lip) / np.maximum(lower_h, 1e-6)          # 0 at the lower teeth's biting edge
    sy = np.clip(np.round(mirrored * 0.6 * tooth_h).astype(int), 0, tooth_h - 1)
    lower = strip[sy, sx].astype(np.float32) * 0.8                       # lower teeth sit in shadow
    t = np.clip((lower_h - above_lip) / 1.2, 0, 1)[..., None]            # soft top edge of the lower teeth
    return colour * (1 - t) + lower * t


def open_mouth(image: np.ndarray, amount: float, geo: _FaceGeometry) -> np.ndarray:
    """Open the photo's mouth by ``amount`` in [0, 1] (1 = 45 % of the mouth width).

    The lower lip and the jaw move down by a smooth field (the lips keep their texture); the gap shows
    the photo's upper teeth, a dark cavity and the lower teeth (see :func:`_interior`), anti-aliased.
    """
    if amount <= 0:
        return image.copy()
    h, w = image.shape[:2]
    open_px = amount * 0.45 * geo.mouth_width
    xs = np.arange(w, dtype=np.float32)
    split = np.interp(xs, geo.lip_x, geo.lip_y).astype(np.float32)      # lower inner lip line
    lens = _lens(xs, *geo.corners).astype(np.float32)                   # gap shape along x
    wide = _window(xs, geo.jaw[0] - 0.15 * geo.mouth_width, geo.jaw[1] + 0.15 * geo.mouth_width)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = (yy - split[None]) / max(geo.chin_y - split.mean(), 1.0)    # 0 at the lip line, 1 at the chin
    blend = np.clip(depth, 0, 1)
    fade = np.clip(1.0 - (depth - 1.0) / 0.6, 0.0, 1.0)                  # jaw motion fades out below the chin
    shift = open_px * ((1 - blend) * lens[None] + blend * wide[None]) * fade
    shift[depth < 0] = 0.0
    warped = cv2.remap(image, xx, yy - shift, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    gap_px = np.broadcast_to(open_px * lens[None], yy.shape)
    inside = yy - split[None]                                            # px below the lip line
    box = (inside > -1) & (inside < gap_px + 3) & (gap_px > 0.05)
    if not box.any():
        return warped
    rows, cols = np.nonzero(box)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    sub = np.s_[r0:r1, c0:c1]
    g, d = gap_px[sub], inside[sub]
    alpha = (np.clip(d + 0.5, 0, 1) * np.clip(g - d + 0.5, 0, 1) * np.clip(g, 0, 1))[..., None]  # anti-aliased edges
    colour = _interior(np.clip(d / np.maximum(g, 1e-6), 0, 1), g, xx[sub], geo, open_px)
    out = warped.astype(np.float32)
    wet = 1.0 - 0.3 * (np.clip(d - g + 0.5, 0, 1) * np.clip(1.0 - (d - g) / 2.5, 0, 1) * np.clip(g, 0, 1))[..., None]  # inner lip edge in shadow
    out[sub] = out[sub] * wet * (1 - alpha) + colour * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _camera(t: float, out_size: tuple[int, int], geo: _FaceGeometry, scale: float, motion: bool) -> np.ndarray:
    """Similarity from photo to output frame: face centred, small natural head motion."""
    oh, ow = out_size
    angle = 3.0 * np.sin(2 * np.pi * 0.35 * t) if motion else 0.0
    s = scale * (1 + (0.03 * np.sin(2 * np.pi * 0.2 * t) if motion else 0.0))
    m = cv2.getRotationMatrix2D(geo.centre, angle, s)
    dx = 12 * np.sin(2 * np.pi * 0.25 * t) if motion else 0.0
    dy = 6 * np.sin(2 * np.pi * 0.4 * t + 1) if motion else 0.0
    m[:, 2] += np.array([ow / 2 + dx, oh * 0.45 + dy]) - np.array(geo.centre)
    return m


def render_frame(amount: float, t: float, *, size: tuple[int, int] = (480, 640), face_scale: float = 1.8,
                 head_motion: bool = True) -> np.ndarray:
    """One RGB frame of the sample at time ``t`` with mouth opening ``amount``."""
    geo = _geometry()
    face = open_mouth(_photo(), amount, geo)
    m = _camera(t, size, geo, face_scale, head_motion)
    return cv2.warpAffine(face, m, (size[1], size[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def make_talking_clip(path: Path, *, seconds: float = 3.0, fps: int | Fraction = 25,
                      size: tuple[int, int] = (480, 640), mouth_signal: np.ndarray | None = None,
                      audio: bool = True, head_motion: bool = True, face_scale: float = 1.8,
                      hidden: tuple[int, int] | None = None, seed: int = 0, overwrite: bool = True) -> SampleClip:
    """Write the talking sample to ``path`` (H.264 + AAC) and return it with its driving signal.

    ``hidden=(a, b)`` replaces frames a..b-1 by an empty background (the face leaves and returns).
    """
    fps = Fraction(fps)
    n = int(round(seconds * fps))
    signal = speech_like_signal(n, float(fps), seed=seed) if mouth_signal is None else np.asarray(mouth_signal, float)
    n = len(signal)
    visible = np.ones(n, bool)
    if hidden is not None:
        visible[hidden[0]:hidden[1]] = False
    background = np.full((*size, 3), (200, 205, 210), np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        wav = None
        if audio:
            wav = write_audio(Path(tmp) / "speech.wav", speech_like_audio(signal, float(fps), seed=seed), AUDIO_RATE)
        with VideoWriter(path, fps, audio_from=wav, overwrite=overwrite, crf=16) as writer:
            for i, amount in enumerate(signal):
                frame = render_frame(float(amount), i / float(fps), size=size, face_scale=face_scale,
                                     head_motion=head_motion) if visible[i] else background
                writer.write(frame)
    _save_signal(Path(path), signal, fps, visible)
    return SampleClip(Path(path), signal, fps, size, visible)


def signal_path(clip: Path) -> Path:
    """Where the known driving signal of a sample clip is saved (beside it)."""
    return Path(clip).with_suffix(".signal.json")


def _save_signal(clip: Path, signal: np.ndarray, fps: Fraction, visible: np.ndarray) -> None:
    import json

    from spfem_cli.video import AtomicOutput

    payload = {"fps": f"{fps.numerator}/{fps.denominator}", "mouth_signal": [round(float(v), 6) for v in signal],
               "face_visible": [bool(v) for v in visible],
               "note": "mouth opening in [0, 1] that drove each frame (1 = 45 % of the mouth width)"}
    with AtomicOutput(signal_path(clip), suffix=".json") as tmp:
        tmp.write_text(json.dumps(payload))


def load_signal(clip: Path) -> np.ndarray:
    """The driving mouth signal saved beside a sample clip."""
    import json

    return np.asarray(json.loads(signal_path(clip).read_text())["mouth_signal"])
