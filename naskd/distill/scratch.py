"""The scratch baseline (and a built-in teacher's own training): cross-entropy on the labels,
no teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from naskd.distill.base import Distiller, SchemeInputs, Terms


class Scratch(Distiller):
    def __init__(self, student: nn.Module) -> None:
        self.student = student

    @classmethod
    def from_inputs(cls, inputs: SchemeInputs) -> Scratch:
        return cls(inputs.student)

    def step(self, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        logits = self.student(xb)
        return logits, {"ce": F.cross_entropy(logits, yb)}
