"""Contact sheets: labelled layout of the same frames across versions, small PNGs, and a real edit per emotion."""

from __future__ import annotations

import numpy as np
import pytest

from spfem_cli.edit import contact_sheet as C


def _tile(value: int, h: int = 80, w: int = 100) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def test_layout_labels_and_tiles():
    rows = [[_tile(60), _tile(120), _tile(200)], [_tile(61), _tile(121), _tile(201)]]
    sheet = C.contact_sheet(rows, ["source", "happy", "sad"], row_labels=["0.2s", "0.6s"], tile_height=40)
    label_h = max(18, 40 // 7)
    assert sheet.dtype == np.uint8 and sheet.shape[0] == label_h + 2 * (40 + C.GAP)
    header = sheet[:label_h]
    assert (header > 200).any(), "labels are written"
    # Tiles are scaled to 40 px high (50 wide) and laid out left to right, rows top to bottom.
    width = 50
    margin = sheet.shape[1] - 3 * width - 4 * C.GAP
    for r, row in enumerate(rows):
        y = label_h + r * (40 + C.GAP) + 20
        for c, tile in enumerate(row):
            x = margin + C.GAP + c * (width + C.GAP) + width // 2
            assert tuple(sheet[y, x]) == tuple(tile[0, 0])
    assert (sheet[label_h:, :margin] > 200).any(), "row labels are written"
    with pytest.raises(ValueError):
        C.contact_sheet([[_tile(1)]], ["a", "b"])
    with pytest.raises(ValueError):
        C.contact_sheet([], ["a"])


def test_save_png_palette_is_smaller(tmp_path):
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 40, (120, 160, 3)), 0, 255).astype(np.uint8)
    full = C.save_png(tmp_path / "full.png", image)
    small = C.save_png(tmp_path / "sub" / "small.png", image, colors=64)
    from PIL import Image

    assert Image.open(small).mode == "P" and small.stat().st_size < full.stat().st_size
    np.testing.assert_array_equal(np.asarray(Image.open(full)), image)


def test_eye_openness_sees_a_blink_and_a_wink():
    from spfem_cli.face.align import TEMPLATE_68

    open_eyes = TEMPLATE_68.copy()
    shut = TEMPLATE_68.copy()
    for top, bottom in ((37, 41), (38, 40), (43, 47), (44, 46)):
        shut[[top, bottom], 1] = TEMPLATE_68[[top, bottom], 1].mean()
    wink = TEMPLATE_68.copy()
    wink[36:42] = shut[36:42]
    ratio = C.eye_openness(np.stack([open_eyes, shut, wink]))
    assert ratio[0] > 0.25 and ratio[1] < 0.1 and ratio[2] < 0.1


def test_crop_box_and_frame_picks():
    boxes = np.array([[100, 50, 180, 150], [110, 60, 190, 160]], float)
    x0, y0, x1, y1 = C.face_crop_box(boxes, (240, 320))
    assert x1 - x0 == y1 - y0 and 0 <= x0 < 100 and 0 <= y0 and x1 > 190 and y1 <= 240
    valid = np.ones(20, bool)
    valid[:5] = False
    picks = C.pick_frames(valid, 3)
    assert len(picks) == 3 and all(valid[p] for p in picks) and picks == sorted(picks)
    score = np.zeros(20)
    score[[6, 11, 17, 19]] = 1.0                 # preferred frames (e.g. open eyes); 19 is at a stretch's edge
    assert C.pick_frames(valid, 3, score) == [6, 11, 17]
    with pytest.raises(ValueError):
        C.pick_frames(np.zeros(4, bool), 2)


