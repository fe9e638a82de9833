"""The public Python API: ``naskd.search`` runs a real study and returns a ``Study`` whose frames
agree with the front files it wrote; ``naskd.load`` reads it back from its output folder or its
study file (with the seed it was run with); a front student exports and loads back through
``naskd.load_student`` with its recorded accuracy; bad arguments are refused with a message
naming them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import small_study, toml_text

import naskd
from naskd.data import load_data
from naskd.errors import ConfigError, NaskdError
from naskd.scoring import predict, score


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, naskd.Study]:
    root = tmp_path_factory.mktemp("api")
    path = root / "study.toml"
    path.write_text(toml_text(small_study(name="api tiny", search={"trials": 4, "sampler": "random"})))
    study = naskd.search(path, out=root / "out", progress=False)
    return path, root / "out", study


def test_search_returns_the_study_it_ran(searched):
    path, out, study = searched
    assert isinstance(study, naskd.Study)
    assert study.name == "api tiny" and study.out_dir == out
    assert (out / "report.html").is_file() and (out / "front.json").is_file()
    written = json.loads((out / "front.json").read_text())
    assert study.hypervolume == pytest.approx(written["hypervolume"]) and 0 <= study.hypervolume <= 1
    assert study.knee == written["knee"]
    assert "naskd.search(" in study.optuna_study.user_attrs["naskd"]["command"]


def test_front_frame_has_every_metric_and_the_spec_in_columns(searched):
    _, out, study = searched
    front = study.front()
    written = json.loads((out / "front.json").read_text())["front"]
    assert list(front["number"]) == [e["number"] for e in written]
    for column in (
        "number",
        "knee",
        "accuracy",
        "teacher_agreement",
        "latency_p50_ms",
        "params",
        "flops",
        "model_bytes",
        "capacity_ratio",
        "steps",
        "rungs",
        "spec.family",
        "spec.arch.depth",
    ):
        assert column in front.columns, column
    assert front["knee"].sum() == 1 and int(front.loc[front["knee"], "number"].iloc[0]) == study.knee
    assert (front["spec.family"] == "mlp").all()
    assert (front["steps"] == study.target_steps).all()
    for row, entry in zip(front.to_dict("records"), written):
        assert row["accuracy"] == pytest.approx(entry["metrics"]["accuracy"])
        assert row["params"] == entry["metrics"]["params"]
        assert row["spec.arch.depth"] == entry["spec"]["arch"]["depth"]
    assert front["accuracy"].is_monotonic_decreasing


def test_trials_frame_lists_every_trial_with_state_and_reason(searched):
    _, _, study = searched
    trials = study.trials()
    assert list(trials["number"]) == list(range(4))
    assert set(trials["state"]) <= {"complete", "infeasible", "pruned", "failed"}
    assert list(trials.columns[:4]) == ["number", "state", "reason", "on_front"]
    assert set(trials.loc[trials["on_front"], "number"]) == set(study.front()["number"])
    assert trials.loc[trials["state"] != "complete", "reason"].notna().all()
    assert "spec.arch.depth" in trials.columns and "accuracy" in trials.columns
    rungs = study.rungs()
    assert list(rungs.columns[:4]) == ["number", "state", "rung", "steps"]
    assert len(rungs) == sum(len(r.rungs) for r in study.records)


def test_load_reads_the_same_study_from_its_folder_or_its_file(searched):
    path, out, study = searched
    for again in (naskd.load(out), naskd.load(path, out=out), naskd.load(naskd.load_study(path), out=out)):
        pd.testing.assert_frame_equal(again.front(), study.front())
        pd.testing.assert_frame_equal(again.trials(), study.trials())
        assert again.hypervolume == study.hypervolume
    assert "4 trials" in repr(naskd.load(out))


def test_report_writes_where_asked(searched, tmp_path):
    _, _, study = searched
    written = study.report(tmp_path / "r.html")
    assert written == tmp_path / "r.html" and "<html" in written.read_text()[:2000].lower()


def test_an_exported_front_student_loads_back_with_its_accuracy(searched, tmp_path):
    path, _, study = searched
    number = study.knee
    check = study.export(number, tmp_path / "knee")
    recorded = float(study.front().set_index("number").loc[number, "accuracy"])
    assert check.accuracy == pytest.approx(recorded)
    data = load_data(naskd.load_study(path).data)
    for target in ("knee", "knee/model.pt2", "knee/model.onnx", "knee/model.pt"):
        model = naskd.load_student(tmp_path / target)
        assert isinstance(model, torch.nn.Module)
        assert score(predict(model, data.x_val), data.y_val)["accuracy"] == pytest.approx(recorded), target


def test_export_refuses_a_trial_not_on_the_target_budget(searched, tmp_path):
    _, _, study = searched
    with pytest.raises(NaskdError, match="trial 99: no such trial"):
        study.export(99, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_seeded_search_is_read_back_with_its_seed(write_study, tmp_path):
    path = write_study(search={"trials": 2, "sampler": "random"})
    config = naskd.load_study(path)
    study = naskd.search(config, seed=3, trials=2, out=tmp_path / "out", progress=False)
    assert study.config.seed == 3 and len(study.trials()) == 2
    assert naskd.load(tmp_path / "out").config.seed == 3
    assert naskd.load(path, out=tmp_path / "out").config.seed == 3  # the file says 0


def test_bad_arguments_are_refused_naming_them(write_study, tmp_path):
    path = write_study()
    with pytest.raises(NaskdError, match="backend='nope'"):
        naskd.search(path, backend="nope", out=tmp_path / "o")
    with pytest.raises(NaskdError, match="Ray backend"):
        naskd.search(path, address="auto", out=tmp_path / "o")
    with pytest.raises(ConfigError, match="--trials: must be > 0"):
        naskd.search(naskd.load_study(path), trials=0, out=tmp_path / "o")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NaskdError, match="is a file"):
        naskd.search(path, out=tmp_path / "afile")
    with pytest.raises(NaskdError, match="no study here"):
        naskd.load(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no such file"):
        naskd.load(tmp_path / "missing.toml")
    assert not (tmp_path / "o").exists()


def test_a_study_whose_file_moved_says_to_load_the_file(write_study, tmp_path):
    path = write_study(search={"trials": 1, "sampler": "random"})
    naskd.search(path, out=tmp_path / "out", progress=False)
    moved = shutil.move(path, tmp_path / "moved.toml")
    with pytest.raises(NaskdError, match="which is gone"):
        naskd.load(tmp_path / "out")
    assert naskd.load(moved, out=tmp_path / "out").name == "tiny"


def test_import_naskd_loads_no_search_framework_until_asked():
    code = (
        "import sys, naskd\n"
        "assert callable(naskd.load_student) and 'optuna' not in sys.modules\n"
        "assert callable(naskd.search) and naskd.Study.__name__ == 'Study'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
