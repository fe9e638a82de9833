"""The ``mlp`` family: a stack of fully connected layers over the flattened input.

Arch keys and defaults:

=============  ========  ==================================================================
key            default   meaning
=============  ========  ==================================================================
depth          2         hidden layers (>= 1)
width          64        units per hidden layer; an int, or a list with one entry per layer
activation     "relu"    relu | gelu | silu | tanh
dropout        0.0       dropout after each hidden activation, in [0, 1]
=============  ========  ==================================================================

Module names: hidden layers are ``layers.0`` .. ``layers.{depth-1}`` (each Linear, activation,
optional Dropout), the classifier is ``head``. Any input shape works; it is flattened.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from naskd.spaces.families._common import ACTIVATIONS, Family, Key, length_problem, per_unit


class MLPStudent(nn.Module):
    """Flatten, then ``depth`` hidden blocks, then a linear head."""

    def __init__(self, in_features: int, widths: list[int], activation: str, dropout: float, num_classes: int) -> None:
        super().__init__()
        blocks = []
        for width in widths:
            block: list[nn.Module] = [nn.Linear(in_features, width), ACTIVATIONS[activation]()]
            if dropout > 0:
                block.append(nn.Dropout(dropout))
            blocks.append(nn.Sequential(*block))
            in_features = width
        self.layers = nn.Sequential(*blocks)
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(x.flatten(1)))


class MLPFamily(Family):
    """Multi-layer perceptrons; see the module docstring for the arch keys."""

    name = "mlp"
    keys = {
        "depth": Key(2, int, low=1),
        "width": Key(64, int, low=1, per=True),
        "activation": Key("relu", str, choices=tuple(ACTIVATIONS)),
        "dropout": Key(0.0, float, low=0.0, high=1.0),
    }

    def _check(self, arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> str | None:
        return length_problem(self.name, "width", arch["width"], "depth", arch["depth"])

    def _build(self, arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        widths = per_unit(arch["width"], arch["depth"])
        return MLPStudent(math.prod(input_shape), widths, arch["activation"], float(arch["dropout"]), num_classes)


MLP = MLPFamily()
