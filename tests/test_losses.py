"""Distillation losses in ``naskd.knowledge.functional``: hand-computed values and invariants.

Every value below is worked out by hand in a comment (the formulas are in
shared/research/kd-losses.md). Shared geometry used by the relation/graph tests:

* TRIANGLE_345: points (0,0), (3,0), (0,4): distances 3, 4, 5; the angles' cosines are
  0 at (0,0), 3/5 at (3,0) ((-3,0).(-3,4) / (3*5) = 9/15) and 4/5 at (0,4) ((0,-4).(3,-4) / (4*5)).
* EQUILATERAL: points (0,0), (1,0), (1/2, sqrt(3)/2): all distances 1, all cosines 1/2.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from helpers_torch import one_torch_thread  # noqa: F401  (autouse fixture)

from naskd.knowledge import functional as kf
from naskd.knowledge.functional import (
    LOSSES,
    LossInfo,
    attention_distribution,
    attention_transfer,
    dist,
    dkd,
    fitnet,
    irg,
    kd,
    pkt,
    rkd_angle,
    rkd_distance,
    similarity_preserving,
)

TRIANGLE_345 = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
EQUILATERAL = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3.0) / 2.0]])


def _probs_as_logits(rows: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax (T = 1) is exactly ``rows``: log-probabilities."""
    return torch.tensor(rows, dtype=torch.float64).log()


# ---------------------------------------------------------------------------------------------
# One generic case per loss for the invariants: (student, teacher, extra positional args).
# ---------------------------------------------------------------------------------------------


def _cases() -> dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor, tuple]]]:
    g = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    def attn(*shape: int) -> torch.Tensor:
        return torch.softmax(randn(*shape), dim=-1)

    return {
        "kd": lambda: (randn(4, 5), randn(4, 5), ()),
        "dkd": lambda: (randn(4, 5), randn(4, 5), (torch.tensor([0, 3, 2, 4]),)),
        "dist": lambda: (randn(4, 5), randn(4, 5), ()),
        "fitnet": lambda: (randn(4, 3, 5), randn(4, 3, 5), ()),
        "attention_transfer": lambda: (randn(4, 3, 6, 6), randn(4, 5, 6, 6), ()),
        "attention_distribution": lambda: (attn(2, 3, 4, 5), attn(2, 3, 4, 5), ()),
        "rkd_distance": lambda: (randn(5, 3), randn(5, 7), ()),
        "rkd_angle": lambda: (randn(5, 3), randn(5, 7), ()),
        "similarity_preserving": lambda: (randn(5, 2, 3, 3), randn(5, 4, 2, 2), ()),
        "pkt": lambda: (randn(5, 3), randn(5, 7), ()),
        "irg": lambda: (randn(5, 3), randn(5, 3), ()),  # same width: the vertex term uses them
    }


CASES = _cases()


