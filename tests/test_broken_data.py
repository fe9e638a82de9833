"""A corpus of broken data, each run through the real CLI: refused at load, before anything trains
or is written, with exactly one line ``naskd: ...`` on stderr naming the file or key, and status 2."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import small_study, toml_text

import naskd.data
from naskd.cli import main
from naskd.config import DataConfig
from naskd.data import load_data
from naskd.errors import NaskdError

NPZ = "broken.npz"
Case = Callable[[Path, pytest.MonkeyPatch], dict[str, Any]]
CASES: list[Any] = []


def case(id: str, *phrases: str) -> Callable[[Case], Case]:
    """Register a broken input: a function writing it under tmp_path and returning the [data] table."""

    def register(fn: Case) -> Case:
        CASES.append(pytest.param(fn, phrases, id=id))
        return fn

    return register


def _xy(n: int = 20, width: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(n, width)).astype(np.float32), "y": np.arange(n) % 2}


def _npz(tmp_path: Path, **arrays: Any) -> dict[str, Any]:
    np.savez(tmp_path / NPZ, **arrays)
    return {"path": NPZ}


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))


# --- .npz files: values ---------------------------------------------------------------------


@case("npz-nan-x", NPZ, "array 'x'", "NaN or inf", "sample 4")
def _(tmp_path, mp):
    a = _xy()
    a["x"][4, 2] = np.nan
    return _npz(tmp_path, **a)


@case("npz-inf-x", NPZ, "array 'x'", "NaN or inf")
def _(tmp_path, mp):
    a = _xy()
    a["x"][7, 0] = -np.inf
    return _npz(tmp_path, **a)


@case("npz-nan-x-val", NPZ, "array 'x_val'", "NaN or inf")
def _(tmp_path, mp):
    xv = np.ones((4, 3), dtype=np.float32)
    xv[1, 1] = np.nan
    return _npz(tmp_path, **_xy(), x_val=xv, y_val=np.array([0, 1, 0, 1]))


@case("npz-float64-beyond-float32", NPZ, "array 'x'", "float32")
def _(tmp_path, mp):
    a = _xy()
    x = a["x"].astype(np.float64)
    x[2, 2] = 1e300
    return _npz(tmp_path, x=x, y=a["y"])


@case("npz-string-x", NPZ, "array 'x'", "dtype <U", "expected numbers")
def _(tmp_path, mp):
    return _npz(tmp_path, x=np.array([["a", "b"]] * 10), y=np.arange(10) % 2)


@case("npz-bytes-x", NPZ, "array 'x'", "bytes", "expected numbers")
def _(tmp_path, mp):
    return _npz(tmp_path, x=np.array([[b"a", b"b"]] * 10), y=np.arange(10) % 2)


@case("npz-complex-x", NPZ, "array 'x'", "complex", "expected numbers")
def _(tmp_path, mp):
    return _npz(tmp_path, x=np.ones((10, 3), dtype=np.complex64), y=np.arange(10) % 2)


@case("npz-object-x", NPZ, "array 'x'", "Python objects")
def _(tmp_path, mp):
    return _npz(tmp_path, x=np.array([{"a": 1}] * 10, dtype=object), y=np.arange(10) % 2)


@case("npz-object-y", NPZ, "array 'y'", "Python objects")
def _(tmp_path, mp):
    return _npz(tmp_path, x=np.ones((10, 3)), y=np.array([0, 1, "2", None] * 2 + [0, 1], dtype=object))


# --- .npz files: shapes and labels ---------------------------------------------------------


@case("npz-x-val-width", NPZ, "array 'x_val'", "(5,)", "(3,)", "one sample shape")
def _(tmp_path, mp):
    return _npz(tmp_path, **_xy(), x_val=np.zeros((4, 5), dtype=np.float32), y_val=np.array([0, 1, 0, 1]))


@case("npz-y-2d-one-hot", NPZ, "array 'y'", "(20, 2)", "argmax")
def _(tmp_path, mp):
    a = _xy()
    return _npz(tmp_path, x=a["x"], y=np.eye(2, dtype=np.int64)[a["y"]])


@case("npz-x-1d", NPZ, "array 'x'", "(N, ...)", "(20,)")
def _(tmp_path, mp):
    return _npz(tmp_path, x=np.arange(20, dtype=np.float32), y=np.arange(20) % 2)


@case("npz-no-features", NPZ, "array 'x'", "(20, 0)", "no values")
def _(tmp_path, mp):
    return _npz(tmp_path, x=np.zeros((20, 0), dtype=np.float32), y=np.arange(20) % 2)


@case("npz-negative-labels", NPZ, "array 'y'", "label -1", "non-negative")
def _(tmp_path, mp):
    a = _xy()
    a["y"][3] = -1
    return _npz(tmp_path, **a)


@case("npz-float-labels", NPZ, "array 'y'", "integer class labels", "float")
def _(tmp_path, mp):
    a = _xy()
    return _npz(tmp_path, x=a["x"], y=a["y"].astype(np.float32))


@case("npz-label-1e6", NPZ, "array 'y'", "1000000", "limit of 10000 classes", "MAX_CLASSES")
def _(tmp_path, mp):
    a = _xy()
    a["y"][5] = 1_000_000
    return _npz(tmp_path, **a)


@case("npz-label-1e6-in-y-val", NPZ, "array 'y_val'", "limit of 10000 classes")
def _(tmp_path, mp):
    return _npz(tmp_path, **_xy(), x_val=np.zeros((2, 3), dtype=np.float32), y_val=np.array([0, 10**6]))


@case("npz-one-class", NPZ, "array 'y'", "only class 3", "at least two classes")
def _(tmp_path, mp):
    return _npz(tmp_path, x=np.ones((20, 3), dtype=np.float32), y=np.full(20, 3))


@case("npz-one-class-given-split", NPZ, "array 'y'", "only class 0", "at least two classes")
def _(tmp_path, mp):
    return _npz(
        tmp_path,
        x=np.ones((20, 3), dtype=np.float32),
        y=np.zeros(20, dtype=np.int64),
        x_val=np.zeros((2, 3), dtype=np.float32),
        y_val=np.array([0, 1]),
    )


@case("npz-empty-x", NPZ, "empty", "0 samples")
def _(tmp_path, mp):
    return _npz(tmp_path, x=np.zeros((0, 3), dtype=np.float32), y=np.zeros(0, dtype=np.int64))


@case("npz-empty-x-val", NPZ, "array 'x_val'", "empty")
def _(tmp_path, mp):
    return _npz(tmp_path, **_xy(), x_val=np.zeros((0, 3), dtype=np.float32), y_val=np.zeros(0, dtype=np.int64))


@case("npz-y-length", NPZ, "(20, 3)", "(19,)")
def _(tmp_path, mp):
    a = _xy()
    return _npz(tmp_path, x=a["x"], y=a["y"][:19])


@case("npz-only-x-val", NPZ, "x_val and y_val")
def _(tmp_path, mp):
    return _npz(tmp_path, **_xy(), x_val=np.zeros((2, 3), dtype=np.float32))


@case("npz-missing-x", NPZ, "'x' is missing")
def _(tmp_path, mp):
    return _npz(tmp_path, features=np.zeros((4, 3)), y=np.arange(4) % 2)


# --- .npz files: not readable ---------------------------------------------------------------


@case("npz-random-bytes", NPZ, "not readable as an .npz", "not a zip archive")
def _(tmp_path, mp):
    (tmp_path / NPZ).write_bytes(np.random.default_rng(1).bytes(4096))
    return {"path": NPZ}


@case("npz-empty-file", NPZ, "not readable as an .npz", "empty")
def _(tmp_path, mp):
    (tmp_path / NPZ).write_bytes(b"")
    return {"path": NPZ}


@case("npz-truncated-zip", NPZ, "not readable as an .npz", "BadZipFile")
def _(tmp_path, mp):
    _npz(tmp_path, **_xy(200))
    whole = (tmp_path / NPZ).read_bytes()
    (tmp_path / NPZ).write_bytes(whole[: len(whole) // 2])
    return {"path": NPZ}


@case("npz-damaged-member", NPZ, "array 'x'", "cannot be read", "damaged")
def _(tmp_path, mp):
    _npz(tmp_path, x=np.full((20, 3), 7.25), y=np.arange(20) % 2)
    raw = (tmp_path / NPZ).read_bytes()
    value = struct.pack("<d", 7.25)
    at = raw.index(value) + 10 * len(value)
    (tmp_path / NPZ).write_bytes(raw[:at] + struct.pack("<d", 1.5) + raw[at + len(value) :])
    return {"path": NPZ}


@case("npz-is-an-npy", NPZ, "not readable as an .npz", "single .npy array")
def _(tmp_path, mp):
    with open(tmp_path / NPZ, "wb") as f:
        np.save(f, np.zeros((4, 3)))
    return {"path": NPZ}


@case("npz-bigger-than-memory", NPZ, "uncompressed", "memory")
def _(tmp_path, mp):
    mp.setattr(naskd.data, "_physical_memory", lambda: 100)
    return _npz(tmp_path, **_xy())


# --- user loaders ----------------------------------------------------------------------------


@case("loader-module-missing", "[data].loader", "cannot import", "no_such_module_naskd")
def _(tmp_path, mp):
    return {"loader": "no_such_module_naskd:load"}


#: Loaders of tests/helpers_broken_loaders.py that return or raise something wrong: (id and
#: phrases as for ``case``, the function's name).
LOADER_CASES = [
    (("loader-function-missing", "[data].loader", "cannot import", "has no attribute 'nothing'"), "nothing"),
    (("loader-not-callable", "[data].loader", "helpers_broken_loaders:NOT_CALLABLE", "not callable"), "NOT_CALLABLE"),
    (
        (
            "loader-raises-at-call",
            "[data].loader: helpers_broken_loaders:raises_at_call raised RuntimeError: "
            "cannot reach the data share second line",
            "calling it",
            "-vv",
        ),
        "raises_at_call",
    ),
    (("loader-returns-none", "[data].loader", "must return (train, val)", "NoneType"), "returns_none"),
    (("loader-returns-three", "[data].loader", "must return (train, val)"), "returns_three"),
    (("loader-string-labels", "[data].loader", "train item 0", "'dog'", "integer class label"), "string_labels"),
    (("loader-float-labels", "[data].loader", "train item 0", "1.5", "integer class label"), "float_labels"),
    (("loader-string-x", "[data].loader", "train x", "expected numbers"), "string_x"),
    (("loader-nan-x", "[data].loader", "train x", "NaN or inf", "sample 3"), "nan_x"),
    (("loader-inf-in-val-dataset", "[data].loader", "val x", "NaN or inf"), "tensor_dataset_with_nan_in_val"),
    (("loader-width-mismatch", "[data].loader", "val x", "(5,)", "one sample shape"), "width_mismatch"),
    (("loader-empty-train", "[data].loader", "train set is empty"), "empty_train"),
    (
        (
            "loader-getitem-raises",
            "[data].loader: helpers_broken_loaders:getitem_raises raised KeyError",
            "sample 0 not found",
            "reading its train set",
        ),
        "getitem_raises",
    ),
    (("loader-items-not-pairs", "[data].loader", "train item 0 is dict", "(x, y) pair"), "not_pairs"),
    (("loader-ragged-samples", "[data].loader", "train item 5", "(3,)", "one sample shape"), "ragged"),
    (("loader-one-class", "[data].loader", "train y", "only class 0", "at least two classes"), "one_class"),
    (("loader-label-1e6", "[data].loader", "train y", "1000000", "MAX_CLASSES"), "huge_label"),
]
for _phrases, _name in LOADER_CASES:
    case(*_phrases)(lambda tmp_path, mp, ref=f"helpers_broken_loaders:{_name}": {"loader": ref})


@case(
    "loader-module-raises-at-import",
    "[data].loader: boom_at_import:load raised ValueError",
    "bad setting line two",
    "importing boom_at_import",
)
def _(tmp_path, mp):
    _module(tmp_path, mp, "boom_at_import", 'raise ValueError("bad setting\\nline two")\n\ndef load():\n    pass\n')
    return {"loader": "boom_at_import:load"}


@case("loader-module-syntax-error", "[data].loader: syntax_broken:load raised SyntaxError", "importing")
def _(tmp_path, mp):
    _module(tmp_path, mp, "syntax_broken", "def load(:\n    return 1\n")
    return {"loader": "syntax_broken:load"}


@case(
    "loader-module-missing-dependency",
    "[data].loader: needs_missing_dep:load raised ModuleNotFoundError",
    "not_installed_dep_naskd",
)
def _(tmp_path, mp):
    _module(tmp_path, mp, "needs_missing_dep", "import not_installed_dep_naskd\n\ndef load():\n    pass\n")
    return {"loader": "needs_missing_dep:load"}


# --- synthetic ---------------------------------------------------------------------------------


@case("synthetic-would-exhaust-memory", "[data].samples x [data].shape", "as float32", "MAX_SYNTHETIC_BYTES")
def _(tmp_path, mp):
    return {"dataset": "synthetic", "samples": 10**9, "shape": [1000, 1000], "classes": 4}


@case("synthetic-just-over-the-cap", "[data].samples x [data].shape", "1,074,790,400 bytes", "1,073,741,824 bytes")
def _(tmp_path, mp):
    # 4 bytes x 2^18 x (2^10 + 1) is just over 2^30: refused without allocating the 1 GiB.
    return {"dataset": "synthetic", "samples": 2**18, "shape": [2**10 + 1], "classes": 4}


@case("synthetic-too-many-classes", "[data].classes", "10001")
def _(tmp_path, mp):
    return {"dataset": "synthetic", "samples": 20002, "shape": [2], "classes": 10001}


@case("synthetic-one-class-in-training-split", "synthetic", "only class", "training samples", "at least two classes")
def _(tmp_path, mp):
    return {"dataset": "synthetic", "samples": 8, "shape": [2], "classes": 4, "val_fraction": 0.85}


# --- the test ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("build", "phrases"), CASES)
def test_broken_data_is_refused_in_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys, build, phrases):
    doc = small_study()
    doc["data"] = build(tmp_path, monkeypatch)
    study = tmp_path / "study.toml"
    study.write_text(toml_text(doc))
    out = tmp_path / "out"
    capsys.readouterr()

    rc = main(["search", str(study), "--out", str(out), "-q"])

    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("naskd: ") and err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in {err!r}"
    assert not (out / "study.db").exists()
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 20


def test_a_loader_error_logs_its_traceback_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="naskd.data")
    with pytest.raises(NaskdError, match="raised RuntimeError"):
        load_data(DataConfig(dataset="", loader="helpers_broken_loaders:raises_at_call"))
    [record] = [r for r in caplog.records if r.name == "naskd.data"]
    assert record.levelno == logging.DEBUG and record.exc_info and record.exc_info[0] is RuntimeError


def test_extra_arrays_in_an_npz_are_ignored(tmp_path):
    path = tmp_path / "extra.npz"
    a = _xy()
    np.savez(path, **a, notes=np.array([{"who": "me"}], dtype=object))
    plain = tmp_path / "plain.npz"
    np.savez(plain, **a)
    assert (
        load_data(DataConfig(dataset="", path=path)).fingerprint
        == load_data(DataConfig(dataset="", path=plain)).fingerprint
    )
