"""The ``naskd`` command: parses arguments and calls the public API; no logic of its own.

Bad input (a study file, a checkpoint, a storage URL) ends with one line on stderr naming
the file and key, and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from naskd.errors import NaskdError
from naskd.terminal import PrintableFormatter, printable

if TYPE_CHECKING:
    from naskd.api import Study

EPILOG = """examples:
  naskd search studies/digits.toml                 run (or resume) the study, print its front
  naskd search studies/mnist1d.toml --trials 60 --workers 2
  naskd search studies/mnist1d.toml --backend ray --address auto --concurrency 8
  naskd front studies/digits.toml --format json    the front as JSON (also csv, table)
  naskd export studies/digits.toml --trial 7 -o students/digits-7
  naskd baseline studies/digits.toml               scratch accuracy of every Pareto student
  naskd confirm studies/digits.toml --top 5 --steps 2000
  naskd report studies/digits.toml -o digits.html

Every number on the front is measured at the study's target budget ([distill].epochs or
steps): students are scored at rungs on the way ([fidelity]) and those clearly dominated
there stop early, recorded as pruned with their figures at that rung.

Everything a study produces goes into one directory, reports/<study name>/ unless --out
moves it: the Optuna storage (study.db, or study.journal with --workers > 1), the saved
students, front.json/front.csv and report.html. Running `search` again resumes up to --trials."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="naskd",
        description="Find the best small student networks for a trained teacher: sample students from a "
        "search space, score each by measured cost and by distillation up to the study's target budget (rung by rung, "
        "stopping clearly dominated students early), keep the Pareto front at that budget.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("study", type=Path, metavar="STUDY.toml", help="the study file")
        sp.add_argument("--out", type=Path, metavar="DIR", help="output directory (default: reports/<study name>/)")
        sp.add_argument(
            "--storage",
            metavar="URL",
            help="Optuna storage: a SQLAlchemy URL (sqlite:///..., postgresql://...) or a .journal file",
        )
        level = sp.add_mutually_exclusive_group()
        level.add_argument("-q", "--quiet", action="store_true", help="errors only; no progress bar")
        level.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")

    s = sub.add_parser(
        "search",
        help="run or resume a study",
        description="Run the study until it holds the "
        "requested number of trials (resuming a previous run), then print and write the front.",
    )
    common(s)
    s.add_argument(
        "--trials", type=int, metavar="N", help="total trials the study should hold (default: [search].trials)"
    )
    s.add_argument(
        "--workers", type=int, metavar="K", help="worker processes on this machine (default: [search].workers)"
    )
    s.add_argument("--seed", type=int, metavar="S", help="study seed: data split, teacher, sampler and training")
    s.add_argument(
        "--backend",
        choices=("optuna", "ray"),
        default="optuna",
        help="optuna: processes on this machine (default); ray: Ray Tune, on this machine or a cluster",
    )
    s.add_argument(
        "--address",
        metavar="auto|HOST:PORT",
        help="with --backend ray: the Ray cluster to join (default: [ray].address, else start Ray here)",
    )
    s.add_argument(
        "--concurrency",
        type=int,
        metavar="K",
        help="with --backend ray: trials at once "
        "(default: [ray].concurrency, else cluster CPUs / [ray].cpus_per_trial)",
    )

    f = sub.add_parser(
        "front",
        help="print the Pareto front of a study",
        description="Print the Pareto front of feasible completed trials, its normalised hypervolume and knee.",
    )
    common(f)
    f.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format (default: table)")

    r = sub.add_parser(
        "report",
        help="write the HTML report",
        description="Write one self-contained HTML "
        "page (works offline) with the front, the capacity gap, the rungs and learning curves, the search "
        "history and warnings. `naskd search` writes it too, as OUT/report.html.",
    )
    common(r)
    r.add_argument("-o", "--output", type=Path, metavar="FILE", help="the HTML file (default: OUT/report.html)")

    b = sub.add_parser(
        "baseline",
        help="train each Pareto student without a teacher",
        description="Train every Pareto student for the target budget with no teacher and record its "
        "scratch accuracy, for KD gain and gap closure in the report. Resumable.",
    )
    common(b)

    c = sub.add_parser(
        "confirm",
        help="re-distil the best students with a longer budget",
        description="Re-distil the K most accurate Pareto students for N steps and record the "
        "long-run metrics; with N = the target budget's steps it reproduces their front accuracy. Resumable.",
    )
    common(c)
    c.add_argument("--top", type=int, default=5, metavar="K", help="how many students (default: 5)")
    c.add_argument("--steps", type=int, required=True, metavar="N", help="distillation steps of the long run")

    e = sub.add_parser(
        "export",
        help="export one student",
        description="Write a trial's student (state_dict, torch.export program model.pt2, ONNX model, spec "
        "JSON, README; with --torchscript also a TorchScript trace) and check that every program reproduces its "
        "recorded accuracy before anything is written.",
    )
    common(e)
    e.add_argument("--trial", type=int, required=True, metavar="N", help="the trial number (see `naskd front`)")
    e.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="where to write the student")
    e.add_argument(
        "--torchscript",
        action="store_true",
        help="also write model.torchscript.pt (TorchScript is deprecated in torch)",
    )
    return p


