"""naskd: find the best small student networks for a trained teacher.

The public API. ``optuna_objective`` and ``ray_trainable`` are loaded on first use so that
``import naskd`` imports neither Optuna nor Ray: the core runs without any search framework.
"""

from __future__ import annotations

from typing import Any

from naskd.config import StudyConfig, load_study
from naskd.errors import ConfigError, InvalidSpec, NaskdError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "InvalidSpec",
    "NaskdError",
    "StudyConfig",
    "build_context",
    "evaluate",
    "load_study",
    "optuna_objective",
    "ray_trainable",
]


def __getattr__(name: str) -> Any:
    if name in ("build_context", "evaluate"):
        from naskd import trial

        return getattr(trial, name)
    if name == "optuna_objective":
        from naskd.backends.optuna_backend import optuna_objective

        return optuna_objective
    if name == "ray_trainable":
        from naskd.backends.ray_backend import ray_trainable

        return ray_trainable
    raise AttributeError(f"module 'naskd' has no attribute {name!r}")
