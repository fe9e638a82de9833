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
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                                    "-o", "Dpkg::Options::=--force-confold", "postgresql"]):
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


@contextmanager
def postgres_server(user: str = "naskd", database: str = "studies") -> Iterator[str]:
    """Start a PostgreSQL server on 127.0.0.1; yields an SQLAlchemy URL for a fresh database."""
    bindir = ensure_postgres()
    root = os.geteuid() == 0
    as_pg = ["runuser", "-u", "postgres", "--"] if root else []
    # Directly under /tmp: the postgres user must be able to reach it (pytest's tmp_path is 0700).
    temp = Path(tempfile.mkdtemp(prefix="naskd-pg-", dir="/tmp"))
    if root:
        shutil.chown(temp, "postgres", "postgres")
    data, port = temp / "data", _free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*as_pg, *args], cwd=temp, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (temp / "log").read_text() if (temp / "log").exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}\n{log[-2000:]}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", user)
        # fsync off: a test server whose data is thrown away need not survive a power cut.
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o",
            f"-p {port} -k {temp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            "-l", str(temp / "log"), "-w", "start")
        try:
            run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database)
            yield f"postgresql+psycopg2://{user}@127.0.0.1:{port}/{database}"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(temp, ignore_errors=True)
