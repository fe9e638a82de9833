"""Datasets: built-in shapes and seeded splits, .npz files, ``module:function`` loaders, fingerprints."""

from __future__ import annotations

import random
from pathlib import Path

import helpers_data
import numpy as np
import pytest
import torch
from conftest import small_study, toml_text
from helpers_torch import one_torch_thread  # noqa: F401  (autouse fixture)

from naskd.config import DataConfig, load_study
from naskd.data import Data, load_data
from naskd.errors import NaskdError


def _data_study(tmp_path: Path, data: dict) -> Path:
    """A study whose [data] table is exactly ``data`` (no synthetic defaults merged in)."""
    doc = small_study()
    doc["data"] = data
    path = tmp_path / "study.toml"
    path.write_text(toml_text(doc))
    return path


def _ids(d: Data) -> set[bytes]:
    return {row.numpy().tobytes() for row in d.x_val}


# --- digits ------------------------------------------------------------------------------


def test_digits_shapes_and_split_sizes():
    d = load_data(DataConfig(dataset="digits"))
    assert d.name == "digits"
    assert d.input_shape == (1, 8, 8)
    assert d.num_classes == 10
    assert len(d.y_train) + len(d.y_val) == 1797
    assert len(d.y_val) == round(1797 * 0.2) == 359
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert 0.0 <= d.x_train.min().item() and d.x_train.max().item() <= 1.0
    assert d.split["split_seed"] == 0 and d.split["val_fraction"] == 0.2


def test_digits_val_fraction():
    d = load_data(DataConfig(dataset="digits", val_fraction=0.5))
    assert len(d.y_val) == round(1797 * 0.5)
    assert len(d.y_train) == 1797 - len(d.y_val)


def test_digits_split_is_seeded():
    a = load_data(DataConfig(dataset="digits", seed=3))
    b = load_data(DataConfig(dataset="digits", seed=3))
    c = load_data(DataConfig(dataset="digits", seed=4))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert a.fingerprint == b.fingerprint
    assert not torch.equal(a.x_val, c.x_val)
    assert a.fingerprint != c.fingerprint
    # Same samples, only split differently: every sample is in exactly one part.
    all_a = torch.cat([a.x_train, a.x_val]).flatten(1)
    all_c = torch.cat([c.x_train, c.x_val]).flatten(1)
    assert torch.equal(all_a.sum(0), all_c.sum(0))


def test_a_valid_study_never_gets_an_empty_training_split(write_study):
    path = write_study(data={"samples": 8, "classes": 4, "val_fraction": 0.95})
    try:
        d = load_data(load_study(path).data)
    except NaskdError:
        return  # rejecting it with a message is fine too
    assert len(d.y_train) > 0 and len(d.y_val) > 0


def test_train_and_val_do_not_overlap():
    d = load_data(DataConfig(dataset="synthetic", samples=200, shape=(5,), classes=4, seed=2))
    train = {row.numpy().tobytes() for row in d.x_train}
    assert not train & _ids(d)
    assert len(train) + len(_ids(d)) == 200


# --- mnist1d -----------------------------------------------------------------------------


def test_mnist1d_canonical_split_and_leaves_global_rngs_alone():
    np.random.seed(1234)
    random.seed(99)
    np_before = np.random.get_state()
    py_before = random.getstate()
    d = load_data(DataConfig(dataset="mnist1d"))
    np_after = np.random.get_state()
    assert np_before[0] == np_after[0]
    assert np.array_equal(np_before[1], np_after[1])
    assert np_before[2:] == np_after[2:]
    assert random.getstate() == py_before
    assert d.input_shape == (1, 40)
    assert (len(d.y_train), len(d.y_val)) == (4000, 1000)
    assert d.num_classes == 10
    # The next draw is what it would have been without loading.
    np.random.seed(1234)
    expected = np.random.rand()
    np.random.set_state(np_after)
    assert np.random.rand() == expected


