"""The short distillation run: a student, the teacher's (cached) logits and a recipe in,
a trained student and its loss curve out.

In-memory data is fed as tensor slices of a seeded permutation, never through a
per-sample DataLoader: for the small sets a search trains on, Python-level collation
would cost more than the student's own forward and backward passes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from naskd.config import DistillConfig
from naskd.knowledge.hooks import Tap
from naskd.knowledge.terms import KnowledgeLoss, Plan, plan

#: The recipe is the part of ``[distill]`` that shapes a student's training; it travels in the
#: spec. Left out: the kd shorthand (alpha, temperature: already in ``knowledge``) and the
#: study-level settings (teacher cache, feature pairs and their cache budget).
RECIPE_KEYS = tuple(f.name for f in dataclasses.fields(DistillConfig)
                    if f.name not in ("alpha", "temperature", "cache_teacher", "pairs", "feature_cache_mb"))


def recipe_dict(cfg: DistillConfig) -> dict[str, Any]:
    """The recipe as plain JSON, stored in every trial's spec."""
    out = {k: getattr(cfg, k) for k in RECIPE_KEYS}
    out["knowledge"] = [dict(term) for term in cfg.knowledge]
    return out


def recipe_from_dict(recipe: dict[str, Any], base: DistillConfig | None = None) -> DistillConfig:
    """A spec's recipe as a DistillConfig; study-level settings come from ``base``."""
    values = {k: recipe[k] for k in RECIPE_KEYS if k in recipe}
    if "knowledge" in values:
        values["knowledge"] = tuple(dict(term) for term in values["knowledge"])
    return dataclasses.replace(base or DistillConfig(), **values)


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"diverged: loss became {value} at step {step}")
        self.step = step


@dataclass
class DistillResult:
    steps: int
    train_seconds: float
    final_loss: float
    curve: list[tuple[int, float]] = field(default_factory=list)


def steps_per_epoch(recipe: DistillConfig, n: int) -> int:
    return math.ceil(n / min(recipe.batch_size, n))


def total_steps(recipe: DistillConfig, n: int) -> int:
    return recipe.steps or recipe.epochs * steps_per_epoch(recipe, n)


def total_epochs(recipe: DistillConfig, n: int) -> int:
    """Epochs a run starts, the last one possibly cut short by a step budget."""
    return math.ceil(total_steps(recipe, n) / steps_per_epoch(recipe, n))


def make_optimizer(params: list[nn.Parameter], recipe: DistillConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    try:
        # The fused kernel updates every tensor in one call: on a small student the default
        # per-tensor loop costs ~1 ms of a ~8 ms step (benchmarks/overhead.py), fused ~0.2 ms.
        return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)
    except RuntimeError:  # parameters on a device the fused kernel does not cover: the per-tensor loop
        return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


