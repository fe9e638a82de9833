"""The Optuna and Ray Tune APIs naskd's backends stand on, checked against the installed
libraries, so an upgrade that changes one fails here first, with the API named.

naskd uses only public Optuna and Ray APIs: ``test_naskd_touches_no_private_optuna_or_ray_api``
reads naskd's source and fails, naming the file, line and attribute, when a private one (a
``_name`` of an Optuna or Ray object, or a module such as ``optuna.storages._heartbeat``)
creeps in. The other tests check the public ones that replaced private ones, on real storages:
heartbeats and trial ids through the storage's own methods, ending another process's trial with
``study.tell``, named objectives, and ``NaskdSearch`` as a Tune ``Searcher`` on ask-and-tell.
"""

from __future__ import annotations

import ast
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from naskd.backends import optuna_backend as ob
from naskd.config import StudyConfig, load_study

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("optuna", "ray", "optuna_dashboard")


def _private_names(tmp_path: Path) -> set[str]:
    """Every private attribute of the real Optuna and Ray objects naskd handles: their classes'
    and their instances' own (``study._storage``, ``trial._trial_id``, ``OptunaSearch._ot_study``)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'names.db'}")
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(storage=rdb, directions=["maximize", "minimize"])
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    study.tell(trial, [1.0, 1.0])
    ray_search = OptunaSearch(space=lambda t: {"x": t.suggest_float("x", 0, 1)}, metric="a", mode="max")
    ray_search.suggest("t")
    objects = [rdb, journal, study, trial, study.trials[0], ray_search, Searcher(), FIFOScheduler(), tune.Callback()]
    return {name for o in objects for name in dir(o) if name.startswith("_") and not name.startswith("__")}


def _library_names(tree: ast.Module) -> set[str]:
    """Names a module binds to Optuna or Ray modules and classes (``optuna``, ``tune``, ``Searcher``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] in LIBRARIES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            names |= {a.asname or a.name for a in node.names}
    return names


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def private_uses(source: str, private: set[str]) -> list[tuple[int, str]]:
    """(line, what) for each private Optuna/Ray API ``source`` uses: a private module or name
    imported from them, ``x._name`` or ``getattr(x, "_name")`` for a private attribute of
    theirs; ``self._name`` counts only in a class derived from one of theirs (naskd's own
    classes keep their own ``_name`` attributes)."""
    tree = ast.parse(source)
    library = _library_names(tree)
    found: list[tuple[int, str]] = []

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            names = [a.name for a in node.names]
            if any(p.startswith("_") for p in node.module.split(".") + names):
                found.append((node.lineno, f"from {node.module} import {', '.join(names)}"))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, f"import {a.name}")
                for a in node.names
                if a.name.split(".")[0] in LIBRARIES and any(p.startswith("_") for p in a.name.split("."))
            ]

    def visit(node: ast.AST, derived: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, any(_root(b) in library for b in child.bases))
                continue
            if isinstance(child, ast.Attribute) and child.attr in private:
                receiver = child.value.id if isinstance(child.value, ast.Name) else None
                if receiver not in ("self", "cls") or derived:
                    found.append((child.lineno, ast.unparse(child)))
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Name)
                and child.func.id in ("getattr", "setattr", "hasattr")
                and len(child.args) > 1
                and isinstance(child.args[1], ast.Constant)
                and child.args[1].value in private
            ):
                found.append((child.lineno, ast.unparse(child)))
            visit(child, derived)

    visit(tree, False)
    return sorted(found, key=lambda use: use[0])  # stable: in source order within a line


def test_naskd_touches_no_private_optuna_or_ray_api(tmp_path):
    private = _private_names(tmp_path)
    uses = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in sorted((ROOT / "naskd").rglob("*.py"))
        for line, what in private_uses(path.read_text(), private)
    ]
    assert not uses, (
        "naskd uses private Optuna/Ray APIs, which an upgrade may change without notice; use a "
        "public one (see naskd/backends/optuna_backend.py heartbeats, trial_id):\n" + "\n".join(uses)
    )


def test_the_private_api_check_finds_what_naskd_used_to_use(tmp_path):
    """The check above is not vacuous: the private uses naskd once had are each found."""
    source = """
from optuna.storages._heartbeat import is_heartbeat_enabled
from ray.tune.search.optuna import OptunaSearch

def f(study, t):
    return study._storage.record_heartbeat(t._trial_id)

class Search(OptunaSearch):
    def g(self):
        return self._ot_study, self._ot_trials, self._completed_trials

class Own:
    def h(self):
        return self._ot_trials  # naskd's own class: its own attribute
"""
    found = [what for _, what in private_uses(source, _private_names(tmp_path))]
    assert found == [
        "from optuna.storages._heartbeat import is_heartbeat_enabled",
        "study._storage",
        "t._trial_id",
        "self._ot_study",
        "self._ot_trials",
        "self._completed_trials",
    ], found


def _config(write_study) -> StudyConfig:
    return load_study(write_study())


