"""Broken study files, arguments and storages through the real CLI: each gives exit status 2
and exactly one line on stderr, with no traceback and nothing written; damaged storages are
refused or repaired, never restarted or appended to; a refused resume changes nothing stored."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import helpers_teacher
import optuna
import pytest
import torch
from conftest import small_study, toml_text

from naskd.cli import main


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("naskd: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _study(**sections) -> str:
    return toml_text(small_study(**sections))


#: (id, study text, the phrase the one line must hold)
STUDY_FILES = [
    ("seed-past-2**32", _study(seed=2**32), "seed: must be in [0, 2**32)"),
    ("data-seed-negative", _study(data={"seed": -1}), "[data].seed: must be in [0, 2**32)"),
    ("threads-past-cores", _study(cost={"threads": 10_000}), "[cost].threads: must be at most this machine's"),
    ("toml-syntax", 'name = "x\nseed = ', "(toml)"),
    ("unknown-section", _study() + "\n[distil]\nepochs = 1\n", "distil: unknown key"),
    ("escape-sequence-key", _study() + '\n"\\u001b[2J\\n" = 1\n', "\\x1b[2J\\x0a"),
    ("epochs-a-string", _study(distill={"epochs": "ten"}), "[distill].epochs: must be an integer"),
    ("negative-lr", _study(distill={"lr": -0.1}), "[distill].lr: must be > 0"),
    ("cuda-without-cuda", _study(distill={"device": "cuda"}), "[distill].device"),
    ("unknown-scheme", _study(distill={"scheme": "dml"}), "[distill].scheme: must be one of"),
    (
        "mutual-with-features",
        _study(distill={"scheme": "mutual", "knowledge": [{"kind": "fitnet"}]}),
        '[distill].knowledge: scheme = "mutual" exchanges predictions only',
    ),
    (
        "feature-teacher-unknown",
        _study(distill={"feature_teacher": "nobody"}),
        "[distill].feature_teacher: names no teacher",
    ),
    ("teacher-and-teachers", _study() + '\n[[teachers]]\nname = "a"\n', "give either [teacher] or [[teachers]]"),
    ("precision-unknown", _study(distill={"precision": "fp8"}), "[distill].precision: must be one of"),
    ("channels-last-word", _study(distill={"channels_last": "maybe"}), "[distill].channels_last"),
    ("unknown-objective", _study(search={"objectives": ["accuracy", "speed"]}), "[search].objectives"),
    ("repeated-objective", _study(search={"objectives": ["accuracy", "accuracy"]}), "must not repeat a metric"),
    ("space-file-missing", _study(space={"path": "nowhere.toml"}), 'no such file "nowhere.toml"'),
    ("unknown-family", _study(space={"family": "resnet", "params": {}}), "unknown family"),
    (
        "recipe-scheme-unknown",
        _study(
            space={
                **small_study()["space"],
                "recipe": {"scheme": {"type": "categorical", "choices": ["offline", "dml"]}},
            }
        ),
        "recipe scheme",
    ),
    ("first-rung-past-target", _study(fidelity={"first_rung": 30}), "[fidelity].first_rung: must be below the target"),
    ("gpus-for-a-cpu-run", _study(distill={"device": "cpu"}, ray={"gpus_per_trial": 1}), "[ray].gpus_per_trial"),
    ("val-fraction-past-one", _study(data={"val_fraction": 1.5}), "[data].val_fraction: must be between 0 and 1"),
    ("moved-ray-key", _study(ray={"scheduler": "asha"}), "[ray].scheduler: early stopping moved to [fidelity]"),
    ("generations-zero", _study(distill={"generations": 0}), "[distill].generations: must be > 0"),
    (
        "per-count-huge",
        _study(
            space={
                "family": "mlp",
                "params": {
                    "depth": {"type": "int", "low": 1, "high": 10**9},
                    "width": {"type": "int", "low": 4, "high": 8, "per": "depth"},
                },
            }
        ),
        "whose high 1000000000 is over 256",
    ),
]


@pytest.mark.parametrize("text, phrase", [pytest.param(t, p, id=i) for i, t, p in STUDY_FILES])
def test_a_broken_study_file_is_one_line_and_writes_nothing(tmp_path, capsys, text, phrase):
    study = _write(tmp_path, text)
    out = tmp_path / "out"
    err = _one_line_error(capsys, main(["search", str(study), "--out", str(out), "-q"]))
    assert phrase in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, phrase",
    [
        pytest.param(["--trials", "0"], "--trials: must be > 0", id="zero-trials"),
        pytest.param(["--workers", "0"], "--workers: must be > 0", id="zero-workers"),
        pytest.param(["--seed", str(2**40)], "--seed: must be in [0, 2**32)", id="huge-seed"),
    ],
)
def test_a_bad_argument_is_one_line(write_study, tmp_path, capsys, args, phrase):
    out = tmp_path / "out"
    assert phrase in _one_line_error(capsys, main(["search", str(write_study()), "--out", str(out), "-q", *args]))
    assert not out.exists()


def test_study_files_that_cannot_be_read(tmp_path, capsys):
    missing = tmp_path / "missing.toml"
    assert "no such file" in _one_line_error(capsys, main(["search", str(missing), "-q"]))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert "cannot read" in _one_line_error(capsys, main(["search", str(binary), "-q"]))
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    assert "cannot read" in _one_line_error(capsys, main(["search", str(folder), "-q"]))


def test_out_and_export_destination_that_are_files(write_study, tmp_path, capsys):
    study = write_study()
    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    err = _one_line_error(capsys, main(["search", str(study), "--out", str(a_file), "-q"]))
    assert f"{a_file}: is a file" in err and "(--out, out=)" in err
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "--trials", "1", "-q"]) == 0
    err = _one_line_error(capsys, main(["export", str(study), "--out", str(out), "--trial", "0", "-o", str(a_file)]))
    assert f"{a_file}: is a file" in err and "(-o, path=)" in err
    assert a_file.read_text() == "keep me"


@pytest.mark.parametrize(
    "content, phrase",
    [
        pytest.param(b"", "is empty (0 bytes)", id="zero-bytes"),
        pytest.param(os.urandom(4096), "is not an SQLite database", id="garbage"),
    ],
)
def test_a_damaged_study_db_is_refused_not_restarted(write_study, tmp_path, capsys, content, phrase):
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.db").write_bytes(content)
    assert phrase in _one_line_error(capsys, main(["search", str(write_study()), "--out", str(out), "-q"]))
    assert (out / "study.db").read_bytes() == content and sorted(p.name for p in out.iterdir()) == ["study.db"]


def test_a_foreign_sqlite_database_is_refused(write_study, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with sqlite3.connect(out / "study.db") as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    before = (out / "study.db").read_bytes()
    err = _one_line_error(capsys, main(["search", str(write_study()), "--out", str(out), "-q"]))
    assert "an SQLite database of something else (tables: invoices)" in err
    assert (out / "study.db").read_bytes() == before


def test_a_lost_storage_beside_trained_students_is_refused(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 2})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    students = {p.name: p.read_bytes() for p in (out / "students").iterdir()}
    assert students
    (out / "study.db").write_bytes(b"")  # emptied: refused as such
    assert "is empty" in _one_line_error(capsys, main(["search", str(study), "--out", str(out), "-q"]))
    (out / "study.db").unlink()  # gone: a new study would overwrite the students
    err = _one_line_error(capsys, main(["search", str(study), "--out", str(out), "-q"]))
    assert f"holds {len(students)} trained students" in err
    assert {p.name: p.read_bytes() for p in (out / "students").iterdir()} == students


def test_a_torn_journal_is_repaired_not_appended_to(write_study, tmp_path, capsys, caplog):
    study = write_study(search={"trials": 2})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "--workers", "2", "-q"]) == 0
    journal = out / "study.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 5, "worker_id": "x", "study_id": 0, "datetime_st')  # cut mid-write
    assert main(["search", str(study), "--out", str(out), "--trials", "3", "-q"]) == 0
    assert "cut mid-write" in caplog.text
    assert journal.read_bytes().startswith(whole)  # the whole records kept, the torn one set aside
    assert (out / "study.journal.torn").read_bytes().startswith(b'{"op_code": 5')
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 3  # readable, resumed


def test_a_refused_resume_changes_nothing_stored(write_study, tmp_path, capsys):
    # A teacher from a checkpoint: the same teacher whatever the data (a built-in teacher would
    # retrain on other data, and a changed teacher begins a new teacher version instead).
    torch.manual_seed(0)
    torch.save(helpers_teacher.build().state_dict(), tmp_path / "teacher.pt")
    teacher = {"model": "helpers_teacher:build", "checkpoint": str(tmp_path / "teacher.pt")}
    out = tmp_path / "out"
    assert main(["search", str(write_study(search={"trials": 2}, teacher=teacher)), "--out", str(out), "-q"]) == 0
    with sqlite3.connect(out / "study.db") as db:
        before = db.execute("SELECT value_json FROM study_user_attributes WHERE key = 'naskd'").fetchone()[0]
    changed = write_study(search={"trials": 3}, data={"samples": 500}, teacher=teacher)  # other data: refused
    assert "[data]: differs" in _one_line_error(capsys, main(["search", str(changed), "--out", str(out), "-q"]))
    with sqlite3.connect(out / "study.db") as db:
        after = db.execute("SELECT value_json FROM study_user_attributes WHERE key = 'naskd'").fetchone()[0]
    assert after == before and json.loads(after)["trials"] == 2


def test_a_damaged_student_file_is_not_readable_at_export(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 2})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    student = sorted((out / "students").iterdir())[0]
    student.write_bytes(b"\x00" * 10)
    number = student.stem.split("_")[1]
    dest = tmp_path / "exported"
    err = _one_line_error(capsys, main(["export", str(study), "--out", str(out), "--trial", number, "-o", str(dest)]))
    assert "not a readable student state_dict" in err and not dest.exists()


def test_control_characters_in_a_name_never_reach_the_terminal_raw(write_study, tmp_path, capsys):
    text = _study(search={"trials": 1}).replace('name = "tiny"', 'name = "evil\\u001b[31m\\nname"')
    study = _write(tmp_path, text)
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out)]) == 0
    shown = capsys.readouterr()
    assert "\u001b" not in shown.out + shown.err and "evil\\x1b[31m\\x0aname" in shown.out


def test_a_garbage_journal_is_one_line_and_kept(write_study, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    garbage = b"\x00\x01 not json at all\n"
    (out / "study.journal").write_bytes(garbage)
    err = _one_line_error(capsys, main(["search", str(write_study()), "--out", str(out), "-q"]))
    assert "study.journal" in err and "cannot open" in err
    assert (out / "study.journal").read_bytes() == garbage


def test_a_truncated_study_db_is_one_line_and_kept(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 2})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    db = out / "study.db"
    cut = db.read_bytes()[: db.stat().st_size // 2]
    db.write_bytes(cut)
    code = main(["search", str(study), "--out", str(out), "--trials", "3", "-q"])
    err = _one_line_error(capsys, code)
    assert "study.db" in err
    assert db.read_bytes() == cut  # never restarted over


def test_a_failed_data_load_creates_no_output_folder(tmp_path, capsys):
    study = _write(
        tmp_path,
        _study(data={"dataset": "synthetic", "samples": 400, "shape": [16], "classes": 4, "val_fraction": 0.999}),
    )
    out = tmp_path / "out"
    _one_line_error(capsys, main(["search", str(study), "--out", str(out), "-q"]))
    assert not out.exists()


def test_an_emptied_journal_beside_trained_students_is_refused(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 2})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "--workers", "2", "-q"]) == 0
    students = {p.name: p.read_bytes() for p in (out / "students").iterdir()}
    (out / "study.journal").write_bytes(b"")
    err = _one_line_error(capsys, main(["search", str(study), "--out", str(out), "-q"]))
    assert f"holds {len(students)} trained students" in err
    assert {p.name: p.read_bytes() for p in (out / "students").iterdir()} == students
    assert (out / "study.journal").read_bytes() == b""
