"""Damaged caches and what users get told: every cache entry (built-in teacher weights, teacher
logits, teacher internal values) records its key and a checksum; an entry that is unreadable,
altered, from an older version or built for another key is reported in one warning line,
rebuilt and never used. Also: checkpoint and TorchScript files torch cannot parse are "not
readable" (not "would run code"), user teacher code that raises is one line naming
``[teacher].model``, and a ``[teacher].cache_dir`` that is a file is one line too.

Real files throughout, no mocks."""

from __future__ import annotations

import argparse
import io
import logging
import os
import pickle
import random
from pathlib import Path
from typing import Any

import helpers_teacher
import helpers_torch
import pytest
import torch

from naskd.cache import content_sha256, load_entry
from naskd.cli import main
from naskd.config import load_study
from naskd.trial import build_context

one_torch_thread = helpers_torch.one_torch_thread  # the autouse fixture, for this module too

KINDS = ("teacher", "logits", "values")


# --- helpers ----------------------------------------------------------------------------------


def _study(write_study, tmp_path: Path, **sections: Any) -> Path:
    """A small synthetic study with its own cache folder and a feature term (so teacher values
    are cached too)."""
    return write_study(
        teacher={"epochs": 3, "cache_dir": str(tmp_path / "cache")},
        distill={"knowledge": [{"kind": "fitnet"}]},
        **sections,
    )


def _run(path: Path):
    """build_context as a run does it, plus the teacher values a feature term reads."""
    context = build_context(load_study(path))
    values = context.teacher_values(context.config.distill.knowledge)
    assert values is not None
    return context, values


def _files(cache: Path, kind: str) -> list[Path]:
    if kind == "teacher":
        return sorted((cache / "teachers").glob("*.pt"))
    outputs = sorted((cache / "outputs").glob("*.pt"))
    if kind == "logits":
        return [p for p in outputs if not p.name.endswith(".values.pt")]
    return [p for p in outputs if p.name.endswith(".values.pt")]


def _zeroed(payload: Any) -> Any:
    if isinstance(payload, torch.Tensor):
        return torch.zeros_like(payload)
    return {k: torch.zeros_like(v) for k, v in payload.items()}


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero_bytes":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(random.Random(0).randbytes(len(data)))
    elif how == "altered_payload":  # a valid file whose tensors changed but whose checksum did not
        entry = torch.load(path, weights_only=True)
        torch.save({**entry, "payload": _zeroed(entry["payload"])}, path)
    elif how == "old_format":  # what earlier versions wrote: the bare tensor(s), no checksum
        torch.save(torch.load(path, weights_only=True)["payload"], path)
    elif how == "old_format_zeroed":  # ... and altered, the case that used to be used silently
        torch.save(_zeroed(torch.load(path, weights_only=True)["payload"]), path)
    elif how == "another_key":  # a consistent entry, but built for something else
        entry = torch.load(path, weights_only=True)
        torch.save({**entry, "key": "some other teacher|some other data"}, path)
    else:
        raise AssertionError(how)


EXPECTED = {
    "truncated": "is not readable (",
    "zero_bytes": "is not readable (the file is empty)",
    "garbage": "is not readable (",
    "altered_payload": "checksum mismatch: altered or damaged",
    "old_format": "has no checksum (written by an earlier naskd version; rebuilt once",
    "old_format_zeroed": "has no checksum (written by an earlier naskd version; rebuilt once",
    "another_key": "was built for another key",
}


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _same_outputs(a, a_values, b, b_values) -> None:
    assert b.teacher.fingerprint == a.teacher.fingerprint
    assert b.teacher_info["accuracy"] == a.teacher_info["accuracy"]
    assert torch.equal(b.val_logits, a.val_logits)
    assert all(torch.equal(x, y) for x, y in zip(b.train_logits, a.train_logits))
    assert sorted(b_values) == sorted(a_values)
    assert all(torch.equal(b_values[k], a_values[k]) for k in a_values)


