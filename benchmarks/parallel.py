"""Trials per hour with 1 and 2 workers, through the Optuna backend (journal file, worker
processes) and the Ray backend (a local Ray instance), on ``studies/mnist1d.toml``.

"1 worker" runs one trial at a time with torch using every core; "2 workers" runs two at a
time with cores / 2 torch threads each, so they do not fight over the cores:

    optuna  1 worker:  run_search in this process           (torch threads = cores)
    optuna  1 worker, 1 thread: the same with one torch thread (a reference: per-worker speed)
    optuna  2 workers: run_search with [search].workers = 2 (each process: cores / 2 threads)
    ray     1 worker:  [ray] cpus_per_trial = cores, concurrency 1
    ray     2 workers: [ray] cpus_per_trial = cores / 2, concurrency 2
    optuna / ray + rungs, 2 workers: the same with the study's own [fidelity] rule, so clearly
            dominated students stop at a rung (recorded pruned) and trials cost less on
            average; the pruned count, front size and best front accuracy show what that
            costs the front

Every other run sets ``[fidelity] rule = "off"``: every trial then trains its student to the
target budget, so the runs compare the same work.

Each run starts a fresh study holding the same N students, enqueued in the same order (drawn
once from the study's space by a seeded random sampler), so every configuration trains the
same architectures whatever its workers' samplers would pick. Two rates are printed:
``wall`` counts the whole call (spawning worker processes or starting Ray included);
``steady`` counts completions from the first trial's end to the last trial's end (the study's
own timestamps), which is what a long study sees. The study context (data, the built-in teacher,
its outputs) is built once beforehand and excluded. Latency is measured while the other
worker trains, so its figures are noisier with 2 workers; the trials per hour are what this
measures. Ray is kept on 127.0.0.1.

Other work on the machine skews every figure: the load average is printed before and after
each run, with a warning when it is well above the number of cores. The whole plan runs
``--repeats`` times (default 2), round after round, and the table shows each configuration's
median, so a slow spell on a shared machine hits every configuration alike.

Run:
    .venv/bin/python benchmarks/parallel.py            # 2 rounds of 24 trials per run, the study's 27 epochs each
    .venv/bin/python benchmarks/parallel.py --quick    # 6 trials per run, 2 epochs each (rates of those
                                                       # shorter trials; the speed-ups still compare)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Read by Ray when it is first imported: a local instance on loopback only, no usage stats.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402
from _shared import draw_students, machine  # noqa: E402

from naskd.backends import optuna_backend as ob  # noqa: E402
from naskd.config import RayConfig, load_study  # noqa: E402
from naskd.trial import build_context  # noqa: E402

STUDY = REPO_ROOT / "studies" / "mnist1d.toml"


def load() -> float:
    return os.getloadavg()[0]


def steady_rate(trials: list[optuna.trial.FrozenTrial]) -> float:
    """Completions per hour from the first completion to the last: what a long study sees.

    Counting from the first completion, not the first start, leaves out each backend's
    one-off warm-up, which lands in different places: Optuna worker processes create their
    first trial only once started, while naskd's Ray searcher creates it on the driver before
    the Ray worker has imported torch and unpacked the study context (~6 s here).
    """
    ends = sorted(t.datetime_complete for t in trials if t.datetime_complete is not None)
    span = (ends[-1] - ends[0]).total_seconds() if len(ends) > 1 else 0.0
    return (len(ends) - 1) / span * 3600 if span > 0 else float("nan")


def cpu_count() -> int:
    """Cores this process may use (respects taskset and cpusets), not the machine's total."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def fixed_students(trials: int) -> list[dict]:
    """The parameters of ``trials`` students drawn from the study's space (seeded)."""
    return [params for params, _ in draw_students(load_study(STUDY), trials)]


