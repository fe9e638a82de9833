"""The ``teacher`` family: a student with the teacher's own architecture, freshly initialised
(the survey's second most common student, and born-again distillation's). Built by the build
context's teacher factory: the built-in teacher's constructor, or the user's
``[teacher] model = "module:callable"`` called again. A TorchScript teacher cannot be rebuilt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from naskd.errors import InvalidSpec
from naskd.spaces.families._common import BuildContext, Family, shape_problem


class TeacherFamily(Family):
    name = "teacher"
    keys: Mapping[str, Any] = {}

    def check(self, spec: Mapping[str, Any], ctx: BuildContext) -> str | None:
        problem = shape_problem(ctx.input_shape, ctx.num_classes) or self._arch_problem(spec.get("arch", {}))
        if problem:
            return problem
        if ctx.teacher is None:
            return (
                "teacher: the teacher's architecture cannot be rebuilt here (a TorchScript teacher, or no "
                "teacher in this context); give [teacher] model + checkpoint, or use the built-in teacher"
            )
        return None

    def build(self, spec: Mapping[str, Any], ctx: BuildContext) -> nn.Module:
        reason = self.check(spec, ctx)
        if reason:
            raise InvalidSpec(reason)
        return ctx.teacher()  # type: ignore[misc]


TEACHER = TeacherFamily()
