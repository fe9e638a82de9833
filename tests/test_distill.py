"""The short distillation run: it learns, it is reproducible, cached teacher logits are exactly
the teacher's outputs, the teacher stays in eval mode, divergence is reported, and the step
count and loss weights are what the recipe says."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_torch import one_torch_thread  # noqa: F401  (autouse fixture)
from torch import nn

from naskd.config import DataConfig, DistillConfig
from naskd.data import Data, load_data
from naskd.distill import (
    RECIPE_KEYS,
    DistillResult,
    Diverged,
    Scratch,
    distill,
    make_optimizer,
    recipe_dict,
    recipe_from_dict,
    total_steps,
    train,
)
from naskd.scoring import predict, score

N_TRAIN = 320  # 400 synthetic samples, val_fraction 0.2


@pytest.fixture(scope="module")
def data() -> Data:
    d = load_data(DataConfig(dataset="synthetic", samples=400, shape=(16,), classes=4, seed=0))
    assert len(d.y_train) == N_TRAIN
    return d


def _student(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


@pytest.fixture(scope="module")
def teacher(data: Data) -> nn.Module:
    """A small trained teacher with BatchNorm (so train/eval mode changes its outputs)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 4))
    train(Scratch(model), data.x_train, data.y_train, DistillConfig(steps=100, alpha=0.0, batch_size=32, seed=1))
    model.zero_grad(set_to_none=True)
    model.eval()
    return model


@pytest.fixture(scope="module")
def teacher_logits(teacher: nn.Module, data: Data) -> torch.Tensor:
    with torch.no_grad():
        return teacher.eval()(data.x_train)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _recipe(**changes) -> DistillConfig:
    """The tests' recipe, built from scratch so that alpha/temperature shape the knowledge terms."""
    return DistillConfig(**{"steps": 60, "batch_size": 32, "lr": 3e-3, "seed": 0, **changes})


RECIPE = _recipe()


def test_distillation_lowers_the_loss_and_beats_chance(data, teacher_logits):
    student = _student()
    with torch.no_grad():
        before = score(predict(student, data.x_val), data.y_val)["accuracy"]
    result = distill(student, data.x_train, data.y_train, _recipe(steps=150), teacher_logits=teacher_logits)
    assert isinstance(result, DistillResult)
    assert result.steps == 150
    first, last = result.curve[0][1], result.curve[-1][1]
    assert last < 0.5 * first
    assert result.final_loss == last
    assert result.train_seconds > 0
    after = score(predict(student, data.x_val), data.y_val)["accuracy"]
    assert after > 0.6 > 0.25  # chance is 1/4
    assert after > before


def test_curve_points(data):
    result = train(Scratch(_student()), data.x_train, data.y_train, _recipe(steps=120))
    steps = [s for s, _ in result.curve]
    assert steps[0] == 0 and steps[-1] == 119
    assert steps == sorted(set(steps))
    assert steps[:3] == [0, 2, 4]  # every max(1, 120 // 50) = 2 steps


