"""The measurement store: every raw measurement kept forever; a LUT is a view over them.

SQLite in WAL mode is the embedded default. Each record is committed as soon as it arrives, so an
interrupted build loses nothing and a rerun asks `missing()` what is left to measure.

A LUT entry is the *accepted* measurement per (fingerprint class, workload key): the latest attempt
whose CV is under the protocol's threshold, or, when every attempt stayed noisy, the attempt with the
median latency (flagged): the attempts then come from different moments of a host whose speed moved,
and the middle one is the robust choice (the lowest CV only says which moment was steadiest).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.errors import StoreError
from hil.measure import Measurement, Stats
from hil.target import fingerprint_class
from hil.workload import canonical_json

# 1: one row per (class, model name) in `models`, replaced on refit.
# 2: `model_versions`: every fit kept (a LUT's calibration is re-anchored over time); the newest is
#    used. A version-1 store is migrated when it is opened.
SCHEMA_VERSION = 2
DB_ENV = "HIL_DB"
DEFAULT_DB = "hil.db"

_MODEL_VERSIONS = """
CREATE TABLE IF NOT EXISTS model_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    class TEXT NOT NULL,
    name TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS model_versions_class_name ON model_versions (class, name, id);
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fingerprints (
    class TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    class_json TEXT NOT NULL,
    first_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    class TEXT NOT NULL REFERENCES fingerprints(class),
    key TEXT NOT NULL,
    workload TEXT NOT NULL,
    provenance TEXT NOT NULL,
    ok INTEGER NOT NULL,
    noisy INTEGER NOT NULL,
    latency_ms REAL,
    cv REAL,
    stats TEXT,
    metrics TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    error_kind TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_class_key ON measurements (class, key);
""" + _MODEL_VERSIONS

# Version 1 kept one row per (class, name) in `models`; each becomes version 1 of its model.
_MIGRATE_1_TO_2 = _MODEL_VERSIONS + """
INSERT INTO model_versions (class, name, params, created_at)
    SELECT class, name, params, created_at FROM models ORDER BY created_at;
DROP TABLE models;
UPDATE meta SET value = '2' WHERE name = 'schema_version';
"""


@dataclass(frozen=True)
class ModelVersion:
    """One stored fit of a model (e.g. the network calibration) of a fingerprint class."""

    version: int  # 1, 2, ... within (class, name), oldest first
    fp_class: str
    name: str
    params: dict[str, Any]
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "fingerprint_class": self.fp_class, "name": self.name,
                "created_at": self.created_at, **self.params}


def default_db_path() -> str:
    return os.environ.get(DB_ENV) or DEFAULT_DB


@dataclass(frozen=True)
class LutClass:
    """One fingerprint class in the store: a LUT can be built from its measurements."""

    fp_class: str
    device: str
    fingerprint_class: dict[str, Any]
    entries: int


class Store:
    """SQLite store. Thread-safe: one worker thread per device may write at once."""

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False) -> None:
        """Open (or, unless `readonly`, create) a store. A damaged file, or one this process cannot
        write when it means to write, is refused here: before anything is measured into it."""
        self.path = str(path)
        self.readonly = readonly
        p = Path(self.path)
        if p.exists() and p.is_dir():
            raise StoreError(f"store {self.path}: is a directory, not a database file")
        if p.parent and not p.parent.exists():
            raise StoreError(f"store {self.path}: folder {p.parent} does not exist")
        if readonly and not p.exists():
            raise StoreError(f"store {self.path}: no such file (nothing was measured into it yet)")
        self._lock = threading.RLock()
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
            self._check_schema()
        except sqlite3.DatabaseError as e:
            if db is not None:
                db.close()
            raise StoreError(f"store {self.path}: cannot be used as a measurement database ({e})") from None
        except StoreError:
            if db is not None:
                db.close()
            raise

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

    def _check_schema(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise StoreError(f"store {self.path}: an SQLite file, but not a hil store (tables: {sorted(tables)})")
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
            try:
                version = int(row[0]) if row else None
            except (TypeError, ValueError):
                raise StoreError(f"store {self.path}: schema version {row[0]!r} is not a number") from None
            if version == 1:
                if self.readonly:
                    raise StoreError(f"store {self.path}: written by an older hil (schema 1); any command that "
                                     "writes to it (e.g. hil lut build) migrates it, keeping every record")
                self._migrate_1_to_2()
                return
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path}: schema version {version}, this hil reads {SCHEMA_VERSION}"
                    + (" (written by a newer hil)" if version and version > SCHEMA_VERSION else "")
                )
            return
        if self.readonly:
            raise StoreError(f"store {self.path}: an empty database, not a hil store (nothing was measured into it)")
        with self._db:
            self._db.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _migrate_1_to_2(self) -> None:
        """A store written before calibration versions: every record kept, in one transaction (a
        failure leaves the version-1 store as it was), re-checked inside it (another process may
        have migrated it meanwhile)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
            if row and int(row[0]) == 1:
                for stmt in _MIGRATE_1_TO_2.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------

    def add(self, m: Measurement) -> None:
        """Record one attempt (success or failure), committed at once."""
        self.add_all([m])

    def add_all(self, ms: Sequence[Measurement]) -> None:
        """Record several attempts in one transaction: all of them are kept, or none (a session's
        records, which are reused only whole)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for m in ms:
                    self._insert(m)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _insert(self, m: Measurement) -> None:
        fp_class = fingerprint_class(m.fingerprint)
        st = m.stats
        self._db.execute(
            "INSERT OR IGNORE INTO fingerprints VALUES (?, ?, ?, ?)",
            (fp_class, m.device, canonical_json(m.fingerprint["class"]), m.created_at),
        )
        self._db.execute(
            "INSERT INTO measurements (device, class, key, workload, provenance, ok, noisy,"
            " latency_ms, cv, stats, metrics, state, attempt, error_kind, error, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m.device, fp_class, m.key, canonical_json(m.workload), m.provenance, int(m.ok),
                int(m.noisy), st.median_ms if st else None, st.cv if st else None,
                json.dumps(st.to_json()) if st else None, json.dumps(m.metrics),
                json.dumps(m.fingerprint.get("state", {})), m.attempt,
                m.error_kind.value if m.error_kind else "", m.error,
                m.created_at,
            ),
        )

    def save_model(self, fp_class: str, name: str, params: dict[str, Any], created_at: float) -> int:
        """Keep a new version of a fitted model (e.g. the network calibration) next to its
        measurements; earlier versions stay. Returns the new version number."""
        with self._lock:
            self._db.execute(
                "INSERT INTO model_versions (class, name, params, created_at) VALUES (?, ?, ?, ?)",
                (fp_class, name, json.dumps(params), created_at),
            )
            r = self._db.execute("SELECT COUNT(*) FROM model_versions WHERE class=? AND name=?",
                                 (fp_class, name)).fetchone()
        return int(r[0])

    def load_model(self, fp_class: str, name: str) -> dict[str, Any] | None:
        """The newest version's parameters, or None when the model was never fitted."""
        versions = self.model_versions(fp_class, name)
        return versions[-1].params if versions else None

    def model_versions(self, fp_class: str, name: str) -> list[ModelVersion]:
        """Every stored version of a model, oldest first."""
        rows = self._rows("SELECT params, created_at FROM model_versions WHERE class=? AND name=? ORDER BY id",
                          [fp_class, name])
        return [ModelVersion(i + 1, fp_class, name, json.loads(r["params"]), r["created_at"])
                for i, r in enumerate(rows)]

    # -- reading -----------------------------------------------------------------------------

    def _rows(self, sql: str, args: Iterable[Any]) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._db.execute(sql, tuple(args))
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]  # type: ignore[misc]

    def _to_measurement(self, r: dict[str, Any], fp_class_json: str) -> Measurement:
        return Measurement(
            device=r["device"],
            key=r["key"],
            workload=json.loads(r["workload"]),
            fingerprint={"class": json.loads(fp_class_json), "state": json.loads(r["state"])},
            provenance=r["provenance"],
            stats=Stats(**json.loads(r["stats"])) if r["stats"] else None,
            metrics=json.loads(r["metrics"]),
            attempt=r["attempt"],
            ok=bool(r["ok"]),
            noisy=bool(r["noisy"]),
            error_kind=r["error_kind"],
            error=r["error"],
            created_at=r["created_at"],
        )

    def classes(self, device: str | None = None) -> list[LutClass]:
        sql = (
            "SELECT f.class, f.device, f.class_json, COUNT(DISTINCT m.key) AS n FROM fingerprints f"
            " LEFT JOIN measurements m ON m.class = f.class AND m.ok = 1"
        )
        args: list[Any] = []
        if device is not None:
            sql += " WHERE f.device = ?"
            args.append(device)
        sql += " GROUP BY f.class ORDER BY f.first_seen"
        return [
            LutClass(r["class"], r["device"], json.loads(r["class_json"]), r["n"]) for r in self._rows(sql, args)
        ]

    def attempts(self, fp_class: str, key: str | None = None) -> Iterator[Measurement]:
        """Every attempt in a class (optionally for one key), oldest first."""
        fp = self._rows("SELECT class_json FROM fingerprints WHERE class=?", [fp_class])
        if not fp:
            return
        sql = "SELECT * FROM measurements WHERE class=?"
        args: list[Any] = [fp_class]
        if key is not None:
            sql += " AND key=?"
            args.append(key)
        for r in self._rows(sql + " ORDER BY id", args):
            yield self._to_measurement(r, fp[0]["class_json"])

    def lut(self, fp_class: str) -> dict[str, Measurement]:
        """The accepted measurement per key of a class."""
        clean: dict[str, Measurement] = {}
        noisy: dict[str, list[Measurement]] = {}
        for m in self.attempts(fp_class):
            if not m.ok:
                continue
            if not m.noisy:
                cur = clean.get(m.key)
                if cur is None or m.created_at >= cur.created_at:
                    clean[m.key] = m
            else:
                noisy.setdefault(m.key, []).append(m)
        for key, ms in noisy.items():
            if key not in clean:
                ms.sort(key=lambda m: m.latency_ms)
                clean[key] = ms[(len(ms) - 1) // 2]
        return clean

    def missing(self, fp_class: str, keys: Iterable[str], max_attempts: int) -> list[str]:
        """Keys still to measure: never measured, failed (not as unsupported), or noisy with attempts left."""
        state: dict[str, tuple[bool, int, bool]] = {}  # key -> (has clean, ok attempts, unsupported)
        for r in self._rows(
            "SELECT key, ok, noisy, error_kind FROM measurements WHERE class=?", [fp_class]
        ):
            clean, n, unsup = state.get(r["key"], (False, 0, False))
            if r["ok"]:
                n += 1
                clean = clean or not r["noisy"]
            unsup = unsup or r["error_kind"] == "unsupported"
            state[r["key"]] = (clean, n, unsup)
        out = []
        for k in keys:
            clean, n, unsup = state.get(k, (False, 0, False))
            if clean or unsup or n >= max_attempts:
                continue
            out.append(k)
        return out

    def attempt_count(self, fp_class: str, key: str) -> int:
        r = self._rows("SELECT COUNT(*) AS n FROM measurements WHERE class=? AND key=?", [fp_class, key])
        return int(r[0]["n"])


def open_store(url: str | None = None, readonly: bool = False) -> Store:
    """Open the store named by a path (or `sqlite:///path`), `$HIL_DB`, or ./hil.db; `readonly` for
    commands that only read (they never create, migrate or change a store)."""
    target = url or default_db_path()
    if target.startswith(("postgresql://", "postgres://")):
        raise StoreError(
            "PostgreSQL stores are not available in this version yet; use an SQLite path (--db FILE)"
        )
    if target.startswith("sqlite:///"):
        target = target[len("sqlite:///"):]
    return Store(target, readonly=readonly)
