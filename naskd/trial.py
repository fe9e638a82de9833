"""One trial, and the per-study context it runs in.

``build_context`` does the once-per-study work (data, teacher, teacher outputs);
``evaluate(spec, context)`` is the one place a trial happens: build the student, measure its
cost, stop if it breaks a budget, otherwise distil it rung by rung toward the target budget,
scoring it at every rung (where the backend's rule may stop it), and score it at the target.
It is a plain function call, so any backend (or a test) can drive it.
"""

from __future__ import annotations

import logging
import math
import traceback
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from naskd.cache import TeacherCache, cache_root
from naskd.config import StudyConfig
from naskd.data import Data, load_data
from naskd.distill import Diverged, distill, recipe_dict, recipe_from_dict
from naskd.errors import ConfigError, InvalidSpec
from naskd.fidelity import CheckpointFile, Decision, RungPlan, plan_rungs, with_rung
from naskd.knowledge.functional import LOSSES
from naskd.knowledge.hooks import module_names, stage_names
from naskd.knowledge.terms import EMBEDDING
from naskd.measure import measure_cost
from naskd.scoring import predict, score
from naskd.spaces import build_student, check_spec
from naskd.spaces.recipe import apply_recipe_choices
from naskd.teacher import Teacher, describe_teacher, load_teacher

log = logging.getLogger(__name__)

Status = Literal["complete", "pruned", "infeasible", "invalid", "failed"]

#: Every metric a completed trial records.
METRICS = ("accuracy", "teacher_agreement", "kl_to_teacher", "params", "flops", "latency_p50_ms",
           "latency_p95_ms", "train_seconds", "capacity_ratio")


@dataclass
class StudyContext:
    """What every trial of a study shares; built once, read-only afterwards."""

    config: StudyConfig
    data: Data
    teacher: Teacher
    teacher_info: dict[str, Any]
    cache: TeacherCache
    train_logits: torch.Tensor | None  # None when [distill].cache_teacher is false
    val_logits: torch.Tensor

    def describe(self) -> dict[str, Any]:
        """Facts recorded with the study: data splits, the teacher's figures and the rungs."""
        plan = self.plan
        return {"data": self.data.describe(), "teacher": dict(self.teacher_info),
                "fidelity": {"rule": self.config.fidelity.rule, "target_steps": plan.target_steps,
                             "rungs": list(plan.rungs), "steps_per_epoch": plan.steps_per_epoch,
                             "reduction_factor": plan.reduction_factor, "margin": plan.margin,
                             "latency_margin": plan.latency_margin}}

    @property
    def plan(self) -> RungPlan:
        """The study's rungs and target budget, in training steps."""
        return plan_rungs(self.config.fidelity, self.config.distill, len(self.data.y_train))

    def teacher_values(self, terms: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor] | None:
        """Cached teacher features/embeddings over the training set for these knowledge terms,
        or None when they need none, the cache is off, or they exceed ``feature_cache_mb``."""
        consumes = {LOSSES[t["kind"]].consumes for t in terms if t["weight"] > 0}
        names: list[str] = []
        if "features" in consumes:
            names += [t for t, _ in self.config.distill.pairs] or stage_names(self.teacher.model)
        if "embeddings" in consumes:
            names.append(EMBEDDING)
        if not names or not self.config.distill.cache_teacher:
            return None
        return self.cache.values(self.teacher.model, self.teacher.fingerprint, self.data.x_train,
                                 f"{self.data.fingerprint}:train", names,
                                 budget_bytes=self.config.distill.feature_cache_mb * 2**20)


def build_context(config: StudyConfig, *, teacher_info: dict[str, Any] | None = None) -> StudyContext:
    """Load the data and teacher, and compute (or load from the cache) the teacher's outputs.

    Args:
        config: the study.
        teacher_info: the teacher's figures when already measured (worker processes get the
            launcher's, so the teacher is measured once per study and all workers agree).
    """
    data = load_data(config.data)
    teacher = load_teacher(config.teacher, data, dataset_key=config.data.dataset or "synthetic")
    _check_teacher_pairs(config, teacher.model)
    cache = TeacherCache(cache_root(config.teacher.cache_dir) / "outputs")
    val_logits = cache.logits(teacher.model, teacher.fingerprint, data.x_val, f"{data.fingerprint}:val")
    train_logits = None
    if config.distill.cache_teacher:
        train_logits = cache.logits(teacher.model, teacher.fingerprint, data.x_train, f"{data.fingerprint}:train")
    else:
        log.info("teacher cache off: the teacher runs on every training batch")
    if teacher_info is None:
        teacher_info = describe_teacher(teacher, val_logits, data, config.cost)
    return StudyContext(config, data, teacher, teacher_info, cache, train_logits, val_logits)


