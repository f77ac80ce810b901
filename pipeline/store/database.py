"""One SQLite database file: connections per thread, the write protocol, consistent reads, errors, migrations.

Write protocol (docs/architecture.md, "The store's write protocol"): ``transaction()`` is one SQLite
transaction; called inside another it joins it (a savepoint), so a stage wraps everything one batch writes
in one ``transaction()`` and it commits together or not at all. A full disk raises ``DiskFullError``; any
other SQLite failure ``StoreError``: never an error of the item being computed.

Each thread gets its own connection (sqlite3 connections are not shared between threads); WAL mode lets a
reader read while a writer writes. ``Store`` (``pipeline.store.core``) is a ``Database`` with the SQL of
what the workspace keeps; the repositories (``runs``, ``caption_metrics``) run theirs through it.
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline.errors import DiskFullError, StoreError
from pipeline.store.schema import check_ours, migrate
from pipeline.store.sql import rollback


class Database:
    """The workspace's ``capsearch.db`` under ``root``, created and migrated on first use."""

    def __init__(self, root: str | Path, *, create: bool = True):
        self.root = Path(root)
        self.db_path = self.root / "capsearch.db"
        if not self.db_path.exists():
            if not create:
                raise StoreError(f"no workspace at {self.root} (no capsearch.db there): create one with "
                                 f"`capsearch init -w {self.root}` or `capsearch data demo -w {self.root}`")
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.db_path.is_file():
            raise StoreError(f"{self.db_path} is not a file: choose another workspace folder")
        else:
            check_ours(self.db_path, self.as_store_error)
        self._local = threading.local()
        self._migrate()

    # -- connections -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=60.0, isolation_level=None, check_same_thread=False)
        try:
            with self._errors():
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: a commit is on disk (the WAL is fsynced) before COMMIT returns, so a batch the
                # flow counts as done survives a power cut, not only a crash of the process
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=60000")
                conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        conn.row_factory = sqlite3.Row
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- transactions and errors ---------------------------------------------------------
    def as_store_error(self, exc: BaseException) -> BaseException | None:
        """The user-facing error for a failed SQLite call or write (None: not a store failure)."""
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            name = getattr(exc, "sqlite_errorname", "") or ""
            text = " ".join(str(exc).split())
            if code == sqlite3.SQLITE_FULL or "disk is full" in text:
                return DiskFullError(self.db_path)
            if name.startswith("SQLITE_IOERR") and self._no_room():
                return DiskFullError(self.db_path)
            if code == sqlite3.SQLITE_NOTADB or "file is not a database" in text:
                return StoreError(f"{self.db_path} is not a capsearch store (not an SQLite database): "
                                  "choose another workspace folder")
            if name in ("SQLITE_BUSY", "SQLITE_LOCKED") or "database is locked" in text:
                return None
            return StoreError(f"the workspace store {self.db_path} failed: {text} ({name or type(exc).__name__})")
        if isinstance(exc, OSError):
            from pipeline.atomic import is_disk_full

            if is_disk_full(exc):
                return DiskFullError(self.db_path)
        return None

    def _no_room(self) -> bool:
        """After an I/O error: is the disk (or this process's file size limit) full?"""
        import os
        import resource

        try:
            st = os.statvfs(self.root)
            if st.f_bavail * st.f_frsize < 4 << 20:
                return True
        except OSError:
            pass
        try:
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        except (OSError, ValueError):
            return False
        if limit == resource.RLIM_INFINITY:
            return False
        sizes = [p.stat().st_size for p in (self.db_path, self.db_path.with_name(self.db_path.name + "-wal"))
                 if p.exists()]
        return any(size + (1 << 20) >= limit for size in sizes)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            err = self.as_store_error(exc)
            if err is None:
                raise
            raise err from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; inside another one it joins it (a savepoint that rolls back alone)."""
        conn = self.conn
        self._forget_reads()             # a write on this thread: what reuse_reads() kept may be stale
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            if depth:
                name = f"capsearch_sp{depth}"
                conn.execute(f"SAVEPOINT {name}")
                try:
                    yield conn
                except BaseException:
                    rollback(conn, f"ROLLBACK TO {name}", f"RELEASE {name}")
                    raise
                conn.execute(f"RELEASE {name}")
                return
            with self._errors():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    rollback(conn, "ROLLBACK")
                    raise
        finally:
            self._local.depth = depth

    @contextmanager
    def reuse_reads(self) -> Iterator[None]:
        """Within: :meth:`captions` and :meth:`reference_captions` read each (captioner, config) and the reference
        captions once on this thread and answer every later call, whatever its filters, from that read. For a
        report that asks the same questions many times (``workspace_status`` asked 20 times at 10k photos).
        A write on this thread forgets what was read; other threads and processes are not seen until the end."""
        outer = getattr(self._local, "reads", None) is not None
        if not outer:
            self._local.reads = {}
        try:
            yield
        finally:
            if not outer:
                self._local.reads = None

    def _forget_reads(self) -> None:
        if getattr(self._local, "reads", None):
            self._local.reads = {}

    def _kept(self, key: tuple, read: Callable[[], Any]) -> Any:
        """``read()`` once per ``key`` inside :meth:`reuse_reads`; None outside it."""
        kept = getattr(self._local, "reads", None)
        if kept is None:
            return None
        if key not in kept:
            kept[key] = read()
        return kept[key]

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """Several reads that see one committed state (joins a transaction already open on this thread)."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._errors():
            migrate(self.conn, self.db_path, self.transaction)
