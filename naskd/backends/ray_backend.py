"""The Ray Tune backend: a study's trials as Ray Tune trials, on this machine or a cluster,
recorded in the same Optuna study storage as the Optuna backend.

The driver builds the study context once (data, teacher, teacher outputs) and puts it in
Ray's object store; each trial's worker takes it from there and never runs the teacher.
``NaskdSearch``, a Tune search algorithm on Optuna's ask-and-tell, samples from the study's
own space with the study's own sampler and writes to the study's own storage, so ``naskd
front`` reads a Ray-run study unchanged, and a study can move between ``--backend optuna`` and
``--backend ray`` at any point. It records each result as ``optuna_backend.record`` does
(spec, status, metrics, reason, constraints, rungs) and never lets a trial that was stopped
early enter the front with partial values. Each trial reports every metric at every rung of
the study's plan; ``RungScheduler`` (``ray_scheduler.py``) judges it there with the same rule
and the same rung records (in the study storage) as the Optuna backend, so students stop at
rungs as they would there.

Only the driver writes the study storage. Workers save the trained students
(``students/trial_N.pt``) and their states at rungs (``checkpoints/``) themselves: on a
cluster of several machines, put the output directory on a filesystem they all share, or
``naskd export`` will not find them and interrupted students start again. Workers must be
able to import naskd (and any user model or loader module the study names).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import pickle
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.search import Searcher

from naskd.backends import optuna_backend as ob
from naskd.backends.ray_scheduler import RungScheduler
from naskd.config import StudyConfig
from naskd.distill import Placement
from naskd.errors import ConfigError, NaskdError
from naskd.fidelity import CheckpointFile, with_rung
from naskd.metrics import direction
from naskd.trial import StudyContext, TrialResult, build_context, evaluate, full_spec

log = logging.getLogger(__name__)

#: Keys of a Ray trial's config (set by ``NaskdSearch``) and of its reported result.
SPEC_KEY = "naskd_spec"
NUMBER_KEY = "naskd_trial"
CHECKPOINT_KEY = "naskd_checkpoint"  # where the worker saves the student's state at rungs
VERSION_KEY = "naskd_teacher_version"
LIFELONG_KEY = "naskd_lifelong_from"  # the earlier version's trial whose student this one continues ("": none)
CARRIED_KEY = "naskd_carried"  # JSON text: rung entries of the interrupted trial a student continues
FINAL_KEY = "naskd_final"  # present (True) only in the result of a trial that ran to its end
STATUS_KEY = "naskd_status"
REASON_KEY = "naskd_reason"
METRICS_KEY = "naskd_metrics"  # JSON text, so Tune's result flattening leaves it whole
CONSTRAINTS_KEY = "naskd_constraints"  # JSON text
RUNG_KEY = "naskd_rung"  # in a result reported at a rung: its index
STEPS_KEY = "naskd_steps"  # training steps behind a result's metrics
RUNGS_KEY = "naskd_rungs"  # JSON text, in the final result: every rung entry
TERMS_KEY = "naskd_loss_terms"  # JSON text, in the final result: each loss term's value at the end
TEACHER_FORWARDS_KEY = "teacher_forward_batches"  # teacher forward passes in the worker during the trial
THREADS_KEY = "torch_threads"


class RayTrainable(NamedTuple):
    """What ``ray_trainable`` returns: unpack it as ``trainable, search_alg, scheduler = ...``."""

    trainable: Any
    search_alg: NaskdSearch
    scheduler: RungScheduler


# --- the worker side ---------------------------------------------------------------------


@dataclass(frozen=True)
class _ScriptedTeacher:
    """A TorchScript teacher as bytes: ScriptModules do not pickle, so they travel saved."""

    payload: bytes


@dataclass
class WorkerPayload:
    """What every trial's worker gets from the object store (put there once per sweep)."""

    context: StudyContext
    objectives: tuple[str, ...]
    students_dir: str | None
    threads: int


def _pack(context: StudyContext) -> StudyContext:
    import torch

    def packed(model: Any) -> Any:
        if not isinstance(model, torch.jit.ScriptModule):
            return model
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        return _ScriptedTeacher(buf.getvalue())

    return dataclasses.replace(
        context, teachers=[dataclasses.replace(t, model=packed(t.model)) for t in context.teachers]
    )


