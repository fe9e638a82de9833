"""Whole studies through the CLI with real Optuna storages (SQLite, journal file): the front,
resume, a killed run, failing trials, worker processes, export and a user's own study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

import naskd
from naskd.cli import main
from naskd.config import METRIC_DIRECTIONS, load_study
from naskd.front import non_dominated

FRONT_KEYS = {"study", "objectives", "teacher", "target_steps", "counts", "hypervolume", "knee", "front"}


def _front_json(study: Path, out: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["front", str(study), "--out", str(out), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def _trials(out: Path, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    storage = (
        f"sqlite:///{out / 'study.db'}"
        if (out / "study.db").exists()
        else optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    )
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def test_search_writes_a_nondominated_front(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 6, "sampler": "tpe"})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "--quiet"]) == 0
    assert (out / "study.db").is_file() and (out / "front.json").is_file() and (out / "front.csv").is_file()

    summary = _front_json(study, out, capsys)
    assert set(summary) == FRONT_KEYS
    assert summary["study"] == "tiny"
    assert summary["objectives"] == [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "latency_p50_ms", "direction": "minimize"},
        {"name": "params", "direction": "minimize"},
    ]
    assert set(summary["teacher"]) == {"accuracy", "params", "flops", "latency_p50_ms", "model_bytes"}
    counts = summary["counts"]
    assert counts["complete"] >= 1 and counts["complete"] + counts["pruned"] == 6
    assert counts["infeasible"] == counts["failed"] == 0
    assert 0.0 < summary["hypervolume"] <= 1.0
    assert summary["knee"] in {e["number"] for e in summary["front"]}
    # The tiny study: 30 steps, rungs at 3, 9 and 27 steps; every front number is at 30.
    assert summary["target_steps"] == 30
    for entry in summary["front"]:
        assert set(entry) == {"number", "spec", "metrics", "steps", "rungs", "loss_terms"}
        assert set(entry["loss_terms"]) == {"ce", "kd"}  # what each term of the default recipe contributed
        assert {"family", "arch", "recipe"} <= set(entry["spec"])
        # synthetic_agreement: recorded only by studies without real data
        assert set(entry["metrics"]) == set(METRIC_DIRECTIONS) - {"synthetic_agreement"}
        assert entry["steps"] == 30
        assert [(r["rung"], r["steps"]) for r in entry["rungs"]] == [(0, 3), (1, 9), (2, 27)]
        assert all(set(r["metrics"]) == set(METRIC_DIRECTIONS) - {"synthetic_agreement"} for r in entry["rungs"])

    # The front is exactly the non-dominated set of all completed trials; pruned ones never on it.
    pruned = {t.number for t in _trials(out) if t.state == optuna.trial.TrialState.PRUNED}
    assert not pruned & {e["number"] for e in summary["front"]}
    trials = [t for t in _trials(out) if t.state == optuna.trial.TrialState.COMPLETE]
    names = [o["name"] for o in summary["objectives"]]
    points = np.array([[t.user_attrs["metrics"][n] for n in names] for t in trials])
    expected = {trials[i].number for i in non_dominated(points, [METRIC_DIRECTIONS[n] for n in names])}
    assert {e["number"] for e in summary["front"]} == expected

    capsys.readouterr()
    assert main(["front", str(study), "--out", str(out), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("number,knee,accuracy") and len(lines) == 1 + len(summary["front"])
    assert ",steps," in lines[0]
    assert main(["front", str(study), "--out", str(out)]) == 0
    assert "teacher" in capsys.readouterr().out


def test_rerun_resumes_up_to_the_requested_count(write_study, tmp_path):
    study = write_study()
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "--trials", "3", "-q"]) == 0
    before = {t.number: t.values for t in _trials(out)}
    assert main(["search", str(study), "--out", str(out), "--trials", "5", "-q"]) == 0
    after = _trials(out)
    assert len(after) == 5
    assert {t.number: t.values for t in after if t.number in before} == before
    # Asking again for a count already reached runs nothing.
    assert main(["search", str(study), "--out", str(out), "--trials", "5", "-q"]) == 0
    assert len(_trials(out)) == 5


def test_failing_and_infeasible_trials_do_not_stop_the_study(write_study, tmp_path, capsys):
    (tmp_path / "flaky_models.py").write_text(
        "import torch.nn as nn\n"
        "def build(arch, input_shape, num_classes):\n"
        "    if arch['width'] % 3 == 0:\n"
        "        raise ValueError(f\"width {arch['width']} is cursed\")\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(16, arch['width']), nn.ReLU(), nn.Linear(arch['width'], 4))\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        study = write_study(
            space={
                "family": "user",
                "builder": "flaky_models:build",
                "params": {"width": {"type": "int", "low": 4, "high": 40}},
            },
            cost={"warmup": 1, "repeats": 5, "max_params": 500},
            search={"trials": 12, "sampler": "random", "seed": 3},
        )
        out = tmp_path / "out"
        assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    finally:
        sys.path.remove(str(tmp_path))
    trials = _trials(out)
    assert len(trials) == 12
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    infeasible = [t for t in trials if t.user_attrs.get("status") == "infeasible"]
    assert failed and all("cursed" in t.user_attrs["reason"] for t in failed)
    assert infeasible and all("budget" in t.user_attrs["reason"] for t in infeasible)
    summary = _front_json(study, out, capsys)
    assert summary["counts"]["failed"] == len(failed)
    assert summary["counts"]["infeasible"] == len(infeasible)
    front_numbers = {e["number"] for e in summary["front"]}
    assert not front_numbers & {t.number for t in failed + infeasible}
    assert all(e["metrics"]["params"] <= 500 for e in summary["front"])


def _naskd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from naskd.cli import main; sys.exit(main())", *args]


def _search_killed_when(study: Path, out: Path, ready, what: str, poll_s: float = 0.3) -> list:
    """Run ``naskd search`` in a process and SIGKILL it once ``ready(trials)`` holds; the
    trials as they stood then."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen(
        _naskd("search", str(study), "--out", str(out), "-q"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            time.sleep(poll_s)
            try:
                trials = _trials(out) if (out / "study.db").exists() else []
            except Exception:  # the study is being created
                continue
            if trials and ready(trials):
                break
        else:
            pytest.fail(f"the study never reached the point to kill it: {what}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return trials


def test_killed_run_resumes_and_keeps_completed_trials(write_study, tmp_path):
    study = write_study(
        distill={"steps": 400, "batch_size": 32}, search={"trials": 6, "sampler": "random"}, fidelity={"rule": "off"}
    )
    out = tmp_path / "out"

    def two_done_one_running(trials) -> bool:
        states = [t.state for t in trials]
        return states.count(optuna.trial.TrialState.COMPLETE) >= 2 and optuna.trial.TrialState.RUNNING in states

    killed = _search_killed_when(study, out, two_done_one_running, "2 completed trials with one running")
    done = {t.number: tuple(t.values) for t in killed if t.state == optuna.trial.TrialState.COMPLETE}

    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    trials = _trials(out)
    states = [t.state for t in trials]
    assert optuna.trial.TrialState.RUNNING not in states
    for number, values in done.items():
        assert trials[number].state == optuna.trial.TrialState.COMPLETE and tuple(trials[number].values) == values
    stale = [t for t in trials if t.user_attrs.get("stale")]
    assert len(stale) >= 1 and all(t.state == optuna.trial.TrialState.FAIL for t in stale)
    counted = [t for t in trials if not t.user_attrs.get("stale")]
    assert len(counted) == 6


def _slow_study(write_study, **extra):
    """Two students of ~3 s each: 300 steps at 10 ms, rungs after 30, 90 and 270 steps (the
    window in which a poll must see trial 0 between rungs is ~2.7 s: at 5 ms a loaded CI
    machine once missed the ~1.35 s it left)."""
    return write_study(
        space={
            "family": "user",
            "builder": "user_models:build_slow_mlp",
            "params": {"width": {"type": "int", "low": 8, "high": 32}, "sleep_ms": {"value": 10}},
        },
        distill={"steps": 300, "batch_size": 32},
        fidelity={"first_rung": 30},
        search={"trials": 2, "sampler": "random"},
        **extra,
    )


def test_a_study_killed_mid_rung_continues_the_student_where_it_stopped(write_study, tmp_path):
    study = _slow_study(write_study)
    out = tmp_path / "out"

    def past_first_rung(trials) -> bool:  # trial 0 saved its state at a rung and trains toward the next
        first = trials[0]
        return (
            first.state == optuna.trial.TrialState.RUNNING
            and bool(first.user_attrs.get("rungs"))
            and (out / "checkpoints" / "trial_0.pt").is_file()
        )

    _search_killed_when(study, out, past_first_rung, "trial 0 past its first rung", poll_s=0.05)
    kept = _trials(out)[0].user_attrs["rungs"]

    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    trials = _trials(out)
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in trials]
    old = trials[0]
    assert old.state == optuna.trial.TrialState.FAIL and old.user_attrs["stale"]
    assert "continued from its last rung" in old.user_attrs["reason"]
    (new,) = [t for t in trials if t.user_attrs.get("continues") == 0]
    assert new.params == old.params and new.user_attrs["spec"] == old.user_attrs["spec"]
    # No completed rung is lost: the continued trial holds the killed one's rung figures.
    assert new.user_attrs["rungs"][: len(kept)] == kept
    assert [e["steps"] for e in new.user_attrs["rungs"]] == [30, 90, 270] and new.user_attrs["steps"] == 300
    assert sum(1 for t in trials if not t.user_attrs.get("stale")) == 2
    assert not list((out / "checkpoints").glob("*.pt"))

    # Bit for bit the student an uninterrupted run trains (same spec, same seed).
    ref_out = tmp_path / "ref"
    ref_out.mkdir()
    optuna.create_study(
        study_name="tiny", storage=f"sqlite:///{ref_out / 'study.db'}", directions=["maximize", "minimize", "minimize"]
    ).enqueue_trial(old.params)
    assert main(["search", str(study), "--out", str(ref_out), "--trials", "1", "-q"]) == 0
    (ref,) = _trials(ref_out)
    assert new.state == ref.state == optuna.trial.TrialState.COMPLETE
    assert new.user_attrs["metrics"]["accuracy"] == ref.user_attrs["metrics"]["accuracy"]
    assert [e["metrics"]["accuracy"] for e in new.user_attrs["rungs"]] == [
        e["metrics"]["accuracy"] for e in ref.user_attrs["rungs"]
    ]
    continued = torch.load(out / "students" / f"trial_{new.number}.pt", weights_only=True)
    straight = torch.load(ref_out / "students" / "trial_0.pt", weights_only=True)
    assert continued.keys() == straight.keys() and all(torch.equal(continued[k], straight[k]) for k in continued)


def test_single_fidelity_trains_every_student_to_the_target_and_records_rungs(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 6, "sampler": "random"}, fidelity={"rule": "off"})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    trials = _trials(out)
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["steps"] == 30 for t in trials)
    assert all([e["steps"] for e in t.user_attrs["rungs"]] == [3, 9, 27] for t in trials)
    assert _front_json(study, out, capsys)["counts"]["pruned"] == 0


