"""Orchestration of ``spfem eval``: plan → (generate) → per-video features (cached) → metrics → reports.

Per-video work (face crops, FAD/CSIM embeddings of every frame, LSE) is cached under
``<out>/cache/<hash>.npz``; the hash covers the video's path, size and mtime and every setting that
changes the numbers, so an interrupted run resumes where it stopped and a changed file is redone.
Edits generated with ``--backend`` are skipped when their output already exists.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from spfem_cli.errors import SpfemError
from spfem_cli.evaluate import csim as csim_mod
from spfem_cli.evaluate.embedders import EvalModels
from spfem_cli.evaluate.faces import CropMode, TrackArrays, face_chunks
from spfem_cli.evaluate.fad import fad
from spfem_cli.evaluate.lse import AUDIO_RATE, LipEmbedder, get_preset, resample_counts, score
from spfem_cli.evaluate.protocol import PROTOCOLS, SPLIT_SEED, Job, Plan, build_plan
from spfem_cli.evaluate.report import EMOTION_METRICS, METRICS, write_reports

CACHE_VERSION = 2


@dataclass(frozen=True)
class EvalConfig:
    dataset: str
    root: Path
    out: Path
    generated: Path | None = None
    backend: str | None = None
    crop: CropMode = "track"
    lse_preset: str = "spfem-ned"
    device: str = "auto"
    actors: tuple[str, ...] | None = None
    max_sources: int | None = None
    seed: int = SPLIT_SEED
    renderers: Path | None = None   # ned backend: one actor renderer per test actor, DIR/<actor>/


@dataclass
class VideoFeatures:
    fad: np.ndarray          # (T_valid, 512)
    csim: np.ndarray         # (T_valid, 1024)
    lse: dict | None         # lse_d, lse_c, av_offset, n_windows (None when not computed)
    emotion: np.ndarray | None = None   # (T_valid, 7) FER-2013 probabilities (None: recogniser not installed)


def _cache_key(video: Path, settings: dict) -> str:
    stat = video.stat()
    blob = json.dumps({"v": CACHE_VERSION, "path": str(video.resolve()), "size": stat.st_size,
                       "mtime": stat.st_mtime_ns, **settings}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def video_features(video: Path, models: EvalModels, *, preset: str = "spfem-ned", crop: CropMode = "track",
                   want_lse: bool = True, audio_from: Path | None = None, cache_dir: Path | None = None,
                   track: TrackArrays | None = None, first_face: int = 0) -> VideoFeatures:
    """FAD and CSIM embeddings of every face frame from ``first_face`` on, and LSE of the clip, with an
    on-disk cache. ``first_face`` = the preset's skip for generated videos under ``spfem-ned``: CDRL
    scores NED's frames, which begin at source frame 2 (its renderer conditions on two frames before)."""
    from spfem_cli.video import AtomicOutput, probe, read_audio

    video = Path(video)
    settings = {"preset": preset, "crop": crop, "lse": want_lse, "audio": str(audio_from), "models": models.identity,
                "first_face": first_face}
    cached = cache_dir / f"{_cache_key(video, settings)}.npz" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        with np.load(cached, allow_pickle=False) as data:
            lse = json.loads(str(data["lse"])) if want_lse else None
            if "emotion" in data.files or _recognizer() is None:   # a cache from before the column is redone
                emotion = data["emotion"] if "emotion" in data.files else None
                return VideoFeatures(data["fad"], data["csim"], lse, emotion)
    lse_preset = get_preset(preset)
    info = probe(video)
    fad_rows, csim_rows, emotion_rows = [], [], []
    recognizer = _recognizer()
    lips = LipEmbedder(models.sync, device=models.device) if want_lse else None
    skip = lse_preset.skip_frames
    for chunk in face_chunks(video, lse_preset, crop=crop, track=track):
        faces = chunk.faces[chunk.valid & (np.arange(chunk.start, chunk.start + len(chunk.valid)) >= first_face)]
        if len(faces):
            fad_rows.append(models.fad.embed(faces))
            csim_rows.append(models.csim.embed(faces))
            if recognizer is not None:
                emotion_rows.append(recognizer.probabilities_aligned(faces))
        if lips is not None:
            counts = resample_counts(chunk.start, len(chunk.lips), info.fps, lse_preset.fps)
            stream = np.repeat(chunk.lips, counts, axis=0)
            if skip:
                drop = min(skip, len(stream))
                stream, skip = stream[drop:], skip - drop
            lips.add(stream)
    lse = None
    if lips is not None:
        source = audio_from or video
        try:
            audio = read_audio(source, AUDIO_RATE)
        except SpfemError as exc:
            raise SpfemError(f"LSE needs audio: {exc}") from None
        result = score(models.sync, lips, audio, lse_preset, device=models.device)
        lse = result.as_dict() if result is not None else None
    feats = VideoFeatures(_stack(fad_rows, 512), _stack(csim_rows, 1024), lse,
                          _stack(emotion_rows, 7) if recognizer is not None else None)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with AtomicOutput(cached) as tmp, open(tmp, "wb") as fh:
            extra = {"emotion": feats.emotion} if feats.emotion is not None else {}
            np.savez(fh, fad=feats.fad, csim=feats.csim, lse=json.dumps(lse), **extra)
    return feats


