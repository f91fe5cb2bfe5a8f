"""Streamed video I/O: chunking, exact frame rates, audio carried over, odd sizes, atomic output."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from spfem_cli import video as V


def _frames(n=20, h=64, w=80, seed=0):
    """Real-photo frames (the astronaut, resized), shifted a pixel per frame."""
    import cv2
    from skimage import data

    base = cv2.resize(np.roll(data.astronaut(), 37 * seed, axis=0), (w, h), interpolation=cv2.INTER_AREA)
    return np.stack([np.roll(base, i, axis=1) for i in range(n)])


def _tone(seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * 440 * t)


def test_chunks_cover_every_frame_in_order(tmp_path):
    frames = _frames(23)
    path = V.write_video(tmp_path / "a.mp4", frames, 25)
    chunks = list(V.iter_chunks(path, chunk_size=8))
    assert [c.start for c in chunks] == [0, 8, 16]
    assert sum(len(c.frames) for c in chunks) == 23
    decoded = np.concatenate([c.frames for c in chunks])
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6  # H.264 at crf 18
    times = np.concatenate([c.times for c in chunks])
    assert np.allclose(np.diff(times), 1 / 25, atol=1e-3)


def test_frames_by_index_are_the_chunked_frames_at_those_indices(tmp_path):
    path = V.write_video(tmp_path / "a.mp4", _frames(23), 25)
    every = np.concatenate([c.frames for c in V.iter_chunks(path, chunk_size=8)])
    picked = V.frames_by_index(path, [17, 3, 3, 40, 0])
    assert sorted(picked) == [0, 3, 17]                                  # 40 does not exist; no duplicates
    for i, frame in picked.items():
        np.testing.assert_array_equal(frame, every[i])
    assert V.frames_by_index(path, []) == {}


def test_exact_fractional_fps_is_kept(tmp_path):
    path = V.write_video(tmp_path / "ntsc.mp4", _frames(10), Fraction(30000, 1001))
    assert V.probe(path).fps == Fraction(30000, 1001)


@pytest.mark.parametrize("audio_name", ["speech.wav", "speech.m4a"])
def test_audio_is_carried_over(tmp_path, audio_name):
    src_audio = V.write_audio(tmp_path / audio_name, _tone(1.0), 16000)
    path = V.write_video(tmp_path / "v.mp4", _frames(25), 25, audio_from=src_audio)
    info = V.probe(path)
    assert info.audio_codec == "aac"
    out = V.read_audio(path, 16000)
    ref = V.read_audio(src_audio, 16000)
    n = min(len(out), len(ref))
    assert abs(len(out) - len(ref)) < 2048
    # The tone survives (AAC may shift by its priming delay: compare spectra, not samples).
    spec = np.abs(np.fft.rfft(out[:n]))
    assert abs(np.argmax(spec) * 16000 / n - 440) < 5


def test_remuxed_audio_packets_are_identical(tmp_path):
    src_audio = V.write_audio(tmp_path / "s.m4a", _tone(1.0), 16000)
    first = V.write_video(tmp_path / "first.mp4", _frames(25), 25, audio_from=src_audio)
    second = V.write_video(tmp_path / "second.mp4", _frames(25, seed=1), 25, audio_from=first)
    import av

    def payloads(p):
        with av.open(str(p)) as c:
            return [bytes(pk) for pk in c.demux(c.streams.audio[0]) if pk.size]

    assert payloads(first) == payloads(second)


def test_odd_sizes_are_padded_not_cropped(tmp_path):
    path = V.write_video(tmp_path / "odd.mp4", _frames(5, h=33, w=47), 25)
    info = V.probe(path)
    assert (info.height, info.width) == (34, 48)


def test_existing_output_is_never_overwritten_without_consent(tmp_path):
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"user data")
    with pytest.raises(V.VideoError, match="already exists"):
        V.write_video(target, _frames(3), 25)
    assert target.read_bytes() == b"user data"


def test_failure_midway_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with V.VideoWriter(target, 25) as writer:
            writer.write(_frames(3))
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_unreadable_input_gives_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(V.VideoError, match="not a readable video"):
        V.probe(bad)
    with pytest.raises(V.VideoError, match="no such file"):
        V.probe(tmp_path / "missing.mp4")


def test_a_photo_that_opens_but_does_not_decode_is_refused_in_one_line(tmp_path):
    """Random bytes named .jpg open (the image2 demuxer goes by the name) and fail at the first decode, which
    probe does for the display matrix: a VideoError naming the picture, not a traceback from PyAV."""
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(V.VideoError, match="not a readable picture: .*noise.jpg"):
        V.probe(noise)
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(V.VideoError, match="not a readable picture"):
        V.probe(empty)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_photo_shows_as_its_exif_orientation_says_mirrored_ones_too(tmp_path, orientation):
    """A phone photo stores its pixels sideways or mirrored with an EXIF Orientation tag; the decoded picture is
    the upright one. The flip of 2, 4, 5 and 7 is not in the rotation PyAV reports: it came out mirrored."""
    from PIL import Image

    upright = np.zeros((48, 64, 3), np.uint8)                       # H x W: four distinct corners
    upright[:24, :32], upright[:24, 32:], upright[24:, :32] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    to_stored = {2: Image.FLIP_LEFT_RIGHT, 3: Image.ROTATE_180, 4: Image.FLIP_TOP_BOTTOM, 5: Image.TRANSPOSE,
                 6: Image.ROTATE_90, 7: Image.TRANSVERSE, 8: Image.ROTATE_270}
    stored = Image.fromarray(upright)
    if orientation in to_stored:
        stored = stored.transpose(to_stored[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    stored.save(path, exif=exif, quality=95)
    info = V.probe(path)
    assert (info.height, info.width) == (48, 64)
    frames, _ = V.read_frames(path)
    assert np.abs(frames[0].astype(int) - upright).mean() < 8
    assert np.abs(V.frames_by_index(path, [0])[0].astype(int) - upright).mean() < 8


@pytest.mark.parametrize("orientation", [2, 3, 6])
def test_a_transparent_photo_keeps_its_alpha_where_its_picture_shows(tmp_path, orientation):
    """The alpha carried into a PNG edit is turned upright like the decoded picture: read as stored it landed
    turned (3), mirrored (2) or, on a non-square photo turned a quarter (6), was dropped."""
    from PIL import Image

    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, 32:] = (50, 200, 50)
    alpha = np.full((48, 64), 255, np.uint8)
    alpha[:24, :32] = 0                                               # the upright top-left quarter is see-through
    to_stored = {2: Image.FLIP_LEFT_RIGHT, 3: Image.ROTATE_180, 6: Image.ROTATE_90}
    stored = Image.fromarray(np.dstack([rgb, alpha]), "RGBA").transpose(to_stored[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    stored.save(path, exif=exif)
    frames, _ = V.read_frames(path)
    out = tmp_path / "edit.png"
    with V.VideoWriter(out, 25, audio_from=path) as writer:
        writer.write(frames[0])
    import cv2

    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written.shape == (48, 64, 4) and np.array_equal(written[..., 3], alpha)


def test_a_photo_header_past_pillows_size_guard_is_no_traceback(tmp_path):
    """Only the EXIF is read with Pillow, never the pixels: a header claiming 200 MP (a real phone photo's size,
    or a damaged header) must not hit Pillow's decompression-bomb error."""
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    first = struct.unpack("<I", data[4:8])[0]
    for k in range(struct.unpack("<H", data[first:first + 2])[0]):       # ImageWidth/ImageLength → 20000 x 10000
        entry = first + 2 + 12 * k
        tag, kind = struct.unpack("<HH", data[entry:entry + 4])
        if tag in (256, 257):
            value = 20000 if tag == 256 else 10000
            data[entry + 8:entry + 12] = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
    path = tmp_path / "huge.tiff"
    path.write_bytes(bytes(data))
    limit = Image.MAX_IMAGE_PIXELS
    try:
        V.probe(path)
    except V.VideoError:
        pass                                                           # a one-line refusal is fine too
    assert Image.MAX_IMAGE_PIXELS == limit                             # the guard is back for everyone else


