"""A recipe's knowledge terms assembled into one training loss: which teacher and student
internals each term reads (``plan``), the trainable adapters that bridge shape mismatches, and
the weighted terms (``KnowledgeLoss``), each under its own name so a run can report what
every term contributed.

Adapters train with the student but are not part of it: they live in ``KnowledgeLoss`` and
are dropped when the student is saved or exported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from naskd.errors import InvalidSpec
from naskd.knowledge.functional import LOSSES
from naskd.knowledge.hooks import attention_layer_names, module_names, relative_pairs, stage_names

EMBEDDING = "embedding"


@dataclass(frozen=True)
class Plan:
    """What the terms of one recipe read from the two models."""

    terms: tuple[dict[str, Any], ...]
    feature_pairs: tuple[tuple[str, str], ...] = ()
    attention_pairs: tuple[tuple[str, str], ...] = ()
    embedding: bool = False
    consumes: frozenset[str] = field(default_factory=frozenset)

    @property
    def logits_only(self) -> bool:
        return self.consumes <= {"logits"}

    @property
    def teacher_names(self) -> list[str]:
        """Teacher values a cache can hold: paired feature outputs and the embedding."""
        return [t for t, _ in self.feature_pairs] + ([EMBEDDING] if self.embedding else [])


def feature_pairs(teacher: nn.Module, student: nn.Module, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The study's ``[[distill.pairs]]`` when given (checked against the student), else the
    automatic pairing of stages at the same relative depth."""
    if pairs:
        available = set(module_names(student))
        for _, s in pairs:
            if s not in available:
                raise InvalidSpec(
                    f"[distill].pairs: the student has no module {s!r} (available: {', '.join(module_names(student))})"
                )
        return list(pairs)
    return relative_pairs(stage_names(teacher), stage_names(student))


def plan(
    terms: Sequence[Mapping[str, Any]], teacher: nn.Module, student: nn.Module, pairs: Sequence[tuple[str, str]] = ()
) -> Plan:
    """Decide what each term needs.

    Raises:
        InvalidSpec: a term needs internals the models do not have (no stages to pair, no
            attention layers), with the reason.
    """
    consumes = frozenset(LOSSES[t["kind"]].consumes for t in terms)
    fpairs: list[tuple[str, str]] = []
    apairs: list[tuple[str, str]] = []
    if "features" in consumes:
        fpairs = feature_pairs(teacher, student, pairs)
        if not fpairs:
            raise InvalidSpec(
                "feature knowledge needs paired modules: neither model has stages.i/layers.i; "
                "name them in [[distill.pairs]]"
            )
    if "attention" in consumes:
        apairs = relative_pairs(attention_layer_names(teacher), attention_layer_names(student))
        if not apairs:
            raise InvalidSpec("attention_distribution needs attention layers in both teacher and student")
    return Plan(tuple(dict(t) for t in terms), tuple(fpairs), tuple(apairs), "embeddings" in consumes, consumes)


class FeatureAdapter(nn.Module):
    """Maps a student feature to the teacher's shape for FitNets: a 1x1 convolution (conv maps)
    or a linear layer (vectors; a teacher map is then compared by its channel means), with
    spatial sizes pooled to the smaller of the two."""

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> None:
        super().__init__()
        self.conv = len(student_shape) == len(teacher_shape) and len(student_shape) >= 2
        c_s, c_t = student_shape[0] if self.conv else _numel(student_shape), teacher_shape[0]
        if self.conv:
            conv = nn.Conv1d if len(student_shape) == 2 else nn.Conv2d
            self.proj: nn.Module = conv(c_s, c_t, kernel_size=1, bias=False)
        else:
            self.proj = nn.Linear(c_s, c_t if len(teacher_shape) > 1 else _numel(teacher_shape))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.conv:
            s = self.proj(student.flatten(1))
            t = teacher.flatten(2).mean(-1) if teacher.ndim > 2 else teacher
            return s, t
        s = self.proj(student)
        return _pool_to_smaller(s, teacher)


