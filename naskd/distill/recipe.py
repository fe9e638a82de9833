"""A trial's recipe (the part of ``[distill]`` that shapes one student's training) as plain
JSON and back, and the step arithmetic every reader of a recipe shares."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from naskd.config import DistillConfig

#: The recipe travels in the spec. Left out: the kd shorthand (alpha, temperature: already in
#: ``knowledge``) and the study-level settings (teacher cache, feature pairs and their cache
#: budget, where training runs).
STUDY_LEVEL_KEYS = (
    "alpha",
    "temperature",
    "cache_teacher",
    "pairs",
    "feature_cache_mb",
    "device",
    "precision",
    "channels_last",
)
RECIPE_KEYS = tuple(f.name for f in dataclasses.fields(DistillConfig) if f.name not in STUDY_LEVEL_KEYS)


def recipe_dict(cfg: DistillConfig) -> dict[str, Any]:
    """The recipe as plain JSON, stored in every trial's spec."""
    out = {k: getattr(cfg, k) for k in RECIPE_KEYS}
    out["knowledge"] = [dict(term) for term in cfg.knowledge or ()]
    return out


def recipe_from_dict(recipe: dict[str, Any], base: DistillConfig | None = None) -> DistillConfig:
    """A spec's recipe as a DistillConfig; study-level settings come from ``base``."""
    values = {k: recipe[k] for k in RECIPE_KEYS if k in recipe}
    if "knowledge" in values:
        values["knowledge"] = tuple(dict(term) for term in values["knowledge"])
    return dataclasses.replace(base or DistillConfig(), **values)


def steps_per_epoch(recipe: DistillConfig, n: int) -> int:
    return math.ceil(n / min(recipe.batch_size, n))


def total_steps(recipe: DistillConfig, n: int) -> int:
    return recipe.steps or recipe.epochs * steps_per_epoch(recipe, n)


def total_epochs(recipe: DistillConfig, n: int) -> int:
    """Epochs a run starts, the last one possibly cut short by a step budget."""
    return math.ceil(total_steps(recipe, n) / steps_per_epoch(recipe, n))
