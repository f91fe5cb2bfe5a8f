"""Warp-backend edit speed at 720p: per-frame render + paste-back, and the whole `edit` command."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from spfem_cli.benchmarks.runner import BenchRow, timeit

AREA = "edit"

_MEMORY_SCRIPT = """
import sys
from pathlib import Path
from spfem_cli.benchmarks.runner import peak_rss_mib
from spfem_cli.edit.pipeline import EditRequest, edit_video
from spfem_cli.edit.targets import EditTarget
from spfem_cli.demo.sample import make_talking_clip
clip = make_talking_clip(Path(sys.argv[1]) / "m.mp4", seconds=float(sys.argv[2]), fps=25, size=(360, 640), face_scale=1.3)
edit_video(EditRequest(clip.path, Path(sys.argv[1]) / "o.mp4", EditTarget(emotion="happy"), backend="warp", progress=False))
print(peak_rss_mib())
"""


def peak_memory_mb(seconds: float) -> float:
    """Peak RSS (MiB) of a fresh process that builds a clip of ``seconds`` and edits it (640x360)."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, tmp, str(seconds)], check=True,
                             capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def run() -> list[BenchRow]:
    from spfem_cli.backends.warp.backend import WarpBackend
    from spfem_cli.backends.warp.mesh_warp import warp_region_mask
    from spfem_cli.demo.sample import make_talking_clip
    from spfem_cli.edit.pipeline import EditRequest, edit_video
    from spfem_cli.edit.targets import EditTarget
    from spfem_cli.face.blend import paste_back
    from spfem_cli.face.preprocess import cached_track
    from spfem_cli.video import read_frames

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_talking_clip(Path(tmp) / "s720.mp4", seconds=2.0, fps=25, size=(720, 1280), face_scale=2.6)
        track = cached_track(clip.path, "mediapipe", progress=False)
        backend = WarpBackend()
        seq = backend.encode(track)
        edited = backend.manipulate(seq, backend.plan(seq, EditTarget(emotion="happy"), float(track.fps)))
        frames, _ = read_frames(clip.path, max_frames=10)

        def one_frame(i: int = 5):
            face, matrix = backend.render(frames[i], track.transforms[i], seq.landmarks[i], edited.landmarks[i])
            mask = warp_region_mask(seq.landmarks[i] * face.shape[0] / 256.0, face.shape[0])
            return paste_back(frames[i], face, matrix, mask=mask)

        sec = timeit(one_frame, repeat=7)
        rows.append(BenchRow(AREA, "warp render + Laplacian paste-back, 1280x720 frame", sec * 1000, "ms/frame",
                             f"crop supersampled x{backend.supersample(track.transforms[5])}"))
        for preset in ("medium", "veryfast"):
            start = time.perf_counter()
            edit_video(EditRequest(clip.path, Path(tmp) / f"out_{preset}.mp4", EditTarget(emotion="happy"),
                                   backend="warp", progress=False, preset=preset))
            total = time.perf_counter() - start
            size_kib = (Path(tmp) / f"out_{preset}.mp4").stat().st_size / 1024
            rows.append(BenchRow(AREA, f"spfem edit end to end (tracking cached), 1280x720, 50 frames, --preset {preset}",
                                 len(clip.mouth_signal) / total, "frames/s",
                                 f"decode + render + paste-back + H.264 crf 18 + audio; {size_kib:.0f} KiB"))
    for seconds in (10, 60):
        rows.append(BenchRow(AREA, f"peak memory of sample + edit, 640x360, {seconds} s clip", peak_memory_mb(seconds), "MiB",
                             "fresh process; flat in video length = streaming works"))
    return rows
