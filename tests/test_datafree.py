"""Data-free distillation (DeepInversion): the transfer set is synthesized from the teacher
once, cached under its content key and read by every trial; no real training sample reaches
any model; a teacher without BatchNorm is a one-line error."""

from __future__ import annotations

import json
import logging

import helpers_teacher
import pytest
import torch
from conftest import small_study, toml_text

from naskd.cli import main
from naskd.config import DataConfig, DistillConfig, load_study
from naskd.data import load_data
from naskd.distill import Scratch, train
from naskd.errors import ConfigError
from naskd.trial import build_context, evaluate, full_spec

SYNTHESIS = {"samples": 200, "batch_size": 100, "iterations": 60, "lr": 0.1}
SPEC = {"family": "mlp", "arch": {"depth": 1, "width": [16]}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A trained BatchNorm teacher for small_study's synthetic data, saved as a state_dict."""
    data = load_data(DataConfig(dataset="synthetic", samples=400, shape=(16,), classes=4))
    torch.manual_seed(0)
    model = helpers_teacher.build_bn()
    train(Scratch(model), data.x_train, data.y_train, DistillConfig(epochs=20, batch_size=32, lr=3e-3))
    path = tmp_path_factory.mktemp("bn-teacher") / "teacher.pt"
    torch.save(model.state_dict(), path)
    return path


def _study(tmp_path, checkpoint, transfer="deepinversion", **sections):
    sections = {"synthesis": dict(SYNTHESIS), **sections}
    doc = small_study(
        teacher={"model": "helpers_teacher:build_bn", "checkpoint": str(checkpoint)},
        data={"transfer": transfer},
        **sections,
    )
    path = tmp_path / "study.toml"
    path.write_text(toml_text(doc))
    return path


class RealRows:
    """Counts, across every module's forward in the process, the input rows that are rows of
    the real training set (compared byte for byte)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.real = {bytes(r.numpy().tobytes()) for r in x.reshape(len(x), -1)}
        self.width = x[0].numel()
        self.seen = self.inputs = 0

    def __call__(self, module, args) -> None:
        if not args or not isinstance(args[0], torch.Tensor) or args[0].ndim < 2:
            return
        x = args[0].detach().float().cpu()
        if x[0].numel() != self.width:
            return
        rows = x.reshape(len(x), -1)
        self.inputs += len(rows)
        self.seen += sum(bytes(r.numpy().tobytes()) in self.real for r in rows)

    def __enter__(self) -> RealRows:
        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(self)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


@pytest.mark.parametrize("transfer", ["deepinversion", "real"])
def test_no_real_training_sample_reaches_any_model(tmp_path, checkpoint, transfer):
    config = load_study(_study(tmp_path, checkpoint, transfer))
    real = load_data(config.data).x_train
    with RealRows(real) as count:
        context = build_context(config)
        result = evaluate(full_spec(SPEC, config), context)
    assert result.status == "complete", result.reason
    assert count.inputs > 0
    if transfer == "deepinversion":
        assert count.seen == 0  # not one real training row was fed to the teacher or the student
        assert len(context.y_train) == SYNTHESIS["samples"] and context.data.split["real_train"] == len(real)
        assert torch.equal(context.data.x_val, load_data(config.data).x_val)  # scored on the real held-out part
        assert result.metrics["accuracy"] > 0.5  # 4 classes: chance is 0.25
    else:  # the control: the same study on the real data does read them
        assert count.seen >= len(real)


def test_the_transfer_set_is_made_once_and_read_from_its_cache(tmp_path, checkpoint, monkeypatch, caplog):
    import naskd.trial as trial

    monkeypatch.setenv("NASKD_CACHE_DIR", str(tmp_path / "own-cache"))  # a set made here, not by another test
    calls = []
    original = trial.synthesize
    monkeypatch.setattr(trial, "synthesize", lambda *a, **k: calls.append(1) or original(*a, **k))
    config = load_study(_study(tmp_path, checkpoint))
    first = build_context(config)
    second = build_context(config)
    assert len(calls) == 1 and torch.equal(first.x_train, second.x_train)
    assert first.data.split["synthesis_teacher_accuracy"] > 0.4  # 4 classes: chance is 0.25
    # Another setting is another set, under another key.
    other = load_study(_study(tmp_path, checkpoint, synthesis={**SYNTHESIS, "iterations": 30}))
    third = build_context(other)
    assert len(calls) == 2 and third.data.split["synthesis_key"] != first.data.split["synthesis_key"]
    # A damaged file is detected, said, and made again; never used.
    path = next(
        p
        for p in (first.cache.directory.parent / "transfer").glob("*.pt")
        if p.stem == first.data.split["synthesis_key"]
    )
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        again = build_context(config)
    assert len(calls) == 3 and "transfer set cache" in caplog.text
    assert torch.equal(again.x_train, first.x_train)  # deterministic: the same set again


def test_a_teacher_without_batchnorm_is_a_one_line_error(write_study, capsys):
    path = write_study(data={"transfer": "deepinversion"}, synthesis=dict(SYNTHESIS))
    assert main(["search", str(path), "--out", str(path.parent / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no BatchNorm layer" in err and "[teacher]" in err


def test_crossmodal_data_cannot_use_a_synthesized_transfer_set(tmp_path, checkpoint):
    import numpy as np

    rng = np.random.default_rng(0)
    npz = tmp_path / "views.npz"
    np.savez(
        npz,
        x=rng.normal(size=(100, 16)).astype("f4"),
        x_teacher=rng.normal(size=(100, 16)).astype("f4"),
        y=np.arange(100) % 4,
    )
    doc = small_study(
        teacher={"model": "helpers_teacher:build_bn", "checkpoint": str(checkpoint)},
        data={"path": str(npz), "transfer": "deepinversion"},
    )
    del doc["data"]["dataset"], doc["data"]["samples"], doc["data"]["shape"], doc["data"]["classes"]
    path = tmp_path / "cm.toml"
    path.write_text(toml_text(doc))
    with pytest.raises(ConfigError, match=r"\[data\].transfer"):
        build_context(load_study(path))


def test_a_datafree_study_searches_and_exports(tmp_path, checkpoint):
    study, out = _study(tmp_path, checkpoint), tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "--trials", "2", "--quiet"]) == 0
    front = json.loads((out / "front.json").read_text())
    assert front["front"]
    number = front["front"][0]["number"]
    assert (
        main(["export", str(study), "--out", str(out), "--trial", str(number), "-o", str(tmp_path / "exp"), "--quiet"])
        == 0
    )


def _no_data_study(tmp_path, checkpoint, **extra):
    doc = small_study(
        teacher={"model": "helpers_teacher:build_bn", "checkpoint": str(checkpoint)},
        data={"dataset": "none", "transfer": "deepinversion", "shape": [16], "classes": 4},
        synthesis=dict(SYNTHESIS),
        **extra,
    )
    del doc["data"]["samples"]
    path = tmp_path / "none.toml"
    path.write_text(toml_text(doc))
    return path


def test_with_no_real_data_accuracy_is_unavailable_and_never_scored_on_synthetic_inputs(tmp_path, checkpoint, capsys):
    study, out = _no_data_study(tmp_path, checkpoint), tmp_path / "out"
    config = load_study(study)
    assert config.search.objectives == ("synthetic_agreement", "latency_p50_ms", "params")
    assert main(["search", str(study), "--out", str(out), "--trials", "2"]) == 0
    table = capsys.readouterr().out
    assert "accuracy: unavailable (no real validation data)" in table
    front = json.loads((out / "front.json").read_text())
    assert front["teacher"]["accuracy"] is None
    for entry in front["front"]:
        m = entry["metrics"]
        assert m["accuracy"] is None and m["teacher_agreement"] is None and 0.0 <= m["synthetic_agreement"] <= 1.0
    assert "accuracy unavailable: the study has no real validation data" in (out / "report.html").read_text()
    number = front["front"][0]["number"]
    assert main(["export", str(study), "--out", str(out), "--trial", str(number), "-o", str(tmp_path / "exp")]) == 0
    assert "accuracy unavailable" in capsys.readouterr().out
    # The diagnostics compare accuracies: refused in one line.
    assert main(["baseline", str(study), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[data].dataset" in err


@pytest.mark.parametrize(
    "change, key",
    [
        ({"data": {"transfer": "real"}}, "[data].transfer"),
        ({"teacher": {"epochs": 5}}, "[teacher]"),
        ({"search": {"objectives": ["accuracy", "params"]}}, "[search].objectives"),
    ],
)
def test_no_real_data_needs_a_transfer_set_an_own_teacher_and_a_measurable_objective(tmp_path, checkpoint, change, key):
    path = _no_data_study(tmp_path, checkpoint)
    doc = small_study(
        teacher={"model": "helpers_teacher:build_bn", "checkpoint": str(checkpoint)},
        data={"dataset": "none", "transfer": "deepinversion", "shape": [16], "classes": 4},
    )
    del doc["data"]["samples"]
    for section, values in change.items():
        doc[section] = values if section == "teacher" else {**doc[section], **values}
    path.write_text(toml_text(doc))
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert key in str(err.value) and "\n" not in str(err.value)
