"""Tests for naskd.spaces: the shipped space files, sampling (per / when), the families, and errors."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from naskd.errors import ConfigError, InvalidSpec
from naskd.spaces import FAMILIES, BuildContext, Space, build_student, check_spec, load_space

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
STUDY = "studies/test.toml"  # the study file named in errors of inline spaces

# (space file, input shape): each shipped space on the data it is sized for.
SPACE_CASES = [
    ("mlp", (1, 8, 8)),
    ("mlp", (1, 40)),
    ("cnn1d", (1, 40)),
    ("cnn2d", (1, 8, 8)),
    ("transformer", (1, 8, 8)),
    ("transformer", (1, 40)),
]


class RandomSuggester:
    """A seeded stand-in for an optuna trial that records the names it is asked for."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.asked: list[str] = []

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        self.asked.append(name)
        if log:
            return min(high, max(low, round(math.exp(self.rng.uniform(math.log(low), math.log(high))))))
        return self.rng.randrange(low, high + 1, step)

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        self.asked.append(name)
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        if step is not None:
            return low + step * self.rng.randint(0, int(round((high - low) / step)))
        return self.rng.uniform(low, high)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.asked.append(name)
        return self.rng.choice(list(choices))


class ScriptedSuggester:
    """Answers from a dict; asking for a name it does not hold fails the test."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.asked: list[str] = []

    def _answer(self, name: str) -> Any:
        assert name in self.values, f"asked for {name}, which should have been skipped"
        self.asked.append(name)
        return self.values[name]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._answer(name)

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return self._answer(name)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._answer(name)


def shipped(name: str) -> Space:
    return load_space({"path": f"search_spaces/{name}.toml"}, STUDY, REPO)


@pytest.fixture
def user_builder(monkeypatch: pytest.MonkeyPatch) -> str:
    """The test builder's reference, importable whether or not tests/ is a package."""
    monkeypatch.syspath_prepend(str(TESTS))
    return "user_models:build_mlp"


# --- the shipped space files --------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape"), SPACE_CASES)
def test_shipped_spaces_build_students_that_train(name: str, shape: tuple[int, ...]) -> None:
    space = shipped(name)
    assert space.family == name and space.source.endswith(f"{name}.toml")
    for seed in range(3):
        spec = space.sample(RandomSuggester(seed))
        assert json.loads(json.dumps(spec)) == spec  # plain JSON, lists not tuples
        assert check_spec(spec, BuildContext(shape, 10)) is None
        torch.manual_seed(seed)
        model = build_student(spec, BuildContext(shape, 10))
        assert 100 < sum(p.numel() for p in model.parameters()) < 100_000
        x = torch.randn(5, *shape)
        logits = model(x)
        assert logits.shape == (5, 10)
        F.cross_entropy(logits, torch.randint(0, 10, (5,))).backward()
        assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    ("family", "shape", "hook_points"),
    [
        ("mlp", (1, 8, 8), ["layers.0", "layers.1", "head"]),
        ("cnn1d", (1, 40), ["stages.0", "stages.2", "head"]),
        ("cnn2d", (1, 8, 8), ["stages.0", "stages.2", "head"]),
        ("transformer", (1, 40), ["layers.0", "layers.1", "head"]),
        ("transformer", (64,), ["layers.0", "head"]),
    ],
)
def test_family_defaults_build_with_named_hook_points(
    family: str, shape: tuple[int, ...], hook_points: list[str]
) -> None:
    model = build_student({"family": family, "arch": {}}, BuildContext(shape, 3))
    names = dict(model.named_modules())
    assert all(point in names for point in hook_points)
    assert model(torch.randn(2, *shape)).shape == (2, 3)


def test_summary_rows_are_json() -> None:
    rows = shipped("mlp").summary()
    assert [r["name"] for r in rows] == ["depth", "width", "activation", "dropout"]
    width = rows[1]
    assert width["kind"] == "int" and width["range"] == [16, 128] and width["log"] and width["per"] == "depth"
    assert json.loads(json.dumps(rows)) == rows


