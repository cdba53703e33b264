"""Files written whole or not at all: the result goes to a temporary name beside it, then replaces
the target in one rename. An interruption (Ctrl-C, SIGTERM, a full disk) leaves the old file as
it was and no temporary behind.

(Checkpoints and the store's chunks have their own variants, in checkpoint.py and store.py: their
temporary names carry the writer's PID so that a crashed run's leftovers can be found and swept.)"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def replacing(path: str, suffix: str = "") -> Iterator[str]:
    """``with replacing(path) as tmp:`` write ``tmp``; on a normal exit it replaces ``path``.

    ``suffix`` ends the temporary name (``".png"``, ``".nii.gz"``) for writers that pick the format
    from the extension. The folder is made if needed. On any exception the temporary is removed and
    the exception goes on."""
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = f"{path}.tmp{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
