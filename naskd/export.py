"""Writing a chosen student: its weights during the search, and the export folder a user
ships (state_dict, spec JSON, TorchScript or, for an int8 student, a ``torch.export``
program; a README), checked to reproduce its accuracy."""

from __future__ import annotations

import io
import json
import warnings
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

#: Accuracy may differ from the recorded value by at most this much after reloading (float
#: summation order differs between eager and traced graphs; a label flip is 1/N).
REPRODUCE_TOLERANCE = 1e-6
#: Largest logit difference allowed between the rebuilt student and its reloaded program on
#: random inputs, where there is no real data to score (an int8 program rounds like its graph).
OUTPUT_TOLERANCE = 1e-3


def save_student(student: nn.Module, path: Path) -> None:
    """Keep a trained student's weights (write-then-rename) so export needs no retraining; an
    int8 student's with its activations' quantization parameters (``int8_state``)."""
    state = int8_state(student) if isinstance(student, Int8Student) else student.state_dict()
    atomic_save({k: v.detach().cpu() for k, v in state.items()}, path)


def load_student(spec: dict[str, Any], weights: Path, ctx: BuildContext) -> nn.Module:
    """Rebuild the student of ``spec`` and load its saved weights (``weights_only``); an int8
    student is rebuilt as its architecture's int8 graph, then loaded."""
    if not weights.is_file():
        raise NaskdError(f"{weights}: no saved weights for this trial (was it completed by `naskd search`?)")
    model = build_student(spec, ctx)
    if spec.get("precision") == "int8":
        model = quantize_untrained(model, torch.zeros((2, *ctx.input_shape)))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, garbage or foreign: say so, never half-load it
        raise NaskdError(
            f"{weights}: not a readable student state_dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); re-run `naskd search` "
            "with a new --out to train it again"
        ) from None
    try:
        if isinstance(model, Int8Student):
            load_int8_state(model, state)
        else:
            model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, ValueError) as exc:
        raise NaskdError(
            f"{weights}: does not fit the student of this trial's spec ({str(exc).splitlines()[0]})"
        ) from None
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
) -> dict[str, Any]:
    """Write ``model.pt`` (state_dict), ``spec.json``, a program that loads with torch alone
    (``model.torchscript.pt``; for an int8 student ``model.int8.pt2``, a ``torch.export``
    program) and ``README.md`` into ``dest``, and check that the rebuilt student and the
    reloaded program both reproduce the recorded validation accuracy.

    Returns:
        ``{"accuracy": recorded, "reproduced": rebuilt accuracy, "program": file name,
        "program_accuracy": the reloaded program's accuracy}``.

    Raises:
        NaskdError: the weights are missing or the reloaded student does not reproduce.

    ``ctx`` builds the student (default: the data's shape and classes; a ``teacher`` or
    ``shrink`` student needs the teacher's in it).
    """
    model = load_student(spec, weights, ctx or BuildContext(data.input_shape, data.num_classes))
    name, program, reloaded = (
        _int8_program(model, data) if isinstance(model, Int8Student) else _torchscript(model, data)
    )
    if not data.real_validation:
        return _write_unscored(model, reloaded, spec, recorded, dest, name, program, data, number, study)
    eager = score(predict(model, data.x_val), data.y_val)["accuracy"]
    scripted = score(predict(reloaded, data.x_val), data.y_val)["accuracy"]
    check = {"accuracy": recorded.get("accuracy"), "reproduced": eager, "program": name, "program_accuracy": scripted}
    target = recorded.get("accuracy")
    if target is not None and (
        abs(eager - target) > REPRODUCE_TOLERANCE or abs(scripted - target) > REPRODUCE_TOLERANCE
    ):
        raise NaskdError(
            f"trial {number}: the reloaded student scores {eager:.4f} ({name} {scripted:.4f}), recorded {target:.4f}"
        )
    _write(model, spec, recorded, dest, name, program, data, number, study)
    return check


def _write_unscored(
    model: nn.Module,
    reloaded: nn.Module,
    spec: dict[str, Any],
    recorded: dict[str, float],
    dest: Path,
    name: str,
    program: bytes,
    data: Data,
    number: int,
    study: str,
) -> dict[str, Any]:
    """A study with no real data has no accuracy to reproduce: the reloaded program must give
    the rebuilt student's outputs on seeded random inputs instead."""
    probe = torch.randn((8, *data.input_shape), generator=torch.Generator().manual_seed(0))
    gap = (predict(model, probe).float() - predict(reloaded, probe).float()).abs().max().item()
    if gap > OUTPUT_TOLERANCE:
        raise NaskdError(
            f"trial {number}: the reloaded {name} differs from the rebuilt student by {gap:.3g} on random inputs"
        )
    _write(model, spec, recorded, dest, name, program, data, number, study)
    return {"accuracy": None, "reproduced": None, "program": name, "program_accuracy": None, "output_gap": gap}


