"""How much does naskd's training loop cost, and how many trials an hour does a study run?

Measures, on CPU, for the mnist1d study (``studies/mnist1d.toml``):

1. One fixed cnn1d student (about 1/10 of the built-in teacher's forward FLOPs), trained for
   the same number of steps, with the same seed, batch size and optimizer, three ways,
   interleaved over R repeats (median of each):

   (a) naskd, teacher cache on:  ``distill(..., teacher_logits=context.train_logits[0])``
   (b) naskd, teacher cache off: ``distill(..., teacher=context.teacher.model)``, the teacher
       runs on every batch inside naskd's loop
   (c) a plain PyTorch loop written here, the way a user would without naskd: Adam, a seeded
       permutation, tensor slices, the teacher under ``torch.no_grad()`` every step, and
       ``(1-a)*CE + a*T^2*KL`` written inline.

   at the study's batch size (100) and at 250 and 500 (``--batch-sizes``). Targets: (a) <=
   0.5x (c), and (b) <= 1.05x (c), printed as PASS/FAIL per batch size; the script never exits
   non-zero for a FAIL (it is a benchmark, not a test). The cache can only remove the
   teacher's forward pass, so the pieces of a step are timed too: (a)/(c) cannot go below
   naskd's student step / (plain student step + teacher forward). At batch 100 this student's
   step is bound by per-operator overhead, not FLOPs (its tiny convolutions run at a fraction
   of the teacher's FLOP rate), which keeps that floor above 0.5x; larger batches are bound by
   FLOPs, where a 10x teacher dominates the plain loop.

2. Trials per hour: K trials through ``naskd.trial.evaluate`` (cost measurement, budget
   check, distillation, scoring), with specs drawn from the study's space by a seeded random
   suggester. Optuna's own overhead per trial is excluded (it is small).

Building the study context (data, and the built-in teacher, which trains on first use and is
cached under $NASKD_CACHE_DIR or ~/.cache/naskd) happens once and is excluded from every
timing. torch uses os.cpu_count() intra-op threads throughout.

Run:
    .venv/bin/python benchmarks/overhead.py            # full run (200 steps x 5 repeats x 3 batch sizes, 8 trials)
    .venv/bin/python benchmarks/overhead.py --quick    # short run (60 steps x 3 repeats x 3 batch sizes, 3 trials)

It ends with a Markdown snippet to paste into the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from naskd.cache import cache_root  # noqa: E402
from naskd.config import DistillConfig, load_study  # noqa: E402
from naskd.distill import distill, make_optimizer  # noqa: E402
from naskd.measure import count_flops, count_params  # noqa: E402
from naskd.spaces import BuildContext, build_student  # noqa: E402
from naskd.trial import StudyContext, build_context, evaluate, full_spec  # noqa: E402

STUDY = REPO_ROOT / "studies" / "mnist1d.toml"

#: The fixed student: 2 stages of one residual block each, 11 -> 22 channels, kernel 5.
STUDENT_SPEC: dict[str, Any] = {
    "family": "cnn1d",
    "arch": {"stages": 2, "blocks": 1, "width": 11, "width_mult": 2.0, "kernel": 5},
}


# --------------------------------------------------------------------------- suggester


class RandomSuggester:
    """Seeded uniform random sampling with optuna's ``suggest_*`` signatures."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.params: dict[str, Any] = {}

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        if log:
            # Log-uniform over [low, high + 1), floored: each int weighted by its log-width.
            value = int(math.exp(self.rng.uniform(math.log(low), math.log(high + 1))))
            value = min(max(value, low), high)
        else:
            value = low + step * self.rng.randint(0, (high - low) // step)
        self.params[name] = value
        return value

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        if log:
            value = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        elif step is not None:
            value = low + step * self.rng.randint(0, int(math.floor((high - low) / step + 1e-9)))
        else:
            value = self.rng.uniform(low, high)
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        value = self.rng.choice(list(choices))
        self.params[name] = value
        return value


# --------------------------------------------------------------------------- the three loops


def plain_kd_loss(
    logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor, alpha: float, temperature: float
) -> torch.Tensor:
    """``(1-a)*CE + a*T^2*KL``, written inline as a user would (not naskd's KnowledgeLoss)."""
    kl = F.kl_div(
        F.log_softmax(logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - alpha) * F.cross_entropy(logits, y) + alpha * temperature**2 * kl


def plain_loop(
    student: nn.Module,
    teacher: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    alpha: float,
    temperature: float,
    seed: int,
) -> float:
    """What a user would write without naskd. Returns the last loss."""
    n = len(y)
    per_epoch = math.ceil(n / batch_size)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    teacher.eval()
    student.train()
    order = torch.randperm(n, generator=generator)
    for step in range(steps):
        i = step % per_epoch
        if i == 0 and step > 0:
            order = torch.randperm(n, generator=generator)
        idx = order[i * batch_size : (i + 1) * batch_size]
        xb, yb = x[idx], y[idx]
        logits = student(xb)
        with torch.no_grad():
            t = teacher(xb)
        loss = plain_kd_loss(logits, yb, t, alpha, temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    student.eval()
    return loss.item()


def make_runners(context: StudyContext, recipe: DistillConfig) -> dict[str, Callable[[nn.Module], float]]:
    x, y = context.data.x_train, context.data.y_train
    teacher = context.teacher.model
    assert context.train_logits[0] is not None, "studies/mnist1d.toml must have [distill].cache_teacher on"

    def cached(student: nn.Module) -> float:
        return distill(student, x, y, recipe, teacher_logits=context.train_logits[0]).final_loss

    def uncached(student: nn.Module) -> float:
        return distill(student, x, y, recipe, teacher=teacher).final_loss

    def plain(student: nn.Module) -> float:
        return plain_loop(
            student,
            teacher,
            x,
            y,
            steps=recipe.steps,
            batch_size=recipe.batch_size,
            lr=recipe.lr,
            alpha=recipe.alpha,
            temperature=recipe.temperature,
            seed=recipe.seed,
        )

    return {"naskd, cache on": cached, "naskd, cache off": uncached, "plain PyTorch loop": plain}


def fresh_student(context: StudyContext, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_student(STUDENT_SPEC, BuildContext(context.data.input_shape, context.data.num_classes))


NASKD_STEP_PIECE = "student step, naskd (fused Adam)"
PLAIN_STEP_PIECE = "student step, plain loop (Adam defaults)"
TEACHER_PIECE = "teacher forward (no_grad)"


def piece_times(context: StudyContext, recipe: DistillConfig, seed: int, calls: int = 200) -> dict[str, float]:
    """Median ms per call of the pieces a step is made of, interleaved in rounds of 10 calls.

    The cache removes exactly the teacher's forward pass from a step, so
    ``naskd's student step / (plain student step + teacher forward)`` bounds what
    cache-on / plain can reach. The two student steps differ only in the optimizer: naskd's
    (``make_optimizer``: fused Adam) against ``torch.optim.Adam``'s defaults.
    """
    x, y = context.data.x_train, context.data.y_train
    assert context.train_logits[0] is not None
    xb, yb, tb = x[: recipe.batch_size], y[: recipe.batch_size], context.train_logits[0][: recipe.batch_size]
    teacher = context.teacher.model.eval()

    def stepper(make: Callable[[list[nn.Parameter]], torch.optim.Optimizer]) -> Callable[[], None]:
        student = fresh_student(context, seed).train()
        optimizer = make(list(student.parameters()))

        def step() -> None:
            loss = plain_kd_loss(student(xb), yb, tb, recipe.alpha, recipe.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        return step

    def teacher_forward() -> None:
        with torch.no_grad():
            teacher(xb)

    pieces = {
        NASKD_STEP_PIECE: stepper(lambda params: make_optimizer(params, recipe)),
        PLAIN_STEP_PIECE: stepper(lambda params: torch.optim.Adam(params, lr=recipe.lr)),
        TEACHER_PIECE: teacher_forward,
    }
    samples: dict[str, list[float]] = {name: [] for name in pieces}
    for fn in pieces.values():  # warm-up
        for _ in range(5):
            fn()
    for _ in range(max(1, calls // 10)):
        for name, fn in pieces.items():
            for _ in range(10):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(v) for name, v in samples.items()}


@dataclasses.dataclass
class Comparison:
    """The three loops at one batch size: median and best seconds, and the step's pieces."""

    batch: int
    median: dict[str, float]
    best: dict[str, float]
    losses: dict[str, float]
    pieces: dict[str, float]

    def ratio(self, name: str) -> float:
        return self.median[name] / self.median["plain PyTorch loop"]

    def best_ratio(self, name: str) -> float:
        return self.best[name] / self.best["plain PyTorch loop"]

    @property
    def floor(self) -> float:
        p = self.pieces
        return p[NASKD_STEP_PIECE] / (p[PLAIN_STEP_PIECE] + p[TEACHER_PIECE])


def compare(context: StudyContext, recipe: DistillConfig, repeats: int, seed: int) -> Comparison:
    """Runs the three loops ``repeats`` times, interleaved, at ``recipe.batch_size``."""
    runners = make_runners(context, recipe)
    names = list(runners)
    for name in names:
        runners[name](fresh_student(context, seed))
    times: dict[str, list[float]] = {name: [] for name in names}
    losses: dict[str, float] = {}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            model = fresh_student(context, seed)
            start = time.perf_counter()
            losses[name] = runners[name](model)
            times[name].append(time.perf_counter() - start)
        print(
            f"  batch {recipe.batch_size}, repeat {r + 1}/{repeats}: "
            + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in names),
            flush=True,
        )
    return Comparison(
        recipe.batch_size,
        {n: statistics.median(v) for n, v in times.items()},
        {n: min(v) for n, v in times.items()},
        losses,
        piece_times(context, recipe, seed),
    )


# --------------------------------------------------------------------------- main


def load_text() -> str:
    """The 1-minute load average against the CPU count: other processes make timings noisy."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return "load average unknown"
    cpus = os.cpu_count() or 1
    busy = " (BUSY: more runnable threads than CPUs; timings are noisy)" if load > cpus else ""
    return f"1-min load average {load:.2f} on {os.cpu_count()} CPUs{busy}"


def spec_text(spec: dict[str, Any]) -> str:
    arch = spec["arch"]
    return f"{spec['family']} " + ", ".join(f"{k}={v}" for k, v in arch.items())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short run: 60 steps, 3 repeats, 3 trials")
    parser.add_argument("--steps", type=int, help="training steps per run (default 200; --quick 60)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats, median taken (default 5; --quick 3)")
    parser.add_argument("--trials", type=int, help="trials for the trials/hour figure (default 8; --quick 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the student, batches and sampled specs")
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        help="batch sizes of the loop comparison (default: the study's, 250 and 500)",
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads (default: os.cpu_count())"
    )
    args = parser.parse_args()
    steps = args.steps or (60 if args.quick else 200)
    repeats = args.repeats or (3 if args.quick else 5)
    trials = args.trials if args.trials is not None else (3 if args.quick else 8)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    threads = args.threads
    torch.set_num_threads(threads)
    machine = (
        f"{platform.processor() or platform.machine()} ({platform.machine()}), {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {threads} thread{'s' if threads != 1 else ''}, "
        f"Python {platform.python_version()}"
    )
    print(f"machine: {machine}")
    print(
        f"torch.set_num_threads({threads}){' (os.cpu_count())' if threads == os.cpu_count() else ''} for every "
        f"variant and every trial"
    )
    load_before = load_text()

    # ---- setup (not timed)
    print(
        f"\nsetting up {STUDY.relative_to(REPO_ROOT)} (not timed: data, teacher and its cached outputs; the "
        f"built-in teacher trains on first use, minutes on a small CPU, then is cached under "
        f"{cache_root(None)})",
        flush=True,
    )
    t0 = time.perf_counter()
    config = load_study(STUDY)
    context = build_context(config)
    setup_s = time.perf_counter() - t0
    torch.set_num_threads(threads)
    data = context.data
    print(
        f"setup took {setup_s:.1f} s (excluded); train set {tuple(data.x_train.shape)}, "
        f"teacher accuracy {context.teacher_info['accuracy']:.3f}"
    )

    # ---- the student
    teacher_flops = count_flops(context.teacher.model, data.input_shape)
    teacher_params = count_params(context.teacher.model)
    student = fresh_student(context, args.seed)
    student_flops = count_flops(student, data.input_shape)
    student_params = count_params(student)
    flop_ratio = teacher_flops / student_flops
    print(f"\nteacher: {teacher_params:,} params, {teacher_flops:,} FLOPs/sample (forward)")
    print(
        f"student: {spec_text(STUDENT_SPEC)}: {student_params:,} params, {student_flops:,} FLOPs/sample "
        f"(forward); teacher/student FLOPs = {flop_ratio:.2f}x"
    )
    if not 8 <= flop_ratio <= 12:
        print("WARNING: the teacher/student FLOP ratio is outside 8x..12x; retune STUDENT_SPEC")

    # ---- loop overhead, at the study's batch size and at larger ones
    batches = args.batch_sizes or [config.distill.batch_size, 250, 500]
    print(
        f"\ntraining loop: {steps} steps, Adam lr {config.distill.lr}, alpha {config.distill.alpha}, "
        f"T {config.distill.temperature}, seed {config.distill.seed}; a fresh student per run; {repeats} repeats, "
        f"interleaved (order rotated each repeat), each variant warmed up once first; batch sizes {batches} "
        f"(the study trains at {config.distill.batch_size})",
        flush=True,
    )
    results = [
        compare(context, dataclasses.replace(config.distill, steps=steps, batch_size=b), repeats, args.seed)
        for b in batches
    ]
    load_after = load_text()
    print(
        f"\n{'batch':>6} {'variant':<20} {'median s':>9} {'steps/s':>9} {'vs plain':>9} {'min vs plain':>13} "
        f"{'final loss':>11}   floor"
    )
    for res in results:
        for name in res.median:
            print(
                f"{res.batch:>6} {name:<20} {res.median[name]:>9.3f} {steps / res.median[name]:>9.1f} "
                f"{res.ratio(name):>8.2f}x {res.best_ratio(name):>12.2f}x {res.losses[name]:>11.4f}"
                + (f"   {res.floor:.2f}x" if name == "naskd, cache on" else "")
            )
    print(f"(load before: {load_before}; after: {load_after})")
    print(
        "floor: the cache saves only the teacher's forward, so cache-on/plain >= about naskd's student step / "
        "(plain student step + teacher forward), timed piece by piece (below)"
    )
    for res in results:
        on, off = res.ratio("naskd, cache on"), res.ratio("naskd, cache off")
        print(
            f"target at batch {res.batch:>3}: cache on <= 0.50x plain: {on:.2f}x {'PASS' if on <= 0.5 else 'FAIL'}; "
            f"cache off <= 1.05x plain: {off:.2f}x {'PASS' if off <= 1.05 else 'FAIL'}  (medians)"
        )
    print("\nwhere a step goes (median ms per call, same threads; timed call by call, interleaved):")
    for res in results:
        print(f"  batch {res.batch}: " + "; ".join(f"{name.strip()} {ms:.2f} ms" for name, ms in res.pieces.items()))

    # ---- trials per hour
    trial_s: list[float] = []
    statuses: Counter[str] = Counter()
    if trials > 0:
        print(
            f"\ntrials/hour: {trials} trials of {STUDY.relative_to(REPO_ROOT)} through naskd.trial.evaluate "
            f"(recipe: {config.distill.epochs} epochs of batch {config.distill.batch_size}; latency "
            f"{config.cost.repeats} repeats at {config.cost.threads} thread), specs from a seeded random "
            f"suggester (seed {args.seed})",
            flush=True,
        )
        suggester = RandomSuggester(args.seed)
        for k in range(trials):
            spec = full_spec(config.space.sample(suggester), config)
            start = time.perf_counter()
            result = evaluate(spec, context)
            elapsed = time.perf_counter() - start
            torch.set_num_threads(threads)
            trial_s.append(elapsed)
            statuses[result.status] += 1
            extra = (
                f"acc {result.metrics['accuracy']:.3f}, {int(result.metrics['params']):,} params"
                if result.status == "complete"
                else (result.reason or "")
            )
            print(
                f"  trial {k + 1}/{trials}: {elapsed:6.2f} s  {result.status:<10} {spec_text(spec)}  [{extra}]",
                flush=True,
            )
    mean_trial = statistics.fmean(trial_s) if trial_s else float("nan")
    per_hour = 3600 / mean_trial if trial_s else float("nan")
    status_text = ", ".join(
        f"{statuses[s]} {s}" for s in ("complete", "infeasible", "invalid", "failed") if statuses[s] or s != "invalid"
    )
    if trial_s:
        median_trial = statistics.median(trial_s)
        print(
            f"\nmean {mean_trial:.2f} s per trial -> {per_hour:.0f} trials/hour on one worker "
            f"(median {median_trial:.2f} s -> {3600 / median_trial:.0f}/hour, less sensitive to a "
            f"busy machine); {status_text}"
        )
        print("(excludes Optuna's own sampler/storage overhead per trial, which is small)")

    # ---- README snippet
    print("\n---- Markdown for README ----\n")
    print(
        f"Training-loop overhead, mnist1d: a {spec_text(STUDENT_SPEC)} student ({student_params:,} params, "
        f"{student_flops / 1e3:,.0f} kFLOPs/sample, {flop_ratio:.1f}x fewer than the {teacher_params:,}-param "
        f"teacher), {steps} steps per run, median of {repeats} interleaved runs "
        f"(`.venv/bin/python benchmarks/overhead.py`):\n"
    )
    print("| batch | variant | seconds | steps/s | vs plain loop | floor |")
    print("|---:|---|---:|---:|---:|---:|")
    for res in results:
        for name in res.median:
            floor = f"{res.floor:.2f}x" if name == "naskd, cache on" else ""
            print(
                f"| {res.batch} | {name} | {res.median[name]:.2f} | {steps / res.median[name]:.0f} | "
                f"{res.ratio(name):.2f}x | {floor} |"
            )
    first = results[0]
    print(
        "\nTargets, per batch size: cache on <= 0.5x plain ("
        + ", ".join(f"{r.batch}: {r.ratio('naskd, cache on'):.2f}x" for r in results)
        + "); cache off <= 1.05x plain ("
        + ", ".join(f"{r.batch}: {r.ratio('naskd, cache off'):.2f}x" for r in results)
        + f"). The cache removes only the teacher's forward pass; at batch {first.batch} it costs "
        f"{first.pieces[TEACHER_PIECE]:.1f} ms against {first.pieces[NASKD_STEP_PIECE]:.1f} ms for the student's "
        f"training step in naskd, so the floor there is {first.floor:.2f}x."
    )
    if trial_s:
        print(
            f"\nThroughput, `studies/mnist1d.toml`: {per_hour:.0f} trials/hour on one worker "
            f"({mean_trial:.1f} s per trial, mean of {len(trial_s)}: {status_text}; "
            f"Optuna's own overhead excluded)."
        )
    print(f"\nMachine: {machine}; {load_after}.")


if __name__ == "__main__":
    main()