# --- synthetic ---------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "classes", "samples"), [((16,), 4, 400), ((2, 3, 5), 3, 90), ((1, 12), 7, 70)])
def test_synthetic_honours_shape_classes_and_samples(shape, classes, samples):
    d = load_data(DataConfig(dataset="synthetic", shape=shape, classes=classes, samples=samples, val_fraction=0.25))
    assert d.input_shape == shape
    assert d.num_classes == classes
    assert len(d.y_train) + len(d.y_val) == samples
    assert len(d.y_val) == round(samples * 0.25)
    assert set(torch.cat([d.y_train, d.y_val]).tolist()) == set(range(classes))
    assert torch.isfinite(d.x_train).all()


def test_synthetic_through_a_study(write_study):
    config = load_study(write_study(data={"samples": 120, "shape": [2, 4], "classes": 3}))
    d = load_data(config.data)
    assert d.input_shape == (2, 4) and d.num_classes == 3 and len(d.y_train) + len(d.y_val) == 120


def test_describe_records_the_split():
    d = load_data(DataConfig(dataset="synthetic", samples=100, shape=(3,), classes=2, seed=5, val_fraction=0.3))
    info = d.describe()
    assert info["input_shape"] == [3] and info["num_classes"] == 2
    assert (info["train"], info["val"]) == (70, 30)
    assert info["split_seed"] == 5 and info["val_fraction"] == 0.3
    assert info["fingerprint"] == d.fingerprint


# --- .npz ----------------------------------------------------------------------------------


def test_npz_with_x_and_y_is_split_by_seed(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2, 5)).astype(np.float32)
    y = np.arange(60) % 3
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    config = load_study(_data_study(tmp_path, {"path": "mine.npz", "val_fraction": 0.25, "seed": 1}))
    assert config.data.path == (tmp_path / "mine.npz").resolve()
    d = load_data(config.data)
    assert d.name == "mine"
    assert d.input_shape == (2, 5) and d.num_classes == 3
    assert (len(d.y_train), len(d.y_val)) == (45, 15)
    # The rows are the file's rows, with their labels.
    rows = {tuple(r.flatten().tolist()): int(label) for r, label in zip(x, y)}
    for xb, yb in ((d.x_train, d.y_train), (d.x_val, d.y_val)):
        for r, label in zip(xb, yb):
            assert rows[tuple(r.flatten().tolist())] == int(label)
    again = load_data(config.data)
    assert torch.equal(d.x_val, again.x_val)
    other = load_data(DataConfig(dataset="", path=config.data.path, val_fraction=0.25, seed=2))
    assert not torch.equal(d.x_val, other.x_val)


def test_npz_with_given_validation_set(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20) % 2
    xv = -np.arange(8, dtype=np.float32).reshape(4, 2)
    yv = np.array([0, 1, 1, 0])
    np.savez(tmp_path / "given.npz", x=x, y=y, x_val=xv, y_val=yv)
    d = load_data(DataConfig(dataset="", path=tmp_path / "given.npz"))
    assert torch.equal(d.x_train, torch.from_numpy(x))
    assert torch.equal(d.y_train, torch.from_numpy(y).long())
    assert torch.equal(d.x_val, torch.from_numpy(xv))
    assert torch.equal(d.y_val, torch.from_numpy(yv).long())
    assert d.split["split"] == "given in given.npz"


def test_npz_missing_y_names_file_and_array(tmp_path):
    path = tmp_path / "noy.npz"
    np.savez(path, x=np.zeros((10, 3), dtype=np.float32))
    with pytest.raises(NaskdError) as info:
        load_data(DataConfig(dataset="", path=path))
    assert str(path) in str(info.value)
    assert "'y'" in str(info.value)


def test_npz_with_only_x_val(tmp_path):
    path = tmp_path / "half.npz"
    np.savez(path, x=np.zeros((10, 3)), y=np.zeros(10, dtype=int), x_val=np.zeros((2, 3)))
    with pytest.raises(NaskdError, match="x_val and y_val"):
        load_data(DataConfig(dataset="", path=path))


def test_npz_with_mismatched_lengths(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((10, 3)), y=np.zeros(9, dtype=int))
    with pytest.raises(NaskdError) as info:
        load_data(DataConfig(dataset="", path=path))
    assert str(path) in str(info.value) and "(10, 3)" in str(info.value)


