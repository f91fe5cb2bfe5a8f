"""A tiny paired data set from real face pixels with *known* correspondences (tests, smoke runs).

The face of ``skimage.data.astronaut()`` is warped by smooth displacement fields: a speech field
(lower lip and jaw move down with a syllable-like mouth signal) and an emotion field (e.g. happy =
mouth corners up). The "emotional" clip says the same sentence ``stretch`` times slower, so its
frame j shows the mouth state of neutral frame ``stretch·j``; the audio (a voiced buzz whose
loudness follows the mouth signal) is stretched the same way, so audio DTW must recover that map.
Files go into the real MEAD layout so the MEAD reader, pairing rule and CLI run on them unchanged.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from spfem_cli.demo.sample import speech_like_audio, speech_like_signal
from spfem_cli.video import write_audio, write_video

FACE_BOX = (30, 210, 135, 315)          # y0, y1, x0, x1 of the face square in astronaut()
# (x, y, dx, dy) bumps in units of the crop size: where the emotion moves the face, and how far.
EMOTION_FIELDS: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "neutral": (),
    "happy": ((0.40, 0.64, -0.02, -0.05), (0.60, 0.64, 0.02, -0.05), (0.5, 0.52, 0.0, -0.02)),
    "sad": ((0.40, 0.64, 0.0, 0.05), (0.60, 0.64, 0.0, 0.05), (0.39, 0.38, 0.02, -0.03), (0.61, 0.38, -0.02, -0.03)),
    "angry": ((0.39, 0.38, 0.02, 0.05), (0.61, 0.38, -0.02, 0.05), (0.5, 0.62, 0.0, -0.02)),
    "surprised": ((0.39, 0.38, 0.0, -0.06), (0.61, 0.38, 0.0, -0.06), (0.5, 0.70, 0.0, 0.03)),
}
MOUTH_BUMP = (0.5, 0.71, 0.0, 0.07)     # full mouth opening moves the lower lip down by 7 % of the crop


def _base_face(size: int) -> np.ndarray:
    from skimage.data import astronaut

    y0, y1, x0, x1 = FACE_BOX
    return cv2.resize(astronaut()[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)


def face_frame(size: int, mouth_open: float, emotion: str = "neutral", strength: float = 1.0,
               base: np.ndarray | None = None) -> np.ndarray:
    """One (size, size, 3) uint8 RGB frame: the photo warped by the speech and emotion fields."""
    base = _base_face(size) if base is None else base
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    map_x, map_y = xx.copy(), yy.copy()
    bumps = [(*MOUTH_BUMP[:2], MOUTH_BUMP[2], MOUTH_BUMP[3] * mouth_open)]
    bumps += [(x, y, dx * strength, dy * strength) for x, y, dx, dy in EMOTION_FIELDS[emotion]]
    sigma = 0.07 * size
    for x, y, dx, dy in bumps:
        g = np.exp(-((xx - x * size) ** 2 + (yy - y * size) ** 2) / (2 * sigma**2))
        map_x -= dx * size * g       # remap samples the source at map: content moves by +d
        map_y -= dy * size * g
    return cv2.remap(base, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def synthetic_clip_pair(n_frames: int, size: int, emotion: str, *, stretch: float = 1.25, fps: float = 30.0,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(neutral frames, emotional frames, neutral mouth signal, emotional mouth signal, truth map).

    ``truth[j]`` is the (fractional) neutral frame whose mouth state emotional frame j shows.
    """
    fine = 8
    signal = speech_like_signal(n_frames * fine, fps * fine, seed=seed)
    t_fine = np.arange(len(signal)) / fine
    m_a = np.interp(np.arange(n_frames), t_fine, signal)
    n_b = int(round(n_frames * stretch))
    truth = np.arange(n_b) / stretch
    m_b = np.interp(truth, t_fine, signal)
    base = _base_face(size)
    frames_a = np.stack([face_frame(size, m, "neutral", base=base) for m in m_a])
    frames_b = np.stack([face_frame(size, m, emotion, base=base) for m in m_b])
    return frames_a, frames_b, m_a, m_b, truth


def write_synthetic_mead(root: Path, *, actors: tuple[str, ...] = ("M001", "W021"),
                         emotions: tuple[str, ...] = ("happy",), clips: tuple[str, ...] = ("001",),
                         n_frames: int = 30, size: int = 64, fps: int = 30, stretch: float = 1.25) -> dict[str, np.ndarray]:
    """Write neutral level_1 and emotional level_3 clips (+ .m4a audio) in the MEAD layout.

    Returns the truth map per pair key ``actor/emotion/clip``.
    """
    root = Path(root)
    truths = {}
    for a, actor in enumerate(actors):
        for c, clip in enumerate(clips):
            for e, emotion in enumerate(emotions):
                seed = 1000 * a + 100 * c + e
                fa, fb, ma, mb, truth = synthetic_clip_pair(n_frames, size, emotion, stretch=stretch, fps=fps,
                                                            seed=1000 * a + 100 * c)
                for emo, level, frames, signal in (("neutral", 1, fa, ma), (emotion, 3, fb, mb)):
                    video = root / actor / "video" / "front" / emo / f"level_{level}" / f"{clip}.mp4"
                    audio = root / actor / "audio" / emo / f"level_{level}" / f"{clip}.m4a"
                    if emo == "neutral" and video.is_file():
                        continue
                    video.parent.mkdir(parents=True, exist_ok=True)
                    audio.parent.mkdir(parents=True, exist_ok=True)
                    write_video(video, frames, fps, overwrite=True)
                    write_audio(audio, speech_like_audio(signal, fps, seed=seed), 16000)
                truths[f"{actor}/{emotion}/{clip}"] = truth
    return truths
