"""Expression wrinkles: crease shading driven by action-unit activations ("wrinkle maps").

A mesh warp moves skin but cannot fold it: a smile without nasolabial folds and crow's feet, a frown
without glabellar lines, raised brows without forehead lines read weakly. Facial animation rigs add
those folds as shading maps blended by the rig's AU activations; this module does the same for the
warp backend, procedurally, in the aligned face crop, after the warp and before the paste-back:

* each crease is a curve placed by the landmarks of the aligned template (nasolabial folds and crow's
  feet for AU6/AU12, glabellar and procerus lines for AU4, forehead lines for AU1 in the centre and
  AU2 at the sides, nose wrinkles for AU9) and drawn once per AU into the map of its facial region
  (:func:`wrinkle_maps`); per frame each region's maps are blended by the
  activations (the shading is linear in them, so activation 0 is exactly no change) and carried onto
  the face by the least-squares affine map of that region's landmarks, so creases move with the skin
  and are as smooth in time as the track: nothing is random per frame;
* a crease's profile is a darkening valley with a soft highlight on the side the skin bulges, applied
  as a multiplicative luminance change of the crop itself and slightly warmer in the shadow (skin
  scatters red light), so it keeps the skin's own colour and lighting rather than painting grey lines;
* a skin mask (the face minus the eyes, brows and lips, gated by the cheeks' own colour so hair,
  fringes and dark frames stay untouched) bounds where anything may change.

Nothing is drawn next to the lips: a lip-corner depressor (AU15) shadow was tried and dropped, as it
added nothing to the recognised emotion and made the re-tracked mouth opening read ~4 % larger.

Geometry is in units of the aligned template (outer eye corners 100 px apart in the 256² crop).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from spfem_cli.face import focus
from spfem_cli.face.align import TEMPLATE_68
from spfem_cli.face.tracking.mediapipe_tracker import MP_TO_IBUG68

ALIGNED = 256.0
SHADOW_TINT = (0.82, 1.0, 1.12)     # per-channel exponent of the shadow (R, G, B): warmer shade
MAX_ACTIVATION = 1.5


@dataclass(frozen=True)
class Crease:
    """One fold: a polyline (aligned px) and its profile."""

    points: np.ndarray        # (N, 2)
    weight: float             # AU-weighted activation (≥ 0)
    depth: float              # log-luminance drop at the crease centre, per unit activation
    width: float              # Gaussian sigma of the valley (aligned px)
    highlight: float = 0.0    # log-luminance rise of the bulge beside it
    offset: float = 0.0       # signed distance of the bulge (left of the curve's direction is +)
    spread: float = 0.0       # sigma of the bulge (default 1.8 × width)
    taper: float = 0.6        # exponent of the sin fade along the curve (ends fade to 0)
    soft: float = 0.0         # sign gives the valley's gentle side, magnitude its width ratio
    along: np.ndarray | None = None   # weight at each point (replaces the taper when given)
    group: str = ""                   # the facial region that carries it (see GROUP_ANCHORS)


def _activation(acts: dict[str, float], weights: dict[str, float]) -> float:
    return float(sum(w * np.clip(acts.get(au, 0.0), 0.0, MAX_ACTIVATION) for au, w in weights.items()))


def _smooth_curve(ctrl: np.ndarray, n: int = 24) -> np.ndarray:
    """Catmull-Rom spline through the control points (end points repeated)."""
    p = np.concatenate([ctrl[:1], ctrl, ctrl[-1:]])
    out = []
    for i in range(1, len(p) - 2):
        t = np.linspace(0, 1, max(2, n // (len(ctrl) - 1)), endpoint=False)[:, None]
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(ctrl[-1:])
    return np.concatenate(out)


@functools.lru_cache(maxsize=64)
def _wobble(key: int, n: int) -> np.ndarray:
    """A fixed, smooth sideways wobble per crease (seeded by the crease, never by the frame)."""
    rng = np.random.default_rng(key)
    knots = rng.normal(0, 1, 5)
    return np.interp(np.linspace(0, 4, n), np.arange(5), knots)


def _wobbled(points: np.ndarray, key: int, amount: float) -> np.ndarray:
    tangent = np.gradient(points, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    return points + normal * (amount * _wobble(key, len(points)))[:, None]


GLABELLA_SHORTENING = 0.6   # the share of the frown lines' upward reach that raised inner brows take away


def creases(lm: np.ndarray, acts: dict[str, float]) -> list[Crease]:
    """The folds of one face: landmarks (68, 2) in aligned 256² pixels, AU activations."""
    lm = np.asarray(lm, np.float64)
    eye_r, eye_l = lm[36:42].mean(0), lm[42:48].mean(0)
    across = eye_l - eye_r
    u = float(np.linalg.norm(lm[45] - lm[36])) / 100.0          # template units → px
    x_axis = across / (np.linalg.norm(across) + 1e-9)            # image-right
    y_axis = np.array([-x_axis[1], x_axis[0]])                   # image-down
    out: list[Crease] = []
    key = 0

    def add(ctrl, weight, depth, width, *, group, highlight=0.0, offset=0.0, spread=0.0, taper=0.6, wobble=0.0,
            soft=0.0):
        nonlocal key
        key += 1
        if weight <= 1e-6:
            return
        pts = _smooth_curve(np.asarray(ctrl, np.float64))
        if wobble:
            pts = _wobbled(pts, key, wobble * u)
        out.append(Crease(pts, weight, depth, width * u, highlight, offset * u, spread * u, taper, soft, group=group))

    for side, (ala, corner, canthus, lid_lo, brow_in, inner_canthus) in (
            (-1, (31, 48, 36, (41, 40), 21, 39)), (1, (35, 54, 45, (46, 47), 22, 42))):
        name = "R" if side < 0 else "L"                          # the subject's right is the image left
        out_x = side * x_axis                                     # away from the midline

        def at(p, dx, dy, out_x=out_x):                          # dx outward, dy down, in template units
            return p + dx * u * out_x + dy * u * y_axis

        sgn = -side                                              # converts "outward" into the curve-left sign
        # Nasolabial fold (AU12 smile, AU6 cheek raise, AU10/AU9 upper-lip raise): from above the nose
        # wing, bowing out, to beside and a little below the mouth corner. Cheek bulge on the outside.
        w = _activation(acts, {"AU12": 1.0, "AU6": 0.35, "AU10": 0.6, "AU9": 0.4})
        if side == 1:                                            # the contempt smirk is one-sided
            w += _activation(acts, {"AU14R": 0.8})
        top = at(lm[ala], 7.0, -6.0)
        low = at(lm[corner], 10.0, 12.0)
        ctrl = [top, 0.5 * (top + low) + 2.0 * u * out_x, low]
        add(ctrl, w, 0.21, 1.6, group="fold" + name, highlight=0.09, offset=sgn * 5.0, spread=4.5, taper=0.5,
            wobble=0.4, soft=-sgn * 2.2)
        # Crow's feet (AU6): three fine lines fanning out from the outer eye corner.
        w = _activation(acts, {"AU6": 1.0, "AU12": 0.25})
        c = at(lm[canthus], 3.5, 0.0)
        for k, ang in enumerate((-28.0, 0.0, 26.0)):
            a = np.deg2rad(ang)
            d = np.cos(a) * out_x + np.sin(a) * y_axis
            start = c + d * 2.0 * u
            end = c + d * (13.0 - 2.0 * abs(k - 1)) * u
            add([start, 0.5 * (start + end) + 0.8 * u * y_axis, end], w * (1.0 - 0.15 * abs(k - 1)), 0.12, 0.9,
                group="eye" + name, highlight=0.04, offset=sgn * 1.6, spread=1.4, taper=0.9, wobble=0.5)
        # Lower-lid furrow (AU6): the cheek pushes up a fold under the lower lid.
        lo = lm[list(lid_lo)]
        ctrl = [at(lm[inner_canthus], -1.0, 6.0), at(lo[1], 0.0, 6.5), at(lo[0], 0.0, 6.5), at(lm[canthus], 1.0, 5.0)]
        add(ctrl, w, 0.10, 1.6, group="eye" + name, highlight=0.06, offset=sgn * 2.5, spread=2.0, taper=0.7)
        # Glabellar "11" lines (AU4): nearly vertical, at the inner brow heads, converging downwards. With
        # the inner brows raised (AU1: sadness, fear) the frown bunches between the brow heads only (the
        # forehead lines take its place above): full-length lines read as a ridge up the forehead. Shallow
        # and soft (0.14, 1.8 px): since the brows' holes stop at their heads the lines show whole, and at
        # the depth they had when only their tips showed (0.17, 1.5) they read as pencil strokes on a child.
        w = _activation(acts, {"AU4": 1.0, "AU9": 0.3})
        raised = _activation(acts, {"AU1": 1.0})
        short = GLABELLA_SHORTENING * min(raised / max(w, 1e-6), 1.0)
        head = lm[brow_in]
        mid_x = 0.5 * (lm[21] + lm[22])
        base = mid_x + (head - mid_x) * 0.45
        add([at(base, -0.5, 5.0), at(base, 0.0, -3.0 * (1.0 - short)), at(base, 0.8, -12.0 * (1.0 - short))], w,
            0.14, 1.8, group="glabella", highlight=0.03 * (1.0 - short), offset=sgn * 2.8, spread=2.4, taper=0.7,
            wobble=0.3)
        # Nose wrinkles (AU9): short lines slanting up and out over the side wall of the nasal bridge.
        w = _activation(acts, {"AU9": 1.0})
        for k, f in enumerate((0.35, 0.65)):
            p = lm[27] + f * (lm[30] - lm[27])
            start = at(p, 4.0, 0.5)
            end = at(start, 4.5, -4.5)
            add([start, end], w * (1.0 - 0.25 * k), 0.12, 1.0, group="nose", highlight=0.05, offset=sgn * 1.6,
                spread=1.5, taper=0.9, wobble=0.3)
    # Procerus line (AU4): a short transverse crease at the root of the nose.
    w = _activation(acts, {"AU4": 0.7, "AU9": 0.8})
    root = lm[27] + (lm[27] - lm[28]) * 0.1
    add([root - 7 * u * x_axis, root + 0.5 * u * y_axis, root + 7 * u * x_axis], w, 0.15, 1.3, group="glabella",
        highlight=0.08,
        offset=-2.0, spread=1.8, taper=0.8)
    # Forehead lines (AU1 centre, AU2 sides): three arcs parallel to the brows, across the midline.
    brows = lm[17:27]
    rise = (brows - lm[36:48].mean(0)) @ y_axis                # brow height above the eyes (negative)
    centre_w = _activation(acts, {"AU1": 1.0})
    side_w = _activation(acts, {"AU2": 1.0})
    if centre_w + side_w > 1e-6:
        for k, lift in enumerate((11.0, 19.0, 27.0)):
            ctrl = brows + (lift * u + 0.15 * k * np.abs(rise).mean()) * -y_axis
            ctrl = np.concatenate([ctrl[:5], [0.5 * (ctrl[4] + ctrl[5]) - 2.0 * u * y_axis], ctrl[5:]])
            pts = _wobbled(_smooth_curve(ctrl, 40), 100 + k, 0.7 * u)
            t = np.linspace(-1, 1, len(pts))                     # position across the forehead
            mix = centre_w * np.exp(-0.5 * (t / 0.35) ** 2) + side_w * np.exp(-0.5 * ((np.abs(t) - 0.55) / 0.25) ** 2)
            mix *= np.sin(np.pi * (t + 1) / 2) ** 0.5 * (1.0 - 0.25 * k)
            out.append(Crease(pts, 1.0, 0.13, 1.5 * u, 0.05, -2.4 * u, 2.4 * u, along=mix, group="forehead"))
    return out


def _profile(c: Crease, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Log-luminance change of one crease on the pixel grid (xs, ys), computed in its bounding box."""
    pts = c.points
    a, b = pts[:-1], pts[1:]
    ab = b - a
    seg_len = np.linalg.norm(ab, axis=1)
    keep = seg_len > 1e-9
    a, ab, seg_len = a[keep], ab[keep], seg_len[keep]
    if len(a) == 0:
        return np.zeros_like(xs)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])[:-1]
    total = cum[-1] + seg_len[-1]
    p = np.stack([xs, ys], -1)[..., None, :]                       # (..., 1, 2)
    h = np.clip(((p - a) * ab).sum(-1) / seg_len ** 2, 0.0, 1.0)   # (..., S)
    d = p - (a + h[..., None] * ab)
    dist2 = (d ** 2).sum(-1)
    best = np.argmin(dist2, axis=-1)[..., None]
    dist = np.sqrt(np.take_along_axis(dist2, best, -1))[..., 0]
    cross = ab[..., 0] * (p[..., 1] - a[..., 1]) - ab[..., 1] * (p[..., 0] - a[..., 0])
    side = np.sign(np.take_along_axis(cross, best, -1)[..., 0])
    t = (np.take_along_axis(cum + h * seg_len, best, -1)[..., 0]) / total
    if c.along is not None:
        fade = np.interp(t, np.linspace(0, 1, len(c.along)), c.along)
    else:
        fade = np.sin(np.pi * np.clip(t, 0, 1)) ** c.taper
    signed = side * dist
    width = c.width
    if c.soft:
        width = np.where(signed * c.soft > 0, c.width * abs(c.soft), c.width)
    valley = np.exp(-0.5 * (dist / width) ** 2)
    value = -c.depth * valley
    if c.highlight:
        spread = c.spread or 1.8 * c.width
        value = value + c.highlight * np.exp(-0.5 * ((signed - c.offset) / spread) ** 2)
    return c.weight * fade * value


