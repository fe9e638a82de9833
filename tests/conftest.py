"""Shared fixtures: one teacher cache per test session, and small study files written on demand."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

# Test helpers (user models, loaders) are imported by 'module:callable' references.
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session", autouse=True)
def teacher_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built-in teachers train once per session into a private cache, never the user's."""
    path = tmp_path_factory.mktemp("naskd-cache")
    old = os.environ.get("NASKD_CACHE_DIR")
    os.environ["NASKD_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("NASKD_CACHE_DIR", None)
    else:
        os.environ["NASKD_CACHE_DIR"] = old


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def toml_text(doc: dict[str, Any]) -> str:
    """A small TOML writer for test study files (top-level keys, then one level of tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for section, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"\n[{section}]")
            for k, v in table.items():
                if isinstance(v, dict) and section == "space" and k == "params":
                    continue
                lines.append(f"{k} = {_toml_value(v)}")
            if section == "space" and "params" in table:
                lines.append("\n[space.params]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in table["params"].items())
    return "\n".join(lines) + "\n"


TINY_MLP_SPACE = {
    "family": "mlp",
    "params": {
        "depth": {"type": "int", "low": 1, "high": 2},
        "width": {"type": "int", "low": 4, "high": 32, "log": True, "per": "depth"},
    },
}


def small_study(**sections: Any) -> dict[str, Any]:
    """A fast study on synthetic data: a few seconds per run on 2 cores."""
    doc: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "data": {"dataset": "synthetic", "samples": 400, "shape": [16], "classes": 4},
        "teacher": {"epochs": 5},
        "space": dict(TINY_MLP_SPACE),
        "distill": {"steps": 30, "batch_size": 32},
        "cost": {"warmup": 1, "repeats": 5},
        "search": {"trials": 4, "sampler": "random"},
    }
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(doc.get(k), dict) and k != "space":  # a space is replaced whole
            doc[k] = {**doc[k], **v}
        else:
            doc[k] = v
    return doc


@pytest.fixture
def write_study(tmp_path: Path):
    """``write_study(name="x", data={...}) -> Path`` of a study file in tmp_path."""

    def write(filename: str = "study.toml", **sections: Any) -> Path:
        path = tmp_path / filename
        path.write_text(toml_text(small_study(**sections)))
        return path

    return write
