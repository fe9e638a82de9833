"""Knowledge kinds inside real trials: every kind trains a student, feature pairing (automatic
and named), adapters that never reach the exported student, the teacher feature cache, and a
study that searches the recipe together with the architecture."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import ROOT

from naskd.cli import main
from naskd.config import load_study
from naskd.errors import ConfigError
from naskd.knowledge.functional import LOSSES
from naskd.knowledge.hooks import Tap, relative_pairs, stage_names
from naskd.spaces import BuildContext, build_student
from naskd.trial import build_context, evaluate, full_spec

CNN2D = {"family": "cnn2d", "arch": {"stages": 2, "width": 8}}
MLP = {"family": "mlp", "arch": {"depth": 2, "width": [16, 16]}}


def _digits_study(write_study, filename="study.toml", **distill):
    return load_study(
        write_study(
            filename,
            data={"dataset": "digits"},
            teacher={"epochs": 2},
            space={"path": str(ROOT / "search_spaces" / "cnn2d.toml")},
            distill={"steps": 15, "batch_size": 32, **distill},
        )
    )


@pytest.fixture(scope="module")
def digits_contexts(tmp_path_factory):
    """One context per knowledge kind on digits (conv teacher), sharing the teacher cache."""
    from conftest import small_study, toml_text

    out = {}
    folder = tmp_path_factory.mktemp("kinds")
    for kind in LOSSES:
        doc = small_study(
            data={"dataset": "digits"},
            teacher={"epochs": 2},
            space={"path": str(ROOT / "search_spaces" / "cnn2d.toml")},
            distill={"steps": 15, "batch_size": 32, "knowledge": [{"kind": kind}]},
        )
        path = folder / f"{kind}.toml"
        path.write_text(toml_text(doc))
        out[kind] = build_context(load_study(path))
    return out


@pytest.mark.parametrize("kind", [k for k in LOSSES if k != "attention_distribution"])
def test_every_kind_distils_a_conv_student(digits_contexts, kind):
    context = digits_contexts[kind]
    result = evaluate(full_spec(CNN2D, context.config), context)
    assert result.status == "complete", result.reason
    assert result.spec["recipe"]["knowledge"][0]["kind"] == kind
    assert result.spec["recipe"]["knowledge"][0]["weight"] == LOSSES[kind].default_weight


def test_attention_transfer_on_a_vector_student_is_invalid_with_reason(digits_contexts):
    context = digits_contexts["attention_transfer"]
    result = evaluate(full_spec(MLP, context.config), context)
    assert result.status == "invalid"
    assert "convolutional feature maps" in result.reason


def test_relation_kinds_work_across_families(digits_contexts):
    context = digits_contexts["rkd_distance"]
    assert evaluate(full_spec(MLP, context.config), context).status == "complete"


def test_automatic_pairing_is_by_relative_depth():
    assert relative_pairs(["t0", "t1", "t2"], ["s0"]) == [("t0", "s0"), ("t1", "s0"), ("t2", "s0")]
    assert relative_pairs(["t0", "t1"], ["s0", "s1", "s2", "s3"]) == [("t0", "s1"), ("t1", "s3")]
    assert relative_pairs(["t0", "t1", "t2", "t3"], ["s0", "s1"]) == [
        ("t0", "s0"),
        ("t1", "s0"),
        ("t2", "s1"),
        ("t3", "s1"),
    ]
    student = build_student({"family": "cnn1d", "arch": {"stages": 3}}, BuildContext((1, 40), 10))
    assert stage_names(student) == ["stages.0", "stages.1", "stages.2"]


def test_tap_captures_without_changing_the_model():
    model = build_student({"family": "cnn1d", "arch": {"stages": 2, "width": 4}}, BuildContext((1, 40), 10)).eval()
    x = torch.randn(3, 1, 40)
    before = model(x)
    with Tap(model, ["stages.1"], embedding=True) as tap:
        again = model(x)
        assert tap.values["stages.1"].shape[0] == 3 and tap.values["embedding"].shape[0] == 3
    assert torch.equal(before, again)
    assert not model._forward_hooks and not model.stages[1]._forward_hooks  # hooks removed


def test_fitnet_adapters_are_not_part_of_the_student(digits_contexts):
    context = digits_contexts["fitnet"]
    result = evaluate(full_spec(CNN2D, context.config), context)
    fresh = build_student(CNN2D, BuildContext(context.data.input_shape, context.data.num_classes))
    assert set(result.student.state_dict()) == set(fresh.state_dict())


def test_teacher_features_are_cached_once_and_reused(write_study):
    config = _digits_study(write_study, knowledge=[{"kind": "fitnet"}])
    context = build_context(config)
    first = evaluate(full_spec(CNN2D, config), context)
    assert first.status == "complete"
    forwards = []
    handle = context.teacher.model.register_forward_hook(lambda *a: forwards.append(1))
    try:
        assert evaluate(full_spec(CNN2D, config), context).status == "complete"
    finally:
        handle.remove()
    assert forwards == [], "a cached teacher feature must not be recomputed"


def test_features_over_budget_are_recomputed_each_step(write_study, caplog):
    config = _digits_study(write_study, knowledge=[{"kind": "fitnet"}], feature_cache_mb=0)
    context = build_context(config)
    forwards = []
    handle = context.teacher.model.register_forward_hook(lambda *a: forwards.append(1))
    try:
        with caplog.at_level(logging.INFO, logger="naskd.cache"):
            assert evaluate(full_spec(CNN2D, config), context).status == "complete"
    finally:
        handle.remove()
    assert "recomputed every step" in caplog.text
    # one probe pass for the cache decision, one for the adapter shapes, then one per step
    assert len(forwards) >= 15


def test_named_pairs_and_their_errors(write_study):
    config = _digits_study(
        write_study, knowledge=[{"kind": "fitnet"}], pairs=[{"teacher": "stages.2", "student": "stages.0"}]
    )
    context = build_context(config)
    result = evaluate(full_spec(CNN2D, config), context)
    assert result.status == "complete", result.reason

    missing_student = evaluate(full_spec({"family": "cnn2d", "arch": {"stages": 1}}, config), context)
    assert missing_student.status == "complete"  # stages.0 exists in a one-stage student
    bad = _digits_study(
        write_study, "bad.toml", knowledge=[{"kind": "fitnet"}], pairs=[{"teacher": "stages.0", "student": "blocks.9"}]
    )
    result = evaluate(full_spec(CNN2D, bad), build_context(bad))
    assert result.status == "invalid" and "blocks.9" in result.reason and "stages.0" in result.reason

    wrong_teacher = _digits_study(
        write_study, "wrong.toml", knowledge=[{"kind": "fitnet"}], pairs=[{"teacher": "layer3", "student": "stages.0"}]
    )
    with pytest.raises(ConfigError) as err:
        build_context(wrong_teacher)
    assert "[distill.pairs[0]].teacher" in str(err.value) and "stages.0" in str(err.value)


def test_knowledge_list_errors_name_the_key(write_study):
    with pytest.raises(ConfigError, match=r"\[distill.knowledge\[1\]\].kind: .*did you mean 'similarity_preserving'"):
        load_study(write_study(distill={"steps": 5, "knowledge": [{"kind": "kd"}, {"kind": "similarity_preservin"}]}))
    with pytest.raises(ConfigError, match=r"\[distill.knowledge\[0\]\].temprature: unknown key; did you mean"):
        load_study(write_study(distill={"steps": 5, "knowledge": [{"kind": "kd", "temprature": 2}]}))
    with pytest.raises(ConfigError, match=r"\[distill\].alpha: is the shorthand"):
        load_study(write_study(distill={"steps": 5, "alpha": 0.5, "knowledge": [{"kind": "kd"}]}))
    config = load_study(
        write_study(
            distill={
                "steps": 5,
                "temperature": 2.0,
                "ce_weight": 0.3,
                "knowledge": [{"kind": "kd", "weight": 0.7}, {"kind": "pkt"}],
            }
        )
    )
    assert config.distill.knowledge == (
        {"kind": "kd", "weight": 0.7, "temperature": 2.0},
        {"kind": "pkt", "weight": 30000.0, "eps": 1e-7},
    )
    assert config.distill.ce_weight == 0.3


def test_attention_distribution_between_transformers(write_study, tmp_path):
    teacher = build_student(
        {"family": "transformer", "arch": {"layers": 2, "d_model": 32, "heads": 4}}, BuildContext((4, 16), 4)
    )
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    study = write_study(
        data={"dataset": "synthetic", "samples": 200, "shape": [4, 16], "classes": 4},
        teacher={"model": "helpers_teacher:build_transformer", "checkpoint": str(tmp_path / "teacher.pt")},
        space={"family": "transformer", "params": {"layers": {"value": 1}}},
        distill={"steps": 10, "batch_size": 32, "knowledge": [{"kind": "attention_distribution"}]},
    )
    config = load_study(study)
    context = build_context(config)
    result = evaluate(
        full_spec({"family": "transformer", "arch": {"layers": 1, "d_model": 16, "heads": 2}}, config), context
    )
    assert result.status == "complete", result.reason
    result = evaluate(full_spec({"family": "mlp", "arch": {"depth": 1}}, config), context)
    assert result.status == "invalid" and "attention layers" in result.reason


def test_a_study_searches_the_recipe_with_the_architecture(write_study, tmp_path, capsys):
    study = write_study(
        data={"dataset": "digits"},
        teacher={"epochs": 2},
        space={
            "family": "mlp",
            "params": {
                "depth": {"type": "int", "low": 1, "high": 2},
                "width": {"type": "int", "low": 8, "high": 32, "per": "depth"},
            },
            "recipe": {
                "knowledge": {"type": "categorical", "choices": ["kd", "kd+similarity_preserving", "pkt"]},
                "temperature": {"type": "float", "low": 1.0, "high": 8.0},
                "ce_weight": {"type": "float", "low": 0.0, "high": 1.0},
            },
        },
        distill={"steps": 15, "batch_size": 32},
        search={"trials": 6, "sampler": "random", "seed": 1},
    )
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["front", str(study), "--out", str(out), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)["front"]
    recipes = [e["spec"]["recipe"] for e in front]
    assert all({"knowledge", "ce_weight", "lr"} <= set(r) for r in recipes)
    kinds = {"+".join(t["kind"] for t in r["knowledge"]) for r in recipes}
    assert kinds <= {"kd", "kd+similarity_preserving", "pkt"}
    # The chosen recipe travels into the export.
    dest = tmp_path / "student"
    assert (
        main(["export", str(study), "--out", str(out), "--trial", str(front[0]["number"]), "-o", str(dest), "-q"]) == 0
    )
    assert json.loads((dest / "spec.json").read_text())["spec"]["recipe"] == recipes[0]


def test_recipe_space_errors_name_the_key(write_study):
    with pytest.raises(ConfigError, match=r"\[space\].recipe.knowledge: unknown knowledge kind \"kdd\""):
        load_study(
            write_study(
                space={
                    "family": "mlp",
                    "params": {},
                    "recipe": {"knowledge": {"type": "categorical", "choices": ["kd", "kdd"]}},
                }
            )
        )
