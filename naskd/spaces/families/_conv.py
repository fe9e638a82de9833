"""The convolutional student shared by ``cnn1d`` and ``cnn2d``: stages of conv blocks, pool, head.

One implementation parameterised by the number of spatial axes, so the two families cannot
drift apart; ``cnn1d.py`` and ``cnn2d.py`` only name it and document it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from naskd.spaces.families._common import ACTIVATIONS, Family, Key, length_problem, per_unit, rank_problem

_LAYERS: dict[int, tuple[type[nn.Module], type[nn.Module], type[nn.Module]]] = {
    1: (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d),
}

CONV_KEYS: dict[str, Key] = {
    "stages": Key(3, int, low=1),
    "blocks": Key(1, int, low=1, per=True),
    "width": Key(16, int, low=1),
    "width_mult": Key(2.0, float, low=0.25, high=8.0),
    "kernel": Key(3, int, low=1),
    "stride": Key(2, int, choices=(1, 2)),
    "residual": Key(True, bool),
    "activation": Key("relu", str, choices=tuple(ACTIVATIONS)),
    "batchnorm": Key(True, bool),
}


class ConvBlock(nn.Module):
    """Two same-padded convolutions; with ``residual`` the input is added back before the last activation.

    The shortcut is the identity when shape is kept, else a strided 1x1 projection.
    """

    def __init__(
        self,
        dims: int,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        residual: bool,
        activation: str,
        batchnorm: bool,
    ) -> None:
        super().__init__()
        conv, norm, _ = _LAYERS[dims]

        def normalise(channels: int) -> nn.Module:
            return norm(channels) if batchnorm else nn.Identity()

        # A conv feeding batchnorm needs no bias: the norm's shift replaces it.
        self.conv1 = conv(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=not batchnorm)
        self.norm1 = normalise(c_out)
        self.act1 = ACTIVATIONS[activation]()
        self.conv2 = conv(c_out, c_out, kernel, padding=kernel // 2, bias=not batchnorm)
        self.norm2 = normalise(c_out)
        self.act2 = ACTIVATIONS[activation]()
        self.shortcut: nn.Module | None = None
        if residual:
            if c_in == c_out and stride == 1:
                self.shortcut = nn.Identity()
            else:
                self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=not batchnorm), normalise(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act2(out)


class ConvStudent(nn.Module):
    """``stages`` (each a Sequential of ConvBlocks), global average pool, linear ``head``."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        channels: list[int],
        blocks: list[int],
        kernel: int,
        stride: int,
        residual: bool,
        activation: str,
        batchnorm: bool,
        num_classes: int,
    ) -> None:
        super().__init__()
        stages = []
        c_in = in_channels
        for s, (c_out, n_blocks) in enumerate(zip(channels, blocks)):
            stage = []
            for b in range(n_blocks):
                # Only the first block of a later stage downsamples; stage 0 keeps the input size.
                block_stride = stride if s > 0 and b == 0 else 1
                stage.append(ConvBlock(dims, c_in, c_out, kernel, block_stride, residual, activation, batchnorm))
                c_in = c_out
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = _LAYERS[dims][2](1)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stages(x)).flatten(1))


class ConvFamily(Family):
    """``cnn1d`` (input ``(C, L)``) or ``cnn2d`` (input ``(C, H, W)``)."""

    def __init__(self, name: str, dims: int) -> None:
        self.name = name
        self.dims = dims
        self.keys = CONV_KEYS

    def _check(self, arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> str | None:
        layout, sizes_word = ("(C, L)", "length") if self.dims == 1 else ("(C, H, W)", "height and width")
        problem = rank_problem(self.name, input_shape, layout, (self.dims + 1,))
        if problem:
            return problem
        if arch["kernel"] % 2 == 0:
            return f"{self.name}: kernel {arch['kernel']} is even; use an odd kernel so padding keeps sizes centred"
        problem = length_problem(self.name, "blocks", arch["blocks"], "stages", arch["stages"])
        if problem:
            return problem
        downsamples = arch["stages"] - 1 if arch["stride"] == 2 else 0
        if downsamples:
            # A same-padded stride-2 conv maps size n to ceil(n / 2); halving a size of 1 is
            # meaningless, so every downsampling stage must still see a size >= 2.
            need = 2 ** (downsamples - 1) + 1
            sizes = input_shape[1:]
            if min(sizes) < need:
                got = sizes[0] if self.dims == 1 else "x".join(map(str, sizes))
                return f"{self.name}: {downsamples} stride-2 stages need {sizes_word} >= {need}, got {got}"
        return None

    def _build(self, arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        stages = arch["stages"]
        channels = [max(1, round(arch["width"] * arch["width_mult"] ** s)) for s in range(stages)]
        return ConvStudent(
            self.dims,
            input_shape[0],
            channels,
            per_unit(arch["blocks"], stages),
            arch["kernel"],
            arch["stride"],
            arch["residual"],
            arch["activation"],
            arch["batchnorm"],
            num_classes,
        )
