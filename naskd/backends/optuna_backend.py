"""The Optuna backend: storage, sampler, the objective around ``naskd.trial.evaluate``,
resuming, worker processes and reading a study back as plain records.

Storage: an SQLite file in the output directory by default; a journal file
(``study.journal``) when several worker processes share one machine, since SQLite allows
one writer; any SQLAlchemy URL (PostgreSQL included) as given, with heartbeats so a dead
worker's trial does not stay RUNNING.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import math
import multiprocessing as mp
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import optuna
import torch
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from naskd.cache import atomic_write_bytes
from naskd.config import StudyConfig
from naskd.distill.loop import worker_device
from naskd.errors import NaskdError
from naskd.export import save_student
from naskd.fidelity import CheckpointFile, RungGate
from naskd.metrics import budget_limits, direction
from naskd.results import State, StudyFacts, TrialRecord, front_summary, render_csv, render_json, rung_progress
from naskd.results import counts as counts_of
from naskd.terminal import printable
from naskd.trial import StudyContext, TrialResult, build_context, evaluate, full_spec
from naskd.versions import VERSIONS_KEY, current, of_version, version_entry, version_fronts, versions

log = logging.getLogger(__name__)

SQLITE_NAME = "study.db"
JOURNAL_NAME = "study.journal"
#: The study user attribute that holds the study's facts (``study_facts_for``).
FACTS_ATTR = "naskd"
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


# --- storage and study -------------------------------------------------------------------


def redact(url: str) -> str:
    """A storage URL safe for logs and reports: any password replaced by ***."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show only its scheme
        return url.split("://", 1)[0] + "://***"


@dataclass(frozen=True)
class StorageChoice:
    url: str  # what was opened (a URL, or the journal path)
    kind: str  # "sqlite" | "journal" | "rdb"


def choose_storage(config: StudyConfig, out_dir: Path, workers: int) -> StorageChoice:
    """``--storage``/``[search].storage`` when given; otherwise the output directory's journal
    when one exists or several workers will write, else its SQLite file."""
    return storage_choice(config.search.storage, out_dir, workers)


def storage_choice(given: str | None, out_dir: Path, workers: int) -> StorageChoice:
    """The storage a URL or journal path names, or the output directory's (see ``choose_storage``)."""
    if given:
        if given.endswith((".journal", ".log")) and "://" not in given:
            return StorageChoice(str(Path(given).resolve()), "journal")
        return StorageChoice(given, "sqlite" if given.startswith("sqlite") else "rdb")
    journal = out_dir / JOURNAL_NAME
    if journal.exists() or workers > 1:
        return StorageChoice(str(journal.resolve()), "journal")
    return StorageChoice(f"sqlite:///{(out_dir / SQLITE_NAME).resolve()}", "sqlite")


#: The first bytes of every SQLite 3 database file.
_SQLITE_HEADER = b"SQLite format 3\x00"


def check_storage_file(choice: StorageChoice, *, repair: bool = True) -> None:
    """A local storage file that exists must be a study storage, checked before anything opens
    it (opening writes): an empty or foreign SQLite file is refused, never restarted; a journal
    whose last record was cut mid-line (a crash during a write) is repaired by setting the torn
    bytes aside in ``<journal>.torn``, never appended to (under the journal's own write lock,
    so a record another process is writing is never taken for a torn one). ``repair=False``
    (commands that only read) leaves a journal as it is: Optuna's reader skips a partial last
    line.

    Raises:
        NaskdError: the file is not a study storage, with what was found.
    """
    if choice.kind == "sqlite" and choice.url.startswith("sqlite:///"):
        path = Path(choice.url.removeprefix("sqlite:///"))
        if not path.is_file():
            return
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
        if not head:
            raise NaskdError(
                f"{path}: is empty (0 bytes), not a study storage; move it away (a crash or a copy "
                "gone wrong?) or use a new --out"
            )
        if head != _SQLITE_HEADER:
            raise NaskdError(f"{path}: is not an SQLite database; move it away or use a new --out")
        tables = _sqlite_tables(path)
        if tables and "studies" not in tables:
            raise NaskdError(
                f"{path}: is an SQLite database of something else (tables: {', '.join(sorted(tables)[:5])}), "
                "not an Optuna study storage; use a new --out"
            )
    elif choice.kind == "journal" and repair:
        _repair_torn_journal(Path(choice.url))


def _sqlite_tables(path: Path) -> set[str]:
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise NaskdError(f"{path}: not a readable SQLite database ({exc})") from None


def _repair_torn_journal(path: Path) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        return
    # Optuna's writers hold this lock while they append; a crashed writer's lock goes stale.
    lock = JournalFileSymlinkLock(str(path))
    if not lock.acquire():
        raise NaskdError(f"{path}: its write lock is held by another process; try again when it is released")
    try:
        _cut_torn_record(path)
    finally:
        lock.release()


def _cut_torn_record(path: Path) -> None:
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1  # 0: the only record is torn
    torn = path.with_name(path.name + ".torn")
    atomic_write_bytes(torn, data[keep:])
    os.truncate(path, keep)
    log.warning(
        "%s: its last record was cut mid-write (%d bytes, a crash while writing?); set aside in %s and the "
        "journal repaired to its last whole record",
        path,
        len(data) - keep,
        torn,
    )


