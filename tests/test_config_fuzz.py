"""Property-based fuzz of study-file validation (Hypothesis): whatever a study file holds,
``parse_study`` returns a validated study or raises ``ConfigError`` naming the key; never
another exception (a traceback for the user)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from naskd.config import (
    CostConfig,
    DataConfig,
    DistillConfig,
    FidelityConfig,
    RayConfig,
    SearchConfig,
    TeacherConfig,
    parse_study,
)
from naskd.errors import NaskdError

TESTS = Path(__file__).resolve().parent

#: Keys each section knows, so the fuzz reaches past "unknown key" into each check.
SECTION_KEYS = {
    "data": [f.name for f in dataclasses.fields(DataConfig)],
    "teacher": [f.name for f in dataclasses.fields(TeacherConfig)],
    "distill": [f.name for f in dataclasses.fields(DistillConfig)],
    "cost": [f.name for f in dataclasses.fields(CostConfig)],
    "search": [f.name for f in dataclasses.fields(SearchConfig)],
    "fidelity": [f.name for f in dataclasses.fields(FidelityConfig)],
    "ray": [f.name for f in dataclasses.fields(RayConfig)],
    "report": ["scratch_baseline"],
}
#: Values that pass a first check, mixed with arbitrary ones, so deeper checks run too.
PLAUSIBLE = st.sampled_from(
    [
        "digits",
        "synthetic",
        "mnist1d",
        "kd",
        "offline",
        "mutual",
        "self",
        "born_again",
        "peers",
        "teacher",
        "auto",
        "cpu",
        "cuda",
        "bf16",
        "fp16",
        "tpe",
        "random",
        "pareto",
        "off",
        "accuracy",
        "params",
        "mlp",
        "cnn1d",
        "teacher",
        "mean_probs",
        0,
        1,
        2,
        3,
        27,
        64,
        2**32,
        -1,
        0.5,
        1e-3,
        1e9,
        True,
        False,
        [16],
        [1, 8, 8],
        [],
        ["accuracy", "params"],
        [{"kind": "kd"}],
        [{"kind": "fitnet", "weight": 1.0}],
        [{"teacher": "x", "student": "y"}],
    ]
)
SCALARS = (
    st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True) | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS | PLAUSIBLE,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
# Space files and builders are imported by name: only names whose import is harmless.
SPACE = st.fixed_dictionaries(
    {},
    optional={
        "family": st.sampled_from(["mlp", "cnn1d", "cnn2d", "transformer", "teacher", "user", "resnet", 3]),
        "builder": st.sampled_from(["user_models:build_mlp", "nope_module:fn", "not a ref", 7]),
        "params": st.dictionaries(
            st.sampled_from(["depth", "width", "activation", "dropout", "stages", "x"]),
            st.dictionaries(
                st.sampled_from(["type", "low", "high", "choices", "value", "per", "log", "step", "when"]),
                VALUES,
                max_size=4,
            ),
            max_size=3,
        ),
        "recipe": st.dictionaries(
            st.sampled_from(["scheme", "knowledge", "temperature", "lr", "generations", "bogus"]),
            st.dictionaries(st.sampled_from(["type", "low", "high", "choices", "value"]), VALUES, max_size=3),
            max_size=2,
        ),
    },
)


def _section(name: str) -> st.SearchStrategy:
    keys = st.sampled_from(SECTION_KEYS[name]) | st.text(max_size=8)
    return st.dictionaries(keys, VALUES, max_size=5)


STUDIES = st.fixed_dictionaries(
    {},
    optional={
        **{name: _section(name) for name in SECTION_KEYS},
        "space": SPACE,
        "name": VALUES,
        "seed": VALUES,
        "description": VALUES,
        "teachers": st.lists(_section("teacher"), max_size=3) | VALUES,
        "bogus": VALUES,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STUDIES)
def test_no_study_file_gives_a_traceback(raw):
    try:
        parse_study(raw, "fuzz.toml", TESTS)
    except NaskdError as exc:
        assert str(exc).startswith("fuzz.toml: ") or str(exc).startswith("--")
