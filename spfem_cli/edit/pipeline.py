"""`spfem edit`: track → encode → manipulate → render → paste back → encode with the original audio.

The pipeline only orchestrates; the backend owns the three middle stages. Frames are streamed in
chunks from decoder to encoder, so memory does not grow with the video's length. Every output is
written to a temporary file and renamed at the end: Ctrl-C or an error leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from spfem_cli.edit.naming import refuse_plot_of_photo
from spfem_cli.edit.targets import EditTarget
from spfem_cli.errors import SpfemError
from spfem_cli.progress import say_once
from spfem_cli.video import (
    IMAGE,
    AtomicOutput,
    VideoWriter,
    check_encoder,
    check_output_path,
    container_format,
    cut_span,
    is_image_file,
    iter_chunks,
    probe,
    truncated_picture,
)

if TYPE_CHECKING:
    from spfem_cli.edit.auto_intensity import AutoIntensity
    from spfem_cli.face.expression import Perception

BackendName = Literal["auto", "warp", "ned"]
AUTO_NEEDS_WARP = "--intensity auto works with the warp backend (pass --backend warp, or a number)"


@dataclass
class EditRequest:
    input: Path
    output: Path
    target: EditTarget
    backend: BackendName = "auto"
    tracker: str = "auto"            # auto: fan for the ned backend when its weights are present, else mediapipe
    face_index: int = 0
    side_by_side: Path | None = None
    plot: Path | None = None
    overwrite: bool = False
    allow_no_face: bool = False
    progress: bool = True
    crf: int = 18                     # x264 quality (lower = better, larger)
    preset: str = "medium"            # x264 speed/size trade-off: ultrafast … veryslow
    renderer: Path | None = None      # actor renderer folder (ned backend)
    device: str = "auto"
    start: float | None = None        # seconds: edit only [start, end) of the input (audio cut to match)
    end: float | None = None
    auto_intensity: bool = False      # --intensity auto: search the lowest that reads as --emotion (warp backend)
    perceive: bool = True             # read the perceived emotion of source and output (FER-2013, ~40 frames)


@dataclass
class EditResult:
    output: Path
    backend: str
    frames: int
    fps: Fraction
    valid_frames: int
    side_by_side: Path | None = None
    plot: Path | None = None
    mouth_correlation: float | None = None
    drawn_correlation: float | None = None  # --plot: mouth r and peak ratio of the output's opening as drawn (no tracker)
    drawn_peak_ratio: float | None = None
    source_aus: dict[str, float] = field(default_factory=dict)
    target_aus: dict[str, float] = field(default_factory=dict)
    note: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)   # busy seconds per stage, each in its own thread
    perceived_source: Perception | None = None
    perceived_output: Perception | None = None
    auto_intensity: AutoIntensity | None = None


def choose_backend(req: EditRequest):
    """The backend to run and one line saying which and why."""
    name = req.backend
    if name not in ("auto", "warp", "ned"):
        raise SpfemError(f"unknown backend '{name}': choose auto, warp or ned")
    from spfem_cli.backends.warp.backend import WarpBackend  # here: a refused request stays fast

    if name == "warp":
        return WarpBackend(), "backend warp"
    if name == "auto" and req.renderer is None:     # ned cannot run without one: no need to load torch to say so
        return WarpBackend(), ("backend warp (auto: the ned backend lacks an actor renderer: "
                               "spfem train-renderer VIDEO --out DIR, then --renderer DIR)")
    from spfem_cli.backends.ned.backend import NedBackend, missing_weights

    if name == "ned":
        return NedBackend(req.renderer, device=req.device, progress=req.progress), "backend ned"
    missing = missing_weights(req.renderer)
    if missing:
        return WarpBackend(), f"backend warp (auto: the ned backend lacks {len(missing)} item(s): {missing[0]}, ...)"
    return NedBackend(req.renderer, device=req.device, progress=req.progress), "backend ned (auto: weights and an actor renderer are present)"


def resolve_tracker(req: EditRequest, backend_name: str) -> str:
    """The landmarker of this edit: the user's choice; for ned the one its renderer was trained with (the
    conditioning must be aligned the same way), else FAN when installed (NED's); MediaPipe for warp (embedded,
    and what the warp edit is tuned on)."""
    if req.tracker != "auto":
        return req.tracker
    if backend_name != "ned":
        return "mediapipe"
    import json

    from spfem_cli.face.tracking.track import TRACKERS, auto_tracker

    info = Path(req.renderer or "") / "actor" / "actor.json"   # written by `spfem train-renderer`
    with contextlib.suppress(OSError, ValueError, AttributeError):
        trained_with = json.loads(info.read_text()).get("tracker")
        if trained_with in TRACKERS:
            return trained_with
    return auto_tracker()


def write_side_by_side(source: Path, edited: Path, output: Path, *, crf: int = 18, preset: str = "medium",
                       overwrite: bool = False) -> Path:
    """source | edited, decoded in lockstep (for backends that render the video themselves)."""
    info = probe(source)
    with VideoWriter(output, info.fps, audio_from=source, crf=crf, preset=preset, overwrite=overwrite) as writer:
        for a, b in zip(iter_chunks(source), iter_chunks(edited), strict=False):
            n = min(len(a.frames), len(b.frames))
            h, w = a.frames.shape[1:3]
            writer.write(np.concatenate([a.frames[:n], b.frames[:n, :h, :w]], axis=2))
    return output


def _check_request(req: EditRequest) -> None:
    """Everything a user can get wrong, refused before any work: paths, containers, encoder, device,
    span and timeline against the video's length."""
    check_encoder(req.crf, req.preset)
    if req.auto_intensity:
        from spfem_cli.edit.auto_intensity import check_auto

        check_auto(req.target)
        if req.backend == "ned":
            raise SpfemError(AUTO_NEEDS_WARP)
    inputs = tuple(p for p in (req.input, req.target.reference) if p is not None)
    info = probe(req.input)   # unreadable input fails here, before anything is written
    if truncated_picture(req.input):
        say_once(f"warning: {req.input} is truncated (the file ends early): its missing part comes out grey")
    outputs = [p for p in (req.output, req.side_by_side, req.plot) if p is not None]
    if len({Path(p).resolve() for p in outputs}) != len(outputs):
        raise SpfemError("output, --side-by-side and --plot must be different files")
    for path in (req.output, req.side_by_side):
        if path is not None and container_format(path) == IMAGE and info.n_frames > 1:
            raise SpfemError(f"{path} is a picture, but {req.input} is a video ({info.n_frames} frames): "
                             "write the edit as .mp4, .mov or .mkv")
    for path in outputs:
        check_output_path(path, inputs=inputs, overwrite=req.overwrite)
    if req.tracker == "fan":
        from spfem_cli import weights
        from spfem_cli.face.tracking.track import FAN_WEIGHTS

        weights.require(FAN_WEIGHTS, "--tracker fan")
    if req.device != "auto":
        from spfem_cli.device import pick_device

        pick_device(req.device)        # --device cuda without a GPU is refused whichever backend runs
    if is_image_file(req.input) and (req.start is not None or req.end is not None):
        raise SpfemError(f"--start/--end cut a video; {req.input} is a photo")
    if req.plot is not None:
        refuse_plot_of_photo(req.input)
    start, end = req.start or 0.0, req.end if req.end is not None else (info.duration or math.inf)   # a photo: no duration
    if start < 0 or end <= start:
        raise SpfemError(f"--start {start:g} / --end {end:g}: need 0 <= start < end")
    if info.duration and start >= info.duration:
        raise SpfemError(f"--start {start:g} s is past the end of {req.input} ({info.duration:.2f} s)")
    length = min(end, info.duration or end) - start
    for seg in req.target.timeline:
        if seg.start >= length:
            raise SpfemError(f"--timeline segment {seg.emotion}@{seg.start:g}-{seg.end:g} starts after the "
                             f"{'span' if req.start or req.end else 'video'} ends ({length:.2f} s)")


