"""The eye openings after a warp: the eyeball is redrawn, not stretched; shut eyes stay shut; lids stay on the ball."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from spfem_cli.backends.warp import eyeball, facs
from spfem_cli.backends.warp.canonical_mesh import neutral

SCALE = 3.0                                    # canonical aligned-256 points → a 768² synthetic frame
SKIN, WHITE, IRIS = (170, 120, 100), (225, 222, 218), (40, 60, 110)


def _face(points: np.ndarray) -> np.ndarray:
    """A synthetic frame: skin, each eye opening white, the iris disc drawn only where the lids show it."""
    frame = np.full((768, 768, 3), SKIN, np.uint8)
    for (upper, lower), (centre, rim) in zip(facs.EYE_CONTOURS, facs.IRIS_RINGS, strict=True):
        opening = np.zeros(frame.shape[:2], np.uint8)
        cv2.fillPoly(opening, [np.round(eyeball.opening(points, upper, lower)).astype(np.int32)], 1)
        disc = np.zeros_like(opening)
        radius = float(np.linalg.norm(points[rim] - points[centre], axis=1).mean())
        cv2.circle(disc, tuple(np.round(points[centre]).astype(int)), int(round(radius)), 1, -1)
        frame[opening > 0] = WHITE
        frame[(opening > 0) & (disc > 0)] = IRIS
    return frame


def _raised(points: np.ndarray, px: float) -> np.ndarray:
    out = points.copy()
    for upper, _lower in facs.EYE_CONTOURS:
        out[upper[1:-1], 1] -= px
    return out


def test_a_raised_lid_shows_white_above_a_round_iris_not_a_stretched_one():
    source = neutral() * SCALE
    edited = _raised(source, 6.0)
    frame = _face(source)
    warped = frame.copy()                                  # as if the warp had only moved the lids
    eyes = eyeball.capture(frame, source, edited)
    assert all(e is not None for e in eyes)
    eyeball.redraw(warped, eyes)
    truth = _face(edited)                                  # the same eyeball behind the raised lid
    for (upper, _lower), (centre, rim) in zip(facs.EYE_CONTOURS, facs.IRIS_RINGS, strict=True):
        c = source[centre]
        radius = float(np.linalg.norm(source[rim] - c, axis=1).mean())
        band_top = source[upper[1:-1], 1].min() - 4.0      # the strip the lid uncovered, lash band aside
        x = int(round(c[0] + 1.6 * radius))                # beside the iris: white
        y = int(round(band_top + 1.0))
        assert np.abs(warped[y, x].astype(int) - truth[y, x]).max() < 40, "uncovered white"
        x_iris, y_iris = int(round(c[0])), int(round(c[1] - 0.8 * radius))     # the iris's top, once hidden
        assert np.abs(warped[y_iris, x_iris].astype(int) - IRIS).max() < 45, "the iris is filled back in round"
        inside = int(round(c[1] + 0.3 * radius))           # where the source showed the iris: its own pixels
        assert np.array_equal(warped[inside, int(round(c[0]))], frame[inside, int(round(c[0]))])


def test_the_redraw_changes_nothing_outside_the_edited_openings():
    source = neutral() * SCALE
    edited = _raised(source, 6.0)
    frame = _face(source)
    warped = frame.copy()
    eyeball.redraw(warped, eyeball.capture(frame, source, edited))
    changed = np.abs(warped.astype(int) - frame).max(-1) > 0
    openings = np.zeros(frame.shape[:2], np.uint8)
    for upper, lower in facs.EYE_CONTOURS:
        cv2.fillPoly(openings, [np.round(eyeball.opening(edited, upper, lower)).astype(np.int32)], 1)
    openings = cv2.dilate(openings, np.ones((3, 3), np.uint8)) > 0       # + the anti-aliased edge
    assert changed.any() and not (changed & ~openings).any()


def test_the_uncovered_white_is_lit_like_the_white_it_joins():
    """A raised lid uncovers white, not a grey shell: off the iris, the band between the source lid and
    the edited one (its lash line aside) keeps most of the white's light."""
    source = neutral() * SCALE
    edited = _raised(source, 9.0)
    frame = _face(source)
    warped = frame.copy()
    eyeball.redraw(warped, eyeball.capture(frame, source, edited))
    for (upper, _lower), (centre, rim) in zip(facs.EYE_CONTOURS, facs.IRIS_RINGS, strict=True):
        c = source[centre]
        radius = float(np.linalg.norm(source[rim] - c, axis=1).mean())
        for side in (-1.0, 1.0):
            x = int(round(c[0] + side * 1.8 * radius))
            lid = float(np.interp(x, *source[upper].T[:, np.argsort(source[upper][:, 0])]))
            band = warped[int(round(lid - 5.0)):int(round(lid)), x].astype(float).mean(-1)
            assert band.mean() > 0.85 * np.mean(WHITE), "the uncovered white is lit like the white"


