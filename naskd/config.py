"""The study file: its schema, defaults and validation, done once at the boundary.

A study file is TOML and is treated as data only. ``load_study`` returns a frozen
``StudyConfig`` or raises ``ConfigError`` naming the file, the key path and what was
expected; nothing is written before validation has passed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from naskd import metrics
from naskd.errors import ConfigError

#: ``none``: no real data at all (``shape`` and ``classes`` say what the teacher reads); only with
#: ``transfer = "deepinversion"`` and a teacher of your own.
BUILTIN_DATASETS = ("digits", "mnist1d", "mnist1d_crossmodal", "shapes32", "synthetic", "none")
OPTIMIZERS = ("adam", "adamw", "sgd")
SAMPLERS = ("tpe", "nsga2", "random")
DEVICES = ("cpu", "cuda")
#: ``[distill] scheme``: the registry's names (``naskd.distill.SCHEMES``; a test keeps them equal).
SCHEMES = ("offline", "mutual", "self", "born_again", "adversarial")
#: Where the students' training inputs come from: the data's own, or synthesized from the teacher.
TRANSFERS = ("real", "deepinversion")
COHORTS = ("teacher", "peers")
COMBINES = ("mean_logits", "mean_probs", "confidence")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FIDELITY_RULES = ("pareto", "off")
#: ``[ray]`` keys of earlier versions whose job ``[fidelity]`` does now, for both backends.
_MOVED_RAY_KEYS = ("scheduler", "grace_epochs", "reduction_factor")

#: Every metric ``[search].objectives`` may name, with the direction that makes it better
#: (derived from ``naskd.metrics``, the one table of metrics).
METRIC_DIRECTIONS: dict[str, str] = {name: metrics.direction(name) for name in metrics.OBJECTIVE_METRICS}


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    path: Path | None = None
    loader: str | None = None
    val_fraction: float = 0.2
    seed: int = 0
    samples: int = 1200
    shape: tuple[int, ...] = (16,)
    classes: int = 4
    #: "deepinversion": students never see the real training inputs; they learn on a transfer
    #: set synthesized from the teacher (``[synthesis]``). The real data still trains a built-in
    #: teacher and, when it has a validation part, scores the students.
    transfer: str = "real"


@dataclass(frozen=True)
class TeacherConfig:
    """One teacher: ``[teacher]``, or an entry of ``[[teachers]]`` (then ``name`` and ``weight``
    matter: feature knowledge names its teacher, and fixed weights scale its say)."""

    name: str = "teacher"
    weight: float = 1.0
    model: str | None = None
    checkpoint: Path | None = None
    torchscript: Path | None = None
    epochs: int = 0
    seed: int = 0
    cache_dir: Path | None = None


@dataclass(frozen=True)
class DistillConfig:
    """``[distill]``. ``alpha`` and ``temperature`` are the shorthand for the default single kd
    term; ``knowledge`` (a list of ``{kind, weight, hyperparameters...}``) and ``ce_weight`` are
    what training uses, derived from the shorthand when not given (once, at construction:
    ``dataclasses.replace(cfg, alpha=...)`` keeps the resolved terms)."""

    temperature: float = 4.0
    alpha: float = 0.9
    ce_weight: float | None = None  # None: 1 - alpha
    knowledge: tuple[dict[str, Any], ...] | None = None  # None: one kd term (alpha, temperature)
    pairs: tuple[tuple[str, str], ...] = ()
    feature_cache_mb: int = 512
    steps: int = 0
    epochs: int = 5
    optimizer: str = "adam"
    lr: float = 3e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    batch_size: int = 64
    seed: int = 0
    cache_teacher: bool = True
    #: the distillation scheme (``naskd.distill.SCHEMES``) and its settings
    scheme: str = "offline"
    cohort: str = "teacher"  # mutual: train with a copy of the teacher, or with peer students
    peers: int = 1  # mutual, cohort = "peers": how many
    aux_weight: float = 0.1  # self: share of a head's loss from the deepest output (BYOT's alpha)
    aux_temperature: float = 3.0  # self
    aux_feature_weight: float = 0.1  # self: the feature hint toward the deepest feature
    generations: int = 2  # born_again: the student is the last of this many generations
    combine: str = "mean_logits"  # several teachers: how their logits become one target
    feature_teacher: str | None = None  # several teachers: whose features feature knowledge reads
    #: where training runs (study level, never in a spec)
    device: str = "auto"
    precision: str = "auto"  # auto: fp32 on the CPU, bf16 on CUDA
    channels_last: str = "auto"  # "auto" (on CUDA, for 2-D conv inputs), "on", "off"
    qat_fraction: float = 0.2  # int8 students: the share of the target budget trained fake-quantized
    qat_lr_scale: float = 0.1  # int8 students: the QAT phase's learning rate, as a share of lr
    generator_lr: float = 1e-3  # adversarial: the generator's Adam learning rate (DFAD)
    generator_every: int = 5  # adversarial: student steps per generator step (DFAD: 5)
    latent_dim: int = 64  # adversarial: the generator's noise dimension
    #: adversarial: the generator's channels (DFAD: 64; on mnist1d 32 reached 39-59% after 3000 steps
    #: over three seeds against 41-47% with 64, at ~60% of the step time)
    generator_width: int = 32
    lwf_weight: float = 1.0  # lifelong: weight of the previous student's KL term (0: no second teacher)
    lwf_temperature: float = 2.0  # lifelong: its temperature (Li & Hoiem 2016: 2)

    def __post_init__(self) -> None:
        # Resolve the shorthand once so every reader sees explicit terms and weights.
        if self.knowledge is None:
            object.__setattr__(
                self, "knowledge", ({"kind": "kd", "weight": self.alpha, "temperature": self.temperature},)
            )
        if self.ce_weight is None:
            object.__setattr__(self, "ce_weight", round(1.0 - self.alpha, 12))


@dataclass(frozen=True)
class SynthesisConfig:
    """``[synthesis]``: DeepInversion (Yin et al. 2020), run once per study for
    ``[data] transfer = "deepinversion"``. Defaults follow the paper's CIFAR settings, scaled
    down in iterations (the set is made once and cached)."""

    samples: int = 2000
    batch_size: int = 250
    iterations: int = 300
    lr: float = 0.1
    bn_weight: float = 1.0  # the BatchNorm statistics term (r_feature)
    first_bn_multiplier: float = 10.0  # the first BatchNorm layer's share of it
    tv_weight: float = 1e-4  # total-variation prior
    l2_weight: float = 1e-5  # L2 prior on the inputs
    jitter: int = 2  # random shift of up to this many positions per spatial axis, per iteration
    flip: bool = True  # random flips along the last axis
    seed: int = 0


@dataclass(frozen=True)
class CostConfig:
    device: str = "cpu"
    batch_size: int = 1
    threads: int = 1
    warmup: int = 10
    repeats: int = 100
    max_latency_ms: float | None = None
    max_params: int | None = None
    max_flops: int | None = None
    max_model_bytes: int | None = None


@dataclass(frozen=True)
class SearchConfig:
    objectives: tuple[str, ...] = ("accuracy", "latency_p50_ms", "params")
    sampler: str = "tpe"
    trials: int = 30
    seed: int = 0
    storage: str | None = None
    workers: int = 1

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(METRIC_DIRECTIONS[name] for name in self.objectives)


@dataclass(frozen=True)
class FidelityConfig:
    """``[fidelity]``: how each student's training is spent on the way to the target budget
    (``[distill].epochs`` or ``[distill].steps``, where every figure on the front is measured).

    Students are scored at rungs ``first_rung * reduction_factor**k`` below the target, in the
    target's unit. With ``rule = "pareto"`` a student stops at a rung when it ranks outside the
    best ``1 / reduction_factor`` by Pareto rank over the study's objectives among the students
    recorded at that rung (asynchronous successive halving, ``naskd.fidelity``); a student that
    goes on continues the same run. ``"off"`` trains every student to the target and only
    records the rung figures (single fidelity). ``margin`` protects a student whose accuracy (or
    teacher agreement) is within that much of a cheaper one's: it stops only when others are
    clearly better; ``latency_margin`` does the same for measured latency, as a share.
    """

    rule: str = "pareto"
    first_rung: int | None = None  # None: the target divided by reduction_factor**2, at least 1
    reduction_factor: int = 3
    # Accuracy differences this small are within a rung's noise (benchmarks/fidelity.py).
    margin: float = 0.02
    latency_margin: float = 0.0  # relative; 0.1 cost more steps for no better front (benchmarks/fidelity.py)


@dataclass(frozen=True)
class ReportConfig:
    """``[report]``: what ``naskd search`` adds to the report it writes at the end."""

    scratch_baseline: bool = False


@dataclass(frozen=True)
class RayConfig:
    """``[ray]``: how ``--backend ray`` runs trials. Each trial gets ``cpus_per_trial`` CPUs
    (its torch threads follow) and ``gpus_per_trial`` GPUs; a trial whose worker dies is
    retried ``max_failures`` times, then recorded failed."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 1
    address: str | None = None  # None: start Ray on this machine; "auto" or "HOST:PORT": join a cluster
    concurrency: int = 0  # trials at once; 0: as many as the cluster's CPUs allow


