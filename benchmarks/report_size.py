"""Size and browser render time of the HTML report of a 300-trial study.

Nothing is trained: the 300 trials are synthetic but plausible records of an MLP search on
the digits data (8x8 inputs, 10 classes) against the built-in teacher — parameter and FLOP
counts computed exactly from each sampled architecture, latency and accuracy from smooth
noisy functions of size — with a latency budget that makes some trials infeasible, a few
failures, scratch baselines for every student and long confirmation runs for the front.

The report is built, written, then opened in Debian's headless Chromium (see
``naskd.report.browser``), first in a fresh profile (cold), then on reloads (warm). Measured
by the page's own clock:

- ready: navigation start to the page and every eagerly drawn (SVG) figure drawn; the
  target is under 3 s;
- lazy: each WebGL figure (3-D view, parallel coordinates), drawn only when the reader
  scrolls near it, from scrolling it into view to drawn;
- first paint: navigation start to the first text on screen;
- parsed: navigation start to the whole page parsed (DOMContentLoaded): all of its text is
  there, the figures are still being drawn;
- floor: a page with only plotly.js and a one-point figure, the fixed cost of the bundle.

    .venv/bin/python benchmarks/report_size.py [--trials 300] [--runs 3] [--loads 3] [--out DIR]

Targets (issue): under 10 MB; page and eager figures drawn in under 3 s. The machine's load
average is printed before and after: on a busy machine every time grows, so compare runs
made at similar load.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from naskd.results import StudyFacts, TrialRecord, front_summary  # noqa: E402

TEACHER = {
    "source": "built-in digits CNN",
    "fingerprint": "3f9c2a7d51e04b8c",
    "accuracy": 0.9916,
    "params": 58634,
    "flops": 926720,
    "latency_p50_ms": 0.1514,
    "latency_p95_ms": 0.1932,
}
RECIPE = {
    "temperature": 4.0,
    "alpha": 0.9,
    "steps": 0,
    "epochs": 5,
    "optimizer": "adam",
    "lr": 0.003,
    "weight_decay": 0.0,
    "momentum": 0.9,
    "batch_size": 64,
    "seed": 0,
}
MAX_LATENCY_MS = 0.037
SPACE = [
    {
        "name": "depth",
        "kind": "int",
        "range": [1, 3],
        "step": 1,
        "log": False,
        "choices": None,
        "value": None,
        "per": None,
        "when": None,
    },
    {
        "name": "width",
        "kind": "int",
        "range": [16, 128],
        "step": None,
        "log": True,
        "choices": None,
        "value": None,
        "per": "depth",
        "when": None,
    },
    {
        "name": "activation",
        "kind": "categorical",
        "range": None,
        "step": None,
        "log": False,
        "choices": ["relu", "gelu", "silu"],
        "value": None,
        "per": None,
        "when": None,
    },
    {
        "name": "dropout",
        "kind": "float",
        "range": [0.0, 0.2],
        "step": None,
        "log": False,
        "choices": None,
        "value": None,
        "per": None,
        "when": None,
    },
]


def synthetic_study(trials: int, seed: int = 0) -> tuple[dict, list[TrialRecord]]:
    """Facts and records of a plausible ``trials``-trial study (see the module docstring)."""
    rng = random.Random(seed)
    records = []
    for number in range(trials):
        depth = rng.randint(1, 3)
        widths = [int(round(math.exp(rng.uniform(math.log(16), math.log(128))))) for _ in range(depth)]
        arch = {
            "depth": depth,
            "width": widths,
            "activation": rng.choice(["relu", "gelu", "silu"]),
            "dropout": round(rng.uniform(0.0, 0.2), 4),
        }
        spec = {"family": "mlp", "arch": arch, "recipe": dict(RECIPE)}
        sizes = [64, *widths, 10]
        params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        flops = sum(2 * a * b for a, b in zip(sizes, sizes[1:]))
        latency = 0.012 + 0.006 * depth + params * 4.5e-7 + abs(rng.gauss(0, 0.002))
        metrics = {
            "params": params,
            "flops": flops,
            "latency_p50_ms": latency,
            "latency_p95_ms": latency * rng.uniform(1.1, 1.4),
            "capacity_ratio": TEACHER["params"] / params,
        }
        if latency > MAX_LATENCY_MS:
            records.append(
                TrialRecord(
                    number,
                    "infeasible",
                    spec,
                    metrics,
                    f"over budget: latency_p50_ms {latency:g} > budget {MAX_LATENCY_MS:g}",
                )
            )
            continue
        if rng.random() < 0.03:
            records.append(TrialRecord(number, "failed", spec, {}, "diverged: loss became nan at step 41"))
            continue
        skill = 1 - math.exp(-params / 2500)  # accuracy saturates with size
        accuracy = min(0.99, 0.80 + 0.175 * skill - 0.1 * arch["dropout"] ** 2 + rng.gauss(0, 0.008))
        scratch = accuracy - rng.gauss(0.012, 0.01) * (1.5 if params > 4000 else 0.6)
        metrics.update(
            accuracy=accuracy,
            teacher_agreement=min(1.0, accuracy + rng.uniform(0.0, 0.015)),
            kl_to_teacher=max(0.01, 0.6 - 0.5 * skill + rng.gauss(0, 0.03)),
            train_seconds=0.4 + params * 2e-5 + rng.uniform(0, 0.2),
            scratch_accuracy=scratch,
        )
        records.append(TrialRecord(number, "complete", spec, metrics))
    facts = {
        "name": "digits-300",
        "objectives": ["accuracy", "latency_p50_ms", "params"],
        "sampler": "tpe",
        "seed": seed,
        "space": {"family": "mlp", "source": "search_spaces/mlp.toml", "params": SPACE},
        "budgets": {"max_latency_ms": MAX_LATENCY_MS, "max_params": None, "max_flops": None},
        "storage": "sqlite:///reports/digits-300/study.db",
        "command": f"naskd search studies/digits.toml --trials {trials} --out reports/digits-300",
        "data": {
            "name": "digits",
            "input_shape": [1, 8, 8],
            "num_classes": 10,
            "train": 1438,
            "val": 359,
            "fingerprint": "a1b2c3d4e5f60718",
            "val_fraction": 0.2,
            "seed": seed,
        },
        "teacher": TEACHER,
    }
    summary = front_summary(_facts(facts), records)
    # Long confirmation runs for the front students, as the diagnostics command would add them.
    front = {e["number"] for e in summary["front"]}
    confirmed = []
    for r in records:
        if r.number in front:
            long = min(0.99, r.metrics["accuracy"] + rng.gauss(0.01, 0.006))
            r = TrialRecord(
                r.number, r.state, r.spec, {**r.metrics, "long_accuracy": long, "long_steps": 3000}, r.reason
            )
        confirmed.append(r)
    return facts, confirmed


def _facts(facts: dict) -> StudyFacts:
    return StudyFacts(facts["name"], tuple(facts["objectives"]), facts["teacher"], facts["data"])


def importances_for(facts: dict) -> dict[str, dict[str, float]]:
    return {
        "accuracy": {"width_0": 0.52, "depth": 0.21, "dropout": 0.17, "activation": 0.06, "width_1": 0.04},
        "latency_p50_ms": {"depth": 0.61, "width_0": 0.27, "width_1": 0.08, "dropout": 0.02, "activation": 0.02},
        "params": {"width_0": 0.58, "depth": 0.30, "width_1": 0.11, "activation": 0.005, "dropout": 0.005},
    }


def baseline_page(path: Path) -> Path:
    """plotly.js and a one-point figure, with the report's completion flag: the fixed cost of
    loading the bundle, which no report can go below."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[1], y=[1])).update_layout(height=300)
    body = fig.to_html(
        include_plotlyjs=True,
        full_html=False,
        div_id="baseline",
        post_script="window.naskdReport.readyAt = performance.now(); "
        "window.naskdReport.ready = window.naskdReport.done = true;",
    )
    path.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><script>window.naskdReport = "
        "{ready: false, done: false, lazy: [], rendered: []};"
        f"</script></head><body>{body}</body></html>",
        encoding="utf-8",
    )
    return path


