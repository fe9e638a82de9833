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
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from naskd.config import DistillConfig
from naskd.knowledge.functional import kd

#: The recipe is the part of ``[distill]`` that shapes a training run; it travels in the spec.
RECIPE_KEYS = tuple(f.name for f in dataclasses.fields(DistillConfig) if f.name != "cache_teacher")


def recipe_dict(cfg: DistillConfig) -> dict[str, Any]:
    """The recipe as plain JSON, stored in every trial's spec."""
    return {k: getattr(cfg, k) for k in RECIPE_KEYS}


def recipe_from_dict(recipe: dict[str, Any]) -> DistillConfig:
    return DistillConfig(**{k: recipe[k] for k in RECIPE_KEYS if k in recipe})


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


def total_steps(recipe: DistillConfig, n: int) -> int:
    per_epoch = math.ceil(n / min(recipe.batch_size, n))
    return recipe.steps or recipe.epochs * per_epoch


def make_optimizer(model: nn.Module, recipe: DistillConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def distill(
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: DistillConfig,
    *,
    teacher_logits: torch.Tensor | None = None,
    teacher: nn.Module | None = None,
) -> DistillResult:
    """Train ``student`` in place on ``(x, y)``.

    The loss is ``(1 - alpha) * CE + alpha * kd(T)``. Teacher knowledge comes from
    ``teacher_logits`` (rows aligned with ``x``: the cached path) or, when those are not
    given, from running ``teacher`` on every batch. With neither, this is plain
    cross-entropy training (a teacher's own training, or a scratch baseline).

    Raises:
        Diverged: the loss became NaN or infinite.
    """
    n = len(y)
    batch = min(recipe.batch_size, n)
    per_epoch = math.ceil(n / batch)
    steps = total_steps(recipe, n)
    generator = torch.Generator().manual_seed(recipe.seed)
    optimizer = make_optimizer(student, recipe)
    use_teacher = teacher_logits is not None or teacher is not None
    if teacher is not None:
        teacher.eval()  # a teacher's BatchNorm/dropout must never run in training mode
    every = max(1, steps // 50)
    curve: list[tuple[int, float]] = []
    student.train()
    start = time.perf_counter()
    order = torch.randperm(n, generator=generator)
    loss_value = float("nan")
    for step in range(steps):
        i = step % per_epoch
        if i == 0 and step > 0:
            order = torch.randperm(n, generator=generator)
        idx = order[i * batch:(i + 1) * batch]
        xb, yb = x[idx], y[idx]
        logits = student(xb)
        loss = F.cross_entropy(logits, yb)
        if use_teacher:
            if teacher_logits is not None:
                target = teacher_logits[idx]
            else:
                with torch.no_grad():
                    target = teacher(xb)  # type: ignore[misc]
            loss = (1.0 - recipe.alpha) * loss + recipe.alpha * kd(logits, target, recipe.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % every == 0 or step == steps - 1:
            # .item() synchronises; doing it only at curve points keeps the step loop lean.
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise Diverged(step, loss_value)
            curve.append((step, loss_value))
    student.eval()
    return DistillResult(steps=steps, train_seconds=time.perf_counter() - start, final_loss=loss_value, curve=curve)
