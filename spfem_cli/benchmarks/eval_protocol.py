"""Issue 14 item 8: the size of the evaluation-protocol differences, measured on one clip's inputs.

No evaluator weights are needed: each row compares what reaches the networks. The clip is
``$SPFEM_BENCH_CLIP`` (a real talking-head video with stereo sound, e.g. a LivePortrait example) or,
without it, the bundled synthetic sample with a made-up stereo track.
Rows: the c0 shift of the old 0.7071·(L+R) downmix; the MFCC change from libswresample (ours) to
soxr_hq (``librosa.load``'s default, CDRL's reader) at 16 kHz; FAD pixels changed by PIL bilinear
(CDRL) vs OpenCV ``INTER_AREA`` (the old resize); PSNR of the ffmpeg-style MPEG-4 q2 + JPEG q2 round
trip that the wav2lip reference applies to the frames and we skip, and of the JPEGs its scoring script
extracts at ffmpeg's default quality.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from spfem_cli.benchmarks.runner import BenchRow

FF_QP2LAMBDA = 118


def _clip(tmp: Path) -> tuple[Path, str]:
    path = os.environ.get("SPFEM_BENCH_CLIP")
    if path:
        return Path(path), Path(path).name
    from spfem_cli.demo.sample import make_talking_clip

    make_talking_clip(tmp / "sample.mp4", seconds=3.0, fps=30)
    return tmp / "sample.mp4", "synthetic sample"


def _audio(path: Path, rate: int | None) -> tuple[np.ndarray, int]:
    """All channels as float, at ``rate`` (None = native) through libswresample."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", rate=rate)
        parts = [o.to_ndarray() for f in container.decode(stream) for o in resampler.resample(f)]
        parts += [o.to_ndarray() for o in resampler.resample(None)]
        return np.concatenate(parts, axis=1).astype(np.float64), rate or stream.rate


def _roundtrip(frames: np.ndarray, codec: str, pix_fmt: str, q: int | None = 2) -> np.ndarray:
    """Encode and decode with libavcodec at a fixed quantiser (ffmpeg ``-qscale:v q``), or with ffmpeg's
    default rate control (200 kb/s at 25 fps) when ``q`` is None."""
    enc = av.codec.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt, enc.time_base = frames.shape[2], frames.shape[1], pix_fmt, Fraction(1, 25)
    enc.framerate = Fraction(25)
    if q is not None:
        enc.qscale, enc.global_quality, enc.qmin, enc.qmax = True, q * FF_QP2LAMBDA, q, q
    packets = []
    for i, frame in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=pix_fmt)
        vf.pts = i
        packets += enc.encode(vf)
    packets += enc.encode(None)
    dec = av.codec.CodecContext.create(codec, "r")
    dec.extradata = enc.extradata
    out = [f.to_ndarray(format="rgb24") for p in packets for f in dec.decode(p)]
    return np.stack(out + [f.to_ndarray(format="rgb24") for f in dec.decode(None)])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2)))


def run() -> list[BenchRow]:
    with tempfile.TemporaryDirectory() as tmp:
        return _measure(*_clip(Path(tmp)))


def _measure(path: Path, name: str) -> list[BenchRow]:
    import soxr

    from spfem_cli.evaluate.embedders import fad_input
    from spfem_cli.evaluate.mfcc import mfcc
    from spfem_cli.video import iter_chunks

    note = f"{name}; input-level, no weights"
    rows = []
    stereo, _ = _audio(path, 16000)
    mono = stereo.mean(axis=0)
    if stereo.shape[0] == 1:
        stereo = np.stack([stereo[0], np.roll(stereo[0], 37)])      # synthetic second channel
    mean = stereo.mean(axis=0)
    c0_new = mfcc(mean * 32768, 16000)[:, 0]
    c0_old = mfcc(stereo.sum(axis=0) / np.sqrt(2) * 32768, 16000)[:, 0]
    rows.append(BenchRow("eval_protocol", "c0 shift, 0.7071·(L+R) downmix vs channel mean", float(np.median(c0_old - c0_new)),
                         "nats", note))
    native, native_rate = _audio(path, None)
    sox = soxr.resample(native.mean(axis=0), native_rate, 16000, quality="soxr_hq")
    n = min(len(sox), len(mono))
    ours = mfcc(mono[1066:n], 16000, winstep=1 / 120)
    theirs = mfcc(np.asarray(sox[1066:n], np.float64), 16000, winstep=1 / 120)
    voiced = ours[:, 0] > ours[:, 0].max() - np.log(1e4)            # frames within 40 dB of the loudest
    rows.append(BenchRow("eval_protocol", "MFCC c1..c12 |Δ|, libswresample vs soxr_hq (spfem-ned)",
                         float(np.abs(ours[voiced, 1:] - theirs[voiced, 1:]).mean()), "MFCC units",
                         f"{note}; frames within 40 dB of the loudest; coefficient std {ours[voiced, 1:].std():.1f}"))
    frames = next(iter_chunks(path, 32)).frames
    h, w = frames.shape[1:3]
    s = min(h, w)
    faces = np.stack([cv2.resize(f[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s], (256, 256),
                                 interpolation=cv2.INTER_AREA) for f in frames])
    new = np.rint((fad_input(faces)[:, 0].numpy() * 0.5 + 0.5) * 255).astype(int)
    old = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (164, 164), interpolation=cv2.INTER_AREA)[18:146, 18:146]
                    for f in faces]).astype(int)
    rows.append(BenchRow("eval_protocol", "FAD input pixels changed, PIL bilinear vs cv2 INTER_AREA",
                         float(100 * np.mean(new != old)), "%", f"{note}; max {np.abs(new - old).max()} grey levels"))
    even = np.ascontiguousarray(frames[:, : h // 2 * 2, : w // 2 * 2])
    trip = _roundtrip(_roundtrip(even, "mpeg4", "yuv420p"), "mjpeg", "yuvj420p")
    rows.append(BenchRow("eval_protocol", "wav2lip reference's MPEG-4 q2 + JPEG q2 round trip", _psnr(even, trip[:len(even)]),
                         "dB PSNR", f"{note}; {w}×{h} frames"))
    crops = np.stack([cv2.resize(f, (224, 224), interpolation=cv2.INTER_AREA) for f in faces])
    jpeg = _roundtrip(crops, "mjpeg", "yuvj420p", None)
    rows.append(BenchRow("eval_protocol", "wav2lip reference's default-quality JPEG frames (scores_LSE)",
                         _psnr(crops[-16:], jpeg[len(crops) - 16:len(crops)]), "dB PSNR",
                         f"{note}; 224² crops, last 16 of 32 (rate control settled)"))
    return rows
