"""What every student family shares: the arch-key schema (``Key``), the ``Family`` base and activations.

A family declares its arch keys once; the same declaration validates a space file at load
time and a spec at trial time, so both say the same thing about the same mistake.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from naskd.errors import InvalidSpec
from naskd.spaces._text import did_you_mean, shape_text, show
from naskd.spaces.params import Param

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}

_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class Key:
    """One arch key a family accepts.

    Args:
        default: used when a spec leaves the key out.
        kind: ``int``, ``float``, ``bool`` or ``str``.
        low, high: inclusive bounds for numbers.
        choices: the allowed values, when the key is an enumeration.
        per: the key also accepts a list (one value per layer or stage).
    """

    default: Any
    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    per: bool = False

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not valid for this key (a phrase to put after the key name), or None."""
        if isinstance(value, list):
            if not self.per:
                return f"takes one value, not a list (got {show(value)})"
            if not value:
                return "must not be an empty list"
            return next((p for p in map(self._scalar_problem, value) if p), None)
        return self._scalar_problem(value)

    def _scalar_problem(self, value: Any) -> str | None:
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is str:
            ok = isinstance(value, str)
        else:
            allowed = (int, float) if self.kind is float else (int,)
            ok = isinstance(value, allowed) and not isinstance(value, bool)
        if not ok:
            return f"must be {_KIND_WORDS[self.kind]}, got {show(value)}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(show, self.choices))}, got {show(value)}"
        # `not >=` rather than `<` so that NaN fails too.
        if self.low is not None and not value >= self.low:
            return f"must be >= {show(self.low)}, got {show(value)}"
        if self.high is not None and not value <= self.high:
            return f"must be <= {show(self.high)}, got {show(value)}"
        return None

    def declaration_problem(self, param: Param) -> tuple[str, str] | None:
        """Whether a space may declare ``param`` for this key: ``(sub-key, phrase)`` or None.

        Catches at load time what would otherwise fail on every trial: a float range for an
        integer key, a choice the family does not know, a per-layer list for a scalar key.
        """
        if param.per is not None and not self.per:
            return ("per", "takes one value, not one per layer or stage")
        if param.kind in ("int", "float"):
            if self.kind in (bool, str):
                return ("type", f'takes {_KIND_WORDS[self.kind]}: use type = "categorical" or value = ...')
            if self.kind is int and param.kind == "float":
                return ("type", 'takes integers: use type = "int"')
            for bound, value in (("low", param.low), ("high", param.high)):
                problem = self.problem(value)
                if problem:
                    return (bound, problem)
            return None
        if param.kind == "categorical":
            problem = next((p for p in map(self.problem, param.options) if p), None)
            return ("choices", problem) if problem else None
        fixed = list(param.value) if isinstance(param.value, tuple) else param.value
        problem = self.problem(fixed)
        return ("value", problem) if problem else None


@dataclass(frozen=True)
class BuildContext:
    """What a student builder may read besides its spec: the data's sample shape and class
    count, and (when the study's teacher can be rebuilt) a factory for a fresh, untrained model
    of the teacher's architecture and one for a copy of the trained teacher (with its
    fingerprint), so families derived from the teacher need no special case."""

    input_shape: tuple[int, ...]
    num_classes: int
    teacher: Callable[[], nn.Module] | None = None
    trained_teacher: Callable[[], nn.Module] | None = None
    teacher_fingerprint: str | None = None


class Family:
    """A student family: declared arch keys with defaults, a cheap ``check`` and a ``build``.

    Subclasses set ``name`` and ``keys`` and implement ``_check`` / ``_build``, which receive
    the arch with defaults filled in and already validated key by key.
    """

    name: str = ""
    keys: Mapping[str, Key] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @property
    def defaults(self) -> dict[str, Any]:
        """Every arch key with the value a spec gets when it leaves the key out."""
        return {k: key.default for k, key in self.keys.items()}

    def check(self, spec: Mapping[str, Any], ctx: BuildContext) -> str | None:
        """The reason ``spec`` (its ``arch``) cannot be built in this context, or None."""
        arch = spec.get("arch", {})
        problem = shape_problem(ctx.input_shape, ctx.num_classes) or self._arch_problem(arch)
        if problem:
            return problem
        return self._check({**self.defaults, **arch}, tuple(ctx.input_shape), ctx.num_classes)

    def build(self, spec: Mapping[str, Any], ctx: BuildContext) -> nn.Module:
        """Build the student; raises InvalidSpec with the reason when ``check`` fails."""
        reason = self.check(spec, ctx)
        if reason:
            raise InvalidSpec(reason)
        return self._build({**self.defaults, **spec.get("arch", {})}, tuple(ctx.input_shape), ctx.num_classes)

    def _arch_problem(self, arch: Any) -> str | None:
        if not isinstance(arch, Mapping):
            return f"{self.name}: arch must be a table of arch keys, got {show(arch)}"
        for k, value in arch.items():
            key = self.keys.get(k)
            if key is None:
                known = ", ".join(self.keys)
                return f'{self.name}: unknown arch key "{k}"{did_you_mean(str(k), self.keys)} (known: {known})'
            problem = key.problem(value)
            if problem:
                return f"{self.name}: {k} {problem}"
        return None

    def _check(self, arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> str | None:
        return None

    def _build(self, arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        raise NotImplementedError


def shape_problem(input_shape: Any, num_classes: Any) -> str | None:
    """Problems with the data side of a spec check, shared by every family."""
    if (
        not isinstance(input_shape, (tuple, list))
        or not input_shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in input_shape)
    ):
        return f"input_shape must be a non-empty tuple of positive sizes, got {input_shape!r}"
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        return f"num_classes must be a positive integer, got {num_classes!r}"
    return None


def per_unit(value: int | list[int], count: int) -> list[int]:
    """Expand an int-or-list arch value to exactly ``count`` entries (a list is taken as is)."""
    return list(value) if isinstance(value, list) else [value] * count


def length_problem(family: str, key: str, value: Any, count_key: str, count: int) -> str | None:
    """A per-layer list must have one entry per layer; say which side to change."""
    if isinstance(value, list) and len(value) != count:
        return f"{family}: {key} has {len(value)} entries but {count_key} is {count}"
    return None


def rank_problem(family: str, input_shape: tuple[int, ...], expected: str, ranks: tuple[int, ...]) -> str | None:
    """Say which input layout a family expects when the shape has the wrong number of axes."""
    if len(input_shape) in ranks:
        return None
    return f"{family} expects one sample shaped {expected} (no batch axis), got {shape_text(input_shape)}"
