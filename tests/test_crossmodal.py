"""Cross-modal distillation: the teacher reads its own view of the samples (npz ``x_teacher``,
a loader's triples, the built-in mnist1d_crossmodal), its outputs are cached under that view,
the students learn and are measured on theirs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from naskd.cli import main
from naskd.config import DataConfig, load_study
from naskd.data import load_data
from naskd.errors import NaskdError
from naskd.trial import build_context, evaluate, full_spec

STUDENT, TEACHER = (16,), (3, 8)


def _views(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Four classes; the teacher's view (3 x 8) is clean, the student's (16) a noisy projection."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    centers = rng.normal(0, 1, size=(4, 24))
    clean = centers[y] + rng.normal(0, 0.3, size=(n, 24))
    student = clean[:, :16] + rng.normal(0, 1.0, size=(n, 16))
    return {"x": student.astype(np.float32), "x_teacher": clean.reshape(n, *TEACHER).astype(np.float32), "y": y}


@pytest.fixture
def npz(tmp_path):
    train, val = _views(400), _views(100, seed=1)
    path = tmp_path / "views.npz"
    np.savez(
        path,
        x=train["x"],
        x_teacher=train["x_teacher"],
        y=train["y"],
        x_val=val["x"],
        x_teacher_val=val["x_teacher"],
        y_val=val["y"],
    )
    return path


def _write(write_study, path, **distill):
    doc = write_study(distill={"steps": 40, "batch_size": 32, **distill})
    text = doc.read_text().replace(
        'dataset = "synthetic"\nsamples = 400\nshape = [16]\nclasses = 4', f'path = "{path}"'
    )
    doc.write_text(text)
    return doc


def test_an_npz_with_teacher_views_loads_both_views_row_for_row(npz):
    data = load_data(DataConfig(dataset="", path=npz))
    assert data.input_shape == STUDENT and data.cross_modal
    seen = data.teacher_view()
    assert seen.input_shape == TEACHER and not seen.cross_modal
    assert torch.equal(seen.y_train, data.y_train) and seen.fingerprint != data.fingerprint
    assert data.describe()["teacher_input_shape"] == list(TEACHER)


def test_a_split_npz_splits_both_views_with_the_same_rows(tmp_path):
    d = _views(200)
    path = tmp_path / "one.npz"
    np.savez(path, **d)
    data = load_data(DataConfig(dataset="", path=path))
    # Row k of either view is the same sample: the teacher view's first 16 values minus the
    # student's are the student's noise only (std 1), far from another sample's distance.
    diff = data.teacher_view().x_train.flatten(1)[:, :16] - data.x_train
    assert diff.std().item() < 1.2
    assert len(data.x_teacher_val) == len(data.y_val)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x_teacher_val": 1}, "'x_teacher_val' is given without 'x_teacher'"),
        ({"x_teacher": 1, "x_val": 1, "y_val": 1}, "'x_val' is given but 'x_teacher_val' is not"),
        ({"x_teacher": 1, "x_teacher_val": 1}, "'x_teacher_val' is given but 'x_val' is not"),
        ({"x_teacher": 2}, "expected array 'x_teacher' of shape (N, ...)"),
    ],
)
def test_mismatched_teacher_views_are_one_line_errors_naming_the_file(tmp_path, arrays, message):
    train, val = _views(100), _views(40, seed=1)
    values = {
        "x": train["x"],
        "y": train["y"],
        "x_teacher": train["x_teacher"],
        "x_val": val["x"],
        "y_val": val["y"],
        "x_teacher_val": val["x_teacher"],
    }
    chosen = {k: values[k] for k in ("x", "y")}
    for name, how in arrays.items():
        chosen[name] = values[name] if how == 1 else values[name][:-3]
    path = tmp_path / "bad.npz"
    np.savez(path, **chosen)
    with pytest.raises(NaskdError) as err:
        load_data(DataConfig(dataset="", path=path))
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_loader_may_return_both_views(tmp_path, monkeypatch):
    module = tmp_path / "views_loader.py"
    module.write_text(
        "import numpy as np\n"
        "def both():\n"
        "    x = np.zeros((20, 5), 'f4'); t = np.ones((20, 2, 3), 'f4'); y = np.arange(20) % 2\n"
        "    return (x, t, y), [(x[i], t[i], int(y[i])) for i in range(8)]\n"
        "def one_sided():\n"
        "    x = np.zeros((20, 5), 'f4'); t = np.ones((20, 2, 3), 'f4'); y = np.arange(20) % 2\n"
        "    return (x, t, y), (x, y)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_data(DataConfig(dataset="", loader="views_loader:both"))
    assert data.input_shape == (5,) and data.teacher_view().input_shape == (2, 3) and len(data.y_val) == 8
    with pytest.raises(NaskdError, match="for its train set only"):
        load_data(DataConfig(dataset="", loader="views_loader:one_sided"))


def test_the_teacher_reads_only_its_view_and_costs_are_on_the_students(write_study, npz):
    seen: list[tuple[int, ...]] = []
    context = build_context(load_study(_write(write_study, npz, cache_teacher=False)))
    assert context.teacher_info["flops"] > 0 and context.data.input_shape == STUDENT
    hook = context.teacher.model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[1:])))
    try:
        spec = full_spec({"family": "mlp", "arch": {"depth": 1, "width": [8]}}, context.config)
        result = evaluate(spec, context)
    finally:
        hook.remove()
    assert result.status == "complete", result.reason
    assert seen and set(seen) == {TEACHER}  # 40 steps with the cache off: the teacher ran on its own view
    # The student's FLOPs are those of a 16-input MLP (16*8 + 8*4 multiply-adds, x2).
    assert result.metrics["flops"] == 2 * (16 * 8 + 8 * 4)


def test_the_teacher_cache_is_keyed_on_the_teachers_view(write_study, npz, tmp_path, monkeypatch):
    monkeypatch.setenv("NASKD_CACHE_DIR", str(tmp_path / "own-cache"))  # outputs cached here, by this test
    config = load_study(_write(write_study, npz))
    first = build_context(config)
    # Another student view of the same samples: the teacher's cached outputs are reused.
    with np.load(npz) as f:
        arrays = dict(f)
    other = tmp_path / "other.npz"
    np.savez(other, **{**arrays, "x": arrays["x"] * 2, "x_val": arrays["x_val"] * 2})
    second = build_context(load_study(_write(write_study, other)))
    assert second.data.fingerprint != first.data.fingerprint
    assert first.cache.forward_batches > 0  # the first study ran the teacher ...
    assert second.cache.forward_batches == 0  # ... the second read every teacher output from the cache
    assert torch.equal(second.train_logits[0].cpu(), first.train_logits[0].cpu())


@pytest.mark.parametrize("scheme", ["mutual", "born_again"])
def test_online_schemes_give_the_teacher_its_view(write_study, npz, scheme):
    context = build_context(load_study(_write(write_study, npz)))
    spec = full_spec({"family": "mlp", "arch": {"depth": 1, "width": [8]}}, context.config)
    spec["recipe"]["scheme"] = scheme
    result = evaluate(spec, context)
    assert result.status == "complete", result.reason


def test_the_built_in_crossmodal_mnist1d_pairs_a_coarse_noisy_view_with_the_signal():
    data = load_data(DataConfig(dataset="mnist1d_crossmodal"))
    assert data.input_shape == (1, 20) and data.teacher_view().input_shape == (1, 40)
    plain = load_data(DataConfig(dataset="mnist1d"))
    assert data.teacher_view().fingerprint == plain.fingerprint  # the mnist1d teacher is reused
    coarse = plain.x_train.reshape(len(plain.y_train), 1, 20, 2).mean(-1)
    noise = data.x_train - coarse
    assert abs(noise.std().item() - 0.25) < 0.01 and abs(noise.mean().item()) < 0.01


def test_a_crossmodal_study_runs_end_to_end_and_exports(write_study, npz, tmp_path):
    out = tmp_path / "out"
    study = _write(write_study, npz)
    assert main(["search", str(study), "--trials", "2", "--out", str(out), "--quiet"]) == 0
    front = json.loads((out / "front.json").read_text())
    number = front["front"][0]["number"]
    assert (
        main(["export", str(study), "--out", str(out), "--trial", str(number), "-o", str(tmp_path / "exp"), "--quiet"])
        == 0
    )
    check = json.loads((tmp_path / "exp" / "spec.json").read_text())
    assert check["input_shape"] == list(STUDENT)