def test_emotion_sheet_runs_the_real_edit(short_clip):
    sheet, info = C.emotion_sheet(short_clip.path, ["happy", "surprised"], frames=2, length=10, tile_height=64)
    assert len(info.indices) == 2 and all(0 <= i < 10 for i in info.indices)
    label_h = max(18, 64 // 7)
    assert sheet.shape[0] == label_h + 2 * (64 + C.GAP)
    # Source and edited tiles differ (the edit moved the face); both are real frames, not blank.
    y = slice(label_h, label_h + 64)
    width = 64
    xs = [sheet.shape[1] - (3 - c) * (width + C.GAP) for c in range(3)]
    tiles = [sheet[y, x: x + width].astype(float) for x in xs]
    assert all(t.std() > 10 for t in tiles)
    assert np.abs(tiles[0] - tiles[1]).mean() > 0.5 and np.abs(tiles[0] - tiles[2]).mean() > 0.5


def test_eye_band_holds_every_eye_and_brow_inside_the_frame():
    from spfem_cli.face.align import TEMPLATE_68

    faces = np.stack([TEMPLATE_68 * 2.0 + 20.0, TEMPLATE_68 * 2.0 + 30.0])
    x0, y0, x1, y1 = C.eye_band_box(faces, (600, 600))
    pts = faces[:, np.r_[17:27, 36:48]].reshape(-1, 2)
    assert x0 < pts[:, 0].min() and x1 > pts[:, 0].max() and y0 < pts[:, 1].min() and y1 > pts[:, 1].max()
    assert y1 < faces[:, 33, 1].max()                         # the eyes and brows, not the whole face
    near_edge = C.eye_band_box(faces - 40.0, (600, 600))
    assert min(near_edge) >= 0


def test_versions_across_clips_is_a_row_per_clip_source_then_each_emotion():
    """The eyes sheet and the photo sheet: a row per clip, source then each emotion, of the part asked for."""
    def tiles(level: int) -> C.EditedTiles:
        band = np.full((30, 90, 3), level, np.uint8)
        return C.EditedTiles({"source": [band + 1], "surprised": [band + 41], "fear": [band + 81]}, ["0.4s"],
                             C.SheetFrames([10], (0, 0, 40, 40)),
                             {"source": [band], "surprised": [band + 40], "fear": [band + 80]})

    clips = {"a": tiles(20), "b": tiles(60)}
    label_h = max(18, 30 // 7)
    for sheet, offset in ((C.eyes_across_clips(clips, ("surprised", "fear"), tile_height=30), 0),
                          (C.versions_across_clips(clips, ("surprised", "fear"), part="tiles", tile_height=30), 1)):
        assert sheet.shape[0] == label_h + 2 * (30 + C.GAP)
        right = sheet.shape[1]
        x = [right - (3 - k) * (90 + C.GAP) for k in range(3)]
        second = sheet[label_h + 30 + C.GAP + 5]
        assert [int(second[xi + 5, 0]) for xi in x] == [60 + offset, 100 + offset, 140 + offset]


def test_one_emotion_across_clips_pairs_each_source_with_its_edit():
    """The per-emotion sheet: source | edited for each clip, two clips a row, an odd clip padded with a blank."""
    def tiles(level: int) -> C.EditedTiles:
        face = np.full((40, 40, 3), level, np.uint8)
        return C.EditedTiles({"source": [face], "sad": [face + 50]}, ["0.4s"], C.SheetFrames([10], (0, 0, 40, 40)))

    sheet = C.emotion_across_clips({"a": tiles(20), "b": tiles(60), "c": tiles(100)}, "sad", tile_height=40)
    label_h = max(18, 40 // 7)
    assert sheet.shape[0] == label_h + 2 * (40 + C.GAP)              # header + two rows (2 + 1 clips)
    right = sheet.shape[1]
    x = [right - (4 - k) * (40 + C.GAP) for k in range(4)]           # the four tile columns, left to right
    first, second = sheet[label_h + 5], sheet[label_h + 40 + C.GAP + 5]
    assert [int(first[xi + 5, 0]) for xi in x] == [20, 70, 60, 110]   # a: source, sad; b: source, sad
    assert [int(second[xi + 5, 0]) for xi in x[:2]] == [100, 150] and int(second[x[2] + 5, 0]) == C.BACKGROUND[0]


def _lips(centre=(100.0, 120.0), width=40.0, gap=6.0) -> np.ndarray:
    """68 points with only the mouth placed: outer lips 48-59 round ``centre``, inner lips 60-67 ``gap`` apart."""
    lm = np.zeros((68, 2))
    cx, cy = centre
    for k, a in enumerate(np.linspace(0, 2 * np.pi, 12, endpoint=False)):
        lm[48 + k] = (cx - width / 2 * np.cos(a), cy - 0.3 * width * np.sin(a))
    lm[60], lm[64] = (cx - 0.4 * width, cy), (cx + 0.4 * width, cy)
    for k, dx in zip((61, 62, 63), (-0.15, 0.0, 0.15), strict=True):
        lm[k] = (cx + dx * width, cy - gap / 2)
    for k, dx in zip((67, 66, 65), (-0.15, 0.0, 0.15), strict=True):
        lm[k] = (cx + dx * width, cy + gap / 2)
    return lm


def test_mouth_box_holds_the_lips_with_a_margin_inside_the_frame():
    lm = _lips()
    x0, y0, x1, y1 = C.mouth_box(lm, (240, 200))
    assert x0 <= 80 - 19 and x1 >= 120 + 19 and y0 < 120 - 12 and y1 > 120 + 12       # half a width round the lips
    near_edge = C.mouth_box(_lips(centre=(15.0, 230.0)), (240, 200))
    assert near_edge[0] == 0 and near_edge[3] == 240 and near_edge[2] <= 200


def test_marked_lips_enlarges_the_box_and_marks_each_inner_lip_where_it_is():
    frame = np.full((240, 200, 3), 128, np.uint8)
    lm = _lips(gap=10.0)
    box = C.mouth_box(lm, frame.shape[:2])
    tile = C.marked_lips(frame, lm, box, height=200, caption="6.0 px")
    zoom = 200 / (box[3] - box[1])
    assert tile.shape[0] == 200 and abs(tile.shape[1] - (box[2] - box[0]) * zoom) <= 1

    def at(point):
        x, y = (np.asarray(point) - box[:2] + 0.5) * zoom
        return tuple(int(v) for v in tile[int(round(y)), int(round(x))])

    assert at(lm[62]) == (255, 235, 0) and at(lm[66]) == (0, 200, 255)     # upper yellow, lower blue
    assert at(lm[60]) == (255, 255, 255)
    assert at((100.0, 140.0)) == (128, 128, 128)                              # the picture elsewhere untouched
    assert (tile[:20, :60] != 128).any(), "the caption is written"
