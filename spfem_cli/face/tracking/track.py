"""`track_video`: stream a video through a tracker and return one cleaned-up :class:`FaceTrack`.

Memory stays flat: frames are decoded in chunks and dropped; only the per-frame landmarks are kept.
Face choice: the largest face by default, ``face_index`` = N picks the N-th largest when the face is
(re)acquired; afterwards the same face is followed by box overlap, so two faces of similar size do
not swap when their sizes cross. A scene cut forgets the followed face.
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np

from spfem_cli.errors import SpfemError
from spfem_cli.face import glasses
from spfem_cli.face.align import alignment_transform
from spfem_cli.face.tracking.base import Detection, FaceTrack, Tracker, box_iou
from spfem_cli.face.tracking.temporal import TemporalConfig, fill_gaps, frame_signature, is_cut, smooth_runs
from spfem_cli.progress import frame_progress
from spfem_cli.video import iter_chunks, probe

TRACKERS = ("mediapipe", "fan")
FOLLOW_IOU = 0.2      # minimum box overlap to keep following the same face


FAN_WEIGHTS = ("fan_2d68", "s3fd")


def auto_tracker() -> str:
    """``fan`` (NED's landmarker, what its renderers are trained on) when its weights are installed, else the
    embedded ``mediapipe``: the neural path prefers FAN but must not stop for lack of it."""
    from spfem_cli import weights

    return "mediapipe" if weights.missing(FAN_WEIGHTS) else "fan"


def get_tracker(name: str, **kwargs) -> Tracker:
    """A tracker by name (``mediapipe`` embedded default, ``fan`` needs weights)."""
    if name == "mediapipe":
        from spfem_cli.face.tracking.mediapipe_tracker import MediaPipeTracker

        return MediaPipeTracker(**kwargs)
    if name == "fan":
        from spfem_cli.face.tracking.fan_tracker import FanTracker

        return FanTracker(**kwargs)
    raise SpfemError(f"unknown tracker '{name}'; choose one of: {', '.join(TRACKERS)}")


def choose_face(detections: list[Detection], previous_box: np.ndarray | None, face_index: int) -> Detection | None:
    """Follow the previous face by overlap; otherwise take the ``face_index``-th largest."""
    if not detections:
        return None
    if previous_box is not None:
        best = max(detections, key=lambda d: box_iou(d.box, previous_box))
        if box_iou(best.box, previous_box) >= FOLLOW_IOU:
            return best
    ranked = sorted(detections, key=lambda d: -d.area)
    return ranked[face_index] if face_index < len(ranked) else None


class FrameTracker:
    """The per-frame half of tracking, fed one frame at a time: cut detection and face choice.

    Used by :func:`track_video` and by the warp edit's single pass (track and render the same decoded
    frames); both therefore see the same detections. Between detections the followed face is re-meshed
    inside a box around its last points (``engine.detect_near(frame, previous)``, when the tracker has
    it) instead of searching the whole frame; the full detector runs on the first frame, after a cut
    and whenever the face is lost.
    """

    def __init__(self, engine: Tracker, face_index: int = 0, config: TemporalConfig | None = None):
        if face_index < 0:
            raise SpfemError("--face must be 0 (largest face) or a positive index")
        self.engine, self.face_index = engine, face_index
        self.config = config or TemporalConfig()
        self.detections: list[Detection | None] = []
        self.cuts: list[bool] = []
        self.bridge_lines: list[float] = []          # each face's nose-bridge line (eyeglasses), NaN: no face
        self._signature: np.ndarray | None = None
        self._last: Detection | None = None          # the previous frame's face: where ROI tracking looks
        self._follow_box: np.ndarray | None = None   # the followed face's last box (kept across short losses)
        self._near = getattr(engine, "detect_near", None)

    def __len__(self) -> int:
        return len(self.cuts)

    def push(self, frame: np.ndarray) -> Detection | None:
        """Track the next frame (frames come in order); returns its detection (None: no face)."""
        sig = frame_signature(frame)
        cut = is_cut(self._signature, sig, self.config)
        self._signature = sig
        if cut:
            self._last = self._follow_box = None
        det = self._near(frame, self._last) if self._near is not None and self._last is not None else None
        if det is None:
            det = choose_face(self.engine.detect(frame), self._follow_box, self.face_index)
        self._last = det
        if det is not None:
            self._follow_box = det.box
        self.detections.append(det)
        self.cuts.append(cut)
        self.bridge_lines.append(np.nan if det is None else glasses.frame_line(frame, det.landmarks))
        return det

    def finish(self, fps, frame_size: tuple[int, int], meta: dict | None = None, start: int = 0,
               stop: int | None = None) -> FaceTrack:
        """The cleaned-up :class:`FaceTrack` of frames [start, stop) (gaps filled, smoothed, aligned)."""
        stop = len(self) if stop is None else stop
        dets = self.detections[start:stop]
        cuts = np.array(self.cuts[start:stop], bool)
        if start > 0 and len(cuts):
            cuts[0] = False                  # a window's first frame starts no new shot
        lms = [np.full((68, 2), np.nan) if d is None else d.landmarks for d in dets]
        boxes = [np.full(4, np.nan) if d is None else d.box for d in dets]
        pupils = [np.full((2, 2), np.nan) if d is None else d.pupils for d in dets]
        return finish_track(np.array(lms, np.float64).reshape(-1, 68, 2), np.array(boxes, np.float64).reshape(-1, 4),
                            np.array(pupils, np.float64).reshape(-1, 2, 2), np.array([d is not None for d in dets], bool),
                            cuts, fps, frame_size, self.engine.name, self.config, meta=meta,
                            mesh=_stack_meshes([None if d is None else d.mesh for d in dets]),
                            bridge_line=np.array(self.bridge_lines[start:stop], np.float64))


def track_meta(path: Path, face_index: int, rotation: int) -> dict:
    """What a track records about the video it came from."""
    return {"source": str(path), "face_index": face_index, "rotation": rotation}


def track_video(path: Path, tracker: str | Tracker = "mediapipe", face_index: int = 0, progress: bool = True, *,
                config: TemporalConfig | None = None, chunk_size: int = 32,
                max_frames: int | None = None) -> FaceTrack:
    """Track one face through ``path``; frames without it are marked invalid (arrays hold NaN there)."""
    if face_index < 0:
        raise SpfemError("--face must be 0 (largest face) or a positive index")
    info = probe(path)
    owned = isinstance(tracker, str)
    engine = get_tracker(tracker) if owned else tracker
    try:
        frames = FrameTracker(engine, face_index, config)
        with frame_progress(progress, info.n_frames, f"tracking ({engine.name})") as advance:
            for chunk in iter_chunks(path, chunk_size, max_frames=max_frames):
                for frame in chunk.frames:
                    frames.push(frame)
                advance(len(chunk.frames))
    finally:
        if owned:
            engine.close()
    return frames.finish(info.fps, (info.height, info.width), track_meta(path, face_index, info.rotation))


def _stack_meshes(meshes: list[np.ndarray | None]) -> np.ndarray | None:
    """(N, P, 2) with NaN where no face, or None when the tracker gives no mesh."""
    size = next((len(m) for m in meshes if m is not None), None)
    if size is None:
        return None
    return np.array([np.full((size, 2), np.nan) if m is None else m for m in meshes], np.float64)


def finish_track(landmarks: np.ndarray, boxes: np.ndarray, pupils: np.ndarray, valid: np.ndarray, cuts: np.ndarray,
                 fps, frame_size: tuple[int, int], tracker: str, config: TemporalConfig,
                 meta: dict | None = None, mesh: np.ndarray | None = None,
                 bridge_line: np.ndarray | None = None) -> FaceTrack:
    """Gap filling, smoothing and alignment transforms on raw per-frame detections.

    A mesh goes through the same gap filling and the same per-point filter as the landmarks, in
    the same call, so its iBUG-68 vertices stay exactly the smoothed landmarks.
    """
    valid = valid.copy()
    points = landmarks if mesh is None else np.concatenate([landmarks, mesh], axis=1)
    interpolated = fill_gaps([points, boxes, pupils], valid, cuts, config.max_gap)
    valid |= interpolated
    smooth_runs(points, pupils, boxes, valid, cuts, float(fps), config)
    landmarks = points[:, :68]
    mesh = None if mesh is None else points[:, 68:]
    transforms = np.full((len(valid), 2, 3), np.nan)
    for i in np.flatnonzero(valid):
        transforms[i] = alignment_transform(landmarks[i])
    return FaceTrack(boxes=boxes, landmarks=landmarks, pupils=pupils, valid=valid, transforms=transforms,
                     interpolated=interpolated, cuts=cuts, fps=fps, frame_size=frame_size, tracker=tracker,
                     meta={"temporal": asdict(config), **(meta or {})}, mesh=mesh, bridge_line=bridge_line)


def _per_frame(track: FaceTrack) -> dict[str, np.ndarray]:
    """The track's per-frame arrays by field name (a field a tracker adds follows automatically)."""
    n = len(track)
    return {f.name: value for f in fields(track)
            if isinstance(value := getattr(track, f.name), np.ndarray) and value.ndim >= 1 and len(value) == n}


def sub_track(track: FaceTrack, start: int, stop: int) -> FaceTrack:
    """Frames [start, stop) of ``track`` (views of its per-frame arrays)."""
    return replace(track, **{name: value[start:stop] for name, value in _per_frame(track).items()})


def track_prefix(track: FaceTrack, stop: int, length: int) -> FaceTrack:
    """``track``'s frames before ``stop`` as a track of ``length`` frames, invalid (NaN, False) from ``stop`` on."""
    out = {}
    for name, value in _per_frame(track).items():
        fill = False if value.dtype == bool else np.nan
        blank = np.full((length, *value.shape[1:]), fill, value.dtype)
        keep = min(stop, length, len(value))
        blank[:keep] = value[:keep]
        out[name] = blank
    return replace(track, **out)
