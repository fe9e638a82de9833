"""naskd: find the best small student networks for a trained teacher.

The public API: ``search`` runs or resumes a study and returns a ``Study`` (front and trials as
pandas frames, hypervolume, knee, report, export); ``load`` reads one back; ``load_student``
loads an exported student. ``optuna_objective`` and ``ray_trainable`` plug a study into a
user's own Optuna study or Ray Tune run. Names are loaded on first use, so ``import naskd``
imports neither Optuna nor Ray: the core runs without any search framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from naskd.config import StudyConfig, load_study
from naskd.errors import ConfigError, InvalidSpec, NaskdError

if TYPE_CHECKING:
    from naskd.api import Study, load, load_student, search
    from naskd.backends.optuna_backend import optuna_objective
    from naskd.backends.ray_backend import ray_trainable
    from naskd.trial import build_context, evaluate

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "InvalidSpec",
    "NaskdError",
    "Study",
    "StudyConfig",
    "build_context",
    "evaluate",
    "load",
    "load_student",
    "load_study",
    "optuna_objective",
    "ray_trainable",
    "search",
]

#: Where each lazily loaded name lives.
_LAZY = {
    "Study": "naskd.api",
    "load": "naskd.api",
    "load_student": "naskd.api",
    "search": "naskd.api",
    "build_context": "naskd.trial",
    "evaluate": "naskd.trial",
    "optuna_objective": "naskd.backends.optuna_backend",
    "ray_trainable": "naskd.backends.ray_backend",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'naskd' has no attribute {name!r}")
