"""Emotion prototypes as FACS action units acting on the MediaPipe face mesh in the aligned frame.

An action unit (AU) is a displacement field on the 478 FaceMesh vertices, in pixels of the 256²
aligned template (outer eye corners 100 px apart): a face of any size is normalised to that scale by
the alignment, so "scaled by face size" holds by construction. Each AU is given where FACS says it
acts (AU12 pulls the lip corners up and out, AU5 raises the upper lid, AU4 lowers and knits the
brows, …) on a few driver vertices of the subject's right half, mirrored to the left, and spread over
the surrounding skin by harmonic interpolation on the mesh graph: the skin between drivers follows
smoothly and the pinned parts (face outline, hairline band, the features another AU owns) stay put.
The iBUG-68 fields are the same fields read at the 68 vertices that the tracker maps to iBUG
(:data:`~spfem_cli.face.tracking.mediapipe_tracker.MP_TO_IBUG68`), so trackers without a mesh (FAN)
get the same edit on 68 points.

Magnitudes (:data:`AU_MAGNITUDE`) start from displacements measured, relative to each person's own
neutral frames, on LivePortrait's MIT example driving clips (d0 smile, d3 frown and surprise, d14 wide
eyes, d18 sad mouth); those are mild, talking-head expressions, so the upper face and mouth-corner AUs
are set to FACS-typical apex values (about twice the mild ones), checked by eye and by a FER-2013
recogniser on tuning clips (d0 d6 d13 d14 s18 s20; never on the benchmark's held-out clips).

AU26 (jaw drop) and every change of the inner-lip gap are absent: the speech opening is the one
thing the edit must not change (see :func:`keep_mouth_opening`).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.optimize import nnls
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from spfem_cli.backends.warp.canonical_mesh import CANONICAL_MESH, FACE_OVAL, IRIS, MIRROR, N_MESH, neutral, point_set  # noqa: F401 (re-exported)

MIDLINE_X = 128.0

# FaceMesh contours of the subject's right half (image left), named once; the left half is MIRROR[...].
BROW_UPPER = np.array([107, 66, 105, 63, 70])             # inner → outer
BROW_LOWER = np.array([55, 65, 52, 53, 46])
LID_UPPER = np.array([133, 173, 157, 158, 159, 160, 161, 246, 33])   # inner corner → outer corner
LID_LOWER = np.array([155, 154, 153, 145, 144, 163, 7])
LIP_OUTER_UPPER = np.array([0, 37, 39, 40, 185, 61])     # midline → corner
LIP_OUTER_LOWER = np.array([17, 84, 181, 91, 146])
LIP_INNER_UPPER = np.array([13, 82, 81, 80, 191, 78])
LIP_INNER_LOWER = np.array([14, 87, 178, 88, 95])
IRIS_CENTRES = np.array([468, 473])
LIP_CORNER_OUTER, LIP_CORNER_INNER = 61, 78


def both(idx: np.ndarray) -> np.ndarray:
    """The right-half vertices and their mirrored left twins."""
    idx = np.asarray(idx)
    return np.unique(np.r_[idx, MIRROR[idx]])


# Upper/lower inner-lip vertex pairs (same column of the mouth): their gap is the speech opening.
INNER_LIP_PAIRS_MESH = tuple((int(u), int(lo)) for a, b in ((LIP_INNER_UPPER[:-1], LIP_INNER_LOWER),
                                                           (MIRROR[LIP_INNER_UPPER[1:-1]], MIRROR[LIP_INNER_LOWER[1:]]))
                             for u, lo in zip(a, b, strict=True))
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))          # the same pairs in iBUG-68 numbering
JAW_68 = np.arange(0, 17)


def _region(centre: tuple[float, float], radius: tuple[float, float]) -> np.ndarray:
    """Vertices (0..467) inside an ellipse of the canonical mesh: soft regions (cheek, nose wing)."""
    d = (CANONICAL_MESH[:468] - centre) / radius
    return np.flatnonzero((d ** 2).sum(1) <= 1.0)


def _lip_span(idx: np.ndarray) -> np.ndarray:
    """0 on the midline … 1 at the mouth corner: a narrowing of the mouth moves each lip vertex this much."""
    half = MIDLINE_X - CANONICAL_MESH[LIP_CORNER_OUTER, 0]
    return np.clip((MIDLINE_X - CANONICAL_MESH[idx, 0]) / half, 0.0, 1.0)


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, a smooth cubic between."""
    t = np.clip((np.asarray(x, float) - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _profile(idx: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Weights along a contour from ``lo`` at its first vertex to ``hi`` at its last (smooth ramp)."""
    t = np.linspace(0.0, 1.0, len(idx))
    return lo + (hi - lo) * (0.5 - 0.5 * np.cos(np.pi * t))


@functools.lru_cache(maxsize=1)
def mesh_graph() -> coo_matrix:
    """Vertex adjacency of the warp mesh (the canonical triangulation), 478² symmetric."""
    from spfem_cli.backends.warp.mesh_warp import mesh_topology

    tris = mesh_topology(N_MESH)
    tris = tris[(tris < N_MESH).all(1)]
    i = np.r_[tris[:, 0], tris[:, 1], tris[:, 2]]
    j = np.r_[tris[:, 1], tris[:, 2], tris[:, 0]]
    adj = coo_matrix((np.ones(len(i)), (i, j)), shape=(N_MESH, N_MESH)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    return adj


def harmonic_field(drivers: dict[int, tuple[float, float]], pinned: np.ndarray) -> np.ndarray:
    """(478, 2) field equal to ``drivers`` at their vertices, 0 at ``pinned``, harmonic elsewhere.

    Harmonic = every free vertex moves by the mean of its mesh neighbours: the smoothest spread of
    the drivers' motion over the skin, falling to zero at the pinned outline (no seam).
    """
    adj = mesh_graph()
    fixed = np.zeros(N_MESH, bool)
    values = np.zeros((N_MESH, 2))
    for v, d in drivers.items():
        fixed[v] = True
        values[v] = d
    fixed[np.asarray(pinned, int)] = True          # pins win: the outline never moves
    values[np.asarray(pinned, int)] = 0.0
    free = np.flatnonzero(~fixed & (np.asarray(adj.sum(1)).ravel() > 0))
    deg = np.asarray(adj.sum(1)).ravel()
    lap = (adj[free][:, free] * -1).tolil()
    lap.setdiag(deg[free])
    rhs = adj[free][:, np.flatnonzero(fixed)] @ values[fixed]
    out = values.copy()
    if len(free):
        out[free] = np.column_stack([spsolve(lap.tocsc(), rhs[:, c]) for c in range(2)])
    out[IRIS] = 0.0
    return out


def _mirrored(right: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    """Drivers on the right half (dx measured outward = towards image left) → both halves, image dx."""
    out: dict[int, tuple[float, float]] = {}
    for v, (dx_out, dy) in right.items():
        out[int(v)] = (-dx_out, dy) if CANONICAL_MESH[v, 0] < MIDLINE_X - 0.5 else (0.0, dy)
        m = int(MIRROR[v])
        if m != v:
            out[m] = (dx_out, dy)
    return out


AU15_INNER = 0.5   # mid-lip, the inner lip follows AU15 half way (MediaPipe reads a downturned inner-lip line as a
                   # closing mouth); at the corner it follows fully
CLUSTER_PX = 3.5   # vertices this close to a driver (canonical px) move with it: no fold in dense spots


def _drivers(*parts: tuple[np.ndarray, np.ndarray | float, np.ndarray | float]) -> dict[int, tuple[float, float]]:
    """Sum of (vertices, dx_out weights, dy weights) parts, right half.

    Every vertex within :data:`CLUSTER_PX` of a driver moves with its nearest driver: where the mesh
    is dense (the lip corners, the brow edges) a lone moving vertex would fold its tiny triangles.
    """
    acc: dict[int, np.ndarray] = {}
    for idx, dx, dy in parts:
        dx = np.broadcast_to(np.asarray(dx, float), len(idx))
        dy = np.broadcast_to(np.asarray(dy, float), len(idx))
        for v, a, b in zip(idx, dx, dy, strict=True):
            acc[int(v)] = acc.get(int(v), np.zeros(2)) + (a, b)
    keys = np.array(sorted(acc))
    right = np.flatnonzero(CANONICAL_MESH[:468, 0] < MIDLINE_X + 0.5)
    dist = np.linalg.norm(CANONICAL_MESH[right][:, None] - CANONICAL_MESH[keys][None], axis=-1)
    near = dist.min(1) < CLUSTER_PX
    for v, k in zip(right[near], keys[dist[near].argmin(1)], strict=True):
        if int(v) not in acc:
            acc[int(v)] = acc[int(k)].copy()
    return {v: (float(d[0]), float(d[1])) for v, d in acc.items()}


# Shared pin sets (canonical y grows downwards; brows ≈ 72, eyes ≈ 94, nose tip ≈ 142, lips ≈ 170).
_Y = CANONICAL_MESH[:468, 1]
_X = CANONICAL_MESH[:468, 0]
HAIRLINE_BAND = np.flatnonzero(_Y < 45.0)                   # upper forehead: hair and fringe stay put
FOREHEAD_ROW = np.flatnonzero((_Y > 50.0) & (_Y < 66.0) & (_X < MIDLINE_X - 8.0) & (_X > 60.0))
BELOW_EYES = np.flatnonzero(_Y > 103.0)
ABOVE_NOSE_TIP = np.flatnonzero(_Y < 128.0)
NOSE = np.flatnonzero((np.abs(_X - MIDLINE_X) < 17.0) & (_Y > 100.0) & (_Y < 150.0))
LIPS = both(np.r_[LIP_OUTER_UPPER, LIP_OUTER_LOWER, LIP_INNER_UPPER, LIP_INNER_LOWER])
LIDS = both(np.r_[LID_UPPER, LID_LOWER])
BROWS = both(np.r_[BROW_UPPER, BROW_LOWER])
CHEEK = _region((90.0, 122.0), (15.0, 10.0))                 # the malar fat pad under the eye
NOSE_WING = _region((107.0, 139.0), (7.0, 8.0))
NASOLABIAL = _region((103.0, 156.0), (8.0, 7.0))


def _pins(*sets: np.ndarray) -> np.ndarray:
    return np.unique(np.concatenate([FACE_OVAL, IRIS_CENTRES, *sets]))


def _unit_fields() -> dict[str, tuple[dict[int, tuple[float, float]], np.ndarray]]:
    """Direction and relative shape of each AU at unit magnitude (1 px at its strongest driver)."""
    lid_arc = np.sin(np.linspace(0, np.pi, len(LID_UPPER)))          # 0 at the corners, 1 mid-lid
    low_arc = np.sin(np.linspace(0, np.pi, len(LID_LOWER) + 2))[1:-1]
    upper_lip = np.r_[1.0, 1.0, 0.95, 0.8, 0.5, 0.2]                     # midline → corner, smooth
    brow_skin = np.r_[BELOW_EYES, LIDS]
    mouth_pins = _pins(LIDS, BROWS, NOSE, ABOVE_NOSE_TIP)
    # Mouth AUs move the whole lip contour in proportion to each vertex's distance from the midline
    # (the corners most): the lips keep their shape and the crowded corner never folds.
    lips = np.r_[LIP_OUTER_UPPER, LIP_OUTER_LOWER, LIP_INNER_UPPER, LIP_INNER_LOWER]
    span = _lip_span(lips)
    outer, inner = np.r_[LIP_OUTER_UPPER, LIP_OUTER_LOWER], np.r_[LIP_INNER_UPPER, LIP_INNER_LOWER]
    span_outer, span_inner = _lip_span(outer), _lip_span(inner)
    # The inner lip lags AU15 near the midline but meets the outer contour at the corner, where the two
    # lips are one point: a lag there shears the corner's few-pixel triangles into a notched, hooked crease.
    inner_follow = AU15_INNER + (1.0 - AU15_INNER) * _smoothstep(span_inner, 0.5, 0.9)
    def with_forehead(drivers: dict[int, tuple[float, float]], frac: float = 0.8) -> dict[int, tuple[float, float]]:
        """The forehead row above the brows follows the nearest brow vertex (a brow never passes it)."""
        brow = np.array([v for v in BROW_UPPER if v in drivers])
        out = dict(drivers)
        for v in FOREHEAD_ROW:
            if int(v) not in out:
                near = brow[np.argmin(np.linalg.norm(CANONICAL_MESH[brow] - CANONICAL_MESH[v], axis=1))]
                out[int(v)] = (frac * drivers[int(near)][0], frac * drivers[int(near)][1])
        return out

    units: dict[str, tuple[dict, np.ndarray]] = {
        # AU1 inner brow raiser: the inner third of the brow up, fading outwards.
        "AU1": (with_forehead(_drivers((BROW_UPPER, 0, -_profile(BROW_UPPER, 1.0, 0.15)),
                                       (BROW_LOWER, 0, -_profile(BROW_LOWER, 1.0, 0.15)))),
                _pins(brow_skin, HAIRLINE_BAND)),
        # AU2 outer brow raiser.
        "AU2": (with_forehead(_drivers((BROW_UPPER, 0, -_profile(BROW_UPPER, 0.2, 1.0)),
                                       (BROW_LOWER, 0, -_profile(BROW_LOWER, 0.2, 1.0)))),
                _pins(brow_skin, HAIRLINE_BAND)),
        # AU4 brow lowerer: brows down (inner most) and drawn together; the glabella follows.
        "AU4": (with_forehead(_drivers((BROW_UPPER, -_profile(BROW_UPPER, 0.35, 0.0), _profile(BROW_UPPER, 1.0, 0.35)),
                                       (BROW_LOWER, -_profile(BROW_LOWER, 0.35, 0.0), _profile(BROW_LOWER, 1.0, 0.35)),
                                       (LID_UPPER, 0, 0.15 * lid_arc)), 0.6),
                _pins(BELOW_EYES, LID_LOWER, MIRROR[LID_LOWER], HAIRLINE_BAND)),
        # AU5 upper lid raiser: the upper lid arc up, corners fixed; brows and lower lid stay.
        "AU5": (_drivers((LID_UPPER, 0, -lid_arc), (LID_LOWER, 0, 0.12 * low_arc)),
                _pins(BROWS, BELOW_EYES)),
        # AU41 lid droop: the upper lid arc lowered (the heavy, tired lids of sadness); the lower lid stays.
        "AU41": (_drivers((LID_UPPER, 0, lid_arc)), _pins(BROWS, BELOW_EYES, LID_LOWER, MIRROR[LID_LOWER])),
        # AU6 cheek raiser: the cheek pad and the lower lid up, eye narrowed from below.
        "AU6": (_drivers((CHEEK, 0.1, -1.0), (LID_LOWER, 0, -0.6 * low_arc), (LID_UPPER, 0, 0.15 * lid_arc)),
                _pins(BROWS, LIPS, NOSE, HAIRLINE_BAND)),
        # AU7 lid tightener: lower lid up strongly, upper lid down a little.
        "AU7": (_drivers((LID_LOWER, 0, -low_arc), (LID_UPPER, 0, 0.35 * lid_arc)),
                _pins(BROWS, np.flatnonzero(_Y > 112.0))),
        # AU9 nose wrinkler: nose wings and sides up, inner brows down, upper lip up a little.
        "AU9": (_drivers((NOSE_WING, 0.15, -1.0), (BROW_UPPER, 0, _profile(BROW_UPPER, 0.6, 0.0)),
                         (BROW_LOWER, 0, _profile(BROW_LOWER, 0.6, 0.0)), (LIP_OUTER_UPPER, 0, -0.35 * upper_lip)),
                _pins(LIDS, both(LIP_OUTER_LOWER), HAIRLINE_BAND, np.flatnonzero(_Y > 185.0))),
        # AU10 upper lip raiser: the upper lip up as one smooth arc (no notch), the nasolabial skin with it;
        # the inner lip rises with the outer one and the lower lip follows half way, so the lips keep
        # their thickness and the speech gap (restored anyway) is not re-read as a different opening.
        "AU10": (_drivers((LIP_OUTER_UPPER, 0, -upper_lip), (LIP_INNER_UPPER, 0, -upper_lip),
                          (LIP_INNER_LOWER, 0, -0.5 * upper_lip[:-1]), (LIP_OUTER_LOWER, 0, -0.4 * upper_lip[:-1]),
                          (NASOLABIAL, 0.1, -0.5), (NOSE_WING, 0, -0.25)),
                 _pins(LIDS, BROWS, np.flatnonzero(_Y < 118.0), np.flatnonzero(_Y > 200.0))),
        # AU12 lip corner puller: corners up and out, the cheek and nasolabial skin with them.
        "AU12": (_drivers((lips, span, -0.72 * span ** 2), (NASOLABIAL, 0.35, -0.3)), mouth_pins),
        # AU15 lip corner depressor.
        "AU15": (_drivers((outer, 0.1 * span_outer, span_outer ** 2),
                          (inner, 0.1 * span_inner * inner_follow, inner_follow * span_inner ** 2)), mouth_pins),
        # AU20 lip stretcher: corners out, slightly down.
        "AU20": (_drivers((lips, span, 0.15 * span ** 2)), mouth_pins),
        # AU23 lip tightener: corners in (the mouth narrowed and pressed); the red of the lips keeps its
        # height, so the re-tracked inner lip is where the speech put it.
        "AU23": (_drivers((lips, -span, 0.0)), mouth_pins),
    }
    return units


# Strength of each AU at intensity 1, in aligned px at its strongest driver, measured on the calibration
# clips (expressive frames minus the same person's neutral opening frames, aligned 256² frame):
#   d0 smile: mouth corners 10.5 px out and 7.7 px up each, lower lids 1.7 px up, eye opening -3.4 px
#   d3 frown: inner brows down up to 10 px, drawn together 2.2 px each; d3 surprise: upper lids +4.6 px
#   d14/d12 wide eyes: inner brows +3.5…4.5 px, upper lids +2.4 px; d18 sad: corners 3.7 px down
# These mild measurements read as "neutral" to viewers and to a recogniser: intensity 1 is a full apex
# expression (brows up to 10-12 px, upper lids 6 px, mouth corners 10-11 px), the default 0.8 a clear one.
AU_MAGNITUDE: dict[str, float] = {
    "AU1": 10.0, "AU2": 9.0, "AU4": 12.0, "AU5": 6.0, "AU41": 4.0, "AU6": 4.5, "AU7": 4.0, "AU9": 4.0, "AU10": 3.5,
    "AU12": 11.0, "AU15": 10.0, "AU20": 11.0, "AU23": 4.5, "AU14R": 5.0,
}


@functools.lru_cache(maxsize=1)
def mesh_action_units() -> dict[str, np.ndarray]:
    """AU name → (478, 2) displacement at intensity 1."""
    fields = {}
    for name, (right, pins) in _unit_fields().items():
        fields[name] = AU_MAGNITUDE[name] * harmonic_field(_mirrored(right), pins)
    # AU14 (dimpler) on the subject's left only (image right): the asymmetric contempt smirk.
    left = {int(MIRROR[v]): (dx, dy) for v, (dx, dy) in
            _drivers(([LIP_CORNER_OUTER, LIP_CORNER_INNER], 0.5, -0.8)).items()}
    fields["AU14R"] = AU_MAGNITUDE["AU14R"] * harmonic_field(left, _pins(LIDS, BROWS, NOSE, ABOVE_NOSE_TIP))
    return fields


# EMFACS-style prototypes: AU weights per emotion. Each uses only its emotion's FACS units; the weights were
# set by a coordinate search of the FER-2013 recogniser's P(target) on the tuning clips (d0 d6 d13 d14 s13
# s18 s20 s29 s32, 24 frames each; never the benchmark's held-out clips), bounded to 0…1.8 (fear: 2.4), then checked by
# eye on contact sheets (a recipe that fooled the recogniser but read as another emotion was not taken:
# surprise keeps its brows level, without the knit AU4 that raised P(surprise) but read as worry). Sad and
# fear share the grief brow (AU1 1.8–2.1 + AU4 1.2, re-searched once the eyes were redrawn): sad drops the lids
# (AU41 1.8, as far as MAX_LID_DROOP lets it), fear opens them (AU5), which is what tells the two apart.
# Sad's AU6 0.9 and AU15 1.3 are recipe_search's moves from 0.3 and 1.0 once the creases took the face's
# focus (at 19635d4: tuning clips +0.318 → +0.354, 5/9 → 6/9; held out 3/8 → 5/8, mouth r mean 0.950 →
# 0.933; BENCHMARKS.md has today's numbers): the
# cheeks lift and the corners come further down, the crying face; at 0.3 AU6 had been held back for a
# small-mouthed talker's re-tracked peak (0.89 → 0.81 at AU6 1.0 then; 0.89 now).
# Fear's AU1 2.1 and AU5 2.4 come from a search with the bound raised to 2.4 (AU1 and AU5 sat at 1.8): the
# inner brows higher and the eyes wider, the mouth as before (tuning clips +0.331 → +0.372, 6/9 either way).
# The search went on to the corners (AU15 1.6, AU20 0.3: +0.401, 7/9), but that deepened the downturn into a
# kink at the corners (d9, by eye) and raised a talker's re-tracked peak to 1.24, so the mouth was left as it was.
EMOTION_AUS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"AU6": 1.0, "AU12": 1.0},
    "sad": {"AU1": 1.8, "AU4": 1.2, "AU6": 0.9, "AU15": 1.3, "AU41": 1.8},
    "surprised": {"AU1": 1.1, "AU2": 1.1, "AU5": 1.8, "AU23": 1.2},   # AU26 left out: the opening is the speech's
    "fear": {"AU1": 2.1, "AU4": 1.2, "AU5": 2.4, "AU20": 0.6, "AU15": 1.0},
    "angry": {"AU4": 1.2, "AU7": 1.2, "AU9": 0.8, "AU23": 0.7, "AU15": 0.7},
    "disgusted": {"AU9": 1.0, "AU10": 0.6, "AU15": 0.4},     # AU10 at 0.6: more lifts the re-tracked upper lip
    "contempt": {"AU14R": 1.0},
}
# AUs whose static offset from the average face is read as expression (and may be removed by a label):
# the mouth corners'. Brow height, lid aperture, upper-lip height (AU10) and lip thickness (AU23) differ so
# much between people that their offset is identity (removing them only reshaped the lips and folded them).
REMOVABLE_AUS = frozenset({"AU12", "AU14R", "AU15", "AU20"})
AU_NAMES: tuple[str, ...] = ("AU1", "AU2", "AU4", "AU5", "AU41", "AU6", "AU7", "AU9", "AU10", "AU12", "AU14R", "AU15", "AU20", "AU23")


def action_units(n_points: int = N_MESH) -> dict[str, np.ndarray]:
    """AU fields (n_points, 2) for the mesh or the iBUG-68 subset."""
    idx = point_set(n_points)
    return {name: field[idx] for name, field in mesh_action_units().items()}


# Points whose static offset says something about expression: brows, lids, nose wings, mouth corners
# and upper lip. The jaw, the lower lip and the inner-lip gap move with speech, so they are not read.
@functools.lru_cache(maxsize=2)
def _expressive(n_points: int) -> np.ndarray:
    idx = point_set(n_points)
    wanted = np.r_[BROWS, LIDS, both(NOSE_WING), both(LIP_OUTER_UPPER), both([LIP_CORNER_OUTER, LIP_CORNER_INNER])]
    return np.flatnonzero(np.isin(idx, wanted))


def prototype(emotion: str, n_points: int = N_MESH) -> np.ndarray:
    """Displacement (n_points, 2) of a full-intensity emotion."""
    fields = action_units(n_points)
    out = np.zeros((n_points, 2))
    for au, weight in EMOTION_AUS[emotion].items():
        out += weight * fields[au]
    return out


READBACK_L1 = 0.215    # aligned px² of fit per read point that a unit of activation must buy to be read: 20 px² on
                       # the mesh's 93 read points (a real AU buys thousands), the same per point on the 68-point set
READBACK_RIDGE = 0.5   # aligned px per unit activation: only makes the exactly collinear pairs solvable


@functools.lru_cache(maxsize=2)
def _readback_system(n_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The AU basis at the expressive points, the Cholesky factor L of its (ridged) Gram matrix, L⁻¹, and the
    L1 cost per unit activation (the same for every AU, in proportion to the number of points read)."""
    sel = _expressive(n_points)
    fields = action_units(n_points)
    basis = np.stack([fields[n][sel].ravel() for n in AU_NAMES], axis=1)
    chol = np.linalg.cholesky(basis.T @ basis + READBACK_RIDGE ** 2 * np.eye(len(AU_NAMES)))
    return basis, chol, np.linalg.inv(chol), np.full(len(AU_NAMES), READBACK_L1 * len(sel))


def au_activations(points: np.ndarray, rest: np.ndarray | None = None) -> np.ndarray:
    """Per-frame AU activations (T, len(AU_NAMES)) of aligned points (T, P, 2) relative to ``rest``.

    The sparsest non-negative fit of the AU fields at the expressive points (least squares plus an L1
    cost per unit activation of :data:`READBACK_L1` per point read); NaN frames give NaN. Sparse, because the basis is degenerate
    there: opposing units cancel (AU5/AU41 lids, AU20/AU23 corners) and at the lip corners a stretch
    (AU20) moves like a pull up plus a pull down (AU12 + AU15); the L1 cost reads the one unit that
    explains the motion, not a cancelling pair or a spread. ``rest`` defaults to the canonical neutral face
    (then identity shape leaks in: compare a face with itself, e.g. against its own low percentile, to
    read its expression).
    """
    pts = np.asarray(points, np.float64)
    n_points = pts.shape[1]
    rest = neutral(n_points) if rest is None else rest
    sel = _expressive(n_points)
    basis, chol, chol_inv, cost = _readback_system(n_points)
    # ‖Bx − y‖² + ε²‖x‖² + λ·x = ‖Lᵀx − L⁻¹(Bᵀy − λ/2)‖² + const for x ≥ 0, with LLᵀ = BᵀB + ε²I: an NNLS.
    out = np.full((len(pts), len(AU_NAMES)), np.nan)
    for t, frame in enumerate(pts):
        if np.isfinite(frame).all():
            target = chol_inv @ (basis.T @ (frame - rest)[sel].ravel() - cost / 2.0)
            out[t] = nnls(chol.T, target)[0]
    return out


def field_of(coefs: np.ndarray | dict[str, float], n_points: int) -> np.ndarray:
    """Displacement (n_points, 2) of AU coefficients (array in AU_NAMES order, or a dict)."""
    fields = action_units(n_points)
    if isinstance(coefs, dict):
        return sum((c * fields[n] for n, c in coefs.items()), np.zeros((n_points, 2)))
    return np.tensordot(np.asarray(coefs), np.stack([fields[n] for n in AU_NAMES]), axes=1)


def estimate_expression(aligned_points: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """The static expression of a face: its median points relative to the neutral face, on the AU basis.

    Coefficients are capped at 1.5. Returns the (P, 2) offset and the AU coefficients.
    """
    pts = np.asarray(aligned_points, np.float64)
    median = np.nanmedian(pts, axis=0)
    coefs = np.minimum(au_activations(median[None])[0], 1.5)
    named = {n: float(c) for n, c in zip(AU_NAMES, coefs, strict=True) if c > 1e-3}
    return field_of(named, pts.shape[1]), named


# How much of each AU a MediaPipe mesh shows: the median read-back (:func:`au_activations` of the re-meshed
# edit against the re-meshed source, single-image mode) of each AU applied alone at 0.8 to 40 frames of five
# tuning clips, as measured by ``python -m spfem_cli.benchmarks tracker_gain`` (rows in BENCHMARKS.md). The
# tracker's mesh prior flattens brows and lids to a third of their motion and does not see a cheek raise (AU6).
# A face's expression read off its mesh is divided by these (never by less than TRACKER_GAIN_FLOOR, which
# would only amplify noise) so that a reference's expression is transferred at the size it has, not at the
# tracker's.
TRACKER_GAIN: dict[str, float] = {
    "AU1": 0.47, "AU2": 0.29, "AU4": 0.35, "AU5": 0.37, "AU41": 0.34, "AU6": 0.0, "AU7": 0.32, "AU9": 0.39,
    "AU10": 0.52, "AU12": 0.74, "AU14R": 0.46, "AU15": 0.78, "AU20": 0.67, "AU23": 0.68,
}
TRACKER_GAIN_FLOOR = 0.3


def expression_over_time(aligned_points: np.ndarray, valid: np.ndarray, *, rest_share: float = 0.2,
                         typical_pct: float = 50.0, max_frames: int = 300) -> dict[str, float]:
    """A clip's expression relative to its own neutral face: per AU, the median (``typical_pct``) of the
    activations of each frame measured against the face's own rest shape.

    The rest shape is the median of the clip's least expressive frames (the ``rest_share`` with the
    smallest total activation against the canonical face). Measuring every frame against it, in point
    space, removes identity shape (naturally low brows are not "angry", a naturally downturned mouth is not
    "sad"), so two different people can be compared, and a feature that *leaves* its rest position (a
    downturned mouth breaking into a grin) reads as the unit that moves it there, never as its opposite.
    The median, not a high percentile, is the expression the clip holds: blinks (AU41) and speech shapes
    (AU10, AU23) come and go and stay below it, a smile held through the clip does not. Mesh readings are
    divided by :data:`TRACKER_GAIN` (the share of each AU the tracker sees). Long clips are read on
    ``max_frames`` evenly spaced frames.
    """
    pts = np.asarray(aligned_points, np.float64)[np.asarray(valid, bool)]
    pts = pts[np.isfinite(pts).all(axis=(1, 2))]
    if len(pts) == 0:
        return {}
    if len(pts) > max_frames:
        pts = pts[np.linspace(0, len(pts) - 1, max_frames).round().astype(int)]
    total = au_activations(pts).sum(1)
    calm = total <= np.quantile(total, rest_share)
    rest = np.median(pts[calm], axis=0)
    rise = np.percentile(au_activations(pts, rest), typical_pct, axis=0)
    if pts.shape[1] == N_MESH:
        rise = rise / np.maximum([TRACKER_GAIN[n] for n in AU_NAMES], TRACKER_GAIN_FLOOR)
    return {n: float(c) for n, c in zip(AU_NAMES, np.clip(rise, 0.0, 1.5), strict=True) if c > 1e-3}


def keep_mouth_opening(source: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """Restore the source's inner-lip gaps and jaw line in edited points (..., P, 2), P = 478 or 68.

    Each upper/lower inner-lip pair keeps the source's gap around the edited pair's midpoint, so
    the mouth may move with the expression but its opening never changes; the jaw line is kept.
    """
    out = np.array(edited, np.float64, copy=True)
    src = np.asarray(source, np.float64)
    mesh = out.shape[-2] == N_MESH
    for top, bottom in INNER_LIP_PAIRS_MESH if mesh else INNER_LIP_PAIRS:
        mid = 0.5 * (out[..., top, :] + out[..., bottom, :])
        gap = src[..., bottom, :] - src[..., top, :]
        out[..., top, :] = mid - 0.5 * gap
        out[..., bottom, :] = mid + 0.5 * gap
    jaw = FACE_OVAL if mesh else JAW_68
    out[..., jaw, :] = src[..., jaw, :]
    return out


# Lip rounding is speech too ("oo", "w", "sh" purse the lips to a narrower mouth): an AU that pulls the
# corners outwards must not spread a rounded mouth back into an "ee", nor one that pulls them in squeeze it
# further. The AUs that change the mouth's width fade out (both ways: added or removed) as the source's
# mouth narrows below its width at rest (:func:`rest_mouth_width`): fully applied at ROUNDING_FREE of that
# width, gone at ROUNDING_FULL. Rest is read on the frames that smile least, so a source that smiles or
# laughs through its first seconds does not make its calm, closed frames look pursed (read against the plain
# median, a clip that broke into a grin had 46 % of its frames faded). Pursed "oo" frames of the example
# clips read about 0.65-0.85 of the rest width.
WIDTH_AUS = ("AU12", "AU14R", "AU20", "AU23")
ROUNDING_FREE, ROUNDING_FULL = 0.95, 0.80
ROUNDING_SMOOTH = 3     # frames of a moving average on the width: the fade follows the visemes without jitter


def mouth_width(points: np.ndarray) -> np.ndarray:
    """Outer lip-corner distance of aligned points (..., P, 2), P = 478 or 68 (NaN where the points are)."""
    pts = np.asarray(points, np.float64)
    a, b = (LIP_CORNER_OUTER, int(MIRROR[LIP_CORNER_OUTER])) if pts.shape[-2] == N_MESH else (48, 54)
    return np.linalg.norm(pts[..., a, :] - pts[..., b, :], axis=-1)


def corner_lift(points: np.ndarray) -> np.ndarray:
    """How far the lip corners sit above the lips' vertical centre (aligned px, > 0 in a smile)."""
    pts = np.asarray(points, np.float64)
    (top, bottom), (a, b) = ((0, 17), (LIP_CORNER_OUTER, int(MIRROR[LIP_CORNER_OUTER]))) if pts.shape[-2] == N_MESH \
        else ((51, 57), (48, 54))
    return 0.5 * (pts[..., top, 1] + pts[..., bottom, 1]) - 0.5 * (pts[..., a, 1] + pts[..., b, 1])


def rest_mouth_width(points: np.ndarray) -> float | None:
    """The mouth's width at rest (aligned px): the median over the frames whose corner lift is at or below
    the median (the half that smiles least). None without a frame with a face."""
    width, lift = mouth_width(points), corner_lift(points)
    ok = np.isfinite(width) & np.isfinite(lift)
    if not ok.any():
        return None
    calm = lift[ok] <= np.median(lift[ok])
    return float(np.median(width[ok][calm]))


def rounding_keep(points: np.ndarray, typical_width: float | None) -> np.ndarray:
    """Per frame (T,), the share 0…1 of the width-changing AUs a frame of these source points can take
    (frames without a face count as unrounded, so the result never depends on faces far away)."""
    if typical_width is None or not np.isfinite(typical_width) or typical_width <= 0:
        return np.ones(len(points))
    width = mouth_width(points)
    width = np.where(np.isfinite(width), width, typical_width)
    ratio = uniform_filter1d(width, ROUNDING_SMOOTH, mode="nearest") / typical_width
    return np.clip((ratio - ROUNDING_FULL) / (ROUNDING_FREE - ROUNDING_FULL), 0.0, 1.0)


def keep_lip_rounding(points: np.ndarray, activations: np.ndarray, typical_width: float | None) -> np.ndarray:
    """``activations`` (T, len(AU_NAMES)) with the width-changing AUs faded on rounded-lip frames."""
    keep = rounding_keep(points, typical_width)
    out = np.array(activations, np.float64, copy=True)
    out[:, [AU_NAMES.index(name) for name in WIDTH_AUS]] *= keep[:, None]
    return out


EYE_SHUT_RATIO = (0.03, 0.06)   # lid gap / eye width: below, an eye is shut whoever's it is (open eyes are
                                # 0.12-0.35); above, it shows some eyeball. The redraw fades in between.
EYE_OPEN_SHARE = (0.5, 0.75)    # the same, as a share of each eye's own open eye (narrow eyes are 0.12 open):
                                # below, the source is blinking, looking down or squinting; above, open. The
                                # lid raise fades in between (a squint at 0.6 of its own opening kept most of
                                # a raise at 0.35-0.65, and showed a pasted white crescent; eyes open as usual
                                # dip to 0.75-0.8 while speaking, and keep all of it).
OPEN_EYE_PERCENTILE = 80        # the face's own open eye: this percentile of its frames' ratios


EYE_CONTOURS = ((LID_UPPER, LID_LOWER), (MIRROR[LID_UPPER], MIRROR[LID_LOWER]))   # each eye's upper, lower lid


def lid_gap(points: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Per frame (...,): one eye's mean vertical gap between its lids (``upper``/``lower``: an EYE_CONTOURS pair)."""
    pts = np.asarray(points, np.float64)
    return (pts[..., lower, 1] - pts[..., upper[1:-1], 1]).mean(-1)


def eye_open_ratios(points: np.ndarray) -> np.ndarray:
    """Per frame and eye (..., 2): mean lid gap over eye width (0.12–0.35 open on real faces, under 0.05 shut)."""
    pts = np.asarray(points, np.float64)
    ratios = []
    for upper, lower in EYE_CONTOURS:
        width = np.linalg.norm(pts[..., upper[0], :] - pts[..., upper[-1], :], axis=-1)
        ratios.append(lid_gap(pts, upper, lower) / np.maximum(width, 1e-6))
    return np.stack(ratios, -1)


def shown_open(ratio: np.ndarray) -> np.ndarray:
    """0…1 from an eye's open ratio: 0 shut whoever's eye it is, 1 showing some eyeball (:data:`EYE_SHUT_RATIO`)."""
    return _smoothstep(ratio, *EYE_SHUT_RATIO)


def open_eye_ratio(points: np.ndarray) -> np.ndarray | None:
    """The face's own open eyes, each on its own (2,) (:data:`OPEN_EYE_PERCENTILE` of its frames' open
    ratios); None without mesh points or a face."""
    pts = np.asarray(points, np.float64)
    if pts.ndim != 3 or pts.shape[-2] != N_MESH:
        return None
    ratio = eye_open_ratios(pts)
    seen = ratio[np.isfinite(ratio).all(-1)]
    return np.percentile(seen, OPEN_EYE_PERCENTILE, axis=0) if len(seen) else None


def eyes_shown_open(points: np.ndarray, open_eye: np.ndarray | None) -> np.ndarray:
    """Per frame and eye (T, 2) 0…1: how far the source shows each eye open against its own open eye
    ``open_eye`` (:func:`open_eye_ratio`; 1 = as open as usual, 0 = shut, looking down or squinting;
    frames without a face count as open). Relative, because eyes differ: an open narrow eye is as narrow as
    a wide one half shut. Each eye on its own: one eye squinted (or winked) while the other stays open
    keeps its squint, where the pair's mean read "open" and the raise pasted a white crescent over a
    narrowed eye. The absolute :func:`shown_open` also applies (a photo is its own yardstick: closed eyes
    stay closed)."""
    pts = np.asarray(points, np.float64)
    if pts.shape[-2] != N_MESH:
        return np.ones((pts.shape[0], 2))
    ratio = eye_open_ratios(pts)
    share = shown_open(ratio)
    if open_eye is not None and np.all(np.asarray(open_eye) > 0):
        share = np.minimum(share, _smoothstep(ratio / np.asarray(open_eye), *EYE_OPEN_SHARE))
    return np.where(np.isfinite(ratio), share, 1.0)


def keep_shut_eyes_shut(points: np.ndarray, activations: np.ndarray, open_eye: np.ndarray | None) -> np.ndarray:
    """``activations`` (T, len(AU_NAMES)) with the lid raise (AU5) faded where the source shows its eyes shut
    or nearly (a blink, a look down; against its own open eyes ``open_eye``, :func:`open_eye_ratio`): raising
    a lid the source keeps down opens onto nothing but the lid's own dark lashes and shadow (there is no
    eyeball in the picture to show), a black hole. The raise follows the more open eye; the other eye's
    share of it is :func:`lid_raise_sides`."""
    out = np.array(activations, np.float64, copy=True)
    out[:, AU_NAMES.index("AU5")] *= _raise_shares(points, open_eye).max(-1)
    return out


LID_SHARE_FRAMES = 5    # frames of a minimum, then a moving average, on each eye's share of the lid raise


def _raise_shares(points: np.ndarray, open_eye: np.ndarray | None) -> np.ndarray:
    """:func:`eyes_shown_open` of a frame sequence (T, 2), smooth in time: a windowed minimum (an eye that
    closes fades a little early and comes back a little late), then a moving average. Read frame by frame,
    the tracker's lid jitter on an eye a little narrower than usual made its lid raise jump by up to 1.8 px
    between frames."""
    shares = eyes_shown_open(points, open_eye)
    if len(shares) < 2:
        return shares
    low = minimum_filter1d(shares, LID_SHARE_FRAMES, axis=0, mode="nearest")
    return uniform_filter1d(low, LID_SHARE_FRAMES, axis=0, mode="nearest")


def lid_raise_sides(points: np.ndarray, open_eye: np.ndarray | None) -> np.ndarray:
    """Per frame and eye (T, 2): the share of the lid raise (after :func:`keep_shut_eyes_shut`) each eye
    takes, 1 for the more open eye, less for an eye the source shows narrower than its own open eye."""
    shares = _raise_shares(points, open_eye)
    return shares / np.maximum(shares.max(-1, keepdims=True), 1e-6)


@functools.lru_cache(maxsize=2)
def _eye_sides(n_points: int) -> np.ndarray:
    """(2, n_points) 0/1: the points on each eye's half of the face (EYE_CONTOURS order)."""
    x = CANONICAL_MESH[point_set(n_points), 0]
    centres = [CANONICAL_MESH[np.r_[upper, lower], 0].mean() for upper, lower in EYE_CONTOURS]
    near_first = np.abs(x - centres[0]) < np.abs(x - centres[1])
    return np.stack([near_first, ~near_first]).astype(np.float64)


def lid_raise_by_side(field: np.ndarray, activations: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """``field`` (T, P, 2), which holds ``activations``' lid raise (AU5) on both eyes, with each eye's half
    of that raise scaled by its share ``sides`` (T, 2, :func:`lid_raise_sides`)."""
    n_points = field.shape[1]
    raise_field = action_units(n_points)["AU5"]
    a5 = np.asarray(activations, np.float64)[:, AU_NAMES.index("AU5")]
    cut = (1.0 - np.asarray(sides, np.float64)) * a5[:, None]                # (T, 2) of the raise taken back
    return field - np.einsum("te,ep,pc->tpc", cut, _eye_sides(n_points), raise_field)


# Upper/lower lid vertex pairs (same column of the eye), both eyes.
LID_PAIRS = tuple((int(u), int(lo)) for a, b in ((LID_UPPER[1:-1], LID_LOWER), (MIRROR[LID_UPPER[1:-1]], MIRROR[LID_LOWER]))
                  for u, lo in zip(a, b, strict=True))
MIN_LID_GAP = 0.45     # an edit may narrow an eye to this fraction of its own opening, never close or invert it
# The upper lid alone may come down at most this share of the eye's own opening (the lower lid may still rise
# to the MIN_LID_GAP floor: a squint). Sad's droop and the brow's push together reached the floor on most
# faces, and half-shut upper lids read drowsy, not sad, on unseen stills; at 0.3 the eyes look heavy but awake.
MAX_LID_DROOP = 0.3


def keep_eyes_open(source: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """Edited mesh points (..., 478, 2) whose lids never come closer than MIN_LID_GAP of the source's gap,
    and whose upper lids come down no more than MAX_LID_DROOP of it.

    Narrowing an eye that is already half shut (a blink, a squint) would push the lower lid over the
    upper one; each lid pair is opened back around its edited midpoint instead. A pair the source itself
    shows shut or crossed (the tracker's lids overlap on a blink) keeps the source's gap: opened to zero,
    its triangle turned over, which read as a fold and scaled the whole upper face (brows too) down for
    the blink and the frames round it.
    """
    out = np.array(edited, np.float64, copy=True)
    if out.shape[-2] != N_MESH:
        return out
    src = np.asarray(source, np.float64)
    for top, bottom in LID_PAIRS:
        gap_src = src[..., bottom, 1] - src[..., top, 1]
        lowest = src[..., top, 1] + MAX_LID_DROOP * gap_src
        out[..., top, 1] = np.where(gap_src > 0.0, np.minimum(out[..., top, 1], lowest), out[..., top, 1])
        gap = out[..., bottom, 1] - out[..., top, 1]
        floor = np.where(gap_src > 0.0, MIN_LID_GAP * gap_src, gap_src)
        short = gap < floor
        if np.any(short):
            mid = 0.5 * (out[..., bottom, 1] + out[..., top, 1])
            out[..., top, 1] = np.where(short, mid - 0.5 * floor, out[..., top, 1])
            out[..., bottom, 1] = np.where(short, mid + 0.5 * floor, out[..., bottom, 1])
    return out


IRIS_RINGS = ((468, np.arange(469, 473)), (473, np.arange(474, 478)))   # per eye of EYE_CONTOURS: centre, rim
LID_REACH = 1.8    # an upper lid is raised up to a circle this many iris radii round the iris centre, no further …
MIN_LID_RAISE = 0.8   # … except that every lid keeps at least this share of its raise (a wide eye still widens)


def keep_lids_on_eyeball(source: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """Edited mesh points (..., 478, 2) whose upper lids are raised less where the edit would draw them back
    past :data:`LID_REACH` iris radii from the iris centre: the whole lid's raise is scaled down until its
    furthest vertex over that circle touches it (the lid keeps its shape), but never below
    :data:`MIN_LID_RAISE` of it: an eye already wide open in the source still widens when surprised.

    A wide-open eye shows a band of white above the iris, not a dome: the lid slides over a ball about
    as round as the iris is. Raising a narrow eye's lid by the prototype's full amount bared a dome
    of white twice the eye's height."""
    out = np.array(edited, np.float64, copy=True)
    if out.shape[-2] != N_MESH:
        return out
    src = np.asarray(source, np.float64)
    for (upper, _lower), (centre, rim) in zip(EYE_CONTOURS, IRIS_RINGS, strict=True):
        c = src[..., centre, :]
        reach = LID_REACH * np.linalg.norm(src[..., rim, :] - c[..., None, :], axis=-1).mean(-1)
        dx = out[..., upper, 0] - c[..., None, 0]
        top = c[..., None, 1] - np.sqrt(np.maximum(reach[..., None] ** 2 - dx ** 2, 0.0))
        rise = src[..., upper, 1] - out[..., upper, 1]                  # > 0: the edit raises that vertex
        room = np.maximum(src[..., upper, 1] - top, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where((rise > 1e-9) & (np.abs(dx) < reach[..., None]), room / rise, np.inf)
        k = np.clip(np.nan_to_num(share.min(-1), nan=1.0, posinf=1.0), MIN_LID_RAISE, 1.0)
        out[..., upper, 1] = np.where(rise > 0, src[..., upper, 1] - k[..., None] * rise, out[..., upper, 1])
    return out


def restore_speech_and_eyes(source: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """The constraints every edit obeys: the source's mouth opening and jaw, eyes never shut by the edit,
    lids raised over the eyeball, not off it."""
    return keep_lids_on_eyeball(source, keep_eyes_open(source, keep_mouth_opening(source, edited)))
