"""The pictures of BENCHMARKS.md's emotion area: each emotion on every clip, and every emotion on a few.

``python -m spfem_cli.benchmarks.emotion_sheets [CLIP ...] [--out docs/images]`` edits the first
``CLIP_SECONDS`` of each clip (the stretch the emotion bench scores; default the bench's eight held-out
clips, looked up like the bench's) with the real ``spfem edit`` pipeline at the default intensity, to each
emotion of the bench, once, and lays the same edits out three ways, as small palette PNGs (the clips are
LivePortrait's MIT-licensed examples; the pictures are downscaled so the repository stays small):

``emotion_<emotion>.png``   one emotion on every clip: source | edited, same frame (does it read on everyone?)
``emotions_<clip>.png``     one clip (of :data:`SHEET_CLIPS`): source | every emotion on the same frames
``reference_<ref>.png``     ``--reference`` of another person's clip onto each clip (reference | source | edited)
``eyes_widened.png``        the eyes and brows of every clip, source | surprised | fear, near the frame's own size
``tracker_lips.png``        where the re-tracked mouth and the picture disagree most: the lips of source and edit
                            enlarged, with the tracker's inner-lip points (is a re-tracked miss the picture's?)
``emotion_photos_<k>.png``  the photo bench's portraits (:mod:`spfem_cli.benchmarks.emotion_photos`), faces nobody
                            tuned on: source | every emotion, a row per photo (when the portraits are there)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spfem_cli.benchmarks.emotion import CLIP_SECONDS, DEFAULT_CLIPS_DIR, EMOTIONS, REFERENCE_CLIP, TALKING_CLIPS, bench_clips, trimmed
from spfem_cli.benchmarks.emotion_photos import bench_photos
from spfem_cli.edit.contact_sheet import (
    EditedTiles,
    contact_sheet,
    edited_tiles,
    emotion_across_clips,
    eye_openness,
    eyes_across_clips,
    face_crop_box,
    marked_lips,
    mouth_box,
    pick_frames,
    save_png,
    tiled_sheet,
    versions_across_clips,
)

SHEET_CLIPS = ("d3", "d9", "d12", "d18")   # held-out talking clips: two with glasses, one with a fringe
FRAMES = 2
TILE = 150
MAX_BYTES = 300_000


ACROSS_TILE = 180
EYE_TILE = 110
WIDENED = ("surprised", "fear")             # the emotions that raise the upper lids (the eyeball is redrawn)
TRACKER_EMOTION = "sad"                     # the emotion whose re-tracked mouth r is lowest in the bench
TRACKER_ROWS = 4
LIPS_TILE = 200
PHOTO_TILE = 100
PHOTO_ROWS = 10


def clip_tiles(clip: Path) -> EditedTiles:
    """The scored stretch of ``clip`` edited to every emotion of the bench: :data:`FRAMES` frames of each."""
    from spfem_cli.video import probe

    length = int(round(CLIP_SECONDS * float(probe(clip).fps)))
    return edited_tiles(clip, EMOTIONS, frames=FRAMES, length=length)


def write_sheet(clip: Path, tiles: EditedTiles, out_dir: Path, *, tile: int = TILE) -> Path:
    """``out_dir/emotions_<clip>.png`` for one clip; the tiles shrink until the file is under MAX_BYTES."""
    return save_small(tiled_sheet(tiles, ["source", *EMOTIONS], tile), out_dir / f"emotions_{clip.stem}.png")


def write_emotion_sheets(tiles: dict[str, EditedTiles], out_dir: Path, *, tile: int = ACROSS_TILE) -> list[Path]:
    """``out_dir/emotion_<emotion>.png`` for each emotion: that emotion on every clip, source | edited."""
    return [save_small(emotion_across_clips(tiles, emotion, tile_height=tile), out_dir / f"emotion_{emotion}.png")
            for emotion in EMOTIONS]


def write_eye_sheet(tiles: dict[str, EditedTiles], out_dir: Path, *, tile: int = EYE_TILE) -> Path:
    """``out_dir/eyes_widened.png``: each clip's eyes and brows, source | surprised | fear."""
    return save_small(eyes_across_clips(tiles, WIDENED, tile_height=tile), out_dir / "eyes_widened.png")


def write_photo_sheets(photos: list[Path], out_dir: Path, *, tile: int = PHOTO_TILE, rows: int = PHOTO_ROWS) -> list[Path]:
    """``out_dir/emotion_photos_<k>.png``: each photo in which a face is found, source | every emotion, ``rows``
    photos a sheet (more would shrink the tiles below what a person can judge)."""
    from spfem_cli.face.preprocess import cached_track

    tiles = {p.stem: edited_tiles(p, EMOTIONS, frames=1) for p in photos
             if cached_track(p, "mediapipe", progress=False).n_valid}
    names = list(tiles)
    return [save_small(versions_across_clips({n: tiles[n] for n in names[k:k + rows]}, EMOTIONS, tile_height=tile),
                       out_dir / f"emotion_photos_{k // rows + 1}.png") for k in range(0, len(names), rows)]


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


