"""Where the knowledge comes from: cross-modal, data-free (DeepInversion), adversarial (DFAD)
and lifelong distillation, each against the baselines that say whether it helps.

Measures, on CPU, on MNIST-1D, ONE fixed cnn1d student (3 stages of width 8 x 1.5, kernel 5,
residual; about 5k params, the built-in teacher has 88k) trained for each ready study's target
budget, for S seeds (initial weights and batch order), through the trial pipeline
(``naskd.trial.build_context`` / ``evaluate`` or ``fit`` / ``validate``):

- cross-modal (``studies/mnist1d_crossmodal.toml``): the student reads a coarse, noisy view
  (1 x 20), the teacher the signal (1 x 40); KD from that teacher against the same student
  trained on its view with no teacher;
- data-free (``studies/mnist1d_datafree.toml``): KD on the DeepInversion transfer set (no real
  training sample) against offline KD on the real training set and against the teacher
  (published anchor: CIFAR-10 ResNet-34 -> ResNet-18, DeepInversion 93.3 % vs the teacher's
  95.7 %); the one-off synthesis time is printed apart;
- adversarial (``studies/mnist1d_adversarial.toml``): DFAD (generator against student, no real
  sample) against the same baselines (anchor: DFAD 93.3 % vs 95.5 %);
- lifelong: the student distilled from the built-in teacher (version 1) goes on under a new
  teacher version trained on a new sensor of the same events (the signal plus Gaussian noise of
  std 0.5, noise seed 2: version 2's data), from its trained weights, with and without its
  earlier self as a second teacher (``lwf_weight`` 1 / 0), and a fresh student distilled from
  the new teacher alone. Printed: accuracy on the new task (version 2's validation set) and
  agreement with the old teacher on the old task (version 1's validation set).

Building contexts (data; built-in teachers train on first use and are cached; the transfer set
is synthesized once) is excluded from the per-trial times. torch runs with one intra-op thread.

Run:
    .venv/bin/python benchmarks/algorithms.py             # 3 seeds, each study's budget
    .venv/bin/python benchmarks/algorithms.py --quick     # 1 seed, 3 epochs, a small transfer set

It ends with a Markdown snippet to paste into the README.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._shared import FIXED_STUDENT, machine, run_student, seeded_spec  # noqa: E402
from naskd.config import DataConfig, DistillConfig, StudyConfig, load_study  # noqa: E402
from naskd.data import load_data  # noqa: E402
from naskd.distill import Scratch, train  # noqa: E402
from naskd.scoring import predict, score  # noqa: E402
from naskd.trial import StudyContext, build_context, evaluate, validate  # noqa: E402

STUDIES = REPO_ROOT / "studies"
#: Version 2's sensor: the mnist1d signal plus Gaussian noise of this std, from a fixed seed.
NEW_SENSOR_NOISE, NEW_SENSOR_SEED = 0.5, 2


def _config(name: str, epochs: int | None, **synthesis: Any) -> StudyConfig:
    config = load_study(STUDIES / f"{name}.toml")
    if epochs is not None:  # --quick: a shorter budget (one in steps: the steps of that many real epochs)
        steps = epochs * 40 if config.distill.steps else 0
        config = config.replace(distill=dataclasses.replace(config.distill, epochs=0 if steps else epochs, steps=steps))
    if synthesis:
        config = config.replace(synthesis=dataclasses.replace(config.synthesis, **synthesis))
    return config


def _spec(context: StudyContext, seed: int, **recipe: Any) -> dict[str, Any]:
    return seeded_spec(FIXED_STUDENT, context, seed, **recipe)


# --- lifelong ----------------------------------------------------------------------------


def new_sensor() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Version 2's data (a ``[data] loader``): the same mnist1d events through a noisier sensor."""
    plain = load_data(DataConfig(dataset="mnist1d"))
    rng = np.random.default_rng(NEW_SENSOR_SEED)
    noisy = [
        (x.numpy() + rng.normal(0, NEW_SENSOR_NOISE, size=x.shape)).astype(np.float32)
        for x in (plain.x_train, plain.x_val)
    ]
    return (noisy[0], plain.y_train.numpy()), (noisy[1], plain.y_val.numpy())


def teacher_arch() -> torch.nn.Module:
    """The built-in mnist1d teacher's architecture (a ``[teacher] model``)."""
    from naskd.teacher import _BUILTIN, _ConvTeacher

    return _ConvTeacher(1, _BUILTIN["mnist1d"][0]["channels"], (1, 40), 10)


def _new_version(folder: Path, base: StudyConfig, epochs: int) -> StudyContext:
    """Version 2's context: its teacher (the built-in recipe) trained on the new sensor's data."""
    train_part, _ = new_sensor()
    torch.manual_seed(0)
    model = teacher_arch()
    recipe = DistillConfig(epochs=epochs, lr=1e-2, batch_size=100, alpha=0.0)
    train(Scratch(model), torch.as_tensor(train_part[0]), torch.as_tensor(train_part[1]).long(), recipe)
    checkpoint = folder / "teacher_v2.pt"
    torch.save(model.state_dict(), checkpoint)
    study = folder / "v2.toml"
    text = (
        (STUDIES / "mnist1d.toml")
        .read_text()
        .replace(
            '[data]\ndataset = "mnist1d"',
            '[data]\nloader = "benchmarks.algorithms:new_sensor"\n\n[teacher]\n'
            f'model = "benchmarks.algorithms:teacher_arch"\ncheckpoint = "{checkpoint}"',
        )
        .replace('"../search_spaces/', f'"{REPO_ROOT / "search_spaces"}/')
    )
    study.write_text(text)
    config = load_study(study)
    return build_context(config.replace(distill=base.distill))


