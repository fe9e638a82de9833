"""Which kind of teacher knowledge helps a small student, and does searching the recipe pay?

Measures, on CPU, for the mnist1d study (``studies/mnist1d.toml``, built-in 1-D CNN teacher):

A. Every knowledge kind of ``naskd.knowledge.functional.LOSSES`` on ONE fixed small cnn1d
   student (stages=2, width=8, kernel=5, residual, relu, batchnorm; a few thousand params).
   Each kind is distilled alone, ``knowledge = [{kind, published default weight and
   hyperparameters}]``, with the study's ``ce_weight`` and the study's budget (epochs, lr,
   batch size, optimizer), for S seeds (the seed sets the student's initial weights and the
   batch order), through ``naskd.trial.evaluate``. The same student trained without a teacher
   (``knowledge = []``: plain cross-entropy) is the baseline. Printed per kind: category,
   validation accuracy mean ± std over seeds, gain over the no-teacher student (difference of
   the means) and top-1 agreement with the teacher. ``attention_distribution`` needs attention
   layers in both models (transformers) and is reported as n/a for this CNN pair.

B. Recipe search against a fixed recipe: ``studies/mnist1d.toml`` (architecture only, fixed
   Hinton KD, T = 4, alpha = 0.9) and ``studies/mnist1d_recipe.toml`` (the same cnn1d space
   plus ``[space.recipe]``: knowledge combination, temperature, ce_weight, weight_scale), each
   run for N trials with the same sampler (TPE) and seed through
   ``naskd.backends.optuna_backend.run_search`` into temporary directories. Printed: each
   study's hypervolume as run_search reports it, both hypervolumes again under ONE shared
   normalisation (the fixed study's teacher figures: each run re-measures the teacher's
   latency, which moves the latency bound slightly), front sizes, and how many recipe-study
   front members no fixed-study front member dominates.

Building the study context (data; the built-in teacher trains on first use and is cached under
$NASKD_CACHE_DIR or ~/.cache/naskd) is excluded from the measurements. Latency objectives are
measured on this machine; on a loaded machine they are noisy, accuracy is not. Part A reports
no latency, so it times each student with 3 calls instead of the study's 100 (this only
shortens the run: cost measurement touches no random number generator).

torch runs with ``--threads`` intra-op threads (default 1). On a shared 2-core machine under
load, 2 threads made one training epoch of the part A student about 18x slower than 1 thread
(74 s vs 4 s), since the threads spin waiting for each other; accuracy does not depend on it.

Run:
    .venv/bin/python benchmarks/knowledge.py            # full run (3 seeds, study epochs, 30 trials each)
    .venv/bin/python benchmarks/knowledge.py --quick    # short run (2 seeds, 3 epochs, 8 trials each)
    .venv/bin/python benchmarks/knowledge.py --seeds 5 --epochs 20 --trials 50

It ends with a Markdown snippet to paste into the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402

from naskd.backends.optuna_backend import run_search  # noqa: E402
from naskd.config import StudyConfig, load_study  # noqa: E402
from naskd.distill import recipe_dict  # noqa: E402
from naskd.front import hypervolume, objective_bounds  # noqa: E402
from naskd.knowledge.functional import LOSSES  # noqa: E402
from naskd.spaces.recipe import default_term  # noqa: E402
from naskd.trial import StudyContext, build_context, evaluate  # noqa: E402

FIXED_STUDY = REPO_ROOT / "studies" / "mnist1d.toml"
RECIPE_STUDY = REPO_ROOT / "studies" / "mnist1d_recipe.toml"

#: The one student of part A: small (a few k params), residual, two stages.
STUDENT_ARCH: dict[str, Any] = {
    "stages": 2,
    "blocks": [1, 1],
    "width": 8,
    "width_mult": 2.0,
    "kernel": 5,
    "stride": 2,
    "residual": True,
    "activation": "relu",
    "batchnorm": True,
}
SCRATCH = "no teacher (CE only)"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def with_epochs(config: StudyConfig, epochs: int | None) -> StudyConfig:
    """The study with ``[distill].epochs`` replaced (steps cleared), or unchanged for None."""
    if epochs is None:
        return config
    return config.replace(distill=dataclasses.replace(config.distill, epochs=epochs, steps=0))


# --- part A ------------------------------------------------------------------------------


def kind_recipe(base: dict[str, Any], kind: str | None, seed: int) -> dict[str, Any]:
    """The study's recipe with one knowledge term at its published defaults (or none: scratch)."""
    recipe = dict(base)
    recipe["seed"] = seed
    if kind is None:
        recipe["knowledge"] = []
        recipe["ce_weight"] = 1.0
    else:
        recipe["knowledge"] = [default_term(kind)]
    return recipe


