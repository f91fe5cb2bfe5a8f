"""The `spfem` command line: thin Typer commands over library stages.

Every command turns :class:`~spfem_cli.errors.SpfemError` (bad input, missing weights, unreadable
video) into one red line and a non-zero exit; SIGINT (Ctrl-C) and SIGTERM print "interrupted" and exit
128 + the signal number after every stage removed its temporary files. ``--quiet``, ``--json`` and
``--version`` work before or after the command name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from spfem_cli.cli_output import emit, json_mode
from spfem_cli.cli_parsing import StrictValueGroup
from spfem_cli.edit.targets import DEFAULT_INTENSITY
from spfem_cli.errors import SpfemError
from spfem_cli.progress import console as make_console
from spfem_cli.progress import is_quiet, say
from spfem_cli.train.metric_config import CHOICES, RENDERER_STCCL_WEIGHT, AnalysisConfig, MetricTrainConfig

console = make_console()
app = typer.Typer(cls=StrictValueGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Speech-preserving facial expression manipulation: change the emotion of a "
                       "talking face, keep the speech and the audio.")
weights_app = typer.Typer(cls=StrictValueGroup, no_args_is_help=True, rich_markup_mode=None, help="Pretrained weights: list, fetch, verify, path.")
app.add_typer(weights_app, name="weights")
GLOBAL_FLAGS = ("--quiet", "-q", "--json", "--version")


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        try:
            version = metadata.version("spfem")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        print(f"spfem {version}")
        raise typer.Exit()


@app.callback()
def _global_options(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr: no progress, no summaries."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary of the result on stdout."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version, help="Print the version and exit."),
) -> None:
    """Options valid for every command (before or after the command name)."""
    from spfem_cli.cli_output import set_json
    from spfem_cli.progress import set_quiet

    set_quiet(quiet)
    set_json(json_out)


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table on stdout; names and paths are never cut (piped: as wide as needed)."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, no_wrap=col in ("name", "file"))
    for row in rows:
        table.add_row(*row)
    make_console(stderr=False).print(table)


# --------------------------------------------------------------------------- weights
@weights_app.command("list")
def weights_list() -> None:
    """Every weight spfem knows: its state here, where its file goes, access, licence, use."""
    from spfem_cli import weights

    rows = []
    for name, spec in weights.load_registry().items():
        access = ("bundled" if spec.bundled else "trained here" if spec.trained_here else
                  "gated" if spec.gated else "manual" if spec.manual else "fetch")
        file = "(inside its Python package)" if spec.bundled else str(weights.where(name))
        rows.append((name, weights.status(name), access, spec.licence, spec.used_by, file))
    columns = ("name", "state", "access", "licence", "used by", "file")
    if json_mode():
        emit({"weights": [dict(zip(columns, row, strict=True)) for row in rows]})
        return
    _table("spfem weights", columns, rows)


@weights_app.command("fetch")
def weights_fetch(
    names: list[str] = typer.Argument(None, help="Weight names; none = every public downloadable one."),
    from_file: Path | None = typer.Option(None, "--from", help="Install this local file under NAME instead of downloading."),
    force: bool = typer.Option(False, "--force", help="Download again even if a verified file is present."),
) -> None:
    """Download public weights (resumable, sha256-verified); gated ones say where to get them."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from spfem_cli import weights

    registry = weights.load_registry()
    if from_file is not None:
        if not names or len(names) != 1:
            raise SpfemError("--from needs exactly one weight name")
        path = weights.install_user_file(names[0], from_file)
        say(f"installed {names[0]} -> {path}")
        emit({"installed": {names[0]: path}})
        return
    chosen = names or [n for n, s in registry.items() if s.downloadable]
    failed = 0
    installed = {}
    for name in chosen:
        spec = weights.get_spec(name)
        if not spec.downloadable:
            console.print(f"[yellow]{name}[/]: {weights.how_to_get(spec)}")
            failed += 1
            continue
        with Progress("[bold]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=console, disable=is_quiet()) as progress:
            task = progress.add_task(name, total=spec.size)
            try:
                path = weights.fetch(name, force=force,
                                     progress=lambda done, total, t=task: progress.update(t, completed=done, total=total))
            except SpfemError as exc:
                console.print(f"[red]{name}[/]: {exc}")
                failed += 1
                continue
        say(f"[green]{name}[/] -> {path}")
        installed[name] = path
    emit({"installed": installed, "failed": failed})
    if failed:
        raise typer.Exit(1)


@weights_app.command("verify")
def weights_verify(names: list[str] = typer.Argument(None, help="Names; none = all present ones.")) -> None:
    """Check present files against their recorded sha256."""
    from spfem_cli import weights

    bad = 0
    results = []
    for name in names or list(weights.load_registry()):
        spec = weights.get_spec(name)
        path = weights.where(name)
        if spec.bundled or not path.is_file():
            if names:
                state = "bundled" if spec.bundled else "missing"
                results.append({"name": name, "state": state, "file": str(path)})
                say(f"{name}: {state if spec.bundled else 'missing — ' + weights.how_to_get(spec)}")
                bad += 0 if spec.bundled else 1
            continue
        result = weights.verify(spec, path)
        state = {True: "ok", False: "mismatch", None: "unverified"}[result]
        results.append({"name": name, "state": state, "file": str(path)})
        label = {True: "[green]ok[/]", False: "[red]MISMATCH[/]", None: "[yellow]unverified (no hash recorded)[/]"}
        say(f"{name}: {label[result]}  {path}")
        bad += result is False
    if not results:
        say(f"no weights installed (looked in {weights.weights_dir()} and {weights.torch_hub_checkpoints()}); "
            "`spfem weights list` shows them all, `spfem weights fetch` downloads the public ones")
    emit({"weights": results})
    if bad:
        raise typer.Exit(1)


@weights_app.command("path")
def weights_path(name: str) -> None:
    """Print where NAME is (or would be) stored."""
    from spfem_cli import weights

    path = weights.where(name)
    if json_mode():
        emit({"name": name, "file": path})
    else:
        print(path)


# --------------------------------------------------------------------------- doctor
@app.command()
def doctor() -> None:
    """What is installed, which weights are present, which device would run."""
    import importlib.metadata as md
    import platform

    from spfem_cli import weights
    from spfem_cli.device import pick_device

    rows = [("python", platform.python_version())]
    for pkg in ("torch", "numpy", "av", "opencv-python-headless", "mediapipe", "face-alignment",
                "syncnet-python", "librosa", "scipy", "typer", "rich"):
        try:
            rows.append((pkg, md.version(pkg)))
        except md.PackageNotFoundError:
            rows.append((pkg, "[red]not installed[/]"))
    others = sorted(d.metadata["Name"] for d in md.distributions()
                    if d.metadata["Name"].lower().startswith("opencv") and d.metadata["Name"] != "opencv-python-headless")
    if others:
        rows.append(("[red]conflicting OpenCV[/]", ", ".join(others)))
    rows.append(("device (auto)", str(pick_device("auto"))))
    from spfem_cli.backends.ned.backend import missing_model_weights
    from spfem_cli.face.tracking.track import auto_tracker

    missing = missing_model_weights()
    rows.append(("backend warp", "ready (embedded)"))
    rows.append(("backend ned", "ready: give --renderer DIR (spfem train-renderer)" if not missing
                  else f"[yellow]needs {', '.join(missing)}[/]"))
    rows.append(("tracker auto (ned)", auto_tracker()))
    rows.append(("SPFEM_HOME", str(weights.spfem_home())))
    for name in weights.load_registry():
        rows.append((f"weight {name}", weights.status(name)))
    if json_mode():
        from rich.text import Text

        emit({Text.from_markup(item).plain: Text.from_markup(state).plain for item, state in rows})
        return
    _table("spfem doctor", ("item", "state"), rows)


# --------------------------------------------------------------------------- pipeline commands
@app.command()
def preprocess(
    video: Path = typer.Argument(..., help="Input video."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (created with its parents if missing)."),
    tracker: str = typer.Option("mediapipe", "--tracker",
                                help="Landmark tracker: mediapipe (embedded) or fan "
                                     "(needs `spfem weights fetch fan_2d68 s3fd`)."),
    face: int = typer.Option(0, "--face", help="Which face: 0 = largest, N = N-th largest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results already in the output folder."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    with_3d: bool = typer.Option(False, "--3d/--no-3d", help="Also reconstruct per-frame DECA/FLAME coefficients (gated FLAME + DECA files)."),
    detail: bool = typer.Option(True, "--3d-detail/--no-3d-detail", help="Detailed shape (DECA detail normals) in the 3D debug video."),
    batch: int = typer.Option(16, "--3d-batch", help="Frames per DECA batch."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (3D reconstruction)."),
) -> None:
    """Track, align and crop the face of VIDEO into OUT: track.npz/json, aligned.mp4, debug.mp4.

    Cached by content hash: running it again on the same video and options is instant. With --3d, also
    OUT/reconstruct-<hash>.npz (DECA codes per frame) and OUT/debug3d.mp4 (mesh, NMFC, shape, gaze).
    """
    from spfem_cli import weights
    from spfem_cli.face.preprocess import OUTPUT_FILES, OUTPUT_FILES_3D, WEIGHTS_3D, PreprocessConfig, check_out_dir
    from spfem_cli.face.preprocess import preprocess as run_preprocess
    from spfem_cli.face.tracking.track import FAN_WEIGHTS, TRACKERS

    if tracker not in TRACKERS:
        raise SpfemError(f"unknown tracker '{tracker}'; choose one of: {', '.join(TRACKERS)}")
    needed = (FAN_WEIGHTS if tracker == "fan" else ()) + (WEIGHTS_3D if with_3d else ())
    weights.require(needed, f"preprocess{' --3d' if with_3d else ''}{' --tracker fan' if tracker == 'fan' else ''}")
    check_out_dir(out, overwrite=overwrite,
                  names=(*OUTPUT_FILES, "manifest.json", *(OUTPUT_FILES_3D if with_3d else ())))
    if with_3d and device != "auto":
        from spfem_cli.device import pick_device

        pick_device(device)
    progress = progress and not is_quiet()
    result = run_preprocess(video, out, PreprocessConfig(tracker=tracker, face_index=face), progress=progress,
                            overwrite=overwrite)
    state = "cached" if result.cached else "done"
    say(f"{state}: {result.valid_frames}/{result.frames} frames with a face -> {result.out_dir}")
    summary = {"out_dir": result.out_dir, "files": result.files, "cached": result.cached, "frames": result.frames,
               "valid_frames": result.valid_frames}
    if with_3d:
        from spfem_cli.backends.ned.reconstruct import reconstruct_video
        from spfem_cli.backends.ned.render3d import write_3d_debug_video
        from spfem_cli.face.preprocess import cached_track

        track = cached_track(video, tracker, face_index=face, progress=progress)
        recon = reconstruct_video(video, track, out, device, batch_size=batch, progress=progress)
        write_3d_debug_video(video, track, recon, out / "debug3d.mp4", device=device, detail=detail,
                             overwrite=overwrite)
        say(f"3D: {recon} and {out / 'debug3d.mp4'}")
        summary["files"] = {**result.files, "reconstruction": recon, "debug3d.mp4": out / "debug3d.mp4"}
    emit(summary)


@app.command()
def probe(video: Path = typer.Argument(..., help="A video file.")) -> None:
    """What spfem sees in VIDEO: size, rotation, frame rate (and whether it varies), frames, audio; for a
    photo (or a one-frame GIF), that it is a still picture, which `spfem edit` turns into a picture."""
    from dataclasses import asdict

    from spfem_cli.video import is_image_file
    from spfem_cli.video import probe as probe_video

    info = probe_video(video, timing=True)
    still = is_image_file(video)
    if json_mode():
        emit({**asdict(info), "still_picture": still})
        return
    turn = f"rotation {info.rotation}" + (", mirrored" if info.mirror else "")
    if still:     # FFmpeg gives a still a nominal rate (25, or 100 for a GIF) and no length: neither means anything
        print(f"{info.path}: {info.width}x{info.height}, {turn}, a still picture (spfem edit writes an edited picture)")
        return
    timing = {True: "variable frame rate (edits keep every frame's time)", False: "constant frame rate",
              None: "frame times not stored in the container"}[info.vfr]
    audio = f"{info.audio_codec} {info.audio_rate} Hz" if info.has_audio else "no audio"
    print(f"{info.path}: {info.width}x{info.height}, {turn}, {float(info.fps):.3f} fps average "
          f"({info.fps}), {timing}, {info.n_frames} frames, {info.duration:.3f} s, {audio}")


@app.command()
def edit(
    videos: list[Path] = typer.Argument(..., metavar="VIDEO",
                                        help="Input video(s) with a talking face (several: each is edited; shell globs "
                                             "work); a .jpg/.png photo gives a photo (.webp/.bmp/.tiff, a one-frame .gif: a .png)."),
    output: str | None = typer.Option(None, "-o", "--out", "--output", metavar="PATH",
                                      help="Edited video (.mp4, .mov or .mkv; .png/.jpg for a photo), or a folder (DIR/ or "
                                           "existing): DIR/<name>.<emotion>.mp4. Default: <name>.<emotion>.mp4 (a photo: "
                                           "<name>.<emotion>.jpg or .png, as the photo) next to the input."),
    emotion: str | None = typer.Option(None, "--emotion", "-e", help="Target emotion: neutral, happy, sad, surprised, fear, angry, disgusted, contempt."),
    reference: Path | None = typer.Option(None, "--reference", help="Take the expression of the face in this clip."),
    timeline: str | None = typer.Option(None, "--timeline", help='Emotions over time in seconds, e.g. "happy@0-3,sad@3-6".'),
    intensity: str = typer.Option(str(DEFAULT_INTENSITY), "--intensity", metavar="X|auto",
                                  help="Edit strength, 0 (none) to 1 (full); auto: the lowest at which the FER-2013 "
                                       "recogniser reads the output as --emotion (warp backend; capped at 1)."),
    backend: str = typer.Option("auto", "--backend", help="auto (ned when its weights and --renderer are present, else warp) | warp | ned."),
    renderer: Path | None = typer.Option(None, "--renderer", help="Actor renderer folder from `spfem train-renderer` (ned backend)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (ned backend; cuda without a GPU is refused)."),
    tracker: str = typer.Option("auto", "--tracker", help="auto (fan for ned when its weights are present, else mediapipe) | mediapipe (embedded) | fan."),
    face: int = typer.Option(0, "--face", help="Which face when several: 0 = largest, 1 = next, ..."),
    start: float | None = typer.Option(None, "--start", help="Edit only from this second on (quick previews; audio cut to match)."),
    end: float | None = typer.Option(None, "--end", help="Edit only up to this second."),
    side_by_side: str | None = typer.Option(None, "--side-by-side", metavar="PATH",
                                            help="Also write source | edited to this file (or DIR/: <name>.<emotion>.sbs.mp4)."),
    plot: str | None = typer.Option(None, "--plot", metavar="PATH",
                                    help="Write a PNG of source vs output mouth opening, re-tracked (or DIR/: <name>.<emotion>.mouth.png)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    allow_no_face: bool = typer.Option(False, "--allow-no-face", help="Copy the video through when no face is found."),
    crf: int = typer.Option(18, "--crf", help="H.264 quality: 0 lossless … 51 worst; 18 is visually lossless."),
    preset: str = typer.Option("medium", "--preset", help="x264 speed/size: ultrafast … veryslow (veryfast ≈ 2× faster encode, larger file)."),
) -> None:
    """Change the emotion of the talking face in VIDEO, keeping the speech and the audio.

    Several videos: each is edited in turn, one summary line each; a failing file does not stop the
    others and the exit status is 1 if any failed.
    """
    from spfem_cli.edit.auto_intensity import parse_intensity
    from spfem_cli.edit.naming import check_distinct, resolve_output
    from spfem_cli.edit.pipeline import EditRequest, edit_video
    from spfem_cli.edit.report import perception_lines
    from spfem_cli.edit.targets import EditTarget, parse_timeline
    from spfem_cli.video import is_image_file

    strength = parse_intensity(intensity)
    auto = strength is None
    target = EditTarget(emotion=emotion, reference=reference, timeline=parse_timeline(timeline) if timeline else (),
                        intensity=DEFAULT_INTENSITY if auto else strength)
    tag = target.emotion or ("reference" if reference else "timeline")
    several = len(videos) > 1
    requests = []
    for video in videos:
        requests.append(EditRequest(
            video, resolve_output(video, output, tag, several=several), target, backend=backend, tracker=tracker,
            face_index=face, overwrite=overwrite, allow_no_face=allow_no_face, renderer=renderer, device=device,
            crf=crf, preset=preset, start=start, end=end, progress=not is_quiet(), auto_intensity=auto,
            side_by_side=resolve_output(video, side_by_side, tag, kind="sbs", several=several) if side_by_side else None,
            # A mouth plot is over time: the photos of a batch get none (one photo asked for one is refused).
            plot=resolve_output(video, plot, tag, kind="plot", several=several)
            if plot and not (several and is_image_file(video)) else None))
    check_distinct([(path, r.input) for r in requests for path in (r.output, r.side_by_side, r.plot) if path is not None],
                   videos)
    results, failed = [], 0
    for request in requests:
        try:
            result = edit_video(request)
        except Exception as exc:  # noqa: BLE001 - in a batch one broken file must not stop the others
            if not several:
                raise
            failed += 1
            reason = str(exc) if isinstance(exc, SpfemError) else f"{exc.__class__.__name__}: {exc} (edit it alone for details)"
            console.print(f"[red]failed[/] {request.input}: {reason}")
            results.append({"input": request.input, "ok": False, "error": reason})
            continue
        say(edit_summary(result))
        for line in perception_lines(result, target.emotion):
            say(line)
        results.append({"input": request.input, "ok": True, **jsonable_result(result)})
    if several:
        say(f"{len(videos) - failed} of {len(videos)} edited" + (f", {failed} failed" if failed else ""))
    emit({"results": results, "failed": failed} if several else results[0])
    if failed:
        raise typer.Exit(1)


def jsonable_result(result) -> dict:
    """The edit result for --json, with the mouth correlations (re-tracked, as drawn) under their short names."""
    from spfem_cli.cli_output import jsonable

    data = jsonable(result)
    data["mouth_r"] = data.pop("mouth_correlation", None)
    data["drawn_r"] = data.pop("drawn_correlation", None)
    return data


def edit_summary(result) -> str:
    """One line per edited file: where it went, frames, rate, backend, and the extras written."""
    from spfem_cli.edit.report import mouth_summary
    from spfem_cli.video import is_image_file

    if is_image_file(result.output):
        what = "a photo, face found" if result.valid_frames else "a photo, no face found"
    else:
        what = f"{result.frames} frames, {result.valid_frames} with a face, {float(result.fps):.3f} fps"
    line = f"[green]wrote[/] {result.output}  ({what}, backend {result.backend})"
    if result.note:
        line += f"; {result.note}"
    if result.side_by_side:
        line += f"; side by side: {result.side_by_side}"
    if result.plot:
        line += f"; mouth plot: {result.plot} (source vs output {mouth_summary(result)})"
    return line


_MT = MetricTrainConfig()   # the single source of train-metric defaults
_MA = AnalysisConfig()      # ... and of analyze-metric defaults


def _require_weights(choices: tuple[str | None, ...], names: tuple[str, ...], purpose: str) -> None:
    """Before any work: every registry weight a command needs, from option values that may name one
    (``--meta``, ``--metric``, ``--backbone-weights``: a registry name, a file, ``none`` or ``auto``) and fixed names."""
    from spfem_cli import weights

    registry = weights.load_registry()
    files = [c for c in choices if c and c not in registry and c not in ("none", "auto") and not Path(c).exists()]
    try:
        weights.require((*(c for c in choices if c in registry), *names), purpose)
    except weights.WeightsError as e:
        raise weights.WeightsError(f"{e}; and file(s) not found: {', '.join(files)}" if files else str(e)) from None
    if files:
        raise SpfemError(f"{purpose}: file(s) not found: {', '.join(files)}")


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise SpfemError(f"{option} must be one of {', '.join(allowed)} (got {value!r})")
    return value


@app.command("train-metric")
def train_metric(
    dataset: str = typer.Option(_MT.dataset, "--dataset", help="mead | ravdess"),
    root: Path = typer.Option(..., "--root", help="Data-set root (MEAD: <actor>/video/front/...; RAVDESS: Actor_XX/...)."),
    out: Path = typer.Option(Path(_MT.out), "--out", "-o", help="Run folder: checkpoints, logs, stccl_metric.pt."),
    mode: str = typer.Option(_MT.mode, "--mode", help="spatial | temporal | joint"),
    steps: int = typer.Option(_MT.steps, "--steps", help="Optimiser steps in total (a resumed run continues to this)."),
    batch: int = typer.Option(_MT.batch, "--batch", help="Pairs per step (per process under torchrun)."),
    lr: float = typer.Option(_MT.lr, "--lr", help="Adam learning rate (all parameters incl. the backbone)."),
    tau: float = typer.Option(_MT.tau, "--tau", help="InfoNCE temperature."),
    context: int = typer.Option(_MT.context, "--context",
                                help="n: temporal windows of 2n+1 DTW-matched frames. Default 4 (9 frames) as the "
                                     "STCCL release trains and as train-translator uses the metric; 2 (5 frames) "
                                     "costs 5/9 of the backbone work."),
    temporal_pairs: str = typer.Option(_MT.temporal_pairs, "--temporal-pairs", help="all | adjacent frame pairs."),
    daas: bool = typer.Option(_MT.daas, "--daas/--no-daas", help="Disparity-aware adaptive weights (ablation switch)."),
    daas_variant: str = typer.Option(_MT.daas_variant, "--daas-variant",
                                     help="row (default, the paper: each disparity row weighted by 2·sigmoid(x)² "
                                          "before the mean, x from the target side) | released (the STCCL code: "
                                          "per element 2·sigmoid(|d|)² where sigmoid > 0.8 else 1, on the generated "
                                          "side, only its mean acts; no weight on the temporal term)."),
    temporal_positions: str = typer.Option(_MT.temporal_positions, "--temporal-positions",
                                           help="central (default: distinct positions in the central square, as the "
                                                "spatial centres) | whole (the release: with replacement over the "
                                                "whole map; 93 % of the per-stage draws contain a repeated position, "
                                                "whose rows then have a 'negative' equal to the positive: 15 % of "
                                                "the rows at 14²)."),
    arch: str = typer.Option(_MT.arch, "--arch", help="IResNet depth: r18 | r34 | r50 | r100."),
    input_size: int = typer.Option(_MT.input_size, "--input-size", help="Crop size fed to the backbone."),
    backbone_weights: str = typer.Option(_MT.backbone_weights, "--backbone-weights",
                                         help="auto (ArcFace r50 from the registry) | none | a backbone.pth path."),
    crops: str = typer.Option(_MT.crops, "--crops", help="tracked (track + align faces) | centre (pre-aligned data)."),
    pose_align: bool = typer.Option(_MT.pose_align, "--pose-align/--no-pose-align", help="Warp each emotional crop onto the neutral pose."),
    device: str = typer.Option(_MT.device, "--device", help="auto | cpu | cuda[:N]."),
    amp: bool = typer.Option(_MT.amp, "--amp/--no-amp", help="bf16/fp16 autocast on GPU."),
    seed: int = typer.Option(_MT.seed, "--seed"),
    ckpt_every: int = typer.Option(_MT.ckpt_every, "--ckpt-every", help="Checkpoint period in steps."),
    log_every: int = typer.Option(_MT.log_every, "--log-every", help="Log period in steps (log.jsonl)."),
    num_workers: int = typer.Option(_MT.num_workers, "--num-workers", help="DataLoader workers."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Pair lists and face crops (default <out>/cache)."),
    install: bool = typer.Option(False, "--install/--no-install", help="Install the result as weight 'stccl_metric'."),
    prepare_only: bool = typer.Option(False, "--prepare-only", help="Only build the pair list and face-crop caches "
                                      "(run once, single process, before a torchrun job)."),
) -> None:
    """Train the STCCL correlation metric on MEAD/RAVDESS neutral-vs-emotion pairs (resumes in --out).

    Multi-GPU: `torchrun --nproc_per_node N -m spfem_cli.app train-metric ...`.
    """
    from spfem_cli.train.metric import train_metric as run

    cfg = MetricTrainConfig(
        dataset=_choice(dataset, CHOICES["dataset"], "--dataset"), root=str(root), out=str(out),
        mode=_choice(mode, CHOICES["mode"], "--mode"), steps=steps, batch=batch, lr=lr, tau=tau,
        context=context, temporal_pairs=_choice(temporal_pairs, CHOICES["temporal_pairs"], "--temporal-pairs"), daas=daas,
        daas_variant=_choice(daas_variant, CHOICES["daas_variant"], "--daas-variant"),
        temporal_positions=_choice(temporal_positions, CHOICES["temporal_positions"], "--temporal-positions"),
        arch=_choice(arch, CHOICES["arch"], "--arch"), input_size=input_size,
        backbone_weights=backbone_weights, crops=_choice(crops, CHOICES["crops"], "--crops"),
        pose_align=pose_align, device=device, amp=amp, seed=seed, ckpt_every=ckpt_every, log_every=log_every,
        num_workers=num_workers, cache_dir=str(cache_dir) if cache_dir else None)
    if not prepare_only:       # --backbone-weights auto = ArcFace r50 for --arch r50 (as spfem_cli.train.metric)
        _require_weights(("arcface_r50" if backbone_weights == "auto" and arch == "r50" else backbone_weights,), (),
                         "train-metric")
    path = run(cfg, prepare_only=prepare_only)
    if prepare_only:
        say(f"pairs and crops cached in {path}")
        emit({"cache": path})
        return
    import os

    if os.environ.get("RANK", "0") != "0":     # torchrun: only rank 0 reports and installs
        return
    say(f"metric written to {path}")
    installed = None
    if install:
        from spfem_cli import weights

        installed = weights.install_user_file("stccl_metric", path)
        say(f"installed as 'stccl_metric' -> {installed}")
    else:
        say(f"use it with: spfem weights fetch stccl_metric --from {path}  (or SPFEM_WEIGHT_STCCL_METRIC={path})")
    emit({"metric": path, "installed": installed})


@app.command("analyze-metric")
def analyze_metric(
    dataset: str = typer.Option(_MA.dataset, "--dataset", help="mead | ravdess"),
    root: Path = typer.Option(..., "--root", help="Data-set root."),
    metric: str = typer.Option(_MA.metric, "--metric", help="Registry name or a metric file (stccl_metric.pt)."),
    split: str = typer.Option(_MA.split, "--split", help="val (held-out W021 / Actor_24) | train | all."),
    frames: int = typer.Option(_MA.frames, "--frames", help="Frame pairs per emotion."),
    batch: int = typer.Option(_MA.batch, "--batch"),
    crops: str = typer.Option(_MA.crops, "--crops", help="tracked | centre (must match training)."),
    out: Path = typer.Option(Path(_MA.out), "--out", "-o", help="Folder for metric_analysis.json/.png."),
    device: str = typer.Option(_MA.device, "--device"),
    seed: int = typer.Option(_MA.seed, "--seed"),
    untrained_backbone: str = typer.Option(_MA.untrained_backbone, "--untrained-backbone",
                                           help="Backbone of the untrained baseline: auto | none | a backbone.pth."),
) -> None:
    """Positive vs negative disparity similarity (cosine, Pearson) per emotion, untrained vs trained metric."""
    from spfem_cli.train.metric_analysis import analyze_metric as run

    cfg = AnalysisConfig(dataset=_choice(dataset, CHOICES["dataset"], "--dataset"), root=str(root), metric=metric,
                         split=_choice(split, CHOICES["split"], "--split"), frames=frames, batch=batch,
                         crops=_choice(crops, CHOICES["crops"], "--crops"), out=str(out), device=device, seed=seed,
                         untrained_backbone=untrained_backbone)
    report = run(cfg)
    table = Table(title="STCCL metric: positive vs negative disparities")
    for col in ("emotion", "metric", "pos cos", "neg cos", "pos r", "neg r"):
        table.add_column(col)
    for emotion, rows in report["emotions"].items():
        for name, row in rows.items():
            table.add_row(f"neutral→{emotion}", name, *(f"{row[f'all/{k}']:.3f}" for k in ("pos_cos", "neg_cos", "pos_r", "neg_r")))
    if json_mode():
        emit(report)
    else:
        make_console(stderr=False).print(table)
    say(f"wrote {out / 'metric_analysis.json'} and {out / 'metric_analysis.png'}")


@app.command("eval")
def evaluate(
    dataset: str | None = typer.Option(None, "--dataset", help="mead | ravdess: run that data set's protocol."),
    root: Path | None = typer.Option(None, "--root", help="Data-set root in its original layout."),
    generated: Path | None = typer.Option(
        None, "--generated",
        help="Existing edits: DIR/{inter-id,cross-id}/<actor>/<target emotion>/<source key>.mp4 "
             "(source key: MEAD <emotion>_level_<k>_<clip>, RAVDESS the file stem)."),
    backend: str | None = typer.Option(None, "--backend", help="warp | ned: generate the edits first (into OUT/generated)."),
    renderers: Path | None = typer.Option(None, "--renderers", help="--backend ned: DIR/<actor>/ actor renderers (spfem train-renderer)."),
    pair: tuple[Path, Path] | None = typer.Option(None, "--pair", help="SOURCE EDITED: evaluate one edit."),
    emotion: str | None = typer.Option(None, "--emotion", "-e", help="--pair: the edit's target emotion, for the emotion "
                                       "accuracy (default: read from EDITED's name, e.g. talk.happy.mp4)."),
    out: Path = typer.Option(Path("spfem_eval"), "--out", "-o", help="Reports, cache and generated edits go here."),
    crop: str = typer.Option("track", "--crop", help="track: track and align faces; none: videos are face crops."),
    lse_preset: str = typer.Option("spfem-ned", "--lse-preset",
                                   help="spfem-ned (CDRL lse_*.py: 30 fps, vshift 10, float audio, frames from 2) | "
                                        "wav2lip (joonson/Wav2Lip: 25 fps, vshift 15)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    actors: str | None = typer.Option(None, "--actors", help="Comma-separated subset of the test actors."),
    max_sources: int | None = typer.Option(None, "--max-sources", help="At most N source clips per actor (quick runs)."),
) -> None:
    """FAD, CSIM, LSE-D/LSE-C on the MEAD or RAVDESS protocol, or the speech metrics of one edit (--pair)."""
    import json

    from spfem_cli.evaluate.lse import PRESETS

    if crop not in ("track", "none"):
        raise SpfemError("--crop must be track or none")
    if lse_preset not in PRESETS:
        raise SpfemError(f"--lse-preset must be one of: {', '.join(PRESETS)}")
    if pair and all(p is not None for p in pair):
        from spfem_cli.edit.targets import EditTarget
        from spfem_cli.evaluate.pair import evaluate_pair

        target = EditTarget(emotion=emotion).emotion if emotion else None   # canonical label or a one-line refusal
        result = evaluate_pair(pair[0], pair[1], preset=lse_preset, crop=crop, device=device, target=target)
        print(json.dumps(result, indent=2))
        if result.get("lse_unavailable"):
            console.print(f"[yellow]note:[/] LSE-D/LSE-C unavailable (the rest is computed): {result['lse_unavailable']}",
                          highlight=False)
        return
    if dataset not in ("mead", "ravdess") or root is None:
        raise SpfemError("pass --dataset mead|ravdess --root PATH (with --generated DIR or --backend), "
                         "or --pair SOURCE EDITED")
    from spfem_cli import weights
    from spfem_cli.evaluate.embedders import CSIM_WEIGHT, FAD_WEIGHT, SYNC_WEIGHT
    from spfem_cli.evaluate.report import markdown_table
    from spfem_cli.evaluate.run import EvalConfig, evaluate_dataset

    weights.require((FAD_WEIGHT, CSIM_WEIGHT, SYNC_WEIGHT), "eval")   # before any edit is generated

    cfg = EvalConfig(dataset=dataset, root=root, out=out, generated=generated, backend=backend, crop=crop,
                     lse_preset=lse_preset, device=device, max_sources=max_sources, renderers=renderers,
                     actors=tuple(a.strip() for a in actors.split(",")) if actors else None)
    results, paths = evaluate_dataset(cfg)
    if json_mode():
        emit({"results": results, "files": paths})
    else:
        print(markdown_table(results))
    for note in results["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    for kind, path in paths.items():
        say(f"{kind}: {path}")


@app.command("train-renderer")
def train_renderer_cmd(
    video: Path | None = typer.Argument(None, help="A video of the actor (talking, frontal; minutes are better)."),
    out: Path = typer.Option(..., "--out", "-o", help="Renderer folder: latest_net_{G,D,Dm}.pth, checkpoints, samples/."),
    data: Path | None = typer.Option(None, "--data", help="A prepared actor folder (skips tracking and 3D)."),
    meta: str = typer.Option("ned_meta_renderer", "--meta",
                             help="Meta-renderer: registry name, a NED checkpoint folder / latest_net_G.pth, or none."),
    metric: str = typer.Option("stccl_metric", "--metric", help="STCCL metric: registry name, a file, or none (plain NED)."),
    stccl_weight: float = typer.Option(RENDERER_STCCL_WEIGHT, "--stccl-weight",
                                       help="Weight of the STCCL term. Default 0.3 = the ASCCL/STCCL reference's "
                                            "effective weight (its metric returns 0.3·Σ over stages and the renderer "
                                            "adds it with weight 1; spfem's metric returns Σ). 0 = plain NED."),
    epochs: float = typer.Option(20.0, "--epochs",
                                 help="NED epochs: one random window from each 50-frame part of the clip, "
                                      "12 generated frames doubling every 5 epochs up to 48 (NED: 20)."),
    steps: int | None = typer.Option(None, "--steps", help="Sequences to train on (overrides --epochs)."),
    sample_every: int = typer.Option(200, "--sample-every", help="PNG sample grid period in steps (0 = off)."),
    tracker: str = typer.Option("auto", "--tracker", help="auto (fan when its weights are installed, as NED; else mediapipe) | fan | mediapipe."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="bf16/fp16 autocast on GPU."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the newest checkpoint in --out."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Fine-tune a person-specific NED renderer from the meta-renderer, with the STCCL term (the reference's weight).

    Multi-GPU: `torchrun --nproc_per_node N -m spfem_cli.app train-renderer VIDEO --out DIR`.
    """
    from spfem_cli.backends.ned.train_renderer import RendererTrainConfig, train_renderer
    from spfem_cli.face.preprocess import WEIGHTS_3D
    from spfem_cli.face.tracking.track import FAN_WEIGHTS

    prepare = data is None and not (out / "actor" / "actor.json").is_file()     # tracking + 3D of the actor video
    _require_weights((meta, metric), ("vgg19_imagenet", *(WEIGHTS_3D if prepare else ()),
                                      *(FAN_WEIGHTS if prepare and tracker == "fan" else ())), "train-renderer")
    path = train_renderer(video, out, data=data, meta=meta, metric=metric, epochs=epochs, steps=steps,
                          cfg=RendererTrainConfig(sample_every=sample_every, stccl_weight=stccl_weight),
                          tracker=_choice(tracker, ("auto", "fan", "mediapipe"), "--tracker"), device=device, amp=amp,
                          resume=resume, seed=seed)
    say(f"renderer written to {path} (use it with: spfem edit VIDEO --backend ned --renderer {path})")
    emit({"renderer": path})



@app.command("train-translator")
def train_translator_cmd(
    dataset: str = typer.Option("mead", "--dataset", help="mead (per-frame coefficients of MEAD clips)."),
    root: Path = typer.Option(..., "--root", help="MEAD video root (<actor>/video/front/...: coefficients are "
                              "extracted first) or a coefficient root (<actor>.npz or <actor>/<emotion>/level_<k>/<clip>.npy)."),
    out: Path = typer.Option(Path("runs/translator"), "--out", "-o", help="Run folder: checkpoints, log.jsonl, translator.pth."),
    actors: list[str] = typer.Option(None, "--actor", help="Train on these actors (repeat; default: all found)."),
    levels: list[int] = typer.Option(None, "--level", help="MEAD intensity levels to use (repeat; default: all)."),
    finetune: Path | None = typer.Option(None, "--finetune", help="Start from this NED-layout translator checkpoint."),
    stccl: bool = typer.Option(True, "--stccl/--no-stccl", help="Add the STCCL term (weight 0.1); --no-stccl = plain NED (ablation)."),
    metric: str = typer.Option("stccl_metric", "--metric", help="Trained STCCL metric: registry name or file."),
    stccl_weight: float = typer.Option(0.1, "--stccl-weight", help="Weight of the STCCL term."),
    stccl_frames: int = typer.Option(9, "--stccl-frames", help="Consecutive frames per window rendered for STCCL."),
    epochs: int = typer.Option(10, "--epochs", help="NED: 10 epochs, the LR decaying linearly over the last --decay-epochs."),
    decay_epochs: int = typer.Option(10, "--decay-epochs", help="Epochs of linear LR decay at the end (NED: 10)."),
    steps: int | None = typer.Option(None, "--steps", help="Optimiser steps (overrides --epochs)."),
    batch: int = typer.Option(64, "--batch", help="Windows per step (NED: 64)."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam LR of G, E, D and F (NED: 1e-4, betas (0, 0.99))."),
    coeffs_dir: Path | None = typer.Option(None, "--coeffs", help="Where extracted coefficients go (default <out>/coeffs)."),
    tracker: str = typer.Option("fan", "--tracker", help="fan | mediapipe (only when extracting from videos)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="bf16/fp16 autocast on GPU."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the newest checkpoint in --out."),
    ckpt_every: int = typer.Option(1000, "--ckpt-every", help="Checkpoint period in steps."),
    seed: int = typer.Option(777, "--seed", help="NED's seed is 777."),
) -> None:
    """Train or fine-tune the NED expression translator, with (default) or without the STCCL term.

    Multi-GPU: `torchrun --nproc_per_node N -m spfem_cli.app train-translator --root ...`.
    """
    from spfem_cli.backends.ned.train_translator import TranslatorRun, TranslatorTrainConfig, train_translator_on

    _choice(dataset, ("mead",), "--dataset")
    cfg = TranslatorTrainConfig(lr=lr, f_lr=lr, batch_size=batch, niter=epochs, niter_decay=min(decay_epochs, epochs),
                                stccl=stccl, lambda_stccl=stccl_weight, stccl_frames=stccl_frames)
    run = TranslatorRun(out_dir=out, finetune=finetune, max_steps=steps, device=device, seed=seed,
                        ckpt_every=ckpt_every, amp=amp, resume=resume)
    from spfem_cli.backends.ned.coeffs import is_mead_video_root
    from spfem_cli.face.preprocess import WEIGHTS_3D
    from spfem_cli.face.tracking.track import FAN_WEIGHTS

    extract = is_mead_video_root(root)                  # coefficients are extracted first (tracking + DECA)
    _require_weights((metric,) if stccl else (),
                     (*(("flame_generic", "flame_landmark_embedding") if stccl else ()), *(WEIGHTS_3D if extract else ()),
                      *(FAN_WEIGHTS if extract and tracker == "fan" else ())), "train-translator")
    path = train_translator_on(root, out, cfg, run, actors=actors or None, levels=levels or None,
                               coeffs_dir=coeffs_dir, metric=metric, tracker=_choice(tracker, ("fan", "mediapipe"), "--tracker"))
    from spfem_cli.train.loop import dist_env

    if dist_env()[0] == 0:
        say(f"translator written to {path} (STCCL term {'on' if stccl else 'off'}); use it with: "
            f"SPFEM_WEIGHT_NED_TRANSLATOR={path} or spfem weights fetch ned_translator --from {path}")
        emit({"translator": path, "stccl": stccl})


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """Move --quiet/-q/--json/--version found after the command name to the front (before any ``--``),
    so they work in either place."""
    stop = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:stop] if a in GLOBAL_FLAGS]
    rest = [a for a in argv[:stop] if a not in GLOBAL_FLAGS]
    return flags + rest + argv[stop:]


def _one_line_warnings() -> None:
    """Python warnings (unverified weight files, ...) as one ``warning:`` line, no source echo."""
    import warnings

    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"warning: {message}\n"


def main() -> None:
    """Console entry point: one-line errors and exit 1 for bad input; SIGINT/SIGTERM say "interrupted"
    and exit 128 + signal after cleaning up; native library log noise is filtered from stderr."""
    from spfem_cli.errors import Interrupted, raise_on_signals
    from spfem_cli.native_logs import filter_native_stderr

    stop_filter = filter_native_stderr()
    raise_on_signals()
    _one_line_warnings()
    try:
        app(args=_hoist_global_flags(sys.argv[1:]), prog_name="spfem")
    except SpfemError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except Interrupted as exc:
        console.print(f"[yellow]interrupted[/] ({exc}): nothing half-written was left behind")
        sys.exit(exc.exit_code)
    except Exception as exc:   # a weight file torch/numpy cannot read: one line naming it, not a traceback
        from spfem_cli.weights import unreadable_file_message

        message = unreadable_file_message(exc)
        if message is None:
            raise
        console.print(f"[red]error:[/] {message}")
        sys.exit(1)
    finally:
        stop_filter()


if __name__ == "__main__":
    main()