def _write(
    model: nn.Module,
    spec: dict[str, Any],
    recorded: dict[str, float],
    dest: Path,
    name: str,
    program: bytes,
    data: Data,
    number: int,
    study: str,
) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    save_student(model, dest / "model.pt")
    atomic_write_bytes(dest / name, program)
    payload = {
        "study": study,
        "trial": number,
        "spec": spec,
        "metrics": recorded,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
    }
    atomic_write_bytes(dest / "spec.json", (json.dumps(payload, indent=2) + "\n").encode())
    atomic_write_bytes(dest / "README.md", _readme(payload, name).encode())


def _torchscript(model: nn.Module, data: Data) -> tuple[str, bytes, nn.Module]:
    """The traced student, its bytes, and the program read back from them."""
    example = torch.zeros(1, *data.input_shape)
    # TorchScript is what users asked for (loads with torch alone, from C++ too); newer torch
    # marks it deprecated in favour of torch.export, which would only repeat that to them.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        return "model.torchscript.pt", buffer.getvalue(), torch.jit.load(io.BytesIO(buffer.getvalue()))


def _int8_program(model: Int8Student, data: Data) -> tuple[str, bytes, nn.Module]:
    """The int8 graph as a ``torch.export`` program (dynamic batch), its bytes, and the program
    read back from them (our own bytes, just written: ``torch.export.load`` unpickles)."""
    example = torch.zeros(2, *data.input_shape)
    program = torch.export.export(model.graph, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    reloaded = torch.export.load(io.BytesIO(buffer.getvalue())).module()
    return "model.int8.pt2", buffer.getvalue(), Int8Student(reloaded)  # type: ignore[arg-type]


def _readme(payload: dict[str, Any], program: str) -> str:
    shape = ", ".join(str(n) for n in payload["input_shape"])
    m = payload["metrics"]
    if program.endswith(".pt2"):
        return _int8_readme(payload, shape, m)
    return f"""# Student {payload["trial"]} of study `{payload["study"]}`

Validation accuracy {m.get("accuracy", float("nan")):.4f}, {int(m.get("params", 0))} parameters,
{int(m.get("flops", 0))} FLOPs per sample, latency p50 {m.get("latency_p50_ms", float("nan")):.3f} ms.

Files: `model.torchscript.pt` (needs only torch), `model.pt` (state_dict), `spec.json`
(architecture, distillation recipe and metrics).

## Load with torch alone

```python
import torch
model = torch.jit.load("model.torchscript.pt").eval()
logits = model(torch.zeros(1, {shape}))
```

## Load the state_dict with naskd

```python
import json, torch
from naskd.quantize import Int8Student, int8_state, load_int8_state, quantize_untrained
from naskd.spaces import BuildContext, build_student
info = json.load(open("spec.json"))
model = build_student(info["spec"], BuildContext(tuple(info["input_shape"]), info["num_classes"]))
model.load_state_dict(torch.load("model.pt", weights_only=True))
model.eval()
```
"""


def _int8_readme(payload: dict[str, Any], shape: str, m: dict[str, float]) -> str:
    return f"""# Student {payload["trial"]} of study `{payload["study"]}` (int8)

Validation accuracy {m.get("accuracy", float("nan")):.4f} as an int8 model, {int(m.get("params", 0))} parameters,
{int(m.get("model_bytes", 0))} bytes, latency p50 {m.get("latency_p50_ms", float("nan")):.3f} ms
(Inductor-lowered int8).

Files: `model.int8.pt2` (a `torch.export` program of the int8 graph, quantized with torchao's PT2E
x86 flow), `model.pt` (its tensors, for naskd), `spec.json` (architecture, recipe and metrics).

## Load with torch

```python
import torch
import torchao.quantization.pt2e  # registers the quantize/dequantize operators
model = torch.export.load("model.int8.pt2").module()
logits = model(torch.zeros(1, {shape}))
# Fast int8 kernels: compile with frozen weights (oneDNN int8 on x86)
import torch._inductor.config as inductor_config
with inductor_config.patch(freezing=True), torch.inference_mode():
    fast = torch.compile(model)
    fast(torch.zeros(1, {shape}))
```
"""
