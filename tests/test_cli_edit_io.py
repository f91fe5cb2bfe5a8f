"""`spfem edit` as users drive it (subprocess, stderr piped): timing, output paths, containers, several
inputs, spans, signals, and how much it prints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest

from spfem_cli.video import VideoWriter, frame_times, probe, read_audio, write_audio

VFR_TIMES = np.r_[np.arange(30) / 25, 1.2 + np.arange(10) / 12.5]     # 30 frames at 25 fps, then 12.5 fps


def _audio_start(path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.start_time * stream.time_base)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory):
    """A talking clip whose frame rate halves after 1.2 s, with its speech track."""
    from spfem_cli.demo.sample import render_frame, speech_like_audio, speech_like_signal

    folder = tmp_path_factory.mktemp("vfr")
    signal_25 = speech_like_signal(50, 25.0, seed=7)
    wav = write_audio(folder / "speech.wav", speech_like_audio(signal_25, 25.0, seed=7), 16000)
    path = folder / "vfr.mp4"
    with VideoWriter(path, 25, audio_from=wav) as writer:
        for t in VFR_TIMES:
            frame = render_frame(float(signal_25[min(int(t * 25), 49)]), float(t), size=(240, 320), face_scale=0.9)
            writer.write(frame, np.array([t]))
    return path


def test_vfr_edit_keeps_every_frame_time_and_the_audio_offset(vfr_clip, tmp_path, spfem):
    probed = spfem("probe", vfr_clip)
    assert probed.returncode == 0 and "variable frame rate" in probed.stdout
    out = tmp_path / "vfr.happy.mp4"
    result = spfem("edit", vfr_clip, "-e", "happy", "-o", out)
    assert result.returncode == 0, result.stderr
    source, edited = frame_times(vfr_clip), frame_times(out)
    assert len(edited) == len(source) == len(VFR_TIMES)
    half_frame = np.diff(source) / 2
    assert np.all(np.abs(edited - source)[1:] < half_frame) and abs(edited[0] - source[0]) < half_frame[0]
    assert _audio_start(out) == pytest.approx(_audio_start(vfr_clip), abs=1e-3)
    assert probe(out).audio_codec == "aac"


def test_existing_folder_gets_default_names_and_a_span_is_cut_with_its_audio(small_clip, tmp_path, spfem):
    folder = tmp_path / "existing"
    folder.mkdir()
    result = spfem("edit", small_clip.path, "-e", "sad", "-o", folder, "--plot", f"{folder}/",
                   "--start", "0.2", "--end", "0.6")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["small.sad.mouth.png", "small.sad.mp4"]
    out = folder / "small.sad.mp4"
    assert len(frame_times(out)) == 10                                   # 0.2 s .. 0.6 s at 25 fps
    assert len(read_audio(out)) / 16000 == pytest.approx(0.4, abs=0.07)   # audio cut to the same span


@pytest.mark.parametrize("given, message", [("out.avi", ".mp4, .mov, .mkv"), ("noext", "end the name with /"),
                                            ("-", "standard output")])
def test_unsupported_outputs_are_refused_before_work(small_clip, tmp_path, spfem, given, message):
    result = spfem("edit", small_clip.path, "-e", "happy", "-o", tmp_path / given if given != "-" else "-")
    assert result.returncode == 1 and message in result.stderr
    assert len(_lines(result.stderr)) == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_webp_or_bmp_photo_is_edited_into_a_png(small_clip, tmp_path, spfem):
    """Photos spfem reads but does not write (.webp, .bmp, .tiff) give a PNG, not a one-frame MP4; asked for
    one of those as the output, the edit is refused before any work."""
    import cv2

    from spfem_cli.edit.naming import resolve_output
    from spfem_cli.video import read_frames

    assert resolve_output(tmp_path / "scan.BMP", None, "sad") == tmp_path / "scan.sad.png"
    assert resolve_output(tmp_path / "scan.tif", f"{tmp_path}/", "sad") == tmp_path / "scan.sad.png"
    frames, _ = read_frames(small_clip.path)
    photo = tmp_path / "face.webp"
    cv2.imwrite(str(photo), cv2.cvtColor(frames[5], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 101])
    result = spfem("edit", photo, "-e", "happy")
    assert result.returncode == 0, result.stderr
    assert "a photo, face found" in result.stderr + result.stdout
    edited = cv2.imread(str(tmp_path / "face.happy.png"))
    assert edited is not None and edited.shape == frames[5].shape
    refused = spfem("edit", photo, "-e", "happy", "-o", tmp_path / "out.webp")
    assert refused.returncode == 1 and ".png, .jpg" in refused.stderr and len(_lines(refused.stderr)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.happy.png", "face.webp"]


def test_a_one_frame_gif_is_a_photo_and_an_animated_one_a_video(small_clip, tmp_path, spfem):
    """A still saved as GIF is edited into a PNG (it was a one-frame MP4 at FFmpeg's default 100 frames/s); a GIF
    of several frames stays a video, and a GIF rewritten as a still is read again."""
    from PIL import Image

    from spfem_cli.edit.naming import resolve_output
    from spfem_cli.video import is_image_file, read_frames

    frames, _ = read_frames(small_clip.path)
    still, moving = tmp_path / "face.gif", tmp_path / "talk.gif"
    Image.fromarray(frames[5]).save(still)
    Image.fromarray(frames[0]).save(moving, save_all=True, append_images=[Image.fromarray(frames[9])], duration=40)
    assert is_image_file(still) and not is_image_file(moving)
    assert resolve_output(moving, None, "sad") == tmp_path / "talk.sad.mp4"
    Image.fromarray(frames[3]).save(moving)
    assert is_image_file(moving) and resolve_output(moving, None, "sad") == tmp_path / "talk.sad.png"
    result = spfem("edit", still, "-e", "happy")
    assert result.returncode == 0, result.stderr
    assert "a photo, face found" in result.stderr + result.stdout
    with Image.open(tmp_path / "face.happy.png") as edited:
        assert edited.size == (frames[5].shape[1], frames[5].shape[0])


def test_probe_calls_a_still_a_still_picture(small_clip, tmp_path, spfem):
    """FFmpeg gives a still a nominal frame rate (25, or 100 for a GIF) and no length; probe said "100.000 fps,
    0.000 s" of a one-frame GIF. A still is said to be one, in text and in --json; a video is probed as before."""
    from PIL import Image

    from spfem_cli.video import read_frames

    frames, _ = read_frames(small_clip.path)
    for name in ("face.gif", "face.png"):
        Image.fromarray(frames[2]).save(tmp_path / name)
        text = spfem("probe", tmp_path / name)
        assert text.returncode == 0 and "a still picture" in text.stdout and "fps" not in text.stdout, text.stdout
        assert json.loads(spfem("--json", "probe", tmp_path / name).stdout)["still_picture"] is True
    video = spfem("--json", "probe", small_clip.path)
    assert json.loads(video.stdout)["still_picture"] is False and json.loads(video.stdout)["fps"] == 25.0


def test_an_output_folder_that_cannot_be_created_is_one_line(small_clip, tmp_path, spfem):
    """-o DIR/ is created; when a file stands in the way (or permission is missing) that is said in one line."""
    blocker = tmp_path / "taken.mp4"
    blocker.write_bytes(b"mine")
    for given in (f"{blocker}/sub/", f"{blocker}/"):
        result = spfem("edit", small_clip.path, "-e", "happy", "-o", given, "--side-by-side", given)
        assert result.returncode == 1 and "Traceback" not in result.stderr and len(_lines(result.stderr)) == 1
        assert str(blocker) in result.stderr
    assert blocker.read_bytes() == b"mine" and sorted(p.name for p in tmp_path.iterdir()) == ["taken.mp4"]


def test_a_batch_never_writes_over_one_of_its_inputs(tmp_path, spfem):
    """`spfem edit *.mp4 -e happy --overwrite` run a second time globs the first run's x.happy.mp4 too: x.mp4's
    edit would replace it before it is edited itself. Refused before any work, every file as it was."""
    clip, earlier = tmp_path / "x.mp4", tmp_path / "x.happy.mp4"
    clip.write_bytes(b"clip")
    earlier.write_bytes(b"mine")
    result = spfem("edit", clip, earlier, "-e", "happy", "--overwrite")
    assert result.returncode == 1 and "also an input" in result.stderr and len(_lines(result.stderr)) == 1
    assert clip.read_bytes() == b"clip" and earlier.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.happy.mp4", "x.mp4"]
    side = tmp_path / "x.happy.sbs.mp4"                 # the same through a side-by-side kept next to the inputs
    earlier.unlink()
    side.write_bytes(b"mine")
    result = spfem("edit", clip, side, "-e", "happy", "-o", f"{tmp_path}/out/", "--side-by-side", f"{tmp_path}/",
                   "--overwrite")
    assert result.returncode == 1 and "also an input" in result.stderr and len(_lines(result.stderr)) == 1
    assert side.read_bytes() == b"mine" and not any((tmp_path / "out").iterdir())


def test_several_inputs_into_a_new_folder_one_bad_the_others_done(small_clip, tmp_path, spfem):
    second = tmp_path / "second.mp4"
    shutil.copyfile(small_clip.path, second)
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    out = tmp_path / "new" / "out"
    result = spfem("edit", small_clip.path, bad, second, "-e", "happy", "-o", f"{out}/", "--json")
    assert result.returncode == 1
    assert out.is_dir(), result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["second.happy.mp4", "small.happy.mp4"]
    assert sum("failed" in line and "bad.mp4" in line for line in _lines(result.stderr)) == 1
    report = json.loads(result.stdout)
    assert report["failed"] == 1 and [r["ok"] for r in report["results"]] == [True, False, True]
    assert report["results"][0]["frames"] == 25 and report["results"][0]["backend"] == "warp"


@pytest.mark.slow
def test_a_successful_edit_prints_at_most_three_lines_when_piped(small_clip, tmp_path, spfem):
    clean = {"SPFEM_HOME": str(tmp_path / "home"), "TORCH_HOME": str(tmp_path / "torch")}  # nothing cached
    mkv = tmp_path / "o.mkv"
    result = spfem("edit", small_clip.path, "-e", "happy", "-o", mkv, env=clean)
    assert result.returncode == 0, result.stderr
    assert 1 <= len(_lines(result.stderr)) <= 3, result.stderr
    assert "W0000" not in result.stderr and "TensorFlow Lite" not in result.stderr and result.stdout == ""
    with av.open(str(mkv)) as container:                       # the extension chose the container
        assert container.format.name.startswith("matroska") and container.streams.audio
    assert len(frame_times(mkv)) == 25
    mov = tmp_path / "q.mov"
    quiet = spfem("edit", small_clip.path, "-e", "sad", "-o", mov, "--quiet", "--end", "0.2")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
    with av.open(str(mov)) as container:
        assert "mov" in container.format.name and container.streams.video[0].frames == 5


def test_plain_progress_lines_when_not_a_terminal(monkeypatch, capsys):
    from spfem_cli import progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    with progress.frame_progress(True, 100, "rendering (warp)") as advance:
        for _ in range(10):
            advance(10)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"rendering (warp): {p} % ({p}/100)" for p in range(10, 100, 10)]
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 3600.0)        # a short run prints nothing
    with progress.frame_progress(True, 100, "tracking") as advance:
        advance(100)
    assert capsys.readouterr().err == ""


