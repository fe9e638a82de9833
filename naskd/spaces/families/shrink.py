"""The ``shrink`` family: students derived from the study's trained teacher by removing depth
and width (the survey's most common student, "a smaller version of the teacher").

Depth: a *block* is a module that is an item of an ``nn.Sequential`` or ``nn.ModuleList``,
holds a convolution or linear layer, returns the shape it is given (on a probe batch), and
contains no smaller such block: a residual block without downsampling, one of repeated
equal-width layers. ``keep`` (one flag per block, in forward order) replaces the dropped ones
by ``nn.Identity``. Width: structural pruning with Torch-Pruning, whose dependency graph keeps
residual adds, BatchNorm, flattening and concatenation consistent; ``width`` is the share of
channels/neurons each *stage* keeps (stages are the modules named ``stages.i`` or
``layers.i``, else top-level ``layer1`` .. ``layerN`` as in torchvision's ResNets; a teacher
without them is one stage). Channels are ranked by ``criterion`` on
the teacher's trained weights. The output layer is never pruned.

Arch keys and defaults:

==========  ============  ================================================================
key         default       meaning
==========  ============  ================================================================
width       1.0           share of channels kept, in (0, 1]; one value, or one per stage
keep        true          keep each block (false: replaced by identity); one, or one per block
criterion   "l2"          channel importance: l1, l2 (magnitude), lamp, fpgm, bn_scale, random
init        "inherited"   start from the teacher's pruned weights, or "fresh" (re-initialised)
stages      0             the teacher's stage count, to size ``per = "stages"`` lists (0: unsaid)
blocks      0             the teacher's block count, to size ``per = "blocks"`` lists (0: unsaid)
teacher     ""            fingerprint of the teacher the spec was drawn for (set by the search)
==========  ============  ================================================================

Width 1.0 with every block kept is the teacher's own architecture (with ``init = "fresh"``,
the ``teacher`` family's student). Building is deterministic for a spec and torch seed, so
the saved weights of a trained student load into a rebuild of its spec.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from naskd.errors import InvalidSpec
from naskd.knowledge.hooks import stage_names
from naskd.spaces.families._common import BuildContext, Family, Key, shape_problem


def _criteria() -> dict[str, Callable[[], Any]]:
    """Channel importance criteria (Torch-Pruning's importances), by the name a spec uses."""
    import torch_pruning as tp

    imp = tp.importance
    return {
        "l1": lambda: imp.GroupMagnitudeImportance(p=1),
        "l2": lambda: imp.GroupMagnitudeImportance(p=2),
        "lamp": lambda: imp.LAMPImportance(p=2),
        "fpgm": lambda: imp.FPGMImportance(p=2),
        "bn_scale": lambda: imp.BNScaleImportance(),
        "random": lambda: imp.RandomImportance(),
    }


_CRITERION_NAMES = ("l1", "l2", "lamp", "fpgm", "bn_scale", "random")
_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class TeacherLayout:
    """What a teacher offers the shrink family: its stages, droppable blocks and output layer."""

    stages: tuple[str, ...]  # () = the whole network is one stage
    blocks: tuple[str, ...]
    head: str


_LAYOUTS: dict[tuple[str, tuple[int, ...]], TeacherLayout] = {}


def teacher_layout(teacher: nn.Module, input_shape: tuple[int, ...]) -> TeacherLayout:
    """Find the stages, blocks and output layer of ``teacher`` from one eval-mode forward pass
    on two zero samples (the teacher is left as it was)."""
    modules = dict(teacher.named_modules())
    container_items = {
        f"{name}.{child}" if name else child
        for name, m in modules.items()
        if isinstance(m, (nn.Sequential, nn.ModuleList))
        for child, _ in m.named_children()
    }
    shapes: dict[str, bool] = {}
    order: list[str] = []

    def watch(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if isinstance(module, _LAYERS):
                order.append(name)
            if (
                name in container_items
                and args
                and isinstance(args[0], torch.Tensor)
                and isinstance(output, torch.Tensor)
            ):
                shapes[name] = args[0].shape == output.shape

        return hook

    handles = [m.register_forward_hook(watch(n)) for n, m in modules.items() if n]
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            teacher(torch.zeros((2, *input_shape), device=_device(teacher)))
    finally:
        teacher.train(was_training)
        for h in handles:
            h.remove()
    if not order:
        raise InvalidSpec("shrink: the teacher has no convolution or linear layer to shrink")
    head = order[-1]
    layered = {n for n in shapes if any(o == n or o.startswith(n + ".") for o in order)}
    candidates = [n for n in shapes if shapes[n] and n in layered and not (head == n or head.startswith(n + "."))]
    blocks = [n for n in candidates if not any(o != n and o.startswith(n + ".") for o in candidates)]
    blocks.sort(key=lambda n: next(i for i, o in enumerate(order) if o == n or o.startswith(n + ".")))
    return TeacherLayout(tuple(stage_names(teacher) or _numbered_children(teacher)), tuple(blocks), head)


_NUMBERED = re.compile(r"^(?:layer|stage)(\d+)$")


def _numbered_children(model: nn.Module) -> list[str]:
    """Top-level children named ``layer1`` .. ``layerN`` (or ``stage1`` ..): torchvision's
    ResNet naming, the other common way of writing stages."""
    found = [(int(m.group(1)), name) for name, _ in model.named_children() if (m := _NUMBERED.match(name))]
    return [name for _, name in sorted(found)]


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


class ShrinkFamily(Family):
    name = "shrink"
    keys: Mapping[str, Key] = {
        "width": Key(1.0, float, low=0.01, high=1.0, per=True),
        "keep": Key(True, bool, per=True),
        "criterion": Key("l2", str, choices=_CRITERION_NAMES),
        "init": Key("inherited", str, choices=("inherited", "fresh")),
        "stages": Key(0, int, low=0),
        "blocks": Key(0, int, low=0),
        "teacher": Key("", str),
    }

    def layout(self, ctx: BuildContext) -> TeacherLayout:
        """The layout of the context's teacher (found once per teacher and sample shape)."""
        if ctx.trained_teacher is None or not ctx.teacher_fingerprint:
            raise InvalidSpec(
                "shrink: the trained teacher is not available here (a TorchScript teacher cannot be "
                "rebuilt and pruned; give [teacher] model + checkpoint, or use the built-in teacher)"
            )
        key = (ctx.teacher_fingerprint, tuple(ctx.input_shape))
        if key not in _LAYOUTS:
            _LAYOUTS[key] = teacher_layout(ctx.trained_teacher(), tuple(ctx.input_shape))
        return _LAYOUTS[key]

    def check(self, spec: Mapping[str, Any], ctx: BuildContext) -> str | None:
        arch = spec.get("arch", {})
        problem = shape_problem(ctx.input_shape, ctx.num_classes) or self._arch_problem(arch)
        if problem:
            return problem
        arch = {**self.defaults, **arch}
        try:
            layout = self.layout(ctx)
        except InvalidSpec as exc:
            return str(exc)
        if arch["teacher"] and arch["teacher"] != ctx.teacher_fingerprint:
            return (
                f"shrink: this spec was drawn from teacher {arch['teacher']}, the study's teacher is "
                f"{ctx.teacher_fingerprint}"
            )
        n_stages, n_blocks = max(1, len(layout.stages)), len(layout.blocks)
        stages_text = ", ".join(layout.stages) or "the whole network"
        blocks_text = ", ".join(layout.blocks) or "none"
        for key, count, have in (("stages", n_stages, stages_text), ("blocks", n_blocks, blocks_text)):
            if arch[key] and arch[key] != count:
                return f"shrink: {key} is {arch[key]} but the teacher has {count} {key} ({have})"
        if isinstance(arch["width"], list) and len(arch["width"]) != n_stages:
            return (
                f"shrink: width has {len(arch['width'])} entries but the teacher has {n_stages} stages ({stages_text})"
            )
        if isinstance(arch["keep"], list) and len(arch["keep"]) != n_blocks:
            return f"shrink: keep has {len(arch['keep'])} entries but the teacher has {n_blocks} blocks ({blocks_text})"
        return None

    def build(self, spec: Mapping[str, Any], ctx: BuildContext) -> nn.Module:
        reason = self.check(spec, ctx)
        if reason:
            raise InvalidSpec(reason)
        arch = {**self.defaults, **spec.get("arch", {})}
        layout = self.layout(ctx)
        model = ctx.trained_teacher()  # type: ignore[misc]
        model.eval()  # tracing must not move BatchNorm statistics
        keep = arch["keep"] if isinstance(arch["keep"], list) else [arch["keep"]] * len(layout.blocks)
        for name, kept in zip(layout.blocks, keep):
            if not kept:
                model.set_submodule(name, nn.Identity())
        widths = arch["width"] if isinstance(arch["width"], list) else [arch["width"]] * max(1, len(layout.stages))
        if any(w < 1.0 for w in widths):
            _prune(model, layout, widths, arch["criterion"], tuple(ctx.input_shape))
        if arch["init"] == "fresh":
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()  # type: ignore[operator]
        return model.train()


def _prune(
    model: nn.Module, layout: TeacherLayout, widths: list[float], criterion: str, input_shape: tuple[int, ...]
) -> None:
    """Prune ``model`` in place: each stage keeps ``widths[i]`` of its channels."""
    import torch_pruning as tp

    head = model.get_submodule(layout.head)
    ratios: dict[nn.Module, float] = {}
    if layout.stages:
        for name, width in zip(layout.stages, widths):
            ratios[model.get_submodule(name)] = 1.0 - width
    example = torch.zeros((2, *input_shape), device=_device(model))
    scopes = [model.get_submodule(n) for n in layout.stages] or [model]
    before = [_count(m) for m in scopes]
    try:
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=_criteria()[criterion](),
            pruning_ratio=0.0 if layout.stages else 1.0 - widths[0],
            pruning_ratio_dict=ratios or None,
            ignored_layers=[head],
        )
        pruner.step()
        with torch.no_grad():
            model(example)
    except Exception as exc:  # noqa: BLE001  (tracing and pruning user code fail in many ways)
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "no detail")
        raise InvalidSpec(f"shrink: Torch-Pruning cannot prune this teacher ({type(exc).__name__}: {first})") from None
    # A layer outside every dependency group Torch-Pruning traced (e.g. behind a detour through
    # NumPy) is silently left whole: a student must not pass for pruned when it is not.
    for name, width, scope, count in zip(layout.stages or ("the network",), widths, scopes, before):
        if width < 1.0 and count and _count(scope) == count:
            raise InvalidSpec(
                f"shrink: Torch-Pruning cannot prune this teacher: nothing in {name} was pruned at width "
                f"{width} (its layers are in no dependency group it could trace)"
            )


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


SHRINK = ShrinkFamily()
