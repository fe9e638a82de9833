"""The built-in shapes32 dataset: its layout, determinism, isolation from global RNGs, and that
it is learnable by a small CNN but not by a linear model on its pixels."""

from __future__ import annotations

import random
import time
import warnings

import numpy as np
import pytest
import torch
from helpers_torch import one_torch_thread  # noqa: F401  (autouse fixture)
from torch import nn

from naskd.config import BUILTIN_DATASETS, DataConfig, DistillConfig
from naskd.data import SHAPES32_CLASSES, SHAPES32_SAMPLES, Data, load_data, make_shapes32
from naskd.distill import Scratch, train
from naskd.scoring import predict, score


@pytest.fixture(scope="module")
def shapes() -> Data:
    return load_data(DataConfig(dataset="shapes32"))


def test_shapes32_is_a_builtin_dataset():
    assert "shapes32" in BUILTIN_DATASETS


def test_layout_dtype_range_and_balanced_classes(shapes: Data):
    d = shapes
    assert d.name == "shapes32" and d.input_shape == (3, 32, 32)
    assert d.num_classes == len(SHAPES32_CLASSES) == 10
    assert len(d.y_train) + len(d.y_val) == SHAPES32_SAMPLES == 6000
    assert len(d.y_val) == round(6000 * DataConfig().val_fraction) == 1200
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    for x in (d.x_train, d.x_val):
        assert 0.0 <= x.min().item() and x.max().item() <= 1.0
        assert torch.isfinite(x).all()
    everything = torch.bincount(torch.cat([d.y_train, d.y_val]), minlength=10)
    assert everything.tolist() == [600] * 10
    # The seeded shuffle keeps every class near its share on both sides of the split.
    assert torch.bincount(d.y_val, minlength=10).min().item() >= 90
    assert d.split["generator"] == "naskd shapes32 (generator seed 32)"
    assert d.split["split_seed"] == 0 and d.split["split"] == "seeded shuffle"


def test_two_loads_are_bit_identical(shapes: Data):
    again = load_data(DataConfig(dataset="shapes32"))
    for a, b in (
        (shapes.x_train, again.x_train),
        (shapes.y_train, again.y_train),
        (shapes.x_val, again.x_val),
        (shapes.y_val, again.y_val),
    ):
        assert torch.equal(a, b)
    assert shapes.fingerprint == again.fingerprint


def test_split_seed_moves_the_split_not_the_images(shapes: Data):
    other = load_data(DataConfig(dataset="shapes32", seed=1))
    assert other.fingerprint != shapes.fingerprint
    rows = lambda d: sorted(r.numpy().tobytes() for r in torch.cat([d.x_train, d.x_val]))  # noqa: E731
    assert rows(other) == rows(shapes)


def test_generation_leaves_global_rngs_alone():
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    np_before, py_before, torch_before = np.random.get_state(), random.getstate(), torch.get_rng_state()
    load_data(DataConfig(dataset="shapes32"))
    np_after = np.random.get_state()
    assert np_after[0] == np_before[0] and np.array_equal(np_after[1], np_before[1])
    assert np_after[2:] == np_before[2:]
    assert random.getstate() == py_before
    assert torch.equal(torch.get_rng_state(), torch_before)
    # ...and what the global RNG holds has no say in the images.
    np.random.seed(7)
    assert np.array_equal(make_shapes32(50)[0], make_shapes32(50)[0])


def test_generation_is_vectorised_fast():
    start = time.perf_counter()
    make_shapes32()
    # ~1.5 s on a 2-core machine; a per-pixel Python loop would take minutes.
    assert time.perf_counter() - start < 15.0


def _small_cnn() -> nn.Module:
    def conv(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *conv(3, 16),
        nn.MaxPool2d(2),
        *conv(16, 32),
        nn.MaxPool2d(2),
        *conv(32, 32),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def test_a_small_cnn_learns_it_and_a_linear_model_does_not(shapes: Data):
    from sklearn.linear_model import LogisticRegression

    d = shapes
    torch.manual_seed(0)
    cnn = _small_cnn()
    train(Scratch(cnn), d.x_train, d.y_train, DistillConfig(epochs=4, lr=3e-3, batch_size=64, alpha=0.0))
    cnn_acc = score(predict(cnn, d.x_val), d.y_val)["accuracy"]
    assert cnn_acc > 0.5, cnn_acc

    # Logistic regression on raw pixels: position, size and colour vary, so no pixel weighting
    # separates the shapes. A capped number of iterations on 2000 rows keeps it quick.
    n = 2000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs stops at max_iter before converging, on purpose
        linear = LogisticRegression(max_iter=30).fit(d.x_train[:n].flatten(1).numpy(), d.y_train[:n].numpy())
    linear_acc = linear.score(d.x_val.flatten(1).numpy(), d.y_val.numpy())
    assert linear_acc < 0.3, linear_acc
    assert cnn_acc - linear_acc > 0.25, (cnn_acc, linear_acc)


def test_colour_alone_does_not_tell_the_class(shapes: Data):
    """Every class draws its colours alike: per-image colour statistics predict near chance."""
    from sklearn.linear_model import LogisticRegression

    def colours(x: torch.Tensor) -> np.ndarray:
        # The brightest and darkest tenth of each channel: about the two colours of the image.
        flat = x.flatten(2)
        return torch.cat([flat.quantile(0.9, dim=2), flat.quantile(0.1, dim=2)], 1).numpy()

    d = shapes
    model = LogisticRegression(max_iter=500).fit(colours(d.x_train), d.y_train.numpy())
    assert model.score(colours(d.x_val), d.y_val.numpy()) < 0.2
