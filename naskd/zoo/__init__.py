"""Reference teachers written in the project (no torchvision): architectures a study names as
``[teacher] model = "naskd.zoo.<module>:<factory>"``, and how to train their checkpoints.

``resnet``: a ResNet-18-shaped network (He et al. 2016) for 32x32 inputs, with a factory and a
trainer for the built-in shapes32 data. Names load lazily, so ``python -m naskd.zoo.resnet``
does not import its module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BasicBlock", "ResNet18", "resnet18_shapes32", "train_teacher"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("naskd.zoo.resnet"), name)
    raise AttributeError(f"module 'naskd.zoo' has no attribute {name!r}")
