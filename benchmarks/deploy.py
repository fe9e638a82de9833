"""Students shaped for deployment: the teacher made smaller (family ``shrink``) against the
study's own family, and int8 against float32 for the same students.

    (1) mnist1d and digits: the ``shrink`` study (``search_spaces/shrink.toml``) against the
        dataset's own study (``studies/mnist1d.toml``: cnn1d; ``studies/digits.toml``: mlp) at
        equal trials, target budget and rung rule: the hypervolume of each front (objectives accuracy,
        latency, params; bounds fixed by the teacher, so the two compare), its size, its
        best accuracy and the wall time. Then inherited against fresh weights for fixed
        shrink widths at the target budget, over seeds.
    (2) mnist1d: every student of the cnn1d front of (1), and every shrink front student,
        trained again as int8 (quantization-aware distillation in the last ``qat_fraction``
        of the budget): int8 accuracy minus float32 accuracy, latency of the lowered int8
        model against float32 eager and float32 compiled by the same Inductor, at batch 1
        (the study's) and at batch 256, and the int8 size against the float32 one.
    (3) shapes32 (the built-in generated 32x32 image set) with the ResNet-18-shaped teacher
        (``naskd.zoo.resnet``, trained here for a few epochs): shrink students with blocks
        dropped and stages pruned, from inherited weights, and the teacher's architecture as
        float32 and int8 (latency and size at batch 1 and 64).

Run alone (the load average is printed); about 40 minutes on 2 cores:
    .venv/bin/python benchmarks/deploy.py
    .venv/bin/python benchmarks/deploy.py --trials 6 --seeds 1 --quick    # a few minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402

from benchmarks._shared import machine  # noqa: E402
from naskd.backends import optuna_backend as ob  # noqa: E402
from naskd.config import StudyConfig, load_study  # noqa: E402
from naskd.measure import count_model_bytes, measure_latency  # noqa: E402
from naskd.quantize import measure_int8_cost  # noqa: E402
from naskd.spaces.space import load_space  # noqa: E402
from naskd.trial import StudyContext, build_context, evaluate, full_spec  # noqa: E402

STUDIES = REPO_ROOT / "studies"
WIDTHS = ([0.125, 0.125, 0.125], [0.25, 0.25, 0.25], [0.5, 0.5, 0.5])


def _with(
    config: StudyConfig, *, trials: int | None = None, epochs: int | None = None, space: str | None = None
) -> StudyConfig:
    if trials is not None:
        config = config.replace(search=dataclasses.replace(config.search, trials=trials))
    if epochs is not None:
        config = config.replace(distill=dataclasses.replace(config.distill, epochs=epochs))
    if space is not None:
        config = config.replace(space=load_space({"path": space}, str(config.file), REPO_ROOT))
    return config


def _search(config: StudyConfig, out: Path) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    summary = ob.run_search(config, out, show_progress=False)
    return summary, time.perf_counter() - started


def _front_row(name: str, summary: dict[str, Any], wall: float) -> str:
    front = summary["front"]
    best = max(e["metrics"]["accuracy"] for e in front) if front else float("nan")
    smallest = min(e["metrics"]["params"] for e in front) if front else 0
    return (
        f"| {name} | {summary['hypervolume']:.4f} | {len(front)} | {best:.4f} | {int(smallest):,} | {wall / 60:.1f} |"
    )


def _trained(context: StudyContext, spec: dict[str, Any]) -> dict[str, float]:
    result = evaluate(spec, context)
    if result.status != "complete":
        raise RuntimeError(f"{spec}: {result.status}: {result.reason}")
    return {**result.metrics, "student": result.student}  # type: ignore[dict-item]


def _latency(model: torch.nn.Module, shape: tuple[int, ...], batch: int, *, compiled: bool = False) -> float:
    model = model.cpu().eval()
    if compiled:
        model = torch.compile(model)  # type: ignore[assignment]
    return measure_latency(model, shape, batch_size=batch, threads=1, warmup=10, repeats=100).p50_ms


def _int8_vs_float(context: StudyContext, specs: list[dict[str, Any]], batches: tuple[int, ...]) -> list[str]:
    """One table row per student: float32 and int8 trained from the same spec and seed."""
    rows = []
    shape = context.data.input_shape
    for spec in specs:
        f32 = _trained(context, {**spec, "precision": "float32"})
        i8 = _trained(context, {**spec, "precision": "int8"})
        floats: torch.nn.Module = f32["student"]  # type: ignore[assignment]
        cells = [
            f"{int(f32['params']):,}",
            f"{f32['accuracy']:.4f}",
            f"{i8['accuracy']:.4f}",
            f"{i8['accuracy'] - f32['accuracy']:+.4f}",
        ]
        for batch in batches:
            eager = _latency(floats, shape, batch)
            fused = _latency(floats, shape, batch, compiled=True)
            int8 = measure_int8_cost(floats, shape, batch_size=batch, threads=1, warmup=10, repeats=100).latency_p50_ms
            cells += [f"{eager:.3f} / {fused:.3f} / {int8:.3f}", f"{eager / int8:.2f}x / {fused / int8:.2f}x"]
        cells.append(f"{count_model_bytes(floats) / i8['model_bytes']:.2f}x")
        rows.append("| " + " | ".join(cells) + " |")
        print("  " + rows[-1], flush=True)
    return rows


def part1(args: argparse.Namespace, work: Path) -> dict[str, dict[str, Any]]:
    fronts: dict[str, dict[str, Any]] = {}
    print("\n## (1) shrink against the study's family, equal trials and budget\n")
    print("| study | hypervolume | front | best accuracy | smallest front student (params) | wall (min) |")
    print("|---|---|---|---|---|---|")
    for name in ("mnist1d", "digits"):
        base = _with(load_study(STUDIES / f"{name}.toml"), trials=args.trials)
        for label, config in (
            (f"{name}, {base.space.family}", base),
            (f"{name}, shrink", _with(base, space="search_spaces/shrink.toml")),
        ):
            summary, wall = _search(config, work / label.replace(", ", "_"))
            fronts[label] = summary
            print(_front_row(label, summary, wall), flush=True)
    print("\n## (1b) inherited against fresh weights (shrink, target budget)\n")
    print("| dataset | width per stage | params | inherited | fresh | inherited - fresh |")
    print("|---|---|---|---|---|---|")
    for name in ("mnist1d", "digits"):
        context = build_context(load_study(STUDIES / f"{name}.toml"))
        for widths in WIDTHS:
            accs: dict[str, list[float]] = {"inherited": [], "fresh": []}
            params = 0
            for seed in range(args.seeds):
                for init in accs:
                    spec = full_spec(
                        {"family": "shrink", "arch": {"width": widths, "init": init}},
                        context.config,
                        context.teacher.fingerprint,
                    )
                    spec["recipe"]["seed"] = seed
                    metrics = _trained(context, spec)
                    accs[init].append(metrics["accuracy"])
                    params = int(metrics["params"])
            inh, fre = statistics.fmean(accs["inherited"]), statistics.fmean(accs["fresh"])
            print(f"| {name} | {widths} | {params:,} | {inh:.4f} | {fre:.4f} | {inh - fre:+.4f} |", flush=True)
    return fronts


def part2(fronts: dict[str, dict[str, Any]]) -> None:
    print("\n## (2) int8 against float32, the mnist1d front students (same spec and seed)\n")
    print(
        "| params | float32 acc | int8 acc | change | b=1 latency ms: f32 eager / f32 compiled / int8 | "
        "b=1 int8 speed-up vs eager / compiled | b=256 latency ms | b=256 speed-up | float32 / int8 size |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    context = build_context(load_study(STUDIES / "mnist1d.toml"))
    specs = [e["spec"] for label in fronts if label.startswith("mnist1d") for e in fronts[label]["front"]]
    _int8_vs_float(context, specs, (1, 256))


def part3(args: argparse.Namespace, work: Path) -> None:
    from naskd.zoo.resnet import train_teacher

    print("\n## (3) shapes32 with the ResNet-18-shaped teacher\n")
    checkpoint = work / "resnet18_shapes32.pt"
    teacher = train_teacher(checkpoint, epochs=args.teacher_epochs)
    print(f"teacher: {teacher}", flush=True)
    doc = (
        (STUDIES / "shapes32_shrink.toml")
        .read_text()
        .replace('checkpoint = "reports/resnet18_shapes32.pt"', f'checkpoint = "{checkpoint}"')
        .replace("../search_spaces/", f"{REPO_ROOT}/search_spaces/")
    )
    study = work / "shapes32_shrink.toml"
    study.write_text(doc)
    context = build_context(_with(load_study(study), epochs=args.resnet_epochs))
    layout_specs = [
        ("teacher's architecture, inherited (continued)", {}),
        ("2 blocks dropped", {"keep": [True, False, True, False, True]}),
        ("every droppable block dropped", {"keep": [False] * 5}),
        ("width 0.5", {"width": 0.5}),
        ("width 0.25, 2 blocks dropped", {"width": 0.25, "keep": [True, False, True, False, True]}),
        ("width 0.5, fresh weights", {"width": 0.5, "init": "fresh"}),
    ]
    print(
        f"\n{args.resnet_epochs} epochs of offline KD per student; teacher accuracy "
        f"{context.teacher_info['accuracy']:.4f}, {context.teacher_info['params']:,} params\n"
    )
    print("| student | params | accuracy | latency b=1 ms | train s |")
    print("|---|---|---|---|---|")
    for label, arch in layout_specs:
        spec = full_spec({"family": "shrink", "arch": arch}, context.config, context.teacher.fingerprint)
        m = _trained(context, spec)
        print(
            f"| {label} | {int(m['params']):,} | {m['accuracy']:.4f} | {m['latency_p50_ms']:.3f} | "
            f"{m['train_seconds']:.0f} |",
            flush=True,
        )
    print("\nThe teacher's architecture (and width 0.5) as float32 and int8:\n")
    print(
        "| params | float32 acc | int8 acc | change | b=1 latency ms: f32 eager / f32 compiled / int8 | "
        "b=1 speed-up | b=64 latency ms | b=64 speed-up | float32 / int8 size |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    specs = [
        full_spec({"family": "shrink", "arch": arch}, context.config, context.teacher.fingerprint)
        for arch in ({}, {"width": 0.5})
    ]
    _int8_vs_float(context, specs, (1, 64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12, help="trials per study in (1)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds for inherited against fresh")
    parser.add_argument("--teacher-epochs", type=int, default=4, help="ResNet teacher training in (3)")
    parser.add_argument("--resnet-epochs", type=int, default=4, help="student budget in (3)")
    parser.add_argument("--quick", action="store_true", help="skip (3)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    print(
        f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at the start; {args.trials} trials per "
        f"study, {args.seeds} seeds",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="naskd-deploy-") as tmp:
        work = Path(tmp)
        fronts = part1(args, work)
        part2(fronts)
        if not args.quick:
            part3(args, work)
    print(f"\nwall {(time.perf_counter() - started) / 60:.1f} min; load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
