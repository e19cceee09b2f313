"""Outcomes a kernel raises or returns, beyond ``True`` (ack) and ``False`` (retry)."""

from typing import Optional


class Outcome(Exception):
    """Base of the outcomes: raise one, or return it."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class Skip(Outcome):
    """Done with this message: log the reason, commit, produce nothing."""


class DeadLetter(Outcome):
    """The message itself is bad: send it to the dead-letter topic now, with the reason."""


class Retry(Outcome):
    """Try this message again, after ``after`` seconds or the runtime's backoff.

    Counted against ``CLUSTERA_MAX_ATTEMPTS``; dead-lettered when they run out.
    """

    def __init__(self, reason: str = "", after: Optional[float] = None) -> None:
        super().__init__(reason)
        if after is not None and not (isinstance(after, (int, float)) and after >= 0):
            raise ValueError(f"Retry(after={after!r}): expected a number of seconds >= 0")
        self.after = after


class Unavailable(Outcome):
    """A dependency is down: retried with backoff for as long as it lasts, never
    dead-lettered, not counted against ``CLUSTERA_MAX_ATTEMPTS``."""


class DecodeError(ValueError):
    """The message's bytes cannot be decoded (``msg.json()``, ``msg.text()``): a poison
    pill, dead-lettered at once."""