def test_npz_with_float_labels(tmp_path):
    path = tmp_path / "floaty.npz"
    np.savez(path, x=np.zeros((10, 3)), y=np.zeros(10, dtype=np.float32))
    with pytest.raises(NaskdError, match="integer class labels"):
        load_data(DataConfig(dataset="", path=path))


def test_npz_that_is_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(NaskdError) as info:
        load_data(DataConfig(dataset="", path=path))
    assert str(path) in str(info.value)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4))
    with pytest.raises(NaskdError) as info:
        load_data(DataConfig(dataset="", path=path))
    assert str(path) in str(info.value)


# --- loaders ------------------------------------------------------------------------------


def _expected() -> tuple[torch.Tensor, ...]:
    xt, yt, xv, yv = helpers_data._arrays()
    return torch.from_numpy(xt), torch.from_numpy(yt).long(), torch.from_numpy(xv), torch.from_numpy(yv).long()


@pytest.mark.parametrize("fn", ["load", "load_dataset"])
def test_loader_returning_pairs_or_datasets(tmp_path, fn):
    config = load_study(_data_study(tmp_path, {"loader": f"helpers_data:{fn}"}))
    assert config.data.loader == f"helpers_data:{fn}" and config.data.dataset == ""
    d = load_data(config.data)
    xt, yt, xv, yv = _expected()
    assert torch.equal(d.x_train, xt) and torch.equal(d.y_train, yt)
    assert torch.equal(d.x_val, xv) and torch.equal(d.y_val, yv)
    assert d.input_shape == (6,) and d.num_classes == 3
    assert d.split["split"] == f"given by helpers_data:{fn}"


def test_pairs_and_dataset_loaders_give_the_same_data():
    a = load_data(DataConfig(dataset="", loader="helpers_data:load"))
    b = load_data(DataConfig(dataset="", loader="helpers_data:load_dataset"))
    assert a.fingerprint == b.fingerprint


def test_loader_that_cannot_be_imported():
    with pytest.raises(NaskdError, match="helpers_data:nothing_here"):
        load_data(DataConfig(dataset="", loader="helpers_data:nothing_here"))


def test_loader_returning_the_wrong_thing():
    with pytest.raises(NaskdError, match=r"must return \(train, val\)"):
        load_data(DataConfig(dataset="", loader="helpers_data:load_one"))


# --- fingerprint -----------------------------------------------------------------------------


def test_fingerprint_changes_when_data_changes(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20) % 2
    np.savez(tmp_path / "a.npz", x=x, y=y)
    x2 = x.copy()
    x2[7, 1] += 0.5
    np.savez(tmp_path / "b.npz", x=x2, y=y)
    y2 = y.copy()
    y2[3] = 1 - y2[3]
    np.savez(tmp_path / "c.npz", x=x, y=y2)
    np.savez(tmp_path / "a_again.npz", x=x, y=y)
    prints = {
        name: load_data(DataConfig(dataset="", path=tmp_path / f"{name}.npz")).fingerprint
        for name in ("a", "b", "c", "a_again")
    }
    assert prints["a"] == prints["a_again"]
    assert len({prints["a"], prints["b"], prints["c"]}) == 3
    assert len(prints["a"]) == 16


def test_fingerprint_sees_shape_not_only_bytes():
    base = load_data(DataConfig(dataset="synthetic", samples=40, shape=(6,), classes=2))
    reshaped = Data(
        base.name,
        base.x_train.reshape(-1, 2, 3),
        base.y_train,
        base.x_val.reshape(-1, 2, 3),
        base.y_val,
        base.num_classes,
    )
    assert base.fingerprint != reshaped.fingerprint


def test_synthetic_seed_and_samples_change_the_fingerprint():
    a = load_data(DataConfig(dataset="synthetic", samples=100, shape=(4,), classes=2, seed=0))
    b = load_data(DataConfig(dataset="synthetic", samples=100, shape=(4,), classes=2, seed=1))
    c = load_data(DataConfig(dataset="synthetic", samples=102, shape=(4,), classes=2, seed=0))
    assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3
