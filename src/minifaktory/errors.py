"""The exception hierarchy. Handlers raise; the connection loop turns errors into replies."""

from __future__ import annotations


class MinifaktoryError(Exception):
    """Base class of every error minifaktory raises on purpose."""


class ConfigError(MinifaktoryError):
    """The configuration is unusable; the message says what to fix."""


class ProtocolError(MinifaktoryError):
    """The peer broke the framing or the handshake; the connection is closed."""


class CommandError(MinifaktoryError):
    """A command failed; sent to the client as ``-<code> <message>``.

    Faktory writes ordinary failures as ``-ERR text`` and middleware errors with
    their own code, e.g. ``-NOTUNIQUE Job not unique`` (spec §1.1).
    """

    def __init__(self, message: str, code: str = "ERR") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    @property
    def wire_text(self) -> str:
        """The error as it appears after the leading ``-``, and in PUSHB maps."""
        return f"{self.code} {self.message}"


class StoreError(MinifaktoryError):
    """The database refused a change (disk full, corruption, newer schema)."""