@dataclass(frozen=True)
class TrackerMiss:
    """The frame of one edit where the re-tracked opening and the drawn one (the picture's) differ most, in
    aligned px, with the lips of source and edit enlarged and each marked with its own tracker's inner-lip points."""

    clip: str
    frame: int
    time: str
    source: float
    retracked: float
    drawn: float
    tiles: tuple[np.ndarray, np.ndarray]

    @property
    def disagreement(self) -> float:
        return abs(self.retracked - self.drawn)


def worst_frame(retracked: np.ndarray, drawn: np.ndarray) -> int | None:
    """Index of the frame where the two openings differ most, over the frames both read (None: no such frame)."""
    n = min(len(retracked), len(drawn))
    gap = np.abs(np.asarray(retracked[:n], np.float64) - np.asarray(drawn[:n], np.float64))
    return int(np.nanargmax(gap)) if np.isfinite(gap).any() else None


def tracker_miss(clip: Path, emotion: str, workdir: Path) -> TrackerMiss | None:
    """:class:`TrackerMiss` of the bench's edit of ``clip`` to ``emotion`` (None: no frame read by both)."""
    from spfem_cli.edit.pipeline import EditRequest, edit_video
    from spfem_cli.edit.targets import EditTarget
    from spfem_cli.evaluate.drawn_opening import drawn_opening
    from spfem_cli.face.preprocess import cached_track
    from spfem_cli.face.tracking.track import track_video
    from spfem_cli.video import frames_by_index

    source = trimmed(clip, workdir)
    out = workdir / f"{clip.stem}.{emotion}.mp4"
    edit_video(EditRequest(source, out, EditTarget(emotion=emotion), backend="warp", tracker="mediapipe",
                           progress=False, overwrite=True, crf=14, preset="veryfast", perceive=False))
    track, out_track = cached_track(source, "mediapipe", progress=False), track_video(out, "mediapipe", progress=False)
    drawn, retracked = drawn_opening(source, out, track).openings, out_track.mouth_opening()
    i = worst_frame(retracked, drawn)
    if i is None:
        return None
    box = mouth_box(track.landmarks[i], track.frame_size)
    (a,), (b,) = frames_by_index(source, [i]).values(), frames_by_index(out, [i]).values()
    src_open = float(track.mouth_opening()[i])
    tiles = (marked_lips(a, track.landmarks[i], box, height=LIPS_TILE, caption=f"{src_open:.1f} px"),
             marked_lips(b, out_track.landmarks[i], box, height=LIPS_TILE,
                         caption=f"{retracked[i]:.1f} px (drawn {drawn[i]:.1f})"))
    return TrackerMiss(clip.stem, i, f"{i / float(track.fps):.1f}s", src_open, float(retracked[i]), float(drawn[i]), tiles)


def tracker_sheet(misses: list[TrackerMiss], emotion: str, *, rows: int = TRACKER_ROWS, tile: int = LIPS_TILE):
    """The ``rows`` edits whose re-tracked and drawn openings differ most, at that frame, worst first: source
    lips | edited lips, each with its own track's inner-lip points and opening (aligned px)."""
    worst = sorted(misses, key=lambda m: m.disagreement, reverse=True)[:rows]
    return contact_sheet([m.tiles for m in worst], ["source, as tracked", f"{emotion}, as re-tracked"],
                         row_labels=[f"{m.clip} {m.time}" for m in worst], tile_height=tile,
                         title="inner-lip opening (aligned px): the tracker's points against the picture")


def write_tracker_sheet(misses: list[TrackerMiss], emotion: str, out_dir: Path) -> Path:
    """``out_dir/tracker_lips.png``: :func:`tracker_sheet`."""
    return save_small(tracker_sheet(misses, emotion), out_dir / "tracker_lips.png")


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
    parser.add_argument("clips", nargs="*", help=f"clips or short names (default: {', '.join(TALKING_CLIPS)})")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args(argv)
    clips = bench_clips(",".join(args.clips or TALKING_CLIPS))
    tiles = {clip.stem: clip_tiles(clip) for clip in clips}
    written = write_emotion_sheets(tiles, args.out)
    written.append(write_eye_sheet(tiles, args.out))
    # Per-clip sheets: the named clips, or by default the few of SHEET_CLIPS (every emotion on one person).
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        misses = [tracker_miss(clip, TRACKER_EMOTION, Path(tmp)) for clip in clips]
        written.append(write_tracker_sheet([m for m in misses if m is not None], TRACKER_EMOTION, args.out))
        written += write_photo_sheets(bench_photos(), args.out)
        clips = [c for c in clips if args.clips or c.stem in SHEET_CLIPS] or clips
        written += [write_sheet(clip, tiles[clip.stem], args.out) for clip in clips]
        reference = DEFAULT_CLIPS_DIR / f"{REFERENCE_CLIP}.mp4"
        if reference.is_file():
            written.append(write_reference_sheet(reference, clips, args.out, Path(tmp)))
    for path in written:
        print(f"{path}  ({path.stat().st_size // 1000} KB)")
    return written


if __name__ == "__main__":
    from spfem_cli.native_logs import native_logs_filtered

    with native_logs_filtered():
        main()