def _unpack(context: StudyContext) -> StudyContext:
    import torch

    def loaded(model: Any) -> Any:
        if isinstance(model, _ScriptedTeacher):
            return torch.jit.load(io.BytesIO(model.payload), map_location="cpu").eval()
        return model

    context = dataclasses.replace(
        context, teachers=[dataclasses.replace(t, model=loaded(t.model)) for t in context.teachers]
    )
    context.cache.forward_batches = 0  # counts this worker's teacher passes only
    return context


def _count_forwards(models: list[Any]) -> tuple[Callable[[], int], Callable[[], None]]:
    """A counter of the teachers' forward calls in this process, and its remover."""
    calls = [0]
    handles: list[Any] = []  # torch hook handles

    def hook(*_: Any) -> None:
        calls[0] += 1

    def remove() -> None:
        for handle in handles:
            handle.remove()

    for model in models:
        try:
            handles.append(model.register_forward_hook(hook))
        except Exception:  # a scripted teacher may not take hooks: the cache's own count remains
            continue
    return (lambda: calls[0]), remove


def result_payload(
    result: TrialResult, objectives: tuple[str, ...], teacher_forwards: int, threads: int
) -> dict[str, Any]:
    """A trial's outcome as one flat Tune result. Every objective is present (Tune checks);
    failed trials carry NaN, infeasible ones the values the Optuna backend tells."""
    if result.status in ("failed", "invalid"):
        values = {name: math.nan for name in objectives}
    else:
        values = dict(zip(objectives, ob.objective_values(result, objectives)))
    return {
        **values,
        FINAL_KEY: True,
        STATUS_KEY: result.status,
        REASON_KEY: result.reason or "",
        METRICS_KEY: json.dumps(result.metrics),
        CONSTRAINTS_KEY: json.dumps(result.constraints),
        STEPS_KEY: result.steps,
        RUNGS_KEY: json.dumps(result.rungs),
        TERMS_KEY: json.dumps(result.terms),
        TEACHER_FORWARDS_KEY: teacher_forwards,
        THREADS_KEY: threads,
    }


def rung_payload(rung: int, steps: int, metrics: dict[str, float], objectives: tuple[str, ...]) -> dict[str, Any]:
    """A result reported at a rung: every objective (Tune checks) and every metric, without the
    final flag, so a stop here leaves the trial PRUNED (``record_ray_result``)."""
    return {
        **{name: metrics[name] for name in objectives},
        RUNG_KEY: rung,
        STEPS_KEY: steps,
        METRICS_KEY: json.dumps(metrics),
        FINAL_KEY: False,
    }


def run_trial(param_config: dict[str, Any], payload: WorkerPayload) -> None:
    """The Tune function trainable: one naskd trial on a worker, reported at every rung and at
    its end. A scheduler stops a trial by raising ``SystemExit`` in ``tune.report``, which
    passes through ``evaluate``; the state saved at that rung is then removed by the driver."""
    import torch

    from naskd.export import save_student

    spec = param_config.get(SPEC_KEY)
    if not isinstance(spec, dict):
        raise NaskdError(
            f"the naskd trainable needs its config from naskd's search algorithm (key {SPEC_KEY!r}); "
            "use both parts of naskd.ray_trainable(...)"
        )
    torch.set_num_threads(payload.threads)
    # The driver's context is on the CPU; "auto" here finds the GPU Ray gave this trial, if any.
    context = _unpack(payload.context)
    context = context.to(Placement.from_config(context.config.distill))
    forwards, unhook = _count_forwards([t.model for t in context.teachers])

    def gate(entries: list[dict[str, Any]]) -> bool:
        now = entries[-1]
        tune.report(rung_payload(now["rung"], now["steps"], now["metrics"], payload.objectives))
        return True  # a stop comes as SystemExit from tune.report

    path = param_config.get(CHECKPOINT_KEY)
    earlier = param_config.get(LIFELONG_KEY)
    try:
        result = evaluate(
            spec,
            context,
            gate=gate,
            checkpoint=CheckpointFile(Path(path)) if path else None,
            carried=json.loads(param_config.get(CARRIED_KEY) or "[]"),
            previous=ob.read_student(Path(earlier)) if earlier else None,
        )
    finally:
        unhook()
    number = param_config.get(NUMBER_KEY)
    if result.status == "complete" and result.student is not None and payload.students_dir and number is not None:
        save_student(result.student, Path(payload.students_dir) / f"trial_{number}.pt")
    tune.report(
        result_payload(result, payload.objectives, context.cache.forward_batches + forwards(), torch.get_num_threads())
    )


