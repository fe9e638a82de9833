"""The distillation schemes on the one engine: each does what it says (mutual trains a copy of
the teacher and never reads the cache; self leaves no heads on the student; born-again chains
generations and can give the student the teacher's architecture; several teachers each
teach), on both fidelity paths, with a searched scheme, baseline, confirm and export; and the
device settings on a CPU-only machine."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
from conftest import small_study, toml_text

from naskd.cli import main
from naskd.config import SCHEMES, load_study
from naskd.distill import SCHEMES as REGISTRY
from naskd.distill import Placement, SchemeInputs, make_distiller, train
from naskd.distill.loop import worker_device
from naskd.distill.mutual import Mutual
from naskd.distill.teachers import combine
from naskd.errors import ConfigError
from naskd.measure import count_params
from naskd.spaces import build_student
from naskd.trial import build, build_context, evaluate, fit, full_spec

DEEP = {"depth": 2, "width": [16, 16]}  # two stages: self distillation puts a head on the first


def _spec(config, scheme: str, family: str = "mlp", arch: dict | None = None, **recipe):
    spec = full_spec({"family": family, "arch": DEEP if arch is None else arch}, config)
    spec["recipe"].update(scheme=scheme, **recipe)
    return spec


@pytest.fixture
def context(write_study):
    return build_context(load_study(write_study(distill={"steps": 40, "batch_size": 32})))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_config_and_the_registry_name_the_same_schemes():
    assert set(SCHEMES) == set(REGISTRY)


def test_every_scheme_completes_and_records_its_loss_terms(context):
    expected = {
        "offline": {"ce", "kd"},
        "mutual": {"ce", "kd", "cohort_ce", "cohort_kd"},
        "self": {"ce", "aux_ce", "aux_kd", "aux_feature"},
        "born_again": {"ce", "kd"},
    }
    for scheme, terms in expected.items():
        result = evaluate(_spec(context.config, scheme), context)
        assert result.status == "complete", (scheme, result.reason)
        assert set(result.terms) == terms and all(math.isfinite(v) for v in result.terms.values())
        assert 0.0 <= result.metrics["accuracy"] <= 1.0


def test_mutual_trains_a_copy_of_the_teacher_and_never_reads_the_cache(context):
    original = copy.deepcopy(context.teacher.model)
    # Poisoned cached logits: a scheme that read them would diverge (offline does, below).
    poisoned = dataclasses.replace(context, train_logits=[torch.full_like(z, math.nan) for z in context.train_logits])
    assert evaluate(_spec(context.config, "offline"), poisoned).status == "failed"
    result = evaluate(_spec(context.config, "mutual"), poisoned)
    assert result.status == "complete", result.reason
    assert _same(context.teacher.model, original)  # the study's teacher is never trained

    recipe = dataclasses.replace(context.config.distill, scheme="mutual")
    student = build(_spec(context.config, "mutual"), context, recipe)
    distiller = make_distiller(
        SchemeInputs(student, recipe, context.sources(recipe), teacher_copy=context.teacher.trained_copy)
    )
    assert isinstance(distiller, Mutual)
    assert _same(distiller.cohort[0], original)  # the teacher's weights in a fresh module of its architecture
    assert distiller.cohort[0] is not context.teacher.model
    train(distiller, context.x_train, context.y_train, recipe)
    assert not _same(distiller.cohort[0], original)  # its copy learned alongside the student


def test_mutual_with_peers_trains_peers_of_the_students_architecture(context):
    recipe = dataclasses.replace(context.config.distill, scheme="mutual", cohort="peers", peers=2)
    spec = _spec(context.config, "mutual", cohort="peers", peers=2)
    student = build(spec, context, recipe)
    distiller = make_distiller(
        SchemeInputs(student, recipe, (), new_student=lambda seed: build(spec, context, recipe, seed=seed))
    )
    fresh = [copy.deepcopy(m) for m in distiller.cohort]
    assert len(fresh) == 2 and all(count_params(m) == count_params(student) for m in fresh)
    assert not _same(fresh[0], fresh[1])  # peers start apart
    train(distiller, context.x_train, context.y_train, recipe)
    assert not _same(distiller.cohort[0], fresh[0])


def test_self_distillation_heads_train_and_are_gone_after_the_run(context, tmp_path, capsys):
    spec = _spec(context.config, "self")
    result = evaluate(spec, context)
    assert result.status == "complete", result.reason
    plain = build_student(spec, context.build)
    assert result.metrics["params"] == count_params(plain)
    assert set(result.student.state_dict()) == set(plain.state_dict())  # no head in the kept student
    assert result.terms["aux_ce"] > 0 and result.terms["aux_kd"] > 0

    one_stage = _spec(context.config, "self", arch={"depth": 1, "width": [16]})
    invalid = evaluate(one_stage, context)
    assert invalid.status == "invalid" and "at least two stages" in invalid.reason


def test_born_again_chains_generations_and_counts_their_time(context):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    steps = []
    handle = register_optimizer_step_pre_hook(lambda *_: steps.append(1))
    try:
        one = evaluate(_spec(context.config, "born_again", generations=1), context)
        after_one = len(steps)
        two = evaluate(_spec(context.config, "born_again", generations=2), context)
    finally:
        handle.remove()
    offline = evaluate(_spec(context.config, "offline"), context)
    assert one.status == two.status == "complete"
    assert one.metrics["accuracy"] == offline.metrics["accuracy"]  # one generation is offline KD
    assert after_one == 40 and len(steps) - after_one == 80  # generation 1 trained to the target first
    assert not _same(one.student, two.student)

    recipe = dataclasses.replace(context.config.distill, scheme="born_again", generations=2)
    spec = _spec(context.config, "born_again", generations=2)
    student = build(spec, context, recipe)
    distiller = make_distiller(
        SchemeInputs(
            student,
            recipe,
            context.sources(recipe),
            new_student=lambda seed: build(spec, context, recipe, seed=seed),
            x=context.x_train,
            y=context.y_train,
        )
    )
    result = train(distiller, context.x_train, context.y_train, recipe)
    assert 0 < distiller.prepare_seconds <= result.train_seconds  # the earlier generation's time counts


def test_the_teacher_family_rebuilds_the_teachers_architecture(context):
    result = evaluate(_spec(context.config, "born_again", family="teacher", arch={}), context)
    assert result.status == "complete", result.reason
    assert result.metrics["params"] == context.teacher_info["params"]
    assert result.metrics["capacity_ratio"] == 1.0


def test_the_teacher_family_needs_a_rebuildable_teacher(context):
    scripted = dataclasses.replace(context, teachers=[dataclasses.replace(context.teacher, rebuild=None)])
    result = evaluate(_spec(context.config, "offline", family="teacher", arch={}), scripted)
    assert result.status == "invalid" and "cannot be rebuilt" in result.reason


def _teachers_study(tmp_path, **distill):
    doc = small_study(distill={"steps": 40, "batch_size": 32, **distill})
    del doc["teacher"]
    doc["teachers"] = [{"name": "a", "epochs": 5, "seed": 0}, {"name": "b", "epochs": 3, "seed": 1, "weight": 0.5}]
    path = tmp_path / "teachers.toml"
    path.write_text(toml_text(doc))
    return path


def test_several_teachers_each_teach_and_each_is_described(tmp_path):
    context = build_context(load_study(_teachers_study(tmp_path, cache_teacher=False)))
    info = context.teacher_info
    assert [t["name"] for t in info["teachers"]] == ["a", "b"]
    assert all(0 <= t["accuracy"] <= 1 for t in info["teachers"])
    assert context.teachers[0].fingerprint != context.teachers[1].fingerprint  # two teachers, not one twice
    calls = {t.name: 0 for t in context.teachers}
    handles = [
        t.model.register_forward_hook(lambda *_, n=t.name: calls.__setitem__(n, calls[n] + 1)) for t in context.teachers
    ]
    try:
        result = evaluate(_spec(context.config, "offline"), context)
    finally:
        for h in handles:
            h.remove()
    assert result.status == "complete", result.reason
    assert calls == {"a": 40, "b": 40}  # the cache is off: every teacher runs on every batch
    assert result.metrics["capacity_ratio"] == info["params"] / result.metrics["params"]
    # The ensemble is a different target from either teacher alone.
    alone = dataclasses.replace(context, teachers=context.teachers[:1], train_logits=context.train_logits[:1])
    assert evaluate(_spec(context.config, "offline"), alone).metrics["kl_to_teacher"] != result.metrics["kl_to_teacher"]


def test_combining_teachers():
    sure = torch.tensor([[8.0, 0.0, 0.0]])
    unsure = torch.tensor([[0.0, 0.5, 0.0]])
    assert torch.equal(combine([sure], [1.0], "confidence"), sure)  # one teacher passes through
    assert torch.allclose(combine([sure, unsure], [3.0, 1.0], "mean_logits"), (3 * sure + unsure) / 4)
    probs = combine([sure, unsure], [1.0, 1.0], "mean_probs").softmax(-1)
    assert torch.allclose(probs, (sure.softmax(-1) + unsure.softmax(-1)) / 2)
    confident = combine([sure, unsure], [1.0, 1.0], "confidence")
    assert (confident - sure).abs().sum() < (combine([sure, unsure], [1.0, 1.0], "mean_logits") - sure).abs().sum()


def test_a_feature_teacher_must_name_a_teacher(tmp_path):
    with pytest.raises(ConfigError, match=r"\[distill\]\.feature_teacher: names no teacher \(teachers: a, b\)"):
        load_study(_teachers_study(tmp_path, feature_teacher="c"))


@pytest.mark.parametrize("scheme", ["mutual", "self"])
def test_a_scheme_continued_from_a_rung_ends_bit_identical(context, tmp_path, scheme):
    """Every trained module of the scheme (the cohort, the heads) is in the rung checkpoint."""
    from naskd.fidelity import CheckpointFile

    spec = _spec(context.config, scheme)
    recipe = dataclasses.replace(context.config.distill, scheme=scheme)
    straight = build(spec, context, recipe)
    fit(straight, spec, context, recipe)
    saved = CheckpointFile(tmp_path / "state.pt")
    first = build(spec, context, recipe)
    fit(first, spec, context, recipe, rungs=(15,), on_rung=lambda r, s, t, state: saved.save(state()) or False)
    continued = build(spec, context, recipe)
    fit(continued, spec, context, recipe, rungs=(15,), on_rung=lambda *a: True, resume=saved.load())
    assert _same(straight, continued)
    assert set(saved.load()["modules"]) == ({"student", "cohort"} if scheme == "mutual" else {"student", "heads"})


def test_a_searched_scheme_through_search_baseline_confirm_and_export(tmp_path, capsys):
    doc = small_study(
        search={"trials": 8, "sampler": "random"},
        distill={"steps": 30, "batch_size": 32},
        space={
            **small_study()["space"],
            "params": {"depth": {"value": 2}, "width": {"type": "int", "low": 8, "high": 16, "per": "depth"}},
            "recipe": {"scheme": {"type": "categorical", "choices": ["offline", "mutual", "self", "born_again"]}},
        },
    )
    study = tmp_path / "searched.toml"
    study.write_text(toml_text(doc))
    out = tmp_path / "out"
    assert main(["search", str(study), "--out", str(out), "-q"]) == 0
    assert main(["baseline", str(study), "--out", str(out), "-q"]) == 0
    assert main(["confirm", str(study), "--out", str(out), "--top", "8", "--steps", "30", "-q"]) == 0
    capsys.readouterr()
    assert main(["front", str(study), "--out", str(out), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)["front"]
    schemes = {e["spec"]["recipe"]["scheme"] for e in front}
    assert schemes  # the front holds students of the searched schemes
    for entry in front:  # confirm at the target budget reproduces every scheme's figure exactly
        assert entry["metrics"]["long_accuracy"] == entry["metrics"]["accuracy"]
        assert "scratch_accuracy" in entry["metrics"]
    for entry in front:
        dest = tmp_path / f"exported_{entry['number']}"
        assert (
            main(["export", str(study), "--out", str(out), "--trial", str(entry["number"]), "-o", str(dest), "-q"]) == 0
        )
        assert (dest / "model.pt").is_file()
        exported = torch.load(dest / "model.pt", weights_only=True)
        assert not any(k.startswith("heads") for k in exported)


# --- device ---------------------------------------------------------------------------------


def test_cuda_on_a_machine_without_it_is_a_one_line_study_error(write_study, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    study = write_study(distill={"device": "cuda"})
    assert main(["search", str(study), "-q"]) == 2
    err = capsys.readouterr().err
    assert "[distill].device" in err and "no CUDA device" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "section, key",
    [
        ({"distill": {"device": "tpu"}}, "[distill].device"),
        ({"distill": {"precision": "fp8"}}, "[distill].precision"),
        ({"distill": {"channels_last": "yes"}}, "[distill].channels_last"),
        ({"distill": {"device": "cpu"}, "ray": {"gpus_per_trial": 1}}, "[ray].gpus_per_trial"),
        ({"distill": {"scheme": "mutual", "knowledge": [{"kind": "fitnet"}]}}, "[distill].knowledge"),
        ({"distill": {"scheme": "dml"}}, "[distill].scheme"),
    ],
)
def test_bad_device_settings_name_their_key(write_study, section, key):
    with pytest.raises(ConfigError) as err:
        load_study(write_study(**section))
    assert key in str(err.value)


def test_auto_placement_on_a_cpu_machine(context):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert Placement.from_config(context.config.distill) == Placement(torch.device("cpu"), "fp32", False)
    assert worker_device(context.config.distill, 3) is None


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_the_cpu(write_study, precision):
    fp32 = build_context(load_study(write_study(distill={"steps": 40, "batch_size": 32})))
    mixed = build_context(load_study(write_study(distill={"steps": 40, "batch_size": 32, "precision": precision})))
    assert mixed.placement.precision == precision
    a, b = evaluate(_spec(fp32.config, "offline"), fp32), evaluate(_spec(mixed.config, "offline"), mixed)
    assert a.status == b.status == "complete" and math.isfinite(b.terms["kd"])
    assert not _same(a.student, b.student)  # autocast really ran at the lower precision
    assert all(p.dtype == torch.float32 for p in b.student.parameters())  # weights stay fp32


def test_the_teacher_family_calls_a_user_teachers_builder_again(write_study, tmp_path):
    import helpers_teacher

    torch.save(helpers_teacher.build().state_dict(), tmp_path / "t.pt")
    context = build_context(
        load_study(write_study(teacher={"model": "helpers_teacher:build", "checkpoint": str(tmp_path / "t.pt")}))
    )
    result = evaluate(_spec(context.config, "born_again", family="teacher", arch={}, generations=1), context)
    assert result.status == "complete", result.reason
    fresh = helpers_teacher.build()
    assert set(result.student.state_dict()) == set(fresh.state_dict())
    assert result.metrics["params"] == count_params(fresh)


def test_channels_last_for_2d_convolutions(write_study):
    study = write_study(
        data={"dataset": "digits"},
        teacher={"epochs": 1},
        space={"family": "cnn2d", "params": {}},
        distill={"steps": 6, "batch_size": 32, "channels_last": True},
    )
    context = build_context(load_study(study))
    assert context.placement.channels_last
    spec = full_spec({"family": "cnn2d", "arch": {"stages": 1, "width": 4}}, context.config)
    student = build(spec, context, context.config.distill)
    fit(student, spec, context, context.config.distill)
    conv = next(m for m in student.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()


def test_every_scheme_trains_a_transformer_student(write_study):
    context = build_context(
        load_study(
            write_study(
                data={"dataset": "synthetic", "samples": 400, "shape": [4, 16], "classes": 4},
                space={"family": "transformer", "params": {}},
            )
        )
    )
    arch = {"layers": 2, "d_model": 16, "heads": 2}
    for scheme in SCHEMES:
        result = evaluate(_spec(context.config, scheme, family="transformer", arch=arch), context)
        assert result.status == "complete", (scheme, result.reason)
    recipe = dataclasses.replace(context.config.distill, scheme="self")
    student = build(_spec(context.config, "self", family="transformer", arch=arch), context, recipe)
    distiller = make_distiller(SchemeInputs(student, recipe))
    distiller.setup(context.x_train, torch.arange(2))
    assert distiller.heads[0].tokens  # a transformer layer's output is averaged over its tokens
    distiller.close()