def _check_teacher_pairs(config: StudyConfig, teacher: nn.Module) -> None:
    """A ``[[distill.pairs]]`` teacher name that the teacher lacks is a study-file error."""
    available = module_names(teacher)
    for i, (name, _) in enumerate(config.distill.pairs):
        if name not in available:
            raise ConfigError(str(config.file), f"[distill.pairs[{i}]].teacher",
                              f"the teacher has no module {name!r} (available: {', '.join(available)})")


@dataclass
class TrialResult:
    """The outcome of one trial. ``metrics`` holds every name in ``METRICS`` when complete (at
    the target budget) or pruned (at the rung where it stopped: ``steps`` says where);
    ``rungs`` holds ``{"rung", "steps", "metrics"}`` for every rung the student reached."""

    status: Status
    spec: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    constraints: dict[str, float] = field(default_factory=dict)  # budget metric -> value, feasible when <= 0
    student: nn.Module | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0  # training steps behind ``metrics``
    rungs: list[dict[str, Any]] = field(default_factory=list)


#: ``gate(entries) -> go on?``, given the student's rung entries (the last is the rung just
#: reached): the backend's rung rule (``naskd.fidelity.RungGate``), answering True/False or a
#: ``Decision`` whose reason is recorded for a stopped student.
Gate = Callable[[list[dict[str, Any]]], "bool | Decision"]


def full_spec(sampled: dict[str, Any], config: StudyConfig) -> dict[str, Any]:
    """A sampled spec plus the trial's recipe (the study's, with any sampled recipe choices
    applied): everything needed to rebuild the trial, as plain JSON."""
    spec = {k: v for k, v in sampled.items() if k != "recipe_choices"}
    spec["recipe"] = apply_recipe_choices(recipe_dict(config.distill), sampled.get("recipe_choices", {}))
    return spec


def budget_violations(metrics: dict[str, float], config: StudyConfig) -> tuple[dict[str, float], list[str]]:
    """Constraint values per budget (feasible when every value <= 0) and a sentence for each broken one."""
    values: dict[str, float] = {}
    broken: list[str] = []
    for metric, limit in (("latency_p50_ms", config.cost.max_latency_ms), ("params", config.cost.max_params),
                          ("flops", config.cost.max_flops)):
        if limit is None:
            continue
        # Relative excess, so budgets of very different scales weigh alike in the sampler.
        values[metric] = (metrics[metric] - limit) / limit
        if metrics[metric] > limit:
            broken.append(f"{metric} {metrics[metric]:g} > budget {limit:g}")
    return values, broken


