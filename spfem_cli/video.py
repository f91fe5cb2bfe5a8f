"""Streamed video I/O on PyAV: decode in chunks, encode H.264, keep the original audio.

Memory never grows with video length: :func:`iter_chunks` yields a few dozen frames at a time and
:class:`VideoWriter` encodes as frames arrive. Frames are RGB ``uint8`` arrays ``(H, W, 3)`` with the
container's rotation metadata already applied. The frame rate is kept as PyAV's exact fraction
(29.97 stays 30000/1001, so picture and sound never drift). Output goes to a temporary file in the
target folder and is renamed into place only when everything succeeded, so an interrupted run leaves
nothing half-written and never touches an existing file unless asked to.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from spfem_cli.colour import NO_SOURCE, ColourTags, tag_stream, tags_of, yuv_frame
from spfem_cli.errors import SpfemError

# Output containers by file extension (FFmpeg muxer name) and the audio codecs each takes as they are
# (remux, no quality loss); other audio is re-encoded to AAC.
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
IMAGE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}   # a photo in, a photo out: one frame, no audio
PHOTO_INPUTS = {".webp", ".bmp", ".tif", ".tiff"}   # photos read but not written: their edit is a PNG
ANIMATION_INPUTS = {".gif"}   # a picture when it holds one frame (its edit a PNG), else a video (its edit an .mp4)
IMAGE = "image"
JPEG_QUALITY = 95
REMUX_AUDIO = {
    "mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    "mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le"},
    "matroska": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac", "vorbis", "pcm_s16le", "pcm_s24le"},
}
TIMED_CLOCK = Fraction(1, 90000)   # output clock for frames that keep their source times (MPEG's 90 kHz)


class VideoError(SpfemError):
    """The file is not a readable video, or the output cannot be written; one-line message."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int            # displayed size, after rotation
    height: int
    fps: Fraction         # exact average rate
    n_frames: int         # container's count, or an estimate from duration when the container has none
    duration: float       # seconds
    rotation: int         # degrees counter-clockwise that were applied on decode (0, 90, 180, 270)
    audio_codec: str | None
    audio_rate: int | None
    vfr: bool | None = None   # variable frame rate; None = not checked (probe(..., timing=True) checks)
    mirror: bool = False      # flipped left-right after the rotation (a photo's EXIF orientation 2, 4, 5, 7)

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


@dataclass
class FrameChunk:
    frames: np.ndarray    # (N, H, W, 3) uint8 RGB
    times: np.ndarray     # (N,) seconds
    start: int            # index of the first frame in the video


def _open(path: Path) -> av.container.InputContainer:
    path = Path(path)
    if path.is_dir():
        raise VideoError(f"{path} is a directory, not a video file")
    if not path.is_file():
        raise VideoError(f"no such file: {path}")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: Exception) -> VideoError:
    """The one-line refusal of a file FFmpeg cannot open or decode."""
    return VideoError(f"not a readable {'picture' if is_image_file(path) else 'video'}: {path} ({exc.__class__.__name__})")


def _rotation_of(stream: av.video.stream.VideoStream, container: av.container.InputContainer) -> int:
    """Rotation from the display matrix (first decoded frame), falling back to the legacy 'rotate' tag."""
    tag = stream.metadata.get("rotate")
    if tag is not None:
        return (-int(float(tag))) % 360
    for frame in container.decode(stream):
        return int(round(getattr(frame, "rotation", 0) or 0)) % 360
    return 0


# A photo's EXIF Orientation tag as (counter-clockwise degrees, then mirrored left-right): what shows it upright.
EXIF_ORIENTATION = {1: (0, False), 2: (0, True), 3: (180, False), 4: (180, True),
                    5: (270, True), 6: (270, False), 7: (90, True), 8: (90, False)}


# TIFF compressions the bundled FFmpeg's TIFF decoder does not support: it hands back an all-black picture.
UNDECODABLE_TIFF = frozenset({"jpeg", "tiff_jpeg"})


