"""DeepInversion: synthesized sets that match the teacher's BatchNorm statistics and classes, with
the teacher left exactly as it was, deterministic from the seed, and a content key for the cache."""

from __future__ import annotations

import dataclasses

import helpers_torch
import pytest
import torch
from torch import nn

from naskd.config import DataConfig, DistillConfig, SynthesisConfig
from naskd.data import load_data
from naskd.distill import Scratch, train
from naskd.synthesis import NoBatchNorm, batchnorm_layers, synthesis_key, synthesize
from naskd.teacher import _ConvTeacher

SMALL = SynthesisConfig(samples=64, batch_size=32, iterations=100)
TINY = SynthesisConfig(samples=10, batch_size=4, iterations=5)

one_torch_thread = helpers_torch.one_torch_thread  # autouse: one torch thread for this module


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    """A small conv teacher with BatchNorm, trained briefly on MNIST-1D (inputs (1, 40), 10 classes)."""
    data = load_data(DataConfig(dataset="mnist1d"))
    torch.manual_seed(0)
    model = _ConvTeacher(dims=1, channels=[16, 32], in_shape=(1, 40), num_classes=10)
    train(Scratch(model), data.x_train, data.y_train, DistillConfig(epochs=3, batch_size=100, lr=1e-2))
    return model.eval()


def _conv2d_teacher() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 5)
    ).eval()


def _flat_teacher() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4)).eval()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_untouched(model: nn.Module, before: dict[str, torch.Tensor], modes: list[bool], flags: list[bool]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_synthesized_set_matches_the_batchnorm_statistics_and_the_targets(teacher):
    x, y, stats = synthesize(teacher, (1, 40), 10, SMALL)
    assert stats["bn_loss_last"] < 0.3 * stats["bn_loss_first"], stats
    assert stats["teacher_accuracy"] > 0.9, stats
    # The reported accuracy is the teacher's on what was returned.
    with torch.no_grad():
        share = (teacher(x).argmax(dim=1) == y).float().mean().item()
    assert share == pytest.approx(stats["teacher_accuracy"])
    assert stats["seconds"] > 0
    # Measured here with a hook of our own: the first BatchNorm layer's input statistics are
    # much closer to its running ones on the set than on the noise it started from.
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert _first_bn_distance(teacher, x) < 0.3 * _first_bn_distance(teacher, noise)


def _first_bn_distance(model: nn.Module, x: torch.Tensor) -> float:
    layer = batchnorm_layers(model)[0][1]
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    h = seen[0]
    return float(
        (h.mean(dim=(0, 2)) - layer.running_mean).norm()
        + (h.var(dim=(0, 2), unbiased=False) - layer.running_var).norm()
    )


def test_teacher_without_batchnorm_is_refused_in_one_line():
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    calls: list[int] = []
    with pytest.raises(NoBatchNorm) as info:
        synthesize(mlp, (16,), 4, TINY, where="teacher 'mine'", progress=calls.append)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("teacher 'mine': has no BatchNorm layer")
    assert '[data] transfer = "real"' in message
    assert calls == []
    # BatchNorm without running statistics has nothing to match either.
    stateless = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32, track_running_stats=False), nn.Linear(32, 4))
    assert batchnorm_layers(stateless) == []
    with pytest.raises(NoBatchNorm):
        synthesize(stateless, (16,), 4, TINY)


@pytest.mark.parametrize("mode", ["eval", "train", "mixed"])
def test_teacher_is_left_exactly_as_it_was(mode):
    model = _conv2d_teacher().train(mode != "eval")
    if mode == "mixed":
        model[1].eval()  # each module's mode is restored, not the top one's given to all
    model[0].bias.requires_grad_(False)  # each flag is restored, not all set to True
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    before = _state(model)
    synthesize(model, (3, 8, 8), 5, TINY)
    _assert_untouched(model, before, modes, flags)


def test_teacher_is_left_as_it_was_after_an_error_mid_way():
    model = _flat_teacher()
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    before = _state(model)

    def stop(done: int) -> None:
        raise KeyboardInterrupt(f"stopped after {done}")

    with pytest.raises(KeyboardInterrupt, match="stopped after 4"):
        synthesize(model, (16,), 4, TINY, progress=stop)
    _assert_untouched(model, before, modes, flags)


def test_same_seed_same_set_and_global_rng_untouched():
    model = _conv2d_teacher()
    rng = torch.get_rng_state()
    x1, y1, _ = synthesize(model, (3, 8, 8), 5, TINY)
    x2, y2, _ = synthesize(model, (3, 8, 8), 5, TINY)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, y3, _ = synthesize(model, (3, 8, 8), 5, dataclasses.replace(TINY, seed=1))
    assert not torch.equal(x1, x3) and not torch.equal(y1, y3)


@pytest.mark.parametrize("make, shape, classes", [(_conv2d_teacher, (3, 8, 8), 5), (_flat_teacher, (16,), 4)])
def test_2d_and_flat_inputs_give_balanced_sets_of_the_right_shape(make, shape, classes):
    cfg = dataclasses.replace(TINY, samples=20, batch_size=8)  # batches of 8, 8, 4
    done: list[int] = []
    x, y, stats = synthesize(make(), shape, classes, cfg, progress=done.append)
    assert x.shape == (20, *shape) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert y.shape == (20,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=classes).tolist() == [20 // classes] * classes
    assert not torch.equal(y, torch.arange(20) % classes)  # shuffled, so no batch is one class run
    assert done == [8, 16, 20]
    assert torch.isfinite(x).all()
    assert {"bn_loss_first", "bn_loss_last", "teacher_accuracy", "seconds"} <= stats.keys()
    assert stats["bn_loss_last"] < stats["bn_loss_first"]


def _changed(value: object) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return value * 2 + 1.0


def test_synthesis_key_names_every_input():
    base = synthesis_key("abc", (1, 40), 10, SynthesisConfig())
    assert base == synthesis_key("abc", [1, 40], 10, SynthesisConfig())
    assert len(base) == 16 and int(base, 16) >= 0
    keys = {base}
    for f in dataclasses.fields(SynthesisConfig):
        cfg = dataclasses.replace(SynthesisConfig(), **{f.name: _changed(getattr(SynthesisConfig(), f.name))})
        keys.add(synthesis_key("abc", (1, 40), 10, cfg))
    keys |= {
        synthesis_key("abd", (1, 40), 10, SynthesisConfig()),
        synthesis_key("abc", (1, 41), 10, SynthesisConfig()),
        synthesis_key("abc", (1, 40), 9, SynthesisConfig()),
    }
    assert len(keys) == len(dataclasses.fields(SynthesisConfig)) + 4