def test_a_shut_eye_is_not_redrawn_and_its_lid_is_not_raised():
    source = neutral() * SCALE
    shut = source.copy()
    for upper, lower in facs.EYE_CONTOURS:                 # lower lids up to the upper ones: a blink
        shut[lower, 1] = shut[upper[1:-1], 1] + 0.5
    assert np.all(facs.eye_open_ratios(shut) < facs.EYE_SHUT_RATIO[0])
    assert eyeball.capture(_face(shut), shut, _raised(shut, 6.0)) == [None, None]
    frames = np.stack([source] * 8 + [shut] * 4)             # open, then shut (the fade is smooth in time)
    acts = np.ones((len(frames), len(facs.AU_NAMES)))
    kept = facs.keep_shut_eyes_shut(frames, acts, facs.open_eye_ratio(source[None]))
    au5 = facs.AU_NAMES.index("AU5")
    assert np.all(kept[:4, au5] == 1.0) and np.all(kept[-2:, au5] == 0.0)
    assert np.array_equal(np.delete(kept, au5, axis=1), np.delete(acts, au5, axis=1)), "only the lid raise fades"


def test_a_lid_raised_too_far_is_scaled_back_to_the_eyeball_keeping_its_shape():
    source = neutral()
    rooms = []
    for (upper, _lower), (centre, rim) in zip(facs.EYE_CONTOURS, facs.IRIS_RINGS, strict=True):
        c = source[centre]
        reach = facs.LID_REACH * float(np.linalg.norm(source[rim] - c, axis=1).mean())
        dx = source[upper[1:-1], 0] - c[0]
        top = c[1] - np.sqrt(np.maximum(reach ** 2 - dx ** 2, 0.0))
        rooms.append(float((source[upper[1:-1], 1] - top)[np.abs(dx) < reach].min()))   # the tightest vertex's room
    asked = min(rooms) / ((1.0 + facs.MIN_LID_RAISE) / 2)   # over the reach, within the floor
    edited = source.copy()
    for upper, _lower in facs.EYE_CONTOURS:                 # an uneven raise (90-100 %), to see the shape kept
        edited[upper[1:-1], 1] -= asked * np.linspace(0.9, 1.0, len(upper) - 2)
    kept = facs.keep_lids_on_eyeball(source, edited)
    for (upper, _lower), (centre, rim) in zip(facs.EYE_CONTOURS, facs.IRIS_RINGS, strict=True):
        c = source[centre]
        reach = facs.LID_REACH * float(np.linalg.norm(source[rim] - c, axis=1).mean())
        lid = kept[upper]
        over = np.abs(lid[:, 0] - c[0]) < reach
        assert np.all(np.hypot(*(lid[over] - c).T) <= reach + 1e-6), "no lid vertex beyond the reach"
        assert np.isclose(np.hypot(*(lid[over] - c).T).max(), reach), "the furthest one touches it"
        rise_kept = source[upper, 1] - lid[:, 1]
        rise_asked = source[upper, 1] - edited[upper, 1]
        moved = rise_asked > 0
        share = rise_kept[moved] / rise_asked[moved]
        assert np.allclose(share, share[0]) and facs.MIN_LID_RAISE <= share[0] < 1.0, "one share for the whole lid"
    far = facs.keep_lids_on_eyeball(source, _raised(source, 40.0))        # far past the reach: the floor holds
    upper = facs.EYE_CONTOURS[0][0][1:-1]
    assert np.allclose(source[upper, 1] - far[upper, 1], facs.MIN_LID_RAISE * 40.0)
    small = _raised(source, 1.0)
    assert np.array_equal(facs.keep_lids_on_eyeball(source, small), small), "a small raise is kept as it is"


