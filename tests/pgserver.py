"""A private PostgreSQL server for tests and benchmarks: Debian's binaries, a fresh `initdb` in a
temporary folder, a random loopback port, stopped by its pid.

The server refuses to run as root, and CI runs as root: then it runs as the system user `postgres`
(Debian's package creates it) or, failing that, `hil-pg`, created here; its files live in a folder
under /tmp that the user owns. `postgres_missing()` says why no server can be started, for a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

SERVICE_USER = "hil-pg"
SUPERUSER = "hil"


def pg_bindir() -> Path | None:
    """The newest Debian PostgreSQL's bin folder, or that of `pg_ctl` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def postgres_missing() -> str | None:
    """Why no private server can be started here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]'; scripts/setup does it)"
    b = pg_bindir()
    if b is None or not (b / "postgres").exists():
        return "PostgreSQL is not installed (apt-get install postgresql; scripts/setup does it)"
    if os.getuid() == 0 and shutil.which("setpriv") is None:
        return "running as root and setpriv (util-linux) is missing to start postgres as another user"
    return None


def _service_user() -> pwd.struct_passwd | None:
    """The user the server runs as: ourselves unless we are root."""
    if os.getuid() != 0:
        return None
    for name in ("postgres", SERVICE_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
                   check=True, capture_output=True)
    return pwd.getpwnam(SERVICE_USER)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One private server. `url(db)` names a database on it; `create_database()` makes a fresh one."""

    def __init__(self, durable: bool = False) -> None:
        # durable=False: no fsync, for tests (a crash of the test machine loses nothing we keep);
        # benchmarks run with the server's defaults
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="pg-server-"))
        self.data = self.root / "data"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.bindir = pg_bindir()
        self.user = _service_user()

    def _as_user(self) -> list[str]:
        if self.user is None:
            return []
        return ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups", "--"]

    def start(self) -> PgServer:
        assert self.bindir is not None
        self.root.chmod(0o755)
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        subprocess.run([*self._as_user(), str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                        "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions",
                        *([] if self.durable else ["--no-sync"])],
                       check=True, capture_output=True, cwd=self.root)
        self.port = free_port()
        opts = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                "-c", "max_connections=50", "-c", "shared_buffers=32MB"]
        if not self.durable:
            opts += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = open(self.root / "server.log", "wb")  # noqa: SIM115 - the server writes to it until stop()
        # exec'd by setpriv: the pid we keep is the postmaster's own
        self.proc = subprocess.Popen([*self._as_user(), str(self.bindir / "postgres"), "-D", str(self.data),
                                      "-p", str(self.port), *opts], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.root, start_new_session=True)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # a server that never answered is not left running behind us
            raise
        return self

    def _wait_ready(self, timeout_s: float = 60) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, db: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{db}"

    def create_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg
        from psycopg import sql

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as db:
            db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # fast shutdown: ends sessions, then exits
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
