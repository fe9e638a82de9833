"""Born-again networks (Furlanello et al. 2018): offline distillation in chained generations.
Generation 1 learns from the study's teacher; each later one learns from the generation before
it, and the last generation is the student that is scored. Born-again proper gives the student
the teacher's own architecture (the ``teacher`` family); any family can be chained.

Earlier generations train to the full target budget before the student's own run starts (only
that last run has rungs); their time counts in the trial's train time. A continued trial trains
them again (deterministic from the seed) rather than storing every generation.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

from naskd.distill.base import Distiller, SchemeInputs, TeacherSource, Terms
from naskd.distill.loop import Placement, train
from naskd.distill.offline import Offline
from naskd.errors import InvalidSpec
from naskd.scoring import predict


class BornAgain(Distiller):
    def __init__(self, inputs: SchemeInputs) -> None:
        if inputs.new_student is None or inputs.x is None or inputs.y is None:
            raise InvalidSpec("born-again generations need the student's spec and the training data")
        if not inputs.teachers:
            raise InvalidSpec("born-again distillation needs a teacher for its first generation")
        self.inputs, self.student = inputs, inputs.student
        self.new_student, self.x, self.y = inputs.new_student, inputs.x, inputs.y  # checked above
        self.inner: Offline | None = None

    @classmethod
    def from_inputs(cls, inputs: SchemeInputs) -> BornAgain:
        return cls(inputs)

    def setup(self, x: torch.Tensor, probe: torch.Tensor) -> None:
        inputs, recipe = self.inputs, self.inputs.recipe
        teachers = list(inputs.teachers)
        started = time.perf_counter()
        for generation in range(1, recipe.generations):
            model = self.new_student(recipe.seed + generation).to(inputs.device)
            # Each generation's own batch order, so generations are not copies of one run.
            train(
                Offline(model, dataclasses.replace(recipe, seed=recipe.seed + generation), teachers, inputs.pairs),
                self.x,
                self.y,
                recipe,
                placement=Placement(device=inputs.device),
            )
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            # Its logits over the training set, once: the next generation reads them like a cache.
            teachers = [TeacherSource(f"generation {generation}", model, logits=predict(model, self.x))]
        self.prepare_seconds = time.perf_counter() - started
        self.inner = Offline(self.student, recipe, teachers, inputs.pairs)
        self.inner.setup(x, probe)

    def _offline(self) -> Offline:
        if self.inner is None:
            raise RuntimeError("BornAgain.setup has not run")
        return self.inner

    def modules(self) -> dict[str, nn.Module]:
        return self._offline().modules()

    def train_mode(self) -> None:
        self._offline().train_mode()

    def step(self, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        return self._offline().step(xb, yb, idx)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
