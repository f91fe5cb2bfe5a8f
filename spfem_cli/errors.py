"""User-facing errors: the CLI prints their message as one line and exits non-zero (no traceback)."""


class SpfemError(RuntimeError):
    """Bad input or a missing prerequisite; the message alone must tell the user what to do."""
