"""The bundled sample's open mouth looks like a mouth: the photo's own upper teeth and lips, a dark cavity
in the lips' hue, lower teeth once wide open, an opening that grows with the known signal."""

from __future__ import annotations

import numpy as np
import pytest

from spfem_cli.demo import sample as S


@pytest.fixture(scope="module")
def photo_and_geo():
    return S._photo(), S._geometry()


def _centre_column(geo) -> tuple[int, int]:
    x = int(round(0.5 * (geo.corners[0] + geo.corners[1])))
    return x, int(round(float(np.interp(x, geo.lip_x, geo.lip_y))))


def test_closed_mouth_is_the_photo(photo_and_geo):
    photo, geo = photo_and_geo
    np.testing.assert_array_equal(S.open_mouth(photo, 0.0, geo), photo)


def test_open_mouth_keeps_upper_lip_and_teeth_and_shows_a_dark_cavity(photo_and_geo):
    photo, geo = photo_and_geo
    out = S.open_mouth(photo, 1.0, geo)
    x, split = _centre_column(geo)
    x0, x1 = int(geo.corners[0]), int(np.ceil(geo.corners[1]))
    # Everything above the lip line (upper lip, the photo's own upper teeth, nose, eyes) is untouched.
    h, w = photo.shape[:2]
    line = np.interp(np.arange(w), geo.lip_x, geo.lip_y)
    above = np.arange(h)[:, None] < line[None] - 1.5
    np.testing.assert_array_equal(out[above], photo[above])
    teeth = photo[split - 4: split - 1, x - 3: x + 4].astype(float).mean((0, 1))
    gap = 0.45 * geo.mouth_width
    cavity = out[split + 2: split + int(0.5 * gap), x0 + 8: x1 - 8].reshape(-1, 3).astype(float)
    assert cavity.sum(1).mean() < 0.35 * teeth.sum(), "the opening is dark"
    assert (cavity[:, 0] >= cavity[:, 2]).mean() > 0.9, "in the lips' warm hue, not grey or blue"
    lower = out[split + int(0.6 * gap): split + int(gap) - 1, x - 4: x + 5].astype(float).sum(2)
    assert lower.max() > 2.0 * cavity.sum(1).mean(), "the lower teeth show when the mouth is wide open"


def test_opening_grows_with_the_signal(photo_and_geo):
    photo, geo = photo_and_geo
    x, split = _centre_column(geo)
    heights = []
    for amount in (0.2, 0.5, 1.0):
        column = S.open_mouth(photo, amount, geo)[split - 2: split + 40, x].astype(float).sum(1)
        heights.append(int((column < 0.4 * column.max()).sum()))
    assert heights[0] < heights[1] < heights[2], heights
    assert heights[2] >= 0.3 * geo.mouth_width
