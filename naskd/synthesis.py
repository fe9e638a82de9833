"""DeepInversion (Yin et al., CVPR 2020): a transfer set synthesized from a trained teacher alone,
by optimising inputs so that each batch matches the teacher's BatchNorm statistics and classes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from naskd.config import SynthesisConfig
from naskd.errors import NaskdError

#: Bump when the algorithm changes, so transfer sets cached by older code are not reused.
SYNTHESIS_VERSION = 1

# The paper's Adam betas: a short memory suits an objective whose augmentation changes every step.
_BETAS = (0.5, 0.9)


class NoBatchNorm(NaskdError):
    """The teacher has no BatchNorm layer with running statistics, so there is nothing to match."""


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The BatchNorm layers (1d/2d/3d) that hold running statistics, in module order.

    A layer built with ``track_running_stats=False`` keeps none, so it is left out."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, _BatchNorm) and m.running_mean is not None and m.running_var is not None
    ]


def synthesis_key(teacher_fingerprint: str, input_shape: Sequence[int], num_classes: int, cfg: SynthesisConfig) -> str:
    """A content name for a cached transfer set: the teacher, the inputs' shape, the classes,
    every setting and the algorithm's version."""
    src = json.dumps(
        {
            "v": SYNTHESIS_VERSION,
            "teacher": teacher_fingerprint,
            "shape": [int(d) for d in input_shape],
            "classes": int(num_classes),
            "cfg": dataclasses.asdict(cfg),
        },
        sort_keys=True,
    )
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def synthesize(
    teacher: nn.Module,
    input_shape: tuple[int, ...],
    num_classes: int,
    cfg: SynthesisConfig,
    *,
    device: torch.device | str = "cpu",
    where: str = "the teacher",
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """``cfg.samples`` inputs of shape ``input_shape`` and their class-balanced targets.

    Each batch starts as standard normal noise and takes ``cfg.iterations`` Adam steps on
    ``bn_weight * BN + CE(teacher(aug(x)), y) + tv_weight * TV(x) + l2_weight * L2(x)``, with the
    learning rate decayed from ``cfg.lr`` to 0 on a cosine over the iterations (converges the
    set without the paper's hand-tuned schedule). The teacher is used as it is and left as it
    was: eval mode, weights, running statistics, ``requires_grad`` flags, device, no hooks.

    Args:
        device: where the work runs; the result is on the CPU either way.
        where: names the teacher in errors.
        progress: called after each batch with the number of samples made so far.

    Returns:
        ``(x, y, stats)``: x float32 ``(samples, *input_shape)``, y int64; stats has
        ``bn_loss_first`` / ``bn_loss_last`` (the BN term, first layer multiplied and without
        ``bn_weight``, averaged over batches at the first and last iteration), ``ce_loss_last``,
        ``teacher_accuracy`` (share of the samples the teacher, in eval mode, puts in their
        target class) and ``seconds``.

    Raises:
        NoBatchNorm: the teacher has no BatchNorm layer with running statistics (before any work).
    """
    layers = [m for _, m in batchnorm_layers(teacher)]
    if not layers:
        raise NoBatchNorm(
            f"{where}: has no BatchNorm layer; DeepInversion matches the teacher's BatchNorm "
            'statistics (use a teacher with BatchNorm, or [data] transfer = "real")'
        )
    start = time.perf_counter()
    device = torch.device(device)
    # Where the teacher lives now, to put it back: its parameters', or its BN buffers' (it has those at least).
    home = next(iter((*teacher.parameters(), *teacher.buffers()))).device
    modes = [(m, m.training) for m in teacher.modules()]  # each module's own, in case they differ
    flags = [(p, p.requires_grad) for p in teacher.parameters()]
    bn_terms: list[torch.Tensor] = []
    handles = []
    try:
        teacher.eval()  # running statistics are read, never updated
        for p, _ in flags:
            p.requires_grad_(False)  # gradients flow to the inputs only
        teacher.to(device)
        for i, layer in enumerate(layers):
            weight = cfg.first_bn_multiplier if i == 0 else 1.0
            handles.append(layer.register_forward_hook(_bn_hook(bn_terms, weight)))
        return _run(teacher, tuple(input_shape), num_classes, cfg, device, bn_terms, progress, start)
    finally:
        for h in handles:
            h.remove()
        teacher.to(home)
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def _bn_hook(out: list[torch.Tensor], weight: float) -> Callable[..., None]:
    """A forward hook that appends ``weight * (||mu - running_mean|| + ||var - running_var||)``
    of the layer's input, statistics over every dim but the channels (dim 1)."""

    def hook(module: _BatchNorm, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = inputs[0]
        mean_t, var_t = module.running_mean, module.running_var
        assert mean_t is not None and var_t is not None  # only layers that track statistics are hooked
        dims = [0, *range(2, x.ndim)]
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)  # biased, as BatchNorm normalises with
        term = torch.linalg.vector_norm(mean - mean_t) + torch.linalg.vector_norm(var - var_t)
        out.append(term * weight)

    return hook


def _run(
    teacher: nn.Module,
    shape: tuple[int, ...],
    num_classes: int,
    cfg: SynthesisConfig,
    device: torch.device,
    bn_terms: list[torch.Tensor],
    progress: Callable[[int], None] | None,
    start: float,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    # Every random draw comes from this CPU generator: the global RNGs stay untouched, and the
    # same seed gives the same set on any device.
    gen = torch.Generator().manual_seed(cfg.seed)
    y_all = (torch.arange(cfg.samples) % num_classes)[torch.randperm(cfg.samples, generator=gen)]
    xs, firsts, lasts, ces, hits = [], [], [], [], 0
    for lo in range(0, cfg.samples, cfg.batch_size):
        y = y_all[lo : lo + cfg.batch_size].to(device)
        x = torch.randn((len(y), *shape), generator=gen).to(device).requires_grad_()
        opt = torch.optim.Adam([x], lr=cfg.lr, betas=_BETAS)
        for it in range(cfg.iterations):
            opt.param_groups[0]["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * it / cfg.iterations))
            bn_terms.clear()
            logits = teacher(_augment(x, cfg, gen))
            bn = torch.stack(bn_terms).sum()
            # L2 prior: the mean of per-sample norms (the paper takes the whole batch's norm),
            # so its weight means the same at any batch size.
            loss = (
                cfg.bn_weight * bn
                + F.cross_entropy(logits, y)
                + cfg.tv_weight * _tv(x)
                + cfg.l2_weight * x.flatten(1).norm(dim=1).mean()
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if it == 0:
                firsts.append(bn.detach())
            if it == cfg.iterations - 1:  # the loss before this last step: what the set has reached
                lasts.append(bn.detach())
                ces.append(F.cross_entropy(logits.detach(), y))
        with torch.no_grad():
            hits += int((teacher(x).argmax(dim=1) == y).sum())
        xs.append(x.detach().float().cpu())
        if progress is not None:
            progress(lo + len(y))
    stats = {
        "bn_loss_first": float(torch.stack(firsts).mean()),
        "bn_loss_last": float(torch.stack(lasts).mean()),
        "ce_loss_last": float(torch.stack(ces).mean()),
        "teacher_accuracy": hits / cfg.samples,
        "seconds": time.perf_counter() - start,
    }
    return torch.cat(xs), y_all, stats


def _augment(x: torch.Tensor, cfg: SynthesisConfig, gen: torch.Generator) -> torch.Tensor:
    """The copy the teacher sees this step: one random shift of up to ``jitter`` positions per
    spatial axis and, with ``flip``, a flip of the last axis half the time (the whole batch
    alike, as in the paper). Flat (N, F) inputs are left alone: their features have no order
    to shift or mirror."""
    axes = list(range(2, x.ndim))
    if not axes:
        return x
    if cfg.jitter > 0:
        shifts = torch.randint(-cfg.jitter, cfg.jitter + 1, (len(axes),), generator=gen).tolist()
        x = torch.roll(x, shifts=shifts, dims=axes)
    if cfg.flip and bool(torch.rand((), generator=gen) < 0.5):
        x = torch.flip(x, dims=[x.ndim - 1])
    return x


def _tv(x: torch.Tensor) -> torch.Tensor:
    """Total variation: the mean absolute difference of neighbours along each spatial axis,
    summed over the axes (absolute rather than squared: it keeps the sharp edges of a signal)."""
    total = x.new_zeros(())
    for axis in range(2, x.ndim):
        if x.shape[axis] > 1:  # an axis of one position has no neighbours (and its mean would be NaN)
            total = total + x.diff(dim=axis).abs().mean()
    return total
