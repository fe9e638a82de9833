"""The student families and the two entry points over them: ``check_spec`` and ``build_student``.

``FAMILIES`` maps a family name to an object with ``keys`` (accepted arch keys and defaults),
``check(arch, input_shape, num_classes) -> str | None`` and ``build(...) -> nn.Module``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from naskd.errors import InvalidSpec
from naskd.spaces._text import did_you_mean, show
from naskd.spaces.families._common import Family, Key
from naskd.spaces.families.cnn1d import CNN1D
from naskd.spaces.families.cnn2d import CNN2D
from naskd.spaces.families.mlp import MLP
from naskd.spaces.families.transformer import TRANSFORMER
from naskd.spaces.families.user import USER, import_builder

FAMILIES: dict[str, Family] = {f.name: f for f in (MLP, CNN1D, CNN2D, TRANSFORMER, USER)}

__all__ = ["FAMILIES", "Family", "Key", "build_student", "check_spec", "import_builder"]


def check_spec(spec: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> str | None:
    """Why ``spec`` cannot be built for this data, or None. Cheap: no model is built.

    Args:
        spec: ``{"family": ..., "arch": {...}}`` (plus ``"builder"`` for the user family);
            other top-level keys (a training recipe, say) are ignored.
        input_shape: one sample's shape without the batch axis.
        num_classes: the classifier's output size.

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
    arch = spec.get("arch", {})
    if family is USER:
        if spec.get("builder") is None:
            return 'user: the spec has no "builder" (expected "package.module:function")'
        return USER.check(arch, input_shape, num_classes, builder=spec["builder"])
    return family.check(arch, input_shape, num_classes)


def build_student(spec: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build the student a spec describes, in training mode.

    Deterministic given torch's RNG state: the caller seeds (``torch.manual_seed``) first.

    Args:
        spec: as for ``check_spec``.
        input_shape: one sample's shape without the batch axis.
        num_classes: the classifier's output size.

    Returns:
        The untrained model; it maps ``(B, *input_shape)`` to logits ``(B, num_classes)``.

    Raises:
        InvalidSpec: the reason ``check_spec`` gives, or whatever a user builder raised.
    """
    reason = check_spec(spec, input_shape, num_classes)
    if reason:
        raise InvalidSpec(reason)
    family = FAMILIES[spec["family"]]
    arch = spec.get("arch", {})
    # The user family is the one whose builder is not in the registry: it travels in the spec.
    if family is USER:
        return USER.build(arch, input_shape, num_classes, builder=spec["builder"])
    return family.build(arch, input_shape, num_classes)

