"""Keep native libraries' log noise off the user's terminal.

MediaPipe's C++ graphs (absl logging, TFLite) write lines such as ``W0000 00:00:... inference_feedback_manager.cc:114]``
and ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` straight to file descriptor 2, from
worker threads, at graph creation and first inference; ``GLOG_minloglevel``/``TF_CPP_MIN_LOG_LEVEL``
do not reach them (absl is not initialised). :func:`filter_native_stderr` points fd 2 at a pipe whose
reader drops those lines and forwards everything else, while Python's ``sys.stderr`` keeps writing
to the real stream (so rich still sees a terminal). ``SPFEM_NATIVE_LOGS=1`` turns the filter off.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator

NOISE = re.compile(rb"^(?:[IWE]\d{4} [\d:.]+\s+\d+ [\w.-]+:\d+\]"      # absl/glog: W0000 00:00:17.1 123 x.cc:9]
                   rb"|INFO: Created TensorFlow Lite"                   # TFLite delegate banner
                   rb"|WARNING: All log messages before absl::InitializeLog)")


def quiet_environment() -> None:
    """Environment read by glog/TensorFlow at import; set before mediapipe is imported."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def filter_native_stderr() -> Callable[[], None]:
    """Start filtering fd 2; returns ``stop()`` which restores it and flushes what is left."""
    quiet_environment()
    if os.environ.get("SPFEM_NATIVE_LOGS") == "1":
        return lambda: None
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):   # no usable stderr (closed, or not a file): nothing to filter
        return lambda: None
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    python_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(real), "w", buffering=1, errors="backslashreplace")

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            for line in iter(pipe.readline, b""):
                if not NOISE.match(line):
                    os.write(real, line)

    thread = threading.Thread(target=pump, name="spfem-native-stderr", daemon=True)
    thread.start()

    def stop() -> None:
        sys.stderr.flush()
        os.dup2(real, 2)          # closes the pipe's last write end: the pump reads EOF and ends
        thread.join(timeout=1.0)
        sys.stderr = python_stderr
        if not thread.is_alive():     # a child process may still hold the pipe: then the pump keeps its fd
            os.close(real)

    return stop


@contextlib.contextmanager
def native_logs_filtered() -> Iterator[None]:
    """:func:`filter_native_stderr` for the length of a block (the repo's other entry points: demo, benchmarks)."""
    stop = filter_native_stderr()
    try:
        yield
    finally:
        stop()
