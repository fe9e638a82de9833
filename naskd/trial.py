"""One trial, and the per-study context it runs in.

``build_context`` does the once-per-study work (data, teacher, teacher outputs);
``evaluate(spec, context)`` is the one place a trial happens: build the student, measure its
cost, stop if it breaks a budget, otherwise distil it briefly and score it. It is a plain
function call, so any backend (or a test) can drive it.
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
from naskd.knowledge.functional import LOSSES
from naskd.knowledge.hooks import module_names, stage_names
from naskd.knowledge.terms import EMBEDDING
from naskd.measure import measure_cost
from naskd.scoring import predict, score
from naskd.spaces import build_student, check_spec
from naskd.spaces.recipe import apply_recipe_choices
from naskd.teacher import Teacher, describe_teacher, load_teacher

log = logging.getLogger(__name__)

Status = Literal["complete", "infeasible", "invalid", "failed"]

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
        """Facts recorded with the study: data splits and the teacher's figures."""
        return {"data": self.data.describe(), "teacher": dict(self.teacher_info)}

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
    """The outcome of one trial; ``metrics`` holds every name in ``METRICS`` when complete."""

    status: Status
    spec: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    constraints: dict[str, float] = field(default_factory=dict)  # budget metric -> value, feasible when <= 0
    student: nn.Module | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)


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


def evaluate(spec: dict[str, Any], context: StudyContext,
             report: Callable[[int, dict[str, float]], None] | None = None) -> TrialResult:
    """Run one trial. Never raises for a trial's own failure: the reason goes on the result.

    Args:
        spec: ``{"family", "arch", "recipe"}`` as plain JSON.
        context: the study's shared context.
        report: when given, called after every epoch but the last as ``report(epoch, metrics)``
            with every metric of a complete trial, scored on the validation set as the
            student stands; for schedulers that stop weak trials early (Ray Tune's ASHA).
            An exception it raises fails the trial like any other, except ``SystemExit``,
            which passes through: that is how Ray Tune stops a trial from ``tune.report``.
    """
    data, config = context.data, context.config
    reason = check_spec(spec, data.input_shape, data.num_classes)
    if reason:
        return TrialResult("invalid", spec, reason=f"invalid spec: {reason}")
    recipe = recipe_from_dict(spec.get("recipe", {}), base=config.distill)
    try:
        torch.manual_seed(recipe.seed)  # same spec and seed -> same initial weights and dropout masks
        student = build_student(spec, data.input_shape, data.num_classes)
        cost = config.cost
        measured = measure_cost(student, data.input_shape, batch_size=cost.batch_size, threads=cost.threads,
                                warmup=cost.warmup, repeats=cost.repeats, device=cost.device)
        metrics: dict[str, float] = {
            "params": measured.params, "flops": measured.flops,
            "latency_p50_ms": measured.latency_p50_ms, "latency_p95_ms": measured.latency_p95_ms,
            "capacity_ratio": context.teacher_info["params"] / max(1, measured.params),
        }
        constraints, broken = budget_violations(metrics, config)
        if broken:
            return TrialResult("infeasible", spec, metrics, reason="over budget: " + "; ".join(broken),
                               constraints=constraints)
        teacher_values = context.teacher_values(recipe.knowledge or ())

        def on_epoch(epoch: int, seconds: float) -> None:
            scored = score(predict(student, data.x_val), data.y_val, context.val_logits)
            report(epoch, {**metrics, **scored, "train_seconds": seconds})  # type: ignore[misc]

        torch.manual_seed(recipe.seed)
        result = distill(student, data.x_train, data.y_train, recipe, teacher_logits=context.train_logits,
                         teacher=context.teacher.model, teacher_values=teacher_values,
                         pairs=config.distill.pairs, on_epoch=on_epoch if report is not None else None)
        metrics.update(score(predict(student, data.x_val), data.y_val, context.val_logits))
        metrics["train_seconds"] = result.train_seconds
    except InvalidSpec as exc:
        return TrialResult("invalid", spec, reason=f"invalid spec: {exc}")
    except Diverged as exc:
        return TrialResult("failed", spec, reason=str(exc))
    except Exception as exc:  # a trial's own bug must not end the study; keep the reason
        log.debug("trial failed:\n%s", traceback.format_exc())
        return TrialResult("failed", spec, reason=f"{type(exc).__name__}: {exc}")
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        return TrialResult("failed", spec, metrics, reason=f"non-finite metrics: {', '.join(bad)}")
    return TrialResult("complete", spec, metrics, constraints=constraints, student=student, curve=result.curve)