def run(
    backend: str,
    workers: int,
    trials: int,
    epochs: int | None,
    root: Path,
    students: list[dict],
    threads: int | None = None,
    rule: str = "off",
) -> dict:
    cores = cpu_count()
    out = root / f"{backend}-{workers}-{threads}-{rule}"
    shutil.rmtree(out, ignore_errors=True)
    config = load_study(
        STUDY, trials=trials, workers=workers if backend == "optuna" else 1, storage=str(out / "study.journal")
    )
    if epochs is not None:
        config = dataclasses.replace(config, distill=dataclasses.replace(config.distill, epochs=epochs))
    if rule == "off":
        config = dataclasses.replace(config, fidelity=dataclasses.replace(config.fidelity, rule="off"))
    threads = threads or max(1, cores // workers)
    out.mkdir(parents=True)
    queue = optuna.create_study(
        study_name=config.name,
        directions=list(config.search.directions),
        storage=ob.open_storage(ob.StorageChoice(str(out / "study.journal"), "journal")),
    )
    for params in students:
        queue.enqueue_trial(params)
    before = load()
    start = time.perf_counter()
    if backend == "optuna":
        torch.set_num_threads(threads)  # one worker runs here; 2 workers get cores / 2 threads each
        summary = ob.run_search(config, out, show_progress=False)
    else:
        from naskd.backends import ray_backend

        config = dataclasses.replace(config, ray=RayConfig(cpus_per_trial=float(threads), concurrency=workers))
        summary = ray_backend.run_ray_search(config, out, show_progress=False)
    wall = time.perf_counter() - start
    study = ob.open_study(
        config, ob.open_storage(ob.StorageChoice(str(out / "study.journal"), "journal")), create=False
    )
    done = [t for t in study.get_trials(deepcopy=False) if ob.counts(t)]
    front_accuracy = [e["metrics"]["accuracy"] for e in summary["front"]]
    return {
        "backend": backend + (" + rungs" if rule != "off" else ""),
        "workers": workers,
        "threads": threads,
        "trials": len(done),
        "pruned": summary["counts"]["pruned"],
        "front": len(front_accuracy),
        "best": max(front_accuracy, default=float("nan")),
        "wall_s": wall,
        "wall_rate": len(done) / wall * 3600,
        "steady_rate": steady_rate(done),
        "load_before": before,
        "load_after": load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 trials of 2 epochs per run instead of 24 of 10")
    parser.add_argument("--trials", type=int, help="trials per run (overrides --quick)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="rounds of every configuration, interleaved; the table shows medians (default 2)",
    )
    args = parser.parse_args()
    trials = args.trials or (6 if args.quick else 24)
    epochs = 2 if args.quick else None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    cores = cpu_count()
    import ray

    print(f"machine: {machine(f'ray {ray.__version__}')}")
    print(
        f"study: {STUDY.relative_to(REPO_ROOT)}, {trials} trials per run"
        + (f", {epochs} epochs per trial (--quick)" if epochs else "")
    )
    t = time.perf_counter()
    build_context(load_study(STUDY))
    print(f"study context (data, teacher, teacher outputs) ready in {time.perf_counter() - t:.1f} s, excluded below\n")

    students = fixed_students(trials)
    root = Path(tempfile.mkdtemp(prefix="naskd-parallel-"))
    runs: dict[tuple, list[dict]] = {}
    try:
        plan = [
            ("optuna", 1, None, "off"),
            ("optuna", 1, 1, "off"),
            ("optuna", 2, None, "off"),
            ("ray", 1, None, "off"),
            ("ray", 2, None, "off"),
            ("optuna", 2, None, "pareto"),
            ("ray", 2, None, "pareto"),
        ]
        if cores == 1:
            plan = [p for p in plan if p[2] is None]
        # Rounds of the whole plan, so a slow spell on a shared machine hits every configuration.
        for round_ in range(args.repeats):
            for backend, workers, threads, rule in plan:
                row = run(backend, workers, trials, epochs, root, students, threads, rule)
                runs.setdefault((backend, workers, threads, rule), []).append(row)
                print(
                    f"round {round_ + 1}/{args.repeats}: {row['backend']:17s} {workers} worker(s) x "
                    f"{row['threads']} thread(s): {row['trials']} trials, wall {row['wall_s']:.0f} s -> "
                    f"{row['wall_rate']:.0f}/h, steady {row['steady_rate']:.0f}/h, {row['pruned']} pruned, "
                    f"front {row['front']} (best accuracy {row['best']:.3f}) "
                    f"(load {row['load_before']:.1f} -> {row['load_after']:.1f})",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows = [
        {
            **runs_of[-1],
            **{
                k: statistics.median(r[k] for r in runs_of)
                for k in ("steady_rate", "wall_rate", "pruned", "front", "best")
            },
        }
        for runs_of in runs.values()
    ]
    print(f"\nmedians over {args.repeats} round(s):")
    print(
        "\n| backend | workers | torch threads each | trials/hour (steady) | trials/hour (wall) | speed-up (steady) "
        "| speed-up (wall) | pruned | front | best front accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        # Speed-ups against one worker of the same backend without rungs.
        base = next(
            r
            for r in rows
            if r["backend"] == row["backend"].split(" + ")[0] and r["workers"] == 1 and r["threads"] == cores
        )
        print(
            f"| {row['backend']} | {row['workers']} | {row['threads']} | {row['steady_rate']:.0f} | "
            f"{row['wall_rate']:.0f} | {row['steady_rate'] / base['steady_rate']:.2f}x | "
            f"{row['wall_rate'] / base['wall_rate']:.2f}x | {row['pruned']:g} | {row['front']:g} | "
            f"{row['best']:.3f} |"
        )
    for backend in ("optuna", "ray"):
        one = next(r for r in rows if r["backend"] == backend and r["workers"] == 1 and r["threads"] == cores)
        two = next(r for r in rows if r["backend"] == backend and r["workers"] == 2)
        speedup = two["steady_rate"] / one["steady_rate"]
        per_round = [
            b["steady_rate"] / a["steady_rate"]
            for a, b in zip(runs[(backend, 1, None, "off")], runs[(backend, 2, None, "off")])
        ]
        print(
            f"{backend}: 2 workers reach {speedup:.2f}x the single-worker rate (medians; per round: "
            f"{', '.join(f'{x:.2f}x' for x in per_round)}; target >= 1.7x): {'PASS' if speedup >= 1.7 else 'FAIL'}"
        )
    ref = next((r for r in rows if r["backend"] == "optuna" and r["workers"] == 1 and r["threads"] == 1), None)
    if ref is not None:
        two = next(r for r in rows if r["backend"] == "optuna" and r["workers"] == 2)
        print(
            f"optuna: 2 workers reach {two['steady_rate'] / ref['steady_rate']:.2f}x one single-threaded worker "
            "(parallel efficiency; 2.00x is perfect)"
        )
    all_rows = [r for runs_of in runs.values() for r in runs_of]
    busiest = max(max(r["load_before"], r["load_after"]) for r in all_rows)
    if busiest > cores + 1:  # the benchmark's own workers and driver make a load of about `cores`
        print(
            f"warning: load average reached {busiest:.1f} on {cores} cores: other work shared the machine, "
            "so these figures are low and noisy; rerun when it is idle"
        )


if __name__ == "__main__":
    main()
