"""Emotion labels: one order everywhere (NED's class index order), plus data-set spellings."""

from __future__ import annotations

# NED translator / discriminator class index order (reference facts §1.5).
EMOTIONS: tuple[str, ...] = ("neutral", "angry", "disgusted", "fear", "happy", "sad", "surprised")
# Labels accepted on the command line; contempt exists in MEAD but not in NED's 7 classes.
EDIT_EMOTIONS: tuple[str, ...] = EMOTIONS + ("contempt",)

ALIASES = {"anger": "angry", "disgust": "disgusted", "fearful": "fear", "afraid": "fear",
           "happiness": "happy", "sadness": "sad", "surprise": "surprised"}


def canonical(label: str) -> str:
    """Map a user/data-set spelling to the canonical label, or raise ValueError listing the choices."""
    key = label.strip().lower()
    key = ALIASES.get(key, key)
    if key not in EDIT_EMOTIONS:
        raise ValueError(f"unknown emotion '{label}'; choose one of: {', '.join(EDIT_EMOTIONS)}")
    return key


def index(label: str) -> int:
    """Class index in NED's order (contempt has none)."""
    return EMOTIONS.index(canonical(label))
