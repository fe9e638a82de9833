"""Scoring a trained student on the validation set: accuracy and fidelity to the teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, in batches to bound memory."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def score(logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None = None) -> dict[str, float]:
    """``accuracy``; with teacher logits also ``teacher_agreement`` (top-1 match rate) and
    ``kl_to_teacher`` (KL(p_teacher || p_student) at T = 1, batchmean)."""
    metrics = {"accuracy": (logits.argmax(-1) == y).float().mean().item()}
    if teacher_logits is not None:
        metrics["teacher_agreement"] = (logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean().item()
        metrics["kl_to_teacher"] = F.kl_div(
            F.log_softmax(logits, -1), F.log_softmax(teacher_logits, -1), reduction="batchmean", log_target=True
        ).item()
    return metrics
