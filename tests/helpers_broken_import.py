"""A teacher module whose import raises (tests/test_cache_damage.py): ``helpers_broken_import:build``."""

from __future__ import annotations

from torch import nn

raise RuntimeError("the teacher module is broken at import")


def build() -> nn.Module:  # never reached
    return nn.Linear(16, 4)
