"""The errors a user can cause, and the exit statuses of the tools.

Pure Python. A `UserError` is printed by the tools as one line (`error:
...`) with exit status 2, no traceback.
"""

from __future__ import annotations

import signal
from typing import Any

# Exit statuses of `train.py` and the other tools.
EXIT_OK = 0
EXIT_USER_ERROR = 2  # bad flags, data, run folder or checkpoint
EXIT_NONFINITE = 3  # a non-finite loss or gradient under --on_nonfinite=stop
EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}  # resumable


class UserError(Exception):
    """An error the user caused and can fix: printed as one line, exit 2."""


class ConfigError(UserError, ValueError):
    """A user-facing configuration error: one line, naming flag and value."""

    def __init__(self, flag: str, value: Any, why: str):
        self.flag, self.value, self.why = flag, value, why
        super().__init__(f"--{flag}={value}: {why}")


class DataError(UserError, ValueError):
    """A user-facing data error (file, row, column): one line."""


class CheckpointError(UserError):
    """A checkpoint that cannot be restored into this run."""
