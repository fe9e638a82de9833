"""Tests for naskd.measure: parameter and FLOP counts by hand, latency on real torch models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from naskd.errors import NaskdError
from naskd.measure import (
    Cost,
    Latency,
    count_flops,
    count_params,
    measure_cost,
    measure_latency,
)

FAST = {"warmup": 2, "repeats": 10}


def conv_net(width: int) -> nn.Module:
    """A net whose counted FLOPs are exactly linear in ``width`` (no width x width layer)."""
    return nn.Sequential(
        nn.Conv2d(3, width, kernel_size=3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 10),
    )


class Probe(nn.Module):
    """Records the conditions its forward runs under, to check what measure_latency sets."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.seen: list[tuple[int, bool, bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.get_num_threads(), self.training, torch.is_inference_mode_enabled(), x.shape[0]))
        return self.linear(x)


def test_count_params_by_hand() -> None:
    assert count_params(nn.Linear(10, 5)) == 10 * 5 + 5


def test_count_params_includes_frozen_and_excludes_buffers() -> None:
    model = nn.Sequential(nn.Linear(10, 5), nn.BatchNorm1d(5))
    model[0].requires_grad_(False)
    # Linear 55 + BatchNorm weight and bias 10; running stats are buffers.
    assert count_params(model) == 55 + 10


def test_count_params_shared_parameter_counts_once() -> None:
    layer = nn.Linear(3, 3)
    assert count_params(nn.Sequential(layer, layer)) == 12


def test_count_flops_linear_is_two_per_multiply_add() -> None:
    assert count_flops(nn.Linear(10, 5), (10,)) == 2 * 10 * 5


def test_count_flops_conv_net_by_hand_and_linear_in_width() -> None:
    h = w = 8
    flops = {width: count_flops(conv_net(width), (3, h, w)) for width in (4, 8, 16)}
    # Conv: 2 * C_in * k * k * C_out per output pixel; Linear: 2 * in * out.
    assert flops[4] == 2 * 3 * 3 * 3 * 4 * h * w + 2 * 4 * 10
    assert flops[8] == 2 * flops[4]
    assert flops[16] == 2 * flops[8]


def test_count_flops_independent_of_mode_and_mode_restored() -> None:
    model = conv_net(8)
    model.train()
    model[1].eval()  # a mixed-mode model: frozen BatchNorm inside a training model
    in_train = count_flops(model, (3, 8, 8))
    assert model.training and not model[1].training and model[3].training
    model.eval()
    in_eval = count_flops(model, (3, 8, 8))
    assert not model.training
    assert in_train == in_eval > 0


def test_latency_basic_properties_and_restores_state() -> None:
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    model.train()
    before = torch.get_num_threads()
    latency = measure_latency(model, (32,), threads=1, **FAST)
    assert isinstance(latency, Latency)
    assert latency.p95_ms >= latency.p50_ms > 0
    assert (latency.batch_size, latency.threads, latency.device) == (1, 1, "cpu")
    assert torch.get_num_threads() == before
    assert model.training
    assert next(model.parameters()).device.type == "cpu"


def test_latency_runs_under_requested_conditions() -> None:
    probe = Probe()
    wanted = 2 if torch.get_num_threads() != 2 else 1
    measure_latency(probe, (4,), batch_size=3, threads=wanted, warmup=1, repeats=4)
    assert len(probe.seen) == 1 + 4
    assert set(probe.seen) == {(wanted, False, True, 3)}
    assert probe.training


def test_latency_restores_threads_when_forward_raises() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        measure_latency(nn.Linear(4, 4), (5,), threads=before + 1, **FAST)  # wrong input size
    assert torch.get_num_threads() == before


def test_bigger_model_is_slower() -> None:
    big = nn.Sequential(*[nn.Linear(512, 512) for _ in range(8)])
    small = nn.Linear(8, 8)
    big_ms = measure_latency(big, (512,), batch_size=16, **FAST).p50_ms
    small_ms = measure_latency(small, (8,), batch_size=16, **FAST).p50_ms
    assert big_ms > 3 * small_ms


def test_latency_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(nn.Linear(2, 2), (2,), repeats=0)
    with pytest.raises(ValueError, match="invalid device"):
        measure_latency(nn.Linear(2, 2), (2,), device="not-a-device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    model = nn.Linear(2, 2)
    before = torch.get_num_threads()
    with pytest.raises(NaskdError, match="CUDA is not available"):
        measure_latency(model, (2,), device="cuda")
    assert torch.get_num_threads() == before
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_latency_moves_model_there_and_back() -> None:
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    latency = measure_latency(model, (64,), device="cuda", **FAST)
    assert latency.p95_ms >= latency.p50_ms > 0
    assert latency.device.startswith("cuda")
    assert next(model.parameters()).device.type == "cpu"


def test_measure_cost_combines_the_measurements() -> None:
    model = nn.Linear(10, 5)
    cost = measure_cost(model, (10,), **FAST)
    assert isinstance(cost, Cost)
    assert (cost.params, cost.flops) == (55, 100)
    assert cost.latency_p95_ms >= cost.latency_p50_ms > 0


class _SlowSpell(nn.Module):
    """Sleeps 5 ms on its first ``slow`` timed calls: a disturbed stretch of the measurement."""

    def __init__(self, slow: int, warmup: int) -> None:
        super().__init__()
        self.calls, self.slow, self.warmup = 0, slow, warmup

    def forward(self, x):
        self.calls += 1
        if self.warmup < self.calls <= self.warmup + self.slow:
            import time

            time.sleep(0.005)
        return x


def test_latency_p50_is_the_least_disturbed_block_and_p95_keeps_the_tail() -> None:
    # 100 calls in 5 blocks of 20, the first 80 slow: the median of all calls (5 ms) would report
    # the disturbance as the typical call; the one undisturbed block does not.
    latency = measure_latency(_SlowSpell(slow=80, warmup=2), (4,), warmup=2, repeats=100)
    assert latency.p50_ms < 1.0
    assert latency.p95_ms >= 5.0  # the disturbance is still in the tail


def test_model_bytes_is_the_saved_state_dicts_size():
    import io

    small, big = nn.Linear(8, 4), nn.Linear(256, 64)
    buffer = io.BytesIO()
    torch.save(small.state_dict(), buffer)
    assert measure_cost(small, (8,), warmup=1, repeats=3).model_bytes == buffer.getbuffer().nbytes
    grown = measure_cost(big, (256,), warmup=1, repeats=3).model_bytes - buffer.getbuffer().nbytes
    assert grown >= 4 * (256 * 64 + 64 - 8 * 4 - 4)  # at least the extra float32 weights
