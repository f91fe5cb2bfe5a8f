"""Does the edit read as its emotion on real talking faces, and is the speech opening kept?

For each clip (``$SPFEM_BENCH_CLIPS``: a folder of .mp4 or a comma-separated list of files; default
/work/clips when it exists, else the bundled sample) the first ``CLIP_SECONDS`` are edited with the
real ``spfem edit`` pipeline (warp backend, default intensity; the five judged emotions again at the
strongest intensity) to each emotion, then:

- the FER-2013 recogniser (:mod:`spfem_cli.face.expression`) reads ``SAMPLES`` face crops of source
  and output (same frames, same boxes): rise of P(target), and whether the target is the top-1 label
  of the output's mean probabilities (contempt has no FER class: its rows say so);
- the output is re-tracked (as ``spfem edit --plot`` does) and its inner-lip opening compared with the
  source's: Pearson r and the ratio of peak openings (95th percentiles, robust to one bad frame). The
  re-tracker is MediaPipe unless ``$SPFEM_BENCH_RETRACKER`` names another (:func:`retracker`);
- the opening as drawn, with no tracker reading the edit (:mod:`spfem_cli.evaluate.drawn_opening`): on every
  frame, how far the lips moved apart in the picture, added to the source's opening; judged as the re-tracked
  one (r, peak ratio), it tells the edit's share of a mouth miss from the tracker's;
- the re-tracked mesh is read back on the action-unit basis against the source's mesh frame by frame
  (:func:`au_readback`): what the edit visibly did to brows, lids, nose and mouth corners, the only
  check there is for disgust and contempt, which the recogniser cannot judge.

``score`` is also the engine of the quick scoring script other work uses to measure warp changes.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from spfem_cli.benchmarks.runner import BenchRow

AREA = "emotion"
EMOTIONS = ("happy", "sad", "angry", "surprised", "fear", "disgusted", "contempt")
JUDGED_EMOTIONS = EMOTIONS[:5]   # the ones with goals on the recogniser (disgust barely fires in FER-2013; no contempt class)
CLIP_SECONDS = 4.0
SAMPLES = 40
DEFAULT_CLIPS_DIR = Path("/work/clips")
# People speaking to the camera among LivePortrait's example driving clips (MIT; not in the repo).
# The other clips there (d0, d6, d13, d14, s*) are for tuning: keep these eight held out.
TALKING_CLIPS = ("d3", "d9", "d10", "d11", "d12", "d18", "d19", "d20")
RETRACKER_ENV = "SPFEM_BENCH_RETRACKER"

@dataclass
class ClipScore:
    clip: str
    emotion: str
    intensity: float
    p_source: float | None       # mean P(target) over the sampled source crops (None: no FER class)
    p_output: float | None
    top_source: str
    top_output: str
    mouth_r: float
    peak_ratio: float            # output / source 95th-percentile inner-lip opening (re-tracked)
    frames: int
    readback: dict[str, float] = field(default_factory=dict)   # AU → median activation, re-tracked output vs source
    margin: float | None = None  # after the edit, P(target) minus the strongest other class (< 0: short of top-1)
    drawn_r: float | None = None       # mouth r and peak ratio of the edit's opening as drawn (no tracker)
    drawn_peak: float | None = None

    @property
    def rise(self) -> float | None:
        return None if self.p_source is None or self.p_output is None else self.p_output - self.p_source

    @property
    def hit(self) -> bool:
        return self.top_output == self.emotion


def bench_clips(spec: str | None = None) -> list[Path]:
    """Clips named by ``spec`` or ``$SPFEM_BENCH_CLIPS`` (see :func:`listed_files`); by default the talking clips of
    the default folder (all its .mp4 when they are not all there); [] when there is none (callers use the sample)."""
    spec = spec if spec is not None else os.environ.get("SPFEM_BENCH_CLIPS", "")
    return listed_files(spec, DEFAULT_CLIPS_DIR, (".mp4",), TALKING_CLIPS)


def listed_files(spec: str, folder: Path, suffixes: tuple[str, ...], defaults: tuple[str, ...]) -> list[Path]:
    """The bench's inputs: ``spec`` a folder (its files ending in ``suffixes``) or a comma list of files or short
    names (``d3`` is ``folder/d3`` + the first suffix); an empty ``spec`` names ``defaults`` in ``folder`` (every
    file there with those suffixes when they are not all there; [] without the folder). A named file that is
    missing raises FileNotFoundError: a bench must not quietly score fewer inputs than it was given."""
    def in_folder(where: Path) -> list[Path]:
        return sorted(p for p in where.iterdir() if p.suffix.lower() in suffixes)

    if not spec:
        if not folder.is_dir():
            return []
        named = [folder / f"{name}{suffixes[0]}" for name in defaults]
        return named if all(p.is_file() for p in named) else in_folder(folder)
    if Path(spec).is_dir():
        return in_folder(Path(spec))
    out = []
    for name in filter(None, (s.strip() for s in spec.split(","))):
        path = Path(name)
        if not path.suffix:
            path = folder / f"{name}{suffixes[0]}"
        if not path.is_file():
            raise FileNotFoundError(f"benchmark input not found: {path}")
        out.append(path)
    return out


def retracker() -> str:
    """The tracker that re-reads the mouths: ``$SPFEM_BENCH_RETRACKER``, default ``mediapipe``.

    Why a choice: MediaPipe's inner lips move with the expression around them (a smile's slit reads open, a
    sad mouth's the same slit closed; BENCHMARKS.md, tracker_lips.png), so its re-tracked mouth misses are
    partly its own. ``fan`` (2D-FAN, the landmarker of the papers' LMD and of NED) is the second instrument
    where its weights are installed; they are checked here, before any edit is made.
    """
    from spfem_cli import weights
    from spfem_cli.errors import SpfemError
    from spfem_cli.face.tracking.track import FAN_WEIGHTS, TRACKERS

    name = os.environ.get(RETRACKER_ENV, "mediapipe")
    if name not in TRACKERS:
        raise SpfemError(f"{RETRACKER_ENV}={name!r} is not a tracker; choose one of: {', '.join(TRACKERS)}")
    if name == "fan":
        weights.require(FAN_WEIGHTS, f"{RETRACKER_ENV}=fan")
    return name


def retracked_openings(source: Path, output: Path, name: str, source_track=None, output_track=None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Inner-lip openings of ``source`` and ``output`` as tracker ``name`` reads them, over their common frames;
    tracks of that tracker already made are passed in and not made again."""
    from spfem_cli.face.preprocess import cached_track
    from spfem_cli.face.tracking.track import track_video

    source_track = cached_track(source, name, progress=False) if source_track is None else source_track
    output_track = track_video(output, name, progress=False) if output_track is None else output_track
    a, b = source_track.mouth_opening(), output_track.mouth_opening()
    n = min(len(a), len(b))
    return a[:n], b[:n]


def trimmed(clip: Path, workdir: Path, seconds: float = CLIP_SECONDS) -> Path:
    """The first ``seconds`` of ``clip`` in ``workdir`` (made once; :func:`spfem_cli.video.cut_span`)."""
    from spfem_cli.video import cut_span

    out = Path(workdir) / f"{clip.stem}.{seconds:g}s.mp4"
    return out if out.is_file() else cut_span(clip, out, 0.0, seconds)


def drawn_measures(source: Path, output: Path, track) -> tuple[float | None, float | None]:
    """(r, peak ratio) of the output's opening as drawn against the source's
    (:func:`~spfem_cli.evaluate.drawn_opening.drawn_opening`); None where undefined."""
    from spfem_cli.evaluate.drawn_opening import drawn_opening

    drawn = drawn_opening(source, output, track)
    return tuple(float(v) if np.isfinite(v) else None for v in (drawn.correlation, drawn.peak_ratio))


def au_readback(source_track, output_track, min_activation: float = 0.05) -> dict[str, float]:
    """AU activations of the re-tracked output relative to the source, frame by frame (median over frames).

    Both are MediaPipe meshes of the same frames in the aligned 256² frame; the difference is projected on
    the warp's AU fields (:func:`spfem_cli.backends.warp.facs.au_activations`, non-negative). Expressed in
    units of the recipe weights (1 = the AU at full intensity), so ``disgusted`` at 0.8 should read back
    about 0.8 × its AU9 weight if the tracker sees the edit. Empty when a track has no mesh.
    """
    from spfem_cli.backends.warp import facs

    if source_track.mesh is None or output_track.mesh is None:
        return {}
    n = min(len(source_track), len(output_track))
    src, out = source_track.aligned_mesh()[:n], output_track.aligned_mesh()[:n]
    ok = np.flatnonzero(np.isfinite(src).all((1, 2)) & np.isfinite(out).all((1, 2)))
    if len(ok) == 0:
        return {}
    acts = np.stack([facs.au_activations(out[i][None], rest=src[i])[0] for i in ok])
    median = np.median(acts, axis=0)
    return {name: round(float(v), 3) for name, v in zip(facs.AU_NAMES, median, strict=True) if v >= min_activation}


def score(clip: Path, emotion: str, workdir: Path, *, intensity: float | None = None, samples: int = SAMPLES,
          seconds: float = CLIP_SECONDS, backend: str = "warp", keep: Path | None = None,
          reference: Path | None = None) -> ClipScore:
    """Edit the first ``seconds`` of ``clip`` to ``emotion`` and score it (see the module docstring).

    ``reference``: edit with ``--reference`` that clip instead, and judge the output by ``emotion`` (the
    label the reference reads as). ``keep``: also write the edited clip there (to look at it).
    """
    from spfem_cli.edit.pipeline import EditRequest, edit_video
    from spfem_cli.edit.targets import DEFAULT_INTENSITY, EditTarget
    from spfem_cli.emotions import canonical
    from spfem_cli.evaluate.landmarks import mouth_correlation, peak_ratio
    from spfem_cli.face.expression import column, perceive_files
    from spfem_cli.face.preprocess import cached_track
    from spfem_cli.face.tracking.track import track_video

    intensity = DEFAULT_INTENSITY if intensity is None else intensity
    source = trimmed(Path(clip), Path(workdir), seconds)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:     # private: several processes may score at once
        output = Path(keep) if keep is not None else Path(tmp) / f"{source.stem}.{emotion}.mp4"
        target = (EditTarget(emotion=emotion, intensity=intensity) if reference is None
                  else EditTarget(reference=Path(reference), intensity=intensity))
        edit_video(EditRequest(source, output, target, backend=backend,
                               tracker="mediapipe", progress=False, overwrite=True, preset="veryfast", perceive=False))
        track = cached_track(source, "mediapipe", progress=False)
        out_track = track_video(output, "mediapipe", progress=False)
        before, after = perceive_files(source, output, track, samples)
        drawn_r, drawn_peak = drawn_measures(source, output, track)
        name = retracker()
        src_open, out_open = retracked_openings(source, output, name, *((track, out_track) if name == "mediapipe" else ()))
    has_class = column(emotion) is not None
    return ClipScore(Path(clip).stem, emotion, intensity,
                     before.prob_of(emotion) if has_class and before else None,
                     after.prob_of(emotion) if has_class and after else None,
                     before.label if before else "–", after.label if after else "–",
                     mouth_correlation(src_open, out_open), peak_ratio(src_open, out_open), after.frames if after else 0,
                     au_readback(track, out_track), top1_margin(after.mean, canonical(emotion)) if has_class and after else None,
                     drawn_r, drawn_peak)


def summary_rows(scores: list[ClipScore], where: str) -> list[BenchRow]:
    """Per emotion: mean P(target) rise, clips with target top-1, worst mouth r and peak ratio."""
    rows = []
    for emotion in dict.fromkeys(s.emotion for s in scores):
        group = [s for s in scores if s.emotion == emotion]
        n = len(group)
        rises = [s.rise for s in group if s.rise is not None]
        rs = np.array([s.mouth_r for s in group])
        peaks = np.array([s.peak_ratio for s in group])
        mouth = (f"mouth r min {np.nanmin(rs):.3f} mean {np.nanmean(rs):.3f}; peak ratio {np.nanmin(peaks):.2f}–{np.nanmax(peaks):.2f}"
                 + drawn_summary([s.drawn_r for s in group], [s.drawn_peak for s in group]))
        legend = ("top-1 before→after, " + ("P(target) − best other after, " if rises else "")
                  + "mouth r/peak ratio re-tracked, then as drawn")
        mouth += f"; AU read-back {readback_summary(group)}; per clip ({legend}): {per_clip(group)}"
        if rises:
            hits = sum(s.hit for s in group)
            rows.append(BenchRow(AREA, f"{emotion}: mean rise of P({emotion}), {where}", float(np.mean(rises)), "ΔP",
                                 f"target top-1 after edit on {hits}/{n} clips; {mouth}"))
        else:
            rows.append(BenchRow(AREA, f"{emotion}: re-tracked mouth r (no FER-2013 class), {where}", float(np.nanmin(rs)), "r (min)",
                                 mouth))
    return rows


def top1_margin(probabilities: dict[str, float], emotion: str) -> float:
    """P(``emotion``) minus the strongest other class's: how far the target is from losing (> 0) or winning
    (< 0) the top-1 place; a count of top-1 clips hides that a clip sits on 0.01 of probability."""
    return probabilities[emotion] - max(p for label, p in probabilities.items() if label != emotion)


def per_clip(group: list[ClipScore]) -> str:
    """Which clips the numbers come from: 'd3 sad→sad +0.12 0.93/1.02 (drawn 0.99/1.00), d9 neutral→sad +0.03
    0.97/0.95 (drawn 1.00/1.01)' (top-1 before→after, :func:`top1_margin` after, mouth r / peak ratio re-tracked,
    then as drawn: a reader sees the misses and the near misses, and whether a mouth miss is in the picture or
    in the tracker's reading of it)."""
    return ", ".join(f"{s.clip} {s.top_source}→{s.top_output}{'' if s.margin is None else f' {s.margin:+.2f}'} "
                     f"{s.mouth_r:.2f}/{s.peak_ratio:.2f}{_drawn_pair(s.drawn_r, s.drawn_peak)}" for s in group)


def _drawn_pair(r: float | None, peak: float | None) -> str:
    """' (drawn 0.99/1.00)': r / peak ratio as drawn ('–' for an undefined one; '' when both are)."""
    if r is None and peak is None:
        return ""
    return " (drawn " + "/".join("–" if v is None else f"{v:.2f}" for v in (r, peak)) + ")"


def drawn_summary(rs: list[float | None], peaks: list[float | None]) -> str:
    """'; as drawn (picture, no tracker): mouth r min 0.990, peak ratio 0.98–1.03' over the clips where each is
    defined ('' when neither is)."""
    r = [v for v in rs if v is not None]
    peak = [v for v in peaks if v is not None]
    parts = ([f"mouth r min {min(r):.3f}"] if r else []) + ([f"peak ratio {min(peak):.2f}–{max(peak):.2f}"] if peak else [])
    return f"; as drawn (picture, no tracker): {', '.join(parts)}" if parts else ""


def readback_summary(group: list[ClipScore]) -> str:
    """Mean re-tracked AU read-back of a group of clips, the AUs of the emotion's recipe first: 'AU9 0.52, AU10 0.31'."""
    from spfem_cli.backends.warp.facs import EMOTION_AUS

    names = dict.fromkeys([*EMOTION_AUS.get(group[0].emotion, {}), *(a for s in group for a in s.readback)])
    means = {a: float(np.mean([s.readback.get(a, 0.0) for s in group])) for a in names}
    shown = [f"{a} {v:.2f}" for a, v in means.items() if v >= 0.05]
    return ", ".join(shown[:6]) or "none"


def sample_clip(workdir: Path) -> Path:
    from spfem_cli.demo.sample import make_talking_clip

    return make_talking_clip(Path(workdir) / "sample.mp4", seconds=CLIP_SECONDS, fps=25).path


def score_all(clips: list[Path], emotions: tuple[str, ...], workdir: Path, *, intensity: float | None = None,
              log=None) -> list[ClipScore]:
    scores = []
    for clip in clips:
        for emotion in emotions:
            s = score(clip, emotion, workdir, intensity=intensity)
            scores.append(s)
            if log is not None:
                log(s)
    return scores


def recogniser_speed() -> BenchRow:
    """CPU ms per face of crop + classification on one thread (40 faces of the astronaut; CPU time, so a busy
    machine does not inflate it). The network runs in NumPy: BLAS and OpenCV are held to one thread."""
    import time

    import cv2
    from skimage import data
    from threadpoolctl import threadpool_limits

    from spfem_cli.benchmarks.runner import timeit
    from spfem_cli.face.expression import ExpressionRecognizer, face_crop
    from spfem_cli.face.tracking.mediapipe_tracker import MediaPipeTracker

    frame = data.astronaut()
    with MediaPipeTracker() as tracker:
        landmarks = tracker.detect(frame)[0].landmarks
    recognizer = ExpressionRecognizer()
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(1):
            sec = timeit(lambda: recognizer.classify(np.stack([face_crop(frame, landmarks) for _ in range(40)])), repeat=5,
                         clock=time.process_time)
    finally:
        cv2.setNumThreads(threads)
    return BenchRow(AREA, "FER-2013 recogniser: fer crop + mini-Xception (NumPy), 1 CPU thread", sec / 40 * 1000, "CPU ms/face",
                    "batch of 40 (the edit report's sample); 512x512 frame")


def noop_row(clips: list[Path], workdir: Path, where: str) -> BenchRow:
    """The mouth measures' floor: each clip decoded and re-encoded as an edit writes it (no edit), then
    re-tracked. What the rows above lose beyond this is the edits', not the codec's or the tracker's."""
    from spfem_cli.evaluate.landmarks import mouth_correlation, peak_ratio
    from spfem_cli.face.preprocess import cached_track
    from spfem_cli.video import VideoWriter, iter_chunks, probe

    rs, peaks, drawn_rs, drawn_peaks = [], [], [], []
    for clip in clips:
        source = trimmed(clip, workdir)
        copy = Path(workdir) / f"{source.stem}.reencoded.mp4"
        with VideoWriter(copy, probe(source).fps, audio_from=source, preset="veryfast", overwrite=True) as writer:
            for chunk in iter_chunks(source):
                writer.write(chunk.frames)
        a, b = retracked_openings(source, copy, retracker())
        rs.append(mouth_correlation(a, b))
        peaks.append(peak_ratio(a, b))
        r, peak = drawn_measures(source, copy, cached_track(source, "mediapipe", progress=False))
        drawn_rs.append(r)
        drawn_peaks.append(peak)
    return BenchRow(AREA, f"no edit (decode, re-encode, re-track): mouth r, {where}", float(np.nanmin(rs)), "r (min)",
                    f"mouth r min {np.nanmin(rs):.3f} mean {np.nanmean(rs):.3f}; peak ratio {np.nanmin(peaks):.2f}–{np.nanmax(peaks):.2f}"
                    + drawn_summary(drawn_rs, drawn_peaks))


REFERENCE_CLIP = "d0"    # a tuning clip of another person breaking into a broad grin: what --reference should carry


def reference_label(reference: Path, workdir: Path) -> str:
    """The expression the recogniser reads in the reference clip's first CLIP_SECONDS: its most probable
    label other than neutral (a reference that holds a grin for half its frames averages to "neutral"
    first; neutral is the absence of what --reference carries)."""
    from spfem_cli.face.expression import ExpressionRecognizer, frames_at, labels, sample_indices
    from spfem_cli.face.preprocess import cached_track

    clip = trimmed(reference, workdir)
    track = cached_track(clip, "mediapipe", progress=False)
    frames, idx = frames_at(clip, sample_indices(track.valid, SAMPLES))
    mean = ExpressionRecognizer().probabilities(frames, track, idx).mean(axis=0)
    names = labels()
    return max((n for n in names if n != "neutral"), key=lambda n: mean[names.index(n)])


def reference_rows(clips: list[Path], workdir: Path, where: str) -> list[BenchRow]:
    """``--reference`` of :data:`REFERENCE_CLIP` (another person) onto each clip: does the output take on
    the label the reference reads as? Same measures as the emotion rows; none when the clip is absent."""
    reference = DEFAULT_CLIPS_DIR / f"{REFERENCE_CLIP}.mp4"
    if not reference.is_file() or any(c.resolve() == reference.resolve() for c in clips):
        return []
    label = reference_label(reference, workdir)
    scores = [score(clip, label, workdir, reference=trimmed(reference, workdir)) for clip in clips]
    rows = summary_rows(scores, where)
    return [BenchRow(r.area, f"--reference {REFERENCE_CLIP} (reads '{label}'): {r.what}", r.value, r.unit, r.note) for r in rows]


def run() -> list[BenchRow]:
    name = retracker()                 # a missing re-tracker weight stops the run here, before any work
    rows = [recogniser_speed()]
    clips = bench_clips()
    with tempfile.TemporaryDirectory() as tmp:
        if clips:
            where = f"{len(clips)} real clips, first {CLIP_SECONDS:g} s ({','.join(c.stem for c in clips)})"
        else:
            clips = [sample_clip(Path(tmp))]
            where = "bundled sample only (no real clips: set SPFEM_BENCH_CLIPS)"
        if name != "mediapipe":
            where += f", mouths re-tracked with {name}"
        scores = score_all(clips, EMOTIONS, Path(tmp))
        rows += summary_rows(scores, where) + [noop_row(clips, Path(tmp), where)] + reference_rows(clips, Path(tmp), where)
        # The same at the strongest intensity: what a user trades for a stronger read (the speech's mouth numbers).
        from spfem_cli.edit.targets import MAX_INTENSITY

        strongest = score_all(clips, JUDGED_EMOTIONS, Path(tmp), intensity=MAX_INTENSITY)
        rows += summary_rows(strongest, f"{where}, at --intensity {MAX_INTENSITY:g} (the strongest)")
    return rows


def as_dict(s: ClipScore) -> dict:
    return {**asdict(s), "rise": s.rise, "hit": s.hit}
