"""Files that are either the old version or the new one, never half of either, and that survive a power cut.

``atomic_write`` writes to a temporary file in the same folder (a unique name holding the
writer's pid), flushes and fsyncs it, renames it over the target and fsyncs the folder. A
crash before the rename leaves the old file and a temporary file that the next write in that
folder deletes (``remove_stale_temps``: its writer is dead); a crash after it leaves the new file. A full disk (or a
file size limit) raises ``DiskFullError`` naming the target, with the temporary file removed.
"""
from __future__ import annotations

import errno
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from pipeline.crashpoints import FILE_RENAME, crash_point
from pipeline.errors import DiskFullError

TEMP_SUFFIX = ".tmp"
# ENOSPC: no space left; EDQUOT: quota; EFBIG: file size limit (RLIMIT_FSIZE) or filesystem maximum
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(target: Path) -> Path:
    """A unique hidden name next to ``target`` that says which process writes it."""
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")


def _writer_pid(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) < 4 or not name.endswith(TEMP_SUFFIX):
        return None
    try:
        return int(parts[-3])
    except ValueError:
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files of writers that are no longer running (left by a crash). Returns how many."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        pid = _writer_pid(name) if name.startswith(".") else None
        if pid is not None and pid != os.getpid() and not pid_alive(pid):
            try:
                os.unlink(folder / name)
                removed += 1
            except OSError:
                pass
    return removed


@contextmanager
def atomic_write(target: str | Path, mode: str = "wb", encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces ``target`` atomically and durably."""
    target = Path(target)
    remove_stale_temps(target.parent)
    tmp = temp_path(target)
    try:
        with open(tmp, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        crash_point(FILE_RENAME)
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if is_disk_full(exc):
            raise DiskFullError(target) from exc
        raise
    fsync_dir(target.parent)


def write_bytes(target: str | Path, data: bytes) -> Path:
    with atomic_write(target, "wb") as fh:
        fh.write(data)
    return Path(target)


def write_text(target: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_write(target, "w", encoding=encoding, newline="") as fh:
        fh.write(text)
    return Path(target)


def read_json_object(path: Path, damaged: type[Exception]) -> dict[str, Any] | None:
    """A manifest written by ``write_text``: its JSON object, None when there is no file, ``damaged`` with the
    reason when it cannot be read or is not a JSON object (the caller checks its format)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise damaged(f"cannot read {path.name}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise damaged(f"{path.name} is not valid JSON ({len(text)} bytes)") from None
    return data if isinstance(data, dict) else {}
