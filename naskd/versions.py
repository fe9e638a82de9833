"""A study's teacher versions (lifelong distillation): the teacher, data and budget each
version ran with, as recorded in the study's facts, and the records and front of one version.

A study starts at version 1. When its ``[teacher]`` changes, ``naskd search`` begins the next
version instead of refusing the study: every trial recorded so far keeps its version, the
Pareto students of the version before are continued under the new teacher, and fronts, rung
records and reports compare only trials of one version. Plain Python (no torch, optuna, ray).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from naskd.results import StudyFacts, TrialRecord, front_summary

#: The study-facts key that lists the versions.
VERSIONS_KEY = "teacher_versions"


def version_entry(number: int, facts: Mapping[str, Any], first_trial: int) -> dict[str, Any]:
    """One version as the study records it: its teacher's figures, data and budget."""
    return {
        "version": number,
        "first_trial": first_trial,
        "teacher": dict(facts.get("teacher", {})),
        "data": dict(facts.get("data", {})),
        "fidelity": dict(facts.get("fidelity", {})),
    }


def versions(facts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every version of a study, oldest first (a study recorded before versions: its one)."""
    listed = facts.get(VERSIONS_KEY)
    if isinstance(listed, list) and listed:
        return [dict(v) for v in listed]
    return [version_entry(1, facts, 0)]


def current(facts: Mapping[str, Any]) -> int:
    """The version new trials learn from: the latest."""
    return int(versions(facts)[-1]["version"])


def of_version(records: Sequence[TrialRecord], version: int) -> list[TrialRecord]:
    return [r for r in records if r.teacher_version == version]


def version_fronts(
    facts: StudyFacts, records: Sequence[TrialRecord], listed: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The front of every version, each against its own teacher and budget (for the report's
    and the summary's ``versions``)."""
    out = []
    for entry in listed:
        number = int(entry["version"])
        own = replace(
            facts,
            teacher=dict(entry.get("teacher") or facts.teacher),
            fidelity=dict(entry.get("fidelity") or facts.fidelity),
        )
        summary = front_summary(own, of_version(records, number))
        out.append(
            {
                "version": number,
                "first_trial": entry.get("first_trial", 0),
                "teacher": summary["teacher"]
                | {
                    "source": (entry.get("teacher") or {}).get("source"),
                    "fingerprint": (entry.get("teacher") or {}).get("fingerprint"),
                },
                "data": (entry.get("data") or {}).get("fingerprint"),
                "target_steps": summary["target_steps"],
                "counts": summary["counts"],
                "hypervolume": summary["hypervolume"],
                "knee": summary["knee"],
                "front": summary["front"],
            }
        )
    return out
