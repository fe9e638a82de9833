"""Text on its way to a terminal: control characters (escape sequences, newlines, carriage
returns, C1 controls) in user-given names and messages shown as ``\\xNN``, so a study name cannot
move the cursor, recolour the screen or split a one-line error into several."""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """``text`` with every control character written as its ``\\xNN`` escape."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


class PrintableFormatter(logging.Formatter):
    """A log formatter whose messages carry no control characters (a traceback, shown at
    debug level, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return printable(super().formatMessage(record))
