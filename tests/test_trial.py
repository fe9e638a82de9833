"""One trial through ``naskd.trial.evaluate``: complete, infeasible (never trained), invalid and
failed outcomes, and reuse of the teacher's cached outputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from naskd.config import load_study
from naskd.trial import METRICS, build_context, evaluate, full_spec


def _spec(config, **arch):
    return full_spec({"family": "mlp", "arch": {"depth": 1, "width": [16], **arch}}, config)


@pytest.fixture
def context(write_study):
    return build_context(load_study(write_study()))


def test_complete_trial_records_every_metric(context):
    result = evaluate(_spec(context.config), context)
    assert result.status == "complete", result.reason
    assert set(METRICS) <= set(result.metrics)
    m = result.metrics
    assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["teacher_agreement"] <= 1.0
    assert m["kl_to_teacher"] >= 0.0
    assert m["params"] == 16 * 16 + 16 + 16 * 4 + 4
    assert m["latency_p95_ms"] >= m["latency_p50_ms"] > 0
    assert m["capacity_ratio"] == pytest.approx(context.teacher_info["params"] / m["params"])
    assert result.student is not None and result.curve


def test_gate_gets_every_metric_at_each_rung_and_a_no_stops_the_student(context):
    # The tiny study: 30 steps of 32 rows out of 320 = 10 steps an epoch; default rungs at
    # 30 // 9 = 3 steps, then 9 and 27.
    assert context.plan.rungs == (3, 9, 27) and context.plan.target_steps == 30
    asked: list[tuple[int, int, dict[str, float]]] = []

    def gate(entries):
        asked.append((entries[-1]["rung"], entries[-1]["steps"], entries[-1]["metrics"]))
        assert [e["rung"] for e in entries] == list(range(len(entries)))  # every rung so far, in order
        return True

    result = evaluate(_spec(context.config), context, gate=gate)
    assert result.status == "complete", result.reason
    assert [(rung, steps) for rung, steps, _ in asked] == [(0, 3), (1, 9), (2, 27)]
    for _, _, metrics in asked:
        assert set(METRICS) <= set(metrics) and 0.0 <= metrics["accuracy"] <= 1.0
        assert metrics["params"] == result.metrics["params"]
    assert asked[0][2]["train_seconds"] < asked[1][2]["train_seconds"] <= result.metrics["train_seconds"]
    assert result.steps == 30 and [e["steps"] for e in result.rungs] == [3, 9, 27]
    # Being asked does not change the trial.
    plain = evaluate(_spec(context.config), context)
    assert plain.metrics["accuracy"] == result.metrics["accuracy"]
    assert [e["metrics"]["accuracy"] for e in plain.rungs] == [e["metrics"]["accuracy"] for e in result.rungs]

    stopped = evaluate(_spec(context.config), context, gate=lambda entries: entries[-1]["rung"] < 1)
    assert stopped.status == "pruned" and stopped.steps == 9 and stopped.student is None
    assert stopped.metrics["accuracy"] == result.rungs[1]["metrics"]["accuracy"]
    assert [e["rung"] for e in stopped.rungs] == [0, 1] and "stopped at rung 1" in stopped.reason


def test_same_spec_same_result(context):
    a = evaluate(_spec(context.config), context)
    b = evaluate(_spec(context.config), context)
    assert a.metrics["accuracy"] == b.metrics["accuracy"]
    for (ka, va), (kb, vb) in zip(a.student.state_dict().items(), b.student.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_over_budget_trial_is_never_trained(write_study):
    config = load_study(write_study(cost={"warmup": 1, "repeats": 5, "max_params": 100}))
    context = build_context(config)
    calls = []
    # Count training through the optimizer: an infeasible student must never take a step.
    hook = register_optimizer_step_pre_hook(lambda *a: calls.append(1))
    try:
        result = evaluate(_spec(config), context)
    finally:
        hook.remove()
    assert result.status == "infeasible"
    assert "params" in result.reason and "budget" in result.reason
    assert calls == []
    assert "accuracy" not in result.metrics and "train_seconds" not in result.metrics
    assert result.constraints["params"] > 0


def test_within_budget_is_feasible_with_nonpositive_constraints(write_study):
    config = load_study(write_study(cost={"warmup": 1, "repeats": 5, "max_params": 10_000, "max_latency_ms": 1000.0}))
    result = evaluate(_spec(config), build_context(config))
    assert result.status == "complete"
    assert set(result.constraints) == {"params", "latency_p50_ms"}
    assert all(v <= 0 for v in result.constraints.values())


def test_invalid_spec_is_rejected_before_building(context):
    spec = full_spec({"family": "transformer", "arch": {"d_model": 30, "heads": 4}}, context.config)
    result = evaluate(spec, context)
    assert result.status == "invalid"
    assert "divisible" in result.reason


def test_diverging_trial_fails_with_reason(write_study):
    config = load_study(write_study(distill={"steps": 30, "batch_size": 32, "optimizer": "sgd", "lr": 1e12}))
    result = evaluate(_spec(config), build_context(config))
    assert result.status == "failed"
    assert "diverged" in result.reason


def test_raising_user_builder_fails_with_reason(write_study, tmp_path):
    (tmp_path / "raising_models.py").write_text(
        "def build(arch, input_shape, num_classes):\n    raise RuntimeError('out of widgets')\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        config = load_study(write_study(space={"family": "user", "builder": "raising_models:build", "params": {}}))
        result = evaluate(
            full_spec({"family": "user", "builder": "raising_models:build", "arch": {}}, config), build_context(config)
        )
    finally:
        sys.path.remove(str(tmp_path))
    assert result.status in ("failed", "invalid")
    assert "out of widgets" in result.reason


def test_teacher_outputs_are_computed_once_and_reused(write_study):
    config = load_study(write_study())
    first = build_context(config)
    # A second context (another run, or a worker process) loads the outputs from disk.
    second = build_context(config)
    assert second.cache.forward_batches == 0
    assert torch.equal(first.train_logits[0], second.train_logits[0])

    forwards = []
    handle = second.teacher.model.register_forward_hook(lambda *a: forwards.append(1))
    try:
        for width in (8, 16, 24):
            assert evaluate(_spec(config, width=[width]), second).status == "complete"
    finally:
        handle.remove()
    assert forwards == [], "trials must read cached teacher outputs, not run the teacher"


def test_cache_off_runs_the_teacher_every_step(write_study):
    config = load_study(write_study(distill={"steps": 12, "batch_size": 32, "cache_teacher": False}))
    context = build_context(config)
    assert context.train_logits == [None]
    forwards = []
    handle = context.teacher.model.register_forward_hook(lambda *a: forwards.append(1))
    try:
        result = evaluate(_spec(config), context)
    finally:
        handle.remove()
    assert result.status == "complete"
    assert len(forwards) == 12


def test_cached_and_uncached_give_the_same_student(write_study):
    cached = load_study(write_study())
    uncached = load_study(write_study("b.toml", distill={"steps": 30, "batch_size": 32, "cache_teacher": False}))
    a = evaluate(_spec(cached), build_context(cached))
    b = evaluate(_spec(uncached), build_context(uncached))
    assert math.isclose(a.metrics["accuracy"], b.metrics["accuracy"])
    assert math.isclose(a.metrics["kl_to_teacher"], b.metrics["kl_to_teacher"], rel_tol=1e-4)


@pytest.mark.parametrize(
    ("shape", "space_file"),
    [([16], "mlp.toml"), ([1, 32], "cnn1d.toml"), ([1, 8, 8], "cnn2d.toml"), ([4, 16], "transformer.toml")],
)
def test_every_family_distils_from_its_shipped_space(write_study, shape, space_file):
    """A student sampled from each shipped space trains and learns (beats chance on 4 classes)."""
    from conftest import ROOT

    config = load_study(
        write_study(
            data={"dataset": "synthetic", "samples": 400, "shape": shape, "classes": 4},
            space={"path": str(ROOT / "search_spaces" / space_file)},
            distill={"steps": 60, "batch_size": 32},
        )
    )
    context = build_context(config)
    import random

    class Seeded:
        def __init__(self) -> None:
            self.rng = random.Random(0)

        def suggest_int(self, name, low, high, *, step=1, log=False):
            return low + step * self.rng.randrange((high - low) // step + 1)

        def suggest_float(self, name, low, high, *, step=None, log=False):
            return self.rng.uniform(low, high)

        def suggest_categorical(self, name, choices):
            return self.rng.choice(list(choices))

    result = evaluate(full_spec(config.space.sample(Seeded()), config), context)
    assert result.status == "complete", result.reason
    assert result.metrics["accuracy"] > 0.4
    assert result.spec["family"] == config.space.family


def test_a_student_stopped_by_its_process_continues_from_its_checkpoint(context, tmp_path):
    """SystemExit at rung 1 (how Ray Tune ends a trial) leaves the state saved there; the next
    evaluate of the spec continues it, hands the gate the carried rung 0 with the re-judged
    rung 1, and ends as a trial that was never interrupted."""
    from naskd.fidelity import CheckpointFile

    checkpoint = CheckpointFile(tmp_path / "trial.pt")
    seen: list[list[dict]] = []

    def exit_at_rung_1(entries):
        seen.append([dict(e) for e in entries])
        if entries[-1]["rung"] == 1:
            raise SystemExit
        return True

    with pytest.raises(SystemExit):
        evaluate(_spec(context.config), context, gate=exit_at_rung_1, checkpoint=checkpoint)
    assert checkpoint.load()["step"] == 9  # the rung-1 state survived the exit
    carried = seen[-1]

    asked: list[list[dict]] = []
    result = evaluate(
        _spec(context.config),
        context,
        gate=lambda entries: asked.append(entries) or True,
        checkpoint=checkpoint,
        carried=carried,
    )
    assert [[e["rung"] for e in entries] for entries in asked] == [[0, 1], [0, 1, 2]]
    assert asked[0] == carried  # rung 0 carried, rung 1 re-scored from the saved state: the same figures
    straight = evaluate(_spec(context.config), context)
    assert result.status == "complete" and result.metrics["accuracy"] == straight.metrics["accuracy"]
    assert all(
        torch.equal(a, b) for a, b in zip(result.student.state_dict().values(), straight.student.state_dict().values())
    )
    assert checkpoint.load() is None  # cleared when the trial ended


def test_model_bytes_is_recorded_and_can_be_a_budget(write_study):
    context = build_context(load_study(write_study()))
    small = evaluate(_spec(context.config), context)
    assert small.status == "complete" and small.metrics["model_bytes"] > 4 * small.metrics["params"]
    assert 0 < context.teacher_info["model_bytes"]
    limit = int(small.metrics["model_bytes"]) + 1
    budgeted = build_context(load_study(write_study(cost={"max_model_bytes": limit})))
    assert evaluate(_spec(budgeted.config), budgeted).status == "complete"
    big = evaluate(_spec(budgeted.config, width=[64]), budgeted)
    assert big.status == "infeasible" and "model_bytes" in big.reason and "> budget" in big.reason