def test_shut_is_read_against_the_face_s_own_open_eye():
    """A narrow eye open as usual keeps its lid raise; the same opening on a wide-eyed face is a look down."""
    face = neutral()[None]
    usual = facs.eye_open_ratios(face)[0]
    assert np.all(facs.eyes_shown_open(face, facs.open_eye_ratio(face))[0] == 1.0)
    assert np.all(facs.eyes_shown_open(face, usual / 0.3)[0] == 0.0)            # 30 % of that face's open eye
    assert np.all(0.0 < facs.eyes_shown_open(face, usual / 0.6)[0])             # 60 %: part of the raise
    assert np.all(facs.eyes_shown_open(face, usual / 0.6)[0] < 1.0)
    assert np.all(facs.eyes_shown_open(face, None)[0] == 1.0)                   # no yardstick: only shut eyes count


def test_an_eye_whose_lids_stay_put_is_left_to_the_warp():
    """Happy's or contempt's edit hardly moves the lids: the eye is not redrawn (not a pixel changes)."""
    source = neutral() * SCALE
    edited = source.copy()
    edited[facs.LIP_CORNER_OUTER] += (3.0, -3.0)                         # only the mouth moves
    assert eyeball.capture(_face(source), source, edited) == [None, None]


def test_a_blink_whose_tracked_lids_cross_keeps_the_brows_raised():
    """MediaPipe's lids overlap on a blink; the eye-open constraint kept that pair's own gap instead of opening
    it to zero, which turned the eye's triangle over, read as a fold and scaled the whole upper face (a
    surprised brow raise too) down over the blink and the frames round it."""
    from spfem_cli.backends.warp.backend import fold_free

    frames = np.repeat(neutral()[None], 9, axis=0)
    for upper, lower in facs.EYE_CONTOURS:                    # frame 4: both eyes shut, lids crossed by 1 px
        frames[4, upper[1:-1], 1] = frames[4, lower, 1].mean() + 1.0
        frames[4, lower, 1] = frames[4, upper[1:-1], 1] - 1.0
    activations = np.zeros((9, len(facs.AU_NAMES)))
    activations[:, facs.AU_NAMES.index("AU1")] = activations[:, facs.AU_NAMES.index("AU2")] = 1.0
    displacement = fold_free(frames, activations, np.ones(9, bool))
    brows = facs.BROW_UPPER
    expected = facs.field_of(activations[0], 478)[brows]
    for t in range(9):
        np.testing.assert_allclose(displacement[t][brows], expected, atol=1e-6)
    kept = facs.keep_eyes_open(frames[4], frames[4] + 0.0)
    np.testing.assert_allclose(kept, frames[4])               # the source's own crossed gap is kept as it is


def test_a_squinted_eye_keeps_its_squint_while_the_other_widens():
    """One eye narrowed to 60 % of its own opening (a squint, a wink), the other open as usual: the open eye
    takes the whole lid raise, the squinted one little of it. The pair's mean read "open" and raised both:
    a white crescent pasted over a narrowed eye."""
    from spfem_cli.backends.warp.backend import fold_free

    frames = np.repeat(neutral()[None], 9, axis=0)
    upper, lower = facs.EYE_CONTOURS[1]
    gap = frames[4, lower, 1] - frames[4, upper[1:-1], 1]
    frames[4, upper[1:-1], 1] += 0.4 * gap                  # frame 4: the second eye at 60 % of its opening
    open_eye = facs.open_eye_ratio(frames)
    activations = np.zeros((9, len(facs.AU_NAMES)))
    activations[:, facs.AU_NAMES.index("AU5")] = 1.0
    activations = facs.keep_shut_eyes_shut(frames, activations, open_eye)
    displacement = fold_free(frames, activations, np.ones(9, bool), facs.lid_raise_sides(frames, open_eye))
    raised = [-displacement[4, up[1:-1], 1].mean() for up, _ in facs.EYE_CONTOURS]
    usual = -displacement[0, facs.EYE_CONTOURS[0][0][1:-1], 1].mean()
    assert raised[0] == pytest.approx(usual, rel=0.02)      # the open eye widens as on any open frame
    assert raised[1] < 0.6 * raised[0]                       # (the pair's mean raised it fully)


