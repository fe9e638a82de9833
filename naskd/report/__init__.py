"""The study report: one self-contained HTML page (plotly.js embedded, no network request)
that someone who did not run the study can read — the front (measured at the target budget),
the capacity gap, the rungs on the way there (learning curves, how well they rank students,
the training they saved), how the search went, and the warnings that matter.

Core code: it reads plain ``TrialRecord``s and dicts, never optuna or ray objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from naskd.report.page import build_page
from naskd.report.view import study_view
from naskd.results import TrialRecord

__all__ = ["build_report", "write_report"]


def build_report(
    facts: dict,
    records: Sequence[TrialRecord],
    summary: dict,
    *,
    importances: Mapping[str, Mapping[str, float]] | None = None,
    created: datetime | None = None,
) -> str:
    """The whole report as one HTML page.

    Args:
        facts: what the study stores about itself (``study.user_attrs["naskd"]`` from
            ``run_search``: name, objectives, sampler, seed, space, budgets, storage, command,
            data, teacher). Missing keys are shown as "not recorded".
        records: every trial of the study.
        summary: ``naskd.results.front_summary`` of those records.
        importances: objective name -> {parameter name -> importance}, as computed by the
            backend; None or empty says importances are not available.
        created: the date shown in the header (default: now, UTC).

    Returns:
        The HTML document as a string.
    """
    view = study_view(facts or {}, records, summary or {})
    return build_page(view, importances=importances, created=created)


def write_report(path: Path, html: str) -> Path:
    """Write ``html`` to ``path`` (write-then-rename: never half a page); returns ``path``."""
    from naskd.cache import atomic_write_bytes  # imports torch: only needed when writing

    path = Path(path)
    atomic_write_bytes(path, html.encode("utf-8"))
    return path
