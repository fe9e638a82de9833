"""int8 students: BatchNorm folding and the 1-D convolution rewrite keep the float function;
QAT as the last phase of a trial gives a real int8 model (int8 weights) scored as such, smaller
than its float32 twin and measured lowered; its saved state reloads bit for bit; export writes
a torch.export program that reproduces the recorded accuracy; what the quantizer cannot take
is an invalid trial with the reason; the space's precision key is checked."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import small_study, toml_text

from naskd.cli import main
from naskd.config import load_study
from naskd.errors import ConfigError
from naskd.export import load_exported, rebuild_student, save_student
from naskd.quantize import (
    Int8Student,
    _conv1d_as_2d,
    fold_batchnorm,
    int8_bytes,
    int8_state,
    load_int8_state,
    lower,
    quantize_untrained,
)
from naskd.spaces import BuildContext, build_student
from naskd.spaces.space import load_space
from naskd.trial import build_context, evaluate, full_spec, validate

CNN1D = {"family": "cnn1d", "arch": {"stages": 2, "width": 8, "residual": True, "batchnorm": True}}


def _trained_bn_student() -> torch.nn.Module:
    """A cnn1d student whose BatchNorm statistics are not the initial ones."""
    torch.manual_seed(0)
    student = build_student(CNN1D, BuildContext((1, 40), 10))
    student.train()
    with torch.no_grad():
        for _ in range(5):
            student(torch.randn(32, 1, 40) * 3 + 1)
    return student.eval()


def test_folding_batchnorm_and_the_1d_rewrite_keep_the_students_function():
    student = _trained_bn_student()
    x = torch.randn(16, 1, 40)
    folded = fold_batchnorm(student, x[:2])
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in student.modules())  # the student is untouched
    assert torch.allclose(folded(x), student(x), atol=1e-5)
    as_2d = _conv1d_as_2d(folded)
    assert not any(isinstance(m, torch.nn.Conv1d) for m in as_2d.modules())
    assert torch.allclose(as_2d(x), student(x), atol=1e-5)
    # Padding given as a word ("same") is carried over too.
    same = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 5, padding="same"))
    assert torch.allclose(_conv1d_as_2d(copy.deepcopy(same))(x), same(x), atol=1e-6)


def test_the_int8_model_has_int8_weights_and_its_state_reloads_bit_for_bit():
    student = _trained_bn_student()
    x = torch.randn(64, 1, 40)
    int8 = quantize_untrained(student, x[:8])
    weights = [t for t in int8.graph.state_dict().values() if t.dtype == torch.int8]
    assert len(weights) == 7  # 2 stages x (2 convs + 1 shortcut) + the head
    assert int8_bytes(int8) < 0.6 * len(_saved(student))  # 2k params: the archive overhead is a large part
    rebuilt = load_int8_state(quantize_untrained(student, torch.zeros(2, 1, 40)), int8_state(int8))
    assert torch.equal(rebuilt(x), int8(x))
    with pytest.raises(ValueError, match="activation quantization parameters"):
        load_int8_state(
            quantize_untrained(
                build_student({"family": "mlp", "arch": {}}, BuildContext((1, 40), 10)), torch.zeros(2, 1, 40)
            ),
            int8_state(int8),
        )


def test_the_lowered_int8_model_computes_what_the_converted_one_does():
    student = _trained_bn_student()
    x = torch.randn(128, 1, 40)
    int8 = quantize_untrained(student, x[:8])
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True), torch.inference_mode():
        lowered = lower(int8, x)
        fast, reference = lowered(x), int8(x)
    # oneDNN's int8 kernels round differently from the reference graph in the last step at most.
    assert (fast.argmax(1) == reference.argmax(1)).float().mean() >= 0.98
    assert torch.allclose(fast, reference, atol=0.1 * reference.abs().max().item())


def _saved(model: torch.nn.Module) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


@pytest.fixture
def context(write_study):
    return build_context(load_study(write_study(distill={"steps": 40, "batch_size": 32})))


def _spec(context, precision: str, family: str = "mlp", arch: dict | None = None, **extra):
    sampled = {
        "family": family,
        "arch": {"depth": 2, "width": [32, 32]} if arch is None else arch,
        "precision": precision,
        **extra,
    }
    return full_spec(sampled, context.config)


def test_an_int8_trial_ends_with_quantized_distillation_and_is_scored_as_int8(context):
    float32 = evaluate(_spec(context, "float32"), context)
    int8 = evaluate(_spec(context, "int8"), context)
    assert float32.status == int8.status == "complete", int8.reason
    assert isinstance(int8.student, Int8Student)
    assert any(t.dtype == torch.int8 for t in int8.student.graph.state_dict().values())  # converted, not fake
    assert set(int8.terms) == {"ce", "kd", "qat_ce", "qat_kd"}
    assert int8.steps == float32.steps == context.plan.target_steps
    assert int8.curve[-1][0] == context.plan.target_steps - 1
    # The recorded accuracy is the int8 model's own, on the CPU.
    assert validate(int8.student, context)["accuracy"] == int8.metrics["accuracy"]
    assert int8.metrics["model_bytes"] < 0.75 * float32.metrics["model_bytes"]  # 1.8k params: mostly archive overhead
    assert int8.metrics["params"] == float32.metrics["params"]
    assert abs(int8.metrics["accuracy"] - float32.metrics["accuracy"]) < 0.1


def test_a_saved_int8_student_reloads_with_its_recorded_accuracy(context, tmp_path):
    spec = _spec(context, "int8")
    result = evaluate(spec, context)
    save_student(result.student, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)  # tensors only
    assert "qparams" in state
    loaded = rebuild_student(spec, tmp_path / "s.pt", context.build)
    assert validate(loaded, context)["accuracy"] == result.metrics["accuracy"]


def test_a_student_the_quantizer_cannot_take_is_invalid_with_the_reason(context):
    spec = _spec(context, "int8", family="user", arch={}, builder="helpers_deploy:branchy")
    result = evaluate(spec, context)
    assert result.status == "invalid"
    assert result.reason.startswith("invalid spec: int8: ") and "\n" not in result.reason


def test_an_int8_student_is_judged_only_at_rungs_before_its_qat_phase(write_study):
    context = build_context(
        load_study(
            write_study(
                distill={"steps": 90, "batch_size": 32, "qat_fraction": 0.5},
                fidelity={"first_rung": 10, "reduction_factor": 3},
            )
        )
    )
    seen: list[int] = []

    def gate(entries):
        seen.append(entries[-1]["steps"])
        return True

    result = evaluate(_spec(context, "int8"), context, gate=gate)
    assert result.status == "complete", result.reason
    assert list(context.plan.rungs) == [10, 30] and seen == [10, 30]
    context = build_context(
        load_study(
            write_study(
                distill={"steps": 90, "batch_size": 32, "qat_fraction": 0.8},
                fidelity={"first_rung": 10, "reduction_factor": 3},
            )
        )
    )
    seen.clear()
    assert evaluate(_spec(context, "int8"), context, gate=gate).status == "complete"
    assert seen == [10]  # the QAT phase starts at step 18: the rung at 30 falls inside it


@pytest.mark.parametrize(
    "value, words",
    [
        ("int4", 'must be one of "float32", "int8"'),
        ([], "got an empty list"),
        (["int8", "int8"], "repeats a value"),
        (8, "got 8"),
    ],
)
def test_a_bad_precision_in_the_space_names_the_key(value, words, tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_space({"family": "mlp", "params": {}, "precision": value}, "study.toml", tmp_path)
    assert "[space].precision" in str(caught.value) and words in str(caught.value)


def test_the_space_samples_the_precision_and_specs_without_it_are_float32(tmp_path):
    import optuna

    space = load_space({"family": "mlp", "params": {}, "precision": ["float32", "int8"]}, "study.toml", tmp_path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = {space.sample(study.ask())["precision"] for _ in range(12)}
    assert drawn == {"float32", "int8"}
    assert (
        load_space({"family": "mlp", "params": {}, "precision": "int8"}, "s", tmp_path).sample(study.ask())["precision"]
        == "int8"
    )
    assert "precision" not in load_space({"family": "mlp", "params": {}}, "s", tmp_path).sample(study.ask())


def test_qat_settings_are_checked(write_study, capsys):
    study = write_study(distill={"steps": 40, "qat_fraction": 1.0})
    assert main(["search", str(study), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "[distill].qat_fraction" in err and "(0, 0.9]" in err and "\n" not in err


def test_an_int8_study_searches_both_precisions_and_exports_an_int8_program(tmp_path, capsys):
    space = {
        "family": "mlp",
        "precision": ["float32", "int8"],
        "params": {"depth": {"value": 1}, "width": {"type": "int", "low": 96, "high": 128, "per": "depth"}},
    }
    doc = small_study(
        space=space,
        fidelity={"rule": "off"},
        search={"trials": 4, "sampler": "random", "objectives": ["accuracy", "model_bytes"]},
    )
    study = tmp_path / "int8.toml"
    study.write_text(toml_text(doc))
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["front", str(study), "--out", str(out), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)["front"]
    int8 = [e for e in front if e["spec"].get("precision") == "int8"]
    assert int8, [e["spec"] for e in front]
    # Confirmation at the target budget quantizes as the trial did: it reproduces the int8 figure.
    assert main(["confirm", str(study), "--out", str(out), "--top", "4", "--steps", "30", "-q"]) == 0
    capsys.readouterr()
    assert main(["front", str(study), "--out", str(out), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)["front"]
    for e in front:
        assert e["metrics"]["long_accuracy"] == e["metrics"]["accuracy"], e["spec"].get("precision")
    entry = next(e for e in front if e["spec"].get("precision") == "int8")
    dest = tmp_path / "exported"
    assert main(["export", str(study), "--out", str(out), "--trial", str(entry["number"]), "-o", str(dest)]) == 0
    printed = capsys.readouterr().out
    assert "model.pt2" in printed
    program = torch.export.load(str(dest / "model.pt2")).module()
    from naskd.data import load_data
    from naskd.scoring import predict, score

    data = load_data(load_study(study).data)
    recorded = entry["metrics"]["accuracy"]
    with torch.no_grad():  # an exported program is fixed in eval mode: no .eval() to call
        assert score(program(data.x_val), data.y_val)["accuracy"] == recorded
    for target in (dest, dest / "model.pt"):  # the folder's model.pt2, and the int8 state rebuilt
        assert score(predict(load_exported(target), data.x_val), data.y_val)["accuracy"] == recorded
    readme = (dest / "README.md").read_text()
    assert 'torch.export.load("model.pt2")' in readme and "import torchao.quantization.pt2e" in readme
    # torch.onnx translates the int8 graph, but onnxruntime runs it with its own int8 kernels:
    # the ONNX model ships only where those reproduce the int8 graph, and otherwise the export
    # says why in its output and README.
    if (dest / "model.onnx").is_file():
        accuracy = score(predict(load_exported(dest / "model.onnx"), data.x_val), data.y_val)["accuracy"]
        assert abs(accuracy - recorded) <= 1 / len(data.y_val) + 1e-6
    else:
        assert "no model.onnx: onnxruntime's int8 kernels do not reproduce torch's int8 graph" in printed
        assert "- no `model.onnx`: onnxruntime's int8 kernels" in readme


def test_an_int8_trial_cut_short_continues_from_its_rung_to_the_same_int8_student(write_study, tmp_path):
    from naskd.fidelity import CheckpointFile

    context = build_context(
        load_study(
            write_study(distill={"steps": 90, "batch_size": 32}, fidelity={"first_rung": 10, "reduction_factor": 3})
        )
    )
    spec = _spec(context, "int8")
    straight = evaluate(spec, context)
    checkpoint = CheckpointFile(tmp_path / "trial.pt")

    def killed(entries):  # the process dies after the rung's state is saved
        raise SystemExit(1)

    with pytest.raises(SystemExit):
        evaluate(spec, context, gate=killed, checkpoint=checkpoint)
    assert checkpoint.load() is not None
    continued = evaluate(spec, context, checkpoint=checkpoint)
    assert continued.status == "complete" and continued.metrics["accuracy"] == straight.metrics["accuracy"]
    a, b = int8_state(straight.student), int8_state(continued.student)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