def _track(path: Path, req: EditRequest, *, cache: bool = True):
    """The face track of ``path``; inputs and references come from the content-hash cache
    (a second edit of the same video skips tracking), re-tracked outputs do not."""
    if cache:
        from spfem_cli.face.preprocess import cached_track

        return cached_track(path, req.tracker, face_index=req.face_index, progress=req.progress)
    from spfem_cli.face.tracking.track import track_video

    return track_video(path, req.tracker, face_index=req.face_index, progress=req.progress)


def _copy_through(req: EditRequest) -> None:
    """The input unchanged: byte for byte when the container matches, else re-encoded into the asked one."""
    if req.output.suffix.lower() == req.input.suffix.lower():
        with AtomicOutput(req.output) as tmp:
            shutil.copyfile(req.input, tmp)
        return
    info = probe(req.input)
    with VideoWriter(req.output, info.fps, audio_from=req.input, crf=req.crf, preset=req.preset,
                     overwrite=req.overwrite) as writer:
        for chunk in iter_chunks(req.input):
            writer.write(chunk.frames)


def faces_found(path: Path, tracker: str, samples: int = 12) -> int:
    """The most faces the tracker sees in one of ``samples`` evenly spaced frames (for error messages)."""
    from spfem_cli.face.tracking.track import get_tracker

    n = probe(path).n_frames
    picks = set(np.linspace(0, max(n - 1, 0), samples).round().astype(int).tolist())
    engine = get_tracker(tracker)
    most = 0
    try:
        for chunk in iter_chunks(path):
            for j, frame in enumerate(chunk.frames):
                if chunk.start + j in picks:
                    most = max(most, len(engine.detect(frame)))
    finally:
        engine.close()
    return most


