"""The pictures of BENCHMARKS.md's emotion area: one contact sheet per real clip, source | every emotion.

``python -m spfem_cli.benchmarks.emotion_sheets [CLIP ...] [--out docs/images]`` edits the first
``CLIP_SECONDS`` of each clip (the stretch the emotion bench scores; default clips :data:`SHEET_CLIPS`,
looked up like the bench's) with the real ``spfem edit`` pipeline at the default intensity, to each
emotion of the bench, and writes
``emotions_<clip>.png``: the face region of the same frames, labelled, as a small palette PNG (the clips
are LivePortrait's MIT-licensed examples; the pictures are downscaled so the repository stays small),
and ``reference_<ref>.png``: ``--reference`` of another person's clip onto each clip (reference |
source | edited, one row per clip, same frame for source and edit).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spfem_cli.benchmarks.emotion import CLIP_SECONDS, DEFAULT_CLIPS_DIR, EMOTIONS, REFERENCE_CLIP, bench_clips, trimmed
from spfem_cli.edit.contact_sheet import contact_sheet, emotion_sheet, eye_openness, face_crop_box, pick_frames, save_png

SHEET_CLIPS = ("d3", "d9", "d12", "d18")   # held-out talking clips: two with glasses, one with a fringe
FRAMES = 2
TILE = 150
MAX_BYTES = 300_000


def write_sheet(clip: Path, out_dir: Path, *, tile: int = TILE) -> Path:
    """``out_dir/emotions_<clip>.png`` for one clip; the tiles shrink until the file is under MAX_BYTES."""
    from spfem_cli.video import probe

    length = int(round(CLIP_SECONDS * float(probe(clip).fps)))
    sheet, _ = emotion_sheet(clip, EMOTIONS, frames=FRAMES, length=length, tile_height=tile)
    return save_small(sheet, out_dir / f"emotions_{clip.stem}.png")


def _face_crop(frames_of: Path, track_of: Path, index: int | None = None) -> tuple[int, object]:
    """(frame index, face crop) of clip ``frames_of``, boxed by the face of clip ``track_of`` (the source
    for an edit, so both show the same pixels): frame ``index``, or its most open-eyed middle frame."""
    from spfem_cli.face.preprocess import cached_track
    from spfem_cli.video import frames_by_index

    track = cached_track(track_of, "mediapipe", progress=False)
    i = pick_frames(track.valid, 1, eye_openness(track.landmarks))[0] if index is None else index
    frame = frames_by_index(frames_of, [i])[i]        # the one frame shown, not the whole clip in memory
    x0, y0, x1, y1 = face_crop_box(track.boxes[[i]], frame.shape[:2])
    return i, frame[y0:y1, x0:x1]


def write_reference_sheet(reference: Path, clips: list[Path], out_dir: Path, workdir: Path, *, tile: int = TILE) -> Path:
    """``out_dir/reference_<ref>.png``: reference | source | ``spfem edit --reference`` output, a row per clip."""
    from spfem_cli.edit.pipeline import EditRequest, edit_video
    from spfem_cli.edit.targets import EditTarget

    ref_clip = trimmed(reference, workdir)
    _, ref_face = _face_crop(ref_clip, ref_clip)
    rows = []
    for clip in clips:
        source = trimmed(clip, workdir)
        out = workdir / f"{clip.stem}.reference.mp4"
        edit_video(EditRequest(source, out, EditTarget(reference=ref_clip), backend="warp", progress=False,
                               overwrite=True, crf=14, preset="veryfast", perceive=False))
        i, src_face = _face_crop(source, source)
        rows.append([ref_face, src_face, _face_crop(out, source, i)[1]])
    sheet = contact_sheet(rows, [f"reference ({reference.stem})", "source", "edited"],
                          row_labels=[c.stem for c in clips], tile_height=tile)
    return save_small(sheet, out_dir / f"reference_{reference.stem}.png")


def save_small(sheet, path: Path) -> Path:
    """Save ``sheet`` as a palette PNG, shrinking it until the file is under MAX_BYTES."""
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
    reference = DEFAULT_CLIPS_DIR / f"{REFERENCE_CLIP}.mp4"
    if reference.is_file():
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            written.append(write_reference_sheet(reference, clips, args.out, Path(tmp)))
    for path in written:
        print(f"{path}  ({path.stat().st_size // 1000} KB)")
    return written


if __name__ == "__main__":
    main()
