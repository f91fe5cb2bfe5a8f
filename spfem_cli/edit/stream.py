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


M_MMAP_THRESHOLD = -3          # glibc mallopt parameter
FRAME_MMAP_BYTES = 128 * 1024  # blocks at least this big come from mmap and go back to the OS when freed


@functools.cache
def fixed_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold (once per process; False where there is no glibc).

    Frames are allocated in one thread and freed in another. glibc raises its mmap threshold to the
    size of the first freed frame, after which frame buffers come from per-thread heaps that
    fragment: peak memory then grew ~3 MB per second of 640x360 video. With the threshold pinned,
    every frame buffer is its own mapping, returned on free, and memory stays flat in video length.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, FRAME_MMAP_BYTES))
    except (OSError, AttributeError):
        return False


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
        fixed_mmap_threshold()
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
