"""The embedded ``warp`` backend: FACS action-unit edits of the face mesh rendered by a piecewise-affine warp.

encode      aligned points per frame from the shared track: the 478-point MediaPipe mesh when the
            track carries it, else the 68 iBUG landmarks (FAN)
manipulate  edited = source + Σₖ aₖ(t)·fieldₖ with aₖ(t) = intensity · plan weight · AU weight (target
            AUs in, conflicting source AUs out; width-changing AUs faded where the lips round for speech), then
            the source's inner-lip gaps and jaw restored frame by frame (speech kept by construction)
render      warp an aligned crop (supersampled to the face's native resolution) from source to edited
            points, damped on eyeglass frames; the shared paste-back puts it into the frame

The edit field depends on time only through the smooth plan weights and the (smoothed) lip width, so the
edited points are as smooth as the tracked ones: the backend adds no jitter of its own.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import maximum_filter1d, minimum_filter1d, uniform_filter1d
from scipy.sparse import diags

from spfem_cli.backends.warp import eyeball, facs
from spfem_cli.backends.warp.mesh_warp import mesh_topology, orientation, warp_face, warp_points
from spfem_cli.backends.warp.rigid import rigid_damping, steady_brows
from spfem_cli.backends.warp.wrinkles import shade_edit
from spfem_cli.edit.targets import EditTarget, component_weights
from spfem_cli.face import glasses
from spfem_cli.face.align import ALIGNED_SIZE, warp_to_aligned
from spfem_cli.face.tracking.base import FaceTrack

MAX_SUPERSAMPLE = 4
REMOVE_CAP = 1.0      # at most one full AU of the source's own expression is taken out


@dataclass
class LandmarkSeq:
    """The warp backend's expression sequence: aligned points (T, P, 2), P = 478 (mesh) or 68 (iBUG),
    NaN where no face. ``ibug68`` is always the 68-point view."""

    landmarks: np.ndarray
    valid: np.ndarray
    bridge_line: np.ndarray | None = None    # the track's eyeglass cue per frame (None: not measured)

    @classmethod
    def from_track(cls, track: FaceTrack) -> LandmarkSeq:
        points = track.aligned_mesh() if track.mesh is not None else track.aligned_landmarks()
        return cls(points, track.valid.copy(), track.bridge_line)

    @property
    def ibug68(self) -> np.ndarray:
        return self.landmarks if self.landmarks.shape[1] == 68 else self.landmarks[:, facs.point_set(68)]


@dataclass
class WarpPlan:
    """Per-frame AU activations of the edit and what they were made of (for reports and shading).

    ``activations`` (T, len(AU_NAMES)) are the AU coefficients the edit adds (negative where it
    removes one of the source's own AUs); ``displacement`` is their field on the points (T, P, 2).
    """

    activations: np.ndarray
    displacement: np.ndarray
    source_aus: dict[str, float]
    target_aus: dict[str, float]
    au_names: tuple[str, ...] = facs.AU_NAMES
    mouth_width: float | None = None     # the source's lip-corner distance at rest (aligned px): rounding is read against it
    open_eye: np.ndarray | None = None   # the source's open eyes (lid gap / eye width, each): blinks, looks down and squints are read against them
    glasses: float | None = None         # 0…1 that the source wears glasses, read once on the plan frames (None: per frame)


@dataclass(frozen=True)
class FaceEdit:
    """One frame's edit in the coordinates of the crop being rendered (for appearance cues, e.g. wrinkles).

    ``source``/``edited``: points (P, 2) in crop pixels, P = 478 FaceMesh vertices when ``has_mesh``
    else 68 iBUG landmarks; ``aus``: AU name → activation the edit adds, ≥ 0 (1 = the calibrated
    full-strength AU; AUs the edit removes are 0); ``scale``: crop pixels per aligned-256 pixel.
    """

    source: np.ndarray
    edited: np.ndarray
    aus: dict[str, float] = field(default_factory=dict)
    scale: float = 1.0

    @property
    def has_mesh(self) -> bool:
        return len(self.source) == facs.N_MESH


@functools.lru_cache(maxsize=2)
def _au_pinv(n_points: int) -> np.ndarray:
    """Pseudo-inverse of the AU basis (AUs × 2P): displacement → AU coefficients."""
    fields = facs.action_units(n_points)
    return np.linalg.pinv(np.stack([fields[a].ravel() for a in facs.AU_NAMES], axis=1))


FOLD_STEPS = np.linspace(1.0, 0.0, 11)
# The edit is made fold-free in three layers, each scaled back on its own over the one before: a fold at
# the lids must not cancel a brow raise, nor one at a mouth corner either.
BROW_AUS = frozenset({"AU1", "AU2", "AU4", "AU9"})
LID_AUS = frozenset({"AU5", "AU41", "AU6", "AU7"})
MIN_AREA = 6.0        # doubled aligned px²: thinner source triangles (closed lips, silhouette) have no orientation


def _folds(source: np.ndarray, edited: np.ndarray, triangles: np.ndarray) -> int:
    return int(_folded(source, edited, triangles).sum())


log = logging.getLogger(__name__)
RELAX_SMOOTH = 8      # neighbour-averaging passes of the relaxed field
RELAX_STEP = 0.34     # how much of the relaxed field a folding neighbourhood takes per round
RELAX_ROUNDS = 24


@functools.lru_cache(maxsize=2)
def _averaging(n_points: int):
    """Sparse (P, P) operator: each vertex's displacement → half its own + half its mesh neighbours'
    mean; the face outline stays 0 (the jaw line is restored to the source anyway)."""
    adj = facs.mesh_graph()
    if n_points != facs.N_MESH:
        idx = facs.point_set(n_points)
        adj = adj[idx][:, idx]
        outline = np.isin(idx, facs.FACE_OVAL)
    else:
        outline = np.isin(np.arange(n_points), facs.FACE_OVAL)
    deg = np.asarray(adj.sum(1)).ravel()
    op = 0.5 * diags(1.0 / np.maximum(deg, 1.0)) @ adj + 0.5 * diags(np.ones(n_points))
    return (diags((~outline).astype(float)) @ op).tocsr(), adj.tocsr()


def _relaxed(displacement: np.ndarray, smooth: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Blend per vertex: weight 0…1 goes from the field to its smoothed version, 1…2 fades that out."""
    w = weight[..., None]
    return (displacement + np.minimum(w, 1.0) * (smooth - displacement)) * (1.0 - np.clip(w - 1.0, 0.0, 1.0))


def relax_folds(points: np.ndarray, base: np.ndarray, displacement: np.ndarray, valid: np.ndarray,
                window: int = 9) -> np.ndarray:
    """The displacement (T, P, 2) added to ``base`` (the source ``points`` or an edit of them) with each
    folding neighbourhood blended towards a smoothed field; folds are read against the source, as shown.

    A field folds where it changes faster than the mesh is wide (a lip corner pulled past the skin
    beside it, a brow lowered onto the lid crease, a thin silhouette triangle at the jaw). Smoothing
    the field there spreads the motion over more skin instead of scaling the whole expression down:
    the blend weight grows per vertex, only on folding triangles and their neighbours, until nothing
    folds (where even the smoothed field folds, it is faded out locally); the weight is then made
    smooth in time (a windowed maximum and a moving average), so the correction never flickers.
    """
    n_points = points.shape[1]
    triangles = mesh_topology(n_points)
    avg, adj = _averaging(n_points)
    smooth = np.array(displacement, np.float64, copy=True)
    for _ in range(RELAX_SMOOTH):
        smooth = np.stack([avg @ smooth[:, :, c].T for c in range(2)], axis=-1).transpose(1, 0, 2)
    weight = np.zeros(points.shape[:2])
    for i in np.flatnonzero(valid):
        if not np.any(displacement[i]):
            continue
        w = np.zeros(n_points)
        for _ in range(RELAX_ROUNDS):
            d = _relaxed(displacement[i], smooth[i], w)
            folded = _folded(points[i], facs.restore_speech_and_eyes(points[i], base[i] + d), triangles)
            if not folded.any():
                break
            verts = np.unique(triangles[folded])
            verts = verts[verts < n_points]
            near = np.zeros(n_points, bool)
            near[verts] = True
            near |= np.asarray(adj[verts].sum(0)).ravel() > 0
            w[near] = np.minimum(w[near] + RELAX_STEP, 2.0)
        weight[i] = w
    if not weight.any():
        return displacement
    weight = uniform_filter1d(maximum_filter1d(weight, window, axis=0, mode="nearest"), window, axis=0, mode="nearest")
    return _relaxed(displacement, smooth, weight)


def _folded(source: np.ndarray, edited: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    s = orientation(warp_points(source, ALIGNED_SIZE), triangles)
    e = orientation(warp_points(edited, ALIGNED_SIZE), triangles)
    return (np.sign(s) != np.sign(e)) & (np.abs(s) > MIN_AREA)


def fold_free_scale(points: np.ndarray, base: np.ndarray, displacement: np.ndarray, valid: np.ndarray,
                    window: int = 9) -> np.ndarray:
    """Per-frame factor in [0, 1] on the displacement added to ``base`` so that no warp triangle folds
    against the source ``points`` (as shown: speech and eyes restored), smooth in time."""
    triangles = mesh_topology(points.shape[1])
    scale = np.ones(len(points))
    for i in np.flatnonzero(valid):
        if not np.any(displacement[i]):
            continue
        for s in FOLD_STEPS:
            edited = facs.restore_speech_and_eyes(points[i], base[i] + s * displacement[i])
            if _folds(points[i], edited, triangles) == 0:
                break
        scale[i] = s
    if scale.min() < 1.0:
        scale = minimum_filter1d(scale, window, mode="nearest")
        scale = np.minimum(scale, uniform_filter1d(scale, window, mode="nearest"))
    return scale


def fold_free(points: np.ndarray, activations: np.ndarray, valid: np.ndarray,
              lid_sides: np.ndarray | None = None) -> np.ndarray:
    """Displacement (T, P, 2) of ``activations`` with the brows and nose, the lids and cheeks, and the mouth
    scaled back separately, each over the ones before it: a fold where a very wide eye's raised lid meets
    the crease (a child's eyes, d11) scaled the brows down with it, and a fold at a mouth corner must not
    cancel a brow raise either. ``lid_sides`` (T, 2): each eye's share of the lid raise
    (:func:`~spfem_cli.backends.warp.facs.lid_raise_sides`; None: both all of it)."""
    n_points = points.shape[1]
    layers = (BROW_AUS, LID_AUS, frozenset(facs.AU_NAMES) - BROW_AUS - LID_AUS)
    base, scales = points, []
    for k, group in enumerate(layers):
        field = facs.field_of(activations * np.isin(facs.AU_NAMES, list(group)), n_points)
        if lid_sides is not None and "AU5" in group and n_points == facs.N_MESH:
            field = facs.lid_raise_by_side(field, activations, lid_sides)
        field = relax_folds(points, base, field, valid)
        scale = fold_free_scale(points, base, field, valid)
        scales.append(scale)
        edited = base + field * scale[:, None, None]
        # The next layer is checked on this one as it will be shown (eyes kept open: on a blink the raw
        # narrowing field crosses the lids, which the restore undoes); the caller restores the last.
        base = facs.restore_speech_and_eyes(points, edited) if k < len(layers) - 1 else edited
    if valid.any():
        log.info("fold-free scale: brows mean %.2f min %.2f, lids mean %.2f min %.2f, mouth mean %.2f min %.2f",
                 *(v for s in scales for v in (s[valid].mean(), s[valid].min())))
    return base - points


class WarpBackend:
    name = "warp"

    def encode(self, track: FaceTrack) -> LandmarkSeq:
        return LandmarkSeq.from_track(track)

    def plan(self, seq: LandmarkSeq, target: EditTarget, fps: float,
             reference: LandmarkSeq | None = None) -> WarpPlan:
        """AU activations for every frame, scaled by intensity.

        A label adds its AU prototype and removes the source's own mouth AUs that the label does not
        use (a smiling face made "sad" loses its smile first; made "happy" it smiles more); "neutral"
        removes them all. Brow and lid offsets from the average face are mostly identity (high brows,
        hooded lids), so they are never removed. A reference adds the reference's expression relative to its own neutral
        minus the source's expression relative to its own neutral (so identity shape never transfers).
        """
        n, n_points = len(seq.valid), seq.landmarks.shape[1]
        names = facs.AU_NAMES
        _, source_aus = facs.estimate_expression(seq.landmarks[seq.valid])
        weights = component_weights(target, n, fps)
        coefs: dict[str, np.ndarray] = {}
        target_aus: dict[str, float] = {}
        for name in weights:
            if name == "reference":
                if reference is None or not reference.valid.any():
                    raise ValueError("a reference target needs the reference clip's landmarks")
                ref_expr = facs.expression_over_time(reference.landmarks, reference.valid)
                own_expr = facs.expression_over_time(seq.landmarks, seq.valid)
                coefs[name] = np.array([ref_expr.get(a, 0.0) - own_expr.get(a, 0.0) for a in names])
                target_aus.update(ref_expr)
            else:
                keep = facs.EMOTION_AUS[name]
                coefs[name] = np.array([keep.get(a, 0.0) - (min(source_aus.get(a, 0.0), REMOVE_CAP)
                                                            if a in facs.REMOVABLE_AUS and a not in keep else 0.0)
                                        for a in names])
                target_aus.update(keep)
        activations = np.zeros((n, len(names)))
        for name, w in weights.items():
            activations += w[:, None] * coefs[name][None]
        activations *= target.intensity
        displacement = facs.field_of(activations, n_points)
        rest_width = facs.rest_mouth_width(seq.landmarks[seq.valid])
        return WarpPlan(activations, displacement, source_aus, target_aus, mouth_width=rest_width,
                        open_eye=facs.open_eye_ratio(seq.landmarks[seq.valid]),
                        glasses=None if seq.bridge_line is None else glasses.clip_evidence(seq.bridge_line[seq.valid]))

    def manipulate(self, seq: LandmarkSeq, plan: WarpPlan) -> LandmarkSeq:
        """Source + the plan's displacement, speech opening restored, never folding the mesh.

        Where a frame's edit would turn a warp triangle over (a fold shows as a torn or doubled
        patch), that frame's displacement (upper face and mouth separately) is scaled down just
        enough; the scale is made smooth in time (a windowed minimum, then a moving average) so
        the edit never flickers. ``plan.activations`` is what is applied (``plan.displacement`` is
        its field, kept for reports). On frames where the source purses its lips for speech, the AUs that
        change the mouth's width fade (:func:`~spfem_cli.backends.warp.facs.keep_lip_rounding`): an "oo" stays an "oo";
        on frames where it shows an eye shut or narrowed (a blink, a look down, a squint), that eye's lid
        raise does (:func:`~spfem_cli.backends.warp.facs.keep_shut_eyes_shut`,
        :func:`~spfem_cli.backends.warp.facs.lid_raise_sides`).
        """
        activations = facs.keep_lip_rounding(seq.landmarks, plan.activations, plan.mouth_width)
        activations = facs.keep_shut_eyes_shut(seq.landmarks, activations, plan.open_eye)
        sides = facs.lid_raise_sides(seq.landmarks, plan.open_eye)
        edited = seq.landmarks + fold_free(seq.landmarks, activations, seq.valid, sides)
        edited = facs.restore_speech_and_eyes(seq.landmarks, edited)
        edited[~seq.valid] = np.nan
        return LandmarkSeq(edited, seq.valid.copy())

    @staticmethod
    def supersample(matrix: np.ndarray) -> int:
        """Crop scale so the aligned crop is at least as sharp as the face in the frame."""
        scale = float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))   # aligned px per frame px
        return int(np.clip(np.ceil(1.0 / max(scale, 1e-6)), 1, MAX_SUPERSAMPLE))

    @staticmethod
    def frame_aus(source: np.ndarray, edited: np.ndarray) -> dict[str, float]:
        """The AU activations of one frame's edit, read back from its points (aligned-256 scale).

        The edit is a linear combination of AU fields, so least squares on the fields recovers its
        coefficients (the inner-lip gap restoration is outside the fields' span and is ignored).
        """
        coefs = _au_pinv(len(source)) @ (np.asarray(edited) - np.asarray(source)).ravel()
        return {a: float(max(c, 0.0)) for a, c in zip(facs.AU_NAMES, coefs, strict=True)}

    def render(self, frame: np.ndarray, matrix: np.ndarray, source: np.ndarray,
               edited: np.ndarray, glasses: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Edited aligned crop and its image→crop matrix, for one frame.

        ``source``/``edited`` are aligned points (P, 2) at the 256² scale (P = 478 or 68); ``glasses`` the
        video's eyeglass evidence (:attr:`WarpPlan.glasses`; None: judged on this frame).
        """
        k = self.supersample(matrix)
        matrix_k = np.asarray(matrix, np.float64) * k
        crop = warp_to_aligned(frame, matrix_k, size=ALIGNED_SIZE * k)
        src_k, dst_k = np.asarray(source) * k, np.asarray(edited) * k
        damping = rigid_damping(crop, src_k, glasses)
        dst_k = steady_brows(src_k, dst_k, damping)
        eyes = eyeball.capture(crop, src_k, dst_k)
        warped = warp_face(crop, src_k, dst_k, damping=damping)
        free = None if damping is None else (1.0 - np.clip(damping, 0.0, 1.0), np.eye(2, 3))
        eyeball.redraw(warped, eyes, free)                               # the eyeballs, unstretched
        warped = shade_edit(warped, self.face_edit(source, edited, k))   # expression wrinkles (appearance cues)
        return warped, matrix_k

    def face_edit(self, source: np.ndarray, edited: np.ndarray, scale: float) -> FaceEdit:
        """The :class:`FaceEdit` of one frame (points at the aligned-256 scale, crop ``scale``)."""
        return FaceEdit(np.asarray(source) * scale, np.asarray(edited) * scale, self.frame_aus(source, edited), scale)