def test_same_seed_gives_bit_identical_weights(data, teacher_logits):
    runs = []
    for _ in range(2):
        student = _student(0)
        result = distill(student, data.x_train, data.y_train, RECIPE, teacher_logits=teacher_logits)
        runs.append((_state(student), result.curve))
    assert _same(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    # The recipe seed orders the batches: another seed, same initial weights, other result.
    student = _student(0)
    distill(student, data.x_train, data.y_train, _recipe(seed=1), teacher_logits=teacher_logits)
    assert not _same(runs[0][0], _state(student))


def test_on_rung_sees_every_rung_and_changes_nothing(data, teacher_logits):
    plain = _student()
    distill(plain, data.x_train, data.y_train, RECIPE, teacher_logits=teacher_logits)
    calls: list[tuple[int, int, float, bool, float]] = []
    watched = _student()

    def on_rung(rung: int, steps: int, seconds: float, state) -> bool:
        accuracy = score(predict(watched, data.x_val), data.y_val)["accuracy"]
        calls.append((rung, steps, seconds, watched.training, accuracy))
        return True

    result = distill(
        watched, data.x_train, data.y_train, RECIPE, teacher_logits=teacher_logits, rungs=(10, 30), on_rung=on_rung
    )
    assert [c[:2] for c in calls] == [(0, 10), (1, 30)] and result.steps == 60 and not result.stopped
    assert 0 < calls[0][2] < calls[1][2] <= result.train_seconds
    assert all(c[3] for c in calls)  # called in training mode, as the loop left it
    assert calls[-1][4] > 0.25  # learning by step 30 (chance is 1/4)
    # Scoring at rungs (eval mode, no grad) leaves the training bit-identical.
    assert _same(_state(plain), _state(watched))


def test_a_rung_that_says_no_stops_the_run_there(data, teacher_logits):
    student = _student()
    result = distill(
        student,
        data.x_train,
        data.y_train,
        RECIPE,
        teacher_logits=teacher_logits,
        rungs=(10, 30),
        on_rung=lambda rung, steps, seconds, state: rung == 0,
    )
    assert result.stopped and result.steps == 30 and not student.training
    # The stopped student is exactly the 30-step student.
    same = _student()
    distill(same, data.x_train, data.y_train, _recipe(steps=30), teacher_logits=teacher_logits)
    assert _same(_state(student), _state(same))


def _dropout_student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))


@pytest.mark.parametrize("knowledge", [None, ({"kind": "fitnet", "weight": 1.0},)])
def test_a_continued_run_ends_bit_identical_to_a_straight_one(data, teacher, teacher_logits, tmp_path, knowledge):
    """Weights, Adam moments, adapters (fitnet), batch order mid-epoch (rung at 15 of 10-step
    epochs), dropout's random stream: all carried over, through a checkpoint file."""
    from naskd.fidelity import CheckpointFile

    recipe = _recipe(knowledge=knowledge, ce_weight=0.1) if knowledge else RECIPE
    pairs = (("2", "1"),) if knowledge else ()  # teacher's and student's first ReLU
    straight = _dropout_student()
    torch.manual_seed(7)
    distill(straight, data.x_train, data.y_train, recipe, teacher_logits=teacher_logits, teacher=teacher, pairs=pairs)

    saved = CheckpointFile(tmp_path / "ckpt.pt")

    def save_and_stop(rung: int, steps: int, seconds: float, state) -> bool:
        saved.save(state())
        return False

    first = _dropout_student()
    torch.manual_seed(7)
    stopped = distill(
        first,
        data.x_train,
        data.y_train,
        recipe,
        teacher_logits=teacher_logits,
        teacher=teacher,
        pairs=pairs,
        rungs=(15,),
        on_rung=save_and_stop,
    )
    assert stopped.stopped and stopped.steps == 15
    torch.manual_seed(123)  # whatever the global generator holds now, the state restores it
    continued = _dropout_student()
    seen = []
    result = distill(
        continued,
        data.x_train,
        data.y_train,
        recipe,
        teacher_logits=teacher_logits,
        teacher=teacher,
        pairs=pairs,
        rungs=(15,),
        on_rung=lambda *args: seen.append(args[:2]) or True,
        resume=saved.load(),
    )
    assert seen == [(0, 15)]  # the rung it was saved at is judged again
    assert result.steps == 60 and result.train_seconds >= stopped.train_seconds
    assert _same(_state(straight), _state(continued))
    # Without the saved state the run differs: the comparison has teeth.
    fresh = _dropout_student()
    torch.manual_seed(123)
    distill(fresh, data.x_train, data.y_train, recipe, teacher_logits=teacher_logits, teacher=teacher, pairs=pairs)
    assert not _same(_state(straight), _state(fresh))