def test_a_jpeg_compressed_tiff_is_refused_in_one_line_not_decoded_black(tmp_path):
    """The bundled FFmpeg hands back an all-black picture for a JPEG-compressed TIFF (the user would be told
    "no face found"); an LZW one decodes as it is."""
    from PIL import Image

    picture = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "scan.tif", compression="jpeg")
    Image.fromarray(picture).save(tmp_path / "lzw.tiff", compression="tiff_lzw")
    with pytest.raises(V.VideoError, match="not a readable picture: .*jpeg compression"):
        V.probe(tmp_path / "scan.tif")
    frames, _ = V.read_frames(tmp_path / "lzw.tiff")
    assert np.array_equal(frames[0], picture)


def test_check_output_path_refuses_input_and_unwritable(tmp_path):
    src = V.write_video(tmp_path / "in.mp4", _frames(3), 25)
    with pytest.raises(V.VideoError, match="is the input"):
        V.check_output_path(src, inputs=(src,), overwrite=True)
    with pytest.raises(V.VideoError, match="does not exist"):
        V.check_output_path(tmp_path / "nope" / "o.mp4")


def _reencode(src, dst):
    """Decode → encode round trip through the streaming API."""
    info = V.probe(src)
    with V.VideoWriter(dst, info.fps, audio_from=src) as writer:
        for chunk in V.iter_chunks(src, chunk_size=7):
            writer.write(chunk.frames)
    return dst


