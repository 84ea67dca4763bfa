"""What a backend answers for one request: allowed or not, what is left, when to retry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .rate import Rate

__all__ = ["BackendError", "Decision", "Outcome"]

Outcome = Literal["allowed", "limited", "error_allowed", "error_rejected"]


class BackendError(Exception):
    """The shared store could not decide; ``reason`` is a short, bounded label (timeout, connection...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(slots=True)
class Decision:
    """The verdict of one policy on one request.

    ``rate`` is the most constraining rate of the policy; ``remaining`` its tokens left after this
    request; ``retry_after`` the seconds until the request would pass (0 when allowed); ``reset`` the
    seconds until the bucket is full again; ``unavailable`` marks a rejection because the backend
    failed (answered 503, not 429).
    """

    outcome: Outcome
    rate: Rate
    remaining: int
    retry_after: float
    reset: float
    unavailable: bool = False

    @property
    def allowed(self) -> bool:
        return self.outcome in ("allowed", "error_allowed")
