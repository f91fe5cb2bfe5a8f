"""The pictures of BENCHMARKS.md's emotion area: one contact sheet per real clip, source | every emotion.

``python -m spfem_cli.benchmarks.emotion_sheets [CLIP ...] [--out docs/images]`` edits the first
``CLIP_SECONDS`` of each clip (the stretch the emotion bench scores; default clips :data:`SHEET_CLIPS`,
looked up like the bench's) with the real ``spfem edit`` pipeline at the default intensity, to each
emotion of the bench, and writes
``emotions_<clip>.png``: the face region of the same frames, labelled, as a small palette PNG (the clips
are LivePortrait's MIT-licensed examples; the pictures are downscaled so the repository stays small).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spfem_cli.benchmarks.emotion import CLIP_SECONDS, EMOTIONS, bench_clips
from spfem_cli.edit.contact_sheet import emotion_sheet, save_png

SHEET_CLIPS = ("d3", "d9", "d12", "d18")   # held-out talking clips: two with glasses, one with a fringe
FRAMES = 2
TILE = 150
MAX_BYTES = 300_000


def write_sheet(clip: Path, out_dir: Path, *, tile: int = TILE) -> Path:
    """``out_dir/emotions_<clip>.png`` for one clip; the tiles shrink until the file is under MAX_BYTES."""
    from spfem_cli.video import probe

    length = int(round(CLIP_SECONDS * float(probe(clip).fps)))
    sheet, _ = emotion_sheet(clip, EMOTIONS, frames=FRAMES, length=length, tile_height=tile)
    path = out_dir / f"emotions_{clip.stem}.png"
    while True:
        save_png(path, sheet, colors=256)
        if path.stat().st_size <= MAX_BYTES or sheet.shape[0] < 200:
            return path
        import cv2

        sheet = cv2.resize(sheet, None, fx=0.85, fy=0.85, interpolation=cv2.INTER_AREA)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", help=f"clips or short names (default: {', '.join(SHEET_CLIPS)})")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args(argv)
    clips = bench_clips(",".join(args.clips or SHEET_CLIPS))
    written = [write_sheet(clip, args.out) for clip in clips]
    for path in written:
        print(f"{path}  ({path.stat().st_size // 1000} KB)")
    return written


if __name__ == "__main__":
    main()
