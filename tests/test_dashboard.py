"""A naskd study in optuna-dashboard: a tiny real study, then the real ``optuna-dashboard``
server on it (127.0.0.1 only), read through its HTTP API: the study is listed, its objectives
carry naskd's names, and every trial's spec and metrics are there, whole, as the study holds
them. Needs the ``dashboard`` extra (optuna-dashboard); skipped without it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest

from naskd.cli import main

pytest.importorskip("optuna_dashboard")

# The command the package installs, beside this interpreter (the package has no ``__main__``).
DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")
pytestmark = pytest.mark.skipif(not DASHBOARD.is_file(), reason=f"no {DASHBOARD} beside this interpreter")
STARTUP_S = 60.0
# Loopback only, and never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, route: str) -> Any:
    with _OPENER.open(base + route, timeout=10) as response:
        return json.loads(response.read())


@contextmanager
def dashboard(storage: str, log: Path) -> Iterator[str]:
    """The optuna-dashboard server on ``storage``; yields its base URL once it answers, and
    always stops it."""
    port = _free_port()
    cmd = [str(DASHBOARD), storage, "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"optuna-dashboard exited ({proc.returncode}) before answering:\n{log.read_text()}")
            try:
                _get(base, "/api/meta")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"optuna-dashboard did not answer within {STARTUP_S:.0f} s:\n{log.read_text()}")
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _attrs(serialised: list[dict[str, str]]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in serialised}


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_the_dashboard_shows_a_naskd_study(kind, write_study, tmp_path):
    study_file = write_study(search={"trials": 2, "sampler": "random"})
    out = tmp_path / "out"
    args = ["search", str(study_file), "--out", str(out), "-q"]
    if kind == "journal":
        args += ["--storage", str(out / "study.journal")]
    assert main(args) == 0
    # The forms the README gives: a SQLite URL, or a journal file's path.
    where = f"sqlite:///{out / 'study.db'}" if kind == "sqlite" else str(out / "study.journal")
    storage = (
        where if kind == "sqlite" else optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(where))
    )
    held = optuna.load_study(study_name="tiny", storage=storage)
    objectives = ["accuracy", "latency_p50_ms", "params"]

    with dashboard(where, tmp_path / "dashboard.log") as base:
        listed = {s["study_name"]: s for s in _get(base, "/api/studies")["study_summaries"]}
        assert set(listed) == {"tiny"}
        assert listed["tiny"]["directions"] == ["maximize", "minimize", "minimize"]
        detail = _get(base, f"/api/studies/{listed['tiny']['study_id']}")

    assert detail["objective_names"] == objectives == held.metric_names
    served = {t["number"]: t for t in detail["trials"]}
    assert set(served) == {t.number for t in held.trials} and len(served) == 2
    for trial in held.trials:
        attrs = _attrs(served[trial.number]["user_attrs"])
        # Nested attributes are served as JSON text (cut at 1024 characters): whole here, and equal.
        assert json.loads(attrs["spec"]) == trial.user_attrs["spec"]
        assert json.loads(attrs["metrics"]) == trial.user_attrs["metrics"]
        assert attrs["status"] == trial.user_attrs["status"]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert served[trial.number]["values"] == trial.values
            assert set(objectives) <= set(trial.user_attrs["metrics"])
    columns = {a["key"] for a in detail["union_user_attrs"]}
    assert {"spec", "metrics", "status", "steps", "rungs"} <= columns
