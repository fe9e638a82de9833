"""The Ray Tune backend against a real Ray cluster on loopback (``ray start``, 2 CPUs): a
sweep through the CLI sharing one study (and its rung records) with the Optuna backend in both
directions, the teacher never run on a worker, failing / infeasible / dying trials, the study's
rung rule stopping the same students on Ray as on the Optuna backend, and naskd inside a
user's own Tuner where a stopper cuts trials short."""

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
    done = (State.COMPLETE, State.PRUNED)
    # Started locally, continued on Ray, continued locally again.
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    local = {t.number: (t.state, t.values) for t in _trials(out)}
    assert (
        main(
            [
                "search",
                str(study),
                "--out",
                str(out),
                "--backend",
                "ray",
                "--address",
                cluster,
                "--trials",
                "5",
                "--concurrency",
                "2",
                "-q",
            ]
        )
        == 0
    )
    trials = _trials(out)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.state in done for t in trials)
    assert {t.number: (t.state, t.values) for t in trials if t.number in local} == local
    for t in trials[2:]:
        assert {"spec", "status", "metrics", "rungs", "steps"} <= set(t.user_attrs) and t.params
        # Every Ray trial reported at its rungs and was judged there; rung records sit in the
        # study storage beside the Optuna backend's.
        assert [e["steps"] for e in t.user_attrs["rungs"]] == [3, 9, 27][: len(t.user_attrs["rungs"])]
        assert not (out / "checkpoints" / f"trial_{t.number}.pt").exists()  # no state left behind
        if t.state == State.PRUNED:
            assert t.user_attrs["status"] == "pruned" and "stopped at rung" in t.user_attrs["reason"]
            assert t.user_attrs["steps"] == t.user_attrs["rungs"][-1]["steps"] < 30
            continue
        assert t.user_attrs["status"] == "complete" and t.user_attrs["steps"] == 30
        # The teacher's outputs came from the driver through the object store: no forward on a worker.
        assert t.user_attrs["ray"] == {"teacher_forward_batches": 0, "torch_threads": 1}
        assert (out / "students" / f"trial_{t.number}.pt").is_file()
        assert list(t.values) == [t.user_attrs["metrics"][k] for k in ("accuracy", "latency_p50_ms", "params")]

    summary = _front_json(study, out, capsys)
    complete = [t for t in trials if t.state == State.COMPLETE]
    assert summary["counts"]["complete"] == len(complete) and summary["counts"]["pruned"] == 5 - len(complete)
    names = [o["name"] for o in summary["objectives"]]
    points = np.array([[t.user_attrs["metrics"][n] for n in names] for t in complete])
    expected = {complete[i].number for i in non_dominated(points, [METRIC_DIRECTIONS[n] for n in names])}
    assert {e["number"] for e in summary["front"]} == expected

    assert main(["search", str(study), "--out", str(out), "--trials", "6", "-q"]) == 0
    trials = _trials(out)
    assert len(trials) == 6 and all(t.state in done for t in trials)


def test_every_scheme_runs_on_ray(cluster, write_study, tmp_path):
    study = write_study(
        search={"trials": 4, "sampler": "random"},
        fidelity={"rule": "off"},
        space={
            "family": "mlp",
            "params": {"depth": {"value": 2}, "width": {"value": 12}},
            "recipe": {"scheme": {"type": "categorical", "choices": ["offline", "mutual", "self", "born_again"]}},
        },
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "search",
                str(study),
                "--out",
                str(out),
                "--backend",
                "ray",
                "--address",
                cluster,
                "--concurrency",
                "2",
                "-q",
            ]
        )
        == 0
    )
    trials = _trials(out)
    assert len(trials) == 4 and all(t.state == State.COMPLETE for t in trials)
    expected = {
        "offline": {"ce", "kd"},
        "mutual": {"ce", "kd", "cohort_ce", "cohort_kd"},
        "self": {"ce", "aux_ce", "aux_kd", "aux_feature"},
        "born_again": {"ce", "kd"},
    }
    for t in trials:
        assert set(t.user_attrs["loss_terms"]) == expected[t.user_attrs["spec"]["recipe"]["scheme"]]
        # Only the cohort copy of mutual learning ran on a worker, never the study's teacher.
        assert t.user_attrs["ray"]["teacher_forward_batches"] == 0


def test_shrink_and_int8_students_run_on_ray(cluster, write_study, tmp_path):
    """Students cut from the teacher (the spec records its fingerprint, set on the driver) and
    int8 students (quantized and lowered on the worker) through the Ray backend."""
    study = write_study(
        search={"trials": 4, "sampler": "random"},
        fidelity={"rule": "off"},
        space={
            "family": "shrink",
            "precision": ["float32", "int8"],
            "params": {"width": {"type": "categorical", "choices": [0.25, 0.5]}},
        },
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "search",
                str(study),
                "--out",
                str(out),
                "--backend",
                "ray",
                "--address",
                cluster,
                "--concurrency",
                "2",
                "-q",
            ]
        )
        == 0
    )
    trials = _trials(out)
    assert len(trials) == 4 and all(t.state == State.COMPLETE for t in trials), [
        t.user_attrs.get("reason") for t in trials
    ]
    from naskd.config import load_study

    fingerprint = naskd.build_context(load_study(study)).teacher.fingerprint
    assert {t.user_attrs["spec"]["arch"]["teacher"] for t in trials} == {fingerprint}
    assert {t.user_attrs["spec"]["precision"] for t in trials} == {"float32", "int8"}
    for t in trials:
        int8 = t.user_attrs["spec"]["precision"] == "int8"
        assert ("qat_kd" in t.user_attrs["loss_terms"]) == int8


