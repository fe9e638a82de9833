"""The distillation run: a student, the teacher's (cached) logits and a recipe in, a trained
student and its loss curve out; paused at rungs, where the caller may stop it, save its
training state, or continue a saved one exactly where it was.

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
    steps: int  # steps trained, from the first (a continued run counts its earlier steps too)
    train_seconds: float
    final_loss: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    stopped: bool = False  # on_rung ended the run before its budget


#: A run's whole training state at a rung: what a continued run needs to carry on bit for bit
#: (weights, optimizer moments, adapters, the batch order and its generator, the global RNG
#: that dropout draws from). Plain tensors, numbers and lists, so ``torch.load(...,
#: weights_only=True)`` reads it back.
TrainState = dict[str, Any]

#: ``on_rung(rung index, steps done, train seconds so far, state) -> go on?``; ``state()``
#: captures the ``TrainState`` (only when asked: capturing copies the weights).
RungCallback = Callable[[int, int, float, Callable[[], TrainState]], bool]


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
    rungs: Sequence[int] = (),
    on_rung: RungCallback | None = None,
    resume: TrainState | None = None,
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
        rungs: step counts (ascending, below the run's total) after which ``on_rung`` is
            called; its time is not training time, and the student is in train mode again
            when it returns.
        on_rung: decides at each rung whether the run goes on; returning False ends it
            there (``DistillResult.stopped``). Scoring the student in eval mode inside it
            changes nothing the run depends on.
        resume: a state captured at a rung of the same student, recipe and data: the run
            carries on from it and ends exactly as an uninterrupted run would. When that
            step is a rung, ``on_rung`` is asked about it again first.

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
        order = torch.randperm(n, generator=generator)
        first, seconds_before, loss_value = 0, 0.0, float("nan")
        if resume is not None:
            first, seconds_before, loss_value, order, curve = _restore(resume, student, loss_fn, optimizer, generator)
        ce_weight = recipe.ce_weight if side is not None else 1.0
        judged = {s: k for k, s in enumerate(rungs) if s > first} if on_rung is not None else {}
        stopped = False
        if on_rung is not None and first in rungs:
            # A continued run is judged again at the rung it was saved at: the decision that
            # followed the save may never have been recorded.
            state = _capture_state(student, loss_fn, optimizer, generator, order, first, seconds_before,
                                   loss_value, curve)
            stopped = not on_rung(list(rungs).index(first), first, seconds_before, state)
            if stopped:
                steps = first
        student.train()
        start = time.perf_counter()
        for step in range(first, steps):
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
            if step % every == 0 or step == steps - 1 or step + 1 in judged:
                # .item() synchronises; doing it only at curve points keeps the step loop lean.
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise Diverged(step, loss_value)
                curve.append((step, loss_value))
            if step + 1 in judged:
                paused = time.perf_counter()
                done_seconds = seconds_before + paused - start
                state = _capture_state(student, loss_fn, optimizer, generator, order, step + 1, done_seconds,
                                       loss_value, curve)
                go_on = on_rung(judged[step + 1], step + 1, done_seconds, state)  # type: ignore[misc]
                student.train()
                start += time.perf_counter() - paused
                if not go_on:
                    stopped, steps = True, step + 1
                    break
    finally:
        if student_tap is not None:
            student_tap.close()
        if side is not None:
            side.close()
    student.eval()
    return DistillResult(steps=steps, train_seconds=seconds_before + time.perf_counter() - start,
                         final_loss=loss_value, curve=curve, stopped=stopped)


def _capture_state(student: nn.Module, loss_fn: nn.Module | None, optimizer: torch.optim.Optimizer,
                   generator: torch.Generator, order: torch.Tensor, step: int, seconds: float, loss_value: float,
                   curve: list[tuple[int, float]]) -> Callable[[], TrainState]:
    def capture() -> TrainState:
        return {
            "step": step, "train_seconds": seconds, "loss": loss_value, "curve": [list(p) for p in curve],
            "student": {k: v.detach().clone() for k, v in student.state_dict().items()},
            "adapters": {k: v.detach().clone() for k, v in loss_fn.state_dict().items()} if loss_fn is not None else {},
            "optimizer": optimizer.state_dict(),
            "order": order.clone(), "generator": generator.get_state(), "rng": torch.get_rng_state(),
        }

    return capture


def _restore(state: TrainState, student: nn.Module, loss_fn: nn.Module | None, optimizer: torch.optim.Optimizer,
             generator: torch.Generator) -> tuple[int, float, float, torch.Tensor, list[tuple[int, float]]]:
    """Load a captured state into a freshly built run; returns where the run stands."""
    student.load_state_dict(state["student"])
    if loss_fn is not None:
        loss_fn.load_state_dict(state["adapters"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["rng"])
    curve = [(int(a), float(b)) for a, b in state["curve"]]
    return int(state["step"]), float(state["train_seconds"]), float(state["loss"]), state["order"], curve
