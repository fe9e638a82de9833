"""A real Ray cluster on loopback for the tests.

``ray start --head --block`` runs in a process group of its own; the cluster is stopped by
ending that group (SIGTERM, then SIGKILL), never with ``ray stop``, which would end every
Ray process of this user on the machine, other people's clusters included.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# Ray turns 127.0.0.1 into the machine's outward address unless told it is not a cluster
# machine; read when ray is first imported, so it is set on import of this module.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
for _key, _value in LOOPBACK_ENV.items():
    os.environ.setdefault(_key, _value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_bin() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


@contextmanager
def ray_cluster(num_cpus: int = 2, object_store_mb: int = 100, startup_s: float = 90.0) -> Iterator[str]:
    """Start a one-node Ray cluster on 127.0.0.1; yields its address ``127.0.0.1:PORT``.

    Every Ray address is 127.0.0.1 and token auth is off (``LOOPBACK_ENV``, for the cluster
    and this process); the workers see ``tests/`` on their path (the tests' user models).
    """
    import ray._private.ray_constants as constants

    if constants.ENABLE_RAY_CLUSTER:
        raise RuntimeError("ray was imported before helpers_ray: it would not stay on 127.0.0.1")
    temp = Path(tempfile.mkdtemp(prefix="naskd-ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    env = {
        **os.environ,
        **LOOPBACK_ENV,
        "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p),
    }
    cmd = [
        _ray_bin(),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        "--include-dashboard=false",
        f"--object-store-memory={object_store_mb * 2**20}",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
        f"--dashboard-agent-listen-port={free_port()}",
    ]
    log_path = temp / "ray-start.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_s
        while b"block forever" not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed (exit {proc.poll()}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        _end_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


def _end_group(proc: subprocess.Popen, grace_s: float = 2.0) -> None:
    """End the process group that ``ray start`` leads (gcs, raylet, workers): ours only."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            proc.poll()
            time.sleep(0.2)
        else:
            continue
        break
    proc.wait()
