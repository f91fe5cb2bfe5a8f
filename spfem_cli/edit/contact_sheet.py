"""Contact sheets: the same frames of a clip, source and each edit side by side, labelled, as one picture.

A person judges an expression edit by comparing it with the source on the same frames; this is the
picture for that (``make demo``, BENCHMARKS.md). :func:`contact_sheet` only lays out images;
:func:`emotion_sheet` runs the real ``spfem edit`` pipeline on a stretch of a clip for each emotion
and lays out the face region of a few of its frames, so the sheet shows exactly what the tool outputs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from spfem_cli.video import IMAGE_FORMATS, AtomicOutput

BACKGROUND = (24, 24, 24)
INK = (235, 235, 235)
GAP = 2


def _fit(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    if h == height:
        return image
    interp = cv2.INTER_AREA if h > height else cv2.INTER_CUBIC
    return cv2.resize(image, (max(1, round(w * height / h)), height), interpolation=interp)


def _label(width: int, height: int, text: str, font_px: int | None = None) -> np.ndarray:
    """``text`` centred in a ``height`` × ``width`` band; letters ``font_px`` tall (default: the band's)."""
    band = np.full((height, width, 3), BACKGROUND, np.uint8)
    font_px = font_px or height
    scale = font_px / 40.0
    thick = max(1, round(font_px / 22))
    while True:
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        if tw <= width - 4 or scale < 0.3:
            break
        scale *= 0.9
    org = ((width - tw) // 2, (height + th) // 2)
    cv2.putText(band, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, INK, thick, cv2.LINE_AA)
    return band


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], *,
                  row_labels: Sequence[str] | None = None, tile_height: int = 160,
                  title: str | None = None) -> np.ndarray:
    """One RGB image: a header of column ``labels`` over ``rows`` of RGB frames (one per column).

    Every tile is scaled to ``tile_height`` (aspect kept); columns take the width of their first row's
    tile. ``row_labels`` (e.g. frame times) go in a left margin; ``title`` in a line above the header.
    """
    if not rows:
        raise ValueError("a contact sheet needs at least one row")
    n_cols = len(labels)
    if any(len(r) != n_cols for r in rows):
        raise ValueError(f"every row needs {n_cols} frames (one per label)")
    tiles = [[_fit(np.asarray(im, np.uint8), tile_height) for im in row] for row in rows]
    widths = [t.shape[1] for t in tiles[0]]
    label_h = max(18, tile_height // 7)
    margin = 0
    if row_labels is not None:
        margin = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, label_h / 40.0, 1)[0][0] for t in row_labels) + 10
    width = margin + sum(widths) + GAP * (n_cols + 1)
    parts = []
    if title:
        parts.append(_label(width, label_h, title))
    header = np.full((label_h, width, 3), BACKGROUND, np.uint8)
    x = margin + GAP
    for text, w in zip(labels, widths, strict=True):
        header[:, x:x + w] = _label(w, label_h, text)
        x += w + GAP
    parts.append(header)
    for i, row in enumerate(tiles):
        band = np.full((tile_height + GAP, width, 3), BACKGROUND, np.uint8)
        if row_labels is not None:
            band[:tile_height, :margin] = _label(margin, tile_height, row_labels[i], font_px=label_h)
        x = margin + GAP
        for tile, w in zip(row, widths, strict=True):
            tile = tile[:, :w] if tile.shape[1] >= w else cv2.resize(tile, (w, tile_height))
            band[:tile_height, x:x + w] = tile
            x += w + GAP
        parts.append(band)
    return np.concatenate(parts, axis=0)


