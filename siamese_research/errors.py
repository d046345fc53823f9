"""The errors a user can cause, and the exit statuses of the tools.

Pure Python. A `UserError` is printed by the tools as one line (`error:
...`) with exit status 2, no traceback.
"""

from __future__ import annotations

import signal
from typing import Any, Optional

# Exit statuses of `train.py` and the other tools.
EXIT_OK = 0
EXIT_USER_ERROR = 2  # bad flags, data, run folder or checkpoint
EXIT_NONFINITE = 3  # a non-finite loss or gradient under --on_nonfinite=stop
EXIT_WRITE_FAULT = 4  # a run folder's file could not be written (space, permission)
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


class RunFolderBusy(UserError):
    """Another process is writing the run folder (`atomic.FolderLock`)."""

    def __init__(self, folder: str, holder: str):
        self.folder, self.holder = folder, holder
        super().__init__(f"--run_dir={folder}: another run is writing it "
                         f"({holder or 'holder unknown'}); wait for it to end, or "
                         f"use another --run_dir")


class WriteError(Exception):
    """A file could not be written (no space, no permission, a read-only
    file system): exit status 4, one line. Not a `UserError`: the input
    was fine, the disk was not. `checkpoint`, when set, is the run's last
    complete checkpoint, from which the same command resumes."""

    def __init__(self, path: str, reason: str, checkpoint: Optional[str] = None,
                 resumable: bool = False):
        self.path, self.reason = path, reason
        self.checkpoint, self.resumable = checkpoint, resumable or bool(checkpoint)
        super().__init__(path, reason, checkpoint)

    def __str__(self) -> str:
        line = f"cannot write {self.path} ({self.reason})"
        if self.checkpoint:
            return (f"{line}; the last complete checkpoint, {self.checkpoint}, is kept: "
                    f"run the same command to resume once there is room")
        if self.resumable:
            return f"{line}; no checkpoint was written yet: run the same command once " \
                   f"there is room"
        return line

    def with_checkpoint(self, checkpoint: Optional[str]) -> "WriteError":
        """This error, as a training run says it: with its last checkpoint."""
        return WriteError(self.path, self.reason, checkpoint, resumable=True)