def _photo_header(path: Path) -> tuple[tuple[int, bool] | None, str | None]:
    """What a photo's header says that FFmpeg does not, in one read: (rotation, mirror) from its EXIF
    Orientation (None without one: FFmpeg turns the tag into a display matrix whose rotation PyAV reports, but
    not its flip, so a mirrored orientation would come out mirrored), and the compression of a TIFF that FFmpeg
    would decode as black (:data:`UNDECODABLE_TIFF`; None otherwise). (None, None) for anything but a photo."""
    if not is_image_file(path):
        return None, None
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    try:
        # Only the header and the EXIF are read, never the pixels: Pillow's size guard (an error above 179 MP, a
        # warning above 89 MP, real phone photos) and its warnings about odd EXIF do not apply here.
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings(), Image.open(path) as image:
            warnings.simplefilter("ignore")
            compression = image.info.get("compression") if image.format == "TIFF" else None
            undecodable = compression if compression in UNDECODABLE_TIFF else None
            if image.format == "PNG" and "exif" not in image.info:   # an eXIf after the pixels: Pillow would decode them
                return None, undecodable
            return EXIF_ORIENTATION.get(image.getexif().get(0x0112)), undecodable
    except Exception:   # any unreadable header or EXIF (best effort): FFmpeg's own reading stands
        return None, None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def truncated_picture(path: Path) -> bool:
    """Whether a photo's file ends before its pixels do (a cut-off download or copy). FFmpeg decodes what is
    there and fills the rest with grey without a word; Pillow's full decode says so. Photos only."""
    if not is_image_file(path):
        return False
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:      # someone else's setting: Pillow would not say
        return False
    try:
        with warnings.catch_warnings(), Image.open(path) as image:
            warnings.simplefilter("ignore")
            image.load()
    except OSError as exc:
        return "truncated" in str(exc)
    except Exception:   # anything else unreadable: FFmpeg's own error, if any, stands
        return False
    return False


