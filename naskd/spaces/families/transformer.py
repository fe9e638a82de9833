"""The ``transformer`` family: a small pre-norm encoder over tokens cut from the input.

Arch keys and defaults:

==========  ========  ===================================================================
key         default   meaning
==========  ========  ===================================================================
layers      2         encoder blocks (>= 1)
d_model     32        token width; must be divisible by heads
heads       4         attention heads
ffn_ratio   2.0       feed-forward width = round(d_model * ffn_ratio), in [0.25, 16]
dropout     0.0       dropout inside the encoder blocks, in [0, 1]
==========  ========  ===================================================================

Tokens: a sequence ``(C, L)`` gives L tokens of C features; an image ``(C, H, W)`` gives H
tokens (rows) of C*W features; a vector ``(D,)`` gives D tokens of 1 feature. Then a linear
``embed``, a learned ``position`` embedding, ``layers.0`` .. (``nn.TransformerEncoderLayer``,
batch_first, norm_first, GELU), a final ``norm``, mean pooling over tokens and ``head``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from naskd.spaces.families._common import Family, Key, rank_problem


def token_layout(input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(tokens, features per token)`` for one sample's shape."""
    if len(input_shape) == 1:
        return input_shape[0], 1
    if len(input_shape) == 2:
        return input_shape[1], input_shape[0]
    channels, height, width = input_shape
    return height, channels * width


class TransformerStudent(nn.Module):
    """Embed tokens, run pre-norm encoder blocks, mean-pool, classify."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        layers: int,
        d_model: int,
        heads: int,
        ffn_ratio: float,
        dropout: float,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.input_rank = len(input_shape)
        tokens, features = token_layout(input_shape)
        self.embed = nn.Linear(features, d_model)
        self.position = nn.Parameter(torch.zeros(1, tokens, d_model))
        # Small random positions so tokens are told apart from the first step (as in ViT).
        nn.init.trunc_normal_(self.position, std=0.02)
        ffn = max(1, round(d_model * ffn_ratio))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model,
                heads,
                dim_feedforward=ffn,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(layers)
        )
        # Pre-norm blocks leave the residual stream unnormalised; normalise once before pooling.
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *input_shape)`` -> ``(B, tokens, features)``."""
        if self.input_rank == 1:
            return x.unsqueeze(-1)
        if self.input_rank == 2:
            return x.transpose(1, 2)
        return x.permute(0, 2, 1, 3).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(self.tokens(x)) + self.position
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h).mean(dim=1))


class TransformerFamily(Family):
    """Small encoders; see the module docstring for the arch keys."""

    name = "transformer"
    keys = {
        "layers": Key(2, int, low=1),
        "d_model": Key(32, int, low=1),
        "heads": Key(4, int, low=1),
        "ffn_ratio": Key(2.0, float, low=0.25, high=16.0),
        "dropout": Key(0.0, float, low=0.0, high=1.0),
    }

    def _check(self, arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> str | None:
        problem = rank_problem(self.name, input_shape, "(D,), (C, L) or (C, H, W)", (1, 2, 3))
        if problem:
            return problem
        if arch["d_model"] % arch["heads"] != 0:
            return f"{self.name}: d_model {arch['d_model']} is not divisible by heads {arch['heads']}"
        return None

    def _build(self, arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return TransformerStudent(
            input_shape,
            arch["layers"],
            arch["d_model"],
            arch["heads"],
            float(arch["ffn_ratio"]),
            float(arch["dropout"]),
            num_classes,
        )


TRANSFORMER = TransformerFamily()