def _recognizer():
    """The FER-2013 recogniser for the emotion-accuracy column; None when its package is not installed."""
    from spfem_cli.face.expression import ExpressionRecognizer
    from spfem_cli.weights import WeightsError

    try:
        return ExpressionRecognizer()
    except WeightsError:
        return None


def emotion_accuracy(videos: list[np.ndarray | None], emotion: str) -> float | None:
    """Share of videos whose mean FER-2013 probabilities have ``emotion`` on top (EAMM/EAT's emotion accuracy);
    None when the recogniser has no such class or did not run."""
    from spfem_cli.face.expression import column

    col = column(emotion)
    means = [v.mean(0) for v in videos if v is not None and len(v)]
    return float(np.mean([m.argmax() == col for m in means])) if col is not None and means else None


def _stack(rows: list[np.ndarray], dim: int) -> np.ndarray:
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)


def actor_renderers(plan: Plan, renderers: Path | None) -> dict[str, Path]:
    """The ned backend's person-specific renderer of every source actor (``renderers/<actor>/``), checked
    before any edit runs so a long generation does not stop half-way for a missing actor."""
    from models.ned_renderer import find_ned_file

    actors = sorted({job.source.actor for job in plan.jobs})
    if renderers is None:
        raise SpfemError("--backend ned needs --renderers DIR with one actor renderer per test actor "
                         f"(DIR/<actor>/latest_net_G.pth from `spfem train-renderer`): {', '.join(actors)}")
    lacking = [a for a in actors if find_ned_file(Path(renderers) / a, "G") is None]
    if lacking:
        raise SpfemError(f"no actor renderer in {renderers} for {', '.join(lacking)} "
                         "(train one per actor: spfem train-renderer VIDEO --out DIR/<actor>)")
    return {a: Path(renderers) / a for a in actors}


def generate_missing(plan: Plan, generated: Path, backend: str, *, renderers: Path | None = None,
                     device: str = "auto") -> list[Path]:
    """Run the edit pipeline for every job whose output is not there yet (resumable)."""
    try:
        from spfem_cli.edit.pipeline import EditRequest, edit_video
        from spfem_cli.edit.targets import EditTarget
    except ImportError as exc:
        raise SpfemError(f"--backend {backend} needs the edit pipeline (spfem_cli.edit.pipeline), "
                         f"which is not available here ({exc}); pass --generated DIR instead") from None
    per_actor = actor_renderers(plan, renderers) if backend == "ned" else {}
    made = []
    for job in plan.jobs:
        target = generated / job.relpath
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        # Reference-guided edit: the reference clip of the target emotion carries the expression (§3 protocol).
        edit_video(EditRequest(job.source.video, target, EditTarget(reference=job.reference.video), backend=backend,
                               progress=False, renderer=per_actor.get(job.source.actor), device=device,
                               perceive=False))   # the evaluation reads the emotion itself (emotion_acc)
        made.append(target)
    return made


