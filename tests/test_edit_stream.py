"""The streamed pass's memory policy: frame buffers are their own mappings, smaller temporaries are reused."""

from __future__ import annotations

import queue
import resource
import threading

import numpy as np
import pytest

from spfem_cli.edit.stream import pin_mmap_threshold

H, W = 360, 640


def _faults(make) -> int:
    """Minor page faults of this thread while ``make()`` allocates and touches a buffer."""
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    buf = make()
    after = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    del buf
    return after - before


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) / 1024


@pytest.fixture
def pinned():
    if not hasattr(resource, "RUSAGE_THREAD") or not pin_mmap_threshold((H, W)):
        pytest.skip("needs Linux with glibc")
    yield
    pin_mmap_threshold((1, 1))                             # back to the 128 KiB floor for other tests


def test_temporaries_under_a_frame_reuse_heap_memory(pinned):
    temp = H * W                                           # a face-box temporary: under the yuv420p picture
    _faults(lambda: np.ones(temp, np.uint8))
    assert _faults(lambda: np.ones(temp, np.uint8)) < temp // 4096 // 4, "reused, not fresh zeroed pages"


def test_frames_freed_in_another_thread_do_not_grow_memory(pinned):
    """Frames made by a decoder thread and freed by an encoder thread, with a little per-frame data kept
    (a track) and temporaries of varying size in between: memory grows by the kept data only."""
    frames: queue.Queue = queue.Queue(maxsize=4)
    kept: list[np.ndarray] = []
    rng = np.random.default_rng(0)
    n = 1500

    def decoder() -> None:
        for i in range(n):
            frame = np.full((H, W, 3), i % 256, np.uint8)
            kept.append(np.full(478 * 2, float(i)))
            np.ones(int(rng.integers(20, 300)) * 1024, np.uint8)
            frames.put(frame)
        frames.put(None)

    def encoder() -> None:
        while (frame := frames.get()) is not None:
            frame.astype(np.float32)

    start = _rss_mib()
    threads = [threading.Thread(target=decoder), threading.Thread(target=encoder)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grown = _rss_mib() - start
    assert grown < sum(k.nbytes for k in kept) / 2 ** 20 + 6.0
