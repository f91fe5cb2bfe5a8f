"""Issue 14, items 1–7: the evaluation protocol as the reference code runs it.

Every expected value is derived here from the reference's own formula (joonson/syncnet_python and
Wav2Lip ``SyncNetInstance.evaluate``, CDRL ``metrics/lse_*.py``, ``csim.py``, ``models.py``
``get_transforms``), not from the project's output: window counts for given lengths, the c0 of a known
stereo signal, torchvision-on-PIL resizes, Python's ``random.sample`` draw.
"""

from __future__ import annotations

import math
import random
import tomllib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from spfem_cli.evaluate import csim, lse
from spfem_cli.evaluate.embedders import csim_input, fad_input
from spfem_cli.evaluate.mfcc import mfcc
from spfem_cli.video import read_audio

RATE = 16000


class TinySync(torch.nn.Module):
    """Stand-in towers: any embedding works for counting windows."""

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 3, 4))

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, :5, :].mean(dim=-1)


def _frames(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


def _audio(n: int) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / RATE)
            * (1 + np.random.default_rng(n).uniform(0, 1, n))).astype(np.float32) / 2


def _c0(samples: np.ndarray, start: int = 0) -> float:
    """python_speech_features' c0 (log frame energy) of the 25 ms frame at ``start``: pre-emphasis 0.97
    on the whole signal, 400 samples, 512-point power spectrum / 512, summed."""
    x = np.asarray(samples, np.float64)
    emph = np.append(x[0], x[1:] - 0.97 * x[:-1])
    frame = emph[start:start + 400]
    return float(np.log(np.sum(np.abs(np.fft.rfft(frame, 512)) ** 2) / 512))


def _write_stereo_wav(path: Path, left: np.ndarray, right: np.ndarray) -> None:
    """A 16 kHz 16-bit stereo WAV holding exactly the given int16 samples."""
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=RATE)
        stream.layout = "stereo"
        packed = np.stack([left, right], axis=1).reshape(1, -1).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(packed, format="s16", layout="stereo")
        frame.rate, frame.pts = RATE, 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


# 1. Stereo → mono is the mean of the channels (ffmpeg -ac 1 to s16, librosa.load mono=True).
def test_item1_metrics_audio_is_the_mean_of_the_channels(tmp_path):
    n = 4000
    t = np.arange(n) / RATE
    left = 2 * np.round(6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)       # even: the mean is exact
    right = 2 * np.round(3000 * np.sin(2 * np.pi * 1250 * t + 0.3)).astype(np.int16)
    path = tmp_path / "stereo.wav"
    _write_stereo_wav(path, left, right)
    mono = read_audio(path, RATE)
    expected = (left.astype(np.float64) + right) / 2 / 32768
    assert len(mono) == n
    np.testing.assert_allclose(mono, expected, atol=1e-7)
    # c0 of the wav2lip preset's first window: the 16-bit samples (L+R)/2, no √2 gain (that would add ln 2)
    c0 = lse.audio_features(mono, lse.PRESETS["wav2lip"])[0, 0]
    assert c0 == pytest.approx(_c0((left.astype(np.float64) + right) / 2), abs=1e-9)
    assert c0 == pytest.approx(_c0((left.astype(np.float64) + right) / np.sqrt(2)) - math.log(2), abs=1e-9)


# 2. wav2lip preset: joonson scores min(frames, floor(len(audio)/640)) − 5 windows.
@pytest.mark.parametrize("n_frames, n_samples", [(40, 40 * 640), (40, 40 * 640 - 1), (40, 40 * 640 - 300),
                                                 (40, 37 * 640 + 639), (40, 45 * 640), (12, 20 * 640)])
def test_item2_wav2lip_window_count_is_joonsons(n_frames, n_samples):
    expected = min(n_frames, math.floor(n_samples / 640)) - 5
    result = lse.lse(TinySync(), [_frames(n_frames)], _audio(n_samples), "wav2lip")
    assert result.n_windows == expected


