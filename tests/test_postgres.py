"""Many workers on one study without Ray: a real PostgreSQL server on loopback, worker threads
racing for the last slots, and three ``naskd search --storage postgresql+psycopg2://...``
processes judging students against one set of rung records, one of them killed mid-rung and
its student continued by another."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from helpers_pg import postgres_server

if not os.environ.get("CI"):  # in CI a missing driver fails the run rather than skipping it
    pytest.importorskip("psycopg2", reason="psycopg2-binary is part of the dev extra: pip install -e '.[dev]'")

from naskd.backends import optuna_backend as ob  # noqa: E402
from naskd.cli import main  # noqa: E402
from naskd.config import load_study  # noqa: E402
from naskd.trial import build_context  # noqa: E402

State = optuna.trial.TrialState
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def postgres():
    """One server for the module (each test uses its own study); always stopped."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def fast_heartbeats(monkeypatch):
    """Heartbeat every second, stale after 5 (production: 20 and 60); also for subprocesses."""
    monkeypatch.setenv("NASKD_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("NASKD_HEARTBEAT_GRACE", "5")


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def _check_exact(trials: list[optuna.trial.FrozenTrial], target: int) -> list[optuna.trial.FrozenTrial]:
    """Exactly ``target`` counted trials, unique numbers, none left running; surplus trials
    (if a race made any) ended without being sampled. Returns the counted ones."""
    assert len({t.number for t in trials}) == len(trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert not [t for t in trials if t.state == State.RUNNING]
    counted = [t for t in trials if ob.counts(t)]
    assert len(counted) == target
    for t in trials:
        if t.user_attrs.get("surplus"):
            assert t.state == State.FAIL and not t.params
    return counted


class _Quick:
    """A trivial objective: trials take milliseconds, so workers race for the last slots."""

    directions = ["maximize"]

    def __call__(self, trial: optuna.Trial) -> tuple[float]:
        trial.set_user_attr("status", "complete")
        return (trial.suggest_float("x", 0.0, 1.0),)


@pytest.mark.parametrize("kind", ["rdb", "journal"])
def test_racing_workers_hold_exactly_the_requested_count(kind, postgres, fast_heartbeats, tmp_path):
    """Four workers race for the last slots of a study whose trials take milliseconds."""
    name, target = f"race-{kind}", 30
    choice = (
        ob.StorageChoice(postgres, "rdb") if kind == "rdb" else ob.StorageChoice(str(tmp_path / "s.journal"), "journal")
    )
    optuna.create_study(study_name=name, storage=ob.open_storage(choice), directions=["maximize"])
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            storage = ob.open_storage(choice)  # heartbeats on for rdb
            study = optuna.load_study(
                study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=seed)
            )
            ob._optimize_until(study, storage, _Quick(), target, lock_path=ob._creation_lock_path(choice))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    trials = optuna.load_study(study_name=name, storage=ob.open_storage(choice)).get_trials()
    counted = _check_exact(trials, target)
    assert all(t.state == State.COMPLETE for t in counted)
    if kind == "journal":  # one machine: the creation lock prevents the race itself
        assert len(trials) == target


def _naskd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from naskd.cli import main; sys.exit(main())", *args]


def test_three_worker_processes_and_one_killed_mid_rung(postgres, fast_heartbeats, write_study, tmp_path, capsys):
    target = 6
    study = write_study(
        name="pg3", distill={"steps": 1000, "batch_size": 32}, search={"trials": target, "sampler": "tpe"}
    )
    out = tmp_path / "out"
    build_context(load_study(study))  # the teacher and its outputs, once, before the workers start
    # One torch thread each: three processes sharing two cores would otherwise oversubscribe them.
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    cmd = _naskd("search", str(study), "--storage", postgres, "--out", str(out), "-q")
    procs = {}
    for i in range(3):
        log = open(tmp_path / f"worker{i}.log", "wb")
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs[p.pid] = p
    victim = None
    try:
        # Kill the worker of a running trial that has passed a rung, once one trial has ended.
        deadline = time.monotonic() + 120
        while victim is None:
            assert time.monotonic() < deadline, "no trial ended with another one past a rung"
            time.sleep(0.1)
            try:
                trials = _study(postgres, "pg3").get_trials()
            except KeyError:  # not created yet
                continue
            if not any(t.state in (State.COMPLETE, State.PRUNED) for t in trials):
                continue
            for t in trials:
                pid = int(t.user_attrs.get("worker", ":0").rsplit(":", 1)[1])
                if (
                    t.state == State.RUNNING
                    and pid in procs
                    and t.user_attrs.get("rungs")
                    and Path(t.user_attrs.get("checkpoint", "")).is_file()
                ):
                    os.kill(pid, signal.SIGKILL)
                    victim = (t.number, procs.pop(pid), t.user_attrs["rungs"])
                    break
        number, killed, kept = victim
        killed.wait(timeout=10)
        for p in procs.values():
            assert p.wait(timeout=180) == 0, "\n".join(f.read_text() for f in tmp_path.glob("worker*.log"))
    finally:
        for p in [*procs.values(), *([victim[1]] if victim else [])]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    trials = _study(postgres, "pg3").get_trials()
    dead = trials[number]
    if dead.state != State.FAIL:  # it ended in the instant before the kill: nothing to recover
        pytest.fail("the killed worker's trial ended before the kill; make trials longer")
    # Its trial was failed by the survivors' heartbeat check and is not counted ...
    assert not ob.counts(dead) and "heartbeats" in ob.to_record(dead).reason
    counted = _check_exact(trials, target)
    assert all(
        t.state in (State.COMPLETE, State.PRUNED) and t.user_attrs["status"] in ("complete", "pruned") for t in counted
    )
    assert len({t.user_attrs["worker"] for t in counted}) >= 2  # the work was shared
    # ... and its student was continued by a survivor from its saved rung, losing no rung.
    (continued,) = [t for t in trials if t.user_attrs.get("continues") == number]
    assert continued.params == dead.params and ob.counts(continued)
    assert continued.user_attrs["rungs"][: len(kept)] == kept
    assert not list((out / "checkpoints").glob("*.pt"))

    capsys.readouterr()
    assert main(["front", str(study), "--storage", postgres, "--out", str(out), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] == target
    assert summary["counts"]["failed"] == 1


def test_a_plain_postgresql_url_works(postgres, write_study, tmp_path):
    plain = postgres.replace("postgresql+psycopg2://", "postgresql://")
    study = write_study(name="plain-url", search={"trials": 2})
    assert main(["search", str(study), "--storage", plain, "--out", str(tmp_path / "out"), "-q"]) == 0
    assert len(_study(postgres, "plain-url").trials) == 2


def test_a_server_lost_mid_study_is_one_line_and_the_study_resumes(fast_heartbeats, write_study, tmp_path):
    from helpers_pg import postgres_cluster

    study = write_study(name="lost", distill={"steps": 400, "batch_size": 32}, search={"trials": 4})
    build_context(load_study(study))  # the teacher, before the clock starts
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    with postgres_cluster() as server:
        cmd = _naskd("search", str(study), "--storage", server.url, "--out", str(out), "-q")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not any(t.state == State.COMPLETE for t in _trials_or_none(server.url, "lost")):
                assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
                time.sleep(0.2)
            server.stop("immediate")  # the server dies mid-study
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 2, err
        assert err.count("\n") == 1 and err.startswith("naskd: ") and "Traceback" not in err, err
        assert "lost during the study" in err and "run the same command again" in err
        server.start()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        trials = optuna.load_study(study_name="lost", storage=server.url).get_trials()
        counted = [t for t in trials if ob.counts(t)]
        assert len(counted) == 4 and all(t.state in (State.COMPLETE, State.PRUNED) for t in counted)


def _trials_or_none(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return _study(url, name).get_trials()
    except KeyError:  # not created yet
        return []
