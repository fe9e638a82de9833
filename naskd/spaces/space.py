"""``Space`` (a validated search space) and ``load_space`` (the ``[space]`` table or a space file -> Space).

All validation happens here, once, before any trial: a loaded Space only ever produces specs
whose keys and value types its family accepts (cross-key limits such as ``d_model % heads``
are left to ``check_spec``, because they depend on the sampled combination).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naskd.errors import ConfigError
from naskd.quantize import DEPLOY_PRECISIONS
from naskd.spaces._text import did_you_mean, show, unknown_key
from naskd.spaces.families import FAMILIES, import_builder
from naskd.spaces.params import KeyPath, Param, Suggester, parse_params, sample_params
from naskd.spaces.recipe import check_declarations, parse_recipe_space

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the 3.10 fallback named in pyproject.toml
    import tomli as tomllib

_SPACE_KEYS = ("family", "builder", "params", "recipe", "precision")

# The repository checkout that holds the shipped search_spaces/ (for an editable install).
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Space:
    """A validated search space: a family and its declared parameters.

    Attributes:
        family: "mlp" | "cnn1d" | "cnn2d" | "transformer" | "user".
        params: the declared parameters, in declaration order.
        builder: ``"module:callable"`` when ``family == "user"``, else None.
        source: the file the space came from (the study file for an inline space).
        recipe: the recipe keys the sampler chooses per trial (``[space.recipe]``), if any.
        precision: the number formats a student is deployed in (``precision = "int8"`` or a
            list to search over); empty: float32, and specs carry no ``"precision"``.
    """

    family: str
    params: tuple[Param, ...]
    builder: str | None
    source: str
    recipe: tuple[Param, ...] = ()
    precision: Param | None = None

    def sample(self, suggester: Suggester) -> dict[str, Any]:
        """Draw one student spec.

        Args:
            suggester: anything with optuna's ``suggest_int`` / ``suggest_float`` /
                ``suggest_categorical`` (an ``optuna.Trial``, a test fake, a random suggester).

        Returns:
            Plain JSON: ``{"family": ..., "arch": {...}}``, plus ``"builder"`` for the user
            family, ``"precision"`` when the space declares one, and ``"recipe_choices"`` when it
            declares a recipe. Params skipped by ``when`` are absent from ``arch``; ``per`` params
            are lists.
        """
        spec: dict[str, Any] = {"family": self.family, "arch": sample_params(self.params, suggester)}
        if self.precision is not None:
            spec["precision"] = self.precision.suggest(suggester, "precision")
        if self.builder is not None:
            spec["builder"] = self.builder
        if self.recipe:
            spec["recipe_choices"] = sample_params(self.recipe, suggester, prefix="recipe.")
        return spec

    def summary(self) -> list[dict[str, Any]]:
        """One JSON-able row per declared param: name, kind, range, step, log, choices, value, per, when
        (recipe params are named ``recipe.<key>``)."""
        rows = [param.summary() for param in self.params]
        if self.precision is not None:
            rows.append(self.precision.summary())
        return rows + [{**param.summary(), "name": f"recipe.{param.name}"} for param in self.recipe]


def load_space(table: dict, file: str, base_dir: Path) -> Space:
    """Validate a study's ``[space]`` table, reading the space file it points to if any.

    Args:
        table: ``{"path": "search_spaces/mlp.toml"}``, or an inline space
            ``{"family": ..., "builder": ..., "params": {...}}``.
        file: the study file, as it should appear in messages.
        base_dir: the study file's folder; a relative ``path`` is looked up there first, then
            in the working directory, then in the naskd checkout.

    Returns:
        The validated Space.

    Raises:
        ConfigError: naming the file that holds the bad key (the space file when loaded by
            path) and the key path, e.g. ``[space].params.depth.high`` inline or
            ``[params].depth.high`` in a space file.
    """
    file = str(file)
    at = KeyPath("space")
    if not isinstance(table, dict):
        raise ConfigError(file, at(), f"must be a table, got {show(table)}")
    if "path" not in table:
        return _parse_space(table, file, at, extra_keys=("path",))
    for key in table:
        if key != "path":
            raise ConfigError(file, at(key), "cannot be combined with path: declare the space inline or in the file")
    raw = table["path"]
    if not isinstance(raw, str) or not raw:
        raise ConfigError(file, at("path"), f"must be a path to a space file, got {show(raw)}")
    space_file = _resolve(raw, Path(base_dir))
    if space_file is None:
        looked = f"{base_dir}, the working directory and {_REPO_ROOT}"
        raise ConfigError(file, at("path"), f'no such file "{raw}" (looked in {looked})')
    shown = _display(space_file)
    try:
        data = tomllib.loads(space_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, "(file)", f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, "(toml)", str(exc)) from None
    return _parse_space(data, shown, KeyPath(None), extra_keys=())


def _resolve(raw: str, base_dir: Path) -> Path | None:
    path = Path(raw).expanduser()
    candidates = [path] if path.is_absolute() else [base_dir / path, Path.cwd() / path, _REPO_ROOT / path]
    return next((c.resolve() for c in candidates if c.is_file()), None)


def _display(path: Path) -> str:
    """Relative to the working directory when inside it: shorter, and what the user typed."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _parse_space(data: dict, file: str, at: KeyPath, extra_keys: tuple[str, ...]) -> Space:
    for key in data:
        if key not in _SPACE_KEYS:
            raise ConfigError(file, at(key), unknown_key(key, (*_SPACE_KEYS, *extra_keys)))
    if "family" not in data:
        raise ConfigError(file, at("family"), f"missing (one of {', '.join(map(show, FAMILIES))})")
    family_name = data["family"]
    family = FAMILIES.get(family_name) if isinstance(family_name, str) else None
    if family is None:
        hint = did_you_mean(str(family_name), FAMILIES)
        known = ", ".join(FAMILIES)
        raise ConfigError(file, at("family"), f"unknown family {show(family_name)}{hint} (known: {known})")

    builder = data.get("builder")
    if family_name == "user":
        if builder is None:
            raise ConfigError(file, at("builder"), 'missing: family "user" needs builder = "package.module:function"')
        try:
            # Imported now so that a typo fails the study at load time, not every trial.
            import_builder(builder)
        except ValueError as exc:
            raise ConfigError(file, at("builder"), str(exc)) from None
    elif builder is not None:
        raise ConfigError(file, at("builder"), f'only used with family = "user" (this space is "{family_name}")')

    params = parse_params(data.get("params", {}), file, at)
    if family_name != "user":
        check_declarations(
            params,
            family.keys,
            file,
            at,
            "params",
            unknown=f"{family_name} has no arch key of this name",
            prefix=family_name,
        )
    recipe = parse_recipe_space(data["recipe"], file, at) if "recipe" in data else ()
    precision = _precision(data["precision"], file, at) if "precision" in data else None
    return Space(family=family_name, params=params, builder=builder, source=file, recipe=recipe, precision=precision)


def _precision(value: Any, file: str, at: KeyPath) -> Param:
    """``precision = "int8"`` (fixed) or ``["float32", "int8"]`` (searched)."""
    choices = value if isinstance(value, list) else [value]
    bad = [c for c in choices if not isinstance(c, str) or c not in DEPLOY_PRECISIONS]
    if bad or not choices or len(set(choices)) != len(choices):
        problem = (
            f"got {show(bad[0])}"
            if bad
            else "got an empty list"
            if not choices
            else f"repeats a value in {show(value)}"
        )
        raise ConfigError(
            file,
            at("precision"),
            f"must be one of {', '.join(map(show, DEPLOY_PRECISIONS))} or a list of them; {problem}",
        )
    if len(choices) == 1:
        return Param(name="precision", kind="fixed", value=choices[0])
    return Param(name="precision", kind="categorical", choices=tuple(choices))
