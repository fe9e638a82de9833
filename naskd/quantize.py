"""int8 students: a float student made into a real int8 model with torchao's PT2E flow.

``prepare`` turns a (trained) float student into a fake-quantized graph for quantization-aware
training: BatchNorm folded into the convolution before it, the graph exported with a dynamic
batch axis, then annotated by the x86 quantizer (``X86InductorQuantizer``, the x86 CPU
backend of PyTorch's maintained quantization path; ``torch.ao.quantization`` is deprecated).
``convert`` makes the trained graph an int8 model (int8 weights, quantize/dequantize at every
quantized boundary), and ``lower`` compiles it with Inductor, which fuses those patterns into
oneDNN int8 kernels: only the lowered model is faster, so latency is measured on it
(``measure_int8_cost``), never on the fake-quantized or converted graph.

Why BatchNorm is folded first: the x86 quantizer's QAT patterns match conv2d + BatchNorm only
(a 1-D student's convolutions would stay float), and converting those patterns costs about
13 s per model here against 0.4 s for a folded graph. Folding uses the running statistics, so
QAT fine-tunes a trained student (BatchNorm frozen, the usual last phase of QAT).
"""

from __future__ import annotations

import copy
import functools
import io
import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from naskd.errors import InvalidSpec
from naskd.measure import Cost, count_flops, count_params, measure_latency

#: What a spec's ``"precision"`` may say: the number format of the deployed student.
DEPLOY_PRECISIONS = ("float32", "int8")
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class Int8Student(nn.Module):
    """A PT2E graph (fake-quantized for training, or converted to int8) used as a module.

    An exported graph cannot switch modes with ``train()``/``eval()`` (its ops are fixed at
    export); torchao's ``move_exported_model_to_train/eval`` rewrite the ops that differ
    (dropout, BatchNorm), so this module's ``train(mode)`` calls them instead.
    """

    def __init__(self, graph: torch.fx.GraphModule) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def train(self, mode: bool = True) -> Int8Student:
        load_torchao()
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        for module in self.modules():
            module.training = mode
        return self


@functools.cache
def load_torchao() -> None:
    """Import torchao's PT2E stack (it registers the int8 operators), once, silencing what it
    prints on every use and that says nothing about the user's student: torchao's "Failed to
    load ... mxfp8 / cutlass" (GPU kernels a CPU build lacks) and "no triton", and deprecation
    notes from inside torch and torchao. Filters match those messages only."""
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
    warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning)
    warnings.filterwarnings("ignore", message="Exporting a model while it is in training mode", category=UserWarning)
    import torchao.quantization.pt2e  # noqa: F401  (the import that logs; also registers the int8 ops)


def _quantizer() -> Any:
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))


