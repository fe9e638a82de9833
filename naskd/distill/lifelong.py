"""Lifelong distillation (learning without forgetting, Li & Hoiem 2016): a student of an
earlier teacher version goes on learning under the study's scheme from the new teacher, while
a frozen copy of itself, as it was, is a second teacher (KL at ``lwf_temperature``), so it
keeps what it knew. Wraps the scheme's own distiller; adds one ``lwf`` term."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from naskd.config import DistillConfig
from naskd.distill.base import Distiller, Terms
from naskd.knowledge.functional import kd


class Lifelong(Distiller):
    """Args: the scheme's distiller of the new teacher (its student holds the earlier
    version's trained weights), the recipe and the earlier student, frozen."""

    def __init__(self, inner: Distiller, recipe: DistillConfig, previous: nn.Module) -> None:
        self.inner, self.recipe = inner, recipe
        self.student = inner.student
        self.previous = previous.eval()
        for p in self.previous.parameters():
            p.requires_grad_(False)
        self.logits: torch.Tensor | None = None
        self.own_seconds = 0.0

    @property
    def prepare_seconds(self) -> float:  # type: ignore[override]
        """The inner scheme's, plus reading the earlier student's logits (training-time work)."""
        return self.inner.prepare_seconds + self.own_seconds

    def modules(self) -> dict[str, nn.Module]:
        return self.inner.modules()

    def setup(self, x: torch.Tensor, probe: torch.Tensor) -> None:
        self.inner.setup(x, probe)
        started = time.perf_counter()
        self.previous.to(x.device)
        # The earlier student never changes: its logits over the training set once, read by row.
        with torch.no_grad():
            self.logits = torch.cat([self.previous(x[i : i + 1024]) for i in range(0, len(x), 1024)])
        self.own_seconds = time.perf_counter() - started

    def train_mode(self) -> None:
        self.inner.train_mode()

    def step(self, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        logits, terms = self.inner.step(xb, yb, idx)
        if self.recipe.lwf_weight > 0 and self.logits is not None:
            terms["lwf"] = self.recipe.lwf_weight * kd(logits, self.logits[idx], self.recipe.lwf_temperature)
        return logits, terms

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def close(self) -> None:
        self.inner.close()
