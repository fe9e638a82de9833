"""Which distillation schemes help a small student here: each scheme of ``[distill] scheme``,
and several teachers, against offline KD and against no teacher.

Measures, on CPU, on MNIST-1D, ONE fixed cnn1d student (3 stages of width 8 x 1.5, kernel 5,
residual; about 5k params, the teacher has 88k) trained for the study's target budget (27
epochs), for S seeds (the seed sets the student's initial weights and the batch order), each arm
through the trial pipeline (``naskd.trial.build`` / ``fit`` / ``validate``) with the recipe of
its ready study file:

- no teacher: the student trained on the labels alone (``fit(..., scratch=True)``);
- offline KD: ``studies/mnist1d.toml`` (Hinton KD, T = 4, alpha = 0.9);
- mutual, cohort teacher / 1 peer: ``studies/mnist1d_mutual.toml``'s recipe (DML: CE + KL at T = 1);
- self: ``studies/mnist1d_self.toml`` (deep supervision, heads on stages 0 and 1);
- born-again, the fixed student chained over 2 generations (the study file's recipe), and
  born-again proper: the teacher's architecture as the student (family ``teacher``), after 1
  and 2 generations, against that architecture trained without a teacher;
- several teachers: ``studies/mnist1d_teachers.toml`` (three built-in teachers from seeds 0-2,
  mean logits) against offline KD from each of those teachers alone.

Printed per arm: validation accuracy mean ± std over seeds, the difference to offline KD and to
no teacher (differences of the means), and train seconds per trial (median). Building contexts
(data; built-in teachers train on first use and are cached) is excluded. torch runs with one
intra-op thread.

Run:
    .venv/bin/python benchmarks/schemes.py             # 3 seeds, 27 epochs
    .venv/bin/python benchmarks/schemes.py --quick     # 2 seeds, 3 epochs

It ends with a Markdown snippet to paste into the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from benchmarks._shared import FIXED_STUDENT, machine, run_student  # noqa: E402
from naskd.config import StudyConfig, load_study  # noqa: E402
from naskd.trial import StudyContext, build_context  # noqa: E402

STUDIES = REPO_ROOT / "studies"
TEACHER_ARCH = {"family": "teacher", "arch": {}}


def _config(name: str, epochs: int) -> StudyConfig:
    config = load_study(STUDIES / f"{name}.toml")
    return config.replace(distill=dataclasses.replace(config.distill, epochs=epochs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 3 epochs")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs = 2, 3
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    seeds = list(range(args.seeds))

    contexts = {
        name: build_context(_config(name, args.epochs))
        for name in ("mnist1d", "mnist1d_mutual", "mnist1d_self", "mnist1d_born_again", "mnist1d_teachers")
    }
    several = contexts["mnist1d_teachers"]
    singles = {
        t.name: dataclasses.replace(several, teachers=[t], train_logits=[z])
        for t, z in zip(several.teachers, several.train_logits)
    }
    arms: list[tuple[str, StudyContext, dict[str, Any], dict[str, Any]]] = [
        ("no teacher", contexts["mnist1d"], FIXED_STUDENT, {"scratch": True}),
        ("offline KD", contexts["mnist1d"], FIXED_STUDENT, {}),
        ("mutual, cohort = teacher", contexts["mnist1d_mutual"], FIXED_STUDENT, {"cohort": "teacher"}),
        ("mutual, cohort = 1 peer", contexts["mnist1d_mutual"], FIXED_STUDENT, {"cohort": "peers", "peers": 1}),
        ("self (deep supervision)", contexts["mnist1d_self"], FIXED_STUDENT, {}),
        ("born-again chain, 2 generations", contexts["mnist1d_born_again"], FIXED_STUDENT, {}),
        ("teacher's architecture, no teacher", contexts["mnist1d"], TEACHER_ARCH, {"scratch": True}),
        ("born-again proper, 1 generation", contexts["mnist1d_born_again"], TEACHER_ARCH, {"generations": 1}),
        ("born-again proper, 2 generations", contexts["mnist1d_born_again"], TEACHER_ARCH, {"generations": 2}),
        *[(f"offline KD from teacher {name} alone", ctx, FIXED_STUDENT, {}) for name, ctx in singles.items()],
        ("3 teachers, mean logits", several, FIXED_STUDENT, {}),
    ]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in arms}
    started = time.perf_counter()
    for seed in seeds:  # seeds outermost: every arm sees the machine's drift alike
        for name, ctx, student, extra in arms:
            results[name].append(run_student(ctx, student, seed, **extra))
            print(f"  seed {seed}  {name:40s} acc {results[name][-1][0]:.4f}  {results[name][-1][1]:.1f} s", flush=True)
    wall = time.perf_counter() - started

    def mean(name: str) -> float:
        return statistics.fmean(a for a, _ in results[name])

    print(
        f"\nmachine: {machine()}; "
        f"load average {os.getloadavg()[0]:.2f} at the end; {len(seeds)} seeds, {args.epochs} epochs, "
        f"{wall / 60:.1f} min"
    )
    teacher_accs = {t["name"]: t["accuracy"] for t in several.teacher_info["teachers"]}
    print(
        f"teachers: built-in {contexts['mnist1d'].teacher_info['accuracy']:.4f}; "
        + ", ".join(f"{n} {a:.4f}" for n, a in teacher_accs.items())
        + f"; ensemble {several.teacher_info['accuracy']:.4f}"
    )
    print("\n| arm | accuracy (mean ± std) | vs offline KD | vs no teacher | train s / trial |")
    print("|---|---|---|---|---|")
    for name, *_ in arms:
        accs = [a for a, _ in results[name]]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        secs = statistics.median(s for _, s in results[name])
        print(
            f"| {name} | {mean(name):.4f} ± {std:.4f} | {mean(name) - mean('offline KD'):+.4f} | "
            f"{mean(name) - mean('no teacher'):+.4f} | {secs:.1f} |"
        )
    best = max(singles, key=lambda n: mean(f"offline KD from teacher {n} alone"))
    print(
        f"\nseveral teachers vs the best single teacher ({best}): "
        f"{mean('3 teachers, mean logits') - mean(f'offline KD from teacher {best} alone'):+.4f}"
    )
    plain = mean("teacher's architecture, no teacher")
    print(
        "born-again proper vs the teacher's architecture without a teacher: "
        f"1 generation {mean('born-again proper, 1 generation') - plain:+.4f}, "
        f"2 generations {mean('born-again proper, 2 generations') - plain:+.4f}"
    )


if __name__ == "__main__":
    main()