# 3. spfem-ned preset = CDRL lse_*.py --skip_frame 2: float audio, 1066-sample cut, CDRL's last window.
def test_item3_ned_preset_cuts_1066_samples_and_feeds_floats():
    preset = lse.PRESETS["spfem-ned"]
    assert preset.audio_skip == (16000 // 30) * 2 == 1066
    audio = _audio(20000)
    cols = lse.audio_features(audio, preset)
    np.testing.assert_allclose(cols, mfcc(audio[1066:].astype(np.float64), RATE, winstep=1 / 120).T)
    # librosa floats in [-1, 1] go in unscaled: c0 of the first frame after the cut
    assert cols[0, 0] == pytest.approx(_c0(audio[1066:]), abs=1e-9)
    assert cols[0, 0] < 0 < _c0(audio[1066:] * 32768)          # an int16 scale would add 2·ln 32768 ≈ 20.8


def _cdrl_n_mfcc(n_samples: int) -> int:
    """Columns python_speech_features makes of ``n_samples - 1066`` at winstep 1/120 (frame 400, step 133)."""
    n = n_samples - 1066
    return 1 if n <= 400 else 1 + math.ceil((n - 400) / 133)


@pytest.mark.parametrize("n_img, n_samples", [(100, 54400), (100, 60000), (60, 54400), (150, 80000), (30, 17000)])
def test_item3_ned_window_count_is_cdrls(n_img, n_samples):
    # CDRL's image list starts at source frame 2; the preset drops frames 0 and 1 of the video itself.
    expected = min(n_img - 5, math.floor(_cdrl_n_mfcc(n_samples) // 4) - 5)
    result = lse.lse(TinySync(), [_frames(n_img + 2)], _audio(n_samples), "spfem-ned")
    assert result.n_windows == expected


def test_item3_ned_generated_frames_are_scored_from_source_frame_2(tmp_path):
    """CDRL's generated-frame folders hold NED's renderer output, frames 2…N−1: FAD/CSIM rows of a generated
    video under spfem-ned start there too (real clips keep every frame)."""
    from spfem_cli.evaluate import run
    from spfem_cli.evaluate.embedders import Embedder, EvalModels
    from spfem_cli.video import write_video

    class Brightness(Embedder):
        def embed(self, faces: np.ndarray) -> np.ndarray:
            return faces.reshape(len(faces), -1).mean(axis=1, keepdims=True)

    frames = np.repeat((np.arange(12) * 20)[:, None, None, None], 64, 1).repeat(64, 2).repeat(3, 3).astype(np.uint8)
    video = write_video(tmp_path / "gen.mp4", frames, 30, crf=0)
    models = EvalModels(Brightness(None, "fad"), Brightness(None, "csim"), TinySync(), torch.device("cpu"))
    skip = lse.PRESETS["spfem-ned"].skip_frames
    gen = run.video_features(video, models, crop="none", want_lse=False, first_face=skip)
    real = run.video_features(video, models, crop="none", want_lse=False)
    assert len(gen.fad) == len(gen.csim) == 12 - 2 and len(real.fad) == 12
    np.testing.assert_allclose(gen.fad[:, 0], real.fad[2:, 0])            # frames 2… exactly


# 4. CSIM: random.seed(1) once; per actor random.sample(sorted paths, 100) of real, then generated frames.
def test_item4_csim_draws_like_cdrl():
    sizes = {"M003": (150, 120), "M009": (80, 230), "W029": (101, 100), "M012": (400, 3)}
    rng = np.random.default_rng(0)
    feats = {a: (rng.normal(size=(r, 6)), rng.normal(size=(g, 6)) + 0.4) for a, (r, g) in sizes.items()}
    state = random.getstate()
    try:
        random.seed(1)
        expected = []
        for actor, (real, gen) in feats.items():
            picked = []
            for kind, rows in (("real", real), ("gen", gen)):
                files = sorted(f"{kind}/happy/{actor}/{i:06d}.png" for i in range(len(rows)))
                if len(files) > 100:
                    files = random.sample(files, 100)
                picked.append(rows[[int(Path(f).stem) for f in files]])
            a = picked[0] / np.linalg.norm(picked[0], axis=1, keepdims=True)
            b = picked[1] / np.linalg.norm(picked[1], axis=1, keepdims=True)
            expected.append((a @ b.T).mean())
    finally:
        random.setstate(state)
    assert csim.csim(feats) == pytest.approx(float(np.mean(expected)), rel=1e-12)
    reordered = dict(reversed(list(feats.items())))           # one stream: the actor order matters
    assert csim.csim(reordered) != pytest.approx(csim.csim(feats), rel=1e-9)


def test_item4_eval_draws_actor_by_actor_in_test_actor_order():
    from spfem_cli.datasets.mead import MEAD_TEST_ACTORS
    from spfem_cli.evaluate import run
    from spfem_cli.evaluate.protocol import Clip, Job, Plan

    actors = [a for a in MEAD_TEST_ACTORS if a in ("W029", "M012")]
    assert actors == ["W029", "M012"]                            # published order, not alphabetical
    rng = np.random.default_rng(1)
    real, generated, per_actor = {}, {}, {}
    for actor in actors:
        clip = Clip(actor, "happy", "happy_level_3_001", Path(f"{actor}.mp4"), None)
        rc, gc = rng.normal(size=(150, 4)) + 0.5, rng.normal(size=(140, 4)) + 0.7
        real[(actor, "happy")] = run.VideoFeatures(np.zeros((150, 512)), rc, None)
        source = Clip(actor, "neutral", "neutral_level_1_001", Path(f"{actor}_n.mp4"), None)
        generated[Job("inter-id", actor, "happy", source, clip)] = run.VideoFeatures(np.zeros((140, 512)), gc, None)
        per_actor[actor] = (rc, gc)
    plan = Plan("mead", {k: [] for k in real}, list(generated))
    got = run.aggregate(plan, real, generated)["inter-id"]["per_emotion"]["happy"]["csim"]
    assert got == pytest.approx(csim.csim(per_actor), abs=1e-7)                # rows are stored as float32
    alphabetical = {a: per_actor[a] for a in sorted(per_actor)}
    assert abs(csim.csim(alphabetical) - got) > 1e-4


# 5. FAD input: PIL convert('L'), torchvision Resize(164) on PIL (bilinear, antialiased), CenterCrop(128).
def _luma(rgb: np.ndarray) -> np.ndarray:
    """PIL's RGB → L: ITU-R 601-2 in 16-bit fixed point, rounded."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def test_item5_fad_input_is_cdrls_pil_pipeline():
    rng = np.random.default_rng(5)
    face = rng.integers(0, 256, (240, 200, 3), dtype=np.uint8)          # H×W, not square
    gray = Image.fromarray(face).convert("L")
    assert np.array_equal(np.asarray(gray), _luma(face))
    resized = np.asarray(gray.resize((164, int(164 * 240 / 200)), Image.BILINEAR))   # W 164, H 196
    top, left = int(round((196 - 128) / 2.0)), int(round((164 - 128) / 2.0))        # 34, 18
    expected = (resized[top:top + 128, left:left + 128].astype(np.float32) / 255 - 0.5) / 0.5
    x = fad_input(face[None])
    assert tuple(x.shape) == (1, 1, 128, 128)
    assert np.array_equal(x[0, 0].numpy(), expected)
    small = rng.integers(0, 256, (164, 164, 3), dtype=np.uint8)         # shorter side already 164: no resize
    assert np.array_equal(fad_input(small[None])[0, 0].numpy(),
                          (_luma(small)[18:146, 18:146].astype(np.float32) / 255 - 0.5) / 0.5)


# 6. CSIM input: Resize(256) keeps the aspect ratio, CenterCrop(224), EfficientFace's exact mean/std.
def test_item6_csim_input_is_cdrls_pil_pipeline():
    from models.efficientface import MEAN, STD

    assert MEAN == (0.57535914, 0.44928582, 0.40079932)
    assert STD == (0.20735591, 0.18981615, 0.18132027)
    face = np.random.default_rng(6).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    resized = np.asarray(Image.fromarray(face).resize((int(256 * 300 / 200), 256), Image.BILINEAR))   # 384×256
    crop = resized[16:240, 80:304]                                      # round((256−224)/2), round((384−224)/2)
    mean, std = np.array(MEAN, np.float32), np.array(STD, np.float32)
    expected = ((crop.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)
    x = csim_input(face[None])
    assert tuple(x.shape) == (1, 3, 224, 224)
    assert np.array_equal(x[0].numpy(), expected)


# 7. The AffectNet-7 EfficientFace file: the Drive id of EfficientFace's README and CDRL's models.py.
def test_item7_efficientface_link_is_the_published_one():
    entry = tomllib.loads((Path(__file__).parents[1] / "weights.toml").read_text())["efficientface_affectnet7"]
    assert any("1nwerwDyDqC2ia1Eqa-S6lb2SipwL-hTs" in url for url in entry["urls"])


def test_presets_name_their_reference():
    ned, w2l = lse.PRESETS["spfem-ned"], lse.PRESETS["wav2lip"]
    assert (ned.fps, ned.mfcc_step, ned.vshift, ned.skip_frames, ned.int16_audio, ned.windows) == (
        Fraction(30), 1 / 120, 10, 2, False, "cdrl")
    assert (w2l.fps, w2l.mfcc_step, w2l.vshift, w2l.skip_frames, w2l.int16_audio, w2l.windows) == (
        Fraction(25), 0.01, 15, 0, True, "joonson")