def _shaded_under_the_lid(light: float, rows: int) -> tuple[np.ndarray, np.ndarray, int, float]:
    """A synthetic frame whose white, beside the first eye's iris, is darkened to ``light`` for ``rows`` px
    under the upper lid; (source points, frame, that column, the lid's height there)."""
    source = neutral() * SCALE
    frame = _face(source)
    upper, _lower = facs.EYE_CONTOURS[0]
    centre, rim = facs.IRIS_RINGS[0]
    c = source[centre]
    radius = float(np.linalg.norm(source[rim] - c, axis=1).mean())
    x = int(round(c[0] + 1.4 * radius))
    lid = float(np.interp(x, *source[upper].T[:, np.argsort(source[upper][:, 0])]))
    ys = np.arange(int(lid), int(lid) + rows)
    frame[ys, x - 3:x + 4] = (np.array(WHITE) * light).astype(np.uint8)
    return source, frame, x, lid


def test_the_fill_hands_over_to_the_source_white_without_a_seam():
    """The source's white is softly shaded under its lid; the filled band above it is lit. They meet over a
    few px, not at a one-pixel edge (an arc drawn across the white at the old lid line)."""
    source, frame, x, lid = _shaded_under_the_lid(0.85, 8)
    warped = frame.copy()
    eyeball.redraw(warped, eyeball.capture(frame, source, _raised(source, 9.0)))
    column = warped[int(lid) - 1:int(lid) + 8, x].astype(float).mean(-1)      # fill, then the shaded white
    change = column.max() - column[-1]
    assert change > 0.08 * np.mean(WHITE)                                      # lit above, shaded below …
    assert np.abs(np.diff(column)).max() < 0.6 * change                        # … met over several px


def test_the_old_lid_s_dark_shade_goes_with_the_raised_lid():
    """Right under a lid the white is often dark (lashes, liner, the lid's shadow). When the lid rises that
    shade rises with it: left in place it drew a dark arc across the widened eye at the old lid line. An
    eye whose lid does not rise keeps it."""
    source, frame, x, lid = _shaded_under_the_lid(0.4, 8)
    row = int(lid) + 6                                       # past the band every raise refills
    warped = frame.copy()
    eyeball.redraw(warped, eyeball.capture(frame, source, _raised(source, 9.0)))
    assert warped[row, x].astype(float).mean() > 0.85 * np.mean(WHITE)
    lowered = frame.copy()
    eyeball.redraw(lowered, eyeball.capture(frame, source, _raised(source, -3.0)))
    assert lowered[row, x].astype(float).mean() < 0.5 * np.mean(WHITE)


def test_the_redrawn_lash_line_is_soft_like_a_photo_s_not_a_painted_edge():
    """Where the filled white meets the raised lid it ramps over a few px on a large eye (a share of the
    eye's width), not at the one-pixel edge that drew the band as a pasted-on crescent."""
    source = neutral() * SCALE
    edited = _raised(source, 9.0)
    frame = _face(source)
    warped = frame.copy()
    eyeball.redraw(warped, eyeball.capture(frame, source, edited))
    upper, _lower = facs.EYE_CONTOURS[0]
    centre, rim = facs.IRIS_RINGS[0]
    c = source[centre]
    x = int(round(c[0] + 1.6 * float(np.linalg.norm(source[rim] - c, axis=1).mean())))
    lid = float(np.interp(x, *edited[upper].T[:, np.argsort(edited[upper][:, 0])]))
    column = warped[int(lid) - 2:int(lid) + 12, x].astype(float).mean(-1)
    skin, fill = np.mean(SKIN), column.max()
    rising = (column > skin + 0.2 * (fill - skin)) & (column < skin + 0.8 * (fill - skin))
    assert rising.sum() >= 2                     # the 20-80 % rise spans at least 2 px (it was 1)