# --- sampling: per, when, optuna ----------------------------------------------------------


def test_per_param_exists_only_below_its_count() -> None:
    space = load_space(
        {
            "family": "mlp",
            "params": {
                "depth": {"type": "int", "low": 1, "high": 4},
                "width": {"type": "int", "low": 8, "high": 64, "log": True, "per": "depth"},
            },
        },
        STUDY,
        REPO,
    )
    depths = set()
    for seed in range(20):
        suggester = RandomSuggester(seed)
        arch = space.sample(suggester)["arch"]
        depths.add(arch["depth"])
        assert len(arch["width"]) == arch["depth"]
        assert suggester.asked == ["depth", *(f"width_{i}" for i in range(arch["depth"]))]
    assert depths == {1, 2, 3, 4}


def test_when_skips_params_and_family_defaults_fill_in() -> None:
    space = load_space(
        {
            "family": "cnn1d",
            "params": {
                "residual": {"type": "categorical", "choices": [True, False]},
                "kernel": {"type": "categorical", "choices": [3, 5], "when": {"param": "residual", "equals": True}},
            },
        },
        STUDY,
        REPO,
    )
    plain = ScriptedSuggester({"residual": False})
    spec = space.sample(plain)
    assert spec["arch"] == {"residual": False} and plain.asked == ["residual"]
    assert space.sample(ScriptedSuggester({"residual": True, "kernel": 5}))["arch"] == {"residual": True, "kernel": 5}
    assert build_student(spec, BuildContext((1, 40), 10)).stages[0][0].conv1.kernel_size == (3,)  # the default kernel


@pytest.mark.parametrize(
    ("op", "operand", "present_for"),
    [
        ("gt", 2, {3, 4}),
        ("ge", 2, {2, 3, 4}),
        ("lt", 2, {0, 1}),
        ("le", 2, {0, 1, 2}),
        ("equals", 3, {3}),
        ("in", [1, 4], {1, 4}),
    ],
)
def test_when_operators(op: str, operand: Any, present_for: set[int], user_builder: str) -> None:
    space = load_space(
        {
            "family": "user",
            "builder": user_builder,
            "params": {
                "n": {"type": "int", "low": 0, "high": 4},
                "extra": {"type": "float", "low": 0.0, "high": 1.0, "when": {"param": "n", op: operand}},
            },
        },
        STUDY,
        REPO,
    )
    for n in range(5):
        arch = space.sample(ScriptedSuggester({"n": n, "extra": 0.5}))["arch"]
        assert ("extra" in arch) == (n in present_for)


def test_per_param_with_when_and_a_fixed_count(user_builder: str) -> None:
    space = load_space(
        {
            "family": "user",
            "builder": user_builder,
            "params": {
                "layers": {"value": 2},
                "wide": {"type": "categorical", "choices": [True, False]},
                "units": {
                    "type": "int",
                    "low": 1,
                    "high": 9,
                    "per": "layers",
                    "when": {"param": "wide", "equals": True},
                },
            },
        },
        STUDY,
        REPO,
    )
    assert space.sample(ScriptedSuggester({"wide": True, "units_0": 3, "units_1": 4}))["arch"] == {
        "layers": 2,
        "wide": True,
        "units": [3, 4],
    }
    assert space.sample(ScriptedSuggester({"wide": False}))["arch"] == {"layers": 2, "wide": False}


def test_an_optuna_trial_drives_sample() -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = shipped("mlp")
    fixed = optuna.trial.FixedTrial({"depth": 2, "width_0": 32, "width_1": 16, "activation": "gelu", "dropout": 0.1})
    assert space.sample(fixed) == {
        "family": "mlp",
        "arch": {"depth": 2, "width": [32, 16], "activation": "gelu", "dropout": 0.1},
    }

    specs: list[dict] = []

    def objective(trial: Any) -> float:
        specs.append(space.sample(trial))
        return float(sum(specs[-1]["arch"]["width"]))

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=6)
    for trial, spec in zip(study.trials, specs):
        widths = {f"width_{i}": w for i, w in enumerate(spec["arch"]["width"])}
        assert trial.params == {
            "depth": spec["arch"]["depth"],
            "activation": spec["arch"]["activation"],
            "dropout": spec["arch"]["dropout"],
            **widths,
        }