def _no_face(req: EditRequest, track, backend_name: str) -> EditResult:
    """No frame has the asked face: say how many faces there are when --face asked for a later one."""
    if req.face_index > 0:
        found = faces_found(req.input, req.tracker)
        if found:
            raise SpfemError(f"--face {req.face_index} asks for the face ranked {req.face_index + 1} by size, but "
                             f"{req.input} shows at most {found} face(s) at once: use --face 0 to {found - 1}")
    if not req.allow_no_face:
        raise SpfemError(f"no face found in {req.input} (pass --allow-no-face to copy it through unchanged)")
    _copy_through(req)
    return EditResult(req.output, backend_name, len(track), track.fps, 0, note="no face: copied through")


MIN_REFERENCE_FACES = 5   # a reference's own rest shape is the median of its calmest frames: it needs several


def _reference_track(req: EditRequest):
    ref_track = _track(req.target.reference, req)
    if ref_track.n_valid == 0:
        raise SpfemError(f"no face found in the reference {req.target.reference}")
    if ref_track.n_valid < MIN_REFERENCE_FACES:
        raise SpfemError(f"--reference needs a clip with a face in at least {MIN_REFERENCE_FACES} frames (found "
                         f"{ref_track.n_valid} in {req.target.reference}): a face's expression is read against its own "
                         "calmest frames, which a photo does not have; use --emotion")
    return ref_track


def _edit_ned(req: EditRequest, backend, track) -> EditResult:
    """DECA → translator → conditioning → actor renderer → paste-back (spfem_cli.backends.ned.backend)."""
    recon, source = backend.encode(req.input, track)
    reference = None
    if req.target.reference is not None:
        reference = backend.encode(req.target.reference, _reference_track(req))[1]
    edited = backend.manipulate(source, req.target, reference)
    n = backend.render_video(req.input, req.output, track, recon, edited, crf=req.crf, preset=req.preset,
                             overwrite=req.overwrite)
    if req.side_by_side is not None:
        write_side_by_side(req.input, req.output, req.side_by_side, crf=req.crf, preset=req.preset, overwrite=req.overwrite)
    return EditResult(req.output, backend.name, n, track.fps, track.n_valid, req.side_by_side)


def _edit_warp(req: EditRequest, backend) -> tuple[EditResult, object]:
    """The warp edit and its track. On a first run (no cached track) the video is tracked in the rendering
    pass itself, one decode (:mod:`spfem_cli.backends.warp.render`); the track is cached for the next edit."""
    from spfem_cli.backends.warp import render as warp_render
    from spfem_cli.edit.stream import StageClock
    from spfem_cli.face.preprocess import find_cached_track, store_track

    clock = StageClock()
    # The reference first: a reference without enough faces is refused before the source is tracked.
    reference = backend.encode(_reference_track(req)) if req.target.reference is not None else None
    track = find_cached_track(req.input, req.tracker, face_index=req.face_index)
    n = 0
    if track is None:
        from spfem_cli.face.tracking.track import FrameTracker, get_tracker, track_meta

        info = probe(req.input)
        fps, size = info.fps, (info.height, info.width)
        with get_tracker(req.tracker) as engine:
            tracker = FrameTracker(engine, req.face_index)
            if not warp_render.track_for_estimate(req, tracker, float(fps), clock, size):
                # The expression estimate is complete before the end: render while tracking the rest.
                prefix = warp_render.estimation_track(tracker.finish(fps, size), max(info.n_frames, len(tracker)))
                plan = backend.plan(backend.encode(prefix), req.target, float(fps), reference)
                n = warp_render.render_single_pass(req, backend, tracker, plan, fps, size, info.n_frames, clock)
            track = tracker.finish(fps, size, meta=track_meta(req.input, req.face_index, info.rotation))
        store_track(req.input, track, req.tracker, face_index=req.face_index)
    if not n:
        if track.n_valid == 0:
            return _no_face(req, track, backend.name), track
        plan = backend.plan(backend.encode(warp_render.estimation_track(track)), req.target, float(track.fps), reference)
        n = warp_render.render_tracked(req, backend, track, plan, clock)
    return EditResult(req.output, backend.name, n, track.fps, track.n_valid, req.side_by_side, source_aus=plan.source_aus,
                      target_aus=plan.target_aus, stage_seconds=clock.seconds), track


