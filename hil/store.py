"""The measurement store: every raw measurement kept forever; a LUT is a view over them.

Two engines behind one API (`Store`): SQLite in WAL mode, the embedded default (`SqliteStore`), and
PostgreSQL for a lab whose coordinators share one table of measurements (`hil.store_pg`). Each
record is committed as soon as it arrives, so an interrupted build loses nothing and a rerun asks
`missing()` what is left to measure. The SQL is written once (`hil.store_sql`), in the dialect
both engines agree on; a backend only says how to connect, how to serialize a write and how column
types are spelled.

A LUT entry is the *accepted* measurement per (fingerprint class, workload key): the latest attempt
whose CV is under the protocol's threshold, or, when every attempt stayed noisy, the attempt with the
median latency (flagged): the attempts then come from different moments of a host whose speed moved,
and the middle one is the robust choice (the lowest CV only says which moment was steadiest). The
choice is kept in the row (`accepted`) and a partial unique index allows one accepted row per class
and key, so two coordinators writing the same key can never leave two entries behind.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hil.errors import StoreError
from hil.store_sql import (  # noqa: F401 - the store's public API, importable from here
    SCHEMA_VERSION,
    CopyResult,
    LutClass,
    ModelVersion,
    Store,
    copy_records,
)

DB_ENV = "HIL_DB"
DEFAULT_DB = "hil.db"


def default_db_path() -> str:
    return os.environ.get(DB_ENV) or DEFAULT_DB


class SqliteStore(Store):
    """SQLite (WAL) in one file: the embedded default, for the coordinators of one host."""

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False) -> None:
        """Open (or, unless `readonly`, create) a store. A damaged file, or one this process cannot
        write when it means to write, is refused here: before anything is measured into it."""
        super().__init__()
        self.path = str(path)
        self.readonly = readonly
        p = Path(self.path)
        if p.exists() and p.is_dir():
            raise StoreError(f"store {self.path}: is a directory, not a database file")
        if p.parent and not p.parent.exists():
            raise StoreError(f"store {self.path}: folder {p.parent} does not exist")
        if readonly and not p.exists():
            raise StoreError(f"store {self.path}: no such file (nothing was measured into it yet)")
        db: sqlite3.Connection | None = None
        try:
            if readonly:
                db = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                                     check_same_thread=False, isolation_level=None)
            else:
                db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db = db
            self._db.execute("PRAGMA busy_timeout=30000")
            if not readonly:
                self._check_writable()
            self._check_intact()
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._setup_schema()
        except sqlite3.DatabaseError as e:
            if db is not None:
                db.close()
            raise StoreError(f"store {self.path}: cannot be used as a measurement database ({e})") from None
        except StoreError:
            if db is not None:
                db.close()
            raise

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, tuple(args))

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        with self._lock:
            if self._db.in_transaction:  # nested: the outer transaction commits
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _tables(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                if not r[0].startswith("sqlite_")}

    def _check_intact(self) -> None:
        """SQLite's quick check reads every page: a store with damaged pages is caught at open, not
        halfway through a build (it reads a few hundred MB per second)."""
        try:
            problems = [r[0] for r in self._db.execute("PRAGMA quick_check(3)")]
        except sqlite3.OperationalError as e:  # not the file's fault: locked, or unreadable here
            raise StoreError(f"store {self.path}: cannot be read ({e})") from None
        except sqlite3.DatabaseError as e:
            problems = [str(e)]
        except UnicodeDecodeError:  # SQLite's message quotes a damaged schema, which is not UTF-8
            problems = ["its schema text is not UTF-8"]
        if problems != ["ok"]:
            # SQLite's report spans lines ("*** in database main ***\nPage 9: ..."): one line here
            found = " ".join("; ".join(problems).split())[:200]
            raise StoreError(f"store {self.path}: the file is damaged ({found}); keep a "
                             f"copy, then recover what is readable with `sqlite3 {self.path} .recover`, or "
                             "use another --db")

    def _check_writable(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ROLLBACK")
        except sqlite3.OperationalError as e:
            raise StoreError(f"store {self.path}: cannot be written ({e}); nothing was measured. Make the file "
                             "and its folder writable, or use another --db") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def open_store(url: str | None = None, readonly: bool = False) -> Store:
    """Open the store named by a path (or `sqlite:///path`), a `postgresql://` URL, `$HIL_DB`, or
    ./hil.db; `readonly` for commands that only read (they never create, migrate or change a store)."""
    target = url or default_db_path()
    if is_postgres_url(target):
        from hil.store_pg import PostgresStore

        return PostgresStore(target, readonly=readonly)
    if target.startswith("sqlite:///"):
        target = target[len("sqlite:///"):]
    elif "://" in target:
        raise StoreError(f"store {target.split('://')[0]}://…: unknown kind of store; use an SQLite file "
                         "(PATH or sqlite:///PATH) or postgresql://user@host:port/db")
    return SqliteStore(target, readonly=readonly)