def test_pruned_students_are_recorded_at_their_rung_and_never_exported(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 12, "sampler": "random"})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out)]) == 0
    assert "rungs 3/9/27/30st" in capsys.readouterr().err  # the progress bar shows how far students got
    pruned = [t for t in _trials(out) if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "this seed's students should give the rule something to stop"
    for t in pruned:
        last = t.user_attrs["rungs"][-1]
        assert t.user_attrs["status"] == "pruned" and t.user_attrs["steps"] == last["steps"] < 30
        assert t.user_attrs["metrics"] == last["metrics"] and t.values is None
        assert "stopped at rung" in t.user_attrs["reason"]
        assert not (out / "students" / f"trial_{t.number}.pt").exists()
    capsys.readouterr()
    assert (
        main(["export", str(study), "--out", str(out), "--trial", str(pruned[0].number), "-o", str(tmp_path / "x")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stopped at a rung" in err[0] and not (tmp_path / "x").exists()


def test_confirm_at_the_target_budget_reproduces_the_front_exactly(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 6, "sampler": "random"})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    summary = _front_json(study, out, capsys)
    assert (
        main(["confirm", str(study), "--out", str(out), "--top", "3", "--steps", str(summary["target_steps"]), "-q"])
        == 0
    )
    confirmed = [e for e in _front_json(study, out, capsys)["front"] if "long_accuracy" in e["metrics"]]
    assert len(confirmed) == min(3, len(summary["front"]))
    assert all(e["metrics"]["long_accuracy"] == e["metrics"]["accuracy"] for e in confirmed)


def test_a_resume_with_another_target_budget_is_refused(write_study, tmp_path, capsys):
    study = write_study()
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "--trials", "2", "-q"]) == 0
    capsys.readouterr()
    assert main(["search", str(write_study(distill={"steps": 60})), "--out", str(out), "--trials", "3", "-q"]) == 2
    err = capsys.readouterr().err
    assert "target budget of 30 steps" in err and "now 60" in err and err.count("\n") == 1
    assert len(_trials(out)) == 2


def test_workers_share_one_journal_study(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 6, "sampler": "tpe"})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "--workers", "2", "-q"]) == 0
    assert (out / "study.journal").is_file() and not (out / "study.db").exists()
    trials = _trials(out)
    # Workers take turns (a lock beside the journal) to count and create: exactly the count.
    assert len(trials) == 6
    assert len({t.number for t in trials}) == len(trials)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert all(t.state in done for t in trials)
    # Both workers' students were judged against one set of rung records: the journal's.
    assert all(t.user_attrs["rungs"] for t in trials)
    # `front` finds the journal without being told.
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert _front_json(study, out, capsys)["counts"]["complete"] == complete


