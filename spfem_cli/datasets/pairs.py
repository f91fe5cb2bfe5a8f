"""Paired clips for metric pre-training: the same speaker saying the same sentence, neutral vs emotional.

A :class:`ClipPair` holds the two videos and their frame correspondence (the DTW path over
per-frame audio MFCCs, :mod:`spfem_cli.datasets.align_time`). Pair lists are cached as JSON keyed by
a hash of the clip list (paths, sizes, mtimes) and the pairing settings, so a second run skips the
audio work. Pixels come from a pluggable :class:`CropSource` (aligned face crops from the tracking
stage in real use, plain centre crops for pre-aligned data and tests).

MEAD rule (reference facts §2): per training actor (test actors and the held-out W021 excluded),
neutral level_1 clips 001–003 vs every emotion's level_3 clips 001–003; disgusted uses 028–030 where
present (its common sentences are numbered there), paired by order (neutral 001 ↔ disgusted 028 …).
RAVDESS rule: same actor, statement and repetition; neutral vs each NED emotion (calm left out) at
strong intensity (02) by default.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from spfem_cli.datasets.align_time import dtw_path, mfcc_per_frame
from spfem_cli.datasets.mead import MEAD_HELD_OUT, MEAD_TEST_ACTORS, MeadClip, scan_mead
from spfem_cli.datasets.ravdess import RAVDESS_TEST_ACTORS, RavdessClip, scan_ravdess
from spfem_cli.errors import SpfemError

MEAD_NEUTRAL_CLIPS = ("001", "002", "003")
MEAD_EMOTION_CLIPS = ("001", "002", "003")
MEAD_DISGUSTED_CLIPS = ("028", "029", "030")
PAIR_EMOTIONS = ("angry", "disgusted", "fear", "happy", "sad", "surprised")
RAVDESS_HELD_OUT = (24,)
AUDIO_RATE = 16000
CACHE_VERSION = 1

Split = Literal["train", "val", "all"]


class PairsError(SpfemError):
    """No usable pairs (wrong root, missing audio, everything filtered out)."""


@dataclass(frozen=True)
class ClipPair:
    """Two clips of one speaker and sentence; ``path_a[k]`` ↔ ``path_b[k]`` are matched frames."""

    key: str
    actor: str
    emotion_a: str
    emotion_b: str
    video_a: str
    video_b: str
    audio_a: str | None
    audio_b: str | None
    path_a: tuple[int, ...] = ()
    path_b: tuple[int, ...] = ()

    def to_json(self) -> dict:
        return {**asdict(self), "path_a": list(self.path_a), "path_b": list(self.path_b)}

    @classmethod
    def from_json(cls, obj: dict) -> ClipPair:
        return cls(**{**obj, "path_a": tuple(obj["path_a"]), "path_b": tuple(obj["path_b"])})


# --------------------------------------------------------------------------- candidate pairs
def _mead_split_ok(actor: str, split: Split) -> bool:
    if actor in MEAD_TEST_ACTORS:
        return False
    if split == "train":
        return actor not in MEAD_HELD_OUT
    if split == "val":
        return actor in MEAD_HELD_OUT
    return True


def mead_candidates(clips: Iterable[MeadClip], split: Split = "train") -> list[ClipPair]:
    """Unaligned MEAD pairs by the rule in the module docstring."""
    by_key = {(c.actor, c.emotion, c.level, c.clip): c for c in clips}
    pairs = []
    for actor in sorted({c.actor for c in by_key.values()}):
        if not _mead_split_ok(actor, split):
            continue
        for emotion in PAIR_EMOTIONS:
            numbers = MEAD_EMOTION_CLIPS
            if emotion == "disgusted" and any((actor, emotion, 3, n) in by_key for n in MEAD_DISGUSTED_CLIPS):
                numbers = MEAD_DISGUSTED_CLIPS
            for na, nb in zip(MEAD_NEUTRAL_CLIPS, numbers, strict=True):
                a, b = by_key.get((actor, "neutral", 1, na)), by_key.get((actor, emotion, 3, nb))
                if a is None or b is None:
                    continue
                pairs.append(ClipPair(f"{actor}/{emotion}/{na}_{nb}", actor, "neutral", emotion, str(a.video),
                                      str(b.video), str(a.audio) if a.audio else None,
                                      str(b.audio) if b.audio else None))
    return pairs


def ravdess_candidates(clips: Iterable[RavdessClip], split: Split = "train", *, intensity: int = 2,
                       held_out: Sequence[int] = RAVDESS_HELD_OUT) -> list[ClipPair]:
    """Unaligned RAVDESS pairs: same actor/statement/repetition, neutral vs emotion at ``intensity``."""
    clips = list(clips)
    neutral = {(c.actor, c.statement, c.repetition): c for c in clips if c.emotion == "neutral"}
    pairs = []
    for c in clips:
        if c.emotion not in PAIR_EMOTIONS or c.intensity != intensity or c.actor in RAVDESS_TEST_ACTORS:
            continue
        if (split == "train" and c.actor in held_out) or (split == "val" and c.actor not in held_out):
            continue
        a = neutral.get((c.actor, c.statement, c.repetition))
        if a is None:
            continue
        actor = f"Actor_{c.actor:02d}"
        pairs.append(ClipPair(f"{actor}/{c.emotion}/{a.key}_{c.key}", actor, "neutral", c.emotion,
                              str(a.video), str(c.video), None, None))
    return sorted(pairs, key=lambda p: p.key)


# --------------------------------------------------------------------------- alignment
def clip_mfcc(video: str, audio: str | None) -> np.ndarray:
    """Per-video-frame MFCCs of a clip (audio from the separate file when given, else the mp4's track)."""
    from spfem_cli.video import probe, read_audio

    info = probe(Path(video))
    samples = read_audio(Path(audio) if audio else Path(video), rate=AUDIO_RATE)
    if len(samples) == 0:
        raise PairsError(f"no audio samples for {video}; DTW alignment needs the speech track")
    return mfcc_per_frame(samples, AUDIO_RATE, info.n_frames, float(info.fps))


def align_pair(pair: ClipPair) -> ClipPair:
    """The pair with its DTW frame path (L1 distance between MFCC rows, no window)."""
    ia, ib = dtw_path(clip_mfcc(pair.video_a, pair.audio_a), clip_mfcc(pair.video_b, pair.audio_b))
    return ClipPair(**{**asdict(pair), "path_a": tuple(int(i) for i in ia), "path_b": tuple(int(i) for i in ib)})


def _fingerprint(pairs: Sequence[ClipPair], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **settings}, sort_keys=True).encode())
    for p in pairs:
        for f in (p.video_a, p.video_b, p.audio_a, p.audio_b):
            if f:
                st = Path(f).stat()
                digest.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def build_pairs(dataset: Literal["mead", "ravdess"], root: Path, *, split: Split = "train",
                cache_dir: Path | None = None, progress: bool = False) -> list[ClipPair]:
    """Scan ``root``, select pairs, align them (or load the cached JSON) and return them sorted."""
    root = Path(root)
    try:
        if dataset == "mead":
            candidates = mead_candidates(scan_mead(root), split)
        elif dataset == "ravdess":
            candidates = ravdess_candidates(scan_ravdess(root), split)
        else:
            raise PairsError(f"unknown dataset {dataset!r}; use mead or ravdess")
    except FileNotFoundError as exc:
        raise PairsError(str(exc)) from exc
    if not candidates:
        raise PairsError(f"no {dataset} {split} pairs under {root} (see `spfem train-metric --help` for the rule)")
    settings = {"dataset": dataset, "split": split, "rate": AUDIO_RATE}
    cache = Path(cache_dir or root) / f"pairs_{dataset}_{split}_{_fingerprint(candidates, settings)}.json"
    if cache.is_file():
        return [ClipPair.from_json(o) for o in json.loads(cache.read_text())["pairs"]]
    aligned = []
    for pair in _track_progress(candidates, progress, "aligning pairs (audio DTW)"):
        aligned.append(align_pair(pair))
    from spfem_cli.video import AtomicOutput

    cache.parent.mkdir(parents=True, exist_ok=True)
    with AtomicOutput(cache) as tmp:
        Path(tmp).write_text(json.dumps({"version": CACHE_VERSION, "settings": settings,
                                         "pairs": [p.to_json() for p in aligned]}, indent=1))
    return aligned


