"""``--intensity auto``: the lowest intensity at which the edit reads as its target emotion.

"Reads as" is judged by the FER-2013 recogniser (:mod:`spfem_cli.face.expression`): the target is the
top-1 label of the mean probabilities over the face crops that the edit's report judges (the same ~40
frames spread over the clip: judged on 16 of them, a crossing found at fear 0.91 was reported two lines
above "perceived: neutral", read on the 40). The search renders only those frames, in memory, with the
caller's renderer (the edit's own render path, no encoding): first the cap (not reached: the cap is
used, and said), then the source itself (intensity 0), then bisection to ``tolerance``. The recogniser
is not strictly monotonic in intensity, so the result is a crossing point, with every trial kept for the
report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spfem_cli.edit.targets import MAX_INTENSITY, EditTarget
from spfem_cli.errors import SpfemError

CAP = MAX_INTENSITY
TOLERANCE = 0.05

# render(intensity, frames, indices) -> the frames edited at that intensity (frames are not modified)
SampleRenderer = Callable[[float, Sequence[np.ndarray], np.ndarray], list[np.ndarray]]


@dataclass
class AutoIntensity:
    emotion: str
    intensity: float
    reached: bool                     # the output reads as the target at ``intensity``
    prob: float                       # mean P(target) there
    label: str                        # top-1 label there
    tried: list[tuple[float, float, str]] = field(default_factory=list)   # (intensity, P(target), top-1), sorted

    @property
    def message(self) -> str:
        if not self.reached:
            return (f"intensity auto: not read as {self.emotion} even at the cap {self.intensity:.2f} (reads {self.label}, "
                    f"P({self.emotion}) {self.prob:.2f}): using the cap")
        if self.intensity == 0.0:
            return f"intensity auto: the source already reads as {self.emotion} (P {self.prob:.2f}): intensity 0, no edit"
        return (f"intensity auto: {self.intensity:.2f}, the lowest that reads as {self.emotion} "
                f"(P {self.prob:.2f}; {len(self.tried)} trials)")


def parse_intensity(text: str) -> float | None:
    """``--intensity`` as given: a number (range-checked by :class:`EditTarget`), or None for ``auto``."""
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise SpfemError(f"--intensity must be a number from 0 to 1 or auto (got {text!r})") from None


def check_auto(target: EditTarget) -> str:
    """The emotion to search for, or a one-line refusal (before any work)."""
    from spfem_cli.face.expression import column

    if target.emotion is None:
        raise SpfemError("--intensity auto needs --emotion (not --reference or --timeline)")
    if column(target.emotion) is None:
        raise SpfemError(f"--intensity auto cannot judge '{target.emotion}': the FER-2013 recogniser has no such class; "
                         "give a number")
    return target.emotion


def find_intensity(video: Path, target: EditTarget, track, render: SampleRenderer, *, samples: int | None = None,
                   cap: float = CAP, tolerance: float = TOLERANCE, recognizer=None) -> AutoIntensity:
    """Search the intensity for ``target.emotion`` on ``video`` (face ``track``), rendering with ``render``;
    judged on ``samples`` frames (default: the report's, :data:`~spfem_cli.face.expression.DEFAULT_SAMPLES`)."""
    from spfem_cli.face.expression import DEFAULT_SAMPLES, ExpressionRecognizer, frames_at, perceived, sample_indices

    emotion = check_auto(target)
    recognizer = recognizer or ExpressionRecognizer()
    frames, idx = frames_at(video, sample_indices(track.valid, DEFAULT_SAMPLES if samples is None else samples))
    if not len(idx):
        raise SpfemError(f"--intensity auto: no face found in {video}")
    tried: dict[float, tuple[float, str]] = {}

    def reads(intensity: float) -> bool:
        shown = frames if intensity == 0 else render(intensity, frames, idx)   # intensity 0 is the source itself
        p = perceived(recognizer.probabilities(shown, track, idx))
        tried[intensity] = (p.mean[emotion], p.label) if p else (float("nan"), "–")
        return tried[intensity][1] == emotion

    def result(intensity: float, reached: bool) -> AutoIntensity:
        return AutoIntensity(emotion, intensity, reached, *tried[intensity], sorted((k, *v) for k, v in tried.items()))

    if not reads(cap):
        return result(cap, False)
    if reads(0.0):
        return result(0.0, True)
    lo, hi = 0.0, cap
    while hi - lo > tolerance:
        mid = round((lo + hi) / 2, 3)
        if reads(mid):
            hi = mid
        else:
            lo = mid
    return result(hi, True)