def server_url(url: str) -> str:
    """A plain ``postgresql://`` URL with the driver naskd installs: SQLAlchemy 2.1 picks
    psycopg 3 for it by default, and naskd's ``postgres`` extra ships psycopg2."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # left for the storage to report
        return url
    if parsed.drivername != "postgresql" or importlib.util.find_spec("psycopg") is not None:
        return url
    if importlib.util.find_spec("psycopg2") is None:
        return url
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def open_storage(choice: StorageChoice) -> optuna.storages.BaseStorage:
    try:
        if choice.kind == "journal":
            return JournalStorage(JournalFileBackend(choice.url))
        if choice.kind == "rdb":
            # Heartbeats let other workers fail the trial of a worker that died mid-trial.
            interval, grace = heartbeat_settings()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    server_url(choice.url),
                    heartbeat_interval=interval,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=_log_stale,
                )
        return RDBStorage(choice.url)
    except Exception as exc:  # bad URL, missing driver, unreachable server
        raise NaskdError(
            f"storage {redact(choice.url)}: cannot open ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None


def heartbeat_settings() -> tuple[int, int]:
    """Heartbeat interval and grace period in seconds for server databases: 20 and 60, or
    ``$NASKD_HEARTBEAT_INTERVAL`` and ``$NASKD_HEARTBEAT_GRACE`` (tests use a few seconds)."""
    values = []
    for name, default in (("NASKD_HEARTBEAT_INTERVAL", 20), ("NASKD_HEARTBEAT_GRACE", 60)):
        raw = os.environ.get(name, "")
        try:
            value = int(raw) if raw else default
        except ValueError:
            value = 0
        if value <= 0:
            raise NaskdError(f"${name}: must be a positive number of seconds, got {raw!r}")
        values.append(value)
    return values[0], values[1]


class Heartbeats(NamedTuple):
    """A storage that takes heartbeats, and the seconds between a trial's heartbeats."""

    storage: RDBStorage
    interval: int


def heartbeats(storage: optuna.storages.BaseStorage) -> Heartbeats | None:
    """``storage`` with its heartbeat interval when it takes heartbeats (a server database as
    ``open_storage`` opens it), else None. Of naskd's storages only ``RDBStorage`` has
    heartbeats, and its interval is None when they are off (SQLite files)."""
    if isinstance(storage, RDBStorage):
        interval = storage.get_heartbeat_interval()
        if interval is not None:
            return Heartbeats(storage, interval)
    return None


def trial_id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of trial ``number`` of ``study``: what the storage's per-trial methods
    (heartbeats, attributes of a trial this process does not hold) take."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def _log_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Called by Optuna for a trial it failed because its worker's heartbeat stopped. The trial
    is finished by then and takes no more attributes; having no naskd status marks it (see
    ``counts``). A student saved at a rung is continued by a later trial."""
    log.warning("trial %d: its worker stopped sending heartbeats; marked failed, not counted", trial.number)
    continue_later(study, trial)


def continue_later(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue the student of an interrupted trial to be continued from its last rung: the next
    trial gets its parameters (so the same spec) and ``continues`` = its number, and picks up
    its saved training state. False when no state was saved or this machine cannot see it."""
    path = trial.user_attrs.get("checkpoint")
    if not path or not Path(path).is_file():
        return False
    earlier = trial.user_attrs.get("lifelong_from")
    study.enqueue_trial(
        trial.params,
        user_attrs={"continues": trial.number, **({"lifelong_from": earlier} if earlier is not None else {})},
    )
    log.warning("trial %d: its student is continued from its last rung by a later trial", trial.number)
    return True


#: The statuses with which naskd itself ends a trial FAIL; any other FAIL was not naskd's doing.
_FAILED_STATUSES = ("failed", "invalid")
#: The reason shown for a trial that ended with no outcome told by naskd.
UNFINISHED_REASON = "its process ended or stopped sending heartbeats before it finished; not counted"


def make_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    """The sampler named in ``[search].sampler``, always seeded; never Optuna's implicit default."""
    seed = config.search.seed
    if config.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if config.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # multivariate + group model the conditional (define-by-run) space jointly;
    # constant_liar keeps parallel workers from sampling the same point. `group` is marked
    # experimental by Optuna; the warning says nothing the user can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def open_study(config: StudyConfig, storage: optuna.storages.BaseStorage, *, create: bool) -> optuna.Study:
    directions = list(config.search.directions)
    try:
        if create:
            study = optuna.create_study(
                study_name=config.name,
                storage=storage,
                directions=[StudyDirection[d.upper()] for d in directions],
                sampler=make_sampler(config),
                load_if_exists=True,
            )
        else:
            study = optuna.load_study(study_name=config.name, storage=storage, sampler=make_sampler(config))
    except KeyError:
        raise NaskdError(f"no study named {config.name!r} in this storage; run `naskd search` first") from None
    stored = [d.name.lower() for d in study.directions]
    if stored != directions:
        raise NaskdError(
            f"{config.file}: [search].objectives: the stored study optimises {len(stored)} objectives "
            f"({', '.join(stored)}); use a new --out to change them"
        )
    names = list(config.search.objectives)
    # Named objectives label plots and optuna-dashboard's columns; a study made before naskd
    # named them gains the names when it is resumed. Read-only commands (create=False) never write.
    if create and study.metric_names != names:
        # set_metric_names is marked experimental by Optuna; the warning says nothing the user can act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    return study


def refuse_orphan_students(storage: optuna.storages.BaseStorage, config: StudyConfig, out_dir: Path) -> None:
    """A storage without this study beside saved students means the storage was lost or
    replaced: starting a new study there would overwrite those students, so it is refused."""
    students = sorted((out_dir / "students").glob("trial_*.pt"))
    if not students:
        return
    try:
        storage.get_study_id_from_name(config.name)
    except KeyError:
        raise NaskdError(
            f"{out_dir}: holds {len(students)} trained students but its storage has no study named "
            f"{config.name!r} (lost, emptied or replaced?); restore the storage or use a new --out"
        ) from None