def evaluate(spec: dict[str, Any], context: StudyContext, *, gate: Gate | None = None,
             checkpoint: CheckpointFile | None = None, carried: Sequence[dict[str, Any]] = (),
             plan: RungPlan | None = None) -> TrialResult:
    """Run one trial. Never raises for a trial's own failure: the reason goes on the result.

    The student is scored on the validation set at every rung of the study's plan
    (``StudyContext.plan``) and at the target budget; only the target figures are a complete
    trial's metrics.

    Args:
        spec: ``{"family", "arch", "recipe"}`` as plain JSON.
        context: the study's shared context.
        gate: asked at every rung with the student's rung entries, the last holding every
            metric of the student as it stands; False (or a
            ``Decision`` that does not go on) stops it there (status ``pruned``). None: every
            student goes to the target. An exception it raises fails the trial like any other,
            except ``SystemExit``, which passes through: that is how Ray Tune stops a trial
            from ``tune.report``.
        checkpoint: where the student's training state is saved at every rung it reaches; a
            state already there is continued (the student goes on from that rung, bit for bit
            as if never interrupted). Cleared when the trial ends.
        carried: rung entries recorded by the interrupted trial a continued student comes
            from; those below the checkpoint's rung are kept in ``rungs``.
        plan: rungs to score at instead of the study's (e.g. every epoch, for learning
            curves); its target must be the study's.
    """
    data, config = context.data, context.config
    reason = check_spec(spec, data.input_shape, data.num_classes)
    if reason:
        return TrialResult("invalid", spec, reason=f"invalid spec: {reason}")
    recipe = recipe_from_dict(spec.get("recipe", {}), base=config.distill)
    plan = plan or context.plan
    resume = checkpoint.load() if checkpoint is not None else None
    if resume is not None and int(resume["step"]) not in plan.rungs:
        log.warning("%s: saved at step %s, which is not a rung of this study; the student starts again",
                    checkpoint.path, resume["step"])  # type: ignore[union-attr]
        resume = None
    rungs = [dict(e) for e in carried if resume is not None and e["steps"] < int(resume["step"])]
    stopped: list[tuple[int, str]] = []  # the rung a student stopped at, and why
    try:
        torch.manual_seed(recipe.seed)  # same spec and seed -> same initial weights and dropout masks
        student = build_student(spec, data.input_shape, data.num_classes)
        if resume is not None and isinstance(resume.get("cost"), dict):
            # A continued student keeps the cost it was judged with (latency is remeasured noise).
            metrics: dict[str, float] = {k: float(v) for k, v in resume["cost"].items()}
        else:
            cost = config.cost
            measured = measure_cost(student, data.input_shape, batch_size=cost.batch_size, threads=cost.threads,
                                    warmup=cost.warmup, repeats=cost.repeats, device=cost.device)
            metrics = {
                "params": measured.params, "flops": measured.flops,
                "latency_p50_ms": measured.latency_p50_ms, "latency_p95_ms": measured.latency_p95_ms,
                "capacity_ratio": context.teacher_info["params"] / max(1, measured.params),
            }
        cost_metrics = dict(metrics)
        constraints, broken = budget_violations(metrics, config)
        if broken:
            return TrialResult("infeasible", spec, metrics, reason="over budget: " + "; ".join(broken),
                               constraints=constraints)
        teacher_values = context.teacher_values(recipe.knowledge or ())

        def on_rung(rung: int, steps: int, seconds: float, state: Callable[[], dict[str, Any]]) -> bool:
            scored = {**metrics, **score(predict(student, data.x_val), data.y_val, context.val_logits),
                      "train_seconds": seconds}
            rungs[:] = with_rung(rungs, rung, steps, scored)
            if checkpoint is not None:  # saved before the verdict: a kill between the two loses nothing
                checkpoint.save({**state(), "cost": cost_metrics})
            verdict = gate(list(rungs)) if gate is not None else True
            decision = verdict if isinstance(verdict, Decision) else Decision(bool(verdict))
            if not decision.goes_on:
                stopped.append((rung, decision.reason))
            return decision.goes_on

        torch.manual_seed(recipe.seed)
        result = distill(student, data.x_train, data.y_train, recipe, teacher_logits=context.train_logits,
                         teacher=context.teacher.model, teacher_values=teacher_values,
                         pairs=config.distill.pairs, rungs=plan.rungs, on_rung=on_rung, resume=resume)
    except InvalidSpec as exc:
        return _ended(checkpoint, TrialResult("invalid", spec, reason=f"invalid spec: {exc}"))
    except Diverged as exc:
        return _ended(checkpoint, TrialResult("failed", spec, reason=str(exc), rungs=rungs))
    except Exception as exc:  # a trial's own bug must not end the study; keep the reason
        log.debug("trial failed:\n%s", traceback.format_exc())
        return _ended(checkpoint, TrialResult("failed", spec, reason=f"{type(exc).__name__}: {exc}", rungs=rungs))
    if result.stopped:
        rung, why = stopped[-1]
        return _ended(checkpoint, TrialResult(
            "pruned", spec, dict(rungs[-1]["metrics"]), constraints=constraints, steps=result.steps, rungs=rungs,
            reason=f"stopped at rung {rung} ({plan.label(result.steps)} of {plan.label(plan.target_steps)})"
                   + (f": {why}" if why else "")))
    metrics.update(score(predict(student, data.x_val), data.y_val, context.val_logits))
    metrics["train_seconds"] = result.train_seconds
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        return _ended(checkpoint, TrialResult("failed", spec, metrics, reason=f"non-finite metrics: {', '.join(bad)}",
                                              rungs=rungs))
    return _ended(checkpoint, TrialResult("complete", spec, metrics, constraints=constraints, student=student,
                                          curve=result.curve, steps=result.steps, rungs=rungs))


def _ended(checkpoint: CheckpointFile | None, result: TrialResult) -> TrialResult:
    """A trial that ended needs no saved state: it is never continued."""
    if checkpoint is not None:
        checkpoint.clear()
    return result
