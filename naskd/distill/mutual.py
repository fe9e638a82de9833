"""Online distillation by deep mutual learning (Zhang et al. 2018): the student trains together
with a cohort (a trainable copy of the teacher, or peer students of its own architecture),
each member learning from the labels and from the others' detached predictions.

The study's teacher cache is never read: the cohort's predictions change every step. Each
trial trains its own copy of the teacher, so trials stay independent and can run in parallel;
the study's teacher itself is never modified.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from naskd.config import DistillConfig
from naskd.distill.base import Distiller, SchemeInputs, Terms
from naskd.errors import InvalidSpec
from naskd.knowledge.terms import KnowledgeLoss, plan


class Mutual(Distiller):
    """Args: the student, its recipe (``ce_weight`` and the logit-based knowledge terms every
    member learns with) and the cohort of other members."""

    def __init__(
        self,
        student: nn.Module,
        recipe: DistillConfig,
        cohort: list[nn.Module],
        views: list[torch.Tensor | None] | None = None,
    ) -> None:
        self.student, self.recipe = student, recipe
        self.cohort = nn.ModuleList(cohort)
        # Cross-modal: a copy of the teacher reads the teacher's view of the rows (None: the batch).
        self.views = views or [None] * len(cohort)
        terms = [t for t in recipe.knowledge or () if t["weight"] > 0]
        knowledge = plan(terms, nn.Identity(), student)
        if not knowledge.logits_only:
            kinds = ", ".join(sorted(knowledge.consumes - {"logits"}))
            raise InvalidSpec(
                f"mutual learning exchanges predictions only; the recipe's {kinds} knowledge "
                "has no frozen teacher to read from (use logit terms such as kd)"
            )
        if not terms:
            raise InvalidSpec("mutual learning needs a logit knowledge term (e.g. kd) with a weight > 0")
        self.loss_fn = KnowledgeLoss(knowledge, {}, {})

    @classmethod
    def from_inputs(cls, inputs: SchemeInputs) -> Mutual:
        recipe = inputs.recipe
        if recipe.cohort == "teacher":
            if not inputs.teachers:
                raise InvalidSpec("mutual learning with the teacher needs a teacher")
            # A copy per trial: the study's teacher stays as loaded, for scoring and other trials.
            # Rebuilt and loaded rather than deep-copied where possible: a deep copy would carry
            # any hooks attached to the teacher (counters, feature taps) into the cohort.
            if inputs.teacher_copy is not None:
                member = inputs.teacher_copy().to(inputs.device)
            else:
                member = copy.deepcopy(inputs.teachers[0].model)
            for p in member.parameters():
                p.requires_grad_(True)
            return cls(inputs.student, recipe, [member], [inputs.teachers[0].inputs])
        if inputs.new_student is None:
            raise InvalidSpec("mutual learning with peers needs the student's spec to build peers")
        return cls(inputs.student, recipe, [inputs.new_student(recipe.seed + 1 + k) for k in range(recipe.peers)])

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "cohort": self.cohort}

    def train_mode(self) -> None:
        self.student.train()
        self.cohort.train()

    def _member_terms(self, own: torch.Tensor, others: list[torch.Tensor], yb: torch.Tensor, prefix: str) -> Terms:
        target = torch.stack([o.detach() for o in others]).mean(0) if len(others) > 1 else others[0].detach()
        terms = {f"{prefix}ce": self.recipe.ce_weight * F.cross_entropy(own, yb)}  # type: ignore[operator]
        terms.update({prefix + k: v for k, v in self.loss_fn(own, target, {}, {}, yb).items()})
        return terms

    def step(self, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        logits = self.student(xb)
        members = [m(xb if view is None else view[idx]) for m, view in zip(self.cohort, self.views)]
        terms = self._member_terms(logits, members, yb, "")
        # Each member's loss reads the others detached, so one backward of the sum trains each
        # on its own loss only.
        for k, own in enumerate(members):
            for name, value in self._member_terms(
                own, [logits, *members[:k], *members[k + 1 :]], yb, "cohort_"
            ).items():
                terms[name] = terms[name] + value if name in terms else value
        return logits, terms
