"""naskd.zoo.resnet: the ResNet-18 architecture, its export and pruning, and the teacher
checkpoint that ``train_teacher`` writes and ``[teacher] model`` loading reads back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_torch import one_torch_thread  # noqa: F401  (autouse fixture)
from torch import nn

from naskd.config import DataConfig
from naskd.data import load_data
from naskd.errors import NaskdError
from naskd.scoring import score
from naskd.zoo.resnet import BasicBlock, ResNet18, main, resnet18_shapes32, train_teacher

#: ResNet-18 with the CIFAR stem (3x3 conv, no max-pool) and a 10-class head, as usually quoted.
CIFAR_RESNET18_PARAMS = 11_173_962


def _blocks(model: ResNet18) -> list[tuple[str, BasicBlock]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BasicBlock)]


def test_width_64_has_resnet18s_parameter_count():
    n = sum(p.numel() for p in ResNet18(num_classes=10, width=64).parameters())
    assert abs(n - 11.2e6) / 11.2e6 < 0.01
    assert n == CIFAR_RESNET18_PARAMS


def test_module_layout():
    model = resnet18_shapes32()
    names = dict(model.named_modules())
    assert [f"stages.{i}" for i in range(4)] == [n for n in names if n.count(".") == 1 and n.startswith("stages.")]
    assert all(isinstance(names[f"stages.{i}"], nn.Sequential) for i in range(4))
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 10 and model.head.in_features == 128
    assert isinstance(model.stem, nn.Sequential) and isinstance(model.stem[0], nn.Conv2d)
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    blocks = _blocks(model)
    assert [n for n, _ in blocks] == [f"stages.{s}.{b}" for s in range(4) for b in range(2)]
    widths = [b.conv2.out_channels for _, b in blocks]
    assert widths == [16, 16, 32, 32, 64, 64, 128, 128]


def test_downsampling_shortcuts_exactly_where_stride_or_width_changes():
    for _, block in _blocks(ResNet18(width=64)):
        changes = block.conv1.stride != (1, 1) or block.conv1.in_channels != block.conv2.out_channels
        assert block.downsamples == changes
        if changes:
            conv, norm = block.shortcut
            assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
            assert conv.stride == block.conv1.stride and isinstance(norm, nn.BatchNorm2d)
        else:
            assert isinstance(block.shortcut, nn.Identity)
    assert [b.downsamples for _, b in _blocks(ResNet18())] == [False, False, True, False, True, False, True, False]


def test_output_shape_and_other_inputs():
    model = resnet18_shapes32().eval()
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    gray = ResNet18(num_classes=7, in_channels=1, width=8).eval()
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    with pytest.raises(NaskdError, match="width must be >= 1"):
        ResNet18(width=0)


def test_blocks_without_downsampling_keep_shape_and_can_be_dropped():
    model = resnet18_shapes32().eval()
    x = torch.randn(2, 3, 32, 32)
    seen: dict[str, tuple[torch.Size, torch.Size]] = {}
    hooks = [
        b.register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, (a[0].shape, o.shape)))
        for n, b in _blocks(model)
    ]
    model(x)
    for h in hooks:
        h.remove()
    for name, block in _blocks(model):
        shape_in, shape_out = seen[name]
        assert (shape_in == shape_out) == (not block.downsamples), name
    for name, block in _blocks(model):
        if not block.downsamples:
            stage, index = name.split(".")[1:]
            model.stages[int(stage)][int(index)] = nn.Identity()
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 3
    assert model(x).shape == (2, 10)


def test_torch_export():
    model = resnet18_shapes32().eval()
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-5)


def test_torch_pruning_prunes_every_stage():
    tp = pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = resnet18_shapes32().eval()
    x = torch.randn(2, 3, 32, 32)
    before = sum(p.numel() for p in model.parameters())
    pruner = tp.pruner.BasePruner(
        model,
        x,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.0,
        pruning_ratio_dict={model.stages[i]: 0.5 for i in range(4)},
        ignored_layers=[model.head],
    )
    pruner.step()
    assert model(x).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) < before / 2
    assert model.head.out_features == 10


def test_train_teacher_checkpoint_reloads_with_identical_outputs(tmp_path: Path):
    out = tmp_path / "teacher" / "resnet18.pt"
    info = train_teacher(out, epochs=1, seed=0, samples=256)
    assert set(info) >= {"accuracy", "params", "seconds"}
    assert 0.0 <= info["accuracy"] <= 1.0 and info["seconds"] > 0
    assert info["params"] == sum(p.numel() for p in resnet18_shapes32().parameters()) and info["train_samples"] == 256
    assert [p.name for p in out.parent.iterdir()] == ["resnet18.pt"]  # no temporary file left behind

    # What naskd does for [teacher] model + checkpoint: the factory, then a weights-only load.
    def reload() -> nn.Module:
        model = resnet18_shapes32()
        model.load_state_dict(torch.load(out, map_location="cpu", weights_only=True))
        return model.eval()

    first, second = reload(), reload()
    data = load_data(DataConfig(dataset="shapes32"))
    with torch.no_grad():
        logits = first(data.x_val)
        few = data.x_val[:64]
        assert torch.equal(first(few), second(few))
        assert not torch.allclose(first(few), resnet18_shapes32().eval()(few))  # trained, not a fresh init
    # The reloaded teacher is the trained one: the same validation accuracy, to the last sample.
    assert score(logits, data.y_val)["accuracy"] == info["accuracy"]
    # BatchNorm running statistics travel with the weights (eval-mode outputs depend on them).
    assert any(k.endswith("running_mean") for k in first.state_dict())


def test_train_teacher_is_deterministic_and_the_cli_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    first = tmp_path / "a.pt"
    second = tmp_path / "b.pt"
    assert main(["--epochs", "1", "--samples", "64", "--out", str(first)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{first}: validation accuracy ")
    train_teacher(second, epochs=1, samples=64)
    a, b = (torch.load(p, weights_only=True) for p in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_arguments_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(NaskdError, match="epochs must be >= 1, got 0"):
        train_teacher(tmp_path / "x.pt", epochs=0)
    assert main(["--epochs", "1", "--samples", "0", "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "samples must be >= 1, got 0" in err
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "shapes32" in capsys.readouterr().out
