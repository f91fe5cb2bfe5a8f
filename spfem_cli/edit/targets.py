"""What the user asked for, turned into per-frame weights: a label, a reference clip, or a timeline.

A plan is a set of components (an emotion label or a reference's expression) each with a weight per
frame in [0, 1]; timeline segments fade in and out over ``ramp`` seconds with a smoothstep so an
emotion never switches on in one frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spfem_cli.emotions import canonical
from spfem_cli.errors import SpfemError

DEFAULT_INTENSITY = 0.8
MAX_INTENSITY = 1.0      # a full apex expression (the AU sizes in facs.AU_MAGNITUDE)
DEFAULT_RAMP_S = 0.4

_SEGMENT = re.compile(r"^\s*([A-Za-z]+)\s*@\s*([0-9.]+)\s*-\s*([0-9.]+)\s*$")


@dataclass(frozen=True)
class Segment:
    emotion: str
    start: float   # seconds
    end: float


@dataclass(frozen=True)
class EditTarget:
    """Exactly one of ``emotion``, ``reference`` or ``timeline`` is set."""

    emotion: str | None = None
    reference: Path | None = None
    timeline: tuple[Segment, ...] = ()
    intensity: float = DEFAULT_INTENSITY
    ramp: float = DEFAULT_RAMP_S

    def __post_init__(self) -> None:
        given = sum(x is not None and x != () for x in (self.emotion, self.reference, self.timeline))
        if given != 1:
            raise SpfemError("give exactly one of --emotion, --reference or --timeline")
        if not 0.0 <= self.intensity <= MAX_INTENSITY:
            raise SpfemError(f"--intensity must be between 0 and {MAX_INTENSITY:g} (got {self.intensity})")
        if self.emotion is not None:
            object.__setattr__(self, "emotion", _label(self.emotion))
        if self.reference is not None and not Path(self.reference).is_file():
            raise SpfemError(f"reference video not found: {self.reference}")

    @property
    def description(self) -> str:
        if self.emotion:
            return self.emotion
        if self.reference:
            return f"reference {Path(self.reference).name}"
        return ",".join(f"{s.emotion}@{s.start:g}-{s.end:g}" for s in self.timeline)


def _label(text: str) -> str:
    try:
        return canonical(text)
    except ValueError as exc:
        raise SpfemError(str(exc)) from None


def parse_timeline(text: str) -> tuple[Segment, ...]:
    """``"happy@0-3,sad@3-6"`` → segments (seconds); rejects overlaps and empty segments."""
    segments = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _SEGMENT.match(part)
        if not match:
            raise SpfemError(f"bad timeline segment '{part}': expected EMOTION@START-END in seconds, e.g. happy@0-3")
        label, start, end = match.group(1), float(match.group(2)), float(match.group(3))
        if end <= start:
            raise SpfemError(f"timeline segment '{part}' ends before it starts")
        segments.append(Segment(_label(label), start, end))
    if not segments:
        raise SpfemError("empty --timeline")
    segments.sort(key=lambda s: s.start)
    for a, b in zip(segments, segments[1:], strict=False):
        if b.start < a.end - 1e-9:
            raise SpfemError(f"timeline segments overlap: {a.emotion}@{a.start:g}-{a.end:g} and {b.emotion}@{b.start:g}-{b.end:g}")
    return tuple(segments)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def segment_weight(times: np.ndarray, start: float, end: float, ramp: float, duration: float) -> np.ndarray:
    """1 inside [start, end], smooth ramps of ``ramp`` s centred on each inner boundary, 0 outside."""
    half = ramp / 2
    rise = np.ones_like(times) if start <= 0 else _smoothstep((times - (start - half)) / max(ramp, 1e-9))
    fall = np.ones_like(times) if end >= duration else _smoothstep(((end + half) - times) / max(ramp, 1e-9))
    return np.minimum(rise, fall)


def component_weights(target: EditTarget, n_frames: int, fps: float) -> dict[str, np.ndarray]:
    """Per-frame weight of each component: an emotion label, or ``"reference"``."""
    if target.emotion:
        return {target.emotion: np.ones(n_frames)}
    if target.reference:
        return {"reference": np.ones(n_frames)}
    times = np.arange(n_frames) / fps
    duration = n_frames / fps
    weights: dict[str, np.ndarray] = {}
    for seg in target.timeline:
        w = segment_weight(times, seg.start, seg.end, target.ramp, duration)
        weights[seg.emotion] = np.maximum(weights.get(seg.emotion, 0), w)
    total = sum(weights.values())
    scale = np.where(total > 1, 1 / np.maximum(total, 1e-9), 1.0)   # crossfades never sum above 1
    return {k: v * scale for k, v in weights.items()}
