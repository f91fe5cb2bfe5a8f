"""The drawn mouth opening: read off the picture, it follows lips that move apart, not a mouth that moves whole."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from spfem_cli.evaluate.drawn_opening import lip_gap_change, source_gap

SIZE, CENTRE, LIP = 200, 100.0, 7.0


def _mouth(gap: float, *, drop: float = 0.0, roll_deg: float = 0.0, upper_lip: float = LIP) -> tuple[np.ndarray, np.ndarray]:
    """A grey face patch with two lips (LIP px, the upper ``upper_lip``) round a dark gap of ``gap`` px, the whole
    mouth ``drop`` px lower, turned by ``roll_deg`` about the image centre; and its 68 landmarks (corners and
    inner-lip midpoints set)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    centre = CENTRE + drop
    def share(edge):
        return np.clip(edge + 0.5, 0.0, 1.0)

    def cover(top: float, bottom: float, left: float, right: float) -> np.ndarray:
        """Share of each pixel inside centre - top < y < centre + bottom, left < x < right (edges anti-aliased)."""
        return share(top + (y - centre)) * share(bottom - (y - centre)) * share(x - left) * share(right - x)

    lips, gap_band = cover(gap / 2 + upper_lip, gap / 2 + LIP, 60, 140), cover(gap / 2, gap / 2, 68, 132)
    image = 175.0 + (115.0 - 175.0) * lips + (35.0 - 115.0) * gap_band
    image = cv2.GaussianBlur(image, (0, 0), 1.0)
    landmarks = np.zeros((68, 2))
    landmarks[48], landmarks[54] = (60.0, centre), (140.0, centre)
    landmarks[62], landmarks[66] = (100.0, centre - gap / 2), (100.0, centre + gap / 2)
    if roll_deg:
        turn = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), roll_deg, 1.0)
        image = cv2.warpAffine(image, turn, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=175.0)
        landmarks = landmarks @ turn[:, :2].T + turn[:, 2]
    return image.astype(np.uint8), landmarks


def _drawn(source: np.ndarray, edited: np.ndarray, landmarks: np.ndarray) -> float:
    """The edit's drawn opening (frame px): the source's gap plus how far the lips moved apart."""
    return source_gap(landmarks) + lip_gap_change(source, edited, landmarks)


@pytest.mark.parametrize("roll", [0.0, 20.0])
@pytest.mark.parametrize("gap, edited_gap", [(10.0, 12.0), (10.0, 8.0), (6.0, 9.0), (12.0, 12.0)])
def test_lips_moved_apart_or_together_read_as_that_opening(gap, edited_gap, roll):
    source, landmarks = _mouth(gap, roll_deg=roll)
    edited, _ = _mouth(edited_gap, roll_deg=roll)
    assert _drawn(source, edited, landmarks) == pytest.approx(edited_gap, abs=0.4)


def test_a_mouth_moved_whole_keeps_its_opening():
    source, landmarks = _mouth(10.0)
    lowered, _ = _mouth(10.0, drop=2.0)
    assert _drawn(source, lowered, landmarks) == pytest.approx(10.0, abs=0.4)


def test_an_upper_lip_raised_at_its_border_only_keeps_the_opening():
    """Disgust's AU10 lifts the upper lip's outer border while its inner edge stays: the opening is the same."""
    source, landmarks = _mouth(8.0)
    thinner, _ = _mouth(8.0, upper_lip=LIP + 2.5)
    assert _drawn(source, thinner, landmarks) == pytest.approx(8.0, abs=0.4)


@pytest.mark.parametrize("edited_gap, low, high", [(0.6, 0.2, 1.0), (4.0, 2.0, 5.0)])
def test_a_closed_mouth_that_stays_closed_or_opens_reads_so(edited_gap, low, high):
    """Closed frames count in the r: a touching mouth left alone reads closed, and one the edit opened reads open
    (short of its full opening: a gap that grows from a seam is not a shift of anything; 0.6 → 4 px reads 2.6)."""
    source, landmarks = _mouth(0.6)
    edited, _ = _mouth(edited_gap)
    assert low <= _drawn(source, edited, landmarks) <= high