# --- determinism --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape"), SPACE_CASES[1:5])
def test_same_seed_same_spec_and_weights(name: str, shape: tuple[int, ...]) -> None:
    space = shipped(name)
    spec = space.sample(RandomSuggester(11))
    assert space.sample(RandomSuggester(11)) == spec

    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_student(spec, BuildContext(shape, 10)).state_dict()

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


# --- invalid specs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "shape", "reason"),
    [
        (
            {"family": "transformer", "arch": {"d_model": 30, "heads": 4}},
            (1, 40),
            "transformer: d_model 30 is not divisible by heads 4",
        ),
        ({"family": "cnn1d", "arch": {"stages": 4}}, (1, 4), "cnn1d: 3 stride-2 stages need length >= 5, got 4"),
        (
            {"family": "cnn2d", "arch": {"stages": 5}},
            (1, 8, 8),
            "cnn2d: 4 stride-2 stages need height and width >= 9, got 8x8",
        ),
        ({"family": "cnn2d", "arch": {"kernel": 4}}, (1, 8, 8), "cnn2d: kernel 4 is even"),
        ({"family": "cnn1d", "arch": {}}, (1, 8, 8), "cnn1d expects one sample shaped (C, L)"),
        ({"family": "cnn2d", "arch": {}}, (1, 40), "cnn2d expects one sample shaped (C, H, W)"),
        (
            {"family": "cnn1d", "arch": {"stages": 2, "blocks": [1, 2, 1]}},
            (1, 40),
            "cnn1d: blocks has 3 entries but stages is 2",
        ),
        ({"family": "cnn1d", "arch": {"stride": 3}}, (1, 40), "cnn1d: stride must be one of 1, 2, got 3"),
        (
            {"family": "mlp", "arch": {"depth": 2, "width": [32, 16, 8]}},
            (64,),
            "mlp: width has 3 entries but depth is 2",
        ),
        ({"family": "mlp", "arch": {"activation": "relux"}}, (64,), 'mlp: activation must be one of "relu"'),
        ({"family": "mlp", "arch": {"widht": 32}}, (64,), 'mlp: unknown arch key "widht"; did you mean "width"?'),
        ({"family": "mlp", "arch": {"dropout": True}}, (64,), "mlp: dropout must be a number, got true"),
        ({"family": "mpl", "arch": {}}, (64,), 'unknown family "mpl"; did you mean "mlp"?'),
        ({"family": "user", "arch": {}}, (64,), 'user: the spec has no "builder"'),
    ],
)
def test_invalid_specs_are_rejected_with_a_reason(spec: dict, shape: tuple[int, ...], reason: str) -> None:
    found = check_spec(spec, BuildContext(shape, 10))
    assert found is not None and found.startswith(reason)
    with pytest.raises(InvalidSpec) as caught:
        build_student(spec, BuildContext(shape, 10))
    assert str(caught.value) == found


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        ({"family": "cnn1d", "arch": {"stages": 4, "stride": 1}}, (1, 4)),  # stride 1 never shrinks
        ({"family": "cnn2d", "arch": {"stages": 4}}, (1, 8, 8)),  # 8 -> 4 -> 2 -> 1
        ({"family": "mlp", "arch": {"depth": 3, "width": [8, 8, 8]}, "recipe": {"lr": 0.1}}, (64,)),
    ],
)
def test_edge_specs_are_valid(spec: dict, shape: tuple[int, ...]) -> None:
    assert check_spec(spec, BuildContext(shape, 10)) is None
    assert build_student(spec, BuildContext(shape, 10))(torch.randn(2, *shape)).shape == (2, 10)


