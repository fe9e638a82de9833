"""Distillation losses as pure functions: student tensor first, teacher tensor second,
published defaults as keyword arguments, a scalar out.

The teacher's tensor is detached inside each loss, so no gradient can reach the teacher
whatever the caller passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton et al. (2015) response distillation: ``T^2 * KL(p_t^T || p_s^T)``.

    Args:
        student_logits: (B, C) logits of the student.
        teacher_logits: (B, C) logits of the teacher (detached here).
        temperature: softening temperature T > 0.

    Returns:
        The loss averaged over the batch ("batchmean": summed over classes, divided by B),
        scaled by T^2 so its gradients keep their size as T changes.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    # kl_div(input=log q, target=log p, log_target=True) = KL(p || q): teacher is p.
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2
