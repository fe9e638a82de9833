"""Search-parameter declarations: parsing and validating a ``[params]`` table, and sampling it.

Owns ``Param``, ``Condition``, the ``Suggester`` protocol and the rules of the space file
format (kinds, ``per``, ``when``). Knows nothing about families or torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from naskd.errors import ConfigError
from naskd.spaces._text import did_you_mean, same_value, show, unknown_key

ParamKind = Literal["int", "float", "categorical", "fixed"]
Scalar = str | int | float | bool

# Builds the ConfigError for a sub-key of the param being parsed (None: the param itself).
ErrorAt = Callable[[str | None, str], ConfigError]

KINDS: tuple[ParamKind, ...] = ("int", "float", "categorical", "fixed")
CONDITION_OPS = ("equals", "in", "gt", "ge", "lt", "le")
_OP_SYMBOLS = {"equals": "==", "in": "in", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}

# The keys each kind accepts, in the order the docs list them (also the did-you-mean pool).
_KIND_KEYS: dict[str, tuple[str, ...]] = {
    "int": ("type", "low", "high", "step", "log", "per", "when"),
    "float": ("type", "low", "high", "step", "log", "per", "when"),
    "categorical": ("type", "choices", "per", "when"),
    "fixed": ("type", "value", "when"),
}


class Suggester(Protocol):
    """What ``Space.sample`` asks for values; an ``optuna.Trial`` satisfies it as is."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class KeyPath:
    """Renders a key path the way the user sees it in the file that holds it.

    ``table="space"`` is a space declared inline in a study file (``[space].params.w.low``);
    ``table=None`` is a space file, whose keys are top level (``family``, ``[params].w.low``).
    """

    table: str | None

    def __call__(self, *parts: str) -> str:
        if self.table is not None:
            return ".".join((f"[{self.table}]", *parts)) if parts else f"[{self.table}]"
        if len(parts) == 1:
            return parts[0]
        return f"[{parts[0]}]." + ".".join(parts[1:])