@pytest.mark.parametrize("n_frames, with_audio", [(1, False), (1, True), (30, False), (30, True)])
def test_round_trip_keeps_frames_fps_and_audio_duration(tmp_path, n_frames, with_audio):
    audio = V.write_audio(tmp_path / "a.m4a", _tone(n_frames / 25), 16000) if with_audio else None
    src = V.write_video(tmp_path / "src.mp4", _frames(n_frames, h=48, w=64), Fraction(25), audio_from=audio)
    out = _reencode(src, tmp_path / "out.mp4")
    a, b = V.probe(src), V.probe(out)
    assert b.n_frames == a.n_frames == n_frames
    assert b.fps == a.fps
    assert b.has_audio == with_audio
    if with_audio:
        assert abs(len(V.read_audio(out)) - len(V.read_audio(src))) <= 1024  # ±1 AAC frame


def test_rotation_metadata_is_applied_on_decode(tmp_path):
    import av

    frames = _frames(4, h=48, w=64)
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(90)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    info = V.probe(path)
    assert info.rotation == 90 and (info.height, info.width) == (64, 48)
    decoded, _ = V.read_frames(path)
    assert decoded.shape == (4, 64, 48, 3)
    # 90° counter-clockwise display rotation: the stored picture turned by np.rot90.
    assert np.abs(decoded[0].astype(int) - np.rot90(frames[0]).astype(int)).mean() < 8
    out = _reencode(path, tmp_path / "upright.mp4")
    assert V.probe(out).rotation == 0 and V.probe(out).height == 64


def test_sample_saves_its_driving_signal(tmp_path):
    from spfem_cli.demo.sample import load_signal, make_talking_clip

    clip = make_talking_clip(tmp_path / "s.mp4", seconds=0.4, fps=25, head_motion=False)
    np.testing.assert_allclose(load_signal(clip.path), clip.mouth_signal, atol=1e-6)
    assert V.probe(clip.path).n_frames == len(clip.mouth_signal) == 10


def test_a_picture_output_holds_one_frame_exactly(tmp_path):
    import cv2

    frame = np.random.default_rng(0).integers(0, 256, (31, 40, 3), np.uint8)
    with V.VideoWriter(tmp_path / "p.png", 25) as writer:
        writer.write(frame)
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(tmp_path / "p.png")), cv2.COLOR_BGR2RGB), frame)  # PNG: lossless, odd size kept
    with pytest.raises(V.VideoError, match="holds one frame"), V.VideoWriter(tmp_path / "q.jpg", 25) as writer:
        writer.write(np.stack([frame, frame]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]          # nothing half-written left
