"""The warp edit's video pass: decode (and track) ahead, render the face region, encode behind.

Three stages overlap in threads (PyAV and OpenCV release the GIL in their C loops): a decoder that,
on a first run, also tracks each frame as it is decoded; the render loop, which edits each frame in
place over the face region only (:func:`spfem_cli.backends.warp.region_warp.warp_face_region`); and an
encoder writing the output (and the side-by-side) video. Queues hold a few small chunks, so memory
does not grow with the video's length.

A first run tracks and renders in one decode: the tracker's temporal clean-up is zero-phase (it
looks forward), so a frame is rendered once :data:`LOOKAHEAD` later frames are tracked, from the
track of a window around it; the source's resting expression is read off its first
:data:`ESTIMATE_SECONDS` with a face, which are tracked (and decoded) once before the pass starts.
Cached runs read the expression off the same frames, so a first and a cached run make the same edit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from spfem_cli.backends.warp import eyeball, wrinkles
from spfem_cli.backends.warp.mesh_warp import mesh_topology, warp_points, warp_region_mask
from spfem_cli.backends.warp.region_warp import warp_face_region
from spfem_cli.backends.warp.rigid import may_have_glasses, rigid_damping, steady_brows
from spfem_cli.edit.stream import Behind, Prefetch, StageClock, pin_mmap_threshold
from spfem_cli.face import glasses as eyeglasses
from spfem_cli.face.align import ALIGNED_SIZE, warp_to_aligned
from spfem_cli.face.tracking.base import FaceTrack
from spfem_cli.face.tracking.mediapipe_tracker import MP_TO_IBUG68
from spfem_cli.face.tracking.track import FrameTracker, sub_track, track_prefix
from spfem_cli.progress import frame_progress
from spfem_cli.video import FrameChunk, VideoWriter, iter_chunks

CHUNK = 8                # frames per decoded chunk: small, so the queues stay small at 1080p
QUEUE_CHUNKS = 2         # chunks decoded ahead / waiting for the encoder
LOOKAHEAD = 16           # tracked frames after a block before it is rendered (the zero-phase filter's reach)
LOOKBACK = 16            # tracked frames before a block that its clean-up window starts with
BLOCK = 24               # frames rendered from one window (windows overlap by LOOKBACK + LOOKAHEAD)
CACHED_BLOCK = 96        # the same for a cached track (no frames wait for it: longer blocks, less overlap)
CACHED_CONTEXT = 12      # frames each side: the backend's temporal filters (fold relaxation) reach 8
ESTIMATE_SECONDS = 3.0   # the source's resting expression: median over its first seconds with a face


def warp_mesh(backend, frame: np.ndarray, matrix: np.ndarray, source: np.ndarray, edited: np.ndarray,
              alpha: np.ndarray, glasses: float | None = None) -> tuple:
    """One frame's warp edit as the arguments of :func:`warp_face_region`: the frame → aligned matrix,
    mesh vertices before and after (points + the fixed anchors), triangles, and the two maps of the
    reference path (``backend.render`` + ``paste_back``): ``alpha``, the feathered region mask it blends
    with, and the factor on the displacement, one minus the eyeglass damping.

    ``glasses`` is the video's eyeglass evidence (:attr:`~spfem_cli.backends.warp.backend.WarpPlan.glasses`):
    the rims are then found on every frame of a video with glasses and on none of one without. None judges
    this frame alone, its full crop only when the cheap nose-bridge pre-check allows glasses
    (:func:`~spfem_cli.backends.warp.rigid.may_have_glasses`). The damping is found on an aligned crop of
    the reference's size up to 512 px (:func:`~spfem_cli.face.glasses.measure_scale`: its line filter is
    sized to the crop's resolution; above that the reference's own crop costs more than the whole render)."""
    src = warp_points(np.asarray(source, np.float64), ALIGNED_SIZE)
    dst = np.concatenate([edited, src[len(source):]])
    d = eyeglasses.measure_scale(matrix)
    m_d, points_d = np.asarray(matrix) * d, src[:len(source)] * d
    damping = None
    wears = may_have_glasses(frame, m_d, points_d, ALIGNED_SIZE * d) if glasses is None else glasses > 0
    if wears:                               # the full crop only where glasses may show
        damping = rigid_damping(warp_to_aligned(frame, m_d, size=ALIGNED_SIZE * d), points_d, glasses)
    scale = None if damping is None else 1.0 - np.clip(damping, 0.0, 1.0)
    dst[:len(source)] = steady_brows(source, edited, damping)
    return matrix, src, dst, mesh_topology(len(source)), alpha, scale


def shade_region(frame: np.ndarray, matrix: np.ndarray, edited: np.ndarray, aus: dict[str, float],
                 alpha: np.ndarray) -> None:
    """The backend's expression wrinkles (:func:`spfem_cli.backends.warp.wrinkles.shade`), applied to the
    already warped ``frame`` in place: the gain is made on a 256² aligned crop (faded by the paste-back
    mask, as the reference blends it) and carried into the frame over the box where it is not 1 only."""
    m = np.asarray(matrix, np.float64)
    points = np.asarray(edited, np.float64)
    lm = points if len(points) == 68 else points[MP_TO_IBUG68]
    field = wrinkles.aligned_field(warp_to_aligned(frame, m, ALIGNED_SIZE), lm, aus)
    if field is None:
        return
    field *= alpha
    changed = np.abs(field) > 1e-4
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    if len(rows) == 0:
        return
    bx0, by0, bx1, by1 = cols[0], rows[0], cols[-1] + 2, rows[-1] + 2
    gain = wrinkles.gain(np.ascontiguousarray(field[by0:by1, bx0:bx1]))
    m_inv = cv2.invertAffineTransform(m)
    corners = np.array([[bx0, by0], [bx1, by0], [bx0, by1], [bx1, by1]], np.float64) @ m_inv[:, :2].T + m_inv[:, 2]
    h, w = frame.shape[:2]
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, (w, h))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return
    local = m.copy()                                   # frame box pixel → gain pixel
    local[:, 2] += m[:, :2] @ (x0, y0) - (bx0, by0)
    gain = cv2.warpAffine(gain, local, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(1.0, 1.0, 1.0))
    box = frame[y0:y1, x0:x1]
    box[:] = cv2.multiply(box.astype(np.float32), gain, dtype=cv2.CV_8U)


def render_frame(backend, frame: np.ndarray, matrix: np.ndarray, source: np.ndarray, edited: np.ndarray,
                 glasses: float | None = None) -> None:
    """Edit one frame in place over its face region: the mesh warp (its eyeglass rims held still, ``glasses``
    as in :func:`warp_mesh`), the eyeballs redrawn unstretched (:mod:`spfem_cli.backends.warp.eyeball`), then
    the wrinkle shading."""
    alpha = warp_region_mask(source, ALIGNED_SIZE)          # the region the warp may change, feathered
    mesh = warp_mesh(backend, frame, matrix, source, edited, alpha, glasses)
    _, _, dst, _, _, scale = mesh
    m = np.asarray(matrix, np.float64)
    back = cv2.invertAffineTransform(m)
    src_f, dst_f = (np.asarray(p, np.float64)[:len(source)] @ back[:, :2].T + back[:, 2] for p in (source, dst))
    eyes = eyeball.capture(frame, src_f, dst_f)
    warp_face_region(frame, *mesh, out=frame)
    eyeball.redraw(frame, eyes, None if scale is None else (scale, m * (len(scale) / ALIGNED_SIZE)))
    shade_region(frame, matrix, edited, backend.frame_aus(source, edited), alpha)


@dataclass
class FrameEdits:
    """What rendering frames [start, start + n) needs: validity, frame → aligned transforms, landmarks, and
    the video's eyeglass evidence (None: judged per frame)."""

    start: int
    valid: np.ndarray
    transforms: np.ndarray
    source: np.ndarray
    edited: np.ndarray
    glasses: float | None = None