def study_facts_for(
    config: StudyConfig, context: StudyContext, choice: StorageChoice, command: str | None
) -> dict[str, Any]:
    """What a study records about itself (stored as ``study.user_attrs["naskd"]``): the search
    set-up, the data split and the teacher's figures, and what the latest run asked for."""
    return {
        "name": config.name,
        "objectives": list(config.search.objectives),
        "sampler": config.search.sampler,
        "seed": config.search.seed,
        "space": {"family": config.space.family, "source": str(config.space.source), "params": config.space.summary()},
        "budgets": budget_limits(config.cost),
        "storage": redact(choice.url),
        "command": command or "",
        "trials": config.search.trials,
        "description": config.raw.get("description", ""),
        "versions": library_versions(),
        # Where the study file is and the seed it ran with, so naskd.load(OUT) rebuilds it as it ran.
        "study_file": str(config.file.resolve()),
        "study_seed": config.seed,
        **context.describe(),
    }


#: Facts that describe the latest run rather than the study; refreshed on every resume.
_RUN_FACTS = ("trials", "command", "versions", "description", "study_file", "study_seed")


def check_facts(study: optuna.Study, config: StudyConfig, facts: dict[str, Any]) -> bool:
    """Record data/teacher facts on first run; a changed teacher begins a new teacher version
    (True; with it, data may change too); refuse different data under the same teacher, or
    another budget or objectives."""
    stored = study.user_attrs.get(FACTS_ATTR)
    if stored is None:
        study.set_user_attr(FACTS_ATTR, {**facts, VERSIONS_KEY: [version_entry(1, facts, 0)]})
        return False
    if stored.get("objectives") != facts["objectives"]:
        raise NaskdError(f"{config.file}: [search].objectives: the stored study uses {stored.get('objectives')}")
    if stored["teacher"].get("fingerprint") != facts["teacher"].get("fingerprint"):
        # A new teacher version (lifelong): the study goes on; what it holds keeps its version.
        listed = versions(stored)
        entry = version_entry(len(listed) + 1, facts, len(study.get_trials(deepcopy=False)))
        study.set_user_attr(
            FACTS_ATTR,
            {
                **stored,
                **{k: facts.get(k) for k in (*_RUN_FACTS, "teacher", "data", "fidelity")},
                VERSIONS_KEY: [*listed, entry],
            },
        )
        log.warning(
            "%s: the teacher differs from the one this study last ran with (fingerprint %s, now %s): "
            "teacher version %d begins; the earlier versions' trials are kept",
            config.file,
            stored["teacher"].get("fingerprint"),
            facts["teacher"].get("fingerprint"),
            entry["version"],
        )
        return True
    if stored["data"].get("fingerprint") != facts["data"].get("fingerprint"):
        raise NaskdError(
            f"{config.file}: [data]: differs from the one this study was run with "
            f"(fingerprint {stored['data'].get('fingerprint')} vs {facts['data'].get('fingerprint')}); "
            "new data comes with a new teacher version (change [teacher] too), or use a new --out "
            "for a new study"
        )
    before, now = stored.get("fidelity"), facts["fidelity"]
    # Every figure on the front is measured at the target budget and every rung record is
    # compared with others at the same step: a resume must keep both.
    if before is not None and (before.get("target_steps"), before.get("rungs")) != (now["target_steps"], now["rungs"]):
        raise NaskdError(
            f"{config.file}: [distill] / [fidelity]: this study was run with a target budget of "
            f"{before.get('target_steps')} steps and rungs at {before.get('rungs')} steps, now "
            f"{now['target_steps']} and {now['rungs']}; use a new --out for a new study"
        )
    # Written only once every check has passed: a refused resume leaves the stored facts alone.
    updated = {**stored, **{k: facts.get(k) for k in _RUN_FACTS}}
    if before is None:  # a study from before multi-fidelity search: its facts gain the plan
        updated["fidelity"] = now
    if updated != stored:  # what the latest run asked for (trial count, command, versions)
        study.set_user_attr(FACTS_ATTR, updated)
    return False


def continue_front(study: optuna.Study, config: StudyConfig, out_dir: Path) -> int:
    """Queue the Pareto students of the previous teacher version to be continued under the
    current one (learning without forgetting): each becomes a new trial with the same
    parameters and ``lifelong_from`` = its trial number. Returns how many were queued."""
    facts = study.user_attrs.get(FACTS_ATTR, {})
    listed = versions(facts)
    if len(listed) < 2:
        return 0
    version = int(listed[-1]["version"])
    trials = study.get_trials(deepcopy=False)
    if any(
        t.user_attrs.get("lifelong_from") is not None and t.user_attrs.get("teacher_version") == version for t in trials
    ) or any(t.state == TrialState.WAITING for t in trials):
        return 0  # queued already (a resumed run)
    records = [to_record(t) for t in trials if not t.user_attrs.get("surplus")]
    summary = version_fronts(study_facts(study, config), records, listed[-2:-1])[0]
    queued = 0
    for entry in summary["front"]:
        number = entry["number"]
        weights = out_dir / "students" / f"trial_{number}.pt"
        spec = entry["spec"]
        why = (
            "its weights are not in " + str(weights.parent)
            if not weights.is_file()
            else "an int8 student keeps no float weights"
            if spec.get("precision") == "int8"
            else "a shrink student is cut from its own teacher"
            if spec.get("family") == "shrink"
            else None
        )
        if why:
            log.warning("trial %d: not continued under teacher version %d (%s)", number, version, why)
            continue
        study.enqueue_trial(trials[number].params, user_attrs={"lifelong_from": number})
        queued += 1
    log.info(
        "teacher version %d: %d Pareto student(s) of version %d continue from their trained weights",
        version,
        queued,
        version - 1,
    )
    return queued


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    """Mark trials left RUNNING by a killed process as FAIL so they do not block a resume.

    Only for single-machine storages (SQLite, journal), where the launcher is the only
    writer when it starts; server databases use heartbeats instead.
    """
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        # The trial belongs to no live Trial object here: its attributes go through the storage.
        held = trial_id(storage, study, t.number)
        storage.set_trial_user_attr(held, "status", "failed")
        storage.set_trial_user_attr(
            held,
            "reason",
            "the process running this trial ended before it finished"
            + ("; its student is continued from its last rung by a later trial" if continue_later(study, t) else ""),
        )
        storage.set_trial_user_attr(held, "stale", True)
        study.tell(t.number, state=TrialState.FAIL)
    if stale:
        log.warning("marked %d trial(s) left running by an ended process as failed", len(stale))
    return len(stale)