def run_kind(context: StudyContext, kind: str | None, seeds: int) -> dict[str, Any]:
    base = recipe_dict(context.config.distill)
    accs, agrees, reasons, seconds = [], [], [], []
    metrics: dict[str, float] = {}
    for seed in range(seeds):
        spec = {"family": "cnn1d", "arch": dict(STUDENT_ARCH), "recipe": kind_recipe(base, kind, seed)}
        t0 = time.perf_counter()
        result = evaluate(spec, context)
        seconds.append(time.perf_counter() - t0)
        if result.status == "complete":
            accs.append(result.metrics["accuracy"])
            agrees.append(result.metrics["teacher_agreement"])
            metrics = result.metrics
        else:
            reasons.append(f"seed {seed}: {result.status}: {result.reason}")
        log(
            f"  {kind or 'scratch'} seed {seed}: {result.status} "
            + (f"acc {result.metrics['accuracy']:.4f}" if result.status == "complete" else str(result.reason))
            + f" ({seconds[-1]:.1f} s)"
        )
    return {"kind": kind, "acc": accs, "agree": agrees, "reasons": reasons, "metrics": metrics, "seconds": sum(seconds)}


def mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def part_a(config: StudyConfig, seeds: int) -> dict[str, Any]:
    log("part A: building the study context (teacher trains on first use, then cached) ...")
    context = build_context(config)
    teacher = context.teacher_info
    log(f"part A: teacher accuracy {teacher['accuracy']:.4f}, {teacher['params']} params")
    rows = []
    log("part A: no-teacher baseline")
    scratch = run_kind(context, None, seeds)
    for kind, info in LOSSES.items():
        if info.consumes == "attention":
            rows.append({"kind": kind, "category": info.category, "na": "n/a (needs attention layers)"})
            continue
        log(f"part A: {kind}")
        rows.append({**run_kind(context, kind, seeds), "category": info.category})
    student = scratch["metrics"] or next((r["metrics"] for r in rows if r.get("metrics")), {})
    return {
        "teacher": teacher,
        "scratch": scratch,
        "rows": rows,
        "student": student,
        "seeds": seeds,
        "distill": config.distill,
    }


def table_a(res: dict[str, Any]) -> list[list[str]]:
    s_mean, _ = mean_std(res["scratch"]["acc"])
    out = []
    for r in [res["scratch"] | {"category": "-"}] + res["rows"]:
        name = r["kind"] or SCRATCH
        if "na" in r:
            out.append([name, r["category"], r["na"], "-", "-"])
            continue
        m, sd = mean_std(r["acc"])
        am, _ = mean_std(r["agree"])
        n_ok, n = len(r["acc"]), len(r["acc"]) + len(r["reasons"])
        acc = f"{m:.4f} ± {sd:.4f}" if r["acc"] else "failed"
        if r["acc"] and n_ok < n:
            acc += f" ({n_ok}/{n} ok)"
        gain = "-" if r["kind"] is None else (f"{m - s_mean:+.4f}" if r["acc"] else "-")
        out.append([name, r["category"], acc, gain, f"{am:.4f}" if r["agree"] else "-"])
    return out


# --- part B ------------------------------------------------------------------------------


def costs_of(front: list[dict[str, Any]], objectives: list[str]) -> np.ndarray:
    return np.array([[e["metrics"][o] for o in objectives] for e in front], dtype=float).reshape(-1, len(objectives))


