"""Writing a chosen student: its weights during the search, and the export folder a user ships
(state_dict, a ``torch.export`` program ``model.pt2``, an ONNX model, on request a TorchScript
trace, spec JSON and a README), each program checked to reproduce the student's accuracy before
anything is written; and ``load_exported``, which loads any of those files back as a module.

Safety of the formats (torch 2.13 source): ``model.pt`` is tensors only and always read with
``torch.load(weights_only=True)``; ``model.onnx`` is a protobuf that onnxruntime parses, with no
code in it. ``torch.export.load`` is *not* restricted to tensors: a ``.pt2`` archive may mark a
weight or constant as pickled, which it reads with ``torch.load(weights_only=False)``, read
opaque constants with ``pickle.loads``, and its fallback for older archives retries
``weights_only=False`` when the restricted read fails; so a crafted ``.pt2`` can run code on
load, and one should only load ``.pt2`` (or TorchScript) files from a trusted source.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from naskd.cache import atomic_save, atomic_write_bytes
from naskd.data import Data
from naskd.errors import NaskdError
from naskd.quantize import Int8Student, int8_state, load_int8_state, quantize_untrained
from naskd.scoring import predict, score
from naskd.spaces import BuildContext, build_student

#: Accuracy the student rebuilt from ``model.pt`` may differ from the recorded value by: float
#: noise in the mean only (it is the same module on the same weights).
REPRODUCE_TOLERANCE = 1e-6
#: Largest logit difference allowed between the rebuilt student and a reloaded program: on the
#: validation inputs, and on seeded random inputs where there is no real data.
OUTPUT_TOLERANCE = 1e-3
#: Seeded random inputs every program's outputs are compared on (``ExportCheck.output_gaps``).
PROBE_SAMPLES = 64

STATE_FILE = "model.pt"
PT2_FILE = "model.pt2"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
#: Program files an export may write: one left in the folder by an earlier export that this
#: one does not write (TorchScript not asked for again) is removed, so the folder never holds
#: a file of another student.
PROGRAM_FILES = (PT2_FILE, ONNX_FILE, TORCHSCRIPT_FILE)
_FAMILIES_WITH_TEACHER = ("teacher", "shrink")
_EXPECTED = (
    "expected an export folder written by `naskd export` or one of its files: model.pt2 (torch.export), "
    "model.onnx, model.torchscript.pt, or model.pt with its spec.json"
)


@dataclass(frozen=True)
class ExportCheck:
    """What ``export_student`` wrote and what each file reproduced."""

    dest: Path
    #: every file written, names only
    files: tuple[str, ...]
    #: the recorded validation accuracy (None: no real validation data)
    accuracy: float | None
    #: the accuracy of the student rebuilt from ``model.pt``
    reproduced: float | None
    #: program file -> its accuracy when reloaded (None: no real data)
    programs: dict[str, float | None]
    #: program file -> max |logit difference| from the rebuilt student on seeded random inputs
    output_gaps: dict[str, float]
    #: file not written -> why
    skipped: dict[str, str]


class ExportedStudent(nn.Module):
    """A ``torch.export`` program's module that, unlike ``ExportedProgram.module()``, accepts
    ``train()`` / ``eval()`` (torch's refuses both: "not supported yet"), so code written for
    any module (``naskd.scoring.predict``) can run it. The program was exported from the student
    in eval mode and computes eval-mode outputs whatever the flag says."""

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> ExportedStudent:
        self.training = mode  # never passed on: the program itself refuses the call
        return self


class OnnxStudent(nn.Module):
    """An ONNX model run by onnxruntime on the CPU, as a module: a float batch of any size in,
    logits out (a CPU tensor). Inference only: ``train()`` just sets the flag."""

    def __init__(self, model: bytes | str, label: str) -> None:
        super().__init__()
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types for every fault)
            raise NaskdError(f"{label}: not a readable ONNX model ({_first_line(exc)}); {_EXPECTED}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise NaskdError(
                f"{label}: an ONNX model with {len(inputs)} inputs and {len(outputs)} outputs; "
                "expected a student's (one input batch, one logits output)"
            )
        self.input_name = inputs[0].name
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


@dataclass(frozen=True)
class _Program:
    """A program file made in memory and the module read back from its bytes."""

    name: str
    payload: bytes
    module: nn.Module


def save_student(student: nn.Module, path: Path) -> None:
    """Keep a trained student's weights (write-then-rename) so export needs no retraining; an
    int8 student's with its activations' quantization parameters (``int8_state``)."""
    state = int8_state(student) if isinstance(student, Int8Student) else student.state_dict()
    atomic_save({k: v.detach().cpu() for k, v in state.items()}, path)


def rebuild_student(
    spec: dict[str, Any],
    weights: Path,
    ctx: BuildContext,
    *,
    remedy: str = "re-run `naskd search` with a new --out to train it again",
) -> nn.Module:
    """Rebuild the student of ``spec`` and load its saved weights (``weights_only``); an int8
    student is rebuilt as its architecture's int8 graph, then loaded. ``remedy`` ends the
    message for weights that cannot be read."""
    if not weights.is_file():
        raise NaskdError(f"{weights}: no saved weights for this trial (was it completed by `naskd search`?)")
    model = build_student(spec, ctx)
    if spec.get("precision") == "int8":
        model = quantize_untrained(model, torch.zeros((2, *ctx.input_shape)))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, garbage or foreign: say so, never half-load it
        raise NaskdError(
            f"{weights}: not a readable student state_dict ({type(exc).__name__}: {_first_line(exc)}); {remedy}"
        ) from None
    try:
        if isinstance(model, Int8Student):
            load_int8_state(model, state)
        else:
            model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, ValueError) as exc:
        raise NaskdError(f"{weights}: does not fit the student of this trial's spec ({_first_line(exc)})") from None
    return model.eval()


def export_student(
    spec: dict[str, Any],
    weights: Path,
    data: Data,
    recorded: dict[str, float],
    dest: Path,
    *,
    number: int,
    study: str,
    ctx: BuildContext | None = None,
    torchscript: bool = False,
) -> ExportCheck:
    """Write ``model.pt`` (state_dict), ``model.pt2`` (a ``torch.export`` program, dynamic
    batch; for an int8 student its int8 graph), ``model.onnx`` (dynamic batch), with
    ``torchscript`` also ``model.torchscript.pt``, and ``spec.json`` and ``README.md`` into
    ``dest``.

    Every program is made in memory and read back first (the .pt2 with ``torch.export.load``,
    the ONNX model in an onnxruntime session): with real validation data each must reproduce
    the recorded accuracy (within one label, its logits within ``OUTPUT_TOLERANCE`` of the
    rebuilt student's: see ``_accuracy_problem``); without, its outputs on seeded random inputs
    must be within ``OUTPUT_TOLERANCE``. Nothing is written to ``dest`` unless every check passes.

    An int8 student's ONNX model is run by onnxruntime's own int8 kernels; where those do not
    reproduce the int8 graph, no ``model.onnx`` is written and ``skipped`` says why (as does a
    student torch.onnx cannot translate). TorchScript is not offered for an int8 student.

    ``ctx`` builds the student (default: the data's shape and classes; a ``teacher`` or
    ``shrink`` student needs the teacher's in it).

    Raises:
        NaskdError: the weights are missing or unreadable, the student cannot be exported with
            ``torch.export``, or the rebuilt student or a program does not reproduce (the
            message names the trial, the file and both numbers).
    """
    model = rebuild_student(spec, weights, ctx or BuildContext(data.input_shape, data.num_classes))
    accuracy = recorded.get("accuracy") if data.real_validation else None
    reproduced = eager = None
    if data.real_validation:
        eager = predict(model, data.x_val).float()
        reproduced = score(eager, data.y_val)["accuracy"]
        if accuracy is not None and abs(reproduced - accuracy) > REPRODUCE_TOLERANCE:
            raise NaskdError(
                f"trial {number}: the student rebuilt from {weights} scores {reproduced:.4f}, recorded {accuracy:.4f}; "
                f"nothing written to {dest}"
            )
    int8 = isinstance(model, Int8Student)
    graph = model.graph if isinstance(model, Int8Student) else model
    skipped: dict[str, str] = {}
    programs = [_pt2(graph, data, number)]
    onnx = _onnx(graph, data, int8)
    if isinstance(onnx, str):
        skipped[ONNX_FILE] = onnx
    else:
        programs.append(onnx)
    if torchscript and int8:
        skipped[TORCHSCRIPT_FILE] = (
            f"not offered for an int8 student: its program is the torch.export graph {PT2_FILE} (a TorchScript "
            "trace of that graph would bake in its shape checks, as torch's TracerWarning says)"
        )
    elif torchscript:
        programs.append(_torchscript(model, data))

    probe = torch.randn((PROBE_SAMPLES, *data.input_shape), generator=torch.Generator().manual_seed(0))
    expected = predict(model, probe).float()
    gaps = {p.name: _gap(expected, predict(p.module, probe)) for p in programs}
    scores: dict[str, float | None] = {p.name: None for p in programs}
    if eager is not None and reproduced is not None:
        target = reproduced if accuracy is None else accuracy
        for p in list(programs):
            logits = predict(p.module, data.x_val).float()
            scores[p.name] = reloaded = score(logits, data.y_val)["accuracy"]
            problem = _accuracy_problem(p.name, reloaded, target, _gap(eager, logits), len(data.y_val))
            if problem is not None:
                _refuse(p, problem, int8, programs, skipped, scores, gaps, number, dest)
    else:
        for p in list(programs):
            if gaps[p.name] > OUTPUT_TOLERANCE:
                problem = (
                    f"{p.name} differs from the rebuilt student by {gaps[p.name]:.3g} on random inputs "
                    f"(at most {OUTPUT_TOLERANCE:g} allowed)"
                )
                _refuse(p, problem, int8, programs, skipped, scores, gaps, number, dest)

    _write(model, spec, recorded, dest, programs, skipped, data, number, study)
    return ExportCheck(
        dest=dest,
        files=(STATE_FILE, *(p.name for p in programs), "spec.json", "README.md"),
        accuracy=accuracy,
        reproduced=reproduced,
        programs=scores,
        output_gaps=gaps,
        skipped=skipped,
    )


def _accuracy_problem(name: str, accuracy: float, target: float, gap: float, samples: int) -> str | None:
    """Why a reloaded program's validation accuracy and logits do not reproduce the student's, or None.

    A program runs the same weights through other kernels or in another operator order, so its
    logits are not always bit-exact (measured on trained mlp, cnn1d, cnn2d and transformer students:
    ``torch.export`` exact except a transformer's, within 4e-6; onnxruntime within 6e-6; the
    same labels every time). A sample whose two best logits are that close could still flip, so
    one label of the validation set is allowed, but only while the logits agree within
    ``OUTPUT_TOLERANCE``: a real fault moves them far more.
    """
    if abs(accuracy - target) <= 1 / samples + REPRODUCE_TOLERANCE and gap <= OUTPUT_TOLERANCE:
        return None
    return (
        f"{name} reloaded scores {accuracy:.4f}, recorded {target:.4f} (logits differ from the rebuilt "
        f"student's by up to {gap:.3g}; allowed: one label, {OUTPUT_TOLERANCE:g})"
    )


def _refuse(
    program: _Program,
    problem: str,
    int8: bool,
    programs: list[_Program],
    skipped: dict[str, str],
    scores: dict[str, float | None],
    gaps: dict[str, float],
    number: int,
    dest: Path,
) -> None:
    """A program that does not reproduce: an error, except an int8 student's ONNX model. torch.onnx
    translates the int8 graph (QuantizeLinear / DequantizeLinear around float Gemm and Conv), but
    onnxruntime's default optimizations fuse those into its own int8 kernels (QGemm, QLinearConv),
    which compute differently from torch's graph: measured on this suite's trained int8 students
    (an AVX2 CPU), 0 to 6 points of accuracy lost and logits off by up to 9, while the same file
    run with graph optimizations off matches torch to 1e-7. A file that misleads by default is
    not shipped: it is left out, saying why, and the student ships as its torch.export program."""
    if not (int8 and program.name == ONNX_FILE):
        raise NaskdError(f"trial {number}: {problem}; nothing written to {dest}")
    programs.remove(program)
    scores.pop(program.name)
    gaps.pop(program.name)
    skipped[program.name] = (
        f"onnxruntime's int8 kernels do not reproduce torch's int8 graph: {problem}; "
        f"{PT2_FILE} is this student's program"
    )


def _gap(expected: torch.Tensor, actual: torch.Tensor) -> float:
    return (expected - actual.float()).abs().max().item()


def _pt2(graph: nn.Module, data: Data, number: int) -> _Program:
    """The student (or its int8 graph) as a ``torch.export`` program with a dynamic batch."""
    try:
        program = torch.export.export(graph, (_example(data),), dynamic_shapes=_dynamic_batch())
    except Exception as exc:  # noqa: BLE001  (export refuses many model shapes; the user reads why)
        raise NaskdError(
            f"trial {number}: torch.export cannot export this student ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    payload = buffer.getvalue()
    return _Program(PT2_FILE, payload, _read_pt2(io.BytesIO(payload), PT2_FILE))


def _onnx(graph: nn.Module, data: Data, int8: bool) -> _Program | str:
    """The student (or its int8 graph) as an ONNX model with a dynamic batch, or why torch.onnx
    cannot translate it."""
    try:
        with _quiet_onnx():
            program = torch.onnx.export(
                graph,
                (_example(data),),
                dynamo=True,
                dynamic_shapes=_dynamic_batch(),
                input_names=["input"],
                output_names=["logits"],
                verbose=False,
            )
        payload = program.model_proto.SerializeToString()  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001  (any operator torch.onnx lacks: the others still ship)
        kind = "int8 graph" if int8 else "student"
        return f"torch.onnx cannot translate this {kind} ({type(exc).__name__}: {_first_line(exc)})"
    return _Program(ONNX_FILE, payload, OnnxStudent(payload, ONNX_FILE))


def _torchscript(model: nn.Module, data: Data) -> _Program:
    """The traced student, its bytes, and the program read back from them."""
    with _no_torchscript_deprecation(), torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(1, *data.input_shape))
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        payload = buffer.getvalue()
        return _Program(TORCHSCRIPT_FILE, payload, torch.jit.load(io.BytesIO(payload)))


def _example(data: Data) -> torch.Tensor:
    return torch.zeros(2, *data.input_shape)  # two samples: a batch of one would be fixed as a constant


def _dynamic_batch() -> tuple[dict[int, Any], ...]:
    return ({0: torch.export.Dim("batch", min=1)},)


@contextlib.contextmanager
def _no_torchscript_deprecation() -> Iterator[None]:
    # TorchScript is written only when asked for (it loads with torch alone, from C++ too);
    # torch marks every jit call deprecated, which would only repeat to the user what they chose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@contextlib.contextmanager
def _quiet_onnx() -> Iterator[None]:
    """Silence what torch.onnx logs on every export and that says nothing about the student:
    "torchvision is not installed. Skipping torchvision::nms" (and three more operators) and a
    deprecation note from inside torch's pytree."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
            yield
    finally:
        onnx_log.setLevel(level)


def _read_pt2(source: io.BytesIO | Path, label: str) -> ExportedStudent:
    """A ``torch.export`` archive loaded as a module (it unpickles what it marks as pickled: see
    the module docstring). torch logs a traceback for an archive it cannot read, then says so
    again in its exception; only the exception is reported."""
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)
    try:
        return ExportedStudent(torch.export.load(source).module())
    except Exception as exc:  # noqa: BLE001  (zip, JSON and schema errors all mean the same here)
        raise NaskdError(
            f"{label}: not a readable torch.export program ({type(exc).__name__}: {_first_line(exc)}); {_EXPECTED}"
        ) from None
    finally:
        export_log.setLevel(level)


def load_exported(path: str | Path) -> nn.Module:
    """A student written by ``naskd export``, as a module in eval mode: a batch of inputs in,
    logits out.

    Args:
        path: the export folder (its ``model.pt2`` is loaded: self-contained and torch's own
            kernels, the most faithful file), or one of its files: a ``.pt2`` (``torch.export``;
            for an int8 student torchao is imported first, to register its operators), a
            ``.onnx`` (run by onnxruntime on the CPU), a ``*.torchscript.pt``, or ``model.pt``
            (the state_dict, rebuilt from the ``spec.json`` beside it; a ``teacher`` or
            ``shrink`` student needs its teacher to rebuild, so for those load ``model.pt2``).

    Security: ``model.pt`` is read with ``weights_only=True`` and an ONNX file holds no code;
    ``torch.export.load`` and ``torch.jit.load`` are not restricted that way (a crafted
    ``.pt2`` can make ``torch.export.load`` unpickle arbitrary objects), so load those only
    from a trusted source.

    Raises:
        NaskdError: the path is missing, of an unknown kind, or damaged; the message names the
            file and what was expected.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / PT2_FILE).is_file():
            raise NaskdError(f"{path}: holds no {PT2_FILE}; {_EXPECTED}")
        path = path / PT2_FILE
    elif not path.is_file():
        raise NaskdError(f"{path}: no such file or folder; {_EXPECTED}")
    name = path.name
    if name.endswith(".pt2"):
        spec = (_spec_beside(path) or {}).get("spec")
        if not isinstance(spec, dict) or spec.get("precision") == "int8":
            # An int8 program calls torchao's quantize/dequantize operators: importing torchao
            # registers them (3 s, so not for a float student's program whose spec says so).
            from naskd.quantize import load_torchao

            load_torchao()
        return _read_pt2(path, str(path))
    if name.endswith(".onnx"):
        return OnnxStudent(str(path), str(path))
    if name.endswith(".torchscript.pt"):
        with _no_torchscript_deprecation():
            try:
                return torch.jit.load(str(path), map_location="cpu").eval()
            except Exception as exc:  # noqa: BLE001  (torch's reader raises RuntimeError or worse for foreign files)
                raise NaskdError(
                    f"{path}: not a readable TorchScript program ({_first_line(exc)}); {_EXPECTED}"
                ) from None
    if name.endswith(".pt"):
        return _rebuild_exported(path)
    raise NaskdError(f"{path}: not a kind of file naskd exports; {_EXPECTED}")


def _spec_beside(path: Path) -> dict[str, Any] | None:
    """The ``spec.json`` an export wrote beside ``path``, or None when there is none or it cannot
    be read."""
    try:
        info = json.loads((path.parent / "spec.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _rebuild_exported(path: Path) -> nn.Module:
    """An exported state_dict rebuilt from the ``spec.json`` beside it."""
    spec_file = path.parent / "spec.json"
    info = _spec_beside(path)
    try:
        spec, shape, classes = info["spec"], tuple(info["input_shape"]), int(info["num_classes"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        raise NaskdError(
            f"{path}: a state_dict is rebuilt from the spec.json beside it, and {spec_file} is missing or not one "
            f"`naskd export` writes; load {PT2_FILE} instead"
        ) from None
    family = spec.get("family") if isinstance(spec, dict) else None
    if family in _FAMILIES_WITH_TEACHER:
        raise NaskdError(
            f"{path}: a {family} student is built from its teacher, which an export does not hold; "
            f"load {path.parent / PT2_FILE} instead"
        )
    return rebuild_student(
        spec, path, BuildContext(shape, classes), remedy=f"load {PT2_FILE} instead, or export the student again"
    )


def _write(
    model: nn.Module,
    spec: dict[str, Any],
    recorded: dict[str, float],
    dest: Path,
    programs: list[_Program],
    skipped: dict[str, str],
    data: Data,
    number: int,
    study: str,
) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    save_student(model, dest / STATE_FILE)
    for program in programs:
        atomic_write_bytes(dest / program.name, program.payload)
    written = {p.name for p in programs}
    for stale in PROGRAM_FILES:
        if stale not in written:
            (dest / stale).unlink(missing_ok=True)
    payload = {
        "study": study,
        "trial": number,
        "spec": spec,
        "metrics": recorded,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
    }
    atomic_write_bytes(dest / "spec.json", (json.dumps(payload, indent=2) + "\n").encode())
    atomic_write_bytes(dest / "README.md", _readme(payload, dest.name, [p.name for p in programs], skipped).encode())


def _readme(payload: dict[str, Any], folder: str, written: list[str], skipped: dict[str, str]) -> str:
    shape = ", ".join(str(n) for n in payload["input_shape"])
    m = payload["metrics"]
    int8 = payload["spec"].get("precision") == "int8"
    if int8:
        title = " (int8)"
        figures = (
            f"Validation accuracy {m.get('accuracy', float('nan')):.4f} as an int8 model, "
            f"{int(m.get('params', 0))} parameters, {int(m.get('model_bytes', 0))} bytes, "
            f"latency p50 {m.get('latency_p50_ms', float('nan')):.3f} ms (Inductor-lowered int8)."
        )
    else:
        title = ""
        figures = (
            f"Validation accuracy {m.get('accuracy', float('nan')):.4f}, {int(m.get('params', 0))} parameters, "
            f"{int(m.get('flops', 0))} FLOPs per sample, latency p50 {m.get('latency_p50_ms', float('nan')):.3f} ms."
        )
    described = {
        PT2_FILE: "a `torch.export` program, any batch size"
        + ("; the int8 graph of torchao's PT2E x86 flow (needs torch and torchao)" if int8 else "; needs torch only"),
        ONNX_FILE: "the ONNX model, any batch size (input `input`, output `logits`); runs with onnxruntime",
        TORCHSCRIPT_FILE: "a TorchScript trace; loads with torch alone, from C++ too",
    }
    files = [f"- `{name}`: {described[name]}" for name in written]
    files += [
        f"- `{STATE_FILE}`: the state_dict (tensors only)",
        "- `spec.json`: the architecture, distillation recipe and metrics",
    ]
    files += [f"- no `{name}`: {why}" for name, why in skipped.items()]
    sections = [
        f"# Student {payload['trial']} of study `{payload['study']}`{title}\n\n{figures}\n\n## Files\n\n"
        + "\n".join(files),
        f"""## Load with naskd

```python
import naskd, torch
model = naskd.load_student("{folder}")  # this folder: its model.pt2, as a torch.nn.Module in eval mode
logits = model(torch.zeros(1, {shape}))
```

`naskd.load_student` also takes any one file here (`.pt2`, `.onnx`, `.torchscript.pt`, `model.pt`).""",
        f"""## Load with torch.export

```python
import torch
{"import torchao.quantization.pt2e  # registers the int8 operators the program calls" + chr(10) if int8 else ""}\
model = torch.export.load("model.pt2").module()  # fixed in eval mode: do not call .eval()
with torch.no_grad():
    logits = model(torch.zeros(1, {shape}))
```""",
    ]
    if int8:
        sections.append(f"""Fast int8 kernels: compile it with frozen weights (oneDNN int8 on x86):

```python
import torch._inductor.config as inductor_config
with inductor_config.patch(freezing=True), torch.inference_mode():
    fast = torch.compile(model)
    fast(torch.zeros(1, {shape}))
```""")
    if ONNX_FILE in written:
        sections.append(f"""## Run with onnxruntime

```python
import numpy as np, onnxruntime
session = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
logits = session.run(None, {{"input": np.zeros((1, {shape}), dtype=np.float32)}})[0]
```""")
    if TORCHSCRIPT_FILE in written:
        sections.append(f"""## Load the TorchScript trace

```python
import torch
model = torch.jit.load("model.torchscript.pt").eval()
logits = model(torch.zeros(1, {shape}))
```""")
    sections.append(_state_readme(payload, int8))
    sections.append(
        "## Safety\n\n"
        "`model.pt` holds tensors only: load it with `weights_only=True`. `model.onnx` holds no code. "
        "`torch.export.load` is not restricted to tensors: a `.pt2` archive can mark a weight or constant as "
        "pickled, which it reads with `torch.load(weights_only=False)` (torch 2.13), and `torch.jit.load` runs "
        "the program's code; load `.pt2` and TorchScript files only from a source you trust."
    )
    return "\n\n".join(sections) + "\n"


def _state_readme(payload: dict[str, Any], int8: bool) -> str:
    family = payload["spec"].get("family")
    if family in _FAMILIES_WITH_TEACHER:
        return (
            "## The state_dict\n\n"
            f"A `{family}` student is built from its teacher, which this folder does not hold: rebuilding it "
            "from `model.pt` needs the study's teacher, so load `model.pt2` (or `model.onnx`) instead."
        )
    if int8:
        return """## Load the state_dict with naskd

```python
import naskd
model = naskd.load_student("model.pt")  # the int8 graph rebuilt from spec.json, its tensors loaded
```"""
    return """## Load the state_dict with naskd

```python
import json, torch
from naskd.spaces import BuildContext, build_student
info = json.load(open("spec.json"))
model = build_student(info["spec"], BuildContext(tuple(info["input_shape"]), info["num_classes"]))
model.load_state_dict(torch.load("model.pt", weights_only=True))
model.eval()
```

or simply `naskd.load_student("model.pt")`."""


def _first_line(exc: BaseException) -> str:
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "no detail")
