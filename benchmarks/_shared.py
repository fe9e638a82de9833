"""What several benchmarks share: the machine they ran on, the fixed students they compare
(drawn once from a study's space by a seeded sampler, so every run trains the same ones), and
the one fixed cnn1d student the schemes and algorithms benchmarks train through the trial
pipeline."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import optuna

from naskd.distill import recipe_from_dict
from naskd.trial import StudyContext, build, fit, full_spec, validate

#: The schemes and algorithms benchmarks' student: 3 stages of width 8 x 1.5, kernel 5,
#: residual (4,998 params on MNIST-1D).
FIXED_STUDENT = {
    "family": "cnn1d",
    "arch": {
        "stages": 3,
        "blocks": 1,
        "width": 8,
        "width_mult": 1.5,
        "kernel": 5,
        "residual": True,
        "activation": "relu",
    },
}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(*extra: str) -> str:
    """One line naming the machine and the library versions a benchmark ran with, then ``extra``."""
    import os

    import torch

    parts = [
        f"{cpu_model()}, {os.cpu_count()} cores",
        f"{platform.system()} {platform.release()}",
        f"Python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"{torch.get_num_threads()} torch threads",
        f"optuna {optuna.__version__}",
        *extra,
    ]
    return ", ".join(parts)


def draw_students(config: Any, n: int, seed: int = 0) -> list[tuple[dict, dict]]:
    """``(params, spec)`` of ``n`` students drawn from the study's space by a seeded random
    sampler; enqueue the params in a study to train exactly these students."""
    draw = optuna.create_study(
        directions=list(config.search.directions), sampler=optuna.samplers.RandomSampler(seed=seed)
    )
    out = []
    for _ in range(n):
        trial = draw.ask()
        spec = full_spec(config.space.sample(trial), config)
        out.append((dict(trial.params), spec))
        draw.tell(trial, state=optuna.trial.TrialState.FAIL)
    return out


def seeded_spec(student: dict[str, Any], context: StudyContext, seed: int, **recipe: Any) -> dict[str, Any]:
    """The full spec of ``student`` in this study, its recipe's seed (and ``recipe``) replaced."""
    spec = full_spec(student, context.config)
    spec["recipe"].update(seed=seed, **recipe)
    return spec


def run_student(
    context: StudyContext, student: dict[str, Any], seed: int, *, scratch: bool = False, **recipe: Any
) -> tuple[float, float]:
    """(validation accuracy, train seconds) of one student at the study's target budget, through
    the trial pipeline (``build`` / ``fit`` / ``validate``)."""
    spec = seeded_spec(student, context, seed, **recipe)
    cfg = recipe_from_dict(spec["recipe"], base=context.config.distill)
    model = build(spec, context, cfg)
    result = fit(model, spec, context, cfg, scratch=scratch)
    return validate(model, context)["accuracy"], result.train_seconds
