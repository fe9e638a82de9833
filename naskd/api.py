"""The public Python API: run or resume a study, read it back as pandas frames, write its report,
export a student and load an exported one. The ``naskd`` command is a thin layer over it.

Example::

    import naskd

    study = naskd.search("studies/digits.toml", trials=12)
    study.front()                     # one row per Pareto student, spec flattened into columns
    study.export(study.knee, "students/knee")
    model = naskd.load_student("students/knee")
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from naskd.config import StudyConfig, load_study, parse_study
from naskd.errors import NaskdError
from naskd.results import DIAGNOSTIC_COLUMNS, FRONT_COLUMNS, TrialRecord

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from naskd.export import ExportCheck

log = logging.getLogger("naskd")

BACKENDS = ("optuna", "ray")


def search(
    study: str | Path | StudyConfig,
    *,
    trials: int | None = None,
    out: str | Path | None = None,
    storage: str | None = None,
    workers: int | None = None,
    backend: str = "optuna",
    seed: int | None = None,
    progress: bool = True,
    address: str | None = None,
    concurrency: int | None = None,
    command: str | None = None,
) -> Study:
    """Run a study, or resume it, until it holds ``trials`` counted trials; then write its front
    (``front.json``, ``front.csv``), the scratch baselines when ``[report].scratch_baseline`` asks
    for them, and the HTML report (``report.html``) into ``out``.

    Every number on the front is measured at the study's target budget; students stopped at a
    rung are kept as pruned trials with their figures there (``Study.trials()``).

    Args:
        study: a study file (TOML) or a loaded ``StudyConfig``.
        trials: total trials the study should hold (default: ``[search].trials``).
        out: the study's output directory (default: ``reports/<study name>/``).
        storage: an Optuna storage URL (``sqlite:///...``, ``postgresql://...``) or a journal
            file path (default: ``[search].storage``, else a file in ``out``).
        workers: worker processes on this machine (default: ``[search].workers``).
        backend: ``"optuna"`` (processes on this machine) or ``"ray"`` (Ray Tune, on this
            machine or the cluster at ``address``).
        seed: the study seed (data split, teacher, sampler, training); default: the file's.
        progress: draw a progress bar.
        address: with ``backend="ray"``: ``"auto"`` or ``HOST:PORT`` of a Ray cluster
            (default: ``[ray].address``, else Ray started here for this run).
        concurrency: with ``backend="ray"``: trials at once (default: ``[ray].concurrency``,
            else the cluster's CPUs over ``[ray].cpus_per_trial``).
        command: what reproduces this run, recorded with the study (default: this call).

    Returns:
        The study, read back from its storage.

    Raises:
        ConfigError: the study file or an argument is invalid (names the file or argument and key).
        NaskdError: the storage cannot be opened or belongs to another study, Ray is missing or
            unreachable, or a worker failed; completed trials are kept either way.
    """
    from naskd.backends import optuna_backend as ob

    if backend not in BACKENDS:
        raise NaskdError(f"backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    config = _config(study, trials=trials, workers=workers, storage=storage, seed=seed)
    out_dir = _out_dir(config, out)
    given = {"trials": trials, "out": out, "storage": storage, "workers": workers, "seed": seed}
    shown = command or _call_text(config, backend, given)
    if backend == "ray":
        try:
            from naskd.backends import ray_backend
        except ImportError as exc:
            raise NaskdError(
                f"the Ray backend needs Ray Tune ({exc}); install it with pip install 'naskd[ray]'"
            ) from None
        ray_backend.run_ray_search(
            config,
            out_dir,
            address=address,
            concurrency=concurrency,
            show_progress=progress,
            verbose=log.isEnabledFor(logging.INFO),
            command=shown,
        )
    else:
        if address is not None or concurrency is not None:
            raise NaskdError("address and concurrency need the Ray backend (--backend ray, backend='ray')")
        ob.run_search(config, out_dir, show_progress=progress, command=shown)
    result = Study(config, out_dir)
    if config.report.scratch_baseline:
        result.baseline(progress=progress)
    try:
        result.written_report = result.report()
    except Exception as exc:  # the trials are saved; a report problem must not turn the run into a failure
        log.warning("could not write the report (%s); run `naskd report` or Study.report() to retry", exc)
    return result


def load(
    out_or_study: str | Path | StudyConfig,
    *,
    storage: str | None = None,
    out: str | Path | None = None,
) -> Study:
    """Read a study that ``search`` (or ``naskd search``) ran.

    Args:
        out_or_study: the study's output directory (the study file it was run from is found
            through its storage), a study file, or a loaded ``StudyConfig``.
        storage: the study's storage when it is not the file in the output directory (a
            PostgreSQL URL, a journal elsewhere).
        out: with a study file: its output directory when not ``reports/<study name>/``.

    Returns:
        The study, with the seed it was run with (a ``--seed`` run is read back with its data split).

    Raises:
        NaskdError: there is no study there, the storage is damaged or holds another study, or
            the study file it was run from is gone.
    """
    from naskd.backends import optuna_backend as ob

    # The study's stored facts are read once: they say where its file is and which seed it ran with.
    if isinstance(out_or_study, StudyConfig) or Path(out_or_study).suffix == ".toml" or Path(out_or_study).is_file():
        config = _config(out_or_study, storage=storage)
        out_dir = _out_dir(config, out)
        facts = ob.stored_facts(out_dir, config.search.storage, name=config.name)
    else:
        out_dir = Path(out_or_study)
        if out is not None:
            raise NaskdError(f"load({str(out_or_study)!r}, out=...): out is for a study file; {out_dir} is the output")
        facts = ob.stored_facts(out_dir, storage)
        seed = facts.get("study_seed")
        config = _config(_study_file_in(out_dir, facts), storage=storage, seed=None if seed is None else int(seed))
    return Study(_with_stored_seed(config, facts), out_dir)


def load_student(path: str | Path) -> nn.Module:
    """A student that ``Study.export`` (or ``naskd export``) wrote, ready for inference.

    Args:
        path: the export folder (its ``model.pt2`` is loaded), or one of its files: ``model.pt2``
            (``torch.export``), ``model.onnx`` (run with onnxruntime), ``model.torchscript.pt``,
            or ``model.pt`` (the state_dict, rebuilt from ``spec.json`` beside it).

    Returns:
        The student as a ``torch.nn.Module`` in eval mode: a batch of inputs in, logits out.

    Raises:
        NaskdError: the path is missing, of an unknown kind, or damaged (names the file).
    """
    from naskd.export import load_exported

    return load_exported(path)


class Study:
    """A naskd study read from its storage: the front and the trials as pandas frames, its
    hypervolume and knee, and the student exports and report made from it.

    The figures are read when the study is loaded; ``refresh()`` reads them again (another
    process may still be adding trials).
    """

    def __init__(self, config: StudyConfig, out_dir: str | Path) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        #: The report ``search`` wrote at its end (None: not written by this object, or it failed).
        self.written_report: Path | None = None
        self.refresh()

    def refresh(self) -> Study:
        """Read the study's trials and front again from its storage; returns the study."""
        from naskd.backends import optuna_backend as ob

        self.summary, self._records, self._optuna = ob.load_summary(self.config, self.out_dir)
        return self

    def __repr__(self) -> str:
        counts = self.summary["counts"]
        return (
            f"<naskd.Study {self.name!r}: {sum(counts.values())} trials, {len(self.summary['front'])} on the front, "
            f"out={str(self.out_dir)!r}>"
        )

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(o["name"] for o in self.summary["objectives"])

    @property
    def hypervolume(self) -> float:
        """The front's hypervolume, normalised by a fixed reference (accuracy in [0, 1], each cost
        in [0, the teacher's]) so runs of the same study compare."""
        return float(self.summary["hypervolume"])

    @property
    def knee(self) -> int | None:
        """The trial number of the front student closest to the ideal point (None: empty front)."""
        return self.summary["knee"]

    @property
    def teacher(self) -> dict[str, Any]:
        """The teacher's figures (accuracy, latency, params, ...; with several teachers, each one's)."""
        return dict(self.summary["teacher"])

    @property
    def target_steps(self) -> int | None:
        """The training steps behind every figure on the front (the study's target budget)."""
        return self.summary.get("target_steps")

    @property
    def optuna_study(self) -> optuna.Study:
        """The Optuna study itself, for Optuna's own tools (visualization, importances)."""
        return self._optuna

    def front(self) -> pd.DataFrame:
        """The Pareto front at the target budget, one row per student, most accurate first.

        Columns: ``number``, ``knee`` (bool), every metric (``accuracy``, ``teacher_agreement``,
        ``latency_p50_ms``, ``params``, ``flops``, ``model_bytes``, ``capacity_ratio``, ...; and
        ``scratch_accuracy``, ``kd_gain``, ``long_accuracy`` once recorded), ``steps`` (the
        training behind them), ``rungs`` (how many rungs the student passed on the way),
        ``teacher_version``, ``loss.<term>`` (each loss term's weighted value at the end) and
        the spec flattened: ``spec.family``, ``spec.arch.<param>``, ``spec.recipe.<param>``, ...
        ``Study.rungs()`` has the figures at each rung.
        """
        by_number = {r.number: r for r in self._records}
        rows = []
        for entry in self.summary["front"]:
            record = by_number[entry["number"]]
            rows.append(
                {
                    "number": entry["number"],
                    "knee": entry["number"] == self.knee,
                    **entry["metrics"],
                    "steps": entry.get("steps"),
                    "rungs": len(entry.get("rungs") or ()),
                    "teacher_version": record.teacher_version,
                    **{f"loss.{k}": v for k, v in (entry.get("loss_terms") or {}).items()},
                    **_flat_spec(entry["spec"]),
                }
            )
        return pd.DataFrame(rows, columns=_columns(rows, ("number", "knee")))

    def trials(self) -> pd.DataFrame:
        """Every trial of the study, in order: ``number``, ``state`` (complete, infeasible,
        pruned: stopped at a rung, failed, running), ``reason`` (why it was infeasible, pruned
        or failed), ``on_front``, ``steps`` (the training behind its metrics: the target for a
        complete trial, its last rung for a pruned one), ``teacher_version``,
        ``continued_from``, every recorded metric and the spec flattened (as in ``front()``).
        """
        on_front = {e["number"] for e in self.summary["front"]}
        rows = [
            {
                "number": r.number,
                "state": r.state,
                "reason": r.reason,
                "on_front": r.number in on_front,
                "steps": r.steps,
                "teacher_version": r.teacher_version,
                "continued_from": r.continued_from,
                **_ordered_metrics(r.metrics),
                **_flat_spec(r.spec),
            }
            for r in sorted(self._records, key=lambda r: r.number)
        ]
        return pd.DataFrame(rows, columns=_columns(rows, ("number", "state", "reason", "on_front")))

    def rungs(self) -> pd.DataFrame:
        """Each trial's figures at every rung it reached (the multi-fidelity record): ``number``,
        ``state`` (how the trial ended), ``rung``, ``steps`` and the metrics measured there."""
        rows = [
            {"number": r.number, "state": r.state, "rung": e["rung"], "steps": e["steps"], **e["metrics"]}
            for r in sorted(self._records, key=lambda r: r.number)
            for e in r.rungs
        ]
        return pd.DataFrame(rows, columns=_columns(rows, ("number", "state", "rung", "steps")))

    def report(self, path: str | Path | None = None) -> Path:
        """Write the self-contained HTML report (default ``OUT/report.html``).

        Returns:
            The report's path.
        """
        from naskd.backends import optuna_backend as ob

        return ob.write_study_report(self.config, self.out_dir, Path(path) if path is not None else None)

    def export(self, number: int, path: str | Path, *, torchscript: bool = False) -> ExportCheck:
        """Write one completed student to the folder ``path``: ``model.pt`` (state_dict),
        ``model.pt2`` (``torch.export``), ``model.onnx``, ``spec.json`` and a README; with
        ``torchscript`` also ``model.torchscript.pt``. Each program is reloaded and checked to
        reproduce the student's recorded validation accuracy before anything is written.

        Args:
            number: the trial number (``front()["number"]``).
            path: the folder to write (created; files already there are replaced).
            torchscript: also write a TorchScript trace.

        Returns:
            What was written and the accuracies each file reproduced.

        Raises:
            NaskdError: no such trial, the trial did not complete at the target budget, its
                weights are missing, or an exported program does not reproduce its accuracy.
        """
        from naskd.data import load_data
        from naskd.export import export_student
        from naskd.spaces import BuildContext
        from naskd.teacher import load_teacher

        dest = Path(path)
        if dest.exists() and not dest.is_dir():
            raise NaskdError(f"{dest}: is a file; expected a folder for the exported student (-o, path=)")
        record = next((r for r in self._records if r.number == number), None)
        if record is None or record.state != "complete":
            state = (
                "no such trial"
                if record is None
                else f"trial was stopped at a rung ({record.steps} training steps)"
                if record.state == "pruned"
                else f"trial is {record.state}"
            )
            raise NaskdError(
                f"trial {number}: {state}; only completed, feasible trials (trained to the target budget) "
                "can be exported"
            )
        data = load_data(self.config.data)
        ctx = BuildContext(data.input_shape, data.num_classes)
        if record.spec.get("family") in ("teacher", "shrink"):  # students built from the teacher need it loaded
            teacher = load_teacher(
                self.config.teacher, data.teacher_view(), dataset_key=self.config.data.dataset or "synthetic"
            )
            ctx = teacher.build_context(data.input_shape, data.num_classes)
        return export_student(
            record.spec,
            self.out_dir / "students" / f"trial_{record.number}.pt",
            data,
            record.metrics,
            dest,
            number=record.number,
            study=self.config.name,
            ctx=ctx,
            torchscript=torchscript,
        )

    def baseline(self, *, progress: bool = True) -> Study:
        """Train every Pareto student for the target budget with no teacher and record its
        ``scratch_accuracy`` (and from it ``kd_gain``); resumable. Returns the refreshed study."""
        from naskd.backends import optuna_backend as ob

        ob.run_baseline(self.config, self.out_dir, show_progress=progress)
        return self.refresh()

    def confirm(self, *, steps: int, top: int = 5, progress: bool = True) -> Study:
        """Re-distil the ``top`` most accurate Pareto students for ``steps`` steps and record the
        long-run figures (``long_accuracy``, ``long_teacher_agreement``, ``long_steps``);
        resumable. Returns the refreshed study.

        Raises:
            NaskdError: ``top`` or ``steps`` is not positive.
        """
        from naskd.backends import optuna_backend as ob

        if top <= 0 or steps <= 0:
            raise NaskdError(f"top and steps must be > 0, got {top} and {steps}")
        ob.run_confirm(self.config, self.out_dir, top=top, steps=steps, show_progress=progress)
        return self.refresh()

    @property
    def records(self) -> list[TrialRecord]:
        """Every trial as a plain ``naskd.results.TrialRecord``."""
        return list(self._records)


