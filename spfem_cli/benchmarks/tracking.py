"""Tracking and paste-back speed at 720p on the real-face sample (CPU unless noted).

Rows: whole `track_video` throughput per tracker (decode + landmarks + temporal clean-up), and
paste-back ms/frame (Laplacian and copy). FAN runs only when its weights are present; otherwise
its row says "not measured" with no value pretending otherwise.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from spfem_cli.benchmarks.runner import BenchRow, timeit

AREA = "tracking"


def run() -> list[BenchRow]:
    from spfem_cli.demo.sample import make_talking_clip
    from spfem_cli.face.align import warp_to_aligned
    from spfem_cli.face.blend import paste_back
    from spfem_cli.face.tracking import get_tracker, track_video
    from spfem_cli.video import read_frames
    from spfem_cli.weights import WeightsError

    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_talking_clip(Path(tmp) / "s720.mp4", seconds=2.0, fps=25, size=(720, 1280), face_scale=2.6,
                                 audio=False)
        n = len(clip.mouth_signal)
        for name in ("mediapipe", "fan"):
            try:
                engine = get_tracker(name)
            except WeightsError as exc:
                rows.append(BenchRow(AREA, f"track_video {name}, 1280x720", float("nan"), "frames/s",
                                     f"not measured: {exc}"))
                continue
            with engine:
                start = time.perf_counter()
                track = track_video(clip.path, engine, progress=False)
                seconds = time.perf_counter() - start
            rows.append(BenchRow(AREA, f"track_video {name}, 1280x720", n / seconds, "frames/s",
                                 f"{n} frames, decode + landmarks + smoothing, {track.n_valid}/{n} with a face"))
        frames, _ = read_frames(clip.path, max_frames=10)
        frame, matrix = frames[5], track.transforms[5]
        face = warp_to_aligned(frame, matrix)
        for mode in ("laplacian", "copy"):
            sec = timeit(lambda m=mode: paste_back(frame, face, matrix, mode=m), repeat=15, warmup=2)
            rows.append(BenchRow(AREA, f"paste_back {mode}, 256² face into 1280x720", sec * 1000, "ms/frame",
                                 f"face box {int(track.boxes[5, 2] - track.boxes[5, 0])} px wide"))
        sec = timeit(lambda: warp_to_aligned(frame, matrix), repeat=15, warmup=2)
        rows.append(BenchRow(AREA, "warp_to_aligned 1280x720 → 256²", sec * 1000, "ms/frame", "bicubic"))
    return rows
