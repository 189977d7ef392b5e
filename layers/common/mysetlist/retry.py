"""Retries with exponential backoff and full jitter, inside the Lambda's time limit.

Full jitter (sleep a uniform time in ``[0, min(max_delay, base_delay * 2**n)]`` before retry
``n + 1``) spreads the retries of many containers that failed together instead of sending them
back in step. A retry never sleeps past the invocation's remaining time less ``reserve_ms`` (left
for the last attempt's answer and the response): when the next sleep would cross that line,
the last error is raised at once. A :class:`~mysetlist.breaker.CircuitOpenError` is never retried:
the breaker has already decided the dependency needs rest.

Only retry what is safe to repeat: reads, idempotent writes (a conditional put, a transaction
with a client token), never a write whose outcome is unknown unless the repeat is harmless.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from mysetlist.breaker import CircuitOpenError, counts_as_failure
from mysetlist.observability import logger, remaining_time_ms


def backoff_cap(retry: int, base_delay: float, max_delay: float) -> float:
    """The upper bound of the sleep before retry ``retry + 1`` (``retry`` counts from 0)."""
    # 2**retry overflows a float past ~1024 retries; the cap is reached long before.
    return min(max_delay, base_delay * 2.0 ** min(retry, 64))


def retry_call[T](
    fn: Callable[[], T],
    *,
    attempts: int = 3,
    base_delay: float = 0.05,
    max_delay: float = 1.0,
    retryable: Callable[[BaseException], bool] = counts_as_failure,
    reserve_ms: int = 500,
    remaining_ms: Callable[[], int | None] = remaining_time_ms,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """Call ``fn()`` up to ``attempts`` times while it raises a ``retryable`` error.

    ``retryable`` defaults to the breakers' transient faults (connection errors, timeouts,
    throttling, 5xx). ``remaining_ms`` gives the invocation's remaining time (None: no limit).
    Raises the last error when attempts run out, when an error is not retryable (or is a
    :class:`CircuitOpenError`), or when the next sleep would leave less than ``reserve_ms``.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    if base_delay < 0 or max_delay < 0:
        raise ValueError("delays cannot be negative")
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            if attempt >= attempts or isinstance(exc, CircuitOpenError) or not retryable(exc):
                raise
            delay = rng() * backoff_cap(attempt - 1, base_delay, max_delay)
            if not _time_for(delay, reserve_ms, remaining_ms):
                exc.add_note(
                    f"retry_call gave up after {attempt} attempt(s): {remaining_ms()} ms left, "
                    f"{reserve_ms} ms reserved"
                )
                raise
            logger.debug(
                "retrying after a transient error",
                extra={"attempt": attempt, "delay_seconds": round(delay, 4), "error": repr(exc)},
            )
            sleep(delay)


def pause_before_retry(
    retry: int,
    *,
    base_delay: float = 0.05,
    max_delay: float = 1.0,
    reserve_ms: int = 500,
    remaining_ms: Callable[[], int | None] = remaining_time_ms,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> bool:
    """For loops that retry part of a request themselves (DynamoDB's unprocessed batch items):
    sleep the full-jitter backoff before retry ``retry + 1`` (counting from 0) and return True,
    or return False at once when that sleep would leave less than ``reserve_ms``."""
    delay = rng() * backoff_cap(retry, base_delay, max_delay)
    if not _time_for(delay, reserve_ms, remaining_ms):
        return False
    sleep(delay)
    return True


def _time_for(delay: float, reserve_ms: int, remaining_ms: Callable[[], int | None]) -> bool:
    left = remaining_ms()
    return left is None or left - reserve_ms >= delay * 1000