def test_export_round_trips(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 3})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    summary = _front_json(study, out, capsys)
    entry = summary["front"][0]
    dest = tmp_path / "exported"
    capsys.readouterr()
    assert main(["export", str(study), "--out", str(out), "--trial", str(entry["number"]), "-o", str(dest)]) == 0
    assert "reloaded" in capsys.readouterr().out
    assert {p.name for p in dest.iterdir()} == {"model.pt", "model.pt2", "model.onnx", "spec.json", "README.md"}
    info = json.loads((dest / "spec.json").read_text())
    assert info["spec"] == entry["spec"]

    config = load_study(study)
    from naskd.data import load_data
    from naskd.spaces import BuildContext, build_student

    data = load_data(config.data)
    program = torch.export.load(dest / "model.pt2").module()  # fixed in eval mode
    rebuilt = build_student(info["spec"], BuildContext(tuple(info["input_shape"]), info["num_classes"]))
    rebuilt.load_state_dict(torch.load(dest / "model.pt", weights_only=True))
    rebuilt.eval()
    with torch.no_grad():
        acc_program = (program(data.x_val).argmax(1) == data.y_val).float().mean().item()
        acc_rebuilt = (rebuilt(data.x_val).argmax(1) == data.y_val).float().mean().item()
    assert acc_program == pytest.approx(entry["metrics"]["accuracy"])
    assert acc_rebuilt == pytest.approx(entry["metrics"]["accuracy"])


def test_export_refuses_a_trial_that_is_not_complete(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 1})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["export", str(study), "--out", str(out), "--trial", "42", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trial 42: no such trial" in err[0]


def test_front_without_a_study_is_a_clear_error(write_study, tmp_path, capsys):
    assert main(["front", str(write_study()), "--out", str(tmp_path / "none")]) == 2
    assert "no study here" in capsys.readouterr().err


def test_optuna_objective_in_a_users_own_study(write_study):
    objective = naskd.optuna_objective(str(write_study()))
    study = optuna.create_study(directions=objective.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=3)
    assert len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all({"spec", "metrics", "status"} <= set(t.user_attrs) for t in study.trials)
    assert study.best_trials


def test_core_does_not_import_optuna():
    code = (
        "import sys, naskd, naskd.trial, naskd.front, naskd.results, naskd.export\n"
        "assert 'optuna' not in sys.modules and 'ray' not in sys.modules, "
        "sorted(m for m in sys.modules if 'optuna' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