# --- helpers -------------------------------------------------------------------------------


def _config(
    study: str | Path | StudyConfig,
    *,
    trials: int | None = None,
    workers: int | None = None,
    storage: str | None = None,
    seed: int | None = None,
) -> StudyConfig:
    """The study with the caller's overrides (``None``: the file's value)."""
    overrides = {"trials": trials, "workers": workers, "storage": storage, "seed": seed}
    if not isinstance(study, StudyConfig):
        return load_study(study, **overrides)
    if seed is not None and seed != study.seed:  # the seed reaches every section: validate it all again
        return parse_study(study.raw, str(study.file), study.file.resolve().parent, **overrides)
    if trials is None and workers is None and not storage:
        return study
    # Validated as the file's own values are; an error names the argument.
    checked = parse_study({"name": study.name, "search": {}}, "naskd.search", Path.cwd(), **overrides).search
    search = dataclasses.replace(
        study.search,
        trials=checked.trials if trials is not None else study.search.trials,
        workers=checked.workers if workers is not None else study.search.workers,
        storage=storage or study.search.storage,
    )
    return study.replace(search=search)


def _out_dir(config: StudyConfig, out: str | Path | None) -> Path:
    out_dir = Path(out) if out is not None else config.default_out_dir()
    if out_dir.exists() and not out_dir.is_dir():
        raise NaskdError(f"{out_dir}: is a file; expected a directory for the study's output (--out, out=)")
    return out_dir


