"""Distillation losses as pure functions: student tensor first, teacher tensor second,
published defaults as keyword arguments, a scalar out.

The teacher's tensor is detached inside each loss, so no gradient can reach the teacher
whatever the caller passes. ``LOSSES`` describes every loss (category, inputs, labels, default
weight and hyperparameters) for the code that validates and assembles study files.
Formulas, defaults and pitfalls: ``shared/research/kd-losses.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, get_args

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


# ---------------------------------------------------------------------------------------------
# Helpers shared by the losses below.
# ---------------------------------------------------------------------------------------------

# Added to denominators that may be zero (a constant row/column, a batch of coincident points)
# so that degenerate batches give a finite loss instead of NaN in a search loop.
_EPS = 1e-8


def _flatten_batch(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, D): relation and graph losses compare samples, not positions."""
    if x.ndim < 1:
        raise ValueError(f"expected a (B, ...) tensor, got a scalar of shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def _check_same_batch(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"{what}: student and teacher batch sizes differ: {student.shape[0]} vs {teacher.shape[0]}")


def _check_same_shape(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"{what}: student and teacher shapes differ: {tuple(student.shape)} vs {tuple(teacher.shape)}")


def _squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances of the rows of ``x`` (B, D) -> (B, B).

    Uses ||a||^2 + ||b||^2 - 2 a.b, which needs O(B^2) memory instead of the O(B^2 D) of
    broadcasting differences; rounding can make it slightly negative, hence the clamp at 0, and
    it leaves tiny non-zero values on the diagonal, which are set to exactly 0.
    """
    sq_norms = x.pow(2).sum(dim=1)
    d2 = sq_norms.unsqueeze(0) + sq_norms.unsqueeze(1) - 2.0 * (x @ x.t())
    d2 = d2.clamp(min=0.0)
    off_diagonal = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return d2 * off_diagonal


def _pearson(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim``: cosine of the centred vectors.

    A zero-variance vector gives correlation 0 (via the epsilon) rather than NaN.
    """
    a_c = a - a.mean(dim=dim, keepdim=True)
    b_c = b - b.mean(dim=dim, keepdim=True)
    cov = (a_c * b_c).sum(dim=dim)
    return cov / (a_c.norm(dim=dim) * b_c.norm(dim=dim) + _EPS)


# ---------------------------------------------------------------------------------------------
# Response-based losses (logits).
# ---------------------------------------------------------------------------------------------


def dkd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Decoupled knowledge distillation (Zhao et al., CVPR 2022): ``alpha*TCKD + beta*NCKD``.

    Unlike ``kd``, this loss needs the ground-truth labels: they pick the target class that
    splits the KD term into two parts.

    With p = softmax(z / T) and g the target class of a sample:

    * TCKD = T^2 * KL(b_t || b_s), b = [p_g, 1 - p_g] (the binary target / non-target split);
    * NCKD = T^2 * KL(q_t || q_s), q = softmax over the non-target classes only
      (q_c = p_c / (1 - p_g), c != g). The paper's code masks the target logit by subtracting
      1000 before the softmax; here the target column is removed instead, which is the exact
      limit of that trick and does not depend on how large the logits are.

    Both KL terms are summed over their bins and divided by B ("batchmean"). The paper warms
    the whole term up linearly over the first epochs; that schedule belongs to the caller.

    Args:
        student_logits: (B, C) logits of the student, C >= 2.
        teacher_logits: (B, C) logits of the teacher (detached here).
        target: (B,) integer class labels in [0, C).
        alpha: weight of TCKD.
        beta: weight of NCKD (the paper's default 8 for CIFAR-100).
        temperature: softening temperature T > 0.

    Returns:
        The scalar loss ``alpha * TCKD + beta * NCKD``.
    """
    _check_same_shape(student_logits, teacher_logits, "dkd")
    if student_logits.ndim != 2:
        raise ValueError(f"dkd: expected (B, C) logits, got shape {tuple(student_logits.shape)}")
    batch, classes = student_logits.shape
    if classes < 2:
        raise ValueError(f"dkd: needs at least 2 classes, got {classes}")
    target = target.reshape(-1).long()
    if target.shape[0] != batch:
        raise ValueError(f"dkd: {target.shape[0]} labels for a batch of {batch}")

    is_target = F.one_hot(target, classes).bool()

    def split(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = logits / temperature
        log_p = F.log_softmax(z, dim=1)
        # Non-target logits as a (B, C-1) tensor: boolean indexing keeps row-major order.
        z_other = z[~is_target].reshape(batch, classes - 1)
        log_p_target = log_p[is_target]
        # log(1 - p_g) = logsumexp(non-target z) - logsumexp(all z): exact, no log(0) when
        # p_g rounds to 1, unlike computing 1 - p_g in probability space.
        log_p_other = torch.logsumexp(z_other, dim=1) - torch.logsumexp(z, dim=1)
        log_binary = torch.stack([log_p_target, log_p_other], dim=1)
        log_non_target = F.log_softmax(z_other, dim=1)
        return log_binary, log_non_target

    s_binary, s_non_target = split(student_logits)
    t_binary, t_non_target = split(teacher_logits.detach())
    # kl_div(input=log q, target=log p, log_target=True) = KL(p || q): teacher is p.
    tckd = F.kl_div(s_binary, t_binary, reduction="batchmean", log_target=True)
    nckd = F.kl_div(s_non_target, t_non_target, reduction="batchmean", log_target=True)
    return (alpha * tckd + beta * nckd) * temperature**2


def dist(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """DIST, distillation from a stronger teacher (Huang et al., NeurIPS 2022).

    Matches correlations instead of exact probabilities. With y = softmax(z / tau) of shape
    (B, C) and rho the Pearson correlation:

        inter = 1 - mean_i rho(y_s[i, :], y_t[i, :])   (inter-class relation, per sample)
        intra = 1 - mean_c rho(y_s[:, c], y_t[:, c])   (intra-class relation, per class)
        loss  = tau^2 * (beta * inter + gamma * intra)

    A zero-variance row or column (e.g. every class's column when B = 1) counts as correlation
    0, so such a batch gives intra = 1 rather than NaN.

    Args:
        student_logits: (B, C) logits of the student.
        teacher_logits: (B, C) logits of the teacher (detached here).
        beta: weight of the inter-class term.
        gamma: weight of the intra-class term.
        temperature: softening temperature tau > 0.

    Returns:
        The scalar loss.
    """
    _check_same_shape(student_logits, teacher_logits, "dist")
    if student_logits.ndim != 2:
        raise ValueError(f"dist: expected (B, C) logits, got shape {tuple(student_logits.shape)}")
    y_s = F.softmax(student_logits / temperature, dim=1)
    y_t = F.softmax(teacher_logits.detach() / temperature, dim=1)
    inter = 1.0 - _pearson(y_s, y_t, dim=1).mean()
    intra = 1.0 - _pearson(y_s, y_t, dim=0).mean()
    return temperature**2 * (beta * inter + gamma * intra)


# ---------------------------------------------------------------------------------------------
# Feature-based losses.
# ---------------------------------------------------------------------------------------------


def fitnet(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """FitNets hint loss (Romero et al., ICLR 2015): ``MSE(r(F_s), F_t)``.

    The trainable regressor r (a 1x1 conv or linear adapter that maps the student's width to
    the teacher's) is a module with parameters, so it lives outside this pure function: the
    caller passes the already-adapted student features r(F_s), and trains r with the student.

    Args:
        student_features: adapted student features, any shape equal to the teacher's.
        teacher_features: teacher features (detached here).

    Returns:
        The mean of the squared differences over all elements.
    """
    _check_same_shape(student_features, teacher_features, "fitnet")
    return F.mse_loss(student_features, teacher_features.detach())


# ---------------------------------------------------------------------------------------------
# Attention-based losses.
# ---------------------------------------------------------------------------------------------


def _spatial_attention(features: torch.Tensor, p: float) -> torch.Tensor:
    """mean_c F^p: (B, C, L) -> (B, L) or (B, C, H, W) -> (B, H, W), before normalisation."""
    # F^p, not |F|^p: with an odd p the sign of a negative activation is kept (pitfall 4).
    # A non-integer p on negative values yields NaN: use such p on post-ReLU features only.
    return features.pow(p).mean(dim=1)


def attention_transfer(student_features: torch.Tensor, teacher_features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Activation-based attention transfer (Zagoruyko & Komodakis, ICLR 2017), one layer pair.

    a(F) = normalize_L2(flatten(mean_c F^p)) per sample; loss = mean over B*HW of
    (a_s - a_t)^2 (the reference code's convention, which is why its weight is ~1000).
    Sum the results over paired layers outside.

    The channel counts may differ. When the spatial sizes differ, the larger attention map
    (mean_c F^p) is reduced to the smaller one's size by adaptive average pooling, per
    spatial dimension, before the normalisation. Pooling the map rather than the features keeps
    the statistic a mean of F^p (pooling F first would compute (mean F)^p instead).

    Args:
        student_features: (B, C_s, L_s) or (B, C_s, H_s, W_s) student activations.
        teacher_features: (B, C_t, L_t) or (B, C_t, H_t, W_t) teacher activations (detached).
        p: the power applied elementwise, F^p (not |F|^p).

    Returns:
        The scalar loss.
    """
    _check_same_batch(student_features, teacher_features, "attention_transfer")
    if student_features.ndim != teacher_features.ndim or student_features.ndim not in (3, 4):
        raise ValueError(
            "attention_transfer: expected two (B, C, L) or two (B, C, H, W) tensors, got shapes "
            f"{tuple(student_features.shape)} and {tuple(teacher_features.shape)}"
        )
    a_s = _spatial_attention(student_features, p)
    a_t = _spatial_attention(teacher_features.detach(), p)
    if a_s.shape != a_t.shape:
        size = tuple(min(s, t) for s, t in zip(a_s.shape[1:], a_t.shape[1:]))
        pool: Callable[..., torch.Tensor] = F.adaptive_avg_pool1d if a_s.ndim == 2 else F.adaptive_avg_pool2d
        # The pooling functions want a channel axis: add a singleton one and drop it again.
        if tuple(a_s.shape[1:]) != size:
            a_s = pool(a_s.unsqueeze(1), size).squeeze(1)
        if tuple(a_t.shape[1:]) != size:
            a_t = pool(a_t.unsqueeze(1), size).squeeze(1)
    a_s = F.normalize(a_s.flatten(1), p=2.0, dim=1)
    a_t = F.normalize(a_t.flatten(1), p=2.0, dim=1)
    return (a_s - a_t).pow(2).mean()


def attention_distribution(student_attn: torch.Tensor, teacher_attn: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Self-attention distribution transfer for transformers: KL(A_t || A_s) per query row.

    The attention-map term of MiniLM (Wang et al., NeurIPS 2020) and TinyBERT (Jiao et al.,
    2020): for each (sample, head, query) the attention row is a distribution over keys, and

        loss = (1 / (B * heads * L_q)) * sum_rows sum_k A_t log((A_t + eps) / (A_s + eps))

    i.e. the tensors are flattened to (B*heads*L_q, L_k) rows and reduced "batchmean" over
    those rows. The inputs are probabilities (rows sum to 1), not scores; eps keeps log(0)
    finite for masked keys.

    When the head counts differ, both tensors are averaged over their heads first (each
    becomes one mean attention distribution per query, which is still a distribution), and the
    rows are then B*L_q.

    Args:
        student_attn: (B, H_s, L_q, L_k) student attention probabilities, or (B, L_q, L_k).
        teacher_attn: (B, H_t, L_q, L_k) teacher attention probabilities (detached here).
        eps: added inside both logarithms.

    Returns:
        The scalar loss.
    """
    s, t = student_attn, teacher_attn.detach()
    # A (B, L_q, L_k) tensor is one head.
    s = s.unsqueeze(1) if s.ndim == 3 else s
    t = t.unsqueeze(1) if t.ndim == 3 else t
    if s.ndim != 4 or t.ndim != 4:
        raise ValueError(
            "attention_distribution: expected (B, heads, L_q, L_k) tensors, got shapes "
            f"{tuple(student_attn.shape)} and {tuple(teacher_attn.shape)}"
        )
    if s.shape[1] != t.shape[1]:
        s = s.mean(dim=1, keepdim=True)
        t = t.mean(dim=1, keepdim=True)
    _check_same_shape(s, t, "attention_distribution")
    s = s.reshape(-1, s.shape[-1])
    t = t.reshape(-1, t.shape[-1])
    kl_rows = (t * (torch.log(t + eps) - torch.log(s + eps))).sum(dim=1)
    return kl_rows.mean()


# ---------------------------------------------------------------------------------------------
# Relation-based losses (embeddings (B, ...) flattened to (B, D)).
# ---------------------------------------------------------------------------------------------


def _normalised_distances(emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distance matrix divided by its mean over the B(B-1) pairs i != j."""
    # Clamp before the sqrt: sqrt'(0) is infinite, which would turn the zero diagonal's
    # gradient into NaN (0 * inf).
    d = _squared_distances(emb).clamp(min=1e-12).sqrt()
    off_diagonal = ~torch.eye(emb.shape[0], dtype=torch.bool, device=emb.device)
    d = d * off_diagonal
    n_pairs = emb.shape[0] * (emb.shape[0] - 1)
    # The diagonal (a sample with itself, always 0) is not a pair: it is left out of the mean.
    mean = d.sum() / n_pairs
    # clamp, not "+ eps": the ratio stays exactly scale-invariant; eps only guards a batch of
    # coincident points.
    return d / mean.clamp(min=_EPS)


def rkd_distance(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Distance-wise relational KD (Park et al., CVPR 2019), RKD-D.

    psi_D(t_i, t_j) = ||t_i - t_j||_2 / mu, mu = mean of ||t_i - t_j|| over the pairs i != j,
    computed separately for the student and the teacher (the teacher's without gradient);
    loss = mean over the pairs i != j of smooth_L1(psi_D(s_i, s_j) - psi_D(t_i, t_j))
    (Huber with delta = 1). The paper sums over the set of pairs with i != j; the mean over the
    same set is used here, so the zero diagonal counts neither in mu nor in the mean.
    Squared distances are clamped at 1e-12 before the square root.

    Invariant to scaling either embedding. The dimensions D_s and D_t may differ.

    Args:
        student_emb: (B, ...) student embeddings, flattened to (B, D_s).
        teacher_emb: (B, ...) teacher embeddings (detached here), flattened to (B, D_t).

    Returns:
        The scalar loss; 0 (still attached to the student's graph) when B < 2.
    """
    _check_same_batch(student_emb, teacher_emb, "rkd_distance")
    s = _flatten_batch(student_emb)
    t = _flatten_batch(teacher_emb.detach())
    batch = s.shape[0]
    if batch < 2:
        return s.sum() * 0.0  # no pair: a zero that backward() accepts
    d_s = _normalised_distances(s)
    d_t = _normalised_distances(t)
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=s.device)
    return F.smooth_l1_loss(d_s[off_diagonal], d_t[off_diagonal], reduction="mean")


def _angle_cosines(emb: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B, B) with [j, i, k] = cos of the angle at e_j between e_i and e_k."""
    # diff[j, i] = e_i - e_j, unit length (a zero difference stays zero through normalize's eps).
    diff = F.normalize(emb.unsqueeze(0) - emb.unsqueeze(1), p=2.0, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2))


def rkd_angle(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Angle-wise relational KD (Park et al., CVPR 2019), RKD-A.

    psi_A(t_i, t_j, t_k) = cos angle(t_i t_j t_k) = <e_ij, e_kj>, e_ij = (t_i - t_j) / ||t_i - t_j||;
    loss = mean over the triplets of distinct indices (i, j, k) of
    smooth_L1(psi_A(s_i, s_j, s_k) - psi_A(t_i, t_j, t_k)) (Huber with delta = 1).
    Triplets with a repeated index carry no angle (i = j or k = j) or a trivial one (i = k,
    cos = 1 for both networks), so, as in the paper's set of triplets, they are left out of the
    mean. Memory is O(B^2 D).

    Args:
        student_emb: (B, ...) student embeddings, flattened to (B, D_s).
        teacher_emb: (B, ...) teacher embeddings (detached here), flattened to (B, D_t).

    Returns:
        The scalar loss; 0 (still attached to the student's graph) when B < 3.
    """
    _check_same_batch(student_emb, teacher_emb, "rkd_angle")
    s = _flatten_batch(student_emb)
    t = _flatten_batch(teacher_emb.detach())
    batch = s.shape[0]
    if batch < 3:
        return s.sum() * 0.0  # no triplet of distinct samples
    idx = torch.arange(batch, device=s.device)
    j, i, k = torch.meshgrid(idx, idx, idx, indexing="ij")
    distinct = (i != j) & (k != j) & (i != k)
    cos_s = _angle_cosines(s)[distinct]
    cos_t = _angle_cosines(t)[distinct]
    return F.smooth_l1_loss(cos_s, cos_t, reduction="mean")


def _similarity_matrix(x: torch.Tensor) -> torch.Tensor:
    """Row-L2-normalised Gram matrix f f^T of (B, D) features, (B, B)."""
    return F.normalize(x @ x.t(), p=2.0, dim=1)


def similarity_preserving(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori, ICCV 2019).

    G = row_normalize_L2(f f^T) with f the (B, D) flattened features, for each network;
    loss = ||G_t - G_s||_F^2 / B^2. Channel counts and spatial sizes may differ: only the
    B x B similarities are compared. Sum over layer pairs outside.

    Args:
        student_features: (B, ...) student features, flattened to (B, D_s).
        teacher_features: (B, ...) teacher features (detached here), flattened to (B, D_t).

    Returns:
        The scalar loss.
    """
    _check_same_batch(student_features, teacher_features, "similarity_preserving")
    g_s = _similarity_matrix(_flatten_batch(student_features))
    g_t = _similarity_matrix(_flatten_batch(teacher_features.detach()))
    batch = g_s.shape[0]
    return (g_t - g_s).pow(2).sum() / batch**2


def _pkt_kernel(x: torch.Tensor) -> torch.Tensor:
    """(cos_sim + 1) / 2 of the rows of (B, D) x, each row then scaled to sum to 1."""
    x = F.normalize(x, p=2.0, dim=1)
    k = (x @ x.t() + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


def pkt(student_emb: torch.Tensor, teacher_emb: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018), cosine kernel.

    K_ij = (cos(f_i, f_j) + 1) / 2 on L2-normalised embeddings, each row normalised to sum 1
    (the conditional probability of picking j as i's neighbour); loss = mean over the B^2
    entries of K_t log((K_t + eps) / (K_s + eps)) (a mean over entries, not a sum over rows,
    hence the large default weight 30000).

    Args:
        student_emb: (B, ...) student embeddings, flattened to (B, D_s).
        teacher_emb: (B, ...) teacher embeddings (detached here), flattened to (B, D_t).
        eps: added inside the logarithm's ratio.

    Returns:
        The scalar loss.
    """
    _check_same_batch(student_emb, teacher_emb, "pkt")
    k_s = _pkt_kernel(_flatten_batch(student_emb))
    k_t = _pkt_kernel(_flatten_batch(teacher_emb.detach()))
    return (k_t * torch.log((k_t + eps) / (k_s + eps))).mean()


# ---------------------------------------------------------------------------------------------
# Graph-based losses.
# ---------------------------------------------------------------------------------------------


def irg(
    student_emb: torch.Tensor,
    teacher_emb: torch.Tensor,
    student_logits: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    w_vertex: float = 1.0,
    w_edge: float = 1.0,
) -> torch.Tensor:
    """Instance relationship graph KD (Liu et al., CVPR 2019), vertex and edge terms.

    Vertices are the samples, edges their pairwise squared Euclidean distances:

        vertex = MSE(z_s, z_t) on the logits when both are given, else on the embeddings
        edge   = MSE(A_s / max A_s, A_t / max A_t), A_ij = ||f_i - f_j||_2^2 (B x B)
        loss   = w_vertex * vertex + w_edge * edge

    The edge MSE averages over all B^2 entries (the diagonal is 0 in both matrices). Dividing
    by the maximum makes the edge term invariant to scaling either embedding. The paper's
    transformation loss (changes of the graph between layers) is not included.

    Args:
        student_emb: (B, ...) student embeddings, flattened to (B, D_s).
        teacher_emb: (B, ...) teacher embeddings (detached here), flattened to (B, D_t); D_s
            must equal D_t when the vertex term uses the embeddings (no logits, w_vertex != 0).
        student_logits: optional (B, C) student logits for the vertex term.
        teacher_logits: optional (B, C) teacher logits (detached here); give both or neither.
        w_vertex: weight of the vertex term.
        w_edge: weight of the edge term.

    Returns:
        The scalar loss.
    """
    _check_same_batch(student_emb, teacher_emb, "irg")
    if (student_logits is None) != (teacher_logits is None):
        raise ValueError("irg: pass both student_logits and teacher_logits, or neither")
    s = _flatten_batch(student_emb)
    t = _flatten_batch(teacher_emb.detach())
    if w_vertex == 0.0:
        # Edge-only use: embeddings of different widths are then fine.
        vertex = s.new_zeros(())
    elif student_logits is not None and teacher_logits is not None:
        _check_same_shape(student_logits, teacher_logits, "irg logits")
        vertex = F.mse_loss(student_logits, teacher_logits.detach())
    else:
        _check_same_shape(s, t, "irg embeddings (vertex term without logits)")
        vertex = F.mse_loss(s, t)
    a_s = _squared_distances(s)
    a_t = _squared_distances(t)
    # clamp: a batch of identical samples has max 0; its (all-zero) matrix then stays zero.
    edge = F.mse_loss(a_s / a_s.max().clamp(min=_EPS), a_t / a_t.max().clamp(min=_EPS))
    return w_vertex * vertex + w_edge * edge


# ---------------------------------------------------------------------------------------------
# Registry.
# ---------------------------------------------------------------------------------------------

Category = Literal["response", "feature", "attention", "relation", "graph"]
"""Where a loss sits in the usual survey taxonomy of distillation methods."""

Consumes = Literal["logits", "features", "embeddings", "attention"]
"""What the student and teacher tensors are: logits (B, C), intermediate feature maps
(B, C, ...), per-sample embeddings (B, ...) or attention probabilities (B, heads, L_q, L_k)."""

CATEGORIES: tuple[str, ...] = get_args(Category)
CONSUMES: tuple[str, ...] = get_args(Consumes)


@dataclass(frozen=True)
class LossInfo:
    """What a study file needs to know about one distillation loss.

    Attributes:
        name: the key in ``LOSSES`` (the study file's kind name).
        fn: the loss, ``fn(student, teacher, [target,] **hyperparameters) -> scalar``.
        category: survey category (response, feature, attention, relation, graph).
        consumes: the tensors it compares (logits, features, embeddings, attention).
        needs_labels: True when ``fn`` takes the ground-truth labels as its third argument.
        default_weight: the usual weight of the term in the total loss (kd-losses.md).
        hyperparameters: keyword hyperparameters of ``fn`` and their published defaults,
            read-only.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    category: Category
    consumes: Consumes
    needs_labels: bool
    default_weight: float
    hyperparameters: Mapping[str, float]

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"{self.name}: category must be one of {CATEGORIES}, got {self.category!r}")
        if self.consumes not in CONSUMES:
            raise ValueError(f"{self.name}: consumes must be one of {CONSUMES}, got {self.consumes!r}")
        # frozen only stops re-assigning the field: wrap the dict so it cannot be edited either.
        object.__setattr__(self, "hyperparameters", MappingProxyType(dict(self.hyperparameters)))


def _info(
    fn: Callable[..., torch.Tensor],
    category: Category,
    consumes: Consumes,
    default_weight: float,
    needs_labels: bool = False,
    **hyperparameters: float,
) -> LossInfo:
    return LossInfo(fn.__name__, fn, category, consumes, needs_labels, default_weight, hyperparameters)


LOSSES: dict[str, LossInfo] = {
    info.name: info
    for info in (
        _info(kd, "response", "logits", 0.9, temperature=4.0),
        _info(dkd, "response", "logits", 1.0, needs_labels=True, alpha=1.0, beta=8.0, temperature=4.0),
        _info(dist, "response", "logits", 1.0, beta=1.0, gamma=1.0, temperature=1.0),
        _info(fitnet, "feature", "features", 100.0),
        _info(attention_transfer, "attention", "features", 1000.0, p=2.0),
        _info(attention_distribution, "attention", "attention", 1.0, eps=1e-8),
        _info(rkd_distance, "relation", "embeddings", 25.0),
        _info(rkd_angle, "relation", "embeddings", 50.0),
        _info(similarity_preserving, "relation", "features", 3000.0),
        _info(pkt, "relation", "embeddings", 30000.0, eps=1e-7),
        # Embeddings for the edges; optional logits (keyword tensors) for the vertices.
        _info(irg, "graph", "embeddings", 1.0, w_vertex=1.0, w_edge=1.0),
    )
}
"""Every loss in this module by kind name (treat as read-only)."""
