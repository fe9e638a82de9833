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


def build_transformer() -> nn.Module:
    """A transformer teacher for sequences of shape (4, 16) (16 tokens of 4 features), 4 classes."""
    from naskd.spaces import BuildContext, build_student

    return build_student(
        {"family": "transformer", "arch": {"layers": 2, "d_model": 32, "heads": 4}}, BuildContext((4, 16), 4)
    )


def build_bn() -> nn.Module:
    """A teacher with BatchNorm (DeepInversion matches its statistics), for inputs (16,), 4 classes."""
    return nn.Sequential(
        nn.Linear(16, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, 4),
    )
