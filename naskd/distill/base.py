"""The distiller protocol: what one scheme of the KD survey owns (which models train, how the
loss is formed, what it needs torn down), apart from the training loop that drives it.

A scheme is one small class: ``modules`` names every model whose parameters train (and whose
state a rung checkpoint keeps), ``step`` returns the student's logits and the loss as named,
already weighted terms (their sum is what is minimised), ``train_mode`` sets each model's
mode for a step. The loop in ``naskd.distill.loop`` owns batching, the optimizer, rungs,
timing, device, precision and divergence, and never asks which scheme it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from naskd.config import DistillConfig

#: Named, weighted loss terms of one step; the loss is their sum.
Terms = dict[str, torch.Tensor]


@dataclass
class TeacherSource:
    """One frozen teacher as a scheme sees it: the model, and what the study cached of it over
    the training set (rows aligned with ``x``; None: the teacher runs on every batch).
    Cross-modal, ``inputs`` holds the teacher's own view of those rows: a teacher that runs
    reads ``inputs[idx]``, never the student's batch."""

    name: str
    model: nn.Module
    logits: torch.Tensor | None = None
    values: Mapping[str, torch.Tensor] | None = None
    weight: float = 1.0
    inputs: torch.Tensor | None = None

    def view(self, xb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """What this teacher reads for the batch whose student inputs are ``xb`` (rows ``idx``)."""
        return xb if self.inputs is None else self.inputs[idx]


@dataclass
class SchemeInputs:
    """Everything a scheme may build its distiller from. Schemes read what they need."""

    student: nn.Module
    recipe: DistillConfig
    teachers: Sequence[TeacherSource] = ()
    pairs: Sequence[tuple[str, str]] = ()
    #: a fresh, untrained model of the student's spec, its initial weights drawn from this seed
    new_student: Callable[[int], nn.Module] | None = None
    #: a new model of the (first) teacher's architecture holding its trained weights, when it
    #: can be rebuilt (``Teacher.trained_copy``)
    teacher_copy: Callable[[], nn.Module] | None = None
    #: the training data, for schemes that train models of their own before the student's run
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class Distiller(ABC):
    """One scheme's training of one student. Built per trial; the loop calls ``setup`` once
    (before the optimizer exists), then ``train_mode`` and ``step`` per batch, then ``close``."""

    #: the model that is scored and kept; every other module is dropped when the run ends
    student: nn.Module
    #: seconds spent before the student's own run (a scheme that trains models first)
    prepare_seconds: float = 0.0

    def modules(self) -> dict[str, nn.Module]:
        """Every module whose parameters train and whose state a checkpoint keeps, by name."""
        return {"student": self.student}

    def setup(self, x: torch.Tensor, probe: torch.Tensor) -> None:  # noqa: B027 (an optional hook: most schemes need nothing)
        """Build what depends on the data's shapes (adapters, heads): ``x[probe]`` is two samples."""

    def train_mode(self) -> None:
        """Put each model in the mode a training step needs."""
        self.student.train()

    @abstractmethod
    def step(self, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        """One batch: the student's logits and the weighted loss terms (``idx``: rows of ``x``)."""

    def state_dict(self) -> dict[str, Any]:
        """What a rung checkpoint must keep beyond the modules' weights and the loop's
        optimizer (a scheme's own optimizer, counter or noise generator), as plain tensors,
        numbers and lists; empty for most schemes."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (an optional hook: most schemes need nothing)
        """Restore what ``state_dict`` returned, in a freshly built distiller after ``setup``."""

    def close(self) -> None:  # noqa: B027 (an optional hook: most schemes need nothing)
        """Remove hooks and anything else attached to models that outlive the run."""