def _video_track(monkeypatch, gaps: list[float], edited_gaps: list[float], *, scale: float = 1.0, odd: bool = False):
    """Source and edited 'videos' of synthetic mouths (served to ``iter_frames``) and the source's track: its
    landmarks in frame px, its openings in aligned px (``scale`` aligned px per frame px). ``odd``: the source is
    199² and its edit 200² (an odd-sized source's edit is padded right and below for yuv420p)."""
    from types import SimpleNamespace

    import spfem_cli.video

    mouths = [_mouth(g) for g in gaps]
    size = 199 if odd else 200
    frames = {"source.mp4": [np.repeat(m[0][:size, :size, None], 3, -1) for m in mouths],
              "edited.mp4": [np.repeat(_mouth(g)[0][:, :, None], 3, -1) for g in edited_gaps]}
    monkeypatch.setattr(spfem_cli.video, "iter_frames", lambda path, chunk_size=32: iter(frames[str(path)]))
    transform = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])
    return SimpleNamespace(mouth_opening=lambda: np.array(gaps) * scale, valid=np.ones(len(gaps), bool),
                           landmarks=np.stack([m[1] for m in mouths]), transforms=np.repeat(transform[None], len(gaps), 0))


def test_an_odd_sized_source_is_read_against_its_padded_edit_on_every_frame(monkeypatch):
    """Every frame is read (closed ones too), in aligned px, and judged as the re-tracked opening is."""
    from spfem_cli.evaluate.drawn_opening import drawn_opening

    gaps = [0.6, 10.0, 10.0, 0.6]
    track = _video_track(monkeypatch, gaps, [0.6, 12.0, 12.0, 0.6], scale=2.0, odd=True)
    drawn = drawn_opening("source.mp4", "edited.mp4", track)
    assert drawn.openings == pytest.approx([1.2, 24.0, 24.0, 1.2], abs=0.6)   # every frame, 2 aligned px per frame px
    assert drawn.peak_ratio == pytest.approx(1.2, abs=0.04)
    assert drawn.correlation > 0.99


def test_the_drawn_correlation_follows_the_picture_not_the_source_track(monkeypatch):
    """An edit that keeps the lips' motion reads r ≈ 1; one whose lips move to their own rhythm reads far less,
    though the source's track is the same: the measure sees the picture."""
    from spfem_cli.evaluate.drawn_opening import drawn_opening

    gaps = [0.6, 4.0, 10.0, 6.0, 1.0, 8.0, 3.0, 0.6]
    kept = drawn_opening("source.mp4", "edited.mp4", _video_track(monkeypatch, gaps, gaps))
    assert kept.correlation > 0.99
    own_rhythm = [6.0, 6.0, 3.0, 9.0, 6.0, 2.0, 8.0, 6.0]
    changed = drawn_opening("source.mp4", "edited.mp4", _video_track(monkeypatch, gaps, own_rhythm))
    assert changed.correlation < 0.6


def test_a_match_at_the_end_of_the_shift_range_is_taken_only_when_there_is_no_other():
    """A short window of even lip colour also matches far off (a closed mouth's lower half read the range's 8 px
    end where its seam had moved 2 px): the inner minimum wins; a curve falling to the end keeps the end."""
    from spfem_cli.evaluate.drawn_opening import SHIFTS, best_shift

    two_minima = np.minimum((SHIFTS + 2.0) ** 2 * 10.0 + 8.0, (SHIFTS - 8.0) ** 2 * 10.0 + 3.0)
    assert best_shift(two_minima) == pytest.approx(-2.0)
    assert best_shift((SHIFTS - 9.0) ** 2) == pytest.approx(SHIFTS.max())
    assert best_shift((SHIFTS - 1.5) ** 2) == pytest.approx(1.5)


def test_known_lower_lip_moves_on_the_sample_are_read_back(short_clip):
    """The drawn_opening bench area's check on the bundled talking sample: every frame's lower lip moved by a
    known −2, 0 or +3 px is read back within a fraction of a pixel."""
    from spfem_cli.benchmarks.drawn_opening import known_moves

    gaps, truth, measured = known_moves(short_clip.path)
    assert len(truth) > 10 and set(truth) >= {0.0, 3.0}
    assert np.abs(measured - truth).mean() < 0.3
    assert np.corrcoef(gaps + truth, gaps + measured)[0, 1] > 0.98