def save_png(path: Path, image: np.ndarray, *, colors: int | None = None) -> Path:
    """Write an RGB image as PNG (atomically); ``colors`` quantises to a palette (small files for docs)."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(image, np.uint8))
    if colors is not None:
        picture = picture.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicOutput(path, suffix=".png") as tmp:
        picture.save(tmp, format="PNG", optimize=True)
    return path


@dataclass(frozen=True)
class SheetFrames:
    """What :func:`emotion_sheet` laid out: the frame indices used and the face crop (x0, y0, x1, y1)."""

    indices: list[int]
    box: tuple[int, int, int, int]


def face_crop_box(boxes: np.ndarray, frame_size: tuple[int, int], scale: float = 1.45) -> tuple[int, int, int, int]:
    """One square crop (x0, y0, x1, y1) holding every given face box (N, 4), enlarged, inside the frame."""
    b = np.asarray(boxes, np.float64)
    x0, y0 = np.nanmin(b[:, 0]), np.nanmin(b[:, 1])
    x1, y1 = np.nanmax(b[:, 2]), np.nanmax(b[:, 3])
    h, w = frame_size
    side = min(max(x1 - x0, y1 - y0) * scale, h, w)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.05 * side
    left = int(round(np.clip(cx - side / 2, 0, w - side)))
    top = int(round(np.clip(cy - side / 2, 0, h - side)))
    return left, top, left + int(side), top + int(side)


def eye_band_box(landmarks: np.ndarray, frame_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """One crop (x0, y0, x1, y1) of the eyes and brows of every given face (iBUG-68 landmarks, (N, 68, 2)),
    with a margin, inside the frame: where a widened eye or a raised brow is judged, at the frame's own size."""
    pts = np.asarray(landmarks, np.float64)[:, np.r_[17:27, 36:48]].reshape(-1, 2)     # brows and eyes
    x0, y0 = np.nanmin(pts, 0)
    x1, y1 = np.nanmax(pts, 0)
    pad_x, pad_y = 0.12 * (x1 - x0), 0.35 * (y1 - y0)
    h, w = frame_size
    return (int(max(x0 - pad_x, 0)), int(max(y0 - pad_y, 0)), int(min(x1 + pad_x, w)), int(min(y1 + pad_y, h)))


