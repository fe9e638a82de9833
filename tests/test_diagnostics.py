"""Scratch baselines and confirmation runs: recorded per trial in the study storage,
resumable, visible in `naskd front --format json` and the table."""

from __future__ import annotations

import json

import optuna

from naskd.cli import main


def _front(study, out, capsys):
    capsys.readouterr()
    assert main(["front", str(study), "--out", str(out), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_baseline_and_confirm_are_recorded_and_resumable(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 4, "sampler": "random"})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    assert (out / "report.html").is_file()

    assert main(["baseline", str(study), "--out", str(out), "-q"]) == 0
    front = _front(study, out, capsys)["front"]
    assert front and all(0.0 <= e["metrics"]["scratch_accuracy"] <= 1.0 for e in front)

    storage = f"sqlite:///{out / 'study.db'}"
    stored = optuna.load_study(study_name="tiny", storage=storage).user_attrs
    recorded = {k: v for k, v in stored.items() if k.startswith("diagnostics:")}
    assert len(recorded) == len(front)
    # Running it again finds nothing to do and changes nothing.
    assert main(["baseline", str(study), "--out", str(out), "-q"]) == 0
    again = optuna.load_study(study_name="tiny", storage=storage).user_attrs
    assert {k: v for k, v in again.items() if k.startswith("diagnostics:")} == recorded

    assert main(["confirm", str(study), "--out", str(out), "--top", "1", "--steps", "60", "-q"]) == 0
    front = _front(study, out, capsys)["front"]
    confirmed = [e for e in front if "long_accuracy" in e["metrics"]]
    assert len(confirmed) == 1 and confirmed[0]["metrics"]["long_steps"] == 60
    best = max(front, key=lambda e: e["metrics"]["accuracy"])
    assert confirmed[0]["number"] == best["number"]
    capsys.readouterr()
    assert main(["front", str(study), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "scratch_accuracy" in table and "long_accuracy" in table

    assert main(["report", str(study), "--out", str(out), "-o", str(tmp_path / "r.html"), "-q"]) == 0
    assert (tmp_path / "r.html").stat().st_size > 1_000_000  # plotly.js embedded: works offline


def test_confirm_rejects_bad_counts(write_study, tmp_path, capsys):
    study = write_study(search={"trials": 1})
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["confirm", str(study), "--out", str(out), "--steps", "0", "-q"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