@dataclass(frozen=True)
class Condition:
    """``when = { param = "residual", equals = true }``: the param exists only if this holds."""

    param: str
    op: str  # one of CONDITION_OPS
    operand: Any  # a scalar, or a tuple of scalars for "in"

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether the condition is true for the values sampled so far (absent param: false)."""
        if self.param not in values:
            return False
        value = values[self.param]
        if self.op == "equals":
            return same_value(value, self.operand)
        if self.op == "in":
            return any(same_value(value, option) for option in self.operand)
        if not _is_number(value):
            return False
        if self.op == "gt":
            return value > self.operand
        if self.op == "ge":
            return value >= self.operand
        if self.op == "lt":
            return value < self.operand
        return value <= self.operand

    def describe(self) -> str:
        """``residual == true``, ``depth in [2, 3]``, ``depth > 1``: for reports."""
        operand = list(self.operand) if self.op == "in" else self.operand
        return f"{self.param} {_OP_SYMBOLS[self.op]} {show(operand)}"


@dataclass(frozen=True)
class Param:
    """One declared parameter of a space, validated.

    ``kind`` decides which fields are set: int/float use ``low``, ``high``, ``step``, ``log``;
    categorical uses ``choices``; fixed uses ``value`` (a list value is kept as a tuple so the
    declaration stays immutable). ``per`` names an earlier int param: the param then becomes a
    list with one value per unit of that count, suggested as ``name_0``, ``name_1``, ...
    """

    name: str
    kind: ParamKind
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    choices: tuple[Scalar, ...] | None = None
    value: Any = None
    per: str | None = None
    when: Condition | None = None

    @property
    def bounds(self) -> tuple[int | float, int | float]:
        """``(low, high)`` of an int or float param (validation sets both for those kinds)."""
        if self.low is None or self.high is None:
            raise TypeError(f"param {self.name!r} ({self.kind}) has no bounds")
        return self.low, self.high

    @property
    def options(self) -> tuple[Scalar, ...]:
        """The choices of a categorical param (validation sets them for that kind)."""
        if self.choices is None:
            raise TypeError(f"param {self.name!r} ({self.kind}) has no choices")
        return self.choices

    def suggester_names(self, count: int | None = None) -> list[str]:
        """The names this param is suggested under (``count`` items when it has ``per``)."""
        if self.per is None:
            return [self.name]
        return [f"{self.name}_{i}" for i in range(count or 0)]

    def suggest(self, suggester: Suggester, name: str) -> Any:
        """Ask ``suggester`` for one value under ``name``; returns a plain JSON value."""
        if self.kind == "int":
            low, high = self.bounds
            return int(suggester.suggest_int(name, int(low), int(high), step=int(self.step or 1), log=self.log))
        if self.kind == "float":
            low, high = (float(b) for b in self.bounds)
            return float(suggester.suggest_float(name, low, high, step=self.step, log=self.log))
        if self.kind == "categorical":
            picked = suggester.suggest_categorical(name, list(self.options))
            # Hand back our own copy of the choice so the spec holds plain Python values even if
            # a suggester returns e.g. numpy scalars.
            return next((c for c in self.options if same_value(c, picked)), picked)
        return list(self.value) if isinstance(self.value, tuple) else self.value

    def summary(self) -> dict[str, Any]:
        """One JSON-able row for reports; every row has the same keys."""
        searched_range = [self.low, self.high] if self.kind in ("int", "float") else None
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {
            "name": self.name,
            "kind": self.kind,
            "range": searched_range,
            "step": self.step,
            "log": self.log,
            "choices": list(self.choices) if self.choices is not None else None,
            "value": value,
            "per": self.per,
            "when": self.when.describe() if self.when is not None else None,
        }


def sample_params(params: Sequence[Param], suggester: Suggester, prefix: str = "") -> dict[str, Any]:
    """Sample every param in declaration order; skipped params (``when`` false) are absent.

    A ``per`` param whose count param is absent is absent too: without the count there is no
    list length, and the family's default applies. ``prefix`` goes before every suggester
    name, so two groups of params (architecture, recipe) never share an Optuna parameter.
    """
    values: dict[str, Any] = {}
    for param in params:
        if param.when is not None and not param.when.holds(values):
            continue
        if param.per is None:
            values[param.name] = param.suggest(suggester, prefix + param.name)
        elif param.per in values:
            names = param.suggester_names(values[param.per])
            values[param.name] = [param.suggest(suggester, prefix + n) for n in names]
    return values


# --- parsing -----------------------------------------------------------------------------


def parse_params(table: Any, file: str, at: KeyPath, section: str = "params") -> tuple[Param, ...]:
    """Validate a ``[params]`` table into Params, in declaration order.

    Args:
        table: the ``params`` value as read from TOML.
        file: the file that holds the table (named in errors).
        at: how key paths render in that file.
        section: the table's own key (``params``, or ``recipe`` for the recipe space).

    Returns:
        The params, in the order they were declared.

    Raises:
        ConfigError: for the first problem found, naming ``file`` and the key path.
    """
    if not isinstance(table, dict):
        raise ConfigError(file, at(section), f"must be a table of parameters, got {show(table)}")
    parsed: dict[str, Param] = {}
    taken: dict[str, str] = {}  # suggester name -> the param that uses it
    for name, entry in table.items():
        param = _parse_param(name, entry, parsed, file, at, section)
        for sname in param.suggester_names(_most_entries(param, parsed)):
            if sname in taken or (param.per is not None and sname in table):
                # Optuna would silently merge the two into one parameter; refuse instead.
                other = taken.get(sname, sname)
                raise ConfigError(
                    file,
                    at(section, name),
                    f'suggests "{sname}", a name parameter "{other}" also uses; rename one of them',
                )
            taken[sname] = name
        parsed[name] = param
    return tuple(parsed.values())


def _most_entries(param: Param, parsed: Mapping[str, Param]) -> int:
    """The longest list a ``per`` param can produce (its count's high, or fixed value)."""
    if param.per is None:
        return 1
    count = parsed[param.per]
    return int(count.bounds[1]) if count.kind == "int" else int(count.value)


def _parse_param(
    name: str, entry: Any, earlier: Mapping[str, Param], file: str, at: KeyPath, section: str = "params"
) -> Param:
    def error(key: str | None, message: str) -> ConfigError:
        return ConfigError(file, at(section, name, key) if key else at(section, name), message)

    if not name.isidentifier():
        raise error(None, "parameter names must be identifiers (letters, digits and _, not starting with a digit)")
    if not isinstance(entry, dict):
        example = '{ type = "int", low = 1, high = 4 } or { value = ... }'
        raise error(None, f"must be a table like {example}, got {show(entry)}")
    kind = entry.get("type", "fixed" if "value" in entry else None)
    if kind is None:
        raise error(None, 'needs type = "int" | "float" | "categorical", or value = ... for a fixed value')
    if kind not in KINDS:
        hint = did_you_mean(str(kind), KINDS)
        raise error("type", f"must be one of {', '.join(map(show, KINDS))}, got {show(kind)}{hint}")
    for key in entry:
        if key not in _KIND_KEYS[kind]:
            article = "an" if kind == "int" else "a"
            raise error(key, unknown_key(key, _KIND_KEYS[kind], f"for {article} {kind} parameter"))

    fields: dict[str, Any] = {}
    if kind in ("int", "float"):
        fields = _parse_range(kind, entry, error)
    elif kind == "categorical":
        fields["choices"] = _parse_choices(entry, error)
    elif "value" not in entry:
        raise error("value", "missing (fixed parameters need value = ...)")
    else:
        fields["value"] = _parse_fixed(entry["value"], error)

    per = entry.get("per")
    if per is not None:
        _check_per(per, kind, earlier, error)
    when = _parse_when(entry["when"], name, earlier, error) if "when" in entry else None
    return Param(name=name, kind=kind, per=per, when=when, **fields)


def _parse_range(kind: str, entry: Mapping[str, Any], error: ErrorAt) -> dict[str, Any]:
    number = _as_int if kind == "int" else _as_float
    for key in ("low", "high"):
        if key not in entry:
            raise error(key, f"missing ({kind} parameters need low and high)")
    low, high = number(entry["low"], "low", error), number(entry["high"], "high", error)
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise error("log", f"must be true or false, got {show(log)}")
    step: int | float | None = 1 if kind == "int" else None
    if "step" in entry:
        step = number(entry["step"], "step", error)
        if not step > 0:
            raise error("step", f"must be > 0, got {show(step)}")
    if high < low:
        raise error("high", f"must be >= low ({show(low)}), got {show(high)}")
    if log and low <= 0:
        raise error("low", f"must be > 0 when log = true, got {show(low)}")
    # Optuna refuses a step on a log scale; say so here rather than on the first trial.
    if log and "step" in entry and not (kind == "int" and step == 1):
        raise error("step", "cannot be combined with log = true")
    if kind == "int" and step is not None and (high - low) % step != 0:
        raise error("high", f"high - low must be a multiple of step {step} (low {low}, high {high})")
    return {"low": low, "high": high, "step": step, "log": log}


def _as_int(value: Any, key: str, error: ErrorAt) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(key, f"must be an integer, got {show(value)}")
    return value


def _as_float(value: Any, key: str, error: ErrorAt) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error(key, f"must be a finite number, got {show(value)}")
    return float(value)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, bool)) or (isinstance(value, float) and math.isfinite(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_choices(entry: Mapping[str, Any], error: ErrorAt) -> tuple[Scalar, ...]:
    if "choices" not in entry:
        raise error("choices", "missing (categorical parameters need a list of choices)")
    choices = entry["choices"]
    if not isinstance(choices, list) or not choices:
        raise error("choices", f"must be a non-empty list, got {show(choices)}")
    for i, choice in enumerate(choices):
        if not _is_scalar(choice):
            raise error("choices", f"choice {i} must be a string, number or boolean, got {show(choice)}")
        if any(same_value(choice, c) for c in choices[:i]):
            raise error("choices", f"lists {show(choice)} twice")
    return tuple(choices)


def _parse_fixed(value: Any, error: ErrorAt) -> Scalar | tuple[Scalar, ...]:
    if _is_scalar(value):
        return value
    if isinstance(value, list) and all(_is_scalar(v) for v in value):
        return tuple(value)
    raise error("value", f"must be a string, number, boolean or a list of those, got {show(value)}")


#: The most entries a ``per`` list may have: a network of more layers or stages than this is not
#: a small student, and each entry is a parameter name validated and suggested one by one.
MAX_PER = 256


def _check_per(per: Any, kind: str, earlier: Mapping[str, Param], error: ErrorAt) -> None:
    if kind == "fixed":
        raise error("per", "a fixed value cannot have per; write the list itself: value = [64, 32]")
    if not isinstance(per, str):
        raise error("per", f"must name an earlier int parameter, got {show(per)}")
    target = earlier.get(per)
    if target is None:
        raise error("per", f'names "{per}", which is not declared before this parameter{did_you_mean(per, earlier)}')
    if target.per is not None:
        raise error("per", f'names "{per}", which is itself a per-{target.per} list; per needs a single int')
    if target.kind == "int":
        low, high = target.bounds
        if low < 0:
            raise error("per", f'names "{per}", whose low {target.low} is negative; a count must be >= 0')
        if high > MAX_PER:
            raise error(
                "per",
                f'names "{per}", whose high {target.high} is over {MAX_PER} (the most entries a per list may have)',
            )
        return
    if target.kind == "fixed" and _is_number(target.value) and isinstance(target.value, int) and target.value >= 0:
        if target.value > MAX_PER:
            raise error(
                "per",
                f'names "{per}", whose value {target.value} is over {MAX_PER} (the most entries a per list may have)',
            )
        return
    raise error("per", f'names "{per}", which is not an int parameter (a per count must be an int)')


def _parse_when(when: Any, name: str, earlier: Mapping[str, Param], error: ErrorAt) -> Condition:
    example = '{ param = "residual", equals = true }'
    if not isinstance(when, dict):
        raise error("when", f"must be a table like {example}, got {show(when)}")
    known = ("param", *CONDITION_OPS)
    for key in when:
        if key not in known:
            raise error(f"when.{key}", unknown_key(key, known))
    ops = [op for op in CONDITION_OPS if op in when]
    if "param" not in when or len(ops) != 1:
        raise error("when", f"needs param and exactly one of {', '.join(CONDITION_OPS)}, like {example}")
    ref, op = when["param"], ops[0]
    if ref == name:
        raise error("when", "a parameter cannot depend on itself")
    target = earlier.get(ref) if isinstance(ref, str) else None
    if target is None:
        hint = did_you_mean(str(ref), earlier)
        raise error("when", f"param {show(ref)} is not declared before this parameter{hint}")
    if target.per is not None:
        raise error("when", f'param "{ref}" is a per-{target.per} list; conditions need a single value')

    operand = when[op]
    if op in ("gt", "ge", "lt", "le"):
        if not _is_number(operand):
            raise error("when", f"{op} needs a number, got {show(operand)}")
        if not _takes_numbers(target):
            raise error("when", f'{op} compares numbers, but "{ref}" is not numeric')
        return Condition(ref, op, operand)
    options = operand if op == "in" else [operand]
    if op == "in" and (not isinstance(operand, list) or not operand):
        raise error("when", f"in needs a non-empty list, got {show(operand)}")
    for option in options:
        if not _is_scalar(option):
            raise error("when", f"{op} needs a string, number or boolean, got {show(option)}")
        # A condition on a value the target can never take is a typo (e.g. "True" for true).
        if target.kind == "categorical" and not any(same_value(option, c) for c in target.options):
            raise error("when", f'{show(option)} is not one of the choices of "{ref}": {show(list(target.options))}')
        if target.kind in ("int", "float") and not _is_number(option):
            raise error("when", f'"{ref}" is numeric, got {show(option)}')
    return Condition(ref, op, tuple(operand) if op == "in" else operand)


def _takes_numbers(param: Param) -> bool:
    if param.kind in ("int", "float"):
        return True
    if param.kind == "categorical":
        return all(_is_number(c) for c in param.options)
    return _is_number(param.value)