def dominates(a: np.ndarray, b: np.ndarray, directions: list[str]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere."""
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    ca, cb = a * sign, b * sign
    return bool(np.all(ca <= cb) and np.any(ca < cb))


def part_b(trials: int, epochs: int | None) -> dict[str, Any]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[str, Any] = {"trials": trials}
    with tempfile.TemporaryDirectory(prefix="naskd-knowledge-") as tmp:
        for label, path in (("fixed", FIXED_STUDY), ("recipe", RECIPE_STUDY)):
            config = with_epochs(load_study(path, trials=trials), epochs)
            log(
                f"part B: {label} study {path.name}: {trials} trials, sampler {config.search.sampler} "
                f"seed {config.search.seed} ..."
            )
            t0 = time.perf_counter()
            summary = run_search(config, Path(tmp) / label, show_progress=False)
            out[label] = summary
            out[f"{label}_seconds"] = time.perf_counter() - t0
            out[f"{label}_config"] = config
            log(
                f"part B: {label}: hypervolume {summary['hypervolume']:.4f}, front {len(summary['front'])}, "
                f"counts {summary['counts']} ({out[f'{label}_seconds']:.0f} s)"
            )
    objectives = [o["name"] for o in out["fixed"]["objectives"]]
    directions = [o["direction"] for o in out["fixed"]["objectives"]]
    fixed_pts = costs_of(out["fixed"]["front"], objectives)
    recipe_pts = costs_of(out["recipe"]["front"], objectives)
    # One normalisation for both: the fixed study's teacher figures.
    lower, upper = objective_bounds(objectives, out["fixed"]["teacher"], np.vstack([fixed_pts, recipe_pts]), directions)
    out["hv_shared"] = {
        "fixed": hypervolume(fixed_pts, directions, lower, upper) if len(fixed_pts) else 0.0,
        "recipe": hypervolume(recipe_pts, directions, lower, upper) if len(recipe_pts) else 0.0,
        "bounds": (lower, upper),
    }
    # Accuracy x params only: deterministic (no timing noise), and not zeroed by the latency
    # bound (a student slower than the teacher at batch 1 adds nothing to the 3-objective volume).
    # The 3-objective front holds every (accuracy, params) non-dominated trial, so this is the
    # 2-objective hypervolume of all completed trials.
    two = (
        [objectives.index("accuracy"), objectives.index("params")] if {"accuracy", "params"} <= set(objectives) else []
    )
    if two:
        d2 = [directions[i] for i in two]
        lo2, hi2 = [lower[i] for i in two], [upper[i] for i in two]
        out["hv_acc_params"] = {
            label: hypervolume(pts[:, two], d2, lo2, hi2) if len(pts) else 0.0
            for label, pts in (("fixed", fixed_pts), ("recipe", recipe_pts))
        }
    out["slower_than_teacher"] = (
        {
            label: sum(
                1
                for e in out[label]["front"]
                if e["metrics"]["latency_p50_ms"] >= out["fixed"]["teacher"]["latency_p50_ms"]
            )
            for label in ("fixed", "recipe")
        }
        if "latency_p50_ms" in objectives
        else {}
    )
    beat = [
        e for e, p in zip(out["recipe"]["front"], recipe_pts) if not any(dominates(q, p, directions) for q in fixed_pts)
    ]
    beaten = [
        e for e, p in zip(out["fixed"]["front"], fixed_pts) if any(dominates(q, p, directions) for q in recipe_pts)
    ]
    out["recipe_not_dominated"] = beat
    if two:
        # The same count over accuracy x params: free of latency measured in two separate runs.
        d2 = [directions[i] for i in two]
        out["recipe_not_dominated_2"] = sum(
            1 for p in recipe_pts if not any(dominates(q[two], p[two], d2) for q in fixed_pts)
        )
    out["recipe_kinds"] = Counter(
        "+".join(t["kind"] for t in e["spec"].get("recipe", {}).get("knowledge", [])) for e in out["recipe"]["front"]
    )
    out["fixed_dominated"] = beaten
    out["objectives"] = objectives
    return out


def recipe_summary(spec: dict[str, Any]) -> str:
    r = spec.get("recipe", {})
    terms = "+".join(t["kind"] for t in r.get("knowledge", [])) or "none"
    temps = {t.get("temperature") for t in r.get("knowledge", []) if "temperature" in t}
    t = f", T={next(iter(temps)):.2f}" if len(temps) == 1 else ""
    w = ", w=" + "/".join(f"{t['weight']:.3g}" for t in r.get("knowledge", []))
    return f"{terms}{t}{w}, ce={r.get('ce_weight', 0):.2f}"


def arch_summary(spec: dict[str, Any]) -> str:
    a = spec.get("arch", {})
    return (
        f"st={a.get('stages')} bl={a.get('blocks')} w={a.get('width')} x{a.get('width_mult')} "
        f"k={a.get('kernel')} res={a.get('residual')} {a.get('activation')}"
    )


def table_b(res: dict[str, Any]) -> list[list[str]]:
    rows = []
    for label, name in (
        ("fixed", "studies/mnist1d.toml (fixed kd recipe)"),
        ("recipe", "studies/mnist1d_recipe.toml (recipe searched)"),
    ):
        s = res[label]
        c = s["counts"]
        best = max((e["metrics"]["accuracy"] for e in s["front"]), default=math.nan)
        hv2 = res.get("hv_acc_params", {}).get(label)
        slow = res["slower_than_teacher"].get(label)
        rows.append(
            [
                name,
                f"{s['hypervolume']:.4f}",
                f"{res['hv_shared'][label]:.4f}",
                "-" if hv2 is None else f"{hv2:.4f}",
                str(len(s["front"])),
                "-" if slow is None else str(slow),
                f"{best:.4f}",
                f"{c['complete']}/{c['failed']}/{c['infeasible']}",
                f"{res[f'{label}_seconds']:.0f}",
            ]
        )
    return rows


# --- output ------------------------------------------------------------------------------


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    return "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(esc(c) for c in r) + " |" for r in rows),
        ]
    )


HEADER_A = ["knowledge", "category", "accuracy (mean ± std)", "gain vs no teacher", "teacher agreement"]
HEADER_B = [
    "study",
    "HV (run)",
    "HV (shared bounds)",
    "HV accuracy x params",
    "front size",
    "front slower than teacher",
    "best front accuracy",
    "complete/failed/infeasible",
    "seconds",
]


def conclusion(b: dict[str, Any]) -> str:
    hf, hr = b["hv_shared"]["fixed"], b["hv_shared"]["recipe"]
    n_r, n_beat = len(b["recipe"]["front"]), len(b["recipe_not_dominated"])
    two = b.get("hv_acc_params")
    better = lambda r, f: "higher" if r > f + 1e-3 else "lower" if r < f - 1e-3 else "about equal"  # noqa: E731
    kinds = ", ".join(f"{k} {n}" for k, n in b["recipe_kinds"].most_common())
    text = (
        f"With {b['trials']} trials each, the recipe search's 3-objective hypervolume is {better(hr, hf)} "
        f"({hr:.4f} vs {hf:.4f}, shared bounds)"
    )
    if two:
        text += (
            f" and its accuracy x params hypervolume is {better(two['recipe'], two['fixed'])} "
            f"({two['recipe']:.4f} vs {two['fixed']:.4f})"
        )
        if better(hr, hf) != better(two["recipe"], two["fixed"]):
            text += (
                ": the two disagree, and latency (measured in two separate runs, bounded by the teacher's) "
                "decides the 3-objective one"
            )
        text += (
            f"; {n_beat} of {n_r} recipe-front members are not dominated by the fixed front "
            f"({b['recipe_not_dominated_2']} on accuracy x params alone)"
        )
    else:
        text += f"; {n_beat} of {n_r} recipe-front members are not dominated by the fixed front"
    return text + f"; the recipe front's knowledge: {kinds}."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run: 2 seeds, 3 epochs, 8 trials per study")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per kind in part A (default 3; quick 2)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="distillation epochs for every run (default: the study's target budget, 27; quick 3)",
    )
    parser.add_argument("--trials", type=int, default=None, help="trials per study in part B (default 30; quick 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--skip-a", action="store_true", help="run part B only")
    parser.add_argument("--skip-b", action="store_true", help="run part A only")
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 3)
    epochs = args.epochs if args.epochs is not None else (3 if args.quick else None)
    trials = args.trials or (8 if args.quick else 30)
    if seeds < 1 or trials < 1 or args.threads < 1 or (epochs is not None and epochs < 1):
        parser.error("--seeds, --trials, --threads and --epochs must be >= 1")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )
    start = time.perf_counter()
    fixed_config = with_epochs(load_study(FIXED_STUDY), epochs)
    d = fixed_config.distill
    budget = (
        f"{d.epochs} epochs x batch {d.batch_size}, {d.optimizer} lr {d.lr:g}, ce_weight {d.ce_weight:g} "
        f"for every kind (1.0 without a teacher)"
    )
    print(f"machine: {machine}")
    a = b = None
    md: list[str] = []

    if not args.skip_a:
        # Part A reports no latency: time each student with 3 calls, not the study's 100.
        a = part_a(fixed_config.replace(cost=dataclasses.replace(fixed_config.cost, warmup=1, repeats=3)), seeds)
        t, st = a["teacher"], a["student"]
        print()
        print("== A. Each knowledge kind on one fixed student (studies/mnist1d.toml) ==")
        print(
            f"teacher: built-in mnist1d 1-D CNN, accuracy {t['accuracy']:.4f}, {t['params']} params, {t['flops']} FLOPs"
        )
        student_line = (
            f"student: cnn1d(stages=2, blocks=1, width=8, width_mult=2, kernel=5, residual, relu, bn), "
            f"{int(st.get('params', 0))} params, {int(st.get('flops', 0))} FLOPs "
            f"(capacity ratio {st.get('capacity_ratio', math.nan):.1f})"
        )
        print(student_line)
        print(f"budget: {budget}; {seeds} seeds (initial weights + batch order)")
        rows = table_a(a)
        print(text_table(HEADER_A, rows))
        failures = [(r["kind"], reason) for r in [a["scratch"], *a["rows"]] for reason in r.get("reasons", [])]
        for kind, reason in failures:
            print(f"  {kind or 'scratch'}: {reason}")
        md += [
            "#### Each knowledge kind on one student (MNIST-1D)",
            "",
            f"Teacher: built-in 1-D CNN, accuracy {t['accuracy']:.4f}, {t['params']} params. "
            f"{student_line[0].upper()}{student_line[1:]}. Budget: {budget}; mean ± std over {seeds} seeds.",
            "",
            md_table(HEADER_A, rows),
            "",
        ]

    if not args.skip_b:
        b = part_b(trials, epochs)
        print()
        print("== B. Recipe search vs fixed recipe ==")
        print(
            f"{trials} trials each, objectives {', '.join(b['objectives'])}, "
            f"sampler {b['fixed_config'].search.sampler} seed {b['fixed_config'].search.seed}; "
            f"teacher latency p50 {b['fixed']['teacher']['latency_p50_ms']:.4g} ms (fixed run) / "
            f"{b['recipe']['teacher']['latency_p50_ms']:.4g} ms (recipe run)"
        )
        rows_b = table_b(b)
        print(text_table(HEADER_B, rows_b))
        print("recipe-study front members not dominated by the fixed front:")
        for e in b["recipe_not_dominated"]:
            m = e["metrics"]
            print(
                f"  trial {e['number']}: acc {m['accuracy']:.4f}, {int(m['params'])} params, "
                f"{m['latency_p50_ms']:.4g} ms; {arch_summary(e['spec'])}; {recipe_summary(e['spec'])}"
            )
        print(
            f"fixed-study front members dominated by the recipe front: {len(b['fixed_dominated'])} "
            f"of {len(b['fixed']['front'])}"
        )
        line = conclusion(b)
        print(f"conclusion: {line}")
        md += [
            "#### Searching the recipe vs a fixed kd recipe (MNIST-1D)",
            "",
            f"{trials} trials per study, TPE seed {b['fixed_config'].search.seed}, "
            f"objectives {', '.join(b['objectives'])}. HV = hypervolume as the run reports it, under one shared "
            "normalisation (the fixed study's teacher figures), and over accuracy x params only "
            "(latency bounded by the teacher's: a front member slower than the teacher at batch 1 adds "
            "nothing to the 3-objective HV).",
            "",
            md_table(HEADER_B, rows_b),
            "",
            line,
            "",
        ]

    md += [f"Measured with `benchmarks/knowledge.py` on {machine}; {time.perf_counter() - start:.0f} s in all."]
    print()
    print("== Markdown for README ==")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