def _source_audio(job: Job) -> Path:
    """Sound for an edit written without audio: the source's separate track (MEAD) or its video."""
    return job.source.audio or job.source.video


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def aggregate(plan: Plan, real: dict[tuple[str, str], VideoFeatures],
              generated: dict[Job, VideoFeatures]) -> dict:
    """Per protocol and emotion: FAD (pooled frames over actors), CSIM (per actor, then mean), mean LSE."""
    out: dict = {}
    for protocol in PROTOCOLS:
        per_emotion = {}
        for emotion in plan.emotions:
            jobs = [j for j in generated if j.protocol == protocol and j.target == emotion]
            if not jobs:
                continue
            actors = list(dict.fromkeys(j.actor for j in jobs))   # test-actor order: CSIM's draw order
            real_fad = [real[(a, emotion)].fad for a in actors if (a, emotion) in real]
            gen_fad = [generated[j].fad for j in jobs]
            r, g = _stack(real_fad, 512), _stack(gen_fad, 512)
            per_actor = {}
            for actor in actors:
                rc = real[(actor, emotion)].csim if (actor, emotion) in real else np.zeros((0, 1024))
                gc = _stack([generated[j].csim for j in jobs if j.actor == actor], 1024)
                if len(rc) and len(gc):
                    per_actor[actor] = (rc, gc)
            lses = [generated[j].lse for j in jobs if generated[j].lse]
            per_emotion[emotion] = {
                "fad": fad(r, g) if len(r) >= 2 and len(g) >= 2 else None,
                "lse_d": _mean([x["lse_d"] for x in lses]),
                "csim": csim_mod.csim(per_actor) if per_actor else None,
                "lse_c": _mean([x["lse_c"] for x in lses]),
                "n_videos": len(jobs),
                "emotion_acc": emotion_accuracy([generated[j].emotion for j in jobs], emotion),
                # the recogniser on the data set's own clips of this emotion: the ceiling of emotion_acc
                "emotion_acc_real": emotion_accuracy([row[None] for a in actors if (a, emotion) in real
                                                      and real[(a, emotion)].emotion is not None
                                                      for row in real[(a, emotion)].emotion], emotion),
                "n_real_frames": int(len(r)),
                "n_generated_frames": int(len(g)),
            }
        avg = {key: _mean([m[key] for m in per_emotion.values()]) for key, _ in METRICS}
        avg.update({key: _mean([m[key] for m in per_emotion.values()]) for key, _ in EMOTION_METRICS})
        avg["n_videos"] = sum(m["n_videos"] for m in per_emotion.values())
        if per_emotion:
            out[protocol] = {"per_emotion": per_emotion, "avg": avg}
    return out


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for pkg in ("spfem", "torch", "numpy", "scipy", "av"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def evaluate_dataset(cfg: EvalConfig, models: EvalModels | None = None, *, progress: bool = True) -> tuple[dict, dict]:
    """Run the whole protocol; returns (results, written report paths)."""
    from rich.progress import Progress

    from spfem_cli.video import probe

    if (cfg.generated is None) == (cfg.backend is None):
        raise SpfemError("pass exactly one of --generated DIR (evaluate existing edits) or --backend warp|ned")
    plan = build_plan(cfg.dataset, cfg.root, actors=cfg.actors, max_sources=cfg.max_sources, seed=cfg.seed)
    generated_dir = Path(cfg.generated) if cfg.generated is not None else Path(cfg.out) / "generated"
    if cfg.backend is not None:
        generate_missing(plan, generated_dir, cfg.backend, renderers=cfg.renderers, device=cfg.device)
    present = [j for j in plan.jobs if (generated_dir / j.relpath).is_file()]
    missing = len(plan.jobs) - len(present)
    if not present:
        example = plan.jobs[0].relpath if plan.jobs else "inter-id/<actor>/<emotion>/<source key>.mp4"
        raise SpfemError(f"no generated videos under {generated_dir} (expected e.g. {example}); "
                         "see `spfem eval --help` for the layout")
    notes = list(plan.notes) + ([f"{missing} of {len(plan.jobs)} generated videos missing; evaluated the rest"]
                                if missing else [])
    if models is None:
        from spfem_cli.device import pick_device
        from spfem_cli.evaluate.embedders import load_eval_models

        models = load_eval_models(pick_device(cfg.device))
    cache = Path(cfg.out) / "cache"
    real_clips = [(k, c) for k, clips in plan.real.items() for c in clips]
    real: dict[tuple[str, str], list[VideoFeatures]] = defaultdict(list)
    generated: dict[Job, VideoFeatures] = {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("evaluating videos", total=len(real_clips) + len(present))
        for key, clip in real_clips:
            real[key].append(video_features(clip.video, models, preset=cfg.lse_preset, crop=cfg.crop,
                                            want_lse=False, cache_dir=cache))
            bar.advance(task)
        for job in present:
            path = generated_dir / job.relpath
            generated[job] = video_features(path, models, preset=cfg.lse_preset, crop=cfg.crop, cache_dir=cache,
                                            audio_from=None if probe(path).has_audio else _source_audio(job),
                                            first_face=get_preset(cfg.lse_preset).skip_frames)
            bar.advance(task)
    real_merged = {k: VideoFeatures(_stack([v.fad for v in vs], 512), _stack([v.csim for v in vs], 1024), None,
                                    _stack([v.emotion.mean(0, keepdims=True) for v in vs   # one row per clip
                                            if v.emotion is not None and len(v.emotion)], 7))
                   for k, vs in real.items()}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    results = {
        "dataset": cfg.dataset,
        "lse_preset": cfg.lse_preset,
        "protocols": aggregate(plan, real_merged, generated),
        "config": config,
        "split_seed": plan.split_seed,
        "csim": {"max_frames": csim_mod.MAX_FRAMES, "seed": csim_mod.SEED},
        "counts": {"real_videos": len(real_clips), "generated_videos": len(present), "jobs": len(plan.jobs)},
        "notes": notes,
        "versions": _versions(),
    }
    return results, write_reports(results, Path(cfg.out), stem=f"eval_{cfg.dataset}")