def test_objective_names_are_set_on_a_new_and_a_resumed_study_and_never_by_a_reader(write_study, tmp_path):
    """``study.set_metric_names`` / ``study.metric_names`` (experimental in Optuna 5.1): what
    plots and optuna-dashboard label the objectives with."""
    config = _config(write_study)
    names = list(config.search.objectives)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)  # silenced by naskd
        study = ob.open_study(config, ob.open_storage(ob.StorageChoice(url, "sqlite")), create=True)
    assert study.metric_names == names, "Study.set_metric_names/metric_names changed"

    # A study made before naskd named its objectives: a reader leaves it alone, a resume names them.
    old = optuna.create_study(study_name="old", storage=url, directions=list(config.search.directions))
    assert old.metric_names is None
    config = load_study(write_study("old.toml", name="old"))
    assert ob.open_study(config, ob.open_storage(ob.StorageChoice(url, "sqlite")), create=False).metric_names is None
    assert ob.open_study(config, ob.open_storage(ob.StorageChoice(url, "sqlite")), create=True).metric_names == names
    assert optuna.load_study(study_name="old", storage=url).metric_names == names


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask-and-tell with heartbeats, as NaskdSearch
def test_heartbeats_through_the_storages_public_methods(tmp_path, monkeypatch):
    """``RDBStorage.get_heartbeat_interval``, ``get_study_id_from_name`` +
    ``get_trial_id_from_study_id_trial_number`` and ``record_heartbeat``: a trial given a
    heartbeat through the id naskd finds is failed by ``optuna.storages.fail_stale_trials``
    once its heartbeats stop; one never given any is left alone, as Optuna documents."""
    monkeypatch.setenv("NASKD_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("NASKD_HEARTBEAT_GRACE", "1")
    url = f"sqlite:///{tmp_path / 'beats.db'}"
    storage = ob.open_storage(ob.StorageChoice(url, "rdb"))
    assert ob.heartbeats(storage) == (storage, 1), "RDBStorage.get_heartbeat_interval changed"
    assert ob.heartbeats(ob.open_storage(ob.StorageChoice(url, "sqlite"))) is None
    assert ob.heartbeats(ob.open_storage(ob.StorageChoice(str(tmp_path / "s.journal"), "journal"))) is None

    study = optuna.create_study(study_name="beats", storage=storage)
    beating, silent = study.ask(), study.ask()
    storage.record_heartbeat(ob.trial_id(storage, study, beating.number))
    time.sleep(2.5)  # past the 1 s grace period
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in optuna.load_study(study_name="beats", storage=url).trials}
    assert states == {beating.number: TrialState.FAIL, silent.number: TrialState.RUNNING}, (
        "the trial id from get_trial_id_from_study_id_trial_number is not the one Optuna's heartbeats use"
    )


def test_a_trial_left_running_by_another_process_is_ended_with_tell(tmp_path):
    """``study.tell(number, state=FAIL)`` ends a RUNNING trial this process never asked for,
    after its attributes are set through the storage by its id."""
    url = f"sqlite:///{tmp_path / 'stale.db'}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    other = optuna.create_study(study_name="s", storage=url)  # the process that died
    other.ask().suggest_float("x", 0.0, 1.0)
    storage = ob.open_storage(ob.StorageChoice(url, "sqlite"))
    study = optuna.load_study(study_name="s", storage=storage)
    assert ob.fail_stale_trials(study, storage) == 1
    (trial,) = optuna.load_study(study_name="s", storage=url).trials
    assert trial.state == TrialState.FAIL, "Study.tell(trial number, state=FAIL) no longer ends a RUNNING trial"
    assert trial.user_attrs["status"] == "failed" and trial.user_attrs["stale"] is True
    assert "ended before it finished" in trial.user_attrs["reason"] and not ob.counts(trial)


def test_naskd_search_is_a_tune_searcher_on_ask_and_tell(write_study, tmp_path):
    """``ray.tune.search.Searcher`` (its constructor's metric/mode lists, ``suggest``,
    ``on_trial_complete``) over ``study.ask``/``study.tell``, without a Ray cluster."""
    from ray.tune.search import Searcher

    from naskd.backends.ray_backend import NUMBER_KEY, SPEC_KEY, NaskdSearch

    config = _config(write_study)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    search = NaskdSearch(config, ob.open_storage(ob.StorageChoice(url, "sqlite")), tmp_path, teacher="fp")
    assert isinstance(search, Searcher) and search.metric == list(config.search.objectives)
    assert search.mode == ["max", "min", "min"], "Searcher(metric=[...], mode=[...]) changed"

    params = search.suggest("tune-1")
    trial = search.optuna_trial("tune-1")
    assert trial is not None and params[NUMBER_KEY] == trial.number == 0
    assert params[SPEC_KEY] == trial.user_attrs["spec"] and params["depth"] == trial.params["depth"]
    assert optuna.load_study(study_name="tiny", storage=url).trials[0].state == TrialState.RUNNING

    search.on_trial_complete("tune-1", result=None, error=True)
    search.on_trial_complete("tune-1", result=None, error=True)  # a repeated end is ignored
    (stored,) = optuna.load_study(study_name="tiny", storage=url).trials
    assert stored.state == TrialState.FAIL and stored.user_attrs["status"] == "failed"
    assert search.optuna_trial("tune-1") is None


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_trial_ids_resolve_on_every_local_storage(kind, tmp_path):
    """The public id lookup works on both of naskd's local storages, as heartbeats and stale
    trials need it."""
    where = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else str(tmp_path / "s.journal")
    storage = ob.open_storage(ob.StorageChoice(where, kind))
    study = optuna.create_study(study_name="ids", storage=storage)
    first, second = study.ask(), study.ask()
    assert ob.trial_id(storage, study, second.number) != ob.trial_id(storage, study, first.number)
    storage.set_trial_user_attr(ob.trial_id(storage, study, second.number), "mark", 1)
    assert study.trials[second.number].user_attrs == {"mark": 1} and study.trials[first.number].user_attrs == {}
