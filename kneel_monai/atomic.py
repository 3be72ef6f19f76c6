"""All-or-nothing file writes: a reader (or a re-run after Ctrl-C) sees the old file or the new one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "TEMP_PREFIX", "remove_stale_temporaries"]

#: temporary files are hidden and recognisable, so a later run can remove those a killed one left
TEMP_PREFIX = ".kneel-partial-"


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and folders on some platforms) cannot be synced
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike, older_than_s: float = 600.0) -> int:
    """Remove the temporary files that writers killed mid-write (kill -9, power loss) left in
    ``folder`` and its sub-folders, when older than ``older_than_s`` (a writer still running keeps
    its own). Returns how many were removed."""
    import time

    now, removed = time.time(), 0
    for tmp in Path(folder).rglob(f"{TEMP_PREFIX}*"):
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed += 1
        except OSError:
            pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` fills a temporary file beside ``path``; it is flushed to disk (fsync) and then
    renamed onto ``path``, so a crash or power loss leaves the old file or the whole new one.

    On any error (or interruption) the temporary file is removed and ``path`` is untouched.
    The parent folder is created. The temporary name is short (any ``path`` name that fits the file
    system fits) and starts with :data:`TEMP_PREFIX`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give them the usual mode
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)  # the rename itself
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
