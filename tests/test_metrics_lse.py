"""MFCC parity with python_speech_features, and LSE-D/LSE-C on clips with a planted audio-visual shift."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from spfem_cli.evaluate import lse
from spfem_cli.evaluate.mfcc import mfcc

# python_speech_features 0.6.1 ``mfcc(x, 16000, winstep=...)`` rows 0, 4, 8 of the signal built in _golden_signal.
GOLDEN = {
    0.01: (9, [[17.390879174554623, -1.214950027335605, -13.308506808207362, 17.762574125952344, -51.90775114471213,
                -43.03837620838541, 1.1925368017006546, -45.240121400309114, -8.061801884494557, 31.752157189428974,
                -11.010095390409639, 15.98471899170535, 23.60764379074864],
               [18.256635169702225, 10.12656007093685, -6.646799133924299, 11.701225827951555, -46.71353315575828,
                -40.47751759282849, 0.0530941748087707, -42.99371555410625, -4.858069388506225, 34.863135267941246,
                -6.179454772404386, 21.221445860805193, 28.1893937205751],
               [18.81023283415372, 13.681847036006586, 0.1889132323404588, 9.132335317868442, -41.30433938194736,
                -33.94634507756761, -0.728597590595068, -37.70278364393209, -1.389513396548532, 33.43602871335441,
                -4.578556036923906, 19.82951999584291, 25.317168585129952]]),
    1 / 120: (11, [[17.390879174554623, -1.214950027335605, -13.308506808207362, 17.762574125952344, -51.90775114471213,
                    -43.03837620838541, 1.1925368017006546, -45.240121400309114, -8.061801884494557, 31.752157189428974,
                    -11.010095390409639, 15.98471899170535, 23.60764379074864],
                   [18.099404911459374, 8.901444216726672, -2.0335278504705165, 14.446620192109469, -46.74067493811067,
                    -37.16860729169644, 2.421131251121265, -41.89311471585939, -3.357321480535279, 36.5277415724007,
                    -5.210958878171273, 21.47373605590945, 28.911804078670468],
                   [18.8418767033485, 17.431745907246114, 8.08261548874692, 24.23821721963402, -47.01192338248212,
                    -36.590799729061274, 6.322642516836967, -40.49449245668004, -2.6025034082936305, 38.573546366078574,
                    -3.933338568922049, 21.60895577980051, 28.444563672589457]]),
}


def _golden_signal() -> np.ndarray:
    t = np.arange(1600) / 16000
    x = 8000 * np.sin(2 * np.pi * 440 * t) * np.linspace(0, 1, 1600) + 500 * np.sin(2 * np.pi * 3100 * t)
    return np.round(x).astype(np.int16).astype(np.float64)


@pytest.mark.parametrize("step", sorted(GOLDEN))
def test_mfcc_matches_python_speech_features(step):
    n_rows, rows = GOLDEN[step]
    out = mfcc(_golden_signal(), 16000, winstep=step)
    assert out.shape == (n_rows, 13)
    np.testing.assert_allclose(out[[0, 4, 8]], rows, rtol=1e-9, atol=1e-9)


class PlantedSync(torch.nn.Module):
    """Towers built so embeddings are comparable: both map the planted per-frame signal to its z-score.

    Lip tower: mean brightness of each of the 5 frames. Audio tower: the loudness of each group of 4
    MFCC columns, sqrt(exp(c0)) (c0 is the log frame energy). Matching windows give equal vectors.
    """

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return _zscore(x.mean(dim=(1, 3, 4)))

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        loud = torch.exp(x[:, 0, 0, :] / 2).reshape(len(x), 5, 4).mean(-1)
        return _zscore(loud)


def _zscore(v: torch.Tensor) -> torch.Tensor:
    v = v - v.mean(dim=1, keepdim=True)
    return v / (v.std(dim=1, keepdim=True) + 1e-6)


def _planted_clip(preset: lse.LsePreset, n_frames: int, lag: int, seed: int = 0):
    """Frames whose brightness follows a random signal s; audio loudness follows s delayed by ``lag`` frames."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0, 1, n_frames + 40)
    fps = float(preset.fps)
    frames = np.empty((n_frames, 224, 224, 3), np.uint8)
    frames[:] = (40 + 180 * s[20:20 + n_frames])[:, None, None, None].astype(np.uint8)
    per_frame = 16000 / fps
    n_samples = int(round(n_frames * per_frame))
    idx = (np.arange(n_samples) / per_frame).astype(int)             # video frame of each audio sample
    loud = 0.05 + 0.9 * s[20 + idx - lag]
    audio = 0.5 * loud * np.sin(2 * np.pi * 1000 * np.arange(n_samples) / 16000)
    return frames, audio.astype(np.float32)


