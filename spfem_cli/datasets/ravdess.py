"""RAVDESS reader: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4`` (reference facts §5)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RAVDESS_EMOTIONS = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fear", 7: "disgusted",
                    8: "surprised"}
RAVDESS_FPS = 30
RAVDESS_TEST_ACTORS = (1, 2, 3, 4, 5, 6)
# Cross-ID: 01<-06, 02<-01, ... 06<-05.
RAVDESS_CROSS_ID = {1: 6, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5}

_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")


@dataclass(frozen=True)
class RavdessClip:
    actor: int
    modality: int     # 1 audio-video, 2 video only, 3 audio only
    vocal: int        # 1 speech, 2 song
    emotion: str
    intensity: int    # 1 normal, 2 strong
    statement: int
    repetition: int
    video: Path

    @property
    def key(self) -> str:
        return self.video.stem


def parse_name(path: Path) -> RavdessClip | None:
    match = _NAME.match(Path(path).stem)
    if not match:
        return None
    mod, voc, emo, inten, stmt, rep, actor = (int(g) for g in match.groups())
    if emo not in RAVDESS_EMOTIONS:
        return None
    return RavdessClip(actor, mod, voc, RAVDESS_EMOTIONS[emo], inten, stmt, rep, Path(path))


def scan_ravdess(root: Path, *, modality: int = 1, vocal: int = 1) -> list[RavdessClip]:
    """Audio-visual speech clips (modality 01, vocal 01 by default), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"RAVDESS root not found: {root}")
    clips = [c for p in sorted(root.glob("Actor_*/*.mp4")) if (c := parse_name(p)) is not None
             and c.modality == modality and c.vocal == vocal]
    if not clips:
        raise FileNotFoundError(f"no RAVDESS clips under {root} (expected Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4)")
    return clips
