"""When and how long to wait before asking a model server again.

A shared inference server under load answers 429 or 503, often with ``Retry-After``; a restarting
one refuses connections for a while. Retrying those (and 5xx, and timeouts) with exponential
backoff rides them out; retrying any other 4xx only repeats a request the server has already
judged wrong. The backoff is jittered so that hundreds of workers rejected at the same instant do
not come back at the same instant, and never shorter than what the server asked for.
"""
from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass, field
from typing import Optional


def retryable_status(status: int) -> bool:
    """429 (rate limited) and 5xx (the server's own failure) may succeed later; other 4xx won't."""
    return status == 429 or 500 <= status <= 599


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date); None when
    absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class Backoff:
    """Exponential backoff with jitter: attempt ``k`` (0-based) waits ``base * 2**k`` capped at
    ``cap``, scaled by a random factor in [0.5, 1] (half the spread of "full jitter", so a retry
    never comes back almost at once). A server's ``Retry-After`` is a floor: the wait is at least
    that, plus up to one ``base`` of jitter; one beyond ``retry_after_max`` is not waited for."""

    base: float
    cap: float
    retry_after_max: float
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: Optional[float] = None) -> Optional[float]:
        d = min(self.cap, self.base * (2 ** attempt)) * self.rng.uniform(0.5, 1.0)
        if retry_after is None:
            return d
        if retry_after > self.retry_after_max:
            return None
        return d if d > retry_after else retry_after + self.rng.uniform(0.0, self.base)
