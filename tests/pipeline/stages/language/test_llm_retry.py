"""The model-server retry policy: which answers are retried, Retry-After in both of its forms,
and a backoff that grows, is capped, is jittered and never undercuts the server's request."""
from __future__ import annotations

import email.utils
import random

import pytest

from pipeline.stages.language.backends.retry import Backoff, parse_retry_after, retryable_status


@pytest.mark.parametrize("status, retry", [(429, True), (500, True), (502, True), (503, True), (599, True),
                                           (400, False), (401, False), (403, False), (404, False), (408, False),
                                           (409, False), (422, False), (200, False), (302, False)])
def test_only_429_and_5xx_are_retryable(status, retry):
    assert retryable_status(status) is retry


def test_retry_after_seconds_and_http_dates():
    now = 1_700_000_000.0
    assert parse_retry_after("3", now) == 3.0 and parse_retry_after(" 2.5 ", now) == 2.5
    assert parse_retry_after("-4", now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 10, usegmt=True), now) == pytest.approx(10.0)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now) == 0.0  # already past
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_backoff_grows_is_capped_and_jittered():
    b = Backoff(base=1.0, cap=8.0, retry_after_max=60.0, rng=random.Random(0))
    for k in range(7):
        ideal = min(8.0, 2.0 ** k)
        draws = [b.delay(k) for _ in range(200)]
        assert all(0.5 * ideal <= d <= ideal for d in draws)
        assert max(draws) - min(draws) > 0.3 * ideal  # spread out, not one value for every worker


def test_retry_after_is_a_floor_with_jitter_above_it():
    b = Backoff(base=0.5, cap=30.0, retry_after_max=60.0, rng=random.Random(1))
    draws = [b.delay(0, retry_after=5.0) for _ in range(200)]
    assert all(5.0 <= d <= 5.5 for d in draws) and len(set(draws)) > 100
    assert 8.0 <= b.delay(5, retry_after=1.0) <= 16.0  # the backoff already waits longer: it stands
    assert b.delay(0, retry_after=61.0) is None  # beyond what the config allows to wait