def _unrotate(image: np.ndarray, rotation: int, mirror: bool = False) -> np.ndarray:
    """Apply a display-matrix rotation (counter-clockwise degrees), then the mirror, so the picture shows upright."""
    turns = (rotation // 90) % 4
    image = np.rot90(image, k=turns) if turns else image
    image = image[:, ::-1] if mirror else image
    return np.ascontiguousarray(image) if turns or mirror else image


def frame_times(path: Path) -> np.ndarray | None:
    """Presentation time (s) of every video frame, from the packets (no decoding); None when the container
    does not carry them (raw streams)."""
    with _open(path) as container:
        if not container.streams.video:
            raise VideoError(f"no video stream in {path}")
        stream = container.streams.video[0]
        time_base = float(stream.time_base)      # read while open: a closed stream's time_base is None
        pts = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
    return np.sort(np.asarray(pts, np.float64)) * time_base


def is_constant_rate(times: np.ndarray, fps: Fraction, *, from_zero: bool = False) -> bool:
    """True when ``times`` are ``times[0] + i / fps`` within a tenth of a frame (and start at 0 if asked)."""
    if len(times) == 0:
        return True
    period = 1.0 / float(fps)
    if from_zero and abs(times[0]) > 0.1 * period:
        return False
    ideal = times[0] + np.arange(len(times)) * period
    return bool(np.max(np.abs(times - ideal)) <= 0.1 * period)


def probe(path: Path, *, timing: bool = False) -> VideoInfo:
    """Stream facts without decoding the whole file; ``timing`` also reads every frame's timestamp to tell
    a variable frame rate (``VideoInfo.vfr``)."""
    with _open(path) as container:
        if not container.streams.video:
            raise VideoError(f"no video stream in {path}")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise VideoError(f"cannot tell the frame rate of {path}")
        fps = Fraction(rate)
        duration = (
            float(stream.duration * stream.time_base) if stream.duration
            else (container.duration / av.time_base if container.duration else 0.0)
        )
        n_frames = stream.frames or int(round(duration * fps))
        audio = container.streams.audio[0] if container.streams.audio else None
        width, height = stream.codec_context.width, stream.codec_context.height
        try:
            rotation = _rotation_of(stream, container)
        except av.error.FFmpegError as exc:    # the first frame is decoded for its display matrix
            raise _unreadable(path, exc) from None
    orientation, undecodable = _photo_header(path)
    if undecodable:
        raise VideoError(f"not a readable picture: {path} (a TIFF with {undecodable.replace('_', ' ')} compression, which "
                         "the bundled FFmpeg decodes as black; save it as PNG or JPEG)")
    rotation, mirror = orientation or (rotation, False)
    if rotation in (90, 270):
        width, height = height, width
    vfr = None
    if timing:
        times = frame_times(path)
        vfr = None if times is None else not is_constant_rate(times, fps)
    return VideoInfo(Path(path), width, height, fps, n_frames, duration, rotation,
                     audio.codec_context.name if audio else None, audio.rate if audio else None, vfr, mirror)


def iter_chunks(path: Path, chunk_size: int = 32, *, max_frames: int | None = None) -> Iterator[FrameChunk]:
    """Decode ``path`` into chunks of at most ``chunk_size`` RGB frames."""
    info = probe(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        buf: list[np.ndarray] = []
        times: list[float] = []
        start = 0
        index = 0
        try:
            for frame in container.decode(stream):
                buf.append(_unrotate(frame.to_ndarray(format="rgb24"), info.rotation, info.mirror))
                times.append(float(frame.time) if frame.time is not None else index / float(info.fps))
                index += 1
                if len(buf) == chunk_size:
                    yield FrameChunk(np.stack(buf), np.asarray(times), start)
                    start, buf, times = index, [], []
                if max_frames is not None and index >= max_frames:
                    break
        except av.error.FFmpegError as exc:
            if index == 0:
                raise VideoError(f"cannot decode {path} ({exc.__class__.__name__})") from None
        if buf:
            yield FrameChunk(np.stack(buf), np.asarray(times), start)
        if index == 0:
            raise VideoError(f"no decodable frames in {path}")
    finally:
        container.close()


def frames_by_index(path: Path, indices) -> dict[int, np.ndarray]:
    """RGB frames ``indices`` (decode order, as :func:`iter_chunks` numbers them) of ``path``, by index.

    Every frame up to the last wanted one is decoded, but only the wanted ones are converted to RGB
    arrays: sampling 40 frames of a clip costs the decode, not a conversion and a copy of each frame.
    """
    wanted = {int(i) for i in indices}
    found: dict[int, np.ndarray] = {}
    if not wanted:
        return found
    last = max(wanted)
    info = probe(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    found[index] = _unrotate(frame.to_ndarray(format="rgb24"), info.rotation, info.mirror)
                if index >= last:
                    break
        except av.error.FFmpegError as exc:
            if not found:
                raise VideoError(f"cannot decode {path} ({exc.__class__.__name__})") from None
    finally:
        container.close()
    return found


def iter_frames(path: Path, chunk_size: int = 32) -> Iterator[np.ndarray]:
    """Single frames, still decoded chunk-wise."""
    for chunk in iter_chunks(path, chunk_size):
        yield from chunk.frames


def read_frames(path: Path, max_frames: int | None = None) -> tuple[np.ndarray, VideoInfo]:
    """Whole (short) clip in memory: for tests, references and thumbnails, not for edit paths."""
    chunks = [c.frames for c in iter_chunks(path, 64, max_frames=max_frames)]
    return np.concatenate(chunks), probe(path)


def container_format(path: Path) -> str:
    """The FFmpeg muxer for a video output, chosen by its extension (.mp4, .mov, .mkv), or :data:`IMAGE`
    for a picture (.png, .jpg: the edit of a photo); others refused."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_FORMATS:
        return IMAGE
    fmt = CONTAINERS.get(suffix)
    if fmt is None:
        what = f"'{Path(path).suffix}'" if Path(path).suffix else "a name without an extension"
        raise VideoError(f"cannot write {what} ({path}): an output must end in {', '.join(CONTAINERS)} "
                         f"(a video) or {', '.join(IMAGE_FORMATS)} (a photo's edit); for a folder, end the name with /")
    return fmt


def picture_suffix(path: Path) -> str:
    """The extension of a photo's edit: its own (.png, .jpg, .jpeg), a .png for the formats only read (.webp, …)."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in IMAGE_FORMATS else ".png"


def is_image_file(path: Path) -> bool:
    """Whether ``path`` names a picture (by its extension, :data:`IMAGE_FORMATS` or :data:`PHOTO_INPUTS`, or a
    GIF of one frame): its edit defaults to a picture too."""
    suffix = Path(path).suffix.lower()
    if suffix in ANIMATION_INPUTS:
        try:
            stat = Path(path).stat()
        except OSError:
            return False
        return _single_frame(str(path), stat.st_mtime_ns, stat.st_size)
    return suffix in IMAGE_FORMATS or suffix in PHOTO_INPUTS


@functools.lru_cache(maxsize=64)
def _single_frame(path: str, mtime_ns: int, size: int) -> bool:
    """Whether an animation file (GIF) holds one frame: a still saved as GIF, whose edit is a photo rather
    than a one-frame video at FFmpeg's default 100 frames/s. Keyed by mtime and size, so a rewritten file is
    read again; an unreadable one counts as a video (the decoder's own error then names it)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return int(getattr(image, "n_frames", 1)) == 1
    except Exception:
        return False


def check_output_path(output: Path, *, inputs: tuple[Path, ...] = (), overwrite: bool = False) -> Path:
    """Refuse to clobber the input, a folder or an existing file, and fail early on an unwritable folder."""
    output = Path(output)
    if output.is_dir():
        raise VideoError(f"output {output} is a folder; give a file name")
    for item in inputs:
        if output.resolve() == Path(item).resolve():
            raise VideoError(f"output {output} is the input file; choose another path")
    if output.exists() and not overwrite:
        raise VideoError(f"output {output} already exists (pass --overwrite to replace it)")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise VideoError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise VideoError(f"output folder is not writable: {parent}")
    return output


class AtomicOutput:
    """A temporary file next to ``target``, renamed over it on success and removed on any failure.

    Used for every file spfem writes that a user owns (videos, tracks, reports).
    """

    def __init__(self, target: Path, suffix: str | None = None):
        self.target = Path(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.target.stem}.", suffix=suffix or self.target.suffix,
                                   dir=self.target.parent if str(self.target.parent) else ".")
        os.close(fd)
        self.tmp = Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)   # mkstemp makes 0600; outputs get the user's usual mode

    def commit(self) -> Path:
        os.replace(self.tmp, self.target)
        return self.target

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class _AudioCarrier:
    """Copies the source's first audio stream into the output, interleaved with video by time.

    Remuxed without re-encoding when the container takes the codec, otherwise decoded and re-encoded to
    AAC. ``span=(start, end)`` keeps only the source's audio in [start, end) (re-encoded, sample-exact) and
    moves it by ``-start``, to match a video cut to the same span.
    """

    def __init__(self, source: Path, output: av.container.OutputContainer, *,
                 span: tuple[float, float] | None = None):
        self.input = av.open(str(source))
        self.in_stream = self.input.streams.audio[0]
        self.span = span
        self.origin = span[0] if span else 0.0
        self.remux = span is None and self.in_stream.codec_context.name in REMUX_AUDIO[output.format.name.split(",")[0]]
        if self.remux:
            self.out_stream = output.add_stream_from_template(self.in_stream)
        else:
            self.rate = self.in_stream.rate or 48000
            self.out_stream = output.add_stream("aac", rate=self.rate)
            channels = self.in_stream.codec_context.channels or 2
            self.out_stream.layout = "mono" if channels == 1 else "stereo"
            self.resampler = av.AudioResampler(format="fltp", layout=self.out_stream.layout, rate=self.rate)
            self.pending = np.zeros((channels if channels == 1 else 2, 0), np.float32)
            self.next_pts: int | None = None    # output sample index of pending[:, 0]
        self.output = output
        self.packets = self.input.demux(self.in_stream)
        self.done = False

    def _mux_packet(self, packet: av.Packet) -> None:
        if self.remux:
            packet.stream = self.out_stream
            self.output.mux(packet)
            return
        for frame in packet.decode():
            start = float(frame.time) if frame.time is not None else None
            for resampled in self.resampler.resample(frame):
                self._take(resampled.to_ndarray().astype(np.float32), start)
                start = None
        self._drain(final=False)

    def _take(self, samples: np.ndarray, start: float | None) -> None:
        """Queue decoded samples whose first one plays at source time ``start`` (None: right after the last)."""
        if self.next_pts is None:
            start = 0.0 if start is None else start
            if self.span is not None:
                skip = int(round((self.span[0] - start) * self.rate))
                if skip >= samples.shape[1]:
                    return
                if skip > 0:
                    samples, start = samples[:, skip:], start + skip / self.rate
            self.next_pts = max(0, int(round((start - self.origin) * self.rate)))
        if self.span is not None:
            room = int(round((self.span[1] - self.origin) * self.rate)) - (self.next_pts + self.pending.shape[1])
            samples = samples[:, :max(room, 0)]
        self.pending = np.concatenate([self.pending, samples], axis=1)

    def _drain(self, *, final: bool) -> None:
        size = self.out_stream.codec_context.frame_size or 1024
        while self.pending.shape[1] >= size or (final and self.pending.shape[1]):
            block, self.pending = self.pending[:, :size], self.pending[:, size:]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=self.out_stream.layout)
            frame.rate = self.rate
            frame.pts = self.next_pts
            frame.time_base = Fraction(1, self.rate)
            self.next_pts += block.shape[1]
            for out in self.out_stream.encode(frame):
                self.output.mux(out)

    def mux_until(self, seconds: float) -> None:
        """Mux audio packets that start before ``seconds`` of the output timeline."""
        if self.done:
            return
        for packet in self.packets:
            if packet.dts is None and packet.size == 0:
                continue
            at = float(packet.pts * self.in_stream.time_base) if packet.pts is not None else None
            if self.span is not None and at is not None and at >= self.span[1]:
                break
            self._mux_packet(packet)
            if at is not None and at - self.origin > seconds:
                return
        self.done = True

    def close(self) -> None:
        self.mux_until(float("inf"))
        if not self.remux:
            for frame in self.resampler.resample(None):
                self._take(frame.to_ndarray().astype(np.float32), None)
            self._drain(final=True)
            for out in self.out_stream.encode(None):
                self.output.mux(out)
        self.input.close()


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def check_encoder(crf: int, preset: str) -> None:
    """Refuse encoder settings libx264 would reject, before any work is done."""
    if not 0 <= crf <= 51:
        raise VideoError(f"--crf {crf} is out of range: 0 (lossless) to 51 (worst); 18 is visually lossless")
    if preset not in X264_PRESETS:
        raise VideoError(f"unknown --preset '{preset}': one of {', '.join(X264_PRESETS)}")


class VideoWriter:
    """H.264 (yuv420p) writer, MP4/MOV/MKV by the file extension, with the source audio carried over,
    written atomically. A .png/.jpg path holds the one frame of a photo's edit instead (no audio).

    Frames keep the presentation times of the video they came from, so picture and sound stay in sync
    for any input timing (variable frame rate, a first frame that does not start at 0): explicitly with
    ``write(frames, times)``, or else those of ``audio_from``'s video stream, frame for frame. A
    constant-rate source starting at 0 is written at its exact rate. ``audio_span=(start, end)`` cuts the
    carried audio to that span of the source and starts it at 0 (for a clip cut to the same span).
    Odd frame sizes are padded by one replicated row/column (yuv420p needs even sizes).
    """

    def __init__(self, path: Path, fps: Fraction | float, *, audio_from: Path | None = None,
                 audio_span: tuple[float, float] | None = None, crf: int = 18, preset: str = "medium",
                 overwrite: bool = False):
        self.path = Path(path)
        self.format = container_format(self.path)
        if self.path.exists() and not overwrite:
            raise VideoError(f"output {self.path} already exists (pass --overwrite to replace it)")
        check_encoder(crf, preset)
        self._picture: np.ndarray | None = None      # an image output's one frame, written on close
        self.fps = Fraction(fps).limit_denominator(1001 * 1000) if not isinstance(fps, Fraction) else fps
        self.crf, self.preset = crf, preset
        self.audio_from = audio_from
        self.audio_span = audio_span
        self._atomic = AtomicOutput(self.path)
        self._container: av.container.OutputContainer | None = None
        self._stream = None
        self._audio: _AudioCarrier | None = None
        self._source_times: np.ndarray | None = None
        self._tags = NO_SOURCE         # the colour description written: the source video's (see spfem_cli.colour)
        self._timed = False            # frames carry their own presentation times (else index / fps)
        self._last_time = float("-inf")
        self.frames_written = 0
        self.size: tuple[int, int] | None = None

    def _source_video(self) -> tuple[bool, ColourTags | None]:
        """Whether ``audio_from`` has audio, and its video's colour description (None: it has no video)."""
        try:
            with av.open(str(self.audio_from)) as src:
                return bool(src.streams.audio), tags_of(src.streams.video[0]) if src.streams.video else None
        except (av.error.FFmpegError, OSError):
            return False, None

    def _start(self, height: int, width: int, explicit_times: bool) -> None:
        has_audio, source_tags = self._source_video() if self.audio_from is not None else (False, None)
        has_video = source_tags is not None
        self._tags = source_tags or NO_SOURCE
        if has_video and not explicit_times and self.audio_span is None:
            times = frame_times(self.audio_from)
            if times is not None and not is_constant_rate(times, self.fps, from_zero=True):
                self._source_times = times
        self._timed = explicit_times or self._source_times is not None
        self._container = av.open(str(self._atomic.tmp), mode="w", format=self.format)
        self._stream = self._container.add_stream("libx264", rate=self.fps)
        if self._timed:
            self._stream.codec_context.time_base = TIMED_CLOCK
            self._stream.time_base = TIMED_CLOCK
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"
        tag_stream(self._stream, self._tags)
        self._stream.options = {"crf": str(self.crf), "preset": self.preset}
        self.size = (height, width)
        if has_audio:
            self._audio = _AudioCarrier(Path(self.audio_from), self._container, span=self.audio_span)

    def _time_of(self, index: int, given: float | None) -> float:
        """Presentation time of frame ``index``: given, else the source's, else one frame after the last."""
        if given is None and self._source_times is not None and index < len(self._source_times):
            given = float(self._source_times[index])
        if given is None:
            given = self._last_time + 1.0 / float(self.fps) if index else 0.0
        if given <= self._last_time:
            raise ValueError(f"frame {index}: time {given:.6f} s is not after the previous frame's")
        return given

    def write(self, frames: np.ndarray, times: np.ndarray | None = None) -> None:
        """Append one frame ``(H, W, 3)`` or a chunk ``(N, H, W, 3)`` of RGB uint8, optionally with the
        presentation time (s) of each."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError("frames must be uint8 RGB of shape (N, H, W, 3)")
        if times is not None and len(np.atleast_1d(times)) != len(frames):
            raise ValueError("one time per frame")
        if self.format == IMAGE:
            if self.frames_written + len(frames) > 1:
                raise VideoError(f"{self.path} is a picture: it holds one frame; write a video (.mp4, .mov, .mkv)")
            if len(frames):
                self._picture, self.size, self.frames_written = frames[0].copy(), frames.shape[1:3], 1
            return
        if self._container is None:
            self._start(*frames.shape[1:3], explicit_times=times is not None)
        if frames.shape[1:3] != self.size:
            raise ValueError(f"frame size changed from {self.size} to {frames.shape[1:3]}")
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        for k, image in enumerate(frames):
            frame = yuv_frame(image, self._tags)
            if self._timed:
                self._last_time = self._time_of(self.frames_written, None if times is None else float(np.atleast_1d(times)[k]))
                frame.pts = int(round(self._last_time / TIMED_CLOCK))
                frame.time_base = TIMED_CLOCK
            else:
                frame.pts = self.frames_written
                frame.time_base = 1 / self.fps
                self._last_time = self.frames_written / float(self.fps)
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1
            if self._audio is not None:
                self._audio.mux_until(self._last_time + 1.0 / float(self.fps))

    def close(self) -> Path:
        """Flush, carry the remaining audio and rename into place."""
        if self.format == IMAGE:
            return self._close_picture()
        if self._container is None:
            self._atomic.discard()
            raise VideoError("no frames were written")
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        if self._audio is not None:
            self._audio.close()
        self._container.close()
        return self._atomic.commit()

    def _close_picture(self) -> Path:
        import cv2

        if self._picture is None:
            self._atomic.discard()
            raise VideoError("no frames were written")
        suffix = self.path.suffix.lower()
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if IMAGE_FORMATS[suffix] == "jpeg" else []
        picture = cv2.cvtColor(self._picture, cv2.COLOR_RGB2BGR)
        alpha = self._source_alpha() if IMAGE_FORMATS[suffix] == "png" else None
        if alpha is not None:
            picture = np.dstack([picture, alpha])
        ok, data = cv2.imencode(suffix, picture, params)
        if not ok:
            self._atomic.discard()
            raise VideoError(f"could not encode {self.path}")
        self._atomic.tmp.write_bytes(data.tobytes())
        return self._atomic.commit()

    def _source_alpha(self) -> np.ndarray | None:
        """The 8-bit alpha channel of the source picture (``audio_from``) when it has one and the output is its
        size: a transparent cut-out edited into a PNG stays a cut-out (the decoder hands over RGB only)."""
        import cv2

        if self.audio_from is None or not is_image_file(Path(self.audio_from)):
            return None
        source = cv2.imread(str(self.audio_from), cv2.IMREAD_UNCHANGED)      # as stored: EXIF not applied
        if source is None or source.ndim != 3 or source.shape[2] != 4:
            return None
        info = probe(Path(self.audio_from))
        source = _unrotate(source, info.rotation, info.mirror)             # upright, like the decoded picture
        if source.shape[:2] != self._picture.shape[:2]:
            return None
        alpha = source[..., 3]
        return (alpha >> 8).astype(np.uint8) if alpha.dtype == np.uint16 else alpha

    def abort(self) -> None:
        """Drop everything written so far (exceptions, Ctrl-C)."""
        try:
            if self._audio is not None:
                self._audio.input.close()
            if self._container is not None:
                self._container.close()
        except Exception:  # noqa: BLE001 - best effort on the failure path; the temp file goes anyway
            pass
        self._atomic.discard()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: Path, frames: np.ndarray, fps: Fraction | float, *, audio_from: Path | None = None,
                overwrite: bool = False, crf: int = 18) -> Path:
    """Write a whole array of frames (tests, small clips)."""
    with VideoWriter(path, fps, audio_from=audio_from, overwrite=overwrite, crf=crf) as writer:
        writer.write(frames)
    return Path(path)


def write_audio(path: Path, samples: np.ndarray, rate: int, *, codec: str = "aac") -> Path:
    """Write mono float samples in [-1, 1] as an audio-only file (m4a/wav); used for data-set audio trees."""
    path = Path(path)
    fmt = "wav" if path.suffix == ".wav" else "mp4"
    codec = "pcm_s16le" if fmt == "wav" else codec
    with AtomicOutput(path) as tmp, av.open(str(tmp), mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        pcm = np.clip(samples, -1, 1).astype(np.float32)
        frame_size = stream.codec_context.frame_size or 1024
        sample_fmt = "s16" if codec == "pcm_s16le" else "fltp"
        for start in range(0, len(pcm), frame_size):
            block = pcm[start:start + frame_size]
            data = (block * 32767).astype(np.int16)[None] if sample_fmt == "s16" else block[None]
            frame = av.AudioFrame.from_ndarray(data, format=sample_fmt, layout="mono")
            frame.rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def read_audio(path: Path, rate: int = 16000) -> np.ndarray:
    """Whole audio track as mono float32 at ``rate`` (resampled in-process, no ffmpeg binary).

    Mono is the mean of the channels, as ffmpeg ``-ac 1`` to 16-bit and ``librosa.load`` make it (what the
    metrics' reference code reads); PyAV's float downmix would be 0.7071·(L+R)."""
    with _open(path) as container:
        if not container.streams.audio:
            raise VideoError(f"no audio stream in {path}")
        resampler = av.AudioResampler(format="fltp", rate=rate)   # channels kept, averaged below
        parts = []
        for frame in container.decode(container.streams.audio[0]):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().mean(axis=0))
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().mean(axis=0))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def cut_span(source: Path, target: Path, start: float, end: float | None = None) -> Path:
    """The frames of ``source`` shown in [start, end) seconds and the audio of that span, into ``target``
    (x264 lossless; frame times and audio moved by ``-start``, so they keep their sync).

    Used for quick previews (``spfem edit --start/--end``): later stages see a short clip.
    """
    info = probe(source)
    if start >= info.duration > 0:
        raise VideoError(f"--start {start:g} s is past the end of {source} ({info.duration:.2f} s)")
    end = info.duration if end is None or end > info.duration else end
    if start < 0 or end <= start:
        raise VideoError(f"--start {start:g} / --end {end:g}: the span must satisfy 0 <= start < end")
    with VideoWriter(target, info.fps, audio_from=source, audio_span=(start, end), crf=0, preset="ultrafast",
                     overwrite=True) as writer:
        for chunk in iter_chunks(source):
            keep = (chunk.times >= start) & (chunk.times < end)
            if keep.any():
                writer.write(chunk.frames[keep], chunk.times[keep] - start)
            if chunk.times[-1] >= end:
                break
        if writer.frames_written == 0:
            raise VideoError(f"no frame of {source} is shown between {start:g} s and {end:g} s")
    return Path(target)
