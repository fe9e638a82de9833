"""The recipe part of a search space (``[space.recipe]``): which distillation recipe keys the
sampler may choose per trial, and how a sampled choice turns the study's base recipe into the
trial's recipe.

Declared with the same parameter format as ``[space.params]``. Keys:

============  =====================================================================
key           effect on the trial's recipe
============  =====================================================================
knowledge     one kind or several joined by "+" ("kd", "kd+attention_transfer"):
              replaces the knowledge terms, each at its published default weight
temperature   sets the temperature of every term that has one (kd, dkd, dist)
weight_scale  multiplies the weight of every knowledge term
ce_weight     the cross-entropy weight
lr            the learning rate
scheme        the distillation scheme ("offline", "mutual", "self", "born_again")
generations   born_again: how many generations
aux_weight    self: the share of each auxiliary head's loss from the deepest output
============  =====================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from naskd.config import SCHEMES
from naskd.errors import ConfigError
from naskd.knowledge.functional import LOSSES
from naskd.spaces._text import did_you_mean, show
from naskd.spaces.families._common import Key
from naskd.spaces.params import KeyPath, Param, parse_params

RECIPE_KEYS: dict[str, Key] = {
    "knowledge": Key("kd", str),
    "temperature": Key(4.0, float, low=1e-3),
    "weight_scale": Key(1.0, float, low=0.0),
    "ce_weight": Key(0.1, float, low=0.0),
    "lr": Key(3e-3, float, low=1e-9),
    "scheme": Key("offline", str, choices=SCHEMES),
    "generations": Key(2, int, low=1, high=10),
    "aux_weight": Key(0.1, float, low=0.0, high=1.0),
}
#: Recipe choices that replace the study's value as they are.
_DIRECT = ("ce_weight", "lr", "scheme", "generations", "aux_weight")


def knowledge_problem(value: str) -> str | None:
    """Why a ``knowledge`` choice names no valid combination of kinds, or None."""
    kinds = value.split("+")
    for kind in kinds:
        if kind not in LOSSES:
            return f"unknown knowledge kind {show(kind)}{did_you_mean(kind, LOSSES)} (known: {', '.join(LOSSES)})"
    if len(set(kinds)) != len(kinds):
        return f"repeats a kind in {show(value)}"
    return None


def check_declarations(
    params: tuple[Param, ...],
    keys: Mapping[str, Key],
    file: str,
    at: KeyPath,
    section: str,
    *,
    unknown: str,
    prefix: str,
) -> None:
    """Every declared param must name one of ``keys`` and fit its type, range and choices
    (shared by ``[space.params]`` against a family and ``[space.recipe]`` against RECIPE_KEYS)."""
    for param in params:
        key = keys.get(param.name)
        if key is None:
            hint = did_you_mean(param.name, keys)
            raise ConfigError(file, at(section, param.name), f"{unknown}{hint} (known: {', '.join(keys)})")
        problem = key.declaration_problem(param)
        if problem:
            sub, phrase = problem
            raise ConfigError(file, at(section, param.name, sub), f"{prefix} {param.name} {phrase}")


def parse_recipe_space(table: Any, file: str, at: KeyPath) -> tuple[Param, ...]:
    """Validate ``[space.recipe]`` into Params; every key must be one of ``RECIPE_KEYS``."""
    params = parse_params(table, file, at, section="recipe")
    check_declarations(params, RECIPE_KEYS, file, at, "recipe", unknown="not a recipe key", prefix="recipe")
    for param in params:
        if param.name == "knowledge":
            values = param.choices if param.kind == "categorical" else (param.value,)
            for value in values or ():
                problem = knowledge_problem(str(value))
                if problem:
                    raise ConfigError(file, at("recipe", param.name), problem)
    return params


def default_term(kind: str, weight: float | None = None) -> dict[str, Any]:
    """A knowledge term at its published default weight and hyperparameters."""
    info = LOSSES[kind]
    return {"kind": kind, "weight": info.default_weight if weight is None else weight, **info.hyperparameters}


def apply_recipe_choices(recipe: dict[str, Any], choices: dict[str, Any]) -> dict[str, Any]:
    """The trial's recipe: the study's base ``recipe`` with the sampled ``choices`` applied."""
    out = dict(recipe)
    terms = [dict(t) for t in recipe["knowledge"]]
    if "knowledge" in choices:
        terms = [default_term(kind) for kind in choices["knowledge"].split("+")]
    if "temperature" in choices:
        for term in terms:
            if "temperature" in term:
                term["temperature"] = choices["temperature"]
    if "weight_scale" in choices:
        for term in terms:
            term["weight"] = term["weight"] * choices["weight_scale"]
    out["knowledge"] = terms
    for key in _DIRECT:
        if key in choices:
            out[key] = choices[key]
    return out
