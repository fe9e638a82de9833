"""Search spaces and student families: what a study may sample, and how a sampled spec becomes a model.

Owns the space file format (``load_space`` -> ``Space``), sampling through any ``Suggester``
(an ``optuna.Trial`` is one, but nothing here imports optuna), and the student families
(``FAMILIES``, ``check_spec``, ``build_student``).
"""

from __future__ import annotations

from naskd.spaces.families import FAMILIES, BuildContext, Family, Key, build_student, check_spec
from naskd.spaces.params import Condition, Param, Suggester
from naskd.spaces.space import Space, load_space

__all__ = [
    "FAMILIES",
    "BuildContext",
    "Condition",
    "Family",
    "Key",
    "Param",
    "Space",
    "Suggester",
    "build_student",
    "check_spec",
    "load_space",
]