def frame_edits(backend, track: FaceTrack, plan, start: int = 0) -> FrameEdits:
    """Encode ``track`` (frames ``start``…) and apply the rows of ``plan`` that belong to them."""
    seq = backend.encode(track)
    edited = backend.manipulate(seq, plan)
    return FrameEdits(start, track.valid, track.transforms, seq.landmarks, edited.landmarks, plan.glasses)


@functools.cache
def _tables() -> threading.Thread:
    """The render's per-process tables (the wrinkle maps: ~0.4 s of CPU) built in a background thread, started
    as early as a pass can (while its first seconds are tracked, or its first window is made) rather than
    inside the first frame's render, which the decoder and the encoder wait on."""
    thread = threading.Thread(target=wrinkles.wrinkle_maps, daemon=True, name="spfem-tables")
    thread.start()
    return thread


def render_chunk(backend, frames: np.ndarray, start: int, edits: FrameEdits) -> None:
    """Edit ``frames`` (video frames ``start``…) in place; frames without a face stay untouched."""
    _tables().join()
    for j, frame in enumerate(frames):
        i = start + j - edits.start
        if 0 <= i < len(edits.valid) and edits.valid[i]:
            render_frame(backend, frame, edits.transforms[i], edits.source[i], edits.edited[i], edits.glasses)