def make_trainable(config: StudyConfig, context: StudyContext, students_dir: Path | None) -> Any:
    """``run_trial`` with the study context in the object store and the study's resources."""
    threads = max(1, int(config.ray.cpus_per_trial))
    payload = WorkerPayload(
        _pack(context),
        tuple(config.search.objectives),
        str(students_dir.resolve()) if students_dir is not None else None,
        threads,
    )
    trainable = tune.with_parameters(run_trial, payload=payload)
    return tune.with_resources(trainable, {"cpu": config.ray.cpus_per_trial, "gpu": config.ray.gpus_per_trial})


# --- the driver side ---------------------------------------------------------------------


def _space(config: StudyConfig, out_dir: Path | None, teacher: str) -> Callable[[optuna.Trial], dict[str, Any]]:
    """The define-by-run function ``NaskdSearch`` calls: the study's own space declaration,
    plus where the trial's student saves its state (and the state it continues, if any)."""

    def define(trial: optuna.Trial) -> dict[str, Any]:
        spec = full_spec(config.space.sample(trial), config, teacher)
        trial.set_user_attr("spec", spec)
        version = ob.current(trial.study.user_attrs.get(ob.FACTS_ATTR, {}))
        trial.set_user_attr("teacher_version", version)
        checkpoint, carried = ob.resume_point(trial, spec, out_dir)
        earlier = trial.user_attrs.get("lifelong_from")
        return {
            SPEC_KEY: spec,
            NUMBER_KEY: trial.number,
            VERSION_KEY: version,
            LIFELONG_KEY: str(out_dir / "students" / f"trial_{earlier}.pt") if earlier is not None and out_dir else "",
            CHECKPOINT_KEY: str(checkpoint.path) if checkpoint is not None else "",
            CARRIED_KEY: json.dumps(carried),
        }

    return define