def _setup_logging(quiet: bool, verbose: int) -> None:
    import optuna

    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    # Optuna logs every trial at INFO and NaN-valued (failed) trials at WARNING; naskd reports
    # those itself, so Optuna speaks only when asked for verbose output.
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose > 1 else optuna.logging.ERROR)


def _command_line(argv: list[str]) -> str:
    from naskd.backends.optuna_backend import redact

    shown = [redact(a) for a in argv]
    return "naskd " + " ".join(shlex.quote(a) for a in shown)


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """A background thread's error (e.g. Optuna's heartbeat when the database server is gone)
    as one log line; the traceback only with -vv. The main thread reports what it means."""
    name = args.thread.name if args.thread is not None else "a thread"
    first = (str(args.exc_value).strip().splitlines() or [""])[0]
    logging.getLogger("naskd").warning("background thread %s stopped: %s: %s", name, args.exc_type.__name__, first)
    if args.exc_value is not None:  # the exception carries its own traceback
        logging.getLogger("naskd").debug("traceback", exc_info=args.exc_value)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    _setup_logging(args.quiet, args.verbose)
    threading.excepthook = _thread_failed
    try:
        return _run(args, argv)
    except NaskdError as exc:
        # One line, whatever the message holds (a name with a newline or an escape sequence).
        print(f"naskd: {printable(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("naskd: interrupted; completed trials are kept — run the same command to resume", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from naskd import api
    from naskd.results import render_csv, render_json, render_table

    if args.command == "search":
        study = api.search(
            args.study,
            trials=args.trials,
            out=args.out,
            storage=args.storage,
            workers=args.workers,
            backend=args.backend,
            seed=args.seed,
            progress=not args.quiet,
            address=args.address,
            concurrency=args.concurrency,
            command=_command_line(argv),
        )
        if not args.quiet:
            report = study.written_report
            print(render_table(study.summary))
            print(
                printable(
                    f"front written to {study.out_dir / 'front.json'} and {study.out_dir / 'front.csv'}; "
                    + (f"report: {report}" if report is not None else "no report")
                )
            )
        return 0
    study = api.load(args.study, storage=args.storage, out=args.out)
    if args.command == "report":
        path = study.report(args.output)
        if not args.quiet:
            print(printable(f"report written to {path}"))
    elif args.command in ("baseline", "confirm"):
        if args.command == "baseline":
            study.baseline(progress=not args.quiet)
        else:
            study.confirm(top=args.top, steps=args.steps, progress=not args.quiet)
        if not args.quiet:
            print(render_table(study.summary))
    elif args.command == "front":
        render = {"table": render_table, "json": render_json, "csv": render_csv}[args.format]
        sys.stdout.write(render(study.summary).rstrip("\n") + "\n")
    else:
        return _export(study, args)
    return 0


def _export(study: Study, args: argparse.Namespace) -> int:
    check = study.export(args.trial, args.output, torchscript=args.torchscript)
    if check.accuracy is None:  # no real data: outputs compared on random inputs instead
        shown = ", ".join(f"{name} within {gap:.2g}" for name, gap in check.output_gaps.items())
        summary = f"no real data: accuracy unavailable; on random inputs {shown} of the rebuilt student"
    else:
        shown = ", ".join(f"{name} {accuracy:.4f}" for name, accuracy in check.programs.items())
        summary = f"accuracy recorded {check.accuracy:.4f}, reloaded {check.reproduced:.4f}; {shown}"
    summary += "".join(f"; no {name}: {why}" for name, why in check.skipped.items())
    if not args.quiet:
        print(printable(f"exported trial {args.trial} to {args.output} ({summary})"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
