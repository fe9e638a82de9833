"""User teachers for tests, referenced as ``helpers_teacher:NAME`` from ``[teacher].model``.

Sized for the synthetic data of ``small_study``: inputs of shape (16,), 4 classes.
"""

from __future__ import annotations

from torch import nn


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def build_wide() -> nn.Module:
    """Another architecture: a ``build()`` state_dict does not fit it."""
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))


def build_not_a_module():
    return "not a module"