def test_sigterm_mid_render_leaves_the_folder_as_it_was(sample_clip, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    before = sorted(os.listdir(folder))
    proc = subprocess.Popen([sys.executable, "-m", "spfem_cli.app", "edit", str(sample_clip.path), "-e", "happy",
                             "-o", str(folder / "x.mp4"), "--side-by-side", str(folder / "x.sbs.mp4"),
                             "--preset", "slow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not any(n.startswith(".x") for n in os.listdir(folder)):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)                                  # rendering has started: temp files are being written
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(os.listdir(folder)) == before


def test_face_beyond_the_faces_found_says_how_many(small_clip, tmp_path, spfem):
    result = spfem("edit", small_clip.path, "-e", "happy", "--face", "2", "-o", tmp_path / "o.mp4", "--allow-no-face")
    assert result.returncode == 1
    assert "at most 1 face" in result.stderr and "--face 0" in result.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_timeline_outside_the_video_and_cuda_without_gpu_are_refused(small_clip, tmp_path, spfem):
    result = spfem("edit", small_clip.path, "--timeline", "happy@10-20", "-o", tmp_path / "o.mp4")
    assert result.returncode == 1 and "starts after the video ends" in result.stderr
    import torch

    if not torch.cuda.is_available():
        result = spfem("edit", small_clip.path, "-e", "happy", "--backend", "warp", "--device", "cuda",
                       "-o", tmp_path / "o.mp4")
        assert result.returncode == 1 and "no CUDA GPU" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_plot_of_a_one_frame_clip_has_no_nan(tmp_path, spfem):
    from spfem_cli.demo.sample import make_talking_clip

    clip = make_talking_clip(tmp_path / "one.mp4", seconds=0.04, fps=25, size=(240, 320), face_scale=0.9)
    result = spfem("--json", "edit", clip.path, "-e", "happy", "-o", tmp_path / "o.mp4", "--plot", tmp_path / "o.png")
    assert result.returncode == 0, result.stderr
    assert "nan" not in result.stderr.lower() and "r = n/a" in result.stderr
    data = json.loads(result.stdout)
    assert data["mouth_r"] is None and data["drawn_r"] is None


def test_a_photo_is_edited_into_a_photo(small_clip, tmp_path, spfem):
    """face.jpg → face.happy.jpg (and its side-by-side), not a one-frame video; a video is never squeezed into
    a picture: asked for one, the edit is refused before any work."""
    import cv2

    from spfem_cli.video import read_frames

    frames, _ = read_frames(small_clip.path)
    photo = tmp_path / "face.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(frames[5], cv2.COLOR_RGB2BGR))
    result = spfem("edit", photo, "-e", "happy", "--side-by-side", f"{tmp_path}/")
    assert result.returncode == 0, result.stderr
    assert "a photo, face found" in result.stderr + result.stdout
    assert "truncated" not in result.stderr
    cut_off = tmp_path / "cut_off.jpg"                                 # a download that stopped halfway
    cut_off.write_bytes(photo.read_bytes()[: photo.stat().st_size * 3 // 4])
    partial = spfem("edit", cut_off, "-e", "happy")
    assert partial.returncode == 0 and "warning: " in partial.stderr and "is truncated" in partial.stderr
    edited = cv2.imread(str(tmp_path / "face.happy.jpg"))
    source = cv2.imread(str(photo))
    assert edited.shape == source.shape and np.abs(edited.astype(int) - source).mean() > 0.2     # the face moved
    assert cv2.imread(str(tmp_path / "face.happy.sbs.jpg")).shape[1] == 2 * source.shape[1]
    png = tmp_path / "face.png"                                        # a PNG has no duration: still a photo
    alpha = np.full(frames[5].shape[:2], 255, np.uint8)
    alpha[:20, :30] = 0                                                # a cut-out: its transparency is kept
    cv2.imwrite(str(png), np.dstack([cv2.cvtColor(frames[5], cv2.COLOR_RGB2BGR), alpha]))
    result = spfem("edit", png, "-e", "sad")
    assert result.returncode == 0, result.stderr
    edited_png = cv2.imread(str(tmp_path / "face.sad.png"), cv2.IMREAD_UNCHANGED)
    assert edited_png.shape == (*frames[5].shape[:2], 4) and np.array_equal(edited_png[..., 3], alpha)
    cut = spfem("edit", png, "-e", "sad", "--end", "1", "-o", tmp_path / "cut.png")
    assert cut.returncode == 1 and "is a photo" in cut.stderr and not (tmp_path / "cut.png").exists()
    plot = spfem("edit", png, "-e", "sad", "-o", tmp_path / "p.png", "--plot", tmp_path / "mouth.png")
    assert plot.returncode == 1 and "is a photo" in plot.stderr and len(_lines(plot.stderr)) == 1
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "mouth.png").exists()
    into = spfem("edit", png, "-e", "sad", "-o", tmp_path / "p.png", "--plot", f"{tmp_path}/plots/")
    assert into.returncode == 1 and "is a photo" in into.stderr and not (tmp_path / "plots").exists()   # no folder made
    batch = spfem("edit", small_clip.path, png, "-e", "sad", "-o", f"{tmp_path}/batch/", "--plot", f"{tmp_path}/batch/")
    assert batch.returncode == 0, batch.stderr                         # the photo of a batch gets no plot, the clip does
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == ["face.sad.png", "small.sad.mouth.png", "small.sad.mp4"]
    refused = spfem("edit", small_clip.path, "-e", "happy", "-o", tmp_path / "still.png")
    assert refused.returncode == 1 and "is a picture" in refused.stderr and len(_lines(refused.stderr)) == 1
    assert not (tmp_path / "still.png").exists()
