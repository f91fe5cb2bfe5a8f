"""How much of each action unit the MediaPipe mesh sees: the source of ``facs.TRACKER_GAIN``.

Each AU is applied alone, at :data:`ACTIVATION`, to sampled frames of real clips with the warp's own
render path (in memory); source and edit are meshed again (single images) and the edit's mesh is read
back on the AU basis against the source's (:func:`spfem_cli.backends.warp.facs.au_activations`). The
median read-back over frames, divided by the activation applied, is the gain: 1 = the tracker sees the
whole motion. Clips: the tuning clips :data:`GAIN_CLIPS` from the default clip folder (never the
emotion bench's held-out eight), else the bundled sample.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from spfem_cli.benchmarks.emotion import DEFAULT_CLIPS_DIR, sample_clip, trimmed
from spfem_cli.benchmarks.runner import BenchRow

AREA = "tracker_gain"
GAIN_CLIPS = ("d0", "d13", "d14", "s18", "s20")
ACTIVATION = 0.8
FRAMES_PER_CLIP = 8


def _meshes(tracker, frames: list[np.ndarray]) -> list[np.ndarray | None]:
    """Each frame's face mesh in the aligned 256² frame (None where no face is found)."""
    from spfem_cli.face.align import alignment_transform, apply_affine

    out = []
    for frame in frames:
        found = tracker.detect(frame)
        out.append(apply_affine(alignment_transform(found[0].landmarks), found[0].mesh) if found else None)
    return out


def _with_unit(frames: list[np.ndarray], idx: np.ndarray, track, unit: str) -> list[np.ndarray]:
    """``frames`` (video frames ``idx`` of ``track``'s clip) rendered with AU ``unit`` alone at ACTIVATION."""
    from spfem_cli.backends.warp import facs
    from spfem_cli.backends.warp import render as warp_render
    from spfem_cli.backends.warp.backend import WarpBackend, WarpPlan

    backend = WarpBackend()
    seq = backend.encode(track)
    activations = np.zeros((len(seq.valid), len(facs.AU_NAMES)))
    activations[:, facs.AU_NAMES.index(unit)] = ACTIVATION
    plan = WarpPlan(activations, facs.field_of(activations, seq.landmarks.shape[1]), {}, {unit: ACTIVATION})
    return warp_render.render_frames(backend, track, plan, frames, idx)


def measure(clips: list[Path], workdir: Path) -> dict[str, tuple[float, int]]:
    """AU → (median read-back / ACTIVATION, frames read)."""
    from spfem_cli.backends.warp import facs
    from spfem_cli.face.expression import frames_at, sample_indices
    from spfem_cli.face.preprocess import cached_track
    from spfem_cli.face.tracking.mediapipe_tracker import MediaPipeTracker

    reads: dict[str, list[float]] = {unit: [] for unit in facs.AU_NAMES}
    with MediaPipeTracker() as tracker:
        for clip in clips:
            track = cached_track(clip, "mediapipe", progress=False)
            frames, idx = frames_at(clip, sample_indices(track.valid, FRAMES_PER_CLIP))
            before = _meshes(tracker, frames)
            for unit in facs.AU_NAMES:
                column = facs.AU_NAMES.index(unit)
                for src, out in zip(before, _meshes(tracker, _with_unit(frames, idx, track, unit)), strict=True):
                    if src is not None and out is not None:
                        reads[unit].append(float(facs.au_activations(out[None], rest=src)[0, column]))
    return {unit: (float(np.median(v)) / ACTIVATION if v else float("nan"), len(v)) for unit, v in reads.items()}


def run() -> list[BenchRow]:
    from spfem_cli.backends.warp import facs

    with tempfile.TemporaryDirectory() as tmp:
        found = [DEFAULT_CLIPS_DIR / f"{name}.mp4" for name in GAIN_CLIPS]
        if all(p.is_file() for p in found):
            clips, where = [trimmed(p, Path(tmp)) for p in found], f"tuning clips {' '.join(GAIN_CLIPS)}"
        else:
            clips, where = [sample_clip(Path(tmp))], "bundled sample only"
        gains = measure(clips, Path(tmp))
    return [BenchRow(AREA, f"MediaPipe mesh read-back of {unit} applied alone at {ACTIVATION:g}", gain, "gain",
                     f"{n} frames of {where}; facs.TRACKER_GAIN has {facs.TRACKER_GAIN[unit]:.2f}")
            for unit, (gain, n) in gains.items()]
