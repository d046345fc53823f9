"""Files written whole or not at all, and one writer per run folder.

`replacing(path)` gives a temporary name beside `path` (same folder, same
suffix, so a writer that picks its format by suffix still does) and renames
it into place when the block ends (`os.replace`: atomic within a folder on
POSIX), so a reader sees the old file or the new one, never a part. A
failure removes the temporary; a process killed in between leaves it, named
`.<stem>.partial-<pid><suffix>`, and `remove_partials` clears those from a
folder (a run clears its own, `train/` and `validation/`). A
write that fails with an OS error (no space, no permission, a read-only
file system) raises `WriteError` naming the file.

`FolderLock` is an exclusive `fcntl.flock` on `<folder>/.lock`: the OS
drops it when its process dies, however it dies, so a killed run leaves no
stale lock; the file's content only says who holds it.

Pure Python: every layer that writes a run folder's file uses it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import glob
import json
import os
import shutil
import socket
from typing import Iterator, Optional

from siamese_research.errors import RunFolderBusy, WriteError

PARTIAL = ".partial-"
LOCK_FILE = ".lock"


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it to `path` when the
    block ends normally, removes it otherwise.

    Raises:
      WriteError: an OS error while writing or renaming (the temporary is
        removed; `path` is as it was).
    """
    folder, name = os.path.split(os.path.normpath(path))
    stem, suffix = os.path.splitext(name)
    # (Not named as an event file: TensorBoard reads any name with "tfevents".)
    stem = stem.replace("tfevents", "tfpartial")
    tmp = os.path.join(folder, f".{stem}{PARTIAL}{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise WriteError(path, e.strerror or str(e) or type(e).__name__) from None
    except BaseException:
        _remove(tmp)
        raise


def write_text(path: str, text: str) -> str:
    """`path` holding `text` (UTF-8), written whole; returns `path`."""
    with replacing(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def write_json(path: str, value, **dumps) -> str:
    """`path` holding `value` as JSON and a line end, written whole."""
    return write_text(path, json.dumps(value, **dumps) + "\n")


def remove_partials(folder: str) -> list:
    """Removes what killed writers left in `folder` (not its subfolders):
    `replacing`'s temporaries. Returns their paths."""
    found = glob.glob(os.path.join(glob.escape(folder), f".*{PARTIAL}*"))
    for path in found:
        _remove(path)
    return found


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.remove(path)


class FolderLock:
    """An exclusive lock on a folder for one writing process.

    Args:
      folder: an existing folder.

    Raises (`acquire`):
      RunFolderBusy: another process holds it; names that process.
    """

    def __init__(self, folder: str):
        self.path = os.path.join(folder, LOCK_FILE)
        self._fd: Optional[int] = None

    def acquire(self) -> "FolderLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip()
            os.close(fd)
            raise RunFolderBusy(os.path.dirname(self.path), holder) from None
        since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n"
                 .encode("utf-8"))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
