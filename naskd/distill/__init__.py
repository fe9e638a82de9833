"""Distillation: the distiller protocol (``base``), one module per scheme of the KD survey
(``offline``, ``scratch``, ``mutual``, ``self_distill``, ``born_again``, ``adversarial``: data-free,
its inputs made by ``generator``; several teachers are combined by ``teachers``), their registry
(``schemes``) and the one training loop (``loop``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from naskd.config import DistillConfig
from naskd.distill.base import Distiller, SchemeInputs, TeacherSource, Terms
from naskd.distill.loop import DistillResult, Diverged, Placement, RungCallback, TrainState, make_optimizer, train
from naskd.distill.offline import Offline
from naskd.distill.recipe import RECIPE_KEYS, recipe_dict, recipe_from_dict, steps_per_epoch, total_epochs, total_steps
from naskd.distill.schemes import SCHEMES, make_distiller
from naskd.distill.scratch import Scratch

__all__ = [
    "RECIPE_KEYS",
    "SCHEMES",
    "Distiller",
    "DistillResult",
    "Diverged",
    "Offline",
    "Placement",
    "RungCallback",
    "SchemeInputs",
    "Scratch",
    "TeacherSource",
    "Terms",
    "TrainState",
    "distill",
    "make_distiller",
    "make_optimizer",
    "recipe_dict",
    "recipe_from_dict",
    "steps_per_epoch",
    "total_epochs",
    "total_steps",
    "train",
]


def distill(
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: DistillConfig,
    *,
    teacher_logits: torch.Tensor | None = None,
    teacher: nn.Module | None = None,
    teacher_values: Mapping[str, torch.Tensor] | None = None,
    pairs: Sequence[tuple[str, str]] = (),
    **loop: object,
) -> DistillResult:
    """Offline distillation of ``student`` from one teacher, a shorthand over ``train``:
    ``teacher_logits`` / ``teacher_values`` are cached rows aligned with ``x``, ``teacher`` the
    model that runs for what is not cached; ``**loop`` goes to ``train`` (rungs, on_rung,
    resume, placement). For other schemes build their distiller and call ``train``.

    Raises:
        ValueError: neither cached logits nor a teacher model were given.
    """
    if teacher is None and teacher_logits is None:
        raise ValueError(
            "offline distillation needs a teacher model or its cached logits; "
            "train(Scratch(student), ...) trains without one"
        )
    source = TeacherSource("teacher", teacher if teacher is not None else nn.Identity(), teacher_logits, teacher_values)
    return train(Offline(student, recipe, [source], pairs), x, y, recipe, **loop)  # type: ignore[arg-type]