def counts(t: FrozenTrial) -> bool:
    """Whether a trial counts toward the requested number: running, or finished with an
    outcome naskd told. A stale trial (its process died: marked ``stale`` at a restart, or
    failed by Optuna's heartbeat check, which leaves a FAIL that naskd did not decide) and a
    surplus trial (see ``_optimize_until``) do not."""
    if t.user_attrs.get("stale") or t.user_attrs.get("surplus"):
        return False
    return t.state != TrialState.FAIL or t.user_attrs.get("status") in _FAILED_STATUSES


def counted_trials(study: optuna.Study) -> int:
    """Trials that count toward the requested number: finished ones plus those other workers
    are running now."""
    trials = study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.RUNNING))
    return sum(1 for t in trials if counts(t))


def library_versions() -> dict[str, str]:
    """Versions of the libraries a study's numbers depend on, recorded with the study."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("naskd", "torch", "optuna", "numpy", "plotly"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


# --- the objective -----------------------------------------------------------------------


def objective_values(result: TrialResult, objectives: tuple[str, ...]) -> tuple[float, ...]:
    """Values told to Optuna. An infeasible trial was never trained: its quality metrics take
    their worst value (the sampler ranks it by its constraints first anyway)."""
    values = []
    for name in objectives:
        if name in result.metrics:
            values.append(float(result.metrics[name]))
        else:
            values.append(0.0 if direction(name) == "maximize" else 1e12)
    return tuple(values)


def record(
    trial: optuna.Trial, result: TrialResult, objectives: tuple[str, ...], students_dir: Path | None
) -> tuple[float, ...]:
    """Store a result on the Optuna trial and return its values (NaNs make Optuna mark it FAIL;
    a pruned trial's values are never told: see ``Objective``). The spec is on the trial
    already: both backends store it when they sample it."""
    trial.set_user_attr("status", result.status)
    trial.set_user_attr("metrics", result.metrics)
    trial.set_user_attr("steps", result.steps)
    trial.set_user_attr("rungs", result.rungs)
    if result.terms:
        trial.set_user_attr("loss_terms", result.terms)
    if result.reason:
        trial.set_user_attr("reason", result.reason)
    for key, value in result.constraints.items():
        trial.set_constraint(key, value)
    if result.status in ("failed", "invalid"):
        log.info("trial %d %s: %s", trial.number, result.status, result.reason)
        return tuple(math.nan for _ in objectives)
    if result.status == "complete" and students_dir is not None and result.student is not None:
        save_student(result.student, students_dir / f"trial_{trial.number}.pt")
    return objective_values(result, objectives)


class StudyLedger:
    """Rung records as trial user attributes (``rungs``) in the study storage, so every worker
    of every backend on any storage judges against the same records. Stale, surplus and
    heartbeat-failed trials are left out: a continued student re-records its own rungs."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        self.study, self.trial = study, trial

    def peers(self, rung: int) -> list[dict[str, float]]:
        return rung_peers(
            self.study, rung, exclude=self.trial.number, version=self.trial.user_attrs.get("teacher_version", 1)
        )

    def record(self, entries: list[dict[str, Any]]) -> None:
        self.trial.set_user_attr("rungs", entries)


def rung_peers(study: optuna.Study, rung: int, exclude: int | None = None, version: int = 1) -> list[dict[str, float]]:
    """Metrics recorded at ``rung`` by the study's counted trials of one teacher version
    (``exclude``: one trial number)."""
    out: list[dict[str, float]] = []
    for t in study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.RUNNING)):
        if t.number == exclude or not counts(t) or t.user_attrs.get("teacher_version", 1) != version:
            continue
        out.extend(e["metrics"] for e in t.user_attrs.get("rungs", ()) if e.get("rung") == rung)
    return out


class Objective:
    """``objective(trial) -> tuple`` for ``study.optimize``: samples a spec, runs the trial
    rung by rung (judged against the study's rung records), records everything on the trial.
    A student stopped at a rung raises ``optuna.TrialPruned`` after its record is stored. The
    study context (data, teacher, teacher outputs) is built once, on construction.

    With ``out_dir``, trained students go to ``OUT/students`` and each student's state at its
    latest rung to ``OUT/checkpoints`` (removed when its trial ends), from which a trial cut
    short by a killed process is continued."""

    def __init__(
        self, config: StudyConfig, *, context: StudyContext | None = None, out_dir: Path | None = None
    ) -> None:
        self.config = config
        self.context = context if context is not None else build_context(config)
        self.out_dir = out_dir
        self.directions = list(config.search.directions)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        spec = full_spec(self.config.space.sample(trial), self.config, self.context.teacher.fingerprint)
        trial.set_user_attr("spec", spec)  # now, not at the end: a continued trial checks it
        trial.set_user_attr("teacher_version", current(trial.study.user_attrs.get(FACTS_ATTR, {})))
        gate = RungGate(self.context.plan, tuple(self.config.search.objectives), StudyLedger(trial.study, trial))
        checkpoint, carried = resume_point(trial, spec, self.out_dir)
        result = evaluate(
            spec,
            self.context,
            gate=gate,
            checkpoint=checkpoint,
            carried=carried,
            previous=earlier_student(trial, self.out_dir),
        )
        values = record(
            trial,
            result,
            self.config.search.objectives,
            self.out_dir / "students" if self.out_dir is not None else None,
        )
        if result.status == "pruned":
            raise optuna.TrialPruned(result.reason)
        return values