# --- damaged caches ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", list(EXPECTED))
@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_cache_entry_is_reported_rebuilt_and_never_used(write_study, tmp_path, caplog, kind, how):
    path = _study(write_study, tmp_path)
    cache = tmp_path / "cache"
    fresh, fresh_values = _run(path)
    assert fresh.cache.forward_batches > 0
    files = _files(cache, kind)
    assert files, f"no {kind} cache files"
    for f in files:
        _damage(f, how)

    with caplog.at_level(logging.WARNING):
        again, again_values = _run(path)
    warnings = _warnings(caplog)
    for f in files:
        about = [w for w in warnings if str(f) in w]
        assert len(about) == 1, warnings  # one line per damaged file ...
        assert EXPECTED[how] in about[0] and "\n" not in about[0]  # ... saying what is wrong
        assert ("retraining the teacher" if kind == "teacher" else "recomputing it") in about[0]
    assert len(warnings) == len(files), warnings
    # Rebuilt, not used: exactly what a first run computes (a retrained teacher is the same teacher).
    _same_outputs(fresh, fresh_values, again, again_values)
    if kind != "teacher":
        assert again.cache.forward_batches > 0

    # ... and written back as a valid entry: the next run reads it without recomputing anything.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        third, third_values = _run(path)
    assert _warnings(caplog) == []
    assert "built-in teacher loaded from cache" in caplog.text
    assert third.cache.forward_batches == 0
    _same_outputs(fresh, fresh_values, third, third_values)
    for f in _files(cache, kind):
        entry = torch.load(f, weights_only=True)
        assert set(entry) == {"key", "sha256", "payload"}
        assert entry["sha256"] == content_sha256(entry["payload"])


def test_zeroed_logits_do_not_reach_the_teacher_figures(write_study, tmp_path, caplog):
    """The reported case: zeroed logits (checksum kept) must not be what students learn from."""
    path = _study(write_study, tmp_path)
    fresh, _ = _run(path)
    assert fresh.teacher_info["accuracy"] > 0.5
    for f in _files(tmp_path / "cache", "logits"):
        _damage(f, "altered_payload")
    with caplog.at_level(logging.WARNING):
        again = build_context(load_study(path))
    assert again.val_logits.abs().sum() > 0 and all(z.abs().sum() > 0 for z in again.train_logits)
    assert again.teacher_info["accuracy"] == fresh.teacher_info["accuracy"]
    assert "checksum mismatch" in caplog.text


def test_a_search_completes_over_damaged_caches(write_study, tmp_path, caplog):
    path = _study(write_study, tmp_path)
    cache = tmp_path / "cache"
    fresh, fresh_values = _run(path)
    damage = {"teacher": "garbage", "logits": "altered_payload", "values": "old_format_zeroed"}
    for kind, how in damage.items():
        for f in _files(cache, kind):
            _damage(f, how)
    with caplog.at_level(logging.WARNING):
        assert main(["search", str(path), "--out", str(tmp_path / "out"), "--trials", "2", "-q"]) == 0
    warnings = _warnings(caplog)
    for kind, how in damage.items():
        for f in _files(cache, kind):
            assert any(str(f) in w and EXPECTED[how] in w for w in warnings), warnings
    # Every entry was rewritten valid: nothing more to report, the same outputs as a first run.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again, again_values = _run(path)
    assert _warnings(caplog) == []
    assert again.cache.forward_batches == 0
    _same_outputs(fresh, fresh_values, again, again_values)


def test_a_valid_entry_is_read_without_any_warning(write_study, tmp_path, caplog):
    path = _study(write_study, tmp_path)
    _run(path)
    for kind in KINDS:
        for f in _files(tmp_path / "cache", kind):
            with caplog.at_level(logging.WARNING):
                assert load_entry(f, torch.load(f, weights_only=True)["key"], "cache") is not None
    assert _warnings(caplog) == []


# --- [teacher].cache_dir that is a file -------------------------------------------------------