def _study_file_in(out_dir: Path, facts: Mapping[str, Any]) -> Path:
    """The study file the study in ``out_dir`` was run from, as its stored ``facts`` record it."""
    recorded = facts.get("study_file")
    if not recorded:
        raise NaskdError(
            f"{out_dir}: the study's storage does not record the study file it was run from (run before naskd "
            "recorded it); load the study file instead: naskd.load('STUDY.toml', out=...)"
        )
    path = Path(recorded)
    if not path.is_file():
        raise NaskdError(
            f"{out_dir}: the study was run from {path}, which is gone; load its study file from where it is now: "
            "naskd.load('STUDY.toml', out=...)"
        )
    return path


def _with_stored_seed(config: StudyConfig, facts: Mapping[str, Any]) -> StudyConfig:
    """The study as it was run: a study searched with another seed than its file's is read (and
    its students exported) with that seed, since the seed chose its data split."""
    stored = facts.get("study_seed")
    if stored is None or int(stored) == config.seed:
        return config
    log.info("%s: run with seed %d (the file says %d); read with its seed", config.name, stored, config.seed)
    return _config(config, seed=int(stored))


def _call_text(config: StudyConfig, backend: str, given: Mapping[str, Any]) -> str:
    """This call as Python, recorded with the study as the run that produced it."""
    args = [repr(str(config.file))]
    args += [f"{k}={str(v) if isinstance(v, Path) else v!r}" for k, v in given.items() if v is not None]
    if backend != "optuna":
        args.append(f"backend={backend!r}")
    return f"naskd.search({', '.join(args)})"


def _flat_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A spec as ``spec.<key>`` / ``spec.<section>.<key>`` columns (lists stay whole)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            out[prefix] = list(value) if isinstance(value, tuple) else value

    walk("spec", spec)
    return out


def _ordered_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The front's metric columns first, in their order, then any others a trial recorded."""
    known = [k for k in (*FRONT_COLUMNS, *DIAGNOSTIC_COLUMNS) if k in metrics]
    return {k: metrics[k] for k in (*known, *sorted(set(metrics) - set(known)))}


def _columns(rows: Sequence[Mapping[str, Any]], first: Sequence[str]) -> list[str]:
    """Every key of ``rows`` in first-seen order (``first`` leading), so that a frame with no rows
    still has its leading columns and spec columns come last."""
    seen = dict.fromkeys(first)
    for row in rows:
        seen.update(dict.fromkeys(k for k in row if not k.startswith("spec.")))
    for row in rows:
        seen.update(dict.fromkeys(k for k in row if k.startswith("spec.")))
    return list(seen)