def test_a_damaged_checkpoint_is_reported_and_not_used(tmp_path, caplog):
    from naskd.fidelity import CheckpointFile

    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"not a checkpoint")
    assert CheckpointFile(path).load() is None
    assert "cannot be read" in caplog.text
    torch.save({"something": torch.zeros(2)}, path)
    assert CheckpointFile(path).load() is None
    assert "not a naskd training state" in caplog.text
    CheckpointFile(path).clear()
    assert not path.exists()


def test_cached_logits_and_live_teacher_train_the_same_student(data, teacher, teacher_logits):
    cached = _student()
    distill(cached, data.x_train, data.y_train, RECIPE, teacher_logits=teacher_logits)
    live = _student()
    distill(live, data.x_train, data.y_train, RECIPE, teacher=teacher)
    assert _same(_state(cached), _state(live))
    # Logits the teacher would not produce change the result: the comparison has teeth.
    shifted = _student()
    distill(shifted, data.x_train, data.y_train, RECIPE, teacher_logits=teacher_logits.roll(1, dims=0))
    assert not _same(_state(cached), _state(shifted))


def test_teacher_is_kept_in_eval_mode_and_untouched(data, teacher, teacher_logits):
    before = _state(teacher)
    teacher.train()  # as a careless caller might leave it
    student = _student()
    distill(student, data.x_train, data.y_train, RECIPE, teacher=teacher)
    assert not teacher.training
    after = _state(teacher)
    bn = "1."  # the BatchNorm layer
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(before[bn + name], after[bn + name]), name
    assert _same(before, after)
    assert all(p.grad is None for p in teacher.parameters())
    # Trained against the eval-mode teacher: same as the cached eval-mode logits.
    reference = _student()
    distill(reference, data.x_train, data.y_train, RECIPE, teacher_logits=teacher_logits)
    assert _same(_state(reference), _state(student))


def test_teacher_logits_win_over_a_live_teacher(data, teacher, teacher_logits):
    fake = torch.randn(teacher_logits.shape, generator=torch.Generator().manual_seed(9))
    both = _student()
    distill(both, data.x_train, data.y_train, RECIPE, teacher_logits=fake, teacher=teacher)
    only = _student()
    distill(only, data.x_train, data.y_train, RECIPE, teacher_logits=fake)
    assert _same(_state(both), _state(only))


def test_huge_learning_rate_raises_diverged(data, teacher_logits):
    recipe = DistillConfig(steps=50, batch_size=32, optimizer="sgd", lr=1e6, momentum=0.9)
    with pytest.raises(Diverged) as info:
        distill(_student(), data.x_train, data.y_train, recipe, teacher_logits=teacher_logits)
    assert isinstance(info.value, RuntimeError)
    assert 0 <= info.value.step < 50
    assert "diverged" in str(info.value)


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        (DistillConfig(steps=17, epochs=0, batch_size=32), 17),
        (DistillConfig(steps=0, epochs=3, batch_size=32), 30),  # 320 / 32 = 10 per epoch
        (DistillConfig(steps=0, epochs=2, batch_size=50), 14),  # ceil(320 / 50) = 7 per epoch
        (DistillConfig(steps=0, epochs=2, batch_size=1000), 2),  # one batch holds everything
    ],
)
def test_steps_and_epochs_give_the_expected_number_of_steps(data, recipe, expected):
    student = _student()
    seen: list[torch.Tensor] = []
    student.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    result = train(Scratch(student), data.x_train, data.y_train, recipe)
    assert result.steps == expected == total_steps(recipe, N_TRAIN)
    assert len(seen) == expected  # one forward pass per optimizer step
    if recipe.epochs:
        # Every epoch visits every training sample exactly once.
        per_epoch = expected // recipe.epochs
        rows = {r.numpy().tobytes() for r in data.x_train}
        for e in range(recipe.epochs):
            epoch = torch.cat(seen[e * per_epoch : (e + 1) * per_epoch])
            assert len(epoch) == N_TRAIN
            assert {r.numpy().tobytes() for r in epoch} == rows
        if recipe.epochs > 1 and per_epoch > 1:  # each epoch is reshuffled
            assert not torch.equal(torch.cat(seen[:per_epoch]), torch.cat(seen[per_epoch : 2 * per_epoch]))


