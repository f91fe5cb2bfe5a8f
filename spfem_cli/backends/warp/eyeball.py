"""The eyeball does not stretch with the lids: redraw each eye opening after the mesh warp.

The mesh spans each eye lid to lid, so an edit that opens the lids (AU5: surprise, fear) stretched the
iris into a tall dark oval, and one that narrows them (AU6/AU7: happy, angry) squashed it. A real eye is a
ball behind the lids: the lids slide over it, the iris keeps its size, place and gaze, and a wider eye
shows more white above (and below) the iris, the cue people read surprise and fear by.

So, per eye and per frame, in a small box of the frame: the eyeball is the source frame's own pixels
(unmoved) where the source showed it; what a raised upper lid uncovers (and a thin band under the source's
lid, where its lashes and shadow sit) is filled in: the white from the white the source shows, the iris
from its visible rings (its disc is the tracker's iris ring), under the edited lid's shadow. The warped
frame takes that eyeball inside the edited opening and keeps its own pixels everywhere else: the warped
lids and their lashes, past the lower lid and the corners, and whatever the eyeglass damping holds. An eye
the source shows shut (a blink) keeps the plain warp, and so does one whose lids the edit leaves in place.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from spfem_cli.backends.warp import facs

MARGIN = 0.18               # share of the source opening's height along the lids not trusted as eyeball
MIN_MARGIN_PX = 1.0         # … and at least this many frame px (the lash line and the lid's own shadow)
MIN_SCLERA_PX = 6           # fewer visible white pixels than this: the white cannot be read, keep the warp
STILL_LIDS_PX = 0.5         # lids moved less than this (frame px): the eye is left as the warp has it
PAD = 4                     # box margin around the two openings, frame px
SUB = 4                     # sub-pixel bits for polygon rasterising
WHITE_PERCENTILE = 75        # the white's colour is read off its brightest quarter …
WHITE_CHROMA = 0.8          # … keeping this share of its tint
WHITE_OVER_SKIN = 0.1       # the white's light is at least this share of the way from the skin's to full white (0: no floor)
LID_SHADOW = 0.25           # darkening of the white just under the upper lid's edge, fading over …
SHADOW_REACH = 0.2          # … this share of the opening's height (the lashes' own dark line is the warped lid's)
IRIS_BANDS = 5              # rings the iris's colour is read in, centre to rim
SEAM_BLEND = 0.15           # share of the source opening's height over which the fill hands over to the kept white
LASH_BAND = 0.12            # share of the edited opening's height under the upper lid left to the warped lid (lashes)
SOFT_SHARE = 0.02           # the redraw's edges (iris rim, lash line) are this share of the eye's width soft …
MIN_SOFT_PX = 0.5           # … and at least this (frame px): a painted edge is sharper than the photo round it
OLD_SHADE = (0.55, 0.8)     # a source pixel under its lid at under this share of the eyeball's light is the old lid's shade …
OLD_SHADE_DEPTH = 0.5       # … looked for this deep under the source lid (share of the opening's height)
GRAIN_BLUR = 1.5            # the white's grain is what a blur this wide (frame px) takes out of it …
MAX_GRAIN = 8.0             # … at most this std (grey levels): more is lashes and glints, not grain …
GRAIN_MIN_PX = 20           # … read on at least this many px of white clear of every edge (else: none)
GRAIN_TILE = 128            # side of the fixed noise tile the grain is cut from


def opening(points: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """The eye opening's outline (K, 2): upper lid inner → outer corner, then the lower lid back."""
    return np.r_[points[upper], points[lower[::-1]]]