def test_registry_checks_without_building() -> None:
    assert set(FAMILIES) == {"mlp", "cnn1d", "cnn2d", "transformer", "teacher", "shrink", "user"}
    assert FAMILIES["transformer"].check({"arch": {"d_model": 24, "heads": 5}}, BuildContext((1, 40), 10)) is not None
    assert FAMILIES["mlp"].check({"arch": {}}, BuildContext((64,), 10)) is None


# --- the user family ----------------------------------------------------------------------


def test_user_builder_from_a_space(user_builder: str) -> None:
    space = load_space(
        {"family": "user", "builder": user_builder, "params": {"width": {"type": "int", "low": 8, "high": 16}}},
        STUDY,
        REPO,
    )
    spec = space.sample(RandomSuggester(0))
    assert spec["builder"] == user_builder and 8 <= spec["arch"]["width"] <= 16
    assert check_spec(spec, BuildContext((1, 8, 8), 10)) is None
    assert build_student(spec, BuildContext((1, 8, 8), 10))(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_user_builder_failures_become_invalid_spec(user_builder: str) -> None:
    with pytest.raises(InvalidSpec, match=r"user builder user_models:build_mlp failed: RuntimeError"):
        build_student({"family": "user", "builder": user_builder, "arch": {"width": -1}}, BuildContext((1, 8, 8), 10))
    missing = {"family": "user", "builder": "user_models:nope", "arch": {}}
    assert 'has no attribute "nope"' in (check_spec(missing, BuildContext((64,), 10)) or "")
    with pytest.raises(InvalidSpec, match="nope"):
        build_student(missing, BuildContext((64,), 10))


# --- broken space files -------------------------------------------------------------------

MLP_HEAD = 'family = "mlp"\n[params]\n'


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            MLP_HEAD + 'depth = { type = "int", low = 1, hihg = 4 }',
            "[params].depth.hihg",
            'unknown key for an int parameter; did you mean "high"?',
        ),
        (
            MLP_HEAD + 'width = { type = "int", low = "a", high = 64 }',
            "[params].width.low",
            'must be an integer, got "a"',
        ),
        (MLP_HEAD + 'depth = { type = "int", low = 4, high = 1 }', "[params].depth.high", "must be >= low (4), got 1"),
        (
            MLP_HEAD + 'width = { type = "int", low = 0, high = 64, log = true }',
            "[params].width.low",
            "must be > 0 when log = true, got 0",
        ),
        (
            MLP_HEAD + 'dropout = { type = "float", low = 0.0, high = 0.5, log = true }',
            "[params].dropout.low",
            "must be > 0 when log = true",
        ),
        (
            MLP_HEAD + 'width = { type = "int", low = 8, high = 64, log = true, step = 8 }',
            "[params].width.step",
            "cannot be combined with log = true",
        ),
        (
            MLP_HEAD
            + 'depth = { type = "int", low = 1, high = 3 }\nwidth = { type = "int", low = 8, high = 64, per = "dpth" }',
            "[params].width.per",
            'names "dpth", which is not declared before this parameter; did you mean "depth"?',
        ),
        (
            MLP_HEAD
            + 'width = { type = "int", low = 8, high = 64, per = "depth" }\n'
            + 'depth = { type = "int", low = 1, high = 3 }',
            "[params].width.per",
            "not declared before this parameter",
        ),
        (
            MLP_HEAD + 'activation = { type = "categorical", choices = ["relu", "relux"] }',
            "[params].activation.choices",
            'mlp activation must be one of "relu", "gelu", "silu", "tanh", got "relux"',
        ),
        (
            MLP_HEAD + 'widht = { type = "int", low = 8, high = 64 }',
            "[params].widht",
            'mlp has no arch key of this name; did you mean "width"?',
        ),
        (
            MLP_HEAD + 'depth = { type = "float", low = 1, high = 3 }',
            "[params].depth.type",
            'mlp depth takes integers: use type = "int"',
        ),
        (
            MLP_HEAD
            + 'dropout = { type = "categorical", choices = [0.0, 0.1], when = { param = "depht", equals = 2 } }',
            "[params].dropout.when",
            'param "depht" is not declared before this parameter',
        ),
        (
            MLP_HEAD
            + 'depth = { value = 2 }\nactivation = { type = "categorical", choices = ["relu", "gelu", "relu"] }',
            "[params].activation.choices",
            'lists "relu" twice',
        ),
        (
            'family = "cnn1d"\n[params]\nresidual = { type = "categorical", choices = [true, false] }\n'
            'kernel = { value = 5, when = { param = "residual", equals = "true" } }',
            "[params].kernel.when",
            '"true" is not one of the choices of "residual": [true, false]',
        ),
        ('family = "mpl"\n', "family", 'unknown family "mpl"; did you mean "mlp"?'),
        ('familly = "mlp"\n', "familly", 'unknown key; did you mean "family"?'),
        (
            'family = "user"\nbuilder = "no_such_module_xyz:build"\n',
            "builder",
            'cannot import module "no_such_module_xyz": ModuleNotFoundError',
        ),
        ('family = "user"\nbuilder = "not a reference"\n', "builder", 'must look like "package.module:function"'),
        ('family = "mlp"\nbuilder = "user_models:build_mlp"\n', "builder", 'only used with family = "user"'),
        (MLP_HEAD + '"my-width" = { type = "int", low = 8, high = 64 }', "[params].my-width", "must be identifiers"),
        ('family = "mlp"\n[params\n', "(toml)", ""),
    ],
)
def test_broken_space_files_name_file_and_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    space_file = tmp_path / "broken.toml"
    space_file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_space({"path": str(space_file)}, STUDY, tmp_path)
    error = caught.value
    assert (error.file, error.key) == (str(space_file), key)
    assert message in error.message
    assert str(error).startswith(f"{space_file}: {key}: ")


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        (
            {"family": "mlp", "params": {"depth": {"type": "int", "low": 3, "high": 1}}},
            "[space].params.depth.high",
            "must be >= low (3), got 1",
        ),
        (
            {"family": "mlp", "params": {"depth": {"type": "int", "low": 1, "high": 3, "step": 0}}},
            "[space].params.depth.step",
            "must be > 0",
        ),
        (
            {
                "family": "mlp",
                "params": {"depth": {"type": "int", "low": 1, "high": 3, "when": {"param": "depth", "gt": 1}}},
            },
            "[space].params.depth.when",
            "cannot depend on itself",
        ),
        (
            {
                "family": "mlp",
                "params": {"depth": {"type": "int", "low": 1, "high": 3, "when": {"param": "x", "equalz": 1}}},
            },
            "[space].params.depth.when.equalz",
            'did you mean "equals"?',
        ),
        (
            {"family": "mlp", "params": {"depth": {"type": "integer", "low": 1, "high": 3}}},
            "[space].params.depth.type",
            'did you mean "int"?',
        ),
        ({"family": "mlp", "params": {"depth": {"type": "fixed"}}}, "[space].params.depth.value", "missing"),
        ({"family": "user", "builder": "user_models:nope"}, "[space].builder", 'has no attribute "nope"'),
        ({"path": "search_spaces/nope.toml"}, "[space].path", 'no such file "search_spaces/nope.toml"'),
        ({"path": "search_spaces/mlp.toml", "family": "mlp"}, "[space].family", "cannot be combined with path"),
        ({"pth": "search_spaces/mlp.toml"}, "[space].pth", 'unknown key; did you mean "path"?'),
    ],
)
def test_broken_inline_spaces_name_the_study_file(table: dict, key: str, message: str, user_builder: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_space(table, STUDY, REPO)
    assert (caught.value.file, caught.value.key) == (STUDY, key)
    assert message in caught.value.message