@pytest.mark.parametrize("below", ["", "sub"])
def test_cache_dir_that_is_a_file_is_one_line(write_study, tmp_path, capsys, below):
    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    cache_dir = blocker / below if below else blocker
    path = write_study(teacher={"epochs": 1, "cache_dir": str(cache_dir)})
    assert main(["search", str(path), "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("naskd: [teacher].cache_dir ") and str(blocker) in lines[0]
    assert "a file, not a folder" in lines[0]
    assert "Traceback" not in err


# --- user checkpoints and TorchScript files ---------------------------------------------------


def _user_study(write_study, tmp_path: Path, teacher: dict[str, Any]) -> Path:
    from conftest import small_study, toml_text

    doc = small_study()
    doc["teacher"] = teacher
    path = tmp_path / "study.toml"
    path.write_text(toml_text(doc))
    return path


def _one_line_failure(study: Path, tmp_path: Path, capsys) -> str:
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("naskd: ")
    assert "Traceback" not in err and "\x1b" not in err
    assert not (out / "study.db").exists()
    return lines[0]


def _state_dict_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save(helpers_teacher.build().state_dict(), buf)
    return buf.getvalue()


UNREADABLE = {
    "random_bytes": random.Random(1).randbytes(4096),
    "zero_bytes": b"",
    "truncated": _state_dict_bytes()[:700],
    "text_starting_like_a_pickle_global": b"corrupt\nfile\nof some kind\n",
}


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_a_checkpoint_torch_cannot_parse_is_not_readable(write_study, tmp_path, capsys, name):
    ckpt = tmp_path / f"{name}.pt"
    ckpt.write_bytes(UNREADABLE[name])
    study = _user_study(write_study, tmp_path, {"model": "helpers_teacher:build", "checkpoint": ckpt.name})
    line = _one_line_failure(study, tmp_path, capsys)
    assert f"{ckpt.resolve()}: not a readable torch checkpoint (" in line
    assert "would run code" not in line and "refused" not in line
    if name == "zero_bytes":
        assert "the file is empty" in line


@pytest.mark.parametrize("obj", ["namespace", "os_system"])
def test_a_checkpoint_holding_objects_would_run_code(write_study, tmp_path, capsys, obj):
    ckpt = tmp_path / "objects.pt"
    if obj == "namespace":  # a checkpoint with a non-tensor object beside the weights
        torch.save({"state_dict": helpers_teacher.build().state_dict(), "args": argparse.Namespace(lr=0.1)}, ckpt)
    else:  # a plain pickle that would call os.system when loaded
        ckpt.write_bytes(pickle.dumps(os.system, protocol=2))
    study = _user_study(write_study, tmp_path, {"model": "helpers_teacher:build", "checkpoint": ckpt.name})
    line = _one_line_failure(study, tmp_path, capsys)
    assert str(ckpt.resolve()) in line
    assert "refused" in line and "would run code" in line and "not a readable" not in line


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["random_bytes", "zero_bytes", "truncated"])
def test_a_torchscript_file_torch_cannot_parse_is_not_readable(write_study, tmp_path, capsys, name):
    ts = tmp_path / f"{name}.ts"
    if name == "truncated":
        torch.jit.script(helpers_teacher.build()).save(str(ts))
        ts.write_bytes(ts.read_bytes()[:500])
    else:
        ts.write_bytes(UNREADABLE[name])
    study = _user_study(write_study, tmp_path, {"torchscript": ts.name})
    line = _one_line_failure(study, tmp_path, capsys)
    assert f"{ts.resolve()}: not a readable TorchScript file (" in line


# --- user teacher code that raises ------------------------------------------------------------


@pytest.mark.parametrize(
    "ref, expected",
    [
        (
            "helpers_broken_import:build",
            "[teacher].model: helpers_broken_import:build raised RuntimeError: the teacher module is broken at import",
        ),
        (
            "helpers_broken_teachers:build_raises",
            "[teacher].model: helpers_broken_teachers:build_raises raised ValueError: no teacher of width 7",
        ),
        (
            "helpers_broken_teachers:build_key_error",
            "[teacher].model: helpers_broken_teachers:build_key_error raised KeyError: 'missing'",
        ),
    ],
)
def test_teacher_code_that_raises_is_one_line(write_study, tmp_path, capsys, caplog, ref, expected):
    ckpt = tmp_path / "t.pt"
    torch.save(helpers_teacher.build().state_dict(), ckpt)
    study = _user_study(write_study, tmp_path, {"model": ref, "checkpoint": ckpt.name})
    with caplog.at_level(logging.DEBUG, logger="naskd.teacher"):
        line = _one_line_failure(study, tmp_path, capsys)
    assert line == f"naskd: {expected}"
    # The traceback is kept for -vv.
    assert any(r.exc_info and r.name == "naskd.teacher" for r in caplog.records)
