"""Multi-fidelity search against training every student to the target budget, and against one
short budget for everyone, on ``studies/mnist1d.toml``, over the same N candidate students.

The N students are drawn once from the study's space (a seeded random sampler, as
``benchmarks/parallel.py`` does) and enqueued in the same order in every search, so the
variants differ only in how much each student is trained:

    (1) ground truth: every student trained to the target budget (``naskd.trial.evaluate``,
        scored after every epoch on the way: the learning curves the replays below use);
    (2) single fidelity: every student trained for the one short budget that makes the
        study's total training steps equal to (3)'s (``[fidelity] rule = "off"``,
        ``[distill].steps`` = (3)'s steps / N), through ``naskd search``;
    (3) multi-fidelity: the study as shipped (rungs, the Pareto-rank rule), through
        ``naskd search``; again with 2 worker processes on a journal file; and once as a
        normal TPE-driven study (its own students, not the enqueued ones).

For each: total training steps and wall time; the front's hypervolume with accuracy measured
at the target budget (for (2): its front students trained on to the target, what a user would
get, read from (1), which trains the same students bit for bit); the gap between the accuracy
the front reports and the target-budget accuracy of the same students (mean, max; for (3)
checked against (1), not assumed); how many of the ground-truth front students it found; and
the shortfall over the ground-truth front: for each ground-truth front student, its accuracy
minus that of the best front student of the variant with no more params (its accuracy if there
is none). Fronts and hypervolumes use one latency per student, (1)'s, so remeasured latency
noise does not decide them; (3)'s decisions used its own measurements.

Then the cost-shortfall curve of every rule and factor tried, replayed on (1)'s learning curves
with the same ``naskd.fidelity.judge`` the search uses (exact, since a continued student is the
straight one: the replay of the shipped rule is printed beside the real run): pure Pareto rank
with several first rungs and factors, rank with an accuracy noise margin, more rungs,
learning-curve extrapolation, an exact cut by rank and crowding distance, and synchronous
successive halving.

Run (about 12 minutes on 2 cores; run it alone, the load average is printed):
    .venv/bin/python benchmarks/fidelity.py            # N = 48
    .venv/bin/python benchmarks/fidelity.py --students 40 --quick   # no 2-worker / TPE runs
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from _shared import draw_students, machine  # noqa: E402

from naskd.backends import optuna_backend as ob  # noqa: E402
from naskd.config import METRIC_DIRECTIONS, FidelityConfig, load_study  # noqa: E402
from naskd.diagnostics import long_run_metrics  # noqa: E402
from naskd.fidelity import RungPlan, judge  # noqa: E402
from naskd.front import hypervolume, non_dominated, objective_bounds  # noqa: E402
from naskd.trial import build_context, evaluate  # noqa: E402

STUDY = REPO_ROOT / "studies" / "mnist1d.toml"


# --- (1) ground truth ---------------------------------------------------------------------


def ground_truth(context: Any, students: list[tuple[dict, dict]]) -> tuple[list[dict], float]:
    """Every student to the target budget, scored after every epoch on the way."""
    plan = context.plan
    every_epoch = RungPlan(
        plan.target_steps,
        tuple(range(plan.steps_per_epoch, plan.target_steps, plan.steps_per_epoch)),
        plan.steps_per_epoch,
        judge=False,
    )
    rows, start = [], time.perf_counter()
    for i, (_params, spec) in enumerate(students):
        result = evaluate(spec, context, plan=every_epoch)
        assert result.status == "complete", result.reason
        rows.append(
            {
                "i": i,
                "spec": spec,
                "metrics": result.metrics,
                "steps": result.steps,
                "curve": {e["steps"]: e["metrics"]["accuracy"] for e in result.rungs}
                | {result.steps: result.metrics["accuracy"]},
            }
        )
        print(
            f"  ground truth {i + 1}/{len(students)}: {result.metrics['params']:.0f} params, "
            f"accuracy {result.metrics['accuracy']:.4f}",
            flush=True,
        )
    return rows, time.perf_counter() - start


# --- (2), (3): searches through the Optuna backend -----------------------------------------


def search(config: Any, root: Path, name: str, students: list[tuple[dict, dict]] | None, workers: int = 1) -> dict:
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    storage = str(out / "study.journal")
    config = dataclasses.replace(config, search=dataclasses.replace(config.search, storage=storage, workers=workers))
    if students is not None:
        queue = optuna.create_study(
            study_name=config.name,
            directions=list(config.search.directions),
            storage=ob.open_storage(ob.StorageChoice(storage, "journal")),
        )
        for params, _ in students:
            queue.enqueue_trial(params)
    start = time.perf_counter()
    ob.run_search(config, out, show_progress=False)
    wall = time.perf_counter() - start
    study = ob.open_study(config, ob.open_storage(ob.StorageChoice(storage, "journal")), create=False)
    trials = [t for t in study.get_trials(deepcopy=False) if ob.counts(t)]
    return {
        "name": name,
        "wall": wall,
        "config": config,
        "trials": [
            {
                "spec": t.user_attrs["spec"],
                "state": t.user_attrs["status"],
                "metrics": t.user_attrs["metrics"],
                "steps": int(t.user_attrs.get("steps") or 0),
                "rungs": t.user_attrs.get("rungs", []),
            }
            for t in trials
        ],
    }


# --- scoring a variant ------------------------------------------------------------------


class Scorer:
    """Fronts, hypervolume and shortfall of a variant against the ground truth, with one cost
    (the ground truth's) per student."""

    def __init__(self, gt: list[dict], objectives: tuple[str, ...], teacher: dict[str, float]) -> None:
        self.gt = {key(r["spec"]): r for r in gt}
        self.objectives = objectives
        self.directions = [METRIC_DIRECTIONS[o] for o in objectives]
        points = np.array([[r["metrics"][o] for o in objectives] for r in gt])
        self.lower, self.upper = objective_bounds(objectives, teacher, points, self.directions)
        self.gt_front = self.front([(key(r["spec"]), r["metrics"]["accuracy"]) for r in gt])

    def point(self, k: str, accuracy: float) -> list[float]:
        m = {**self.gt[k]["metrics"], "accuracy": accuracy}
        return [float(m[o]) for o in self.objectives]

    def front(self, scored: list[tuple[str, float]]) -> list[str]:
        """Keys of the non-dominated students among ``(key, accuracy)``."""
        if not scored:
            return []
        points = np.array([self.point(k, a) for k, a in scored])
        return [scored[i][0] for i in non_dominated(points, self.directions)]

    def target(self, k: str) -> float:
        return self.gt[k]["metrics"]["accuracy"]

    def hv(self, keys: list[str]) -> float:
        if not keys:
            return 0.0
        return hypervolume(
            np.array([self.point(k, self.target(k)) for k in keys]), self.directions, self.lower, self.upper
        )

    def shortfall(self, front: list[str]) -> float:
        """Mean over the ground-truth front of how far the best variant-front student with no
        more params falls short of it (0 when one is as accurate or more)."""
        gaps = []
        for g in self.gt_front:
            smaller = [
                self.target(k) for k in front if self.gt[k]["metrics"]["params"] <= self.gt[g]["metrics"]["params"]
            ]
            gaps.append(max(0.0, self.target(g) - max(smaller, default=0.0)))
        return float(np.mean(gaps))

    def summary(self, scored: list[tuple[str, float]]) -> dict[str, float]:
        """``scored``: the variant's reported ``(key, accuracy)`` of every student it trained to
        its own end budget (complete ones)."""
        front = self.front(scored)
        reported = dict(scored)
        gaps = [self.target(k) - reported[k] for k in front]
        return {
            "front": len(front),
            "hv": self.hv(front),
            "gap_mean": float(np.mean(np.abs(gaps))) if gaps else 0.0,
            "gap_max": float(np.max(np.abs(gaps))) if gaps else 0.0,
            "found": len(set(front) & set(self.gt_front)),
            "shortfall": self.shortfall(front),
        }


def key(spec: dict) -> str:
    import json

    return json.dumps({k: spec[k] for k in ("family", "arch")}, sort_keys=True)


# --- replaying rules on the ground truth's learning curves -------------------------------------


def replay(
    gt: list[dict],
    objectives: tuple[str, ...],
    rungs_epochs: list[int],
    factor: int,
    margins: tuple[float, float],
    per_epoch: int,
    target: int,
    costs: dict[str, dict] | None = None,
    kind: str = "rank",
) -> tuple[int, list[tuple[str, float]]]:
    """Asynchronous successive halving in arrival order (one worker). ``kind``:
    ``rank``: the search's own ``judge``; ``extrapolate``: the same, on every student's
    accuracy extrapolated to the target from its learning curve (log-linear through the rung
    and half of it); ``crowding``: exactly ``ceil(n / factor)`` go on, by Pareto rank then
    crowding distance (NSGA-II's order; no ties kept). ``margins``: accuracy and latency
    margins of ``judge``. ``costs`` replaces the ground truth's cost metrics (e.g. by a
    search's own measurements)."""
    records: dict[int, list[dict[str, float]]] = {k: [] for k in range(len(rungs_epochs))}
    total, done = 0, []
    for r in gt:
        stopped = False
        cost = (costs or {}).get(key(r["spec"]), {})
        for k, e in enumerate(rungs_epochs):
            accuracy = r["curve"][e * per_epoch]
            if kind == "extrapolate" and e >= 2:
                half = r["curve"][e // 2 * per_epoch]
                accuracy = min(
                    1.0,
                    accuracy
                    + max(0.0, accuracy - half) * math.log2(target / (e * per_epoch)) / math.log2(e / (e // 2)),
                )
            metrics = {**r["metrics"], **cost, "accuracy": accuracy}
            if kind == "crowding":
                goes_on = _crowding_keeps(metrics, records[k], objectives, factor)
            else:
                goes_on = judge(metrics, records[k], objectives, factor, *margins).goes_on
            records[k].append(metrics)
            if not goes_on:
                total += e * per_epoch
                stopped = True
                break
        if not stopped:
            total += target
            done.append((key(r["spec"]), r["metrics"]["accuracy"]))
    return total, done


def _crowding_keeps(own: dict, peers: list[dict], objectives: tuple[str, ...], factor: int) -> bool:
    from naskd.front import pareto_ranks

    rows = np.array([[m[o] for o in objectives] for m in (*peers, own)], dtype=float)
    ranks = pareto_ranks(rows, [METRIC_DIRECTIONS[o] for o in objectives])
    crowd = np.zeros(len(rows))
    for level in np.unique(ranks):
        idx = np.flatnonzero(ranks == level)
        if len(idx) <= 2:
            crowd[idx] = np.inf
            continue
        for j in range(rows.shape[1]):
            order = idx[np.argsort(rows[idx, j])]
            span = rows[order[-1], j] - rows[order[0], j] or 1.0
            crowd[order[0]] = crowd[order[-1]] = np.inf
            crowd[order[1:-1]] += (rows[order[2:], j] - rows[order[:-2], j]) / span
    keep = math.ceil(len(rows) / factor)
    ranking = sorted(range(len(rows)), key=lambda i: (ranks[i], -crowd[i], i))
    return ranking.index(len(rows) - 1) < keep


def synchronous(
    gt: list[dict],
    objectives: tuple[str, ...],
    rungs_epochs: list[int],
    factor: int,
    margins: tuple[float, float],
    per_epoch: int,
    target: int,
) -> tuple[int, list[tuple[str, float]]]:
    """Synchronous successive halving: every student trained to a rung before any goes on, then
    the best ranks (``margin_ranks``, ties kept) covering ``1 / factor`` of them go on."""
    from naskd.fidelity import margin_ranks

    alive, total, before = list(gt), 0, 0
    for e in rungs_epochs:
        total += (e - before) * per_epoch * len(alive)
        before = e
        points = np.array(
            [[{**r["metrics"], "accuracy": r["curve"][e * per_epoch]}[o] for o in objectives] for r in alive]
        )
        ranks = margin_ranks(points, objectives, *margins)
        cut = np.sort(ranks)[math.ceil(len(alive) / factor) - 1]
        alive = [r for r, rank in zip(alive, ranks) if rank <= cut]
    total += (target - before * per_epoch) * len(alive)
    return total, [(key(r["spec"]), r["metrics"]["accuracy"]) for r in alive]


def single_replay(gt: list[dict], steps: int, per_epoch: int) -> list[tuple[str, float]]:
    """Every student at ``steps`` (rounded down to a whole epoch: the curves are per epoch)."""
    at = max(per_epoch, steps // per_epoch * per_epoch)
    return [(key(r["spec"]), r["curve"][at]) for r in gt]


RULES = [  # (kind, first rung in epochs, factor, accuracy margin, latency margin)
    ("rank", 1, 3, 0.0, 0.0),
    ("rank", 1, 3, 0.01, 0.0),
    ("rank", 1, 3, 0.02, 0.0),
    ("rank", 1, 3, 0.05, 0.0),
    ("rank", 1, 3, 0.0, 0.1),
    ("rank", 1, 3, 0.02, 0.1),
    ("rank", 1, 3, 0.02, 0.2),
    ("rank", 2, 3, 0.0, 0.0),
    ("rank", 3, 3, 0.0, 0.0),
    ("rank", 3, 3, 0.02, 0.1),
    ("rank", 1, 2, 0.0, 0.0),
    ("rank", 1, 2, 0.02, 0.1),
    ("rank", 2, 2, 0.0, 0.0),
    ("rank", 3, 2, 0.0, 0.0),
    ("rank", 1, 4, 0.0, 0.0),
    ("rank", 1, 4, 0.02, 0.1),
    ("rank", 2, 4, 0.0, 0.0),
    ("extrapolate", 1, 3, 0.0, 0.0),
    ("extrapolate", 1, 3, 0.02, 0.1),
    ("extrapolate", 3, 3, 0.02, 0.1),
    ("crowding", 1, 3, 0.0, 0.0),
    ("crowding", 3, 3, 0.0, 0.0),
    ("synchronous", 1, 3, 0.0, 0.0),
    ("synchronous", 1, 3, 0.02, 0.1),
    ("synchronous", 3, 3, 0.02, 0.1),
]


def rungs_for(first: int, factor: int, target_epochs: int) -> list[int]:
    out, at = [], first
    while at < target_epochs:
        out.append(at)
        at *= factor
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=48, help="candidate students (default 48)")
    parser.add_argument("--quick", action="store_true", help="skip the 2-worker and TPE-driven runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    config = load_study(STUDY, trials=args.students)
    context = build_context(config)
    plan = context.plan
    objectives = tuple(config.search.objectives)
    per_epoch, target = plan.steps_per_epoch, plan.target_steps
    print(f"machine: {machine()}")
    print(
        f"study: {STUDY.relative_to(REPO_ROOT)}: target {plan.label(target)} ({target} steps), rungs at "
        f"{', '.join(plan.label(s) for s in plan.rungs)}, factor {plan.reduction_factor}, margin {plan.margin}, "
        f"latency margin {plan.latency_margin}; "
        f"{args.students} students; load {os.getloadavg()[0]:.1f}\n"
    )
    students = draw_students(config, args.students)
    root = Path(tempfile.mkdtemp(prefix="naskd-fidelity-"))
    try:
        print("(1) ground truth")
        gt, gt_wall = ground_truth(context, students)
        scorer = Scorer(gt, objectives, context.teacher_info)
        gt_steps = sum(r["steps"] for r in gt)

        print("(3) multi-fidelity search")
        mf = search(config, root, "multi", students)
        mf_steps = sum(t["steps"] for t in mf["trials"])
        budget = max(1, round(mf_steps / args.students))
        print(f"(2) single fidelity at {budget} steps per student")
        sf_config = dataclasses.replace(
            config,
            distill=dataclasses.replace(config.distill, steps=budget, epochs=0),
            fidelity=FidelityConfig(rule="off", first_rung=budget),
        )
        sf = search(sf_config, root, "single", students)
        sf_steps = sum(t["steps"] for t in sf["trials"])
        runs = [
            (
                "(1) ground truth: all to the target",
                gt_steps,
                gt_wall,
                scorer.summary([(key(r["spec"]), r["metrics"]["accuracy"]) for r in gt]),
            )
        ]
        for label, run, steps in (
            ("(2) single fidelity, same steps as (3)", sf, sf_steps),
            ("(3) multi-fidelity (the study's rule)", mf, mf_steps),
        ):
            done = [(key(t["spec"]), t["metrics"]["accuracy"]) for t in run["trials"] if t["state"] == "complete"]
            runs.append((label, steps, run["wall"], scorer.summary(done)))
        extra = []
        if not args.quick:
            print("(3) multi-fidelity, 2 workers, journal file")
            two = search(config, root, "multi-2w", students, workers=2)
            two_done = [(key(t["spec"]), t["metrics"]["accuracy"]) for t in two["trials"] if t["state"] == "complete"]
            runs.append(
                (
                    "(3) multi-fidelity, 2 workers x 1 thread",
                    sum(t["steps"] for t in two["trials"]),
                    two["wall"],
                    scorer.summary(two_done),
                )
            )
            print("(3) multi-fidelity, a normal TPE-driven study")
            tpe = search(config, root, "multi-tpe", None)
            extra.append(tpe_summary(tpe, context, objectives, target))

        print(f"\nload after: {os.getloadavg()[0]:.1f}\n")
        print(
            "| variant | training steps | share of (1) | wall (s) | front | hypervolume at target | "
            "reported − target accuracy over the front (mean / max) | ground-truth front found | "
            "mean shortfall |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        gt_front = len(scorer.gt_front)
        for label, steps, wall, s in runs:
            print(
                f"| {label} | {steps:,} | {steps / gt_steps:.2f} | {wall:.0f} | {s['front']} | {s['hv']:.4f} | "
                f"{s['gap_mean']:.4f} / {s['gap_max']:.4f} | {s['found']} of {gt_front} | {s['shortfall']:.4f} |"
            )
        for line in extra:
            print(line)
        mf_s, sf_s = runs[2][3], runs[1][3]
        print(
            f"\ntargets: (3)'s gap 0: {'PASS' if mf_s['gap_max'] == 0 else 'FAIL'} (max {mf_s['gap_max']:.4g}); "
            f"(3)'s hypervolume >= (2)'s: {'PASS' if mf_s['hv'] >= sf_s['hv'] else 'FAIL'} "
            f"({mf_s['hv']:.4f} vs {sf_s['hv']:.4f}); steps <= 50% of (1) and mean shortfall <= 0.02: "
            f"{'PASS' if mf_steps <= 0.5 * gt_steps and mf_s['shortfall'] <= 0.02 else 'FAIL'} "
            f"({mf_steps / gt_steps:.2f}, {mf_s['shortfall']:.4f})"
        )

        # The replay is the search's rule: with the search's own latencies it makes its decisions.
        own = {
            key(t["spec"]): {k: t["metrics"][k] for k in ("params", "flops", "latency_p50_ms", "latency_p95_ms")}
            for t in mf["trials"]
            if "params" in t["metrics"]
        }
        check, _ = replay(
            gt,
            objectives,
            [s_ // per_epoch for s_ in plan.rungs],
            plan.reduction_factor,
            (plan.margin, plan.latency_margin),
            per_epoch,
            target,
            costs=own,
        )
        print(
            f"replay of the shipped rule with (3)'s own latencies: {check:,} steps; the search itself: {mf_steps:,} "
            f"({'same' if check == mf_steps else 'DIFFERENT'})"
        )

        print(
            "\ncost-shortfall curve of the rules tried, replayed on (1)'s learning curves (one worker, arrival "
            "order as enqueued); (2) at the same steps, also replayed:"
        )
        print(
            "Decided on (1)'s latencies, then again on (3)'s own measurements of the same students (another "
            "moment, the noise a real run decides with); scored on (1)'s either way."
        )
        print(
            "| rule | first rung | factor | rungs (epochs) | margin | latency margin | steps share | mean shortfall "
            "| found | hypervolume | (2) at same steps: hypervolume | (2) shortfall | on (3)'s latencies: steps share "
            "/ shortfall / found / hypervolume |"
        )
        print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        target_epochs = target // per_epoch
        for kind, first, factor, margin, latency_margin in RULES:
            rungs = rungs_for(first, factor, target_epochs)
            if kind == "synchronous":
                total, done = synchronous(gt, objectives, rungs, factor, (margin, latency_margin), per_epoch, target)
            else:
                total, done = replay(
                    gt, objectives, rungs, factor, (margin, latency_margin), per_epoch, target, kind=kind
                )
            s = scorer.summary(done)
            single = scorer.summary(single_replay(gt, round(total / len(gt)), per_epoch))
            shipped = (
                " (shipped)"
                if (
                    kind == "rank"
                    and rungs == [s_ // per_epoch for s_ in plan.rungs]
                    and factor == plan.reduction_factor
                    and margin == plan.margin
                    and latency_margin == plan.latency_margin
                )
                else ""
            )
            if kind == "synchronous":
                noisy = "–"
            else:
                n_total, n_done = replay(
                    gt, objectives, rungs, factor, (margin, latency_margin), per_epoch, target, costs=own, kind=kind
                )
                n = scorer.summary(n_done)
                noisy = f"{n_total / gt_steps:.2f} / {n['shortfall']:.4f} / {n['found']} / {n['hv']:.4f}"
            print(
                f"| {kind}{shipped} | {first} | {factor} | {rungs} | {margin} | {latency_margin} | "
                f"{total / gt_steps:.2f} | "
                f"{s['shortfall']:.4f} | {s['found']} of {gt_front} | {s['hv']:.4f} | {single['hv']:.4f} | "
                f"{single['shortfall']:.4f} | {noisy} |"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def tpe_summary(run: dict, context: Any, objectives: tuple[str, ...], target: int) -> str:
    """A TPE-driven study's own students: steps, front, and its front re-trained to the
    target budget from scratch (``long_run_metrics``), which must reproduce it exactly."""
    from naskd.results import StudyFacts, TrialRecord, front_summary

    records = [
        TrialRecord(i, t["state"] if t["state"] != "invalid" else "failed", t["spec"], t["metrics"], steps=t["steps"])
        for i, t in enumerate(run["trials"])
    ]
    facts = StudyFacts(name="tpe", objectives=objectives, teacher=context.teacher_info)
    summary = front_summary(facts, records)
    gaps = [
        abs(long_run_metrics(e["spec"], context, target)["long_accuracy"] - e["metrics"]["accuracy"])
        for e in summary["front"]
    ]
    steps = sum(t["steps"] for t in run["trials"])
    pruned = sum(t["state"] == "pruned" for t in run["trials"])
    return (
        f"TPE-driven multi-fidelity study ({len(records)} of its own students): {steps:,} training steps "
        f"({steps / (len(records) * target):.2f} of training all of them to the target), wall {run['wall']:.0f} s, "
        f"{pruned} stopped at a rung, front {len(summary['front'])}, hypervolume {summary['hypervolume']:.4f} "
        f"(its own latency), front re-trained to the target from scratch: max |gap| {max(gaps, default=0):.4g}"
    )


if __name__ == "__main__":
    main()
