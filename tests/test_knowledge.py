"""``kd``: Hinton's loss, T^2 * KL(p_teacher^T || p_student^T), batchmean, teacher detached.

Hand example used below (T = 1): student logits [0, 0] give p_s = [1/2, 1/2]; teacher logits
[ln 3, 0] give p_t = [3/4, 1/4].
  KL(p_t || p_s) = 3/4 ln((3/4)/(1/2)) + 1/4 ln((1/4)/(1/2)) = 3/4 ln 1.5 - 1/4 ln 2 ~= 0.130812
  KL(p_s || p_t) = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = -1/2 ln 1.5 + 1/2 ln 2 ~= 0.143841
so the two directions are told apart, and reduction "mean" (divide by B*C = 2) would give 0.065406.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from helpers_torch import one_torch_thread  # noqa: F401  (autouse fixture)

from naskd.knowledge.functional import kd

KL_T_S = 0.75 * math.log(1.5) - 0.25 * math.log(2.0)
KL_S_T = -0.5 * math.log(1.5) + 0.5 * math.log(2.0)


def _manual_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """sum_c p_t log(p_t / p_s) per row, averaged over rows, in float64."""
    p_t = torch.softmax(teacher.double() / temperature, -1)
    p_s = torch.softmax(student.double() / temperature, -1)
    return (p_t * (p_t.log() - p_s.log())).sum(-1).mean()


def test_hand_computed_value_and_direction():
    assert KL_T_S == pytest.approx(0.130812, abs=1e-6)
    assert KL_S_T == pytest.approx(0.143841, abs=1e-6)
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    value = kd(student, teacher, temperature=1.0)
    assert value.ndim == 0
    assert value.item() == pytest.approx(KL_T_S, abs=1e-6)
    assert value.item() != pytest.approx(KL_S_T, abs=1e-3)  # not the reverse KL
    assert value.item() != pytest.approx(KL_T_S / 2, abs=1e-3)  # not reduction="mean"
    # Swapping the roles gives the other direction.
    assert kd(teacher, student, temperature=1.0).item() == pytest.approx(KL_S_T, abs=1e-6)


def test_two_by_three_example():
    student = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    teacher = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    rows = []
    for s, t in zip(student.tolist(), teacher.tolist()):
        zs = sum(math.exp(v) for v in s)
        zt = sum(math.exp(v) for v in t)
        p_s = [math.exp(v) / zs for v in s]
        p_t = [math.exp(v) / zt for v in t]
        rows.append(sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s)))
    expected = sum(rows) / 2
    assert kd(student, teacher, temperature=1.0).item() == pytest.approx(expected, rel=1e-5)


def test_zero_when_student_equals_teacher():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    assert kd(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert kd(logits, logits + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # softmax ignores a shift


def test_positive_when_they_differ():
    g = torch.Generator().manual_seed(1)
    assert kd(torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)).item() > 0


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 7.5])
def test_scaled_by_temperature_squared(temperature):
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(6, 5, generator=g), 3 * torch.randn(6, 5, generator=g)
    expected = temperature**2 * _manual_kl(student, teacher, temperature).item()
    assert kd(student, teacher, temperature=temperature).item() == pytest.approx(expected, rel=1e-5)


def test_temperature_squared_on_the_hand_example():
    # Logits scaled by T give the same softened distributions as the T = 1 example.
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2.0 * math.log(3.0), 0.0]])
    assert kd(student, teacher, temperature=2.0).item() == pytest.approx(4.0 * KL_T_S, abs=1e-6)


def test_default_temperature_is_4():
    assert inspect.signature(kd).parameters["temperature"].default == 4.0
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    assert kd(student, teacher).item() == kd(student, teacher, temperature=4.0).item()
    assert kd(student, teacher).item() != pytest.approx(kd(student, teacher, temperature=1.0).item())


def test_batchmean_averages_rows_not_elements():
    student = torch.tensor([[0.3, -1.0, 2.0]])
    teacher = torch.tensor([[1.0, 0.0, -0.5]])
    one = kd(student, teacher, temperature=2.0)
    two = kd(student.repeat(2, 1), teacher.repeat(2, 1), temperature=2.0)
    assert two.item() == pytest.approx(one.item(), rel=1e-6)
    # Mixed batch: the mean of the per-row losses.
    other_s, other_t = torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    mixed = kd(torch.cat([student, other_s]), torch.cat([teacher, other_t]), temperature=2.0)
    assert mixed.item() == pytest.approx((one.item() + kd(other_s, other_t, temperature=2.0).item()) / 2, rel=1e-6)


def test_no_gradient_reaches_the_teacher():
    g = torch.Generator().manual_seed(4)
    student = torch.randn(4, 3, generator=g, requires_grad=True)
    teacher = torch.randn(4, 3, generator=g, requires_grad=True)
    kd(student, teacher).backward()
    assert teacher.grad is None or not teacher.grad.any()
    assert student.grad is not None and student.grad.abs().sum().item() > 0


def test_gradient_matches_the_closed_form():
    # d/dz_s [T^2 KL(p_t || p_s)] / B = T (p_s - p_t) / B
    g = torch.Generator().manual_seed(5)
    student = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 4, generator=g, dtype=torch.float64)
    temperature = 3.0
    kd(student, teacher, temperature=temperature).backward()
    p_s = torch.softmax(student.detach() / temperature, -1)
    p_t = torch.softmax(teacher / temperature, -1)
    assert torch.allclose(student.grad, temperature * (p_s - p_t) / 3, atol=1e-10)
