"""``.npy`` snapshots of a vector space that prove themselves before anyone reads them.

A snapshot is two files in ``<workspace>/arrays/``:

* ``<space>.<generation>.npy``: the float32 matrix, rows in the order of the ids. Written once
  under a temporary name, fsynced and renamed; never changed afterwards.
* ``<space>.json``: the manifest: the space, its *generation* (a random id the store gives
  the space's vectors at every write), the data file's name, shape, size and CRC-32, and the
  ids with their sha256. Replaced atomically (temporary file, fsync, rename, folder fsync) after the data file
  is in place.

A reader reads the manifest (one complete version, thanks to the rename), maps the data
file it names, and checks it: same generation (and dimension) as the store, which names
exactly one set of vectors; the file's size, header, shape and CRC-32 as the manifest says;
as many ids as rows, with the ids' own checksum. Anything
else (stale, truncated, empty, shuffled, unreadable, or a manifest and a data file of
different generations) is rebuilt from the store, with a notice unless it was merely stale.
A writer that replaces a snapshot while a reader reads it removes only older data files (it
keeps its own, the one the manifest named before and the newest others), a reader that has
mapped a data file keeps it even if it is removed, and a reader whose data file vanished
before it opened it reads the manifest again: readers always get one consistent generation.

Vector loading is owned here: ``load_array(store, space)`` (search, the evaluation) and
``export_array(store, space)`` (the stages that write a space) call the store for its vectors
(``space_state``, ``vector_stream``); the store never calls a snapshot.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from pipeline.atomic import atomic_write, fsync_dir, read_json_object, write_text
from pipeline.crashpoints import SNAPSHOT_DATA, crash_point

if TYPE_CHECKING:
    from pipeline.store import Store

FORMAT = 2
DTYPE = np.dtype("<f4")
_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK = 1 << 22
_OPEN_ATTEMPTS = 8
# A writer keeps this many of the newest data files besides the one it wrote and the one the manifest
# named before: a concurrent writer may have just renamed one into place and be about to write the
# manifest that names it.
KEEP_NEWEST = 2
# A data file without a manifest is a writer's leftover (a crash, a lost file) once it is this old;
# younger, a concurrent writer is about to write its manifest.
ORPHAN_SECONDS = 5.0
# (path, inode, size, mtime_ns) -> CRC-32 of files this process already checked
_verified: dict[tuple[str, int, int, int], str] = {}


class SnapshotDamaged(Exception):
    """A snapshot that cannot be trusted; the text says why (one line)."""


def space_filename(space: str) -> str:
    return _NAME_RE.sub("_", space)


@dataclass(frozen=True)
class SnapshotFiles:
    folder: Path
    base: str

    @property
    def manifest(self) -> Path:
        return self.folder / f"{self.base}.json"

    def data(self, generation: str) -> Path:
        return self.folder / f"{self.base}.{generation}.npy"

    def data_files(self) -> list[Path]:
        """Data files of any generation of this space (not temporary files)."""
        prefix, out = f"{self.base}.", []
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        for name in names:
            rest = name[len(prefix):] if name.startswith(prefix) else ""
            if rest.endswith(".npy") and "." not in rest[:-4] and rest[:-4]:
                out.append(self.folder / name)
        return out

    @property
    def legacy(self) -> tuple[Path, Path]:
        """Files of the first snapshot format (``.npy`` + ``.ids.json`` replaced one after the other)."""
        return self.folder / f"{self.base}.npy", self.folder / f"{self.base}.ids.json"


def files_for(store: "Store", space: str) -> SnapshotFiles:
    return SnapshotFiles(store.arrays_dir, space_filename(space))


# -- writing ------------------------------------------------------------------------------------------------
def _crc32(path: Path) -> str:
    """CRC-32 of a file's bytes: catches truncation, shuffled rows and flipped bits at ~1 GB/s (sha256 runs
    at about half that speed here; ``bench/snapshot_load.py``)."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _ids_digest(ids: list[str]) -> str:
    return hashlib.sha256(json.dumps(ids, separators=(",", ":")).encode("utf-8")).hexdigest()


def _npy_header(rows: int, dim: int) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": DTYPE.str, "fortran_order": False, "shape": (rows, dim)})
    return buf.getvalue()