def _numel(shape: Sequence[int]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def _pool_to_smaller(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    size = tuple(min(x, y) for x, y in zip(a.shape[2:], b.shape[2:]))
    pool: Callable[..., torch.Tensor] = F.adaptive_avg_pool1d if a.ndim == 3 else F.adaptive_avg_pool2d
    a = a if tuple(a.shape[2:]) == size else pool(a, size)
    b = b if tuple(b.shape[2:]) == size else pool(b, size)
    return a, b


def term_names(terms: Sequence[Mapping[str, Any]]) -> list[str]:
    """A name per term: its kind, numbered when a recipe uses a kind twice (``kd``, ``kd_2``)."""
    seen: dict[str, int] = {}
    names = []
    for term in terms:
        seen[term["kind"]] = seen.get(term["kind"], 0) + 1
        names.append(term["kind"] if seen[term["kind"]] == 1 else f"{term['kind']}_{seen[term['kind']]}")
    return names


class KnowledgeLoss(nn.Module):
    """A plan's weighted terms, by name; holds the FitNets adapters.

    Args:
        plan: from ``plan``.
        student_values, teacher_values: one forward pass's captured values (only shapes are
            read) so adapters are built for the actual feature sizes.
    """

    def __init__(
        self, plan: Plan, student_values: Mapping[str, torch.Tensor], teacher_values: Mapping[str, torch.Tensor]
    ) -> None:
        super().__init__()
        self.plan = plan
        self.names = term_names(plan.terms)
        self.adapters = nn.ModuleList()
        if any(t["kind"] == "fitnet" for t in plan.terms):
            self.adapters.extend(
                FeatureAdapter(student_values[s].shape[1:], teacher_values[t].shape[1:]) for t, s in plan.feature_pairs
            )
        if any(term["kind"] == "attention_transfer" for term in plan.terms):
            for t, s in plan.feature_pairs:
                if min(student_values[s].ndim, teacher_values[t].ndim) < 3:
                    raise InvalidSpec(
                        f"attention_transfer needs convolutional feature maps; {s!r} of the student "
                        f"gives {tuple(student_values[s].shape[1:])} and {t!r} of the teacher "
                        f"{tuple(teacher_values[t].shape[1:])}"
                    )

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        student_values: Mapping[str, torch.Tensor],
        teacher_values: Mapping[str, torch.Tensor],
        labels: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Each term with a weight, weighted, under ``term_names``' name for it."""
        return {
            name: term["weight"]
            * self._term(term, student_logits, teacher_logits, student_values, teacher_values, labels)
            for name, term in zip(self.names, self.plan.terms)
            if term["weight"] != 0
        }

    def _term(
        self,
        term: Mapping[str, Any],
        s_logits: torch.Tensor,
        t_logits: torch.Tensor,
        s_vals: Mapping[str, torch.Tensor],
        t_vals: Mapping[str, torch.Tensor],
        labels: torch.Tensor,
    ) -> torch.Tensor:
        info = LOSSES[term["kind"]]
        hyper = {k: term[k] for k in info.hyperparameters if k in term}
        if info.consumes == "logits":
            if info.needs_labels:
                return info.fn(s_logits, t_logits, labels, **hyper)
            return info.fn(s_logits, t_logits, **hyper)
        if info.consumes == "embeddings":
            if term["kind"] == "irg":
                return info.fn(s_vals[EMBEDDING], t_vals[EMBEDDING], s_logits, t_logits, **hyper)
            return info.fn(s_vals[EMBEDDING], t_vals[EMBEDDING], **hyper)
        if info.consumes == "attention":
            # A 0-dim start adds exactly as sum's usual 0 does, and keeps the result a tensor.
            terms = (
                info.fn(s_vals[f"attention:{s}"], t_vals[f"attention:{t}"], **hyper)
                for t, s in self.plan.attention_pairs
            )
            return sum(terms, torch.zeros(()))
        losses = []
        for i, (t, s) in enumerate(self.plan.feature_pairs):
            student, teacher = s_vals[s], t_vals[t]
            if term["kind"] == "fitnet":
                student, teacher = self.adapters[i](student, teacher)
            losses.append(info.fn(student, teacher, **hyper))
        return torch.stack(losses).sum()