def fold_batchnorm(student: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``student`` (eval mode) with every BatchNorm that directly follows a
    convolution (and is its only reader) folded into it and replaced by ``nn.Identity``; the
    student itself is untouched. The pairs are read off the exported graph, so any wiring of
    modules is found; the modules keep their types (the quantizer matches on them).

    Raises:
        InvalidSpec: the student cannot be exported.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    load_torchao()
    model = copy.deepcopy(student).eval()
    if not any(isinstance(m, _BATCHNORMS) for m in model.modules()):
        return model
    try:
        graph = torch.export.export(model, (example,)).graph
    except Exception as exc:  # noqa: BLE001  (export refuses many model shapes)
        raise InvalidSpec(
            f"int8: this student cannot be exported for quantization ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    for node in graph.nodes:
        source = node.args[0] if node.op == "call_function" and "batch_norm" in str(node.target) else None
        if not (isinstance(source, torch.fx.Node) and "conv" in str(source.target) and len(source.users) == 1):
            continue
        conv_name, bn_name = _module_of(source), _module_of(node)
        conv, bn = (model.get_submodule(n) if n else None for n in (conv_name, bn_name))
        if isinstance(conv, nn.modules.conv._ConvNd) and isinstance(bn, _BATCHNORMS):
            model.set_submodule(conv_name, fuse_conv_bn_eval(conv, bn))
            model.set_submodule(bn_name, nn.Identity())
    return model


def _module_of(node: torch.fx.Node) -> str:
    """The name of the module an exported node was called in ("" when unknown)."""
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def prepare(student: nn.Module, example: torch.Tensor) -> Int8Student:
    """The fake-quantized training graph of ``student`` (BatchNorm folded), in training mode,
    on ``example``'s device. ``example`` is a batch of at least two samples.

    Raises:
        InvalidSpec: the student cannot be exported or annotated.
    """
    load_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    folded = _conv1d_as_2d(fold_batchnorm(student, example)).to(example.device)
    batch = torch.export.Dim("batch", min=1)
    try:
        graph = torch.export.export(folded, (example,), dynamic_shapes=({0: batch},)).module()
        prepared = prepare_qat_pt2e(graph, _quantizer())
    except Exception as exc:  # noqa: BLE001  (export and annotation refuse many model shapes)
        raise InvalidSpec(
            f"int8: the x86 quantizer cannot take this student ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    return Int8Student(prepared).train()


def convert(prepared: Int8Student) -> Int8Student:
    """The int8 model of a fake-quantized graph that has run forward at least once (its
    observers hold ranges), in eval mode; tensors the int8 graph no longer reads are dropped.

    Raises:
        InvalidSpec: the quantizer quantised no layer of this student.
    """
    load_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared.eval()
    graph = convert_pt2e(copy.deepcopy(prepared.graph))
    _drop_unused(graph)
    if not any(t.dtype == torch.int8 for t in graph.state_dict().values()):
        raise InvalidSpec("int8: the x86 quantizer found no convolution or linear layer to quantise in this student")
    return Int8Student(graph).eval()


def quantize_untrained(student: nn.Module, example: torch.Tensor) -> Int8Student:
    """The int8 model of ``student`` as it is (observers calibrated on ``example``): what a
    trained student will be made into, for its cost before training or to load saved int8
    weights into (``load_state_dict``)."""
    prepared = prepare(student, example)
    prepared.eval()
    with torch.no_grad():
        prepared(example)
    return convert(prepared)


def lower(model: Int8Student, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The converted int8 graph compiled by Inductor with frozen weights (oneDNN int8
    kernels), compiled for ``example``'s shape. Compiling takes seconds per model."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model.graph)
    with inductor_config.patch(freezing=True), torch.inference_mode():
        compiled(example)
    return compiled


def int8_bytes(model: Int8Student) -> int:
    """Bytes of the int8 model's tensors written by ``torch.save`` (as ``count_model_bytes``
    does for a float student, so the two compare)."""
    buffer = io.BytesIO()
    torch.save(model.graph.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def measure_int8_cost(
    student: nn.Module, input_shape: tuple[int, ...], *, batch_size: int, threads: int, warmup: int, repeats: int
) -> Cost:
    """Cost of ``student`` deployed as int8 on this CPU: its parameter count and FLOPs (those
    of the float architecture: int8 does the same multiply-adds), the latency of the lowered
    int8 model, and the int8 model's size.

    Raises:
        InvalidSpec: the quantizer cannot take the student (see ``prepare`` / ``convert``).
    """
    student = copy.deepcopy(student).cpu()
    example = torch.zeros((max(2, batch_size), *input_shape))
    int8 = quantize_untrained(student, example)
    timed = torch.zeros((batch_size, *input_shape))
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True):
        # Recompiles for a new shape or grad mode happen inside the patch too, so every call
        # timed runs the frozen int8 kernels.
        try:
            lowered = _Lowered(lower(int8, timed))
        except Exception as exc:  # noqa: BLE001  (Inductor refuses some graphs; the student cannot ship as int8)
            raise InvalidSpec(
                f"int8: Inductor cannot lower this student's int8 graph ({type(exc).__name__}: {_first_line(exc)})"
            ) from None
        latency = measure_latency(
            lowered, input_shape, batch_size=batch_size, threads=threads, warmup=warmup, repeats=repeats, device="cpu"
        )
    return Cost(
        params=count_params(student),
        flops=count_flops(student, input_shape),
        latency_p50_ms=latency.p50_ms,
        latency_p95_ms=latency.p95_ms,
        model_bytes=int8_bytes(int8),
    )


class _Conv1dAs2d(nn.Module):
    """A 1-D convolution computed as a 2-D one over a height of 1 (same weights, same output)."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        # "same" / "valid" mean the same over a height of 1; a number pads the length only.
        padding = conv.padding if isinstance(conv.padding, str) else (0, conv.padding[0])
        self.conv = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            (1, conv.kernel_size[0]),
            stride=(1, conv.stride[0]),
            padding=padding,
            dilation=(1, conv.dilation[0]),
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        )
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight.unsqueeze(2))
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias)  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.unsqueeze(2)).squeeze(2)


def _conv1d_as_2d(model: nn.Module) -> nn.Module:
    """``model`` with every ``nn.Conv1d`` replaced by ``_Conv1dAs2d`` (in place). Inductor's
    int8 lowering of 1-D convolutions drops their padding here (torch 2.13: "Attempting to
    broadcast a dimension of length 40 ... [1, 16, 42]"); its 2-D path is the well-trodden one."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv1d):
            model.set_submodule(name, _Conv1dAs2d(module))
    return model


class _Lowered(nn.Module):
    """A compiled callable as a module, so ``measure_latency`` can time it like any model."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def train(self, mode: bool = True) -> _Lowered:
        self.training = mode  # the compiled graph is an inference graph; it has no mode to switch
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _drop_unused(graph: torch.fx.GraphModule) -> None:
    """Remove parameters and buffers the graph no longer reads (after convert, the float
    weights stay as attributes beside their int8 copies); they would count in the size and be
    saved with the student."""
    graph.graph.eliminate_dead_code()
    read = {str(n.target) for n in graph.graph.nodes if n.op == "get_attr"}
    for name in [k for k in graph.state_dict() if k not in read]:
        owner, _, attr = name.rpartition(".")
        module = graph.get_submodule(owner) if owner else graph
        if attr in module._parameters:
            del module._parameters[attr]
        elif attr in module._buffers:
            del module._buffers[attr]
    graph.delete_all_unused_submodules()
    graph.recompile()


def _first_line(exc: BaseException) -> str:
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "no detail")


_QDQ = ("quantize_per_tensor", "dequantize_per_tensor")


def _qdq_nodes(model: Int8Student) -> list[torch.fx.Node]:
    return [
        n
        for n in model.graph.graph.nodes
        if n.op == "call_function"
        and any(k in str(n.target) for k in _QDQ)
        and len(n.args) >= 3
        and isinstance(n.args[1], float)
    ]


def int8_state(model: Int8Student) -> dict[str, torch.Tensor]:
    """Everything a converted int8 model learned, as tensors only (``torch.load(...,
    weights_only=True)`` reads it back): its state_dict, plus the activations' scales and zero
    points, which convert writes into the graph as constants rather than as tensors."""
    # The graph's quantize nodes carry (input, scale, zero_point, ...) with numbers as constants.
    qparams = [(float(n.args[1]), float(n.args[2])) for n in _qdq_nodes(model)]  # type: ignore[arg-type]
    return {
        **{f"graph.{k}": v for k, v in model.graph.state_dict().items()},
        "qparams": torch.tensor(qparams, dtype=torch.float64).reshape(-1, 2),
    }


def load_int8_state(model: Int8Student, state: dict[str, torch.Tensor]) -> Int8Student:
    """Load ``int8_state`` output into ``model``, the int8 model of the same student architecture
    (``quantize_untrained``). Raises ValueError when the two graphs differ."""
    state = dict(state)
    qparams = state.pop("qparams", None)
    nodes = _qdq_nodes(model)
    if not isinstance(qparams, torch.Tensor) or qparams.shape != (len(nodes), 2):
        raise ValueError(
            f"the saved int8 state holds {None if qparams is None else tuple(qparams.shape)} activation "
            f"quantization parameters, this student's graph has {len(nodes)}"
        )
    for node, (scale, zero_point) in zip(nodes, qparams.tolist()):
        node.args = (node.args[0], scale, int(zero_point), *node.args[3:])
    model.graph.recompile()
    model.graph.load_state_dict({k.removeprefix("graph."): v for k, v in state.items()})
    return model.eval()
