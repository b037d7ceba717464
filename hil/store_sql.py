"""What both engines of the store share: the schema and its migrations, the SQL (written once, in
the dialect SQLite and PostgreSQL agree on), and the `Store` API with its rules. `hil.store` holds
the SQLite backend and `open_store`; `hil.store_pg` the PostgreSQL one.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hil.errors import StoreError
from hil.lease import Lease, coordinator_identity
from hil.measure import Measurement, Stats
from hil.target import fingerprint_class
from hil.workload import canonical_json

# 1: one row per (class, model name) in `models`, replaced on refit.
# 2: `model_versions`: every fit kept (a LUT's calibration is re-anchored over time); the newest is
#    used. A version-1 store is migrated when it is opened.
# 3: `measurements.accepted` (one accepted row per class and key, a unique index), provenance of
#    who wrote a record (`coordinator`, `host`) and a `uid` per record and model version, so stores
#    can be merged without duplicates (`hil store copy`).
SCHEMA_VERSION = 3


@dataclass(frozen=True)
class Dialect:
    """How the two engines spell what the shared SQL needs."""

    name: str
    id_column: str  # an auto-numbered primary key
    real: str  # a double: PostgreSQL's REAL is 4 bytes, too coarse for timestamps
    param: str  # the driver's placeholder; the shared SQL is written with `?`

    def sql(self, text: str) -> str:
        if self.param == "?":
            return text
        # no `%` in the shared SQL: it would be taken for a placeholder by the PostgreSQL driver
        assert "%" not in text, text
        return text.replace("?", self.param)


SQLITE = Dialect("sqlite", "INTEGER PRIMARY KEY AUTOINCREMENT", "REAL", "?")

_MODEL_VERSIONS = """
CREATE TABLE IF NOT EXISTS model_versions (
    id {ID},
    class TEXT NOT NULL,
    name TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at {REAL} NOT NULL
);
CREATE INDEX IF NOT EXISTS model_versions_class_name ON model_versions (class, name, id);
"""

# The schema as version 2 made it; a new store is created at 2 and migrated, so every store, new
# or old, reaches the current version by the one path the migration tests cover.
_SCHEMA_2 = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fingerprints (
    class TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    class_json TEXT NOT NULL,
    first_seen {REAL} NOT NULL
);
CREATE TABLE IF NOT EXISTS measurements (
    id {ID},
    device TEXT NOT NULL,
    class TEXT NOT NULL REFERENCES fingerprints(class),
    key TEXT NOT NULL,
    workload TEXT NOT NULL,
    provenance TEXT NOT NULL,
    ok INTEGER NOT NULL,
    noisy INTEGER NOT NULL,
    latency_ms {REAL},
    cv {REAL},
    stats TEXT,
    metrics TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    error_kind TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at {REAL} NOT NULL
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

_MIGRATE_2_TO_3_COLUMNS = """
ALTER TABLE measurements ADD COLUMN accepted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE measurements ADD COLUMN coordinator TEXT NOT NULL DEFAULT '';
ALTER TABLE measurements ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE measurements ADD COLUMN uid TEXT;
ALTER TABLE model_versions ADD COLUMN uid TEXT;
"""
# after every row has its uid and the accepted rows are marked
_MIGRATE_2_TO_3_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS measurements_uid ON measurements (uid);
CREATE UNIQUE INDEX IF NOT EXISTS measurements_accepted ON measurements (class, key) WHERE accepted = 1;
CREATE UNIQUE INDEX IF NOT EXISTS model_versions_uid ON model_versions (uid);
UPDATE meta SET value = '3' WHERE name = 'schema_version';
"""

# Columns of a record as `hil store copy` moves it (everything but the local id and the accepted
# flag, which the destination decides from its own rows).
RECORD_COLUMNS = ("uid", "device", "class", "key", "workload", "provenance", "ok", "noisy", "latency_ms", "cv",
                  "stats", "metrics", "state", "attempt", "error_kind", "error", "created_at", "coordinator", "host")
_INSERT_RECORD = (f"INSERT INTO measurements ({', '.join(RECORD_COLUMNS)})"
                  f" VALUES ({', '.join('?' * len(RECORD_COLUMNS))}) ON CONFLICT (uid) DO NOTHING")


def statements(script: str, dialect: Dialect) -> list[str]:
    """A script's statements with the dialect's types filled in (none of ours has `;` in a literal)."""
    text = script.replace("{ID}", dialect.id_column).replace("{REAL}", dialect.real)
    return [s.strip() for s in text.split(";") if s.strip()]


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


