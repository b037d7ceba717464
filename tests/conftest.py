"""Shared pytest fixtures. Each block belongs to one part of the project; keep blocks self-contained."""

from __future__ import annotations

# ---- device farm over SSH: real OpenSSH servers on loopback (tests/sshd.py) -------------------
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sshd import SshdFactory, SshdHost, keygen, sshd_missing


@pytest.fixture(scope="session")
def ssh_user_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test user's ed25519 key; every test sshd authorizes its public half."""
    reason = sshd_missing()
    if reason:
        pytest.skip(reason)
    return keygen(tmp_path_factory.mktemp("ssh-user") / "id_ed25519")


@pytest.fixture(scope="session")
def ssh_farm(tmp_path_factory: pytest.TempPathFactory, ssh_user_key: Path) -> Iterator[dict[str, SshdHost]]:
    """Two independent, trusted sshd hosts for tests that leave them running."""
    root = tmp_path_factory.mktemp("ssh-farm")
    hosts = {n: SshdHost(n, root / n, ssh_user_key) for n in ("a", "b")}
    try:
        for h in hosts.values():
            h.start().trust()
        yield hosts
    finally:
        for h in hosts.values():
            h.stop()


@pytest.fixture
def sshd_factory(tmp_path: Path, ssh_user_key: Path) -> Iterator[SshdFactory]:
    """Fresh sshd hosts for one test (started and trusted); stopped by pid at the end."""
    made: list[SshdHost] = []

    def make(name: str) -> SshdHost:
        h = SshdHost(name, tmp_path / f"sshd-{name}", ssh_user_key).start()
        h.trust()
        made.append(h)
        return h

    try:
        yield make
    finally:
        for h in made:
            h.stop()


@pytest.fixture(scope="session")
def python_without_torch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter that has the standard library and nothing else (a target without torch)."""
    venv = tmp_path_factory.mktemp("bare-python") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


# ---- end of device farm block -----------------------------------------------------------------


# ---- PostgreSQL store: one private server per session (tests/pgserver.py) ----------------------
from tests.pgserver import PgServer, postgres_missing  # noqa: E402


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A private PostgreSQL server on loopback for the whole session; skipped with the reason when
    PostgreSQL or psycopg is not installed."""
    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database on the session's server."""
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store contract test puts its store: an SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "s.db")
    return request.getfixturevalue("pg_url")


# ---- end of PostgreSQL block -------------------------------------------------------------------
