"""The streamed pass's memory policy: frame buffers are their own mappings, smaller temporaries are reused."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from spfem_cli.edit.stream import pin_mmap_threshold


def _faults(make) -> int:
    """Minor page faults of this thread while ``make()`` allocates and touches a buffer."""
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    buf = make()
    after = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    del buf
    return after - before


def test_threshold_maps_frames_and_reuses_smaller_buffers():
    if not hasattr(resource, "RUSAGE_THREAD") or not pin_mmap_threshold((720, 1280)):
        pytest.skip("needs Linux with glibc")
    try:
        temp_pages = (1 << 20) // 4096                     # a 1 MiB temporary: under a 720p yuv picture
        frame_pages = 720 * 1280 * 3 // 4096
        _faults(lambda: np.ones(1 << 20, np.uint8))
        assert _faults(lambda: np.ones(1 << 20, np.uint8)) < temp_pages // 4, "heap memory reused, not re-faulted"
        # A frame is a fresh mapping each time: returned to the OS on free (memory flat in video length).
        assert _faults(lambda: np.ones((720, 1280, 3), np.uint8)) >= frame_pages * 0.9
        assert _faults(lambda: np.ones((720, 1280, 3), np.uint8)) >= frame_pages * 0.9
    finally:
        pin_mmap_threshold((1, 1))                         # back to the 128 KiB floor for other tests
