"""The study file at the boundary: every broken file gives one ConfigError ``FILE: KEY: MESSAGE``;
defaults and overrides; the CLI turns bad input into one line on stderr and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, small_study, toml_text

from naskd.cli import main
from naskd.config import (
    CostConfig,
    DataConfig,
    DistillConfig,
    SearchConfig,
    StudyConfig,
    TeacherConfig,
    load_study,
)
from naskd.errors import ConfigError, NaskdError


def _study_without(
    tmp_path: Path, drop: dict[str, list[str]] | None = None, filename: str = "study.toml", **sections: Any
) -> Path:
    """Like ``write_study``, but keys listed in ``drop`` (section -> keys) are removed first."""
    doc = small_study(**sections)
    for section, keys in (drop or {}).items():
        if section == "":
            for k in keys:
                doc.pop(k, None)
        else:
            doc[section] = {k: v for k, v in doc[section].items() if k not in keys}
    path = tmp_path / filename
    path.write_text(toml_text(doc))
    return path


def _error(path: Path, **overrides: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_study(path, **overrides)
    return info.value


# --- broken study files: exact messages -------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "key", "message"),
    [
        pytest.param(
            {"distill": {"temperature": -1.5}},
            "[distill].temperature",
            "must be > 0, got -1.5",
            id="negative-temperature",
        ),
        pytest.param({"distill": {"alpha": 1.5}}, "[distill].alpha", "must be between 0 and 1, got 1.5", id="alpha"),
        pytest.param(
            {"data": {"val_fraction": 0.0}},
            "[data].val_fraction",
            "must be between 0 and 1 (exclusive), got 0.0",
            id="val-fraction-0",
        ),
        pytest.param(
            {"data": {"val_fraction": 1.0}},
            "[data].val_fraction",
            "must be between 0 and 1 (exclusive), got 1.0",
            id="val-fraction-1",
        ),
        pytest.param(
            {"distill": {"batch_size": "32"}},
            "[distill].batch_size",
            "must be an integer, got a string '32'",
            id="string-for-int",
        ),
        pytest.param(
            {"distill": {"batch_size": True}},
            "[distill].batch_size",
            "must be an integer, got a boolean True",
            id="bool-for-int",
        ),
        pytest.param(
            {"distill": {"temperature": True}},
            "[distill].temperature",
            "must be a number, got a boolean True",
            id="bool-for-float",
        ),
        pytest.param(
            {"distill": {"steps": 10, "epochs": 2}},
            "[distill].epochs",
            "give steps or epochs, not both",
            id="steps-and-epochs",
        ),
        pytest.param(
            {"distill": {"steps": 0, "epochs": 0}},
            "[distill].steps",
            "one of steps or epochs must be > 0",
            id="neither-steps-nor-epochs",
        ),
        pytest.param(
            {"search": {"sampler": "grid"}},
            "[search].sampler",
            "must be one of 'tpe', 'nsga2', 'random', got 'grid'",
            id="unknown-sampler",
        ),
        pytest.param(
            {"search": {"sampler": "nsga"}},
            "[search].sampler",
            "must be one of 'tpe', 'nsga2', 'random', got 'nsga' (did you mean 'nsga2'?)",
            id="unknown-sampler-did-you-mean",
        ),
        pytest.param({"seed": -3}, "seed", "must be in [0, 2**32), got -3", id="negative-top-seed"),
        pytest.param({"cost": {"repeats": 2}}, "[cost].repeats", "must be >= 3 to give a p95, got 2", id="repeats"),
        pytest.param({"data": {"classes": 1}}, "[data].classes", "must be >= 2, got 1", id="classes"),
        pytest.param(
            {"fidelity": {"rule": "asha"}},
            "[fidelity].rule",
            "must be one of 'pareto', 'off', got 'asha'",
            id="fidelity-rule",
        ),
        pytest.param(
            {"fidelity": {"reduction_factor": 1}},
            "[fidelity].reduction_factor",
            "must be >= 2, got 1",
            id="fidelity-factor",
        ),
        pytest.param(
            {"fidelity": {"first_rung": 0}}, "[fidelity].first_rung", "must be > 0, got 0", id="fidelity-first-rung"
        ),
        pytest.param(
            {"fidelity": {"first_rung": 30}},
            "[fidelity].first_rung",
            'must be below the target budget ([distill].steps = 30), got 30; or set rule = "off" to train '
            "every student to the target",
            id="fidelity-first-rung-at-target",
        ),
        pytest.param(
            {"fidelity": {"margin": 1.0}}, "[fidelity].margin", "must be in [0, 1), got 1.0", id="fidelity-margin"
        ),
        pytest.param(
            {"fidelity": {"latency_margin": -0.1}},
            "[fidelity].latency_margin",
            "must be in [0, 1), got -0.1",
            id="fidelity-latency-margin",
        ),
        pytest.param(
            {"fidelity": {"rungs": [1, 2]}},
            "[fidelity].rungs",
            "unknown key (known keys: rule, first_rung, reduction_factor, margin, latency_margin)",
            id="fidelity-unknown",
        ),
    ],
)
def test_bad_value_names_file_key_and_problem(write_study, sections, key, message):
    path = write_study(**sections)
    err = _error(path)
    assert str(err) == f"{path}: {key}: {message}"
    assert (err.file, err.key, err.message) == (str(path), key, message)


def test_negative_integer_temperature_is_echoed_as_written(write_study):
    path = write_study(distill={"temperature": -1})
    assert str(_error(path)) == f"{path}: [distill].temperature: must be > 0, got -1"


def test_unknown_top_level_key_suggests_the_close_one(write_study):
    path = write_study(nmae="typo")
    err = _error(path)
    assert err.key == "nmae"
    assert str(err).startswith(f"{path}: nmae: unknown key; did you mean 'name'?")


def test_unknown_section_key_suggests_the_close_one(write_study):
    path = write_study(distill={"temprature": 2.0})
    err = _error(path)
    assert str(err).startswith(f"{path}: [distill].temprature: unknown key; did you mean 'temperature'? (known keys: ")
    known = err.message.split("(known keys: ", 1)[1].rstrip(")").split(", ")
    assert {"temperature", "alpha", "steps", "epochs", "batch_size"} <= set(known)


def test_unknown_objective_suggests_the_close_one(write_study):
    path = write_study(search={"objectives": ["acuracy", "params"]})
    err = _error(path)
    assert err.key == "[search].objectives"
    assert err.message.startswith("must be one of 'accuracy', ")
    assert err.message.endswith("got 'acuracy' (did you mean 'accuracy'?)")
    assert str(err) == f"{path}: [search].objectives: {err.message}"


def test_repeated_objective_is_rejected(write_study):
    path = write_study(search={"objectives": ["accuracy", "accuracy"]})
    assert str(_error(path)) == f"{path}: [search].objectives: must not repeat a metric, got ['accuracy', 'accuracy']"


def test_missing_data_path(tmp_path):
    path = _study_without(tmp_path, drop={"data": ["dataset"]}, data={"path": "nope.npz"})
    assert str(_error(path)) == (
        f"{path}: [data].path: no such file 'nope.npz' (looked in {tmp_path} and the working directory)"
    )


def test_data_path_that_is_a_directory_is_not_readable(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    path = _study_without(tmp_path, drop={"data": ["dataset"]}, data={"path": "dir.npz"})
    err = _error(path)
    assert err.key == "[data].path" and err.message.startswith("no such file 'dir.npz'")


def test_two_data_sources_are_rejected(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"")
    path = _study_without(tmp_path, data={"path": "d.npz"})  # dataset = "synthetic" is kept
    assert str(_error(path)) == f"{path}: [data].path: give only one of dataset, path, loader (got dataset, path)"


def test_missing_teacher_checkpoint(write_study, tmp_path):
    path = write_study(teacher={"model": "helpers_teacher:build", "checkpoint": "missing.pt"})
    assert str(_error(path)) == (
        f"{path}: [teacher].checkpoint: no such file 'missing.pt' (looked in {tmp_path} and the working directory)"
    )


def test_model_without_checkpoint(write_study):
    path = write_study(teacher={"model": "helpers_teacher:build"})
    assert str(_error(path)) == (
        f"{path}: [teacher].checkpoint: a user teacher needs both model "
        f"('module:callable') and checkpoint (a state_dict file)"
    )


def test_checkpoint_without_model(write_study, tmp_path):
    (tmp_path / "w.pt").write_bytes(b"x")
    path = write_study(teacher={"checkpoint": "w.pt"})
    err = _error(path)
    assert err.key == "[teacher].model"


def test_bad_model_reference(write_study):
    path = write_study(teacher={"model": "helpers_teacher.build"})
    assert str(_error(path)) == (
        f"{path}: [teacher].model: must look like 'package.module:function', got 'helpers_teacher.build'"
    )


def test_section_that_is_not_a_table(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("distill = 3\n")
    assert str(_error(path)) == f"{path}: [distill]: must be a table, got int"


def test_bad_toml_syntax(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[distill\ntemperature = 2\n')
    err = _error(path)
    assert err.file == str(path) and err.key == "(toml)"
    assert str(err).startswith(f"{path}: (toml): ")
    assert "line 2" in err.message
    assert "\n" not in str(err)


def test_missing_study_file(tmp_path):
    path = tmp_path / "absent.toml"
    assert str(_error(path)) == f"{path}: (file): no such file"


def test_override_out_of_range(write_study):
    path = write_study()
    assert str(_error(path, trials=0)) == "--trials: --trials: must be > 0, got 0"
    assert str(_error(path, workers=-1)) == "--workers: --workers: must be > 0, got -1"


def test_negative_seed_override_is_a_config_error(write_study):
    path = write_study()
    err = _error(path, seed=-1)
    assert "--seed" in str(err) and "-1" in err.message


def test_config_error_is_a_naskd_error():
    assert issubclass(ConfigError, NaskdError)


# --- defaults and overrides ---------------------------------------------------------------


def test_almost_empty_study_gets_every_documented_default(tmp_path):
    path = tmp_path / "plain.toml"
    path.write_text('description = "nothing but defaults"\n')
    config = load_study(path)
    assert isinstance(config, StudyConfig)
    assert config.name == "plain" and config.slug == "plain"
    assert config.seed == 0
    assert config.data == DataConfig()
    assert config.data.dataset == "digits" and config.data.val_fraction == 0.2
    assert config.teacher == TeacherConfig()
    assert config.distill == DistillConfig()
    assert (config.distill.temperature, config.distill.alpha, config.distill.epochs, config.distill.steps) == (
        4.0,
        0.9,
        5,
        0,
    )
    assert config.distill.optimizer == "adam" and config.distill.cache_teacher is True
    assert config.cost == CostConfig()
    assert (config.cost.device, config.cost.batch_size, config.cost.threads) == ("cpu", 1, 1)
    assert config.cost.max_latency_ms is None and config.cost.max_params is None and config.cost.max_flops is None
    assert config.search == SearchConfig()
    assert config.search.objectives == ("accuracy", "latency_p50_ms", "params")
    assert config.search.directions == ("maximize", "minimize", "minimize")
    assert (config.search.sampler, config.search.trials, config.search.workers, config.search.storage) == (
        "tpe",
        30,
        1,
        None,
    )
    assert config.space.family == "mlp"  # the default space file
    assert config.default_out_dir() == Path("reports") / "plain"


def test_directions_follow_objectives(write_study):
    config = load_study(write_study(search={"objectives": ["kl_to_teacher", "teacher_agreement", "flops"]}))
    assert config.search.directions == ("minimize", "maximize", "minimize")


def test_top_level_seed_flows_into_sections(write_study):
    config = load_study(write_study(seed=7))
    assert config.seed == 7
    assert (config.data.seed, config.teacher.seed, config.distill.seed, config.search.seed) == (7, 7, 7, 7)


def test_section_seed_wins_over_top_level_seed(write_study):
    config = load_study(write_study(seed=7, distill={"seed": 3}, data={"seed": 5}))
    assert (config.data.seed, config.teacher.seed, config.distill.seed, config.search.seed) == (5, 7, 3, 7)


def test_command_line_overrides(write_study):
    path = write_study(seed=1, search={"trials": 4, "workers": 1})
    config = load_study(path, trials=9, workers=3, storage="sqlite:///elsewhere.db", seed=11)
    assert (config.search.trials, config.search.workers, config.search.storage) == (9, 3, "sqlite:///elsewhere.db")
    assert config.seed == 11
    assert (config.data.seed, config.teacher.seed, config.distill.seed, config.search.seed) == (11, 11, 11, 11)
    # None means "not given": the file's values stay.
    same = load_study(path, trials=None, workers=None, storage=None, seed=None)
    assert (same.search.trials, same.search.workers, same.search.storage, same.seed) == (4, 1, None, 1)


def test_integer_for_float_key_is_accepted_as_float(write_study):
    config = load_study(write_study(distill={"temperature": 2, "lr": 1}))
    assert config.distill.temperature == 2.0 and isinstance(config.distill.temperature, float)
    assert isinstance(config.distill.lr, float)


def test_steps_replace_default_epochs(write_study):
    config = load_study(write_study(distill={"steps": 12}))
    assert (config.distill.steps, config.distill.epochs) == (12, 0)


# --- the command line --------------------------------------------------------------------


def _assert_one_line(err: str, *must_contain: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("naskd: ")
    assert "Traceback" not in err
    for s in must_contain:
        assert s in lines[0]


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"distill": {"temperature": -1.5}}, "[distill].temperature"),
        ({"distill": {"temprature": 2.0}}, "[distill].temprature"),
        ({"search": {"objectives": ["acuracy"]}}, "[search].objectives"),
        ({"teacher": {"model": "helpers_teacher:build", "checkpoint": "missing.pt"}}, "[teacher].checkpoint"),
    ],
)
def test_cli_bad_study_is_one_line_exit_2_and_writes_nothing(write_study, tmp_path, capsys, sections, key):
    path = write_study(**sections)
    out = tmp_path / "out"
    assert main(["search", str(path), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    _assert_one_line(captured.err, str(path), key)
    assert captured.out == ""
    assert not out.exists()


def test_cli_missing_study_file(tmp_path, capsys):
    path = tmp_path / "absent.toml"
    assert main(["front", str(path), "--out", str(tmp_path / "out")]) == 2
    _assert_one_line(capsys.readouterr().err, str(path), "no such file")
    assert not (tmp_path / "out").exists()


def test_cli_bad_override(write_study, tmp_path, capsys):
    path = write_study()
    assert main(["search", str(path), "--trials", "0", "--out", str(tmp_path / "out")]) == 2
    _assert_one_line(capsys.readouterr().err, "--trials", "must be > 0")
    assert not (tmp_path / "out").exists()


def test_cli_subprocess_exit_status_2_without_traceback(write_study, tmp_path):
    path = write_study(distill={"alpha": 1.5})
    proc = subprocess.run(
        [sys.executable, "-m", "naskd.cli", "search", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    _assert_one_line(proc.stderr, str(path), "[distill].alpha", "must be between 0 and 1, got 1.5")
    assert proc.stdout == ""
    assert not (tmp_path / "out").exists()


def test_cli_help_mentions_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    top = capsys.readouterr().out
    for word in ("search", "front", "export", "--help"):
        assert word in top

    with pytest.raises(SystemExit) as info:
        main(["search", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "STUDY.toml",
        "--out",
        "--storage",
        "-q",
        "--quiet",
        "-v",
        "--verbose",
        "--trials",
        "--workers",
        "--seed",
        "--help",
    ):
        assert option in text, option

    with pytest.raises(SystemExit) as info:
        main(["export", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--trial", "-o", "--output", "--out", "--storage"):
        assert option in text, option

    with pytest.raises(SystemExit) as info:
        main(["front", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--format", "table", "json", "csv"):
        assert option in text, option


def test_console_script_help_exits_0():
    script = ROOT / ".venv" / "bin" / "naskd"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "naskd.cli"]
    proc = subprocess.run([*cmd, "search", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--trials" in proc.stdout and "--seed" in proc.stdout
