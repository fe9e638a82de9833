"""The ``user`` family: students built by the user's own ``"package.module:function"``.

The builder is imported with importlib (never evaluated as code) and called as
``fn(arch: dict, input_shape: tuple, num_classes: int) -> torch.nn.Module``. The arch keys are
whatever the space declares; naskd checks none of them, so the builder owns their meaning.
Anything the builder raises becomes ``InvalidSpec`` carrying its message, so one bad
combination fails one trial, not the study.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from naskd.errors import InvalidSpec
from naskd.spaces._text import show
from naskd.spaces.families._common import BuildContext, Family, shape_problem

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_BUILDER_RE = re.compile(rf"^({_DOTTED}):({_DOTTED})$")

Builder = Callable[[dict, tuple, int], nn.Module]


def import_builder(ref: Any) -> Builder:
    """Import ``"package.module:function"`` (the part after ``:`` may be dotted, e.g. ``Cls.make``).

    Raises:
        ValueError: the reference is malformed, cannot be imported, or is not callable; the
            message says which.
    """
    match = _BUILDER_RE.match(ref) if isinstance(ref, str) else None
    if match is None:
        raise ValueError(f'must look like "package.module:function", got {show(ref)}')
    module_name, attr_path = match.groups()
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # an import runs user code; any failure is reported, not raised through
        raise ValueError(f'cannot import module "{module_name}": {type(exc).__name__}: {exc}') from exc
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            raise ValueError(f'module "{module_name}" has no attribute "{attr_path}"')
        target = getattr(target, attr)
    if not callable(target):
        raise ValueError(f'"{ref}" is not callable (got {type(target).__name__})')
    return target


class UserFamily(Family):
    """Delegates to a user builder; the builder reference travels in the spec (``spec["builder"]``)."""

    name = "user"
    keys: Mapping[str, Any] = {}

    def check(self, spec: Mapping[str, Any], ctx: BuildContext) -> str | None:
        """Cheap checks only: the data side, an arch table, and an importable builder."""
        problem = shape_problem(ctx.input_shape, ctx.num_classes)
        if problem:
            return problem
        arch = spec.get("arch", {})
        if not isinstance(arch, Mapping):
            return f"user: arch must be a table of arch keys, got {show(arch)}"
        if spec.get("builder") is None:
            return 'user: the spec has no "builder" (expected "package.module:function")'
        try:
            import_builder(spec["builder"])
        except ValueError as exc:
            return f"user: builder {exc}"
        return None

    def build(self, spec: Mapping[str, Any], ctx: BuildContext) -> nn.Module:
        """Import and call the builder; any failure is an InvalidSpec with the builder's message."""
        reason = self.check(spec, ctx)
        if reason:
            raise InvalidSpec(reason)
        builder = spec["builder"]
        fn = import_builder(builder)
        try:
            # A copy, so a builder that pops keys cannot change the stored spec.
            model = fn(dict(spec.get("arch", {})), tuple(ctx.input_shape), ctx.num_classes)
        except Exception as exc:  # user code: whatever it raises is this spec's reason to fail
            raise InvalidSpec(f"user builder {builder} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise InvalidSpec(f"user builder {builder} returned {type(model).__name__}, not a torch.nn.Module")
        return model


USER = UserFamily()
