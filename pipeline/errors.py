"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""
from __future__ import annotations


class CapsearchError(Exception):
    """A failure the user can act on. ``str(err)`` is the whole message: one line, no traceback."""


class ConfigError(CapsearchError):
    """The configuration file or an environment override is invalid."""


class DataError(CapsearchError):
    """A data set cannot be read as a whole (single bad items are recorded, not raised)."""


class ModelLoadError(CapsearchError):
    """A model could not be loaded: gated, no network, not found, or too little memory."""


class StoreError(CapsearchError):
    """The workspace store is missing, too new, or inconsistent."""


class DiskFullError(CapsearchError):
    """The disk (or a file size limit) had no room for a write; nothing half-written was kept.

    The message names the file, the workspace it belongs to, the disk (its mount point and free space) and
    this process's file size limit where one is set: ``disk full writing /ws/capsearch.db (workspace /ws;
    the disk mounted at /data has 0 B free): free space and run again``."""

    def __init__(self, path: object, where: str | None = None):
        self.path = path
        self.where = no_room_details(path) if where is None else where
        super().__init__(f"disk full writing {path}{f' ({self.where})' if self.where else ''}: free space and run again")

    def __reduce__(self):       # pickled as it was made (a Dask worker's error reaches the flow's process)
        return type(self), (self.path, self.where)


WORKSPACE_MARKER = "capsearch.toml"     # pipeline.workspace.CONFIG_NAME: the file that makes a folder a workspace


def no_room_details(path: object) -> str:
    """``workspace /ws; the disk mounted at /data has 0 B free`` (and a file size limit, where one is set) for a
    file that could not be written; what cannot be found out is left out."""
    import os
    import resource

    parts = []
    try:
        start = os.path.abspath(os.fspath(path))      # type: ignore[arg-type]
    except TypeError:
        return ""
    folder = os.path.dirname(start)
    workspace = next((d for d in _ancestors(folder) if os.path.exists(os.path.join(d, WORKSPACE_MARKER))), None)
    if workspace:
        parts.append(f"workspace {workspace}")
    mount = next((d for d in _ancestors(folder) if os.path.ismount(d)), None)
    try:
        st = os.statvfs(next(d for d in _ancestors(folder) if os.path.isdir(d)))
        free = st.f_bavail * st.f_frsize
        device = _device(mount) if mount else ""
        parts.append(f"the disk {f'{device} ' if device else ''}mounted at {mount or '?'} has {human_bytes(free)} "
                     f"free of {human_bytes(st.f_blocks * st.f_frsize)}")
    except (OSError, StopIteration):
        pass
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        parts.append(f"this process may not write files over {human_bytes(limit)} (`ulimit -f`)")
    return "; ".join(parts)


def _device(mount: str) -> str:
    """The device (or file system, e.g. ``tmpfs``) mounted at ``mount``, from ``/proc/self/mounts`` (Linux)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            found = [line.split()[0] for line in fh
                     if len(line.split()) > 1 and line.split()[1].replace("\\040", " ") == mount]
    except OSError:
        return ""
    return found[-1] if found else ""       # the last mount at a point is the one in use


def _ancestors(folder: str):
    import os

    while True:
        yield folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent


def human_bytes(n: int) -> str:
    """``0 B``, ``512 B``, ``4.0 KB``, ``1.2 MB``, ``18.3 GB`` (powers of 1024)."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def one_line(exc: BaseException) -> str:
    """``TypeName: message`` on one line (the message's whitespace collapsed), or the type name alone."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def reason(error: BaseException | None) -> str:
    """One line for the user: a ``CapsearchError``'s message is the whole message; other errors are named by
    their type (``one_line``)."""
    if error is None:
        return "no reason given"
    if isinstance(error, CapsearchError) and str(error).strip():
        return " ".join(str(error).split())
    return one_line(error)
