"""Quantized distillation: the last phase of an int8 student's training, in which the
float32 teacher(s) teach the student's fake-quantized graph (quantization-aware training,
Polino et al. 2018 / Mishra & Marr 2018), after which the graph is converted to int8.

The student arrives trained in float by its scheme for ``1 - qat_fraction`` of the target
budget; this phase trains the remaining steps at ``qat_lr_scale`` times the learning rate
(QAT fine-tunes: a full learning rate on freshly fake-quantized weights undoes the float
training). Its loss is response knowledge only, ``(1 - alpha) CE + alpha KD(T)`` on the
teachers' (cached) logits: the int8 graph has no module names for feature taps or auxiliary
heads, and what the deployed student must match is the teacher's output.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import torch
from torch import nn

from naskd.config import DistillConfig
from naskd.distill.base import TeacherSource
from naskd.distill.loop import DistillResult, Placement, train
from naskd.distill.offline import Offline
from naskd.quantize import Int8Student, convert, prepare


def qat_recipe(recipe: DistillConfig) -> DistillConfig:
    """The recipe of the QAT phase: the study's, at ``qat_lr_scale`` of its learning rate, with
    one kd term at its alpha and temperature."""
    kd = {"kind": "kd", "weight": recipe.alpha, "temperature": recipe.temperature}
    return dataclasses.replace(
        recipe, lr=recipe.lr * recipe.qat_lr_scale, knowledge=(kd,), ce_weight=round(1.0 - recipe.alpha, 12)
    )


def quantization_aware(
    student: nn.Module,
    recipe: DistillConfig,
    teachers: Sequence[TeacherSource],
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    placement: Placement,
) -> tuple[Int8Student, DistillResult]:
    """Distil ``student``'s fake-quantized graph from ``teachers`` for ``steps`` steps, then
    convert it: the int8 student (on the CPU, eval mode) and the phase's result, whose time
    includes preparing and converting the graph.

    Raises:
        InvalidSpec: the quantizer cannot take the student.
        Diverged: the loss became NaN or infinite.
    """
    start = time.perf_counter()
    example = x[: max(2, min(recipe.batch_size, len(x)))]
    prepared = prepare(student, example)
    phase = qat_recipe(recipe)
    # Response knowledge only: the teachers' logits (cached or computed), never their features.
    sources = [dataclasses.replace(t, values=None) for t in teachers]
    fp32 = dataclasses.replace(placement, precision="fp32", channels_last=False)
    result = train(Offline(prepared, phase, sources), x, y, phase, placement=fp32, steps=steps)
    int8 = convert(prepared.cpu())
    seconds = time.perf_counter() - start
    return int8, dataclasses.replace(result, train_seconds=seconds)
