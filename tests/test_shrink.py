"""The shrink family: students cut from the trained teacher (depth: blocks replaced by
identity; width: Torch-Pruning per stage), deterministic to rebuild, inherited or fresh
weights, one-line reasons for what cannot be built, and a shrink study from search to an
export that reloads without the teacher."""

from __future__ import annotations

import json

import helpers_deploy
import pytest
import torch
from conftest import small_study, toml_text

from naskd.cli import main
from naskd.config import load_study
from naskd.errors import NaskdError
from naskd.export import load_exported
from naskd.measure import count_params
from naskd.spaces import build_student, check_spec
from naskd.spaces.families.shrink import SHRINK, _criteria, teacher_layout
from naskd.trial import build_context, evaluate, full_spec, validate


def _shrink(context, **arch):
    return full_spec({"family": "shrink", "arch": arch}, context.config, context.teacher.fingerprint)


@pytest.fixture
def context(write_study):
    """The built-in synthetic teacher: an MLP, stages layers.0 and layers.1, one droppable layer."""
    return build_context(load_study(write_study(distill={"steps": 30, "batch_size": 32})))


@pytest.fixture
def residual_context(write_study, tmp_path):
    torch.manual_seed(0)
    torch.save(helpers_deploy.residual().state_dict(), tmp_path / "residual.pt")
    return build_context(
        load_study(
            write_study(
                teacher={"model": "helpers_deploy:residual", "checkpoint": str(tmp_path / "residual.pt")},
                distill={"steps": 30, "batch_size": 32},
            )
        )
    )


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_layout_finds_stages_blocks_and_the_output_layer(context, residual_context):
    mlp = SHRINK.layout(context.build)
    assert mlp.stages == ("layers.0", "layers.1") and mlp.blocks == ("layers.1.0",) and mlp.head == "head"
    res = SHRINK.layout(residual_context.build)
    # The innermost shape-preserving items: the two residual blocks, not the stage holding them.
    assert res.stages == ("stages.0",) and res.blocks == ("stages.0.0", "stages.0.1") and res.head == "head"
    named = teacher_layout(helpers_deploy.torchvision_named(), (16,))
    assert named.stages == ("layer1", "layer2") and named.blocks == ("layer2.0",) and named.head == "fc"
    from naskd.teacher import Teacher

    teacher = Teacher(helpers_deploy.torchvision_named().eval(), "test", "f0", rebuild=helpers_deploy.torchvision_named)
    cut = build_student({"family": "shrink", "arch": {"width": [0.5, 0.25]}}, teacher.build_context((16,), 4))
    assert cut.layer1[0].out_features == 16 and cut.layer2[0].out_features == 8
    from naskd.teacher import _ConvTeacher

    conv = teacher_layout(_ConvTeacher(1, [8, 16, 16], (1, 40), 10), (1, 40))
    assert conv.blocks == ()  # every stage changes channels or length: nothing to drop


def test_the_teachers_own_architecture_with_its_weights_is_the_teacher(context):
    student = build_student(_shrink(context), context.build)
    student.eval()
    x = context.data.x_val[:64]
    assert torch.equal(student(x), context.teacher.model(x))
    assert count_params(student) == count_params(context.teacher.model)


def test_width_prunes_per_stage_and_keeps_the_output_layer(context):
    spec = _shrink(context, width=[0.5, 0.25])
    student = build_student(spec, context.build)
    assert student.layers[0][0].out_features == 64 and student.layers[1][0].out_features == 32
    assert student.head.out_features == context.data.num_classes
    assert student(context.data.x_val[:4]).shape == (4, context.data.num_classes)
    # Deterministic: the same spec rebuilds the same student, so saved weights load into it.
    assert _same(student, build_student(spec, context.build))


def test_each_criterion_builds_and_ranks_channels_from_the_teachers_weights(context):
    assert set(SHRINK.keys["criterion"].choices) == set(_criteria())  # what a spec may name is what exists
    kept = {}
    for criterion in ("l1", "l2", "lamp", "fpgm", "random"):
        torch.manual_seed(0)
        student = build_student(_shrink(context, width=0.25, criterion=criterion), context.build)
        kept[criterion] = student.layers[0][0].weight.detach().clone()
    teacher_rows = context.teacher.model.layers[0][0].weight.detach()
    for criterion, rows in kept.items():  # every kept neuron is one of the teacher's, unchanged
        assert len(rows) == 32 and all(any(torch.equal(r, t) for t in teacher_rows) for r in rows), criterion
    assert not torch.equal(kept["l2"], kept["random"])


def test_dropping_a_block_replaces_it_by_identity(residual_context):
    ctx = residual_context.build
    full = build_student(_shrink(residual_context), ctx)
    dropped = build_student(_shrink(residual_context, keep=[True, False]), ctx)
    assert isinstance(dropped.stages[0][1], torch.nn.Identity)
    assert count_params(full) - count_params(dropped) == 32 * 32 + 32
    # Residual adds stay consistent when the stage is also pruned.
    both = build_student(_shrink(residual_context, keep=[False, True], width=0.5), ctx)
    assert both(torch.zeros(3, 16)).shape == (3, 4)
    assert both.stem.out_features == both.stages[0][1].fc.in_features


