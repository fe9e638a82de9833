"""Offline distillation (the default scheme): frozen teachers, their knowledge read from the
study's cache when it holds it, else from a no-grad forward on every batch; the student learns
``ce_weight * CE`` plus the recipe's knowledge terms. Several teachers are combined by
``naskd.distill.teachers.combine``; feature knowledge reads the one teacher it names."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from naskd.config import DistillConfig
from naskd.distill.base import Distiller, SchemeInputs, TeacherSource, Terms
from naskd.distill.teachers import combine
from naskd.knowledge.hooks import Tap
from naskd.knowledge.terms import KnowledgeLoss, Plan, plan


class _Side:
    """Where one teacher's knowledge for a step comes from: cached rows when available, else
    a no-grad forward on the batch, with hooks for internals that are not cached."""

    def __init__(self, source: TeacherSource, knowledge: Plan | None) -> None:
        self.source, self.plan = source, knowledge
        need_values = knowledge is not None and bool(knowledge.teacher_names) and source.values is None
        attention = knowledge is not None and bool(knowledge.attention_pairs)
        self.run = source.logits is None or need_values or attention
        self.tap = None
        if knowledge is not None and (need_values or attention):
            feats = [t for t, _ in knowledge.feature_pairs] if need_values else []
            self.tap = Tap(
                source.model,
                feats,
                embedding=knowledge.embedding and need_values,
                attention=[t for t, _ in knowledge.attention_pairs],
            )

    def batch(self, xb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        src = self.source
        values = {k: v[idx] for k, v in src.values.items()} if src.values is not None and self.plan is not None else {}
        logits = src.logits[idx] if src.logits is not None else None
        if self.run:
            with torch.no_grad():
                out = src.model(src.view(xb, idx))
            logits = out if logits is None else logits
            if self.tap is not None:
                values.update(self.tap.values)
        return logits, values  # type: ignore[return-value]

    def close(self) -> None:
        if self.tap is not None:
            self.tap.close()


class Offline(Distiller):
    """Args: the student, its recipe, one or more frozen teachers (the first, or the one
    ``recipe.feature_teacher`` names, supplies feature knowledge) and the feature pairs."""

    def __init__(
        self,
        student: nn.Module,
        recipe: DistillConfig,
        teachers: Sequence[TeacherSource],
        pairs: Sequence[tuple[str, str]] = (),
    ) -> None:
        if not teachers:
            raise ValueError("offline distillation needs a teacher")
        self.student, self.recipe, self.teachers = student, recipe, list(teachers)
        self.terms = [t for t in recipe.knowledge or () if t["weight"] > 0]
        ce_weight = recipe.ce_weight if recipe.ce_weight is not None else 1.0 - recipe.alpha  # set by DistillConfig
        self.ce_weight = float(ce_weight) if self.terms else 1.0
        self.feature_source = next((t for t in self.teachers if t.name == recipe.feature_teacher), self.teachers[0])
        for t in self.teachers:
            t.model.eval()  # a teacher's BatchNorm/dropout must never run in training mode
        self.plan = plan(self.terms, self.feature_source.model, student, pairs)
        self.student_tap = (
            None
            if self.plan.logits_only
            else Tap(
                student,
                [s for _, s in self.plan.feature_pairs],
                embedding=self.plan.embedding,
                attention=[s for _, s in self.plan.attention_pairs],
            )
        )
        self.sides = [_Side(t, self.plan if t is self.feature_source else None) for t in self.teachers]
        self.weights = [t.weight for t in self.teachers]
        self.loss_fn: KnowledgeLoss | None = None

    @classmethod
    def from_inputs(cls, inputs: SchemeInputs) -> Offline:
        return cls(inputs.student, inputs.recipe, inputs.teachers, inputs.pairs)

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, **({"adapters": self.loss_fn} if self.loss_fn is not None else {})}

    def setup(self, x: torch.Tensor, probe: torch.Tensor) -> None:
        if not self.terms:
            return
        student_values: dict[str, torch.Tensor] = {}
        teacher_values: dict[str, torch.Tensor] = {}
        if self.student_tap is not None:
            # Adapters are sized from one eval-mode forward on two samples.
            self.student.eval()
            with torch.no_grad():
                self.student(x[probe])
            student_values = self.student_tap.values
            _, teacher_values = self.sides[self.teachers.index(self.feature_source)].batch(x[probe], probe)
        self.loss_fn = KnowledgeLoss(self.plan, student_values, teacher_values).to(x.device)

    def train_mode(self) -> None:
        self.student.train()

    def _teacher(
        self, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, values = [], {}
        for side in self.sides:
            z, v = side.batch(xb, idx)
            logits.append(z)
            values.update(v)
        return combine(logits, self.weights, self.recipe.combine), values

    def step(self, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        logits = self.student(xb)
        terms = {"ce": self.ce_weight * F.cross_entropy(logits, yb)}
        if self.loss_fn is not None:
            t_logits, t_values = self._teacher(xb, yb, idx)
            terms.update(
                self.loss_fn(logits, t_logits, self.student_tap.values if self.student_tap else {}, t_values, yb)
            )
        return logits, terms

    def close(self) -> None:
        if self.student_tap is not None:
            self.student_tap.close()
        for side in self.sides:
            side.close()
