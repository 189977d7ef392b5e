"""Suspicious-activity detection: detectors over recent votes, the window store they read, the engine
that runs them for the VoteProcessor (per batch) and the FraudSweeper (on a schedule).

- :mod:`mysetlist.fraud.config`: the thresholds (:class:`FraudConfig`, ``FRAUD_THRESHOLDS``);
- :mod:`mysetlist.fraud.window`: the recent-vote window (:class:`RecentVotes`: in memory, or in
  Valkey shared by every container);
- :mod:`mysetlist.fraud.detectors`: the detectors, pure functions over votes;
- :mod:`mysetlist.fraud.engine`: :class:`FraudEngine` (``observe``, ``sweep``, ``detect``).
"""

from mysetlist.fraud.config import FraudConfig
from mysetlist.fraud.engine import FraudEngine
from mysetlist.fraud.window import (
    InMemoryRecentVotes,
    RecentVotes,
    ValkeyRecentVotes,
    WindowUnavailable,
)

__all__ = [
    "FraudConfig",
    "FraudEngine",
    "InMemoryRecentVotes",
    "RecentVotes",
    "ValkeyRecentVotes",
    "WindowUnavailable",
]
