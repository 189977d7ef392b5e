"""Unit-test isolation: metrics that code under test adds outside a Lambda handler are never
flushed, and would otherwise leak into the next test that runs a handler."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mysetlist.observability import metrics


@pytest.fixture(autouse=True)
def _no_metrics_left_behind() -> Iterator[None]:
    yield
    metrics.clear_metrics()
