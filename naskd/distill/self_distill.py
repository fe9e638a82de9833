"""Self-distillation by deep supervision, after "Be Your Own Teacher" (Zhang et al. 2019): an
auxiliary classifier on each of the student's shallower stages learns from the labels, from
the student's deepest output (softened, detached) and from its deepest feature (the input of
its classifier). No teacher takes part.

The heads belong to this distiller, not to the student: they are dropped when the run ends,
so the exported student, its parameter count and its latency are the plain student's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from naskd.config import DistillConfig
from naskd.distill.base import Distiller, SchemeInputs, Terms
from naskd.errors import InvalidSpec
from naskd.knowledge.functional import kd
from naskd.knowledge.hooks import Tap, stage_names
from naskd.knowledge.terms import EMBEDDING

#: A stage's map is pooled to at most this many positions per axis before its head: enough to
#: keep where things are (position matters in MNIST-1D), small enough to keep heads light.
POOLED = 4


class AuxHead(nn.Module):
    """Pool a stage's output, project it to the deepest feature's width (the bottleneck whose
    output learns the deepest feature), classify from there."""

    def __init__(self, feature: torch.Tensor, width: int, num_classes: int, tokens: bool = False) -> None:
        super().__init__()
        self.tokens = tokens
        flat = _pooled(feature, tokens).shape[1]
        self.bottleneck = nn.Sequential(nn.Linear(flat, width), nn.ReLU())
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.bottleneck(_pooled(feature, self.tokens))
        return self.classifier(hidden), hidden


def _pooled(feature: torch.Tensor, tokens: bool = False) -> torch.Tensor:
    """Conv maps ``(B, C, *spatial)`` pooled over space; a transformer layer's ``(B, T, D)``
    (``tokens``) averaged over its tokens."""
    if tokens:
        return feature.mean(1)
    if feature.ndim == 3:
        feature = F.adaptive_avg_pool1d(feature, min(POOLED, feature.shape[-1]))
    elif feature.ndim == 4:
        feature = F.adaptive_avg_pool2d(feature, (min(POOLED, feature.shape[-2]), min(POOLED, feature.shape[-1])))
    return feature.flatten(1)


def _is_token_layer(module: nn.Module) -> bool:
    """A batch-first transformer layer: its output is (B, tokens, features), not a conv map."""
    return isinstance(module, nn.TransformerEncoderLayer) and module.self_attn.batch_first


class SelfDistill(Distiller):
    """Args: the student and its recipe (``aux_weight``: the share of each head's loss taken from
    the deepest output rather than the labels; ``aux_temperature``; ``aux_feature_weight``: the
    weight of the feature hint)."""

    def __init__(self, student: nn.Module, recipe: DistillConfig) -> None:
        self.student, self.recipe = student, recipe
        self.stages = stage_names(student)[:-1]
        if not self.stages:
            raise InvalidSpec(
                "self distillation needs a student with at least two stages (stages.i or layers.i) "
                "to put auxiliary heads on"
            )
        self.tap = Tap(student, self.stages, embedding=True)
        self.heads = nn.ModuleList()

    @classmethod
    def from_inputs(cls, inputs: SchemeInputs) -> SelfDistill:
        return cls(inputs.student, inputs.recipe)

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "heads": self.heads}

    def setup(self, x: torch.Tensor, probe: torch.Tensor) -> None:
        self.student.eval()
        with torch.no_grad():
            logits = self.student(x[probe])
        width = self.tap.values[EMBEDDING].flatten(1).shape[1]
        modules = dict(self.student.named_modules())
        self.heads.extend(
            AuxHead(self.tap.values[name], width, logits.shape[1], tokens=_is_token_layer(modules[name]))
            for name in self.stages
        )
        self.heads.to(x.device)

    def train_mode(self) -> None:
        self.student.train()
        self.heads.train()

    def step(self, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        r = self.recipe
        logits = self.student(xb)
        deep = logits.detach()
        deep_feature = self.tap.values[EMBEDDING].flatten(1).detach()
        aux_ce = aux_kd = aux_feature = logits.new_zeros(())
        for name, head in zip(self.stages, self.heads):
            out, hidden = head(self.tap.values[name])
            aux_ce = aux_ce + F.cross_entropy(out, yb)
            aux_kd = aux_kd + kd(out, deep, temperature=r.aux_temperature)
            aux_feature = aux_feature + F.mse_loss(hidden, deep_feature)
        return logits, {
            "ce": F.cross_entropy(logits, yb),
            "aux_ce": (1 - r.aux_weight) * aux_ce,
            "aux_kd": r.aux_weight * aux_kd,
            "aux_feature": r.aux_feature_weight * aux_feature,
        }

    def close(self) -> None:
        self.tap.close()
