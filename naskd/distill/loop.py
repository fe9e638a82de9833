"""The one training loop: a distiller (any scheme) and a recipe in, a trained student, its
loss curve and its named loss terms out; paused at rungs, where the caller may stop the run,
save its whole training state, or continue a saved one exactly where it was.

In-memory data is fed as tensor slices of a seeded permutation, never through a
per-sample DataLoader: for the small sets a search trains on, Python-level collation
would cost more than the student's own forward and backward passes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from naskd.config import DistillConfig
from naskd.distill.base import Distiller
from naskd.distill.recipe import steps_per_epoch, total_steps

#: How many of the last curve points a run's reported loss terms average over (one batch's
#: values alone are noisy).
TERM_POINTS = 5
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"diverged: loss became {value} at step {step}")
        self.step = step


@dataclass
class DistillResult:
    steps: int  # steps trained, from the first (a continued run counts its earlier steps too)
    train_seconds: float
    final_loss: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    stopped: bool = False  # on_rung ended the run before its budget
    #: each loss term's weighted value at the end of the run (mean of the last curve points)
    terms: dict[str, float] = field(default_factory=dict)


#: A run's whole training state at a rung: what a continued run needs to carry on bit for bit
#: (every trained module, optimizer moments, the batch order and its generator, the global RNG
#: that dropout draws from). Plain tensors, numbers and lists, so ``torch.load(...,
#: weights_only=True)`` reads it back.
TrainState = dict[str, Any]

#: ``on_rung(rung index, steps done, train seconds so far, state) -> go on?``; ``state()``
#: captures the ``TrainState`` (only when asked: capturing copies the weights).
RungCallback = Callable[[int, int, float, Callable[[], TrainState]], bool]


@dataclass(frozen=True)
class Placement:
    """Where and how a run computes: the device, autocast precision, and whether 2-D
    convolution inputs and weights use the channels-last memory layout."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    channels_last: bool = False

    @property
    def dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    @classmethod
    def from_config(cls, cfg: DistillConfig, device: str | None = None) -> Placement:
        """``[distill]`` device, precision and channels_last resolved on this machine;
        ``device`` overrides ``cfg.device`` (a worker given its own GPU)."""
        name = device or cfg.device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        where = torch.device(name)
        precision = cfg.precision
        if precision == "auto":
            # Mixed precision pays on GPUs; on a CPU bf16 autocast is slower for small students.
            precision = "bf16" if where.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        # channels_last helps cuDNN's 2-D convolutions (tensor cores); on a CPU it mostly reorders.
        channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and where.type == "cuda")
        return cls(device=where, precision=precision, channels_last=channels_last)


def worker_device(cfg: DistillConfig, index: int) -> str | None:
    """The device worker ``index`` of ``--workers K`` trains on: with several CUDA devices and
    ``device`` "auto" or "cuda", workers take them in turn; otherwise None (``cfg.device``)."""
    count = torch.cuda.device_count() if cfg.device in ("auto", "cuda") else 0
    return f"cuda:{index % count}" if count > 1 else None


