"""Measured cost of a model: parameter count, forward FLOPs and latency (p50/p95).

Pure measurement: every function leaves the model as it found it (train/eval flags of every
submodule, device, and torch's intra-op thread count) and touches no random number generator.
Inputs are zero tensors of ``(batch, *input_shape)``; ``input_shape`` never includes the batch.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from naskd.errors import NaskdError

#: Consecutive blocks the timed calls of ``measure_latency`` are split into (see there).
LATENCY_BLOCKS = 5

__all__ = [
    "Cost",
    "Latency",
    "count_flops",
    "count_params",
    "measure_cost",
    "measure_latency",
]


@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one forward call on a batch of ``batch_size`` samples."""

    p50_ms: float
    p95_ms: float
    batch_size: int
    threads: int
    device: str


@dataclass(frozen=True)
class Cost:
    """The cost objectives of one model, as recorded for a trial."""

    params: int
    flops: int
    latency_p50_ms: float
    latency_p95_ms: float
    model_bytes: int

    def metrics(self) -> dict[str, float]:
        """The figures under their metric names (``naskd.metrics``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def count_params(model: nn.Module) -> int:
    """Count every parameter of ``model``, trainable and frozen alike.

    Frozen parameters (``requires_grad=False``) still cost memory and compute at inference,
    so they count. Buffers (e.g. BatchNorm running statistics) are not parameters and are
    not counted. A parameter shared between modules counts once.

    Args:
        model: the network.

    Returns:
        The total number of scalar parameters.
    """
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of ``model`` for one sample, as counted by ``FlopCounterMode``.

    Convention (torch's): a multiply-add is 2 FLOPs, so ``nn.Linear(10, 5)`` costs
    ``2 * 10 * 5 = 100``. Only operators with a registered formula count (matmul, conv,
    attention, ...); bias additions, activations, normalisation and pooling count 0.
    The count runs in eval mode (Dropout/BatchNorm behave as at inference) under
    ``torch.no_grad()``, so it does not depend on the model's current mode.

    Args:
        model: the network; it stays on its device.
        input_shape: shape of one sample, without the batch dimension.

    Returns:
        The FLOPs of one forward pass on a batch of one.
    """
    device, dtype = _input_device_dtype(model)
    sample = torch.zeros((1, *input_shape), device=device, dtype=dtype)
    with _eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(sample)
    return int(counter.get_total_flops())


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    device: str = "cpu",
) -> Latency:
    """Time ``repeats`` forward calls of ``model`` on ``device`` and return p50/p95.

    Each call is timed on its own with ``time.perf_counter`` after ``warmup`` untimed calls,
    in eval mode under ``torch.inference_mode()``. On CUDA the device is synchronised before
    and after each timed call, since kernels launch asynchronously. ``threads`` sets torch's
    intra-op thread count for the measurement only; the setting is process-wide, so two
    measurements must not run concurrently in one process.

    The calls run in ``LATENCY_BLOCKS`` consecutive blocks; p50 is the lowest block median
    and p95 the 95th percentile of all calls. On a shared CPU a whole block can run slow
    (another tenant, the thread pool of the training just before): measured here, one
    median over 100 calls of the same 48 students varied up to 1.7x between runs (rank
    agreement tau 0.67-0.76), the lowest block median by 1.26x at most (tau 0.91). The
    tail, which such disturbances are part of, stays in p95.

    Args:
        model: the network; moved to ``device`` for the measurement and back afterwards.
        input_shape: shape of one sample, without the batch dimension.
        batch_size: samples per forward call (the latency is per call, not per sample).
        threads: intra-op CPU threads used during the measurement.
        warmup: untimed calls first (allocator, caches, lazy kernel selection).
        repeats: timed calls.
        device: a torch device string such as ``"cpu"`` or ``"cuda:0"``.

    Returns:
        The median and 95th percentile in milliseconds, with the conditions measured under.

    Raises:
        ValueError: a count out of range or a malformed device string.
        NaskdError: a CUDA device was asked for but CUDA is not available.
    """
    if batch_size < 1 or threads < 1 or repeats < 1 or warmup < 0:
        raise ValueError(
            "expected batch_size >= 1, threads >= 1, repeats >= 1, warmup >= 0; got "
            f"batch_size={batch_size}, threads={threads}, repeats={repeats}, warmup={warmup}"
        )
    target = _resolve_device(device)
    on_cuda = target.type == "cuda"

    original_device, _ = _input_device_dtype(model)
    previous_threads = torch.get_num_threads()
    timings_s = np.empty(repeats, dtype=np.float64)
    try:
        torch.set_num_threads(threads)
        model.to(target)
        _, dtype = _input_device_dtype(model)
        batch = torch.zeros((batch_size, *input_shape), device=target, dtype=dtype)
        with _eval_mode(model), torch.inference_mode():
            for _ in range(warmup):
                model(batch)
            for i in range(repeats):
                if on_cuda:
                    torch.cuda.synchronize(target)
                start = time.perf_counter()
                model(batch)
                if on_cuda:
                    torch.cuda.synchronize(target)
                timings_s[i] = time.perf_counter() - start
    finally:
        model.to(original_device)
        torch.set_num_threads(previous_threads)

    blocks = np.array_split(timings_s * 1e3, min(LATENCY_BLOCKS, repeats))
    p50 = min(float(np.median(block)) for block in blocks)
    p95 = max(p50, float(np.percentile(timings_s * 1e3, 95)))
    return Latency(
        p50_ms=float(p50),
        p95_ms=float(p95),
        batch_size=batch_size,
        threads=threads,
        device=str(target),
    )


def measure_cost(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    device: str = "cpu",
) -> Cost:
    """Parameters, per-sample FLOPs and latency of ``model`` (see the functions above).

    Raises:
        ValueError, NaskdError: as ``measure_latency``.
    """
    latency = measure_latency(
        model,
        input_shape,
        batch_size=batch_size,
        threads=threads,
        warmup=warmup,
        repeats=repeats,
        device=device,
    )
    return Cost(
        params=count_params(model),
        flops=count_flops(model, input_shape),
        latency_p50_ms=latency.p50_ms,
        latency_p95_ms=latency.p95_ms,
        model_bytes=count_model_bytes(model),
    )


def count_model_bytes(model: nn.Module) -> int:
    """Bytes of the model as shipped: its ``state_dict`` written by ``torch.save`` (what
    ``naskd export`` writes as ``model.pt``; tensor data plus a small archive overhead)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _resolve_device(device: str) -> torch.device:
    """Parse ``device`` and fail early, with a fixable message, if CUDA is asked for but absent."""
    try:
        target = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"invalid device {device!r}: {err}") from err
    if target.type == "cuda" and not torch.cuda.is_available():
        raise NaskdError(
            f"latency device {device!r} requested but CUDA is not available "
            "(torch.cuda.is_available() is False); measure on 'cpu' instead"
        )
    return target


def _input_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype that an input must have to match ``model``'s weights."""
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    # Integer buffers (e.g. BatchNorm's num_batches_tracked) say nothing about the input dtype.
    floating = [t.dtype for t in tensors if t.is_floating_point()]
    dtype = floating[0] if floating else torch.get_default_dtype()
    return device, dtype


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode and restore each submodule's own flag afterwards.

    Restoring only the root flag would be wrong for a model that keeps some submodules
    frozen in eval mode while training (e.g. frozen BatchNorm): ``model.train()`` would
    switch them back on.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training