def test_the_iris_a_lid_uncovers_has_the_iris_s_own_texture():
    """The top of the iris a raised lid uncovers is the seen bottom of the iris mirrored, so its texture (here
    stripes) carries on; mean-colour rings drew it as flat bands, plainly painted on a large, sharp eye."""
    source = _raised(neutral() * SCALE, -5.0)                 # a lid low over the iris: its top is hidden
    frame = _face(source)
    (upper, lower), (centre, rim) = facs.EYE_CONTOURS[0], facs.IRIS_RINGS[0]
    c = source[centre]
    radius = float(np.linalg.norm(source[rim] - c, axis=1).mean())
    opening = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(opening, [np.round(eyeball.opening(source, upper, lower)).astype(np.int32)], 1)
    ys, xs = np.nonzero(opening)
    on_iris = np.hypot(xs - c[0], ys - c[1]) < radius - 1.0
    stripe = ((xs[on_iris] - int(c[0])) // 3) % 2 == 0                     # 3 px stripes down the iris
    frame[ys[on_iris][stripe], xs[on_iris][stripe]] = (20, 30, 70)
    frame[ys[on_iris][~stripe], xs[on_iris][~stripe]] = (70, 100, 160)
    warped = frame.copy()
    eyeball.redraw(warped, eyeball.capture(frame, source, _raised(source, 12.0)))
    top, bottom = int(round(c[1] - 0.6 * radius)), int(round(c[1] + 0.6 * radius))
    assert opening[top, int(c[0])] == 0, "the iris's top was hidden by the source's lid"
    for dx in (-4, -1, 1, 4):                                  # columns of both stripes
        x = int(c[0]) + dx
        assert np.abs(warped[top, x].astype(int) - frame[bottom, x]).max() < 25


def _uncovered_white_detail(frame: np.ndarray) -> tuple[float, float]:
    """Fine-detail std (grey levels) of the eyeball's white where a 9 px lid raise uncovers it, and of the white
    the source shows (each a few px from any edge)."""
    source = neutral() * SCALE
    edited = _raised(source, 9.0)
    eye = eyeball.capture(frame, source, edited)[0]
    (x0, y0), (h, w) = eye.origin.astype(int), eye.shown.shape
    box = (slice(y0, y0 + h), slice(x0, x0 + w))
    kernel = np.ones((5, 5), np.uint8)
    was_white = np.all(_face(source)[box] == WHITE, axis=-1)
    now_white = cv2.erode(np.all(_face(edited)[box] == WHITE, axis=-1).astype(np.uint8), kernel) > 0
    uncovered = now_white & ~cv2.dilate(was_white.astype(np.uint8), kernel).astype(bool)
    seen = cv2.erode(was_white.astype(np.uint8), kernel) > 0
    assert uncovered.sum() > 20 and seen.sum() > 20

    def detail(img: np.ndarray, where: np.ndarray) -> float:
        luma = img.astype(np.float32).mean(-1)
        return float((luma - cv2.GaussianBlur(luma, (0, 0), 1.5))[where].std())

    return detail(eye.eyeball, uncovered), detail(frame[box], seen)


def test_the_uncovered_white_has_the_grain_of_the_white_the_source_shows(monkeypatch):
    """A large, sharp eye's white has texture; filled smooth, the uncovered band read as flat paint. The fill
    carries about the source white's grain (without it: 0.5 of it here), and a smooth white stays smooth."""
    frame = _face(neutral() * SCALE)
    white = np.all(frame == WHITE, axis=-1)
    grainy = frame.copy()
    noise = np.random.default_rng(1).normal(0.0, 6.0, frame.shape[:2])
    grainy[white] = np.clip(grainy[white].astype(float) + noise[white][:, None], 0, 255).astype(np.uint8)
    filled, seen = _uncovered_white_detail(grainy)
    assert 0.75 * seen < filled < 1.25 * seen
    smooth, _ = _uncovered_white_detail(frame)
    monkeypatch.setattr(eyeball, "MAX_GRAIN", 0.0)
    assert _uncovered_white_detail(frame)[0] == pytest.approx(smooth, abs=0.05)
