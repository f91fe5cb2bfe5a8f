"""Warp-backend `spfem edit` at 720p against the decode + encode floor, measured side by side.

Each clip's rows come from one run: the floor (decode + H.264 re-encode of the same clip, same preset,
audio carried; measured before and after the edits, the mean is the floor), the edit on a first run
(empty track cache: tracking included) and cached. On a shared machine absolute frames/s drift with the
load; the ratio to the floor measured next to it is the number to read. Clips: a 1280x720 landscape
talking clip and a 720x1280 portrait clip whose face fills the frame, taken from the real clips in
``$SPFEM_BENCH_CLIPS`` (default /work/clips) when present, else the bundled sample at that size.
Memory: peak RSS of a fresh process editing a 10 s and a 60 s clip (first run) must not grow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spfem_cli.benchmarks.runner import BenchRow

AREA = "edit"
MAX_FRAMES = 250
# (name, real clip, frame size (H, W), sample face scale when the clip is absent)
CLIPS = (("1280x720 landscape", "s18.mp4", (720, 1280), 2.6), ("720x1280 portrait, face fills the frame", "d3.mp4", (1280, 720), 6.5))

_MEMORY_SCRIPT = """
import sys
from pathlib import Path
from spfem_cli.benchmarks.runner import peak_rss_mib
from spfem_cli.demo.sample import make_talking_clip
from spfem_cli.edit.pipeline import EditRequest, edit_video
from spfem_cli.edit.targets import EditTarget
clip = make_talking_clip(Path(sys.argv[1]) / "m.mp4", seconds=float(sys.argv[2]), fps=25, size=(360, 640), face_scale=1.3)
edit_video(EditRequest(clip.path, Path(sys.argv[1]) / "o.mp4", EditTarget(emotion="happy"), backend="warp", progress=False))
print(peak_rss_mib())
"""


def peak_memory_mb(seconds: float) -> float:
    """Peak RSS (MiB) of a fresh process that builds a clip of ``seconds`` and edits it (640x360, first run)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SPFEM_HOME": str(Path(tmp) / "home")}
        out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, tmp, str(seconds)], check=True,
                             capture_output=True, text=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def fit_clip(src: Path, dst: Path, size: tuple[int, int], max_frames: int) -> Path:
    """``src`` scaled to cover ``size`` (H, W) and centre-cropped (bicubic), audio carried."""
    import cv2
    import numpy as np

    from spfem_cli.video import VideoWriter, iter_chunks, probe

    h, w = size
    with VideoWriter(dst, probe(src).fps, audio_from=src, preset="veryfast", overwrite=True) as writer:
        for chunk in iter_chunks(src, max_frames=max_frames):
            out = []
            for frame in chunk.frames:
                s = max(h / frame.shape[0], w / frame.shape[1])
                big = cv2.resize(frame, (round(frame.shape[1] * s), round(frame.shape[0] * s)), interpolation=cv2.INTER_CUBIC)
                y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
                out.append(big[y0:y0 + h, x0:x0 + w])
            writer.write(np.stack(out))
    return dst


def bench_clip(tmp: Path, name: str, real: str, size: tuple[int, int], face_scale: float) -> tuple[Path, str]:
    """The benchmark clip: the real one fitted to ``size`` when available, else the sample at that size."""
    source = Path(os.environ.get("SPFEM_BENCH_CLIPS", "/work/clips")) / real
    dst = tmp / f"{name.split()[0]}.mp4"
    if source.is_file():
        return fit_clip(source, dst, size, MAX_FRAMES), f"real clip {real}"
    from spfem_cli.demo.sample import make_talking_clip

    make_talking_clip(dst, seconds=MAX_FRAMES / 25, fps=25, size=size, face_scale=face_scale)
    return dst, "bundled sample"


def _timed_edit(clip: Path, out: Path, preset: str):
    from spfem_cli.edit.pipeline import EditRequest, edit_video
    from spfem_cli.edit.targets import EditTarget

    start = time.perf_counter()
    result = edit_video(EditRequest(clip, out, EditTarget(emotion="happy"), backend="warp", progress=False,
                                    preset=preset, overwrite=True))
    return time.perf_counter() - start, result


def _stage_note(result, frames: int) -> str:
    """Busy ms per frame of each stage, each in its own thread (they overlap: the sum exceeds the wall)."""
    parts = [f"{stage} {sec / frames * 1000:.1f}" for stage, sec in result.stage_seconds.items()]
    return "ms/frame per stage (own thread): " + ", ".join(parts)


def clip_rows(tmp: Path, name: str, real: str, size: tuple[int, int], face_scale: float,
              preset: str = "medium") -> list[BenchRow]:
    from spfem_cli.benchmarks.video import decode_reencode
    from spfem_cli.video import probe

    clip, origin = bench_clip(tmp, name, real, size, face_scale)
    n = probe(clip).n_frames
    floors = []
    start = time.perf_counter()
    decode_reencode(clip, tmp / "floor.mp4", preset=preset)
    floors.append(time.perf_counter() - start)
    home = os.environ.get("SPFEM_HOME")
    os.environ["SPFEM_HOME"] = str(tmp / f"home-{clip.stem}")        # empty track cache: a first run
    try:
        first, first_result = _timed_edit(clip, tmp / "first.mp4", preset)
        cached, cached_result = _timed_edit(clip, tmp / "cached.mp4", preset)
    finally:
        if home is None:
            os.environ.pop("SPFEM_HOME")
        else:
            os.environ["SPFEM_HOME"] = home
    start = time.perf_counter()
    decode_reencode(clip, tmp / "floor.mp4", preset=preset)
    floors.append(time.perf_counter() - start)
    floor = sum(floors) / 2
    what = f"{name}, {n} frames ({origin}), --preset {preset}"
    rows = [BenchRow(AREA, f"floor: decode + re-encode, {what}", n / floor, "frames/s",
                     f"before/after the edits: {n / floors[0]:.1f} / {n / floors[1]:.1f}")]
    for label, seconds, result in (("first run (tracking included)", first, first_result),
                                   ("cached track", cached, cached_result)):
        rows.append(BenchRow(AREA, f"spfem edit {label}, {what}", n / seconds, "frames/s",
                             f"{seconds / floor:.2f}x the floor; {_stage_note(result, n)}"))
    return rows


def startup_rows() -> list[BenchRow]:
    """Wall time of `spfem --help` and of an edit that fails on its input (start-up cost only)."""
    rows = []
    for what, args in (("spfem --help", ["--help"]),
                       ("spfem edit on a missing file (one-line error)", ["edit", "/nonexistent.mp4", "-e", "happy"])):
        times = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "spfem_cli.app", *args], capture_output=True, check=False)
            times.append(time.perf_counter() - start)
        rows.append(BenchRow(AREA, what, sorted(times)[2], "s", "median of 5 fresh processes"))
    return rows


def run() -> list[BenchRow]:
    rows = startup_rows()
    with tempfile.TemporaryDirectory() as tmp:
        for name, real, size, face_scale in CLIPS:
            rows += clip_rows(Path(tmp), name, real, size, face_scale)
    for seconds in (10, 60):
        rows.append(BenchRow(AREA, f"peak memory of sample + edit (first run), 640x360, {seconds} s clip",
                             peak_memory_mb(seconds), "MiB", "fresh process; flat in video length = streaming works"))
    return rows
