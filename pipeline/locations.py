"""Where photos live: a local path or a URL that fsspec opens (``s3://``, ``gs://``, ``http(s)://``).

A collection's root is a folder or a URL prefix; a photo's location is the root joined with its id (the
relative path). Local paths are read with the operating system as before; URLs through fsspec (``s3fs``
for S3, ``gcsfs`` for Google Cloud Storage where installed, HTTP built in). Credentials come from the
environment only (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_ENDPOINT_URL`` for S3 and
S3-compatible stores, ``GOOGLE_APPLICATION_CREDENTIALS`` for gs://): capsearch never writes them down.

Reads are bounded: S3 connections time out after ``CONNECT_TIMEOUT`` seconds and a read after
``READ_TIMEOUT``, with ``RETRIES`` attempts, so a worker that cannot reach the photo store reports each
photo as failed with the reason instead of hanging the run. This module imports no store: workers use it.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
RETRIES = 2

_fs_cache: dict[str, Any] = {}
_fs_lock = threading.Lock()


def is_url(location: str | os.PathLike[str] | None) -> bool:
    """Whether ``location`` names a URL (``scheme://...``) rather than a local path (``file://`` is local)."""
    if location is None or not isinstance(location, str):
        return False
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme.lower() != "file" and len(scheme) > 1


def join(root: str, rel: str) -> str:
    """The location of ``rel`` (a posix relative path) under ``root`` (a folder or a URL prefix)."""
    if is_url(root):
        return root.rstrip("/") + "/" + rel.lstrip("/")
    return os.path.join(root, rel)


def storage_options(protocol: str) -> dict[str, Any]:
    """fsspec options per protocol: bounded timeouts and retries; credentials stay the environment's."""
    if protocol in ("s3", "s3a"):
        return {"config_kwargs": {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT,
                                  "retries": {"max_attempts": RETRIES, "mode": "standard"}}}
    if protocol in ("http", "https"):
        return {"client_kwargs": {"timeout": _aiohttp_timeout()}}
    return {}


def _aiohttp_timeout() -> Any:
    import aiohttp

    return aiohttp.ClientTimeout(total=READ_TIMEOUT, connect=CONNECT_TIMEOUT)


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a URL; one filesystem per protocol and process."""
    from fsspec.core import split_protocol
    from fsspec.registry import filesystem as make

    protocol, path = split_protocol(url)
    protocol = (protocol or "file").lower()
    from pipeline.config import environment

    key = f"{protocol}:{environment().aws_endpoint_url}"
    with _fs_lock:
        fs = _fs_cache.get(key)
        if fs is None:
            # our own cache (per protocol and endpoint), not fsspec's: its instances outlive an endpoint change
            fs = _fs_cache[key] = make(protocol, skip_instance_cache=True, **storage_options(protocol))
    return fs, (url if protocol in ("http", "https") else fs._strip_protocol(url))


def read_bytes(location: str) -> bytes:
    """The bytes of a photo or file at a URL (OSError with the reason when it cannot be read)."""
    if not is_url(location):
        with open(location, "rb") as fh:
            return fh.read()
    from pipeline.errors import one_line

    try:
        fs, path = filesystem(location)
        return fs.cat_file(path)
    except FileNotFoundError:
        raise OSError(f"cannot read {location}: no such file") from None
    except Exception as exc:  # unreachable, denied, timed out: the reason, as an OSError (one per photo)
        raise OSError(f"cannot read {location}: {one_line(exc)}") from exc


@dataclass(frozen=True)
class RemoteFile:
    """A file under a URL prefix as its listing gives it: no read needed to see whether it changed."""
    rel: str                   # posix path relative to the prefix
    url: str
    size: int
    mtime: float               # last-modified time (seconds); from the ETag where the store gives none
    etag: str = ""


def _mtime(info: dict[str, Any]) -> float:
    for key in ("LastModified", "last_modified", "mtime", "updated", "timeCreated"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    # no time in the listing: the ETag (a content identity) stands for it, as a stable number
    return float(int(etag[:12], 16)) if etag and all(c in "0123456789abcdef" for c in etag[:12].lower()) else 0.0


def list_files(root: str) -> list[RemoteFile]:
    """Every file under a URL prefix (recursive; hidden files and folders left out), sorted by path."""
    fs, base = filesystem(root)
    base = base.rstrip("/")
    fs.invalidate_cache()        # a rescan must see what changed since the last listing in this process
    try:
        found = fs.find(base, detail=True)
    except FileNotFoundError:
        return []
    out = []
    for path, info in found.items():
        if info.get("type") == "directory":
            continue
        rel = path[len(base):].lstrip("/") if path.startswith(base) else path.rsplit("/", 1)[-1]
        if not rel or any(part.startswith(".") for part in rel.split("/")):
            continue
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        out.append(RemoteFile(rel, join(root, rel), int(info.get("size") or 0), _mtime(info), etag))
    return sorted(out, key=lambda f: f.rel)


def exists(location: str) -> bool:
    if not is_url(location):
        return os.path.exists(location)
    fs, path = filesystem(location)
    try:
        return bool(fs.exists(path))
    except Exception:  # noqa: BLE001 - an unreachable store: say it does not exist, the caller names it
        return False