def mouth_box(landmarks: np.ndarray, frame_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A crop (x0, y0, x1, y1) of one face's lips (iBUG-68 points 48-67) with half the mouth's width around
    them, inside the frame: where an inner-lip point off the lips' edge shows."""
    pts = np.asarray(landmarks, np.float64)[48:68]
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    pad = 0.5 * (x1 - x0)
    h, w = frame_size
    return (int(max(x0 - pad, 0)), int(max(y0 - pad, 0)), int(min(x1 + pad, w)), int(min(y1 + pad, h)))


def marked_lips(frame: np.ndarray, landmarks: np.ndarray, box: tuple[int, int, int, int], *, height: int = 240,
                caption: str = "") -> np.ndarray:
    """``frame``'s ``box`` enlarged to ``height`` px, pixels kept square (nearest: no smoothing blurs the lips'
    edge), with a face's inner-lip points (iBUG-68 60-67) drawn on it: upper lip yellow, lower blue,
    corners white; ``caption`` in its top left."""
    x0, y0, x1, y1 = box
    zoom = height / max(y1 - y0, 1)
    tile = np.ascontiguousarray(cv2.resize(frame[y0:y1, x0:x1], (max(1, round((x1 - x0) * zoom)), height),
                                           interpolation=cv2.INTER_NEAREST))
    colours = {60: (255, 255, 255), 64: (255, 255, 255), **dict.fromkeys((61, 62, 63), (255, 235, 0)),
               **dict.fromkeys((65, 66, 67), (0, 200, 255))}
    for index, colour in colours.items():
        x, y = (np.asarray(landmarks[index], np.float64) - (x0, y0) + 0.5) * zoom
        cv2.circle(tile, (int(round(x)), int(round(y))), max(2, height // 50), colour, -1, cv2.LINE_AA)
    if caption:
        scale = height / 400
        org, thick = (6, int(30 * scale) + 4), max(1, round(2 * scale))
        for colour, width in ((BACKGROUND, thick + 3), (INK, thick)):      # outlined, legible on skin
            cv2.putText(tile, caption, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, width, cv2.LINE_AA)
    return tile


def pick_frames(valid: np.ndarray, count: int, score: np.ndarray | None = None) -> list[int]:
    """``count`` frames spread over the valid ones: in the middle half of each of ``count`` equal stretches the
    frame of highest ``score`` (e.g. eye openness, so no sheet shows a blink), else the stretch's middle frame."""
    idx = np.flatnonzero(valid)
    if len(idx) == 0:
        raise ValueError("no frame with a face to show")
    picks = []
    for part in np.array_split(idx, min(count, len(idx))):
        middle = part[len(part) // 4: len(part) - len(part) // 4]      # keep the picks apart
        if score is None or not np.isfinite(score[middle]).any():
            picks.append(int(middle[len(middle) // 2]))
        else:
            picks.append(int(middle[np.nanargmax(score[middle])]))
    return picks


def eye_openness(landmarks: np.ndarray) -> np.ndarray:
    """Eye aspect ratio (lid gap over eye width) of the more closed eye per frame, from iBUG-68 landmarks
    (T, 68, 2): low on a blink and on a wink."""
    lm = np.asarray(landmarks, np.float64)
    ratios = []
    for a, b, c, d, left, right in ((37, 41, 38, 40, 36, 39), (43, 47, 44, 46, 42, 45)):
        gap = np.linalg.norm(lm[:, a] - lm[:, b], axis=-1) + np.linalg.norm(lm[:, c] - lm[:, d], axis=-1)
        ratios.append(gap / (2 * np.linalg.norm(lm[:, left] - lm[:, right], axis=-1) + 1e-9))
    return np.min(ratios, axis=0)


@dataclass(frozen=True)
class EditedTiles:
    """The face region of the same frames of a clip: the source's and each edit's (``tiles[name][k]`` is
    frame ``frames.indices[k]``), with the frames' times, and the eyes and brows of the same frames at the
    frame's own size (``eyes[name][k]``). One set of real edits serves every layout."""

    tiles: dict[str, list[np.ndarray]]
    times: list[str]
    frames: SheetFrames
    eyes: dict[str, list[np.ndarray]] = field(default_factory=dict)


def edited_tiles(source: Path, emotions: Sequence[str], *, frames: int = 3, start: int = 0,
                 length: int | None = None, intensity: float | None = None, backend: str = "warp") -> EditedTiles:
    """Face crops of ``source`` and of a real ``spfem edit`` to each of ``emotions``, on the same frames.

    Each edit covers frames ``start``..``start+length`` of the clip (the whole clip when ``length`` is
    None) at ``intensity`` (default: the CLI's); the ``frames`` frames shown are the most open-eyed ones,
    spread over the stretch, and one square crop around the face serves all of them.
    """
    from spfem_cli.edit.pipeline import EditRequest, edit_video
    from spfem_cli.edit.targets import EditTarget
    from spfem_cli.face.preprocess import cached_track
    from spfem_cli.video import cut_span, frames_by_index, probe

    with tempfile.TemporaryDirectory(prefix="spfem-sheet-") as tmp:
        clip = Path(source)
        if start or length is not None:
            info = probe(clip)
            n = (length if length is not None else info.n_frames - start)
            # frames start..start+n-1, cut by time half a frame early so rounding never drops one
            fps = float(info.fps)
            clip = cut_span(clip, Path(tmp) / "stretch.mp4", max(0.0, (start - 0.5) / fps), (start + n - 0.5) / fps)
        track = cached_track(clip, "mediapipe", progress=False)
        chosen = pick_frames(track.valid, frames, eye_openness(track.landmarks))
        box = face_crop_box(track.boxes[chosen], track.frame_size)
        x0, y0, x1, y1 = box
        ex0, ey0, ex1, ey1 = eye_band_box(track.landmarks[chosen], track.frame_size)

        def crops(video: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:   # only the shown frames are kept
            shown = frames_by_index(video, chosen)
            return [shown[i][y0:y1, x0:x1] for i in chosen], [shown[i][ey0:ey1, ex0:ex1] for i in chosen]

        tiles, eyes = {}, {}
        tiles["source"], eyes["source"] = crops(clip)
        for emotion in emotions:
            out = Path(tmp) / f"{emotion}{clip.suffix if clip.suffix.lower() in IMAGE_FORMATS else '.mp4'}"   # a photo gives a photo
            target = EditTarget(emotion=emotion) if intensity is None else EditTarget(emotion=emotion, intensity=intensity)
            edit_video(EditRequest(clip, out, target, backend=backend, progress=False, overwrite=True, crf=14,
                                   preset="veryfast", perceive=False))      # the sheet shows pictures, not the report
            tiles[emotion], eyes[emotion] = crops(out)
    fps = float(track.fps)
    return EditedTiles(tiles, [f"{(start + i) / fps:.1f}s" for i in chosen], SheetFrames([start + i for i in chosen], box),
                       eyes)


def emotion_sheet(source: Path, emotions: Sequence[str], *, frames: int = 3, start: int = 0,
                  length: int | None = None, tile_height: int = 160, intensity: float | None = None,
                  backend: str = "warp") -> tuple[np.ndarray, SheetFrames]:
    """Contact sheet of ``source`` | each of ``emotions`` on the same ``frames`` frames, face region only
    (:func:`edited_tiles`); rows are frames (labelled with their time), columns the versions."""
    got = edited_tiles(source, emotions, frames=frames, start=start, length=length, intensity=intensity, backend=backend)
    return tiled_sheet(got, ["source", *emotions], tile_height), got.frames


def tiled_sheet(got: EditedTiles, columns: Sequence[str], tile_height: int) -> np.ndarray:
    """One clip's tiles laid out: a row per frame, a column per version."""
    rows = [[got.tiles[name][r] for name in columns] for r in range(len(got.times))]
    return contact_sheet(rows, list(columns), row_labels=got.times, tile_height=tile_height)


def emotion_across_clips(clips: dict[str, EditedTiles], emotion: str, *, per_row: int = 2, tile_height: int = 160) -> np.ndarray:
    """One emotion on many people: source | edited (the first shown frame of each clip), ``per_row`` clips a
    row, labelled by clip. Judging whether an edit reads needs many faces, not one."""
    names = list(clips)
    rows, labels = [], []
    for k in range(0, len(names), per_row):
        group = names[k:k + per_row]
        row = [tile for name in group for tile in (clips[name].tiles["source"][0], clips[name].tiles[emotion][0])]
        blank = np.full_like(row[0], BACKGROUND[0])
        rows.append(row + [blank] * (2 * per_row - len(row)))
        labels.append("  ".join(group))
    return contact_sheet(rows, ["source", emotion] * per_row, row_labels=labels, tile_height=tile_height)


def eyes_across_clips(clips: dict[str, EditedTiles], emotions: Sequence[str], *, tile_height: int = 110) -> np.ndarray:
    """The eyes and brows of many people, source | each of ``emotions`` (the first shown frame of each clip),
    a row per clip, at about the frame's own size: a widened eye that looks drawn on shows here, not in a
    face-sized tile."""
    return versions_across_clips(clips, emotions, part="eyes", tile_height=tile_height)


def versions_across_clips(clips: dict[str, EditedTiles], emotions: Sequence[str], *, part: str = "tiles",
                          tile_height: int = 110) -> np.ndarray:
    """A row per clip (or photo), labelled by its name: source | each of ``emotions``, the first shown frame of
    each; ``part`` "tiles" shows the face, "eyes" the eyes and brows."""
    rows = [[getattr(got, part)[name][0] for name in ("source", *emotions)] for got in clips.values()]
    return contact_sheet(rows, ["source", *emotions], row_labels=list(clips), tile_height=tile_height)