@dataclass(frozen=True)
class StudyConfig:
    """A validated study. ``file`` is where it came from; relative paths are already resolved."""

    file: Path
    name: str
    seed: int
    data: DataConfig
    teacher: TeacherConfig  # the first of ``teachers``
    space: Any  # naskd.spaces.Space; typed loosely to keep this module free of torch imports
    distill: DistillConfig
    cost: CostConfig
    search: SearchConfig
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    ray: RayConfig = RayConfig()
    report: ReportConfig = ReportConfig()
    fidelity: FidelityConfig = FidelityConfig()
    teachers: tuple[TeacherConfig, ...] = ()  # every teacher; () means (teacher,)
    synthesis: SynthesisConfig = SynthesisConfig()

    def __post_init__(self) -> None:
        if not self.teachers:
            object.__setattr__(self, "teachers", (self.teacher,))

    @property
    def slug(self) -> str:
        """The study name made safe for a directory name."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name).strip("._") or "study"

    def default_out_dir(self) -> Path:
        return Path("reports") / self.slug

    def replace(self, **sections: Any) -> StudyConfig:
        return dataclasses.replace(self, **sections)


# --- validation helpers --------------------------------------------------------------

Check = Callable[[Any], str | None]


def _positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0, got {v!r}"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v!r}"


#: Seeds reach numpy's and torch's generators, which take 0 <= seed < 2**32.
SEED_LIMIT = 2**32


def _seed(v: Any) -> str | None:
    return None if 0 <= v < SEED_LIMIT else f"must be in [0, 2**32), got {v!r}"


def _threads(v: Any) -> str | None:
    """No more torch threads than this machine has cores: past that OpenMP may fail to create
    them (and crash the process), and timings measure contention, not the student."""
    import os

    cores = os.cpu_count() or 1
    if v <= 0:
        return f"must be > 0, got {v!r}"
    return None if v <= cores else f"must be at most this machine's {cores} cores, got {v}"


def _fraction(v: Any) -> str | None:
    return None if 0 < v < 1 else f"must be between 0 and 1 (exclusive), got {v!r}"


def _unit(v: Any) -> str | None:
    return None if 0 <= v <= 1 else f"must be between 0 and 1, got {v!r}"


def _one_of(options: tuple[str, ...]) -> Check:
    def check(v: Any) -> str | None:
        if v in options:
            return None
        close = difflib.get_close_matches(str(v), options, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"must be one of {', '.join(map(repr, options))}, got {v!r}{hint}"

    return check


def _callable_ref(v: Any) -> str | None:
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
        return None
    return f"must look like 'package.module:function', got {v!r}"


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}


@dataclass(frozen=True)
class _Key:
    kind: type
    check: Check | None = None


class _Section:
    """Validates one TOML table against declared keys; every message names file and key path."""

    def __init__(self, file: str, name: str, table: Any) -> None:
        self.file, self.name = file, name
        if not isinstance(table, dict):
            raise ConfigError(file, f"[{name}]", f"must be a table, got {type(table).__name__}")
        self.table = table

    def key(self, k: str) -> str:
        return f"[{self.name}].{k}" if self.name else k

    def error(self, k: str, message: str) -> ConfigError:
        return ConfigError(self.file, self.key(k), message)

    def reject_unknown(self, known: list[str]) -> None:
        for k in self.table:
            if k not in known:
                close = difflib.get_close_matches(k, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.error(k, f"unknown key{hint} (known keys: {', '.join(known)})")

    def get(self, k: str, spec: _Key, default: Any) -> Any:
        if k not in self.table:
            return default
        v = self.table[k]
        kinds = (int, float) if spec.kind is float else (spec.kind,)
        ok = isinstance(v, kinds) and not (spec.kind in (int, float) and isinstance(v, bool))
        if not ok:
            raise self.error(k, f"must be {_TYPE_NAMES[spec.kind]}, got {_describe(v)}")
        if spec.kind is float and not math.isfinite(v):
            raise self.error(k, f"must be a finite number, got {v!r}")
        if spec.check is not None:
            # Checked as written (an int stays an int in the message), converted after.
            problem = spec.check(v)
            if problem:
                raise self.error(k, problem)
        return float(v) if spec.kind is float else v

    def path(self, k: str, base: Path) -> Path | None:
        raw = self.get(k, _Key(str), None)
        if raw is None or raw == "":
            return None
        return resolve_path(raw, base, lambda msg: self.error(k, msg))


def _describe(v: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
    return f"{kind.get(type(v), type(v).__name__)} {v!r}" if not isinstance(v, dict) else "a table"


def resolve_path(raw: str, base: Path, error: Callable[[str], ConfigError]) -> Path:
    """Resolve a path against the study file's folder, then the working directory; it must be readable."""
    p = Path(raw).expanduser()
    candidates = [p] if p.is_absolute() else [base / p, Path.cwd() / p]
    for c in candidates:
        if c.is_file():
            try:
                with open(c, "rb"):
                    pass
            except OSError as exc:
                raise error(f"cannot read {raw!r}: {exc.strerror}") from None
            return c.resolve()
    raise error(f"no such file {raw!r} (looked in {base} and the working directory)")