def _times(per_run: list[list[float]]) -> str:
    """Median over the runs of the first (cold) load, and over every later (warm) load."""
    cold = [values[0] for values in per_run]
    warm = [v for values in per_run for v in values[1:]]
    text = f"cold {statistics.median(cold):5.2f} s"
    if len(cold) > 1:
        text += f" ({min(cold):.2f}-{max(cold):.2f})"
    return text + (f", warm {statistics.median(warm):5.2f} s" if warm else "")


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3, help="fresh browsers (each with a cold first load)")
    parser.add_argument("--loads", type=int, default=3, help="page loads per browser: 1 cold, the rest warm")
    parser.add_argument("--out", type=Path, help="keep the report and a screenshot here")
    args = parser.parse_args(argv)

    from naskd.report import build_report, write_report
    from naskd.report.browser import open_report

    facts, records = synthetic_study(args.trials)
    summary = front_summary(_facts(facts), records)
    start = time.perf_counter()
    html = build_report(
        facts, records, summary, importances=importances_for(facts), created=datetime(2026, 1, 1, tzinfo=timezone.utc)
    )
    build_s = time.perf_counter() - start
    out = args.out or Path(tempfile.mkdtemp(prefix="naskd-report-bench-"))
    path = write_report(out / "report.html", html)
    size = path.stat().st_size
    baseline = baseline_page(out / "baseline.html")
    load_before = _load()
    bases, runs = [], []
    for i in range(args.runs):  # interleaved, so a change in the machine's load hits both alike
        bases.append(open_report(baseline, loads=args.loads))
        runs.append(open_report(path, screenshot=out / "report.png" if i == 0 else None, loads=args.loads))
    load_after = _load()
    lazy_ids = list(runs[0].lazy_seconds[0])
    ready_cold = statistics.median(r.ready_seconds[0] for r in runs)

    counts = summary["counts"]
    print(
        f"study: {args.trials} synthetic trials ({counts['complete']} complete, {counts['infeasible']} infeasible, "
        f"{counts['failed']} failed), {len(summary['front'])} on the front"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load_before} before, {load_after} after (1, 5, 15 min); "
        "Debian Chromium, headless, --disable-gpu (software WebGL)"
    )
    print(
        f"report: {size / 1e6:.2f} MB ({size:,} bytes; plotly.js is {len(_bundle()) / 1e6:.2f} MB of it), "
        f"{len(runs[0].figures)} figures ({len(runs[0].figures) - len(lazy_ids)} drawn as the page loads, "
        f"{len(lazy_ids)} WebGL drawn when scrolled into view), built in {build_s:.2f} s"
    )
    print(
        f"page clock, {args.runs} fresh browsers x {args.loads} loads (cold = median of the first loads, with "
        "min-max; warm = median of the reloads):"
    )
    print(f"  floor: plotly.js + one point, drawn:         {_times([b.ready_seconds for b in bases])}")
    print(f"  report, first text on screen:                {_times([r.paint_seconds for r in runs])}")
    print(f"  report, whole page parsed (all its text):    {_times([r.parsed_seconds for r in runs])}")
    print(f"  report, page + every eager figure drawn:     {_times([r.ready_seconds for r in runs])}")
    for fig_id in lazy_ids:
        print(
            f"  {fig_id + ', scrolled into view to drawn:':45s}"
            f"{_times([[t[fig_id] for t in r.lazy_seconds] for r in runs])}"
        )
    print(
        f"requests other than the page: {sum(len(r.outside_requests(path.as_uri())) for r in runs)}; "
        f"console errors: {sum(len(r.console_errors) for r in runs)}"
    )
    print(f"written: {path} and {out / 'report.png'}")
    print(
        f"targets: size < 10 MB {'met' if size < 10e6 else 'NOT met'}; page + eager figures < 3 s cold "
        f"{'met' if ready_cold < 3.0 else 'NOT met'} ({ready_cold:.2f} s, median)"
    )
    return 0


def _bundle() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


if __name__ == "__main__":
    sys.exit(main())
