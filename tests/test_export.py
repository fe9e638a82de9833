"""Exporting a trained student: the folder holds model.pt, model.pt2 and model.onnx (TorchScript
only with --torchscript), spec.json and a README showing how to load each; every program,
reloaded with its own library, reproduces the recorded accuracy; ``load_exported`` loads the
folder or any one file with that accuracy; damaged or foreign files are refused naming the
file; a program or a rebuilt student that does not reproduce is refused and nothing is written."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import small_study, toml_text
from torch import nn

from naskd.cli import main
from naskd.config import load_study
from naskd.data import Data, load_data
from naskd.errors import NaskdError
from naskd.export import OUTPUT_TOLERANCE, ExportCheck, export_student, load_exported, save_student
from naskd.scoring import predict, score
from naskd.spaces import BuildContext, build_student


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny study searched for real, its best student exported twice: plain, and with TorchScript."""
    root = tmp_path_factory.mktemp("export")
    study = root / "study.toml"
    study.write_text(toml_text(small_study(search={"trials": 3, "sampler": "random"})))
    out = root / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    entry = json.loads((out / "front.json").read_text())["front"][0]
    plain, scripted = root / "plain", root / "scripted"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(study), "--out", str(out), "--trial", str(entry["number"]), "-o", str(plain)]) == 0
    command = ["export", str(study), "--out", str(out), "--trial", str(entry["number"]), "-o", str(scripted)]
    assert main([*command, "--torchscript", "-q"]) == 0
    data = load_data(load_study(study).data)
    return SimpleNamespace(
        study=study, out=out, entry=entry, plain=plain, scripted=scripted, data=data, printed=printed.getvalue()
    )


def _accuracy(logits: torch.Tensor, data) -> float:
    return score(logits, data.y_val)["accuracy"]


def test_the_folder_holds_the_programs_and_torchscript_only_on_request(exported):
    assert {p.name for p in exported.plain.iterdir()} == {
        "model.pt",
        "model.pt2",
        "model.onnx",
        "spec.json",
        "README.md",
    }
    assert {p.name for p in exported.scripted.iterdir()} == {
        "model.pt",
        "model.pt2",
        "model.onnx",
        "model.torchscript.pt",
        "spec.json",
        "README.md",
    }
    readme = (exported.plain / "README.md").read_text()
    for shown in (
        'torch.export.load("model.pt2")',
        'onnxruntime.InferenceSession("model.onnx"',
        f'naskd.load_student("{exported.plain.name}")',
        'torch.load("model.pt", weights_only=True)',
        "weights_only=False",  # the safety note on torch.export.load
    ):
        assert shown in readme, shown
    assert "model.torchscript.pt" not in readme
    assert 'torch.jit.load("model.torchscript.pt")' in (exported.scripted / "README.md").read_text()
    assert json.loads((exported.plain / "spec.json").read_text())["spec"] == exported.entry["spec"]


def test_the_command_prints_every_programs_accuracy_on_one_line(exported):
    a = f"{exported.entry['metrics']['accuracy']:.4f}"
    assert exported.printed == (
        f"exported trial {exported.entry['number']} to {exported.plain} "
        f"(accuracy recorded {a}, reloaded {a}; model.pt2 {a}, model.onnx {a})\n"
    )


