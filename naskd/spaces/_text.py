"""Small text helpers shared by the space loader and the families: values and hints in messages."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from typing import Any


def show(value: Any) -> str:
    """Render a value the way the user wrote it in TOML (strings quoted, booleans lower-case)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        # TOML dates and other non-JSON values: repr is still unambiguous.
        return repr(value)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """A ``; did you mean "x"?`` hint, or "" when nothing is close."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f'; did you mean "{close[0]}"?' if close else ""


def unknown_key(word: str, known: Iterable[str], where: str = "") -> str:
    """The message for a key that is not in ``known``, with a hint and the full list.

    ``where`` narrows the message, e.g. ``"for an int parameter"``.
    """
    known = list(known)
    where = f" {where}" if where else ""
    return f"unknown key{where}{did_you_mean(word, known)} (known keys: {', '.join(known)})"


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps booleans apart from numbers (Python says ``True == 1``; TOML does not)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def shape_text(shape: tuple[int, ...]) -> str:
    """``(1, 8, 8)``; a one-element shape keeps its trailing comma so it reads as a tuple."""
    return str(tuple(shape))
