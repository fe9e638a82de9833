"""One trial, and the per-study context it runs in.

``build_context`` does the once-per-study work (data, teacher, teacher outputs);
``evaluate(spec, context)`` is the one place a trial happens: build the student, measure its
cost, stop if it breaks a budget, otherwise distil it rung by rung toward the target budget,
scoring it at every rung (where the backend's rule may stop it), and score it at the target.
It is a plain function call, so any backend (or a test) can drive it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from naskd.cache import TeacherCache, cache_root, load_entry, save_entry
from naskd.config import DistillConfig, StudyConfig
from naskd.data import Data, load_data
from naskd.distill import (
    Distiller,
    DistillResult,
    Diverged,
    Placement,
    SchemeInputs,
    Scratch,
    TeacherSource,
    TrainState,
    make_distiller,
    recipe_dict,
    recipe_from_dict,
    train,
)
from naskd.distill.lifelong import Lifelong
from naskd.distill.loop import RungCallback
from naskd.distill.quantized import quantization_aware
from naskd.distill.recipe import total_steps
from naskd.distill.teachers import combine
from naskd.errors import ConfigError, InvalidSpec
from naskd.fidelity import CheckpointFile, Decision, RungPlan, plan_rungs, with_rung
from naskd.knowledge.functional import LOSSES
from naskd.knowledge.hooks import module_names, stage_names
from naskd.knowledge.terms import EMBEDDING
from naskd.measure import measure_cost
from naskd.metrics import TRIAL_METRICS, budget_limits
from naskd.metrics import budget_violations as _violations
from naskd.quantize import measure_int8_cost
from naskd.scoring import predict, score
from naskd.spaces import BuildContext, build_student, check_spec
from naskd.spaces.recipe import apply_recipe_choices
from naskd.synthesis import synthesis_key, synthesize
from naskd.teacher import Teacher, describe_teacher, load_teachers

log = logging.getLogger(__name__)

Status = Literal["complete", "pruned", "infeasible", "invalid", "failed"]

#: Every metric a completed trial records.
METRICS = TRIAL_METRICS


@dataclass
class StudyContext:
    """What every trial of a study shares; built once, read-only afterwards. Tensors a trial
    trains on (training rows, the teachers' cached outputs) live on the training device."""

    config: StudyConfig
    data: Data
    teachers: list[Teacher]
    teacher_info: dict[str, Any]
    cache: TeacherCache
    train_logits: list[torch.Tensor | None]  # per teacher; None when [distill].cache_teacher is false
    val_logits: torch.Tensor  # the teachers' combined validation logits (CPU)
    placement: Placement = field(default_factory=Placement)
    # The data's tensors on the training device (derived from ``data`` and ``placement``).
    x_train: torch.Tensor = field(init=False, repr=False)
    y_train: torch.Tensor = field(init=False, repr=False)
    x_val: torch.Tensor = field(init=False, repr=False)
    #: cross-modal: the teachers' view of the training rows (None: they read ``x_train``)
    x_teacher_train: torch.Tensor | None = field(init=False, repr=False)
    _values: dict[str, dict[str, torch.Tensor] | None] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        on = self.placement.device
        self.x_train = self.data.x_train.to(on)
        self.y_train = self.data.y_train.to(on)
        # Without real data, students are compared with the teacher on held-out synthesized inputs.
        scored = self.data.x_val if self.data.real_validation else self.data.x_holdout
        self.x_val = scored.to(on)  # type: ignore[union-attr]
        self.x_teacher_train = self.data.x_teacher_train.to(on) if self.data.x_teacher_train is not None else None

    def to(self, placement: Placement) -> StudyContext:
        """This context training on ``placement``'s device (teachers moved in place)."""
        for t in self.teachers:
            t.model.to(placement.device)
        return dataclasses.replace(
            self,
            placement=placement,
            _values={},
            train_logits=[z.to(placement.device) if z is not None else None for z in self.train_logits],
        )

    @property
    def teacher(self) -> Teacher:
        """The first teacher: the one feature knowledge reads unless ``feature_teacher`` says otherwise."""
        return self.teachers[0]

    @property
    def build(self) -> BuildContext:
        """What student builders receive (from the first teacher)."""
        return self.teacher.build_context(self.data.input_shape, self.data.num_classes)

    def describe(self) -> dict[str, Any]:
        """Facts recorded with the study: data splits, the teachers' figures and the rungs."""
        plan = self.plan
        return {
            "data": self.data.describe(),
            "teacher": dict(self.teacher_info),
            "fidelity": {
                "rule": self.config.fidelity.rule,
                "target_steps": plan.target_steps,
                "rungs": list(plan.rungs),
                "steps_per_epoch": plan.steps_per_epoch,
                "reduction_factor": plan.reduction_factor,
                "margin": plan.margin,
                "latency_margin": plan.latency_margin,
            },
        }

    @property
    def plan(self) -> RungPlan:
        """The study's rungs and target budget, in training steps."""
        return plan_rungs(self.config.fidelity, self.config.distill, len(self.data.y_train))

    def feature_teacher(self, recipe: DistillConfig) -> Teacher:
        return feature_teacher(self.teachers, recipe.feature_teacher)

    def teacher_values(
        self, terms: Sequence[dict[str, Any]], teacher: Teacher | None = None
    ) -> dict[str, torch.Tensor] | None:
        """Cached features/embeddings of ``teacher`` (default: the first) over the training set
        for these knowledge terms, on the training device; None when they need none, the cache
        is off, or they exceed ``feature_cache_mb``."""
        teacher = teacher or self.teacher
        consumes = {LOSSES[t["kind"]].consumes for t in terms if t["weight"] > 0}
        names: list[str] = []
        if "features" in consumes:
            names += [t for t, _ in self.config.distill.pairs] or stage_names(teacher.model)
        if "embeddings" in consumes:
            names.append(EMBEDDING)
        if not names or not self.config.distill.cache_teacher:
            return None
        key = f"{teacher.fingerprint}|{sorted(names)}"
        if key not in self._values:
            seen = self.x_teacher_train if self.x_teacher_train is not None else self.x_train
            values = self.cache.values(
                teacher.model,
                teacher.fingerprint,
                seen,
                f"{self.data.teacher_view().fingerprint}:train",
                names,
                budget_bytes=self.config.distill.feature_cache_mb * 2**20,
            )
            on = self.placement.device
            self._values[key] = {k: v.to(on) for k, v in values.items()} if values is not None else None
        return self._values[key]

    def sources(self, recipe: DistillConfig) -> list[TeacherSource]:
        """The study's teachers as a scheme reads them, with what the cache holds of each."""
        feature = self.feature_teacher(recipe)
        return [
            TeacherSource(
                t.name,
                t.model,
                logits,
                self.teacher_values(recipe.knowledge or (), t) if t is feature else None,
                t.weight,
                inputs=self.x_teacher_train,
            )
            for t, logits in zip(self.teachers, self.train_logits)
        ]


def build_context(
    config: StudyConfig, *, teacher_info: dict[str, Any] | None = None, device: str | None = None
) -> StudyContext:
    """Load the data and teachers, and compute (or load from the cache) the teachers' outputs.

    Args:
        config: the study.
        teacher_info: the teachers' figures when already measured (worker processes get the
            launcher's, so teachers are measured once per study and all workers agree).
        device: train here instead of ``[distill].device`` (a worker given its own GPU).
    """
    data = load_data(config.data)
    # Cross-modal: the teachers read their own view of the samples, and their outputs are
    # cached under that view's fingerprint; students and costs use the data's own inputs.
    seen = data.teacher_view()
    teachers = load_teachers(config.teachers, seen, dataset_key=config.data.dataset or "synthetic")
    _check_teacher_pairs(config, teachers)
    _check_shrink_counts(config, teachers[0], data)
    if config.data.transfer == "deepinversion":
        # Students never see the real training inputs: the transfer set takes their place
        # (the real validation part still scores them).
        data = seen = transfer_set(config, data, teachers[0])
    cache = TeacherCache(cache_root(config.teacher.cache_dir) / "outputs")
    scored = seen.x_val if seen.real_validation or seen.x_holdout is None else seen.x_holdout
    vals = [cache.logits(t.model, t.fingerprint, scored, f"{seen.fingerprint}:val") for t in teachers]
    val_logits = combine(vals, [t.weight for t in teachers], config.distill.combine)
    train_logits: list[torch.Tensor | None] = [None] * len(teachers)
    if config.distill.cache_teacher:
        train_logits = [
            cache.logits(t.model, t.fingerprint, seen.x_train, f"{seen.fingerprint}:train") for t in teachers
        ]
    else:
        log.info("teacher cache off: the teachers run on every training batch")
    if teacher_info is None:
        teacher_info = _describe_teachers(teachers, vals, val_logits, seen, config)
    # Teachers were measured on [cost].device above; training reads them on its own device.
    return StudyContext(config, data, teachers, teacher_info, cache, train_logits, val_logits).to(
        Placement.from_config(config.distill, device)
    )


def transfer_set(config: StudyConfig, data: Data, teacher: Teacher) -> Data:
    """``data`` with its training part replaced by the DeepInversion set synthesized from
    ``teacher`` (``[synthesis]``), made once and cached under its content key (teacher
    fingerprint, shape, classes, settings): every trial and worker reads the same set.

    Raises:
        ConfigError: cross-modal data (the set is synthesized in the teacher's view, which
            the students cannot read).
        NaskdError: a teacher without BatchNorm.
    """
    from tqdm.auto import tqdm

    if data.cross_modal:
        raise ConfigError(
            str(config.file),
            "[data].transfer",
            '"deepinversion" synthesizes inputs in the teacher\'s '
            "view, but this data gives the students another view (x_teacher); use one view",
        )
    cfg = config.synthesis
    key = synthesis_key(teacher.fingerprint, data.input_shape, data.num_classes, cfg)
    path = cache_root(config.teacher.cache_dir) / "transfer" / f"{key}.pt"
    entry = load_entry(path, key, "transfer set cache", action="synthesizing it again") if path.is_file() else None
    if entry is not None and isinstance(entry, dict) and {"x", "y"} <= set(entry):
        x, y = entry["x"], entry["y"]
        log.info("transfer set %s: %d samples loaded from the cache", key, len(y))
        stats = {k.removeprefix("stat_"): float(v) for k, v in entry.items() if k.startswith("stat_")}
    else:
        log.info(
            "synthesizing the transfer set (DeepInversion, %d samples x %d iterations); cached at %s",
            cfg.samples,
            cfg.iterations,
            path,
        )
        place = Placement.from_config(config.distill)
        # disable=None: a bar on a terminal, nothing in logs and captured output.
        with tqdm(total=cfg.samples, desc="DeepInversion", unit="sample", disable=None) as bar:
            x, y, stats = synthesize(
                teacher.model,
                data.input_shape,
                data.num_classes,
                cfg,
                device=place.device,
                where=f"[teacher] {teacher.source}",
                progress=lambda n: bar.update(n - bar.n),
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        save_entry(path, key, {"x": x, "y": y, **{f"stat_{k}": torch.tensor(v) for k, v in stats.items()}})
    split = {
        **data.split,
        "transfer": "deepinversion",
        "synthesis_key": key,
        "real_train": len(data.y_train),
        **{f"synthesis_{k}": round(v, 6) for k, v in stats.items()},
    }
    holdout = None
    if not data.real_validation:
        # No real data to score on: a tenth of the set is held out, for agreement with the teacher.
        keep = len(y) - max(1, len(y) // 10)
        x, y, holdout = x[:keep], y[:keep], x[keep:].contiguous()
        split["synthetic_holdout"] = len(holdout)
    return dataclasses.replace(
        data,
        name=f"{data.name} (DeepInversion transfer set)",
        x_train=x.contiguous(),
        y_train=y,
        split=split,
        x_holdout=holdout,
    )


def _describe_teachers(
    teachers: list[Teacher], vals: list[torch.Tensor], combined: torch.Tensor, data: Data, config: StudyConfig
) -> dict[str, Any]:
    """The teacher's figures; for several, the largest one's cost (``capacity_ratio`` is
    against it), the ensemble's accuracy, and every teacher's own figures under ``teachers``."""
    infos = [describe_teacher(t, z, data, config.cost) for t, z in zip(teachers, vals)]
    if len(teachers) == 1:
        return infos[0]
    for info, t in zip(infos, teachers):
        info.update(name=t.name, weight=t.weight)
    largest = max(infos, key=lambda i: i["params"])
    return {
        **largest,
        "source": f"{len(teachers)} teachers, {config.distill.combine} (largest: {largest['name']})",
        "accuracy": score(combined, data.y_val)["accuracy"] if data.real_validation else None,
        "teachers": infos,
    }


def feature_teacher(teachers: Sequence[Teacher], name: str | None) -> Teacher:
    """The teacher feature knowledge reads: the one ``[distill].feature_teacher`` names, else the first."""
    return next((t for t in teachers if t.name == name), teachers[0])


def _check_teacher_pairs(config: StudyConfig, teachers: list[Teacher]) -> None:
    """A ``[[distill.pairs]]`` teacher name that the feature teacher lacks is a study-file error."""
    available = module_names(feature_teacher(teachers, config.distill.feature_teacher).model)
    for i, (name, _) in enumerate(config.distill.pairs):
        if name not in available:
            raise ConfigError(
                str(config.file),
                f"[distill.pairs[{i}]].teacher",
                f"the teacher has no module {name!r} (available: {', '.join(available)})",
            )


def _check_shrink_counts(config: StudyConfig, teacher: Teacher, data: Data) -> None:
    """A shrink space whose fixed ``stages`` / ``blocks`` count is not the teacher's is a
    space-file error now, naming the teacher's real ones, rather than every trial invalid."""
    from naskd.spaces.families.shrink import SHRINK

    space = config.space
    fixed = {p.name: p.value for p in space.params if p.kind == "fixed" and p.name in ("stages", "blocks")}
    if space.family != "shrink" or not fixed or teacher.rebuild is None:
        return
    layout = SHRINK.layout(teacher.build_context(data.input_shape, data.num_classes))
    have = {"stages": layout.stages, "blocks": layout.blocks}
    for name, value in fixed.items():
        count = max(1, len(have[name])) if name == "stages" else len(have[name])
        if value not in (0, count):
            at = "[space.params]" if space.source == str(config.file) else "[params]"
            listed = ", ".join(have[name]) or ("the whole network" if name == "stages" else "none")
            raise ConfigError(space.source, f"{at}.{name}", f"is {value} but the teacher has {count} {name} ({listed})")


def build(spec: dict[str, Any], context: StudyContext, recipe: DistillConfig, *, seed: int | None = None) -> nn.Module:
    """The spec's untrained student (on the CPU), its weights drawn from ``seed`` (default: the
    recipe's): the same spec and seed give the same student.

    Raises:
        InvalidSpec: the spec cannot be built.
    """
    torch.manual_seed(recipe.seed if seed is None else seed)
    return build_student(spec, context.build)


def fit(
    student: nn.Module,
    spec: dict[str, Any],
    context: StudyContext,
    recipe: DistillConfig,
    *,
    scratch: bool = False,
    rungs: Sequence[int] = (),
    on_rung: RungCallback | None = None,
    resume: TrainState | None = None,
    steps: int | None = None,
    previous: nn.Module | None = None,
) -> DistillResult:
    """Train ``student`` by the recipe's scheme (or from the labels alone: ``scratch``) on the
    study's training set, on the study's device, for ``steps`` (default: the recipe's
    epochs); the student stays there, in eval mode. ``previous``: the same student as an
    earlier teacher version left it, a second teacher (learning without forgetting).

    Raises:
        Diverged, InvalidSpec: as ``naskd.distill.train``.
    """
    torch.manual_seed(recipe.seed)  # same seed -> same adapters, heads and dropout masks
    place = context.placement
    student.to(place.device)
    distiller: Distiller
    if scratch:
        distiller = Scratch(student)
    else:

        def new_student(seed: int) -> nn.Module:
            with torch.random.fork_rng(devices=[]):  # a peer's weights must not move the student's RNG
                return build(spec, context, recipe, seed=seed)

        distiller = make_distiller(
            SchemeInputs(
                student,
                recipe,
                context.sources(recipe),
                context.config.distill.pairs,
                new_student=new_student,
                teacher_copy=context.build.trained_teacher,
                x=context.x_train,
                y=context.y_train,
                device=place.device,
            )
        )
        if previous is not None:
            distiller = Lifelong(distiller, recipe, previous)
    return train(
        distiller,
        context.x_train,
        context.y_train,
        recipe,
        rungs=rungs,
        on_rung=on_rung,
        resume=resume,
        placement=place,
        steps=steps,
    )


def float_steps(spec: dict[str, Any], recipe: DistillConfig, total: int) -> int | None:
    """Where an int8 student's float phase ends in a run of ``total`` steps (the QAT phase is
    the last ``qat_fraction`` of them: at least one step each); None for a float32 student."""
    if spec.get("precision", "float32") != "int8":
        return None
    return total - min(total - 1, max(1, round(recipe.qat_fraction * total)))


def train_as_trial(
    spec: dict[str, Any], context: StudyContext, recipe: DistillConfig, *, scratch: bool = False
) -> tuple[nn.Module, DistillResult]:
    """The spec's student built and trained to the recipe's budget as a trial trains it (an
    int8 student: its float phase, then quantization-aware training; ``scratch``: no teacher
    in either), for the diagnostics."""
    student = build(spec, context, recipe)
    total = total_steps(recipe, len(context.data.y_train))
    until = float_steps(spec, recipe, total)
    result = fit(student, spec, context, recipe, scratch=scratch, steps=until)
    if until is not None:
        student, result = quantize_trained(student, context, recipe, result, total - until, scratch=scratch)
    return student, result


def quantize_trained(
    student: nn.Module,
    context: StudyContext,
    recipe: DistillConfig,
    result: DistillResult,
    steps: int,
    *,
    scratch: bool = False,
) -> tuple[nn.Module, DistillResult]:
    """The int8 student of a float-trained one after ``steps`` of quantized distillation,
    and the whole run's result (steps, time, curve and terms of both phases; the QAT phase's
    terms are named ``qat_<term>``).

    Raises:
        InvalidSpec: the quantizer cannot take the student.
        Diverged: the QAT phase diverged.
    """
    if scratch:  # labels only in the QAT phase too
        recipe = dataclasses.replace(recipe, alpha=0.0)
    int8, phase = quantization_aware(
        student, recipe, context.sources(recipe), context.x_train, context.y_train, steps, context.placement
    )
    return int8, DistillResult(
        steps=result.steps + phase.steps,
        train_seconds=result.train_seconds + phase.train_seconds,
        final_loss=phase.final_loss,
        curve=result.curve + [(result.steps + k, v) for k, v in phase.curve],
        terms={**result.terms, **{f"qat_{k}": v for k, v in phase.terms.items()}},
    )


def validate(student: nn.Module, context: StudyContext) -> dict[str, float]:
    """Accuracy, teacher agreement and KL to the teacher(s) on the validation set (on the
    student's device: an int8 student runs on the CPU)."""
    on = next((t.device for t in (*student.parameters(), *student.buffers())), context.placement.device)
    x = context.x_val if on == context.placement.device else context.x_val.to(on)
    logits = predict(student, x).float().cpu()
    if not context.data.real_validation:  # no real data: accuracy is unavailable, never guessed
        return {"synthetic_agreement": (logits.argmax(-1) == context.val_logits.argmax(-1)).float().mean().item()}
    return score(logits, context.data.y_val, context.val_logits)


@dataclass
class TrialResult:
    """The outcome of one trial. ``metrics`` holds every name in ``METRICS`` when complete (at
    the target budget) or pruned (at the rung where it stopped: ``steps`` says where);
    ``rungs`` holds ``{"rung", "steps", "metrics"}`` for every rung the student reached."""

    status: Status
    spec: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    constraints: dict[str, float] = field(default_factory=dict)  # budget metric -> value, feasible when <= 0
    student: nn.Module | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0  # training steps behind ``metrics``
    rungs: list[dict[str, Any]] = field(default_factory=list)
    terms: dict[str, float] = field(default_factory=dict)  # each loss term's weighted value at the end


#: ``gate(entries) -> go on?``, given the student's rung entries (the last is the rung just
#: reached): the backend's rung rule (``naskd.fidelity.RungGate``), answering True/False or a
#: ``Decision`` whose reason is recorded for a stopped student.
Gate = Callable[[list[dict[str, Any]]], "bool | Decision"]


def full_spec(sampled: dict[str, Any], config: StudyConfig, teacher: str | None = None) -> dict[str, Any]:
    """A sampled spec plus the trial's recipe (the study's, with any sampled recipe choices
    applied): everything needed to rebuild the trial, as plain JSON. A ``shrink`` student
    also records the fingerprint of the teacher it is cut from (``teacher``)."""
    spec = {k: v for k, v in sampled.items() if k != "recipe_choices"}
    if spec.get("family") == "shrink" and teacher:
        spec["arch"] = {**spec.get("arch", {}), "teacher": teacher}
    spec["recipe"] = apply_recipe_choices(recipe_dict(config.distill), sampled.get("recipe_choices", {}))
    return spec


def budget_violations(metrics: dict[str, float], config: StudyConfig) -> tuple[dict[str, float], list[str]]:
    """Constraint values per ``[cost]`` budget (feasible when every value <= 0) and a sentence
    for each broken one."""
    return _violations(metrics, budget_limits(config.cost))


def evaluate(
    spec: dict[str, Any],
    context: StudyContext,
    *,
    gate: Gate | None = None,
    checkpoint: CheckpointFile | None = None,
    carried: Sequence[dict[str, Any]] = (),
    plan: RungPlan | None = None,
    previous: dict[str, torch.Tensor] | None = None,
) -> TrialResult:
    """Run one trial. Never raises for a trial's own failure: the reason goes on the result.

    The student is scored on the validation set at every rung of the study's plan
    (``StudyContext.plan``) and at the target budget; only the target figures are a complete
    trial's metrics.

    Args:
        spec: ``{"family", "arch", "recipe"}`` as plain JSON.
        context: the study's shared context.
        gate: asked at every rung with the student's rung entries, the last holding every
            metric of the student as it stands; False (or a
            ``Decision`` that does not go on) stops it there (status ``pruned``). None: every
            student goes to the target. An exception it raises fails the trial like any other,
            except ``SystemExit``, which passes through: that is how Ray Tune stops a trial
            from ``tune.report``.
        checkpoint: where the student's training state is saved at every rung it reaches; a
            state already there is continued (the student goes on from that rung, bit for bit
            as if never interrupted). Cleared when the trial ends.
        carried: rung entries recorded by the interrupted trial a continued student comes
            from; those below the checkpoint's rung are kept in ``rungs``.
        plan: rungs to score at instead of the study's (e.g. every epoch, for learning
            curves); its target must be the study's.
        previous: the trained weights of this spec's student under an earlier teacher
            version (lifelong): the student starts from them and learns from the new teacher
            with its earlier self as a second teacher (``naskd.distill.lifelong``).
    """
    data, config = context.data, context.config
    reason = check_spec(spec, context.build)
    if reason:
        return TrialResult("invalid", spec, reason=f"invalid spec: {reason}")
    recipe = recipe_from_dict(spec.get("recipe", {}), base=config.distill)
    plan = plan or context.plan
    # An int8 student trains in float up to its QAT phase, and is judged at the rungs before it.
    until = float_steps(spec, recipe, plan.target_steps)
    int8 = until is not None
    judged = [r for r in plan.rungs if until is None or r < until]
    resume = checkpoint.load() if checkpoint is not None else None
    if checkpoint is not None and resume is not None and int(resume["step"]) not in judged:
        log.warning(
            "%s: saved at step %s, which is not a rung of this study; the student starts again",
            checkpoint.path,
            resume["step"],
        )
        resume = None
    rungs = [dict(e) for e in carried if resume is not None and e["steps"] < int(resume["step"])]
    stopped: list[tuple[int, str]] = []  # the rung a student stopped at, and why
    try:
        student = build(spec, context, recipe)
        earlier = None
        if previous is not None:
            if int8:
                raise InvalidSpec(
                    "an int8 student is not continued under a new teacher version (its float "
                    "weights are not kept); it is searched afresh"
                )
            student.load_state_dict(previous)
            earlier = build(spec, context, recipe)
            earlier.load_state_dict(previous)
        if resume is not None and isinstance(resume.get("cost"), dict):
            # A continued student keeps the cost it was judged with (latency is remeasured noise).
            metrics: dict[str, float] = {k: float(v) for k, v in resume["cost"].items()}
        else:
            cost = config.cost
            if int8:  # the lowered int8 model, on this CPU (the x86 quantizer's target)
                measured = measure_int8_cost(
                    student,
                    data.input_shape,
                    batch_size=cost.batch_size,
                    threads=cost.threads,
                    warmup=cost.warmup,
                    repeats=cost.repeats,
                )
            else:
                measured = measure_cost(
                    student,
                    data.input_shape,
                    batch_size=cost.batch_size,
                    threads=cost.threads,
                    warmup=cost.warmup,
                    repeats=cost.repeats,
                    device=cost.device,
                )
            metrics = {**measured.metrics(), "capacity_ratio": context.teacher_info["params"] / max(1, measured.params)}
        cost_metrics = dict(metrics)
        constraints, broken = budget_violations(metrics, config)
        if broken:
            return TrialResult(
                "infeasible", spec, metrics, reason="over budget: " + "; ".join(broken), constraints=constraints
            )

        def on_rung(rung: int, steps: int, seconds: float, state: Callable[[], dict[str, Any]]) -> bool:
            scored = {**metrics, **validate(student, context), "train_seconds": seconds}
            rungs[:] = with_rung(rungs, rung, steps, scored)
            if checkpoint is not None:  # saved before the verdict: a kill between the two loses nothing
                checkpoint.save({**state(), "cost": cost_metrics})
            verdict = gate(list(rungs)) if gate is not None else True
            decision = verdict if isinstance(verdict, Decision) else Decision(bool(verdict))
            if not decision.goes_on:
                stopped.append((rung, decision.reason))
            return decision.goes_on

        result = fit(
            student, spec, context, recipe, rungs=judged, on_rung=on_rung, resume=resume, steps=until, previous=earlier
        )
        if until is not None and not result.stopped:
            student, result = quantize_trained(student, context, recipe, result, plan.target_steps - until)
    except InvalidSpec as exc:
        return _ended(checkpoint, TrialResult("invalid", spec, reason=f"invalid spec: {exc}"))
    except Diverged as exc:
        return _ended(checkpoint, TrialResult("failed", spec, reason=str(exc), rungs=rungs))
    except Exception as exc:  # a trial's own bug must not end the study; keep the reason
        log.debug("trial failed:\n%s", traceback.format_exc())
        return _ended(checkpoint, TrialResult("failed", spec, reason=f"{type(exc).__name__}: {exc}", rungs=rungs))
    if result.stopped:
        rung, why = stopped[-1]
        return _ended(
            checkpoint,
            TrialResult(
                "pruned",
                spec,
                dict(rungs[-1]["metrics"]),
                constraints=constraints,
                steps=result.steps,
                rungs=rungs,
                terms=result.terms,
                reason=f"stopped at rung {rung} ({plan.label(result.steps)} of {plan.label(plan.target_steps)})"
                + (f": {why}" if why else ""),
            ),
        )
    metrics.update(validate(student, context))
    metrics["train_seconds"] = result.train_seconds
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        return _ended(
            checkpoint,
            TrialResult("failed", spec, metrics, reason=f"non-finite metrics: {', '.join(bad)}", rungs=rungs),
        )
    return _ended(
        checkpoint,
        TrialResult(
            "complete",
            spec,
            metrics,
            constraints=constraints,
            student=student.cpu(),
            curve=result.curve,
            steps=result.steps,
            rungs=rungs,
            terms=result.terms,
        ),
    )


def _ended(checkpoint: CheckpointFile | None, result: TrialResult) -> TrialResult:
    """A trial that ended needs no saved state: it is never continued."""
    if checkpoint is not None:
        checkpoint.clear()
    return result