def render_frames(backend, track: FaceTrack, plan, frames, indices) -> list[np.ndarray]:
    """Edited copies of some decoded ``frames`` (video frames ``indices`` of ``track``'s clip), rendered in
    memory by the pass's own per-frame path: for judging an edit on a sample of frames without a video."""
    edits = frame_edits(backend, track, plan)
    out = [np.array(f) for f in frames]
    for frame, i in zip(out, indices, strict=True):
        render_chunk(backend, frame[None], int(i), edits)
    return out


def plan_rows(plan, start: int, stop: int):
    """``plan`` restricted to frames [start, stop): every per-frame array sliced (indices past its end
    repeat the last frame: the container's frame count is an estimate)."""
    n = len(plan.displacement)
    rows = np.clip(np.arange(start, stop), 0, n - 1)
    per_frame = {f.name: getattr(plan, f.name)[rows] for f in dataclasses.fields(plan)
                 if isinstance(getattr(plan, f.name), np.ndarray) and len(getattr(plan, f.name)) == n}
    return dataclasses.replace(plan, **per_frame)


def estimation_stop(valid: np.ndarray, fps: float) -> int | None:
    """Index just after the first :data:`ESTIMATE_SECONDS` of frames with a face (None: fewer in ``valid``)."""
    need = max(1, math.ceil(ESTIMATE_SECONDS * fps))
    hits = np.flatnonzero(valid)
    return int(hits[need - 1]) + 1 if len(hits) >= need else None


def estimation_track(track: FaceTrack, length: int | None = None) -> FaceTrack:
    """The frames the source's expression is read from (the first seconds with a face), as a track of
    ``length`` frames (default the track's) with every other frame invalid."""
    stop = estimation_stop(track.valid, float(track.fps))
    return track_prefix(track, len(track) if stop is None else stop, length or len(track))


@contextlib.contextmanager
def video_sink(req, fps, clock: StageClock) -> Iterator[Callable[[np.ndarray | None, np.ndarray], None]]:
    """``emit(original, edited)``: encode a chunk in a background thread into the output (and the
    side-by-side, which needs the chunk's original frames). On error the encoder stops before the
    writers discard their temporary files."""
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(VideoWriter(req.output, fps, audio_from=req.input, crf=req.crf, preset=req.preset,
                                                 overwrite=req.overwrite))
        side = None
        if req.side_by_side is not None:
            side = stack.enter_context(VideoWriter(req.side_by_side, fps, audio_from=req.input, crf=req.crf,
                                                   preset=req.preset, overwrite=req.overwrite))

        def encode(item: tuple[np.ndarray | None, np.ndarray]) -> None:
            original, edited = item
            writer.write(edited)
            if side is not None:
                side.write(np.concatenate([original, edited], axis=2))

        encoder = stack.enter_context(Behind(encode, QUEUE_CHUNKS, clock=clock, stage="encode"))
        yield lambda original, edited: encoder.put((original, edited))


def _render_and_emit(backend, chunk: FrameChunk, edits: FrameEdits, emit, keep_original: bool,
                     clock: StageClock) -> None:
    with clock.timed("render"):
        original = chunk.frames.copy() if keep_original else None
        render_chunk(backend, chunk.frames, chunk.start, edits)
    emit(original, chunk.frames)


def render_tracked(req, backend, track: FaceTrack, plan, clock: StageClock, label: str = "rendering (warp)") -> int:
    """The pass of an edit whose track is known (cached): decode ahead, render, encode behind. The edit
    is made per block of :data:`CACHED_BLOCK` frames from a window around it, as in the single pass (the same
    result: the backend's temporal filters reach less far than the window), so no per-frame array of the
    whole video but the track and the plan is ever held."""
    _tables()
    pin_mmap_threshold(track.frame_size)
    frames_done, block_end = 0, 0
    edits: FrameEdits | None = None
    with video_sink(req, track.fps, clock) as emit, \
            frame_progress(req.progress, len(track), label) as advance, \
            Prefetch(iter_chunks(req.input, CHUNK), QUEUE_CHUNKS, clock=clock, stage="decode") as decoded:
        for chunk in decoded:
            if edits is None or chunk.start + len(chunk.frames) > block_end:
                a = chunk.start
                lo, hi = max(0, a - CACHED_CONTEXT), min(len(track), a + CACHED_BLOCK + CACHED_CONTEXT)
                block_end = a + CACHED_BLOCK
                with clock.timed("window"):
                    edits = frame_edits(backend, sub_track(track, lo, hi), plan_rows(plan, lo, hi), start=lo)
            _render_and_emit(backend, chunk, edits, emit, req.side_by_side is not None, clock)
            frames_done += len(chunk.frames)
            advance(len(chunk.frames))
    return frames_done


