"""Lifelong distillation: a study whose teacher changes goes on as a new teacher version; the
earlier version's trials are kept, its Pareto students continue from their trained weights
under the new teacher with their earlier selves as second teachers, and fronts, rung records
and reports are per version."""

from __future__ import annotations

import dataclasses
import json

import helpers_teacher
import optuna
import pytest
import torch
from conftest import small_study, toml_text

from naskd.backends.optuna_backend import SQLITE_NAME, rung_peers
from naskd.cli import main
from naskd.config import load_study
from naskd.distill import Offline, TeacherSource, train
from naskd.distill.lifelong import Lifelong
from naskd.trial import build_context


def _write(path, teacher_epochs: int, **sections):
    doc = small_study(teacher={"epochs": teacher_epochs}, search={"trials": 3, "sampler": "random"}, **sections)
    path.write_text(toml_text(doc))
    return path


def _study(out, name="tiny"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / SQLITE_NAME}")


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("lifelong")
    study, out = tmp_path / "study.toml", tmp_path / "out"
    assert main(["search", str(_write(study, 5)), "--out", str(out), "--quiet"]) == 0
    before = {t.number: (t.user_attrs["metrics"], t.values) for t in _study(out).trials}
    first = json.loads((out / "front.json").read_text())
    assert main(["search", str(_write(study, 8)), "--out", str(out), "--quiet"]) == 0
    return study, out, before, first


def test_a_changed_teacher_begins_a_version_and_keeps_every_earlier_trial(two_versions):
    _, out, before, first = two_versions
    study = _study(out)
    facts = study.user_attrs["naskd"]
    versions = facts["teacher_versions"]
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["teacher"]["fingerprint"] != versions[1]["teacher"]["fingerprint"]
    for number, (metrics, values) in before.items():  # nothing of version 1 is lost or changed
        t = study.trials[number]
        assert t.user_attrs["metrics"] == metrics and t.values == values
        assert t.user_attrs.get("teacher_version", 1) == 1
    continued = [t for t in study.trials if t.user_attrs.get("lifelong_from") is not None]
    assert sorted(t.user_attrs["lifelong_from"] for t in continued) == sorted(e["number"] for e in first["front"])
    for t in continued:
        assert t.user_attrs["teacher_version"] == 2
        assert t.user_attrs["spec"] == study.trials[t.user_attrs["lifelong_from"]].user_attrs["spec"]
        assert "lwf" in t.user_attrs["loss_terms"]  # the earlier student taught it too
    assert (out / "students" / f"trial_{first['front'][0]['number']}.pt").is_file()  # kept


def test_the_front_and_report_are_per_teacher_version(two_versions):
    _, out, _, first = two_versions
    summary = json.loads((out / "front.json").read_text())
    assert [v["version"] for v in summary["versions"]] == [1, 2]
    assert [e["number"] for e in summary["versions"][0]["front"]] == [e["number"] for e in first["front"]]
    latest = {t.number for t in _study(out).trials if t.user_attrs.get("teacher_version") == 2}
    assert {e["number"] for e in summary["front"]} <= latest
    html = (out / "report.html").read_text()
    assert 'id="versions"' in html and "Teacher versions" in html


def test_new_data_comes_with_a_new_version_but_not_alone(tmp_path, capsys):
    # A user teacher from a checkpoint: the same weights whatever the data, so only data changes.
    torch.manual_seed(0)
    torch.save(helpers_teacher.build().state_dict(), tmp_path / "t.pt")
    teacher = {"model": "helpers_teacher:build", "checkpoint": str(tmp_path / "t.pt")}
    study, out = tmp_path / "study.toml", tmp_path / "out"
    small = {"search": {"trials": 2, "sampler": "random"}}
    study.write_text(toml_text(small_study(teacher=teacher, **small)))
    assert main(["search", str(study), "--out", str(out), "--quiet"]) == 0
    other = {"dataset": "synthetic", "samples": 440, "shape": [16], "classes": 4}
    study.write_text(toml_text(small_study(teacher=teacher, data=other, **small)))
    assert main(["search", str(study), "--out", str(out), "--quiet"]) == 2
    assert "new data comes with a new teacher version" in capsys.readouterr().err
    torch.save({k: v * 0.5 for k, v in helpers_teacher.build().state_dict().items()}, tmp_path / "t.pt")
    assert main(["search", str(study), "--out", str(out), "--quiet"]) == 0
    versions = _study(out).user_attrs["naskd"]["teacher_versions"]
    assert versions[0]["data"]["fingerprint"] != versions[1]["data"]["fingerprint"]
    # A resumed run queues no second continuation.
    count = len(_study(out).trials)
    assert main(["search", str(study), "--out", str(out), "--quiet"]) == 0
    assert len(_study(out).trials) == count


def test_rung_records_are_compared_within_a_version(two_versions):
    _, out, _, _ = two_versions
    study = _study(out)
    ones = [
        m
        for t in study.trials
        if t.user_attrs.get("teacher_version", 1) == 1
        for m in (e["metrics"] for e in t.user_attrs.get("rungs", ()) if e["rung"] == 0)
    ]
    assert rung_peers(study, 0, version=1) == ones
    twos = rung_peers(study, 0, version=2)
    assert twos and all(m not in ones for m in twos)


def test_lifelong_adds_the_earlier_student_as_a_second_teacher(write_study):
    context = build_context(load_study(write_study()))
    x, y, recipe = context.x_train, context.y_train, context.config.distill
    torch.manual_seed(0)
    earlier = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    student = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    student.load_state_dict(earlier.state_dict())
    frozen = {k: v.clone() for k, v in earlier.state_dict().items()}
    source = TeacherSource("teacher", context.teacher.model, context.train_logits[0])
    result = train(Lifelong(Offline(student, recipe, [source]), recipe, earlier), x, y, recipe)
    assert {"ce", "kd", "lwf"} <= set(result.terms) and result.terms["lwf"] > 0
    assert all(torch.equal(v, earlier.state_dict()[k]) for k, v in frozen.items())  # it never trains
    without = dataclasses.replace(recipe, lwf_weight=0.0)
    result = train(Lifelong(Offline(student, without, [source]), without, earlier), x, y, without)
    assert "lwf" not in result.terms
