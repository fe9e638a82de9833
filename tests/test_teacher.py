"""The teacher: user models loaded with weights_only, TorchScript files, and built-in teachers
trained once and cached under a content hash."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import helpers_teacher
import pytest
import torch
from conftest import small_study, toml_text
from helpers_torch import one_torch_thread  # noqa: F401  (autouse fixture)
from torch import nn

from naskd.cache import content_sha256, state_fingerprint
from naskd.cli import main
from naskd.config import CostConfig, load_study
from naskd.data import load_data
from naskd.errors import NaskdError
from naskd.teacher import Teacher, describe_teacher, load_teacher


def _study(tmp_path: Path, teacher: dict[str, Any], **sections: Any) -> Path:
    """A small synthetic study (16 features, 4 classes) whose [teacher] table is exactly ``teacher``."""
    doc = small_study(**sections)
    doc["teacher"] = teacher
    path = tmp_path / "study.toml"
    path.write_text(toml_text(doc))
    return path


def _load(path: Path) -> tuple[Teacher, Any]:
    config = load_study(path)
    data = load_data(config.data)
    return load_teacher(config.teacher, data, dataset_key=config.data.dataset or "synthetic"), data


def _trained_user_model() -> nn.Module:
    torch.manual_seed(11)
    model = helpers_teacher.build()
    with torch.no_grad():  # make the weights clearly not a fresh initialisation
        for p in model.parameters():
            p.add_(0.1)
    return model.eval()


# --- user teachers -----------------------------------------------------------------------


def test_user_teacher_from_state_dict_reproduces_the_original(tmp_path):
    original = _trained_user_model()
    torch.save(original.state_dict(), tmp_path / "teacher.pt")
    teacher, data = _load(_study(tmp_path, {"model": "helpers_teacher:build", "checkpoint": "teacher.pt"}))
    assert not teacher.model.training
    assert "helpers_teacher:build" in teacher.source
    assert teacher.fingerprint == state_fingerprint(original)
    with torch.no_grad():
        assert torch.equal(teacher.model(data.x_val), original(data.x_val))
    # A fresh build() differs, so equality above is the checkpoint's doing.
    torch.manual_seed(0)
    with torch.no_grad():
        assert not torch.equal(helpers_teacher.build()(data.x_val), original(data.x_val))


def test_user_checkpoint_wrapped_in_a_state_dict_key(tmp_path):
    original = _trained_user_model()
    torch.save({"state_dict": original.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    teacher, data = _load(_study(tmp_path, {"model": "helpers_teacher:build", "checkpoint": "wrapped.pt"}))
    with torch.no_grad():
        assert torch.equal(teacher.model(data.x_val), original(data.x_val))


def test_pickled_module_checkpoint_is_refused(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(_trained_user_model(), path)  # the whole module: unpickling it would run code
    with pytest.raises(NaskdError) as info:
        _load(_study(tmp_path, {"model": "helpers_teacher:build", "checkpoint": "whole.pt"}))
    message = str(info.value)
    assert str(path.resolve()) in message
    assert "refused" in message
    assert "state_dict" in message
    assert "\n" not in message


def test_cli_turns_a_refused_checkpoint_into_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "whole.pt"
    torch.save(_trained_user_model(), path)
    study = _study(tmp_path, {"model": "helpers_teacher:build", "checkpoint": "whole.pt"})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("naskd: ") and str(path.resolve()) in lines[0] and "refused" in lines[0]
    assert "Traceback" not in err
    assert not (out / "study.db").exists()


def test_refusal_message_has_no_terminal_escape_codes(tmp_path):
    torch.save(_trained_user_model(), tmp_path / "whole.pt")
    with pytest.raises(NaskdError) as info:
        _load(_study(tmp_path, {"model": "helpers_teacher:build", "checkpoint": "whole.pt"}))
    assert "\x1b" not in str(info.value)


def test_state_dict_for_another_architecture(tmp_path):
    torch.save(helpers_teacher.build_wide().state_dict(), tmp_path / "wide.pt")
    with pytest.raises(NaskdError) as info:
        _load(_study(tmp_path, {"model": "helpers_teacher:build", "checkpoint": "wide.pt"}))
    message = str(info.value)
    assert str((tmp_path / "wide.pt").resolve()) in message
    assert "does not match the model built by helpers_teacher:build" in message


def test_state_dict_with_a_missing_tensor(tmp_path):
    state = helpers_teacher.build().state_dict()
    del state["2.bias"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(NaskdError, match="does not match the model built by helpers_teacher:build"):
        _load(_study(tmp_path, {"model": "helpers_teacher:build", "checkpoint": "partial.pt"}))


def test_checkpoint_that_is_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(NaskdError, match="expected a state_dict"):
        _load(_study(tmp_path, {"model": "helpers_teacher:build", "checkpoint": "list.pt"}))


def test_checkpoint_that_is_not_a_torch_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(NaskdError, match="junk.pt"):
        _load(_study(tmp_path, {"model": "helpers_teacher:build", "checkpoint": "junk.pt"}))


def test_model_callable_that_does_not_return_a_module(tmp_path):
    torch.save(helpers_teacher.build().state_dict(), tmp_path / "t.pt")
    with pytest.raises(NaskdError, match="expected a torch.nn.Module"):
        _load(_study(tmp_path, {"model": "helpers_teacher:build_not_a_module", "checkpoint": "t.pt"}))


def test_model_callable_that_cannot_be_imported(tmp_path):
    torch.save(helpers_teacher.build().state_dict(), tmp_path / "t.pt")
    with pytest.raises(NaskdError, match=r"\[teacher\]\.model: cannot import 'helpers_teacher:nope'"):
        _load(_study(tmp_path, {"model": "helpers_teacher:nope", "checkpoint": "t.pt"}))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_teacher(tmp_path):
    original = _trained_user_model()
    path = tmp_path / "teacher.ts"
    torch.jit.script(original).save(str(path))
    teacher, data = _load(_study(tmp_path, {"torchscript": "teacher.ts"}))
    assert not teacher.model.training
    assert teacher.source == f"torchscript {path.resolve()}"
    assert teacher.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    with torch.no_grad():
        assert torch.equal(teacher.model(data.x_val), original(data.x_val))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_path_that_is_not_torchscript(tmp_path):
    torch.save(helpers_teacher.build().state_dict(), tmp_path / "plain.pt")
    with pytest.raises(NaskdError, match="not a TorchScript file"):
        _load(_study(tmp_path, {"torchscript": "plain.pt"}))


def test_describe_teacher_rejects_outputs_of_the_wrong_shape(tmp_path):
    torch.save(helpers_teacher.build().state_dict(), tmp_path / "t.pt")
    teacher, data = _load(_study(tmp_path, {"model": "helpers_teacher:build", "checkpoint": "t.pt"}))
    with pytest.raises(NaskdError, match=r"expected \(N, 4\)"):
        describe_teacher(teacher, torch.zeros(len(data.y_val), 3), data, CostConfig(warmup=1, repeats=3))


def test_describe_teacher_reports_accuracy_and_cost(tmp_path):
    original = _trained_user_model()
    torch.save(original.state_dict(), tmp_path / "t.pt")
    teacher, data = _load(_study(tmp_path, {"model": "helpers_teacher:build", "checkpoint": "t.pt"}))
    with torch.no_grad():
        logits = teacher.model(data.x_val)
    info = describe_teacher(teacher, logits, data, CostConfig(warmup=1, repeats=3))
    expected = (logits.argmax(1) == data.y_val).float().mean().item()
    assert info["accuracy"] == pytest.approx(expected)
    assert info["params"] == sum(p.numel() for p in original.parameters()) == 16 * 32 + 32 + 32 * 4 + 4
    assert info["fingerprint"] == teacher.fingerprint
    assert info["latency_p50_ms"] > 0


# --- built-in teachers and their cache ----------------------------------------------------


def _cached(cache: Path) -> list[Path]:
    return sorted((cache / "teachers").glob("*.pt"))


def test_builtin_teacher_is_trained_once_then_read_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    path = _study(tmp_path, {"epochs": 3, "cache_dir": "cache"})
    first, data = _load(path)
    files = _cached(cache)
    assert len(files) == 1
    assert files[0].with_suffix(".json").is_file()
    assert not first.model.training
    assert first.source == "built-in (synthetic)"
    mtime = os.stat(files[0]).st_mtime_ns

    second, _ = _load(path)
    assert _cached(cache) == files
    assert os.stat(files[0]).st_mtime_ns == mtime  # not retrained, not rewritten
    assert second.fingerprint == first.fingerprint
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)

    # The weights really come from the file: rewrite it as a consistent entry (new weights, their
    # checksum) and the next load follows it. (An entry changed without its checksum is retrained:
    # tests/test_cache_damage.py.)
    entry = torch.load(files[0], weights_only=True)
    zeros = {k: torch.zeros_like(v) for k, v in entry["payload"].items()}
    torch.save({**entry, "payload": zeros, "sha256": content_sha256(zeros)}, files[0])
    third, _ = _load(path)
    assert all(not v.any() for v in third.model.state_dict().values())


def test_builtin_teacher_learns_and_is_reproducible(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, data = _load(_study(tmp_path / "a", {"epochs": 3, "cache_dir": "cache"}))
    b, _ = _load(_study(tmp_path / "b", {"epochs": 3, "cache_dir": "cache"}))
    assert _cached(tmp_path / "a" / "cache")[0].name == _cached(tmp_path / "b" / "cache")[0].name
    assert a.fingerprint == b.fingerprint  # trained twice from scratch, same weights
    with torch.no_grad():
        accuracy = (a.model(data.x_val).argmax(1) == data.y_val).float().mean().item()
    assert accuracy > 0.6  # 4 well-separated classes: chance is 0.25


def test_changed_seed_or_epochs_or_data_gives_another_cache_file(tmp_path):
    cache = tmp_path / "cache"
    a, _ = _load(_study(tmp_path, {"epochs": 1, "seed": 0, "cache_dir": "cache"}))
    b, _ = _load(_study(tmp_path, {"epochs": 1, "seed": 1, "cache_dir": "cache"}))
    assert len(_cached(cache)) == 2
    assert a.fingerprint != b.fingerprint
    _load(_study(tmp_path, {"epochs": 2, "seed": 0, "cache_dir": "cache"}))
    assert len(_cached(cache)) == 3
    _load(_study(tmp_path, {"epochs": 1, "seed": 0, "cache_dir": "cache"}, data={"samples": 404}))
    assert len(_cached(cache)) == 4
    _load(_study(tmp_path, {"epochs": 1, "seed": 1, "cache_dir": "cache"}))  # seen before: reused
    assert len(_cached(cache)) == 4


def test_builtin_teacher_uses_naskd_cache_dir_by_default(tmp_path, teacher_cache):
    before = set(_cached(teacher_cache))
    _load(_study(tmp_path, {"epochs": 1, "seed": 12345}))
    assert len(set(_cached(teacher_cache)) - before) == 1


@pytest.mark.slow
def test_builtin_mnist1d_teacher_reaches_094(tmp_path):
    from naskd.trial import build_context

    doc = small_study()
    doc["data"] = {"dataset": "mnist1d"}
    doc["teacher"] = {}  # the built-in default recipe
    path = tmp_path / "mnist1d.toml"
    path.write_text(toml_text(doc))
    context = build_context(load_study(path))
    assert context.teacher_info["source"] == "built-in (mnist1d)"
    assert context.teacher_info["accuracy"] >= 0.94
    assert context.val_logits.shape == (1000, 10)