def test_each_program_reproduces_the_accuracy_with_its_own_library(exported):
    data, recorded = exported.data, exported.entry["metrics"]["accuracy"]
    program = torch.export.load(exported.plain / "model.pt2").module()
    with torch.no_grad():
        logits = program(data.x_val)
    assert _accuracy(logits, data) == pytest.approx(recorded)
    session = onnxruntime.InferenceSession(str(exported.plain / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = torch.from_numpy(session.run(None, {"input": data.x_val.numpy().astype(np.float32)})[0])
    assert _accuracy(onnx_logits, data) == pytest.approx(recorded)
    assert (onnx_logits - logits).abs().max().item() < OUTPUT_TOLERANCE
    with pytest.warns(DeprecationWarning, match="torch.jit.load"):  # what users of the file will see too
        traced = torch.jit.load(str(exported.scripted / "model.torchscript.pt")).eval()
    with torch.no_grad():
        assert _accuracy(traced(data.x_val), data) == pytest.approx(recorded)


@pytest.mark.parametrize(
    "target", ["plain", "plain/model.pt2", "plain/model.onnx", "plain/model.pt", "scripted/model.torchscript.pt"]
)
def test_load_exported_gives_the_recorded_accuracy_from_any_file(exported, target):
    model = load_exported(exported.plain.parent / target)
    assert isinstance(model, nn.Module) and not model.training
    data = exported.data
    assert _accuracy(predict(model, data.x_val), data) == pytest.approx(exported.entry["metrics"]["accuracy"])
    with torch.no_grad():  # any batch size, one sample included
        assert model(data.x_val[:1]).shape == (1, data.num_classes)
        assert model(data.x_val[:3]).shape == (3, data.num_classes)


def _copy(exported, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(exported.plain, folder)
    return folder


def test_damaged_or_foreign_files_are_refused_naming_the_file(exported, tmp_path, capfd):
    folder = _copy(exported, tmp_path)
    pt2 = (folder / "model.pt2").read_bytes()
    (folder / "cut.pt2").write_bytes(pt2[: len(pt2) // 2])
    torch.save({"w": torch.zeros(2)}, folder / "foreign.pt2")
    (folder / "garbage.onnx").write_bytes(b"not a protobuf at all" * 10)
    shutil.copy(folder / "model.pt", folder / "state.torchscript.pt")
    (folder / "weights.bin").write_bytes(b"\0" * 8)
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "missing": "no such file or folder",
        tmp_path / "empty": "holds no model.pt2",
        folder / "cut.pt2": "not a readable torch.export program",
        folder / "foreign.pt2": "not a readable torch.export program",
        folder / "garbage.onnx": "not a readable ONNX model",
        folder / "state.torchscript.pt": "not a readable TorchScript program",
        folder / "weights.bin": "not a kind of file naskd exports",
    }
    capfd.readouterr()
    for path, phrase in cases.items():
        with pytest.raises(NaskdError) as info:
            load_exported(path)
        message = str(info.value)
        assert message.startswith(f"{path}: {phrase}") and "\n" not in message, message
        assert "expected" in message
    assert "Traceback" not in capfd.readouterr().err  # torch logs none for the archives it cannot read


def test_a_state_dict_needs_its_spec_and_a_student_without_its_teacher(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    (folder / "model.pt").write_bytes(b"\0" * 10)
    with pytest.raises(NaskdError, match=r"model.pt: not a readable student state_dict .*load model.pt2 instead"):
        load_exported(folder / "model.pt")
    shutil.copy(exported.plain / "model.pt", folder / "model.pt")
    info = json.loads((folder / "spec.json").read_text())
    (folder / "spec.json").write_text(json.dumps({**info, "spec": {**info["spec"], "family": "shrink"}}))
    with pytest.raises(NaskdError, match=r"a shrink student is built from its teacher.*model.pt2 instead"):
        load_exported(folder / "model.pt")
    (folder / "spec.json").unlink()
    with pytest.raises(NaskdError, match=r"spec.json is missing"):
        load_exported(folder / "model.pt")
    recorded = exported.entry["metrics"]["accuracy"]
    assert _accuracy(predict(load_exported(folder), exported.data.x_val), exported.data) == pytest.approx(recorded)


def test_a_damaged_student_is_refused_and_nothing_is_written(exported, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(exported.out, out)
    number = exported.entry["number"]
    weights = out / "students" / f"trial_{number}.pt"
    state = torch.load(weights, weights_only=True)
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, weights)  # every logit 0: class 0 everywhere
    dest = tmp_path / "dest"
    capsys.readouterr()
    assert main(["export", str(exported.study), "--out", str(out), "--trial", str(number), "-o", str(dest)]) == 2
    err = capsys.readouterr().err
    recorded = exported.entry["metrics"]["accuracy"]
    assert err.count("\n") == 1 and f"trial {number}: the student rebuilt from {weights} scores" in err
    assert f"recorded {recorded:.4f}" in err and not dest.exists()


class Drifting(nn.Module):
    """A student whose logits scale with how often it ran: export bakes the count in as a constant,
    so its programs differ from it (the labels do not: the scale is positive)."""

    def __init__(self, input_shape: tuple, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(int(np.prod(input_shape)), num_classes)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x.flatten(1)) * self.calls


def drifting(arch: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    return Drifting(input_shape, num_classes)


DRIFTING = {"family": "user", "arch": {}, "builder": "test_export:drifting"}


def _direct(tmp_path: Path, spec: dict) -> tuple[Path, dict, Data, BuildContext]:
    """A built (untrained) student of ``spec`` saved as a trial's weights, with its accuracy recorded."""
    study = tmp_path / "study.toml"
    study.write_text(toml_text(small_study()))
    data = load_data(load_study(study).data)
    ctx = BuildContext(data.input_shape, data.num_classes)
    torch.manual_seed(0)
    student = build_student(spec, ctx).eval()
    save_student(student, tmp_path / "trial.pt")
    return tmp_path / "trial.pt", {"accuracy": _accuracy(predict(student, data.x_val), data)}, data, ctx


def test_a_program_that_does_not_reproduce_is_refused_and_the_folder_kept(exported, tmp_path):
    weights, recorded, data, ctx = _direct(tmp_path, DRIFTING)
    dest = _copy(exported, tmp_path)  # an earlier export there stays as it was
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    with pytest.raises(NaskdError) as info:
        export_student(DRIFTING, weights, data, recorded, dest, number=5, study="s", ctx=ctx)
    message = str(info.value)
    assert (
        message.startswith("trial 5: model.pt2 reloaded scores ") and f"recorded {recorded['accuracy']:.4f}" in message
    )
    assert "logits differ from the rebuilt student's by up to" in message and f"nothing written to {dest}" in message
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    with pytest.raises(NaskdError):
        export_student(DRIFTING, weights, data, recorded, tmp_path / "new", number=5, study="s", ctx=ctx)
    assert not (tmp_path / "new").exists()


def test_with_no_real_data_programs_match_on_random_inputs_and_a_stale_file_goes(tmp_path):
    spec = {"family": "mlp", "arch": {"depth": 1, "width": [8]}}
    weights, _, data, ctx = _direct(tmp_path, spec)
    unlabelled = replace(data, x_val=data.x_val[:0], y_val=data.y_val[:0])
    dest = tmp_path / "dest"
    first = export_student(spec, weights, unlabelled, {}, dest, number=1, study="s", ctx=ctx, torchscript=True)
    assert "model.torchscript.pt" in first.files and (dest / "model.torchscript.pt").is_file()
    check = export_student(spec, weights, unlabelled, {}, dest, number=1, study="s", ctx=ctx)
    assert isinstance(check, ExportCheck) and check.dest == dest
    assert check.files == ("model.pt", "model.pt2", "model.onnx", "spec.json", "README.md")
    assert check.accuracy is None and check.reproduced is None and check.skipped == {}
    assert check.programs == {"model.pt2": None, "model.onnx": None}
    assert set(check.output_gaps) == {"model.pt2", "model.onnx"}
    assert all(0 <= gap <= OUTPUT_TOLERANCE for gap in check.output_gaps.values())
    assert sorted(p.name for p in dest.iterdir()) == sorted(check.files)  # the TorchScript of the first is gone
