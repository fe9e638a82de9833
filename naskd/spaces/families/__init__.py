"""The student families and the two entry points over them: ``check_spec`` and ``build_student``.

``FAMILIES`` maps a family name to an object with ``keys`` (accepted arch keys and defaults),
``check(spec, BuildContext) -> str | None`` and ``build(spec, BuildContext) -> nn.Module``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from naskd.errors import InvalidSpec
from naskd.spaces._text import did_you_mean, show
from naskd.spaces.families._common import BuildContext, Family, Key
from naskd.spaces.families.cnn1d import CNN1D
from naskd.spaces.families.cnn2d import CNN2D
from naskd.spaces.families.mlp import MLP
from naskd.spaces.families.shrink import SHRINK
from naskd.spaces.families.teacher import TEACHER
from naskd.spaces.families.transformer import TRANSFORMER
from naskd.spaces.families.user import USER, import_builder

FAMILIES: dict[str, Family] = {f.name: f for f in (MLP, CNN1D, CNN2D, TRANSFORMER, TEACHER, SHRINK, USER)}

__all__ = ["FAMILIES", "BuildContext", "Family", "Key", "build_student", "check_spec", "import_builder"]


def check_spec(spec: Mapping[str, Any], ctx: BuildContext) -> str | None:
    """Why ``spec`` cannot be built in this context, or None. Cheap: no model is built.

    Args:
        spec: ``{"family": ..., "arch": {...}}`` (plus ``"builder"`` for the user family);
            other top-level keys (a training recipe, say) are ignored.
        ctx: the data's sample shape and class count, and the teacher's factory.

    Returns:
        A one-line reason such as ``"transformer: d_model 30 is not divisible by heads 4"``,
        or None when the spec is buildable.
    """
    if not isinstance(spec, Mapping):
        return f"a spec must be a table with family and arch, got {show(spec)}"
    name = spec.get("family")
    family = FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        hint = did_you_mean(str(name), FAMILIES)
        return f"unknown family {show(name)}{hint} (known: {', '.join(FAMILIES)})"
    return family.check(spec, ctx)


def build_student(spec: Mapping[str, Any], ctx: BuildContext) -> nn.Module:
    """Build the student a spec describes, in training mode.

    Deterministic given torch's RNG state: the caller seeds (``torch.manual_seed``) first.

    Args:
        spec: as for ``check_spec``.
        ctx: as for ``check_spec``.

    Returns:
        The untrained model; it maps ``(B, *input_shape)`` to logits ``(B, num_classes)``.

    Raises:
        InvalidSpec: the reason ``check_spec`` gives, or whatever a user builder raised.
    """
    reason = check_spec(spec, ctx)
    if reason:
        raise InvalidSpec(reason)
    return FAMILIES[spec["family"]].build(spec, ctx)