def _track_progress(items: Sequence, enabled: bool, label: str) -> Iterable:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=label)


# --------------------------------------------------------------------------- pixels
class CropSource(Protocol):
    """Where face crops come from: ``frames`` → (k, S, S, 3) uint8 RGB; ``landmarks`` → (k, 68, 2) in
    crop pixels, or None when this source has none (pose alignment then is unavailable)."""

    size: int

    def frames(self, video: str, indices: Sequence[int]) -> np.ndarray: ...

    def landmarks(self, video: str, indices: Sequence[int]) -> np.ndarray | None: ...


class _ClipCache:
    """A small LRU of decoded clips: training draws many windows from the same clip."""

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str, load) -> np.ndarray:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = load()
        self.items[key] = value
        while len(self.items) > self.capacity:
            self.items.popitem(last=False)
        return value


def _resize_square(frames: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = frames.shape[1:3]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = frames[:, y0:y0 + side, x0:x0 + side]
    if side == size:
        return np.ascontiguousarray(crop)
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in crop])


class CentreCropSource:
    """Centre square of each frame resized to ``size``: for data that is already face-aligned, and tests."""

    def __init__(self, size: int = 224, cache_clips: int = 4):
        self.size = size
        self._cache = _ClipCache(cache_clips)

    def _clip(self, video: str) -> np.ndarray:
        from spfem_cli.video import iter_chunks

        return self._cache.get(video, lambda: np.concatenate(
            [_resize_square(c.frames, self.size) for c in iter_chunks(Path(video))]))

    def frames(self, video: str, indices: Sequence[int]) -> np.ndarray:
        clip = self._clip(video)
        return clip[np.clip(np.asarray(indices), 0, len(clip) - 1)]

    def landmarks(self, video: str, indices: Sequence[int]) -> np.ndarray | None:
        return None


