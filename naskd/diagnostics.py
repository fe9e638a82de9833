"""Diagnostics of a search's students: the same student trained without a teacher at the target
budget (the scratch baseline, for KD gain and gap closure) and re-distilled from scratch for a
given number of steps (the confirmation run: at the target budget it reproduces the front
exactly; longer, it shows whether the target budget ranks students like longer training).

Both go through the trial's own pipeline (``naskd.trial.train_as_trial`` / ``validate``: an int8
student is quantized as in its trial) with the trial's seed, so a diagnostic differs from the
trial only in what it is meant to test.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from naskd.distill import recipe_from_dict
from naskd.trial import StudyContext, train_as_trial, validate


def scratch_metrics(spec: dict[str, Any], context: StudyContext) -> dict[str, float]:
    """``scratch_accuracy``: the spec's student, same budget and seed, no teacher."""
    recipe = recipe_from_dict(spec.get("recipe", {}), base=context.config.distill)
    student, result = train_as_trial(spec, context, recipe, scratch=True)
    return {"scratch_accuracy": validate(student, context)["accuracy"], "scratch_train_seconds": result.train_seconds}


def long_run_metrics(spec: dict[str, Any], context: StudyContext, steps: int) -> dict[str, float]:
    """``long_accuracy`` and ``long_teacher_agreement`` after ``steps`` distillation steps
    (the trial's recipe and scheme otherwise), plus ``long_steps``."""
    recipe = dataclasses.replace(
        recipe_from_dict(spec.get("recipe", {}), base=context.config.distill), steps=steps, epochs=0
    )
    student, _ = train_as_trial(spec, context, recipe)
    metrics = validate(student, context)
    return {
        "long_accuracy": metrics["accuracy"],
        "long_teacher_agreement": metrics["teacher_agreement"],
        "long_steps": float(steps),
    }