def _chunks(frames: np.ndarray, size: int = 7):
    for s in range(0, len(frames), size):
        yield frames[s:s + size]


@pytest.mark.parametrize("name", ["spfem-ned", "wav2lip"])
@pytest.mark.parametrize("lag", [3, 0, -2])
def test_lse_recovers_a_planted_offset(name, lag):
    preset = lse.PRESETS[name]
    frames, audio = _planted_clip(preset, 60, lag)
    result = lse.lse(PlantedSync(), _chunks(frames), audio, preset)
    assert result.offset == -lag                               # sound `lag` frames late → offset −lag
    mdist = np.array(result.mdist)
    assert int(np.argmin(mdist)) == preset.vshift + lag
    assert result.lse_d == pytest.approx(mdist.min())
    assert result.lse_d < 0.5 * np.median(mdist)               # a clear minimum at the planted shift
    assert result.lse_c == pytest.approx(np.median(mdist) - mdist.min())


@pytest.mark.parametrize("name, offsets, windows", [("spfem-ned", 21, 52), ("wav2lip", 31, 55)])
def test_presets_document_their_window_and_offset_counts(name, offsets, windows):
    preset = lse.PRESETS[name]
    n = 60
    frames, audio = _planted_clip(preset, n, 0)
    result = lse.lse(PlantedSync(), [frames], audio, preset)
    assert preset.n_offsets == offsets == len(result.mdist)
    # spfem-ned (CDRL): min(58 − 5, floor(231 MFCC columns / 4) − 5) = 52 (32000 − 1066 samples → 231 columns);
    # wav2lip (joonson): min(60, floor(38400 / 640)) − 5 = 55. Details: test_eval_protocol_conformance.py.
    assert result.n_windows == windows
    short = audio[: int(len(audio) * 0.5)]                     # shorter audio limits the windows
    assert lse.lse(PlantedSync(), [frames], short, preset).n_windows == {"spfem-ned": 22, "wav2lip": 25}[name]   # floor(111/4) − 5; floor(19200/640) − 5


def test_preset_constants():
    ned, w2l = lse.PRESETS["spfem-ned"], lse.PRESETS["wav2lip"]
    assert (ned.fps, ned.mfcc_step, ned.vshift, ned.skip_frames, ned.trim) == (Fraction(30), 1 / 120, 10, 2, 35)
    assert (w2l.fps, w2l.mfcc_step, w2l.vshift, w2l.skip_frames) == (Fraction(25), 0.01, 15, 0)
    with pytest.raises(ValueError):
        lse.get_preset("nope")


def test_sync_distances_pad_audio_with_zeros_like_the_reference():
    lip = np.ones((3, 2))
    aud = np.full((3, 2), 2.0)
    d = lse.sync_distances(lip, aud, 1)
    assert d.shape == (3, 3)
    assert d[0, 0] == pytest.approx(np.sqrt(2), rel=1e-5)       # window 0 vs the zero pad
    assert d[1, 1] == pytest.approx(np.sqrt(2), rel=1e-5)       # |1 − 2| per dim


def test_crops_are_bgr_224_and_trimmed():
    face = np.zeros((256, 256, 3), np.uint8)
    face[..., 0] = 255                                         # red in RGB
    face[:35] = 0
    crop = lse.lip_crop(face, lse.PRESETS["spfem-ned"])
    assert crop.shape == (224, 224, 3)
    assert crop[..., 2].min() == 255 and crop[..., 0].max() == 0   # red lands in channel 2 (BGR); trim removed the band
    frame = np.zeros((400, 400, 3), np.uint8)
    box = lse.box_crop(frame, np.array([100, 100, 200, 200]))
    assert box.shape[:2] == (140, 140)                         # 1.4 × the 100 px box, shifted down by 0.4·bs


def test_frame_rate_resampling_counts():
    counts = lse.resample_counts(0, 30, Fraction(30), Fraction(25))
    assert counts.sum() == 25 and set(counts) <= {0, 1}
    assert lse.resample_counts(0, 25, Fraction(25), Fraction(30)).sum() == 30
    whole = lse.resample_counts(0, 60, Fraction(30000, 1001), Fraction(25))
    split = np.concatenate([lse.resample_counts(0, 17, Fraction(30000, 1001), Fraction(25)),
                            lse.resample_counts(17, 43, Fraction(30000, 1001), Fraction(25))])
    assert np.array_equal(whole, split)                        # chunking does not change the selection