def earlier_student(trial: optuna.Trial, out_dir: Path | None) -> dict[str, Any] | None:
    """The trained weights a lifelong trial continues (``lifelong_from``: the earlier
    version's trial); None for any other trial."""
    number = trial.user_attrs.get("lifelong_from")
    if number is None or out_dir is None:
        return None
    return read_student(Path(out_dir) / "students" / f"trial_{number}.pt")


def read_student(path: Path) -> dict[str, Any]:
    """A saved student's state_dict, read with ``weights_only``.

    Raises:
        NaskdError: the file cannot be read (names it).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # missing, truncated or foreign: say which file, never half-load it
        raise NaskdError(
            f"{path}: the saved student cannot be read to continue it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})"
        ) from None


def resume_point(
    trial: optuna.Trial, spec: dict[str, Any], out_dir: Path | None
) -> tuple[CheckpointFile | None, list[dict[str, Any]]]:
    """This trial's checkpoint file (recorded as ``checkpoint``) and, for a trial that
    continues an interrupted one (``continues``, same spec), that trial's saved state moved
    into it and its rung entries; None without an output directory."""
    if out_dir is None:
        return None, []
    path = (Path(out_dir) / "checkpoints" / f"trial_{trial.number}.pt").resolve()
    trial.set_user_attr("checkpoint", str(path))
    before = trial.user_attrs.get("continues")
    if before is None:
        return CheckpointFile(path), []
    old = trial.study.get_trials(deepcopy=False)[before]
    source = Path(old.user_attrs.get("checkpoint") or path)
    if old.user_attrs.get("spec") != spec or not source.is_file():
        log.warning(
            "trial %d: the state of trial %d cannot be continued (%s); the student starts again",
            trial.number,
            before,
            "the spec differs" if source.is_file() else "no saved state here",
        )
        return CheckpointFile(path), []
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, path)  # the state moves with the student: one file per student, never two
    return CheckpointFile(path), list(old.user_attrs.get("rungs", ()))


def optuna_objective(config: StudyConfig | str | Path) -> Objective:
    """A callable for a user's own ``study.optimize``.

    Example::

        objective = naskd.optuna_objective("studies/digits.toml")
        study = optuna.create_study(directions=objective.directions)
        study.optimize(objective, n_trials=20)

    Failed and invalid trials return NaNs, which Optuna records as FAIL without stopping the
    study; the reason is in ``trial.user_attrs["reason"]``.
    """
    from naskd.config import load_study

    if not isinstance(config, StudyConfig):
        config = load_study(config)
    return Objective(config)


# --- reading a study back ----------------------------------------------------------------


def to_record(t: FrozenTrial) -> TrialRecord:
    """An Optuna trial as a framework-free record."""
    status = t.user_attrs.get("status")
    state: State
    if t.state == TrialState.COMPLETE:
        state = "infeasible" if status == "infeasible" else "complete"
    elif t.state == TrialState.PRUNED:
        state = "pruned"
    elif t.state == TrialState.FAIL:
        state = "failed"
    else:
        state = "running"
    reason = t.user_attrs.get("reason")
    if (
        t.state == TrialState.FAIL
        and not counts(t)
        and not t.user_attrs.get("stale")
        and not t.user_attrs.get("surplus")
    ):
        reason = UNFINISHED_REASON  # failed by Optuna's heartbeat check, which cannot leave a reason
    return TrialRecord(
        number=t.number,
        state=state,
        spec=t.user_attrs.get("spec", {}),
        metrics=t.user_attrs.get("metrics", {}),
        reason=reason,
        steps=t.user_attrs.get("steps"),
        rungs=tuple(t.user_attrs.get("rungs", ())),
        terms=t.user_attrs.get("loss_terms", {}),
        teacher_version=int(t.user_attrs.get("teacher_version", 1)),
        continued_from=t.user_attrs.get("lifelong_from"),
    )


def study_facts(study: optuna.Study, config: StudyConfig) -> StudyFacts:
    stored = study.user_attrs.get(FACTS_ATTR, {})
    return StudyFacts(
        name=config.name,
        objectives=tuple(stored.get("objectives", config.search.objectives)),
        teacher=stored.get("teacher", {}),
        data=stored.get("data", {}),
        fidelity=stored.get("fidelity", {}),
    )


def load_summary(config: StudyConfig, out_dir: Path) -> tuple[dict[str, Any], list[TrialRecord], optuna.Study]:
    """The front summary, all records and the study, from an existing output directory."""
    storage = open_existing(config.search.storage, out_dir)
    return load_summary_from(open_study(config, storage, create=False), config)


def open_existing(given: str | None, out_dir: Path) -> optuna.storages.BaseStorage:
    """The storage of a study that was run (``given``, else the output directory's), opened to
    read: a torn journal is left as it is.

    Raises:
        NaskdError: the output directory holds no storage, or its file is damaged or foreign.
    """
    choice = storage_choice(given, out_dir, workers=1)
    if choice.kind != "rdb" and not Path(choice.url.removeprefix("sqlite:///")).exists():
        raise NaskdError(
            f"{out_dir}: no study here (looked for {SQLITE_NAME} and {JOURNAL_NAME}); "
            "run `naskd search` first or pass --out"
        )
    check_storage_file(choice, repair=False)
    return open_storage(choice)


def stored_facts(out_dir: Path, given: str | None = None, *, name: str | None = None) -> dict[str, Any]:
    """What a study records about itself (``FACTS_ATTR``), read without writing: the study
    ``name``, or the storage's only study; ``{}`` when there is no study of that name
    (``load_summary`` then says so).

    Raises:
        NaskdError: no storage, a damaged one, or (without ``name``) not exactly one study in it.
    """
    storage = open_existing(given, out_dir)
    names = [s.study_name for s in storage.get_all_studies()]
    if name is None:
        if len(names) != 1:
            where = redact(given) if given else str(out_dir)
            raise NaskdError(
                f"{where}: its storage holds {len(names)} studies ({', '.join(names) or 'none'}); load the "
                "study file instead: naskd.load('STUDY.toml', out=...)"
            )
        name = names[0]
    if name not in names:
        return {}
    return dict(storage.get_study_user_attrs(storage.get_study_id_from_name(name)).get(FACTS_ATTR, {}))


def write_front(out_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_bytes(out_dir / "front.json", (render_json(summary) + "\n").encode())
    atomic_write_bytes(out_dir / "front.csv", render_csv(summary).encode())


# --- running a search --------------------------------------------------------------------


class Progress:
    """Trial n/N, elapsed and ETA (tqdm), best accuracy so far and the front size."""

    def __init__(self, config: StudyConfig, target: int, done: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.config = config
        self.bar = tqdm(
            total=target,
            initial=min(done, target),
            desc=f"search {printable(config.name)}",
            unit="trial",
            disable=not enabled,
            dynamic_ncols=True,
        )

    def refresh(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        records = [to_record(t) for t in trials if not t.user_attrs.get("surplus") and counts(t)]
        finished = sum(1 for t in trials if t.state in _FINISHED and counts(t))
        facts = study_facts(study, self.config)
        summary = front_summary(facts, records)
        quality = self.config.search.objectives[0] if "accuracy" not in self.config.search.objectives else "accuracy"
        best = max((r.metrics.get(quality, math.nan) for r in records if r.state == "complete"), default=math.nan)
        postfix = {
            "best_acc" if quality == "accuracy" else f"best {quality}": f"{best:.4f}",
            "front": len(summary["front"]),
        }
        label, reached = rung_progress(facts.fidelity, records)
        if label:
            postfix[label] = reached
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(max(0, min(finished, self.bar.total) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


def _creation_lock_path(choice: StorageChoice) -> Path | None:
    """A lock file beside a journal: the processes that share a journal file share this
    machine too, so they can take turns to count and create trials."""
    # Not "<journal>.lock": Optuna's own journal lock is a symlink of that name.
    return Path(choice.url + ".naskd-lock") if choice.kind == "journal" else None


class _CreationLock:
    """An exclusive lock on a file (``flock``), or nothing when there is no file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None

    def acquire(self) -> None:
        if self.path is not None and self._fh is None:
            import fcntl

            self._fh = open(self.path, "ab")
            fcntl.flock(self._fh, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _optimize_until(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    objective: Objective,
    target: int,
    on_trial: Callable[[], None] | None = None,
    *,
    lock_path: Path | None = None,
) -> None:
    """Run trials one at a time until the study holds exactly ``target`` counted trials, with
    any number of processes (on any number of machines) sharing the study, no coordinator.

    Every storage serialises trial creation (RDB: a lock on the study row; journal: the log's
    lock; SQLite: one writer), so once a trial exists, all trials numbered before it are
    visible. A new trial takes a slot only if fewer than ``target`` counted trials (running,
    finished or queued to continue a student) come before it; otherwise it is surplus: ended at
    once as FAIL with ``surplus`` set, never sampled or trained, never counted, left out of the
    front. A trial can only go from counted to not
    counted (stale), never back, so the count cannot overshoot; a slot freed by a stale trial
    is run again by this loop. With heartbeats (server databases) a worker whose slots are all
    taken but not all finished waits instead of leaving: a dead worker's running trial is
    failed after the grace period, and its slot is run again here.

    With a journal file (``lock_path``), workers on this machine also hold a file lock from
    the count to the trial's creation, so races, and surplus trials, do not happen there.
    ``storage`` is the one ``study`` was opened on.
    """
    beats = heartbeats(storage)
    heartbeat = beats is not None
    poll_s = float(beats.interval) if beats is not None else 0.0
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def take_slot(trial: optuna.Trial) -> tuple[float, ...]:
        if beats is not None:  # now, not when Optuna's heartbeat thread first runs: a trial with none is never failed
            beats.storage.record_heartbeat(trial_id(storage, study, trial.number))
        trial.set_user_attr("worker", worker)
        # A queued (WAITING) trial holds its slot too: it was numbered when queued (a student to
        # continue), and the next worker to ask runs it; without it, a trial created meanwhile
        # would not see it, and both would run.
        before = study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.RUNNING, TrialState.WAITING))
        taken = sum(1 for t in before if t.number < trial.number and counts(t))
        lock.release()  # this trial exists and holds its slot (or is surplus): others may count now
        if taken >= target:
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("status", "surplus")
            trial.set_user_attr("reason", f"started after the study already held its {target} trials; not run")
            return tuple(math.nan for _ in objective.directions)
        return objective(trial)

    lock = _CreationLock(lock_path)
    while True:
        if heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        lock.acquire()
        try:
            live = [t for t in study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.RUNNING)) if counts(t)]
            if sum(1 for t in live if t.state != TrialState.RUNNING) >= target:
                return
            if len(live) >= target:
                if not heartbeat:  # without heartbeats a dead worker's trial is failed at the next start
                    return
                lock.release()
                time.sleep(poll_s)
                continue
            study.optimize(take_slot, n_trials=1, gc_after_trial=False)
        finally:
            lock.release()
        if on_trial is not None:
            on_trial()


