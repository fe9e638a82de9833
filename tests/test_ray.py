"""The Ray Tune backend against a real Ray cluster on loopback (``ray start``, 2 CPUs): a
sweep through the CLI sharing one study with the Optuna backend in both directions, the
teacher never run on a worker, failing / infeasible / dying trials, ``[ray] scheduler = "asha"``
and ``"pareto_asha"`` stopping weak students after their per-epoch reports, and naskd inside a
user's own Tuner with an ASHA scheduler that stops trials early."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import optuna
import pytest

from helpers_ray import ray_cluster  # noqa: E402  (before ray: it keeps Ray on 127.0.0.1)

if not os.environ.get("CI"):  # in CI a missing Ray fails the run rather than skipping it
    pytest.importorskip("ray.tune", reason="Ray Tune is part of the dev extra: pip install -e '.[dev]'")

import naskd  # noqa: E402
from naskd.cli import main  # noqa: E402
from naskd.config import METRIC_DIRECTIONS  # noqa: E402
from naskd.front import non_dominated  # noqa: E402

State = optuna.trial.TrialState


@pytest.fixture(scope="module")
def cluster():
    """One cluster for the module; always stopped, even when a test fails."""
    with ray_cluster(num_cpus=2) as address:
        yield address


@pytest.fixture
def ray_driver(cluster):
    """This process joined to the cluster, for tests that drive Tune themselves."""
    import ray

    ray.init(address=cluster, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield cluster
    finally:
        ray.shutdown()


def _trials(out: Path, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}").get_trials()


def _front_json(study: Path, out: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["front", str(study), "--out", str(out), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_ray_sweep_shares_one_study_with_the_optuna_backend(cluster, write_study, tmp_path, capsys):
    study = write_study(search={"trials": 2, "sampler": "tpe"})
    out = tmp_path / "out"
    # Started locally, continued on Ray, continued locally again.
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    local = {t.number: tuple(t.values) for t in _trials(out)}
    assert main(["search", str(study), "--out", str(out), "--backend", "ray", "--address", cluster,
                 "--trials", "5", "--concurrency", "2", "-q"]) == 0
    trials = _trials(out)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.state == State.COMPLETE for t in trials)
    assert {t.number: tuple(t.values) for t in trials if t.number in local} == local
    for t in trials[2:]:
        assert {"spec", "status", "metrics"} <= set(t.user_attrs) and t.user_attrs["status"] == "complete"
        assert t.params  # sampled through the study's own space and sampler
        # The teacher's outputs came from the driver through the object store: no forward on a worker.
        assert t.user_attrs["ray"] == {"teacher_forward_batches": 0, "torch_threads": 1}
        assert (out / "students" / f"trial_{t.number}.pt").is_file()
        assert list(t.values) == [t.user_attrs["metrics"][k] for k in ("accuracy", "latency_p50_ms", "params")]

    summary = _front_json(study, out, capsys)
    assert summary["counts"] == {"complete": 5, "infeasible": 0, "failed": 0, "pruned": 0}
    names = [o["name"] for o in summary["objectives"]]
    points = np.array([[t.user_attrs["metrics"][n] for n in names] for t in trials])
    expected = {trials[i].number for i in non_dominated(points, [METRIC_DIRECTIONS[n] for n in names])}
    assert {e["number"] for e in summary["front"]} == expected

    assert main(["search", str(study), "--out", str(out), "--trials", "6", "-q"]) == 0
    trials = _trials(out)
    assert len(trials) == 6 and all(t.state == State.COMPLETE for t in trials)


def test_failing_infeasible_and_dying_trials_on_ray(cluster, write_study, tmp_path, capsys):
    markers = tmp_path / "markers"
    study = write_study(
        space={"family": "user", "builder": "helpers_ray_models:build",
               "params": {"mode": {"type": "categorical", "choices": ["ok", "big", "raise", "die_once", "die_always"]},
                          "markers": {"value": str(markers)}}},
        cost={"warmup": 1, "repeats": 5, "max_params": 1000},
        search={"trials": 5, "sampler": "random"},
        ray={"max_failures": 1},
    )
    out = tmp_path / "out"
    out.mkdir()
    # One trial of each kind, in a known order: Ray's OptunaSearch asks the study, which hands
    # out enqueued trials first.
    pre = optuna.create_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}",
                              directions=["maximize", "minimize", "minimize"])
    for mode in ("ok", "big", "raise", "die_once", "die_always"):
        pre.enqueue_trial({"mode": mode})
    assert main(["search", str(study), "--out", str(out), "--backend", "ray", "--address", cluster, "-q"]) == 0

    by_mode = {t.params["mode"]: t for t in _trials(out)}
    assert set(by_mode) == {"ok", "big", "raise", "die_once", "die_always"} and len(_trials(out)) == 5
    assert by_mode["ok"].state == State.COMPLETE and by_mode["ok"].user_attrs["status"] == "complete"
    # Its worker died once; the retry completed it.
    assert by_mode["die_once"].state == State.COMPLETE and (markers / "die_once").is_file()
    big = by_mode["big"]
    assert big.state == State.COMPLETE and big.user_attrs["status"] == "infeasible"
    assert "budget" in big.user_attrs["reason"] and big.user_attrs["ray"]["teacher_forward_batches"] == 0
    assert big.system_attrs["constraints:params"] > 0 and "accuracy" not in big.user_attrs["metrics"]
    assert not (out / "students" / f"trial_{big.number}.pt").exists()
    assert by_mode["raise"].state == State.FAIL and "cursed" in by_mode["raise"].user_attrs["reason"]
    assert by_mode["die_always"].state == State.FAIL and "died" in by_mode["die_always"].user_attrs["reason"]

    summary = _front_json(study, out, capsys)
    assert summary["counts"] == {"complete": 2, "infeasible": 1, "failed": 2, "pruned": 0}
    assert {e["number"] for e in summary["front"]} <= {by_mode["ok"].number, by_mode["die_once"].number}


def test_ray_trainable_in_a_users_tuner_with_asha(ray_driver, write_study, tmp_path, capsys):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from naskd.backends.ray_backend import NUMBER_KEY

    study = write_study(search={"trials": 4, "sampler": "tpe"})
    out = tmp_path / "out"
    trainable, search = naskd.ray_trainable(str(study), out_dir=out)

    # A user's trainable: odd trials first report a (dominating) partial result, even ones
    # are naskd's trainable as is. ASHA (max_t=1) stops every trial at its first report. Ray's
    # OptunaSearch would record the partial values as COMPLETE; naskd records those trials
    # as pruned, and the others, stopped at their final report, as complete.
    def users_trainable(config):
        if config[NUMBER_KEY] % 2:
            tune.report({"accuracy": 1.0, "latency_p50_ms": 0.0, "params": 0.0})
        trainable(config)

    asha = ASHAScheduler(metric="accuracy", mode="max", time_attr="training_iteration", max_t=1, grace_period=1)
    tune.Tuner(tune.with_resources(users_trainable, {"cpu": 1}),
               tune_config=tune.TuneConfig(search_alg=search, scheduler=asha, num_samples=4, max_concurrent_trials=2),
               run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0)).fit()
    trials = _trials(out)
    assert [t.state for t in trials] == [State.COMPLETE, State.PRUNED] * 2
    assert all(t.user_attrs["status"] == "complete" and t.user_attrs["ray"]["teacher_forward_batches"] == 0
               for t in trials[::2])
    assert all(t.user_attrs["status"] == "pruned" and "partial" in t.user_attrs["reason"] for t in trials[1::2])

    summary = _front_json(study, out, capsys)
    assert summary["counts"] == {"complete": 2, "infeasible": 0, "failed": 0, "pruned": 2}
    assert {e["number"] for e in summary["front"]} <= {0, 2}
    assert all(e["metrics"]["params"] > 0 for e in summary["front"])


def test_ray_options_need_the_ray_backend(write_study, capsys):
    assert main(["search", str(write_study()), "--concurrency", "2"]) == 2
    assert "--backend ray" in capsys.readouterr().err


@pytest.mark.parametrize("ray_section, key, expected", [
    ({"cpus_per_trial": 0}, "[ray].cpus_per_trial", "must be > 0"),
    ({"scheduler": "hyperband"}, "[ray].scheduler", "must be one of 'fifo', 'asha'"),
    ({"grace_epochs": 0}, "[ray].grace_epochs", "must be > 0"),
    ({"reduction_factor": 1}, "[ray].reduction_factor", "must be >= 2, got 1"),
])
def test_ray_section_is_validated(write_study, capsys, ray_section, key, expected):
    assert main(["search", str(write_study(ray=ray_section)), "--backend", "ray"]) == 2
    err = capsys.readouterr().err
    assert key in err and expected in err and "Traceback" not in err


@pytest.mark.parametrize("scheduler, stopped", [("asha", {"tiny", "blind"}), ("pareto_asha", {"blind"})])
def test_early_stopping_schedulers_prune_without_partial_values(cluster, write_study, tmp_path, capsys,
                                                                 scheduler, stopped):
    # Three students in a known order, one trial at a time (so each rung sees them in order),
    # 60 steps of 32 rows out of 320 = 6 epochs; rungs after epochs 1, 2 and 4. After epoch 1:
    # ok ~0.75 accuracy with 172 params, tiny ~0.5 with 46, blind (input zeroed) ~0.21 with 172.
    # ASHA on accuracy stops tiny and blind; Pareto ASHA over (accuracy, params) keeps tiny,
    # which is cheaper than ok, and stops blind, which ok dominates.
    study = write_study(
        space={"family": "user", "builder": "helpers_ray_models:build",
               "params": {"mode": {"type": "categorical", "choices": ["ok", "tiny", "blind"]}}},
        distill={"steps": 60, "lr": 0.01},
        search={"trials": 3, "sampler": "random", "objectives": ["accuracy", "params"]},
        ray={"scheduler": scheduler, "grace_epochs": 1, "reduction_factor": 2},
    )
    out = tmp_path / "out"
    out.mkdir()
    pre = optuna.create_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}",
                              directions=["maximize", "minimize"])
    for mode in ("ok", "tiny", "blind"):
        pre.enqueue_trial({"mode": mode})
    assert main(["search", str(study), "--out", str(out), "--backend", "ray", "--address", cluster,
                 "--concurrency", "1", "-q"]) == 0

    by_mode = {t.params["mode"]: t for t in _trials(out)}
    assert len(_trials(out)) == 3 and set(by_mode) == {"ok", "tiny", "blind"}
    assert {m for m, t in by_mode.items() if t.state == State.PRUNED} == stopped
    for mode, t in by_mode.items():
        if mode in stopped:
            assert t.user_attrs["status"] == "pruned" and "stopped early" in t.user_attrs["reason"]
            assert set(t.user_attrs["partial"]) == {"accuracy", "params"}
            assert not (out / "students" / f"trial_{t.number}.pt").exists()
        else:
            assert t.state == State.COMPLETE and t.user_attrs["status"] == "complete"
            assert (out / "students" / f"trial_{t.number}.pt").is_file()

    summary = _front_json(study, out, capsys)
    assert summary["counts"] == {"complete": 3 - len(stopped), "infeasible": 0, "failed": 0, "pruned": len(stopped)}
    assert {e["number"] for e in summary["front"]} <= {by_mode[m].number for m in {"ok", "tiny"} - stopped}
