"""Native library log noise is dropped from file descriptor 2; everything else written there gets through."""

from __future__ import annotations

import os

from spfem_cli.native_logs import native_logs_filtered


def test_native_noise_is_dropped_and_other_lines_kept(capfd, monkeypatch):
    monkeypatch.delenv("SPFEM_NATIVE_LOGS", raising=False)
    with native_logs_filtered():
        os.write(2, b"W0000 00:00:1796146585.272951   27719 inference_feedback_manager.cc:114] Feedback manager\n")
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"error: something the user must see\n")
    err = capfd.readouterr().err
    assert err == "error: something the user must see\n"
    os.write(2, b"W0000 00:00:1.0 1 x.cc:9] after the block\n")          # fd 2 is the real stream again
    assert "after the block" in capfd.readouterr().err
