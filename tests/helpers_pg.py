"""A real PostgreSQL server on loopback for the tests, in a temporary directory.

Installed from Debian's ``postgresql`` package when missing (as root, as in CI), without the
default cluster the package would otherwise create and start. The server refuses to run as
root, so its binaries run as the ``postgres`` user; it is stopped with ``pg_ctl stop`` on its
own data directory, and the directory removed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")


def _bindir() -> Path | None:
    """The newest installed server's bin/ (``/usr/lib/postgresql/<version>/bin``)."""
    found = [p / "bin" for p in PG_ROOT.glob("*") if (p / "bin" / "initdb").is_file()]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0) if found else None


def ensure_postgres() -> Path:
    """The server binaries, installing Debian's package first when they are missing.

    Raises:
        RuntimeError: when they are missing and cannot be installed (not root, or apt failed).
    """
    bindir = _bindir()
    if bindir is not None:
        return bindir
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("PostgreSQL is not installed and this user cannot apt-get install it")
    # No default cluster on port 5432: the tests start their own server.
    conf = Path("/etc/postgresql-common/createcluster.conf")
    if not conf.exists():
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text("create_main_cluster = false\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confold",
            "postgresql",
        ],
    ):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    bindir = _bindir()
    if bindir is None:
        raise RuntimeError("apt-get installed postgresql but no initdb was found under /usr/lib/postgresql")
    return bindir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A server in its own temporary data directory; ``stop`` and ``start`` it (the data
    stays) to test a study that loses its server."""

    def __init__(self, bindir: Path, temp: Path, user: str, database: str) -> None:
        self.bindir, self.temp, self.data, self.port = bindir, temp, temp / "data", _free_port()
        self.url = f"postgresql+psycopg2://{user}@127.0.0.1:{self.port}/{database}"
        self._as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def run(self, *args: str) -> None:
        done = subprocess.run([*self._as_pg, *args], cwd=self.temp, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (self.temp / "log").read_text() if (self.temp / "log").exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}\n{log[-2000:]}")

    def start(self) -> None:
        # fsync off: a test server whose data is thrown away need not survive a power cut.
        self.run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            f"-p {self.port} -k {self.temp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            "-l",
            str(self.temp / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self.run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


@contextmanager
def postgres_cluster(user: str = "naskd", database: str = "studies") -> Iterator[PgServer]:
    """Start a PostgreSQL server on 127.0.0.1 with a fresh database; always stopped and removed."""
    bindir = ensure_postgres()
    # Directly under /tmp: the postgres user must be able to reach it (pytest's tmp_path is 0700).
    temp = Path(tempfile.mkdtemp(prefix="naskd-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(temp, "postgres", "postgres")
    server = PgServer(bindir, temp, user, database)
    try:
        server.run(str(bindir / "initdb"), "-D", str(server.data), "-A", "trust", "-U", user)
        server.start()
        try:
            server.run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", user, database)
            yield server
        finally:
            if (server.data / "postmaster.pid").exists():
                server.stop()
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def postgres_server(user: str = "naskd", database: str = "studies") -> Iterator[str]:
    """Start a PostgreSQL server on 127.0.0.1; yields an SQLAlchemy URL for a fresh database."""
    with postgres_cluster(user, database) as server:
        yield server.url