def _worker_main(
    config: StudyConfig,
    choice: StorageChoice,
    out_dir: Path,
    target: int,
    threads: int,
    teacher_info: dict[str, Any],
    log_level: int,
    device: str | None = None,
) -> None:
    """Entry point of a worker process (spawned: a fresh interpreter, no forked torch state);
    ``device``: the GPU this worker trains on when the machine has several."""
    import torch

    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(threads)
    context = build_context(config, teacher_info=teacher_info, device=device)
    storage = open_storage(choice)
    study = open_study(config, storage, create=False)
    study.sampler.reseed_rng()  # same seed in every worker would sample the same students
    _optimize_until(
        study,
        storage,
        Objective(config, context=context, out_dir=out_dir),
        target,
        lock_path=_creation_lock_path(choice),
    )


def run_search(
    config: StudyConfig, out_dir: Path, *, show_progress: bool = True, command: str | None = None
) -> dict[str, Any]:
    """Run (or resume) the study up to ``[search].trials`` counted trials and write the front.

    Args:
        config: the validated study.
        out_dir: where the study storage (by default), students and front files go.
        show_progress: draw a progress bar.
        command: the command line that reproduces this run, recorded with the study.

    Returns:
        The front summary (see ``naskd.results.front_summary``).
    """
    workers = config.search.workers
    choice = choose_storage(config, out_dir, workers)
    if workers > 1 and choice.kind == "sqlite":
        log.warning(
            "SQLite allows one writer at a time; with %d workers prefer a journal file or a server database", workers
        )
    check_storage_file(choice)  # before anything is built or written
    context = build_context(config)
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the data and teachers have loaded
    storage = open_storage(choice)
    refuse_orphan_students(storage, config, out_dir)
    study = open_study(config, storage, create=True)
    facts = study_facts_for(config, context, choice, command)
    check_facts(study, config, facts)
    if choice.kind != "rdb":
        fail_stale_trials(study, storage)
    target = run_target(study, config, out_dir)
    log.info("study %s: storage %s, %d/%d trials done", config.name, redact(choice.url), counted_trials(study), target)
    try:
        _search(config, choice, out_dir, target, context, storage, study, show_progress)
    except Exception as exc:
        lost = _lost_storage(exc)
        if lost is None:
            raise
        raise NaskdError(
            f"storage {redact(choice.url)}: lost during the study ({type(lost).__name__}: "
            f"{_first_line(lost)}); completed trials are kept: run the same command again once it "
            "is reachable"
        ) from None
    summary, _, _ = load_summary_from(study, config)
    write_front(out_dir, summary)
    return summary


