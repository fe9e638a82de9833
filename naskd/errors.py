"""The errors a user can fix: the CLI prints them as one line and exits with status 2."""

from __future__ import annotations


class NaskdError(Exception):
    """Bad input (a file, a key, a checkpoint) that the user can correct."""


class ConfigError(NaskdError):
    """A study or space file that fails validation.

    Renders as ``FILE: KEY: MESSAGE``, e.g.
    ``studies/x.toml: [distill].temperature: must be > 0, got -1``.
    """

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = str(file)
        self.key = key
        self.message = message
        super().__init__(f"{self.file}: {key}: {message}")


class InvalidSpec(NaskdError):
    """A sampled student specification that cannot be built (the reason is stored on the trial)."""