def _fill(shape: tuple[int, int], polygon: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (float32 0–1) of ``polygon`` (frame px) in a box at ``origin``."""
    mask = np.zeros(shape, np.uint8)
    pts = np.round((polygon - origin) * (1 << SUB)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=SUB)
    return mask.astype(np.float32) / 255.0


def _quadratic_row(xs: np.ndarray, values: np.ndarray, width: int) -> np.ndarray:
    """(width, k): a least-squares quadratic across the box's columns through ``values`` (n, k) at ``xs``,
    ridge-held, so a narrow sample cannot tilt or bow it much."""
    half = max(width / 2.0, 1.0)
    u = (xs - width / 2.0) / half
    a = np.stack([np.ones_like(u), u, u * u], -1)
    coef = np.linalg.solve(a.T @ a + np.diag([0.0, 1e-2, 1e-2]) * len(u), a.T @ values)
    g = (np.arange(width) - width / 2.0) / half
    return np.stack([np.ones_like(g), g, g * g], -1) @ coef


def _white_model(pixels: np.ndarray, white: np.ndarray, skin: np.ndarray) -> np.ndarray | None:
    """The white of the eye as a smooth field over the box, constant down it, None when the white is too
    small to read: per channel a quadratic across the eye, fitted to the brighter quarter of the white the
    source shows (the rest is the lids' shadow and stray lashes, which the lid shadow puts back where the
    edited lid is), with a little of its tint taken out. Fitted to each column's own brighter quarter
    instead, the corners' lid and caruncle pixels tinted it orange. It is at least
    :data:`WHITE_OVER_SKIN` of the way from the skin's light (round the eye, ``skin``) to full white: a white
    the source shows only as a sliver in a corner's shade would otherwise fill the eye with grey. Smooth, so
    a filled-in band has no streaks or seams."""
    ys, xs = np.nonzero(white)
    if len(xs) < MIN_SCLERA_PX:
        return None
    w = white.shape[1]
    colours = pixels[ys, xs].astype(np.float64)
    lum = colours.mean(1)
    bright = lum >= np.percentile(lum, WHITE_PERCENTILE)
    tint = colours[bright]
    grey = tint.mean(1, keepdims=True)
    row = _quadratic_row(xs[bright], grey + WHITE_CHROMA * (tint - grey), w)
    if WHITE_OVER_SKIN > 0 and skin.any():
        skin_light = float(np.median(pixels[skin].astype(np.float64).mean(1)))
        floor = skin_light + WHITE_OVER_SKIN * (255.0 - skin_light)
        row *= max(floor / max(float(row.mean(1).max()), 1.0), 1.0)
    return np.broadcast_to(row[None].astype(np.float32), (*white.shape, pixels.shape[2])).copy()


def _mirrored_iris(pixels: np.ndarray, seen: np.ndarray, rings: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The iris with its hidden part taken from the seen part mirrored top to bottom through its centre (a lid
    hides the top, the bottom shows), so a widened eye shows the iris's own texture, not flat rings; the rings
    (``rings``) stand in where the mirrored point is not seen either."""
    h, w = seen.shape
    map_x = np.broadcast_to(np.arange(w, dtype=np.float32)[None], (h, w))
    map_y = np.broadcast_to((2.0 * float(centre[1]) - np.arange(h, dtype=np.float32))[:, None], (h, w))
    mirrored = cv2.remap(pixels.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    seen_there = cv2.remap(seen.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0.0)[..., None]
    return seen_there * mirrored + (1.0 - seen_there) * rings


def _iris_model(pixels: np.ndarray, seen: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """The iris as rings: each pixel gets the mean colour the visible iris has at its distance from the
    centre (pupil, iris, darker rim), so a part the lid hid comes back with the same rings."""
    h, w = seen.shape
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    ring = np.clip((np.hypot(gx - centre[0], gy - centre[1]) / max(radius, 1e-6) * IRIS_BANDS).astype(int), 0, IRIS_BANDS - 1)
    seen_rings = ring[seen]
    colours = pixels[seen].astype(np.float64)
    overall = colours.mean(0)
    table = np.array([colours[seen_rings == k].mean(0) if np.any(seen_rings == k) else overall for k in range(IRIS_BANDS)])
    return table[ring].astype(np.float32)


@dataclass
class EyeSource:
    """One eye of a frame, ready to go back in once the frame is warped: the box, the eyeball and where it shows."""

    origin: np.ndarray        # box corner (x, y) in the frame
    eyeball: np.ndarray       # (h, w, 3) uint8: the eyeball, visible part kept, hidden part filled in
    shown: np.ndarray         # (h, w) 0–1: how much of the eyeball replaces the warped pixels


def _lid_row(width: int, lid: np.ndarray) -> np.ndarray:
    """The upper lid's height (box px) in each column of a box (``lid``: its points in box px)."""
    order = np.argsort(lid[:, 0])
    return np.interp(np.arange(width), lid[order, 0], lid[order, 1])


def _below_lid(rows: int, lid_row: np.ndarray) -> np.ndarray:
    """Per box pixel (``rows`` × the row's width), how far (px) it lies below an upper lid whose height in
    each column is ``lid_row`` (:func:`_lid_row`); 0 above."""
    return np.maximum(np.arange(rows)[:, None] - lid_row[None], 0.0).astype(np.float32)


def _soft_step(distance: np.ndarray, soft: float) -> np.ndarray:
    """0 → 1 across an edge at ``distance`` 0 (px, > 0 on the inside), ramping over ``2·soft`` px (at least 1)."""
    return np.clip(distance / max(1.0, 2.0 * soft) + 0.5, 0.0, 1.0)


def _lid_shadow(below: np.ndarray, height: float) -> np.ndarray:
    """Light left on the eyeball under an upper lid: the lid and lashes shade the white just below them.
    A deeper, wider shadow (half the light, over a third of the opening) drew the uncovered band as a grey
    shell over the white, most on small faces and deep-set eyes."""
    return 1.0 - LID_SHADOW * np.exp(-below / max(SHADOW_REACH * height, 0.8))


def _luma(colours: np.ndarray) -> np.ndarray:
    """Perceived light of RGB colours (…, 3): how dark a pixel reads, whatever its tint."""
    return colours.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


@functools.lru_cache(maxsize=1)
def _noise_tile() -> np.ndarray:
    """A fixed tile of unit-std noise, a little blurred: a camera's grain spans a pixel or two, not one."""
    noise = np.random.default_rng(0).standard_normal((GRAIN_TILE, GRAIN_TILE)).astype(np.float32)
    pad = 4                                        # blurred wrapped round, so the tile repeats without a seam
    noise = cv2.GaussianBlur(np.pad(noise, pad, mode="wrap"), (0, 0), 0.6)[pad:-pad, pad:-pad]
    return noise / float(noise.std())


def _grain_strength(luma: np.ndarray, white: np.ndarray) -> float:
    """How grainy the white the source shows is (std of its fine detail, grey levels, robust; ``luma``: the
    box's :func:`_luma`): a large, sharp eye's white has visible texture, a small or compressed one next to none."""
    detail = luma - cv2.GaussianBlur(luma, (0, 0), GRAIN_BLUR)
    # Read only where the blur reaches no edge (iris, lids, lashes): their steps are not grain.
    inner = cv2.distanceTransform(white.astype(np.uint8), cv2.DIST_L2, 3) > 2.0 * GRAIN_BLUR
    if inner.sum() < GRAIN_MIN_PX:
        return 0.0
    values = detail[inner]
    return min(1.4826 * float(np.median(np.abs(values - np.median(values)))), MAX_GRAIN)


def _grain(shape: tuple[int, int], anchor: tuple[int, int], strength: float) -> np.ndarray:
    """(h, w) grain for a box whose corner lies ``anchor`` px from the eye's inner corner: cut from a fixed
    tile at that offset, so the texture stays on the eye from frame to frame instead of crawling."""
    if strength <= 0.0:
        return np.zeros(shape, np.float32)
    rows = (np.arange(shape[0]) + anchor[1]) % GRAIN_TILE
    cols = (np.arange(shape[1]) + anchor[0]) % GRAIN_TILE
    return strength * _noise_tile()[np.ix_(rows, cols)]


def _eyeball(pixels: np.ndarray, inside: np.ndarray, below: np.ndarray, height: float, iris: np.ndarray,
             shade: np.ndarray, raised: np.ndarray, soft: float,
             anchor: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray] | None:
    """The eyeball of one box and where it stands in for the warp (``cover``, 0–1); None if the source
    shows too little of it to read.

    The source's own pixels inside its opening (``inside``) except a band under its upper lid (``below``:
    px under it), which is where the lid moves; over that band and above it, what the lid uncovers is
    filled in (the white and the iris, darkened by ``shade``: the edited lid's shadow). Elsewhere (past the
    lower lid and the corners) the warp keeps its own pixels. The white and the iris are read away from
    every lid margin. Where the lid rose (``raised``, 0–1 per column) the old lid's shade under it (lashes,
    liner, its shadow on the ball: pixels much darker than the eyeball there) goes with the lid and is
    filled in too; left, it drew a dark arc across the eye at the old lid line. Edges are ``soft`` px. The
    fill carries the grain of the white the source shows (:func:`_grain`, ``anchor``: the box corner from the
    eye's inner corner): a smooth fill on a large, sharp eye read as flat paint."""
    margin = max(MIN_MARGIN_PX, MARGIN * height)
    depth = cv2.distanceTransform((inside > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    trusted = depth > margin
    centre, radius = iris[0], float(np.mean(np.linalg.norm(iris[1:] - iris[0], axis=1)))
    ys, xs = np.ogrid[0:inside.shape[0], 0:inside.shape[1]]
    from_centre = np.hypot(xs - centre[0], ys - centre[1]).astype(np.float32)
    disc = _soft_step(radius - from_centre, soft)           # the iris's rim, as soft as the photo
    white = trusted & (from_centre >= radius + 1.5)
    sclera = _white_model(pixels, white, inside <= 0.0)
    if sclera is None:
        return None
    seen_iris = trusted & (disc >= 1.0)
    if seen_iris.sum() >= 3:
        iris = _mirrored_iris(pixels, seen_iris, _iris_model(pixels, seen_iris, centre, radius), centre)
    else:
        iris = sclera
    bare = disc[..., None] * iris + (1.0 - disc[..., None]) * sclera
    luma = _luma(pixels)
    grain = (1.0 - disc) * _grain(white.shape, anchor, _grain_strength(luma, white))     # the iris has its own
    model = (bare + grain[..., None]) * shade[..., None]
    blend = max(1.0, SEAM_BLEND * height)        # the fill hands over to the source's white over this many px
    keep = inside * np.clip((below - margin) / blend, 0.0, 1.0)
    cover = keep + (1.0 - keep) * np.clip(margin + blend - below, 0.0, 1.0)
    if raised.any():
        light = luma / np.maximum(_luma(bare), 1.0)
        old = (1.0 - np.clip((light - OLD_SHADE[0]) / (OLD_SHADE[1] - OLD_SHADE[0]), 0.0, 1.0)) * raised[None]
        old *= np.clip(OLD_SHADE_DEPTH * height - below, 0.0, 1.0)
        keep *= 1.0 - cv2.GaussianBlur(old.astype(np.float32), (0, 0), soft)
    # The cover's edges are blurred as soft as the rest; just outside it the ball is the source's own pixels
    # (the lower lid and the corners barely move), so the blur draws no pale rim along them.
    source_share = np.where(cover > 1e-6, keep / np.maximum(cover, 1e-6), 1.0)[..., None]
    ball = source_share * pixels + (1.0 - source_share) * model
    return np.clip(ball + 0.5, 0, 255).astype(np.uint8), cv2.GaussianBlur(cover.astype(np.float32), (0, 0), soft)


def capture(frame: np.ndarray, source: np.ndarray, edited: np.ndarray) -> list[EyeSource | None]:
    """The two eyes of ``frame`` (before it is warped), as :data:`~spfem_cli.backends.warp.facs.EYE_CONTOURS`
    orders them: ``source``/``edited`` are the mesh (478 points with the iris) in frame pixels. None for an
    eye shown shut, or with too little white to read, or whose lids the edit leaves (nearly) where they are.

    Where each eyeball shows is settled here too: inside the edited opening, below the upper lid's own edge
    (:data:`LASH_BAND`: lashes, liner, which stay as the warp moves them), in full where the source eye is
    open and fading to the plain warp as it closes (:data:`~spfem_cli.backends.warp.facs.EYE_SHUT_RATIO`),
    so a blink stays a blink."""
    if len(source) < 478:
        return []
    h, w = frame.shape[:2]
    out: list[EyeSource | None] = []
    ratios = facs.eye_open_ratios(source)
    for (upper, lower), iris, ratio in zip(facs.EYE_CONTOURS, facs.IRIS_RINGS, ratios, strict=True):
        out.append(None)
        lids = np.r_[upper, lower]
        gate = float(facs.shown_open(ratio))
        if gate <= 0.0 or np.abs(edited[lids] - source[lids]).max() < STILL_LIDS_PX:
            continue
        src_poly, dst_poly = opening(source, upper, lower), opening(edited, upper, lower)
        both = np.r_[src_poly, dst_poly]
        x0, y0 = np.maximum(np.floor(both.min(0)).astype(int) - PAD, 0)
        x1, y1 = np.minimum(np.ceil(both.max(0)).astype(int) + PAD, (w, h))
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        origin = np.array([x0, y0], np.float64)
        pixels = frame[y0:y1, x0:x1]
        shape = pixels.shape[:2]
        height, edited_height = float(facs.lid_gap(source, upper, lower)), float(facs.lid_gap(edited, upper, lower))
        soft = max(MIN_SOFT_PX, SOFT_SHARE * float(np.linalg.norm(source[upper[0]] - source[upper[-1]])))
        source_lid, edited_lid = _lid_row(shape[1], source[upper] - origin), _lid_row(shape[1], edited[upper] - origin)
        below = _below_lid(shape[0], edited_lid)
        raised = np.clip((source_lid - edited_lid) / max(0.1 * height, 0.5), 0.0, 1.0).astype(np.float32)
        ring = np.r_[source[iris[0]][None], source[iris[1]]] - origin
        anchor = tuple(int(v) for v in origin - np.round(source[upper[0]]))
        ball = _eyeball(pixels, _fill(shape, src_poly, origin), _below_lid(shape[0], source_lid), height,
                        ring, _lid_shadow(below, edited_height), raised, soft, anchor)
        if ball is None:
            continue
        eyeball, cover = ball
        lashes = max(1.0, LASH_BAND * edited_height)
        lash_line = _soft_step(below - lashes, soft)
        shown = _fill(shape, dst_poly, origin) * lash_line * cover * gate
        out[-1] = EyeSource(origin, eyeball, shown)
    return out


def redraw(frame: np.ndarray, eyes: list[EyeSource | None], free: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Put each captured eyeball back into the warped ``frame`` (in place), where :func:`capture` said.

    Whatever the warp holds still stays in front: ``free`` = (map, frame → map affine), the warp's share of
    motion (1 - the eyeglass damping; a rim crossing a raised lid's reach stays in front of the eye)."""
    for eye in eyes:
        if eye is None:
            continue
        x0, y0 = eye.origin.astype(int)
        hh, ww = eye.shown.shape
        box = frame[y0:y0 + hh, x0:x0 + ww]
        shown = eye.shown if free is None else eye.shown * _on_box(free, eye.origin, (hh, ww))
        shown = shown[..., None]
        box[:] = np.clip(box.astype(np.float32) * (1.0 - shown) + eye.eyeball.astype(np.float32) * shown + 0.5,
                         0, 255).astype(np.uint8)


def _on_box(field: tuple[np.ndarray, np.ndarray], origin: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A map given with its frame → map affine, sampled on a box of the frame at ``origin``."""
    values, matrix = field
    local = np.array(matrix, np.float64, copy=True)
    local[:, 2] += local[:, :2] @ np.asarray(origin, np.float64)
    return cv2.warpAffine(values.astype(np.float32), local, (shape[1], shape[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)
