"""`spfem preprocess`: track, align and crop a video's face once, cached by content hash.

A cache entry lives in ``$SPFEM_HOME/cache/preprocess/<video sha256>-<config hash>/`` and holds
``track.npz``/``track.json`` (the :class:`FaceTrack`), ``aligned.mp4`` (256² crops, one per frame,
black where there is no face, original audio), ``debug.mp4`` (landmarks drawn) and ``manifest.json``.
The manifest records the video hash, the resolved config and its hash, the files with their sizes,
and which stages completed; it is written last, atomically, so it is the completion marker.
A second run with the same content and config copies the entry and tracks nothing. The edit
pipeline reuses only the track through :func:`cached_track` (another emotion, no re-tracking).

Only the standard library is imported at module level: the CLI reads :class:`PreprocessConfig`
for its defaults and ``spfem --help`` must stay fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from spfem_cli.face.tracking.base import FaceTrack

# Bump when the track/crop format or the tracking code changes meaning (2: + mesh; 3: mirrored-EXIF photos
# decoded upright; 4: + the eyeglass bridge line; 5: the bridge line read by a line filter).
CACHE_VERSION = 5
OUTPUT_FILES = ("track.npz", "track.json", "aligned.mp4", "debug.mp4")
OUTPUT_FILES_3D = ("debug3d.mp4",)       # + reconstruct-<hash>.npz (named by content, never clobbered)
# Registry weights of `preprocess --3d` (DECA reconstruction and the 3D debug renders), checked up front.
WEIGHTS_3D = ("flame_generic", "flame_landmark_embedding", "deca_model", "deca_head_template",
              "deca_uv_face_eye_mask", "deca_fixed_displacement")


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that changes the result; its hash is half of the cache key."""

    tracker: str = "mediapipe"   # mediapipe (embedded) | fan (needs fan_2d68 + s3fd weights)
    face_index: int = 0          # 0 = largest face, N = N-th largest when (re)acquired
    aligned_size: int = 256


@dataclass
class PreprocessResult:
    out_dir: Path
    files: dict[str, Path]
    cached: bool                 # True when nothing was tracked or encoded this time
    frames: int
    valid_frames: int
    manifest: dict = field(default_factory=dict)