@dataclass(frozen=True)
class LutClass:
    """One fingerprint class in the store: a LUT can be built from its measurements."""

    fp_class: str
    device: str
    fingerprint_class: dict[str, Any]
    entries: int


def choose_accepted(attempts: Sequence[dict[str, Any]]) -> Any:
    """The id of the accepted attempt among a key's successful ones (`id`, `noisy`, `latency_ms`,
    `created_at`), or None when there is none. The rule of the module docstring."""
    clean = [a for a in attempts if not a["noisy"]]
    if clean:
        return max(clean, key=lambda a: (a["created_at"], a["id"]))["id"]
    if not attempts:
        return None
    ms = sorted(attempts, key=lambda a: (a["latency_ms"], a["created_at"], a["id"]))
    return ms[(len(ms) - 1) // 2]["id"]


class Store:
    """The one store API. A backend provides the connection (`_execute`, `_write`), the dialect,
    and how a write is serialized against other writers of the same key (`_lock_key`).

    Thread-safe: one worker thread per device may write at once."""

    dialect: Dialect = SQLITE
    path: str  # what messages call the store: a file path, or a URL without its password
    readonly: bool = False
    # who writes into this store: recorded with every record (provenance)
    coordinator: str = ""
    host: str = ""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.coordinator = coordinator_identity()
        self.host = socket.gethostname()

    # -- what a backend provides ---------------------------------------------------------------

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement of the shared SQL (`?` placeholders); returns a DB-API cursor."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction, exclusive enough that schema setup and migrations run once."""
        raise NotImplementedError
        yield

    def _lock_key(self, fp_class: str, key: str) -> None:
        """Inside `_write`: serialize with other writers of this class and key (choosing the accepted
        row reads before it writes). SQLite's write transaction already excludes every other writer."""

    def _tables(self) -> set[str]:
        raise NotImplementedError

    def _create_extra(self) -> None:
        """Backend-specific tables, created with the schema (inside `_write`)."""

    def lease(self, device: str) -> Lease | None:
        """A lease on an in-process device that every coordinator of this store sees, or None when
        the store is private to this host (then a lock file on this host does it)."""
        return None

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema --------------------------------------------------------------------------------

    def _script(self, script: str) -> None:
        for stmt in statements(script, self.dialect):
            self._execute(stmt)

    def _schema_version(self, tables: set[str] | None = None) -> int | None:
        """The stored schema version; None for an empty database. A database that is not a hil
        store, or whose version this hil cannot read, is refused."""
        tables = self._tables() if tables is None else tables
        if tables and "meta" not in tables:
            raise StoreError(f"store {self.path}: a database, but not a hil store (tables: {sorted(tables)[:8]})")
        if not tables:
            return None
        row = self._execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
        try:
            version = int(row[0]) if row else None
        except (TypeError, ValueError):
            raise StoreError(f"store {self.path}: schema version {row[0]!r} is not a number") from None
        if version not in (1, 2, SCHEMA_VERSION):
            raise StoreError(
                f"store {self.path}: schema version {version}, this hil reads {SCHEMA_VERSION}"
                + (" (written by a newer hil)" if version and version > SCHEMA_VERSION else "")
            )
        return version

    def _setup_schema(self) -> None:
        """Create a new store, or migrate an older one, keeping every record. Runs in one write
        transaction (a failure leaves the store as it was) and re-reads the version inside it:
        another process may have created or migrated the store meanwhile."""
        version = self._schema_version()
        if version == SCHEMA_VERSION:
            return
        if self.readonly:
            if version is None:
                raise StoreError(f"store {self.path}: an empty database, not a hil store (nothing was measured "
                                 "into it)")
            raise StoreError(f"store {self.path}: written by an older hil (schema {version}); any command that "
                             "writes to it (e.g. hil lut build) migrates it, keeping every record")
        with self._write():
            version = self._schema_version()
            if version is None:
                self._script(_SCHEMA_2)
                self._execute("INSERT INTO meta VALUES ('schema_version', '2')")
                version = 2
            if version == 1:
                self._script(_MIGRATE_1_TO_2)
                version = 2
            if version == 2:
                self._migrate_2_to_3()
            self._create_extra()

    def _migrate_2_to_3(self) -> None:
        self._script(_MIGRATE_2_TO_3_COLUMNS)
        for table in ("measurements", "model_versions"):
            ids = [r[0] for r in self._execute(f"SELECT id FROM {table} WHERE uid IS NULL").fetchall()]
            for i in ids:
                self._execute(f"UPDATE {table} SET uid = ? WHERE id = ?", (uuid.uuid4().hex, i))
        pairs = self._execute("SELECT DISTINCT class, key FROM measurements WHERE ok = 1").fetchall()
        for fp_class, key in pairs:
            self._reaccept(fp_class, key)
        self._script(_MIGRATE_2_TO_3_INDEXES)

    # -- writing -------------------------------------------------------------------------------

    def _reaccept(self, fp_class: str, key: str) -> None:
        """Mark the accepted attempt of one key (inside `_write`, after `_lock_key`). The flag is
        cleared before it is set: the unique index never sees two."""
        cur = self._execute(
            "SELECT id, noisy, latency_ms, created_at, accepted FROM measurements"
            " WHERE class = ? AND key = ? AND ok = 1", (fp_class, key))
        rows = [dict(zip(("id", "noisy", "latency_ms", "created_at", "accepted"), r, strict=True))
                for r in cur.fetchall()]
        chosen = choose_accepted(rows)
        current = [r["id"] for r in rows if r["accepted"]]
        if current == [chosen] or chosen is None:
            return
        self._execute("UPDATE measurements SET accepted = 0 WHERE class = ? AND key = ? AND accepted = 1",
                      (fp_class, key))
        self._execute("UPDATE measurements SET accepted = 1 WHERE id = ?", (chosen,))

    def add(self, m: Measurement) -> None:
        """Record one attempt (success or failure), committed at once."""
        self.add_all([m])

    def add_all(self, ms: Sequence[Measurement]) -> None:
        """Record several attempts in one transaction: all of them are kept, or none (a session's
        records, which are reused only whole)."""
        rows = [self._record(m) for m in ms]
        with self._write():
            # every key locked before any is written, in one order, so two writers of overlapping
            # sessions wait for each other instead of deadlocking
            for fp_class, key in sorted({(r["class"], r["key"]) for r in rows}):
                self._lock_key(fp_class, key)
            for m, record in zip(ms, rows, strict=True):
                self._add_fingerprint(record["class"], m.device, canonical_json(m.fingerprint["class"]),
                                      m.created_at)
                self._execute(_INSERT_RECORD, [record[c] for c in RECORD_COLUMNS])
                if m.ok:
                    self._reaccept(record["class"], m.key)

    def _record(self, m: Measurement) -> dict[str, Any]:
        fp_class = fingerprint_class(m.fingerprint)
        st = m.stats
        return {
            "uid": uuid.uuid4().hex, "device": m.device, "class": fp_class, "key": m.key,
            "workload": canonical_json(m.workload), "provenance": m.provenance, "ok": int(m.ok),
            "noisy": int(m.noisy), "latency_ms": st.median_ms if st else None, "cv": st.cv if st else None,
            "stats": json.dumps(st.to_json()) if st else None, "metrics": json.dumps(m.metrics),
            "state": json.dumps(m.fingerprint.get("state", {})), "attempt": m.attempt,
            "error_kind": m.error_kind.value if m.error_kind else "", "error": m.error,
            "created_at": m.created_at, "coordinator": self.coordinator, "host": self.host,
        }

    def _add_fingerprint(self, fp_class: str, device: str, class_json: str, first_seen: float) -> None:
        self._execute("INSERT INTO fingerprints VALUES (?, ?, ?, ?) ON CONFLICT (class) DO NOTHING",
                      (fp_class, device, class_json, first_seen))

    def save_model(self, fp_class: str, name: str, params: dict[str, Any], created_at: float) -> int:
        """Keep a new version of a fitted model (e.g. the network calibration) next to its
        measurements; earlier versions stay. Returns the new version number."""
        with self._write():
            self._execute(
                "INSERT INTO model_versions (class, name, params, created_at, uid) VALUES (?, ?, ?, ?, ?)",
                (fp_class, name, json.dumps(params), created_at, uuid.uuid4().hex),
            )
            r = self._execute("SELECT COUNT(*) FROM model_versions WHERE class=? AND name=?",
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

    # -- moving records between stores (hil store copy) -----------------------------------------

    def export_rows(self, table: str, after_id: int, limit: int) -> list[dict[str, Any]]:
        """Rows of `fingerprints`, `measurements` or `model_versions` in store order, a page at a time
        (`id` > `after_id`; fingerprints are paged by their row order too)."""
        if table == "measurements":
            cols = ", ".join(("id", *RECORD_COLUMNS))
        elif table == "model_versions":
            cols = "id, uid, class, name, params, created_at"
        else:
            raise ValueError(table)
        return self._rows(f"SELECT {cols} FROM {table} WHERE id > ? ORDER BY id LIMIT ?", [after_id, limit])

    def fingerprint_rows(self) -> list[dict[str, Any]]:
        return self._rows("SELECT class, device, class_json, first_seen FROM fingerprints ORDER BY first_seen", [])

    def import_rows(self, fingerprints: Iterable[dict[str, Any]], records: Iterable[dict[str, Any]],
                    models: Iterable[dict[str, Any]]) -> tuple[int, int]:
        """Merge rows exported from another store in one transaction: records and model versions
        already here (same uid) are skipped, provenance is kept as it was, and the accepted entry of
        every key touched is chosen again from all its attempts. Returns (records, models) added."""
        added_records = added_models = 0
        with self._write():
            for f in fingerprints:
                self._add_fingerprint(f["class"], f["device"], f["class_json"], f["first_seen"])
            touched: set[tuple[str, str]] = set()
            for r in records:
                cur = self._execute(_INSERT_RECORD, [r[c] for c in RECORD_COLUMNS])
                if cur.rowcount == 1:
                    added_records += 1
                    if r["ok"]:
                        touched.add((r["class"], r["key"]))
            for fp_class, key in sorted(touched):
                self._lock_key(fp_class, key)
                self._reaccept(fp_class, key)
            for v in models:
                cur = self._execute(
                    "INSERT INTO model_versions (uid, class, name, params, created_at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (uid) DO NOTHING", (v["uid"], v["class"], v["name"], v["params"], v["created_at"]))
                added_models += max(cur.rowcount, 0)
        return added_records, added_models

    # -- reading -------------------------------------------------------------------------------

    def _rows(self, sql: str, args: Iterable[Any]) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._execute(sql, tuple(args))
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

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

    def _class_json(self, fp_class: str) -> str | None:
        fp = self._rows("SELECT class_json FROM fingerprints WHERE class=?", [fp_class])
        return fp[0]["class_json"] if fp else None

    def attempts(self, fp_class: str, key: str | None = None) -> Iterator[Measurement]:
        """Every attempt in a class (optionally for one key), oldest first."""
        class_json = self._class_json(fp_class)
        if class_json is None:
            return
        sql = "SELECT * FROM measurements WHERE class=?"
        args: list[Any] = [fp_class]
        if key is not None:
            sql += " AND key=?"
            args.append(key)
        for r in self._rows(sql + " ORDER BY id", args):
            yield self._to_measurement(r, class_json)

    def lut(self, fp_class: str) -> dict[str, Measurement]:
        """The accepted measurement per key of a class."""
        class_json = self._class_json(fp_class)
        if class_json is None:
            return {}
        rows = self._rows("SELECT * FROM measurements WHERE class=? AND accepted=1", [fp_class])
        return {r["key"]: self._to_measurement(r, class_json) for r in rows}

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


@dataclass
class CopyResult:
    """What `copy_records` moved: rows added to the destination, and rows it already had."""

    records_added: int = 0
    records_present: int = 0
    models_added: int = 0
    models_present: int = 0
    classes: int = 0

    def to_json(self) -> dict[str, int]:
        return {"records_added": self.records_added, "records_present": self.records_present,
                "models_added": self.models_added, "models_present": self.models_present, "classes": self.classes}


def copy_records(src: Store, dst: Store, page: int = 1000,
                 progress: Callable[[int], None] | None = None) -> CopyResult:
    """Merge every record and model version of `src` into `dst`, keeping their provenance; rows
    `dst` already has (same uid) are skipped. Each page is one transaction, so an interrupted copy
    keeps what it committed and a rerun goes on from there; a second copy adds nothing."""
    res = CopyResult()
    fingerprints = src.fingerprint_rows()
    res.classes = len(fingerprints)
    dst.import_rows(fingerprints, [], [])
    after = 0
    while rows := src.export_rows("measurements", after, page):
        added, _ = dst.import_rows([], rows, [])
        res.records_added += added
        res.records_present += len(rows) - added
        after = rows[-1]["id"]
        if progress:
            progress(len(rows))
    after = 0
    while rows := src.export_rows("model_versions", after, page):
        _, added = dst.import_rows([], [], rows)
        res.models_added += added
        res.models_present += len(rows) - added
        after = rows[-1]["id"]
    return res
