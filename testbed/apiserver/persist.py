"""The apiserver's state on disk: one SQLite database in the data directory (``state.db``).

Why SQLite (stdlib ``sqlite3``) rather than etcd: the store already keeps every object in memory,
encoded once as JSON bytes, and serves reads, lists and watches from there; what the disk has to do
is survive restarts. A single-writer embedded database gives that with no extra process, no new
dependency and no network port. WAL mode with ``synchronous=NORMAL`` makes a commit an append to the
WAL file without an fsync: a commit that returned is in the OS page cache and survives a SIGKILL of
the apiserver (only a power loss could drop the last commits, which a testbed can accept).

Layout: ``objects(store_key, namespace, name, rv, value)`` holds the current version of every object
(the value is the exact JSON the store serves); ``meta(k, v)`` holds the format marker, the schema
version, the Kubernetes minor the data was written for, the highest resourceVersion ever handed out
(deletes leave no row, so the counter cannot be derived from ``objects`` alone) and the apiserver's
last port. Every write is committed before the request that made it is answered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

FORMAT = "hami-testbed-apiserver-store"
SCHEMA_VERSION = 1
DB_NAME = "state.db"


class DataDirError(Exception):
    """A data directory the apiserver cannot use as it is (corrupt, foreign, incomplete)."""


class SQLiteBackend:
    """Durable copy of the store. Single-threaded: used from the apiserver's event loop only."""

    def __init__(self, path: Path, minor: int) -> None:
        self.path = path
        existed = path.exists() and path.stat().st_size > 0
        try:
            # isolation_level=None: every statement commits on its own (one WAL append per write).
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0.5)
        except sqlite3.Error as e:
            raise DataDirError(f"{path}: cannot be opened as a database ({e})") from e
        try:
            self._setup(minor, existed)
        except BaseException:
            self._db.close()  # never keep the lock of a database we refused
            raise
        path.chmod(0o600)

    def _setup(self, minor: int, existed: bool) -> None:
        path = self.path
        try:
            # One apiserver per data dir: the first write takes a lock held until we close (or die).
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if existed:
                self._check(minor)
                # take the write lock now rather than at the first write
                self._db.execute("UPDATE meta SET v = v WHERE k = 'format'")
            else:
                self._create(minor)
        except sqlite3.OperationalError as e:
            if "locked" in str(e):
                raise DataDirError(f"{path}: in use by another testbed apiserver (the database is locked); "
                                   "stop it first (`testbed down`)") from e
            raise DataDirError(
                f"{path}: not a testbed state database ({e}); remove it or start with `testbed up --fresh`"
            ) from e
        except sqlite3.DatabaseError as e:
            raise DataDirError(
                f"{path}: not a testbed state database ({e}); remove it or start with `testbed up --fresh`"
            ) from e

    def _create(self, minor: int) -> None:
        self._db.executescript(
            """
            BEGIN;
            CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
            CREATE TABLE objects (
                store_key TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                rv INTEGER NOT NULL, value BLOB NOT NULL,
                PRIMARY KEY (store_key, namespace, name)
            ) WITHOUT ROWID;
            COMMIT;
            """
        )
        self._db.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("format", FORMAT), ("schema", str(SCHEMA_VERSION)), ("minor", str(minor)), ("rv", "1"),
        ])

    def _check(self, minor: int) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "objects"} <= tables:
            raise DataDirError(f"{self.path}: an SQLite database, but not a testbed state database "
                               f"(tables: {', '.join(sorted(tables)) or 'none'}); remove it or start with "
                               "`testbed up --fresh`")
        meta = dict(self._db.execute("SELECT k, v FROM meta"))
        if meta.get("format") != FORMAT:
            raise DataDirError(f"{self.path}: format {meta.get('format')!r} is not {FORMAT!r}; "
                               "remove it or start with `testbed up --fresh`")
        if meta.get("schema") != str(SCHEMA_VERSION):
            raise DataDirError(f"{self.path}: written by another testbed version (schema "
                               f"{meta.get('schema')}, this testbed reads schema {SCHEMA_VERSION}); "
                               "start with `testbed up --fresh` to discard it")
        if meta.get("minor") != str(minor):
            held = meta.get("minor")
            raise DataDirError(f"{self.path}: holds a Kubernetes 1.{held} cluster, not 1.{minor}; "
                               f"run `testbed up --k8s 1.{held}`, or `--fresh` to discard it")
        res = self._db.execute("PRAGMA quick_check").fetchone()
        if res is None or res[0] != "ok":
            raise DataDirError(f"{self.path}: database is damaged ({res[0] if res else 'no answer'}); "
                               "remove it or start with `testbed up --fresh`")

    # -- reads at start-up -----------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def load(self) -> Iterator[tuple[str, str, str, int, bytes]]:
        yield from self._db.execute("SELECT store_key, namespace, name, rv, value FROM objects")

    def resource_version(self) -> int:
        row = self._db.execute("SELECT MAX(rv) FROM objects").fetchone()
        return max(int(self.meta("rv") or 1), int(row[0] or 1))

    # -- writes ------------------------------------------------------------------------------------
    def put(self, store_key: str, namespace: str, name: str, rv: int, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)",
                         (store_key, namespace, name, rv, value))

    def delete(self, store_key: str, namespace: str, name: str, rv: int) -> None:
        # the delete's resourceVersion leaves no row behind: keep the counter in meta
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM objects WHERE store_key = ? AND namespace = ? AND name = ?",
                         (store_key, namespace, name))
        self._db.execute("UPDATE meta SET v = ? WHERE k = 'rv'", (str(rv),))
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.execute("UPDATE meta SET v = ? WHERE k = 'rv'", (str(self.resource_version()),))
        self._db.close()


# What `testbed up --fresh` discards: the state database and the cluster's identity.
STATE_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm")
PKI_FILES = ("ca.crt", "ca.key", "sa.key", "admin.token", "apiserver.crt", "apiserver.key")


def wipe_state(data_dir: Path) -> list[Path]:
    """Remove the persisted cluster from ``data_dir``; returns what was removed.

    Refused while an apiserver holds the database: its files would vanish under it."""
    db = data_dir / DB_NAME
    if db.exists():
        try:
            probe = sqlite3.connect(db, timeout=0.5, isolation_level=None)
            try:
                probe.execute("BEGIN EXCLUSIVE")
                probe.execute("ROLLBACK")
            finally:
                probe.close()
        except sqlite3.OperationalError as e:
            if "locked" in str(e):
                raise DataDirError(f"{db}: in use by a running testbed apiserver; "
                                   "stop it before --fresh") from e
        except sqlite3.DatabaseError:
            pass  # not a database at all: exactly what --fresh is for
    removed = []
    for p in [data_dir / f for f in STATE_FILES] + [data_dir / "pki" / f for f in PKI_FILES]:
        if p.exists() or p.is_symlink():
            p.unlink()
            removed.append(p)
    return removed
