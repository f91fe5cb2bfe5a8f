"""The floor every edit is compared with: decode + re-encode of a 720p 10 s clip with audio."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from spfem_cli.benchmarks.runner import BenchRow

AREA = "video"


def make_720p_clip(path: Path, seconds: float = 10.0):
    """The real-face sample at 1280x720 (face at a realistic size), with audio."""
    from spfem_cli.demo.sample import make_talking_clip

    return make_talking_clip(path, seconds=seconds, fps=25, size=(720, 1280), face_scale=2.6)


def decode_reencode(src: Path, dst: Path, preset: str = "medium") -> int:
    """Stream every frame through decode and H.264 encode (crf 18, ``preset``), carrying the audio;
    returns the frame count. The same I/O as an edit, without the face work: the edit's floor."""
    from spfem_cli.video import VideoWriter, iter_chunks, probe

    n = 0
    with VideoWriter(dst, probe(src).fps, audio_from=src, overwrite=True, preset=preset) as writer:
        for chunk in iter_chunks(src):
            writer.write(chunk.frames)
            n += len(chunk.frames)
    return n


def run() -> list[BenchRow]:
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_720p_clip(Path(tmp) / "s720.mp4")
        start = time.perf_counter()
        n = decode_reencode(clip.path, Path(tmp) / "copy.mp4")
        sec = time.perf_counter() - start
    return [BenchRow(AREA, "decode + re-encode (H.264 crf 18, preset medium, audio remuxed), 1280x720, 10 s",
                     n / sec, "frames/s", "the floor for edit throughput")]
