"""`track_video`: stream a video through a tracker and return one cleaned-up :class:`FaceTrack`.

Memory stays flat: frames are decoded in chunks and dropped; only the per-frame landmarks are kept.
Face choice: the largest face by default, ``face_index`` = N picks the N-th largest when the face is
(re)acquired; afterwards the same face is followed by box overlap, so two faces of similar size do
not swap when their sizes cross. A scene cut forgets the followed face.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from spfem_cli.errors import SpfemError
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


def track_video(path: Path, tracker: str | Tracker = "mediapipe", face_index: int = 0, progress: bool = True, *,
                config: TemporalConfig | None = None, chunk_size: int = 32,
                max_frames: int | None = None) -> FaceTrack:
    """Track one face through ``path``; frames without it are marked invalid (arrays hold NaN there)."""
    if face_index < 0:
        raise SpfemError("--face must be 0 (largest face) or a positive index")
    config = config or TemporalConfig()
    info = probe(path)
    owned = isinstance(tracker, str)
    engine = get_tracker(tracker) if owned else tracker
    lms, boxes, pupils, valid, cuts = [], [], [], [], []
    meshes: list[np.ndarray | None] = []
    previous_sig = None
    follow_box: np.ndarray | None = None
    try:
        with frame_progress(progress, info.n_frames, f"tracking ({engine.name})") as advance:
            for chunk in iter_chunks(path, chunk_size, max_frames=max_frames):
                for frame in chunk.frames:
                    sig = frame_signature(frame)
                    cut = is_cut(previous_sig, sig, config)
                    previous_sig = sig
                    if cut:
                        follow_box = None
                    det = choose_face(engine.detect(frame), follow_box, face_index)
                    cuts.append(cut)
                    if det is None:
                        lms.append(np.full((68, 2), np.nan))
                        boxes.append(np.full(4, np.nan))
                        pupils.append(np.full((2, 2), np.nan))
                        meshes.append(None)
                        valid.append(False)
                    else:
                        follow_box = det.box
                        lms.append(det.landmarks)
                        boxes.append(det.box)
                        pupils.append(det.pupils)
                        meshes.append(det.mesh)
                        valid.append(True)
                advance(len(chunk.frames))
    finally:
        if owned:
            engine.close()
    return finish_track(np.array(lms, np.float64), np.array(boxes, np.float64), np.array(pupils, np.float64),
                        np.array(valid, bool), np.array(cuts, bool), info.fps, (info.height, info.width),
                        engine.name, config, meta={"source": str(path), "face_index": face_index,
                                                   "rotation": info.rotation}, mesh=_stack_meshes(meshes))


def _stack_meshes(meshes: list[np.ndarray | None]) -> np.ndarray | None:
    """(N, P, 2) with NaN where no face, or None when the tracker gives no mesh."""
    size = next((len(m) for m in meshes if m is not None), None)
    if size is None:
        return None
    return np.array([np.full((size, 2), np.nan) if m is None else m for m in meshes], np.float64)


def finish_track(landmarks: np.ndarray, boxes: np.ndarray, pupils: np.ndarray, valid: np.ndarray, cuts: np.ndarray,
                 fps, frame_size: tuple[int, int], tracker: str, config: TemporalConfig,
                 meta: dict | None = None, mesh: np.ndarray | None = None) -> FaceTrack:
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
                     meta={"temporal": asdict(config), **(meta or {})}, mesh=mesh)