def test_failing_infeasible_and_dying_trials_on_ray(cluster, write_study, tmp_path, capsys):
    markers = tmp_path / "markers"
    study = write_study(
        space={
            "family": "user",
            "builder": "helpers_ray_models:build",
            "params": {
                "mode": {"type": "categorical", "choices": ["ok", "big", "raise", "die_once", "die_always"]},
                "markers": {"value": str(markers)},
            },
        },
        cost={"warmup": 1, "repeats": 5, "max_params": 1000},
        search={"trials": 5, "sampler": "random"},
        ray={"max_failures": 1},
        fidelity={"rule": "off"},  # every kind of ending, not the rung rule, is under test here
    )
    out = tmp_path / "out"
    out.mkdir()
    # One trial of each kind, in a known order: naskd's Ray searcher asks the study, which hands
    # out enqueued trials first.
    pre = optuna.create_study(
        study_name="tiny", storage=f"sqlite:///{out / 'study.db'}", directions=["maximize", "minimize", "minimize"]
    )
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


def test_ray_trainable_in_a_users_tuner_with_a_stopper(ray_driver, write_study, tmp_path, capsys):
    from ray import tune

    from naskd.backends.ray_backend import NUMBER_KEY

    study = write_study(search={"trials": 4, "sampler": "tpe"})
    out = tmp_path / "out"
    trainable, search, scheduler = naskd.ray_trainable(str(study), out_dir=out)

    # A user's trainable: odd trials first report a (dominating) partial result, which the
    # user's stopper ends; even ones are naskd's trainable as is, judged at rungs by naskd's
    # scheduler. Ray's own OptunaSearch would record the partial values as COMPLETE; naskd records
    # those trials as pruned, never with their values.
    def users_trainable(config):
        if config[NUMBER_KEY] % 2:
            tune.report({"accuracy": 1.0, "latency_p50_ms": 0.0, "params": 0.0})
        trainable(config)

    tune.Tuner(
        tune.with_resources(users_trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=4, max_concurrent_trials=2),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray"), verbose=0, stop=lambda trial_id, result: result.get("accuracy") == 1.0
        ),
    ).fit()
    trials = _trials(out)
    assert [t.state for t in trials[1::2]] == [State.PRUNED] * 2
    assert all(t.user_attrs["status"] == "pruned" and "partial" in t.user_attrs["reason"] for t in trials[1::2])
    for t in trials[::2]:
        assert t.state in (State.COMPLETE, State.PRUNED) and t.user_attrs["rungs"]
        if t.state == State.COMPLETE:
            assert t.user_attrs["status"] == "complete" and t.user_attrs["ray"]["teacher_forward_batches"] == 0
        else:
            assert "stopped at rung" in t.user_attrs["reason"]

    summary = _front_json(study, out, capsys)
    assert summary["counts"]["pruned"] >= 2
    assert {e["number"] for e in summary["front"]} <= {0, 2}
    assert all(e["metrics"]["params"] > 0 for e in summary["front"])


def test_ray_options_need_the_ray_backend(write_study, capsys):
    assert main(["search", str(write_study()), "--concurrency", "2"]) == 2
    assert "--backend ray" in capsys.readouterr().err


@pytest.mark.parametrize(
    "ray_section, key, expected",
    [
        ({"cpus_per_trial": 0}, "[ray].cpus_per_trial", "must be > 0"),
        ({"scheduler": "asha"}, "[ray].scheduler", "early stopping moved to [fidelity]"),
        ({"grace_epochs": 2}, "[ray].grace_epochs", "early stopping moved to [fidelity]"),
        ({"concurrency": -1}, "[ray].concurrency", "must be >= 0"),
    ],
)
def test_ray_section_is_validated(write_study, capsys, ray_section, key, expected):
    assert main(["search", str(write_study(ray=ray_section)), "--backend", "ray"]) == 2
    err = capsys.readouterr().err
    assert key in err and expected in err and "Traceback" not in err


def _three_students(write_study, out: Path, directions: list[str]) -> Path:
    """ok, tiny, blind enqueued in that order; 60 steps of 32 rows out of 320 = 6 epochs, rungs
    after epochs 1, 2 and 4. After epoch 1: ok ~0.75 accuracy with 172 params, tiny ~0.5 with
    46, blind (input zeroed) ~0.21 with 172."""
    study = write_study(
        space={
            "family": "user",
            "builder": "helpers_ray_models:build",
            "params": {"mode": {"type": "categorical", "choices": ["ok", "tiny", "blind"]}},
        },
        distill={"steps": 60, "lr": 0.01},
        search={"trials": 3, "sampler": "random", "objectives": ["accuracy", "params"]},
        fidelity={"first_rung": 10, "reduction_factor": 2},
    )
    out.mkdir()
    pre = optuna.create_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}", directions=directions)
    for mode in ("ok", "tiny", "blind"):
        pre.enqueue_trial({"mode": mode})
    return study


