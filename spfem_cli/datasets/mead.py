"""MEAD reader: ``<actor>/video/front/<emotion>/level_<k>/<clip>.mp4`` and
``<actor>/audio/<emotion>/level_<k>/<clip>.m4a`` (reference facts §5)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MEAD_EMOTIONS = ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised")
MEAD_FPS = 30
MEAD_TEST_ACTORS = ("M003", "M009", "W029", "M012", "M030", "W015")
MEAD_HELD_OUT = ("W021",)
# Cross-ID protocol: the reference clip of actor `key` comes from actor `value`.
MEAD_CROSS_ID = {"M003": "W015", "M009": "M003", "W029": "M009", "M012": "W029", "M030": "M012", "W015": "M030"}

_ACTOR = re.compile(r"^[MW]\d{3}$")


@dataclass(frozen=True)
class MeadClip:
    actor: str
    emotion: str
    level: int
    clip: str          # "001"
    video: Path
    audio: Path | None  # None when the audio tree is absent; the mp4's own track then serves

    @property
    def key(self) -> str:
        return f"{self.actor}/{self.emotion}/level_{self.level}/{self.clip}"


def scan_mead(root: Path, *, view: str = "front") -> list[MeadClip]:
    """Every clip under ``root`` in the MEAD layout, sorted; raises if the layout is not there."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MEAD root not found: {root}")
    clips = []
    for actor_dir in sorted(p for p in root.iterdir() if p.is_dir() and _ACTOR.match(p.name)):
        for video in sorted((actor_dir / "video" / view).glob("*/level_*/*.mp4")):
            emotion, level_dir = video.parent.parent.name, video.parent.name
            if emotion not in MEAD_EMOTIONS:
                continue
            level = int(level_dir.split("_")[1])
            audio = actor_dir / "audio" / emotion / level_dir / f"{video.stem}.m4a"
            clips.append(MeadClip(actor_dir.name, emotion, level, video.stem, video,
                                  audio if audio.is_file() else None))
    if not clips:
        raise FileNotFoundError(f"no MEAD clips under {root} (expected <actor>/video/{view}/<emotion>/level_<k>/<clip>.mp4)")
    return clips
