"""Diagnostics of a search's students: the same student trained without a teacher at the target
budget (the scratch baseline, for KD gain and gap closure) and re-distilled from scratch for a
given number of steps (the confirmation run: at the target budget it reproduces the front
exactly; longer, it shows whether the target budget ranks students like longer training).

Both rebuild the student from its spec with the trial's own seed, so a diagnostic differs from
the trial only in what it is meant to test.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from naskd.distill import distill, recipe_from_dict
from naskd.scoring import predict, score
from naskd.spaces import build_student
from naskd.trial import StudyContext


def scratch_metrics(spec: dict[str, Any], context: StudyContext) -> dict[str, float]:
    """``scratch_accuracy``: the spec's student, same budget and seed, no teacher."""
    data = context.data
    recipe = recipe_from_dict(spec.get("recipe", {}), base=context.config.distill)
    torch.manual_seed(recipe.seed)
    student = build_student(spec, data.input_shape, data.num_classes)
    torch.manual_seed(recipe.seed)
    result = distill(student, data.x_train, data.y_train, recipe)
    return {"scratch_accuracy": score(predict(student, data.x_val), data.y_val)["accuracy"],
            "scratch_train_seconds": result.train_seconds}


def long_run_metrics(spec: dict[str, Any], context: StudyContext, steps: int) -> dict[str, float]:
    """``long_accuracy`` and ``long_teacher_agreement`` after ``steps`` distillation steps
    (the trial's recipe otherwise), plus ``long_steps``."""
    data = context.data
    recipe = dataclasses.replace(recipe_from_dict(spec.get("recipe", {}), base=context.config.distill),
                                 steps=steps, epochs=0)
    torch.manual_seed(recipe.seed)
    student = build_student(spec, data.input_shape, data.num_classes)
    torch.manual_seed(recipe.seed)
    distill(student, data.x_train, data.y_train, recipe, teacher_logits=context.train_logits,
            teacher=context.teacher.model, teacher_values=context.teacher_values(recipe.knowledge or ()),
            pairs=context.config.distill.pairs)
    metrics = score(predict(student, data.x_val), data.y_val, context.val_logits)
    return {"long_accuracy": metrics["accuracy"], "long_teacher_agreement": metrics["teacher_agreement"],
            "long_steps": float(steps)}