def test_the_rung_rule_stops_the_same_students_on_ray_as_on_the_optuna_backend(cluster, write_study, tmp_path):
    # One trial at a time, so each rung sees the students in order. Pareto rank over
    # (accuracy, params) keeps tiny, which is cheaper than ok, and stops blind, which ok
    # dominates, at its first rung.
    outcome = {}
    for backend in ("optuna", "ray"):
        out = tmp_path / backend
        study = _three_students(write_study, out, ["maximize", "minimize"])
        extra = ["--backend", "ray", "--address", cluster, "--concurrency", "1"] if backend == "ray" else []
        assert main(["search", str(study), "--out", str(out), "-q", *extra]) == 0
        by_mode = {t.params["mode"]: t for t in _trials(out)}
        assert len(by_mode) == 3
        outcome[backend] = {m: (t.state, len(t.user_attrs["rungs"]), t.user_attrs["steps"]) for m, t in by_mode.items()}
        blind = by_mode["blind"]
        assert blind.state == State.PRUNED and blind.user_attrs["steps"] == 10
        assert "stopped at rung 0" in blind.user_attrs["reason"] and "Pareto rank 1" in blind.user_attrs["reason"]
        assert set(blind.user_attrs["metrics"]) >= {"accuracy", "params", "latency_p50_ms"}
        assert not (out / "students" / f"trial_{blind.number}.pt").exists()
        for mode in ("ok", "tiny"):
            assert (
                by_mode[mode].state == State.COMPLETE
                and (out / "students" / f"trial_{by_mode[mode].number}.pt").is_file()
            )
        assert not list((out / "checkpoints").glob("*.pt"))
    assert (
        outcome["ray"]
        == outcome["optuna"]
        == {"ok": (State.COMPLETE, 3, 60), "tiny": (State.COMPLETE, 3, 60), "blind": (State.PRUNED, 1, 10)}
    )


def test_where_knowledge_comes_from_runs_on_ray(cluster, write_study, tmp_path):
    """Adversarial (generator on the worker), data-free (the driver's transfer set shipped in
    the context) and lifelong (a changed teacher continues the front's students) on Ray."""
    import helpers_teacher
    import torch

    from naskd.config import DataConfig, DistillConfig
    from naskd.data import load_data
    from naskd.distill import Scratch, train

    def ray_search(study: Path, out: Path) -> list[optuna.trial.FrozenTrial]:
        assert (
            main(
                [
                    "search",
                    str(study),
                    "--out",
                    str(out),
                    "--backend",
                    "ray",
                    "--address",
                    cluster,
                    "--concurrency",
                    "2",
                    "-q",
                ]
            )
            == 0
        )
        return _trials(out)

    adversarial = write_study(
        "adv.toml",
        search={"trials": 2, "sampler": "random"},
        fidelity={"rule": "off"},
        distill={"scheme": "adversarial"},
    )
    trials = ray_search(adversarial, tmp_path / "adv")
    assert all(t.state == State.COMPLETE and set(t.user_attrs["loss_terms"]) == {"adv_l1"} for t in trials)

    data = load_data(DataConfig(dataset="synthetic", samples=400, shape=(16,), classes=4))
    torch.manual_seed(0)
    model = helpers_teacher.build_bn()
    train(Scratch(model), data.x_train, data.y_train, DistillConfig(epochs=10, batch_size=32))
    torch.save(model.state_dict(), tmp_path / "bn.pt")
    datafree = write_study(
        "free.toml",
        search={"trials": 2, "sampler": "random"},
        fidelity={"rule": "off"},
        data={"transfer": "deepinversion"},
        synthesis={"samples": 100, "iterations": 20},
        teacher={"model": "helpers_teacher:build_bn", "checkpoint": str(tmp_path / "bn.pt")},
    )
    trials = ray_search(datafree, tmp_path / "free")
    assert len(trials) == 2 and all(t.state == State.COMPLETE for t in trials)

    lifelong, out = write_study("life.toml", search={"trials": 2, "sampler": "random"}), tmp_path / "life"
    first = ray_search(lifelong, out)
    write_study("life.toml", search={"trials": 2, "sampler": "random"}, teacher={"epochs": 7})
    trials = ray_search(lifelong, out)
    continued = [t for t in trials if t.user_attrs.get("lifelong_from") is not None]
    assert continued and all(
        t.user_attrs["teacher_version"] == 2 and "lwf" in t.user_attrs["loss_terms"] for t in continued
    )
    assert [t.user_attrs["metrics"] for t in trials[: len(first)]] == [t.user_attrs["metrics"] for t in first]