class NaskdSearch(Searcher):
    """A Ray Tune search algorithm over a naskd study: its space, sampler, objectives and
    storage, on Optuna's public ask-and-tell (``study.ask`` per Tune trial, ``study.tell`` when
    it ends).

    Results are recorded as the Optuna backend records them. A trial that ends without its
    final result (stopped by a scheduler such as ASHA, or by a stopper) is recorded PRUNED,
    never COMPLETE with partial values; a trial whose worker raised or died after its retries
    is FAIL with the reason; a trial that never ran does not count. On a server database the
    driver sends heartbeats for the trials it holds open, so a killed driver's trials are
    failed like a killed worker's.

    Args:
        config: the validated study.
        storage: the study's storage, as ``optuna_backend.open_storage`` opened it.
        out_dir: the study's output directory (students' saved states); None: none saved.
        teacher: the teacher's fingerprint, recorded in every spec.
    """

    def __init__(
        self,
        config: StudyConfig,
        storage: optuna.storages.BaseStorage,
        out_dir: Path | None = None,
        *,
        teacher: str = "",
    ) -> None:
        objectives = list(config.search.objectives)
        modes = ["max" if direction(m) == "maximize" else "min" for m in objectives]
        # Searcher takes one list per objective (and checks them) though its hints say str.
        super().__init__(metric=objectives, mode=modes)  # type: ignore[arg-type]
        self.naskd_objectives = tuple(objectives)
        self.storage = storage
        self.study = ob.open_study(config, storage, create=True)
        self._define = _space(config, out_dir, teacher)
        self._beats = ob.heartbeats(storage)
        # Tune trial id -> its Optuna trial and that trial's id in the storage, until it ends.
        self._open: dict[str, tuple[optuna.Trial, int]] = {}
        self._beat_lock = threading.Lock()
        self._beat_thread: threading.Thread | None = None

    # Tune pickles its configuration (search algorithm included) when a Tuner is made.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_beat_lock"] = None
        state["_beat_thread"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._beat_lock = threading.Lock()

    def optuna_trial(self, trial_id: str) -> optuna.Trial | None:
        """The Optuna trial behind a Tune trial, while it is open."""
        held = self._open.get(trial_id)
        return held[0] if held is not None else None

    def suggest(self, trial_id: str) -> dict | None:
        """A new Optuna trial of the study (an enqueued one first), sampled by the study's own
        space; its parameters and naskd's keys (``SPEC_KEY``, ...) are the Tune trial's config."""
        with warnings.catch_warnings():
            # Optuna warns that heartbeats are meant for Study.optimize: here the driver sends them itself.
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = self.study.ask()
        try:
            config = self._define(trial)
        except BaseException:
            # As in the Optuna backend: a trial whose sampling raised is FAIL without a naskd
            # status, so it is not counted, never left RUNNING to hold a slot.
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        held = ob.trial_id(self.storage, self.study, trial.number)
        if self._beats is not None:
            # Now, not at the next beat: a trial without any heartbeat is never failed.
            self._beats.storage.record_heartbeat(held)
        with self._beat_lock:
            self._open[trial_id] = (trial, held)
        self._start_heartbeats()
        return {**trial.params, **config}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """A rung result of a trial that goes on: its entry joins the trial's rung records."""
        trial = self.optuna_trial(trial_id)
        if trial is not None and result.get(RUNG_KEY) is not None:
            record_rung(trial, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        with self._beat_lock:
            held = self._open.pop(trial_id, None)
        if held is not None:  # Tune may report a trial's end more than once
            record_ray_result(self.study, held[0], result, error, self.naskd_objectives)

    # naskd resumes through the study storage, not through Tune's searcher checkpoints.
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump({"naskd": "resume by running the same search again; the study storage holds every trial"}, fh)

    def restore(self, checkpoint_path: str) -> None:
        raise NaskdError(
            "a naskd sweep is not restored from Tune's checkpoint: run the same search again, "
            "it resumes from the study storage"
        )

    def _start_heartbeats(self) -> None:
        beats = self._beats
        if self._beat_thread is not None or beats is None:
            return

        def beat() -> None:
            while True:
                with self._beat_lock:
                    open_trials = list(self._open.values())
                for trial, held in open_trials:
                    try:
                        beats.storage.record_heartbeat(held)
                    except Exception as exc:  # a lost connection must not end the sweep
                        log.debug("heartbeat for trial %d failed: %s", trial.number, exc)
                time.sleep(float(beats.interval))

        self._beat_thread = threading.Thread(target=beat, name="naskd-heartbeats", daemon=True)
        self._beat_thread.start()


def record_rung(trial: optuna.Trial, result: dict) -> None:
    """Add the rung entry a result carries to the trial's ``rungs`` (replacing one of that rung)."""
    trial.set_user_attr(
        "rungs",
        with_rung(
            trial.user_attrs.get("rungs", ()),
            int(result[RUNG_KEY]),
            int(result[STEPS_KEY]),
            json.loads(result[METRICS_KEY]),
        ),
    )


def record_ray_result(
    study: optuna.Study, trial: optuna.Trial, result: dict | None, error: bool, objectives: tuple[str, ...]
) -> None:
    """Tell the study how a Ray trial ended, with the same user attrs as the Optuna backend."""
    result = result or {}
    if error:
        trial.set_user_attr("status", "failed")
        trial.set_user_attr(
            "reason", "the Ray trial raised or its worker died, on every try (see [ray].max_failures and the Ray logs)"
        )
        study.tell(trial, state=TrialState.FAIL)
    elif not result.get(FINAL_KEY):
        if result.get(RUNG_KEY) is not None:
            # Stopped at a rung: recorded there, never with partial values on the front; its
            # saved state is not needed any more.
            record_rung(trial, result)
            trial.set_user_attr("status", "pruned")
            trial.set_user_attr("metrics", json.loads(result[METRICS_KEY]))
            trial.set_user_attr("steps", int(result[STEPS_KEY]))
            if "reason" not in trial.user_attrs:
                trial.set_user_attr("reason", f"stopped at rung {result[RUNG_KEY]} by a Ray Tune scheduler or stopper")
            if trial.user_attrs.get("checkpoint"):
                CheckpointFile(Path(trial.user_attrs["checkpoint"])).clear()
            study.tell(trial, state=TrialState.PRUNED)
        elif any(name in result for name in objectives):
            # Stopped after a partial report of the user's own trainable: kept, never with partial values.
            trial.set_user_attr("status", "pruned")
            trial.set_user_attr("reason", "stopped early by a Ray Tune scheduler or stopper; partial values not used")
            trial.set_user_attr("partial", {k: result[k] for k in objectives if k in result})
            study.tell(trial, state=TrialState.PRUNED)
        else:
            # Never reported anything (the sweep ended before it ran): not counted, run again on resume.
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("reason", "the Ray sweep ended before this trial ran")
            trial.set_user_attr("stale", True)
            study.tell(trial, state=TrialState.FAIL)
    else:
        outcome = TrialResult(
            result[STATUS_KEY],
            trial.user_attrs.get("spec", {}),
            metrics=json.loads(result[METRICS_KEY]),
            reason=result[REASON_KEY] or None,
            constraints=json.loads(result[CONSTRAINTS_KEY]),
            steps=int(result.get(STEPS_KEY, 0)),
            rungs=json.loads(result.get(RUNGS_KEY) or "[]"),
            terms=json.loads(result.get(TERMS_KEY) or "{}"),
        )
        trial.set_user_attr(
            "ray",
            {
                TEACHER_FORWARDS_KEY: int(result.get(TEACHER_FORWARDS_KEY, 0)),
                THREADS_KEY: int(result.get(THREADS_KEY, 0)),
            },
        )
        values = ob.record(trial, outcome, objectives, students_dir=None)  # the worker saved the student
        if outcome.status in ("failed", "invalid"):
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, list(values))


class _ProgressCallback(tune.Callback):
    def __init__(self, progress: Any, study: optuna.Study) -> None:
        self.progress, self.study = progress, study

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.progress.refresh(self.study)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.progress.refresh(self.study)


# --- setting up and running a sweep ----------------------------------------------------------


def _prepare(
    config: StudyConfig, out_dir: Path, command: str | None
) -> tuple[StudyContext, ob.StorageChoice, optuna.storages.BaseStorage, optuna.Study]:
    """The study context (teacher and its outputs: built once, here), the storage and the study,
    with the study's facts checked and trials left running by a dead process failed."""
    choice = ob.choose_storage(config, out_dir, workers=1)
    ob.check_storage_file(choice)  # before anything is built or written
    context = build_context(config, device="cpu")  # shipped to workers, which each place it themselves
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the data and teachers have loaded
    storage = ob.open_storage(choice)
    ob.refuse_orphan_students(storage, config, out_dir)
    study = ob.open_study(config, storage, create=True)
    facts = ob.study_facts_for(config, context, choice, command)
    ob.check_facts(study, config, facts)
    if choice.kind != "rdb":
        ob.fail_stale_trials(study, storage)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    return context, choice, storage, study


def ray_trainable(config: StudyConfig | str | Path, *, out_dir: str | Path | None = None) -> RayTrainable:
    """A trainable, its search algorithm and its scheduler for a user's own ``tune.Tuner``.

    Results go into the study's storage in ``out_dir`` (default ``reports/<study name>/``, as
    ``naskd search``), so ``naskd front STUDY.toml`` shows them. Call after ``ray.init``.

    Example::

        trainable, search, scheduler = naskd.ray_trainable("studies/digits.toml")
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler,
                                                                  num_samples=20))
        tuner.fit()

    Every trial reports every metric at each rung of the study's plan (``naskd_rung`` and
    ``naskd_steps`` say which), then its final result. ``scheduler`` stops students at rungs by
    the study's ``[fidelity]`` rule; any other Tune scheduler may be used instead (e.g. ASHA
    with ``time_attr="training_iteration"``). A trial stopped at a rung is recorded PRUNED
    with its figures there, never on the front.

    Args:
        config: a study file or a loaded study.
        out_dir: the study's output directory.

    Returns:
        ``RayTrainable(trainable, search_alg, scheduler)``; the trainable carries the study's
        resources per trial (``[ray]``) and the study context (teacher outputs built once, here).
    """
    from naskd.config import load_study

    if not isinstance(config, StudyConfig):
        config = load_study(config)
    out = Path(out_dir) if out_dir is not None else config.default_out_dir()
    context, _, storage, _ = _prepare(config, out, command="naskd.ray_trainable")
    search = NaskdSearch(config, storage, out, teacher=context.teacher.fingerprint)
    return RayTrainable(
        make_trainable(config, context, out / "students"),
        search,
        RungScheduler(search, context.plan, tuple(config.search.objectives)),
    )


def _connect(address: str | None, verbose: bool) -> bool:
    """Join the cluster at ``address`` or start Ray on this machine; True when this call did it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else logging.WARNING,
    }
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:  # "local": a private instance, even when a cluster runs on this machine
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            ray.init(address="local", num_cpus=cpus, **kwargs)
    except Exception as exc:  # no cluster there, bad address
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise NaskdError(f"cannot start or join {where} ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return True


def _concurrency(config: StudyConfig, requested: int | None) -> int:
    import ray

    if requested:
        return requested
    if config.ray.concurrency:
        return config.ray.concurrency
    cpus = float(ray.cluster_resources().get("CPU", 1))
    return max(1, int(cpus // config.ray.cpus_per_trial))


def run_ray_search(
    config: StudyConfig,
    out_dir: Path,
    *,
    address: str | None = None,
    concurrency: int | None = None,
    show_progress: bool = True,
    verbose: bool = False,
    command: str | None = None,
    scheduler: Any = None,
) -> dict[str, Any]:
    """Run (or resume) the study on Ray up to ``[search].trials`` counted trials and write the front.

    Args:
        config: the validated study.
        out_dir: where the study storage (by default), students, Ray's files and the front go.
        address: a Ray cluster (``"auto"`` or ``HOST:PORT``); default ``[ray].address``, else a
            Ray instance started on this machine for this run.
        concurrency: trials at once; default ``[ray].concurrency``, else the cluster's CPUs
            divided by ``[ray].cpus_per_trial``.
        show_progress: draw a progress bar.
        verbose: let Ray's workers log to this terminal.
        command: the command line that reproduces this run, recorded with the study.
        scheduler: a Tune trial scheduler used instead of the study's rung rule
            (``RungScheduler``, which judges students at rungs as the Optuna backend does).
            Trials report at every rung either way; trials it stops are recorded PRUNED.

    Returns:
        The front summary (see ``naskd.results.front_summary``).

    Raises:
        ConfigError: for a concurrency below 1.
        NaskdError: when Ray cannot start or the cluster cannot be reached.
    """
    import ray

    if concurrency is not None and concurrency < 1:
        raise ConfigError("--concurrency", "--concurrency", f"must be > 0, got {concurrency}")
    context, choice, storage, study = _prepare(config, out_dir, command)
    target = ob.run_target(study, config, out_dir)
    log.info(
        "study %s on Ray: storage %s, %d/%d trials done",
        config.name,
        ob.redact(choice.url),
        ob.counted_trials(study),
        target,
    )
    progress = ob.Progress(config, target, ob.counted_trials(study), show_progress)
    progress.refresh(study)
    started = False
    try:
        made_progress, rounds = True, 0
        while made_progress and ob.counted_trials(study) < target:
            if not started and not ray.is_initialized():
                started = _connect(address or config.ray.address, verbose)
            before = ob.counted_trials(study)
            rounds += 1
            _fit(
                config,
                out_dir,
                context,
                storage,
                target - before,
                _concurrency(config, concurrency),
                name=f"{config.slug}-{time.strftime('%Y%m%d-%H%M%S')}-{rounds}",
                callbacks=[_ProgressCallback(progress, study)],
                scheduler=scheduler,
                verbose=verbose,
            )
            # Trials that never ran do not count; run them again, unless nothing moved at all.
            made_progress = ob.counted_trials(study) > before
    finally:
        progress.close()
        if started:
            ray.shutdown()
    summary, _, _ = ob.load_summary_from(study, config)
    ob.write_front(out_dir, summary)
    return summary


def _fit(
    config: StudyConfig,
    out_dir: Path,
    context: StudyContext,
    storage: optuna.storages.BaseStorage,
    samples: int,
    concurrency: int,
    *,
    name: str,
    callbacks: list,
    scheduler: Any,
    verbose: bool,
) -> None:
    search = NaskdSearch(config, storage, out_dir, teacher=context.teacher.fingerprint)
    if scheduler is None:
        scheduler = RungScheduler(search, context.plan, tuple(config.search.objectives))
    tuner = tune.Tuner(
        make_trainable(config, context, out_dir / "students"),
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=scheduler,
            num_samples=samples,
            max_concurrent_trials=concurrency,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str((out_dir / "ray").resolve()),
            verbose=1 if verbose else 0,
            failure_config=tune.FailureConfig(max_failures=config.ray.max_failures),
            callbacks=callbacks,
        ),
    )
    # Even at verbose=0 Tune prints an experiment header on stdout, where naskd's table goes.
    with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
        grid = tuner.fit()
    if grid.errors:
        log.warning("%d Ray trial(s) ended with an error; they are recorded failed", len(grid.errors))
