"""User-facing errors: the CLI prints their message as one line and exits non-zero (no traceback)."""

from __future__ import annotations

import signal


class SpfemError(RuntimeError):
    """Bad input or a missing prerequisite; the message alone must tell the user what to do."""


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM (``timeout``, systemd, job schedulers) arrived.

    A ``BaseException`` like ``KeyboardInterrupt``: ``except Exception`` does not swallow it, while every
    ``with``/``finally`` on the way out runs, so temporary outputs are removed.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum: int, frame) -> None:
    # A second signal while cleaning up takes the default path (kills / KeyboardInterrupt).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise Interrupted(signum)


def raise_on_signals() -> None:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` in the main thread (the CLI entry point)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_interrupted)