class TrackedCropSource:
    """Aligned face crops from the tracking stage (``track_video`` + ``warp_to_aligned``).

    Each video is tracked and warped once; the crops are cached as a small H.264 clip plus an .npz of
    aligned landmarks under ``cache_dir`` (keyed by the video's path, size and mtime), so training
    decodes 224² crops instead of full HD frames. Memory stays flat while caching (chunked decoding).
    """

    def __init__(self, cache_dir: Path, size: int = 224, tracker: str = "mediapipe", cache_clips: int = 4):
        self.size = size
        self.cache_dir = Path(cache_dir)
        self.tracker = tracker
        self._cache = _ClipCache(cache_clips)
        self._marks: dict[str, np.ndarray] = {}

    def _paths(self, video: str) -> tuple[Path, Path]:
        st = Path(video).stat()
        key = hashlib.sha256(f"{Path(video).resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.size}|{self.tracker}"
                             .encode()).hexdigest()[:20]
        return self.cache_dir / f"{key}.mp4", self.cache_dir / f"{key}.npz"

    def prepare(self, video: str) -> tuple[Path, Path]:
        """Track, align and cache one video (no-op when cached)."""
        from spfem_cli.face.align import ALIGNED_SIZE, warp_to_aligned
        from spfem_cli.face.tracking import track_video
        from spfem_cli.video import VideoWriter, iter_chunks, probe

        crops, marks = self._paths(video)
        if crops.is_file() and marks.is_file():
            return crops, marks
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        track = track_video(Path(video), self.tracker, progress=False)
        if track.n_valid == 0:
            raise PairsError(f"no face found in {video}")
        scale = self.size / ALIGNED_SIZE
        transforms = track.transforms.copy()
        good = np.flatnonzero(track.valid)
        for i in np.flatnonzero(~track.valid):       # frames without a face reuse the nearest valid transform
            transforms[i] = transforms[good[np.abs(good - i).argmin()]]
        landmarks = track.aligned_landmarks() * scale
        with VideoWriter(crops, probe(Path(video)).fps, overwrite=True) as writer:
            for chunk in iter_chunks(Path(video)):
                aligned = [warp_to_aligned(f, transforms[chunk.start + k]) for k, f in enumerate(chunk.frames)]
                writer.write(_resize_square(np.stack(aligned), self.size))
        np.savez(marks, landmarks=landmarks.astype(np.float32), valid=track.valid)
        return crops, marks

    def frames(self, video: str, indices: Sequence[int]) -> np.ndarray:
        from spfem_cli.video import read_frames

        crops, _ = self.prepare(video)
        clip = self._cache.get(video, lambda: read_frames(crops)[0])
        return clip[np.clip(np.asarray(indices), 0, len(clip) - 1)]

    def landmarks(self, video: str, indices: Sequence[int]) -> np.ndarray | None:
        if video not in self._marks:
            _, marks = self.prepare(video)
            with np.load(marks) as data:
                self._marks[video] = data["landmarks"]
        marks = self._marks[video]
        return marks[np.clip(np.asarray(indices), 0, len(marks) - 1)]


def pose_align_frames(frames_b: np.ndarray, marks_b: np.ndarray, marks_a: np.ndarray) -> np.ndarray:
    """Warp each crop of clip b onto the head pose of the matched crop of clip a (paper's pose alignment).

    Uses :func:`spfem_cli.face.align.pose_align_affine` on the rigid landmarks; frames whose landmarks are
    missing (NaN) are left as they are.
    """
    import cv2

    from spfem_cli.face.align import pose_align_affine

    out = frames_b.copy()
    size = frames_b.shape[2], frames_b.shape[1]
    for k in range(len(frames_b)):
        if np.isnan(marks_a[k]).any() or np.isnan(marks_b[k]).any():
            continue
        matrix = pose_align_affine(marks_b[k], marks_a[k])
        out[k] = cv2.warpAffine(frames_b[k], matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out
