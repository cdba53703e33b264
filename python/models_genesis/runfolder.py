"""The run folder (``--out``) of a training run: one run at a time, never started over by accident.

* An exclusive POSIX record lock (``fcntl.lockf``) on ``DIR/.lock`` for the whole run; the file
  names the holder's PID. The kernel drops the lock when the process dies, however it dies, so a
  killed run never leaves a stale lock; a second run on the folder stops with a one-line error
  naming that PID. Not ``flock``: forked children (DataLoader workers) share an ``flock``, which
  then outlives a SIGKILLed run until its workers notice, and a requeued run would be refused.
  A record lock belongs to the process alone; a second lock of one folder inside the same
  process is refused by the set of folders this process holds.
* A folder that already holds a run (``last.pt``, ``best.pt`` or ``metrics.jsonl``) is refused
  unless the run continues it (``--resume``) or replaces it (``--overwrite``: those files go first).
* Temporary checkpoint files that dead processes left (a SIGKILL during a write) are removed.
"""

from __future__ import annotations

import errno
import fcntl
import os

from .checkpoint import remove_stale_temp_files
from .errors import RunLockedError, UsageError

LOCK_NAME = ".lock"
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl")
_HELD: set[str] = set()  # lock files this process holds (record locks do not exclude their own process)


def _not_a_folder(out: str) -> UsageError | None:
    """A one-line error when ``out`` (or a parent of it) is an existing file."""
    p = os.path.abspath(out)
    while p and p != os.path.dirname(p):
        if os.path.exists(p) and not os.path.isdir(p):
            what = "is a file" if p == os.path.abspath(out) else f"lies under the file {p}"
            return UsageError(f"--out {out}: {what}; the run folder must be a folder")
        p = os.path.dirname(p)
    return None


def existing_run(out: str) -> list[str]:
    """The run files (:data:`RUN_FILES`) present in ``out``."""
    return [n for n in RUN_FILES if os.path.exists(os.path.join(out, n))]


def check_start(out: str, resume: bool, overwrite: bool) -> None:
    """UsageError unless a run may start in ``out``: not a file, and holding no run unless
    ``resume`` or ``overwrite``. Reads only, so every process of a distributed run can ask."""
    err = _not_a_folder(out)
    if err is not None:
        raise err
    held = existing_run(out)
    if held and not resume and not overwrite:
        raise UsageError(
            f"--out {out}: already holds a run ({', '.join(held)}); continue it with --resume, "
            "start over with --overwrite, or choose another --out"
        )


class RunFolder:
    """Context manager holding ``out``'s lock for a run (main process only).

    Args:
        out: the run folder (created when missing).
        resume: the run continues the one in ``out``.
        overwrite: the run replaces the one in ``out`` (its run files are removed once locked).

    Raises:
        UsageError: ``out`` is a file or lies under one; it holds a run and neither flag is given.
        RunLockedError: another live process holds the lock (names its PID).
    """

    def __init__(self, out: str, resume: bool = False, overwrite: bool = False):
        self.out, self.resume, self.overwrite = out, resume, overwrite
        self.path = os.path.join(out, LOCK_NAME)
        self.fd: int | None = None
        self.removed_temp: list[str] = []

    def __enter__(self) -> RunFolder:
        check_start(self.out, self.resume, self.overwrite)
        os.makedirs(self.out, exist_ok=True)
        key = os.path.realpath(self.path)
        if key in _HELD:
            raise RunLockedError(
                f"--out {self.out}: another run (PID {os.getpid()}, this process) is using this folder; "
                "wait for it to finish or choose another --out"
            )
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(
                f"--out {self.out}: another run (PID {self._holder()}) is using this folder; "
                "wait for it to finish or choose another --out"
            ) from None
        self.fd = fd
        _HELD.add(key)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        # checked again under the lock: a run that started meanwhile has written its files
        check_start(self.out, self.resume, self.overwrite)
        self.removed_temp = remove_stale_temp_files(self.out)
        if self.overwrite:
            for n in RUN_FILES:
                p = os.path.join(self.out, n)
                if os.path.exists(p):
                    os.remove(p)
        return self

    def _holder(self) -> str:
        # read by a process that does not hold the lock (closing this descriptor would drop a
        # record lock of its own process)
        try:
            with open(self.path) as f:
                return f.read().strip() or "unknown"
        except OSError:
            return "unknown"

    def __exit__(self, *exc) -> bool:
        if self.fd is not None:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None
                _HELD.discard(os.path.realpath(self.path))
        return False
