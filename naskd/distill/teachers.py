"""Several teachers as one: how their logits combine into the target a student learns from
(mean logits, mean probabilities, or per-sample confidence weighting), with optional fixed
weights. A single teacher passes through unchanged."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

COMBINES = ("mean_logits", "mean_probs", "confidence")


def combine(logits: Sequence[torch.Tensor], weights: Sequence[float], how: str) -> torch.Tensor:
    """The ensemble's logits for a batch.

    Args:
        logits: one ``(B, C)`` tensor per teacher.
        weights: one fixed, non-negative weight per teacher (normalised here).
        how: ``mean_logits`` (weighted mean of the logits), ``mean_probs`` (log of the
            weighted mean of the probabilities: a valid logit vector whose softmax is the mean
            prediction), or ``confidence`` (per sample, teachers weighted by
            ``softmax_k(-entropy_k)`` times their fixed weight: a teacher sure of a sample
            speaks louder on it; label-free, so the validation ensemble is the same rule).
    """
    if len(logits) == 1:
        return logits[0]
    stacked = torch.stack([z.float() for z in logits])  # (K, B, C)
    w = torch.tensor(list(weights), dtype=stacked.dtype, device=stacked.device)
    w = (w / w.sum()).view(-1, 1, 1)
    if how == "mean_logits":
        return (w * stacked).sum(0)
    if how == "mean_probs":
        return torch.log((w * stacked.softmax(-1)).sum(0).clamp_min(1e-12))
    if how == "confidence":
        logp = F.log_softmax(stacked, -1)
        certainty = (logp.exp() * logp).sum(-1, keepdim=True)  # -entropy, (K, B, 1)
        a = certainty.softmax(0) * w
        return (a / a.sum(0, keepdim=True) * stacked).sum(0)
    raise ValueError(f"unknown combine {how!r} (expected one of {', '.join(COMBINES)})")
