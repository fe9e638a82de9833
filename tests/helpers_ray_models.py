"""A user student family whose ``mode`` decides how its trial ends, for the Ray tests:
``ok`` trains, ``big`` breaks the params budget, ``raise`` fails in the builder, ``die_once``
kills its worker process the first time (then trains), ``die_always`` kills it every time;
``tiny`` is ``ok`` with 2 hidden units instead of 8 (cheaper, less accurate), and ``blind``
is ``ok`` with its input zeroed (the same parameters, so it can learn only the class prior)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from torch import nn


def build(arch: dict, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    mode = arch["mode"]
    if mode == "raise":
        raise ValueError("this student is cursed")
    if mode == "die_always" or (mode == "die_once" and _first_time(Path(arch["markers"]) / "die_once")):
        os.kill(os.getpid(), signal.SIGKILL)
    width = {"big": 256, "tiny": 2}.get(mode, 8)
    layers = [nn.Flatten(), nn.Linear(input_shape[-1], width), nn.ReLU(), nn.Linear(width, num_classes)]
    if mode == "blind":
        layers.insert(1, _Zero())
    return nn.Sequential(*layers)


class _Zero(nn.Module):
    def forward(self, x):
        return x * 0.0


def _first_time(marker: Path) -> bool:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        with open(marker, "x"):
            return True
    except FileExistsError:
        return False