def _lifelong(old: StudyContext, new: StudyContext, seed: int) -> dict[str, tuple[float, float]]:
    """For each arm: (accuracy on version 2's task, agreement with version 1's teacher on its task)."""
    spec = _spec(old, seed)
    first = evaluate(spec, old)
    assert first.status == "complete", first.reason
    weights = {k: v.clone() for k, v in first.student.state_dict().items()}

    def judged(student: torch.nn.Module) -> tuple[float, float]:
        on_old = score(predict(student, old.data.x_val), old.data.y_val, old.val_logits)
        return validate(student, new)["accuracy"], on_old["teacher_agreement"]

    out = {"version 1 student, before": judged(first.student)}
    for name, lwf in (("continued, old student as 2nd teacher (LwF)", 1.0), ("continued, new teacher only", 0.0)):
        result = evaluate(_spec(new, seed, lwf_weight=lwf), new, previous=weights)
        assert result.status == "complete", result.reason
        out[name] = judged(result.student)
    fresh = evaluate(_spec(new, seed), new)
    out["fresh student, new teacher only"] = judged(fresh.student)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs, a small transfer set")
    args = parser.parse_args()
    epochs = 3 if args.quick else None
    synth = {"samples": 400, "iterations": 50} if args.quick else {}
    seeds = list(range(1 if args.quick else args.seeds))
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)

    contexts = {
        name: build_context(_config(name, epochs)) for name in ("mnist1d", "mnist1d_crossmodal", "mnist1d_adversarial")
    }
    started = time.perf_counter()
    contexts["mnist1d_datafree"] = build_context(_config("mnist1d_datafree", epochs, **synth))
    synthesis_s = time.perf_counter() - started  # the set comes from the cache on a second run
    arms: list[tuple[str, str, StudyContext, dict[str, Any]]] = [
        ("cross-modal", "student alone on its view", contexts["mnist1d_crossmodal"], {"scratch": True}),
        ("cross-modal", "KD from the teacher on the signal", contexts["mnist1d_crossmodal"], {}),
        ("real data", "offline KD, real training set", contexts["mnist1d"], {}),
        ("real data", "no teacher, real training set", contexts["mnist1d"], {"scratch": True}),
        ("data-free", "DeepInversion transfer set, KD", contexts["mnist1d_datafree"], {}),
        ("data-free", "DFAD (adversarial generator)", contexts["mnist1d_adversarial"], {}),
    ]
    results: dict[str, list[tuple[float, float]]] = {name: [] for _, name, *_ in arms}
    with tempfile.TemporaryDirectory() as tmp:
        new = _new_version(Path(tmp), contexts["mnist1d"].config, 5 if args.quick else 50)
        lifelong: dict[str, list[tuple[float, float]]] = {}
        for seed in seeds:  # seeds outermost: every arm sees the machine's drift alike
            for _, name, ctx, extra in arms:
                results[name].append(run_student(ctx, FIXED_STUDENT, seed, **extra))
                print(
                    f"  seed {seed}  {name:40s} acc {results[name][-1][0]:.4f}  {results[name][-1][1]:.1f} s",
                    flush=True,
                )
            for name, pair in _lifelong(contexts["mnist1d"], new, seed).items():
                lifelong.setdefault(name, []).append(pair)
                print(
                    f"  seed {seed}  {name:40s} new task {pair[0]:.4f}  old teacher agreement {pair[1]:.4f}", flush=True
                )
    wall = time.perf_counter() - started

    def stats(values: list[float]) -> str:
        return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"

    def mean(name: str) -> float:
        return statistics.fmean(a for a, _ in results[name])

    teacher = contexts["mnist1d"].teacher_info["accuracy"]
    split = contexts["mnist1d_datafree"].data.split
    print(
        f"\nmachine: {machine()}; load average {os.getloadavg()[0]:.2f} at the end; {len(seeds)} seeds; "
        f"{wall / 60:.1f} min"
    )
    print(
        f"teachers: mnist1d {teacher:.4f}; cross-modal (on the signal) "
        f"{contexts['mnist1d_crossmodal'].teacher_info['accuracy']:.4f}; version 2 (new sensor) "
        f"{new.teacher_info['accuracy']:.4f}"
    )
    print(
        f"DeepInversion: {len(contexts['mnist1d_datafree'].y_train)} samples in {synthesis_s:.0f} s "
        f"(cached afterwards); the teacher puts {split.get('synthesis_teacher_accuracy', float('nan')):.3f} of "
        "them in their target class"
    )
    print("\n| algorithm | arm | accuracy (mean ± std) | vs offline KD (real data) | vs teacher | train s / trial |")
    print("|---|---|---|---|---|---|")
    for group, name, *_ in arms:
        accs = [a for a, _ in results[name]]
        secs = statistics.median(s for _, s in results[name])
        print(
            f"| {group} | {name} | {stats(accs)} | {mean(name) - mean('offline KD, real training set'):+.4f} | "
            f"{mean(name) - teacher:+.4f} | {secs:.1f} |"
        )
    gain = mean("KD from the teacher on the signal") - mean("student alone on its view")
    print(f"\ncross-modal KD vs the student alone on its view: {gain:+.4f}")
    print("\n| lifelong arm | accuracy on the new task | agreement with the old teacher on the old task |")
    print("|---|---|---|")
    for name, pairs in lifelong.items():
        print(f"| {name} | {stats([a for a, _ in pairs])} | {stats([b for _, b in pairs])} |")


if __name__ == "__main__":
    main()
