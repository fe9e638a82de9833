"""The ``naskd`` command lines a reader copies from the report: the one that reproduces the
study (recorded by ``naskd search``) and, derived from it, ``naskd export`` for each student.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from naskd.report.view import slug

#: ``naskd search`` options that decide where the study is and how its data are split, so an
#: export run must repeat them; the others (--trials, --workers, -q, -v) do not matter there.
_KEPT = ("--out", "--storage", "--seed")
_WITH_VALUE = ("--out", "--storage", "--seed", "--trials", "--workers")
STUDY_PLACEHOLDER = "STUDY.toml"


@dataclass(frozen=True)
class SearchCommand:
    """What the recorded ``naskd search`` command says about where the study lives."""

    study: str  # the study file as typed, or STUDY_PLACEHOLDER when not recorded
    kept: tuple[tuple[str, str], ...]  # (option, value) pairs an export must repeat
    recorded: bool


def parse_search_command(command: str) -> SearchCommand:
    """Read the study file and the options an export needs from ``naskd search ...``.

    Anything unexpected (no command recorded, not a search, unbalanced quotes) yields the
    placeholder study and no options, never an error: the report must still be written.
    """
    try:
        tokens = shlex.split(command or "")
    except ValueError:
        tokens = []
    if "search" not in tokens:
        return SearchCommand(STUDY_PLACEHOLDER, (), False)
    rest = tokens[tokens.index("search") + 1 :]
    study, kept = None, []
    i = 0
    while i < len(rest):
        token = rest[i]
        name, eq, inline = token.partition("=")
        if name in _WITH_VALUE:
            value = inline if eq else (rest[i + 1] if i + 1 < len(rest) else "")
            i += 1 if eq else 2
            if name in _KEPT:
                kept.append((name, value))
            continue
        if not token.startswith("-") and study is None:
            study = token
        i += 1
    return SearchCommand(study or STUDY_PLACEHOLDER, tuple(kept), study is not None)


def export_command(facts: Mapping[str, Any], name: str, number: int) -> str:
    """``naskd export STUDY --trial N -o students/<study>-trial-N`` plus the recorded
    ``--out``/``--storage``/``--seed``, shell-quoted so it can be pasted as is."""
    search = parse_search_command(str(facts.get("command") or ""))
    words = ["naskd", "export", search.study, "--trial", str(number), "-o", f"students/{slug(name)}-trial-{number}"]
    for option, value in search.kept:
        words += [option, value]
    return " ".join(shlex.quote(w) for w in words)
