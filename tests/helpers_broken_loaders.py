"""Broken ``[data].loader`` functions, referenced as ``helpers_broken_loaders:NAME`` by tests/test_broken_data.py."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

NOT_CALLABLE = 3


def _xy(n: int = 20, width: int = 4, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, width)).astype(np.float32), np.arange(n) % classes


def raises_at_call():
    raise RuntimeError("cannot reach the data share\nsecond line of the message")


def returns_none():
    return None


def returns_three():
    return _xy(), _xy(), _xy()


def string_labels():
    x, _ = _xy()
    pairs = [(torch.from_numpy(row), "cat" if i % 2 else "dog") for i, row in enumerate(x)]
    return pairs, pairs[:4]


def float_labels():
    x, _ = _xy()
    pairs = [(row, 1.5) for row in x]
    return pairs, pairs[:4]


def string_x():
    x = np.array([["a", "b"]] * 10)
    y = np.arange(10) % 2
    return (x, y), (x, y)


def nan_x():
    x, y = _xy()
    x[3, 1] = np.nan
    return (x, y), _xy(6)


def width_mismatch():
    return _xy(width=4), _xy(6, width=5)


def empty_train():
    return [], _xy(6)


def getitem_raises():
    class Flaky:
        def __len__(self):
            return 10

        def __getitem__(self, i):
            raise KeyError(f"sample {i} not found")

    return Flaky(), _xy(6)


def not_pairs():
    return [{"x": [1.0, 2.0], "y": 0}] * 4, _xy(6)


def ragged():
    pairs = [(np.zeros(4 if i < 5 else 3, dtype=np.float32), i % 2) for i in range(10)]
    return pairs, pairs[:4]


def one_class():
    x, _ = _xy()
    return (x, np.zeros(len(x), dtype=np.int64)), _xy(6)


def huge_label():
    x, y = _xy()
    y[5] = 1_000_000
    return (x, y), _xy(6)


def tensor_dataset_with_nan_in_val():
    x, y = _xy()
    xv, yv = _xy(6)
    xv[2, 0] = np.inf
    return (
        TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
        TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)),
    )