def ensure_folder(folder: Path, notice: Callable[[str], None]) -> None:
    """Make the snapshots' folder where it is missing. Something else in its place (a file) is moved aside to
    ``arrays.not-a-folder-<time>``, with a notice: nothing in the folder is lost, it is all rebuilt from the
    store."""
    if folder.is_dir():
        return
    if folder.exists() or folder.is_symlink():
        import time

        aside = folder.with_name(f"{folder.name}.not-a-folder-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(folder, aside)
        except FileNotFoundError:
            pass                      # another process moved it meanwhile
        else:
            notice(f"{folder} was not a folder: moved it to {aside.name}; the snapshots are rebuilt from the store")
    folder.mkdir(parents=True, exist_ok=True)


def write_snapshot(store: "Store", space: str) -> "Snapshot":
    """Export the space's current vectors (one consistent read of the store) as a new generation.

    The vectors go from the store to the file a few thousand rows at a time (a version-1 ``.npy`` written with
    plain ``write`` calls through ``atomic_write``: numpy's ``tofile`` reports a full disk as a bare OSError
    without errno), so exporting a million vectors holds only their ids in memory; the returned snapshot maps
    the file it wrote."""
    files = files_for(store, space)
    ensure_folder(files.folder, store.notice)
    keys: list[str] = []
    with store.vector_stream(space) as (generation, rows, dim, chunks):
        data = files.data(generation)
        crc, size = 0, 0
        with atomic_write(data, "wb") as fh:
            for part in _stream_parts(_npy_header(rows, dim), chunks, keys):
                fh.write(part)
                crc = zlib.crc32(part, crc)
                size += len(part)
    if len(keys) != rows:
        raise SnapshotDamaged(f"{space}: the store listed {rows} vectors and gave {len(keys)}")
    digest = f"{crc:08x}"
    fsync_dir(files.folder)
    crash_point(SNAPSHOT_DATA)
    try:
        previous = _read_manifest(files.manifest)
    except SnapshotDamaged:
        previous = None
    manifest = {"format": FORMAT, "space": space, "generation": generation, "file": data.name,
                "rows": len(keys), "dim": dim, "dtype": DTYPE.str, "bytes": size, "crc32": digest,
                "ids_sha256": _ids_digest(keys), "ids": keys}
    write_text(files.manifest, json.dumps(manifest, separators=(",", ":")))
    _remove_old(files, keep={data.name, (previous or {}).get("file")})
    _remember(data, digest)
    mat = np.load(data, mmap_mode="r") if keys else np.zeros((0, dim), dtype=DTYPE)
    return Snapshot(space, generation, keys, mat, data)


def _stream_parts(header: bytes, chunks, keys: list[str]):
    yield header
    for chunk_keys, blob in chunks:
        keys.extend(chunk_keys)
        for start in range(0, len(blob), _CHUNK):
            yield blob[start:start + _CHUNK]


def _remove_old(files: SnapshotFiles, keep: set[str | None]) -> None:
    """Remove data files of older generations and the first format's files."""
    dated = []
    for path in files.data_files():
        try:
            dated.append((path.stat().st_mtime_ns, path.name, path))
        except OSError:
            continue
    newest = {name for _, name, _ in sorted(dated, reverse=True)[:KEEP_NEWEST]}
    for _, name, path in dated:
        if name not in keep and name not in newest:
            _unlink(path)
    for old in files.legacy:
        _unlink(old)
    fsync_dir(files.folder)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


# -- reading ------------------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    space: str
    generation: str
    ids: list[str]
    matrix: Any          # np.memmap (read-only) or ndarray
    path: Path


def _read_manifest(path: Path) -> dict[str, Any] | None:
    data = read_json_object(path, SnapshotDamaged)
    if data is not None and data.get("format") != FORMAT:
        raise SnapshotDamaged(f"{path.name} is not a snapshot manifest of format {FORMAT}")
    return data


def _key(path: Path) -> tuple[str, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path), st.st_ino, st.st_size, st.st_mtime_ns


def _remember(path: Path, digest: str) -> None:
    key = _key(path)
    if key is not None:
        _verified[key] = digest


def _open_checked(files: SnapshotFiles, m: dict[str, Any], dim: int) -> Snapshot:
    """Map the data file the manifest names and check it; raises SnapshotDamaged or FileNotFoundError."""
    try:
        name, rows, size, digest = str(m["file"]), int(m["rows"]), int(m["bytes"]), str(m["crc32"])
        ids, generation = list(m["ids"]), str(m["generation"])
    except (KeyError, TypeError, ValueError):
        raise SnapshotDamaged(f"{files.manifest.name} lacks a field") from None
    if name != files.data(generation).name:
        raise SnapshotDamaged(f"{files.manifest.name} names {name}, not the file of generation {generation}")
    path = files.folder / name
    st = path.stat()                      # FileNotFoundError: replaced meanwhile; the caller reads again
    if st.st_size != size:
        what = "empty" if st.st_size == 0 else f"{st.st_size} bytes, expected {size}"
        raise SnapshotDamaged(f"{name} is {what}")
    manifest_key = _key(files.manifest)
    if len(ids) != rows:
        raise SnapshotDamaged(f"{files.manifest.name} lists {len(ids)} ids for {rows} rows")
    if manifest_key is None or _verified.get(manifest_key) != m.get("ids_sha256"):
        if _ids_digest(ids) != m.get("ids_sha256"):
            raise SnapshotDamaged(f"{files.manifest.name}: the ids do not match their checksum")
        if manifest_key is not None:
            _verified[manifest_key] = str(m.get("ids_sha256"))
    if int(m.get("dim", -1)) != dim:
        raise SnapshotDamaged(f"{name} holds vectors of dimension {m.get('dim')}, the store {dim}")
    key = _key(path)
    if key is None or _verified.get(key) != digest:
        if _crc32(path) != digest:
            raise SnapshotDamaged(f"{name} does not match its checksum (changed or damaged on disk)")
        if key is not None:
            _verified[key] = digest
    try:
        mat = np.load(path, mmap_mode="r") if rows else np.zeros((0, dim), dtype=DTYPE)
    except FileNotFoundError:
        raise
    except (ValueError, EOFError, OSError) as exc:
        raise SnapshotDamaged(f"{name} cannot be read: {exc}") from None
    if mat.dtype != DTYPE or mat.shape != (rows, dim):
        raise SnapshotDamaged(f"{name} holds {mat.dtype} {mat.shape}, expected float32 ({rows}, {dim})")
    return Snapshot(m.get("space", ""), generation, ids, mat, path)


def _orphaned(files: SnapshotFiles) -> bool:
    """Data files without a manifest that no writer is about to name (not just renamed into place)."""
    import time

    now = time.time()
    for path in files.data_files():
        try:
            if now - path.stat().st_mtime > ORPHAN_SECONDS:
                return True
        except OSError:
            continue
    return False


def load_snapshot(store: "Store", space: str, notice: Callable[[str], None]) -> Snapshot:
    """The space's vectors through its snapshot: checked, and rebuilt from the store when it cannot be trusted."""
    files = files_for(store, space)
    ensure_folder(files.folder, notice)
    for _ in range(_OPEN_ATTEMPTS):
        generation, dim = store.space_state(space)
        try:
            m = _read_manifest(files.manifest)
            if m is None:
                if _orphaned(files):
                    notice(f"snapshot {files.manifest.name} is missing; rebuilt {space} from the store")
                return write_snapshot(store, space)
            if m.get("generation") != generation or m.get("space") != space:
                return write_snapshot(store, space)          # stale: the store moved on
            return _open_checked(files, m, dim)
        except FileNotFoundError:
            continue                                          # a writer replaced it meanwhile: read again
        except SnapshotDamaged as exc:
            notice(f"snapshot of {space} was damaged ({exc}); rebuilt from the store")
            return write_snapshot(store, space)
    return write_snapshot(store, space)



def load_array(store: "Store", space: str) -> tuple[list[str], np.ndarray]:
    """(ids, matrix) of a space through its checked ``.npy`` snapshot (memory-mapped), rebuilt if stale or
    damaged (a damaged one with a notice: ``Store.notice``)."""
    snap = load_snapshot(store, space, store.notice)
    return snap.ids, snap.matrix


def export_array(store: "Store", space: str) -> tuple[Path, Path]:
    """Make sure the space's snapshot is current and sound (rebuilding it if not); returns (data file, manifest)."""
    snap = load_snapshot(store, space, store.notice)
    return snap.path, files_for(store, space).manifest