def _auto_intensity(req: EditRequest, backend) -> tuple[EditRequest, AutoIntensity | None]:
    """``--intensity auto``: track (cached, the edit reuses it), then search on sampled frames rendered in memory
    by the edit's own render path (:func:`spfem_cli.edit.auto_intensity.find_intensity`)."""
    from spfem_cli.backends.warp import render as warp_render
    from spfem_cli.edit.auto_intensity import find_intensity

    if backend.name != "warp":
        raise SpfemError(AUTO_NEEDS_WARP)
    track = _track(req.input, req)
    if track.n_valid == 0:
        return req, None
    estimate = backend.encode(warp_render.estimation_track(track))

    def render(intensity: float, frames, idx) -> list[np.ndarray]:
        plan = backend.plan(estimate, replace(req.target, intensity=intensity), float(track.fps))
        return warp_render.render_frames(backend, track, plan, frames, idx)

    found = find_intensity(req.input, req.target, track, render)
    return replace(req, target=replace(req.target, intensity=found.intensity), auto_intensity=False), found


def span_target(target: EditTarget, start: float) -> EditTarget:
    """``target`` for a clip cut at ``start`` s: timeline segments move with it (those before it dropped)."""
    if not target.timeline:
        return target
    moved = tuple(replace(seg, start=max(seg.start - start, 0.0), end=seg.end - start)
                  for seg in target.timeline if seg.end > start)
    if not moved:
        raise SpfemError(f"no --timeline segment reaches into the span starting at --start {start:g} s")
    return replace(target, timeline=moved)


def edit_video(req: EditRequest) -> EditResult:
    """Run one edit end to end; see the module docstring for the stages. ``--start/--end`` first cut the
    span (frames and audio, kept in sync) into a temporary clip, which is then edited as a whole."""
    _check_request(req)
    if req.start is None and req.end is None:
        return _edit_whole(req)
    start = req.start or 0.0
    target = span_target(req.target, start)
    with tempfile.TemporaryDirectory(prefix="spfem-span-") as tmp:
        clip = cut_span(req.input, Path(tmp) / f"{req.input.stem}.mp4", start, req.end)
        return _edit_whole(replace(req, input=clip, target=target, start=None, end=None))


def _edit_whole(req: EditRequest) -> EditResult:
    from spfem_cli.edit.stream import one_thread_pools

    backend, why = choose_backend(req)
    req = replace(req, tracker=resolve_tracker(req, backend.name))
    if req.progress:
        say_once(f"{why}; tracker {req.tracker}")
    auto = None
    if req.auto_intensity:
        req, auto = _auto_intensity(req, backend)
    if backend.name == "warp":
        with one_thread_pools():        # the pass's own threads fill the cores (spfem_cli.edit.stream)
            result, track = _edit_warp(req, backend)
        if result.note:
            return result
    else:
        track = _track(req.input, req)
        if track.n_valid == 0:
            return _no_face(req, track, backend.name)
        result = _edit_ned(req, backend, track)
    if req.plot is not None:
        from spfem_cli.edit.report import mouth_plot
        from spfem_cli.evaluate.drawn_opening import drawn_opening

        out_track = _track(req.output, req, cache=False)
        title = f"{req.input.name} → {req.target.description}"
        drawn = drawn_opening(req.input, req.output, track)
        result.mouth_correlation = mouth_plot(track, out_track, req.plot, title=title, drawn=drawn)
        result.drawn_correlation, result.drawn_peak_ratio = (v if math.isfinite(v) else None
                                                             for v in (drawn.correlation, drawn.peak_ratio))
        result.plot = req.plot
    result.auto_intensity = auto
    if req.perceive:
        from spfem_cli.face.expression import perceive_files

        with one_thread_pools():        # 80 small faces: a second BLAS thread only spun (~0.25 M sched_yield)
            result.perceived_source, result.perceived_output = perceive_files(req.input, req.output, track)
    return result