def run_target(study: optuna.Study, config: StudyConfig, out_dir: Path) -> int:
    """How many counted trials this run leaves the study holding: ``[search].trials``, or
    more when a new teacher version's continued students (queued here) need the room."""
    continue_front(study, config, out_dir)
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    return max(config.search.trials, counted_trials(study) + waiting)


def _lost_storage(exc: BaseException) -> BaseException | None:
    """The storage error behind ``exc``, if a database that went away caused it: SQLAlchemy's
    errors, or Optuna's wrapper of them, raised directly or while Optuna handled one (its own
    clean-up can fail in turn on the dead connection)."""
    from sqlalchemy.exc import SQLAlchemyError

    seen: BaseException | None = exc
    for _ in range(32):  # chains are short; the bound guards against a cycle
        if seen is None:
            break
        if isinstance(seen, (SQLAlchemyError, optuna.exceptions.StorageInternalError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or ["no detail"])[0]


def _search(
    config: StudyConfig,
    choice: StorageChoice,
    out_dir: Path,
    target: int,
    context: StudyContext,
    storage: optuna.storages.BaseStorage,
    study: optuna.Study,
    show_progress: bool,
) -> None:
    """The trials of ``run_search``, in this process or in worker processes (which open the
    storage themselves); ``storage`` is the one ``study`` was opened on."""
    workers = config.search.workers
    progress = Progress(config, target, counted_trials(study), show_progress)
    progress.refresh(study)
    try:
        if workers == 1:
            objective = Objective(config, context=context, out_dir=out_dir)
            if choice.kind == "rdb":  # other processes may share this study: do not sample what they sample
                study.sampler.reseed_rng()
            _optimize_until(
                study,
                storage,
                objective,
                target,
                on_trial=lambda: progress.refresh(study),
                lock_path=_creation_lock_path(choice),
            )
        else:
            _run_workers(config, choice, out_dir, target, context, study, progress)
    finally:
        progress.close()


def load_summary_from(
    study: optuna.Study, config: StudyConfig
) -> tuple[dict[str, Any], list[TrialRecord], optuna.Study]:
    """Records (with any recorded diagnostics merged into their metrics) and the front summary."""
    attrs = study.user_attrs
    records = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):
            continue
        record = to_record(t)
        extra = attrs.get(f"{DIAGNOSTICS_PREFIX}{t.number}")
        if extra:
            record = dataclasses.replace(record, metrics={**record.metrics, **extra})
        records.append(record)
    facts, listed = study_facts(study, config), versions(attrs.get(FACTS_ATTR, {}))
    summary = front_summary(facts, of_version(records, int(listed[-1]["version"])))
    if len(listed) > 1:
        summary["counts"] = counts_of(records)
        summary["versions"] = version_fronts(facts, records, listed)
    return summary, records, study