def track_for_estimate(req, tracker: FrameTracker, fps: float, clock: StageClock,
                       frame_size: tuple[int, int] | None = None) -> bool:
    """Track the video's first frames until the expression-estimation prefix is complete, and
    :data:`LOOKAHEAD` frames beyond it (so its clean-up, and the estimate, are those of the whole track).

    Returns True when the whole video was tracked on the way (short clips: no single pass needed).
    """
    _tables()
    pin_mmap_threshold(frame_size)
    need = max(1, math.ceil(ESTIMATE_SECONDS * fps))
    found, stop = 0, None
    with clock.timed("prefix decode+track"), Prefetch(iter_chunks(req.input, CHUNK), QUEUE_CHUNKS) as decoded:
        for chunk in decoded:              # decoded on the other core while this one tracks (nothing else runs yet)
            for frame in chunk.frames:
                found += tracker.push(frame) is not None
                if stop is None and found >= need:
                    stop = len(tracker)
            if stop is not None and len(tracker) >= stop + LOOKAHEAD:
                return False
    return True


def _decode_and_track(req, tracker: FrameTracker) -> Iterable[FrameChunk]:
    """Decoded chunks, each tracked before it is handed on (frames tracked earlier are not re-tracked)."""
    for chunk in iter_chunks(req.input, CHUNK):
        for j, frame in enumerate(chunk.frames):
            if chunk.start + j == len(tracker):
                tracker.push(frame)
        yield chunk


def render_single_pass(req, backend, tracker: FrameTracker, plan, fps, frame_size: tuple[int, int], n_hint: int,
                       clock: StageClock) -> int:
    """Decode once, tracking the frames after the tracker's last, and render blocks of about :data:`BLOCK`
    frames as soon as :data:`LOOKAHEAD` frames after them are tracked, from the clean-up (and the
    backend's temporal filters: fold-free scale) of a window reaching :data:`LOOKBACK` frames before
    and :data:`LOOKAHEAD` after the block, so block edges do not show."""
    pin_mmap_threshold(frame_size)
    frames_done = 0
    pending: deque[FrameChunk] = deque()

    def flush(block: list[FrameChunk]) -> None:
        nonlocal frames_done
        a, b = block[0].start, block[-1].start + len(block[-1].frames)
        lo, hi = max(0, a - LOOKBACK), min(len(tracker), b + LOOKAHEAD)
        with clock.timed("window"):
            edits = frame_edits(backend, tracker.finish(fps, frame_size, start=lo, stop=hi), plan_rows(plan, lo, hi), start=lo)
        for chunk in block:
            _render_and_emit(backend, chunk, edits, emit, req.side_by_side is not None, clock)
            frames_done += len(chunk.frames)
            advance(len(chunk.frames))

    def ready(tracked: int | None) -> list[FrameChunk]:
        """The front chunks to render now: a full block with its lookahead tracked (all at the end)."""
        block: list[FrameChunk] = []
        for chunk in pending:
            if tracked is not None and chunk.start + len(chunk.frames) + LOOKAHEAD > tracked:
                return []
            block.append(chunk)
            if sum(len(c.frames) for c in block) >= BLOCK:
                return block
        return block if tracked is None else []

    with video_sink(req, fps, clock) as emit, \
            frame_progress(req.progress, n_hint, "tracking + rendering (warp)") as advance, \
            Prefetch(_decode_and_track(req, tracker), QUEUE_CHUNKS, clock=clock, stage="decode+track") as decoded:
        for chunk in decoded:
            pending.append(chunk)
            while block := ready(chunk.start + len(chunk.frames)):
                for _ in block:
                    pending.popleft()
                flush(block)
        while block := ready(None):
            for _ in block:
                pending.popleft()
            flush(block)
    return frames_done
