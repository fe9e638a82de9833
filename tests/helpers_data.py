"""Data loaders for tests, referenced as ``helpers_data:NAME`` from ``[data].loader``."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset


def _arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(123)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    y = np.arange(50) % 3
    return x[:40], y[:40], x[40:], y[40:]


def load():
    """(x, y) array pairs for train and validation."""
    xt, yt, xv, yv = _arrays()
    return (xt, yt), (xv, yv)


def load_dataset():
    """Map-style datasets of (x, y) pairs (the same numbers as ``load``)."""
    xt, yt, xv, yv = _arrays()
    return (
        TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)),
        TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)),
    )


def load_one():
    """Wrong: a single dataset instead of (train, val)."""
    return _arrays()[0]
