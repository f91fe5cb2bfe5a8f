"""Overlap the stages of a streamed edit: decode ahead, encode behind, render in between.

PyAV (decode, colour conversion, x264) and OpenCV release the GIL in their C loops, so a decode
thread and an encode thread run beside the render loop on other cores. Queues are bounded (a few
chunks), so memory stays flat in the video's length. An error or Ctrl-C in any stage stops the
others before the outputs are discarded: a worker never touches a writer that is being aborted.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


M_TRIM_THRESHOLD = -1          # glibc mallopt parameters
M_MMAP_THRESHOLD = -3
FRAME_MMAP_BYTES = 128 * 1024  # the mmap threshold when no frame size is known
HEAP_TRIM_BYTES = 32 << 20     # free heap glibc keeps for reuse before returning it to the OS

_threshold_lock = threading.Lock()
_mmap_threshold: int | None = None


@functools.cache
def _libc():
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def pin_mmap_threshold(frame_hw: tuple[int, int] | None = None) -> bool:
    """Pin glibc's mmap threshold just under the smallest per-frame buffer of ``frame_hw`` (H, W) video
    (its yuv420p picture); False where there is no glibc.

    Frames are allocated in one thread and freed in another. glibc raises its mmap threshold to the
    size of the first freed frame, after which frame buffers come from per-thread heaps that
    fragment: peak memory then grew ~3 MB per second of 640x360 video. With the threshold pinned,
    every frame buffer is its own mapping, returned on free, and memory stays flat in video length.
    Everything smaller (the render's and the tracker's per-frame temporaries) comes from the heap,
    which keeps :data:`HEAP_TRIM_BYTES` free for reuse: pinned at 128 KiB, those temporaries were fresh
    mappings too, each page zeroed by the kernel on first touch (720p first run: 1.3 M page faults,
    ~4 s of system time in a 10 s edit). Without a size (or below it) the threshold is 128 KiB; a call
    without a size keeps a threshold set for a size.
    """
    global _mmap_threshold
    with _threshold_lock:
        if frame_hw is None:
            if _mmap_threshold is not None:
                return True
            threshold = FRAME_MMAP_BYTES
        else:
            threshold = max(FRAME_MMAP_BYTES, int(frame_hw[0]) * int(frame_hw[1]) * 3 // 2)
        if threshold == _mmap_threshold:
            return True
        libc = _libc()
        if libc is None:
            return False
        try:
            pinned = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
            trimmed = bool(libc.mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_BYTES))
        except AttributeError:
            return False
        if pinned and trimmed:        # remembered only when glibc took both (an older glibc caps the threshold)
            _mmap_threshold = threshold
        return pinned and trimmed


@contextlib.contextmanager
def one_thread_pools() -> Iterator[None]:
    """BLAS and OpenCV's thread pool held to one thread (restored after). The edit's per-frame linear
    algebra and image operations are small (the AU read-back, 3-point least squares, the window's small
    solves, remaps of the face box), and the pass's own threads already keep the cores busy; but after
    each parallel call the libraries' idle workers spin in ``sched_yield`` (OpenBLAS took ~14 % of a pass's
    CPU on 2 cores; with OpenCV's pool ~0.7 M yields in a 10 s 720p first run) away from the decoder and
    the encoder. Results are the same: both split work by rows, not by reductions that reorder sums."""
    import cv2
    from threadpoolctl import threadpool_limits

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        cv2.setNumThreads(threads)


class StageClock:
    """Seconds spent per named stage (each stage's own thread), for the benchmark's per-stage rows."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)


class Prefetch(Generic[T]):
    """Iterate ``source`` in a background thread, ``depth`` items ahead of the consumer."""

    def __init__(self, source: Iterable[T], depth: int = 2, *, clock: StageClock | None = None, stage: str = "decode"):
        pin_mmap_threshold()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._clock, self._stage = clock, stage
        self._thread = threading.Thread(target=self._run, args=(iter(source),), daemon=True, name=f"spfem-{stage}")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it: Iterator[T]) -> None:
        try:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                if self._clock is not None:
                    self._clock.add(self._stage, time.perf_counter() - start)
                if not self._put(item):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._error = exc
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
            self._put(_DONE)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Behind:
    """Run ``consume(item)`` in a background thread, ``depth`` items behind the producer."""

    def __init__(self, consume: Callable[[object], None], depth: int = 2, *, clock: StageClock | None = None,
                 stage: str = "encode"):
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._clock, self._stage = clock, stage
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"spfem-{stage}")
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None:
                continue                       # drain after a failure; the producer sees the error
            start = time.perf_counter()
            try:
                self._consume(item)
            except BaseException as exc:  # noqa: BLE001 - raised in the producer's thread
                self._error = exc
            if self._clock is not None:
                self._clock.add(self._stage, time.perf_counter() - start)

    def put(self, item) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self) -> None:
        """Wait until every queued item is consumed; re-raise a worker error."""
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> Behind:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:                                  # stop quickly: drop what is queued, then join
            with self._queue.mutex:
                self._queue.queue.clear()
            self._queue.put(_DONE)
            self._thread.join()