def content_hash(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of the file's bytes (the same video under another name hits the cache)."""
    from spfem_cli.weights import sha256_of

    return sha256_of(path, chunk)


def _resolved_config(config: PreprocessConfig) -> dict:
    from spfem_cli.face.tracking.temporal import TemporalConfig

    return {"cache_version": CACHE_VERSION, **asdict(config), "temporal": asdict(TemporalConfig())}


def config_hash(config: PreprocessConfig) -> str:
    text = json.dumps(_resolved_config(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_root() -> Path:
    from spfem_cli.weights import spfem_home

    return spfem_home() / "cache" / "preprocess"


def cache_entry(video_sha: str, config: PreprocessConfig) -> Path:
    return cache_root() / f"{video_sha[:24]}-{config_hash(config)}"


def _read_manifest(entry: Path, config: PreprocessConfig) -> dict | None:
    """The entry's manifest if it belongs to ``config`` and every file it lists is intact."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("config_hash") != config_hash(config):
        return None
    for name, size in manifest.get("files", {}).items():
        path = entry / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return manifest


def _write_manifest(entry: Path, manifest: dict) -> None:
    from spfem_cli.video import AtomicOutput

    manifest["files"] = {name: (entry / name).stat().st_size for name in manifest["stages_files"]
                         if (entry / name).is_file()}
    with AtomicOutput(entry / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _new_manifest(video: Path, video_sha: str, config: PreprocessConfig) -> dict:
    from importlib import metadata

    try:
        version = metadata.version("spfem")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"video": str(video), "video_sha256": video_sha, "config": _resolved_config(config),
            "config_hash": config_hash(config), "spfem_version": version, "complete": {}, "stages_files": []}


def cached_track(video: Path, tracker: str = "mediapipe", face_index: int = 0, progress: bool = True) -> FaceTrack:
    """The video's :class:`FaceTrack`, from the cache when this content was tracked with this config."""
    return _ensure_track(Path(video), PreprocessConfig(tracker=tracker, face_index=face_index), progress)[0]


def find_cached_track(video: Path, tracker: str = "mediapipe", face_index: int = 0) -> FaceTrack | None:
    """The cached track of this content and config, or None; tracks nothing (the warp edit's first run
    tracks inside its rendering pass and stores the result with :func:`store_track`)."""
    from spfem_cli.face.tracking.base import FaceTrack

    config = PreprocessConfig(tracker=tracker, face_index=face_index)
    entry = cache_entry(content_hash(video), config)
    manifest = _read_manifest(entry, config)
    return FaceTrack.load(entry / "track.npz") if manifest is not None and manifest["complete"].get("track") else None


def store_track(video: Path, track: FaceTrack, tracker: str = "mediapipe", face_index: int = 0) -> None:
    """Cache a track made outside this module, exactly as :func:`cached_track` would have."""
    config = PreprocessConfig(tracker=tracker, face_index=face_index)
    video_sha = content_hash(video)
    _store_track(video, video_sha, cache_entry(video_sha, config), config, track)


def _store_track(video: Path, video_sha: str, entry: Path, config: PreprocessConfig, track: FaceTrack) -> dict:
    entry.mkdir(parents=True, exist_ok=True)
    track.save(entry / "track.npz")
    manifest = _new_manifest(video, video_sha, config)
    manifest["complete"]["track"] = True
    manifest["stages_files"] = ["track.npz", "track.json"]
    _write_manifest(entry, manifest)
    return manifest


def _ensure_track(video: Path, config: PreprocessConfig, progress: bool) -> tuple[FaceTrack, Path, dict, bool]:
    from spfem_cli.face.tracking.base import FaceTrack
    from spfem_cli.face.tracking.track import track_video
    from spfem_cli.video import probe

    probe(video)                                  # unreadable input fails before any work
    video_sha = content_hash(video)
    entry = cache_entry(video_sha, config)
    manifest = _read_manifest(entry, config)
    if manifest is not None and manifest["complete"].get("track"):
        return FaceTrack.load(entry / "track.npz"), entry, manifest, True
    track = track_video(video, config.tracker, face_index=config.face_index, progress=progress)
    return track, entry, _store_track(video, video_sha, entry, config, track), False


def draw_debug(frame: np.ndarray, track: FaceTrack, index: int) -> np.ndarray:
    """Frame with the box, the 68 landmarks, the pupils and the frame's state written on it."""
    import cv2
    import numpy as np

    out = frame.copy()
    h, w = out.shape[:2]
    radius = max(1, round(min(h, w) / 300))
    font = max(0.4, min(h, w) / 900)
    if track.valid[index]:
        x0, y0, x1, y1 = np.round(track.boxes[index]).astype(int)
        cv2.rectangle(out, (x0, y0), (x1, y1), (60, 120, 255), radius)
        colour = (255, 200, 0) if track.interpolated[index] else (0, 255, 0)
        for x, y in np.round(track.landmarks[index]).astype(int):
            cv2.circle(out, (x, y), radius, colour, -1, cv2.LINE_AA)
        for x, y in np.round(track.pupils[index]).astype(int):
            cv2.circle(out, (x, y), radius + 1, (255, 0, 0), -1, cv2.LINE_AA)
        state = "interpolated" if track.interpolated[index] else "tracked"
    else:
        state = "no face"
    if track.cuts[index]:
        state += " | cut"
    cv2.putText(out, f"{index} {state}", (8, int(24 * font / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, font,
                (255, 255, 255), max(1, radius), cv2.LINE_AA)
    return out


def _write_media(video: Path, track: FaceTrack, entry: Path, size: int, progress: bool) -> None:
    """One decode pass writing the aligned crops and the debug video into the cache entry."""
    import numpy as np

    from spfem_cli.face.align import warp_to_aligned
    from spfem_cli.progress import frame_progress
    from spfem_cli.video import VideoWriter, iter_chunks

    with frame_progress(progress, len(track), "aligned crops + debug video") as advance, \
            VideoWriter(entry / "aligned.mp4", track.fps, audio_from=video, overwrite=True) as aligned, \
            VideoWriter(entry / "debug.mp4", track.fps, audio_from=video, overwrite=True) as debug:
        for chunk in iter_chunks(video):
            crops = np.zeros((len(chunk.frames), size, size, 3), np.uint8)
            drawn = np.empty_like(chunk.frames)
            for j, frame in enumerate(chunk.frames):
                i = chunk.start + j
                if i < len(track) and track.valid[i]:
                    crops[j] = warp_to_aligned(frame, track.transforms[i] * (size / 256.0), size)
                drawn[j] = draw_debug(frame, track, i) if i < len(track) else frame
            aligned.write(crops)
            debug.write(drawn)
            advance(len(chunk.frames))


def _copy_atomic(src: Path, dst: Path) -> None:
    from spfem_cli.video import AtomicOutput

    with AtomicOutput(dst) as tmp:
        shutil.copyfile(src, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)    # mkstemp makes 0600; user outputs get the usual mode


def output_conflicts(out_dir: Path, names: tuple[str, ...]) -> list[Path]:
    """The files of ``names`` already in ``out_dir`` (what a run would replace)."""
    return [out_dir / n for n in names if (out_dir / n).exists()]


def check_out_dir(out_dir: Path, *, overwrite: bool, names: tuple[str, ...] = (*OUTPUT_FILES, "manifest.json")) -> None:
    """Refuse, before any work, an output folder that is a file, that holds results (without
    ``overwrite``) or that cannot be created (the nearest existing parent must be a writable folder)."""
    from spfem_cli.errors import SpfemError

    if out_dir.exists() and not out_dir.is_dir():
        raise SpfemError(f"output {out_dir} exists and is not a folder")
    existing = output_conflicts(out_dir, names) if out_dir.is_dir() else []
    if existing and not overwrite:
        raise SpfemError(f"{out_dir} already holds {', '.join(p.name for p in existing)} "
                         "(pass --overwrite to replace them, or choose another folder)")
    parent = out_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise SpfemError(f"cannot create {out_dir}: {parent} is not a writable folder")


def preprocess(video: Path, out_dir: Path, config: PreprocessConfig | None = None, *,
               progress: bool = True, overwrite: bool = False) -> PreprocessResult:
    """Track, align and crop ``video`` into ``out_dir`` (created with its parents if missing; files already
    there are replaced only with ``overwrite``)."""
    from spfem_cli.errors import SpfemError

    config = config or PreprocessConfig()
    video, out_dir = Path(video), Path(out_dir)
    if config.face_index < 0:
        raise SpfemError("--face must be 0 (largest face) or a positive index")
    if out_dir.resolve() == video.resolve().parent and any((out_dir / n).resolve() == video.resolve()
                                                            for n in OUTPUT_FILES):
        raise SpfemError(f"output {out_dir} would overwrite the input video")
    check_out_dir(out_dir, overwrite=overwrite)
    track, entry, manifest, cached = _ensure_track(video, config, progress)
    if not manifest["complete"].get("media"):
        cached = False
        _write_media(video, track, entry, config.aligned_size, progress)
        manifest["complete"]["media"] = True
        manifest["stages_files"] = list(OUTPUT_FILES)
        _write_manifest(entry, manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in OUTPUT_FILES:
        _copy_atomic(entry / name, out_dir / name)
        files[name] = out_dir / name
    # The cache entry is shared by every file with this content; this folder's manifest names this input.
    own = {**manifest, "video": str(video)}
    from spfem_cli.video import AtomicOutput

    with AtomicOutput(out_dir / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(own, indent=2, sort_keys=True) + "\n")
    files["manifest.json"] = out_dir / "manifest.json"
    return PreprocessResult(out_dir, files, cached, len(track), track.n_valid, own)
