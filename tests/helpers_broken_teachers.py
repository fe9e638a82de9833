"""User teacher factories that fail, referenced as ``helpers_broken_teachers:NAME`` from
``[teacher].model`` (tests/test_cache_damage.py). ``helpers_broken_import`` fails at import."""

from __future__ import annotations

from torch import nn


def build_raises() -> nn.Module:
    raise ValueError("no teacher of width 7\n(a second line that must not reach the message)")


def build_key_error() -> nn.Module:
    return {}["missing"]