def test_fresh_weights_are_reinitialised_inherited_ones_are_the_teachers(context):
    torch.manual_seed(1)
    fresh = build_student(_shrink(context, init="fresh"), context.build)
    inherited = build_student(_shrink(context), context.build)
    assert _same(inherited, context.teacher.model)
    assert not torch.equal(fresh.head.weight, inherited.head.weight)


@pytest.mark.parametrize(
    "arch, words",
    [
        ({"width": [0.5]}, "width has 1 entries but the teacher has 2 stages (layers.0, layers.1)"),
        ({"keep": [True, False]}, "keep has 2 entries but the teacher has 1 blocks (layers.1.0)"),
        ({"stages": 3}, "stages is 3 but the teacher has 2 stages"),
        ({"teacher": "0123456789abcdef"}, "drawn from teacher 0123456789abcdef"),
        ({"width": 0.0}, "width must be >= 0.01"),
        ({"criterion": "taylor"}, "criterion must be one of"),
    ],
)
def test_specs_that_do_not_fit_the_teacher_say_why(context, arch, words):
    reason = check_spec({"family": "shrink", "arch": arch}, context.build)
    assert reason is not None and words in reason, reason


def test_a_teacher_torch_pruning_cannot_trace_makes_trials_invalid_not_a_crash(write_study, tmp_path):
    torch.save(helpers_deploy.detached().state_dict(), tmp_path / "d.pt")
    context = build_context(
        load_study(write_study(teacher={"model": "helpers_deploy:detached", "checkpoint": str(tmp_path / "d.pt")}))
    )
    result = evaluate(_shrink(context, width=0.5), context)
    assert result.status == "invalid"
    assert "Torch-Pruning cannot prune this teacher" in result.reason and "\n" not in result.reason


def test_a_torchscript_teacher_cannot_be_shrunk(write_study, tmp_path):
    import helpers_teacher

    torch.jit.save(torch.jit.script(helpers_teacher.build()), tmp_path / "t.ts")
    context = build_context(load_study(write_study(teacher={"torchscript": str(tmp_path / "t.ts")})))
    result = evaluate(_shrink(context, width=0.5), context)
    assert result.status == "invalid" and "TorchScript teacher cannot be rebuilt" in result.reason


def test_inherited_weights_start_ahead_of_fresh_ones(context):
    inherited = evaluate(_shrink(context, width=0.5), context)
    fresh = evaluate(_shrink(context, width=0.5, init="fresh"), context)
    assert inherited.status == fresh.status == "complete"
    assert inherited.metrics["accuracy"] >= fresh.metrics["accuracy"]
    assert validate(inherited.student, context)["accuracy"] == inherited.metrics["accuracy"]


def test_a_shrink_study_searches_records_the_teacher_and_exports_without_it(tmp_path, capsys):
    space = {
        "family": "shrink",
        "params": {
            "stages": {"value": 2},
            "width": {"type": "categorical", "choices": [0.125, 0.25, 0.5], "per": "stages"},
            "blocks": {"value": 1},
            "keep": {"type": "categorical", "choices": [True, False], "per": "blocks"},
            "init": {"type": "categorical", "choices": ["inherited", "fresh"]},
        },
    }
    study = tmp_path / "shrink.toml"
    study.write_text(toml_text(small_study(space=space, search={"trials": 4, "sampler": "random"})))
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["front", str(study), "--out", str(out), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    entry = summary["front"][0]
    assert entry["spec"]["arch"]["teacher"] == build_context(load_study(study)).teacher.fingerprint
    dest = tmp_path / "exported"
    assert main(["export", str(study), "--out", str(out), "--trial", str(entry["number"]), "-o", str(dest), "-q"]) == 0
    # The torch.export program reloads with torch alone: no teacher, no naskd study; the
    # state_dict would need the teacher to rebuild, so loading it says to take model.pt2.
    program = torch.export.load(dest / "model.pt2").module()
    assert program(torch.zeros(2, 16)).shape == (2, 4)
    with pytest.raises(NaskdError, match=r"a shrink student is built from its teacher.*model.pt2 instead"):
        load_exported(dest / "model.pt")


def test_a_space_sized_for_another_teacher_is_refused_at_the_start(write_study, capsys):
    space = {
        "family": "shrink",
        "params": {"stages": {"value": 3}, "width": {"type": "categorical", "choices": [0.25, 0.5], "per": "stages"}},
    }
    study = write_study(space=space)
    assert main(["search", str(study), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("[space.params].stages: is 3 but the teacher has 2 stages (layers.0, layers.1)"), err
    assert "\n" not in err
