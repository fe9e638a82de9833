"""A ResNet-18-shaped teacher (He et al. 2016, "Deep Residual Learning for Image Recognition")
for 32x32 images, its zero-argument factory for shapes32, and the training that makes its
checkpoint (``python -m naskd.zoo.resnet --out PATH``).

Layout, as pruning and block-dropping tools address it: ``stem`` (one 3x3 conv, BatchNorm,
ReLU; CIFAR-style, no max-pool), ``stages.0`` .. ``stages.3`` (each an ``nn.Sequential`` of two
``BasicBlock``s, widths w, 2w, 4w, 8w, stages 1-3 halving the resolution in their first block),
``pool`` (global average) and ``head`` (``nn.Linear``). Every block maps one tensor to one tensor
with plain ops and no data-dependent control flow, so it traces, exports and prunes; a block
without a downsampling shortcut keeps its input's shape and can be replaced by ``nn.Identity``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from naskd.cache import atomic_save
from naskd.config import DataConfig, DistillConfig
from naskd.data import load_data
from naskd.distill import Scratch, train
from naskd.errors import NaskdError
from naskd.scoring import predict, score

#: Blocks per stage of ResNet-18.
BLOCKS_PER_STAGE = (2, 2, 2, 2)

#: ``train_teacher``'s recipe: Adam at 3e-3, batches of 64, and the last epoch at a tenth of
#: the rate (the paper's step decay, in one step). Measured on shapes32 at 3 epochs, seeds 0-2:
#: 99.4 / 99.1 / 98.3 % validation accuracy; without the decay the last-step accuracy swung
#: between 85 and 97 % (3e-3) or 80 and 98 % (1e-3), and batches of 128 at 2e-3 gave 90-96 %.
TEACHER_LR = 3e-3
TEACHER_BATCH = 64
TEACHER_DECAY = 0.1


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    # No bias: the BatchNorm right after has its own shift.
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm, ReLU between and after the residual sum. The shortcut is
    the identity, or a 1x1 conv + BatchNorm where the stride or the width changes (``downsamples``)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.downsamples = stride != 1 or c_in != c_out
        self.shortcut: nn.Module = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if self.downsamples
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Out of place: the sum must stay a graph node of its own for tracing and pruning.
        out = out + self.shortcut(x)
        return self.relu2(out)


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs; ``width`` is the first stage's channels (64 in the paper)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1 or width < 1:
            raise NaskdError(
                f"ResNet18: num_classes, in_channels and width must be >= 1, got {num_classes}, {in_channels}, {width}"
            )
        self.stem = nn.Sequential(_conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU())
        stages, c_in = [], width
        for i, blocks in enumerate(BLOCKS_PER_STAGE):
            c_out = width * 2**i
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(c_in, c_out, stride)]
            stage += [BasicBlock(c_out, c_out) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation for the ReLU convs, as in the paper; BatchNorm starts at identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.pool(x).flatten(1))


def resnet18_shapes32() -> ResNet18:
    """The shapes32 teacher: ``[teacher] model = "naskd.zoo.resnet:resnet18_shapes32"``."""
    return ResNet18(num_classes=10, in_channels=3, width=16)


def train_teacher(out: Path, *, epochs: int = 3, seed: int = 0, samples: int | None = None) -> dict[str, Any]:
    """Train ``resnet18_shapes32()`` on shapes32's training part and save its ``state_dict`` to
    ``out`` (write then rename: a reader never sees half a checkpoint).

    Args:
        epochs: passes over the training rows (the last at a tenth of the learning rate).
        seed: the weights' initialisation and the batch order (the data split is shapes32's default).
        samples: train on only the first this many training rows (a quick check); None: all of them.

    Returns:
        ``accuracy`` on shapes32's whole validation part, ``params``, ``seconds`` (training only),
        ``epochs`` and ``train_samples``.

    Raises:
        NaskdError: ``epochs`` or ``samples`` below 1.
    """
    if epochs < 1:
        raise NaskdError(f"train_teacher: epochs must be >= 1, got {epochs}")
    if samples is not None and samples < 1:
        raise NaskdError(f"train_teacher: samples must be >= 1, got {samples}")
    data = load_data(DataConfig(dataset="shapes32"))
    x, y = data.x_train[:samples], data.y_train[:samples]
    torch.manual_seed(seed)  # the initial weights, as naskd's built-in teachers seed theirs
    model = resnet18_shapes32()
    # Two runs of naskd's loop (its rate is constant within a run): all but the last epoch at
    # TEACHER_LR, then one at TEACHER_LR * TEACHER_DECAY, which settles the weights and the
    # BatchNorm statistics. A single epoch is a single run at TEACHER_LR.
    phases = [(epochs - 1, TEACHER_LR), (1, TEACHER_LR * TEACHER_DECAY)] if epochs > 1 else [(1, TEACHER_LR)]
    seconds = 0.0
    for phase, (phase_epochs, lr) in enumerate(phases):
        recipe = DistillConfig(
            epochs=phase_epochs, lr=lr, batch_size=TEACHER_BATCH, seed=seed + 1000 * phase, alpha=0.0
        )
        seconds += train(Scratch(model), x, y, recipe).train_seconds
    atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(out))
    return {
        "accuracy": score(predict(model, data.x_val), data.y_val)["accuracy"],
        "params": sum(p.numel() for p in model.parameters()),
        "seconds": seconds,
        "epochs": epochs,
        "train_samples": len(y),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m naskd.zoo.resnet",
        description="Train the ResNet-18-shaped shapes32 teacher (naskd.zoo.resnet:resnet18_shapes32) on the "
        "built-in shapes32 data and save its state_dict, for [teacher] model = "
        '"naskd.zoo.resnet:resnet18_shapes32" with checkpoint = PATH. Prints one line: '
        "validation accuracy, parameters, training seconds.",
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the checkpoint (.pt)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch-order seed (default 0)")
    parser.add_argument(
        "--samples", type=int, default=None, help="train on only the first N training images (default: all 4800)"
    )
    args = parser.parse_args(argv)
    try:
        info = train_teacher(args.out, epochs=args.epochs, seed=args.seed, samples=args.samples)
    except NaskdError as exc:
        print(f"naskd.zoo.resnet: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: validation accuracy {info['accuracy']:.4f}, {info['params']:,} params, "
        f"{info['epochs']} epochs on {info['train_samples']} images in {info['seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
