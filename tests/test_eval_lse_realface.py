"""LSE on the real-face sample through the real crop path (tracking → aligned face → trimmed lip crop).

The sample's mouth opening and its audio loudness follow one known signal, so a tower pair that reads
mouth darkness from the lip crop and loudness from the MFCCs is in sync at offset 0, and delaying
the audio by k frames must move the reported offset to −k.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spfem_cli.evaluate import lse
from spfem_cli.evaluate.faces import face_chunks, track_arrays
from spfem_cli.video import probe, read_audio

# Mouth of the aligned template (inner lips near (128, 167) in 256²) after the 35 px trim and resize to 224.
_ROWS, _COLS = slice(140, 200), slice(80, 145)


class MouthSync(torch.nn.Module):
    """Lip tower: darkness of the mouth region per frame; audio tower: loudness per frame; both z-scored."""

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return _z(-x[:, :, :, _ROWS, _COLS].mean(dim=(1, 3, 4)))

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return _z(torch.exp(x[:, 0, 0, :] / 2).reshape(len(x), 5, 4).mean(-1))


def _z(v: torch.Tensor) -> torch.Tensor:
    v = v - v.mean(dim=1, keepdim=True)
    return v / (v.std(dim=1, keepdim=True) + 1e-6)


@pytest.fixture(scope="module")
def lip_stream(sample_clip):
    preset = lse.PRESETS["spfem-ned"]
    track = track_arrays(sample_clip.path)
    assert track.valid.all()
    fps = probe(sample_clip.path).fps
    chunks = []
    for chunk in face_chunks(sample_clip.path, preset, crop="track", track=track):
        assert chunk.faces.shape[1:] == (256, 256, 3) and chunk.lips.shape[1:] == (224, 224, 3)
        chunks.append(np.repeat(chunk.lips, lse.resample_counts(chunk.start, len(chunk.lips), fps, preset.fps), 0))
    return preset, chunks, read_audio(sample_clip.path)


def _delayed(audio: np.ndarray, frames: int, fps: float) -> np.ndarray:
    """Audio ``frames`` video frames later (negative: earlier)."""
    n = int(round(abs(frames) * 16000 / fps))
    return np.concatenate([np.zeros(n, np.float32), audio]) if frames >= 0 else audio[n:]


def test_lse_on_the_tracked_sample_follows_a_planted_delay(lip_stream):
    preset, chunks, audio = lip_stream
    base = lse.lse(MouthSync(), chunks, audio, preset)
    # The clip is in sync up to a frame: its audio envelope ramps towards the next frame's opening while a
    # frame is held, and 25 → 30 fps frame selection shows each picture up to one frame late.
    assert abs(base.offset) <= 1
    assert base.lse_c > 0.5
    for delay in (3, -2):
        result = lse.lse(MouthSync(), chunks, _delayed(audio, delay, float(preset.fps)), preset)
        assert result.offset == base.offset - delay
        assert result.lse_d == pytest.approx(min(result.mdist))