def test_alpha_zero_ignores_the_teacher(data):
    garbage = 50.0 * torch.randn(N_TRAIN, 4, generator=torch.Generator().manual_seed(3))
    recipe = _recipe(alpha=0.0)
    with_garbage = _student()
    distill(with_garbage, data.x_train, data.y_train, recipe, teacher_logits=garbage)
    plain = _student()
    train(Scratch(plain), data.x_train, data.y_train, recipe)
    assert _same(_state(with_garbage), _state(plain))
    # With alpha > 0 the same garbage does change the result.
    mixed = _student()
    distill(mixed, data.x_train, data.y_train, _recipe(alpha=0.5), teacher_logits=garbage)
    assert not _same(_state(mixed), _state(plain))


def test_alpha_one_ignores_the_labels(data, teacher_logits):
    recipe = _recipe(alpha=1.0)
    wrong_labels = (data.y_train + 1) % 4
    a = _student()
    distill(a, data.x_train, data.y_train, recipe, teacher_logits=teacher_logits)
    b = _student()
    distill(b, data.x_train, wrong_labels, recipe, teacher_logits=teacher_logits)
    assert _same(_state(a), _state(b))


def test_temperature_reaches_the_loss(data, teacher_logits):
    a = _student()
    distill(a, data.x_train, data.y_train, _recipe(temperature=1.0), teacher_logits=teacher_logits)
    b = _student()
    distill(b, data.x_train, data.y_train, _recipe(temperature=4.0), teacher_logits=teacher_logits)
    assert not _same(_state(a), _state(b))


def test_make_optimizer_follows_the_recipe():
    model = _student()
    params = list(model.parameters())
    sgd = make_optimizer(params, DistillConfig(optimizer="sgd", lr=0.1, momentum=0.5, weight_decay=1e-4))
    assert type(sgd) is torch.optim.SGD
    assert sgd.param_groups[0]["lr"] == 0.1 and sgd.param_groups[0]["momentum"] == 0.5
    assert sgd.param_groups[0]["weight_decay"] == 1e-4
    adam = make_optimizer(params, DistillConfig(optimizer="adam"))
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["fused"]  # fused on CPU
    adamw = make_optimizer(params, DistillConfig(optimizer="adamw", lr=0.01, weight_decay=0.05))
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["weight_decay"] == 0.05
    model[0].weight.requires_grad_(False)
    frozen = make_optimizer(list(model.parameters()), DistillConfig())
    assert sum(len(g["params"]) for g in frozen.param_groups) == 3


def test_recipe_round_trips_through_json(data, teacher_logits):
    recipe = DistillConfig(
        temperature=2.5,
        alpha=0.3,
        steps=40,
        epochs=0,
        optimizer="sgd",
        lr=0.05,
        weight_decay=1e-3,
        momentum=0.8,
        batch_size=16,
        seed=7,
        cache_teacher=False,
    )
    plain = recipe_dict(recipe)
    assert set(RECIPE_KEYS) <= set(plain)
    assert "cache_teacher" not in plain
    again = recipe_from_dict(json.loads(json.dumps(plain)))
    assert recipe_dict(again) == plain
    for key in ("steps", "epochs", "optimizer", "lr", "weight_decay", "momentum", "batch_size", "seed"):
        assert getattr(again, key) == getattr(recipe, key), key
    # What matters: the recipe read back trains the same student.
    a, b = _student(), _student()
    distill(a, data.x_train, data.y_train, recipe, teacher_logits=teacher_logits)
    distill(b, data.x_train, data.y_train, again, teacher_logits=teacher_logits)
    assert _same(_state(a), _state(b))
    # Missing keys take the defaults; unknown keys are ignored.
    assert recipe_from_dict({"lr": 0.5, "not_a_key": 1}) == DistillConfig(lr=0.5)
