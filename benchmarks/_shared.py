"""What several benchmarks share: the machine they ran on, and the fixed students they compare
(drawn once from a study's space by a seeded sampler, so every run trains the same ones)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import optuna

from naskd.trial import full_spec


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

    parts = [f"{cpu_model()}, {os.cpu_count()} cores", f"{platform.system()} {platform.release()}",
             f"Python {platform.python_version()}", f"torch {torch.__version__}",
             f"{torch.get_num_threads()} torch threads", f"optuna {optuna.__version__}", *extra]
    return ", ".join(parts)


def draw_students(config: Any, n: int, seed: int = 0) -> list[tuple[dict, dict]]:
    """``(params, spec)`` of ``n`` students drawn from the study's space by a seeded random
    sampler; enqueue the params in a study to train exactly these students."""
    draw = optuna.create_study(directions=list(config.search.directions),
                               sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = draw.ask()
        spec = full_spec(config.space.sample(trial), config)
        out.append((dict(trial.params), spec))
        draw.tell(trial, state=optuna.trial.TrialState.FAIL)
    return out
