"""Expression wrinkles: exactly nothing at zero activation or outside the skin, never in the eyes or the
mouth, deterministic and smooth in the landmarks, darker creases in the skin's own hue."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from spfem_cli.backends.warp import wrinkles
from spfem_cli.face.align import TEMPLATE_68

ALL_AUS = {au: 1.5 for au in wrinkles.WRINKLE_AUS}


@pytest.fixture(scope="module")
def face():
    """A 256² skin-toned face with mild texture and a top-lit gradient, at the template's landmarks."""
    rng = np.random.default_rng(0)
    yy = np.mgrid[0:256, 0:256][0] / 255.0
    skin = np.array([205.0, 150.0, 125.0])
    image = skin * (1.05 - 0.2 * yy)[..., None] + rng.normal(0, 3, (256, 256, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _polygon_mask(points: np.ndarray, size: int = 256) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def test_zero_activation_is_exactly_the_input(face):
    for acts in ({}, {au: 0.0 for au in wrinkles.WRINKLE_AUS}, {"AU12": -0.7, "AU5": 1.0}):
        np.testing.assert_array_equal(wrinkles.shade(face, TEMPLATE_68, acts), face)


def test_nothing_changes_outside_the_skin_mask(face):
    mask = np.zeros((256, 256), np.float32)
    mask[:, 128:] = 1.0
    out = wrinkles.shade(face, TEMPLATE_68, ALL_AUS, mask)
    np.testing.assert_array_equal(out[:, :128], face[:, :128])
    assert (out[:, 128:] != face[:, 128:]).any()
    # The default mask: nothing outside the face outline (jaw line up to above the brows).
    default = wrinkles.shade(face, TEMPLATE_68, ALL_AUS)
    region = wrinkles.face_region(TEMPLATE_68, (256, 256)) > 0
    np.testing.assert_array_equal(default[~region], face[~region])


@pytest.mark.parametrize("au", wrinkles.WRINKLE_AUS)
def test_eyes_and_mouth_are_never_shaded(face, au):
    out = wrinkles.shade(face, TEMPLATE_68, {au: 1.5})
    assert (out != face).any(), f"{au}: no crease at all"
    for poly in (TEMPLATE_68[36:42], TEMPLATE_68[42:48], TEMPLATE_68[48:60]):
        inside = _polygon_mask(poly)
        np.testing.assert_array_equal(out[inside], face[inside])


def test_deterministic_and_smooth_in_the_landmarks(face):
    acts = {"AU6": 1.0, "AU12": 1.0, "AU4": 1.0, "AU1": 1.0}
    a = wrinkles.shade(face, TEMPLATE_68, acts)
    np.testing.assert_array_equal(a, wrinkles.shade(face, TEMPLATE_68, acts))
    # Landmarks jittered by 0.15 px: the creases move with them by about that much, nothing jumps.
    moved = TEMPLATE_68 + np.random.default_rng(1).normal(0, 0.15, TEMPLATE_68.shape)
    diff = np.abs(a.astype(int) - wrinkles.shade(face, moved, acts).astype(int))
    assert diff.max() <= 8 and diff.mean() < 0.05, (diff.max(), diff.mean())
    smaller = TEMPLATE_68 + np.random.default_rng(1).normal(0, 0.03, TEMPLATE_68.shape)
    assert np.abs(a.astype(int) - wrinkles.shade(face, smaller, acts).astype(int)).mean() < 0.5 * diff.mean()
    # A small change of activation is a small change of the picture.
    c = wrinkles.shade(face, TEMPLATE_68, {k: v * 1.02 for k, v in acts.items()})
    assert np.abs(a.astype(int) - c.astype(int)).max() <= 2


def test_creases_darken_with_activation_and_keep_the_skin_hue(face):
    # Nasolabial region: between the nose wing and the mouth corner, on the image-left side.
    fold = _polygon_mask(np.array([[95, 130], [112, 130], [100, 175], [80, 175]]))
    lum = {}
    for a in (0.5, 1.0):
        out = wrinkles.shade(face, TEMPLATE_68, {"AU12": a})
        lum[a] = out[fold].astype(float).sum(1).min()
        darker = out.astype(int).sum(2) < face.astype(int).sum(2) - 6
        assert darker.any()
        # Shadows keep the skin's hue: red stays the strongest channel and blue drops at least as much as red.
        o, f = out[darker].astype(float), face[darker].astype(float)
        assert (o[:, 0] >= o[:, 2]).all()
        assert np.median(o[:, 2] / f[:, 2]) <= np.median(o[:, 0] / f[:, 0]) + 1e-6
    assert lum[1.0] < lum[0.5] < face[fold].astype(float).sum(1).min()


def test_same_creases_on_a_supersampled_crop(face):
    acts = {"AU4": 1.0, "AU1": 1.0}
    small = wrinkles.shade(face, TEMPLATE_68, acts).astype(float) - face
    big_face = cv2.resize(face, (512, 512), interpolation=cv2.INTER_CUBIC)
    big = wrinkles.shade(big_face, TEMPLATE_68 * 2, acts).astype(float) - big_face
    big = cv2.resize(big, (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(big - small).mean() < 0.5
    assert np.corrcoef(big.ravel(), small.ravel())[0, 1] > 0.8


def test_shade_edit_reads_the_backends_frame_edit(face):
    from types import SimpleNamespace

    from spfem_cli.face.tracking.mediapipe_tracker import MP_TO_IBUG68

    mesh = np.zeros((478, 2))
    mesh[MP_TO_IBUG68] = TEMPLATE_68
    acts = {"AU12": 1.0, "AU6": 0.5}
    expected = wrinkles.shade(face, TEMPLATE_68, acts)
    for points in (mesh, TEMPLATE_68):
        edit = SimpleNamespace(source=points, edited=points, aus=acts, scale=1.0)
        np.testing.assert_array_equal(wrinkles.shade_edit(face, edit), expected)


def test_raised_inner_brows_keep_the_frown_lines_between_the_brows():
    """Sadness and fear (AU1 with AU4) bunch the frown between the brow heads: its lines do not run up the
    forehead as a ridge, as an angry frown's (AU4 alone) do. Compared on the frown's own shading (the
    pair's minus the raised brows' forehead lines, which add up linearly)."""
    lm = TEMPLATE_68
    u = float(np.linalg.norm(lm[45] - lm[36])) / 100.0
    frown = wrinkles.shading_on(lm, {"AU4": 1.0}, 256)
    joint = wrinkles.shading_on(lm, {"AU4": 1.0, "AU1": 1.0}, 256) - wrinkles.shading_on(lm, {"AU1": 1.0}, 256)
    heads = lm[[21, 22]]
    x0, x1 = int(heads[:, 0].min()), int(heads[:, 0].max()) + 1
    top = int(heads[:, 1].min())
    high = (slice(int(top - 12 * u), int(top - 6 * u)), slice(x0, x1))      # well above the brow heads
    low = (slice(int(top - 2 * u), int(top + 4 * u)), slice(x0, x1))        # between them
    assert np.abs(frown[high]).max() > 0.02
    assert np.abs(joint[high]).max() < 0.4 * np.abs(frown[high]).max()
    assert np.abs(joint[low]).max() > 0.6 * np.abs(frown[low]).max()


def _featured_face(blur: float) -> np.ndarray:
    """A 256² face at the template's landmarks with the dark, sharp-edged features every face has (eyes,
    brows, nostrils, lips), blurred by ``blur`` px (0: as drawn, pixel-sharp)."""
    face = np.full((256, 256, 3), (200, 150, 125), np.uint8)
    lm = TEMPLATE_68
    dark = (60, 40, 35)
    for part in (lm[36:42], lm[42:48], lm[48:60]):
        cv2.fillPoly(face, [np.round(part).astype(np.int32)], dark)
    for brow in (lm[17:22], lm[22:27]):
        cv2.polylines(face, [np.round(brow).astype(np.int32)], False, dark, 7)
    for nostril in (lm[32], lm[34]):
        cv2.circle(face, tuple(np.round(nostril).astype(int)), 4, dark, -1)
    return face if blur == 0 else cv2.GaussianBlur(face, (0, 0), blur)


def test_the_blur_of_a_face_is_read_off_its_own_edges():
    sharp = wrinkles.image_blur(_featured_face(0.0), TEMPLATE_68)
    assert sharp < wrinkles.SHARP_BLUR + 0.25, sharp
    for blur in (1.5, 2.5):
        seen = wrinkles.image_blur(_featured_face(blur), TEMPLATE_68)
        # the reading adds the sharp face's own (resampling, filter) in quadrature
        assert abs(seen - np.hypot(blur, sharp)) < 0.25 * blur, (blur, seen)


def test_creases_take_the_focus_of_a_soft_face():
    """On a soft face the same creases are wider and shallower (a crease crisper than the rest of the face
    reads as drawn on); on a sharp one they are as drawn; the darkening they add up to stays."""
    acts = {"AU4": 1.0, "AU6": 1.0, "AU12": 1.0}
    plain = wrinkles.shading_on(TEMPLATE_68, wrinkles._clipped(acts), 256)
    sharp, soft = _featured_face(0.0), _featured_face(2.5)
    np.testing.assert_array_equal(wrinkles.in_focus(plain, sharp, TEMPLATE_68), plain)
    focused = wrinkles.in_focus(plain, soft, TEMPLATE_68)
    assert focused.min() > 0.7 * plain.min()                               # shallower valleys ...
    assert abs(focused.sum() - plain.sum()) < 0.02 * np.abs(plain).sum()   # ... the same shade in all
    # and it is what the render draws: the soft face's shading is the focused field
    mask = np.ones((256, 256), np.float32)
    drawn = wrinkles.shade(soft, TEMPLATE_68, acts, mask).astype(np.float32)[..., 1]
    expected = np.clip(soft[..., 1] * np.exp(focused), 0, 255)
    assert np.abs(drawn - expected).max() <= 1.0


def test_knit_brows_keep_the_frown_lines_between_their_heads_and_the_brows_themselves_unshaded(face):
    """The brows are cut out of the skin mask as grown strokes; their round ends used to reach over the
    glabella, so with knit brows (AU4) two thirds of the "11" lines' shade between the heads was cut away
    and only dashes above the brows showed. The skin between the heads now keeps the lines; the brow hair
    (its points up to the inner heads) stays unshaded."""
    from spfem_cli.backends.warp import facs

    knit = TEMPLATE_68 + 0.96 * facs.action_units(68)["AU4"]       # angry's brow at the default intensity
    shaded = wrinkles.shade(face, knit, {"AU4": 1.0}).astype(float)
    unmasked = wrinkles.shade(face, knit, {"AU4": 1.0}, np.ones((256, 256), np.float32)).astype(float)
    band = (slice(int(knit[17:27, 1].min()) - 15, int(knit[27, 1]) + 3), slice(int(knit[21, 0]) + 1, int(knit[22, 0])))
    kept = np.clip(face[band] - shaded[band], 0, None).sum() / np.clip(face[band] - unmasked[band], 0, None).sum()
    assert kept > 0.9
    mask = wrinkles.skin_mask(face, knit)
    for point in knit[17:27]:
        x, y = np.round(point).astype(int)
        assert mask[y, x] < 0.1