class _TeacherSide:
    """Where each step's teacher knowledge comes from: cached rows (logits, features) when
    available, else a no-grad teacher forward on the batch with hooks for what is not cached."""

    def __init__(self, plan: Plan, teacher: nn.Module | None, logits: torch.Tensor | None,
                 values: Mapping[str, torch.Tensor] | None) -> None:
        self.plan, self.teacher, self.logits, self.values = plan, teacher, logits, values
        need_values = bool(plan.teacher_names) and values is None
        self.run = logits is None or need_values or bool(plan.attention_pairs)
        if self.run and teacher is None:
            raise ValueError("teacher outputs are not cached and no teacher model was given")
        self.tap = None
        if self.run and (need_values or plan.attention_pairs):
            feats = [t for t, _ in plan.feature_pairs] if need_values else []
            self.tap = Tap(teacher, feats, embedding=plan.embedding and need_values,  # type: ignore[arg-type]
                           attention=[t for t, _ in plan.attention_pairs])

    def batch(self, xb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {k: v[idx] for k, v in self.values.items()} if self.values is not None else {}
        logits = self.logits[idx] if self.logits is not None else None
        if self.run:
            with torch.no_grad():
                out = self.teacher(xb)  # type: ignore[misc]
            logits = out if logits is None else logits
            if self.tap is not None:
                values.update(self.tap.values)
        return logits, values  # type: ignore[return-value]

    def close(self) -> None:
        if self.tap is not None:
            self.tap.close()


def distill(
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: DistillConfig,
    *,
    teacher_logits: torch.Tensor | None = None,
    teacher: nn.Module | None = None,
    teacher_values: Mapping[str, torch.Tensor] | None = None,
    pairs: Sequence[tuple[str, str]] = (),
    on_epoch: Callable[[int, float], None] | None = None,
) -> DistillResult:
    """Train ``student`` in place on ``(x, y)``.

    With a teacher, the loss is ``ce_weight * CE + sum(weight_k * term_k)`` over the recipe's
    knowledge terms. Teacher knowledge comes from ``teacher_logits`` / ``teacher_values`` (rows
    aligned with ``x``: the cached path) or, for what is not cached, from running ``teacher``
    on every batch. With neither, this is plain cross-entropy training (a teacher's own
    training, or a scratch baseline).

    Args:
        pairs: ``(teacher module, student module)`` names for feature knowledge; empty pairs
            stages automatically.
        on_epoch: called as ``on_epoch(epoch, train_seconds)`` after every full epoch but the
            last (the caller scores the final student itself), e.g. to report validation
            accuracy to an early-stopping scheduler; its own time is not training time.

    Raises:
        Diverged: the loss became NaN or infinite.
        InvalidSpec: a knowledge term needs internals the student or teacher lacks.
    """
    n = len(y)
    batch = min(recipe.batch_size, n)
    per_epoch = steps_per_epoch(recipe, n)
    steps = total_steps(recipe, n)
    generator = torch.Generator().manual_seed(recipe.seed)
    has_teacher = teacher_logits is not None or teacher is not None
    terms = [t for t in recipe.knowledge or () if t["weight"] > 0] if has_teacher else []
    if teacher is not None:
        teacher.eval()  # a teacher's BatchNorm/dropout must never run in training mode
    knowledge_plan = plan(terms, teacher if teacher is not None else nn.Identity(), student, pairs)
    student_tap = None if knowledge_plan.logits_only else Tap(
        student, [s for _, s in knowledge_plan.feature_pairs], embedding=knowledge_plan.embedding,
        attention=[s for _, s in knowledge_plan.attention_pairs])
    side = _TeacherSide(knowledge_plan, teacher, teacher_logits, teacher_values) if terms else None
    try:
        loss_fn = None
        if side is not None and knowledge_plan.logits_only:
            loss_fn = KnowledgeLoss(knowledge_plan, {}, {})
        elif side is not None and student_tap is not None:
            # One eval-mode forward on two samples tells the adapters the feature shapes (eval:
            # BatchNorm statistics and dropout's random stream stay untouched).
            probe = torch.arange(min(2, n))
            student.eval()
            with torch.no_grad():
                student(x[probe])
            _, t_probe = side.batch(x[probe], probe)
            loss_fn = KnowledgeLoss(knowledge_plan, student_tap.values, t_probe)
        params = list(student.parameters()) + (list(loss_fn.parameters()) if loss_fn is not None else [])
        optimizer = make_optimizer(params, recipe)
        every = max(1, steps // 50)
        curve: list[tuple[int, float]] = []
        student.train()
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        loss_value = float("nan")
        ce_weight = recipe.ce_weight if side is not None else 1.0
        for step in range(steps):
            i = step % per_epoch
            if i == 0 and step > 0:
                order = torch.randperm(n, generator=generator)
            idx = order[i * batch:(i + 1) * batch]
            xb, yb = x[idx], y[idx]
            logits = student(xb)
            loss = ce_weight * F.cross_entropy(logits, yb)
            if side is not None and loss_fn is not None:
                t_logits, t_values = side.batch(xb, idx)
                loss = loss + loss_fn(logits, t_logits, student_tap.values if student_tap else {}, t_values, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_epoch is not None and (step + 1) % per_epoch == 0 and step + 1 < steps:
                paused = time.perf_counter()
                on_epoch((step + 1) // per_epoch, paused - start)
                start += time.perf_counter() - paused
            if step % every == 0 or step == steps - 1:
                # .item() synchronises; doing it only at curve points keeps the step loop lean.
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise Diverged(step, loss_value)
                curve.append((step, loss_value))
    finally:
        if student_tap is not None:
            student_tap.close()
        if side is not None:
            side.close()
    student.eval()
    return DistillResult(steps=steps, train_seconds=time.perf_counter() - start, final_loss=loss_value, curve=curve)