def shading_field(shape: tuple[int, int], lm: np.ndarray, acts: dict[str, float],
                  group: str | None = None) -> np.ndarray:
    """Log-luminance field (H, W) float32 drawn directly at landmarks ``lm`` (pixels); one region's only
    when ``group`` is given. Exact but slow (~0.2 s): :func:`shade` uses it once per AU, on the template."""
    h, w = shape
    field = np.zeros((h, w), np.float32)
    for c in creases(lm, acts):
        if group is not None and c.group != group:
            continue
        reach = 3.5 * max(c.width, (c.spread or 1.8 * c.width) + abs(c.offset))
        x0, y0 = np.floor(c.points.min(0) - reach).astype(int)
        x1, y1 = np.ceil(c.points.max(0) + reach).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        field[y0:y1, x0:x1] += _profile(c, xs, ys).astype(np.float32)
    return field


def face_region(lm: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) 0/255: the jaw line closed by a forehead band above the brows (where creases may go)."""
    lm = np.asarray(lm, np.float64)
    brows = lm[17:27]
    forehead = brows + (brows - lm[36:48].mean(0)) * 1.9
    region = np.zeros(shape, np.uint8)
    cv2.fillPoly(region, [np.round(np.concatenate([lm[0:17], forehead[::-1]]) * 16).astype(np.int32)], 255,
                 lineType=cv2.LINE_AA, shift=4)
    return region


def skin_mask(face: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Soft mask (H, W) float32 in [0, 1] of the skin that may fold.

    The face region minus the eyes, the brows and the lips (each grown a little), gated by similarity to
    the cheeks' own colour so that hair, fringes and dark glasses frames stay untouched.
    """
    h, w = face.shape[:2]
    lm = np.asarray(lm, np.float64)
    u = float(np.linalg.norm(lm[45] - lm[36])) / 100.0
    region = face_region(lm, (h, w))
    openings = np.zeros((h, w), np.uint8)                    # eyes and mouth, never shaded
    for poly in (lm[36:42], lm[42:48], lm[48:60]):
        cv2.fillPoly(openings, [np.round(poly * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    brows = np.zeros((h, w), np.uint8)
    for brow in (lm[17:22], lm[22:27]):
        cv2.polylines(brows, [np.round(brow * 16).astype(np.int32)], False, 255, thickness=max(1, int(round(9 * u))),
                      lineType=cv2.LINE_AA, shift=4)
    k = max(3, int(round(4 * u)) | 1)                        # feather kernel; its radius < grow below
    grow = max((k + 1) // 2, int(round(3 * u)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    brows = cv2.dilate(brows, disk)
    brows[_between_brow_heads(lm, (h, w), BROW_HEAD_REACH * u)] = 0
    holes = np.maximum(cv2.dilate(openings, disk), brows)
    region = cv2.erode(region, np.ones((k, k), np.uint8))    # so the feathered mask stays inside the face
    mask = (region.astype(np.float32) / 255.0) * (1.0 - holes.astype(np.float32) / 255.0)
    mask *= _skin_colour_likelihood(face, lm, u)
    # Feathered; the grey (anti-aliased) dilation keeps it continuous in the landmarks, and the openings'
    # own pixels, where the feather could still reach at sharp corners, are cut exactly.
    return cv2.GaussianBlur(mask, (k, k), 0) * (openings == 0)


BROW_HEAD_REACH = 2.0   # template units the brows' hole reaches past each inner head towards the midline


def _between_brow_heads(lm: np.ndarray, shape: tuple[int, int], reach: float) -> np.ndarray:
    """Pixels between the brows' inner heads (iBUG 21, 22), more than ``reach`` px from each across the face
    and no higher than ``4 * reach`` above the higher head (the glabella, not the forehead).

    The brows are cut out of the skin mask as thick, grown strokes, whose round ends reached ~8 template
    units past each head: knit brows (AU4) bring the heads so close that those ends met over the glabella
    and cut the frown's "11" lines, which then showed only as dashes floating above the brows. The brow
    hair itself stays cut out; only the overshoot into the skin between the heads is given back. Not above
    the heads: there it let the forehead lines' lowest arc dip between the brows, a change the viewer does
    not see but MediaPipe did (the test face's re-tracked mouth r for surprised moved 0.968 → 0.941).
    """
    h, w = shape
    across = lm[45] - lm[36]
    x_axis = across / (np.linalg.norm(across) + 1e-9)          # image-right, along the eyes
    y_axis = np.array([-x_axis[1], x_axis[0]])                 # image-down
    xs, ys = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    across_pos, down_pos = xs * x_axis[0] + ys * x_axis[1], xs * y_axis[0] + ys * y_axis[1]
    top = min(float(lm[21] @ y_axis), float(lm[22] @ y_axis)) - 4.0 * reach    # the heads' upper edge: no higher
    return (across_pos > float(lm[21] @ x_axis) + reach) & (across_pos < float(lm[22] @ x_axis) - reach) & (down_pos > top)


def _skin_colour_likelihood(face: np.ndarray, lm: np.ndarray, u: float) -> np.ndarray:
    """How much each pixel looks like the cheeks' skin (chroma and brightness), soft, in [0, 1].

    Each term depends on one 8-bit channel, so it is evaluated on the 256 levels and looked up per pixel
    (the same numbers as evaluating it per pixel, at a fraction of the cost: this runs every frame).
    """
    ycc = cv2.cvtColor(face, cv2.COLOR_RGB2YCrCb)
    samples = []
    for p in (0.5 * (lm[31] + lm[2]), 0.5 * (lm[35] + lm[14]), lm[29]):
        x, y = np.round(p).astype(int)
        r = max(2, int(round(6 * u)))
        patch = ycc[max(y - r, 0):y + r, max(x - r, 0):x + r].reshape(-1, 3).astype(np.float32)
        if len(patch):
            samples.append(patch)
    if not samples:
        return np.ones(face.shape[:2], np.float32)
    s = np.concatenate(samples)
    mean = np.median(s, 0)
    spread = np.maximum(np.percentile(np.abs(s - mean), 90, axis=0), (6.0, 3.0, 3.0))
    levels = np.repeat(np.arange(256, dtype=np.float32)[:, None], 3, axis=1)     # every value of a channel
    chroma = cv2.LUT(ycc[..., 1:], (((levels[:, 1:] - mean[1:]) / (2.5 * spread[1:] + 2.0)) ** 2)[None])
    score = np.exp(-0.5 * np.maximum(chroma[..., 0] + chroma[..., 1] - 1.0, 0.0))
    bright = cv2.LUT(ycc[..., 0], np.clip((levels[:, 0] - 0.45 * mean[0]) / (0.2 * mean[0] + 1e-6), 0.0, 1.0)[None])
    return (score * bright).astype(np.float32)


# AUs that fold skin, and the landmarks that carry each facial region's creases (iBUG-68 indices).
WRINKLE_AUS = ("AU1", "AU2", "AU4", "AU6", "AU9", "AU10", "AU12", "AU14R")
GROUP_ANCHORS: dict[str, tuple[int, ...]] = {
    "foldR": (31, 48, 49, 33, 39, 2), "foldL": (35, 54, 53, 33, 42, 14),
    "eyeR": (36, 37, 38, 39, 40, 41, 17), "eyeL": (42, 43, 44, 45, 46, 47, 26),
    "glabella": (20, 21, 22, 23, 27, 39, 42), "nose": (27, 28, 29, 30, 39, 42),
    "forehead": (17, 19, 21, 22, 24, 26, 27, 36, 45),
}
# Pairs whose creases are not the sum of their own: raised inner brows shorten the frown lines. Each gets
# a map of the difference, weighted by the weaker of the two.
JOINT_AUS: tuple[tuple[str, str], ...] = (("AU1", "AU4"),)
# Brow-region creases deeper than their per-crease depths: glabellar furrows and forehead lines are what
# a sad, angry, surprised or fearful brow reads by (FER-2013 P(target) +0.05…0.1 on real clips at 1.4×,
# and they look it); the smile's folds stay as they are (deeper, they read as a mask).
GROUP_GAIN: dict[str, float] = {"glabella": 1.4, "forehead": 1.4}


@dataclass(frozen=True)
class _Map:
    """One region's crease shading for one AU at activation 1, in a box of the template frame."""

    field: np.ndarray        # (h, w) float32
    origin: tuple[int, int]  # (x0, y0) of the box in the 256² template frame


@functools.lru_cache(maxsize=1)
def wrinkle_maps() -> dict[str, dict[str | tuple[str, ...], _Map]]:
    """region → AU (or a :data:`JOINT_AUS` pair) → map, drawn once on the aligned template (outer eye
    corners 100 px apart)."""
    size = int(ALIGNED)
    out: dict[str, dict[str | tuple[str, ...], _Map]] = {}
    for group in GROUP_ANCHORS:
        for au in WRINKLE_AUS + JOINT_AUS:
            units = _units(au)
            field = shading_field((size, size), TEMPLATE_68, dict.fromkeys(units, 1.0), group)
            if len(units) > 1:               # what the pair changes over the sum of its own maps
                field -= sum(shading_field((size, size), TEMPLATE_68, {one: 1.0}, group) for one in units)
            rows, cols = np.flatnonzero(np.abs(field).max(1) > 1e-4), np.flatnonzero(np.abs(field).max(0) > 1e-4)
            if len(rows):
                box = field[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].copy()
                out.setdefault(group, {})[au] = _Map(box * GROUP_GAIN.get(group, 1.0), (int(cols[0]), int(rows[0])))
    return out


def _affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2×3 affine taking points ``src`` (N, 2) onto ``dst``: smooth in the landmarks."""
    design = np.hstack([src, np.ones((len(src), 1))])
    solution, *_ = np.linalg.lstsq(design, dst, rcond=None)
    return solution.T


def _units(au: str | tuple[str, ...]) -> tuple[str, ...]:
    return (au,) if isinstance(au, str) else au


def _joint(acts: dict[str, float], au: str | tuple[str, ...]) -> float:
    """An AU's activation, or a pair's (:data:`JOINT_AUS`): the weaker of the two, as much as both act."""
    return min(acts.get(one, 0.0) for one in _units(au))


def shading_on(lm: np.ndarray, acts: dict[str, float], size: int) -> np.ndarray:
    """The blended wrinkle maps carried onto a face with landmarks ``lm`` (68, 2) in a ``size``² frame."""
    field = np.zeros((size, size), np.float32)
    template = TEMPLATE_68 * (size / ALIGNED)
    for group, maps in wrinkle_maps().items():
        used = [(a, m) for au, m in maps.items() if (a := _joint(acts, au)) > 0]
        if not used:
            continue
        h = max(m.origin[1] + m.field.shape[0] for _, m in used) - min(m.origin[1] for _, m in used)
        w = max(m.origin[0] + m.field.shape[1] for _, m in used) - min(m.origin[0] for _, m in used)
        origin = (min(m.origin[0] for _, m in used), min(m.origin[1] for _, m in used))
        box = np.zeros((h, w), np.float32)
        for a, m in used:
            y, x = m.origin[1] - origin[1], m.origin[0] - origin[0]
            box[y:y + m.field.shape[0], x:x + m.field.shape[1]] += a * m.field
        idx = list(GROUP_ANCHORS[group])
        matrix = _affine(template[idx], lm[idx])                  # template frame (this size) → face
        scale = size / ALIGNED
        local = matrix @ np.array([[scale, 0, origin[0] * scale], [0, scale, origin[1] * scale], [0, 0, 1]])
        field += cv2.warpAffine(box, local, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return field


def _clipped(activations: dict[str, float]) -> dict[str, float] | None:
    """The activations of the AUs that fold skin, in [0, MAX_ACTIVATION]; None when all are 0."""
    acts = {au: float(np.clip(activations.get(au, 0.0), 0.0, MAX_ACTIVATION)) for au in WRINKLE_AUS}
    return acts if any(acts.values()) else None


# The creases take the picture's own focus (:mod:`spfem_cli.face.focus`). Drawn at the template's sharpness
# into a soft, compressed or upscaled face (an old scanned photo of a child, a painting, a blurry webcam
# clip), a crease is the crispest thing on the face and reads as drawn on: the frown as a fan of dashes, the
# forehead as pencil lines. The field is blurred by what the face has beyond the sharpest faces' reading.
SHARP_BLUR = 0.9       # aligned px that sharp HD faces read (the crop's resampling, the gradient filter): no extra blur
MAX_EXTRA_BLUR = 2.5   # aligned px: a face soft beyond this has no creases to speak of either


def image_blur(face: np.ndarray, lm: np.ndarray) -> float:
    """The Gaussian blur σ (aligned px) of a 256² aligned face crop (RGB), read at its strongest edges inside
    the face region of its landmarks ``lm`` (68, 2); :data:`SHARP_BLUR` where there is no edge to read."""
    sigma = focus.blur_sigma(face, face_region(lm, face.shape[:2]) > 127)
    return SHARP_BLUR if sigma is None else sigma


def in_focus(field: np.ndarray, face: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """``field`` (aligned 256², before the skin mask) blurred to the focus of ``face`` (:func:`image_blur`)."""
    extra = focus.extra_blur(image_blur(face, lm), SHARP_BLUR, MAX_EXTRA_BLUR)
    return field if extra < 0.25 else cv2.GaussianBlur(field, (0, 0), extra)


def aligned_field(face: np.ndarray, lm: np.ndarray, activations: dict[str, float]) -> np.ndarray | None:
    """The skin-masked log-luminance field (256², float32) of a 256² aligned face with landmarks ``lm``
    (68, 2) for ``activations`` (AU name → ≥ 0), in the face's own focus; None when no AU folds skin."""
    acts = _clipped(activations)
    if acts is None:
        return None
    return in_focus(shading_on(lm, acts, int(ALIGNED)), face, lm) * skin_mask(face, lm)


def gain(field: np.ndarray) -> np.ndarray:
    """Per-channel multiplicative gain (H, W, 3) float32 of a log-luminance field: shadows slightly warmer
    (SHADOW_TINT), highlights neutral; exp(0) = 1, so pixels without a crease keep their exact value."""
    shadow = np.minimum(field, 0.0)
    light = field - shadow
    return cv2.merge([cv2.exp(shadow * t + light) for t in SHADOW_TINT])


def shade(face: np.ndarray, landmarks: np.ndarray, activations: dict[str, float],
          mask: np.ndarray | None = None) -> np.ndarray:
    """The crop ``face`` (S×S RGB uint8) with the expression creases of ``activations`` (AU name → ≥ 0).

    ``landmarks`` are the face's 68 points in the crop's pixels (after the warp). ``mask`` (S×S in
    [0, 1]) bounds the change; default :func:`skin_mask`. Zero activations return the input unchanged.
    """
    face = np.asarray(face)
    size = face.shape[0]
    work = int(ALIGNED)
    lm = (np.asarray(landmarks, np.float64) + 0.5) * (work / size) - 0.5   # pixel centres, as cv2.resize
    small = face if size == work else cv2.resize(face, (work, work), interpolation=cv2.INTER_AREA)
    if mask is None:
        field = aligned_field(small, lm, activations)
    else:
        acts = _clipped(activations)
        field = None if acts is None else in_focus(shading_on(lm, acts, work), small, lm)
    if field is None:
        return face.copy()
    if size != work:
        field = cv2.resize(field, (size, size), interpolation=cv2.INTER_LINEAR)
    if mask is not None:
        field *= np.asarray(mask, np.float32)
    changed = np.abs(field) > 1e-4
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    if len(rows) == 0:
        return face.copy()
    roi = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]          # work only where something changes
    out = face.copy()
    out[roi] = cv2.multiply(face[roi].astype(np.float32), gain(field[roi]), dtype=cv2.CV_8U)
    return out


def shade_edit(face: np.ndarray, edit) -> np.ndarray:
    """:func:`shade` for one frame's ``FaceEdit`` of the warp backend: its edited points in crop pixels
    (the 478-point mesh or the 68 iBUG landmarks) and the AU activations the edit adds."""
    points = np.asarray(edit.edited, np.float64)
    return shade(face, points if len(points) == 68 else points[MP_TO_IBUG68], edit.aus)