def test_cases_cover_the_registry():
    assert set(CASES) == set(LOSSES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_scalar_out_teacher_gets_no_gradient_student_gets_a_finite_one(name: str):
    student, teacher, extra = CASES[name]()
    student = student.clone().requires_grad_(True)
    teacher = teacher.clone().requires_grad_(True)
    loss = LOSSES[name].fn(student, teacher, *extra)
    assert loss.ndim == 0
    assert torch.isfinite(loss)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None
    assert torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_zero_when_student_equals_teacher(name: str):
    student, _, extra = CASES[name]()
    if name == "attention_transfer":  # same channel count is not needed, but same values are
        student = student[:, :3]
    loss = LOSSES[name].fn(student, student.clone(), *extra)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", ["kd", "dkd", "dist", "fitnet", "attention_transfer", "attention_distribution"])
def test_duplicating_the_batch_leaves_per_sample_mean_losses_unchanged(name: str):
    student, teacher, extra = CASES[name]()
    if name == "attention_transfer":
        teacher = teacher[..., :3, :3]  # also with pooling on the way
    once = LOSSES[name].fn(student, teacher, *extra)
    twice = LOSSES[name].fn(
        torch.cat([student, student]), torch.cat([teacher, teacher]), *(torch.cat([e, e]) for e in extra)
    )
    assert twice.item() == pytest.approx(once.item(), rel=1e-5, abs=1e-7)


# ---------------------------------------------------------------------------------------------
# Response: kd, dkd, dist.
# ---------------------------------------------------------------------------------------------


def test_kd_hand_value_batchmean():
    # Sample 1 (T = 1): p_s = softmax([ln 3, 0]) = [3/4, 1/4], p_t = [1/2, 1/2]:
    #   KL(p_t || p_s) = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(4/3) ~= 0.143841.
    # Sample 2: equal logits, KL = 0. batchmean over B = 2: 0.0719205.
    student = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    assert kd(student, teacher, temperature=1.0).item() == pytest.approx(0.5 * math.log(4 / 3) / 2, abs=1e-6)


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_temperature_squared_scaling(name: str):
    # Logits multiplied by T at temperature T give the same distributions as at T = 1, so the
    # loss is exactly T^2 times the T = 1 loss.
    student, teacher, extra = CASES[name]()
    base = LOSSES[name].fn(student, teacher, *extra, temperature=1.0)
    for t in (2.0, 4.0):
        scaled = LOSSES[name].fn(student * t, teacher * t, *extra, temperature=t)
        assert scaled.item() == pytest.approx(t**2 * base.item(), rel=1e-5)


def test_dkd_hand_value():
    # Sample 1, target 0 (T = 1): p_t = [1/2, 1/4, 1/4], p_s = [1/4, 1/2, 1/4].
    #   TCKD: b_t = [1/2, 1/2], b_s = [1/4, 3/4]:
    #     1/2 ln((1/2)/(1/4)) + 1/2 ln((1/2)/(3/4)) = 1/2 ln(4/3) ~= 0.143841
    #   NCKD: non-target q_t = [1/2, 1/2], q_s = [2/3, 1/3]:
    #     1/2 ln((1/2)/(2/3)) + 1/2 ln((1/2)/(1/3)) = 1/2 ln(9/8) ~= 0.058892
    #   alpha*TCKD + beta*NCKD (1, 8) = 0.143841 + 0.471132 = 0.614973
    # Sample 2, target 2: student = teacher, 0. batchmean over B = 2: 0.307487.
    student = _probs_as_logits([[0.25, 0.5, 0.25], [0.2, 0.3, 0.5]])
    teacher = _probs_as_logits([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    target = torch.tensor([0, 2])
    tckd = 0.5 * math.log(4 / 3)
    nckd = 0.5 * math.log(9 / 8)
    value = dkd(student, teacher, target, temperature=1.0)
    assert value.item() == pytest.approx((tckd + 8 * nckd) / 2, abs=1e-9)
    # Each part alone, by its weight.
    assert dkd(student, teacher, target, alpha=1.0, beta=0.0, temperature=1.0).item() == pytest.approx(tckd / 2)
    assert dkd(student, teacher, target, alpha=0.0, beta=1.0, temperature=1.0).item() == pytest.approx(nckd / 2)


def test_dkd_nckd_equals_the_masking_trick_of_the_paper():
    # The paper masks the target logit by subtracting 1000 before the softmax; removing the
    # column must give the same NCKD.
    student, teacher, (target,) = CASES["dkd"]()
    temperature = 4.0
    mask = F.one_hot(target, student.shape[1]).bool()
    log_q_s = F.log_softmax(student / temperature - 1000.0 * mask, dim=1)
    q_t = F.softmax(teacher / temperature - 1000.0 * mask, dim=1)
    nckd = (q_t * (q_t.clamp_min(1e-30).log() - log_q_s)).sum(1).mean() * temperature**2
    value = dkd(student, teacher, target, alpha=0.0, beta=1.0, temperature=temperature)
    assert value.item() == pytest.approx(nckd.item(), rel=1e-5)


def test_dkd_decomposes_kd():
    # Zhao 2022, eq. (5): KD = TCKD + (1 - p_t_gt) NCKD. With a teacher that puts ~0 mass on
    # the target (logit -30: p_t_gt ~ 1e-13), KD = TCKD + NCKD, i.e. dkd with alpha = beta = 1.
    student = torch.tensor([[0.3, 1.0, -0.5]])
    teacher = torch.tensor([[-30.0, 1.0, 0.2]])
    target = torch.tensor([0])
    value = dkd(student, teacher, target, alpha=1.0, beta=1.0, temperature=1.0)
    assert value.item() == pytest.approx(kd(student, teacher, temperature=1.0).item(), rel=1e-5)


def test_dist_hand_value():
    # T = 1, logits = log-probabilities. Rows (mean 1/4 each, so centring subtracts 0.25):
    #   row 1: t = [.55,.25,.15,.05] -> [.3, 0, -.1, -.2];  s = [.45,.35,.05,.15] -> [.2, .1, -.2, -.1]
    #          cov = .06 + 0 + .02 + .02 = .10; |t|^2 = .14, |s|^2 = .10; r = .10 / sqrt(.014) = 0.845154
    #   row 2: t = [.05,.15,.25,.55] -> [-.2, -.1, 0, .3]; s = [.15,.45,.35,.05] -> [-.1, .2, .1, -.2]
    #          cov = .02 - .02 + 0 - .06 = -.06; r = -.06 / sqrt(.014) = -0.507093
    #   inter = 1 - (0.845154 - 0.507093) / 2 = 0.830969
    # Columns (B = 2, so Pearson is +1 when both go the same way, -1 otherwise):
    #   c0: t .55->.05 down, s .45->.15 down: +1;  c1: t .25->.15 down, s .35->.45 up: -1
    #   c2: t .15->.25 up,   s .05->.35 up:   +1;  c3: t .05->.55 up,   s .15->.05 down: -1
    #   intra = 1 - 0 = 1.   loss = 1 * 0.830969 + 1 * 1 = 1.830969
    student = _probs_as_logits([[0.45, 0.35, 0.05, 0.15], [0.15, 0.45, 0.35, 0.05]])
    teacher = _probs_as_logits([[0.55, 0.25, 0.15, 0.05], [0.05, 0.15, 0.25, 0.55]])
    r1, r2 = 0.10 / math.sqrt(0.014), -0.06 / math.sqrt(0.014)
    inter = 1 - (r1 + r2) / 2
    assert inter == pytest.approx(0.830969, abs=1e-6)
    assert dist(student, teacher).item() == pytest.approx(inter + 1.0, abs=1e-6)
    assert dist(student, teacher, beta=1.0, gamma=0.0).item() == pytest.approx(inter, abs=1e-6)
    assert dist(student, teacher, beta=0.0, gamma=1.0).item() == pytest.approx(1.0, abs=1e-6)
    # tau^2 scaling: logits times tau at temperature tau give the same y, times tau^2.
    assert dist(student * 2, teacher * 2, temperature=2.0).item() == pytest.approx(4 * (inter + 1.0), abs=1e-5)


def test_dist_agrees_with_numpy_corrcoef():
    np = pytest.importorskip("numpy")
    student, teacher, _ = CASES["dist"]()
    y_s = torch.softmax(student.double(), 1).numpy()
    y_t = torch.softmax(teacher.double(), 1).numpy()
    inter = 1 - np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(y_s, y_t)])
    intra = 1 - np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(y_s.T, y_t.T)])
    value = dist(student, teacher, beta=2.0, gamma=0.5)
    assert value.item() == pytest.approx(2.0 * inter + 0.5 * intra, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Feature: fitnet.
# ---------------------------------------------------------------------------------------------


def test_fitnet_hand_value():
    # differences 0, 1, 2, 3 -> squares 0, 1, 4, 9 -> mean 14 / 4 = 3.5
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    teacher = torch.ones(2, 2)
    assert fitnet(student, teacher).item() == pytest.approx(3.5)


def test_fitnet_rejects_unadapted_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        fitnet(torch.zeros(2, 3), torch.zeros(2, 4))


# ---------------------------------------------------------------------------------------------
# Attention: attention_transfer, attention_distribution.
# ---------------------------------------------------------------------------------------------


def test_attention_transfer_hand_value():
    # Student (B=1, C=2, L=2): channels [1, 2] and [sqrt 5, 2]; F^2 = [1, 4], [5, 4];
    #   mean over channels = [3, 4]; L2-normalised = [0.6, 0.8].
    # Teacher: channels [1, 0], [1, 0] -> mean F^2 = [1, 0] -> [1, 0].
    # loss = mean over B*L = 2 of ((0.6 - 1)^2, (0.8 - 0)^2) = (0.16 + 0.64) / 2 = 0.4
    student = torch.tensor([[[1.0, 2.0], [math.sqrt(5.0), 2.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert attention_transfer(student, teacher).item() == pytest.approx(0.4, abs=1e-6)
    # The same maps as (B, C, H, W) with H = 1.
    assert attention_transfer(student.unsqueeze(2), teacher.unsqueeze(2)).item() == pytest.approx(0.4, abs=1e-6)


def test_attention_transfer_uses_signed_power_not_absolute_value():
    # p = 3, C = 1. Student F = [-1, 2]: F^3 = [-1, 8] -> [-1, 8] / sqrt 65.
    # Teacher F = [1, 2]: F^3 = [1, 8] -> [1, 8] / sqrt 65.
    # loss = ((-1 - 1)^2 / 65 + 0) / 2 = 2 / 65 ~= 0.030769; with |F|^3 it would be 0.
    student = torch.tensor([[[-1.0, 2.0]]])
    teacher = torch.tensor([[[1.0, 2.0]]])
    value = attention_transfer(student, teacher, p=3.0)
    assert value.item() == pytest.approx(2 / 65, abs=1e-7)
    assert attention_transfer(student.abs(), teacher, p=3.0).item() == pytest.approx(0.0, abs=1e-7)
    # With even p the sign does not matter.
    assert attention_transfer(student, teacher, p=2.0).item() == pytest.approx(0.0, abs=1e-7)


def _manual_attention(features: torch.Tensor, p: float, size: tuple[int, ...] | None) -> torch.Tensor:
    a = features.pow(p).mean(1, keepdim=True)
    if size is not None:
        a = F.adaptive_avg_pool2d(a, size) if a.ndim == 4 else F.adaptive_avg_pool1d(a, size)
    return F.normalize(a.flatten(1), dim=1)


def test_attention_transfer_pools_the_larger_map_to_the_smaller():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(3, 4, 8, 8, generator=g)
    teacher = torch.randn(3, 6, 4, 4, generator=g)
    expected = (_manual_attention(student, 2.0, (4, 4)) - _manual_attention(teacher, 2.0, None)).pow(2).mean()
    assert attention_transfer(student, teacher).item() == pytest.approx(expected.item(), rel=1e-6)
    # Either side may be the larger one.
    expected_swapped = (_manual_attention(teacher, 2.0, None) - _manual_attention(student, 2.0, (4, 4))).pow(2).mean()
    assert attention_transfer(teacher, student).item() == pytest.approx(expected_swapped.item(), rel=1e-6)
    # Sequences (B, C, L), and a per-dimension minimum for mixed sizes (8x2 vs 4x4 -> 4x2).
    s1, t1 = torch.randn(3, 4, 12, generator=g), torch.randn(3, 2, 6, generator=g)
    expected_1d = (_manual_attention(s1, 2.0, 6) - _manual_attention(t1, 2.0, None)).pow(2).mean()
    assert attention_transfer(s1, t1).item() == pytest.approx(expected_1d.item(), rel=1e-6)
    s2, t2 = torch.randn(3, 4, 8, 2, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    expected_mixed = (_manual_attention(s2, 2.0, (4, 2)) - _manual_attention(t2, 2.0, (4, 2))).pow(2).mean()
    assert attention_transfer(s2, t2).item() == pytest.approx(expected_mixed.item(), rel=1e-6)


def test_attention_transfer_hand_value_with_pooling():
    # Student (1, 1, 4) F = [1, 1, 2, 0] -> F^2 = [1, 1, 4, 0] -> pooled to L = 2: [1, 2]
    #   -> [1, 2] / sqrt 5.  Teacher (1, 1, 2) F = [1, sqrt 2] -> F^2 = [1, 2], the same map.
    #   loss = 0. Pooling F before squaring would give [1, 1] -> [1, 1]/sqrt 2, loss != 0.
    student = torch.tensor([[[1.0, 1.0, 2.0, 0.0]]])
    teacher = torch.tensor([[[1.0, math.sqrt(2.0)]]])
    assert attention_transfer(student, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_attention_distribution_hand_value():
    # B = 1, one head, L_q = L_k = 2.
    #   row 1: t = [1/2, 1/2], s = [3/4, 1/4]: 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3) ~= 0.143841
    #   row 2: t = [1, 0], s = [1/2, 1/2]:    1 ln 2 + 0 = 0.693147
    #   batchmean over B*heads*L_q = 2 rows: 0.418494
    student = torch.tensor([[[[0.75, 0.25], [0.5, 0.5]]]])
    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    expected = (0.5 * math.log(4 / 3) + math.log(2.0)) / 2
    assert attention_distribution(student, teacher).item() == pytest.approx(expected, abs=1e-6)
    # KL(teacher || student), not the reverse: swapped roles give a different (here infinite-ish
    # but eps-bounded) value.
    assert attention_distribution(teacher, student).item() != pytest.approx(expected, abs=1e-3)
    # A (B, L_q, L_k) tensor counts as one head.
    assert attention_distribution(student[:, 0], teacher[:, 0]).item() == pytest.approx(expected, abs=1e-6)


def test_attention_distribution_rows_are_batch_heads_queries():
    # Duplicating the heads (or the queries) leaves the per-row mean unchanged.
    student, teacher, _ = CASES["attention_distribution"]()
    base = attention_distribution(student, teacher).item()
    assert attention_distribution(student.repeat(1, 2, 1, 1), teacher.repeat(1, 2, 1, 1)).item() == pytest.approx(base)
    assert attention_distribution(student.repeat(1, 1, 3, 1), teacher.repeat(1, 1, 3, 1)).item() == pytest.approx(base)


def test_attention_distribution_averages_heads_when_counts_differ():
    # Teacher with 2 heads whose rows are [1, 0] and [0, 1]: the head mean is [1/2, 1/2] per row.
    # A 1-head student with rows [1/2, 1/2] matches it exactly: loss 0.
    # Student [3/4, 1/4] instead: 1/2 ln(4/3) per row (as above) = 0.143841.
    teacher = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]])  # (1, 2, 2, 2)
    assert attention_distribution(torch.full((1, 1, 2, 2), 0.5), teacher).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.tensor([[[[0.75, 0.25], [0.75, 0.25]]]])
    assert attention_distribution(student, teacher).item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Relation: rkd_distance, rkd_angle, similarity_preserving, pkt.
# ---------------------------------------------------------------------------------------------


def test_rkd_distance_hand_value_excludes_the_diagonal():
    # Teacher TRIANGLE_345: distances 3, 4, 5; mean over the 6 ordered pairs i != j = 24/6 = 4
    #   -> normalised 0.75, 1, 1.25.  Student EQUILATERAL: all 1, mean 1 -> 1, 1, 1.
    # |diff| = 0.25, 0, 0.25 (< 1: smooth-L1 = d^2 / 2) -> 0.03125, 0, 0.03125 per pair;
    # mean over the 6 ordered pairs: 2 * 0.0625 / 6 = 0.0208333.
    # With the diagonal in the normalising means (24/9 and 6/9) the teacher would be
    # 1.125, 1.5, 1.875 and the student 1.5: smooth-L1 0.0703125 on 4 entries, 0.28125 / 6 =
    # 0.046875; with the diagonal in the final mean: 0.125 / 9 = 0.0138889.
    value = rkd_distance(EQUILATERAL, TRIANGLE_345)
    assert value.item() == pytest.approx(0.125 / 6, abs=1e-6)
    assert value.item() != pytest.approx(0.046875, abs=1e-4)
    assert value.item() != pytest.approx(0.125 / 9, abs=1e-4)


def test_rkd_distance_uses_per_matrix_mean_normalisation():
    student, teacher, _ = CASES["rkd_distance"]()
    base = rkd_distance(student, teacher).item()
    assert rkd_distance(student * 10, teacher).item() == pytest.approx(base, rel=1e-5)
    assert rkd_distance(student, teacher * 0.1).item() == pytest.approx(base, rel=1e-5)
    # Shifting does not change distances either.
    assert rkd_distance(student + 3.0, teacher).item() == pytest.approx(base, rel=1e-4)


def test_rkd_distance_coincident_points_and_tiny_batches_are_finite():
    student = torch.zeros(4, 3, requires_grad=True)
    loss = rkd_distance(student, torch.randn(4, 3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    one = torch.randn(1, 3, requires_grad=True)
    single = rkd_distance(one, torch.randn(1, 3))
    single.backward()
    assert single.item() == 0.0


def test_rkd_angle_hand_value():
    # Distinct triplets (i, j, k), angle at j: 3 choices of j x 2 ordered (i, k) = 6.
    # Teacher TRIANGLE_345 cosines: 0, 0.6, 0.8 (each twice); student EQUILATERAL: 0.5.
    # |diff| = 0.5, 0.1, 0.3 -> smooth-L1 0.125, 0.005, 0.045, sum 0.175, twice = 0.35;
    # mean over 6 triplets = 0.0583333. (Over all B^3 = 27 triplets it would be 0.35/27.)
    value = rkd_angle(EQUILATERAL, TRIANGLE_345)
    assert value.item() == pytest.approx(0.35 / 6, abs=1e-6)
    # Scale and translation invariant; tiny batches give 0.
    assert rkd_angle(EQUILATERAL * 7 + 1, TRIANGLE_345).item() == pytest.approx(0.35 / 6, abs=1e-6)
    assert rkd_angle(torch.randn(2, 3), torch.randn(2, 3)).item() == 0.0


def test_similarity_preserving_hand_value_divides_by_b_squared():
    # Student f = [[1,0],[0,1]]: G = I, rows already unit.
    # Teacher f = [[1,0],[1,0]]: G = all ones, rows -> [1/sqrt2, 1/sqrt2].
    # G_t - G_s = [[1/sqrt2 - 1, 1/sqrt2], [1/sqrt2, 1/sqrt2 - 1]];
    # ||.||_F^2 = 2 ((1 - 1/sqrt2)^2 + 1/2) = 2 (2 - sqrt2) = 4 - 2 sqrt2 ~= 1.171573;
    # / B^2 = 4 -> 1 - sqrt2/2 ~= 0.292893.
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert similarity_preserving(student, teacher).item() == pytest.approx(1 - math.sqrt(2) / 2, abs=1e-6)


def test_similarity_preserving_flattens_and_is_scale_invariant():
    student, teacher, _ = CASES["similarity_preserving"]()
    base = similarity_preserving(student, teacher).item()
    assert similarity_preserving(student.flatten(1), teacher.flatten(1)).item() == pytest.approx(base)
    assert similarity_preserving(student * 5, teacher).item() == pytest.approx(base, rel=1e-5)


def test_pkt_hand_value_mean_over_b_squared_entries():
    # Student f = [[1,0],[0,1]]: cos = I -> K = [[1, .5], [.5, 1]] -> rows [[2/3, 1/3], [1/3, 2/3]].
    # Teacher f = [[1,0],[2,0]]: cos = 1 everywhere -> K = 1 -> rows [1/2, 1/2].
    # Per row: 1/2 ln((1/2)/(2/3)) + 1/2 ln((1/2)/(1/3)) = 1/2 ln(9/8) ~= 0.058892;
    # sum of the 4 entries = 0.117783; mean over B^2 = 4 entries = 0.0294458.
    # (A row sum averaged over rows would be 0.058892.)
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    value = pkt(student, teacher)
    assert value.item() == pytest.approx(2 * 0.5 * math.log(9 / 8) / 4, abs=1e-6)
    assert value.item() != pytest.approx(0.5 * math.log(9 / 8), abs=1e-4)


# ---------------------------------------------------------------------------------------------
# Graph: irg.
# ---------------------------------------------------------------------------------------------


def test_irg_hand_value():
    # Edges: squared distances, teacher TRIANGLE_345: 9, 16, 25 / max 25 -> 0.36, 0.64, 1.
    #   Student EQUILATERAL: 1, 1, 1 / 1 -> 1. Squared differences 0.4096, 0.1296, 0, each pair
    #   twice (diagonal 0 in both): 2 * 0.5392 = 1.0784 over B^2 = 9 entries -> 0.119822.
    # Vertex on logits: student [[1,2],[3,4],[0,0]] vs zeros: (1 + 4 + 9 + 16) / 6 = 5.
    s_logits = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    t_logits = torch.zeros(3, 2)
    edge = 2 * (0.64**2 + 0.36**2) / 9
    assert irg(EQUILATERAL, TRIANGLE_345, s_logits, t_logits).item() == pytest.approx(5.0 + edge, abs=1e-6)
    assert irg(EQUILATERAL, TRIANGLE_345, s_logits, t_logits, w_vertex=0.0).item() == pytest.approx(edge, abs=1e-6)
    assert irg(EQUILATERAL, TRIANGLE_345, s_logits, t_logits, w_vertex=2.0, w_edge=0.0).item() == pytest.approx(10.0)
    # Without logits the vertex term compares the embeddings: a shift of 1 in every coordinate
    # gives MSE 1 and leaves the edges unchanged.
    assert irg(TRIANGLE_345 + 1.0, TRIANGLE_345).item() == pytest.approx(1.0, abs=1e-6)


def test_irg_edge_is_normalised_by_its_maximum():
    student, teacher, _ = CASES["irg"]()
    base = irg(student, teacher, w_vertex=0.0).item()
    assert base > 0
    assert irg(student * 10, teacher, w_vertex=0.0).item() == pytest.approx(base, rel=1e-5)
    assert irg(student, teacher * 0.01, w_vertex=0.0).item() == pytest.approx(base, rel=1e-5)
    # Edge only: the widths may differ.
    assert irg(student, torch.cat([teacher, teacher], 1), w_vertex=0.0).item() == pytest.approx(base, rel=1e-5)


def test_irg_needs_both_logits_or_neither():
    with pytest.raises(ValueError, match="both"):
        irg(EQUILATERAL, TRIANGLE_345, student_logits=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="vertex"):
        irg(torch.zeros(3, 4), TRIANGLE_345)  # embedding widths differ and no logits


# ---------------------------------------------------------------------------------------------
# Registry.
# ---------------------------------------------------------------------------------------------

EXPECTED = {
    # name: (function, category, consumes, needs labels, default weight)
    "kd": (kd, "response", "logits", False, 0.9),
    "dkd": (dkd, "response", "logits", True, 1.0),
    "dist": (dist, "response", "logits", False, 1.0),
    "fitnet": (fitnet, "feature", "features", False, 100.0),
    "attention_transfer": (attention_transfer, "attention", "features", False, 1000.0),
    "attention_distribution": (attention_distribution, "attention", "attention", False, 1.0),
    "rkd_distance": (rkd_distance, "relation", "embeddings", False, 25.0),
    "rkd_angle": (rkd_angle, "relation", "embeddings", False, 50.0),
    "similarity_preserving": (similarity_preserving, "relation", "features", False, 3000.0),
    "pkt": (pkt, "relation", "embeddings", False, 30000.0),
    "irg": (irg, "graph", "embeddings", False, 1.0),
}


def test_registry_lists_every_loss_with_its_category():
    assert set(LOSSES) == set(EXPECTED)
    for name, (fn, category, consumes, needs_labels, weight) in EXPECTED.items():
        info = LOSSES[name]
        assert isinstance(info, LossInfo)
        assert info.name == name
        assert info.fn is fn
        assert (info.category, info.consumes, info.needs_labels, info.default_weight) == (
            category,
            consumes,
            needs_labels,
            weight,
        ), name


def test_registry_hyperparameters_match_the_signatures():
    tensor_params = {"student_logits", "teacher_logits", "target"}
    for name, info in LOSSES.items():
        params = list(inspect.signature(info.fn).parameters.values())
        # The first two parameters are the student's and the teacher's tensors, in that order.
        assert params[0].name.startswith("student_") and params[1].name.startswith("teacher_"), name
        defaults = {
            p.name: p.default
            for p in params[2:]
            if p.default is not inspect.Parameter.empty and p.name not in tensor_params
        }
        assert dict(info.hyperparameters) == defaults, name
        assert ("target" in inspect.signature(info.fn).parameters) == info.needs_labels, name


def test_registry_entries_are_frozen():
    info = LOSSES["kd"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.default_weight = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        info.hyperparameters["temperature"] = 1.0  # type: ignore[index]
    with pytest.raises(ValueError, match="category"):
        LossInfo("x", kd, "nonsense", "logits", False, 1.0, {})  # type: ignore[arg-type]


def test_module_imports_no_search_backend():
    tree = ast.parse(inspect.getsource(kf))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"optuna", "ray"}