def _run_workers(
    config: StudyConfig,
    choice: StorageChoice,
    out_dir: Path,
    target: int,
    context: StudyContext,
    study: optuna.Study,
    progress: Progress,
) -> None:
    workers = config.search.workers
    # Each worker gets an equal share of the cores so their torch thread pools do not fight.
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker_main,
            name=f"naskd-worker-{i}",
            args=(
                config,
                choice,
                out_dir,
                target,
                threads,
                context.teacher_info,
                logging.getLogger().getEffectiveLevel(),
                worker_device(config.distill, i),
            ),
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            progress.refresh(study)
            time.sleep(1.0)
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    finally:
        for p in procs:
            p.join()
    progress.refresh(study)
    crashed = [p.name for p in procs if p.exitcode != 0]
    if crashed:
        raise NaskdError(
            f"worker process(es) {', '.join(crashed)} exited with an error; "
            "completed trials are kept — run the same command again to resume"
        )


# --- diagnostics: scratch baselines and confirmation runs -----------------------------------

#: Diagnostics live in study user attributes (finished Optuna trials cannot be updated), one
#: key per trial so concurrent or resumed runs never overwrite each other's results.
DIAGNOSTICS_PREFIX = "diagnostics:"


def _record_diagnostics(study: optuna.Study, number: int, values: dict[str, float]) -> None:
    key = f"{DIAGNOSTICS_PREFIX}{number}"
    study.set_user_attr(key, {**study.user_attrs.get(key, {}), **values})


def _diagnose(
    config: StudyConfig,
    out_dir: Path,
    pick: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    run: Callable[[dict[str, Any], StudyContext], dict[str, float]],
    what: str,
    show_progress: bool,
) -> dict[str, Any]:
    """Run ``run`` on the front students ``pick`` selects that lack it, recording each at once
    (so an interrupted run resumes where it stopped); returns the updated summary."""
    from tqdm.auto import tqdm

    if config.data.dataset == "none":
        raise NaskdError(
            f"{config.file}: [data].dataset: the {what} compares accuracies, and a study with no real "
            "data has none to measure"
        )
    summary, _, study = load_summary(config, out_dir)
    todo = pick(summary["front"])
    if not todo:
        log.info("%s: nothing to do, every selected student has it", what)
        return summary
    context = build_context(config, teacher_info=study.user_attrs.get(FACTS_ATTR, {}).get("teacher"))
    for entry in tqdm(todo, desc=what, unit="student", disable=not show_progress):
        _record_diagnostics(study, entry["number"], run(entry["spec"], context))
    summary, _, _ = load_summary_from(study, config)
    write_front(out_dir, summary)
    return summary


def run_baseline(config: StudyConfig, out_dir: Path, *, show_progress: bool = True) -> dict[str, Any]:
    """Train every Pareto student with the same budget and no teacher; record ``scratch_accuracy``."""
    from naskd.diagnostics import scratch_metrics

    return _diagnose(
        config,
        out_dir,
        lambda front: [e for e in front if e["metrics"].get("scratch_accuracy") is None],
        scratch_metrics,
        "scratch baseline",
        show_progress,
    )


def run_confirm(
    config: StudyConfig, out_dir: Path, *, top: int, steps: int, show_progress: bool = True
) -> dict[str, Any]:
    """Re-distil the ``top`` most accurate Pareto students for ``steps`` steps; record the
    long-run metrics (``long_accuracy``, ``long_teacher_agreement``, ``long_steps``)."""
    from naskd.diagnostics import long_run_metrics

    def pick(front: list[dict[str, Any]]) -> list[dict[str, Any]]:
        best = sorted(front, key=lambda e: -(e["metrics"].get("accuracy") or 0.0))[:top]
        return [e for e in best if e["metrics"].get("long_steps") != steps]

    return _diagnose(
        config, out_dir, pick, lambda spec, ctx: long_run_metrics(spec, ctx, steps), "confirmation run", show_progress
    )


def param_importances(study: optuna.Study) -> dict[str, dict[str, float]]:
    """fANOVA importance of each sampled parameter for each objective, over feasible completed
    trials only (an infeasible trial's accuracy is a placeholder 0, which would make the
    importances measure "over budget or not"). Empty for an objective Optuna cannot compute
    (too few trials, no parameter that varies)."""
    names = study.user_attrs.get(FACTS_ATTR, {}).get("objectives", [])
    feasible = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("status") == "complete"
    ]
    view = optuna.create_study(directions=study.directions)  # in memory: a view, never stored
    view.add_trials(feasible)
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        try:
            out[name] = optuna.importance.get_param_importances(
                view, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target=_value_of(i)
            )
        except (RuntimeError, ValueError, ZeroDivisionError) as exc:
            log.info("parameter importances for %s not available: %s", name, exc)
    return out


def _value_of(index: int) -> Callable[[FrozenTrial], float]:
    """A trial's ``index``-th objective value: a target for Optuna's importance evaluators."""
    return lambda t: t.values[index]


def write_study_report(config: StudyConfig, out_dir: Path, path: Path | None = None) -> Path:
    """Write the study's HTML report (default ``OUT/report.html``) and return its path."""
    from naskd.report import build_report, write_report

    summary, records, study = load_summary(config, out_dir)
    facts = dict(study.user_attrs.get(FACTS_ATTR, {}))
    return write_report(
        path or out_dir / "report.html", build_report(facts, records, summary, importances=param_importances(study))
    )