# --- the schema, section by section ----------------------------------------------------

_TOP_KEYS = [
    "name",
    "description",
    "seed",
    "data",
    "teacher",
    "teachers",
    "space",
    "distill",
    "fidelity",
    "cost",
    "search",
    "ray",
    "report",
    "synthesis",
]


def load_study(path: str | Path, **overrides: Any) -> StudyConfig:
    """Read and validate a study file.

    Args:
        path: the TOML study file.
        **overrides: command-line values that replace file values: ``trials``, ``workers``,
            ``storage``, ``seed`` (``None`` means "not given").

    Returns:
        The validated, frozen configuration.

    Raises:
        ConfigError: for an unreadable file, bad TOML, an unknown key, a wrong type or an
            out-of-range value, naming the file and the key path.
    """
    file = Path(path)
    shown = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(shown, "(file)", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, "(file)", f"cannot read: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, "(toml)", str(exc)) from None
    return parse_study(raw, shown, file.resolve().parent, **overrides)


def parse_study(raw: dict, shown: str, base: Path, **overrides: Any) -> StudyConfig:
    """Validate an already-parsed study table (``load_study`` without the file reading)."""
    top = _Section(shown, "", raw)
    top.reject_unknown(_TOP_KEYS)
    name = top.get("name", _Key(str, lambda v: None if v.strip() else "must not be empty"), None)
    name = name if name is not None else Path(shown).stem
    top.get("description", _Key(str), "")
    seed = top.get("seed", _Key(int, _seed), 0)
    if overrides.get("seed") is not None:
        seed = int(overrides["seed"])
        problem = _seed(seed)
        if problem:
            raise ConfigError("--seed", "--seed", problem)

    data = _data(_Section(shown, "data", raw.get("data", {})), base, seed)
    teachers = _teachers(raw, shown, base, seed)
    distill = _distill(_Section(shown, "distill", raw.get("distill", {})), seed)
    _check_schemes(_Section(shown, "distill", raw.get("distill", {})), distill, teachers)
    cost = _cost(_Section(shown, "cost", raw.get("cost", {})))
    search = _search(_Section(shown, "search", raw.get("search", {})), seed, overrides)
    fidelity = _fidelity(_Section(shown, "fidelity", raw.get("fidelity", {})), distill)
    ray = _ray(_Section(shown, "ray", raw.get("ray", {})))
    if ray.gpus_per_trial > 0 and distill.device == "cpu":
        raise ConfigError(
            shown,
            "[ray].gpus_per_trial",
            f'is {ray.gpus_per_trial:g} but [distill].device = "cpu" trains on the CPU; set device = "auto" or "cuda"',
        )
    report_section = _Section(shown, "report", raw.get("report", {}))
    report_section.reject_unknown(["scratch_baseline"])
    report = ReportConfig(scratch_baseline=report_section.get("scratch_baseline", _Key(bool), False))
    synthesis = _synthesis(_Section(shown, "synthesis", raw.get("synthesis", {})), seed)
    if data.dataset == "none":
        search = _without_real_data(shown, raw, data, teachers, search)

    from naskd.spaces import load_space  # imported here so config stays importable without torch

    space_table = raw.get("space", {"path": "search_spaces/mlp.toml"})
    if not isinstance(space_table, dict):
        raise ConfigError(shown, "[space]", "must be a table")
    space = load_space(space_table, shown, base)
    return StudyConfig(
        file=Path(shown),
        name=name,
        seed=seed,
        data=data,
        teacher=teachers[0],
        teachers=teachers,
        space=space,
        distill=distill,
        cost=cost,
        search=search,
        raw=raw,
        ray=ray,
        report=report,
        fidelity=fidelity,
        synthesis=synthesis,
    )


def _without_real_data(
    shown: str, raw: dict, data: DataConfig, teachers: tuple[TeacherConfig, ...], search: SearchConfig
) -> SearchConfig:
    """``[data] dataset = "none"``: students learn on a synthesized transfer set from a teacher
    of the user's own, and are ranked by agreement on held-out synthesized inputs (accuracy,
    which needs real labelled data, is unavailable). Returns the search with that objective in
    place of the default accuracy."""
    if data.transfer != "deepinversion":
        raise ConfigError(
            shown,
            "[data].transfer",
            'must be "deepinversion" with dataset = "none": without real '
            "data the students learn on a synthesized transfer set",
        )
    for i, t in enumerate(teachers):
        if t.model is None and t.torchscript is None:
            where = "[teacher]" if "teachers" not in raw else f"[teachers[{i}]]"
            raise ConfigError(
                shown,
                where,
                'with dataset = "none" give model + checkpoint or torchscript: a built-in '
                "teacher is trained on real data",
            )
    given = (raw.get("search") or {}).get("objectives") if isinstance(raw.get("search"), dict) else None
    if given is None:  # the default objectives, with the measurable quality in place of accuracy
        objectives = tuple("synthetic_agreement" if o == "accuracy" else o for o in search.objectives)
        return dataclasses.replace(search, objectives=objectives)
    unavailable = [o for o in search.objectives if o in metrics.NEEDS_REAL_VALIDATION]
    if unavailable:
        raise ConfigError(
            shown,
            "[search].objectives",
            f"{', '.join(unavailable)} needs real validation data, "
            'which dataset = "none" has not; use synthetic_agreement (agreement with the teacher on '
            "held-out synthesized inputs)",
        )
    return search


def _data(s: _Section, base: Path, seed: int) -> DataConfig:
    s.reject_unknown(["dataset", "path", "loader", "val_fraction", "seed", "samples", "shape", "classes", "transfer"])
    d = DataConfig()
    path = s.path("path", base)
    loader = s.get("loader", _Key(str, _callable_ref), None)
    dataset = s.get("dataset", _Key(str, _one_of(BUILTIN_DATASETS)), None)
    given = [k for k, v in (("dataset", dataset), ("path", path), ("loader", loader)) if v is not None]
    if len(given) > 1:
        raise s.error(given[1], f"give only one of dataset, path, loader (got {', '.join(given)})")
    if path is not None and path.suffix != ".npz":
        raise s.error("path", f"must be an .npz file with arrays x and y, got {path.name!r}")
    shape = s.get("shape", _Key(list), list(d.shape))
    if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise s.error("shape", f"must be a non-empty list of positive integers, got {shape!r}")
    classes = s.get("classes", _Key(int, lambda v: None if v >= 2 else f"must be >= 2, got {v}"), d.classes)
    samples = s.get(
        "samples", _Key(int, lambda v: None if v >= 2 * classes else f"must be >= 2 x classes, got {v}"), d.samples
    )
    return DataConfig(
        # With no source named, the built-in digits set is the default.
        dataset=dataset or ("" if given else d.dataset),
        path=path,
        loader=loader,
        val_fraction=s.get("val_fraction", _Key(float, _fraction), d.val_fraction),
        seed=s.get("seed", _Key(int, _seed), seed),
        samples=samples,
        shape=tuple(shape),
        classes=classes,
        transfer=s.get("transfer", _Key(str, _one_of(TRANSFERS)), d.transfer),
    )


def _teachers(raw: dict, shown: str, base: Path, seed: int) -> tuple[TeacherConfig, ...]:
    """``[teacher]`` (one) or ``[[teachers]]`` (several, each with a unique ``name``)."""
    if "teachers" not in raw:
        return (_teacher(_Section(shown, "teacher", raw.get("teacher", {})), base, seed),)
    if "teacher" in raw:
        raise ConfigError(shown, "[teacher]", "give either [teacher] or [[teachers]], not both")
    entries = raw["teachers"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(shown, "[[teachers]]", "must be a non-empty list of teacher tables")
    out: list[TeacherConfig] = []
    for i, entry in enumerate(entries):
        where = _Section(shown, f"teachers[{i}]", entry)
        teacher = _teacher(where, base, seed, default_name=f"teacher{i + 1}", several=True)
        if any(t.name == teacher.name for t in out):
            raise where.error("name", f"{teacher.name!r} names two teachers; names must be unique")
        out.append(teacher)
    return tuple(out)


def _teacher(
    s: _Section, base: Path, seed: int, *, default_name: str = "teacher", several: bool = False
) -> TeacherConfig:
    s.reject_unknown(
        ["model", "checkpoint", "torchscript", "epochs", "seed", "cache_dir", *(["name", "weight"] if several else [])]
    )
    model = s.get("model", _Key(str, _callable_ref), None)
    checkpoint = s.path("checkpoint", base)
    torchscript = s.path("torchscript", base)
    if torchscript is not None and (model or checkpoint):
        raise s.error("torchscript", "give either torchscript or model + checkpoint, not both")
    if (model is None) != (checkpoint is None):
        missing = "checkpoint" if checkpoint is None else "model"
        raise s.error(missing, "a user teacher needs both model ('module:callable') and checkpoint (a state_dict file)")
    cache = s.get("cache_dir", _Key(str), None)
    return TeacherConfig(
        name=s.get("name", _Key(str, lambda v: None if v.strip() else "must not be empty"), default_name),
        weight=s.get("weight", _Key(float, _positive), 1.0),
        model=model,
        checkpoint=checkpoint,
        torchscript=torchscript,
        epochs=s.get("epochs", _Key(int, _non_negative), 0),
        seed=s.get("seed", _Key(int, _seed), seed),
        cache_dir=(base / Path(cache).expanduser()).resolve() if cache else None,
    )


def _distill(s: _Section, seed: int) -> DistillConfig:
    s.reject_unknown([f.name for f in dataclasses.fields(DistillConfig)])
    d = DistillConfig()
    steps = s.get("steps", _Key(int, _non_negative), d.steps)
    epochs = s.get("epochs", _Key(int, _non_negative), d.epochs)
    if steps == 0 and epochs == 0:
        raise s.error("steps", "one of steps or epochs must be > 0")
    if "steps" in s.table and "epochs" in s.table and steps > 0 and epochs > 0:
        raise s.error("epochs", "give steps or epochs, not both")
    temperature = s.get("temperature", _Key(float, _positive), d.temperature)
    alpha = s.get("alpha", _Key(float, _unit), d.alpha)
    knowledge = None
    if "knowledge" in s.table:
        if "alpha" in s.table:
            raise s.error(
                "alpha",
                "is the shorthand for a single kd term; with knowledge = [...] give each term "
                "a weight and set ce_weight",
            )
        knowledge = _knowledge(s, temperature)
    return DistillConfig(
        temperature=temperature,
        alpha=alpha,
        ce_weight=s.get("ce_weight", _Key(float, _non_negative), None),
        knowledge=knowledge,
        pairs=_pairs(s),
        feature_cache_mb=s.get("feature_cache_mb", _Key(int, _non_negative), d.feature_cache_mb),
        steps=steps,
        epochs=0 if steps > 0 else epochs,
        optimizer=s.get("optimizer", _Key(str, _one_of(OPTIMIZERS)), d.optimizer),
        lr=s.get("lr", _Key(float, _positive), d.lr),
        weight_decay=s.get("weight_decay", _Key(float, _non_negative), d.weight_decay),
        momentum=s.get(
            "momentum", _Key(float, lambda v: None if 0 <= v < 1 else f"must be in [0, 1), got {v}"), d.momentum
        ),
        batch_size=s.get("batch_size", _Key(int, _positive), d.batch_size),
        seed=s.get("seed", _Key(int, _seed), seed),
        cache_teacher=s.get("cache_teacher", _Key(bool), d.cache_teacher),
        scheme=s.get("scheme", _Key(str, _one_of(SCHEMES)), d.scheme),
        cohort=s.get("cohort", _Key(str, _one_of(COHORTS)), d.cohort),
        peers=s.get("peers", _Key(int, _positive), d.peers),
        aux_weight=s.get("aux_weight", _Key(float, _unit), d.aux_weight),
        aux_temperature=s.get("aux_temperature", _Key(float, _positive), d.aux_temperature),
        aux_feature_weight=s.get("aux_feature_weight", _Key(float, _non_negative), d.aux_feature_weight),
        generations=s.get("generations", _Key(int, _positive), d.generations),
        combine=s.get("combine", _Key(str, _one_of(COMBINES)), d.combine),
        feature_teacher=s.get("feature_teacher", _Key(str), None),
        device=s.get("device", _Key(str, _training_device), d.device),
        precision=s.get("precision", _Key(str, _one_of(PRECISIONS)), d.precision),
        channels_last=_channels_last(s, d.channels_last),
        qat_fraction=s.get("qat_fraction", _Key(float, _qat_fraction), d.qat_fraction),
        qat_lr_scale=s.get("qat_lr_scale", _Key(float, _positive), d.qat_lr_scale),
        generator_lr=s.get("generator_lr", _Key(float, _positive), d.generator_lr),
        generator_every=s.get("generator_every", _Key(int, _positive), d.generator_every),
        latent_dim=s.get("latent_dim", _Key(int, _positive), d.latent_dim),
        generator_width=s.get("generator_width", _Key(int, _positive), d.generator_width),
        lwf_weight=s.get("lwf_weight", _Key(float, _non_negative), d.lwf_weight),
        lwf_temperature=s.get("lwf_temperature", _Key(float, _positive), d.lwf_temperature),
    )


def _synthesis(s: _Section, seed: int) -> SynthesisConfig:
    s.reject_unknown([f.name for f in dataclasses.fields(SynthesisConfig)])
    d = SynthesisConfig()
    return SynthesisConfig(
        samples=s.get("samples", _Key(int, _positive), d.samples),
        batch_size=s.get("batch_size", _Key(int, _positive), d.batch_size),
        iterations=s.get("iterations", _Key(int, _positive), d.iterations),
        lr=s.get("lr", _Key(float, _positive), d.lr),
        bn_weight=s.get("bn_weight", _Key(float, _non_negative), d.bn_weight),
        first_bn_multiplier=s.get("first_bn_multiplier", _Key(float, _non_negative), d.first_bn_multiplier),
        tv_weight=s.get("tv_weight", _Key(float, _non_negative), d.tv_weight),
        l2_weight=s.get("l2_weight", _Key(float, _non_negative), d.l2_weight),
        jitter=s.get("jitter", _Key(int, _non_negative), d.jitter),
        flip=s.get("flip", _Key(bool), d.flip),
        seed=s.get("seed", _Key(int, _seed), seed),
    )


def _qat_fraction(v: Any) -> str | None:
    return None if 0 < v <= 0.9 else f"must be in (0, 0.9] (the float phase needs steps too), got {v}"


def _training_device(v: Any) -> str | None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, and CUDA only where this machine has it."""
    if v in ("auto", "cpu"):
        return None
    match = re.fullmatch(r"cuda(?::(\d+))?", v)
    if match is None:
        return f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {v!r}"
    import torch  # only for a CUDA request: config stays importable without torch otherwise

    if not torch.cuda.is_available():
        return f"asks for {v!r} but this machine has no CUDA device (torch {torch.__version__}); use 'auto' or 'cpu'"
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        return f"asks for {v!r} but this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def _channels_last(s: _Section, default: str) -> str:
    if "channels_last" not in s.table:
        return default
    v = s.table["channels_last"]
    if isinstance(v, bool):
        return "on" if v else "off"
    if v == "auto":
        return v
    raise s.error("channels_last", f'must be true, false or "auto", got {_describe(v)}')


def _check_schemes(s: _Section, distill: DistillConfig, teachers: tuple[TeacherConfig, ...]) -> None:
    """Settings that only make sense together: a named feature teacher must exist; mutual
    learning exchanges predictions, so its knowledge terms must read logits only."""
    names = [t.name for t in teachers]
    if distill.feature_teacher is not None and distill.feature_teacher not in names:
        raise s.error("feature_teacher", f"names no teacher (teachers: {', '.join(names)})")
    if distill.scheme == "mutual":
        from naskd.knowledge.functional import LOSSES

        other = [t["kind"] for t in distill.knowledge or () if LOSSES[t["kind"]].consumes != "logits"]
        if other:
            raise s.error(
                "knowledge",
                f'scheme = "mutual" exchanges predictions only; {", ".join(other)} '
                "needs a frozen teacher's internals (use logit terms such as kd)",
            )


def _knowledge(s: _Section, temperature: float) -> tuple[dict[str, Any], ...]:
    """``knowledge = [{kind = "kd", weight = 0.9, temperature = 4}, ...]``: kinds, weights and
    hyperparameters checked against the loss registry; omitted values take published defaults
    (a kind's temperature defaults to ``[distill].temperature``)."""
    from naskd.knowledge.functional import LOSSES

    terms = s.table["knowledge"]
    if not isinstance(terms, list) or not terms:
        raise s.error("knowledge", 'must be a non-empty list of tables like {kind = "kd", weight = 0.9}')
    out = []
    for i, term in enumerate(terms):
        where = _Section(s.file, f"distill.knowledge[{i}]", term)
        kind = where.get("kind", _Key(str, _one_of(tuple(LOSSES))), None)
        if kind is None:
            raise where.error("kind", f"missing (one of {', '.join(LOSSES)})")
        info = LOSSES[kind]
        where.reject_unknown(["kind", "weight", *info.hyperparameters])
        entry: dict[str, Any] = {
            "kind": kind,
            "weight": where.get("weight", _Key(float, _non_negative), info.default_weight),
        }
        for name, default in info.hyperparameters.items():
            fallback = temperature if name == "temperature" else default
            entry[name] = where.get(
                name, _Key(float, _positive if name in ("temperature", "p") else _non_negative), fallback
            )
        out.append(entry)
    return tuple(out)


def _pairs(s: _Section) -> tuple[tuple[str, str], ...]:
    """``[[distill.pairs]] teacher = "layer3"  student = "blocks.2"``: module names whose outputs
    feature-based knowledge compares (checked against the models when they are built)."""
    raw = s.table.get("pairs", [])
    if not isinstance(raw, list):
        raise s.error("pairs", 'must be a list of tables like {teacher = "layer3", student = "blocks.2"}')
    out = []
    for i, pair in enumerate(raw):
        where = _Section(s.file, f"distill.pairs[{i}]", pair)
        where.reject_unknown(["teacher", "student"])
        names = []
        for side in ("teacher", "student"):
            name = where.get(side, _Key(str, lambda v: None if v else "must not be empty"), None)
            if name is None:
                raise where.error(side, "missing: a module name as in model.named_modules()")
            names.append(name)
        out.append((names[0], names[1]))
    return tuple(out)


def _cost(s: _Section) -> CostConfig:
    s.reject_unknown([f.name for f in dataclasses.fields(CostConfig)])
    d = CostConfig()
    return CostConfig(
        device=s.get("device", _Key(str, _one_of(DEVICES)), d.device),
        batch_size=s.get("batch_size", _Key(int, _positive), d.batch_size),
        threads=s.get("threads", _Key(int, _threads), d.threads),
        warmup=s.get("warmup", _Key(int, _non_negative), d.warmup),
        repeats=s.get(
            "repeats", _Key(int, lambda v: None if v >= 3 else f"must be >= 3 to give a p95, got {v}"), d.repeats
        ),
        max_latency_ms=s.get("max_latency_ms", _Key(float, _positive), None),
        max_params=s.get("max_params", _Key(int, _positive), None),
        max_flops=s.get("max_flops", _Key(int, _positive), None),
        max_model_bytes=s.get("max_model_bytes", _Key(int, _positive), None),
    )


def _objectives(v: Any) -> str | None:
    if not v:
        return "must name at least one metric"
    for name in v:
        problem = _one_of(metrics.OBJECTIVE_METRICS)(name)
        if problem:
            return problem
    if len(set(v)) != len(v):
        return f"must not repeat a metric, got {v!r}"
    return None


def _search(s: _Section, seed: int, overrides: dict[str, Any]) -> SearchConfig:
    s.reject_unknown([f.name for f in dataclasses.fields(SearchConfig)])
    d = SearchConfig()
    objectives = s.get("objectives", _Key(list, _objectives), list(d.objectives))
    trials = s.get("trials", _Key(int, _positive), d.trials)
    workers = s.get("workers", _Key(int, _positive), d.workers)
    storage = s.get("storage", _Key(str), None) or None
    if overrides.get("trials") is not None:
        trials = int(overrides["trials"])
        if trials <= 0:
            raise ConfigError("--trials", "--trials", f"must be > 0, got {trials}")
    if overrides.get("workers") is not None:
        workers = int(overrides["workers"])
        if workers <= 0:
            raise ConfigError("--workers", "--workers", f"must be > 0, got {workers}")
    if overrides.get("storage"):
        storage = overrides["storage"]
    return SearchConfig(
        objectives=tuple(objectives),
        sampler=s.get("sampler", _Key(str, _one_of(SAMPLERS)), d.sampler),
        trials=trials,
        seed=s.get("seed", _Key(int, _seed), seed),
        storage=storage,
        workers=workers,
    )


def _fidelity(s: _Section, distill: DistillConfig) -> FidelityConfig:
    s.reject_unknown([f.name for f in dataclasses.fields(FidelityConfig)])
    d = FidelityConfig()
    rule = s.get("rule", _Key(str, _one_of(FIDELITY_RULES)), d.rule)
    factor = s.get(
        "reduction_factor", _Key(int, lambda v: None if v >= 2 else f"must be >= 2, got {v}"), d.reduction_factor
    )
    first = s.get("first_rung", _Key(int, _positive), None)
    target, unit = (distill.steps, "steps") if distill.steps else (distill.epochs, "epochs")
    if first is not None and first >= target:
        raise s.error(
            "first_rung",
            f"must be below the target budget ([distill].{unit} = {target}), got {first}; "
            'or set rule = "off" to train every student to the target',
        )
    share = _Key(float, lambda v: None if 0 <= v < 1 else f"must be in [0, 1), got {v}")
    return FidelityConfig(
        rule=rule,
        first_rung=first,
        reduction_factor=factor,
        margin=s.get("margin", share, d.margin),
        latency_margin=s.get("latency_margin", share, d.latency_margin),
    )


def _ray(s: _Section) -> RayConfig:
    for k in _MOVED_RAY_KEYS:
        if k in s.table:
            raise s.error(
                k,
                "early stopping moved to [fidelity] (rule, first_rung, reduction_factor, margin), "
                "which both backends use; remove this key",
            )
    s.reject_unknown([f.name for f in dataclasses.fields(RayConfig)])
    d = RayConfig()
    return RayConfig(
        cpus_per_trial=s.get("cpus_per_trial", _Key(float, _positive), d.cpus_per_trial),
        gpus_per_trial=s.get("gpus_per_trial", _Key(float, _non_negative), d.gpus_per_trial),
        max_failures=s.get("max_failures", _Key(int, _non_negative), d.max_failures),
        address=s.get("address", _Key(str, lambda v: None if v.strip() else "must not be empty"), None),
        concurrency=s.get("concurrency", _Key(int, _non_negative), d.concurrency),
    )