def make_optimizer(params: list[nn.Parameter], recipe: DistillConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    try:
        # The fused kernel updates every tensor in one call: on a small student the default
        # per-tensor loop costs ~1 ms of a ~8 ms step (benchmarks/overhead.py), fused ~0.2 ms.
        return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)
    except RuntimeError:  # parameters on a device the fused kernel does not cover: the per-tensor loop
        return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def train(
    distiller: Distiller,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: DistillConfig,
    *,
    rungs: Sequence[int] = (),
    on_rung: RungCallback | None = None,
    resume: TrainState | None = None,
    placement: Placement | None = None,
    steps: int | None = None,
) -> DistillResult:
    """Train ``distiller``'s modules in place on ``(x, y)`` (rows already on the device).

    Args:
        rungs: step counts (ascending, below the run's total) after which ``on_rung`` is
            called; its time is not training time, and the models are in training mode again
            when it returns.
        on_rung: decides at each rung whether the run goes on; returning False ends it
            there (``DistillResult.stopped``). Scoring the student in eval mode inside it
            changes nothing the run depends on.
        resume: a state captured at a rung of the same scheme, student, recipe and data: the
            run carries on from it and ends exactly as an uninterrupted run would. When that
            step is a rung, ``on_rung`` is asked about it again first.
        placement: device, precision and memory layout (default: fp32 on the CPU).
        steps: the run's length in optimizer steps (default: the recipe's epochs), e.g. the
            float phase of an int8 student.

    Raises:
        Diverged: the loss became NaN or infinite.
        InvalidSpec: the scheme cannot train this student (e.g. missing internals).
    """
    place = placement or Placement()
    n = len(y)
    batch = min(recipe.batch_size, n)
    per_epoch = steps_per_epoch(recipe, n)
    steps = total_steps(recipe, n) if steps is None else steps
    generator = torch.Generator().manual_seed(recipe.seed)
    channels_last = place.channels_last and x.ndim == 4
    try:
        # setup builds adapters and heads from two samples' shapes, in eval mode (BatchNorm
        # statistics and dropout's random stream stay untouched).
        distiller.setup(x, torch.arange(min(2, n), device=x.device))
        modules = distiller.modules()
        for module in modules.values():
            module.to(place.device)
            if channels_last:  # Module.to takes memory_format at run time, though torch's stubs omit it
                module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        params = [p for m in modules.values() for p in m.parameters()]
        optimizer = make_optimizer(params, recipe)
        scaler = torch.amp.GradScaler(place.device.type) if place.precision == "fp16" else None
        every = max(1, steps // 50)
        points: list[list[float]] = []  # [step, loss, *terms] at the curve points: the loss curve and the terms
        names: list[str] = []
        order = torch.randperm(n, generator=generator)
        first, seconds_before = 0, 0.0
        if resume is not None:
            first, seconds_before, order, names, points = _restore(resume, modules, optimizer, generator)
            distiller.load_state_dict(resume.get("scheme", {}))
        judged = {s: k for k, s in enumerate(rungs) if s > first} if on_rung is not None else {}
        stopped = False

        def snapshot(step: int, seconds: float) -> Callable[[], TrainState]:
            return _capture(distiller, modules, optimizer, generator, order, step, seconds, names, points)

        if on_rung is not None and first in rungs:
            # A continued run is judged again at the rung it was saved at: the decision that
            # followed the save may never have been recorded.
            stopped = not on_rung(list(rungs).index(first), first, seconds_before, snapshot(first, seconds_before))
            if stopped:
                steps = first
        distiller.train_mode()
        autocast = (
            torch.autocast(place.device.type, dtype=place.dtype)
            if place.dtype is not None
            else contextlib.nullcontext()
        )
        start = time.perf_counter()
        for step in range(first, steps):
            i = step % per_epoch
            if i == 0 and step > 0:
                order = torch.randperm(n, generator=generator)
            idx = order[i * batch : (i + 1) * batch]
            xb, yb = x[idx], y[idx]
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast:
                _, terms = distiller.step(xb, yb, idx)
            loss = _total(terms)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            if step % every == 0 or step == steps - 1 or step + 1 in judged:
                # One synchronising read per curve point, of the loss and every term together.
                values = torch.stack([loss.detach(), *(t.detach() for t in terms.values())]).float().tolist()
                if not math.isfinite(values[0]):
                    raise Diverged(step, values[0])
                names = list(terms)
                points.append([float(step), *values])
            if step + 1 in judged:
                paused = time.perf_counter()
                done_seconds = seconds_before + paused - start
                go_on = on_rung(judged[step + 1], step + 1, done_seconds, snapshot(step + 1, done_seconds))  # type: ignore[misc]
                distiller.train_mode()
                start += time.perf_counter() - paused
                if not go_on:
                    stopped, steps = True, step + 1
                    break
    finally:
        distiller.close()
    distiller.student.eval()
    last = [p[2:] for p in points[-TERM_POINTS:]]
    terms_out = {name: sum(p[k] for p in last) / len(last) for k, name in enumerate(names)} if last else {}
    return DistillResult(
        steps=steps,
        train_seconds=distiller.prepare_seconds + seconds_before + time.perf_counter() - start,
        final_loss=points[-1][1] if points else float("nan"),
        curve=[(int(p[0]), p[1]) for p in points],
        stopped=stopped,
        terms=terms_out,
    )


def _total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of the terms (not ``sum()``: its leading ``0 +`` is one more kernel per step)."""
    values = iter(terms.values())
    total = next(values)
    for value in values:
        total = total + value
    return total


def _capture(
    distiller: Distiller,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    order: torch.Tensor,
    step: int,
    seconds: float,
    names: list[str],
    points: list[list[float]],
) -> Callable[[], TrainState]:
    def capture() -> TrainState:
        return {
            "step": step,
            "train_seconds": seconds,
            "terms": list(names),
            "points": [list(p) for p in points],
            "modules": {
                name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()
            },
            "optimizer": optimizer.state_dict(),
            "order": order.clone(),
            "generator": generator.get_state(),
            "rng": torch.get_rng_state(),
            "scheme": distiller.state_dict(),
        }

    return capture


def _restore(
    state: TrainState, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[int, float, torch.Tensor, list[str], list[list[float]]]:
    """Load a captured state into a freshly built run; returns where the run stands."""
    if set(state["modules"]) != set(modules):
        raise ValueError(f"the saved state holds {sorted(state['modules'])}, this run trains {sorted(modules)}")
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["rng"])
    points = [[float(v) for v in p] for p in state["points"]]
    # The order stays on the CPU with its generator: a CPU index tensor indexes device rows too.
    return int(state["step"]), float(state["train_seconds"]), state["order"], list(state["terms"]), points
