"""The package's errors: one base, so the command line reports these as one line and lets any other
exception (a bug) surface as a traceback."""

from __future__ import annotations

import os


class GenesisError(Exception):
    """Base of every error the package raises about its inputs (flags, files, checkpoints, data)."""


class UsageError(GenesisError, ValueError):
    """A bad option value (reported by the command line as a one-line error, exit status 2)."""


class VolumeError(GenesisError, RuntimeError):
    """A volume file is missing, unreadable or unusable (message names the file, one line)."""


class SplitError(UsageError):
    """No train/validation split holds what is being learned (one line: why, and what to pass);
    a usage error, since the fix is what the user passes."""


class CheckpointError(GenesisError, RuntimeError):
    """A checkpoint cannot be read or does not match the model."""


class DivergedError(GenesisError, FloatingPointError):
    """Training produced a non-finite loss (or validation loss); the last finite checkpoint stays."""


class RunLockedError(GenesisError, RuntimeError):
    """Another live process holds the run folder's lock."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption) turned into an exception, so that it unwinds as Ctrl-C
    does: temporary files are removed and the last complete checkpoint stays."""


def describe_os_error(e: OSError) -> str:
    """One line for a failed file operation: the path, what went wrong, and for a full disk or a
    file-size limit how much room is left."""
    import errno
    import shutil

    path = e.filename if e.filename is not None else ""
    what = e.strerror or str(e)
    msg = f"{path}: {what}" if path else what
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and path:
        d = os.path.dirname(os.path.abspath(path))
        while d and not os.path.isdir(d):
            d = os.path.dirname(d)
        try:
            free = shutil.disk_usage(d).free
            msg += f" ({free / 2**20:.0f} MiB free on {d}"
            msg += "; a file-size limit (ulimit -f) stops large files)" if e.errno == errno.EFBIG else ")"
        except OSError:
            pass
    return msg
